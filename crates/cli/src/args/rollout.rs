//! `shoal rollout`: a service's revision history and rollbacks (Kubernetes' `kubectl rollout`).

use clap::{Args, Subcommand};

use super::InfoFormat;
use super::parsers;

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum RolloutCommand {
    /// List a service's kept revisions, or show one with its difference from the one before
    History(RolloutHistoryArgs),
    /// Roll a service back to its previous spec, or to a kept revision
    Undo(RolloutUndoArgs),
    /// Pause a service's update or rollback in progress: no new slot starts, slots in transition finish
    Pause(RolloutServiceArgs),
    /// Resume a paused update or rollback where it stopped
    Resume(RolloutServiceArgs),
    /// Move a canary update on from a step waiting for approval to its next step
    Approve(RolloutServiceArgs),
    /// Stop and remove the old tasks a rollout kept running (--update-old-tasks keep)
    Finish(RolloutServiceArgs),
    /// Stop an update in progress or paused and roll back to the spec before it
    Abort(RolloutUndoArgs),
    /// Follow a service's update or rollback until it ends (exit 0 completed; as `service update`
    /// when it pauses or rolls back)
    Status(RolloutStatusArgs),
    /// List the kept rollout records (of one service, or of all)
    Ls(RolloutLsArgs),
    /// Show one rollout record with its timeline: a rollout id, or a service (its newest)
    Inspect(RolloutInspectArgs),
}

/// `shoal rollout ls [--format text|json] [SERVICE]`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutLsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
    /// Service id, name or id prefix (default: every service)
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,
}

/// `shoal rollout inspect [--format text|json] ROLLOUT|SERVICE`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutInspectArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
    /// Also write the rollout's timeline as an SVG chart to FILE (slots by batch over time:
    /// old task stopping, new task starting, monitor window, failures, pauses)
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// A rollout id, or a service (id, name or id prefix) for its newest rollout
    #[arg(value_name = "ROLLOUT|SERVICE")]
    pub target: String,
}

/// `shoal rollout status [--timeout D] [-q] SERVICE`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutStatusArgs {
    /// Give up waiting after this long (e.g. 30s, 5m) and exit 1; the rollout goes on
    #[arg(long, value_name = "DURATION", value_parser = parsers::wait_timeout, allow_hyphen_values = true)]
    pub timeout: Option<shoal_types::GoDuration>,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// `shoal rollout pause|resume SERVICE`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutServiceArgs {
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// `shoal rollout history [--revision N] [--format text|json] SERVICE`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutHistoryArgs {
    /// Show this revision: its whole spec and what changed from the one before
    #[arg(long, value_name = "N", value_parser = parsers::positive)]
    pub revision: Option<u64>,
    /// Output format
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// `shoal rollout undo [--to-revision N] SERVICE`.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct RolloutUndoArgs {
    /// Roll back to this kept revision instead of the previous spec
    #[arg(long, value_name = "N", value_parser = parsers::positive)]
    pub to_revision: Option<u64>,
    /// Why this change is made, kept with the revision it makes (default: this command line)
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// The id of the rollout this starts (1-64 letters, digits, '.', '_', '-'), for automation to
    /// match; default: <service>-<revision>
    #[arg(long, value_name = "ID", value_parser = parsers::rollout_id)]
    pub rollout_id: Option<String>,
    /// Exit immediately instead of waiting for the rollback to converge
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE")]
    pub service: String,
}
