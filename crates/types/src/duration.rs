//! Go-style durations (`5s`, `1m30s`, `250ms`), the format docker's flags and Swarm's API use.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written and read the way Go (and so docker) writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 5s or 1m30s")]
    Syntax(String),
    #[error("invalid duration {0:?}: cannot be negative")]
    Negative(String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Self {
        GoDuration(Duration::from_millis(ms))
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn as_std(&self) -> Duration {
        self.0
    }

    /// Parses Go's `time.ParseDuration` syntax; a bare `0` is accepted as Go does.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let s = input.trim();
        if s.starts_with('-') {
            return Err(DurationError::Negative(input.to_string()));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(GoDuration::ZERO);
        }
        if s.is_empty() {
            return Err(DurationError::Syntax(input.to_string()));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_nanos: u128 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let number = &s[start..i];
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(DurationError::Syntax(input.to_string()));
            }
            let unit_start = i;
            while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let unit_nanos: u128 = match &s[unit_start..i] {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(DurationError::Syntax(input.to_string())),
            };
            let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| DurationError::Overflow(input.to_string()))?
            };
            let mut part = whole.checked_mul(unit_nanos).ok_or_else(|| DurationError::Overflow(input.to_string()))?;
            let mut scale = unit_nanos;
            for digit in frac.bytes() {
                scale /= 10;
                part += u128::from(digit - b'0') * scale;
            }
            total_nanos = total_nanos.checked_add(part).ok_or_else(|| DurationError::Overflow(input.to_string()))?;
        }
        let secs =
            u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow(input.to_string()))?;
        Ok(GoDuration(Duration::new(secs, (total_nanos % 1_000_000_000) as u32)))
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`: `0s`, `250ms`, `5s`, `1m30s`, `1h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000_000_000 {
            let (value, unit, scale) = if nanos < 1_000 {
                return write!(f, "{nanos}ns");
            } else if nanos < 1_000_000 {
                (nanos, "µs", 1_000u128)
            } else {
                (nanos, "ms", 1_000_000u128)
            };
            return write!(f, "{}{unit}", trim_fraction(value, scale));
        }
        let hours = nanos / 3_600_000_000_000;
        let minutes = (nanos / 60_000_000_000) % 60;
        let sec_nanos = nanos % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", trim_fraction(sec_nanos, 1_000_000_000))
    }
}

fn trim_fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("5s", 5_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("1h", 3_600_000),
            ("2h45m", 9_900_000),
        ];
        for (text, ms) in cases {
            assert_eq!(GoDuration::parse(text).unwrap(), GoDuration::from_millis(ms), "{text}");
        }
    }

    #[test]
    fn refuses_bad_input_with_reason() {
        assert!(matches!(GoDuration::parse("abc"), Err(DurationError::Syntax(_))));
        assert!(matches!(GoDuration::parse("5"), Err(DurationError::Syntax(_))));
        assert!(matches!(GoDuration::parse("5x"), Err(DurationError::Syntax(_))));
        assert!(matches!(GoDuration::parse(""), Err(DurationError::Syntax(_))));
        assert!(matches!(GoDuration::parse("1..2s"), Err(DurationError::Syntax(_))));
        assert!(matches!(GoDuration::parse("-1s"), Err(DurationError::Negative(_))));
        assert_eq!(
            GoDuration::parse("abc").unwrap_err().to_string(),
            "invalid duration \"abc\": expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 5s or 1m30s"
        );
    }

    #[test]
    fn formats_like_go() {
        let cases =
            [(0, "0s"), (250, "250ms"), (1_500, "1.5s"), (5_000, "5s"), (90_000, "1m30s"), (3_600_000, "1h0m0s")];
        for (ms, text) in cases {
            assert_eq!(GoDuration::from_millis(ms).to_string(), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..10_000_000_000_000) {
            let d = GoDuration(Duration::from_nanos(nanos));
            proptest::prop_assert_eq!(GoDuration::parse(&d.to_string()).unwrap(), d);
        }
    }
}

/// (year, month, day) to days since 1970-01-01 in the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`): for the RFC 3339 times users and Docker write.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod civil_tests {
    use super::days_from_civil;

    #[test]
    fn days_from_civil_counts_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2026, 12, 6), 20_793);
    }
}
