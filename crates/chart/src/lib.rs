//! A rollout's timeline as an SVG chart (`rollout inspect --svg`, the dashboard): one row per
//! slot, grouped by batch, time from the rollout's start along the axis. A slot shows its old
//! task stopping (grey), its new task starting (blue), the monitor window after it ran (green)
//! and a failure (red); the rollout's events (pauses, approvals, rollbacks) are vertical lines.
//! Pure: the same record always gives the same picture.
#![forbid(unsafe_code)]

use std::fmt::Write;

use shoal_types::{Rollout, RolloutState, Timestamp};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const ROW: f64 = 18.0;
/// Rows drawn at most; a larger rollout says how many slots it leaves out.
pub const MAX_ROWS: usize = 300;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn state_colour(state: RolloutState) -> &'static str {
    match state {
        RolloutState::Paused | RolloutState::RollbackPaused => "#e69500",
        RolloutState::RollbackStarted | RolloutState::RollbackCompleted | RolloutState::Aborted => "#c62828",
        RolloutState::Completed => "#2e7d32",
        RolloutState::Updating | RolloutState::Superseded => "#546e7a",
    }
}

/// The chart of `rollout` as it stands at `now` (an unfinished slot's bar runs to `now`).
pub fn rollout_svg(rollout: &Rollout, now: Timestamp) -> String {
    let start = rollout.started_at;
    let monitor = rollout.config.monitor.as_std().as_millis() as u64;
    let slots: Vec<(u64, &shoal_types::RolloutSlot)> =
        rollout.batches.iter().flat_map(|b| b.slots.iter().map(move |s| (b.number, s))).collect();
    let shown = slots.len().min(MAX_ROWS);
    // The time axis covers every recorded moment.
    let mut end = rollout.finished_at.unwrap_or(now).max(start + 1_000);
    for (_, slot) in &slots[..shown] {
        for at in [slot.stopped_at, slot.started_at, slot.running_at.map(|r| r + monitor), slot.failed_at]
            .into_iter()
            .flatten()
        {
            end = end.max(at);
        }
    }
    for event in &rollout.events {
        end = end.max(event.at);
    }
    let span = end.saturating_sub(start).max(1) as f64;
    let x = |at: Timestamp| LEFT + (at.saturating_sub(start) as f64 / span) * (WIDTH - LEFT - RIGHT);
    let height = TOP + ROW * shown.max(1) as f64 + 70.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"##
    );
    let _ = write!(svg, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let title = format!(
        "{} — {} of {} (revision {} → {}), {}",
        rollout.id,
        if rollout.kind == shoal_types::RolloutKind::Rollback { "rollback" } else { "update" },
        rollout.service_name,
        rollout.from_revision,
        rollout.to_revision,
        rollout.state.as_str()
    );
    let _ = write!(svg, r##"<text x="10" y="18" font-size="14" font-weight="bold">{}</text>"##, escape(&title));
    // Time axis: about eight ticks, whole seconds.
    let step = ((span / 1000.0 / 8.0).ceil().max(1.0)) as u64 * 1000;
    let mut tick = 0;
    while start + tick <= end {
        let tx = x(start + tick);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{bottom}" stroke="#eeeeee"/><text x="{tx:.1}" y="{label}" text-anchor="middle" fill="#555">{}s</text>"##,
            tick / 1000,
            top = TOP - 6.0,
            bottom = TOP + ROW * shown.max(1) as f64,
            label = TOP - 10.0
        );
        tick += step;
    }
    let mut batch_seen = None;
    for (row, (batch, slot)) in slots[..shown].iter().enumerate() {
        let y = TOP + ROW * row as f64;
        if batch_seen != Some(*batch) {
            batch_seen = Some(*batch);
            if batch % 2 == 0 {
                let _ = write!(
                    svg,
                    r##"<rect x="0" y="{y}" width="{WIDTH}" height="{h}" fill="#f7f9fb"/>"##,
                    h = ROW * slots[row..shown].iter().take_while(|(b, _)| b == batch).count() as f64
                );
            }
        }
        let _ = write!(
            svg,
            r##"<text x="10" y="{ty:.1}" fill="#333"><title>{tip}</title>batch {batch} · {name}</text>"##,
            ty = y + ROW * 0.7,
            name = escape(&slot.name),
            tip = escape(&format!(
                "new task {} on {}",
                slot.new_task,
                if slot.node.is_empty() { "-" } else { &slot.node }
            ))
        );
        let bar = |svg: &mut String, from: Timestamp, to: Timestamp, colour: &str, what: &str| {
            let (x1, x2) = (x(from), x(to).max(x(from) + 2.0));
            let _ = write!(
                svg,
                r##"<rect class="{what}" x="{x1:.1}" y="{by:.1}" width="{w:.1}" height="{bh:.1}" fill="{colour}" rx="2"><title>{tip}</title></rect>"##,
                by = y + 3.0,
                w = x2 - x1,
                bh = ROW - 6.0,
                tip = escape(&format!(
                    "{} {what}: {:.1}s → {:.1}s",
                    slot.name,
                    from.saturating_sub(start) as f64 / 1000.0,
                    to.saturating_sub(start) as f64 / 1000.0
                ))
            );
        };
        if let Some(stop) = slot.stop_requested_at {
            bar(&mut svg, stop, slot.stopped_at.unwrap_or(now), "#9e9e9e", "stopping");
        }
        if let Some(started) = slot.started_at {
            bar(&mut svg, started, slot.running_at.or(slot.failed_at).unwrap_or(now), "#1e88e5", "starting");
        }
        if let Some(running) = slot.running_at {
            let done = (running + monitor).min(slot.failed_at.unwrap_or(u64::MAX));
            bar(&mut svg, running, done.min(end), "#43a047", "monitor");
        }
        if let (Some(failed), Some(failure)) = (slot.failed_at, &slot.failure) {
            let fx = x(failed);
            let _ = write!(
                svg,
                r##"<rect class="failure" x="{x1:.1}" y="{by:.1}" width="6" height="{bh:.1}" fill="#e53935"><title>{tip}</title></rect>"##,
                x1 = fx - 3.0,
                by = y + 1.0,
                bh = ROW - 2.0,
                tip = escape(&format!("{} failed: {failure}", slot.name))
            );
        }
    }
    let bottom = TOP + ROW * shown.max(1) as f64;
    if slots.is_empty() {
        let _ = write!(svg, r##"<text x="{LEFT}" y="{ty}" fill="#777">no slot started yet</text>"##, ty = TOP + 12.0);
    }
    // The rollout's events after its start: pauses, approvals, rollbacks, the end.
    for event in rollout.events.iter().skip(1) {
        let ex = x(event.at);
        let colour = state_colour(event.state);
        let _ = write!(
            svg,
            r##"<line class="event" x1="{ex:.1}" y1="{top}" x2="{ex:.1}" y2="{bottom}" stroke="{colour}" stroke-dasharray="4 3"><title>{tip}</title></line>"##,
            top = TOP - 4.0,
            tip = escape(&format!(
                "{:.1}s {}: {}",
                event.at.saturating_sub(start) as f64 / 1000.0,
                event.state.as_str(),
                event.message
            ))
        );
    }
    let more = slots.len() - shown;
    let mut legend_y = bottom + 24.0;
    if more > 0 {
        let _ = write!(svg, r##"<text x="10" y="{legend_y}" fill="#555">… and {more} more slots (not drawn)</text>"##);
        legend_y += 18.0;
    }
    let mut lx = 10.0;
    for (colour, what) in [
        ("#9e9e9e", "old task stopping"),
        ("#1e88e5", "new task starting"),
        ("#43a047", "monitor window"),
        ("#e53935", "failure"),
        ("#e69500", "pause (dashed: an event)"),
    ] {
        let _ = write!(
            svg,
            r##"<rect x="{lx}" y="{ry}" width="12" height="10" fill="{colour}"/><text x="{tx}" y="{legend_y}">{what}</text>"##,
            ry = legend_y - 9.0,
            tx = lx + 16.0
        );
        lx += 20.0 + what.len() as f64 * 6.2;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{RolloutBatch, RolloutEvent, RolloutKind, RolloutSlot, UpdateConfig};

    fn rollout() -> Rollout {
        let slot = |n: u64, failed: bool| RolloutSlot {
            name: format!("web.{n}"),
            new_task: format!("t{n}"),
            node: "n1".into(),
            old_tasks: vec![format!("o{n}")],
            stop_requested_at: Some(10_000 + n * 2_000),
            stopped_at: Some(10_500 + n * 2_000),
            started_at: Some(10_600 + n * 2_000),
            running_at: (!failed).then_some(11_000 + n * 2_000),
            failure: failed.then(|| "failed: non-zero exit (3) <&>".to_string()),
            failed_at: failed.then_some(11_500 + n * 2_000),
        };
        Rollout {
            id: "web-2".into(),
            service_id: "s".into(),
            service_name: "web".into(),
            kind: RolloutKind::Update,
            from_revision: 1,
            to_revision: 2,
            spec_version: 5,
            config: UpdateConfig::default(),
            state: RolloutState::Paused,
            message: "paused".into(),
            started_by: String::new(),
            started_at: 10_000,
            finished_at: None,
            events: vec![
                RolloutEvent { at: 10_000, state: RolloutState::Updating, message: "update in progress".into() },
                RolloutEvent { at: 15_000, state: RolloutState::Paused, message: "paused by hand".into() },
            ],
            batches: vec![
                RolloutBatch { number: 1, index: 7, started_at: 10_000, slots: vec![slot(1, false)] },
                RolloutBatch { number: 2, index: 9, started_at: 12_000, slots: vec![slot(2, true)] },
            ],
            unrecorded_slots: 0,
            group: String::new(),
        }
    }

    #[test]
    fn a_rollout_draws_its_slots_failures_and_events() {
        let svg = rollout_svg(&rollout(), 20_000);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches(r#"class="starting""#).count(), 2);
        assert_eq!(svg.matches(r#"class="monitor""#).count(), 1, "the failed slot never ran");
        assert_eq!(svg.matches(r#"class="failure""#).count(), 1);
        assert_eq!(svg.matches(r#"class="event""#).count(), 1, "the pause");
        assert!(svg.contains("batch 2 · web.2"));
        assert!(svg.contains("non-zero exit (3) &lt;&amp;&gt;"), "text is escaped");
        assert!(!svg.contains("<&>"));
        assert_eq!(svg, rollout_svg(&rollout(), 20_000), "the same record, the same picture");
    }

    #[test]
    fn a_huge_rollout_draws_a_bounded_number_of_rows() {
        let mut big = rollout();
        let slot = big.batches[0].slots[0].clone();
        big.batches[0].slots = vec![slot; MAX_ROWS + 50];
        let svg = rollout_svg(&big, 20_000);
        assert_eq!(svg.matches("batch ").count(), MAX_ROWS);
        assert!(svg.contains("… and 51 more slots (not drawn)"));
    }
}
