//! The ingestion lag (`ingestionTime − timestamp`) of the events a FilterLogEvents reader
//! delivers, and the late ones counted and warned about.
//!
//! A reader that reads event time again for a while (`tail --poll`'s `--overlap`, `forward`'s
//! `--lateness`) loses the events ingested later than that, and cannot see them. What it can see
//! is the events that come close to that edge, or past it when a read happened to come after
//! them: [`LateWatch`] counts those (`late_near_window`, `late_beyond_window`) and says so on
//! stderr, at most once a minute, with the numbers and the flag to raise, before the lag grows
//! into losses. It also keeps the last lags, whose percentiles size `tail --poll`'s passes.

use super::filter::Event;

/// Ingestion lags remembered per group for the percentiles.
const LAG_SAMPLE: usize = 1024;

/// A lag above this fraction of the window (in per mille) is counted as `late_near_window`.
pub const NEAR_PER_MILLE: i64 = 750;

/// At most one [`LateNotice`] per group this often.
pub const NOTICE_EVERY_MS: i64 = 60_000;

/// The last [`LAG_SAMPLE`] ingestion lags, ms.
#[derive(Debug, Clone, Default)]
struct Lags {
    ring: Vec<i64>,
    next: usize,
}

impl Lags {
    fn push(&mut self, lag_ms: i64) {
        if self.ring.len() < LAG_SAMPLE {
            self.ring.push(lag_ms);
        } else if let Some(slot) = self.ring.get_mut(self.next) {
            *slot = lag_ms;
        }
        self.next = (self.next + 1) % LAG_SAMPLE;
    }

    fn quantile(&self, per_mille: usize) -> Option<i64> {
        if self.ring.is_empty() {
            return None;
        }
        let mut v = self.ring.clone();
        let i = ((v.len() - 1) * per_mille.min(1000)) / 1000;
        let (_, q, _) = v.select_nth_unstable(i);
        Some(*q)
    }
}

/// Events that arrived close to the window's edge, or past it (see [`LateWatch::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateNotice {
    /// The largest lag among them, ms.
    pub lag_ms: i64,
    /// The window, ms.
    pub window_ms: i64,
    /// The flag that sets the window (`--overlap`, `--lateness`).
    pub flag: &'static str,
    /// The 99th percentile of the lags measured, ms.
    pub p99_ms: i64,
    /// Events later than the window among them (found by luck: others like them are lost).
    pub beyond: u64,
}

impl std::fmt::Display for LateNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |ms: i64| ms as f64 / 1000.0;
        write!(
            f,
            "an event was ingested {:.1} s after its timestamp ({}% of {} {:.0} s; \
             99th percentile of the lag {:.1} s)",
            s(self.lag_ms),
            self.lag_ms.saturating_mul(100) / self.window_ms.max(1),
            self.flag,
            s(self.window_ms),
            s(self.p99_ms),
        )?;
        if self.beyond > 0 {
            write!(
                f,
                "; {} events came later than {}, so others may have been lost",
                self.beyond, self.flag
            )?;
        } else {
            write!(f, "; events later than {} are lost", self.flag)?;
        }
        write!(f, ": raise {}", self.flag)
    }
}

/// One group's lags and late events.
#[derive(Debug, Clone)]
pub struct LateWatch {
    window_ms: i64,
    flag: &'static str,
    lags: Lags,
    noticed_at_ms: Option<i64>,
    /// Events delivered whose lag was over 75 % of the window.
    pub near: u64,
    /// Events delivered whose lag was over the window (others like them are lost).
    pub beyond: u64,
}

impl LateWatch {
    /// Watches for events later than `window_ms`, set with `flag`.
    pub fn new(window_ms: i64, flag: &'static str) -> Self {
        LateWatch {
            window_ms: window_ms.max(0),
            flag,
            lags: Lags::default(),
            noticed_at_ms: None,
            near: 0,
            beyond: 0,
        }
    }

    /// The `per_mille`/1000 quantile of the last lags, `None` before the first event.
    pub fn quantile(&self, per_mille: usize) -> Option<i64> {
        self.lags.quantile(per_mille)
    }

    /// Measures the ingestion lag of events delivered at `now_ms` (each once: a re-read would
    /// weigh it twice), counts those close to the window or past it, and says so at most once
    /// a minute.
    pub fn observe(&mut self, delivered: &[Event], now_ms: i64) -> Option<LateNotice> {
        let mut worst: Option<i64> = None;
        let mut beyond = 0;
        for e in delivered {
            if e.ingestion_ms <= 0 {
                continue;
            }
            let lag = e.ingestion_ms.saturating_sub(e.timestamp_ms).max(0);
            self.lags.push(lag);
            if lag > self.window_ms {
                self.beyond += 1;
                beyond += 1;
            } else if lag.saturating_mul(1000) > self.window_ms.saturating_mul(NEAR_PER_MILLE) {
                self.near += 1;
            } else {
                continue;
            }
            worst = Some(worst.map_or(lag, |w| w.max(lag)));
        }
        let lag_ms = worst?;
        if self
            .noticed_at_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < NOTICE_EVERY_MS)
        {
            return None;
        }
        self.noticed_at_ms = Some(now_ms);
        Some(LateNotice {
            lag_ms,
            window_ms: self.window_ms,
            flag: self.flag,
            p99_ms: self.lags.quantile(990).unwrap_or(lag_ms),
            beyond,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lagged(ts: i64, lag: i64) -> Event {
        Event {
            log_stream: "s".into(),
            timestamp_ms: ts,
            ingestion_ms: ts + lag,
            event_id: ts.to_string(),
            message: String::new(),
        }
    }

    #[test]
    fn near_and_beyond_are_counted_and_said_once_a_minute() {
        let mut w = LateWatch::new(300_000, "--lateness");
        assert_eq!(w.observe(&[lagged(1, 1_000), lagged(2, 200_000)], 0), None);
        let n = w
            .observe(&[lagged(3, 240_000), lagged(4, 310_000)], 1_000)
            .expect("a notice");
        assert_eq!((w.near, w.beyond), (1, 1));
        assert_eq!((n.lag_ms, n.beyond), (310_000, 1));
        let text = n.to_string();
        assert!(text.contains("103% of --lateness 300 s"), "{text}");
        assert!(text.ends_with(": raise --lateness"), "{text}");
        // Counted, not said again within the minute.
        assert_eq!(w.observe(&[lagged(5, 250_000)], 60_999), None);
        assert_eq!(w.near, 2);
        assert!(w.observe(&[lagged(6, 250_000)], 61_000).is_some());
    }

    #[test]
    fn the_quantiles_are_of_the_last_lags() {
        let mut w = LateWatch::new(1_000, "--overlap");
        assert_eq!(w.quantile(500), None);
        let old: Vec<Event> = (0..LAG_SAMPLE as i64).map(|i| lagged(i, 900)).collect();
        w.observe(&old, 0);
        let new: Vec<Event> = (0..LAG_SAMPLE as i64).map(|i| lagged(i, 10)).collect();
        w.observe(&new, 0);
        assert_eq!((w.quantile(0), w.quantile(1000)), (Some(10), Some(10)));
    }
}
