//! How a rollout replaces tasks beyond Swarm's parallelism and order: Kubernetes' `Recreate` and
//! `maxSurge`/`maxUnavailable`, OpenKruise's canary steps. The settings live in
//! [`UpdateConfig`](crate::UpdateConfig); where a canary rollout stands lives in
//! [`UpdateStatus`](crate::UpdateStatus).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{GoDuration, Timestamp};

/// Which way a rollout replaces a service's tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutStrategy {
    /// Slot by slot: Swarm's parallelism and order, or a surge/unavailability budget.
    #[default]
    Rolling,
    /// Every old task stops (and is seen stopped) before any new one starts (Kubernetes).
    Recreate,
}

impl RolloutStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStrategy::Rolling => "rolling",
            RolloutStrategy::Recreate => "recreate",
        }
    }

    pub fn is_rolling(&self) -> bool {
        *self == RolloutStrategy::Rolling
    }
}

/// What happens to the container of a task a rollout replaced, once it has stopped
/// (KraftCloud's `--rollout` policy for old instances).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OldTasks {
    /// Stopped and kept while the task is in the history (Swarm).
    #[default]
    Stop,
    /// Removed as soon as it has stopped; the task record stays in the history.
    Remove,
    /// Not stopped: the old task keeps running beside the new one, outside the replicas, until
    /// `shoal rollout finish` or the next rollout stops and removes it (KraftCloud's `keep`).
    Keep,
}

impl OldTasks {
    pub fn as_str(self) -> &'static str {
        match self {
            OldTasks::Stop => "stop",
            OldTasks::Remove => "remove",
            OldTasks::Keep => "keep",
        }
    }

    pub fn is_stop(&self) -> bool {
        *self == OldTasks::Stop
    }
}

/// A number of replicas, absolute or as a percentage of the service's replicas (Kubernetes'
/// int-or-string). Serialised as a number or as `"25%"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    Count(u64),
    Percent(u32),
}

impl Quantity {
    /// Kubernetes' rounding for a surge: a percentage rounds up.
    pub fn round_up(self, of: u64) -> u64 {
        match self {
            Quantity::Count(n) => n,
            Quantity::Percent(p) => (of.saturating_mul(p as u64)).div_ceil(100),
        }
    }

    /// Kubernetes' rounding for unavailability: a percentage rounds down.
    pub fn round_down(self, of: u64) -> u64 {
        match self {
            Quantity::Count(n) => n,
            Quantity::Percent(p) => of.saturating_mul(p as u64) / 100,
        }
    }

    /// `N` or `N%`; a percentage up to 100 (`what` names the value in the error).
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let text = text.trim();
        let (digits, percent) = match text.strip_suffix('%') {
            Some(digits) => (digits, true),
            None => (text, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text:?} is not a count or a percentage (N or N%)"));
        }
        let value: u64 = digits.parse().map_err(|_| format!("{text:?} is too large"))?;
        if percent {
            if value > 100 {
                return Err(format!("{text} is outside 0%-100%"));
            }
            Ok(Quantity::Percent(value as u32))
        } else {
            Ok(Quantity::Count(value))
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Quantity::Count(0) | Quantity::Percent(0))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Count(n) => write!(f, "{n}"),
            Quantity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Quantity::Count(n) => serializer.serialize_u64(*n),
            Quantity::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(n) => Ok(Quantity::Count(n)),
            Raw::Text(text) => Quantity::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// What ends a canary step once its replicas run the new spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepPause {
    /// `shoal rollout approve` (Kruise's default for every step but the last).
    Approve,
    /// This long (0: go straight on).
    For(GoDuration),
}

impl fmt::Display for StepPause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepPause::Approve => f.write_str("approve"),
            StepPause::For(d) => write!(f, "{d}"),
        }
    }
}

/// One canary step: bring this many replicas to the new spec, then pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    pub replicas: Quantity,
    pub pause: StepPause,
    /// The share of the service's new connections, in per cent, that goes to the new version
    /// while this step is the rollout's, whatever its task count (`traffic=5%`); `None`: by task
    /// count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u8>,
}

impl CanaryStep {
    /// The replicas this step brings to the new spec out of `total`: a percentage rounds up, so
    /// a step of 1% still moves one replica (Kruise); never more than `total`.
    pub fn target(&self, total: u64) -> u64 {
        self.replicas.round_up(total).min(total)
    }

    /// `REPLICAS[:PAUSE][:traffic=N%]` as the CLI takes it; `pause` is `None` when not given (the
    /// caller applies the default, which depends on whether the step is the last).
    pub fn parse(text: &str) -> Result<(Quantity, Option<StepPause>, Option<u8>), String> {
        let mut parts: Vec<&str> = text.split(':').collect();
        let mut traffic = None;
        if let Some(last) = parts.last()
            && let Some(share) = last.strip_prefix("traffic=")
        {
            traffic = Some(parse_share(share)?);
            parts.pop();
        }
        let (replicas, pause) = match parts.as_slice() {
            [replicas] => (*replicas, None),
            [replicas, pause] => (*replicas, Some(*pause)),
            _ => return Err(format!("{text:?} is not REPLICAS[:PAUSE][:traffic=N%]")),
        };
        let replicas = Quantity::parse(replicas)?;
        if replicas.is_zero() {
            return Err(format!("replicas {replicas} is below 1 (allowed: a count from 1, or 1%-100%)"));
        }
        let pause = match pause {
            None => None,
            Some("approve") => Some(StepPause::Approve),
            Some(text) => Some(StepPause::For(
                GoDuration::parse(text)
                    .map_err(|_| format!("pause {text:?} is neither a duration (e.g. 30s, 5m) nor \"approve\""))?,
            )),
        };
        Ok((replicas, pause, traffic))
    }
}

/// A traffic share: `N%`, N from 0 to 100.
pub fn parse_share(text: &str) -> Result<u8, String> {
    text.strip_suffix('%')
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("traffic={text}: a share is N% with N from 0 to 100 (e.g. traffic=5%)"))
}

impl fmt::Display for CanaryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.replicas, self.pause)?;
        match self.traffic {
            Some(share) => write!(f, ":traffic={share}%"),
            None => Ok(()),
        }
    }
}

impl crate::UpdateConfig {
    /// The way this config rolls out, in words (`service inspect --pretty`, `--dry-run`).
    pub fn describe(&self) -> String {
        let mut words = match (self.strategy, self.budget()) {
            (RolloutStrategy::Recreate, _) => "recreate: every old task stops before any new one starts".to_string(),
            (RolloutStrategy::Rolling, Some((surge, unavailable))) => {
                format!("rolling with a budget: at most {surge} above the replicas, at most {unavailable} unavailable")
            }
            (RolloutStrategy::Rolling, None) => {
                let at_once = match self.parallelism {
                    0 => "all tasks at once".to_string(),
                    1 => "1 task at a time".to_string(),
                    n => format!("{n} tasks at a time"),
                };
                format!("rolling, {at_once}, {}", self.order.as_str())
            }
        };
        if !self.steps.is_empty() {
            let steps: Vec<String> = self
                .steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let replicas = match step.traffic {
                        Some(share) => format!("{} ({share}% of the traffic)", step.replicas),
                        None => step.replicas.to_string(),
                    };
                    match step.pause {
                        _ if i + 1 == self.steps.len() => replicas,
                        StepPause::Approve => format!("{replicas} (then wait for approval)"),
                        StepPause::For(pause) => format!("{replicas} (then pause {pause})"),
                    }
                })
                .collect();
            words.push_str(&format!("; canary steps {}", steps.join(" → ")));
        }
        match self.old_tasks {
            OldTasks::Stop => {}
            OldTasks::Remove => words.push_str("; replaced containers removed once stopped"),
            OldTasks::Keep => words.push_str("; replaced tasks kept running until `rollout finish`"),
        }
        if self.prepare_ahead {
            words.push_str("; every new task prepared (container created) when the rollout starts");
        }
        words
    }
}

/// Where a canary rollout stands: its step, and what it waits for once the step is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    /// The step being worked on, from 0.
    pub index: u32,
    /// How many steps the rollout has.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StepWait>,
}

/// What a reached step waits for before the next one starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepWait {
    /// `shoal rollout approve SERVICE`.
    Approval,
    /// This time (a step's timed pause).
    Until(Timestamp),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_as_kubernetes_does() {
        assert_eq!(Quantity::Percent(25).round_up(10), 3);
        assert_eq!(Quantity::Percent(25).round_down(10), 2);
        assert_eq!(Quantity::Percent(50).round_up(4), 2);
        assert_eq!(Quantity::Count(3).round_up(10), 3);
        assert_eq!(Quantity::Percent(1).round_up(4), 1);
    }

    #[test]
    fn quantities_parse_and_refuse() {
        assert_eq!(Quantity::parse("25%"), Ok(Quantity::Percent(25)));
        assert_eq!(Quantity::parse("3"), Ok(Quantity::Count(3)));
        assert_eq!(Quantity::parse("101%").unwrap_err(), "101% is outside 0%-100%");
        assert_eq!(Quantity::parse("-1").unwrap_err(), "\"-1\" is not a count or a percentage (N or N%)");
        let json = serde_json::to_string(&[Quantity::Count(2), Quantity::Percent(50)]).unwrap();
        assert_eq!(json, r#"[2,"50%"]"#);
        assert_eq!(serde_json::from_str::<Vec<Quantity>>(&json).unwrap(), [Quantity::Count(2), Quantity::Percent(50)]);
    }

    #[test]
    fn steps_parse_and_refuse() {
        assert_eq!(CanaryStep::parse("1"), Ok((Quantity::Count(1), None, None)));
        assert_eq!(
            CanaryStep::parse("50%:30s"),
            Ok((Quantity::Percent(50), Some(StepPause::For(GoDuration::from_secs(30))), None))
        );
        assert_eq!(CanaryStep::parse("2:approve"), Ok((Quantity::Count(2), Some(StepPause::Approve), None)));
        assert_eq!(
            CanaryStep::parse("1:approve:traffic=5%"),
            Ok((Quantity::Count(1), Some(StepPause::Approve), Some(5)))
        );
        assert_eq!(CanaryStep::parse("10%:traffic=0%"), Ok((Quantity::Percent(10), None, Some(0))));
        assert!(CanaryStep::parse("1:approve:traffic=101%").unwrap_err().contains("from 0 to 100"));
        assert!(CanaryStep::parse("1:approve:traffic=5").unwrap_err().contains("N% with N from 0 to 100"));
        assert!(CanaryStep::parse("1:approve:30s").unwrap_err().contains("REPLICAS[:PAUSE][:traffic=N%]"));
        assert!(CanaryStep::parse("0").unwrap_err().contains("below 1"));
        assert!(CanaryStep::parse("150%").unwrap_err().contains("outside 0%-100%"));
        assert!(CanaryStep::parse("1:forever").unwrap_err().contains("\"forever\" is neither a duration"));
    }
}
