//! Timestamps (milliseconds since the Unix epoch) as RFC 3339 UTC text, without a date crate, and
//! durations in docker's words.

use std::time::Duration;

/// Milliseconds since the Unix epoch by the machine's clock (0 if it is set before 1970).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration the way docker says it (go-units `HumanDuration`): `Less than a second`,
/// `1 second`, `N seconds`, `About a minute`, `N minutes`, `About an hour`, `N hours`, `N days`,
/// `N weeks`, `N months`, `N years`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".to_string();
    }
    if seconds == 1 {
        return "1 second".to_string();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".to_string();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds hours to the nearest one here.
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// `2024-03-01T12:34:56.789Z`.
pub fn format_timestamp(millis: u64) -> String {
    let secs = millis / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}

/// `2024-03-01T12:34:56.000000789Z`: RFC 3339 with nine fraction digits, as `docker logs -t`
/// prints them (so they line up).
pub fn format_timestamp_nanos(nanos: i64) -> String {
    let nanos = u64::try_from(nanos).unwrap_or(0);
    let millis_text = format_timestamp(nanos / 1_000_000);
    // `…:56.789Z` → `…:56.` and the nine digits.
    let seconds = &millis_text[..millis_text.len() - 4];
    format!("{seconds}{:09}Z", nanos % 1_000_000_000)
}

/// Unix milliseconds of a date or date-time as `docker events --since` takes them:
/// `2024-03-01`, `2024-03-01T12:34:56`, with optional fractional seconds, and `Z` or an offset
/// (`+01:00`). Without a zone the time is UTC. `None` if it is not such a text or before 1970.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    fn number(text: &str, digits: usize) -> Option<i64> {
        (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
    }
    let (date, rest) = text.split_at_checked(10)?;
    let year = number(date.get(0..4)?, 4)?;
    let month = number(date.get(5..7)?, 2)?;
    let day = number(date.get(8..10)?, 2)?;
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day > month_days[month as usize - 1] {
        return None;
    }
    let (mut seconds, mut millis, mut zone) = (0i64, 0i64, rest);
    if let Some(time) = rest.strip_prefix('T') {
        let hms = time.get(0..8)?;
        let (h, m, s) = (number(&hms[0..2], 2)?, number(&hms[3..5], 2)?, number(&hms[6..8], 2)?);
        if &hms[2..3] != ":" || &hms[5..6] != ":" || h > 23 || m > 59 || s > 59 {
            return None;
        }
        seconds = h * 3600 + m * 60 + s;
        zone = &time[8..];
        if let Some(fraction) = zone.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let ms: String = fraction[..digits].chars().chain("000".chars()).take(3).collect();
            millis = ms.parse().ok()?;
            zone = &fraction[digits..];
        }
    }
    let offset = match zone {
        "" | "Z" => 0,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (number(zone.get(1..3)?, 2)?, number(zone.get(4..6)?, 2)?);
            if zone.len() != 6 || &zone[3..4] != ":" || h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let total = (shoal_types::duration::days_from_civil(year, month, day) * 86_400 + seconds - offset) * 1000 + millis;
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats_and_docker_since_forms() {
        for millis in [0, 951_782_400_000, 1_709_296_496_789, 4_102_444_799_999] {
            assert_eq!(parse_timestamp(&format_timestamp(millis)), Some(millis));
        }
        assert_eq!(parse_timestamp("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(parse_timestamp("2024-03-01T12:34:56"), Some(1_709_296_496_000));
        assert_eq!(parse_timestamp("2024-03-01T13:34:56.7+01:00"), Some(1_709_296_496_700));
        assert_eq!(parse_timestamp("2024-03-01T10:34:56-02:00"), Some(1_709_296_496_000));
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2023-02-29",
            "2024-03-01T24:00:00",
            "2024-03-01T12:34",
            "2024-03-01Tx",
            "2024-03-01T12:34:56.Z",
            "2024-03-01T12:34:56+1",
            "1969-12-31",
            "２０２４-03-01",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_timestamp(1_709_296_496_789), "2024-03-01T12:34:56.789Z");
        assert_eq!(format_timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn human_durations_use_docker_words() {
        let s = Duration::from_secs;
        let cases = [
            (Duration::ZERO, "Less than a second"),
            (Duration::from_millis(999), "Less than a second"),
            (s(1), "1 second"),
            (Duration::from_millis(1_999), "1 second"),
            (s(5), "5 seconds"),
            (s(59), "59 seconds"),
            (s(60), "About a minute"),
            (s(119), "About a minute"),
            (s(120), "2 minutes"),
            (s(59 * 60 + 59), "59 minutes"),
            (s(3600), "About an hour"),
            (s(5399), "About an hour"),
            (s(5400), "2 hours"),
            (s(47 * 3600), "47 hours"),
            (s(48 * 3600), "2 days"),
            (s(13 * 86_400), "13 days"),
            (s(14 * 86_400), "2 weeks"),
            (s(59 * 86_400), "8 weeks"),
            (s(60 * 86_400), "2 months"),
            (s(729 * 86_400), "24 months"),
            (s(730 * 86_400), "2 years"),
        ];
        for (d, text) in cases {
            assert_eq!(human_duration(d), text, "{d:?}");
        }
    }
}
