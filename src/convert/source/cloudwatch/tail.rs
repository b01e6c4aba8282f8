//! Polling with a re-read overlap window, de-duplicated by event id.
//!
//! `startTime = last + 1` loses events: ingestion lags behind event time and many events share
//! a millisecond (open-telemetry-collector-contrib #32231, #48577; logstash-input-cloudwatch-logs
//! #47). Each poll here re-reads the last `overlap` of event time and drops the event ids it has
//! already seen. The ids remembered are exactly those inside the window, so memory is bounded by
//! the events of one window (and a hard cap); an event back-dated further than the window when it
//! is ingested is out of reach of any poll, which is the documented limit of polling.

use super::budget::Budget;
use super::filter::{page_batches, Event, Pages, Progress, Query};
use crate::convert::pipeline::{Source, SourceEvent};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// At most this many ids are remembered per group, whatever the window holds (about 60 bytes
/// each: 16 MiB). Beyond it the oldest are forgotten, counted as `poll_ids`: a re-read could
/// then show one of their events again (its spans are still de-duplicated by id).
pub const MAX_REMEMBERED: usize = 1 << 18;

/// An event id as remembered: 128 bits of two keyed hashes (the ids are 56 decimal digits;
/// a collision, which would drop an event, is as likely as guessing a 128-bit key).
type IdKey = u128;

/// The sliding window of one log group.
#[derive(Debug, Clone)]
pub struct Window {
    overlap_ms: i64,
    start_ms: i64,
    seen: HashSet<IdKey>,
    by_time: BTreeSet<(i64, IdKey)>,
    hashers: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
    /// Ids forgotten at [`MAX_REMEMBERED`].
    pub forgotten: u64,
}

impl Window {
    /// A window that starts reading at `start_ms` and re-reads `overlap_ms` on every poll.
    pub fn new(start_ms: i64, overlap_ms: i64) -> Self {
        Window {
            overlap_ms: overlap_ms.max(0),
            start_ms,
            seen: HashSet::new(),
            by_time: BTreeSet::new(),
            hashers: Default::default(),
            forgotten: 0,
        }
    }

    fn key(&self, id: &str) -> IdKey {
        use std::hash::BuildHasher as _;
        let (a, b) = (self.hashers.0.hash_one(id), self.hashers.1.hash_one(id));
        (u128::from(a) << 64) | u128::from(b)
    }

    /// Where the next poll starts (FilterLogEvents `startTime`).
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// How many event ids are remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Keeps the events not seen before (in their order) and remembers them. Events without an
    /// id cannot be de-duplicated and are always kept.
    pub fn admit(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            if e.event_id.is_empty() {
                out.push(e);
                continue;
            }
            let k = self.key(&e.event_id);
            if self.seen.insert(k) {
                self.by_time.insert((e.timestamp_ms, k));
                out.push(e);
            }
        }
        self.enforce_cap();
        out
    }

    /// After a poll that began at `polled_at_ms`: the next one starts `overlap` before it (never
    /// earlier than where this one started), and ids older than that are forgotten, because no
    /// later poll can return them again.
    pub fn advance(&mut self, polled_at_ms: i64) {
        self.start_ms = self
            .start_ms
            .max(polled_at_ms.saturating_sub(self.overlap_ms));
        while let Some((ts, _)) = self.by_time.first() {
            if *ts >= self.start_ms {
                break;
            }
            if let Some((_, k)) = self.by_time.pop_first() {
                self.seen.remove(&k);
            }
        }
    }

    fn enforce_cap(&mut self) {
        while self.seen.len() > MAX_REMEMBERED {
            match self.by_time.pop_first() {
                Some((_, k)) => {
                    self.seen.remove(&k);
                    self.forgotten += 1;
                }
                None => break,
            }
        }
    }
}

/// What to poll.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The log groups.
    pub groups: Vec<String>,
    /// Stream prefix and filter pattern (times are the window's).
    pub query: Query,
    /// Where the first poll starts, ms.
    pub start_ms: i64,
    /// Event time every poll reads again, ms.
    pub overlap_ms: i64,
    /// Time between polls.
    pub interval: Duration,
}

/// `tail --poll`: FilterLogEvents on every group, again and again, over the sliding window;
/// events seen before are dropped by id. A poll that fails is reported (a notice) and tried
/// again next time from the same start. Runs until dropped.
pub struct PollSource {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PollSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollSource").finish_non_exhaustive()
    }
}

impl Drop for PollSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PollSource {
    /// Starts polling.
    pub fn start(
        client: aws_sdk_cloudwatchlogs::Client,
        budget: Budget,
        progress: Arc<Progress>,
        poll: Poll,
    ) -> PollSource {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(async move {
            let mut windows: Vec<Window> = poll
                .groups
                .iter()
                .map(|_| Window::new(poll.start_ms, poll.overlap_ms))
                .collect();
            loop {
                let polled_at = crate::convert::time::now_ms();
                for (i, (group, window)) in poll.groups.iter().zip(windows.iter_mut()).enumerate() {
                    let query = Query {
                        start_ms: Some(window.start_ms()),
                        end_ms: None,
                        ..poll.query.clone()
                    };
                    let mut pages = Pages::new(&client, group, &query);
                    let input = u32::try_from(i).unwrap_or(u32::MAX);
                    let ok = loop {
                        match pages.next_page(&budget, &progress).await {
                            Ok(Some(events)) => {
                                let forgotten = window.forgotten;
                                let fresh = window.admit(events);
                                let n = window.forgotten - forgotten;
                                if n > 0 {
                                    let ev = SourceEvent::Counted {
                                        limit: "poll_ids",
                                        n,
                                    };
                                    if tx.send(ev).await.is_err() {
                                        return;
                                    }
                                }
                                if fresh.is_empty() {
                                    continue;
                                }
                                for b in page_batches(group, &fresh, input) {
                                    if tx.send(SourceEvent::Records(b)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break true,
                            Err(e) => {
                                let n = SourceEvent::Notice(format!(
                                    "{}; polled again next time",
                                    crate::convert::aws::error_chain(&e)
                                ));
                                if tx.send(n).await.is_err() {
                                    return;
                                }
                                break false;
                            }
                        }
                    };
                    if ok {
                        window.advance(polled_at);
                    }
                }
                tokio::time::sleep(poll.interval).await;
            }
        });
        PollSource { rx, task }
    }
}

impl Source for PollSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: i64, id: &str) -> Event {
        Event {
            log_stream: "s".into(),
            timestamp_ms: ts,
            ingestion_ms: ts,
            event_id: id.into(),
            message: id.into(),
        }
    }

    fn ids(v: &[Event]) -> Vec<&str> {
        v.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn rereads_are_deduplicated_and_late_events_kept() {
        let mut w = Window::new(1_000, 120_000);
        // Poll 1 at t=10s sees two events of the same millisecond.
        let got = w.admit(vec![ev(9_000, "1"), ev(9_000, "2")]);
        assert_eq!(ids(&got), ["1", "2"]);
        w.advance(10_000);
        assert_eq!(w.start_ms(), 1_000, "never before the requested start");
        // Poll 2 re-reads them, plus a third event of the same millisecond ingested late and
        // an event back-dated by a minute.
        let got = w.admit(vec![
            ev(9_000, "1"),
            ev(9_000, "2"),
            ev(9_000, "3"),
            ev(70_000, "5"),
        ]);
        assert_eq!(ids(&got), ["3", "5"]);
        w.advance(130_000);
        assert_eq!(w.start_ms(), 10_000);
        // Events before the new start are forgotten: memory holds one window.
        assert_eq!(w.remembered(), 1);
        let got = w.admit(vec![ev(70_000, "5"), ev(65_000, "4")]);
        assert_eq!(ids(&got), ["4"]);
    }

    #[test]
    fn the_window_never_moves_back() {
        let mut w = Window::new(0, 1_000);
        w.advance(50_000);
        w.advance(10_000);
        assert_eq!(w.start_ms(), 49_000);
    }

    #[test]
    fn the_ids_remembered_are_capped_and_the_forgotten_counted() {
        let mut w = Window::new(0, i64::MAX / 2);
        let events: Vec<Event> = (0..MAX_REMEMBERED as i64 + 3)
            .map(|i| ev(i, &format!("{i:056}")))
            .collect();
        assert_eq!(w.admit(events).len(), MAX_REMEMBERED + 3);
        assert_eq!((w.remembered(), w.forgotten), (MAX_REMEMBERED, 3));
        // The newest are still recognised, the oldest not.
        let (zero, nine) = (format!("{:056}", 0), format!("{:056}", 9));
        let again = w.admit(vec![ev(0, &zero), ev(9, &nine)]);
        assert_eq!(ids(&again), [zero.as_str()]);
    }

    #[test]
    fn events_without_ids_are_kept() {
        let mut w = Window::new(0, 1_000);
        assert_eq!(w.admit(vec![ev(1, ""), ev(1, "")]).len(), 2);
    }
}
