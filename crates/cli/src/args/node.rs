//! `shoal node …` and `shoal cluster …` arguments.

use clap::{Args, Subcommand};
use shoal_types::{Availability, NodeSpec};

use super::filters::{self, NodeFilter};
use super::flags::update_labels;
use super::format::{self, ListOutput};
use super::parsers;
use super::tasks::NodePsArgs;
use super::{InfoFormat, InspectFormat};

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum NodeCommand {
    /// List nodes in the cluster
    #[command(visible_alias = "list")]
    Ls(NodeLsArgs),
    /// Display detailed information on one or more nodes
    Inspect(NodeInspectArgs),
    /// Demote one or more managers
    Demote(NodeDemoteArgs),
    /// Remove one or more nodes from the cluster
    #[command(visible_alias = "remove")]
    Rm(NodeRmArgs),
    /// Update a node's availability or labels
    Update(NodeUpdateArgs),
    /// List tasks running on one or more nodes
    Ps(NodePsArgs),
}

/// `shoal node ls [-q] [--filter KEY=VALUE]... [--format FORMAT]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodeLsArgs {
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter output: id=ID, name=HOSTNAME (prefixes), label=KEY[=VALUE] (engine labels),
    /// node.label=KEY[=VALUE], role=manager|worker, membership=accepted|pending (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = filters::node_filter)]
    pub filters: Vec<NodeFilter>,
    /// Output format: table, json (a pretty-printed JSON array), or a template such as
    /// '{{.Hostname}}\t{{.Status}}' ('table {{…}}' adds a header); fields: .ID, .Hostname,
    /// .Status, .Availability, .ManagerStatus, .Address
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = format::FormatParser(format::NODE_FIELDS))]
    pub format: ListOutput,
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

/// `shoal node update [--availability A] [--label-add k=v]... [--label-rm k]... NODE`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodeUpdateArgs {
    /// Availability of the node
    #[arg(long, value_name = "AVAILABILITY", value_parser = parsers::availability())]
    pub availability: Option<Availability>,
    /// Add or update a node label, key=value (repeatable)
    #[arg(long = "label-add", value_name = "KEY=VALUE", value_parser = parsers::key_value)]
    pub label_add: Vec<(String, String)>,
    /// Remove a node label by key; the key must exist (repeatable)
    #[arg(long = "label-rm", value_name = "KEY", value_parser = parsers::non_empty)]
    pub label_rm: Vec<String>,
    /// Node id, hostname or id prefix
    #[arg(value_name = "NODE")]
    pub node: String,
}

impl NodeUpdateArgs {
    /// Changes `spec` (a copy of the node's current spec) where a flag was given. As docker,
    /// removing a label the node does not have is an error.
    pub fn apply(&self, spec: &mut NodeSpec) -> Result<(), String> {
        if let Some(availability) = self.availability {
            spec.availability = availability;
        }
        for key in &self.label_rm {
            let added = self.label_add.iter().any(|(k, _)| k == key);
            if !added && !spec.labels.contains_key(key) {
                return Err(format!("key {key} doesn't exist in node's labels"));
            }
        }
        update_labels(&mut spec.labels, &self.label_add, &self.label_rm);
        Ok(())
    }
}

#[derive(Subcommand, Clone, Debug, PartialEq)]
pub enum ClusterCommand {
    /// Show the cluster's identity, leader, raft state and object counts
    Info(ClusterInfoArgs),
    /// Print (or rotate) the token a new worker or manager joins with
    JoinToken(JoinTokenArgs),
    /// Change the cluster's settings
    Update(ClusterUpdateArgs),
    /// Print the key autolocked managers start with (shoal-manager --unlock-key)
    UnlockKey(UnlockKeyArgs),
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct UnlockKeyArgs {
    /// Only display the key
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
#[command(group = clap::ArgGroup::new("setting").required(true).multiple(true))]
pub struct ClusterUpdateArgs {
    /// Most replicas one service may have (default 100000, at most 1000000)
    #[arg(long, value_name = "N", group = "setting", value_parser = crate::args::parsers::positive)]
    pub max_replicas: Option<u64>,
    /// Terminal tasks kept per slot (default 5)
    #[arg(long, value_name = "N", group = "setting", value_parser = crate::args::parsers::positive)]
    pub task_history_limit: Option<u64>,
    /// Revisions kept per service, the current one included (default 10, at most 100)
    #[arg(long, value_name = "N", group = "setting", value_parser = crate::args::parsers::revision_history_limit, allow_hyphen_values = true)]
    pub revision_history_limit: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRole {
    Worker,
    Manager,
}

impl JoinRole {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRole::Worker => "worker",
            JoinRole::Manager => "manager",
        }
    }
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct JoinTokenArgs {
    /// Which token: worker (for shoal-agent) or manager (for shoal-manager)
    #[arg(value_enum)]
    pub role: JoinRole,
    /// Replace the token: nodes that joined keep working, the old token no longer joins
    #[arg(long)]
    pub rotate: bool,
    /// Only print the token
    #[arg(short, long)]
    pub quiet: bool,
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
