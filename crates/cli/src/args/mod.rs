//! The command line: clap definitions and the pure conversions from flags to specs.

pub mod data;
pub mod events;
pub mod filters;
pub mod flags;
pub mod format;
pub mod logs;
pub mod node;
pub mod parsers;
pub mod publish;
pub mod rollout;
pub mod route;
pub mod service;
pub mod stack;
pub mod tasks;
pub mod update;

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

pub use events::{EventFilter, EventFormat, EventSelection, EventsArgs};
pub use filters::{NodeFilter, ServiceFilter};
pub use format::ListOutput;
pub use logs::LogsArgs;
pub use node::{
    ClusterCommand, ClusterInfoArgs, ClusterUpdateArgs, JoinRole, JoinTokenArgs, NodeCommand, NodeDemoteArgs,
    NodeInspectArgs, NodeLsArgs, NodeRmArgs, NodeUpdateArgs,
};
pub use rollout::{
    RolloutCommand, RolloutHistoryArgs, RolloutInspectArgs, RolloutLsArgs, RolloutServiceArgs, RolloutStatusArgs,
    RolloutUndoArgs,
};
pub use service::{CreateArgs, InspectArgs, ListArgs, RmArgs, ServiceCommand};
pub use stack::{
    StackCommand, StackConfigArgs, StackDeployArgs, StackHistoryArgs, StackLsArgs, StackPsArgs, StackRmArgs,
    StackRollbackArgs, StackServicesArgs,
};
pub use tasks::{NodePsArgs, PsArgs, TaskFilter, TaskListFlags};
pub use update::{RollbackArgs, ScaleArgs, UpdateArgs};

/// Where the CLI looks for a manager when neither `--host` nor `SHOAL_HOST` is given.
pub const DEFAULT_HOST: &str = "127.0.0.1:4242";

/// The help heading of the flags every command takes, so that a command's help lists its own
/// options apart from them.
pub const GLOBAL_OPTIONS: &str = "Global options";

/// shoal: a Docker-Swarm-style container orchestrator.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// Manager address (host:port, or a URL such as http://host:port)
    #[arg(short = 'H', long, global = true, help_heading = GLOBAL_OPTIONS, env = "SHOAL_HOST", default_value = DEFAULT_HOST, value_name = "ADDR")]
    pub host: String,
    /// Directory with the client certificate bundle (ca.pem, cert.pem, key.pem) [default: ~/.shoal/tls]
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "SHOAL_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum Command {
    /// Manage services
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage nodes
    #[command(subcommand)]
    Node(NodeCommand),
    /// Show cluster-wide information
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage stacks (services deployed together from compose-like stack files)
    #[command(subcommand)]
    Stack(StackCommand),
    /// See a service's revisions and roll back to any of them
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Manage secrets (values services get as files in /run/secrets; never shown)
    #[command(subcommand)]
    Secret(data::DataCommand),
    /// Manage configs (values services get as files)
    #[command(subcommand)]
    Config(data::DataCommand),
    /// Manage networks (services on one network reach each other by name)
    #[command(subcommand)]
    Network(data::NetworkCommand),
    /// Manage routes (a published port over the services a label selector matches)
    #[command(subcommand)]
    Route(route::RouteCommand),
    /// Stream changes to services, tasks, nodes and the cluster until interrupted
    Events(EventsArgs),
    /// Print a shell completion script (e.g. shoal completion bash > /etc/bash_completion.d/shoal)
    Completion(CompletionArgs),
    /// Write man pages for shoal and each of its commands into a directory
    Man(ManArgs),
}

/// `shoal completion SHELL`.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: CompletionShell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `shoal man DIR`.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InspectFormat {
    #[default]
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InfoFormat {
    #[default]
    Text,
    Json,
}

/// Said once on stderr when `--with-registry-auth` is given: scripts written for docker pass it
/// to every create, update and deploy, so it is accepted, but it cannot do anything here.
pub const REGISTRY_AUTH_NOTE: &str =
    "note: --with-registry-auth has no effect: shoal never pulls images (each node uses the images its engine has)";

impl Cli {
    /// Whether `--with-registry-auth` was given (it is accepted and ignored).
    pub fn with_registry_auth(&self) -> bool {
        match &self.command {
            Command::Service(ServiceCommand::Create(args)) => args.wait.with_registry_auth,
            Command::Service(ServiceCommand::Update(args)) => args.wait.with_registry_auth,
            Command::Stack(StackCommand::Deploy(args)) => args.wait.with_registry_auth,
            _ => false,
        }
    }

    /// Parses the arguments and checks flag combinations clap cannot express. Every refusal is a
    /// clap error (usage, exit code 2); `--help` and `--version` are clap "errors" too (exit 0).
    pub fn parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        match &cli.command {
            Command::Service(ServiceCommand::Create(create)) => {
                if let Err(message) = create.check_usage() {
                    let kind = if create.unknown_flag().is_some() {
                        ErrorKind::UnknownArgument
                    } else {
                        ErrorKind::ArgumentConflict
                    };
                    return Err(usage_error(&["service", "create"], kind, message));
                }
            }
            Command::Service(ServiceCommand::Update(update)) => {
                if let Err(message) = update.check_usage() {
                    return Err(usage_error(&["service", "update"], ErrorKind::ArgumentConflict, message));
                }
            }
            Command::Events(events) => {
                if let Err(message) = events.check_usage() {
                    return Err(usage_error(&["events"], ErrorKind::ArgumentConflict, message));
                }
            }
            _ => {}
        }
        Ok(cli)
    }
}

/// A clap error rendered with the usage of the subcommand at `path`.
pub fn usage_error(path: &[&str], kind: ErrorKind, message: impl std::fmt::Display) -> clap::Error {
    let mut root = Cli::command();
    root.build();
    error_at(&mut root, path, kind, message)
}

fn error_at(cmd: &mut clap::Command, path: &[&str], kind: ErrorKind, message: impl std::fmt::Display) -> clap::Error {
    if let Some((first, rest)) = path.split_first()
        && let Some(sub) = cmd.find_subcommand_mut(first)
    {
        return error_at(sub, rest, kind, message);
    }
    cmd.error(kind, message)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod list_tests;
