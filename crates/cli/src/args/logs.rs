//! `shoal service logs` arguments.

use clap::Args;

/// `shoal service logs [OPTIONS] SERVICE|TASK`, with docker's flags.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct LogsArgs {
    /// Follow log output (a rolling update's new tasks join the stream as they start)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of each task's logs ("all" or a number)
    #[arg(short = 'n', long, value_name = "N", value_parser = tail, default_value = "all")]
    pub tail: Tail,
    /// Show logs since a timestamp (e.g. "2013-01-02T13:23:37Z", UTC without a zone; or Unix seconds) or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "TIME", value_parser = since)]
    pub since: Option<i64>,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Do not neatly format logs (no task prefix)
    #[arg(long)]
    pub raw: bool,
    /// Do not include task IDs in output
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate output (full task ids)
    #[arg(long)]
    pub no_trunc: bool,
    /// A service (name, id or id prefix) or a task (id or id prefix)
    #[arg(value_name = "SERVICE|TASK")]
    pub service: String,
}

/// `--tail`: every line, or the last N of each task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tail {
    #[default]
    All,
    Last(u64),
}

impl Tail {
    /// As the API takes it: negative for all.
    pub fn to_request(self) -> i64 {
        match self {
            Tail::All => -1,
            Tail::Last(n) => i64::try_from(n).unwrap_or(i64::MAX),
        }
    }
}

/// `--tail`: `all` or a number of lines (0 or more). Docker takes anything else as `all`; a typo
/// is refused here instead.
pub fn tail(text: &str) -> Result<Tail, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(Tail::All);
    }
    text.trim()
        .parse::<u64>()
        .map(Tail::Last)
        .map_err(|_| "expected \"all\" or a number of lines (0 or more)".to_string())
}

/// `--since`: a date or date-time (`2024-03-01`, `2024-03-01T12:34:56Z`, UTC without a zone) or a
/// Go duration ago (`42m`, `1h30m`), as Unix nanoseconds.
pub fn since(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let allowed = "expected a time (e.g. 2024-03-01T12:34:56Z) or a duration ago (e.g. 42m, 1h30m)";
    // Unix seconds, with an optional fraction, as docker takes them too.
    if let Some((seconds, fraction)) = unix_seconds(text) {
        return Ok(seconds.saturating_mul(1_000_000_000).saturating_add(fraction).max(1));
    }
    let millis = match crate::timefmt::parse_timestamp(text) {
        Some(millis) => millis,
        None => {
            let ago = shoal_types::GoDuration::parse(text).map_err(|e| format!("{allowed}: {e}"))?;
            let ago = u64::try_from(ago.as_std().as_millis()).unwrap_or(u64::MAX);
            crate::timefmt::now_millis().saturating_sub(ago)
        }
    };
    Ok(i64::try_from(millis).unwrap_or(i64::MAX).saturating_mul(1_000_000).max(1))
}

/// `1700000000` or `1700000000.5`: whole seconds and the fraction in nanoseconds.
fn unix_seconds(text: &str) -> Option<(i64, i64)> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some((whole.parse().ok()?, nanos.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_takes_all_or_a_count_and_names_what_is_allowed() {
        assert_eq!(tail("all"), Ok(Tail::All));
        assert_eq!(tail("ALL"), Ok(Tail::All));
        assert_eq!(tail("0"), Ok(Tail::Last(0)));
        assert_eq!(tail("25"), Ok(Tail::Last(25)));
        for bad in ["-1", "ten", "1.5", ""] {
            assert_eq!(tail(bad), Err("expected \"all\" or a number of lines (0 or more)".to_string()), "{bad}");
        }
        assert_eq!(Tail::All.to_request(), -1);
        assert_eq!(Tail::Last(3).to_request(), 3);
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(since("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(since("2024-03-01"), Ok(1_709_251_200_000_000_000));
        assert_eq!(since("1700000000"), Ok(1_700_000_000_000_000_000), "Unix seconds, as docker takes them");
        assert_eq!(since("1700000000.25"), Ok(1_700_000_000_250_000_000));
        let ago = since("10m").expect("a duration");
        let expected = i64::try_from(crate::timefmt::now_millis()).unwrap() * 1_000_000 - 600 * 1_000_000_000;
        assert!((ago - expected).abs() < 5_000_000_000, "{ago} vs {expected}");
        let err = since("yesterday").unwrap_err();
        assert!(err.starts_with("expected a time (e.g. 2024-03-01T12:34:56Z) or a duration ago"), "{err}");
    }
}
