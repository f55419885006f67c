//! The store as raft's state machine: applies entries under a write lock and publishes changes.

use std::sync::Arc;

use parking_lot::RwLock;
use shoal_raft::{MemberChange, MemberChangeKind, StateMachine};
use shoal_store::{Change, MembershipChange, MembershipKind, State, StoreError};
use tokio::sync::broadcast;

/// What a proposer learns of its entry: applied, or refused by the store (and why). The changes
/// themselves go to the event stream only, so applying copies no object.
pub type ApplyResult = Result<(), StoreError>;

pub struct StoreMachine {
    pub state: Arc<RwLock<State>>,
    /// Every subscriber receives every change; sharing one copy keeps a receiver from copying
    /// the object (a service with its specs) only to skip it.
    pub events: broadcast::Sender<Arc<Change>>,
}

impl StateMachine for StoreMachine {
    type Output = ApplyResult;

    fn apply(&mut self, index: u64, data: &[u8]) -> ApplyResult {
        let result = self.state.write().apply_entry(index, data);
        match result {
            Ok(changes) => {
                for change in changes {
                    let _ = self.events.send(Arc::new(change));
                }
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
        for change in self.state.write().apply_membership(index, &change) {
            let _ = self.events.send(Arc::new(change));
        }
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.state.read().write_snapshot(out)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let restored = State::restore(data).map_err(|e| e.to_string())?;
        *self.state.write() = restored;
        Ok(())
    }
}
