//! Pure renderers: objects in, text out. Tables are laid out like docker's (Go's tabwriter with
//! minimum cell width 10 and padding 3; trailing blanks trimmed).

use std::fmt::Write as _;

use serde::Serialize;
use shoal_types::units::format_bytes;
use shoal_types::{
    ClusterInfo, EndpointMode, HealthConfig, ManagerRef, Node, PublishMode, ResourceAmounts, Service, ServiceMode,
    ServiceSummary, UpdateConfig,
};

use crate::args::format::{Part, Template};
use crate::args::publish::format_port;
use crate::timefmt::format_timestamp;

pub mod events;
pub mod logs;
pub mod tasks;

pub use events::{event_action, event_line};
pub use tasks::{PsOptions, ServiceNames, select_tasks, task_ids, task_name, task_rows, task_table};

const MIN_CELL_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Lays out rows under a header like `docker … ls`: every column but the last is padded to
/// max(10, widest cell + 3) characters.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            line.push_str(cell);
            if i + 1 < columns {
                let width = (widths[i] + PADDING).max(MIN_CELL_WIDTH);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON array of the objects, pretty-printed (what `--format json` and `inspect` print).
pub fn json_array<T: Serialize>(items: &[T]) -> String {
    match serde_json::to_string_pretty(items) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        Err(e) => format!("[]\n// cannot encode as JSON: {e}\n"),
    }
}

/// One object, pretty-printed JSON.
pub fn json_object<T: Serialize>(item: &T) -> String {
    match serde_json::to_string_pretty(item) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        Err(e) => format!("{{}}\n// cannot encode as JSON: {e}\n"),
    }
}

/// `ready` → `Ready`, `on-failure` → `On-failure`.
pub fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Services sorted by name, as `service ls` lists them.
pub fn sort_services(services: &[Service]) -> Vec<&Service> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.spec.name.cmp(&b.spec.name).then_with(|| a.id.cmp(&b.id)));
    sorted
}

/// Nodes sorted by hostname, as `node ls` lists them.
pub fn sort_nodes(nodes: &[Node]) -> Vec<&Node> {
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.description.hostname.cmp(&b.description.hostname).then_with(|| a.id.cmp(&b.id)));
    sorted
}

/// `service ls`'s REPLICAS: `<running>/<desired>`, as the manager counted them (docker's way:
/// tasks on nodes known to be down are not counted; global: desired = tasks whose desired state
/// is running). ` (max N per node)` is appended when the per-node cap is set.
pub fn replicas_column(service: &ServiceSummary) -> String {
    let mut text = format!("{}/{}", service.running_tasks, service.desired_tasks);
    // Jobs, as docker shows them: `3/5 (2/10 completed)`.
    let total = match service.mode {
        ServiceMode::ReplicatedJob { total_completions, .. } => Some(total_completions),
        ServiceMode::GlobalJob => Some(service.desired_tasks + service.completed_tasks),
        ServiceMode::Replicated { .. } | ServiceMode::Global => None,
    };
    if let Some(total) = total {
        let _ = write!(text, " ({}/{total} completed)", service.completed_tasks);
    }
    let max = service.max_replicas_per_node;
    if max > 0 {
        let _ = write!(text, " (max {max} per node)");
    }
    text
}

/// `service ls`'s PORTS: published ports as `*:8080->80/tcp`, comma separated. Ports without a
/// published number (the cluster would choose one) are left out.
pub fn ports_column(service: &ServiceSummary) -> String {
    service.ports.iter().filter(|p| p.published != 0).map(format_port).collect::<Vec<_>>().join(", ")
}

/// Summaries sorted by name, as `service ls` lists them.
pub fn sort_summaries(services: &[ServiceSummary]) -> Vec<&ServiceSummary> {
    let mut sorted: Vec<&ServiceSummary> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    sorted
}

/// `shoal service ls`: `ID  NAME  MODE  REPLICAS  IMAGE  PORTS`, sorted by name.
pub fn service_table(services: &[ServiceSummary]) -> String {
    table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &service_rows(services))
}

/// The cells of `service ls`, one row per service in table order (those of
/// [`crate::args::format::SERVICE_FIELDS`]).
pub fn service_rows(services: &[ServiceSummary]) -> Vec<Vec<String>> {
    sort_summaries(services)
        .into_iter()
        .map(|s| {
            vec![
                s.short_id().to_string(),
                s.name.clone(),
                s.mode.as_str().to_string(),
                replicas_column(s),
                s.image.clone(),
                ports_column(s),
            ]
        })
        .collect()
}

/// `service ls -q`: short ids, one a line, in table order.
pub fn service_ids(services: &[ServiceSummary]) -> String {
    sort_summaries(services).into_iter().map(|s| format!("{}\n", s.short_id())).collect()
}

/// `node ls`'s MANAGER STATUS: `Leader`, `Reachable`, `Unreachable`; empty for workers.
pub fn manager_status(node: &Node) -> String {
    match &node.manager {
        None => String::new(),
        Some(m) if m.leader => "Leader".to_string(),
        Some(m) => m.reachability.as_deref().map(capitalize).unwrap_or_default(),
    }
}

/// The address a node is reached at: its manager address, else the one it reported.
pub fn node_address(node: &Node) -> &str {
    match &node.manager {
        Some(m) if !m.addr.is_empty() => &m.addr,
        _ => &node.status.addr,
    }
}

/// `shoal node ls`: `ID  HOSTNAME  STATUS  AVAILABILITY  MANAGER STATUS  ADDRESS`, sorted by hostname.
pub fn node_table(nodes: &[Node]) -> String {
    table(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ADDRESS"], &node_rows(nodes))
}

/// The cells of `node ls`, one row per node in table order (those of
/// [`crate::args::format::NODE_FIELDS`]).
pub fn node_rows(nodes: &[Node]) -> Vec<Vec<String>> {
    sort_nodes(nodes)
        .into_iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.description.hostname.clone(),
                capitalize(n.status.state.as_str()),
                capitalize(n.spec.availability.as_str()),
                manager_status(n),
                node_address(n).to_string(),
            ]
        })
        .collect()
}

/// Rows rendered with a `--format` template. `fields` are the template's field names with their
/// headers, in the order of the cells of each row. A `table` template gets a header row (each
/// field replaced by its header) and its `\t`-separated cells laid out like [`table`]; every
/// row ends with a newline, as docker prints them.
pub fn template_rows(template: &Template, fields: &[(&str, &str)], rows: &[Vec<String>]) -> String {
    let render = |cell: &dyn Fn(usize) -> String| -> String {
        let mut line = String::new();
        for part in &template.parts {
            match part {
                Part::Text(text) => line.push_str(text),
                Part::Field(name) => {
                    if let Some(index) = fields.iter().position(|(f, _)| f == name) {
                        line.push_str(&cell(index));
                    }
                }
            }
        }
        line
    };
    let mut lines: Vec<String> = Vec::with_capacity(rows.len() + 1);
    if template.table {
        lines.push(render(&|i| fields[i].1.to_string()));
    }
    for row in rows {
        lines.push(render(&|i| row.get(i).cloned().unwrap_or_default()));
    }
    if !template.table {
        return lines.into_iter().map(|l| l + "\n").collect();
    }
    // Aligned as docker's tabwriter does: every cell followed by a tab is padded to its column.
    let cells: Vec<Vec<&str>> = lines.iter().flat_map(|l| l.split('\n')).map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &cells {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = (widths[i] + PADDING).max(MIN_CELL_WIDTH);
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `node ls -q`: full ids, one a line, in table order.
pub fn node_ids(nodes: &[Node]) -> String {
    sort_nodes(nodes).into_iter().map(|n| format!("{}\n", n.id)).collect()
}

/// Key/value lines with values aligned in one column, like docker's `--pretty` output.
struct Pretty {
    out: String,
}

const KEY_WIDTH: usize = 24;

impl Pretty {
    fn new() -> Self {
        Pretty { out: String::new() }
    }

    /// `key:` at `indent`, then the value in the value column.
    fn kv(&mut self, indent: usize, key: &str, value: impl std::fmt::Display) {
        let label = format!("{:indent$}{key}:", "");
        let pad = KEY_WIDTH.saturating_sub(label.chars().count()).max(1);
        let line = format!("{label}{:pad$}{value}", "");
        self.out.push_str(line.trim_end());
        self.out.push('\n');
    }

    /// A section heading (`key:` alone).
    fn heading(&mut self, indent: usize, key: &str) {
        let _ = writeln!(self.out, "{:indent$}{key}:", "");
    }

    /// A free line at `indent`.
    fn line(&mut self, indent: usize, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{:indent$}{text}", "");
    }
}

fn cpus(nano: u64) -> String {
    format!("{}", nano as f64 / 1e9)
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_string() } else { items.join(", ") }
}

fn update_config_lines(p: &mut Pretty, heading: &str, order_key: &str, config: &UpdateConfig) {
    p.heading(0, heading);
    p.kv(1, "Parallelism", config.parallelism);
    p.kv(1, "Delay", config.delay);
    p.kv(1, "On failure", config.failure_action.as_str());
    p.kv(1, "Monitoring Period", config.monitor);
    p.kv(1, "Max failure ratio", config.max_failure_ratio);
    p.kv(1, order_key, config.order.as_str());
    p.kv(1, "Strategy", config.describe());
}

fn resource_lines(p: &mut Pretty, heading: &str, amounts: &ResourceAmounts, pids: bool) {
    if amounts.nano_cpus == 0 && amounts.memory_bytes == 0 && (!pids || amounts.pids == 0) {
        return;
    }
    p.heading(1, heading);
    if amounts.nano_cpus != 0 {
        p.kv(2, "CPU", cpus(amounts.nano_cpus));
    }
    if amounts.memory_bytes != 0 {
        p.kv(2, "Memory", format_bytes(amounts.memory_bytes));
    }
    if pids && amounts.pids != 0 {
        p.kv(2, "PIDs", amounts.pids);
    }
}

fn health_lines(p: &mut Pretty, health: &HealthConfig) {
    p.heading(0, "Healthcheck");
    let test = if health.test.is_empty() { "(image default)".to_string() } else { health.test.join(" ") };
    p.kv(1, "Test", test);
    p.kv(1, "Interval", health.interval);
    p.kv(1, "Timeout", health.timeout);
    p.kv(1, "Retries", health.retries);
    p.kv(1, "Start period", health.start_period);
}

/// `service inspect --pretty`.
pub fn service_pretty(service: &Service) -> String {
    let spec = &service.spec;
    let container = &spec.task.container;
    let mut p = Pretty::new();
    p.kv(0, "ID", &service.id);
    p.kv(0, "Name", &spec.name);
    if !spec.labels.is_empty() {
        p.heading(0, "Labels");
        for (k, v) in &spec.labels {
            p.line(1, format!("{k}={v}"));
        }
    }
    match spec.mode {
        ServiceMode::Replicated { replicas } => {
            p.kv(0, "Service Mode", "Replicated");
            p.kv(1, "Replicas", replicas);
        }
        ServiceMode::Global => p.kv(0, "Service Mode", "Global"),
        ServiceMode::ReplicatedJob { total_completions, max_concurrent } => {
            p.kv(0, "Service Mode", "Replicated Job");
            p.kv(1, "Max Concurrent", max_concurrent);
            p.kv(1, "Total Completions", total_completions);
        }
        ServiceMode::GlobalJob => p.kv(0, "Service Mode", "Global Job"),
    }
    p.kv(0, "Created", format_timestamp(service.created_at));
    p.kv(0, "Updated", format_timestamp(service.updated_at));
    p.kv(0, "Version", service.version);
    if let Some(status) = &service.update_status {
        p.heading(0, "UpdateStatus");
        p.kv(1, "State", status.state.as_str());
        if let Some(at) = status.started_at {
            p.kv(1, "Started", format_timestamp(at));
        }
        if let Some(at) = status.completed_at {
            p.kv(1, "Completed", format_timestamp(at));
        }
        p.kv(1, "Message", &status.message);
    }
    let placement = &spec.task.placement;
    p.heading(0, "Placement");
    let constraints: Vec<String> = placement.constraints.iter().map(ToString::to_string).collect();
    let preferences: Vec<String> = placement.preferences.iter().map(ToString::to_string).collect();
    p.kv(1, "Constraints", or_none(&constraints));
    p.kv(1, "Preferences", or_none(&preferences));
    if placement.max_replicas_per_node > 0 {
        p.kv(1, "Max Replicas Per Node", placement.max_replicas_per_node);
    }
    update_config_lines(&mut p, "UpdateConfig", "Update order", &spec.update_config);
    update_config_lines(&mut p, "RollbackConfig", "Rollback order", &spec.rollback_config);
    let restart = &spec.task.restart_policy;
    p.heading(0, "RestartPolicy");
    p.kv(1, "Condition", restart.condition.as_str());
    p.kv(1, "Delay", restart.delay);
    let attempts =
        if restart.max_attempts == 0 { "0 (unlimited)".to_string() } else { restart.max_attempts.to_string() };
    p.kv(1, "Max attempts", attempts);
    let window = if restart.window.is_zero() { "0s (unbounded)".to_string() } else { restart.window.to_string() };
    p.kv(1, "Window", window);
    p.heading(0, "ContainerSpec");
    p.kv(1, "Image", &container.image);
    if !container.command.is_empty() {
        p.kv(1, "Command", container.command.join(" "));
    }
    if !container.args.is_empty() {
        p.kv(1, "Args", container.args.join(" "));
    }
    if !container.env.is_empty() {
        p.kv(1, "Env", container.env.join(" "));
    }
    if !container.labels.is_empty() {
        p.heading(1, "Labels");
        for (k, v) in &container.labels {
            p.line(2, format!("{k}={v}"));
        }
    }
    if let Some(v) = &container.hostname {
        p.kv(1, "Hostname", v);
    }
    if let Some(v) = &container.user {
        p.kv(1, "User", v);
    }
    if let Some(v) = &container.workdir {
        p.kv(1, "Dir", v);
    }
    p.kv(1, "Stop grace period", container.stop_grace_period);
    if let Some(v) = container.stop_drain_timeout {
        p.kv(1, "Stop drain timeout", v);
    }
    if let Some(v) = &container.stop_signal {
        p.kv(1, "Stop signal", v);
    }
    if let Some(health) = &container.healthcheck {
        health_lines(&mut p, health);
    }
    if !container.mounts.is_empty() {
        // As docker prints them.
        p.heading(0, "Mounts");
        for mount in &container.mounts {
            p.kv(1, "Target", &mount.target);
            p.kv(2, "Source", &mount.source);
            p.kv(2, "ReadOnly", mount.readonly);
            p.kv(2, "Type", mount.kind.as_str());
        }
    }
    let resources = &spec.task.resources;
    if resources.limits != ResourceAmounts::default() || resources.reservations != ResourceAmounts::default() {
        p.heading(0, "Resources");
        resource_lines(&mut p, "Reservations", &resources.reservations, false);
        resource_lines(&mut p, "Limits", &resources.limits, true);
    }
    let endpoint_mode = match spec.endpoint.mode {
        EndpointMode::Vip => "vip",
        EndpointMode::Dnsrr => "dnsrr",
    };
    p.kv(0, "Endpoint Mode", endpoint_mode);
    if !spec.endpoint.ports.is_empty() {
        p.heading(0, "Ports");
        for port in &spec.endpoint.ports {
            p.line(1, format!("PublishedPort = {}", port.published));
            p.line(2, format!("Protocol = {}", port.protocol.as_str()));
            p.line(2, format!("TargetPort = {}", port.target));
            let mode = match port.mode {
                PublishMode::Ingress => "ingress",
                PublishMode::Host => "host",
            };
            p.line(2, format!("PublishMode = {mode}"));
        }
    }
    p.out
}

/// `node inspect --pretty`.
pub fn node_pretty(node: &Node) -> String {
    let mut p = Pretty::new();
    p.kv(0, "ID", &node.id);
    p.kv(0, "Hostname", &node.description.hostname);
    p.kv(0, "Joined at", format_timestamp(node.created_at));
    p.kv(0, "Role", node.spec.role.as_str());
    if !node.spec.labels.is_empty() {
        p.heading(0, "Labels");
        for (k, v) in &node.spec.labels {
            p.line(1, format!("{k}={v}"));
        }
    }
    p.heading(0, "Status");
    p.kv(1, "State", capitalize(node.status.state.as_str()));
    if !node.status.message.is_empty() {
        p.kv(1, "Message", &node.status.message);
    }
    p.kv(1, "Availability", capitalize(node.spec.availability.as_str()));
    p.kv(1, "Address", &node.status.addr);
    if let Some(manager) = &node.manager {
        p.heading(0, "Manager Status");
        p.kv(1, "Address", &manager.addr);
        p.kv(1, "Raft ID", manager.raft_id);
        let reachability = manager.reachability.as_deref().map(capitalize).unwrap_or_else(|| "Unknown".to_string());
        p.kv(1, "Raft Status", reachability);
        p.kv(1, "Leader", if manager.leader { "Yes" } else { "No" });
    }
    p.heading(0, "Resources");
    p.kv(1, "CPUs", cpus(node.description.nano_cpus));
    p.kv(1, "Memory", format_bytes(node.description.memory_bytes));
    if !node.description.engine_labels.is_empty() {
        p.heading(0, "Engine Labels");
        for (k, v) in &node.description.engine_labels {
            p.line(1, format!("{k}={v}"));
        }
    }
    p.out
}

fn manager_ref(manager: Option<&ManagerRef>) -> String {
    match manager {
        Some(m) => format!("{} ({}, raft id {})", m.node_id, m.addr, m.raft_id),
        None => "none".to_string(),
    }
}

fn id_list(ids: &[u64]) -> String {
    or_none(&ids.iter().map(u64::to_string).collect::<Vec<_>>())
}

/// `cluster info`: one `Key: value` line per fact.
pub fn cluster_info_text(info: &ClusterInfo) -> String {
    let lines = [
        ("Cluster ID", info.cluster_id.clone()),
        ("Created", format_timestamp(info.created_at)),
        ("Managers", info.managers.to_string()),
        ("Leader", manager_ref(info.leader.as_ref())),
        ("Answered by", manager_ref(info.answered_by.as_ref())),
        ("Services", info.services.to_string()),
        ("Tasks", info.tasks.to_string()),
        ("Raft term", info.raft.term.to_string()),
        ("Raft commit", info.raft.commit.to_string()),
        ("Raft applied", info.raft.applied.to_string()),
        (
            "Raft snapshot",
            format!(
                "index {}, {}",
                info.raft.snapshot_index,
                shoal_types::units::format_bytes(info.raft.snapshot_bytes)
            ),
        ),
        ("Voters", id_list(&info.raft.voters)),
        ("Learners", id_list(&info.raft.learners)),
    ];
    let mut text: String = lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    // A manager from before settings were reported sends none: show nothing rather than defaults
    // that may not be the cluster's.
    if let Some(spec) = &info.spec {
        let settings = [
            ("Task history limit", spec.task_history_limit.to_string()),
            ("Max replicas", spec.max_replicas.to_string()),
            ("Heartbeat period", spec.heartbeat_period.to_string()),
            ("Certificate expiry", spec.node_cert_expiry.to_string()),
        ];
        text.extend(settings.iter().map(|(k, v)| format!("{k}: {v}\n")));
    }
    text
}

/// `rollout history`: one row a revision, oldest first (REVISION, CREATED, CHANGE-CAUSE, IMAGE).
pub fn revision_table(revisions: &[shoal_types::Revision], now: u64) -> String {
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .map(|r| {
            let age = std::time::Duration::from_millis(now.saturating_sub(r.created_at));
            vec![
                r.number.to_string(),
                format!("{} ago", crate::timefmt::human_duration(age)),
                if r.change_cause.is_empty() { "<none>".to_string() } else { r.change_cause.replace('\n', " ") },
                r.spec.task.container.image.clone(),
            ]
        })
        .collect();
    table(&["REVISION", "CREATED", "CHANGE-CAUSE", "IMAGE"], &rows)
}

/// `rollout history --revision N`: who made it, when and why, the whole spec, and the lines of
/// the spec that differ from the revision before it (`-` before, `+` this one).
pub fn revision_detail(revision: &shoal_types::Revision, before: Option<&shoal_types::ServiceSpec>) -> String {
    let pretty = |spec: &shoal_types::ServiceSpec| serde_json::to_string_pretty(spec).unwrap_or_default();
    let spec = pretty(&revision.spec);
    let mut out = format!(
        "Revision:      {}\nCreated:       {}\nCreated by:    {}\nChange cause:  {}\nSpec:\n",
        revision.number,
        crate::timefmt::format_timestamp(revision.created_at),
        if revision.created_by.is_empty() { "the cluster" } else { &revision.created_by },
        if revision.change_cause.is_empty() { "<none>" } else { &revision.change_cause },
    );
    for line in spec.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    match before {
        None => out.push_str("Changes: none (the first revision kept)\n"),
        Some(before) => {
            let changes = line_diff(&pretty(before), &spec);
            if changes.is_empty() {
                out.push_str("Changes: none (the same spec as the revision before)\n");
            } else {
                out.push_str("Changes from the revision before:\n");
                for line in changes {
                    out.push_str("  ");
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// `rollout ls`: one row a rollout record (ID, SERVICE, KIND, REVISIONS, STATE, STARTED, BATCHES,
/// BY).
pub fn rollout_table(rollouts: &[shoal_types::Rollout], now: u64) -> String {
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|r| {
            let age = std::time::Duration::from_millis(now.saturating_sub(r.started_at));
            vec![
                r.id.clone(),
                r.service_name.clone(),
                kind_name(r.kind).to_string(),
                format!("{} → {}", r.from_revision, r.to_revision),
                r.state.as_str().to_string(),
                format!("{} ago", crate::timefmt::human_duration(age)),
                r.batches.len().to_string(),
                if r.started_by.is_empty() { "the cluster".to_string() } else { r.started_by.clone() },
            ]
        })
        .collect();
    table(&["ID", "SERVICE", "KIND", "REVISIONS", "STATE", "STARTED", "BATCHES", "BY"], &rows)
}

/// `rollout ls`'s stack rollouts: `GROUP STACK STATE STARTED MEMBERS`, oldest first.
pub fn group_table(revisions: &[shoal_types::stack::StackRevision], now: u64) -> String {
    let rows: Vec<Vec<String>> = revisions
        .iter()
        .filter_map(|r| r.rollout.as_ref().map(|g| (r, g)))
        .map(|(r, g)| {
            let age = std::time::Duration::from_millis(now.saturating_sub(g.started_at));
            vec![
                g.id.clone(),
                r.stack.clone(),
                g.state.as_str().to_string(),
                format!("{} ago", crate::timefmt::human_duration(age)),
                g.progress().join(", "),
            ]
        })
        .collect();
    table(&["GROUP", "STACK", "STATE", "STARTED", "MEMBERS"], &rows)
}

fn kind_name(kind: shoal_types::RolloutKind) -> &'static str {
    match kind {
        shoal_types::RolloutKind::Update => "update",
        shoal_types::RolloutKind::Rollback => "rollback",
    }
}

/// `rollout inspect`: the record, its events, and its batches with the state of each slot's new
/// task and of the tasks it replaced (those the store still holds).
pub fn rollout_detail(rollout: &shoal_types::Rollout, tasks: &[shoal_types::Task]) -> String {
    let config = &rollout.config;
    let mut out = format!(
        "ID:        {}\nService:   {}\nKind:      {} (revision {} → {})\nState:     {} ({})\nStarted:   {} by {}\n",
        rollout.id,
        rollout.service_name,
        kind_name(rollout.kind),
        rollout.from_revision,
        rollout.to_revision,
        rollout.state.as_str(),
        rollout.message,
        format_timestamp(rollout.started_at),
        if rollout.started_by.is_empty() { "the cluster" } else { &rollout.started_by },
    );
    if let Some(at) = rollout.finished_at {
        out.push_str(&format!("Finished:  {}\n", format_timestamp(at)));
    }
    out.push_str(&format!(
        "Settings:  {}; delay {}, monitor {}, failure action {}, max failure ratio {}\n",
        config.describe(),
        config.delay,
        config.monitor,
        config.failure_action.as_str(),
        config.max_failure_ratio
    ));
    out.push_str("\nEvents:\n");
    for event in &rollout.events {
        out.push_str(&format!("  {}  {:<18}  {}\n", format_timestamp(event.at), event.state.as_str(), event.message));
    }
    let by_id: std::collections::HashMap<&str, &shoal_types::Task> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    // Times as offsets from the rollout's start: a timeline reads better than timestamps.
    let since = |at: Option<u64>| {
        at.map_or("-".to_string(), |at| format!("+{:.1}s", at.saturating_sub(rollout.started_at) as f64 / 1000.0))
    };
    let monitor = config.monitor.as_std().as_millis() as u64;
    let mut rows = Vec::new();
    for batch in &rollout.batches {
        for slot in &batch.slots {
            let state = by_id.get(slot.new_task.as_str()).map_or("(removed)", |t| t.status.state.as_str());
            let result = match (&slot.failure, slot.running_at) {
                (Some(failure), _) => failure.clone(),
                (None, Some(_)) => "ok".to_string(),
                (None, None) => "in transition".to_string(),
            };
            // The monitor window passed for a task that ran and did not fail within it.
            let passed = slot.running_at.filter(|_| slot.failure.is_none()).map(|at| at + monitor);
            rows.push(vec![
                batch.number.to_string(),
                slot.name.clone(),
                short_id(&slot.node).to_string(),
                short_id(&slot.new_task).to_string(),
                since(slot.stop_requested_at),
                since(slot.stopped_at),
                since(Some(batch.started_at)),
                since(slot.running_at),
                since(passed),
                state.to_string(),
                result,
            ]);
        }
    }
    out.push_str("\nBatches:\n");
    if rows.is_empty() {
        out.push_str("  none started\n");
    } else {
        out.push_str(&table(
            &[
                "BATCH",
                "SLOT",
                "NODE",
                "NEW TASK",
                "OLD TOLD TO STOP",
                "OLD STOPPED",
                "NEW CREATED",
                "NEW RUNNING",
                "MONITOR PASSED",
                "STATE",
                "RESULT",
            ],
            &rows,
        ));
        if rollout.unrecorded_slots > 0 {
            out.push_str(&format!("  and {} more slots (not listed)\n", rollout.unrecorded_slots));
        }
    }
    out
}

/// `secret ls` / `config ls`: `ID NAME CREATED UPDATED`, by name.
pub fn data_table(objects: &[shoal_types::DataObject], now: u64) -> String {
    let ago = |at: u64| {
        format!("{} ago", crate::timefmt::human_duration(std::time::Duration::from_millis(now.saturating_sub(at))))
    };
    let mut sorted: Vec<&shoal_types::DataObject> = objects.iter().collect();
    sorted.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let rows: Vec<Vec<String>> =
        sorted.iter().map(|o| vec![o.id.clone(), o.spec.name.clone(), ago(o.created_at), ago(o.updated_at)]).collect();
    table(&["ID", "NAME", "CREATED", "UPDATED"], &rows)
}

/// `route ls`: one line per route, by name.
pub fn route_table(routes: &[shoal_types::traffic::Route]) -> String {
    let pairs = |map: &mut dyn Iterator<Item = String>| map.collect::<Vec<_>>().join(",");
    let mut sorted: Vec<&shoal_types::traffic::Route> = routes.iter().collect();
    sorted.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            let selector = pairs(&mut r.spec.selector.iter().map(|(k, v)| format!("{k}={v}")));
            let weights = if r.spec.weights.is_empty() {
                "by task count".to_string()
            } else {
                pairs(&mut r.spec.weights.iter().map(|(s, w)| format!("{s}={w}%")))
            };
            vec![
                r.id.clone(),
                r.spec.name.clone(),
                format!("*:{}->{}/tcp", r.spec.port, r.spec.target),
                selector,
                weights,
            ]
        })
        .collect();
    table(&["ID", "NAME", "PORTS", "SELECTOR", "WEIGHTS"], &rows)
}

/// `secret inspect --pretty` / `config inspect --pretty` (never the value).
pub fn data_pretty(object: &shoal_types::DataObject) -> String {
    let mut out = format!("ID:              {}\nName:            {}\n", object.id, object.spec.name);
    if !object.spec.labels.is_empty() {
        out.push_str("Labels:\n");
        for (key, value) in &object.spec.labels {
            out.push_str(&format!(" - {key}={value}\n"));
        }
    }
    // A network holds no value.
    if object.kind != shoal_types::DataKind::Network {
        out.push_str(&format!("Size:            {} bytes\n", object.size));
    }
    out.push_str(&format!(
        "Created at:      {}\nUpdated at:      {}\n",
        crate::timefmt::format_timestamp(object.created_at),
        crate::timefmt::format_timestamp(object.updated_at)
    ));
    out
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `service update --dry-run`: what the update would do, for a person.
pub fn update_plan(plan: &shoal_types::UpdatePlan) -> String {
    let mut out = format!("Dry run: nothing was changed. An update of {} would:\n", plan.service);
    if plan.spec_changes.is_empty() {
        out.push_str("\nSpec changes: none\n");
    } else {
        out.push_str("\nSpec changes:\n");
        for line in &plan.spec_changes {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("\nOut of date: {} of {} tasks\n", plan.out_of_date.len(), plan.tasks));
    for task in &plan.out_of_date {
        let node = if task.node.is_empty() { "not placed".to_string() } else { format!("on {}", task.node) };
        out.push_str(&format!("  {} {}: {}\n", task.name, node, task.reasons.join("; ")));
    }
    if !plan.batches.is_empty() {
        out.push_str(&format!("\nStrategy: {}\n", plan.strategy));
        out.push_str("\nBatches:\n");
        // Each slot with the node its task runs on now (where stop-first replaces it).
        let node: std::collections::HashMap<&str, &str> =
            plan.out_of_date.iter().map(|t| (t.name.as_str(), t.node.as_str())).collect();
        for (i, batch) in plan.batches.iter().enumerate() {
            let slots: Vec<String> = batch
                .iter()
                .map(|name| match node.get(name.as_str()) {
                    Some(node) if !node.is_empty() => format!("{name} ({node})"),
                    _ => name.clone(),
                })
                .collect();
            out.push_str(&format!("  {}: {}\n", i + 1, slots.join(", ")));
            for (_, end) in plan.step_ends.iter().filter(|(after, _)| *after == i) {
                out.push_str(&format!("     -- {end}\n"));
            }
        }
        out.push_str(&format!(
            "\nEstimated duration: about {:.0} s ({} batches × ({:.1} s to start a task + the update delay), then \
             the monitor window)\n",
            plan.estimate_secs,
            plan.batches.len(),
            plan.task_start_secs
        ));
    }
    if !plan.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for warning in &plan.warnings {
            out.push_str(&format!("  - {warning}\n"));
        }
    }
    out
}

/// The lines that differ between `old` and `new`, in order: `- line` removed, `+ line` added
/// (a longest-common-subsequence diff; specs are a few hundred lines at most).
pub fn line_diff(old: &str, new: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- {}", a[i].trim()));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j].trim()));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
