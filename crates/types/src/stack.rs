//! Stacks as the store keeps them: each `stack deploy` (or `stack rollback`) is one stack
//! revision, written in the same raft entry as every service, route, secret and config it
//! changes; an atomic deploy's revision carries the group rollout of the services it changed.
//!
//! [`plan_deploy`] decides what a deploy does from the services that exist; the CLI runs it for
//! `--dry-run` and the leader runs it again when it writes the deploy, so what is written is
//! planned against the state it is written on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::object::{Service, Timestamp};
use crate::spec::ServiceSpec;
use crate::traffic::RouteSpec;

/// The label docker puts on every object of a stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Stack revisions kept per stack (the newest).
pub const STACK_REVISIONS_KEPT: usize = 10;
/// Services one stack may define: a deploy is one raft entry.
pub const MAX_STACK_SERVICES: usize = 200;

/// The stack a service belongs to (its namespace label), if any.
pub fn namespace(service: &Service) -> Option<&str> {
    service.spec.labels.get(NAMESPACE_LABEL).map(String::as_str)
}

/// A secret or config a deploy creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewData {
    pub kind: crate::DataKind,
    pub spec: crate::DataSpec,
}

/// Everything `stack deploy` asks the leader to write, in one raft entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackDeploy {
    pub stack: String,
    /// Every service of the files, with its full name (`<stack>_<service>`).
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Secrets and configs to create (those that exist already are left as they are).
    #[serde(default)]
    pub data: Vec<NewData>,
    /// Remove the stack's services and routes the files no longer define.
    #[serde(default)]
    pub prune: bool,
    /// The SHA-256 of the normalised files, recorded with the revision.
    #[serde(default)]
    pub digest: String,
    /// `--atomic`: the services this deploy changes roll out as one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub atomic: Option<AtomicDeploy>,
}

/// How an atomic deploy's group rolls out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicDeploy {
    /// The group must have completed this long after the deploy, or it is rolled back (0: no
    /// limit).
    pub timeout_ms: u64,
    /// Per service (full name), the services of the stack (full names) it waits for.
    #[serde(default)]
    pub depends_on: BTreeMap<String, Vec<String>>,
}

/// The group rollout a stack revision starts, as its entry records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlan {
    /// A failure of any member rolls every member back (`--atomic`).
    pub atomic: bool,
    #[serde(default)]
    pub timeout_ms: u64,
    #[serde(default)]
    pub depends_on: BTreeMap<String, Vec<String>>,
}

/// What a stack revision did to one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Created,
    Updated,
    Unchanged,
}

/// One service of a stack revision: the revision of it the deploy set, and its spec (so a stack
/// rollback can bring back a service that was removed since).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackService {
    pub service_id: String,
    pub name: String,
    pub revision: u64,
    pub change: MemberChange,
    /// Left out of listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Arc<ServiceSpec>>,
}

/// One deploy (or rollback) of a stack: `shoal stack history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackRevision {
    pub stack: String,
    pub number: u64,
    pub created_at: Timestamp,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub change_cause: String,
    #[serde(default)]
    pub digest: String,
    /// Every service of the stack after this revision, sorted by name.
    pub services: Vec<StackService>,
    /// The services it removed (`--prune`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The group rollout of an atomic deploy or a stack rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<StackRollout>,
}

impl StackRevision {
    /// The services it created, updated or removed, by name.
    pub fn changed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.change != MemberChange::Unchanged)
            .map(|s| s.name.clone())
            .chain(self.removed.iter().map(|n| format!("-{n}")))
            .collect();
        names.sort();
        names
    }

    /// A copy without the services' specs (what a listing sends).
    pub fn without_specs(&self) -> StackRevision {
        let mut copy = self.clone();
        for service in &mut copy.services {
            service.spec = None;
        }
        copy
    }
}

/// Where a group rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    Updating,
    Completed,
    RollbackStarted,
    RollbackCompleted,
    /// A group that does not roll back (a stack rollback) in which a member failed.
    Failed,
    /// A newer deploy of the stack came before it ended.
    Superseded,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Updating => "updating",
            GroupState::Completed => "completed",
            GroupState::RollbackStarted => "rollback_started",
            GroupState::RollbackCompleted => "rollback_completed",
            GroupState::Failed => "failed",
            GroupState::Superseded => "superseded",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, GroupState::Updating | GroupState::RollbackStarted)
    }
}

/// Where one service of a group stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Waits for the services it depends on to complete.
    Waiting,
    Updating,
    Completed,
    Failed,
    RollingBack,
    RolledBack,
    /// Created by the deploy and removed by the group's rollback.
    Removed,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Waiting => "waiting",
            MemberState::Updating => "updating",
            MemberState::Completed => "completed",
            MemberState::Failed => "failed",
            MemberState::RollingBack => "rolling_back",
            MemberState::RolledBack => "rolled_back",
            MemberState::Removed => "removed",
        }
    }

    /// Nothing more happens to it in this group.
    pub fn is_final(self) -> bool {
        matches!(self, MemberState::Completed | MemberState::Failed | MemberState::RolledBack | MemberState::Removed)
    }
}

/// One service of a group rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub service_id: String,
    pub name: String,
    /// Created by this deploy (its rollback removes it).
    pub created: bool,
    /// The spec version the group rolls out for it (a raft index).
    pub spec_version: u64,
    /// The service's rollout record for this group (`rollout inspect`).
    #[serde(default)]
    pub rollout_id: String,
    /// The members (names) it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub state: MemberState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// The services one deploy changed, rolled out together: `<stack>-<revision>` in `rollout ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRollout {
    pub id: String,
    /// A failure of any member rolls every member back (`--atomic`); otherwise (a stack
    /// rollback) each member's own failure action applies and the group ends `failed`.
    pub atomic: bool,
    pub state: GroupState,
    pub message: String,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When it must have completed (`--timeout`), or be rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The service and task whose failure ended it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed_service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failed_task: String,
    pub members: Vec<GroupMember>,
}

impl StackRollout {
    pub fn member(&self, service_id: &str) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.service_id == service_id)
    }

    /// The members a waiting `member` still waits for (one removed since is waited for no more).
    pub fn blockers(&self, member: &GroupMember) -> Vec<String> {
        member
            .depends_on
            .iter()
            .filter(|d| {
                self.members
                    .iter()
                    .any(|m| &m.name == *d && !matches!(m.state, MemberState::Completed | MemberState::Removed))
            })
            .cloned()
            .collect()
    }

    /// One line per member: `web: completed`, `api: waiting for db`.
    pub fn progress(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| match m.state {
                MemberState::Waiting => format!("{}: waiting for {}", m.name, self.blockers(m).join(", ")),
                state => format!("{}: {}", m.name, state.as_str()),
            })
            .collect()
    }
}

/// Refuses a dependency graph with a cycle, naming it (`a -> b -> a`), or a dependency on a
/// service the stack does not define.
pub fn check_dependencies(
    services: &BTreeSet<String>,
    depends_on: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    for (service, deps) in depends_on {
        if let Some(missing) = deps.iter().find(|d| !services.contains(*d)) {
            return Err(format!("depends_on: service {service} depends on {missing}, which the stack does not define"));
        }
    }
    // Depth-first search; `path` is the chain being walked, `done` the services fully walked.
    fn visit<'a>(
        node: &'a str,
        depends_on: &'a BTreeMap<String, Vec<String>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<&str> = path[at..].to_vec();
            cycle.push(node);
            return Err(format!(
                "depends_on: a cycle: {} (shoal uses depends_on to order an atomic rollout, so it must have none)",
                cycle.join(" -> ")
            ));
        }
        if done.contains(node) {
            return Ok(());
        }
        path.push(node);
        for dep in depends_on.get(node).into_iter().flatten() {
            visit(dep, depends_on, done, path)?;
        }
        path.pop();
        done.insert(node);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for service in depends_on.keys() {
        visit(service, depends_on, &mut done, &mut Vec::new())?;
    }
    Ok(())
}

/// What a deploy does to one service of the files.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No service of that name exists.
    Create(ServiceSpec),
    /// It exists and its spec differs: replace it, based on the version read.
    Update { current: Box<Service>, spec: ServiceSpec },
    /// It exists with this very spec: not touched at all.
    Unchanged(Box<Service>),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Create(spec) | Step::Update { spec, .. } => &spec.name,
            Step::Unchanged(current) => &current.spec.name,
        }
    }
}

/// Everything a deploy does to services, decided before anything changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeployPlan {
    /// The stack's services no longer in the files (only with `prune`), sorted by name.
    pub remove: Vec<Service>,
    /// One step per service of the files, sorted by name.
    pub steps: Vec<Step>,
}

/// The spec as the manager stores and returns it (a JSON round trip), so that comparing it with
/// a spec read back is not fooled by how a value is represented.
fn as_stored(spec: &ServiceSpec) -> ServiceSpec {
    serde_json::to_string(spec).ok().and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_else(|| spec.clone())
}

/// The stack's services, sorted by name.
pub fn stack_services<'a>(services: impl IntoIterator<Item = &'a Service>, stack: &str) -> Vec<&'a Service> {
    let mut found: Vec<&Service> = services.into_iter().filter(|s| namespace(s) == Some(stack)).collect();
    found.sort_by(|a, b| a.spec.name.cmp(&b.spec.name).then_with(|| a.id.cmp(&b.id)));
    found
}

/// Decides what a deploy does, given the services the files define and the services that
/// exist. Refuses, with every problem found, when a service of the stack's name exists outside
/// the stack (no namespace label, or another stack's) or would change mode.
///
/// A service is unchanged when its spec equals the one from the files once `task.force_update`
/// is carried over from the current spec (a deploy does not undo `service update --force`).
pub fn plan_deploy<'a>(
    stack: &str,
    desired: impl IntoIterator<Item = &'a ServiceSpec>,
    existing: &[&Service],
    prune: bool,
) -> Result<DeployPlan, Vec<String>> {
    let by_name: BTreeMap<&str, &Service> = existing.iter().map(|s| (s.spec.name.as_str(), *s)).collect();
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let mut wanted: Vec<&ServiceSpec> = desired.into_iter().collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in &wanted {
        let Some(current) = by_name.get(spec.name.as_str()) else {
            steps.push(Step::Create((*spec).clone()));
            continue;
        };
        if namespace(current) != Some(stack) {
            let owner = match namespace(current) {
                Some(other) => format!("it belongs to stack {other}"),
                None => format!("it has no {NAMESPACE_LABEL} label"),
            };
            problems.push(format!(
                "service {} already exists and is not part of stack {stack} ({owner}); remove or rename it, or use another stack name",
                spec.name
            ));
            continue;
        }
        if std::mem::discriminant(&current.spec.mode) != std::mem::discriminant(&spec.mode) {
            problems.push(format!(
                "service {} cannot change from {} to {} mode: remove it first (shoal service rm {})",
                spec.name,
                current.spec.mode.as_str(),
                spec.mode.as_str(),
                spec.name
            ));
            continue;
        }
        let mut spec = as_stored(spec);
        spec.task.force_update = current.spec.task.force_update;
        if spec == current.spec {
            steps.push(Step::Unchanged(Box::new((*current).clone())));
        } else {
            steps.push(Step::Update { current: Box::new((*current).clone()), spec });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut remove = Vec::new();
    if prune {
        let names: BTreeSet<&str> = wanted.iter().map(|s| s.name.as_str()).collect();
        remove = stack_services(existing.iter().copied(), stack)
            .into_iter()
            .filter(|s| !names.contains(s.spec.name.as_str()))
            .cloned()
            .collect();
    }
    Ok(DeployPlan { remove, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_dependency_cycle_is_named_and_a_dag_passes() {
        let all = names(&["a", "b", "c", "d"]);
        assert_eq!(check_dependencies(&all, &graph(&[("a", &["b", "c"]), ("b", &["c"]), ("d", &["a", "c"])])), Ok(()));
        let err = check_dependencies(&all, &graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])).unwrap_err();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
        let err = check_dependencies(&all, &graph(&[("a", &["a"])])).unwrap_err();
        assert!(err.contains("a -> a"), "{err}");
        let err = check_dependencies(&all, &graph(&[("a", &["x"])])).unwrap_err();
        assert!(err.contains("service a depends on x, which the stack does not define"), "{err}");
    }
}
