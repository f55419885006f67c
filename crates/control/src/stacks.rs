//! `stack deploy` and `stack rollback` on the leader: the whole change of a stack, planned
//! against the store as it is and written as one raft entry (all or nothing), ending with the
//! stack's next revision. Planning and the entry's last action (which refuses the entry if the
//! stack moved on since it was planned) make two deploys of one stack serialise, never
//! interleave, even across a change of leader.

use std::collections::BTreeSet;

use shoal_store::{Action, State};
use shoal_types::stack::{
    GroupPlan, MAX_STACK_SERVICES, NAMESPACE_LABEL, StackDeploy, Step, check_dependencies, namespace, plan_deploy,
};
use shoal_types::traffic::Route;
use shoal_types::{DataKind, DataObject, ServiceSpec};

use crate::error::ApiError;

fn invalid(problems: Vec<String>) -> ApiError {
    ApiError::InvalidArgument(problems.join("\n"))
}

/// The longest an atomic deploy's group may be given to complete.
pub const MAX_GROUP_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// What a deploy's entry holds (nothing: the deploy changes nothing), and what is worth saying
/// about it.
pub struct Planned {
    pub actions: Vec<Action>,
    pub warnings: Vec<String>,
}

/// Checks one service of a stack as `service create` would, except that the stack's own new
/// secrets and configs count as existing.
fn check_service(
    state: &State,
    stack: &str,
    spec: &ServiceSpec,
    new_data: &BTreeSet<(DataKind, String)>,
) -> Result<(), String> {
    let name = &spec.name;
    if !name.starts_with(&format!("{stack}_")) || namespace_of(spec) != Some(stack) {
        return Err(format!(
            "service {name}: a service of stack {stack} is named {stack}_<service> and labelled {NAMESPACE_LABEL}={stack}"
        ));
    }
    spec.validate().map_err(|e| format!("service {name}: {e}"))?;
    if let Some(cluster) = state.cluster() {
        spec.validate_against(&cluster.spec).map_err(|e| format!("service {name}: {e}"))?;
    }
    for (list, kind, references) in [
        ("secrets", DataKind::Secret, &spec.task.container.secrets),
        ("configs", DataKind::Config, &spec.task.container.configs),
    ] {
        for (i, reference) in references.iter().enumerate() {
            let known = state.data_by_name(kind, &reference.source).is_some()
                || new_data.contains(&(kind, reference.source.clone()));
            if !known {
                return Err(format!(
                    "service {name}: task.container.{list}[{i}]: {kind} {} not found (create it first: shoal {kind} create {} FILE)",
                    reference.source, reference.source
                ));
            }
        }
    }
    for (i, network) in spec.task.networks.iter().enumerate() {
        let known = state.data_by_name(DataKind::Network, network).is_some()
            || new_data.contains(&(DataKind::Network, network.clone()));
        if !known {
            return Err(format!(
                "service {name}: task.networks[{i}]: network {network} not found (declare it under the stack file's networks:, or create it: shoal network create {network})"
            ));
        }
    }
    Ok(())
}

fn namespace_of(spec: &ServiceSpec) -> Option<&str> {
    spec.labels.get(NAMESPACE_LABEL).map(String::as_str)
}

/// The stack's newest revision number (0: none yet).
pub fn newest_revision(state: &State, stack: &str) -> u64 {
    state.stack_revisions(stack).last().map_or(0, |r| r.number)
}

/// Plans `deploy` against `state`: every check `service create`, `route create` and
/// `secret create` make, then the entry's actions. Refused with every problem found.
pub fn plan(state: &State, deploy: StackDeploy, mut new_id: impl FnMut() -> String) -> Result<Planned, ApiError> {
    let StackDeploy { stack, services, routes, data, prune, digest, atomic } = deploy;
    shoal_types::validate_name("stack name", &stack).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    if services.is_empty() {
        return Err(ApiError::InvalidArgument(format!("stack {stack}: the files define no service")));
    }
    if services.len() > MAX_STACK_SERVICES {
        return Err(ApiError::InvalidArgument(format!(
            "stack {stack}: {} services; a stack holds at most {MAX_STACK_SERVICES}",
            services.len()
        )));
    }
    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    if names.len() != services.len() {
        return Err(ApiError::InvalidArgument(format!("stack {stack}: a service is defined twice")));
    }
    let new_data: BTreeSet<(DataKind, String)> = data.iter().map(|d| (d.kind, d.spec.name.clone())).collect();
    let mut problems: Vec<String> =
        services.iter().filter_map(|spec| check_service(state, &stack, spec, &new_data).err()).collect();
    for route in &routes {
        if let Err(e) = route.validate() {
            problems.push(format!("route {}: {e}", route.name));
        }
        if route.labels.get(NAMESPACE_LABEL).map(String::as_str) != Some(stack.as_str()) {
            problems
                .push(format!("route {}: a route of stack {stack} is labelled {NAMESPACE_LABEL}={stack}", route.name));
        }
    }
    let mut data_names = BTreeSet::new();
    for object in &data {
        if !data_names.insert((object.kind, object.spec.name.clone())) {
            problems.push(format!("{} {}: defined twice", object.kind, object.spec.name));
        }
        // The checks `secret create`, `config create` and `network create` make.
        problems.extend(object.spec.problems(object.kind));
    }
    if let Some(atomic) = &atomic {
        if atomic.timeout_ms > MAX_GROUP_TIMEOUT_MS {
            problems.push(format!("atomic timeout: {} ms; at most {MAX_GROUP_TIMEOUT_MS} (24h)", atomic.timeout_ms));
        }
        if let Some(unknown) = atomic.depends_on.keys().find(|k| !names.contains(*k)) {
            problems.push(format!("depends_on: {unknown} is not a service of stack {stack}"));
        }
        if let Err(e) = check_dependencies(&names, &atomic.depends_on) {
            problems.push(e);
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let existing: Vec<&shoal_types::Service> = state.services().collect();
    let planned = plan_deploy(&stack, &services, &existing, prune).map_err(invalid)?;

    let mut actions = Vec::new();
    // Secrets and configs first (the services refer to them); one that exists is kept as it is.
    for object in data {
        if state.data_by_name(object.kind, &object.spec.name).is_none() {
            let (kind, spec) = (object.kind, object.spec);
            actions.push(Action::CreateData {
                object: DataObject { id: new_id(), kind, version: 0, created_at: 0, updated_at: 0, spec, size: 0 },
            });
        }
    }
    // Pruned routes go first, so a renamed route may take over its predecessor's port.
    let mine = |r: &&Route| r.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack.as_str());
    if prune {
        for route in state.routes().filter(mine).filter(|r| !routes.iter().any(|s| s.name == r.spec.name)) {
            actions.push(Action::RemoveRoute { id: route.id.clone() });
        }
    }
    let removed: Vec<String> = planned.remove.iter().map(|s| s.spec.name.clone()).collect();
    for service in &planned.remove {
        actions.push(Action::RemoveService { id: service.id.clone() });
    }
    for step in planned.steps {
        match step {
            Step::Create(spec) => actions.push(Action::CreateService { id: new_id(), spec }),
            Step::Update { current, spec } => {
                actions.push(Action::UpdateService { id: current.id.clone(), expected_version: current.version, spec })
            }
            Step::Unchanged(_) => {}
        }
    }
    let mut warnings = Vec::new();
    for spec in routes {
        match state.route_by_name(&spec.name) {
            Some(current) if current.spec == spec => {}
            Some(current) if !mine(&current) => {
                return Err(ApiError::AlreadyExists(format!(
                    "route {} already exists and is not part of stack {stack}",
                    spec.name
                )));
            }
            Some(current) => {
                actions.push(Action::UpdateRoute { id: current.id.clone(), expected_version: current.version, spec })
            }
            None => {
                let route = Route { id: new_id(), spec, ..Route::default() };
                actions.push(Action::CreateRoute { route });
            }
        }
    }
    // A deploy that changes nothing is no revision (as a Kubernetes apply of the same template).
    if actions.is_empty() {
        return Ok(Planned { actions, warnings });
    }
    let group = atomic.map(|a| GroupPlan { atomic: true, timeout_ms: a.timeout_ms, depends_on: a.depends_on });
    if group.as_ref().is_some_and(|g| !g.depends_on.is_empty()) {
        warnings.push("depends_on orders the atomic rollout only: it does not wait for a service to be ready before starting its dependents' containers outside a rollout".into());
    }
    let expected_revision = newest_revision(state, &stack);
    actions.push(Action::RecordStack { stack, expected_revision, digest, removed, group });
    Ok(Planned { actions, warnings })
}

/// Plans `stack rollback`: every service of revision `to` (0: the one before the newest) back to
/// its spec there, as a group; a service removed since is created again; with `prune`, services
/// the revision did not have are removed. Returns the actions and the change cause to record.
pub fn plan_rollback(
    state: &State,
    stack: &str,
    to: u64,
    prune: bool,
    mut new_id: impl FnMut() -> String,
) -> Result<(Planned, u64), ApiError> {
    let kept = state.stack_revisions(stack);
    let Some(newest) = kept.last() else {
        return Err(ApiError::NotFound(format!(
            "stack {stack} has no revision: there is nothing to roll back (deploy it first: shoal stack deploy)"
        )));
    };
    let to = if to == 0 { newest.number.saturating_sub(1) } else { to };
    if to == 0 {
        return Err(ApiError::FailedPrecondition(format!(
            "stack {stack} has no earlier revision to roll back to (it is at revision {})",
            newest.number
        )));
    }
    if to == newest.number {
        return Err(ApiError::FailedPrecondition(format!(
            "stack {stack} is at revision {to} already: roll back to an earlier one (shoal stack history {stack})"
        )));
    }
    let Some(target) = kept.iter().find(|r| r.number == to) else {
        let first = kept.first().map_or(0, |r| r.number);
        return Err(ApiError::NotFound(format!(
            "revision {to} not found for stack {stack} (kept: {first}-{})",
            newest.number
        )));
    };
    let message = format!("stack {stack} rolled back to revision {to}");
    let mut actions = Vec::new();
    let mut warnings = Vec::new();
    let wanted: BTreeSet<&str> = target.services.iter().map(|s| s.name.as_str()).collect();
    let mut removed = Vec::new();
    for service in shoal_types::stack::stack_services(state.services(), stack) {
        if wanted.contains(service.spec.name.as_str()) {
            continue;
        }
        if prune {
            actions.push(Action::RemoveService { id: service.id.clone() });
            removed.push(service.spec.name.clone());
        } else {
            warnings.push(format!(
                "service {} was not in revision {to}; it is left as it is (roll back with --prune to remove it)",
                service.spec.name
            ));
        }
    }
    for member in &target.services {
        let Some(spec) = &member.spec else { continue };
        match state.service_by_name(&member.name) {
            Some(current) if namespace(current) != Some(stack) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "service {} exists outside stack {stack} now: remove or rename it first",
                    member.name
                )));
            }
            Some(current) if current.spec == **spec => {}
            Some(current) => actions.push(Action::RollbackServiceToSpec {
                id: current.id.clone(),
                expected_version: current.version,
                spec: ServiceSpec::clone(spec),
                message: message.clone(),
            }),
            None => actions.push(Action::CreateService { id: new_id(), spec: ServiceSpec::clone(spec) }),
        }
    }
    let group = GroupPlan { atomic: false, timeout_ms: 0, depends_on: Default::default() };
    actions.push(Action::RecordStack {
        stack: stack.to_string(),
        expected_revision: newest.number,
        digest: target.digest.clone(),
        removed,
        group: Some(group),
    });
    Ok((Planned { actions, warnings }, to))
}
