//! clap value parsers. Each one refuses a bad value with a reason; clap adds the flag and the
//! value, so the user sees `error: invalid value 'abc' for '--update-delay <DURATION>': <reason>`
//! (exit code 2) and nothing is sent to a manager.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use shoal_types::units::{parse_memory_bytes, parse_nano_cpus};
use shoal_types::{
    Availability, Constraint, EndpointMode, FailureAction, GoDuration, PlacementPreference, RestartCondition,
    UpdateOrder,
};

/// A Go-style duration (`5s`, `1m30s`, `0`); negative durations are refused.
pub fn duration(text: &str) -> Result<GoDuration, String> {
    GoDuration::parse(text).map_err(|e| e.to_string())
}

/// `--timeout` of a wait: a Go-style duration longer than zero.
pub fn wait_timeout(text: &str) -> Result<GoDuration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err("must be longer than 0 (e.g. 30s, 5m; leave --timeout out to wait without a limit)".to_string());
    }
    Ok(d)
}

/// A non-negative whole number (replicas, parallelism, attempts, pids).
pub fn count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err("must not be negative (expected a whole number >= 0)".to_string());
    }
    t.parse::<u64>().map_err(|_| "expected a whole number >= 0".to_string())
}

/// A revision history limit: 1 to 100.
pub fn revision_history_limit(text: &str) -> Result<u64, String> {
    let most = shoal_types::limits::MAX_REVISION_HISTORY_LIMIT;
    match positive(text)? {
        n if n > most => Err(format!("{n} is above the maximum of {most}")),
        n => Ok(n),
    }
}

/// A rollout id: 1-64 letters, digits, '.', '_' or '-'.
pub fn rollout_id(text: &str) -> Result<String, String> {
    shoal_types::validate_rollout_id(text).map(|()| text.to_string())
}

/// A change cause: at most 4096 bytes.
pub fn change_cause(text: &str) -> Result<String, String> {
    let most = shoal_types::limits::MAX_CHANGE_CAUSE_BYTES;
    if text.len() > most {
        return Err(format!("{} bytes is above the maximum of {most}", text.len()));
    }
    Ok(text.to_string())
}

/// A whole number >= 1 (limits that cannot be zero).
pub fn positive(text: &str) -> Result<u64, String> {
    match count(text)? {
        0 => Err("0 is below the minimum of 1".to_string()),
        n => Ok(n),
    }
}

/// A non-negative whole number that fits in 32 bits (health retries).
pub fn count_u32(text: &str) -> Result<u32, String> {
    let n = count(text)?;
    u32::try_from(n).map_err(|_| format!("must be at most {}", u32::MAX))
}

/// A failure ratio in [0, 1].
pub fn ratio(text: &str) -> Result<f32, String> {
    let value: f32 = text.trim().parse().map_err(|_| "expected a number between 0 and 1".to_string())?;
    if !value.is_finite() || !(0.0..=1.0).contains(&value) {
        return Err(format!("{value} is outside [0, 1]"));
    }
    Ok(value)
}

/// CPUs as a decimal (`0.5`), returned in nano-CPUs.
pub fn nano_cpus(text: &str) -> Result<u64, String> {
    parse_nano_cpus(text).map_err(|e| e.to_string())
}

/// A memory size (`512m`, `1GiB`), returned in bytes.
pub fn memory_bytes(text: &str) -> Result<u64, String> {
    parse_memory_bytes(text).map_err(|e| e.to_string())
}

pub fn constraint(text: &str) -> Result<Constraint, String> {
    Constraint::parse(text).map_err(|e| e.to_string())
}

pub fn placement_pref(text: &str) -> Result<PlacementPreference, String> {
    PlacementPreference::parse(text).map_err(|e| e.to_string())
}

/// A service name as Swarm allows it (letters, digits, `-`, `_`; at most 63 characters).
pub fn service_name(text: &str) -> Result<String, String> {
    shoal_types::validate_name("name", text).map_err(|e| e.message)?;
    Ok(text.to_string())
}

/// `key=value` or a bare `key` (empty value), as docker's `--label`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.trim().is_empty() {
        return Err("expected key=value with a non-empty key".to_string());
    }
    Ok((key.to_string(), value.to_string()))
}

/// `KEY=VALUE`; a bare `KEY` takes its value from the CLI's environment when set there (docker
/// does the same), otherwise it is kept as given.
pub fn env_var(text: &str) -> Result<String, String> {
    let key = text.split('=').next().unwrap_or_default();
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err("expected KEY=VALUE with a non-empty key without spaces".to_string());
    }
    if !text.contains('=')
        && let Ok(value) = std::env::var(key)
    {
        return Ok(format!("{key}={value}"));
    }
    Ok(text.to_string())
}

/// `--env-rm KEY`: the key of an environment variable (anything from `=` on is ignored).
pub fn env_key(text: &str) -> Result<String, String> {
    let key = text.split('=').next().unwrap_or_default();
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err("expected an environment variable name (non-empty, without spaces)".to_string());
    }
    Ok(key.to_string())
}

/// Words split the way a POSIX shell splits them (docker's `--args` and `--entrypoint`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShellWords(pub Vec<String>);

pub fn shell_words(text: &str) -> Result<ShellWords, String> {
    split_shell_words(text).map(ShellWords)
}

/// Splits on unquoted white space, as a POSIX shell does (one implementation for the CLI and
/// stack files).
pub fn split_shell_words(text: &str) -> Result<Vec<String>, String> {
    shoal_compose::split_command(text)
}

/// `service scale`'s `SERVICE=REPLICAS`.
pub fn scale_spec(text: &str) -> Result<(String, u64), String> {
    let (service, replicas) = match text.split_once('=') {
        Some((service, replicas)) if !service.trim().is_empty() && !replicas.trim().is_empty() => (service, replicas),
        _ => return Err("invalid scale specifier: expected SERVICE=REPLICAS, e.g. web=3".to_string()),
    };
    let replicas = count(replicas).map_err(|e| format!("invalid replicas value {replicas:?}: {e}"))?;
    Ok((service.trim().to_string(), replicas))
}

/// `node update --availability`: active, pause or drain.
pub fn availability() -> impl TypedValueParser<Value = Availability> {
    PossibleValuesParser::new(["active", "pause", "drain"]).try_map(|s| match s.as_str() {
        "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        other => Err(format!("unknown availability {other:?}")),
    })
}

/// A string that must not be empty (or only white space).
/// `--mount`: docker's syntax (`type=bind,source=/srv,target=/data,readonly`), checked as the
/// manager will check it.
pub fn mount(text: &str) -> Result<shoal_types::Mount, String> {
    let mount = shoal_types::Mount::parse(text)?;
    mount.check()?;
    Ok(mount)
}

/// `--secret` / `--config`: `NAME` or `source=NAME[,target=PATH,uid=N,gid=N,mode=0444]`, checked
/// as the manager will check it.
pub fn data_reference(text: &str) -> Result<shoal_types::DataReference, String> {
    let reference = shoal_types::DataReference::parse(text)?;
    reference.check()?;
    Ok(reference)
}

/// A network's name: as a service's (services list it in their spec).
pub fn network_name(text: &str) -> Result<String, String> {
    shoal_types::validate_name("name", text).map_err(|e| e.message)?;
    Ok(text.to_string())
}

/// `--secret-rm` / `--config-rm`: a secret's or config's name.
pub fn data_name(text: &str) -> Result<String, String> {
    shoal_types::validate_data_name(text.trim())?;
    Ok(text.trim().to_string())
}

/// `--mount-rm`: a mount's target, an absolute path in the container.
pub fn mount_target(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("expected a mount's target (an absolute path in the container)".to_string());
    }
    let target = text.trim_end_matches('/');
    Ok(if target.is_empty() { "/" } else { target }.to_string())
}

pub fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    Ok(text.to_string())
}

/// `--update-failure-action`: pause, continue or rollback.
pub fn failure_action() -> impl TypedValueParser<Value = FailureAction> {
    PossibleValuesParser::new(["pause", "continue", "rollback"]).try_map(|s| to_failure_action(&s))
}

/// `--rollback-failure-action`: pause or continue (a rollback is never rolled back).
pub fn rollback_failure_action() -> impl TypedValueParser<Value = FailureAction> {
    PossibleValuesParser::new(["pause", "continue"]).try_map(|s| to_failure_action(&s))
}

fn to_failure_action(s: &str) -> Result<FailureAction, String> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        other => Err(format!("unknown failure action {other:?}")),
    }
}

pub fn update_order() -> impl TypedValueParser<Value = UpdateOrder> {
    PossibleValuesParser::new(["start-first", "stop-first"]).try_map(|s| match s.as_str() {
        "start-first" => Ok(UpdateOrder::StartFirst),
        "stop-first" => Ok(UpdateOrder::StopFirst),
        other => Err(format!("unknown order {other:?}")),
    })
}

pub fn rollout_strategy() -> impl TypedValueParser<Value = shoal_types::RolloutStrategy> {
    use shoal_types::RolloutStrategy;
    PossibleValuesParser::new(["rolling", "recreate"]).try_map(|s| match s.as_str() {
        "rolling" => Ok(RolloutStrategy::Rolling),
        "recreate" => Ok(RolloutStrategy::Recreate),
        other => Err(format!("unknown strategy {other:?}")),
    })
}

pub fn old_tasks() -> impl TypedValueParser<Value = shoal_types::OldTasks> {
    use shoal_types::OldTasks;
    PossibleValuesParser::new(["stop", "remove", "keep"]).try_map(|s| match s.as_str() {
        "stop" => Ok(OldTasks::Stop),
        "remove" => Ok(OldTasks::Remove),
        "keep" => Ok(OldTasks::Keep),
        other => Err(format!("unknown old-task policy {other:?}")),
    })
}

/// A count or a percentage of the replicas (`2`, `25%`), as Kubernetes' maxSurge takes it.
pub fn quantity(text: &str) -> Result<shoal_types::Quantity, String> {
    if text.trim().starts_with('-') {
        return Err("must not be negative (expected N or N%, e.g. 1 or 25%)".to_string());
    }
    shoal_types::Quantity::parse(text)
}

/// `--update-step REPLICAS[:PAUSE]`, or `none`.
pub fn canary_step(text: &str) -> Result<super::flags::StepArg, String> {
    if text == "none" {
        return Ok(super::flags::StepArg::None);
    }
    let (replicas, pause, traffic) = shoal_types::CanaryStep::parse(text)?;
    Ok(super::flags::StepArg::Step(replicas, pause, traffic))
}

pub fn restart_condition() -> impl TypedValueParser<Value = RestartCondition> {
    PossibleValuesParser::new(["none", "on-failure", "any"]).try_map(|s| match s.as_str() {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        other => Err(format!("unknown restart condition {other:?}")),
    })
}

pub fn endpoint_mode() -> impl TypedValueParser<Value = EndpointMode> {
    PossibleValuesParser::new(["vip", "dnsrr"]).try_map(|s| match s.as_str() {
        "vip" => Ok(EndpointMode::Vip),
        "dnsrr" => Ok(EndpointMode::Dnsrr),
        other => Err(format!("unknown endpoint mode {other:?}")),
    })
}

/// The service mode accepted by `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeKind {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

pub fn mode() -> impl TypedValueParser<Value = ModeKind> {
    PossibleValuesParser::new(["replicated", "global", "replicated-job", "global-job"]).try_map(|s| match s.as_str() {
        "replicated" => Ok(ModeKind::Replicated),
        "global" => Ok(ModeKind::Global),
        "replicated-job" => Ok(ModeKind::ReplicatedJob),
        "global-job" => Ok(ModeKind::GlobalJob),
        other => Err(format!("unknown mode {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count("0"), Ok(0));
        assert!(count("-1").unwrap_err().contains("negative"));
        assert!(count("two").is_err());
        assert!(count("1.5").is_err());
        assert!(count_u32("4294967296").is_err());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio("0"), Ok(0.0));
        assert_eq!(ratio("0.25"), Ok(0.25));
        assert_eq!(ratio("1"), Ok(1.0));
        assert_eq!(ratio("2").unwrap_err(), "2 is outside [0, 1]");
        assert!(ratio("-0.1").is_err());
        assert!(ratio("NaN").is_err());
        assert!(ratio("half").is_err());
    }

    #[test]
    fn key_values_and_env() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("flag"), Ok(("flag".into(), String::new())));
        assert!(key_value("=x").is_err());
        assert_eq!(env_var("A=1"), Ok("A=1".into()));
        assert_eq!(env_var("A="), Ok("A=".into()));
        assert_eq!(env_var("SHOAL_CLI_SURELY_UNSET_VAR"), Ok("SHOAL_CLI_SURELY_UNSET_VAR".into()));
        assert!(env_var("=1").is_err());
        assert!(env_var("A B=1").is_err());
        assert_eq!(env_key("A"), Ok("A".into()));
        assert_eq!(env_key("A=1"), Ok("A".into()));
        assert!(env_key("").is_err());
    }

    #[test]
    fn shell_words_split_like_a_shell() {
        let split = |s: &str| split_shell_words(s).unwrap();
        assert_eq!(split("a b  c"), ["a", "b", "c"]);
        assert_eq!(split("  "), Vec::<String>::new());
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("sh -c 'echo hi; sleep 1'"), ["sh", "-c", "echo hi; sleep 1"]);
        assert_eq!(split(r#"echo "a \"b\" $x" c"#), ["echo", r#"a "b" $x"#, "c"]);
        assert_eq!(split(r#"a\ b "x\ny""#), ["a b", r#"x\ny"#]);
        assert_eq!(split("''"), [""]);
        assert_eq!(split("a'b'\"c\""), ["abc"]);
        assert_eq!(split_shell_words("'open").unwrap_err(), "unterminated single quote");
        assert_eq!(split_shell_words("\"open").unwrap_err(), "unterminated double quote");
        assert!(split_shell_words("a\\").is_err());
    }

    #[test]
    fn scale_specifiers() {
        assert_eq!(scale_spec("web=5"), Ok(("web".into(), 5)));
        assert_eq!(scale_spec("web=0"), Ok(("web".into(), 0)));
        for bad in ["web", "web=", "=3", ""] {
            assert!(scale_spec(bad).unwrap_err().contains("expected SERVICE=REPLICAS"), "{bad}");
        }
        assert!(scale_spec("web=x").unwrap_err().starts_with("invalid replicas value \"x\""));
        assert!(scale_spec("web=-1").unwrap_err().contains("must not be negative"));
        assert!(scale_spec("web=1.5").is_err());
    }
}
