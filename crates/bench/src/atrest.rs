//! The cost of encryption at rest on the raft write path: the same log entries appended and
//! synced to sled in the clear and sealed with a data key, in one run, in process.

use anyhow::Result;
use shoal_raft::storage::log_key;
use shoal_raft::{DataKey, Durable, Op, SledDurable};
use tokio::time::Instant;

use crate::report::{Figure, Kind, Report, median};

/// Appends `entries` entries of `bytes` each in batches of `batch` (one sync per batch, as the
/// raft thread syncs once per Ready) and reopens the store reading the whole log back. Returns
/// (appended entries per second, seconds to read the log back).
fn run(key: Option<DataKey>, entries: u64, bytes: usize, batch: u64) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let value = vec![b'x'; bytes];
    let started = Instant::now();
    {
        let mut store = SledDurable::open_with_key(dir.path(), key.clone())?;
        let mut index = 1;
        while index <= entries {
            let ops = (index..(index + batch).min(entries + 1)).map(|i| Op::Put(log_key(i), value.clone())).collect();
            store.write_in_order(ops)?;
            store.sync()?;
            index += batch;
        }
    }
    let rate = entries as f64 / started.elapsed().as_secs_f64();
    let reopened = Instant::now();
    let store = SledDurable::open_with_key(dir.path(), key)?;
    let read = store.scan(&log_key(0)[..1])?;
    anyhow::ensure!(read.len() as u64 == entries, "read back {} of {entries} entries", read.len());
    Ok((rate, reopened.elapsed().as_secs_f64()))
}

pub async fn at_rest(quick: bool, report: &mut Report) -> Result<()> {
    let runs = if quick { 1 } else { 5 };
    let entries: u64 = if quick { 2_000 } else { 20_000 };
    let batch = 32;
    let mut lines = Vec::new();
    for bytes in [256usize, 4096] {
        let (mut plain, mut sealed, mut plain_read, mut sealed_read) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            // Alternated, so drift on the machine hits both alike.
            let (rate, read) = tokio::task::block_in_place(|| run(None, entries, bytes, batch))?;
            plain.push(rate);
            plain_read.push(read);
            let (rate, read) = tokio::task::block_in_place(|| run(Some(DataKey::generate()), entries, bytes, batch))?;
            sealed.push(rate);
            sealed_read.push(read);
        }
        let scenario = format!("raft log at rest, {bytes} B entries, {batch} per sync");
        report.push(
            Figure::new(&scenario, "appended and synced, sealed (median)", median(&sealed), "entries/s")
                .reference("the same in the clear", median(&plain), Kind::Measured)
                .target(">= 0.9x the clear")
                .samples(runs),
        );
        report.push(
            Figure::new(&scenario, "whole log read back at open, sealed (median)", median(&sealed_read) * 1000.0, "ms")
                .reference("the same in the clear", median(&plain_read) * 1000.0, Kind::Measured)
                .samples(runs),
        );
        lines.push(format!(
            "{bytes} B: {:.0} entries/s sealed vs {:.0} in the clear; read back in {:.1} ms vs {:.1} ms",
            median(&sealed),
            median(&plain),
            median(&sealed_read) * 1000.0,
            median(&plain_read) * 1000.0
        ));
    }
    report.how(
        "raft log at rest",
        format!(
            "In process: `SledDurable` (the managers' raft store) appends {entries} log entries, {batch} per \
             `write_in_order` + `sync` (one fsync'd flush per batch, as the raft thread syncs once per Ready), then \
             is reopened and the whole log read back; once in the clear and once sealed with a data key (AES-256-GCM, \
             what every manager does now), alternated, {runs} runs each, medians. Figures: {}. The raft scenario \
             above (3 manager processes) runs sealed.",
            lines.join("; ")
        ),
    );
    Ok(())
}
