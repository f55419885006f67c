//! The store as raft's state machine: applies entries under a write lock and publishes changes.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::RwLock;
use shoal_raft::{MemberChange, MemberChangeKind, StateMachine};
use shoal_store::{Change, ChangeKind, MembershipChange, MembershipKind, State, StoreError};
use tokio::sync::broadcast;

use crate::router::ChangeRouter;

/// What a proposer learns of its entry: applied, or refused by the store (and why). The changes
/// themselves go to the event stream only, so applying copies no object.
pub type ApplyResult = Result<(), StoreError>;

pub struct StoreMachine {
    pub state: Arc<RwLock<State>>,
    /// Every subscriber receives every change; sharing one copy keeps a receiver from copying
    /// the object (a service with its specs) only to skip it.
    pub events: broadcast::Sender<Arc<Change>>,
    pub removals: Arc<RemovalLog>,
    /// The dispatcher's per-node routing, fed here rather than from the broadcast: a routing
    /// task reading the broadcast would lag behind a pass's burst exactly as the sessions did,
    /// while routing on this thread costs a few hash lookups per change and never waits.
    pub router: Arc<ChangeRouter>,
}

/// How many removals [`RemovalLog`] keeps.
pub const REMOVALS_KEPT: usize = 10_000;

/// The most recent removals, oldest first, so `Watch --since` can replay them: a removed object
/// leaves nothing in the state to replay. Bounded, as the Docker daemon's event buffer behind
/// `docker events --since` is; every manager applies the same entries, so each holds the same
/// removals (back to its last restart).
#[derive(Default)]
pub struct RemovalLog(parking_lot::Mutex<VecDeque<Arc<Change>>>);

impl RemovalLog {
    fn record(&self, changes: &[Arc<Change>]) {
        let mut log = self.0.lock();
        for change in changes.iter().filter(|c| c.kind == ChangeKind::Remove) {
            if log.len() == REMOVALS_KEPT {
                log.pop_front();
            }
            log.push_back(change.clone());
        }
    }

    /// The removals after raft index `index` and at or after `at` (Unix milliseconds). Read while
    /// holding the state's read lock, it holds exactly the removals up to the state's applied
    /// index: they are recorded under the write lock of the same apply.
    pub fn since(&self, index: u64, at: u64) -> Vec<Change> {
        let log = self.0.lock();
        let start = log.partition_point(|c| c.index <= index);
        log.range(start..).filter(|c| c.at >= at).map(|c| Change::clone(c)).collect()
    }
}

impl StateMachine for StoreMachine {
    type Output = ApplyResult;

    fn apply(&mut self, index: u64, data: &[u8]) -> ApplyResult {
        let mut state = self.state.write();
        match state.apply_entry(index, data) {
            Ok(changes) => {
                let changes: Vec<Arc<Change>> = changes.into_iter().map(Arc::new).collect();
                self.removals.record(&changes);
                drop(state);
                self.publish(changes);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(index, error = %e, "log entry refused by the store");
                Err(e)
            }
        }
    }

    fn apply_membership(&mut self, index: u64, change: &MemberChange) {
        let change = MembershipChange {
            kind: match change.kind {
                MemberChangeKind::AddLearner => MembershipKind::AddLearner,
                MemberChangeKind::Promote => MembershipKind::Promote,
                MemberChangeKind::Remove => MembershipKind::Remove,
            },
            raft_id: change.raft_id,
            node_id: change.member.node_id.clone(),
            addr: change.member.addr.clone(),
            hostname: change.member.hostname.clone(),
            at: change.at,
        };
        let mut state = self.state.write();
        let changes: Vec<Arc<Change>> = state.apply_membership(index, &change).into_iter().map(Arc::new).collect();
        self.removals.record(&changes);
        drop(state);
        self.publish(changes);
    }

    fn snapshot(&self) -> shoal_raft::SnapshotWriteFn {
        // A copy in O(services + nodes) under the read lock (the tasks are shared); serialising
        // 100k tasks takes ~150 ms, which now happens on the snapshot writer's thread.
        let view = self.state.read().snapshot_view();
        Box::new(move |out| view.write(out))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let restored = State::restore(data).map_err(|e| e.to_string())?;
        *self.state.write() = restored;
        // No change describes what the snapshot replaced: every agent session reads its node afresh.
        self.router.resync_all();
        Ok(())
    }
}

impl StoreMachine {
    /// Hands an applied entry's changes to the dispatcher's sessions and to the broadcast's
    /// subscribers, after the write lock is released so readers are not held up.
    fn publish(&self, changes: Vec<Arc<Change>>) {
        self.router.route(&changes);
        for change in changes {
            let _ = self.events.send(change);
        }
    }
}
