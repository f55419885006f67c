//! `shoal service …` arguments and the pure flag → `ServiceSpec` conversion.

use clap::{Args, Subcommand};
use shoal_types::{ServiceMode, ServiceSpec};

use super::InspectFormat;
use super::filters::{self, ServiceFilter};
use super::flags::{
    ContainerFlags, EndpointFlags, HealthFlags, PlacementFlags, ResourceFlags, RestartFlags, RollbackFlags,
    UpdateFlags, WaitFlags, refuse_rollout_flags,
};
use super::format::{self, ListOutput};
use super::parsers::{self, ModeKind};
use super::tasks::PsArgs;
use super::update::{RollbackArgs, ScaleArgs, UpdateArgs};
use crate::names;

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum ServiceCommand {
    /// Create a new service
    #[command(override_usage = "shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]")]
    Create(Box<CreateArgs>),
    /// List services
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Fetch the logs of a service or task
    Logs(super::logs::LogsArgs),
    /// Scale one or multiple replicated services
    #[command(override_usage = "shoal service scale [OPTIONS] SERVICE=REPLICAS [SERVICE=REPLICAS...]")]
    Scale(ScaleArgs),
    /// Update a service
    #[command(after_long_help = crate::error::EXIT_CODES_HELP)]
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration
    #[command(after_long_help = crate::error::EXIT_CODES_HELP)]
    Rollback(RollbackArgs),
}

/// `shoal service create [OPTIONS] IMAGE [COMMAND] [ARG...]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct CreateArgs {
    /// Service name [default: a generated adjective_surname]
    #[arg(long, value_name = "NAME", value_parser = parsers::service_name)]
    pub name: Option<String>,
    /// Service mode [default: replicated]
    #[arg(long, value_name = "MODE", value_parser = parsers::mode())]
    pub mode: Option<ModeKind>,
    /// Number of tasks (replicated mode), or of completions (replicated-job mode) [default: 1]
    #[arg(long, value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run at once (replicated-job mode only) [default: --replicas]
    #[arg(long, value_name = "N", value_parser = parsers::count, allow_hyphen_values = true)]
    pub max_concurrent: Option<u64>,
    /// Service labels, key=value (repeatable)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub labels: Vec<(String, String)>,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Why this change is made, kept with the revision it makes (default: this command line)
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
    // Before the flattened groups: each sets the help heading of what follows it, and IMAGE
    // belongs under "Arguments", not under the last group's heading.
    /// The image, then optionally the command and its arguments (everything after IMAGE is passed on)
    #[arg(
        value_name = "IMAGE",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub image_and_args: Vec<String>,

    #[command(flatten)]
    pub container: ContainerFlags,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub placement: PlacementFlags,
    #[command(flatten)]
    pub restart: RestartFlags,
    #[command(flatten)]
    pub health: HealthFlags,
    #[command(flatten)]
    pub update: UpdateFlags,
    #[command(flatten)]
    pub rollback: RollbackFlags,
    #[command(flatten)]
    pub endpoint: EndpointFlags,
}

pub const REPLICAS_WITH_GLOBAL: &str = "replicas can only be used with replicated mode";

/// `--max-concurrent 0` (create and update): a job runs at least one task at once.
pub const MAX_CONCURRENT_ZERO: &str = "invalid value '0' for '--max-concurrent <N>': 0 is below the minimum 1";

impl CreateArgs {
    /// Flag combinations clap cannot express; reported as usage errors (exit code 2).
    pub fn check_usage(&self) -> Result<(), String> {
        if let Some(flag) = self.unknown_flag() {
            return Err(format!("unexpected argument '{flag}' found"));
        }
        if matches!(self.mode, Some(ModeKind::Global | ModeKind::GlobalJob)) && self.replicas.is_some() {
            return Err(REPLICAS_WITH_GLOBAL.to_string());
        }
        if let Some(n) = self.max_concurrent
            && self.mode != Some(ModeKind::ReplicatedJob)
        {
            return Err(format!("--max-concurrent {n}: can only be used with --mode replicated-job"));
        }
        if self.max_concurrent == Some(0) {
            return Err(MAX_CONCURRENT_ZERO.to_string());
        }
        self.update.delta().check("update")?;
        self.rollback.delta().check("rollback")?;
        let job_mode = match self.mode {
            Some(ModeKind::ReplicatedJob) => Some("replicated-job"),
            Some(ModeKind::GlobalJob) => Some("global-job"),
            _ => None,
        };
        if let Some(mode) = job_mode {
            refuse_rollout_flags(&self.update, &self.rollback, &format!("--mode {mode}"))?;
        }
        Ok(())
    }

    /// Everything from the first positional on is the image and its command (docker does not
    /// intersperse flags there), so a mistyped flag before the image would be taken for the
    /// image. No image reference starts with `-`: report it as the unknown flag it is.
    pub fn unknown_flag(&self) -> Option<&str> {
        self.image_and_args.first().map(String::as_str).filter(|first| first.starts_with('-'))
    }

    /// The spec to create; a generated name is used when `--name` was not given.
    pub fn to_spec(&self) -> Result<ServiceSpec, String> {
        let name = self.name.clone().unwrap_or_else(names::generate);
        self.to_spec_named(name)
    }

    /// The spec to create with the given name: Swarm's defaults, changed only where a flag was given.
    pub fn to_spec_named(&self, name: String) -> Result<ServiceSpec, String> {
        self.check_usage()?;
        let (image, args) = self.image_and_args.split_first().ok_or_else(|| "an image is required".to_string())?;
        let mut spec = ServiceSpec::new(name, image.clone());
        spec.mode = match self.mode {
            Some(ModeKind::Global) => ServiceMode::Global,
            Some(ModeKind::GlobalJob) => ServiceMode::GlobalJob,
            // Docker's defaults: max concurrent = replicas; completions = max concurrent; else 1.
            Some(ModeKind::ReplicatedJob) => ServiceMode::ReplicatedJob {
                total_completions: self.replicas.or(self.max_concurrent).unwrap_or(1),
                max_concurrent: self.max_concurrent.or(self.replicas).unwrap_or(1),
            },
            Some(ModeKind::Replicated) | None => match self.replicas {
                Some(replicas) => ServiceMode::Replicated { replicas },
                None => ServiceMode::default(),
            },
        };
        for (key, value) in &self.labels {
            spec.labels.insert(key.clone(), value.clone());
        }
        let task = &mut spec.task;
        task.container.args = args.to_vec();
        self.container.apply(&mut task.container);
        task.networks = self.container.networks();
        self.health.apply(&mut task.container.healthcheck);
        self.resources.apply(&mut task.resources);
        self.placement.apply(&mut task.placement);
        if spec.mode.is_job() {
            // Docker: a job's tasks are restarted only when they fail.
            task.restart_policy.condition = shoal_types::RestartCondition::OnFailure;
        }
        self.restart.apply(&mut task.restart_policy);
        self.update.apply(&mut spec.update_config);
        self.rollback.apply(&mut spec.rollback_config);
        self.endpoint.apply(&mut spec.endpoint);
        Ok(spec)
    }
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ListArgs {
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter output: id=ID, name=NAME (prefixes), label=KEY[=VALUE], mode=MODE (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = filters::service_filter)]
    pub filters: Vec<ServiceFilter>,
    /// Output format: table, json (a pretty-printed JSON array), or a template such as
    /// '{{.Name}}\t{{.Replicas}}' ('table {{…}}' adds a header); fields: .ID, .Name, .Mode,
    /// .Replicas, .Image, .Ports
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = format::FormatParser(format::SERVICE_FIELDS))]
    pub format: ListOutput,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long, conflicts_with = "format")]
    pub pretty: bool,
    /// Output format (a pretty-printed JSON array, the default)
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub format: Option<InspectFormat>,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE", required = true, num_args = 1..)]
    pub services: Vec<String>,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct RmArgs {
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE", required = true, num_args = 1..)]
    pub services: Vec<String>,
}
