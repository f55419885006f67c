//! Runs an [`Engine`] on a dedicated thread: commands arrive over a channel, ticks come from the
//! thread's own timer, and every wake-up drains all queued commands before one Ready, so
//! concurrent proposals share one fsync (group commit).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use raft::prelude::Message;
use tokio::sync::{oneshot, watch};

use crate::engine::{Engine, RaftStatus};
use crate::storage::Durable;
use crate::transport::Transport;
use crate::{MemberChange, ProposeError, StateMachine};

enum Command<O> {
    /// Proposals are gathered and handed to the engine together (see `run`).
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<O, ProposeError>>,
    },
    Control(Control),
}

/// Every command other than a proposal, fed to the engine one at a time.
enum Control {
    ChangeMembers { change: MemberChange, reply: oneshot::Sender<Result<(), ProposeError>> },
    Step(Box<Message>),
    Unreachable(u64),
    PeerDown(u64),
    SnapshotDone { peer: u64, ok: bool },
    TransferLeader(u64),
    Shutdown,
}

/// Proposals waiting for their entry to be applied, at most. Far above what a healthy manager
/// holds (group commit drains them every fsync), so only a manager that cannot keep up refuses.
pub const MAX_PENDING_PROPOSALS: usize = 10_000;

/// A cheap, cloneable handle to a running raft node.
pub struct RaftHandle<O> {
    commands: mpsc::Sender<Command<O>>,
    status: watch::Receiver<RaftStatus>,
    /// Proposals sent and not yet answered, over every clone of the handle.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    sync_stats: Arc<crate::storage::SyncStats>,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            commands: self.commands.clone(),
            status: self.status.clone(),
            pending: self.pending.clone(),
            sync_stats: self.sync_stats.clone(),
        }
    }
}

/// One proposal counted in [`RaftHandle::pending`] until it is answered or abandoned.
struct PendingProposal(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PendingProposal {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl<O: Send + 'static> RaftHandle<O> {
    /// Proposes an entry and waits until it is applied on this manager. Refused with
    /// [`ProposeError::Overloaded`] when [`MAX_PENDING_PROPOSALS`] are already waiting.
    pub async fn propose(&self, data: Vec<u8>) -> Result<O, ProposeError> {
        let before = self.pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _counted = PendingProposal(self.pending.clone());
        if before >= MAX_PENDING_PROPOSALS {
            return Err(ProposeError::Overloaded { pending: before });
        }
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Propose { data, reply }).map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    pub async fn change_members(&self, change: MemberChange) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Control(Control::ChangeMembers { change, reply }))
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Sends a command that expects no answer; a stopped node ignores it.
    fn control(&self, control: Control) {
        let _ = self.commands.send(Command::Control(control));
    }

    pub fn step(&self, msg: Message) {
        self.control(Control::Step(Box::new(msg)));
    }

    pub fn report_unreachable(&self, peer: u64) {
        self.control(Control::Unreachable(peer));
    }

    pub fn report_peer_down(&self, peer: u64) {
        self.control(Control::PeerDown(peer));
    }

    pub fn report_snapshot(&self, peer: u64, ok: bool) {
        self.control(Control::SnapshotDone { peer, ok });
    }

    pub fn transfer_leader(&self, to: u64) {
        self.control(Control::TransferLeader(to));
    }

    pub fn shutdown(&self) {
        self.control(Control::Shutdown);
    }

    /// The log's durable syncs so far.
    pub fn sync_stats(&self) -> &crate::storage::SyncStats {
        &self.sync_stats
    }

    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    pub fn watch_status(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }
}

fn reply_with<T: Send + 'static>(reply: oneshot::Sender<Result<T, ProposeError>>) -> crate::Reply<T> {
    Box::new(move |r| {
        let _ = reply.send(r);
    })
}

/// Feeds one command to the engine; false when the node must stop.
fn handle<D: Durable, M: StateMachine>(engine: &mut Engine<D, M>, control: Control) -> bool {
    match control {
        Control::ChangeMembers { change, reply } => engine.propose_member_change(change, reply_with(reply)),
        Control::Step(msg) => engine.step(*msg),
        Control::Unreachable(peer) => engine.report_unreachable(peer),
        Control::PeerDown(peer) => engine.leader_down(peer),
        Control::SnapshotDone { peer, ok } => engine.report_snapshot(peer, ok),
        Control::TransferLeader(to) => engine.transfer_leader(to),
        Control::Shutdown => return false,
    }
    true
}

/// Starts `engine` on its own thread. `transport` receives outgoing messages.
pub fn spawn<D, M>(
    engine: Engine<D, M>,
    transport: Arc<dyn Transport>,
    tick: Duration,
) -> (RaftHandle<M::Output>, std::thread::JoinHandle<()>)
where
    D: Durable,
    M: StateMachine,
{
    let (tx, rx) = mpsc::channel();
    let (status_tx, status_rx) = watch::channel(engine.status());
    transport.set_members(&engine.status().members);
    let handle =
        RaftHandle { commands: tx, status: status_rx, pending: Arc::default(), sync_stats: engine.sync_stats() };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", engine.id()))
        .spawn(move || run(engine, rx, status_tx, transport, tick))
        .expect("spawning the raft thread");
    (handle, thread)
}

// The tick timer is the runtime's edge with real time; raft's logic only counts ticks.
#[allow(clippy::disallowed_types)]
fn run<D: Durable, M: StateMachine>(
    mut engine: Engine<D, M>,
    commands: mpsc::Receiver<Command<M::Output>>,
    status: watch::Sender<RaftStatus>,
    transport: Arc<dyn Transport>,
    tick: Duration,
) {
    let mut next_tick = std::time::Instant::now() + tick;
    let mut members = engine.status().members;
    'outer: loop {
        let now = std::time::Instant::now();
        let first = if now >= next_tick {
            None
        } else {
            match commands.recv_timeout(next_tick - now) {
                Ok(cmd) => Some(cmd),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        if std::time::Instant::now() >= next_tick {
            engine.tick();
            next_tick += tick;
            if next_tick < std::time::Instant::now() {
                next_tick = std::time::Instant::now() + tick;
            }
        }
        let mut queued = first.into_iter().chain(std::iter::from_fn(|| commands.try_recv().ok())).take(4096);
        // Proposals queued together go to raft as one message: one append per follower for the
        // lot. Any other command first hands over the proposals before it, keeping the order.
        let mut proposals: Vec<(Vec<u8>, crate::Reply<M::Output>)> = Vec::new();
        for cmd in &mut queued {
            match cmd {
                Command::Propose { data, reply } => proposals.push((data, reply_with(reply))),
                Command::Control(control) => {
                    engine.propose_many(std::mem::take(&mut proposals));
                    if !handle(&mut engine, control) {
                        break 'outer;
                    }
                }
            }
        }
        engine.propose_many(proposals);
        if let Err(e) = engine.process_ready(&mut |msgs| transport.send(msgs)) {
            // Storage failed: continuing could acknowledge writes that are not durable.
            tracing::error!(error = %e, "raft storage failed; stopping this raft node");
            break;
        }
        let current = engine.status();
        if current.members != members {
            members = current.members.clone();
            transport.set_members(&members);
        }
        let removed = current.removed;
        status.send_if_modified(|old| {
            if *old != current {
                *old = current;
                true
            } else {
                false
            }
        });
        if removed {
            tracing::warn!("this manager was removed from the raft configuration; stopping raft");
            break;
        }
    }
    engine.fail_pending(ProposeError::Stopped);
    let mut last = engine.status();
    last.role = crate::RaftRole::Follower;
    last.leader_ready = false;
    last.leader_id = 0;
    let _ = status.send(last);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that takes no proposals (its command queue is never read): the queue stops growing
    /// at [`MAX_PENDING_PROPOSALS`], later proposals are refused at once, and the count goes back
    /// down as the waiting ones end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proposals_beyond_the_bound_are_refused_as_overloaded() {
        let (tx, rx) = mpsc::channel::<Command<()>>();
        let (_status_tx, status_rx) = watch::channel(RaftStatus::default());
        let handle =
            RaftHandle { commands: tx, status: status_rx, pending: Arc::default(), sync_stats: Arc::default() };
        let waiting: Vec<_> = (0..MAX_PENDING_PROPOSALS)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.propose(Vec::new()).await })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while handle.pending.load(std::sync::atomic::Ordering::Acquire) < MAX_PENDING_PROPOSALS {
            assert!(tokio::time::Instant::now() < deadline, "the proposals never queued");
            tokio::task::yield_now().await;
        }
        let refused = handle.propose(Vec::new()).await;
        assert_eq!(refused, Err(ProposeError::Overloaded { pending: MAX_PENDING_PROPOSALS }));
        // The node stops: every waiting proposal ends, and none is left counted.
        drop(rx);
        for proposal in waiting {
            assert_eq!(proposal.await.unwrap(), Err(ProposeError::Stopped));
        }
        assert_eq!(handle.pending.load(std::sync::atomic::Ordering::Acquire), 0);
    }
}
