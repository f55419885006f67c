//! `--update-prepare-ahead`: every out-of-date slot's new task is placed and prepared when the
//! rollout starts and released at the slot's turn. Driven through the real updater with the
//! simulated agents of `update_tests`, whose per-round checks (parallelism, stop-first and
//! start-first ordering) apply unchanged.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_store::Action;
use shoal_types::*;

use crate::update_tests::{Behaviour, Sim, image};

fn prepared(sim: &Sim) -> Vec<Task> {
    sim.w.tasks(&sim.svc).into_iter().filter(|t| t.prepared_ahead()).collect()
}

/// Prepared tasks waiting for their turn (not retired).
fn waiting(sim: &Sim) -> Vec<Task> {
    prepared(sim).into_iter().filter(|t| t.desired_state <= TaskState::Running).collect()
}

fn with_prepare_ahead(parallelism: u64) -> impl FnOnce(&mut ServiceSpec) {
    move |s: &mut ServiceSpec| {
        s.update_config.parallelism = parallelism;
        s.update_config.prepare_ahead = true;
        s.rollback_config.parallelism = parallelism;
        s.rollback_config.prepare_ahead = true;
    }
}

/// What every pass must keep: a prepared task is never started before it is released, and a
/// slot has at most one prepared task waiting.
fn check_prepared(sim: &Sim, _before: &BTreeMap<String, Task>) {
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for t in waiting(sim) {
        assert_eq!(t.desired_state, TaskState::Ready, "prepared task {} raised before its turn", t.name());
        assert!(t.status.state <= TaskState::Ready, "prepared task {} started before its turn", t.name());
        *per_slot.entry(t.slot).or_default() += 1;
    }
    assert!(per_slot.values().all(|n| *n == 1), "a slot with two prepared tasks: {per_slot:?}");
}

#[test]
fn every_slot_is_prepared_at_the_start_and_released_batch_by_batch() {
    let mut sim = Sim::new(6, with_prepare_ahead(2));
    sim.update(|s| image(s, "app:2"));
    // One pass: the first batch of two is started as usual, the four others are prepared.
    sim.round_checked(check_prepared);
    let new: Vec<Task> = sim.w.tasks(&sim.svc).into_iter().filter(|t| t.spec.container.image == "app:2").collect();
    assert_eq!(new.len(), 6, "a new task per slot at once");
    assert_eq!(waiting(&sim).len(), 4, "all but the first batch wait for their turn");
    // The agents prepare them (READY) long before their turn comes.
    sim.round_checked(check_prepared);
    sim.round_checked(check_prepared);
    assert!(waiting(&sim).iter().all(|t| t.status.state == TaskState::Ready), "{:?}", waiting(&sim));
    for _ in 0..400 {
        if sim.status() == Some(UpdateState::Completed) {
            break;
        }
        sim.round_checked(check_prepared);
    }
    assert_eq!(sim.status(), Some(UpdateState::Completed));
    assert!(sim.settled_on("app:2", 6));
    let new = sim.w.tasks(&sim.svc).into_iter().filter(|t| t.spec.container.image == "app:2").count();
    assert_eq!(new, 6, "the prepared tasks were used, none made twice");
    assert!(prepared(&sim).is_empty(), "every prepared task was released");
    let record = sim.w.state.rollouts(&sim.svc).last().cloned().expect("a rollout record");
    let sizes: Vec<usize> = record.batches.iter().map(|b| b.slots.len()).collect();
    assert_eq!(sizes, [2, 2, 2], "the record's batches are the releases, not the preparation");
}

#[test]
fn a_newer_spec_or_a_rollback_removes_the_prepared_tasks() {
    for rollback in [false, true] {
        let mut sim = Sim::new(4, with_prepare_ahead(1));
        sim.update(|s| image(s, "app:2"));
        sim.run_until(|s| waiting(s).len() == 3, 20);
        let unused: Vec<String> = waiting(&sim).iter().map(|t| t.id.clone()).collect();
        if rollback {
            sim.rollback();
        } else {
            sim.update(|s| image(s, "app:3"));
        }
        sim.round();
        for id in &unused {
            let t = sim.w.state.task(id).expect("still in the history");
            assert!(t.desired_state >= TaskState::Shutdown && t.remove_container, "rollback {rollback}: {t:?}");
        }
        let target = if rollback { "app:1" } else { "app:3" };
        let done = if rollback { UpdateState::RollbackCompleted } else { UpdateState::Completed };
        sim.run_until(|s| s.status() == Some(done) && s.settled_on(target, 4), 600);
        assert!(waiting(&sim).is_empty(), "rollback {rollback}");
    }
}

#[test]
fn a_missing_image_fails_in_preparation_and_pauses_before_the_other_slots_stop() {
    let mut sim = Sim::new(4, with_prepare_ahead(1));
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtPrepare);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Paused), 50);
    for _ in 0..20 {
        sim.round();
    }
    let status = sim.service().update_status.unwrap();
    assert!(status.message.starts_with("update paused due to failure or early termination of task "), "{status:?}");
    // The first slot's old task was stopped at its turn, as without preparing ahead; the three
    // others never had their turn and keep running the old version.
    assert_eq!(sim.running_images(), ["app:1", "app:1", "app:1"]);
    assert!(waiting(&sim).is_empty(), "failed preparations are retired, not restarted");
    assert!(prepared(&sim).iter().all(|t| t.origin == TaskOrigin::Update && t.remove_container));
}

#[test]
fn a_paused_rollout_keeps_its_prepared_tasks_and_uses_them_on_resume() {
    let mut sim = Sim::new(4, with_prepare_ahead(1));
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| waiting(s).len() == 3, 20);
    sim.w.apply(vec![Action::PauseRollout { id: sim.svc.clone() }]);
    for _ in 0..50 {
        sim.round_checked(check_prepared);
    }
    assert_eq!(waiting(&sim).len(), 3, "paused: the prepared tasks wait");
    sim.w.apply(vec![Action::ResumeRollout { id: sim.svc.clone() }]);
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    assert!(sim.settled_on("app:2", 4));
    let new = sim.w.tasks(&sim.svc).into_iter().filter(|t| t.spec.container.image == "app:2").count();
    assert_eq!(new, 4);
}

fn behaviour(code: u8) -> Behaviour {
    [Behaviour::Works, Behaviour::FailsAtPrepare, Behaviour::FailsAtStart, Behaviour::FailsAfterRunning]
        [code as usize % 4]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the parallelism, order, failure action and failure, preparing ahead keeps
    /// Swarm's rollout: no more slots in transition than the parallelism and stop-first/start-first
    /// ordering (the simulation's own checks), no prepared task started before its turn; the
    /// rollout ends, never releases a second task into a slot, and leaves no prepared task
    /// waiting.
    #[test]
    fn preparing_ahead_keeps_the_rollout_semantics(
        replicas in 1u64..8,
        parallelism in 0u64..4,
        start_first in any::<bool>(),
        new_behaviour in 0u8..4,
        action in 0u8..3,
    ) {
        let order = if start_first { UpdateOrder::StartFirst } else { UpdateOrder::StopFirst };
        let mut sim = Sim::new(replicas, |s| {
            with_prepare_ahead(parallelism)(s);
            s.update_config.order = order;
            s.update_config.monitor = GoDuration::from_millis(300);
            s.update_config.failure_action =
                [FailureAction::Pause, FailureAction::Continue, FailureAction::Rollback][action as usize];
            s.rollback_config.monitor = GoDuration::from_millis(300);
        });
        sim.behaviour.insert("app:2".into(), behaviour(new_behaviour));
        sim.update(|s| image(s, "app:2"));
        let mut ended = false;
        for _ in 0..1_500 {
            let status = sim.service().update_status;
            if status.as_ref().is_some_and(|s| match s.state {
                UpdateState::Completed | UpdateState::RollbackCompleted => s.completed_at.is_some(),
                UpdateState::Paused | UpdateState::RollbackPaused => true,
                _ => false,
            }) {
                ended = true;
                break;
            }
            sim.round_checked(check_prepared);
        }
        prop_assert!(ended, "the rollout did not end: {:?}", sim.service().update_status);
        let mut released: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for t in sim.w.tasks(&sim.svc).iter().filter(|t| t.origin == TaskOrigin::Update && !t.prepared_ahead()) {
            *released.entry((t.slot, t.spec_version)).or_default() += 1;
        }
        prop_assert!(released.values().all(|n| *n == 1), "a slot updated twice: {:?}", released);
        let state = sim.status();
        if matches!(state, Some(UpdateState::Completed | UpdateState::RollbackCompleted)) {
            prop_assert!(waiting(&sim).is_empty(), "prepared tasks left after {:?}", state);
        }
        if new_behaviour == 0 {
            prop_assert_eq!(state, Some(UpdateState::Completed));
            prop_assert!(sim.settled_on("app:2", replicas as usize));
        }
    }
}

/// The containers each replica slot's running task runs in, by the id they carry.
fn running_containers(sim: &Sim) -> BTreeMap<u64, String> {
    sim.w
        .tasks(&sim.svc)
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .map(|t| (t.slot, t.container_task().to_string()))
        .collect()
}

/// A rollback restarts each slot's stopped container of the spec it returns to, on its node,
/// instead of creating one; toggling back and forth keeps reusing the same containers. With
/// `--update-old-tasks remove` there is nothing to restart and new containers are made.
#[test]
fn a_rollback_restarts_the_stopped_containers_in_place() {
    for prepare_ahead in [false, true] {
        let mut sim = Sim::new(4, |s| {
            s.update_config.parallelism = 2;
            s.rollback_config.parallelism = 2;
            s.rollback_config.prepare_ahead = prepare_ahead;
        });
        let v1 = running_containers(&sim);
        let v1_nodes: BTreeMap<u64, String> =
            sim.w.runnable(&sim.svc).iter().map(|t| (t.slot, t.node_id.clone())).collect();
        sim.update(|s| image(s, "app:2"));
        sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
        let v2 = running_containers(&sim);
        assert!(v2.values().all(|c| !v1.values().any(|old| old == c)), "the update made new containers");

        sim.rollback();
        sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:1", 4), 400);
        assert_eq!(running_containers(&sim), v1, "prepare_ahead {prepare_ahead}: the v1 containers run again");
        for t in sim.w.runnable(&sim.svc) {
            assert_eq!(t.node_id, v1_nodes[&t.slot], "restarted on its own node");
            assert!(t.adopts.is_some());
        }
        assert!(waiting(&sim).is_empty() && prepared(&sim).is_empty(), "nothing was prepared for a restart");

        // Back to v2 (a rollback toggles): the v2 containers, stopped by the first rollback.
        sim.rollback();
        sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:2", 4), 400);
        assert_eq!(running_containers(&sim), v2);
        sim.rollback();
        sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:1", 4), 400);
        assert_eq!(running_containers(&sim), v1, "a container restarted once is restarted again");
    }

    let mut sim = Sim::new(2, |s| s.update_config.old_tasks = OldTasks::Remove);
    let v1 = running_containers(&sim);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    sim.rollback();
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:1", 2), 400);
    let now = running_containers(&sim);
    assert!(now.values().all(|c| !v1.values().any(|old| old == c)), "removed containers are not restarted: {now:?}");
}

/// An old task that ends for good (exit 0, no restart) while its slot's new task waits prepared:
/// the slot is not refilled outside the rollout (the prepared task is not the slot's yet); the
/// rollout replaces it at its turn.
#[test]
fn a_slot_that_stops_for_good_while_prepared_is_replaced_by_the_rollout() {
    let mut sim = Sim::new(3, |s| {
        with_prepare_ahead(1)(s);
        s.update_config.monitor = GoDuration::from_secs(2);
    });
    let since = sim.w.now;
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| waiting(s).len() == 2, 20);
    let slot = waiting(&sim)[0].slot;
    let old = sim.w.runnable(&sim.svc).into_iter().find(|t| t.slot == slot && !t.prepared_ahead()).unwrap();
    sim.w.set_status(&old.id, TaskState::Complete);
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    assert!(sim.settled_on("app:2", 3));
    let refills =
        sim.w.tasks(&sim.svc).iter().filter(|t| t.origin == TaskOrigin::Orchestrator && t.created_at >= since).count();
    assert_eq!(refills, 0, "no task made outside the rollout");
}

/// A preparation that fails is not tried again every pass: the slot counts one failure, and its
/// task is made at its turn.
#[test]
fn a_failed_preparation_is_not_prepared_again() {
    let mut sim = Sim::new(4, |s| {
        with_prepare_ahead(1)(s);
        s.update_config.failure_action = FailureAction::Continue;
    });
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtPrepare);
    sim.update(|s| image(s, "app:2"));
    for _ in 0..200 {
        if sim.status() == Some(UpdateState::Completed) {
            break;
        }
        sim.round();
    }
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for t in prepared(&sim) {
        *per_slot.entry(t.slot).or_default() += 1;
    }
    assert!(per_slot.values().all(|n| *n == 1), "prepared more than once: {per_slot:?}");
}

/// A rollback pins a restarted task to its container's node; where placement could keep it off
/// that node (reservations, host ports, a maximum per node), new containers are made instead.
#[test]
fn no_restart_in_place_where_pinning_could_block_the_rollback() {
    let mut sim = Sim::new(2, |s| s.task.placement.max_replicas_per_node = 2);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    sim.rollback();
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:1", 2), 400);
    assert!(sim.w.runnable(&sim.svc).iter().all(|t| t.adopts.is_none()));
}
