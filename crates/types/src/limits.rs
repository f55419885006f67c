//! Bounds no spec can cross. Each keeps one mistyped value from turning into work or memory that
//! takes a manager down, and each refusal names the limit (docs/limits.md lists them all).

/// Default for the cluster's `max_replicas` (`shoal cluster update --max-replicas`).
pub const DEFAULT_MAX_REPLICAS: u64 = 100_000;

/// `--max-replicas` itself cannot go above this: a manager holds every task in memory (about
/// 3 KB each with history), so a million replicas is already gigabytes.
pub const MAX_REPLICAS_CEILING: u64 = 1_000_000;

/// A service spec, encoded as it is written to the raft log, may take at most this many bytes.
/// A raft entry holds at most 1.5 MiB, so a spec of this size still fits an entry with room for
/// its envelope.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// Entries in any one list or map of a spec (env, labels, args, mounts, ports, constraints…).
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// The most tasks the orchestrators create in one pass, over all services: a large scale-up is
/// written in steps, each a few raft entries, so no pass builds an unbounded list.
pub const MAX_NEW_TASKS_PER_PASS: usize = 2_000;

/// Revisions kept per service unless the cluster says otherwise (Kubernetes' default too).
pub const DEFAULT_REVISION_HISTORY_LIMIT: u64 = 10;
/// The most `--revision-history-limit` may be: each revision holds a whole spec.
pub const MAX_REVISION_HISTORY_LIMIT: u64 = 100;
/// The longest change cause kept with a revision, in bytes.
pub const MAX_CHANGE_CAUSE_BYTES: usize = 4096;

/// Canary steps of one update config: more would be a mistake, not a rollout plan.
pub const MAX_CANARY_STEPS: usize = 100;
