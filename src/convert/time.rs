//! Time arguments as the AWS CLI and `aws logs tail` accept them: RFC 3339, epoch milliseconds,
//! or a duration before now (`2h`, `30m`, `45s`, `1d`, `1w`). Pure: "now" is a parameter.

/// Why a time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: expected RFC 3339 (2024-05-01T12:00:00Z), epoch milliseconds or a duration before now (2h, 30m, 45s, 1d)")]
pub struct TimeError {
    /// The refused text.
    pub value: String,
}

/// Parses a time argument into milliseconds since the epoch; `now_ms` anchors relative times.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, TimeError> {
    let t = text.trim();
    let err = || TimeError {
        value: text.to_owned(),
    };
    if t.is_empty() {
        return Err(err());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| err());
    }
    if let Some(d) = parse_duration_ms(t) {
        return Ok(now_ms.saturating_sub(d));
    }
    parse_rfc3339(t).ok_or_else(err)
}

/// Parses `<n><unit>` with unit `ms`, `s`, `m`, `h`, `d` or `w` into milliseconds.
pub fn parse_duration_ms(t: &str) -> Option<i64> {
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fff…]](Z|±HH:MM)`, or a bare date (midnight UTC).
fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let mut i = 16;
    let mut s = 0;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b':') {
        s = num(i + 1..i + 3)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            let digits = &t[start..end.min(start + 3)];
            frac_ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
            i = end;
        }
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let offset_min = match t.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            if tz.as_bytes()[3] != b':' {
                return None;
            }
            let v = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if tz.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + s * 1000 + frac_ms)
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn accepts_what_the_aws_cli_accepts() {
        let cases: &[(&str, i64)] = &[
            ("1700000000123", 1_700_000_000_123),
            ("0", 0),
            ("2h", NOW - 7_200_000),
            ("30m", NOW - 1_800_000),
            ("45s", NOW - 45_000),
            ("1d", NOW - 86_400_000),
            ("1w", NOW - 604_800_000),
            ("250ms", NOW - 250),
            ("2023-11-14T22:13:20Z", 1_700_000_000_000),
            ("2023-11-14T22:13:20.5Z", 1_700_000_000_500),
            ("2023-11-14T22:13:20.123456Z", 1_700_000_000_123),
            ("2023-11-14 22:13:20Z", 1_700_000_000_000),
            ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
            ("2023-11-14T17:13:20-05:00", 1_700_000_000_000),
            ("2023-11-14T22:13Z", 1_699_999_980_000),
            ("1970-01-01", 0),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            (" 45s ", NOW - 45_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text, NOW), Ok(*want), "{text}");
        }
    }

    #[test]
    fn refuses_the_rest_naming_the_value() {
        for bad in [
            "",
            "yesterday",
            "2h30m",
            "5y",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "-5",
        ] {
            let e = parse_time(bad, NOW).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("RFC 3339"), "{e}");
        }
    }
}
