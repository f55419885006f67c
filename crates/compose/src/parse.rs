//! The schema walk: a merged, interpolated [`Val`] tree becomes a [`StackFile`]. Every key is
//! either supported (parsed and checked), a compose key shoal does not support (a warning), an
//! `x-*` extension (ignored) or unknown (an error, with a suggestion for likely typos).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use shoal_types::units::{parse_memory_bytes, parse_nano_cpus};
use shoal_types::{
    CanaryStep, Constraint, EndpointMode, FailureAction, GoDuration, HealthConfig, Mount, MountType, OldTasks,
    PlacementPreference, PortConfig, PortProtocol, Propagation, PublishMode, Quantity, RestartCondition, RestartPolicy,
    RolloutStrategy, StepPause, TmpfsOptions, UpdateConfig, UpdateOrder,
};

use crate::envfile::parse_env_file;
use crate::error::{ComposeError, Location};
use crate::model::{
    DataDef, Deploy, DeployMode, DeployPlacement, DeployResources, ResourceAmounts, Service, SpreadPreference,
    StackFile, VolumeDef,
};
use crate::shell;
use crate::yaml::{Key, Kind, Loc, Val};

type Result<T> = std::result::Result<T, ComposeError>;

/// Reads a file named by the stack (only `env_file` entries), relative paths already resolved.
pub(crate) type ReadFile<'a> = dyn FnMut(&Path) -> io::Result<String> + 'a;

pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

const TOP_SUPPORTED: &[&str] = &["version", "name", "services", "volumes", "secrets", "configs", "networks"];
const TOP_UNSUPPORTED: &[&str] = &["include", "models"];
const NETWORK_DEF_SUPPORTED: &[&str] = &["name", "external", "labels", "driver", "attachable"];
const NETWORK_DEF_UNSUPPORTED: &[&str] = &["driver_opts", "ipam", "internal", "enable_ipv6"];
const SERVICE_NETWORK_UNSUPPORTED: &[&str] = &[
    "aliases",
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "mac_address",
    "driver_opts",
    "priority",
    "gw_priority",
];
const DATA_DEF_SUPPORTED: &[&str] = &["name", "file", "external", "labels"];
const DATA_DEF_UNSUPPORTED: &[&str] = &["environment", "content", "driver", "driver_opts", "template_driver"];
const DATA_REFERENCE_SUPPORTED: &[&str] = &["source", "target", "uid", "gid", "mode"];
const VOLUME_DEF_SUPPORTED: &[&str] = &["name", "external", "driver", "driver_opts", "labels"];
const SERVICE_VOLUME_SUPPORTED: &[&str] = &["type", "source", "target", "read_only", "bind", "volume", "tmpfs"];
const SERVICE_VOLUME_UNSUPPORTED: &[&str] = &["consistency", "image"];

const SERVICE_SUPPORTED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "healthcheck",
    "stop_grace_period",
    "stop_signal",
    "hostname",
    "user",
    "working_dir",
    "deploy",
    "restart",
    "volumes",
    "secrets",
    "configs",
    "depends_on",
    "networks",
    "expose",
];

/// Every other service-level key of the compose specification.
const SERVICE_UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "driver_opts",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "read_only",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "stdin_open",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volumes_from",
];

const DEPLOY_SUPPORTED: &[&str] = &[
    "mode",
    "replicas",
    "labels",
    "update_config",
    "rollback_config",
    "restart_policy",
    "placement",
    "resources",
    "endpoint_mode",
];
const UPDATE_SUPPORTED: &[&str] = &[
    "parallelism",
    "delay",
    "failure_action",
    "monitor",
    "max_failure_ratio",
    "order",
    // shoal's strategies; `docker stack deploy` ignores `x-` keys, so the file still works there.
    "x-strategy",
    "x-max-surge",
    "x-max-unavailable",
    "x-steps",
    "x-old-tasks",
    "x-prepare-ahead",
];
const STEP_SUPPORTED: &[&str] = &["replicas", "pause", "traffic"];
const RESTART_SUPPORTED: &[&str] = &["condition", "delay", "max_attempts", "window"];
const PLACEMENT_SUPPORTED: &[&str] = &["constraints", "preferences", "max_replicas_per_node"];
const RESOURCES_SUPPORTED: &[&str] = &["limits", "reservations"];
const AMOUNTS_SUPPORTED: &[&str] = &["cpus", "memory", "pids"];
const RESERVATIONS_UNSUPPORTED: &[&str] = &["generic_resources", "devices"];
const HEALTH_SUPPORTED: &[&str] = &["test", "interval", "timeout", "retries", "start_period", "disable"];
const HEALTH_UNSUPPORTED: &[&str] = &["start_interval"];
const PORT_SUPPORTED: &[&str] = &["target", "published", "protocol", "mode"];
const PORT_UNSUPPORTED: &[&str] = &["host_ip", "name", "app_protocol"];
const ENV_FILE_SUPPORTED: &[&str] = &["path", "required"];
const ENV_FILE_UNSUPPORTED: &[&str] = &["format"];

pub(crate) struct Walker<'a> {
    pub files: &'a [String],
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    pub read_file: &'a mut ReadFile<'a>,
    /// Relative `env_file` paths are resolved against the directory of the first stack file.
    pub base_dir: PathBuf,
    pub warnings: Vec<String>,
    /// Where each compose key path was written, for errors found after the walk.
    pub locations: BTreeMap<String, Location>,
}

/// A bind source relative to the stack file's directory (itself relative to the current one when
/// the file was named so), made absolute and cleaned of `.` and `..` as docker does.
fn absolute_bind_source(base_dir: &Path, source: &str) -> String {
    let base = if base_dir.is_absolute() {
        base_dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")).join(base_dir)
    };
    let mut clean = PathBuf::from("/");
    for part in base.join(source).components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(name) => clean.push(name),
            _ => {}
        }
    }
    clean.to_string_lossy().into_owned()
}

impl Walker<'_> {
    pub fn location(&self, loc: Loc) -> Location {
        Location { file: self.files.get(loc.file).cloned().unwrap_or_default(), line: loc.line, column: loc.column }
    }

    fn error(&self, loc: Loc, path: &str, message: impl Into<String>) -> ComposeError {
        ComposeError::invalid(Some(self.location(loc)), path, message)
    }

    fn type_error(&self, v: &Val, path: &str, expected: &str) -> ComposeError {
        self.error(v.loc, path, format!("invalid type: {}, expected {expected}", v.describe()))
    }

    fn unsupported(&mut self, path: &str) {
        self.warnings.push(format!("{path}: not supported by shoal; ignored"));
    }

    /// The entries of a mapping (null counts as empty) that are supported keys. Unsupported
    /// compose keys become warnings, `x-*` keys are skipped and anything else is an error.
    fn object<'v>(
        &mut self,
        v: &'v Val,
        path: &str,
        supported: &[&str],
        unsupported: &[&str],
    ) -> Result<Vec<(&'v Key, &'v Val, String)>> {
        let entries: &[(Key, Val)] = match &v.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => return Err(self.type_error(v, path, "a mapping")),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let child = join(path, &key.name);
            // Extension keys are ignored (as docker does), except the ones shoal reads here.
            if key.name.starts_with("x-") && !supported.contains(&key.name.as_str()) {
                continue;
            }
            let loc = match value.kind {
                Kind::Map(_) | Kind::Seq(_) | Kind::Null => key.loc,
                _ => value.loc,
            };
            self.locations.insert(child.clone(), self.location(loc));
            if supported.contains(&key.name.as_str()) {
                out.push((key, value, child));
            } else if unsupported.contains(&key.name.as_str()) {
                self.unsupported(&child);
            } else {
                let message = match suggest(&key.name, supported.iter().chain(unsupported)) {
                    Some(near) => format!("unknown key (did you mean {near:?}?)"),
                    None => "unknown key".to_string(),
                };
                return Err(self.error(key.loc, &child, message));
            }
        }
        Ok(out)
    }

    fn string(&self, v: &Val, path: &str) -> Result<String> {
        match &v.kind {
            Kind::Str(s) => Ok(s.clone()),
            Kind::Int(_, raw) | Kind::Float(_, raw) => Ok(raw.clone()),
            _ => Err(self.type_error(v, path, "a string")),
        }
    }

    /// An optional string: null means "not set".
    fn opt_string(&self, v: &Val, path: &str) -> Result<Option<String>> {
        match v.kind {
            Kind::Null => Ok(None),
            _ => self.string(v, path).map(Some),
        }
    }

    fn uint(&self, v: &Val, path: &str) -> Result<u64> {
        let negative =
            |shown: &str| self.error(v.loc, path, format!("invalid value: {shown}, expected a non-negative integer"));
        match &v.kind {
            Kind::Int(i, raw) => u64::try_from(*i).map_err(|_| negative(&format!("integer {raw}"))),
            Kind::Str(s) => match s.trim().parse::<i128>() {
                Ok(i) => u64::try_from(i).map_err(|_| negative(&format!("string {s:?}"))),
                Err(_) => Err(self.type_error(v, path, "an integer")),
            },
            _ => Err(self.type_error(v, path, "an integer")),
        }
    }

    fn uint_in(&self, v: &Val, path: &str, min: u64, max: u64, what: &str) -> Result<u64> {
        let n = self.uint(v, path)?;
        if n < min || n > max {
            return Err(self.error(v.loc, path, format!("invalid value: {n}, expected {what} ({min}-{max})")));
        }
        Ok(n)
    }

    fn float(&self, v: &Val, path: &str) -> Result<f64> {
        let parsed = match &v.kind {
            Kind::Float(f, _) => Some(*f),
            Kind::Int(i, _) => Some(*i as f64),
            Kind::Str(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        parsed.filter(|f| f.is_finite()).ok_or_else(|| self.type_error(v, path, "a number"))
    }

    fn boolean(&self, v: &Val, path: &str) -> Result<bool> {
        match &v.kind {
            Kind::Bool(b) => Ok(*b),
            Kind::Str(s) if s.eq_ignore_ascii_case("true") => Ok(true),
            Kind::Str(s) if s.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(self.type_error(v, path, "a boolean")),
        }
    }

    fn duration(&self, v: &Val, path: &str) -> Result<GoDuration> {
        match &v.kind {
            Kind::Str(s) => GoDuration::parse(s).map_err(|e| self.error(v.loc, path, e.to_string())),
            Kind::Int(0, _) => Ok(GoDuration::ZERO),
            Kind::Int(i, _) if *i < 0 => Err(self.error(
                v.loc,
                path,
                format!(
                    "invalid value: {}, expected a duration such as \"10s\" (durations cannot be negative)",
                    v.describe()
                ),
            )),
            _ => Err(self.type_error(v, path, "a duration such as \"10s\" or \"1m30s\"")),
        }
    }

    /// `command`/`entrypoint`: a string (split like a shell does) or a list of strings.
    fn command(&self, v: &Val, path: &str) -> Result<Option<Vec<String>>> {
        match &v.kind {
            Kind::Null => Ok(None),
            Kind::Str(s) => shell::split(s).map(Some).map_err(|e| self.error(v.loc, path, e)),
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => Err(self.type_error(v, path, "a string or a sequence of strings")),
        }
    }

    /// `depends_on`: a list of service names, or a mapping by service name (its `condition`,
    /// `restart` and `required` are accepted and not used: shoal orders atomic rollouts by it).
    fn depends_on(&self, v: &Val, path: &str) -> Result<Vec<(String, Loc)>> {
        match &v.kind {
            Kind::Map(entries) => Ok(entries.iter().map(|(key, _)| (key.name.clone(), key.loc)).collect()),
            _ => self.string_list(v, path),
        }
    }

    fn string_list(&self, v: &Val, path: &str) -> Result<Vec<(String, Loc)>> {
        match &v.kind {
            Kind::Null => Ok(Vec::new()),
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Ok((self.string(item, &format!("{path}[{i}]"))?, item.loc)))
                .collect(),
            _ => Err(self.type_error(v, path, "a sequence of strings")),
        }
    }

    /// `environment` / `labels`: a mapping, or a list of `KEY=VALUE` (a bare `KEY` has no value).
    fn key_values(&self, v: &Val, path: &str) -> Result<Vec<(String, Option<String>, Loc)>> {
        let mut out = Vec::new();
        match &v.kind {
            Kind::Null => {}
            Kind::Map(entries) => {
                for (key, value) in entries {
                    let child = join(path, &key.name);
                    let text = match &value.kind {
                        Kind::Null => None,
                        _ => Some(
                            value
                                .scalar_text()
                                .ok_or_else(|| self.type_error(value, &child, "a string, number or boolean"))?,
                        ),
                    };
                    if key.name.is_empty() {
                        return Err(self.error(key.loc, &child, "keys must not be empty"));
                    }
                    out.push((key.name.clone(), text, value.loc));
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    let Kind::Str(entry) = &item.kind else {
                        return Err(self.type_error(item, &child, "a string KEY=VALUE"));
                    };
                    let (key, value) = match entry.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_string())),
                        None => (entry.as_str(), None),
                    };
                    if key.is_empty() {
                        return Err(self.error(item.loc, &child, format!("{entry:?} has an empty key")));
                    }
                    out.push((key.to_string(), value, item.loc));
                }
            }
            _ => return Err(self.type_error(v, path, "a mapping or a sequence of KEY=VALUE strings")),
        }
        Ok(out)
    }

    fn labels(&self, v: &Val, path: &str) -> Result<BTreeMap<String, String>> {
        Ok(self.key_values(v, path)?.into_iter().map(|(k, v, _)| (k, v.unwrap_or_default())).collect())
    }

    fn choice<T: Copy>(&self, v: &Val, path: &str, what: &str, options: &[(&str, T)], empty: Option<T>) -> Result<T> {
        let text = self.string(v, path)?;
        if text.is_empty()
            && let Some(default) = empty
        {
            return Ok(default);
        }
        options.iter().find(|(name, _)| *name == text).map(|(_, value)| *value).ok_or_else(|| {
            let allowed: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            self.error(v.loc, path, format!("unknown {what} {text:?} (allowed: {})", allowed.join(", ")))
        })
    }

    // --- the document ---------------------------------------------------------------------

    pub fn stack(&mut self, root: &Val) -> Result<StackFile> {
        let mut stack = StackFile::default();
        let mut services = None;
        for (key, value, path) in self.object(root, "", TOP_SUPPORTED, TOP_UNSUPPORTED)? {
            match key.name.as_str() {
                "version" => stack.version = self.opt_string(value, &path)?,
                "name" => {
                    // The stack name comes from the command line, as with `docker stack deploy`.
                    self.opt_string(value, &path)?;
                }
                "services" => services = Some(value),
                "volumes" => stack.volumes = self.volume_defs(value, &path)?,
                "secrets" => stack.secrets = self.data_defs(value, &path, "secret")?,
                "configs" => stack.configs = self.data_defs(value, &path, "config")?,
                "networks" => stack.networks = self.network_defs(value, &path)?,
                _ => {}
            }
        }
        // The one extension shoal reads; every other `x-*` key is skipped.
        if let Kind::Map(entries) = &root.kind
            && let Some((_, value)) = entries.iter().find(|(key, _)| key.name == "x-change-cause")
        {
            let cause = self.string(value, "x-change-cause")?;
            let most = shoal_types::limits::MAX_CHANGE_CAUSE_BYTES;
            if cause.len() > most {
                return Err(self.error(
                    value.loc,
                    "x-change-cause",
                    format!("{} bytes is above the maximum of {most}", cause.len()),
                ));
            }
            stack.change_cause = Some(cause);
        }
        if let Kind::Map(entries) = &root.kind
            && let Some((_, value)) = entries.iter().find(|(key, _)| key.name == "x-routes")
        {
            stack.routes = self.route_defs(value, "x-routes")?;
        }
        if let Kind::Map(entries) = &root.kind
            && let Some((_, value)) = entries.iter().find(|(key, _)| key.name == "x-atomic")
        {
            stack.atomic = self.boolean(value, "x-atomic")?;
        }
        let Some(services) = services else {
            let location = Location { file: self.files.first().cloned().unwrap_or_default(), line: 1, column: 1 };
            return Err(ComposeError::invalid(
                Some(location),
                "services",
                "missing: a stack needs at least one service",
            ));
        };
        let entries = match &services.kind {
            Kind::Map(entries) if !entries.is_empty() => entries,
            Kind::Map(_) | Kind::Null => {
                return Err(self.error(services.loc, "services", "no services defined"));
            }
            _ => return Err(self.type_error(services, "services", "a mapping of service names to services")),
        };
        for (key, value) in entries {
            let path = join("services", &key.name);
            if key.name.starts_with("x-") {
                continue;
            }
            self.locations.insert(path.clone(), self.location(key.loc));
            let name_ok = key.name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && key.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(self.error(
                    key.loc,
                    &path,
                    "invalid service name: use letters, digits, '_', '.' and '-', starting with a letter or digit",
                ));
            }
            let service = self.service(key, value, &path)?;
            stack.services.insert(key.name.clone(), service);
        }
        for (name, service) in &stack.services {
            for (i, dependency) in service.depends_on.iter().enumerate() {
                if !stack.services.contains_key(dependency) {
                    let path = format!("services.{name}.depends_on[{i}]");
                    let location = self.locations.get(&path).cloned();
                    return Err(ComposeError::invalid(
                        location,
                        path,
                        format!("service {dependency} is not defined in the stack"),
                    ));
                }
            }
        }
        let names: std::collections::BTreeSet<String> = stack.services.keys().cloned().collect();
        let graph = stack.services.iter().map(|(name, s)| (name.clone(), s.depends_on.clone())).collect();
        if let Err(why) = shoal_types::stack::check_dependencies(&names, &graph) {
            // Located at the first dependency of the cycle's first service.
            let first = why.split(": ").nth(2).and_then(|cycle| cycle.split(" -> ").next()).unwrap_or_default();
            let path = format!("services.{first}.depends_on");
            let location = self.locations.get(&format!("{path}[0]")).cloned();
            return Err(ComposeError::invalid(location, path, why.trim_start_matches("depends_on: ").to_string()));
        }
        Ok(stack)
    }

    fn service(&mut self, name: &Key, v: &Val, path: &str) -> Result<Service> {
        let mut service = Service::default();
        let mut image = None;
        let mut env_files = Vec::new();
        let mut environment = Vec::new();
        let mut restart = None;
        let mut deploy = None;
        let mut exposed: Vec<PortConfig> = Vec::new();
        for (key, value, p) in self.object(v, path, SERVICE_SUPPORTED, SERVICE_UNSUPPORTED)? {
            match key.name.as_str() {
                "image" => image = Some(self.string(value, &p)?),
                "command" => service.command = self.command(value, &p)?,
                "entrypoint" => service.entrypoint = self.command(value, &p)?,
                "environment" => environment = self.key_values(value, &p)?,
                "env_file" => env_files = self.env_files(value, &p)?,
                "labels" => service.labels = self.labels(value, &p)?,
                "ports" => service.ports = self.ports(value, &p)?,
                "expose" => {
                    // Ports the services of its networks reach it at, published nowhere: as a
                    // port given without a published one (`ports: ["80"]`).
                    for port in self.ports(value, &p)? {
                        if port.published != 0 {
                            return Err(self.error(
                                value.loc,
                                &p,
                                format!(
                                    "{}:{}: expose takes ports, not mappings (use ports:)",
                                    port.published, port.target
                                ),
                            ));
                        }
                        if port.protocol != shoal_types::PortProtocol::Tcp {
                            self.warnings
                                .push(format!("{p}: {}/udp: only TCP ports are reached by name; ignored", port.target));
                            continue;
                        }
                        exposed.push(port);
                    }
                }
                "healthcheck" => service.healthcheck = self.healthcheck(value, &p)?,
                "stop_grace_period" => {
                    service.stop_grace_period =
                        if matches!(value.kind, Kind::Null) { None } else { Some(self.duration(value, &p)?) }
                }
                "stop_signal" => service.stop_signal = self.opt_string(value, &p)?,
                "hostname" => service.hostname = self.opt_string(value, &p)?,
                "depends_on" => {
                    for (i, (dependency, loc)) in self.depends_on(value, &p)?.into_iter().enumerate() {
                        self.locations.insert(format!("{p}[{i}]"), self.location(loc));
                        service.depends_on.push(dependency);
                    }
                }
                "user" => service.user = self.opt_string(value, &p)?,
                "working_dir" => service.working_dir = self.opt_string(value, &p)?,
                "deploy" => deploy = Some((value, p)),
                "restart" => restart = Some((value, p)),
                "volumes" => service.volumes = self.service_volumes(value, &p)?,
                "secrets" => service.secrets = self.data_references(value, &p)?,
                "configs" => service.configs = self.data_references(value, &p)?,
                "networks" => {
                    for (i, (network, loc)) in self.service_networks(value, &p)?.into_iter().enumerate() {
                        self.locations.insert(format!("{p}[{i}]"), self.location(loc));
                        service.networks.push(network);
                    }
                }
                _ => {}
            }
        }
        for port in exposed {
            if !service.ports.iter().any(|p| p.target == port.target && p.protocol == port.protocol) {
                service.ports.push(port);
            }
        }
        service.image =
            image.ok_or_else(|| self.error(name.loc, path, "image is required (shoal does not build images)"))?;

        // env_file entries first, then `environment` on top; a bare KEY comes from the environment.
        for (key, value, _) in env_files.into_iter().chain(environment) {
            if let Some(value) = value.or_else(|| (self.lookup)(&key)) {
                service.environment.insert(key, value);
            }
        }

        service.deploy = match deploy {
            Some((value, p)) => self.deploy(value, &p)?,
            None => Deploy { replicas: Some(1), ..Deploy::default() },
        };
        if let Some((value, p)) = restart {
            if service.deploy.restart_policy.is_some() {
                self.warnings.push(format!("{p}: ignored because {path}.deploy.restart_policy is set"));
            } else {
                service.deploy.restart_policy = self.legacy_restart(value, &p)?;
            }
        }
        Ok(service)
    }

    /// `env_file`: a path, or a list of paths or `{path, required}` entries.
    fn env_files(&mut self, v: &Val, path: &str) -> Result<Vec<(String, Option<String>, Loc)>> {
        let mut entries: Vec<(String, bool, Loc, String)> = Vec::new();
        match &v.kind {
            Kind::Null => {}
            Kind::Str(s) => entries.push((s.clone(), true, v.loc, path.to_string())),
            Kind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    match &item.kind {
                        Kind::Map(_) => {
                            let mut file = None;
                            let mut required = true;
                            for (key, value, p) in
                                self.object(item, &child, ENV_FILE_SUPPORTED, ENV_FILE_UNSUPPORTED)?
                            {
                                match key.name.as_str() {
                                    "path" => file = Some(self.string(value, &p)?),
                                    "required" => required = self.boolean(value, &p)?,
                                    _ => {}
                                }
                            }
                            let file = file.ok_or_else(|| self.error(item.loc, &child, "path is required"))?;
                            entries.push((file, required, item.loc, child));
                        }
                        _ => entries.push((self.string(item, &child)?, true, item.loc, child)),
                    }
                }
            }
            _ => return Err(self.type_error(v, path, "a path or a sequence of paths")),
        }
        let mut out = Vec::new();
        for (file, required, loc, entry_path) in entries {
            let full = self.base_dir.join(&file);
            let text = match (self.read_file)(&full) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !required => continue,
                Err(e) => {
                    return Err(self.error(loc, &entry_path, format!("cannot read {}: {e}", full.display())));
                }
            };
            let pairs = parse_env_file(&text).map_err(|e| ComposeError::Syntax {
                location: Location { file: full.display().to_string(), line: e.line as u64, column: 1 },
                message: e.message,
            })?;
            out.extend(pairs.into_iter().map(|(k, v)| (k, v, loc)));
        }
        Ok(out)
    }

    /// The top-level `networks:`: name → definition (null: the stack's own network). Every
    /// shoal network spans the cluster, so `driver` may only be `overlay`.
    fn network_defs(&mut self, v: &Val, path: &str) -> Result<BTreeMap<String, crate::model::DataDef>> {
        let entries: &[(Key, Val)] = match &v.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => return Err(self.type_error(v, path, "a mapping of network names to networks")),
        };
        let mut defs = BTreeMap::new();
        for (key, value) in entries {
            let child = join(path, &key.name);
            self.locations.insert(child.clone(), self.location(key.loc));
            let mut def = crate::model::DataDef::default();
            for (field, value, p) in self.object(value, &child, NETWORK_DEF_SUPPORTED, NETWORK_DEF_UNSUPPORTED)? {
                match field.name.as_str() {
                    "name" => def.name = self.opt_string(value, &p)?,
                    "external" => def.external = self.boolean(value, &p)?,
                    "labels" => def.labels = self.labels(value, &p)?,
                    "driver" => {
                        if let Some(driver) = self.opt_string(value, &p)?
                            && driver != "overlay"
                        {
                            return Err(self.error(
                                value.loc,
                                &p,
                                format!(
                                    "driver {driver:?}: shoal networks span the cluster; the only driver is \"overlay\""
                                ),
                            ));
                        }
                    }
                    "attachable" => {
                        self.boolean(value, &p)?;
                    }
                    _ => {}
                }
            }
            if def.external && !def.labels.is_empty() {
                return Err(self.error(key.loc, &child, "an external network exists already: labels cannot be set"));
            }
            defs.insert(key.name.clone(), def);
        }
        Ok(defs)
    }

    /// A service's `networks:`: a list of names, or a mapping by name (each entry's options,
    /// such as `aliases`, are not used).
    fn service_networks(&mut self, v: &Val, path: &str) -> Result<Vec<(String, Loc)>> {
        match &v.kind {
            Kind::Map(entries) => {
                let mut out = Vec::new();
                for (key, value) in entries {
                    let child = join(path, &key.name);
                    if !matches!(value.kind, Kind::Null) {
                        self.object(value, &child, &[], SERVICE_NETWORK_UNSUPPORTED)?;
                    }
                    out.push((key.name.clone(), key.loc));
                }
                Ok(out)
            }
            _ => self.string_list(v, path),
        }
    }

    /// The top-level `volumes:`: name → definition (null: a plain local volume).
    fn volume_defs(&mut self, v: &Val, path: &str) -> Result<BTreeMap<String, VolumeDef>> {
        let entries: &[(Key, Val)] = match &v.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => return Err(self.type_error(v, path, "a mapping of volume names to volumes")),
        };
        let mut defs = BTreeMap::new();
        for (key, value) in entries {
            let child = join(path, &key.name);
            self.locations.insert(child.clone(), self.location(key.loc));
            let mut def = VolumeDef::default();
            for (field, value, p) in self.object(value, &child, VOLUME_DEF_SUPPORTED, &[])? {
                match field.name.as_str() {
                    "name" => def.name = self.opt_string(value, &p)?,
                    "external" => def.external = self.boolean(value, &p)?,
                    "driver" => def.driver = self.opt_string(value, &p)?,
                    "driver_opts" => {
                        def.driver_opts = self
                            .key_values(value, &p)?
                            .into_iter()
                            .map(|(k, v, _)| (k, v.unwrap_or_default()))
                            .collect()
                    }
                    "labels" => def.labels = self.labels(value, &p)?,
                    _ => {}
                }
            }
            if def.external && (def.driver.is_some() || !def.driver_opts.is_empty() || !def.labels.is_empty()) {
                return Err(self.error(
                    key.loc,
                    &child,
                    "an external volume exists already: driver, driver_opts and labels cannot be set",
                ));
            }
            defs.insert(key.name.clone(), def);
        }
        Ok(defs)
    }

    /// The top-level `secrets:` or `configs:`: name → where the value comes from.
    fn route_defs(&mut self, v: &Val, path: &str) -> Result<BTreeMap<String, crate::model::RouteDef>> {
        let entries: &[(Key, Val)] = match &v.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => return Err(self.type_error(v, path, "a mapping of route names to routes")),
        };
        let mut defs = BTreeMap::new();
        for (key, value) in entries {
            let child = join(path, &key.name);
            self.locations.insert(child.clone(), self.location(key.loc));
            let mut def = crate::model::RouteDef::default();
            for (field, value, p) in self.object(value, &child, &["publish", "select", "weights"], &[])? {
                match field.name.as_str() {
                    "publish" => def.publish = self.string(value, &p)?,
                    "select" => def.select = self.labels(value, &p)?,
                    "weights" => {
                        for (service, share) in self.labels(value, &p)? {
                            let share = share.parse::<u32>().ok().filter(|s| *s <= 100).ok_or_else(|| {
                                self.error(
                                    value.loc,
                                    &join(&p, &service),
                                    format!("{share:?}: a weight is a whole number of per cent from 0 to 100"),
                                )
                            })?;
                            def.weights.insert(service, share);
                        }
                    }
                    _ => {}
                }
            }
            if def.publish.is_empty() {
                return Err(self.error(key.loc, &child, "publish is required (PUBLISHED:TARGET, e.g. 8080:80)"));
            }
            if def.select.is_empty() {
                return Err(self.error(key.loc, &child, "select is required: the service labels the route selects"));
            }
            defs.insert(key.name.clone(), def);
        }
        Ok(defs)
    }

    fn data_defs(&mut self, v: &Val, path: &str, kind: &str) -> Result<BTreeMap<String, DataDef>> {
        let entries: &[(Key, Val)] = match &v.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &[],
            _ => return Err(self.type_error(v, path, &format!("a mapping of {kind} names to {kind}s"))),
        };
        let mut defs = BTreeMap::new();
        for (key, value) in entries {
            let child = join(path, &key.name);
            self.locations.insert(child.clone(), self.location(key.loc));
            let mut def = DataDef::default();
            for (field, value, p) in self.object(value, &child, DATA_DEF_SUPPORTED, DATA_DEF_UNSUPPORTED)? {
                match field.name.as_str() {
                    "name" => def.name = self.opt_string(value, &p)?,
                    // As written: `stack deploy` reads it relative to the first stack file.
                    "file" => def.file = self.opt_string(value, &p)?,
                    "external" => def.external = self.boolean(value, &p)?,
                    "labels" => def.labels = self.labels(value, &p)?,
                    _ => {}
                }
            }
            match (&def.file, def.external) {
                (Some(_), true) => {
                    return Err(self.error(
                        key.loc,
                        &child,
                        format!("an external {kind} exists already: file cannot be set"),
                    ));
                }
                (None, false) => {
                    return Err(self.error(
                        key.loc,
                        &child,
                        format!("a {kind} needs file: (read at deploy) or external: true (created beforehand)"),
                    ));
                }
                _ => {}
            }
            let name = def.object_name("x", &key.name);
            shoal_types::validate_data_name(&name).map_err(|why| self.error(key.loc, &child, why))?;
            defs.insert(key.name.clone(), def);
        }
        Ok(defs)
    }

    /// A service's `secrets:` or `configs:`: names, or `{source, target, uid, gid, mode}`.
    fn data_references(&mut self, v: &Val, path: &str) -> Result<Vec<shoal_types::DataReference>> {
        let items = match &v.kind {
            Kind::Null => return Ok(Vec::new()),
            Kind::Seq(items) => items,
            _ => return Err(self.type_error(v, path, "a sequence of names or mappings")),
        };
        let mut references = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let child = format!("{path}[{i}]");
            self.locations.insert(child.clone(), self.location(item.loc));
            let reference = match &item.kind {
                Kind::Str(name) => shoal_types::DataReference::named(name),
                Kind::Map(_) => {
                    let (mut source, mut target, mut reference) = (None, None, shoal_types::DataReference::named("x"));
                    for (field, value, p) in self.object(item, &child, DATA_REFERENCE_SUPPORTED, &[])? {
                        match field.name.as_str() {
                            "source" => source = Some(self.string(value, &p)?),
                            "target" => target = Some(self.string(value, &p)?),
                            "uid" => reference.uid = self.string(value, &p)?,
                            "gid" => reference.gid = self.string(value, &p)?,
                            "mode" => {
                                let text = self.string(value, &p)?;
                                reference.mode = shoal_types::secret::parse_mode(&text)
                                    .filter(|m| *m <= 0o777)
                                    .ok_or_else(|| {
                                        self.error(
                                            value.loc,
                                            &p,
                                            format!(
                                                "invalid mode {text:?}: expected a file mode from 0 to 0777 (e.g. 0400)"
                                            ),
                                        )
                                    })?;
                            }
                            _ => {}
                        }
                    }
                    let source = source.ok_or_else(|| self.error(item.loc, &child, "source is required"))?;
                    reference.target = target.unwrap_or_else(|| source.clone());
                    reference.source = source;
                    reference
                }
                _ => return Err(self.type_error(item, &child, "a name or a mapping with source")),
            };
            reference.check().map_err(|m| self.error(item.loc, &child, m))?;
            references.push(reference);
        }
        Ok(references)
    }

    /// A service's `volumes:`: short (`[SOURCE:]TARGET[:MODE]`) or long syntax, as mounts. A
    /// relative bind source is resolved against the stack file's directory.
    fn service_volumes(&mut self, v: &Val, path: &str) -> Result<Vec<Mount>> {
        let items = match &v.kind {
            Kind::Null => return Ok(Vec::new()),
            Kind::Seq(items) => items,
            _ => return Err(self.type_error(v, path, "a sequence of volumes")),
        };
        let mut mounts = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let child = format!("{path}[{i}]");
            self.locations.insert(child.clone(), self.location(item.loc));
            let mut mount = match &item.kind {
                Kind::Str(text) => self.short_volume(text).map_err(|m| self.error(item.loc, &child, m))?,
                Kind::Map(_) => self.long_volume(item, &child)?,
                _ => return Err(self.type_error(item, &child, "a volume (SOURCE:TARGET[:MODE] or a mapping)")),
            };
            if mount.kind == MountType::Bind && mount.source.starts_with('.') {
                mount.source = absolute_bind_source(&self.base_dir, &mount.source);
            }
            mount.check().map_err(|m| self.error(item.loc, &child, m))?;
            mounts.push(mount);
        }
        Ok(mounts)
    }

    /// `/host:/target:ro`, `data:/target`, `./rel:/target`, `/target` (anonymous volume).
    fn short_volume(&self, text: &str) -> std::result::Result<Mount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [target] => ("", *target, None),
            [source, target] => (*source, *target, None),
            [source, target, mode] => (*source, *target, Some(*mode)),
            _ => return Err(format!("invalid volume {text:?}: expected [SOURCE:]TARGET[:MODE]")),
        };
        let bind = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        let mut mount = Mount {
            kind: if bind { MountType::Bind } else { MountType::Volume },
            source: source.to_string(),
            target: target.to_string(),
            ..Mount::default()
        };
        for option in mode.into_iter().flat_map(|m| m.split(',')) {
            match option {
                "ro" => mount.readonly = true,
                "rw" => mount.readonly = false,
                "nocopy" if !bind => mount.volume.no_copy = true,
                other => match Propagation::ALL.into_iter().find(|p| p.as_str() == other) {
                    Some(p) if bind => mount.propagation = Some(p),
                    _ => {
                        return Err(format!(
                            "invalid volume mode {other:?} in {text:?} (allowed: ro, rw, nocopy for volumes, a propagation for binds)"
                        ));
                    }
                },
            }
        }
        Ok(mount)
    }

    fn long_volume(&mut self, v: &Val, path: &str) -> Result<Mount> {
        let mut mount = Mount::default();
        let mut kind = None;
        let mut tmpfs = TmpfsOptions::default();
        let mut has_tmpfs = false;
        for (key, value, p) in self.object(v, path, SERVICE_VOLUME_SUPPORTED, SERVICE_VOLUME_UNSUPPORTED)? {
            match key.name.as_str() {
                "type" => {
                    kind = Some(self.choice(
                        value,
                        &p,
                        "volume type",
                        &[("bind", MountType::Bind), ("volume", MountType::Volume), ("tmpfs", MountType::Tmpfs)],
                        None,
                    )?)
                }
                "source" => mount.source = self.opt_string(value, &p)?.unwrap_or_default(),
                "target" => mount.target = self.string(value, &p)?,
                "read_only" => mount.readonly = self.boolean(value, &p)?,
                "bind" => {
                    for (key, value, p) in self.object(value, &p, &["propagation"], &["create_host_path", "selinux"])? {
                        if key.name == "propagation" {
                            let options: Vec<(&str, Propagation)> =
                                Propagation::ALL.iter().map(|p| (p.as_str(), *p)).collect();
                            mount.propagation = Some(self.choice(value, &p, "propagation", &options, None)?);
                        }
                    }
                }
                "volume" => {
                    for (key, value, p) in self.object(value, &p, &["nocopy"], &["subpath"])? {
                        if key.name == "nocopy" {
                            mount.volume.no_copy = self.boolean(value, &p)?;
                        }
                    }
                }
                "tmpfs" => {
                    has_tmpfs = true;
                    for (key, value, p) in self.object(value, &p, &["size", "mode"], &[])? {
                        match key.name.as_str() {
                            "size" => {
                                let text = self.string(value, &p)?;
                                tmpfs.size_bytes =
                                    shoal_types::mount::parse_bytes(&text).map_err(|m| self.error(value.loc, &p, m))?;
                            }
                            "mode" => {
                                let mode = self.uint(value, &p)?;
                                let mode = u32::try_from(mode).ok().filter(|m| *m <= 0o7777).ok_or_else(|| {
                                    self.error(value.loc, &p, format!("invalid mode {mode}: at most 4095 (0o7777)"))
                                })?;
                                tmpfs.mode = Some(mode);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        mount.kind = kind.ok_or_else(|| self.error(v.loc, path, "type is required (bind, volume or tmpfs)"))?;
        if mount.target.is_empty() {
            return Err(self.error(v.loc, path, "target is required"));
        }
        if mount.kind == MountType::Tmpfs || has_tmpfs {
            mount.tmpfs = Some(tmpfs);
        }
        Ok(mount)
    }

    fn ports(&mut self, v: &Val, path: &str) -> Result<Vec<PortConfig>> {
        let items = match &v.kind {
            Kind::Null => return Ok(Vec::new()),
            Kind::Seq(items) => items,
            _ => return Err(self.type_error(v, path, "a sequence of ports")),
        };
        let mut ports = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let child = format!("{path}[{i}]");
            self.locations.insert(child.clone(), self.location(item.loc));
            match &item.kind {
                Kind::Int(..) => {
                    let target = self.uint_in(item, &child, 1, 65535, "a port number")? as u16;
                    ports.push(PortConfig { target, ..PortConfig::default() });
                }
                Kind::Str(spec) => {
                    let (parsed, host_ip) =
                        parse_short_port(spec).map_err(|message| self.error(item.loc, &child, message))?;
                    if let Some(ip) = host_ip {
                        self.warnings.push(format!("{child}: host IP {ip} not supported by shoal; ignored"));
                    }
                    ports.extend(parsed);
                }
                Kind::Map(_) => {
                    let mut port = PortConfig::default();
                    let mut target = None;
                    for (key, value, p) in self.object(item, &child, PORT_SUPPORTED, PORT_UNSUPPORTED)? {
                        match key.name.as_str() {
                            "target" => target = Some(self.uint_in(value, &p, 1, 65535, "a port number")? as u16),
                            "published" => {
                                port.published = match value.kind {
                                    Kind::Null => 0,
                                    _ => self.uint_in(value, &p, 0, 65535, "a port number")? as u16,
                                }
                            }
                            "protocol" => {
                                port.protocol = self.choice(
                                    value,
                                    &p,
                                    "protocol",
                                    &[
                                        ("tcp", PortProtocol::Tcp),
                                        ("udp", PortProtocol::Udp),
                                        ("sctp", PortProtocol::Sctp),
                                    ],
                                    Some(PortProtocol::Tcp),
                                )?
                            }
                            "mode" => {
                                port.mode = self.choice(
                                    value,
                                    &p,
                                    "publish mode",
                                    &[("ingress", PublishMode::Ingress), ("host", PublishMode::Host)],
                                    Some(PublishMode::Ingress),
                                )?
                            }
                            _ => {}
                        }
                    }
                    port.target = target.ok_or_else(|| self.error(item.loc, &child, "target is required"))?;
                    ports.push(port);
                }
                _ => return Err(self.type_error(item, &child, "a port (\"8080:80\", 80 or {target, published, ...})")),
            }
        }
        Ok(ports)
    }

    fn healthcheck(&mut self, v: &Val, path: &str) -> Result<Option<HealthConfig>> {
        if matches!(v.kind, Kind::Null) {
            return Ok(None);
        }
        let mut health = HealthConfig::default();
        let mut disable = None;
        for (key, value, p) in self.object(v, path, HEALTH_SUPPORTED, HEALTH_UNSUPPORTED)? {
            match key.name.as_str() {
                "test" => {
                    health.test = match &value.kind {
                        Kind::Null => Vec::new(),
                        Kind::Str(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        Kind::Seq(_) => self.string_list(value, &p)?.into_iter().map(|(s, _)| s).collect(),
                        _ => return Err(self.type_error(value, &p, "a string or a sequence of strings")),
                    }
                }
                "interval" => health.interval = self.duration(value, &p)?,
                "timeout" => health.timeout = self.duration(value, &p)?,
                "start_period" => health.start_period = self.duration(value, &p)?,
                "retries" => health.retries = self.uint_in(value, &p, 0, u64::from(u32::MAX), "a count")? as u32,
                "disable" => disable = Some((self.boolean(value, &p)?, value.loc, p)),
                _ => {}
            }
        }
        if let Some((true, loc, p)) = disable {
            if !health.test.is_empty() {
                return Err(self.error(loc, &p, "test and disable can't be set at the same time"));
            }
            health.test = vec!["NONE".to_string()];
        }
        Ok(Some(health))
    }

    fn deploy(&mut self, v: &Val, path: &str) -> Result<Deploy> {
        let mut deploy = Deploy::default();
        let mut replicas = None;
        for (key, value, p) in self.object(v, path, DEPLOY_SUPPORTED, &[])? {
            match key.name.as_str() {
                "mode" => {
                    let text = self.string(value, &p)?;
                    deploy.mode = match text.as_str() {
                        "" | "replicated" => DeployMode::Replicated,
                        "global" => DeployMode::Global,
                        "replicated-job" => DeployMode::ReplicatedJob,
                        "global-job" => DeployMode::GlobalJob,
                        _ => {
                            return Err(self.error(
                                value.loc,
                                &p,
                                format!(
                                    "unknown mode {text:?} (allowed: replicated, global, replicated-job, global-job)"
                                ),
                            ));
                        }
                    };
                }
                "replicas" if !matches!(value.kind, Kind::Null) => {
                    replicas = Some((self.uint(value, &p)?, value.loc, p));
                }
                "labels" => deploy.labels = self.labels(value, &p)?,
                "update_config" => deploy.update_config = Some(self.update_config(value, &p, false)?),
                "rollback_config" => deploy.rollback_config = Some(self.update_config(value, &p, true)?),
                "restart_policy" => deploy.restart_policy = Some(self.restart_policy(value, &p)?),
                "placement" => deploy.placement = self.placement(value, &p)?,
                "resources" => deploy.resources = self.resources(value, &p)?,
                "endpoint_mode" => {
                    deploy.endpoint_mode = Some(self.choice(
                        value,
                        &p,
                        "endpoint mode",
                        &[("vip", EndpointMode::Vip), ("dnsrr", EndpointMode::Dnsrr)],
                        Some(EndpointMode::Vip),
                    )?)
                }
                _ => {}
            }
        }
        match (deploy.mode, replicas) {
            (DeployMode::Replicated | DeployMode::ReplicatedJob, replicas) => {
                deploy.replicas = Some(replicas.map_or(1, |(n, _, _)| n))
            }
            (DeployMode::Global | DeployMode::GlobalJob, None) => {}
            (DeployMode::Global | DeployMode::GlobalJob, Some((_, loc, p))) => {
                return Err(self.error(loc, &p, "replicas can only be used with replicated mode"));
            }
        }
        Ok(deploy)
    }

    /// compose's `update_config`/`rollback_config`: parallelism defaults to 1, the rest to zero
    /// values, and a zero monitor means Swarm's 5s default (swarm-semantics §2.9).
    fn update_config(&mut self, v: &Val, path: &str, rollback: bool) -> Result<UpdateConfig> {
        let mut config = UpdateConfig { monitor: GoDuration::ZERO, ..UpdateConfig::default() };
        for (key, value, p) in self.object(v, path, UPDATE_SUPPORTED, &[])? {
            match key.name.as_str() {
                "parallelism" => config.parallelism = self.uint(value, &p)?,
                "delay" => config.delay = self.duration(value, &p)?,
                "failure_action" => {
                    config.failure_action = self.choice(
                        value,
                        &p,
                        "failure_action",
                        &[
                            ("pause", FailureAction::Pause),
                            ("continue", FailureAction::Continue),
                            ("rollback", FailureAction::Rollback),
                        ],
                        Some(FailureAction::Pause),
                    )?
                }
                "monitor" => config.monitor = self.duration(value, &p)?,
                "max_failure_ratio" => config.max_failure_ratio = self.float(value, &p)? as f32,
                "order" => {
                    config.order = self.choice(
                        value,
                        &p,
                        "order",
                        &[("stop-first", UpdateOrder::StopFirst), ("start-first", UpdateOrder::StartFirst)],
                        Some(UpdateOrder::StopFirst),
                    )?
                }
                "x-strategy" => {
                    config.strategy = self.choice(
                        value,
                        &p,
                        "strategy",
                        &[("rolling", RolloutStrategy::Rolling), ("recreate", RolloutStrategy::Recreate)],
                        Some(RolloutStrategy::Rolling),
                    )?
                }
                "x-max-surge" => config.max_surge = Some(self.quantity(value, &p)?),
                "x-max-unavailable" => config.max_unavailable = Some(self.quantity(value, &p)?),
                "x-steps" if rollback => {
                    return Err(self.error(
                        value.loc,
                        &p,
                        "a rollback goes in one go (canary steps apply to update_config only)",
                    ));
                }
                "x-steps" => config.steps = self.canary_steps(value, &p)?,
                "x-old-tasks" => {
                    config.old_tasks = self.choice(
                        value,
                        &p,
                        "old-task policy",
                        &[("stop", OldTasks::Stop), ("remove", OldTasks::Remove), ("keep", OldTasks::Keep)],
                        Some(OldTasks::Stop),
                    )?
                }
                "x-prepare-ahead" => config.prepare_ahead = self.boolean(value, &p)?,
                _ => {}
            }
        }
        if config.monitor.is_zero() {
            config.monitor = UpdateConfig::default().monitor;
        }
        Ok(config)
    }

    /// `x-max-surge: 1`, `x-max-unavailable: 25%`.
    fn quantity(&self, v: &Val, path: &str) -> Result<Quantity> {
        let text = match &v.kind {
            Kind::Int(_, raw) => raw.clone(),
            Kind::Str(s) => s.clone(),
            _ => return Err(self.type_error(v, path, "a count or a percentage (N or N%)")),
        };
        let parsed = if text.trim().starts_with('-') {
            Err(format!("{text} is negative (expected N or N%, e.g. 1 or 25%)"))
        } else {
            Quantity::parse(&text)
        };
        parsed.map_err(|e| self.error(v.loc, path, format!("invalid value: {e}")))
    }

    /// `x-steps`: a list of `{replicas, pause}`; pause is a duration or `approve`, by default
    /// `approve` for every step but the last (whose pause must be absent or 0).
    fn canary_steps(&mut self, v: &Val, path: &str) -> Result<Vec<CanaryStep>> {
        let Kind::Seq(items) = &v.kind else {
            return Err(self.type_error(v, path, "a sequence of {replicas, pause} mappings"));
        };
        let last = items.len().saturating_sub(1);
        let mut steps = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let default = if i == last { StepPause::For(GoDuration::ZERO) } else { StepPause::Approve };
            let mut step = CanaryStep { replicas: Quantity::Count(0), pause: default, traffic: None };
            let mut replicas_given = false;
            for (key, value, p) in self.object(item, &at, STEP_SUPPORTED, &[])? {
                match key.name.as_str() {
                    "replicas" => {
                        step.replicas = self.quantity(value, &p)?;
                        replicas_given = true;
                        if step.replicas.is_zero() {
                            return Err(self.error(
                                value.loc,
                                &p,
                                "invalid value: 0, expected at least 1 (a count from 1, or 1%-100%)",
                            ));
                        }
                    }
                    "pause" => {
                        let text = self.string(value, &p)?;
                        step.pause = match text.as_str() {
                            "approve" => StepPause::Approve,
                            _ => StepPause::For(GoDuration::parse(&text).map_err(|_| {
                                let message = format!("invalid pause {text:?}: a duration (e.g. 30s, 5m) or approve");
                                self.error(value.loc, &p, message)
                            })?),
                        }
                    }
                    "traffic" => {
                        let text = self.string(value, &p)?;
                        let share =
                            shoal_types::rollout::parse_share(&text).map_err(|why| self.error(value.loc, &p, why))?;
                        step.traffic = Some(share);
                    }
                    _ => {}
                }
            }
            if !replicas_given {
                return Err(self.error(item.loc, &at, "a step needs replicas (a count, or a percentage)"));
            }
            steps.push(step);
        }
        Ok(steps)
    }

    fn restart_policy(&mut self, v: &Val, path: &str) -> Result<RestartPolicy> {
        let mut policy = RestartPolicy::default();
        for (key, value, p) in self.object(v, path, RESTART_SUPPORTED, &[])? {
            match key.name.as_str() {
                "condition" => {
                    policy.condition = self.choice(
                        value,
                        &p,
                        "restart condition",
                        &[
                            ("none", RestartCondition::None),
                            ("on-failure", RestartCondition::OnFailure),
                            ("any", RestartCondition::Any),
                        ],
                        Some(RestartCondition::Any),
                    )?
                }
                "delay" => policy.delay = self.duration(value, &p)?,
                "max_attempts" => policy.max_attempts = self.uint(value, &p)?,
                "window" => policy.window = self.duration(value, &p)?,
                _ => {}
            }
        }
        Ok(policy)
    }

    /// The service-level `restart:` of docker compose, used when `deploy.restart_policy` is absent:
    /// always/unless-stopped → any, on-failure[:N] → on-failure (N max attempts), no → unset.
    fn legacy_restart(&self, v: &Val, path: &str) -> Result<Option<RestartPolicy>> {
        let text = match &v.kind {
            Kind::Null | Kind::Bool(false) => return Ok(None),
            _ => self.string(v, path)?,
        };
        let policy = |condition, max_attempts| RestartPolicy { condition, max_attempts, ..RestartPolicy::default() };
        match text.as_str() {
            "" | "no" => Ok(None),
            "always" | "unless-stopped" => Ok(Some(policy(RestartCondition::Any, 0))),
            "on-failure" => Ok(Some(policy(RestartCondition::OnFailure, 0))),
            other => match other.strip_prefix("on-failure:") {
                Some(n) => match n.trim().parse::<u64>() {
                    Ok(n) => Ok(Some(policy(RestartCondition::OnFailure, n))),
                    Err(_) => Err(self.error(
                        v.loc,
                        path,
                        format!(
                            "invalid restart policy {other:?}: the maximum retry count must be a non-negative integer"
                        ),
                    )),
                },
                None => Err(self.error(
                    v.loc,
                    path,
                    format!("unknown restart policy {other:?} (allowed: no, always, unless-stopped, on-failure[:N])"),
                )),
            },
        }
    }

    fn placement(&mut self, v: &Val, path: &str) -> Result<DeployPlacement> {
        let mut placement = DeployPlacement::default();
        for (key, value, p) in self.object(v, path, PLACEMENT_SUPPORTED, &[])? {
            match key.name.as_str() {
                "constraints" => {
                    for (i, (text, loc)) in self.string_list(value, &p)?.into_iter().enumerate() {
                        let constraint = Constraint::parse(&text)
                            .map_err(|e| self.error(loc, &format!("{p}[{i}]"), e.to_string()))?;
                        placement.constraints.push(constraint);
                    }
                }
                "preferences" => {
                    let items = match &value.kind {
                        Kind::Null => &[][..],
                        Kind::Seq(items) => items,
                        _ => return Err(self.type_error(value, &p, "a sequence of {spread: <descriptor>}")),
                    };
                    for (i, item) in items.iter().enumerate() {
                        let child = format!("{p}[{i}]");
                        let mut spread = None;
                        for (_, value, sp) in self.object(item, &child, &["spread"], &[])? {
                            spread = Some((self.string(value, &sp)?, value.loc, sp));
                        }
                        let (spread, loc, sp) =
                            spread.ok_or_else(|| self.error(item.loc, &child, "spread is required"))?;
                        let preference = PlacementPreference::parse(&format!("spread={spread}"))
                            .map_err(|e| self.error(loc, &sp, e.to_string()))?;
                        placement.preferences.push(SpreadPreference { spread: preference.spread });
                    }
                }
                "max_replicas_per_node" => {
                    placement.max_replicas_per_node =
                        if matches!(value.kind, Kind::Null) { None } else { Some(self.uint(value, &p)?) }
                }
                _ => {}
            }
        }
        Ok(placement)
    }

    fn resources(&mut self, v: &Val, path: &str) -> Result<DeployResources> {
        let mut resources = DeployResources::default();
        for (key, value, p) in self.object(v, path, RESOURCES_SUPPORTED, &[])? {
            match key.name.as_str() {
                "limits" => resources.limits = non_empty(self.amounts(value, &p, &[])?),
                "reservations" => {
                    resources.reservations = non_empty(self.amounts(value, &p, RESERVATIONS_UNSUPPORTED)?)
                }
                _ => {}
            }
        }
        Ok(resources)
    }

    fn amounts(&mut self, v: &Val, path: &str, unsupported: &[&str]) -> Result<ResourceAmounts> {
        let mut amounts = ResourceAmounts::default();
        for (key, value, p) in self.object(v, path, AMOUNTS_SUPPORTED, unsupported)? {
            if matches!(value.kind, Kind::Null) {
                continue;
            }
            match key.name.as_str() {
                "cpus" => {
                    let text = match &value.kind {
                        Kind::Str(_) | Kind::Int(..) | Kind::Float(..) => self.string(value, &p)?,
                        _ => return Err(self.type_error(value, &p, "a number of CPUs such as 0.5")),
                    };
                    let nanos = parse_nano_cpus(&text).map_err(|e| self.error(value.loc, &p, e.to_string()))?;
                    amounts.cpus = Some(format_cpus(nanos));
                }
                "memory" => {
                    let text = match &value.kind {
                        Kind::Str(_) | Kind::Int(..) => self.string(value, &p)?,
                        _ => return Err(self.type_error(value, &p, "a size such as 512M or 1GiB")),
                    };
                    // docker's RAMInBytes also takes `128Mi` (unit, `i`, no `b`).
                    let bytes = parse_memory_bytes(&format!("{text}b")).or_else(|_| parse_memory_bytes(&text));
                    let bytes = if text.ends_with(['i', 'I']) { bytes } else { parse_memory_bytes(&text) };
                    amounts.memory = Some(bytes.map_err(|e| self.error(value.loc, &p, e.to_string()))?);
                }
                "pids" => amounts.pids = Some(self.uint(value, &p)?),
                _ => {}
            }
        }
        Ok(amounts)
    }
}

fn non_empty(amounts: ResourceAmounts) -> Option<ResourceAmounts> {
    (amounts != ResourceAmounts::default()).then_some(amounts)
}

/// Nano-CPUs as the shortest decimal number of CPUs (`500000000` → `"0.5"`).
pub(crate) fn format_cpus(nanos: u64) -> String {
    let whole = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 { whole.to_string() } else { format!("{whole}.{}", format!("{frac:09}").trim_end_matches('0')) }
}

/// Parses docker's short port syntax `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
/// Returns the ports (ranges expanded) and the host IP, if one was given.
pub(crate) fn parse_short_port(spec: &str) -> std::result::Result<(Vec<PortConfig>, Option<String>), String> {
    let bad = |why: &str| format!("invalid port {spec:?}: {why}");
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => PortProtocol::Tcp,
                "udp" => PortProtocol::Udp,
                "sctp" => PortProtocol::Sctp,
                _ => return Err(bad(&format!("unknown protocol {proto:?} (allowed: tcp, udp, sctp)"))),
            };
            (rest, protocol)
        }
        None => (spec, PortProtocol::Tcp),
    };
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, after) = after.split_once("]:").ok_or_else(|| bad("unterminated IPv6 address"))?;
        (Some(ip.to_string()), after)
    } else {
        (None, rest)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, published, target) = match (ip, parts.as_slice()) {
        (None, [target]) => (None, "", *target),
        (None, [published, target]) => (None, *published, *target),
        (None, [ip, published, target]) => (Some(ip.to_string()), *published, *target),
        (Some(ip), [published, target]) => (Some(ip), *published, *target),
        _ => return Err(bad("expected [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]")),
    };
    let range = |text: &str, allow_empty: bool| -> std::result::Result<Option<(u16, u16)>, String> {
        let text = text.trim();
        if text.is_empty() {
            return if allow_empty { Ok(None) } else { Err(bad("the target port is missing")) };
        }
        let number = |n: &str| match n.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(&format!("{n:?} is not a port number (1-65535)"))),
        };
        let (start, end) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let p = number(text)?;
                (p, p)
            }
        };
        if end < start {
            return Err(bad(&format!("the range {text} ends before it starts")));
        }
        Ok(Some((start, end)))
    };
    let Some((t_start, t_end)) = range(target, false)? else {
        return Err(bad("the target port is missing"));
    };
    let published = range(published, true)?;
    let count = u32::from(t_end - t_start) + 1;
    if let Some((p_start, p_end)) = published
        && u32::from(p_end - p_start) + 1 != count
    {
        return Err(bad("the published and target ranges have different sizes"));
    }
    let ports = (0..count)
        .map(|i| PortConfig {
            target: (u32::from(t_start) + i) as u16,
            published: published.map_or(0, |(p, _)| (u32::from(p) + i) as u16),
            protocol,
            mode: PublishMode::Ingress,
        })
        .collect();
    let ip = ip.filter(|ip| !ip.is_empty());
    Ok((ports, ip))
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a &'a str>) -> Option<&'a str> {
    let limit = if word.len() <= 4 { 1 } else { 2 };
    candidates
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(target: u16, published: u16, protocol: PortProtocol) -> PortConfig {
        PortConfig { target, published, protocol, mode: PublishMode::Ingress }
    }

    #[test]
    fn short_port_syntax() {
        let tcp = PortProtocol::Tcp;
        assert_eq!(parse_short_port("80").unwrap(), (vec![port(80, 0, tcp)], None));
        assert_eq!(parse_short_port("8080:80").unwrap(), (vec![port(80, 8080, tcp)], None));
        assert_eq!(parse_short_port("8080:80/udp").unwrap(), (vec![port(80, 8080, PortProtocol::Udp)], None));
        assert_eq!(
            parse_short_port("127.0.0.1:8080:80").unwrap(),
            (vec![port(80, 8080, tcp)], Some("127.0.0.1".to_string()))
        );
        assert_eq!(parse_short_port("127.0.0.1::80").unwrap(), (vec![port(80, 0, tcp)], Some("127.0.0.1".into())));
        assert_eq!(parse_short_port("[::1]:8080:80").unwrap(), (vec![port(80, 8080, tcp)], Some("::1".into())));
        assert_eq!(
            parse_short_port("9090-9091:8080-8081").unwrap().0,
            vec![port(8080, 9090, tcp), port(8081, 9091, tcp)]
        );
        assert_eq!(parse_short_port("3000-3001").unwrap().0, vec![port(3000, 0, tcp), port(3001, 0, tcp)]);
    }

    #[test]
    fn bad_short_ports() {
        for (spec, why) in [
            ("80/icmp", "unknown protocol"),
            ("http", "not a port number"),
            ("0", "not a port number"),
            ("70000:80", "not a port number"),
            ("8080:", "target port is missing"),
            ("1:2:3:4", "expected [HOST_IP:]"),
            ("9090-9092:8080-8081", "different sizes"),
            ("81-80", "ends before it starts"),
        ] {
            let err = parse_short_port(spec).unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn cpus_format() {
        assert_eq!(format_cpus(500_000_000), "0.5");
        assert_eq!(format_cpus(2_000_000_000), "2");
        assert_eq!(format_cpus(1_250_000_000), "1.25");
        assert_eq!(format_cpus(1_000_000), "0.001");
    }

    #[test]
    fn suggestions() {
        let keys = ["image", "command", "environment"];
        assert_eq!(suggest("imagee", keys.iter()), Some("image"));
        assert_eq!(suggest("enviroment", keys.iter()), Some("environment"));
        assert_eq!(suggest("zzz", keys.iter()), None);
    }
}
