//! `service ps` / `node ps`: tasks ordered, filtered and laid out as docker does.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use shoal_types::{Node, PublishMode, Task};

use super::{capitalize, table};
use crate::args::tasks::{TaskFilter, task_passes};
use crate::timefmt::human_duration;

/// Longest ERROR cell (display columns) before it is cut with `…`, as docker's.
pub const MAX_ERROR_WIDTH: usize = 30;
/// Characters of an id shown unless `--no-trunc`.
const SHORT_ID: usize = 12;

/// How `ps` shows tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PsOptions {
    /// Full ids and whole error messages.
    pub no_trunc: bool,
    /// Node ids instead of hostnames.
    pub no_resolve: bool,
    /// The time the CURRENT STATE ages are measured to (Unix ms).
    pub now: u64,
}

/// Service names by service id: the fallback for tasks that do not carry their service's name.
pub type ServiceNames = BTreeMap<String, String>;

fn service_name<'a>(task: &'a Task, names: &'a ServiceNames) -> &'a str {
    if task.service_name.is_empty() {
        names.get(&task.service_id).map_or(task.service_id.as_str(), String::as_str)
    } else {
        &task.service_name
    }
}

/// `web.3` for a replica, `web.<node id>` for a global task.
pub fn task_name(task: &Task, names: &ServiceNames) -> String {
    let service = service_name(task, names);
    if task.slot > 0 { format!("{service}.{}", task.slot) } else { format!("{service}.{}", task.node_id) }
}

/// docker's order: by service name, then slot (numerically; global tasks by node id), newest
/// task first within a slot.
fn compare(a: &Task, b: &Task, names: &ServiceNames) -> Ordering {
    service_name(a, names)
        .cmp(service_name(b, names))
        .then_with(|| (a.slot == 0).cmp(&(b.slot == 0)))
        .then_with(|| a.slot.cmp(&b.slot))
        .then_with(|| if a.slot == 0 { a.node_id.cmp(&b.node_id) } else { Ordering::Equal })
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| b.version.cmp(&a.version))
        .then_with(|| a.id.cmp(&b.id))
}

/// The tasks `ps` shows, in the order it shows them.
pub fn select_tasks<'a>(
    tasks: &'a [Task],
    filters: &[TaskFilter],
    names: &ServiceNames,
    nodes: &[Node],
) -> Vec<&'a Task> {
    let mut selected: Vec<&Task> =
        tasks.iter().filter(|t| task_passes(filters, t, &task_name(t, names), service_name(t, names), nodes)).collect();
    selected.sort_by(|a, b| compare(a, b, names));
    selected.dedup_by(|a, b| a.id == b.id);
    selected
}

/// `s` cut to `width` characters, the last one replaced by `…`, like docker's `Ellipsis`.
pub fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// ERROR: the task's error, cut unless `no_trunc`, in double quotes; empty without an error.
pub fn error_column(err: &str, no_trunc: bool) -> String {
    if err.is_empty() {
        return String::new();
    }
    // A table cell is one line.
    let err = err.replace(['\n', '\r'], " ");
    let err = if no_trunc { err } else { ellipsis(&err, MAX_ERROR_WIDTH) };
    format!("\"{err}\"")
}

/// The task's error; for a restart waiting out its backoff, when it will start and why it is
/// restarted: `restarting in 40s: No such image: shoal/busybox:99`.
pub fn error_text(task: &Task, now: u64) -> String {
    match task.restart_held_until(now) {
        Some(at) => {
            let wait = shoal_types::GoDuration::from_secs((at - now).div_ceil(1_000)).to_string();
            if task.status.err.is_empty() {
                format!("restarting in {wait}")
            } else {
                format!("restarting in {wait}: {}", task.status.err)
            }
        }
        None => task.status.err.clone(),
    }
}

/// CURRENT STATE: `Running 5 seconds ago` (docker lowercases the duration's words:
/// `Running less than a second ago`, `Failed about a minute ago`).
pub fn current_state_column(task: &Task, now: u64) -> String {
    let state = capitalize(task.status.state.as_str());
    if task.status.timestamp == 0 {
        return state;
    }
    let age = Duration::from_millis(now.saturating_sub(task.status.timestamp));
    format!("{state} {} ago", human_duration(age).to_lowercase())
}

/// PORTS: the host-mode published ports of a task placed on a node, `*:8080->80/tcp`, comma
/// separated (docker shows the ports the node bound; a task not on a node has none).
pub fn task_ports_column(task: &Task) -> String {
    if task.node_id.is_empty() {
        return String::new();
    }
    task.endpoint
        .ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host && p.published != 0)
        .map(|p| format!("*:{}->{}/{}", p.published, p.target, p.protocol.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// IMAGE: the task's image; a digest is left out unless `no_trunc`.
fn image_column(task: &Task, no_trunc: bool) -> String {
    let image = &task.spec.container.image;
    if no_trunc { image.clone() } else { image.split('@').next().unwrap_or(image).to_string() }
}

fn id_column(id: &str, no_trunc: bool) -> &str {
    if no_trunc { id } else { &id[..id.len().min(SHORT_ID)] }
}

fn node_column(task: &Task, nodes: &[Node], no_resolve: bool) -> String {
    if no_resolve || task.node_id.is_empty() {
        return task.node_id.clone();
    }
    nodes
        .iter()
        .find(|n| n.id == task.node_id && !n.description.hostname.is_empty())
        .map_or_else(|| task.node_id.clone(), |n| n.description.hostname.clone())
}

/// `ps`: `ID  NAME  IMAGE  NODE  DESIRED STATE  CURRENT STATE  ERROR  PORTS`. `tasks` must be in
/// [`select_tasks`] order: an older task of the name above it is shown as ` \_ web.3`.
pub fn task_table(tasks: &[&Task], names: &ServiceNames, nodes: &[Node], options: &PsOptions) -> String {
    let rows = task_rows(tasks, names, nodes, options);
    table(&["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], &rows)
}

/// The cells of `ps`, one row per task in table order (those of
/// [`crate::args::format::TASK_FIELDS`]).
pub fn task_rows(tasks: &[&Task], names: &ServiceNames, nodes: &[Node], options: &PsOptions) -> Vec<Vec<String>> {
    let mut previous = String::new();
    tasks
        .iter()
        .map(|task| {
            let name = task_name(task, names);
            let shown = if name == previous { format!(" \\_ {name}") } else { name.clone() };
            previous = name;
            vec![
                id_column(&task.id, options.no_trunc).to_string(),
                shown,
                image_column(task, options.no_trunc),
                node_column(task, nodes, options.no_resolve),
                desired_column(task),
                current_state_column(task, options.now),
                error_column(&error_text(task, options.now), options.no_trunc),
                task_ports_column(task),
            ]
        })
        .collect()
}

/// The DESIRED STATE column: a task a rollout kept running beside its replacement says so, as
/// does one prepared ahead of its slot's turn (`--update-prepare-ahead`).
fn desired_column(task: &Task) -> String {
    let desired = capitalize(task.desired_state.as_str());
    if task.kept && task.desired_state <= shoal_types::TaskState::Running {
        format!("{desired} (kept)")
    } else if task.prepared_ahead() && task.desired_state <= shoal_types::TaskState::Running {
        format!("{desired} (prepared)")
    } else {
        desired
    }
}

/// `ps -q`: task ids (short unless `no_trunc`), one a line, in table order.
pub fn task_ids(tasks: &[&Task], no_trunc: bool) -> String {
    tasks.iter().map(|t| format!("{}\n", id_column(&t.id, no_trunc))).collect()
}
