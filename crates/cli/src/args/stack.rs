//! `shoal stack …` arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::ListArgs;
use super::flags::WaitFlags;
use super::format::{self, ListOutput};
use super::parsers;
use super::tasks::TaskListFlags;

/// The stack name `stack config` uses when none is given (it only shows in labels, which the
/// normalised file does not print).
pub const DEFAULT_CONFIG_STACK: &str = "stack";

/// What `stack deploy --help` adds after the flags.
pub const DEPLOY_HELP: &str = "\
Services are named <stack>_<service> and labelled com.docker.stack.namespace=<stack>. The whole
file set is loaded and checked first: on any error nothing is created, updated or removed.
Networks the files name (and <stack>_default, for services that name none) are created with
the stack; the services of one network reach each other by name (db, or app_db).
Then each service is created if it does not exist, updated (with its update_config) if its spec
changed, and left alone if not (\"Service app_web is unchanged\"); --prune removes the stack's
services that are no longer in the files.

Unlike docker (which detaches by default), shoal waits for every created or updated service to
converge unless -d is given.

Exit status:
  0    deployed (and, without -d, every created or updated service converged)
  1    bad stack file, name conflict, unreachable manager or any other error; a stack file
       error changes nothing
  2    usage error
  3    an update paused after a task failure (\"Error: app_web: service update paused: ...\")
  4    an update failed and was rolled back automatically
  5    a rollback paused after a task failure
  130  interrupted (Ctrl-C) while waiting; the updates continue in the cluster
When several services fail, each is reported and the first failure's code is used.";

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing stack
    #[command(visible_alias = "up", after_long_help = DEPLOY_HELP)]
    Deploy(StackDeployArgs),
    /// List stacks
    #[command(visible_alias = "list")]
    Ls(StackLsArgs),
    /// List the services in the stack
    Services(StackServicesArgs),
    /// List the tasks in the stack
    Ps(StackPsArgs),
    /// Remove one or more stacks
    #[command(visible_aliases = ["remove", "down"])]
    Rm(StackRmArgs),
    /// Print the stack file as it would be deployed: merged, interpolated and normalised
    Config(StackConfigArgs),
    /// List the stack's revisions: one per deploy or rollback
    History(StackHistoryArgs),
    /// Roll every service of the stack back to its spec in an earlier stack revision
    Rollback(StackRollbackArgs),
}

/// `shoal stack history STACK`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackHistoryArgs {
    /// Stack name
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// `shoal stack rollback [--to-revision N] [--prune] [-d] STACK`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackRollbackArgs {
    /// The stack revision to go back to (default: the one before the newest)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub to_revision: Option<u64>,
    /// Also remove the stack's services the revision did not have
    #[arg(long)]
    pub prune: bool,
    /// Exit immediately instead of waiting for the stack rollout to end
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Why this change is made, kept with the revision it makes (default: "rollback to stack
    /// revision N")
    #[arg(long, value_name = "TEXT", value_parser = parsers::change_cause)]
    pub change_cause: Option<String>,
    /// Suppress progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
    /// Stack name
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// `shoal stack deploy -c FILE [-c FILE…] [--prune] [-d] [-q] STACK`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackDeployArgs {
    /// Path to a stack file, or - for standard input; repeat to merge several (later files
    /// override earlier ones)
    #[arg(short = 'c', long = "compose-file", value_name = "FILE", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Remove the stack's services that are no longer in the stack files
    #[arg(long)]
    pub prune: bool,
    /// Roll the services this deploy changes out as one group: if any of them fails (or the
    /// group has not completed within --timeout, default 5m), every one of them is rolled back
    /// to its spec before the deploy and the services it created are removed. Services with
    /// depends_on roll out after those they depend on. Also `x-atomic: true` in the file
    #[arg(long)]
    pub atomic: bool,
    /// Change nothing: print what the deploy would create, remove and update (with each update's
    /// plan: out-of-date tasks, batches, estimate, warnings)
    #[arg(long)]
    pub dry_run: bool,
    /// Exit immediately instead of waiting for the created or updated services to converge
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
    /// Stack name
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// `shoal stack ls`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackLsArgs {
    /// Output format: table, json (a pretty-printed JSON array of {name, services}), or a
    /// template such as '{{.Name}}: {{.Services}}' ('table {{…}}' adds a header); fields: .Name,
    /// .Services
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = format::FormatParser(format::STACK_FIELDS))]
    pub format: ListOutput,
}

/// `shoal stack services [-q] [--filter KEY=VALUE]... [--format FORMAT] STACK`: `service ls`'s
/// flags, for the stack's services.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackServicesArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Stack name
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// `shoal stack ps [OPTIONS] STACK`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackPsArgs {
    #[command(flatten)]
    pub list: TaskListFlags,
    /// Stack name
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// `shoal stack rm STACK [STACK…]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackRmArgs {
    /// Stack name
    #[arg(value_name = "STACK", required = true, num_args = 1..)]
    pub stacks: Vec<String>,
}

/// `shoal stack config -c FILE [-c FILE…] [STACK]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct StackConfigArgs {
    /// Path to a stack file; repeat to merge several (later files override earlier ones)
    #[arg(short = 'c', long = "compose-file", value_name = "FILE", required = true)]
    pub compose_files: Vec<PathBuf>,
    /// Stack name (checked like deploy's; it does not change the output)
    #[arg(value_name = "STACK")]
    pub stack: Option<String>,
}
