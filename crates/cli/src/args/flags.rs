//! Flag groups of `service create` and `service update`. Every flag is optional: `apply` changes
//! only the fields whose flag was given, so `create` applies a group to the Swarm defaults and
//! `update` applies it to the service's current spec. Where create takes a list (`--env`,
//! `--constraint`, `--publish`) update takes `-add`/`-rm` pairs instead (the `*UpdateFlags` groups).

use clap::Args;
use shoal_types::{
    CanaryStep, Constraint, ContainerSpec, EndpointMode, EndpointSpec, FailureAction, GoDuration, HealthConfig, Labels,
    OldTasks, Placement, PlacementPreference, PortConfig, Quantity, Resources, RestartCondition, RestartPolicy,
    RolloutStrategy, StepPause, UpdateConfig, UpdateOrder,
};

use super::parsers::{self, ShellWords};
use super::publish::{PortRemoval, parse_publish, parse_publish_rm};

/// The fields of an update or rollback config, whichever flag family they came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateConfigDelta {
    pub parallelism: Option<u64>,
    pub delay: Option<GoDuration>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<GoDuration>,
    pub max_failure_ratio: Option<f32>,
    pub order: Option<UpdateOrder>,
    pub strategy: Option<RolloutStrategy>,
    pub max_surge: Option<Quantity>,
    pub max_unavailable: Option<Quantity>,
    /// The canary steps as given (`--update-step`, repeatable); `none` clears them.
    pub steps: Vec<StepArg>,
    pub old_tasks: Option<OldTasks>,
    pub prepare_ahead: Option<bool>,
}

/// One `--update-step`: a step, or `none` (no steps: the update goes in one go).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepArg {
    Step(Quantity, Option<StepPause>, Option<u8>),
    None,
}

impl UpdateConfigDelta {
    pub fn is_empty(&self) -> bool {
        *self == UpdateConfigDelta::default()
    }

    /// The first field given, spelled as in its flag (`parallelism`, `failure-action`, …).
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("parallelism", self.parallelism.is_some()),
            ("delay", self.delay.is_some()),
            ("failure-action", self.failure_action.is_some()),
            ("monitor", self.monitor.is_some()),
            ("max-failure-ratio", self.max_failure_ratio.is_some()),
            ("order", self.order.is_some()),
            ("strategy", self.strategy.is_some()),
            ("max-surge", self.max_surge.is_some()),
            ("max-unavailable", self.max_unavailable.is_some()),
            ("step", !self.steps.is_empty()),
            ("old-tasks", self.old_tasks.is_some()),
            ("prepare-ahead", self.prepare_ahead.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }

    /// Refuses flags of one family (`update` or `rollback`) that exclude each other, naming both:
    /// a surge budget replaces parallelism and order; recreate has neither, nor steps.
    pub fn check(&self, family: &str) -> Result<(), String> {
        let budget = [("max-surge", self.max_surge.is_some()), ("max-unavailable", self.max_unavailable.is_some())]
            .into_iter()
            .find_map(|(name, given)| given.then_some(name));
        let swarm = [("parallelism", self.parallelism.is_some()), ("order", self.order.is_some())]
            .into_iter()
            .find_map(|(name, given)| given.then_some(name));
        if let (Some(a), Some(b)) = (budget, swarm) {
            return Err(format!(
                "--{family}-{a} cannot be used with --{family}-{b}: a surge budget replaces parallelism and order"
            ));
        }
        if self.strategy == Some(RolloutStrategy::Recreate)
            && let Some(other) = budget.or(swarm).or((!self.steps.is_empty()).then_some("step"))
        {
            return Err(format!(
                "--{family}-strategy recreate cannot be used with --{family}-{other}: recreate stops every old task before any new one starts"
            ));
        }
        if self.prepare_ahead == Some(true)
            && let Some(other) = budget
                .or((self.strategy == Some(RolloutStrategy::Recreate)).then_some("strategy recreate"))
                .or(self.steps.iter().any(|s| *s != StepArg::None).then_some("step"))
        {
            let other = other.replace("strategy ", "strategy=");
            return Err(format!(
                "--{family}-prepare-ahead cannot be used with --{family}-{other}: preparing ahead goes with parallelism and order"
            ));
        }
        if self.steps.len() > 1 && self.steps.contains(&StepArg::None) {
            return Err(format!("--{family}-step none cannot be used with other --{family}-step values"));
        }
        if let Some(StepArg::Step(replicas, pause, _)) = self.steps.last() {
            if *replicas != Quantity::Percent(100) {
                return Err(format!("--{family}-step {replicas}: the last step must be 100%"));
            }
            if let Some(pause) = pause.filter(|p| *p != StepPause::For(GoDuration::ZERO)) {
                return Err(format!(
                    "--{family}-step 100%:{pause}: the last step cannot pause (the rollout ends there)"
                ));
            }
        }
        Ok(())
    }

    /// The steps with their default pauses: approval for every step but the last (Kruise).
    fn canary_steps(&self) -> Option<Vec<CanaryStep>> {
        if self.steps.is_empty() {
            return None;
        }
        let last = self.steps.len() - 1;
        let steps = self.steps.iter().enumerate().filter_map(|(i, step)| match step {
            StepArg::None => None,
            StepArg::Step(replicas, pause, traffic) => {
                let default = if i == last { StepPause::For(GoDuration::ZERO) } else { StepPause::Approve };
                Some(CanaryStep { replicas: *replicas, pause: pause.unwrap_or(default), traffic: *traffic })
            }
        });
        Some(steps.collect())
    }

    /// Changes `config` where a flag was given. Choosing a way of rolling out drops what the
    /// others need: a surge budget or steps make the strategy rolling, a surge budget resets
    /// parallelism and order to their defaults, parallelism or order drop a surge budget (back
    /// to Swarm's rolling update), and recreate drops budget and steps.
    pub fn apply(&self, config: &mut UpdateConfig) {
        if self.parallelism.is_some() || self.order.is_some() {
            config.max_surge = None;
            config.max_unavailable = None;
            config.strategy = RolloutStrategy::Rolling;
        }
        if self.max_surge.is_some() || self.max_unavailable.is_some() {
            config.parallelism = 1;
            config.order = UpdateOrder::StopFirst;
            config.strategy = RolloutStrategy::Rolling;
            config.prepare_ahead = false;
        }
        if let Some(steps) = self.canary_steps() {
            config.prepare_ahead &= steps.is_empty();
            config.steps = steps;
            config.strategy = RolloutStrategy::Rolling;
        }
        if let Some(v) = self.prepare_ahead {
            config.prepare_ahead = v;
        }
        if let Some(v) = self.parallelism {
            config.parallelism = v;
        }
        if let Some(v) = self.delay {
            config.delay = v;
        }
        if let Some(v) = self.failure_action {
            config.failure_action = v;
        }
        if let Some(v) = self.monitor {
            config.monitor = v;
        }
        if let Some(v) = self.max_failure_ratio {
            config.max_failure_ratio = v;
        }
        if let Some(v) = self.order {
            config.order = v;
        }
        if let Some(v) = self.max_surge {
            config.max_surge = Some(v);
        }
        if let Some(v) = self.max_unavailable {
            config.max_unavailable = Some(v);
        }
        if let Some(v) = self.old_tasks {
            config.old_tasks = v;
        }
        if let Some(strategy) = self.strategy {
            config.strategy = strategy;
            if strategy == RolloutStrategy::Recreate {
                config.max_surge = None;
                config.max_unavailable = None;
                config.steps.clear();
                config.parallelism = 1;
                config.order = UpdateOrder::StopFirst;
                config.prepare_ahead = false;
            }
        }
    }
}

/// `--update-*`: how a rolling update proceeds.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Update options")]
pub struct UpdateFlags {
    /// Maximum number of tasks updated simultaneously (0 to update all at once) [default: 1]
    #[arg(id = "update-parallelism", long = "update-parallelism", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h) [default: 0s]
    #[arg(id = "update-delay", long = "update-delay", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub delay: Option<GoDuration>,
    /// Action on update failure [default: pause]
    #[arg(id = "update-failure-action", long = "update-failure-action", value_name = "ACTION", value_parser = parsers::failure_action())]
    pub failure_action: Option<FailureAction>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) [default: 5s]
    #[arg(id = "update-monitor", long = "update-monitor", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub monitor: Option<GoDuration>,
    /// Failure rate to tolerate during an update, in [0, 1] [default: 0]
    #[arg(id = "update-max-failure-ratio", long = "update-max-failure-ratio", value_name = "RATIO", value_parser = parsers::ratio, allow_hyphen_values = true)]
    pub max_failure_ratio: Option<f32>,
    /// Update order [default: stop-first]
    #[arg(id = "update-order", long = "update-order", value_name = "ORDER", value_parser = parsers::update_order())]
    pub order: Option<UpdateOrder>,
    /// Update strategy: rolling, or recreate (every old task stops before any new one starts) [default: rolling]
    #[arg(id = "update-strategy", long = "update-strategy", value_name = "STRATEGY", value_parser = parsers::rollout_strategy())]
    pub strategy: Option<RolloutStrategy>,
    /// Tasks allowed above the replicas during the update (N or N%, rounded up; replaces parallelism and order) [default: 25% once a budget is set]
    #[arg(id = "update-max-surge", long = "update-max-surge", value_name = "N|N%", value_parser = parsers::quantity, allow_hyphen_values = true)]
    pub max_surge: Option<Quantity>,
    /// Replicas allowed to be unavailable during the update (N or N%, rounded down) [default: 25% once a budget is set]
    #[arg(id = "update-max-unavailable", long = "update-max-unavailable", value_name = "N|N%", value_parser = parsers::quantity, allow_hyphen_values = true)]
    pub max_unavailable: Option<Quantity>,
    /// Canary step REPLICAS[:PAUSE], repeatable in order; PAUSE is a duration or approve (the default for all but the last step, which must be 100%); none removes the steps
    #[arg(id = "update-step", long = "update-step", value_name = "REPLICAS[:PAUSE][:traffic=N%]", value_parser = parsers::canary_step, allow_hyphen_values = true)]
    pub steps: Vec<StepArg>,
    /// What happens to a replaced task's container once stopped: stop (kept while the task is in the history), remove, or keep (left running beside the new task until `rollout finish`) [default: stop]
    #[arg(id = "update-old-tasks", long = "update-old-tasks", value_name = "POLICY", value_parser = parsers::old_tasks())]
    pub old_tasks: Option<OldTasks>,
    /// Place and create every new task's container when the update starts, so each slot's turn only stops the old task and starts the new one (with parallelism and order only) [default: false]
    #[arg(id = "update-prepare-ahead", long = "update-prepare-ahead", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prepare_ahead: Option<bool>,
}

impl UpdateFlags {
    pub fn delta(&self) -> UpdateConfigDelta {
        UpdateConfigDelta {
            parallelism: self.parallelism,
            delay: self.delay,
            failure_action: self.failure_action,
            monitor: self.monitor,
            max_failure_ratio: self.max_failure_ratio,
            order: self.order,
            strategy: self.strategy,
            max_surge: self.max_surge,
            max_unavailable: self.max_unavailable,
            steps: self.steps.clone(),
            old_tasks: self.old_tasks,
            prepare_ahead: self.prepare_ahead,
        }
    }

    pub fn apply(&self, config: &mut UpdateConfig) {
        self.delta().apply(config);
    }
}

/// `--rollback-*`: how a rollback proceeds. A rollback's failure action is pause or continue.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Rollback options")]
pub struct RollbackFlags {
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once) [default: 1]
    #[arg(id = "rollback-parallelism", long = "rollback-parallelism", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) [default: 0s]
    #[arg(id = "rollback-delay", long = "rollback-delay", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub delay: Option<GoDuration>,
    /// Action on rollback failure [default: pause]
    #[arg(id = "rollback-failure-action", long = "rollback-failure-action", value_name = "ACTION", value_parser = parsers::rollback_failure_action())]
    pub failure_action: Option<FailureAction>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) [default: 5s]
    #[arg(id = "rollback-monitor", long = "rollback-monitor", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub monitor: Option<GoDuration>,
    /// Failure rate to tolerate during a rollback, in [0, 1] [default: 0]
    #[arg(id = "rollback-max-failure-ratio", long = "rollback-max-failure-ratio", value_name = "RATIO", value_parser = parsers::ratio, allow_hyphen_values = true)]
    pub max_failure_ratio: Option<f32>,
    /// Rollback order [default: stop-first]
    #[arg(id = "rollback-order", long = "rollback-order", value_name = "ORDER", value_parser = parsers::update_order())]
    pub order: Option<UpdateOrder>,
    /// Rollback strategy: rolling, or recreate [default: rolling]
    #[arg(id = "rollback-strategy", long = "rollback-strategy", value_name = "STRATEGY", value_parser = parsers::rollout_strategy())]
    pub strategy: Option<RolloutStrategy>,
    /// Tasks allowed above the replicas during a rollback (N or N%, rounded up) [default: 25% once a budget is set]
    #[arg(id = "rollback-max-surge", long = "rollback-max-surge", value_name = "N|N%", value_parser = parsers::quantity, allow_hyphen_values = true)]
    pub max_surge: Option<Quantity>,
    /// Replicas allowed to be unavailable during a rollback (N or N%, rounded down) [default: 25% once a budget is set]
    #[arg(id = "rollback-max-unavailable", long = "rollback-max-unavailable", value_name = "N|N%", value_parser = parsers::quantity, allow_hyphen_values = true)]
    pub max_unavailable: Option<Quantity>,
    /// What happens to a rolled-back task's container once stopped: stop or remove [default: stop]
    #[arg(id = "rollback-old-tasks", long = "rollback-old-tasks", value_name = "POLICY", value_parser = parsers::old_tasks())]
    pub old_tasks: Option<OldTasks>,
    /// Place and create every rolled-back task's container when the rollback starts [default: false]
    #[arg(id = "rollback-prepare-ahead", long = "rollback-prepare-ahead", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub prepare_ahead: Option<bool>,
}

impl RollbackFlags {
    pub fn delta(&self) -> UpdateConfigDelta {
        UpdateConfigDelta {
            parallelism: self.parallelism,
            delay: self.delay,
            failure_action: self.failure_action,
            monitor: self.monitor,
            max_failure_ratio: self.max_failure_ratio,
            order: self.order,
            strategy: self.strategy,
            max_surge: self.max_surge,
            max_unavailable: self.max_unavailable,
            steps: Vec::new(),
            old_tasks: self.old_tasks,
            prepare_ahead: self.prepare_ahead,
        }
    }

    pub fn apply(&self, config: &mut UpdateConfig) {
        self.delta().apply(config);
    }
}

/// Refuses `--update-*` and `--rollback-*` for a job, naming the first such flag given and
/// `context` (what makes it a job: `--mode replicated-job`, …). A job is never rolled out, so
/// Swarm refuses both configs for it.
pub fn refuse_rollout_flags(update: &UpdateFlags, rollback: &RollbackFlags, context: &str) -> Result<(), String> {
    if let Some(field) = update.delta().first_given() {
        return Err(format!("--update-{field} cannot be used with {context}: jobs may not have an update config"));
    }
    if let Some(field) = rollback.delta().first_given() {
        return Err(format!("--rollback-{field} cannot be used with {context}: jobs may not have a rollback config"));
    }
    Ok(())
}

/// `--restart-*`: when and how failed tasks are restarted.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Restart policy options")]
pub struct RestartFlags {
    /// Restart when condition is met [default: any]
    #[arg(id = "restart-condition", long = "restart-condition", value_name = "CONDITION", value_parser = parsers::restart_condition())]
    pub condition: Option<RestartCondition>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) [default: 5s]
    #[arg(id = "restart-delay", long = "restart-delay", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub delay: Option<GoDuration>,
    /// Maximum number of restarts before giving up (0 = unlimited) [default: 0]
    #[arg(id = "restart-max-attempts", long = "restart-max-attempts", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h; 0 = unbounded) [default: 0s]
    #[arg(id = "restart-window", long = "restart-window", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub window: Option<GoDuration>,
}

impl RestartFlags {
    pub fn apply(&self, policy: &mut RestartPolicy) {
        if let Some(v) = self.condition {
            policy.condition = v;
        }
        if let Some(v) = self.delay {
            policy.delay = v;
        }
        if let Some(v) = self.max_attempts {
            policy.max_attempts = v;
        }
        if let Some(v) = self.window {
            policy.window = v;
        }
    }
}

/// `--reserve-*` / `--limit-*`: resource reservations and limits.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Resource options")]
pub struct ResourceFlags {
    /// Reserve CPUs (e.g. 0.5)
    #[arg(id = "reserve-cpu", long = "reserve-cpu", value_name = "CPUS", value_parser = parsers::nano_cpus, allow_hyphen_values = true)]
    pub reserve_cpu: Option<u64>,
    /// Reserve memory (e.g. 512m, 1GiB)
    #[arg(id = "reserve-memory", long = "reserve-memory", value_name = "BYTES", value_parser = parsers::memory_bytes, allow_hyphen_values = true)]
    pub reserve_memory: Option<u64>,
    /// Limit CPUs (e.g. 0.5)
    #[arg(id = "limit-cpu", long = "limit-cpu", value_name = "CPUS", value_parser = parsers::nano_cpus, allow_hyphen_values = true)]
    pub limit_cpu: Option<u64>,
    /// Limit memory (e.g. 512m, 1GiB)
    #[arg(id = "limit-memory", long = "limit-memory", value_name = "BYTES", value_parser = parsers::memory_bytes, allow_hyphen_values = true)]
    pub limit_memory: Option<u64>,
    /// Limit the number of processes (0 = unlimited)
    #[arg(id = "limit-pids", long = "limit-pids", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub limit_pids: Option<u64>,
}

impl ResourceFlags {
    pub fn apply(&self, resources: &mut Resources) {
        if let Some(v) = self.reserve_cpu {
            resources.reservations.nano_cpus = v;
        }
        if let Some(v) = self.reserve_memory {
            resources.reservations.memory_bytes = v;
        }
        if let Some(v) = self.limit_cpu {
            resources.limits.nano_cpus = v;
        }
        if let Some(v) = self.limit_memory {
            resources.limits.memory_bytes = v;
        }
        if let Some(v) = self.limit_pids {
            resources.limits.pids = v;
        }
    }
}

/// Placement at creation: constraints, preferences and the per-node replica cap.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Placement options")]
pub struct PlacementFlags {
    /// Placement constraint, e.g. node.labels.zone==east or node.role!=manager (repeatable)
    #[arg(id = "constraint", long = "constraint", value_name = "EXPR", value_parser = parsers::constraint)]
    pub constraints: Vec<Constraint>,
    /// Placement preference, e.g. spread=node.labels.zone (repeatable)
    #[arg(id = "placement-pref", long = "placement-pref", value_name = "PREF", value_parser = parsers::placement_pref)]
    pub preferences: Vec<PlacementPreference>,
    /// Maximum number of tasks per node (0 = unlimited) [default: 0]
    #[arg(id = "replicas-max-per-node", long = "replicas-max-per-node", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub max_replicas_per_node: Option<u64>,
}

impl PlacementFlags {
    pub fn apply(&self, placement: &mut Placement) {
        placement.constraints.extend(self.constraints.iter().cloned());
        placement.preferences.extend(self.preferences.iter().cloned());
        if let Some(v) = self.max_replicas_per_node {
            placement.max_replicas_per_node = v;
        }
    }
}

/// `service update`'s placement changes.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Placement options")]
pub struct PlacementUpdateFlags {
    /// Add a placement constraint, e.g. node.labels.zone==east (repeatable)
    #[arg(id = "constraint-add", long = "constraint-add", value_name = "EXPR", value_parser = parsers::constraint)]
    pub constraint_add: Vec<Constraint>,
    /// Remove a placement constraint, written as it was added (repeatable)
    #[arg(id = "constraint-rm", long = "constraint-rm", value_name = "EXPR", value_parser = parsers::non_empty)]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference, e.g. spread=node.labels.zone (repeatable)
    #[arg(id = "placement-pref-add", long = "placement-pref-add", value_name = "PREF", value_parser = parsers::placement_pref)]
    pub pref_add: Vec<PlacementPreference>,
    /// Remove a placement preference, e.g. spread=node.labels.zone (repeatable)
    #[arg(id = "placement-pref-rm", long = "placement-pref-rm", value_name = "PREF", value_parser = parsers::placement_pref)]
    pub pref_rm: Vec<PlacementPreference>,
    /// Maximum number of tasks per node (0 = unlimited)
    #[arg(id = "replicas-max-per-node", long = "replicas-max-per-node", value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub max_replicas_per_node: Option<u64>,
}

impl PlacementUpdateFlags {
    /// docker's order: constraints are added (an existing one is not added twice) then removed;
    /// preferences are removed then added. The order of what stays is kept, so an update that
    /// changes nothing does not make tasks out of date.
    pub fn apply(&self, placement: &mut Placement) {
        for constraint in &self.constraint_add {
            if !placement.constraints.contains(constraint) {
                placement.constraints.push(constraint.clone());
            }
        }
        placement.constraints.retain(|c| !self.constraint_rm.iter().any(|text| constraint_matches(c, text)));
        placement.preferences.retain(|p| !self.pref_rm.contains(p));
        placement.preferences.extend(self.pref_add.iter().cloned());
        if let Some(v) = self.max_replicas_per_node {
            placement.max_replicas_per_node = v;
        }
    }
}

/// Whether `--constraint-rm TEXT` names `constraint`: the same constraint once parsed (spaces
/// around the operator do not matter), else the same text.
fn constraint_matches(constraint: &Constraint, text: &str) -> bool {
    match Constraint::parse(text) {
        Ok(parsed) => parsed == *constraint,
        Err(_) => constraint.to_string() == text.trim(),
    }
}

/// `--health-*` / `--no-healthcheck`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Health check options")]
pub struct HealthFlags {
    /// Command to run to check health (run through a shell)
    #[arg(id = "health-cmd", long = "health-cmd", value_name = "CMD")]
    pub cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(id = "health-interval", long = "health-interval", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub interval: Option<GoDuration>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(id = "health-timeout", long = "health-timeout", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub timeout: Option<GoDuration>,
    /// Consecutive failures needed to report unhealthy
    #[arg(id = "health-retries", long = "health-retries", value_name = "N", value_parser = parsers::count_u32, allow_hyphen_values = true)]
    pub retries: Option<u32>,
    /// Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)
    #[arg(id = "health-start-period", long = "health-start-period", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub start_period: Option<GoDuration>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(
        id = "no-healthcheck", long = "no-healthcheck",
        conflicts_with_all = ["health-cmd", "health-interval", "health-timeout", "health-retries", "health-start-period"]
    )]
    pub no_healthcheck: bool,
}

impl HealthFlags {
    fn has_settings(&self) -> bool {
        self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.retries.is_some()
            || self.start_period.is_some()
    }

    /// Docker's rule: `--no-healthcheck` sets the test to `["NONE"]`; any `--health-*` flag makes a
    /// health config (a `--health-cmd` becomes `["CMD-SHELL", cmd]`, otherwise the image's test
    /// is kept) with the given fields changed.
    pub fn apply(&self, health: &mut Option<HealthConfig>) {
        if self.no_healthcheck {
            *health = Some(HealthConfig { test: vec!["NONE".to_string()], ..HealthConfig::default() });
            return;
        }
        if !self.has_settings() {
            return;
        }
        let config = health.get_or_insert_with(HealthConfig::default);
        if config.test.first().map(String::as_str) == Some("NONE") {
            config.test.clear();
        }
        if let Some(cmd) = &self.cmd {
            config.test = vec!["CMD-SHELL".to_string(), cmd.clone()];
        }
        if let Some(v) = self.interval {
            config.interval = v;
        }
        if let Some(v) = self.timeout {
            config.timeout = v;
        }
        if let Some(v) = self.retries {
            config.retries = v;
        }
        if let Some(v) = self.start_period {
            config.start_period = v;
        }
    }
}

/// Container settings that `create` and `update` share: each flag replaces one field.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Container options")]
pub struct ContainerSettingFlags {
    /// Container hostname
    #[arg(id = "hostname", long = "hostname", value_name = "HOSTNAME")]
    pub hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', id = "user", long = "user", value_name = "USER", value_parser = parsers::non_empty)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', id = "workdir", long = "workdir", value_name = "DIR", value_parser = parsers::non_empty)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image (split like a shell: quotes group words)
    #[arg(id = "entrypoint", long = "entrypoint", value_name = "CMD", value_parser = parsers::shell_words, allow_hyphen_values = true)]
    pub entrypoint: Option<ShellWords>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) [default: 10s]
    #[arg(id = "stop-grace-period", long = "stop-grace-period", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub stop_grace_period: Option<GoDuration>,
    /// Signal to stop the container
    #[arg(id = "stop-signal", long = "stop-signal", value_name = "SIGNAL", value_parser = parsers::non_empty)]
    pub stop_signal: Option<String>,
    /// How long a task that receives ingress traffic keeps its open connections once told to
    /// stop, before it is stopped anyway (ns|us|ms|s|m|h; 0s: no draining) [default: 1m]
    #[arg(id = "stop-drain-timeout", long = "stop-drain-timeout", value_name = "DURATION", value_parser = parsers::duration, allow_hyphen_values = true)]
    pub stop_drain_timeout: Option<GoDuration>,
}

impl ContainerSettingFlags {
    pub fn apply(&self, container: &mut ContainerSpec) {
        if let Some(v) = &self.hostname {
            container.hostname = Some(v.clone());
        }
        if let Some(v) = &self.user {
            container.user = Some(v.clone());
        }
        if let Some(v) = &self.workdir {
            container.workdir = Some(v.clone());
        }
        if let Some(v) = &self.entrypoint {
            container.command = v.0.clone();
        }
        if let Some(v) = self.stop_grace_period {
            container.stop_grace_period = v;
        }
        if let Some(v) = &self.stop_signal {
            container.stop_signal = Some(v.clone());
        }
        if let Some(v) = self.stop_drain_timeout {
            container.stop_drain_timeout = Some(v);
        }
    }
}

/// Container settings given at creation.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Container options")]
pub struct ContainerFlags {
    /// Set environment variables, KEY=VALUE (repeatable)
    #[arg(short = 'e', id = "env", long = "env", value_name = "KEY=VALUE", value_parser = parsers::env_var)]
    pub env: Vec<String>,
    /// Container labels, key=value (repeatable)
    #[arg(id = "container-label", long = "container-label", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub labels: Vec<(String, String)>,
    /// Attach a mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-driver=…][,volume-opt=k=v][,tmpfs-size=…] (repeatable)
    #[arg(id = "mount", long = "mount", value_name = "MOUNT", value_parser = parsers::mount)]
    pub mounts: Vec<shoal_types::Mount>,
    /// Give the service a secret as a file: NAME or source=NAME[,target=FILE][,uid=N][,gid=N][,mode=0444] (in /run/secrets; repeatable)
    #[arg(id = "secret", long = "secret", value_name = "SECRET", value_parser = parsers::data_reference)]
    pub secrets: Vec<shoal_types::DataReference>,
    /// Give the service a config as a file: NAME or source=NAME[,target=PATH][,uid=N][,gid=N][,mode=0444] (at /NAME by default; repeatable)
    #[arg(id = "config", long = "config", value_name = "CONFIG", value_parser = parsers::data_reference)]
    pub configs: Vec<shoal_types::DataReference>,
    /// Put the tasks on a network: they reach its services by name, and its services reach them (repeatable)
    #[arg(id = "network", long = "network", value_name = "NETWORK", value_parser = parsers::network_name)]
    pub networks: Vec<String>,
    #[command(flatten)]
    pub settings: ContainerSettingFlags,
}

impl ContainerFlags {
    /// The networks, in order, each once.
    pub fn networks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for network in &self.networks {
            if !out.contains(network) {
                out.push(network.clone());
            }
        }
        out
    }

    pub fn apply(&self, container: &mut ContainerSpec) {
        container.env.extend(self.env.iter().cloned());
        container.mounts.extend(self.mounts.iter().cloned());
        container.secrets.extend(self.secrets.iter().cloned());
        container.configs.extend(self.configs.iter().cloned());
        for (key, value) in &self.labels {
            container.labels.insert(key.clone(), value.clone());
        }
        self.settings.apply(container);
    }
}

/// `service update`'s container changes: environment variables and container labels added or
/// removed by key, and the settings `create` has too.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Container options")]
pub struct ContainerUpdateFlags {
    /// Add or update an environment variable, KEY=VALUE (repeatable)
    #[arg(id = "env-add", long = "env-add", value_name = "KEY=VALUE", value_parser = parsers::env_var)]
    pub env_add: Vec<String>,
    /// Remove an environment variable by key (repeatable)
    #[arg(id = "env-rm", long = "env-rm", value_name = "KEY", value_parser = parsers::env_key)]
    pub env_rm: Vec<String>,
    /// Add or update a container label, key=value (repeatable)
    #[arg(id = "container-label-add", long = "container-label-add", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub label_add: Vec<(String, String)>,
    /// Remove a container label by key (repeatable)
    #[arg(id = "container-label-rm", long = "container-label-rm", value_name = "KEY", value_parser = parsers::non_empty)]
    pub label_rm: Vec<String>,
    /// Add or replace (by target) a mount, with --mount's syntax (repeatable)
    #[arg(id = "mount-add", long = "mount-add", value_name = "MOUNT", value_parser = parsers::mount)]
    pub mount_add: Vec<shoal_types::Mount>,
    /// Remove a mount by its target path (repeatable)
    #[arg(id = "mount-rm", long = "mount-rm", value_name = "TARGET", value_parser = parsers::mount_target)]
    pub mount_rm: Vec<String>,
    /// Add or replace (by target) a secret, with --secret's syntax (repeatable)
    #[arg(id = "secret-add", long = "secret-add", value_name = "SECRET", value_parser = parsers::data_reference)]
    pub secret_add: Vec<shoal_types::DataReference>,
    /// Remove a secret by name (repeatable)
    #[arg(id = "secret-rm", long = "secret-rm", value_name = "NAME", value_parser = parsers::data_name)]
    pub secret_rm: Vec<String>,
    /// Add or replace (by target) a config, with --config's syntax (repeatable)
    #[arg(id = "config-add", long = "config-add", value_name = "CONFIG", value_parser = parsers::data_reference)]
    pub config_add: Vec<shoal_types::DataReference>,
    /// Remove a config by name (repeatable)
    #[arg(id = "config-rm", long = "config-rm", value_name = "NAME", value_parser = parsers::data_name)]
    pub config_rm: Vec<String>,
    /// Add a network (repeatable)
    #[arg(id = "network-add", long = "network-add", value_name = "NETWORK", value_parser = parsers::network_name)]
    pub network_add: Vec<String>,
    /// Remove a network (repeatable)
    #[arg(id = "network-rm", long = "network-rm", value_name = "NETWORK", value_parser = parsers::network_name)]
    pub network_rm: Vec<String>,
    #[command(flatten)]
    pub settings: ContainerSettingFlags,
}

impl ContainerUpdateFlags {
    /// docker's `--network-rm` then `--network-add`.
    pub fn apply_networks(&self, networks: &mut Vec<String>) {
        networks.retain(|n| !self.network_rm.contains(n));
        for network in &self.network_add {
            if !networks.contains(network) {
                networks.push(network.clone());
            }
        }
    }
}

/// docker's `--secret-rm` then `--secret-add` (and the same for configs): references to the
/// removed names go first; an added one replaces the reference with the same target.
fn update_references(
    references: &mut Vec<shoal_types::DataReference>,
    add: &[shoal_types::DataReference],
    remove: &[String],
) {
    references.retain(|r| !remove.contains(&r.source));
    for reference in add {
        match references.iter_mut().find(|r| r.target == reference.target) {
            Some(existing) => *existing = reference.clone(),
            None => references.push(reference.clone()),
        }
    }
}

impl ContainerUpdateFlags {
    pub fn apply(&self, container: &mut ContainerSpec) {
        update_env(&mut container.env, &self.env_add, &self.env_rm);
        // docker: removed targets first, then an added mount replaces the one at its target.
        container.mounts.retain(|m| !self.mount_rm.contains(&m.target));
        for mount in &self.mount_add {
            match container.mounts.iter_mut().find(|m| m.target == mount.target) {
                Some(existing) => *existing = mount.clone(),
                None => container.mounts.push(mount.clone()),
            }
        }
        update_labels(&mut container.labels, &self.label_add, &self.label_rm);
        update_references(&mut container.secrets, &self.secret_add, &self.secret_rm);
        update_references(&mut container.configs, &self.config_add, &self.config_rm);
        self.settings.apply(container);
    }
}

/// The key of a `KEY=VALUE` environment entry.
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

/// docker's `--env-rm` then `--env-add`: removed keys go first; an added key replaces the entry
/// with the same key where it stands (later duplicates are dropped), a new key is appended.
pub fn update_env(env: &mut Vec<String>, add: &[String], remove: &[String]) {
    env.retain(|entry| !remove.iter().any(|key| env_key(key) == env_key(entry)));
    for entry in add {
        let key = env_key(entry);
        match env.iter().position(|e| env_key(e) == key) {
            Some(first) => {
                env[first] = entry.clone();
                let mut index = 0;
                env.retain(|e| {
                    let keep = index <= first || env_key(e) != key;
                    index += 1;
                    keep
                });
            }
            None => env.push(entry.clone()),
        }
    }
}

/// docker's `--label-add` then `--label-rm` (so a key both added and removed ends up removed).
pub fn update_labels(labels: &mut Labels, add: &[(String, String)], remove: &[String]) {
    for (key, value) in add {
        labels.insert(key.clone(), value.clone());
    }
    for key in remove {
        labels.remove(key);
    }
}

/// Published ports and the endpoint mode.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Endpoint options")]
pub struct EndpointFlags {
    /// Publish a port: [published:]target[/protocol] or mode=host,target=80,published=8080,protocol=tcp (repeatable)
    #[arg(short = 'p', id = "publish", long = "publish", value_name = "PORT", value_parser = parse_publish)]
    pub publish: Vec<PortConfig>,
    /// Endpoint mode [default: vip]
    #[arg(id = "endpoint-mode", long = "endpoint-mode", value_name = "MODE", value_parser = parsers::endpoint_mode())]
    pub endpoint_mode: Option<EndpointMode>,
}

impl EndpointFlags {
    pub fn apply(&self, endpoint: &mut EndpointSpec) {
        endpoint.ports.extend(self.publish.iter().cloned());
        if let Some(v) = self.endpoint_mode {
            endpoint.mode = v;
        }
    }
}

/// `service update`'s endpoint changes.
#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(next_help_heading = "Endpoint options")]
pub struct EndpointUpdateFlags {
    /// Add or update a published port: [published:]target[/protocol] or mode=host,target=80,published=8080 (repeatable)
    #[arg(id = "publish-add", long = "publish-add", value_name = "PORT", value_parser = parse_publish)]
    pub publish_add: Vec<PortConfig>,
    /// Remove a published port by its target port: target[/protocol] or target=80,protocol=udp,mode=host (repeatable)
    #[arg(id = "publish-rm", long = "publish-rm", value_name = "PORT", value_parser = parse_publish_rm)]
    pub publish_rm: Vec<PortRemoval>,
    /// Endpoint mode
    #[arg(id = "endpoint-mode", long = "endpoint-mode", value_name = "MODE", value_parser = parsers::endpoint_mode())]
    pub endpoint_mode: Option<EndpointMode>,
}

impl EndpointUpdateFlags {
    /// docker's order: removals first, then additions (a port already published as given is not
    /// added twice).
    pub fn apply(&self, endpoint: &mut EndpointSpec) {
        endpoint.ports.retain(|port| !self.publish_rm.iter().any(|rm| rm.matches(port)));
        for port in &self.publish_add {
            if !endpoint.ports.contains(port) {
                endpoint.ports.push(port.clone());
            }
        }
        if let Some(v) = self.endpoint_mode {
            endpoint.mode = v;
        }
    }
}

/// What the commands that wait for convergence (`service create|update`, `stack deploy`) share:
/// how long to wait, and docker's registry flag, accepted so scripts that always pass it work.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct WaitFlags {
    /// Give up waiting after this long (e.g. 30s, 5m) and exit 1; the cluster goes on converging
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parsers::wait_timeout,
        conflicts_with = "detach",
        allow_hyphen_values = true
    )]
    pub timeout: Option<GoDuration>,
    /// Accepted for docker compatibility; has no effect (shoal never pulls images)
    #[arg(long)]
    pub with_registry_auth: bool,
}
