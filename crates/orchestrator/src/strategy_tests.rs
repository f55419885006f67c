//! Rollout strategies beyond Swarm's (Recreate, surge/unavailability budgets, canary steps),
//! driven through the real updater with simulated agents; each strategy's invariant is checked
//! after every pass of the control loop.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shoal_store::Action;
use shoal_types::*;

use crate::update_tests::{Behaviour, Sim, image};

fn available(t: &Task, now: Timestamp, monitor_ms: u64) -> bool {
    t.status.state == TaskState::Running
        && t.desired_state == TaskState::Running
        && t.running_at.is_none_or(|at| now >= at + monitor_ms)
}

fn live(t: &Task) -> bool {
    !t.status.state.is_terminal() && t.desired_state != TaskState::Ready
}

fn ended(status: Option<UpdateState>) -> bool {
    matches!(
        status,
        Some(
            UpdateState::Completed | UpdateState::Paused | UpdateState::RollbackCompleted | UpdateState::RollbackPaused
        )
    )
}

/// Update-made tasks per (slot, spec version): a rollout never updates a slot twice.
fn assert_no_slot_updated_twice(sim: &Sim) {
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for t in sim.w.tasks(&sim.svc).iter().filter(|t| t.origin == TaskOrigin::Update) {
        *seen.entry((t.slot, t.spec_version)).or_default() += 1;
    }
    for ((slot, version), n) in seen {
        assert!(n <= 1, "slot {slot} updated {n} times to spec version {version}");
    }
}

fn behaviour(code: u8) -> Behaviour {
    match code {
        0 | 1 => Behaviour::Works,
        2 => Behaviour::FailsAtStart,
        _ => Behaviour::FailsAfterRunning,
    }
}

fn failure_action(code: u8) -> FailureAction {
    [FailureAction::Pause, FailureAction::Continue, FailureAction::Rollback][code as usize % 3]
}

/// Runs a rollout to its end with `check` after every pass; returns the rounds it took.
fn run_to_end(sim: &mut Sim, mut check: impl FnMut(&Sim, &BTreeMap<String, Task>)) -> usize {
    for round in 0..1_500 {
        if ended(sim.status())
            && sim
                .service()
                .update_status
                .as_ref()
                .is_some_and(|s| s.completed_at.is_some() || s.state != UpdateState::Completed)
        {
            return round;
        }
        sim.round_checked(&mut check);
    }
    panic!("the rollout did not end: {:?}", sim.service().update_status);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Surge and unavailability: after every pass, tasks not yet terminal ≤ replicas + surge, and
    /// the control loop never took the available tasks below replicas − unavailable (nor below
    /// what was available before the pass, when fewer were). Every rollout ends and updates no
    /// slot twice, whatever fails.
    #[test]
    fn budgeted_rollouts_keep_their_budget(
        replicas in 1u64..8,
        surge in 0u64..3,
        unavailable in 0u64..3,
        percent in any::<bool>(),
        monitor_ms in prop_oneof![Just(0u64), Just(300), Just(1_000)],
        new_behaviour in 0u8..4,
        action in 0u8..3,
    ) {
        let (max_surge, max_unavailable) = if percent {
            (Quantity::Percent(surge as u32 * 25), Quantity::Percent(unavailable as u32 * 25))
        } else {
            (Quantity::Count(surge), Quantity::Count(unavailable))
        };
        prop_assume!(!(max_surge.is_zero() && max_unavailable.is_zero()));
        let mut sim = Sim::new(replicas, |s| {
            s.update_config.max_surge = Some(max_surge);
            s.update_config.max_unavailable = Some(max_unavailable);
            s.update_config.monitor = GoDuration::from_millis(monitor_ms);
            s.update_config.failure_action = failure_action(action);
            s.rollback_config.max_surge = Some(max_surge);
            s.rollback_config.max_unavailable = Some(max_unavailable);
            s.rollback_config.monitor = GoDuration::from_millis(monitor_ms);
        });
        sim.behaviour.insert("app:2".into(), behaviour(new_behaviour));
        // Let the old tasks become available before the rollout starts.
        for _ in 0..(monitor_ms / 100 + 1) { sim.round(); }
        sim.update(|s| image(s, "app:2"));
        let surge_n = max_surge.round_up(replicas);
        let floor = replicas - max_unavailable.round_down(replicas).min(replicas);
        let floor = if surge_n == 0 && floor == replicas { replicas - 1 } else { floor };
        run_to_end(&mut sim, |sim, before| {
            let now = sim.w.now;
            let service = sim.service();
            let rolling_back = service.update_status.as_ref().is_some_and(|s| s.state == UpdateState::RollbackStarted);
            let config = if rolling_back { &service.spec.rollback_config } else { &service.spec.update_config };
            let monitor = config.monitor.as_std().as_millis() as u64;
            let tasks = sim.w.tasks(&sim.svc);
            let live_now = tasks.iter().filter(|t| live(t)).count() as u64;
            assert!(live_now <= replicas + surge_n, "{live_now} tasks live > {replicas} + surge {surge_n}");
            let avail_before = before.values().filter(|t| available(t, now, monitor)).count() as u64;
            let avail_now = tasks.iter().filter(|t| available(t, now, monitor)).count() as u64;
            assert!(
                avail_now >= floor.min(avail_before),
                "available went from {avail_before} to {avail_now} (floor {floor})"
            );
        });
        assert_no_slot_updated_twice(&sim);
        if new_behaviour < 2 {
            prop_assert_eq!(sim.status(), Some(UpdateState::Completed));
            prop_assert!(sim.settled_on("app:2", replicas as usize));
        }
    }

    /// Recreate: a new task is never raised to RUNNING while any old task may still run, the
    /// rollout ends, and no slot is updated twice.
    #[test]
    fn recreate_never_runs_old_and_new_together(
        replicas in 1u64..8,
        new_behaviour in 0u8..4,
        action in 0u8..3,
    ) {
        let mut sim = Sim::new(replicas, |s| {
            s.update_config.strategy = RolloutStrategy::Recreate;
            s.update_config.failure_action = failure_action(action);
            s.update_config.monitor = GoDuration::from_millis(500);
        });
        sim.behaviour.insert("app:2".into(), behaviour(new_behaviour));
        sim.update(|s| image(s, "app:2"));
        let new_version = sim.service().spec_version;
        run_to_end(&mut sim, |sim, _| {
            let tasks = sim.w.tasks(&sim.svc);
            let new_started = tasks.iter().any(|t| {
                t.spec_version == new_version && t.desired_state == TaskState::Running && t.origin == TaskOrigin::Update
            });
            if new_started {
                let old_alive: Vec<&Task> = tasks
                    .iter()
                    .filter(|t| t.spec_version != new_version && t.status.state <= TaskState::Running && t.status.state >= TaskState::Assigned)
                    .collect();
                assert!(old_alive.is_empty(), "a new task started while old ones run: {:?}",
                    old_alive.iter().map(|t| (t.slot, t.status.state)).collect::<Vec<_>>());
            }
        });
        assert_no_slot_updated_twice(&sim);
        if new_behaviour < 2 {
            prop_assert_eq!(sim.status(), Some(UpdateState::Completed));
            prop_assert!(sim.settled_on("app:2", replicas as usize));
        }
    }

    /// Canary steps: before a step's approval (or the end of its pause) no more slots than the
    /// step's count get a new task; approved step by step, the rollout completes on every replica.
    #[test]
    fn canary_never_passes_a_step_before_its_approval(
        replicas in 2u64..9,
        first in 1u64..3,
        middle_percent in 30u32..80,
        timed in any::<bool>(),
        parallelism in 0u64..3,
        budget in any::<bool>(),
    ) {
        let first = first.min(replicas - 1);
        let steps = vec![
            CanaryStep { replicas: Quantity::Count(first), pause: StepPause::Approve, traffic: None },
            CanaryStep {
                replicas: Quantity::Percent(middle_percent),
                pause: if timed { StepPause::For(GoDuration::from_millis(700)) } else { StepPause::Approve },
                traffic: None,
            },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ];
        // Steps must increase at today's replicas (the spec's validation refuses others, e.g. 2
        // then 30% of 3).
        prop_assume!(steps[1].target(replicas) >= first);
        let mut sim = Sim::new(replicas, |s| {
            s.update_config.steps = steps.clone();
            s.update_config.parallelism = parallelism;
            s.update_config.monitor = GoDuration::from_millis(200);
            if budget {
                s.update_config.max_surge = Some(Quantity::Count(1));
                s.update_config.max_unavailable = Some(Quantity::Count(0));
            }
        });
        sim.update(|s| image(s, "app:2"));
        let version = sim.service().spec_version;
        let mut approvals = 0;
        for _ in 0..1_500 {
            if sim.status() == Some(UpdateState::Completed) { break; }
            if let Some(step) = sim.service().update_status.and_then(|s| s.step) {
                let target = steps[step.index as usize].target(replicas);
                let moved: BTreeSet<u64> = sim.w.tasks(&sim.svc).iter()
                    .filter(|t| t.spec_version == version && t.desired_state <= TaskState::Running)
                    .map(|t| t.slot)
                    .collect();
                prop_assert!(moved.len() as u64 <= target, "step {} allows {target}, {} slots moved", step.index, moved.len());
                if step.waiting == Some(StepWait::Approval) {
                    prop_assert_eq!(moved.len() as u64, target);
                    approvals += 1;
                    // Nothing moves while it waits.
                    for _ in 0..5 { sim.round(); }
                    prop_assert_eq!(&sim.service().update_status.unwrap().step, &Some(step));
                    sim.w.apply(vec![Action::ApproveRollout { id: sim.svc.clone() }]);
                    continue;
                }
            }
            sim.round();
        }
        prop_assert_eq!(sim.status(), Some(UpdateState::Completed));
        prop_assert!(sim.settled_on("app:2", replicas as usize));
        // A step that already covers every replica leaves nothing to wait for.
        let waits = steps[..2].iter().filter(|s| s.pause == StepPause::Approve && s.target(replicas) < replicas).count();
        prop_assert_eq!(approvals, waits);
        assert_no_slot_updated_twice(&sim);
    }
}

#[test]
fn budget_decisions_follow_kubernetes_rounding() {
    use crate::strategy::{Budgeted, RolloutView, SlotPhase, SlotView, Start, Strategy};
    let keys: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    let slots = |phase| keys.iter().map(move |key| SlotView { key, phase, old_available: true, retirable: false });
    let view = RolloutView { slots: slots(SlotPhase::OutOfDate).collect(), now: 0, replicas: 4, live: 4, available: 4 };
    // surge 1, unavailable 0: one start-first slot at a time.
    let one = Budgeted { max_surge: Quantity::Count(1), max_unavailable: Quantity::Count(0) }.decide(&view);
    assert_eq!(one.start, vec![("0", Start::StartFirst)]);
    // 25%/25% of 4: one beside (surge rounds up to 1) and one stop-first (unavailable 1).
    let quarter = Budgeted { max_surge: Quantity::Percent(25), max_unavailable: Quantity::Percent(25) }.decide(&view);
    assert_eq!(quarter.start, vec![("0", Start::StartFirst), ("1", Start::StopFirst)]);
    // 10% of 4: surge rounds up to 1, unavailable down to 0.
    let tenth = Budgeted { max_surge: Quantity::Percent(10), max_unavailable: Quantity::Percent(10) }.decide(&view);
    assert_eq!(tenth.start, vec![("0", Start::StartFirst)]);
}

/// A new spec during a canary rollout starts again from step 1 towards the newest spec; the
/// intermediate version's tasks are replaced like old ones.
#[test]
fn a_new_spec_mid_canary_restarts_from_the_first_step() {
    let mut sim = Sim::new(4, |s| {
        s.update_config.steps = vec![
            CanaryStep { replicas: Quantity::Count(1), pause: StepPause::Approve, traffic: None },
            CanaryStep { replicas: Quantity::Percent(50), pause: StepPause::Approve, traffic: None },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ];
        s.update_config.monitor = GoDuration::from_millis(200);
    });
    sim.update(|s| image(s, "app:2"));
    let waiting = |s: &Sim| {
        s.service().update_status.and_then(|u| u.step).is_some_and(|st| st.waiting == Some(StepWait::Approval))
    };
    sim.run_until(waiting, 200);
    sim.w.apply(vec![Action::ApproveRollout { id: sim.svc.clone() }]);
    sim.run_until(waiting, 200);
    assert_eq!(sim.service().update_status.unwrap().step.unwrap().index, 1);
    assert_eq!(sim.running_images().iter().filter(|i| *i == "app:2").count(), 2);
    // Release 3 arrives: step 1 again, one slot on app:3, the app:2 ones waiting their turn.
    sim.update(|s| image(s, "app:3"));
    sim.run_until(waiting, 200);
    let status = sim.service().update_status.unwrap();
    assert_eq!(status.step.as_ref().unwrap().index, 0);
    assert_eq!(status.message, "step 1/3: 1/4 updated, waiting for approval");
    let images = sim.running_images();
    assert_eq!(images.iter().filter(|i| *i == "app:3").count(), 1, "{images:?}");
    for _ in 0..2 {
        sim.w.apply(vec![Action::ApproveRollout { id: sim.svc.clone() }]);
        sim.run_until(|s| waiting(s) || s.status() == Some(UpdateState::Completed), 200);
    }
    sim.run_until(|s| s.status() == Some(UpdateState::Completed) && s.settled_on("app:3", 4), 300);
    assert_no_slot_updated_twice(&sim);
}

/// A rollback during a canary goes in one go with the rollback config, not step by step.
#[test]
fn a_rollback_during_a_canary_is_not_stepped() {
    let mut sim = Sim::new(4, |s| {
        s.update_config.steps = vec![
            CanaryStep { replicas: Quantity::Count(1), pause: StepPause::Approve, traffic: None },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ];
        s.update_config.monitor = GoDuration::from_millis(200);
        s.rollback_config.parallelism = 0;
        s.rollback_config.monitor = GoDuration::from_millis(200);
    });
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.service().update_status.and_then(|u| u.step).is_some_and(|st| st.waiting.is_some()), 200);
    sim.rollback();
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on("app:1", 4), 200);
    assert_eq!(sim.service().update_status.unwrap().step, None);
}

/// `rollout approve` is refused, naming what the rollout is doing, unless a step waits for it.
#[test]
fn approve_is_refused_when_nothing_waits() {
    let mut sim = Sim::new(2, |_| {});
    let approve = |sim: &mut Sim| {
        sim.w.index += 1;
        let batch = shoal_store::Batch::new(sim.w.now, vec![Action::ApproveRollout { id: sim.svc.clone() }]);
        sim.w.state.apply(sim.w.index, &batch).unwrap_err()
    };
    let err = approve(&mut sim);
    assert_eq!(
        err.to_string(),
        "service web has no canary step waiting for approval (no update has run): there is nothing to approve"
    );
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 300);
    let err = approve(&mut sim);
    assert!(err.to_string().contains("(its update is completed)"), "{err}");
}

/// `--update-old-tasks remove`: every task the rollout replaced is retired with its container to
/// be removed once stopped; with the default (stop) none is.
#[test]
fn replaced_tasks_carry_the_old_task_policy() {
    for (policy, removed) in [(OldTasks::Remove, true), (OldTasks::Stop, false)] {
        let mut sim = Sim::new(3, |s| s.update_config.old_tasks = policy);
        let old: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
        sim.update(|s| image(s, "app:2"));
        sim.run_until(|s| s.status() == Some(UpdateState::Completed) && s.settled_on("app:2", 3), 300);
        for id in &old {
            let task = sim.w.state.task(id).expect("kept in the history");
            assert_eq!(task.desired_state, TaskState::Shutdown);
            assert_eq!(task.remove_container, removed, "{policy:?}");
        }
    }
}

/// `--update-old-tasks keep`: each replaced task keeps running beside its replacement, outside
/// the replicas (nothing is added or restarted for it); the next rollout stops and removes the
/// kept ones, and `rollout finish` does so at once.
#[test]
fn kept_old_tasks_run_beside_the_new_ones_until_finished() {
    let mut sim = Sim::new(3, |s| s.update_config.old_tasks = OldTasks::Keep);
    let old: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 300);
    for _ in 0..20 {
        sim.round();
    }
    let kept = |sim: &Sim| -> Vec<Task> {
        sim.w.tasks(&sim.svc).into_iter().filter(|t| t.kept && t.desired_state == TaskState::Running).collect()
    };
    let mut images = sim.running_images();
    images.sort();
    assert_eq!(images, ["app:1", "app:1", "app:1", "app:2", "app:2", "app:2"]);
    assert_eq!(kept(&sim).iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>(), old.iter().cloned().collect());

    // A kept task that fails is not restarted.
    let first = old[0].clone();
    sim.w.set_status(&first, TaskState::Failed);
    for _ in 0..5 {
        sim.round();
    }
    assert_eq!(sim.running_images().iter().filter(|i| *i == "app:1").count(), 2);
    assert_eq!(sim.w.runnable(&sim.svc).len(), 5);

    // The next rollout stops and removes what the last one kept (and keeps its own).
    sim.update(|s| image(s, "app:3"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 300);
    for id in &old[1..] {
        let task = sim.w.state.task(id).unwrap();
        assert!(task.desired_state == TaskState::Shutdown && task.remove_container, "{task:?}");
    }
    assert_eq!(kept(&sim).len(), 3);
    sim.w.apply(vec![Action::FinishRollout { id: sim.svc.clone() }]);
    for _ in 0..3 {
        sim.round();
    }
    assert!(kept(&sim).is_empty());
    assert!(sim.settled_on("app:3", 3));
}

/// The dry run cuts the batches as each strategy would: all at once for Recreate, surge +
/// unavailable at a time for a budget, and at each canary step, saying what the step waits for.
#[test]
fn the_dry_run_batches_follow_the_strategy() {
    let sim = Sim::new(4, |_| {});
    let service = sim.service();
    let plan = |change: &dyn Fn(&mut UpdateConfig)| {
        let mut next = service.spec.clone();
        next.task.container.image = "app:2".into();
        change(&mut next.update_config);
        crate::plan::plan_update(&sim.w.state, &service, &next)
    };
    let sizes = |p: &UpdatePlan| p.batches.iter().map(Vec::len).collect::<Vec<_>>();
    let recreate = plan(&|c| c.strategy = RolloutStrategy::Recreate);
    assert_eq!(sizes(&recreate), [4]);
    assert!(recreate.strategy.starts_with("recreate"), "{}", recreate.strategy);
    let budget = plan(&|c| c.max_surge = Some(Quantity::Percent(25)));
    assert_eq!(sizes(&budget), [2, 2]);
    let canary = plan(&|c| {
        c.steps = vec![
            CanaryStep { replicas: Quantity::Count(1), pause: StepPause::Approve, traffic: None },
            CanaryStep {
                replicas: Quantity::Percent(50),
                pause: StepPause::For(GoDuration::from_secs(30)),
                traffic: None,
            },
            CanaryStep { replicas: Quantity::Percent(100), pause: StepPause::For(GoDuration::ZERO), traffic: None },
        ]
    });
    assert_eq!(sizes(&canary), [1, 1, 1, 1]);
    assert_eq!(
        canary.step_ends,
        [
            (0, "step 1/3 (1) reached: waits for `shoal rollout approve`".to_string()),
            (1, "step 2/3 (50%) reached: pauses 30s".to_string())
        ]
    );
}
