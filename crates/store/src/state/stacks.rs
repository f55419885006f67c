//! Stack revisions and their group rollouts, in the store: a deploy's revision is recorded in
//! the entry that changes its services, and a group's progress and rollback are written in the
//! entries that decide them, so every manager holds the same group and a new leader carries on
//! with it.

use std::sync::Arc;

use shoal_types::stack::{
    GroupMember, GroupPlan, GroupState, MemberChange, MemberState, STACK_REVISIONS_KEPT, StackRevision, StackRollout,
    StackService,
};
use shoal_types::{GroupRef, Service, UpdateState};

use super::{Change, ChangeKind, State, StoreError, Undo, rolled_back};
use crate::action::Origin;

/// [`crate::Action::RecordStack`]'s fields.
pub(super) struct StackRecord {
    pub stack: String,
    pub expected_revision: u64,
    pub digest: String,
    pub removed: Vec<String>,
    pub group: Option<GroupPlan>,
}

impl State {
    /// The stack's kept revisions, oldest first.
    pub fn stack_revisions(&self, stack: &str) -> &[Arc<StackRevision>] {
        self.stacks.get(stack).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every stack with a kept revision, by name.
    pub fn stack_names(&self) -> impl Iterator<Item = &str> {
        self.stacks.keys().map(String::as_str)
    }

    /// The group rollout `group` names, if it is still kept.
    pub fn group(&self, group: &GroupRef) -> Option<&StackRollout> {
        self.stack_revisions(&group.stack)
            .iter()
            .rev()
            .find(|r| r.number == group.revision)
            .and_then(|r| r.rollout.as_ref())
    }

    pub(super) fn record_stack(
        &mut self,
        record: StackRecord,
        index: u64,
        at: u64,
        origin: &Origin,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        let StackRecord { stack, expected_revision, digest, removed, group } = record;
        let current = self.stack_revisions(&stack).last().map_or(0, |r| r.number);
        if current != expected_revision {
            return Err(StoreError::StackMoved { stack, current, expected: expected_revision });
        }
        let number = current + 1;
        // An unfinished group of an older revision is over: this deploy's specs replace it.
        if let Some(old) = self.stack_revisions(&stack).last().and_then(|r| r.rollout.as_ref())
            && !old.state.is_final()
        {
            let old_ref = GroupRef { stack: stack.clone(), revision: current, waiting: false };
            self.edit_group(&old_ref, undo, |group| {
                group.state = GroupState::Superseded;
                group.finished_at = Some(at);
                group.message = format!("superseded by stack revision {number}");
            });
            self.leave_group(&old_ref, index, at, undo, changes);
        }
        let mut services = Vec::new();
        let members: Vec<&Service> = shoal_types::stack::stack_services(self.services.values().map(|s| &**s), &stack);
        for service in members {
            let change = match (service.spec_version == index, service.revision) {
                (true, 1) => MemberChange::Created,
                (true, _) => MemberChange::Updated,
                (false, _) => MemberChange::Unchanged,
            };
            // The revision table's copy of the spec, shared rather than copied.
            let spec = self
                .revisions(&service.id)
                .iter()
                .rev()
                .find(|r| r.number == service.revision)
                .map_or_else(|| Arc::new(service.spec.clone()), |r| r.spec.clone());
            services.push(StackService {
                service_id: service.id.clone(),
                name: service.spec.name.clone(),
                revision: service.revision,
                change,
                spec: Some(spec),
            });
        }
        let rollout =
            group.and_then(|plan| self.start_group(&stack, number, plan, &services, index, at, undo, changes));
        let revision = StackRevision {
            stack: stack.clone(),
            number,
            created_at: at,
            created_by: origin.by.clone(),
            change_cause: origin.cause.clone(),
            digest,
            services,
            removed,
            rollout,
        };
        undo.push(Undo::Stack(stack.clone(), self.stacks.get(&stack).cloned()));
        let kept = self.stacks.entry(stack).or_default();
        kept.push(Arc::new(revision));
        let excess = kept.len().saturating_sub(STACK_REVISIONS_KEPT);
        kept.drain(..excess);
        Ok(())
    }

    /// The group of the services this entry changed; each member's service is marked with it
    /// (waiting, if it depends on another member).
    #[allow(clippy::too_many_arguments)]
    fn start_group(
        &mut self,
        stack: &str,
        number: u64,
        plan: GroupPlan,
        services: &[StackService],
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Option<StackRollout> {
        let changed: Vec<&StackService> = services.iter().filter(|s| s.change != MemberChange::Unchanged).collect();
        if changed.is_empty() {
            return None;
        }
        let mut members = Vec::new();
        for service in &changed {
            // Only members are waited for: an unchanged service is where it is going already.
            let depends_on: Vec<String> = plan
                .depends_on
                .get(&service.name)
                .into_iter()
                .flatten()
                .filter(|d| changed.iter().any(|c| &c.name == *d))
                .cloned()
                .collect();
            let waiting = !depends_on.is_empty();
            let Some(current) = self.services.get(&service.service_id).cloned() else { continue };
            let mut marked = Service::clone(&current);
            marked.group = Some(GroupRef { stack: stack.to_string(), revision: number, waiting });
            marked.version = index;
            marked.updated_at = at;
            let rollout_id = marked.rollout_id.clone();
            self.put_service(marked, ChangeKind::Update, undo, changes);
            members.push(GroupMember {
                service_id: service.service_id.clone(),
                name: service.name.clone(),
                created: service.change == MemberChange::Created,
                spec_version: index,
                rollout_id,
                depends_on,
                state: if waiting { MemberState::Waiting } else { MemberState::Updating },
                started_at: (!waiting).then_some(at),
                finished_at: None,
            });
        }
        let waiting: Vec<String> =
            members.iter().filter(|m| m.state == MemberState::Waiting).map(|m| m.name.clone()).collect();
        let message = if waiting.is_empty() {
            "stack rollout in progress".to_string()
        } else {
            format!("stack rollout in progress; {} wait for the services they depend on", waiting.join(", "))
        };
        Some(StackRollout {
            id: format!("{stack}-{number}"),
            atomic: plan.atomic,
            state: GroupState::Updating,
            message,
            started_at: at,
            finished_at: None,
            deadline: (plan.timeout_ms > 0).then(|| at.saturating_add(plan.timeout_ms)),
            failed_service: String::new(),
            failed_task: String::new(),
            members,
        })
    }

    /// Changes the group `group` names in place (its revision record is copied once).
    fn edit_group(&mut self, group: &GroupRef, undo: &mut Vec<Undo>, edit: impl FnOnce(&mut StackRollout)) -> bool {
        let Some(kept) = self.stacks.get(&group.stack) else { return false };
        let Some(at) = kept.iter().position(|r| r.number == group.revision && r.rollout.is_some()) else {
            return false;
        };
        undo.push(Undo::Stack(group.stack.clone(), Some(kept.clone())));
        let record = Arc::make_mut(&mut self.stacks.get_mut(&group.stack).expect("found above")[at]);
        edit(record.rollout.as_mut().expect("found above"));
        true
    }

    /// The services still marked with `group` are marked no more (the group ended).
    fn leave_group(&mut self, group: &GroupRef, index: u64, at: u64, undo: &mut Vec<Undo>, changes: &mut Vec<Change>) {
        let Some(members) = self.group(group).map(|g| g.members.clone()) else { return };
        for member in members {
            let Some(service) = self.services.get(&member.service_id) else { continue };
            if service.group.as_ref().is_some_and(|g| g.stack == group.stack && g.revision == group.revision) {
                let mut service = Service::clone(service);
                service.group = None;
                service.version = index;
                service.updated_at = at;
                self.put_service(service, ChangeKind::Update, undo, changes);
            }
        }
    }

    /// A member's new state (skipped unless the group still runs and the member is not done),
    /// then what follows from it: members whose dependencies all completed start, and a group
    /// whose members are all done ends.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_member(
        &mut self,
        group: GroupRef,
        service_id: &str,
        state: MemberState,
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) {
        let Some(current) = self.group(&group) else { return };
        let Some(member) = current.member(service_id) else { return };
        // Only the moves the group's state allows: a progress entry decided before a rollback
        // began does not mark a member that is rolling back as completed.
        let allowed = match (current.state, member.state, state) {
            (GroupState::Updating | GroupState::RollbackStarted, from, MemberState::Removed) => !from.is_final(),
            (GroupState::Updating, MemberState::Waiting | MemberState::Updating, to) => {
                matches!(to, MemberState::Completed | MemberState::Failed)
            }
            (GroupState::RollbackStarted, MemberState::RollingBack, to) => {
                matches!(to, MemberState::RolledBack | MemberState::Failed)
            }
            _ => false,
        };
        if !allowed {
            return;
        }
        self.edit_group(&group, undo, |g| {
            if let Some(member) = g.members.iter_mut().find(|m| m.service_id == service_id) {
                member.state = state;
                if state.is_final() {
                    member.finished_at = Some(at);
                }
            }
        });
        self.settle_group(&group, index, at, undo, changes);
    }

    /// Starts the waiting members whose dependencies completed, and ends the group once every
    /// member is done.
    fn settle_group(&mut self, group: &GroupRef, index: u64, at: u64, undo: &mut Vec<Undo>, changes: &mut Vec<Change>) {
        let Some(current) = self.group(group).cloned() else { return };
        if current.state == GroupState::Updating {
            let ready: Vec<String> = current
                .members
                .iter()
                .filter(|m| m.state == MemberState::Waiting && current.blockers(m).is_empty())
                .map(|m| m.service_id.clone())
                .collect();
            for id in &ready {
                self.edit_group(group, undo, |g| {
                    if let Some(member) = g.members.iter_mut().find(|m| &m.service_id == id) {
                        member.state = MemberState::Updating;
                        member.started_at = Some(at);
                    }
                });
                if let Some(service) = self.services.get(id) {
                    let mut service = Service::clone(service);
                    if let Some(mark) = service.group.as_mut() {
                        mark.waiting = false;
                    }
                    service.version = index;
                    service.updated_at = at;
                    self.put_service(service, ChangeKind::Update, undo, changes);
                }
            }
        }
        let Some(current) = self.group(group).cloned() else { return };
        if current.members.iter().all(|m| m.state.is_final()) {
            let (state, message) = match current.state {
                GroupState::Updating if current.members.iter().all(|m| m.state == MemberState::Removed) => {
                    (GroupState::Superseded, "stack rollout ended: its services were removed".to_string())
                }
                GroupState::RollbackStarted => {
                    let stuck: Vec<&str> = current
                        .members
                        .iter()
                        .filter(|m| m.state == MemberState::Failed)
                        .map(|m| m.name.as_str())
                        .collect();
                    if stuck.is_empty() {
                        (GroupState::RollbackCompleted, format!("{}; rollback completed", current.message))
                    } else {
                        // Said as it is: the group did not get back to where it was.
                        let message =
                            format!("{}; the rollback of {} did not complete", current.message, stuck.join(", "));
                        (GroupState::Failed, message)
                    }
                }
                _ if current.members.iter().any(|m| m.state == MemberState::Failed) => {
                    let failed: Vec<&str> = current
                        .members
                        .iter()
                        .filter(|m| m.state == MemberState::Failed)
                        .map(|m| m.name.as_str())
                        .collect();
                    (GroupState::Failed, format!("stack rollout failed: {} did not complete", failed.join(", ")))
                }
                _ => (GroupState::Completed, "stack rollout completed".to_string()),
            };
            self.edit_group(group, undo, |g| {
                g.state = state;
                g.message = message;
                g.finished_at = Some(at);
            });
            self.leave_group(group, index, at, undo, changes);
        }
    }

    /// A member failed: in an atomic group every member goes back to its spec from before the
    /// deploy (push-style, with its rollback settings) and the members the deploy created are
    /// removed; in another group only that member is marked failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_group(
        &mut self,
        group: GroupRef,
        service_id: &str,
        task_id: &str,
        message: String,
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) {
        let Some(current) = self.group(&group).cloned() else { return };
        if current.state != GroupState::Updating {
            return;
        }
        if !current.atomic {
            self.set_member(group, service_id, MemberState::Failed, index, at, undo, changes);
            return;
        }
        let failed_name = current.member(service_id).map(|m| m.name.clone()).unwrap_or_default();
        let summary = if failed_name.is_empty() {
            format!("stack rollout rolled back: {message}")
        } else {
            format!("stack rollout rolled back: service {failed_name}: {message}")
        };
        self.edit_group(&group, undo, |g| {
            g.state = GroupState::RollbackStarted;
            g.message = summary.clone();
            g.failed_service = failed_name.clone();
            g.failed_task = task_id.to_string();
        });
        let mut outcome = Vec::new();
        for member in &current.members {
            let state = match self.services.get(&member.service_id).cloned() {
                None => MemberState::Removed,
                // Changed by hand since the deploy created it: left as it is.
                Some(service) if member.created && service.spec_version != member.spec_version => MemberState::Failed,
                Some(_) if member.created => {
                    let service = self.remove_service(&member.service_id).expect("found above");
                    undo.push(Undo::Revisions(member.service_id.clone(), self.revisions.remove(&member.service_id)));
                    undo.push(Undo::Rollouts(member.service_id.clone(), self.rollouts.remove(&member.service_id)));
                    self.slot_index.services.remove(&member.service_id);
                    undo.push(Undo::Service(member.service_id.clone(), Some(service.clone())));
                    changes.push(Change {
                        kind: ChangeKind::Remove,
                        index,
                        at,
                        object: super::Object::Service(service),
                    });
                    MemberState::Removed
                }
                Some(service) => match self.roll_member_back(&service, &summary, index, at, undo, changes) {
                    Some(true) => MemberState::RollingBack,
                    Some(false) => MemberState::RolledBack,
                    None => MemberState::Failed,
                },
            };
            outcome.push((member.service_id.clone(), state));
        }
        self.edit_group(&group, undo, |g| {
            for (id, state) in outcome {
                if let Some(member) = g.members.iter_mut().find(|m| m.service_id == id) {
                    member.state = state;
                    if state.is_final() {
                        member.finished_at = Some(at);
                    }
                }
            }
        });
        self.settle_group(&group, index, at, undo, changes);
    }

    /// Rolls `service` back to its spec from before the group's deploy, if it is still at the
    /// group's spec and has one; false when there is nothing to roll back (it rolled itself back,
    /// or changed since), or the old spec can no longer be applied (a secret it used is gone).
    fn roll_member_back(
        &mut self,
        service: &Service,
        message: &str,
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Option<bool> {
        let Some(previous) = service.previous_spec.clone() else { return Some(false) };
        let rolling_back = service.update_status.as_ref().is_some_and(|s| {
            matches!(
                s.state,
                UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted
            )
        });
        if rolling_back || service.group.is_none() {
            return Some(false);
        }
        if self.check_data_references(&previous).is_err() || self.check_ingress_ports(&service.id, &previous).is_err() {
            return None;
        }
        let mut back = rolled_back(service, previous, message.to_string(), index, at);
        back.group.as_mut().expect("checked").waiting = false;
        let origin = Origin { cause: message.to_string(), ..Origin::default() };
        self.put_rollback(back, &origin, undo, changes).ok().map(|()| true)
    }
}
