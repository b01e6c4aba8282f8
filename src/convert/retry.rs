//! Retry policy shared by every network client (sinks, the CloudWatch and S3 sources, the
//! checkpoint store): one pure classification of responses, exponential
//! backoff with full jitter, `Retry-After`, and a deadline. Table-tested; the sinks only call it.

use std::time::Duration;

/// What to do after a response or error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Success,
    /// Try again after a backoff (transient: 502/503/504, timeouts, connection errors).
    Retry,
    /// Try again, the backend asked us to slow down (429, RESOURCE_EXHAUSTED).
    Throttle,
    /// Do not try again (other 4xx, unexpected responses).
    Fatal,
    /// A redirect (3xx), which is never followed: a POST turned into a GET by a 302 to a login
    /// page "succeeds" without delivering anything, and a 307 to another host would hand it
    /// the spans and every custom header. The endpoint is misconfigured; retrying cannot help.
    Redirect,
}

/// Classifies an HTTP status (OTLP/HTTP spec, "Retryable Response Codes").
pub fn classify_http(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        300..=399 => Verdict::Redirect,
        429 => Verdict::Throttle,
        502..=504 => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// Classifies a gRPC status code number (OTLP/gRPC spec: UNAVAILABLE, RESOURCE_EXHAUSTED,
/// DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE and DATA_LOSS are retryable).
pub fn classify_grpc(code: i32) -> Verdict {
    match code {
        0 => Verdict::Success,
        8 => Verdict::Throttle,
        1 | 4 | 10 | 11 | 14 | 15 => Verdict::Retry,
        _ => Verdict::Fatal,
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date relative to `now` (seconds since the
/// epoch). Capped at `cap`.
pub fn parse_retry_after(value: &str, now_unix: u64, cap: Duration) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate_to_unix(v)?;
        Duration::from_secs(at.saturating_sub(now_unix))
    };
    Some(d.min(cap))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to seconds since the epoch.
fn httpdate_to_unix(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    // The fields are 2- and 4-digit numbers: held to their ranges, the arithmetic below cannot
    // overflow whatever the server sends (a 17-digit year did).
    let num = |s: &str, range: std::ops::RangeInclusive<i64>| {
        s.parse::<i64>().ok().filter(|n| range.contains(n))
    };
    let (d, y) = (num(day, 1..=31)?, num(year, 0..=9999)?);
    let mut hms = time.split(':');
    let (h, mi, se) = (
        num(hms.next()?, 0..=23)?,
        num(hms.next()?, 0..=59)?,
        num(hms.next()?, 0..=60)?,
    );
    if hms.next().is_some() {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// `now + after`, or, when the clock cannot represent that (a server asked for `i64::MAX`
/// seconds, a deadline of `Duration::MAX`), a time about 30 years ahead: later than any wait
/// worth starting, never a panic.
#[cfg(feature = "convert")]
pub fn instant_after(now: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
/// Jitter"): attempt n waits a random time in [0, min(cap, base·2ⁿ)].
#[derive(Clone, Debug)]
pub struct Backoff {
    /// First ceiling.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let f = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(f).min(self.cap)
    }

    /// The next wait, jittered; `floor` (e.g. from `Retry-After`) is honoured.
    pub fn next_delay(&mut self, floor: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        floor.map_or(jittered, |f| f.max(jittered))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let table = [
            (200, Verdict::Success),
            (204, Verdict::Success),
            (301, Verdict::Redirect),
            (302, Verdict::Redirect),
            (304, Verdict::Redirect),
            (307, Verdict::Redirect),
            (308, Verdict::Redirect),
            (400, Verdict::Fatal),
            (401, Verdict::Fatal),
            (404, Verdict::Fatal),
            (413, Verdict::Fatal),
            (415, Verdict::Fatal),
            (429, Verdict::Throttle),
            (500, Verdict::Fatal),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
            (504, Verdict::Retry),
        ];
        for (s, v) in table {
            assert_eq!(classify_http(s), v, "{s}");
        }
    }

    #[test]
    fn grpc_codes() {
        let table = [
            (0, Verdict::Success),
            (14, Verdict::Retry),
            (8, Verdict::Throttle),
            (3, Verdict::Fatal),
            (16, Verdict::Fatal),
            (4, Verdict::Retry),
        ];
        for (c, v) in table {
            assert_eq!(classify_grpc(c), v, "{c}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let cap = Duration::from_secs(60);
        assert_eq!(parse_retry_after("5", 0, cap), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("600", 0, cap), Some(cap));
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770, cap),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("soon", 0, cap), None);
    }

    #[test]
    fn a_retry_after_date_out_of_range_is_refused_not_overflowed() {
        // A server's date overflowed the i64 arithmetic (a panic with overflow checks, a wrong
        // delay without): found writing the otlp_response fuzz target, whose seed
        // `regression-retry-after-year` replays it.
        let cap = Duration::from_secs(60);
        for hostile in [
            "Sun, 06 Nov 9999999999999999 08:49:37 GMT",
            "Sun, 9223372036854775807 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 9223372036854775807:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:9223372036854775807 GMT",
            "Sun, -6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(parse_retry_after(hostile, 0, cap), None, "{hostile}");
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:60 GMT", 0, cap),
            Some(cap)
        );
    }

    #[cfg(feature = "convert")]
    #[test]
    fn instants_far_ahead_never_overflow() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        for far in [Duration::MAX, Duration::from_secs(i64::MAX as u64)] {
            let t = instant_after(now, far);
            assert!(t > now + Duration::from_secs(365 * 86_400), "{far:?}");
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_and_honours_floors() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling());
            let d = b.next_delay(None);
            assert!(d <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings[0], Duration::from_millis(100));
        assert_eq!(ceilings[3], Duration::from_millis(800));
        assert_eq!(ceilings[5], Duration::from_secs(1));
        assert!(b.next_delay(Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
