//! Tail-based sampling in `spanline lambda`, where every delivery is converted by whichever
//! instance Lambda picks and nothing survives between them but what is written down.
//!
//! Each delivery runs the [sampler](crate::convert::sample) with the pipeline: a trace the
//! ratio keeps goes out at once (every instance computes the same); a trace one of whose spans
//! decides "keep" (an error, a slow span) goes out at once too, and then:
//! 1. **its decision is recorded** where later deliveries find it: an empty object
//!    `<prefix><trace id>` in S3, created with a conditional PUT (`If-None-Match: *`: the first
//!    writer wins, a second is told it exists; expired by the bucket's lifecycle rule);
//! 2. **its other spans are read back** from CloudWatch: FilterLogEvents with the trace id (as
//!    the span lines write it) as the filter term over the delivery's log groups and the
//!    configured ones, then each log stream those lines came from over the invocation's time
//!    (with its platform lines, so that invocation spans come too), converted whole; the spans
//!    of the trace are sent. Recording comes first, so a span of the trace is either ingested
//!    before the read-back (and found by it) or delivered after the record exists.
//!
//! The spans of traces a delivery cannot decide (the ratio drops them, nothing in them keeps
//! them) are kept when the record of their trace exists (one HEAD per trace, remembered by the
//! instance), else dropped. The requests are bounded per event ([`MAX_CAUSED_PER_EVENT`],
//! [`MAX_CHECKS_PER_EVENT`]); past them, the traces are counted and dropped.

use super::FetchBack;
use crate::convert::assemble::Span;
use crate::convert::record::LogRecord;
use crate::convert::sample::Policy;
use crate::span_line::TraceId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most traces kept for an error or a slow span whose other spans are read back, per event.
pub const MAX_CAUSED_PER_EVENT: usize = 8;

/// Most traces whose record is looked up, per event.
pub const MAX_CHECKS_PER_EVENT: usize = 256;

/// Records looked up at the same time.
const CONCURRENT_CHECKS: usize = 16;

/// Log streams read back per kept trace.
pub const MAX_STREAMS_PER_TRACE: usize = 8;

/// How far back a kept trace's span lines are looked for, ms.
pub const LOOK_BACK_MS: i64 = 30 * 60_000;

/// Trace ids an instance remembers as kept.
const MAX_CACHED: usize = 1 << 16;

/// Where decisions are recorded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Decisions {
    /// One empty object per kept trace.
    S3 {
        /// The client.
        client: aws_sdk_s3::Client,
        /// The bucket.
        bucket: String,
        /// The key prefix (ends with `/` or is empty).
        prefix: String,
    },
    /// In memory (tests): shared by the handlers that hold a clone.
    Memory(Arc<Mutex<HashSet<TraceId>>>),
}

impl Decisions {
    /// Parses `s3://bucket/prefix/`.
    pub fn s3(client: aws_sdk_s3::Client, url: &str) -> Result<Decisions, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?}: expected s3://bucket/prefix/"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?}: expected s3://bucket/prefix/"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Decisions::S3 {
            client,
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// Records that `trace` is kept (already recorded is fine).
    async fn record(&self, trace: &TraceId) -> Result<(), String> {
        match self {
            Decisions::Memory(set) => {
                if let Ok(mut s) = set.lock() {
                    s.insert(*trace);
                }
                Ok(())
            }
            Decisions::S3 {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{trace}");
                let put = crate::convert::source::s3::retry(bucket, &key, "PutObject", || {
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .if_none_match("*")
                        .body(Vec::new().into())
                        .send()
                })
                .await;
                match put {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let t = e.to_string();
                        // Someone recorded it first.
                        if t.contains("PreconditionFailed")
                            || t.contains("ConditionalRequestConflict")
                        {
                            Ok(())
                        } else {
                            Err(t)
                        }
                    }
                }
            }
        }
    }

    /// Whether `trace` was recorded as kept.
    async fn is_kept(&self, trace: &TraceId) -> Result<bool, String> {
        match self {
            Decisions::Memory(set) => Ok(set.lock().is_ok_and(|s| s.contains(trace))),
            Decisions::S3 {
                client,
                bucket,
                prefix,
            } => {
                let key = format!("{prefix}{trace}");
                let head = crate::convert::source::s3::retry(bucket, &key, "HeadObject", || {
                    client.head_object().bucket(bucket).key(&key).send()
                })
                .await;
                match head {
                    Ok(_) => Ok(true),
                    Err(e) => {
                        let t = e.to_string();
                        if t.contains("NotFound") || t.contains("NoSuchKey") || t.contains("404") {
                            Ok(false)
                        } else {
                            Err(t)
                        }
                    }
                }
            }
        }
    }
}

/// Sampling set up for the handler.
#[derive(Debug)]
pub struct LambdaSampling {
    /// The policy.
    pub policy: Policy,
    /// Where decisions are recorded.
    pub decisions: Decisions,
    /// Log groups a kept trace's span lines are read back from, besides the delivery's own.
    pub groups: Vec<String>,
    /// Traces this instance knows are kept.
    cache: Mutex<HashSet<TraceId>>,
}

/// What sampling did in one event.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SamplingReport {
    /// Traces kept, by reason (`ratio`, `error`, `slow`, `recorded`: kept by another delivery).
    pub kept_traces: std::collections::BTreeMap<&'static str, u64>,
    /// Traces dropped.
    pub dropped_traces: u64,
    /// Spans dropped.
    pub dropped_spans: u64,
    /// Decisions recorded.
    pub recorded: u64,
    /// Records looked up.
    pub checked: u64,
    /// Spans read back for kept traces (sent again when this delivery had sent them).
    pub fetched_back_spans: u64,
    /// FilterLogEvents reads made to read kept traces back (one per log group and per log
    /// stream; each may take more than one page).
    pub read_back_reads: u64,
    /// Kept traces not read back (past [`MAX_CAUSED_PER_EVENT`], or the read failed), and
    /// undecided traces not looked up (past [`MAX_CHECKS_PER_EVENT`], or the lookup failed):
    /// dropped.
    pub over_budget: u64,
}

impl LambdaSampling {
    /// Sampling with `policy`, its decisions in `decisions`.
    pub fn new(policy: Policy, decisions: Decisions, groups: Vec<String>) -> Self {
        LambdaSampling {
            policy,
            decisions,
            groups,
            cache: Mutex::new(HashSet::new()),
        }
    }

    fn remember(&self, trace: TraceId) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= MAX_CACHED {
                c.clear();
            }
            c.insert(trace);
        }
    }

    fn known(&self, trace: &TraceId) -> bool {
        self.cache.lock().is_ok_and(|c| c.contains(trace))
    }

    /// After a delivery's run: records the traces kept for cause and reads their other spans
    /// back; keeps the undecided spans whose trace was recorded elsewhere. Returns the spans
    /// to send besides those the run sent.
    pub(super) async fn settle(
        &self,
        fetch: Option<&FetchBack>,
        caused: &[(TraceId, crate::convert::sample::Reason)],
        undecided: Vec<Span>,
        delivered_groups: &BTreeSet<String>,
        converter: &crate::convert::Config,
        report: &mut SamplingReport,
    ) -> Vec<Span> {
        let mut out = Vec::new();
        for (i, (trace, _)) in caused.iter().enumerate() {
            self.remember(*trace);
            if let Err(e) = self.decisions.record(trace).await {
                eprintln!(
                    "spanline: recording that trace {trace} is kept: {}",
                    crate::convert::printable::Visible(&e)
                );
            } else {
                report.recorded += 1;
            }
            let Some(fetch) = fetch.filter(|_| i < MAX_CAUSED_PER_EVENT) else {
                report.over_budget += 1;
                continue;
            };
            let mut groups: BTreeSet<String> = delivered_groups.clone();
            groups.extend(self.groups.iter().cloned());
            match read_back(
                fetch,
                trace,
                &groups,
                converter,
                &mut report.read_back_reads,
            )
            .await
            {
                Ok(spans) => {
                    report.fetched_back_spans += spans.len() as u64;
                    out.extend(spans);
                }
                Err(e) => {
                    report.over_budget += 1;
                    eprintln!(
                        "spanline: reading trace {trace} back: {}",
                        crate::convert::printable::Visible(&e)
                    );
                }
            }
        }
        let mut by_trace: HashMap<TraceId, Vec<Span>> = HashMap::new();
        for s in undecided {
            by_trace.entry(s.trace_id).or_default().push(s);
        }
        let mut traces: Vec<(TraceId, Vec<Span>)> = by_trace.into_iter().collect();
        traces.sort_by_key(|(t, _)| *t);
        // The records are looked up concurrently (a handful at a time): each is one round trip.
        let mut lookups = tokio::task::JoinSet::new();
        let mut verdicts: HashMap<TraceId, Result<bool, String>> = HashMap::new();
        let mut to_check = traces
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !self.known(t))
            .take(MAX_CHECKS_PER_EVENT);
        loop {
            while lookups.len() < CONCURRENT_CHECKS {
                let Some(trace) = to_check.next() else { break };
                report.checked += 1;
                let decisions = self.decisions.clone();
                lookups.spawn(async move { (trace, decisions.is_kept(&trace).await) });
            }
            match lookups.join_next().await {
                Some(Ok((trace, verdict))) => {
                    verdicts.insert(trace, verdict);
                }
                Some(Err(e)) => eprintln!("spanline: a decision look-up failed: {e}"),
                None => break,
            }
        }
        for (trace, spans) in traces {
            let kept = if self.known(&trace) {
                true
            } else {
                match verdicts.remove(&trace) {
                    Some(Ok(k)) => {
                        if k {
                            self.remember(trace);
                        }
                        k
                    }
                    Some(Err(e)) => {
                        report.over_budget += 1;
                        eprintln!(
                            "spanline: looking up whether trace {trace} is kept: {}",
                            crate::convert::printable::Visible(&e)
                        );
                        false
                    }
                    // Past the bound (or the look-up's task failed).
                    None => {
                        report.over_budget += 1;
                        false
                    }
                }
            };
            if kept {
                *report.kept_traces.entry("recorded").or_default() += 1;
                out.extend(spans);
            } else {
                report.dropped_traces += 1;
                report.dropped_spans += spans.len() as u64;
            }
        }
        out
    }
}

/// The spans of `trace` read back from CloudWatch: its span lines in `groups`, then the log
/// streams they came from, converted whole.
async fn read_back(
    fetch: &FetchBack,
    trace: &TraceId,
    groups: &BTreeSet<String>,
    converter: &crate::convert::Config,
    reads: &mut u64,
) -> Result<Vec<Span>, String> {
    let now = crate::convert::time::now_ms();
    let mut lines: Vec<LogRecord> = Vec::new();
    for g in groups {
        *reads += 1;
        lines.extend(
            fetch
                .fetch_trace(g, trace, now.saturating_sub(LOOK_BACK_MS), now)
                .await?,
        );
    }
    // The streams the trace's lines came from, each over the time of those lines (an
    // invocation lasts at most 15 minutes), with their platform lines.
    let mut streams: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for r in &lines {
        let e = streams
            .entry((r.log_group.clone(), r.log_stream.clone()))
            .or_insert((r.timestamp_ms, r.timestamp_ms));
        e.0 = e.0.min(r.timestamp_ms);
        e.1 = e.1.max(r.timestamp_ms);
    }
    let mut streams: Vec<_> = streams.into_iter().collect();
    streams.sort();
    let mut records = Vec::new();
    for ((g, s), (from, to)) in streams.into_iter().take(MAX_STREAMS_PER_TRACE) {
        let from = from.saturating_sub(15 * 60_000);
        let to = to.saturating_add(15 * 60_000).min(now);
        *reads += 1;
        records.extend(fetch.fetch(&g, &s, from, to).await?);
    }
    records.sort_by(|a, b| {
        (&a.log_group, &a.log_stream, a.timestamp_ms).cmp(&(
            &b.log_group,
            &b.log_stream,
            b.timestamp_ms,
        ))
    });
    let mut conv = crate::convert::Converter::new(converter.clone());
    for r in &records {
        conv.push(r);
    }
    Ok(conv
        .finish()
        .into_iter()
        .filter(|s| s.trace_id == *trace)
        .collect())
}
