//! The quantities manifests are written in: durations such as `"30s"`, `"1m30s"`,
//! `"500ms"` and byte sizes such as `"6Mi"`, `"256Mi"`, `"1G"` (Kubernetes suffixes).

use std::time::Duration;

/// Parses a duration written as `"30s"`, `"1m"`, `"500ms"` or `"1h 30m"`.
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"30s\" or \"500ms\" ({e})"))
}

/// Writes a duration the way manifests do, e.g. `30s` or `1m 30s`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a byte size: a plain number of bytes or one with a suffix `Ki`, `Mi`, `Gi`
/// (powers of 1024) or `k`/`K`, `M`, `G` (powers of 1000).
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let bad = || format!("`{text}` is not a size like \"6Mi\", \"256Mi\" or \"1048576\"");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// Writes a byte size with the largest binary suffix that divides it exactly.
pub fn format_bytes(n: u64) -> String {
    for (unit, suffix) in [(1u64 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{}{suffix}", n / unit);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("30").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("6Mi").unwrap(), 6 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("6 MB").is_err());
        assert!(parse_bytes("Mi").is_err());
        assert!(parse_bytes("99999999999999Gi").is_err());
        assert_eq!(format_bytes(6 << 20), "6Mi");
        assert_eq!(format_bytes(1000), "1000");
    }
}
