//! `shoal service ps` / `shoal node ps` arguments and their `--filter`s.

use clap::Args;
use shoal_types::{Node, Task, TaskState};

use super::format::{self, ListOutput};

/// One `--filter KEY=VALUE` of `ps`. Filters with the same key are alternatives (any may match);
/// filters with different keys must all match, as in docker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFilter {
    /// A task id or id prefix.
    Id(String),
    /// A task name (`web.3`, `web.<node id>`), a service name, or a task name followed by a task
    /// id prefix (`web.3.k2j4`).
    Name(String),
    /// A node id, id prefix or hostname.
    Node(String),
    /// A desired state (docker offers running, shutdown and accepted; any task state is accepted).
    DesiredState(TaskState),
}

pub const TASK_FILTER_KEYS: &str = "id, name, node, desired-state";

/// Parses `KEY=VALUE`.
pub fn task_filter(text: &str) -> Result<TaskFilter, String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE with KEY one of {TASK_FILTER_KEYS}"))?;
    let value = value.trim();
    if value.is_empty() {
        return Err("the filter value must not be empty".to_string());
    }
    match key.trim().to_ascii_lowercase().as_str() {
        "id" => Ok(TaskFilter::Id(value.to_string())),
        "name" => Ok(TaskFilter::Name(value.to_string())),
        "node" => Ok(TaskFilter::Node(value.to_string())),
        "desired-state" => TaskState::parse(value).map(TaskFilter::DesiredState).ok_or_else(|| {
            let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            format!("invalid desired-state {value:?} (allowed: {})", states.join(", "))
        }),
        other => Err(format!("unknown filter key {other:?} (allowed: {TASK_FILTER_KEYS})")),
    }
}

impl TaskFilter {
    fn key(&self) -> &'static str {
        match self {
            TaskFilter::Id(_) => "id",
            TaskFilter::Name(_) => "name",
            TaskFilter::Node(_) => "node",
            TaskFilter::DesiredState(_) => "desired-state",
        }
    }

    /// Whether `task` (shown as `name`, of the service called `service_name`) passes this filter.
    pub fn matches(&self, task: &Task, name: &str, service_name: &str, nodes: &[Node]) -> bool {
        match self {
            TaskFilter::Id(id) => task.id.starts_with(id.as_str()),
            TaskFilter::Name(wanted) => {
                wanted == name
                    || wanted == service_name
                    || (wanted.len() > name.len() + 1 && format!("{name}.{}", task.id).starts_with(wanted.as_str()))
            }
            TaskFilter::Node(wanted) => {
                if task.node_id.is_empty() {
                    return false;
                }
                if task.node_id == *wanted || task.node_id.starts_with(wanted.as_str()) {
                    return true;
                }
                nodes.iter().any(|n| n.id == task.node_id && n.description.hostname == *wanted)
            }
            TaskFilter::DesiredState(state) => task.desired_state == *state,
        }
    }
}

/// Whether `task` passes every filter key (any filter of a key may match).
pub fn task_passes(filters: &[TaskFilter], task: &Task, name: &str, service_name: &str, nodes: &[Node]) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(TaskFilter::key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .all(|key| filters.iter().filter(|f| f.key() == key).any(|f| f.matches(task, name, service_name, nodes)))
}

/// What `service ps` and `node ps` share.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct TaskListFlags {
    /// Filter output: id=ID, name=NAME, node=NODE, desired-state=STATE (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = task_filter)]
    pub filters: Vec<TaskFilter>,
    /// Output format: table, json (a pretty-printed JSON array), or a template such as
    /// '{{.Name}}\t{{.CurrentState}}' ('table {{…}}' adds a header); fields: .ID, .Name, .Image,
    /// .Node, .DesiredState, .CurrentState, .Error, .Ports
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = format::FormatParser(format::TASK_FIELDS))]
    pub format: ListOutput,
    /// Do not truncate output (full ids, whole error messages)
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map node ids to hostnames
    #[arg(long)]
    pub no_resolve: bool,
    /// Only display task IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `shoal service ps [OPTIONS] SERVICE [SERVICE...]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct PsArgs {
    #[command(flatten)]
    pub list: TaskListFlags,
    /// Service id, name or id prefix
    #[arg(value_name = "SERVICE", required = true, num_args = 1..)]
    pub services: Vec<String>,
}

/// `shoal node ps [OPTIONS] NODE [NODE...]`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct NodePsArgs {
    #[command(flatten)]
    pub list: TaskListFlags,
    /// Node id, hostname or id prefix
    #[arg(value_name = "NODE", required = true, num_args = 1..)]
    pub nodes: Vec<String>,
}
