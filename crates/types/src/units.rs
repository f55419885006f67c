//! Docker's notations for sizes (`512m`, `1GiB`) and CPUs (`0.5`).

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size {0:?}: expected a number with an optional unit b, k, m, g, t (e.g. 512m or 1GiB)")]
    Size(String),
    #[error("invalid CPU amount {0:?}: expected a non-negative decimal number of CPUs (e.g. 0.5 or 2)")]
    Cpu(String),
}

/// Parses a memory size the way docker's `RAMInBytes` does: binary multiples, case-insensitive
/// units with optional `b`/`ib` suffix.
pub fn parse_memory_bytes(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(text.to_string());
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() || number.starts_with('.') {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return Err(err()),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses a CPU amount (`0.5`, `2`) into nano-CPUs.
pub fn parse_nano_cpus(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Cpu(text.to_string());
    let s = text.trim();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err());
    }
    let value: f64 = s.parse().map_err(|_| err())?;
    let nanos = (value * 1e9).round();
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(err());
    }
    Ok(nanos as u64)
}

/// Formats bytes the way `docker service inspect --pretty` does (`512MiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 { format!("{value}{}", UNITS[unit]) } else { format!("{value:.3}{}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory_bytes("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_memory_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_memory_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_memory_bytes("1.5k").unwrap(), 1536);
        assert!(parse_memory_bytes("lots").is_err());
        assert!(parse_memory_bytes("-5m").is_err());
        assert!(parse_memory_bytes("5x").is_err());
        assert_eq!(format_bytes(512 << 20), "512MiB");
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_nano_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_nano_cpus("2").unwrap(), 2_000_000_000);
        assert!(parse_nano_cpus("-1").is_err());
        assert!(parse_nano_cpus("half").is_err());
    }
}
