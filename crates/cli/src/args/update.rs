//! `shoal service update`, `rollback` and `scale` arguments, and the pure flag → spec change.

use clap::Args;
use shoal_types::{ServiceMode, ServiceSpec};

use super::flags::{
    ContainerUpdateFlags, EndpointUpdateFlags, HealthFlags, PlacementUpdateFlags, ResourceFlags, RestartFlags,
    RollbackFlags, UpdateFlags, WaitFlags, refuse_rollout_flags, update_labels,
};
use super::parsers::{self, ShellWords};
use super::service::{MAX_CONCURRENT_ZERO, REPLICAS_WITH_GLOBAL};

/// docker's refusal of `update --rollback` with anything but `-d`/`-q`.
pub const ROLLBACK_WITH_OTHER_FLAGS: &str = "other flags may not be combined with --rollback";

/// `shoal service update [OPTIONS] SERVICE`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct UpdateArgs {
    /// Service image tag
    #[arg(long, value_name = "IMAGE", value_parser = parsers::non_empty)]
    pub image: Option<String>,
    /// Service command args, replacing the current ones (split like a shell: quotes group words)
    #[arg(id = "args", long = "args", value_name = "ARGS", value_parser = parsers::shell_words, allow_hyphen_values = true)]
    pub args: Option<ShellWords>,
    /// Number of tasks (replicated mode), or of completions (replicated-job mode)
    #[arg(long, value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run at once (replicated-job mode only)
    #[arg(long, value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub max_concurrent: Option<u64>,
    /// Force update even if no changes require it (replaces every task)
    #[arg(long)]
    pub force: bool,
    /// Roll back to the previous specification (only -d, -q and --timeout may be combined with it)
    #[arg(long)]
    pub rollback: bool,
    /// Change nothing: print what the update would do (spec changes, out-of-date tasks and why,
    /// the batches, a duration estimate, warnings)
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: text (the default) or json
    #[arg(id = "format", long = "format", value_enum, requires = "dry_run")]
    pub plan_format: Option<super::InfoFormat>,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Why this change is made, kept with the revision it makes (default: this command line)
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// The id of the rollout this starts (1-64 letters, digits, '.', '_', '-'), for automation to
    /// match; default: <service>-<revision>
    #[arg(long, value_name = "ID", value_parser = parsers::rollout_id)]
    pub rollout_id: Option<String>,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
    /// Add or update a service label, key=value (repeatable)
    #[arg(id = "label-add", long = "label-add", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label by key (repeatable)
    #[arg(id = "label-rm", long = "label-rm", value_name = "KEY", value_parser = parsers::non_empty)]
    pub label_rm: Vec<String>,
    /// Service id, name or id prefix
    // Before the flattened groups, so that it is listed under "Arguments" (see CreateArgs).
    #[arg(value_name = "SERVICE")]
    pub service: String,

    #[command(flatten)]
    pub container: ContainerUpdateFlags,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub placement: PlacementUpdateFlags,
    #[command(flatten)]
    pub restart: RestartFlags,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub update: UpdateFlags,
    #[command(flatten)]
    pub rollback_config: RollbackFlags,
    #[command(flatten)]
    pub endpoint: EndpointUpdateFlags,
}

impl UpdateArgs {
    /// Whether nothing but `--rollback`, `-d` and `-q` was given.
    fn only_rollback_flags(&self) -> bool {
        let bare = UpdateArgs {
            service: self.service.clone(),
            rollback: self.rollback,
            detach: self.detach,
            quiet: self.quiet,
            change_cause: self.change_cause.clone(),
            rollout_id: self.rollout_id.clone(),
            // --with-registry-auth does nothing, and scripts pass it to every update.
            wait: self.wait.clone(),
            ..UpdateArgs::default()
        };
        *self == bare
    }

    /// Flag combinations clap cannot express; reported as usage errors (exit code 2).
    pub fn check_usage(&self) -> Result<(), String> {
        if self.rollback && !self.only_rollback_flags() {
            return Err(ROLLBACK_WITH_OTHER_FLAGS.to_string());
        }
        if self.max_concurrent == Some(0) {
            return Err(MAX_CONCURRENT_ZERO.to_string());
        }
        self.update.delta().check("update")?;
        self.rollback_config.delta().check("rollback")?;
        Ok(())
    }

    /// Changes `spec` (a copy of the service's current spec) where a flag was given. The caller
    /// validates the result. Refuses `--replicas` on a global service, `--max-concurrent` on
    /// anything but a replicated job, and `--update-*` / `--rollback-*` on a job.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), String> {
        self.check_usage()?;
        // Refusals first: a refused update leaves `spec` as it was.
        let mode = spec.mode.as_str();
        if let Some(n) = self.max_concurrent
            && !matches!(spec.mode, ServiceMode::ReplicatedJob { .. })
        {
            return Err(format!(
                "--max-concurrent {n}: can only be used with a replicated-job service (this one is {mode})"
            ));
        }
        if spec.mode.is_job() {
            refuse_rollout_flags(&self.update, &self.rollback_config, &format!("a {mode} service"))?;
        }
        if let Some(n) = self.replicas {
            match &mut spec.mode {
                ServiceMode::Replicated { replicas } => *replicas = n,
                // Docker: a replicated job's replicas are its completions.
                ServiceMode::ReplicatedJob { total_completions, .. } => *total_completions = n,
                ServiceMode::Global | ServiceMode::GlobalJob => return Err(REPLICAS_WITH_GLOBAL.to_string()),
            }
        }
        if let (Some(n), ServiceMode::ReplicatedJob { max_concurrent, .. }) = (self.max_concurrent, &mut spec.mode) {
            *max_concurrent = n;
        }
        update_labels(&mut spec.labels, &self.label_add, &self.label_rm);
        let task = &mut spec.task;
        if let Some(image) = &self.image {
            task.container.image = image.clone();
        }
        if let Some(args) = &self.args {
            task.container.args = args.0.clone();
        }
        self.container.apply(&mut task.container);
        self.container.apply_networks(&mut task.networks);
        self.health.apply(&mut task.container.healthcheck);
        self.resources.apply(&mut task.resources);
        self.placement.apply(&mut task.placement);
        self.restart.apply(&mut task.restart_policy);
        if self.force {
            task.force_update = task.force_update.wrapping_add(1);
        }
        self.update.apply(&mut spec.update_config);
        self.rollback_config.apply(&mut spec.rollback_config);
        self.endpoint.apply(&mut spec.endpoint);
        Ok(())
    }
}

/// `shoal service rollback [-d] [-q] SERVICE`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct RollbackArgs {
    /// Exit immediately instead of waiting for the rollback to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Why this change is made, kept with the revision it makes (default: this command line)
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// The id of the rollout this starts (1-64 letters, digits, '.', '_', '-'), for automation to
    /// match; default: <service>-<revision>
    #[arg(long, value_name = "ID", value_parser = parsers::rollout_id)]
    pub rollout_id: Option<String>,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Roll back to this kept revision (see `shoal rollout history`) instead of the previous spec
    #[arg(long, value_name = "N", value_parser = parsers::positive)]
    pub to_revision: Option<u64>,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// `shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ScaleArgs {
    /// Exit immediately instead of waiting for the services to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Why this change is made, kept with the revision it makes (default: this command line)
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// Service (id, name or id prefix) and its new number of replicas
    #[arg(value_name = "SERVICE=REPLICAS", required = true, num_args = 1.., value_parser = parsers::scale_spec)]
    pub scales: Vec<(String, u64)>,
}
