//! Polling FilterLogEvents over a sliding window that reads each event a few times, not once
//! per poll, de-duplicated by event id.
//!
//! `startTime = last + 1` loses events: ingestion lags behind event time and many events share
//! a millisecond (open-telemetry-collector-contrib #32231, #48577; logstash-input-cloudwatch-logs
//! #47). Re-reading the whole `overlap` on every poll loses nothing but returns every event
//! `overlap / interval` times (60 at 2 min and 2 s), which a busy group cannot afford inside the
//! 5 requests per second of FilterLogEvents. So each group's event time is read in passes
//! ([`Schedule`]):
//!
//! * the **head**, on every poll, from `head_lag` before the previous poll: the events that come
//!   in on time (`head_lag` is the measured 90th percentile of the ingestion lag, at most half
//!   the interval);
//! * the **late** pass, every sweep, over the event time that has just become `late_window` old
//!   (the measured 99th percentile of the lag plus half of it): late events soon after they are
//!   ingested; it is on only when the head misses events and the late window is at most half
//!   the overlap (otherwise the final pass comes almost as soon, for one read less);
//! * the **final** pass, every sweep, over the event time that has just become `overlap` old:
//!   whatever was ingested at most `overlap` after its timestamp and missed so far.
//!
//! Rounds start every interval (at once when the previous one took longer), and a round reads
//! every group's head before any group's sweep ([`plan_round`]), so that the sweeps' pages do
//! not hold back the heads: of the groups after them, nor of the next round.
//!
//! Each pass moves a cursor and reads each millisecond once (the head a little more), so an
//! event is returned `1 + head_lag / interval` times by the head, once by the final pass and
//! once by the late pass when it is on. Event ids are remembered while the final pass has not
//! passed their time ([`Window`]), so memory holds one overlap of ids (and a hard cap). Events
//! that arrive close to the overlap, or past it, are counted and warned about
//! ([`Schedule::observe`]): an event back-dated further than the overlap when it is ingested is
//! out of reach of any poll, which is the documented limit of polling.

use super::budget::Budget;
use super::filter::{page_batches, Event, Pages, Progress, Query};
use super::late::{LateNotice, LateWatch, NOTICE_EVERY_MS};
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

/// The event ids of one group that a later read could return again.
#[derive(Debug, Clone, Default)]
pub struct Window {
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
    /// An empty window.
    pub fn new() -> Self {
        Window::default()
    }

    fn key(&self, id: &str) -> IdKey {
        use std::hash::BuildHasher as _;
        let (a, b) = (self.hashers.0.hash_one(id), self.hashers.1.hash_one(id));
        (u128::from(a) << 64) | u128::from(b)
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

    /// Forgets the ids of events before `start_ms`: no later read returns them again.
    pub fn forget_before(&mut self, start_ms: i64) {
        while let Some((ts, _)) = self.by_time.first() {
            if *ts >= start_ms {
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

/// Which pass of a [`Schedule`] a read belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Every poll, up to now.
    Head,
    /// Every sweep, the event time that has just become `late_window` old.
    Late,
    /// Every sweep, the event time that has just become `overlap` old.
    Final,
}

/// One FilterLogEvents range that a poll reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// The pass.
    pub pass: Pass,
    /// `startTime`, ms (inclusive).
    pub start_ms: i64,
    /// `endTime`, ms (inclusive); `None` up to now.
    pub end_ms: Option<i64>,
    /// Where the pass goes on after this read succeeded.
    resume_ms: i64,
}

/// Longest time between two sweeps (late and final passes).
const MAX_SWEEP_MS: i64 = 15_000;

/// When one group's event time is read (the passes of the module documentation), as a pure
/// function of the poll times and the events seen: [`Schedule::plan`] says what to read now,
/// [`Schedule::done`] moves a pass on after its read succeeded, [`Schedule::observe`] measures
/// the lag of the events delivered.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval_ms: i64,
    overlap_ms: i64,
    sweep_ms: i64,
    head_ms: i64,
    late_ms: i64,
    final_ms: i64,
    next_sweep_ms: i64,
    /// The lags measured, and the events near the overlap or past it.
    pub late: LateWatch,
}

impl Schedule {
    /// The schedule of a group read from `start_ms` at `now_ms` (the first poll), every
    /// `interval_ms`, whose events may be ingested up to `overlap_ms` after their timestamp.
    pub fn new(start_ms: i64, now_ms: i64, interval_ms: i64, overlap_ms: i64) -> Self {
        let (interval_ms, overlap_ms) = (interval_ms.max(0), overlap_ms.max(0));
        // What is older than the overlap at the start can no longer change: the first head
        // read returns it once, the sweeps never again.
        let swept = start_ms.max(now_ms.saturating_sub(overlap_ms));
        let sweep_ms = (overlap_ms / 8).clamp(interval_ms.min(MAX_SWEEP_MS), MAX_SWEEP_MS);
        Schedule {
            interval_ms,
            overlap_ms,
            sweep_ms,
            head_ms: start_ms,
            late_ms: swept,
            final_ms: swept,
            next_sweep_ms: now_ms.saturating_add(sweep_ms),
            late: LateWatch::new(overlap_ms, "--overlap"),
        }
    }

    /// How far before the previous poll the head reads again: the 90th percentile of the lag,
    /// at most half the interval.
    pub fn head_lag_ms(&self) -> i64 {
        self.late
            .quantile(900)
            .unwrap_or(0)
            .clamp(0, self.interval_ms / 2)
    }

    /// The age at which the late pass reads event time: the 99th percentile of the lag plus
    /// half of it, at most the overlap.
    pub fn late_window_ms(&self) -> i64 {
        let p99 = self.late.quantile(990).unwrap_or(self.overlap_ms);
        p99.saturating_add(p99 / 2).clamp(0, self.overlap_ms)
    }

    /// Whether the late pass is worth its read: the head misses events (the 99th percentile is
    /// past its reach) and the final pass would come much later.
    pub fn late_pass_on(&self) -> bool {
        let p99 = self.late.quantile(990).unwrap_or(0);
        p99 > self.head_lag_ms() && self.late_window_ms() <= self.overlap_ms / 2
    }

    /// Time between sweeps: an eighth of the overlap, within [interval, 15 s].
    pub fn sweep_ms(&self) -> i64 {
        self.sweep_ms
    }

    /// Where the next head read starts.
    pub fn head_start_ms(&self) -> i64 {
        self.head_ms
    }

    /// Ids of events before this can be forgotten: the final pass has read their time.
    pub fn window_start_ms(&self) -> i64 {
        self.final_ms
    }

    /// The reads of a poll at `now_ms`: the head, and on a sweep the late and final passes.
    pub fn plan(&mut self, now_ms: i64) -> Vec<Read> {
        let mut reads = vec![Read {
            pass: Pass::Head,
            start_ms: self.head_ms,
            end_ms: None,
            resume_ms: self.head_ms.max(now_ms.saturating_sub(self.head_lag_ms())),
        }];
        if now_ms < self.next_sweep_ms {
            return reads;
        }
        self.next_sweep_ms = now_ms.saturating_add(self.sweep_ms);
        let late_end = now_ms.saturating_sub(self.late_window_ms());
        if !self.late_pass_on() {
            // Off: the final pass reads that time; the pass resumes where it stands now.
            self.late_ms = self.late_ms.max(late_end.saturating_add(1));
        } else if late_end >= self.late_ms {
            reads.push(Read {
                pass: Pass::Late,
                start_ms: self.late_ms,
                end_ms: Some(late_end),
                resume_ms: late_end.saturating_add(1),
            });
        }
        let final_end = now_ms.saturating_sub(self.overlap_ms);
        if final_end >= self.final_ms {
            reads.push(Read {
                pass: Pass::Final,
                start_ms: self.final_ms,
                end_ms: Some(final_end),
                resume_ms: final_end.saturating_add(1),
            });
        }
        reads
    }

    /// Moves `read`'s pass on after the read succeeded (a failed read is planned again).
    pub fn done(&mut self, read: &Read) {
        let cursor = match read.pass {
            Pass::Head => &mut self.head_ms,
            Pass::Late => &mut self.late_ms,
            Pass::Final => &mut self.final_ms,
        };
        *cursor = (*cursor).max(read.resume_ms);
    }

    /// Measures the ingestion lag of events delivered at `now_ms` (see [`LateWatch::observe`]).
    pub fn observe(&mut self, delivered: &[Event], now_ms: i64) -> Option<LateNotice> {
        self.late.observe(delivered, now_ms)
    }
}

/// The reads of one round over every group at `now_ms`, as (group index, read): every group's
/// head first, then the sweeps (late and final passes) group by group. Read group by group, the
/// sweep pages of the groups before it (a few requests each, out of the shared budget) would
/// hold back a group's head by seconds, delaying the events that come on time.
pub fn plan_round(groups: &mut [GroupPoll], now_ms: i64) -> Vec<(usize, Read)> {
    let mut heads = Vec::with_capacity(groups.len());
    let mut sweeps = Vec::new();
    for (i, g) in groups.iter_mut().enumerate() {
        for read in g.schedule.plan(now_ms) {
            if read.pass == Pass::Head {
                heads.push((i, read));
            } else {
                sweeps.push((i, read));
            }
        }
    }
    heads.extend(sweeps);
    heads
}

/// How much longer than `--interval` a round of reads over every group may take before the
/// budget is said not to keep up: twice the interval, and at least a second more.
pub fn falls_behind(interval_ms: i64, took_ms: i64) -> bool {
    took_ms > interval_ms.saturating_mul(2) && took_ms.saturating_sub(interval_ms) >= 1_000
}

/// What to say when a round of reads over `groups` groups took `took_ms` (see
/// [`falls_behind`]) and the head furthest behind starts `head_behind_ms` before now.
pub fn behind_notice(groups: usize, interval_ms: i64, took_ms: i64, head_behind_ms: i64) -> String {
    let s = |ms: i64| ms as f64 / 1000.0;
    format!(
        "reading {groups} log groups took {:.1} s, over twice --interval {:.1} s, and the \
         furthest head read starts {:.1} s before now: the request budget (--max-tps) cannot \
         keep up, so events come later (none within --overlap is lost, only delayed); use a \
         longer --interval, fewer groups, or a subscription (`spanline lambda`)",
        s(took_ms),
        s(interval_ms),
        s(head_behind_ms),
    )
}

/// One group's ids and schedule.
#[derive(Debug, Clone)]
pub struct GroupPoll {
    /// The ids a later read could return again.
    pub window: Window,
    /// When its event time is read.
    pub schedule: Schedule,
}

/// What a page gave: the events to deliver, and what to tell.
#[derive(Debug, Default)]
pub struct Taken {
    /// Events not seen before, in their order.
    pub fresh: Vec<Event>,
    /// Bounds reached and late events, as (limit name, count) for the summary.
    pub counted: Vec<(&'static str, u64)>,
    /// A warning for stderr.
    pub notice: Option<LateNotice>,
}

impl GroupPoll {
    /// A group read from `start_ms` at `now_ms` (see [`Schedule::new`]).
    pub fn new(start_ms: i64, now_ms: i64, interval_ms: i64, overlap_ms: i64) -> Self {
        GroupPoll {
            window: Window::new(),
            schedule: Schedule::new(start_ms, now_ms, interval_ms, overlap_ms),
        }
    }

    /// De-duplicates a page read by the poll at `now_ms` and measures its fresh events.
    pub fn take(&mut self, events: Vec<Event>, now_ms: i64) -> Taken {
        let before = (
            self.window.forgotten,
            self.schedule.late.near,
            self.schedule.late.beyond,
        );
        let fresh = self.window.admit(events);
        let notice = self.schedule.observe(&fresh, now_ms);
        let counted = [
            ("poll_ids", self.window.forgotten - before.0),
            ("late_near_window", self.schedule.late.near - before.1),
            ("late_beyond_window", self.schedule.late.beyond - before.2),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
        Taken {
            fresh,
            counted,
            notice,
        }
    }

    /// After the reads of a poll: forgets the ids no later read can return.
    pub fn polled(&mut self) {
        self.window.forget_before(self.schedule.window_start_ms());
    }
}

/// What to poll.
#[derive(Debug, Clone)]
pub struct Poll {
    /// The log groups.
    pub groups: Vec<String>,
    /// Stream prefix and filter pattern (times are the schedule's).
    pub query: Query,
    /// Where the first poll starts, ms.
    pub start_ms: i64,
    /// How long after its timestamp an event may be ingested and still be delivered, ms.
    pub overlap_ms: i64,
    /// Time between polls.
    pub interval: Duration,
}

/// `tail --poll`: FilterLogEvents on every group, again and again, in the passes of each
/// group's [`Schedule`]; events seen before are dropped by id. A read that fails is reported
/// (a notice) and planned again from the same start. Runs until dropped.
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
            let interval_ms = i64::try_from(poll.interval.as_millis()).unwrap_or(i64::MAX);
            let first = crate::convert::time::now_ms();
            let mut groups: Vec<GroupPoll> = poll
                .groups
                .iter()
                .map(|_| GroupPoll::new(poll.start_ms, first, interval_ms, poll.overlap_ms))
                .collect();
            let mut behind_said: Option<i64> = None;
            loop {
                let polled_at = crate::convert::time::now_ms();
                let next_round = tokio::time::Instant::now().checked_add(poll.interval);
                let mut failed = vec![false; groups.len()];
                for (i, read) in plan_round(&mut groups, polled_at) {
                    let (Some(group), Some(g)) = (poll.groups.get(i), groups.get_mut(i)) else {
                        continue;
                    };
                    if failed.get(i).copied().unwrap_or(false) {
                        // Retried ten times already: the group's other passes wait too.
                        continue;
                    }
                    let input = u32::try_from(i).unwrap_or(u32::MAX);
                    let query = Query {
                        start_ms: Some(read.start_ms),
                        end_ms: read.end_ms,
                        ..poll.query.clone()
                    };
                    let mut pages = Pages::new(&client, group, &query);
                    let ok = loop {
                        match pages.next_page(&budget, &progress).await {
                            Ok(Some(events)) => {
                                let taken = g.take(events, polled_at);
                                for (limit, n) in taken.counted {
                                    let ev = SourceEvent::Counted { limit, n };
                                    if tx.send(ev).await.is_err() {
                                        return;
                                    }
                                }
                                if let Some(n) = taken.notice {
                                    let n = SourceEvent::Notice(format!("log group {group}: {n}"));
                                    if tx.send(n).await.is_err() {
                                        return;
                                    }
                                }
                                for b in page_batches(
                                    super::live::group_name_of(group),
                                    &taken.fresh,
                                    input,
                                ) {
                                    if tx.send(SourceEvent::Records(b)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break true,
                            Err(e) => {
                                let n = SourceEvent::Notice(format!(
                                    "{}; read again next time",
                                    crate::convert::aws::error_chain(&e)
                                ));
                                if tx.send(n).await.is_err() {
                                    return;
                                }
                                break false;
                            }
                        }
                    };
                    if !ok {
                        if let Some(f) = failed.get_mut(i) {
                            *f = true;
                        }
                        continue;
                    }
                    g.schedule.done(&read);
                }
                for g in &mut groups {
                    g.polled();
                }
                let done_at = crate::convert::time::now_ms();
                let took = done_at.saturating_sub(polled_at);
                if falls_behind(interval_ms, took) {
                    let ev = SourceEvent::Counted {
                        limit: "poll_behind",
                        n: 1,
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                    if behind_said.is_none_or(|t| done_at.saturating_sub(t) >= NOTICE_EVERY_MS) {
                        behind_said = Some(done_at);
                        let head_behind = groups
                            .iter()
                            .map(|g| done_at.saturating_sub(g.schedule.head_start_ms()))
                            .max()
                            .unwrap_or(0);
                        let n = behind_notice(poll.groups.len(), interval_ms, took, head_behind);
                        if tx.send(SourceEvent::Notice(n)).await.is_err() {
                            return;
                        }
                    }
                }
                // Rounds start every --interval (at once when one took longer): sleeping a
                // whole interval after a round that sweeps made long would space the heads by
                // the interval plus the sweeps.
                match next_round {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => tokio::time::sleep(poll.interval).await,
                }
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
mod tests;
