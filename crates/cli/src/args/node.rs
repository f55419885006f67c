//! `shoal node …` and `shoal cluster …` arguments.

use clap::{Args, Subcommand};

use super::service::ListArgs;
use super::{InfoFormat, InspectFormat};

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum NodeCommand {
    /// List nodes in the cluster
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more nodes
    Inspect(NodeInspectArgs),
    /// Demote one or more managers
    Demote(NodeDemoteArgs),
    /// Remove one or more nodes from the cluster
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodeInspectArgs {
    /// Print the information in a human friendly format
    #[arg(long, conflicts_with = "format")]
    pub pretty: bool,
    /// Output format (a pretty-printed JSON array, the default)
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub format: Option<InspectFormat>,
    /// Node id, hostname or id prefix
    #[arg(value_name = "NODE", required = true, num_args = 1..)]
    pub nodes: Vec<String>,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodeDemoteArgs {
    /// Node id, hostname or id prefix
    #[arg(value_name = "NODE", required = true, num_args = 1..)]
    pub nodes: Vec<String>,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodeRmArgs {
    /// Force remove a node from the cluster
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Node id, hostname or id prefix
    #[arg(value_name = "NODE", required = true, num_args = 1..)]
    pub nodes: Vec<String>,
}

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum ClusterCommand {
    /// Show the cluster's identity, leader, raft state and object counts
    Info(ClusterInfoArgs),
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct ClusterInfoArgs {
    /// Answer from the contacted manager's own raft status and store instead of the leader's
    /// (possibly stale; shows whether that manager has caught up)
    #[arg(long)]
    pub local: bool,
    /// Output format
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
}
