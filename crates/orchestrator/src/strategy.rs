//! The rollout strategy seam (code review R3): the updater observes a service's slots, a
//! strategy decides which out-of-date slots to start now, and the updater acts (stop-first or
//! start-first, batches written with their tasks). Swarm's rolling update is the first strategy;
//! Recreate, maxSurge/maxUnavailable and canary steps decide over the same view.

use shoal_types::{Quantity, RolloutStrategy, Timestamp, UpdateConfig, UpdateOrder};

/// Where one slot of the service stands in the rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPhase {
    /// Runs (or last ran) an older spec: the rollout has to replace it.
    OutOfDate,
    /// The task this rollout made for it has not reached RUNNING yet, or the per-slot delay
    /// after it did has not passed, or (budgeted) its old task still runs beside it.
    InTransition,
    /// Runs the rollout's spec, done.
    UpToDate,
}

/// One slot as a strategy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView<'a> {
    pub key: &'a str,
    pub phase: SlotPhase,
    /// The slot's old task counts as available (running, healthy, for at least `monitor`):
    /// shutting it down costs one unit of the unavailability budget.
    pub old_available: bool,
    /// Budgeted rollouts: the slot's new task is available and its old one still runs, so the
    /// old one may be shut down.
    pub retirable: bool,
}

/// What a strategy sees: every slot of the service, in the updater's order (by slot, or by node
/// for a global service), the replica count and what is running now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutView<'a> {
    pub slots: Vec<SlotView<'a>>,
    pub now: Timestamp,
    /// The replicas the service asks for.
    pub replicas: u64,
    /// The service's tasks not yet terminal (a stop-first replacement counts once its gate is
    /// open, i.e. once its old task ended).
    pub live: u64,
    /// The service's tasks available: running, healthy, for at least `monitor`.
    pub available: u64,
}

impl RolloutView<'_> {
    pub fn count(&self, phase: SlotPhase) -> usize {
        self.slots.iter().filter(|s| s.phase == phase).count()
    }
}

impl<'a> RolloutView<'a> {
    fn out_of_date(&self) -> impl Iterator<Item = &SlotView<'a>> {
        self.slots.iter().filter(|s| s.phase == SlotPhase::OutOfDate)
    }
}

impl<S: Strategy + ?Sized> Strategy for Box<S> {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        (**self).decide(view)
    }
}

/// How a slot's replacement starts: after its old task stopped, or beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    StopFirst,
    StartFirst,
}

impl From<UpdateOrder> for Start {
    fn from(order: UpdateOrder) -> Start {
        match order {
            UpdateOrder::StopFirst => Start::StopFirst,
            UpdateOrder::StartFirst => Start::StartFirst,
        }
    }
}

/// What to do now: the out-of-date slots to start (in order, each with how), and the slots whose
/// old task is to be shut down beside a new one that is available.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision<'a> {
    pub start: Vec<(&'a str, Start)>,
    pub retire: Vec<&'a str>,
}

/// Decides, from a view alone, which slots a rollout starts now. Pure: the same view gives the
/// same decision, so a new leader decides as the old one would have.
pub trait Strategy {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a>;
}

/// Swarm's rolling update: at most `parallelism` slots in transition at once (0: every slot at
/// once), out-of-date slots taken in order, each started in `order`. (A start-first slot's old
/// task is shut down by the updater as soon as the new one runs, as Swarm does.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rolling {
    pub parallelism: u64,
    pub order: UpdateOrder,
}

impl Strategy for Rolling {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        let parallelism = if self.parallelism == 0 { usize::MAX } else { self.parallelism as usize };
        let free = parallelism.saturating_sub(view.count(SlotPhase::InTransition));
        let start = view.out_of_date().map(|s| (s.key, Start::from(self.order))).take(free);
        Decision { start: start.collect(), retire: Vec::new() }
    }
}

/// Kubernetes' Recreate: every out-of-date slot at once, stop-first; the updater gates every
/// new task on every old task having stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recreate;

impl Strategy for Recreate {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        Decision { start: view.out_of_date().map(|s| (s.key, Start::StopFirst)).collect(), retire: Vec::new() }
    }
}

/// Kubernetes' RollingUpdate: tasks not yet terminal never exceed replicas + `max_surge`, and
/// shutting a task down never takes the available ones below replicas − `max_unavailable` (nor
/// below what was available before, when fewer were). A replacement starts beside its old task
/// while the surge allows, else stop-first while the unavailability allows; an old task that is
/// not available costs nothing to replace, so those go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgeted {
    pub max_surge: Quantity,
    pub max_unavailable: Quantity,
}

impl Budgeted {
    /// The budget for `replicas`: surge rounds up, unavailability down (Kubernetes); both 0 is
    /// refused by validation, and would still move one slot at a time stop-first here.
    pub fn limits(&self, replicas: u64) -> (u64, u64) {
        let surge = self.max_surge.round_up(replicas);
        let unavailable = self.max_unavailable.round_down(replicas);
        if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
    }
}

impl Strategy for Budgeted {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        let (surge, unavailable) = self.limits(view.replicas);
        let max_live = view.replicas + surge;
        let floor = view.replicas.saturating_sub(unavailable);
        let (mut live, mut available) = (view.live, view.available);
        let mut decision = Decision::default();
        for slot in view.slots.iter().filter(|s| s.retirable) {
            if !slot.old_available {
                decision.retire.push(slot.key);
            } else if available > floor {
                available -= 1;
                decision.retire.push(slot.key);
            }
        }
        // Old tasks that are not available first: replacing them costs no availability.
        let (unavailable_first, rest): (Vec<&SlotView<'a>>, Vec<&SlotView<'a>>) =
            view.out_of_date().partition(|s| !s.old_available);
        for slot in unavailable_first.into_iter().chain(rest) {
            if live < max_live {
                live += 1;
                decision.start.push((slot.key, Start::StartFirst));
            } else if !slot.old_available {
                decision.start.push((slot.key, Start::StopFirst));
            } else if available > floor {
                available -= 1;
                decision.start.push((slot.key, Start::StopFirst));
            } else {
                break;
            }
        }
        decision
    }
}

/// A canary step: the inner strategy's starts, cut so that no more than `target` slots are
/// updated or in transition.
pub struct Capped<S> {
    pub inner: S,
    pub target: u64,
}

impl<S: Strategy> Strategy for Capped<S> {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        let mut decision = self.inner.decide(view);
        let moved = (view.count(SlotPhase::UpToDate) + view.count(SlotPhase::InTransition)) as u64;
        decision.start.truncate(self.target.saturating_sub(moved) as usize);
        decision
    }
}

/// The strategy a service's update (or rollback) settings ask for, without canary steps (the
/// updater caps it per step).
pub fn strategy_for(config: &UpdateConfig) -> Box<dyn Strategy> {
    match (config.strategy, config.budget()) {
        (RolloutStrategy::Recreate, _) => Box::new(Recreate),
        (RolloutStrategy::Rolling, Some((max_surge, max_unavailable))) => {
            Box::new(Budgeted { max_surge, max_unavailable })
        }
        (RolloutStrategy::Rolling, None) => Box::new(Rolling { parallelism: config.parallelism, order: config.order }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn view(phases: &[SlotPhase]) -> (Vec<String>, Vec<SlotPhase>) {
        ((0..phases.len()).map(|i| format!("{i:03}")).collect(), phases.to_vec())
    }

    fn phase() -> impl proptest::strategy::Strategy<Value = SlotPhase> {
        prop_oneof![Just(SlotPhase::OutOfDate), Just(SlotPhase::InTransition), Just(SlotPhase::UpToDate)]
    }

    proptest! {
        /// Rolling never has more than `parallelism` slots in transition once its decision is
        /// carried out, starts only out-of-date slots, the first ones in order, and as many as
        /// the free workers allow.
        #[test]
        fn rolling_keeps_parallelism_and_order(phases in prop::collection::vec(phase(), 0..40), parallelism in 0u64..6) {
            let (keys, phases) = view(&phases);
            let slots = keys.iter().zip(phases.iter()).map(|(key, phase)| SlotView { key, phase: *phase, old_available: true, retirable: false });
            let view = RolloutView { slots: slots.collect(), now: 0, replicas: keys.len() as u64, live: 0, available: 0 };
            let decision = super::Strategy::decide(&Rolling { parallelism, order: UpdateOrder::StopFirst }, &view);
            let out_of_date: Vec<(&str, Start)> =
                view.slots.iter().filter(|s| s.phase == SlotPhase::OutOfDate).map(|s| (s.key, Start::StopFirst)).collect();
            prop_assert_eq!(&decision.start[..], &out_of_date[..decision.start.len()]);
            let busy = view.count(SlotPhase::InTransition);
            if parallelism == 0 {
                prop_assert_eq!(decision.start.len(), out_of_date.len());
            } else {
                let free = (parallelism as usize).saturating_sub(busy);
                prop_assert_eq!(decision.start.len(), free.min(out_of_date.len()));
                prop_assert!(busy + decision.start.len() <= parallelism as usize || decision.start.is_empty());
            }
        }
    }
}
