//! Deterministic in-memory raft cluster tests: elections, replication, leader loss, minority
//! partitions, lossy and reordering networks, crash-restart from synced storage, snapshot
//! catch-up and membership changes, each over many seeds. See `sim` for the simulator and the
//! invariants it checks after every step.

mod sim;

use std::sync::{Arc, Mutex};

use raft::prelude::MessageType;
use rand::Rng;
use rand::seq::SliceRandom;
use shoal_raft::{MemDurable, MemberChange, MemberChangeKind, ProposeError, RaftRole};
use sim::{Applied, Options, Outcome, Sim, seeds};

/// Steps allowed for an election (election_tick 5, randomised up to 10, pre-vote + vote rounds).
const ELECTION: u64 = 300;
/// Steps allowed for a healed cluster to converge.
const CONVERGE: u64 = 1_500;

fn other_than(sim: &mut Sim, ids: &[u64], excluded: &[u64]) -> u64 {
    let candidates: Vec<u64> = ids.iter().copied().filter(|id| !excluded.contains(id)).collect();
    *candidates.choose(&mut sim.rng).unwrap()
}

/// Scenario 1: An election happens; proposals to the leader are replicated and applied everywhere.
#[test]
fn election_and_replication() {
    for n in [3, 5] {
        for seed in seeds(100_000 + 10_000 * n, 50) {
            let mut sim = Sim::new(&format!("replication{n}"), seed, n, Options::default());
            sim.reorder = seed % 2 == 0;
            let leader = sim.wait_leader(ELECTION);
            let term = sim.status(leader).term;
            let mut taken = Vec::new();
            for _ in 0..30 {
                if sim.rng.gen_bool(0.5) {
                    let (value, ok) = sim.propose(leader);
                    assert!(ok, "seed {seed}: the leader refused {value}: {:?}", sim.outcome(&value));
                    taken.push(value);
                }
                sim.step();
            }
            sim.wait_converged(CONVERGE);
            // A healthy network keeps one leader, so every proposal completes with its index.
            assert_eq!(sim.leader(), Some(leader), "seed {seed}: leadership moved on a healthy network");
            assert_eq!(sim.status(leader).term, term);
            assert!(!taken.is_empty());
            for value in &taken {
                assert!(
                    matches!(sim.outcome(value), Outcome::Acked(_)),
                    "seed {seed}: {value} was not acknowledged: {:?}",
                    sim.outcome(value)
                );
            }
            assert_eq!(sim.applied_values(leader), taken, "seed {seed}: applied order differs from proposal order");
            for id in sim.ids() {
                assert_eq!(sim.status(id).leader_id, leader);
            }
            // A follower refuses proposals and names the leader.
            let follower = {
                let ids = sim.ids();
                other_than(&mut sim, &ids, &[leader])
            };
            let (value, ok) = sim.propose(follower);
            assert!(!ok);
            assert_eq!(sim.outcome(&value), Outcome::Failed(ProposeError::NotLeader { leader: Some(leader) }));
        }
    }
}

/// Scenario 2: The leader crashes or is cut off; the rest elect a new one and keep committing.
#[test]
fn leader_loss() {
    for n in [3, 5] {
        for seed in seeds(200_000 + 10_000 * n, 50) {
            let mut sim = Sim::new(&format!("leader_loss{n}"), seed, n, Options::default());
            sim.reorder = seed % 2 == 1;
            let old = sim.wait_leader(ELECTION);
            let old_term = sim.status(old).term;
            sim.run_with_writes(40, 0.5);
            let crash = seed % 2 == 0;
            if crash {
                sim.crash(old);
            } else {
                sim.isolate(&[old]);
            }
            let rest: Vec<u64> = sim.ids().into_iter().filter(|id| *id != old).collect();
            let new = sim.wait_leader_among(&rest, ELECTION);
            assert!(sim.status(new).term > old_term);
            let before = sim.acked().len();
            let written = sim.write_acked(10, 500);
            assert_eq!(sim.acked().len(), before + 10);
            if crash {
                sim.restart(old);
            } else {
                // Cut off, the old leader stepped down on its own (check-quorum).
                let s = sim.status(old);
                assert!(s.role != RaftRole::Leader || s.term > old_term, "seed {seed}: isolated leader still leads");
                sim.heal();
            }
            sim.run_with_writes(40, 0.3);
            sim.wait_converged(CONVERGE);
            let log = sim.log(old);
            for value in &written {
                assert!(
                    log.iter().any(|(_, a)| *a == Applied::Data(value.clone())),
                    "seed {seed}: {value} missing on {old}"
                );
            }
        }
    }
}

/// Scenario 3: A 5-node cluster splits into the leader with one follower and the other three. Nothing
/// proposed at the old leader is acknowledged or survives; the majority elects and commits; after
/// healing everyone converges on the majority's log.
#[test]
fn minority_leader_partition() {
    for seed in seeds(300_000, 100) {
        let mut sim = Sim::new("minority_leader", seed, 5, Options::default());
        sim.reorder = seed % 3 == 0;
        let old = sim.wait_leader(ELECTION);
        let old_term = sim.status(old).term;
        sim.run_with_writes(30, 0.5);
        let buddy = {
            let ids = sim.ids();
            other_than(&mut sim, &ids, &[old])
        };
        sim.isolate(&[old, buddy]);
        let mut minority = Vec::new();
        // Many at once, so the old leader's log runs past what the majority commits meanwhile and
        // healing truncates it to a shorter one.
        for _ in 0..30 {
            let (value, taken) = sim.propose(old);
            assert!(taken, "seed {seed}: the old leader refused a proposal right after the split");
            minority.push(value);
        }
        // Keep proposing at the old leader while it still thinks it leads.
        for _ in 0..40 {
            if sim.status(old).role == RaftRole::Leader {
                let (value, _) = sim.propose(old);
                minority.push(value);
            }
            sim.step();
        }
        let majority: Vec<u64> = sim.ids().into_iter().filter(|id| *id != old && *id != buddy).collect();
        let new = sim.wait_leader_among(&majority, ELECTION);
        assert!(sim.status(new).term > old_term);
        let written = sim.write_acked(10, 500);
        // The minority cannot commit: none of its proposals completed successfully.
        for value in &minority {
            assert!(
                !matches!(sim.outcome(value), Outcome::Acked(_)),
                "seed {seed}: {value} proposed at the minority leader {old} was acknowledged"
            );
        }
        sim.heal();
        sim.run_with_writes(30, 0.3);
        sim.wait_converged(CONVERGE);
        let s = sim.status(old);
        assert!(s.role != RaftRole::Leader && s.term > old_term, "seed {seed}: old leader did not step down: {s:?}");
        for value in &minority {
            // The old leader failed every one of them once it lost leadership.
            let outcome = sim.outcome(value);
            assert!(
                matches!(outcome, Outcome::Failed(ProposeError::LeadershipLost | ProposeError::NotLeader { .. })),
                "seed {seed}: {value}: {outcome:?}"
            );
            for id in sim.ids() {
                assert!(
                    !sim.log(id).iter().any(|(_, a)| *a == Applied::Data(value.clone())),
                    "seed {seed}: unacknowledged minority write {value} applied on node {id}"
                );
            }
        }
        for value in &written {
            assert!(sim.log(old).iter().any(|(_, a)| *a == Applied::Data(value.clone())));
        }
        // Their truncated tails must be gone from disk too.
        sim.crash_restart(old);
        sim.crash_restart(buddy);
        sim.wait_converged(CONVERGE);
    }
}

/// Scenario 4: Lossy, reordering links and flapping partitions; once the network heals, everything
/// converges and nothing acknowledged is lost.
#[test]
fn lossy_reordering_network() {
    for n in [3, 5] {
        for seed in seeds(400_000 + 10_000 * n, 40) {
            let mut sim = Sim::new(&format!("lossy{n}"), seed, n, Options::default());
            sim.reorder = true;
            sim.drop_prob = sim.rng.gen_range(0.1..=0.3);
            for _ in 0..6 {
                // Sometimes cut one node off for a while.
                if sim.rng.gen_bool(0.4) {
                    let victim = sim.rng.gen_range(1..=n);
                    sim.isolate(&[victim]);
                }
                sim.run_with_writes(60, 0.4);
                sim.blocked.clear();
            }
            sim.heal();
            // Healed, the cluster commits again and converges.
            sim.write_acked(5, 800);
            sim.wait_converged(CONVERGE);
            assert!(sim.stats.dropped > 0, "seed {seed}: nothing was dropped");
        }
    }
}

/// Scenario 5: Crashes lose unsynced writes; restarted nodes catch up and nothing acknowledged is lost,
/// even when the leader and a follower crash together and when every node restarts.
#[test]
fn crash_restart() {
    for n in [3, 5] {
        for seed in seeds(500_000 + 10_000 * n, 40) {
            let options = if seed % 2 == 0 { Options::small_snapshots() } else { Options::default() };
            let mut sim = Sim::new(&format!("crash{n}"), seed, n, options);
            sim.reorder = seed % 3 != 0;
            sim.wait_leader(ELECTION);
            // Random crash-restarts of single nodes while writing.
            for _ in 0..8 {
                sim.run_with_writes(20, 0.5);
                let victim = sim.rng.gen_range(1..=n);
                if sim.rng.gen_bool(0.5) {
                    sim.crash_during_next_ready(victim);
                } else {
                    sim.crash(victim);
                }
                let down = sim.rng.gen_range(0..30);
                sim.run_with_writes(down, 0.5);
                sim.restart(victim);
            }
            sim.wait_leader(ELECTION);
            sim.write_acked(3, 500);
            // The leader and one follower at once: a minority of 5 (a majority of 3, so the
            // 3-node cluster waits for them to return).
            let leader = sim.leader().unwrap();
            let follower = {
                let ids = sim.ids();
                other_than(&mut sim, &ids, &[leader])
            };
            let pending: Vec<String> = (0..3).filter_map(|_| sim.propose_at_leader()).collect();
            let extra = sim.rng.gen_range(0..3);
            sim.run(extra);
            if sim.rng.gen_bool(0.5) {
                sim.crash(leader);
                sim.crash(follower);
            } else {
                sim.crash_mid_ready.extend([leader, follower]);
                sim.step();
            }
            if n == 5 {
                let rest: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader && *id != follower).collect();
                sim.wait_leader_among(&rest, ELECTION);
                sim.write_acked(5, 500);
            } else {
                sim.run(50);
                assert_eq!(sim.leader(), None, "seed {seed}: one node of three elected itself");
            }
            sim.restart(leader);
            sim.restart(follower);
            sim.wait_leader(ELECTION);
            sim.write_acked(3, 500);
            sim.run_with_writes(20, 0.5);
            // Everyone at once, with messages in flight, some in the middle of a Ready.
            let mid: Vec<u64> = sim.ids().into_iter().filter(|_| sim.rng.gen_bool(0.5)).collect();
            sim.crash_mid_ready.extend(mid);
            sim.step();
            for id in sim.live_ids() {
                sim.crash(id);
            }
            for id in sim.ids() {
                sim.restart(id);
            }
            sim.wait_leader(ELECTION);
            sim.write_acked(3, 500);
            sim.wait_converged(CONVERGE);
            for value in pending {
                // Crashed before or after commit: either outcome is fine, but never a lie.
                if let Outcome::Acked(index) = sim.outcome(&value) {
                    assert_eq!(
                        sim.log(sim.leader().unwrap()).iter().find(|(i, _)| *i == index).map(|(_, a)| a.clone()),
                        Some(Applied::Data(value))
                    );
                }
            }
            assert!(sim.stats.restarts >= 8 + 2 + n);
        }
    }
}

/// Scenario 6: With a small snapshot interval, a node that missed more than the kept log catches up
/// through a snapshot and ends with the same applied list, also after restarting from it.
#[test]
fn snapshot_catch_up() {
    for n in [3, 5] {
        for seed in seeds(600_000 + 10_000 * n, 40) {
            let mut sim = Sim::new(&format!("snapshot{n}"), seed, n, Options::small_snapshots());
            sim.reorder = seed % 2 == 0;
            let leader = sim.wait_leader(ELECTION);
            sim.write_acked(3, 300);
            let lagger = {
                let ids = sim.ids();
                other_than(&mut sim, &ids, &[leader])
            };
            let crash = seed % 3 != 0;
            if crash {
                sim.crash(lagger);
            } else {
                sim.isolate(&[lagger]);
            }
            let lagger_last = if crash { 0 } else { sim.status(lagger).last_index };
            if seed % 4 == 1 {
                sim.drop_prob = 0.1;
            }
            sim.write_acked(60, 2_000);
            let leader = sim.wait_leader(ELECTION);
            let first = sim.first_log_index(leader);
            let lagger_last = if crash {
                // What survived on its disk is all it can offer the leader.
                let durable: MemDurable = sim.nodes[&lagger].durable.clone();
                let storage = shoal_raft::RaftStorage::open(durable).unwrap();
                raft::Storage::last_index(&storage).unwrap()
            } else {
                lagger_last
            };
            assert!(
                first > lagger_last + 1,
                "seed {seed}: the leader still holds index {} that node {lagger} needs (first {first})",
                lagger_last + 1
            );
            let before = sim.stats.snapshots_delivered;
            if crash {
                sim.restart(lagger);
            }
            sim.heal();
            if seed % 2 == 1 {
                // Power fails while it installs the snapshot; it comes back and tries again.
                sim.crash_on_snapshot = Some(lagger);
                sim.run_until(&format!("node {lagger} crashed installing a snapshot"), 500, |sim| !sim.is_live(lagger));
                sim.run(5);
                sim.restart(lagger);
            }
            sim.run_with_writes(30, 0.3);
            sim.wait_converged(CONVERGE);
            assert!(
                sim.stats.snapshots_delivered > before,
                "seed {seed}: node {lagger} caught up without a snapshot\n{}",
                sim.describe()
            );
            assert!(sim.status(lagger).applied >= first);
            // Restarting from the installed snapshot keeps the same state.
            let applied_before = sim.log(lagger).to_vec();
            sim.crash_restart(lagger);
            assert!(sim.log(lagger).len() <= applied_before.len());
            assert_eq!(sim.log(lagger), &applied_before[..sim.log(lagger).len()]);
            sim.write_acked(5, 500);
            sim.wait_converged(CONVERGE);
        }
    }
}

/// Scenario 7: One bootstrapped node grows to three voters through learners, then drops one; the removed
/// node knows it and the others keep committing.
#[test]
fn membership_changes() {
    for seed in seeds(700_000, 80) {
        let options = if seed % 2 == 0 { Options::small_snapshots() } else { Options::default() };
        let mut sim = Sim::new("membership", seed, 1, options);
        sim.reorder = seed % 3 != 0;
        sim.add_node(2, MemDurable::default());
        sim.add_node(3, MemDurable::default());
        // Not yet members, but not removed either.
        assert!(!sim.engine(2).is_removed() && !sim.engine(3).is_removed());
        let leader = sim.wait_leader(ELECTION);
        assert_eq!(leader, 1);
        let count = sim.rng.gen_range(1..30);
        sim.write_acked(count, 500);
        for id in [2, 3] {
            sim.change_members(MemberChangeKind::AddLearner, id, 500);
            assert!(sim.status(1).learners.contains(&id));
            sim.run_with_writes(20, 0.5);
            sim.run_until(&format!("learner {id} caught up"), 500, |sim| {
                sim.status(id).applied >= sim.status(1).commit
            });
            assert_eq!(sim.status(id).role, RaftRole::Follower);
            if seed % 4 == 3 {
                // A learner restarts from the snapshot it was sent (taken at or after its addition).
                sim.crash_restart(id);
                assert!(!sim.engine(id).is_removed());
                assert!(sim.status(id).learners.contains(&id));
            }
            sim.change_members(MemberChangeKind::Promote, id, 500);
            sim.write_acked(3, 500);
            if seed % 4 == 1 {
                sim.crash_restart(id);
                assert!(!sim.engine(id).is_removed());
            }
        }
        sim.wait_converged(CONVERGE);
        for id in [1, 2, 3] {
            let s = sim.status(id);
            assert_eq!(s.voters, vec![1, 2, 3], "seed {seed}: node {id}: {s:?}");
            assert!(s.learners.is_empty());
            assert_eq!(s.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        }
        // Remove a follower.
        let leader = sim.leader().unwrap();
        let removed = other_than(&mut sim, &[1, 2, 3], &[leader]);
        // FIFO links while the removal commits: the leader forgets a node's progress as soon as it
        // applies the removal, so the removed node learns the entry is committed only from the
        // commit broadcast sent just before. Reordered behind the entry itself (or lost), that
        // broadcast is rejected and the node never learns it was removed (raft-rs behaviour).
        let reorder = sim.reorder;
        sim.reorder = false;
        sim.change_members(MemberChangeKind::Remove, removed, 500);
        sim.run_until(&format!("node {removed} knows it was removed"), 500, |sim| sim.engine(removed).is_removed());
        sim.reorder = reorder;
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != removed).collect();
        sim.write_acked(10, 1_000);
        sim.run_with_writes(50, 0.3);
        sim.wait_converged(CONVERGE);
        for &id in &rest {
            let s = sim.status(id);
            assert_eq!(s.voters, rest, "seed {seed}: node {id}");
            assert!(!s.members.contains_key(&removed));
        }
        assert!(sim.engine(removed).is_removed() && sim.status(removed).removed);
        assert!(sim.status(removed).role != RaftRole::Leader);
        // Restarted, it still knows (see also `removed_node_remembers_removal_after_own_snapshot`).
        sim.crash_restart(removed);
        assert!(sim.engine(removed).is_removed(), "seed {seed}: restarted node {removed} forgot its removal");
        sim.run(20);
        assert!(sim.engine(removed).is_removed());
        // The removed node never applied anything the others did not.
        sim.check_prefixes();
        let kinds: Vec<(MemberChangeKind, u64)> = sim
            .log(rest[0])
            .iter()
            .filter_map(|(_, a)| match a {
                Applied::Member { kind, raft_id } => Some((*kind, *raft_id)),
                Applied::Data(_) => None,
            })
            .collect();
        use MemberChangeKind::*;
        assert_eq!(kinds, vec![(AddLearner, 2), (Promote, 2), (AddLearner, 3), (Promote, 3), (Remove, removed)]);
    }
}

type ReplySlot = Arc<Mutex<Option<Result<(), ProposeError>>>>;

/// Scenario 7b: Membership changes proposed while another is still in flight (a join racing the leader's
/// automatic promotion) each get an answer: raft-rs turns a conf change proposed while another is
/// unapplied into an empty entry, which must not leave its caller waiting forever.
#[test]
fn concurrent_member_changes_all_complete() {
    for seed in seeds(710_000, 40) {
        let mut sim = Sim::new("concurrent_members", seed, 3, Options::default());
        sim.reorder = seed % 2 == 0;
        sim.add_node(4, MemDurable::default());
        sim.add_node(5, MemDurable::default());
        let leader = sim.wait_leader(ELECTION);
        sim.write_acked(2, 300);
        let replies: Vec<ReplySlot> = (0..2).map(|_| Arc::new(Mutex::new(None))).collect();
        for (slot, id) in replies.iter().zip([4, 5]) {
            let slot = slot.clone();
            let change =
                MemberChange { kind: MemberChangeKind::AddLearner, raft_id: id, member: sim::member(id), at: 0 };
            sim.engine_mut(leader).propose_member_change(change, Box::new(move |r| *slot.lock().unwrap() = Some(r)));
        }
        sim.run_until("both membership changes answered", 300, |_| replies.iter().all(|r| r.lock().unwrap().is_some()));
        let results: Vec<Result<(), ProposeError>> =
            replies.iter().map(|r| r.lock().unwrap().clone().unwrap()).collect();
        assert_eq!(results[0], Ok(()), "seed {seed}");
        assert!(matches!(results[1], Err(ProposeError::MemberChangePending)), "seed {seed}: {:?}", results[1]);
        assert_eq!(sim.status(leader).learners, vec![4], "seed {seed}");
        // Once the first is applied, the second goes through.
        sim.change_members(MemberChangeKind::AddLearner, 5, 300);
        for id in [4, 5] {
            sim.run_until(&format!("learner {id} caught up"), 500, |sim| {
                sim.status(id).applied >= sim.status(leader).commit
            });
            sim.change_members(MemberChangeKind::Promote, id, 300);
        }
        sim.write_acked(5, 500);
        sim.wait_converged(CONVERGE);
        assert_eq!(sim.status(leader).voters, vec![1, 2, 3, 4, 5]);
    }
}

/// Scenario 8: Everything at once on 5 nodes with small snapshots: loss, reordering, shifting partitions,
/// crashes (some in the middle of a Ready) and restarts; then the network heals, every node
/// comes back and the cluster converges with every acknowledged write.
#[test]
fn chaos() {
    for seed in seeds(800_000, 60) {
        let options = if seed % 3 == 0 { Options::default() } else { Options::small_snapshots() };
        let mut sim = Sim::new("chaos", seed, 5, options);
        sim.reorder = true;
        let ids = sim.ids();
        for _ in 0..12 {
            sim.drop_prob = *[0.0, 0.05, 0.2].choose(&mut sim.rng).unwrap();
            sim.blocked.clear();
            match sim.rng.gen_range(0..4) {
                0 => {
                    let group: Vec<u64> = ids.iter().copied().filter(|_| sim.rng.gen_bool(0.4)).collect();
                    if !group.is_empty() {
                        sim.isolate(&group);
                    }
                }
                1 => {
                    // Not a symmetric partition: one link in one direction.
                    let a = *ids.choose(&mut sim.rng).unwrap();
                    let b = *ids.choose(&mut sim.rng).unwrap();
                    sim.blocked.insert((a, b));
                }
                _ => {}
            }
            let live = sim.live_ids();
            let victim = *ids.choose(&mut sim.rng).unwrap();
            if live.contains(&victim) && live.len() > 3 && sim.rng.gen_bool(0.5) {
                if sim.rng.gen_bool(0.5) {
                    sim.crash_during_next_ready(victim);
                } else {
                    sim.crash(victim);
                }
            } else if !live.contains(&victim) {
                sim.restart(victim);
            }
            let steps = sim.rng.gen_range(10..60);
            sim.run_with_writes(steps, 0.5);
        }
        for id in sim.ids() {
            if !sim.is_live(id) {
                sim.restart(id);
            }
        }
        sim.heal();
        sim.write_acked(3, 1_000);
        sim.wait_converged(CONVERGE);
    }
}

/// Scenario 7c: a removed node that snapshots after its removal (automatically, when the removal
/// lands on its `snapshot_interval`, or through `take_snapshot`) never re-applies the removal
/// after a restart; it must still know it was removed, from the stored configuration.
#[test]
fn removed_node_remembers_removal_after_own_snapshot() {
    for seed in seeds(720_000, 5) {
        let mut sim = Sim::new("removed_snapshot", seed, 3, Options::default());
        let leader = sim.wait_leader(ELECTION);
        sim.write_acked(3, 300);
        let removed = {
            let ids = sim.ids();
            other_than(&mut sim, &ids, &[leader])
        };
        sim.change_members(MemberChangeKind::Remove, removed, 300);
        sim.run_until("removal applied", 300, |sim| sim.engine(removed).is_removed());
        let removal = sim
            .log(removed)
            .iter()
            .find(|(_, a)| *a == Applied::Member { kind: MemberChangeKind::Remove, raft_id: removed })
            .map(|(i, _)| *i)
            .unwrap();
        sim.engine_mut(removed).take_snapshot().unwrap();
        let snapshot_index = sim.engine(removed).storage().snapshot_metadata().index;
        assert!(snapshot_index >= removal, "seed {seed}: snapshot at {snapshot_index} does not cover {removal}");
        sim.crash_restart(removed);
        assert!(sim.engine(removed).is_removed(), "seed {seed}: node {removed} forgot it was removed");
        sim.run(100);
        assert!(sim.engine(removed).is_removed() && sim.status(removed).removed);
        // The others are not removed, before or after a restart from their own snapshots.
        for id in sim.ids().into_iter().filter(|id| *id != removed) {
            sim.engine_mut(id).take_snapshot().unwrap();
            sim.crash_restart(id);
            assert!(!sim.engine(id).is_removed(), "seed {seed}: node {id} thinks it was removed");
        }
        sim.write_acked(3, 500);
        sim.wait_converged(CONVERGE);
    }
}

/// Proposals handed over together leave the leader as one append per follower (not one per
/// entry), are acknowledged each with its own index, and are applied in the order given.
#[test]
fn proposals_handed_over_together_share_one_append() {
    for seed in seeds(800_000, 20) {
        let mut sim = Sim::new("batched", seed, 3, Options::default());
        let leader = sim.wait_leader(ELECTION);
        let before = sim.status(leader).last_index;
        let proposed = sim.propose_many(leader, 10);
        assert!(proposed.iter().all(|(_, taken)| *taken), "seed {seed}: the leader refused part of a batch");
        sim.process_all();
        let appends: Vec<(u64, usize)> = sim
            .in_flight()
            .filter(|m| m.from == leader && m.get_msg_type() == MessageType::MsgAppend && !m.entries.is_empty())
            .map(|m| (m.to, m.entries.len()))
            .collect();
        let mut followers: Vec<u64> = sim.ids().into_iter().filter(|id| *id != leader).collect();
        followers.sort_unstable();
        let mut to: Vec<u64> = appends.iter().map(|(to, _)| *to).collect();
        to.sort_unstable();
        assert_eq!(to, followers, "seed {seed}: expected one append per follower, got {appends:?}");
        assert!(appends.iter().all(|(_, n)| *n == 10), "seed {seed}: entries split across appends: {appends:?}");
        sim.wait_converged(CONVERGE);
        let values: Vec<String> = proposed.into_iter().map(|(v, _)| v).collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(sim.outcome(value), Outcome::Acked(before + 1 + i as u64), "seed {seed}: {value}");
        }
        assert_eq!(sim.applied_values(leader), values, "seed {seed}: applied order differs from proposal order");
        // A follower refuses a whole batch and names the leader for each proposal.
        let follower = followers[0];
        for (value, taken) in sim.propose_many(follower, 3) {
            assert!(!taken);
            assert_eq!(sim.outcome(&value), Outcome::Failed(ProposeError::NotLeader { leader: Some(leader) }));
        }
    }
}
