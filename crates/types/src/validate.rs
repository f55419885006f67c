//! Spec validation. Every error names the field, the value and what is allowed, e.g.
//! `update_config.max_failure_ratio: 1.5 is outside [0, 1]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::limits;

/// The longest drain a task may ask for.
const MAX_STOP_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
use crate::rollout::{Quantity, RolloutStrategy, StepPause};
use crate::spec::{FailureAction, PortProtocol, PublishMode, ServiceMode, ServiceSpec, UpdateConfig, UpdateOrder};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Swarm's refusal of a job service whose update config is not the default.
pub const JOB_UPDATE_CONFIG: &str = "Jobs may not have an update config";
/// Swarm's refusal of a job service whose rollback config is not the default.
pub const JOB_ROLLBACK_CONFIG: &str = "Jobs may not have a rollback config";

const MIN_NANO_CPUS: u64 = 1_000_000;
const MIN_MEMORY_BYTES: u64 = 4 << 20;
const MAX_NAME_LEN: usize = 63;

/// Checks a name the way Swarm does: a DNS-label-like word of letters and digits, with `-` or `_`
/// allowed inside.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let allowed = "letters, digits, '-' and '_', starting and ending with a letter or digit, at most 63 characters";
    let bytes = name.as_bytes();
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(ValidationError::new(field, format!("{name:?} is not a valid name ({allowed})"))) }
}

fn validate_image(image: &str) -> Result<(), ValidationError> {
    crate::image_ref::check(image).map_err(|e| match e {
        crate::image_ref::ImageRefError::Empty => ValidationError::new("task.container.image", e.to_string()),
        _ => ValidationError::new("task.container.image", format!("{image:?} is not a valid image reference: {e}")),
    })
}

/// Lists and maps of a spec hold at most [`limits::MAX_LIST_ENTRIES`] entries.
fn validate_counts(spec: &ServiceSpec) -> Result<(), ValidationError> {
    let container = &spec.task.container;
    let counts = [
        ("labels", spec.labels.len()),
        ("task.container.command", container.command.len()),
        ("task.container.args", container.args.len()),
        ("task.container.env", container.env.len()),
        ("task.container.labels", container.labels.len()),
        ("task.container.mounts", container.mounts.len()),
        ("task.placement.constraints", spec.task.placement.constraints.len()),
        ("task.placement.preferences", spec.task.placement.preferences.len()),
        ("endpoint.ports", spec.endpoint.ports.len()),
    ];
    for (field, count) in counts {
        if count > limits::MAX_LIST_ENTRIES {
            return Err(ValidationError::new(
                field,
                format!("{count} entries is above the limit of {}", limits::MAX_LIST_ENTRIES),
            ));
        }
    }
    Ok(())
}

fn validate_update_config(
    prefix: &str,
    config: &UpdateConfig,
    is_rollback: bool,
    mode: &ServiceMode,
) -> Result<(), ValidationError> {
    let ratio = config.max_failure_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(ValidationError::new(format!("{prefix}.max_failure_ratio"), format!("{ratio} is outside [0, 1]")));
    }
    if is_rollback && config.failure_action == FailureAction::Rollback {
        return Err(ValidationError::new(
            format!("{prefix}.failure_action"),
            "\"rollback\" is not allowed for a rollback (allowed: pause, continue)",
        ));
    }
    let field = |name: &str| format!("{prefix}.{name}");
    // What each strategy excludes: Swarm's parallelism and order belong to plain rolling updates.
    let excluded_by = if config.strategy == RolloutStrategy::Recreate {
        Some("strategy recreate")
    } else if config.budget().is_some() {
        Some("max_surge/max_unavailable")
    } else {
        None
    };
    if let Some(by) = excluded_by {
        if config.parallelism != 1 {
            return Err(ValidationError::new(
                field("parallelism"),
                format!("{} cannot be used with {by} (allowed: the default, 1)", config.parallelism),
            ));
        }
        if config.order != UpdateOrder::StopFirst {
            return Err(ValidationError::new(
                field("order"),
                format!("{} cannot be used with {by} (allowed: the default, stop-first)", config.order.as_str()),
            ));
        }
    }
    if is_rollback && config.old_tasks == crate::OldTasks::Keep {
        return Err(ValidationError::new(
            field("old_tasks"),
            "keep is not allowed for a rollback (allowed: stop, remove): a rollback ends what an update kept",
        ));
    }
    if config.old_tasks == crate::OldTasks::Keep
        && let Some(by) = excluded_by
    {
        return Err(ValidationError::new(
            field("old_tasks"),
            format!("keep cannot be used with {by} (old tasks kept running count against neither)"),
        ));
    }
    if config.strategy == RolloutStrategy::Recreate {
        if let Some(name) =
            [("max_surge", config.max_surge.is_some()), ("max_unavailable", config.max_unavailable.is_some())]
                .into_iter()
                .find_map(|(name, set)| set.then_some(name))
        {
            return Err(ValidationError::new(field(name), "cannot be used with strategy recreate"));
        }
        if !config.steps.is_empty() {
            return Err(ValidationError::new(field("steps"), "cannot be used with strategy recreate"));
        }
    }
    if config.prepare_ahead {
        // Preparing every slot's task at once holds their reservations for the whole rollout:
        // a surge budget bounds exactly that, recreate starts everything at once anyway, and a
        // canary may wait for approval for days.
        let by = excluded_by.or((!config.steps.is_empty()).then_some("steps"));
        if let Some(by) = by {
            return Err(ValidationError::new(
                field("prepare_ahead"),
                format!("cannot be used with {by} (allowed with the default rolling update: parallelism and order)"),
            ));
        }
    }
    if let Some((surge, unavailable)) = config.budget()
        && surge.is_zero()
        && unavailable.is_zero()
    {
        return Err(ValidationError::new(field("max_surge"), "max-surge and max-unavailable cannot both be 0"));
    }
    validate_steps(prefix, config, is_rollback, mode)
}

/// Kruise's canary steps: each moves at least one replica, they increase, and the last is 100%
/// with no pause after it (the rollout ends there).
fn validate_steps(
    prefix: &str,
    config: &UpdateConfig,
    is_rollback: bool,
    mode: &ServiceMode,
) -> Result<(), ValidationError> {
    let steps = &config.steps;
    if steps.is_empty() {
        return Ok(());
    }
    let field = format!("{prefix}.steps");
    if let Some((i, share)) = steps.iter().enumerate().find_map(|(i, s)| s.traffic.filter(|t| *t > 100).map(|t| (i, t)))
    {
        return Err(ValidationError::new(format!("{field}[{i}].traffic"), format!("{share}% is above 100%")));
    }
    if is_rollback {
        return Err(ValidationError::new(field, "a rollback goes in one go (canary steps apply to updates only)"));
    }
    let ServiceMode::Replicated { replicas } = mode else {
        return Err(ValidationError::new(field, "canary steps need a replicated service"));
    };
    if steps.len() > limits::MAX_CANARY_STEPS {
        return Err(ValidationError::new(
            field,
            format!("{} steps is above the limit of {}", steps.len(), limits::MAX_CANARY_STEPS),
        ));
    }
    for (i, step) in steps.iter().enumerate() {
        let at = |name: &str| format!("{prefix}.steps[{i}].{name}");
        if step.replicas.is_zero() {
            return Err(ValidationError::new(
                at("replicas"),
                format!("{} is below 1 (allowed: a count from 1, or 1%-100%)", step.replicas),
            ));
        }
        if let Quantity::Percent(p) = step.replicas
            && p > 100
        {
            return Err(ValidationError::new(at("replicas"), format!("{p}% is outside 1%-100%")));
        }
        if let Some(before) = i.checked_sub(1).map(|j| steps[j].replicas) {
            let increases = match (before, step.replicas) {
                (Quantity::Count(a), Quantity::Count(b)) => b > a,
                (Quantity::Percent(a), Quantity::Percent(b)) => b > a,
                // Mixed: compared at today's replicas (scaling may later make them equal).
                (a, b) => b.round_up(*replicas) >= a.round_up(*replicas),
            };
            if !increases {
                return Err(ValidationError::new(
                    at("replicas"),
                    format!(
                        "{} does not increase on the step before it ({before}); steps must increase",
                        step.replicas
                    ),
                ));
            }
        }
    }
    let last = steps.len() - 1;
    if steps[last].replicas != Quantity::Percent(100) {
        return Err(ValidationError::new(
            format!("{prefix}.steps[{last}].replicas"),
            format!("{} is not 100% (the last step must be 100%)", steps[last].replicas),
        ));
    }
    if steps[last].pause != StepPause::For(crate::GoDuration::ZERO) {
        return Err(ValidationError::new(
            format!("{prefix}.steps[{last}].pause"),
            format!("{} after the last step is not allowed (the rollout ends there)", steps[last].pause),
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// Checks everything the store cannot express in types. Called by the control API before any
    /// change is proposed, so an invalid spec never reaches the log.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("name", &self.name)?;
        validate_counts(self)?;
        let encoded = serde_json::to_vec(self).map(|v| v.len()).unwrap_or(usize::MAX);
        if encoded > limits::MAX_SPEC_BYTES {
            return Err(ValidationError::new(
                "spec",
                format!("{encoded} bytes encoded is above the limit of {} bytes (1 MiB)", limits::MAX_SPEC_BYTES),
            ));
        }
        for key in self.labels.keys() {
            if key.is_empty() {
                return Err(ValidationError::new("labels", "label keys must not be empty"));
            }
        }
        let container = &self.task.container;
        validate_image(&container.image)?;
        for entry in &container.env {
            let key = entry.split('=').next().unwrap_or_default();
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(ValidationError::new(
                    "task.container.env",
                    format!("{entry:?} is not KEY=VALUE with a non-empty key without spaces"),
                ));
            }
        }
        for key in container.labels.keys() {
            if key.is_empty() {
                return Err(ValidationError::new("task.container.labels", "label keys must not be empty"));
            }
        }
        let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, mount) in container.mounts.iter().enumerate() {
            let field = format!("task.container.mounts[{i}]");
            mount.check().map_err(|reason| ValidationError::new(field.clone(), reason))?;
            if let Some(first) = targets.insert(mount.target.as_str(), i) {
                return Err(ValidationError::new(
                    field,
                    format!("duplicate mount target {} (also task.container.mounts[{first}])", mount.target),
                ));
            }
        }
        if self.task.networks.len() > crate::limits::MAX_LIST_ENTRIES {
            return Err(ValidationError::new(
                "task.networks",
                format!("{} networks is above the limit {}", self.task.networks.len(), crate::limits::MAX_LIST_ENTRIES),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.task.networks.len());
        for (i, network) in self.task.networks.iter().enumerate() {
            validate_name(&format!("task.networks[{i}]"), network)?;
            if !seen.insert(network) {
                return Err(ValidationError::new(format!("task.networks[{i}]"), format!("{network} is listed twice")));
            }
        }
        // Files of secrets and configs: each path once, and not where a mount is.
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        for (list, references) in [("secrets", &container.secrets), ("configs", &container.configs)] {
            let kind = if list == "secrets" { crate::DataKind::Secret } else { crate::DataKind::Config };
            for (i, reference) in references.iter().enumerate() {
                let field = format!("task.container.{list}[{i}]");
                reference.check().map_err(|reason| ValidationError::new(field.clone(), reason))?;
                let path = reference.path(kind);
                if targets.contains_key(path.as_str()) {
                    return Err(ValidationError::new(field, format!("target {path} is also a mount's target")));
                }
                if let Some(first) = paths.insert(path.clone(), field.clone()) {
                    return Err(ValidationError::new(field, format!("duplicate target {path} (also {first})")));
                }
            }
        }
        if let Some(signal) = &container.stop_signal
            && signal.trim().is_empty()
        {
            return Err(ValidationError::new("task.container.stop_signal", "must not be empty when set"));
        }
        if let Some(drain) = container.stop_drain_timeout
            && drain.as_std() > MAX_STOP_DRAIN_TIMEOUT
        {
            return Err(ValidationError::new(
                "task.container.stop_drain_timeout",
                format!("{drain} is longer than the limit 24h (0s: no draining)"),
            ));
        }
        if let Some(health) = &container.healthcheck {
            let kind = health.test.first().map(String::as_str);
            match kind {
                None | Some("NONE") => {}
                Some("CMD") | Some("CMD-SHELL") if health.test.len() >= 2 => {}
                _ => {
                    return Err(ValidationError::new(
                        "task.container.healthcheck.test",
                        format!(
                            "{:?} must be [\"NONE\"], [\"CMD\", exe, args...] or [\"CMD-SHELL\", command]",
                            health.test
                        ),
                    ));
                }
            }
            let interval = health.interval.as_std();
            if !interval.is_zero() && interval.as_millis() < 1 {
                return Err(ValidationError::new(
                    "task.container.healthcheck.interval",
                    format!("{} is below the minimum of 1ms", health.interval),
                ));
            }
        }
        let res = &self.task.resources;
        for (which, amounts) in [("limits", &res.limits), ("reservations", &res.reservations)] {
            if amounts.nano_cpus != 0 && amounts.nano_cpus < MIN_NANO_CPUS {
                return Err(ValidationError::new(
                    format!("task.resources.{which}.nano_cpus"),
                    format!("{} is below the minimum of 0.001 CPU", amounts.nano_cpus as f64 / 1e9),
                ));
            }
            if amounts.memory_bytes != 0 && amounts.memory_bytes < MIN_MEMORY_BYTES {
                return Err(ValidationError::new(
                    format!("task.resources.{which}.memory_bytes"),
                    format!("{} bytes is below the minimum of 4MiB", amounts.memory_bytes),
                ));
            }
        }
        if res.reservations.pids != 0 {
            return Err(ValidationError::new(
                "task.resources.reservations.pids",
                "pids can only be limited, not reserved",
            ));
        }
        for (which, limit, reserve) in [
            ("nano_cpus", res.limits.nano_cpus, res.reservations.nano_cpus),
            ("memory_bytes", res.limits.memory_bytes, res.reservations.memory_bytes),
        ] {
            if limit != 0 && reserve > limit {
                return Err(ValidationError::new(
                    format!("task.resources.reservations.{which}"),
                    format!("{reserve} is larger than the limit {limit}"),
                ));
            }
        }
        let placement = &self.task.placement;
        if let ServiceMode::ReplicatedJob { max_concurrent: 0, .. } = self.mode {
            return Err(ValidationError::new("mode.replicated_job.max_concurrent", "0 is below the minimum 1"));
        }
        if placement.max_replicas_per_node != 0 && self.mode.is_global() {
            return Err(ValidationError::new(
                "task.placement.max_replicas_per_node",
                "can only be used with replicated mode",
            ));
        }
        // A job is never rolled out: each update runs it again (Swarm refuses both configs).
        if self.mode.is_job() {
            if self.update_config != UpdateConfig::default() {
                return Err(ValidationError::new("update_config", JOB_UPDATE_CONFIG));
            }
            if self.rollback_config != UpdateConfig::default() {
                return Err(ValidationError::new("rollback_config", JOB_ROLLBACK_CONFIG));
            }
        }
        validate_update_config("update_config", &self.update_config, false, &self.mode)?;
        validate_update_config("rollback_config", &self.rollback_config, true, &self.mode)?;
        let mut published = BTreeSet::new();
        for port in &self.endpoint.ports {
            if port.target == 0 {
                return Err(ValidationError::new("endpoint.ports.target", "0 is outside [1, 65535]"));
            }
            if port.mode == PublishMode::Ingress && port.published != 0 && port.protocol != PortProtocol::Tcp {
                return Err(ValidationError::new(
                    "endpoint.ports.protocol",
                    format!(
                        "{}/{}: the ingress proxy carries TCP only; publish it with mode=host",
                        port.published,
                        port.protocol.as_str()
                    ),
                ));
            }
            if port.published != 0 && !published.insert((port.published, port.protocol)) {
                return Err(ValidationError::new(
                    "endpoint.ports.published",
                    format!("port {}/{} is published more than once", port.published, port.protocol.as_str()),
                ));
            }
        }
        Ok(())
    }

    /// Checks the spec against the cluster's limits (`shoal cluster update --max-replicas`).
    pub fn validate_against(&self, cluster: &crate::ClusterSpec) -> Result<(), ValidationError> {
        let replicas = match self.mode {
            ServiceMode::Replicated { replicas } => replicas,
            // A job never runs more than its completions, but they are tasks all the same.
            ServiceMode::ReplicatedJob { total_completions, .. } => total_completions,
            ServiceMode::Global | ServiceMode::GlobalJob => 0,
        };
        if replicas > cluster.max_replicas {
            return Err(ValidationError::new(
                "replicas",
                format!(
                    "{replicas} is above the limit {}; raise it with shoal cluster update --max-replicas",
                    cluster.max_replicas
                ),
            ));
        }
        Ok(())
    }
}

/// The longest rollout id (`--rollout-id`).
pub const MAX_ROLLOUT_ID_CHARS: usize = 64;

/// A caller's rollout id: 1 to 64 letters, digits, `.`, `_` or `-` (no spaces), so automation
/// can match it and a table can show it.
pub fn validate_rollout_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_ROLLOUT_ID_CHARS {
        return Err(format!("{} characters is above the maximum of {MAX_ROLLOUT_ID_CHARS}", id.chars().count()));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{bad:?} is not allowed (letters, digits, '.', '_' and '-' are)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn rollout_ids_are_short_words() {
        assert_eq!(super::validate_rollout_id("release-42.v2_b"), Ok(()));
        assert_eq!(super::validate_rollout_id(""), Err("must not be empty".to_string()));
        assert_eq!(
            super::validate_rollout_id(&"x".repeat(65)),
            Err("65 characters is above the maximum of 64".to_string())
        );
        assert_eq!(
            super::validate_rollout_id("a b"),
            Err("' ' is not allowed (letters, digits, '.', '_' and '-' are)".to_string())
        );
    }

    use super::*;
    use crate::spec::{PortConfig, ServiceSpec};

    fn spec() -> ServiceSpec {
        ServiceSpec::new("web", "shoal/busybox:1")
    }

    fn err_of(s: &ServiceSpec) -> String {
        s.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_default_spec_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn ratio_outside_range_names_field_and_range() {
        let mut s = spec();
        s.update_config.max_failure_ratio = 1.5;
        assert_eq!(err_of(&s), "update_config.max_failure_ratio: 1.5 is outside [0, 1]");
        s.update_config.max_failure_ratio = f32::NAN;
        assert!(err_of(&s).starts_with("update_config.max_failure_ratio: NaN"));
    }

    #[test]
    fn strategies_refuse_what_they_exclude() {
        use crate::{CanaryStep, GoDuration, Quantity, RolloutStrategy, StepPause};
        let mut s = spec();
        s.mode = ServiceMode::Replicated { replicas: 4 };
        s.update_config.max_surge = Some(Quantity::Count(0));
        s.update_config.max_unavailable = Some(Quantity::Percent(0));
        assert_eq!(err_of(&s), "update_config.max_surge: max-surge and max-unavailable cannot both be 0");
        s.update_config.max_surge = Some(Quantity::Count(1));
        s.validate().unwrap();
        s.update_config.parallelism = 2;
        assert_eq!(
            err_of(&s),
            "update_config.parallelism: 2 cannot be used with max_surge/max_unavailable (allowed: the default, 1)"
        );
        s.update_config.parallelism = 1;
        s.update_config.strategy = RolloutStrategy::Recreate;
        assert_eq!(err_of(&s), "update_config.max_surge: cannot be used with strategy recreate");
        s.update_config.max_surge = None;
        s.update_config.max_unavailable = None;
        s.update_config.order = UpdateOrder::StartFirst;
        assert!(err_of(&s).starts_with("update_config.order: start-first cannot be used with strategy recreate"));
        s.update_config = UpdateConfig { old_tasks: crate::OldTasks::Keep, ..UpdateConfig::default() };
        s.validate().unwrap();
        s.update_config.max_unavailable = Some(Quantity::Count(1));
        assert!(err_of(&s).starts_with("update_config.old_tasks: keep cannot be used with max_surge/max_unavailable"));
        s.update_config = UpdateConfig::default();
        s.rollback_config.old_tasks = crate::OldTasks::Keep;
        assert!(err_of(&s).starts_with("rollback_config.old_tasks: keep is not allowed for a rollback"));
        s.rollback_config = UpdateConfig::default();

        // Prepare-ahead goes with Swarm's rolling update only.
        s.update_config = UpdateConfig { prepare_ahead: true, parallelism: 5, ..UpdateConfig::default() };
        s.validate().unwrap();
        s.update_config.parallelism = 1;
        s.update_config.max_surge = Some(Quantity::Count(1));
        assert_eq!(
            err_of(&s),
            "update_config.prepare_ahead: cannot be used with max_surge/max_unavailable (allowed with the default rolling update: parallelism and order)"
        );
        s.update_config.max_surge = None;
        s.update_config.strategy = RolloutStrategy::Recreate;
        assert!(err_of(&s).starts_with("update_config.prepare_ahead: cannot be used with strategy recreate"));
        s.update_config = UpdateConfig::default();
        s.rollback_config.prepare_ahead = true;
        s.validate().unwrap();
        s.rollback_config = UpdateConfig::default();

        let step = |replicas, pause| CanaryStep { replicas, pause, traffic: None };
        let end = step(Quantity::Percent(100), StepPause::For(GoDuration::ZERO));
        s.update_config.steps = vec![step(Quantity::Count(1), StepPause::Approve), end];
        s.validate().unwrap();
        s.update_config.prepare_ahead = true;
        assert!(err_of(&s).starts_with("update_config.prepare_ahead: cannot be used with steps"));
        s.update_config.prepare_ahead = false;
        s.update_config.steps =
            vec![step(Quantity::Percent(50), StepPause::Approve), step(Quantity::Percent(40), StepPause::Approve), end];
        assert_eq!(
            err_of(&s),
            "update_config.steps[1].replicas: 40% does not increase on the step before it (50%); steps must increase"
        );
        s.update_config.steps = vec![
            step(Quantity::Count(1), StepPause::Approve),
            step(Quantity::Percent(90), StepPause::For(GoDuration::ZERO)),
        ];
        assert_eq!(err_of(&s), "update_config.steps[1].replicas: 90% is not 100% (the last step must be 100%)");
        s.update_config.steps = vec![step(Quantity::Percent(100), StepPause::Approve)];
        assert_eq!(
            err_of(&s),
            "update_config.steps[0].pause: approve after the last step is not allowed (the rollout ends there)"
        );
        s.update_config.steps = vec![step(Quantity::Count(0), StepPause::Approve), end];
        assert!(err_of(&s).starts_with("update_config.steps[0].replicas: 0 is below 1"));
        s.update_config.steps = vec![end];
        s.rollback_config.steps = vec![end];
        assert_eq!(err_of(&s), "rollback_config.steps: a rollback goes in one go (canary steps apply to updates only)");
        s.rollback_config.steps.clear();
        s.mode = ServiceMode::Global;
        assert_eq!(err_of(&s), "update_config.steps: canary steps need a replicated service");
    }

    #[test]
    fn rollback_config_cannot_roll_back() {
        let mut s = spec();
        s.rollback_config.failure_action = FailureAction::Rollback;
        assert!(err_of(&s).starts_with("rollback_config.failure_action:"));
        s.rollback_config.failure_action = FailureAction::Continue;
        s.update_config.failure_action = FailureAction::Rollback;
        s.validate().unwrap();
    }

    #[test]
    fn names() {
        for good in ["web", "app_web", "a-b-1", "W"] {
            validate_name("name", good).unwrap();
        }
        for bad in ["", "-web", "web-", "we b", "web!", &"x".repeat(64)] {
            assert!(validate_name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn images() {
        let mut s = spec();
        s.task.container.image = "Busybox".into();
        assert!(err_of(&s).starts_with("task.container.image:"));
        s.task.container.image = "localhost:5000/busybox:Latest".into();
        s.validate().unwrap();
        s.task.container.image = "".into();
        assert_eq!(err_of(&s), "task.container.image: must not be empty");
        s.task.container.image = "shoal/busybox:".into();
        assert!(
            err_of(&s).starts_with(
                "task.container.image: \"shoal/busybox:\" is not a valid image reference: has an empty tag"
            )
        );
    }

    #[test]
    fn replicas_above_the_cluster_limit() {
        let mut s = spec();
        s.mode = ServiceMode::Replicated { replicas: 1_000_000_000 };
        s.validate().unwrap();
        assert_eq!(
            s.validate_against(&crate::ClusterSpec::default()).unwrap_err().to_string(),
            "replicas: 1000000000 is above the limit 100000; raise it with shoal cluster update --max-replicas"
        );
        s.mode = ServiceMode::Replicated { replicas: 100_000 };
        s.validate_against(&crate::ClusterSpec::default()).unwrap();
    }

    #[test]
    fn sizes_and_counts_are_bounded() {
        let mut s = spec();
        s.task.container.env = vec![format!("BIG={}", "x".repeat(limits::MAX_SPEC_BYTES))];
        assert!(err_of(&s).starts_with("spec: "), "{}", err_of(&s));
        assert!(err_of(&s).contains("above the limit of 1048576 bytes"));
        s.task.container.env = vec![format!("BIG={}", "x".repeat(1_000_000))];
        s.validate().unwrap();
        s.task.container.env = (0..=limits::MAX_LIST_ENTRIES).map(|i| format!("K{i}=v")).collect();
        assert_eq!(err_of(&s), "task.container.env: 10001 entries is above the limit of 10000");
    }

    #[test]
    fn resources() {
        let mut s = spec();
        s.task.resources.reservations.memory_bytes = 1024;
        assert_eq!(err_of(&s), "task.resources.reservations.memory_bytes: 1024 bytes is below the minimum of 4MiB");
        s.task.resources.reservations.memory_bytes = 64 << 20;
        s.task.resources.limits.memory_bytes = 32 << 20;
        assert!(err_of(&s).starts_with("task.resources.reservations.memory_bytes:"));
    }

    #[test]
    fn global_with_max_replicas_is_refused() {
        let mut s = spec();
        s.mode = ServiceMode::Global;
        s.task.placement.max_replicas_per_node = 2;
        assert_eq!(err_of(&s), "task.placement.max_replicas_per_node: can only be used with replicated mode");
    }

    #[test]
    fn job_modes() {
        let mut s = spec();
        s.mode = ServiceMode::ReplicatedJob { total_completions: 3, max_concurrent: 0 };
        assert_eq!(err_of(&s), "mode.replicated_job.max_concurrent: 0 is below the minimum 1");
        s.mode = ServiceMode::ReplicatedJob { total_completions: 3, max_concurrent: 2 };
        assert!(s.validate().is_ok());
        // Existing encodings are unchanged; the job modes get their own tags.
        let json = |m: ServiceMode| serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(json(ServiceMode::Replicated { replicas: 2 }), r#"{"replicated":{"replicas":2}}"#);
        assert_eq!(json(ServiceMode::Global), r#""global""#);
        assert_eq!(json(s.mode), r#"{"replicated_job":{"total_completions":3,"max_concurrent":2}}"#);
        assert_eq!(json(ServiceMode::GlobalJob), r#""global_job""#);
    }

    #[test]
    fn jobs_may_not_have_an_update_or_rollback_config() {
        for mode in [ServiceMode::ReplicatedJob { total_completions: 1, max_concurrent: 1 }, ServiceMode::GlobalJob] {
            let mut s = spec();
            s.mode = mode;
            s.validate().unwrap();
            s.update_config.parallelism = 2;
            assert_eq!(err_of(&s), "update_config: Jobs may not have an update config");
            s.update_config = UpdateConfig::default();
            s.rollback_config.delay = crate::GoDuration::from_secs(1);
            assert_eq!(err_of(&s), "rollback_config: Jobs may not have a rollback config");
        }
        // Services may.
        let mut s = spec();
        s.update_config.parallelism = 2;
        s.rollback_config.parallelism = 2;
        s.validate().unwrap();
    }

    #[test]
    fn duplicate_published_ports() {
        let mut s = spec();
        let port = PortConfig { target: 80, published: 8080, ..PortConfig::default() };
        s.endpoint.ports = vec![port.clone(), port];
        assert!(err_of(&s).contains("published more than once"));
    }
}
