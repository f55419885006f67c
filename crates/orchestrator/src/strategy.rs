//! The rollout strategy seam (code review R3): the updater observes a service's slots, a
//! strategy decides which out-of-date slots to start now, and the updater acts (stop-first or
//! start-first, batches written with their tasks). Swarm's rolling update is the first strategy;
//! Recreate, maxSurge/maxUnavailable and canary steps decide over the same view.

use shoal_types::{Timestamp, UpdateConfig};

/// Where one slot of the service stands in the rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPhase {
    /// Runs (or last ran) an older spec: the rollout has to replace it.
    OutOfDate,
    /// The task this rollout made for it has not reached RUNNING yet, or the per-slot delay
    /// after it did has not passed.
    InTransition,
    /// Runs the rollout's spec, done.
    UpToDate,
}

/// What a strategy sees: every slot of the service, in the updater's order (by slot, or by node
/// for a global service), and the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutView<'a> {
    pub slots: Vec<(&'a str, SlotPhase)>,
    pub now: Timestamp,
}

impl RolloutView<'_> {
    pub fn count(&self, phase: SlotPhase) -> usize {
        self.slots.iter().filter(|(_, p)| *p == phase).count()
    }
}

/// What to do now: the out-of-date slots to start, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision<'a> {
    pub start: Vec<&'a str>,
}

/// Decides, from a view alone, which slots a rollout starts now. Pure: the same view gives the
/// same decision, so a new leader decides as the old one would have.
pub trait Strategy {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a>;
}

/// Swarm's rolling update: at most `parallelism` slots in transition at once (0: every slot at
/// once), out-of-date slots taken in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rolling {
    pub parallelism: u64,
}

impl Strategy for Rolling {
    fn decide<'a>(&self, view: &RolloutView<'a>) -> Decision<'a> {
        let parallelism = if self.parallelism == 0 { usize::MAX } else { self.parallelism as usize };
        let free = parallelism.saturating_sub(view.count(SlotPhase::InTransition));
        let start = view.slots.iter().filter(|(_, p)| *p == SlotPhase::OutOfDate).map(|(key, _)| *key).take(free);
        Decision { start: start.collect() }
    }
}

/// The strategy a service's update (or rollback) settings ask for.
pub fn strategy_for(config: &UpdateConfig) -> impl Strategy + use<> {
    Rolling { parallelism: config.parallelism }
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
            let view = RolloutView { slots: keys.iter().map(String::as_str).zip(phases.iter().copied()).collect(), now: 0 };
            let decision = super::Strategy::decide(&Rolling { parallelism }, &view);
            let out_of_date: Vec<&str> =
                view.slots.iter().filter(|(_, p)| *p == SlotPhase::OutOfDate).map(|(k, _)| *k).collect();
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
