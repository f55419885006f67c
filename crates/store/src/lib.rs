//! The replicated state machine: an in-memory store of nodes, services, tasks and the cluster
//! object. Every manager applies the same committed batches in the same order and so holds the
//! same state; nothing here reads a clock or a random source (timestamps and ids come inside the
//! batch, versions are raft log indexes).
#![forbid(unsafe_code)]

mod action;
mod state;

pub use action::{Action, Batch, MembershipChange, MembershipKind, Origin};
pub use state::{Change, ChangeKind, Object, SnapshotView, State, StoreError, is_pending};
