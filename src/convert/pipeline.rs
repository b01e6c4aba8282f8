//! The pipeline: the one loop from a [`Source`] through the [`Converter`] to the sinks. Every
//! command and the Lambda handler run it.
//!
//! ```text
//!  source task ──(bounded: SourceEvent)──▶ convert task ──(bounded: Step)──▶ deliver task
//!                                                                              │
//!               positions are committed once every span before them is ◀───────┘
//!               accepted by every sink (Committer)
//! ```
//!
//! * **Bounded**: each stage hands the next at most [`Options::queue`] items; a slow sink
//!   slows the source down (backpressure), nothing piles up in memory.
//! * **Streaming**: spans go out as soon as they are complete, while input is still read.
//! * **Acknowledged**: the deliver task sends each batch to every sink, then tells the
//!   [`Committer`] which spans were accepted and which [`Position`]s are safe. A position (the
//!   end of a log group's range, of an input) is committed only when every span before it was
//!   accepted *and* nothing the converter still holds back started before it: this is
//!   `forward`'s safety rule, here once for everyone.
//! * **Stoppable**: `stop` (Ctrl-C) ends reading; what is pending is finished and sent, and
//!   the report says the run was interrupted.
//! * **One report**: [`Report`] counts what every stage did.

use crate::convert::assemble::Span;
use crate::convert::record::RecordBatch;
use crate::convert::sample::{Policy, SampleCounts, Sampler};
use crate::convert::sink::{AnySink, SinkError};
use crate::convert::{Config, Converter, Summary};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A place the run can resume from, once everything before it is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// Log group `group` was read through event time `through_ms`. On its way to the
    /// committer the time is lowered to the earliest line of that group the converter still
    /// holds back (an invocation whose REPORT has not come).
    Group {
        /// The log group, by the name its records carry (what the converter holds back is
        /// found by it).
        group: Arc<str>,
        /// The name the position is recorded under when it is not `group` (`forward`'s
        /// checkpoint key: `account/region/group` when several accounts or Regions are read,
        /// the ARN of a group named by ARN).
        key: Option<Arc<str>>,
        /// Read (and, once committed, delivered) through this event time, ms.
        through_ms: i64,
        /// The 99th percentile of the ingestion lag of the events the read found new, when
        /// it measured any (`forward` sizes its next head with it).
        lag_p99_ms: Option<i64>,
    },
    /// Input `index` (a file, an object, a Kinesis record) was read whole.
    Input(u32),
}

/// An input that could not be read: named, with the reason. The run goes on with the others.
#[derive(Debug)]
pub struct InputFailure {
    /// The input (a path, `s3://…`, a log group, `record 3`).
    pub input: String,
    /// Why.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for InputFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = crate::convert::aws::error_chain(&*self.error);
        // Errors that name their input already are not prefixed with it a second time.
        if reason.starts_with(&format!("{}:", self.input)) {
            write!(f, "{reason}")
        } else {
            write!(f, "{}: {reason}", self.input)
        }
    }
}

/// What a source hands the pipeline.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceEvent {
    /// Records, in stream order within each stream.
    Records(RecordBatch),
    /// An input could not be read (the others go on; the run's exit code says it).
    Failed(InputFailure),
    /// Everything before this was handed over: see [`Position`].
    Mark(Position),
    /// Something the operator should know (Live Tail sampled, a reconnect).
    Notice(String),
    /// A bound the source reached `n` times (lines cut at `--max-line`, …), added to the
    /// summary's [`limits`](crate::convert::Summary::limits).
    Counted {
        /// The bound's name, as the README's "Limits" names it.
        limit: &'static str,
        /// How often it was reached.
        n: u64,
    },
}

/// Where records come from.
///
/// # Contract
/// * `next` returns the next event, waiting as long as it takes (a follower waits for new
///   records); `None` is the end of the input and is final.
/// * A source does its own retries (with the shared backoff policy) and reports an input it
///   gave up on as [`SourceEvent::Failed`], then goes on with the next input.
/// * Dropping a source stops it; it must not leave tasks behind that keep reading.
pub trait Source: Send {
    /// The next event, `None` at the end.
    fn next(&mut self) -> impl Future<Output = Option<SourceEvent>> + Send;
}

/// No source at all, or one.
impl<S: Source> Source for Option<S> {
    async fn next(&mut self) -> Option<SourceEvent> {
        match self {
            Some(s) => s.next().await,
            None => None,
        }
    }
}

/// Events held in memory, handed out in order: the test double of a source.
#[derive(Debug, Default)]
pub struct MemorySource(std::collections::VecDeque<SourceEvent>);

impl MemorySource {
    /// A source that hands out `events`.
    pub fn new(events: impl IntoIterator<Item = SourceEvent>) -> Self {
        MemorySource(events.into_iter().collect())
    }
}

impl Source for MemorySource {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.0.pop_front()
    }
}

/// What is told about delivery, for checkpoints.
///
/// # Contract
/// * `accepted` is called, in order, with each batch every sink accepted;
/// * `commit` is called with a position once every span before it was accepted and the
///   converter holds nothing back from before it;
/// * an `Err` stops the run (nothing later is sent).
pub trait Committer: Send {
    /// Its error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Whether an earlier run had `span` accepted already (it is not sent again).
    fn already_accepted(&self, _span: &Span) -> bool {
        false
    }
    /// The sinks accepted `spans`.
    fn accepted(&mut self, spans: &[Span]) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Every span before `position` was accepted.
    fn commit(
        &mut self,
        position: &Position,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A committer that remembers nothing (`convert`, `read`, `tail`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCommit;

impl Committer for NoCommit {
    type Error = std::convert::Infallible;
    async fn accepted(&mut self, _: &[Span]) -> Result<(), Self::Error> {
        Ok(())
    }
    async fn commit(&mut self, _: &Position) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// How the end of the input ends the invocations still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A finite input (`convert`, `read`, `export`): invocations whose REPORT never came are
    /// finished with what is known.
    Batch,
    /// Following (`tail`): invocations silent for the give-up delay (by the clock) are
    /// finished as time passes; at the end, the rest with what is known.
    Follow,
    /// A run that the next run continues (`forward`): nothing still open is finished at the
    /// end; it is left to the next run, which reads it again (except invocations silent for
    /// the give-up delay before the end of a group's range).
    Resumable,
    /// One delivery of many (the Lambda handler): see
    /// [`Converter::finish_delivery`].
    Delivery,
}

/// What to do when a sink fails for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop reading; report.
    Stop,
    /// Go on, and account for the inputs of every span not delivered (the Lambda handler's
    /// batch item failures): after a refusal (the data, not the backend, is at fault), later
    /// batches are still sent; after a failure worth retrying (the backend is down or slow),
    /// nothing more is sent.
    Account,
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The converter.
    pub converter: Config,
    /// See [`Mode`].
    pub mode: Mode,
    /// Invocations silent this long are finished with what is known ([`Mode::Follow`], and
    /// [`Mode::Resumable`] at the end of a group's range).
    pub give_up_after: Duration,
    /// Most spans in one batch sent to the sinks.
    pub batch_spans: usize,
    /// Items in flight between two stages.
    pub queue: usize,
    /// See [`OnFailure`].
    pub on_failure: OnFailure,
    /// Sends still running at this instant count as failed (the Lambda deadline).
    pub deadline: Option<Instant>,
    /// Tail-based sampling (see [`crate::convert::sample`]). In [`Mode::Resumable`] the spans
    /// of traces still undecided at the end are not sent and their group's position is lowered
    /// to them, so the next run reads and decides them again; in [`Mode::Delivery`] nothing is
    /// decided by time and the undecided spans are handed back in
    /// [`Report::sampling_undecided`].
    pub sampling: Option<Policy>,
    /// Traces an earlier run kept (from `forward`'s checkpoint): their spans are kept.
    pub kept_traces: Vec<crate::span_line::TraceId>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            converter: Config::default(),
            mode: Mode::Batch,
            give_up_after: Duration::from_secs(20 * 60),
            batch_spans: 1000,
            queue: 4,
            on_failure: OnFailure::Stop,
            deadline: None,
            sampling: None,
            kept_traces: Vec::new(),
        }
    }
}

/// What one sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Its name.
    pub name: String,
    /// Whether it delivers (a backend, a file) rather than only shows.
    pub destination: bool,
    /// Spans it accepted.
    pub accepted: u64,
    /// Spans it rejected (OTLP partial success).
    pub rejected: u64,
    /// Most attempts one batch needed.
    pub max_attempts: u32,
    /// Sends repeated after a failure.
    pub retries: u64,
    /// Log records it accepted (`--logs otlp`).
    pub logs_accepted: u64,
    /// Log records it rejected (OTLP partial success).
    pub logs_rejected: u64,
}

/// How a run ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The input ended and everything was delivered.
    Completed,
    /// Stopped (Ctrl-C); what was pending was delivered.
    Interrupted,
    /// A sink failed for good; nothing after the failed batch was sent.
    SinkFailed {
        /// The sink.
        sink: String,
        /// Why.
        error: SinkError,
    },
    /// The committer failed (the checkpoint could not be written).
    CommitFailed(Box<dyn std::error::Error + Send + Sync>),
}

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// The converter's counters.
    pub summary: Summary,
    /// How it ended.
    pub outcome: Outcome,
    /// Inputs that could not be read.
    pub inputs_failed: u64,
    /// Inputs read whole ([`Position::Input`] marks that went through).
    pub inputs_read: u64,
    /// Per sink.
    pub sinks: Vec<SinkReport>,
    /// Spans not sent because an earlier run had them accepted.
    pub already_accepted: u64,
    /// Spans the converter still held at the end ([`Mode::Resumable`]: left to the next run).
    pub held_at_end: u64,
    /// Invocations still open at the end.
    pub pending_at_end: u64,
    /// Positions committed.
    pub committed: u64,
    /// The inputs with a span that was not delivered (see [`Span::input`]).
    pub undelivered_inputs: std::collections::BTreeSet<u32>,
    /// The assembler's counters.
    pub counters: crate::convert::assemble::Counters,
    /// Invocations the delivery could not place ([`Mode::Delivery`]): what their lines said.
    pub unplaced: Vec<crate::convert::assemble::Invocation>,
    /// What sampling kept and dropped, when the run sampled.
    pub sampling: Option<SampleCounts>,
    /// [`Mode::Delivery`] with sampling: the spans of traces this delivery could not decide
    /// (not sent; see [`crate::convert::lambda`]).
    pub sampling_undecided: Vec<Span>,
    /// [`Mode::Delivery`] with sampling: the traces kept for what one of their spans showed
    /// (an error, a slow span).
    pub sampling_caused: Vec<(crate::span_line::TraceId, crate::convert::sample::Reason)>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// What the run tells as it goes (for progress and messages on stderr).
#[derive(Debug)]
#[non_exhaustive]
pub enum RunEvent<'a> {
    /// An input failed (the others go on).
    InputFailed(&'a InputFailure),
    /// A source's notice.
    Notice(&'a str),
    /// A sink accepted some spans but rejected others.
    Rejected {
        /// The sink.
        sink: &'a str,
        /// How many.
        rejected: u64,
        /// The backend's message.
        message: &'a str,
    },
}

/// Receives [`RunEvent`]s.
pub type Observer = Box<dyn FnMut(&RunEvent<'_>) + Send>;

/// A future that ends the run early when it completes (Ctrl-C).
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the convert task hands the deliver task.
enum Step {
    Spans(Vec<Span>),
    Commit(Position),
    Failed(InputFailure),
    Notice(String),
    Tick,
}

/// What the convert task ends with.
struct Converted {
    summary: Summary,
    unplaced: Vec<crate::convert::assemble::Invocation>,
    counters: crate::convert::assemble::Counters,
    held_at_end: u64,
    pending_at_end: u64,
    sampling: Option<SampleCounts>,
    sampling_undecided: Vec<Span>,
    sampling_caused: Vec<(crate::span_line::TraceId, crate::convert::sample::Reason)>,
}

/// Runs `source` through the converter into `sinks` until the input ends or `stop` completes.
pub async fn run<S, C>(
    source: S,
    sinks: Vec<AnySink>,
    committer: C,
    options: Options,
    stop: Option<Stop>,
    observer: Option<Observer>,
) -> Report
where
    S: Source + 'static,
    C: Committer + 'static,
{
    run_committing(source, sinks, committer, options, stop, observer)
        .await
        .0
}

/// [`run`], handing the committer back (with what it recorded).
pub async fn run_committing<S, C>(
    source: S,
    sinks: Vec<AnySink>,
    committer: C,
    options: Options,
    stop: Option<Stop>,
    observer: Option<Observer>,
) -> (Report, C)
where
    S: Source + 'static,
    C: Committer + 'static,
{
    let started = Instant::now();
    let queue = options.queue.max(1);
    let (src_tx, src_rx) = mpsc::channel::<SourceEvent>(queue);
    let (step_tx, step_rx) = mpsc::channel::<Step>(queue);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn(read(source, src_tx, stop, Arc::clone(&stopped)));
    let converter = tokio::spawn(convert(src_rx, step_tx, options.clone()));
    let delivered = deliver(step_rx, sinks, committer, &options, observer).await;
    // The deliver stage ended: if it stopped early, the receivers are gone and the other
    // stages end at their next send.
    reader.abort();
    let _ = reader.await;
    let converted = converter.await.ok();
    let (summary, counters, held_at_end, pending_at_end, unplaced, sampling) = match converted {
        Some(c) => (
            c.summary,
            c.counters,
            c.held_at_end,
            c.pending_at_end,
            c.unplaced,
            (c.sampling, c.sampling_undecided, c.sampling_caused),
        ),
        None => Default::default(),
    };
    let (sampling, sampling_undecided, sampling_caused) = sampling;
    let mut summary = summary;
    for (k, v) in &delivered.sink_limits {
        summary.limit_hit(k, *v);
    }
    let committer = delivered.committer;
    let outcome = match delivered.failure {
        Some(f) => f,
        None if stopped.load(std::sync::atomic::Ordering::SeqCst) => Outcome::Interrupted,
        None => Outcome::Completed,
    };
    let report = Report {
        summary,
        outcome,
        inputs_failed: delivered.inputs_failed,
        inputs_read: delivered.inputs_read,
        sinks: delivered.sinks,
        already_accepted: delivered.already_accepted,
        held_at_end,
        pending_at_end,
        committed: delivered.committed,
        undelivered_inputs: delivered.undelivered_inputs,
        counters,
        unplaced,
        sampling,
        sampling_undecided,
        sampling_caused,
        elapsed: started.elapsed(),
    };
    (report, committer)
}

/// The source task: reads until the end, `stop`, or the converter going away.
async fn read<S: Source>(
    mut source: S,
    tx: mpsc::Sender<SourceEvent>,
    stop: Option<Stop>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut stop = stop.unwrap_or_else(|| Box::pin(std::future::pending()));
    loop {
        let ev = tokio::select! {
            ev = source.next() => ev,
            _ = &mut stop => {
                stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                break;
            }
        };
        let Some(ev) = ev else { break };
        let sent = tokio::select! {
            r = tx.send(ev) => r.is_ok(),
            _ = &mut stop => {
                stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                false
            }
        };
        if !sent {
            break;
        }
    }
}

/// How often a follower looks at the clock when no records come.
const TICK: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    crate::convert::time::now_ms()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Sends the spans in `pending` in batches of at most `batch` (all of them when `all`).
async fn flush(pending: &mut Vec<Span>, batch: usize, all: bool, tx: &mpsc::Sender<Step>) -> bool {
    while pending.len() >= batch || (all && !pending.is_empty()) {
        let rest = if pending.len() > batch {
            pending.split_off(batch)
        } else {
            Vec::new()
        };
        let chunk = std::mem::replace(pending, rest);
        if tx.send(Step::Spans(chunk)).await.is_err() {
            return false;
        }
    }
    true
}

/// The sampling stage between assembly and delivery: its clock is the wall clock when
/// following, else the latest span end seen (the input's own time).
struct Sampling {
    sampler: Sampler,
    follow: bool,
    /// Traces are decided by time ([`Mode::Delivery`] hands the undecided back instead).
    expire: bool,
    watermark_ms: i64,
}

impl Sampling {
    fn clock(&self) -> i64 {
        if self.follow {
            now_ms()
        } else {
            self.watermark_ms
        }
    }

    /// Samples the spans of `pending` from `from` on, in place; then decides the traces whose
    /// time came.
    fn pass(&mut self, pending: &mut Vec<Span>, from: usize) {
        let fresh = pending.split_off(from.min(pending.len()));
        for span in fresh {
            let end_ms = i64::try_from(span.end_unix_nano / 1_000_000).unwrap_or(i64::MAX);
            self.watermark_ms = self.watermark_ms.max(end_ms);
            let clock = self.clock();
            self.sampler.push(span, clock, pending);
        }
        if self.expire {
            let clock = self.clock();
            self.sampler.expire(clock, pending);
        }
    }
}

/// Runs the sampling stage, when there is one, over what was added to `pending` from `from` on.
fn sample(sampling: &mut Option<Sampling>, pending: &mut Vec<Span>, from: usize) {
    if let Some(s) = sampling.as_mut() {
        s.pass(pending, from);
    }
}

/// How many batches are parsed at once: the machine's cores (one parses on the calling task
/// when there is only one).
fn parse_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Batches being parsed on other threads, in input order.
type InFlight = std::collections::VecDeque<
    tokio::task::JoinHandle<(crate::convert::Parser, crate::convert::ParsedBatch)>,
>;

/// Hands every batch parsed so far to the assembly stage, in order; the parsers go back to
/// the pool.
async fn drain(
    in_flight: &mut InFlight,
    pool: &mut Vec<crate::convert::Parser>,
    conv: &mut Converter,
) {
    while let Some(h) = in_flight.pop_front() {
        if let Ok((parser, parsed)) = h.await {
            conv.apply(parsed);
            pool.push(parser);
        }
    }
}

/// The convert task: batches are parsed on every core ([`crate::convert::Parser`]s on the
/// blocking pool, at most one batch per core at a time) and assembled here, in input order.
async fn convert(
    mut rx: mpsc::Receiver<SourceEvent>,
    tx: mpsc::Sender<Step>,
    options: Options,
) -> Converted {
    let mut conv = Converter::new(options.converter.clone());
    // One delivery's records are converted in order, each batch sent on its own, so that a
    // refused batch is traced back to the fewest records.
    let per_batch = options.mode == Mode::Delivery;
    let workers = if per_batch { 1 } else { parse_workers() };
    let mut pool: Vec<crate::convert::Parser> = Vec::new();
    let mut in_flight: InFlight = std::collections::VecDeque::new();
    let batch = options.batch_spans.max(1);
    let give_up = ms(options.give_up_after);
    let mut pending: Vec<Span> = Vec::with_capacity(batch);
    let mut sampling = options.sampling.clone().filter(Policy::samples).map(|p| {
        let mut sampler = Sampler::new(p);
        if options.mode == Mode::Delivery {
            sampler = sampler.tracking_caused();
        }
        sampler.known_kept(options.kept_traces.iter().copied());
        Sampling {
            sampler,
            follow: options.mode == Mode::Follow,
            expire: options.mode != Mode::Delivery,
            watermark_ms: i64::MIN,
        }
    });
    let mut open = true;
    loop {
        let ev = if options.mode == Mode::Follow {
            match tokio::time::timeout(TICK, rx.recv()).await {
                Ok(ev) => ev,
                Err(_) => {
                    drain(&mut in_flight, &mut pool, &mut conv).await;
                    let from = pending.len();
                    pending.extend(conv.finish_stale(now_ms().saturating_sub(give_up)));
                    sample(&mut sampling, &mut pending, from);
                    if !flush(&mut pending, batch, true, &tx).await
                        || tx.send(Step::Tick).await.is_err()
                    {
                        open = false;
                        break;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(ev) = ev else { break };
        if !matches!(ev, SourceEvent::Records(_)) {
            drain(&mut in_flight, &mut pool, &mut conv).await;
        }
        match ev {
            SourceEvent::Records(b) => {
                if workers <= 1 {
                    conv.push_batch(&b);
                } else {
                    if in_flight.len() >= workers {
                        if let Some(h) = in_flight.pop_front() {
                            if let Ok((parser, parsed)) = h.await {
                                conv.apply(parsed);
                                pool.push(parser);
                            }
                        }
                    }
                    let mut parser = pool.pop().unwrap_or_else(|| conv.parser());
                    in_flight.push_back(tokio::task::spawn_blocking(move || {
                        let parsed = parser.parse_batch(&b);
                        (parser, parsed)
                    }));
                }
                if options.mode == Mode::Follow {
                    conv.assembler_finish_stale(now_ms().saturating_sub(give_up));
                }
                let from = pending.len();
                conv.drain_ready(&mut pending);
                sample(&mut sampling, &mut pending, from);
                if !flush(&mut pending, batch, per_batch, &tx).await {
                    open = false;
                    break;
                }
                if options.mode == Mode::Follow
                    && in_flight.is_empty()
                    && !flush(&mut pending, batch, true, &tx).await
                {
                    open = false;
                    break;
                }
            }
            SourceEvent::Mark(pos) => {
                let pos = match pos {
                    Position::Group {
                        group,
                        key,
                        through_ms,
                        lag_p99_ms,
                    } => {
                        if options.mode == Mode::Resumable {
                            conv.assembler_finish_stale(through_ms.saturating_sub(give_up));
                        }
                        let held = conv.oldest_pending_ms(&group);
                        Position::Group {
                            through_ms: held.map_or(through_ms, |h| h.min(through_ms)),
                            group,
                            key,
                            lag_p99_ms,
                        }
                    }
                    other => other,
                };
                let from = pending.len();
                conv.drain_ready(&mut pending);
                sample(&mut sampling, &mut pending, from);
                // Spans of undecided traces are not delivered yet: the position stays before them.
                let pos = match (pos, &sampling) {
                    (
                        Position::Group {
                            group,
                            key,
                            through_ms,
                            lag_p99_ms,
                        },
                        Some(s),
                    ) => Position::Group {
                        through_ms: s
                            .sampler
                            .oldest_held_ms(&group)
                            .map_or(through_ms, |h| h.min(through_ms)),
                        group,
                        key,
                        lag_p99_ms,
                    },
                    (pos, _) => pos,
                };
                if !flush(&mut pending, batch, true, &tx).await
                    || tx.send(Step::Commit(pos)).await.is_err()
                {
                    open = false;
                    break;
                }
            }
            SourceEvent::Failed(f) => {
                let from = pending.len();
                conv.drain_ready(&mut pending);
                sample(&mut sampling, &mut pending, from);
                if !flush(&mut pending, batch, true, &tx).await
                    || tx.send(Step::Failed(f)).await.is_err()
                {
                    open = false;
                    break;
                }
            }
            SourceEvent::Counted { limit, n } => conv.limit_hit(limit, n),
            SourceEvent::Notice(n) => {
                if tx.send(Step::Notice(n)).await.is_err() {
                    open = false;
                    break;
                }
            }
        }
    }
    drain(&mut in_flight, &mut pool, &mut conv).await;
    if open {
        let from = pending.len();
        match options.mode {
            Mode::Batch | Mode::Follow => pending.extend(conv.finish()),
            Mode::Delivery => pending.extend(conv.finish_delivery()),
            Mode::Resumable => conv.drain_ready(&mut pending),
        }
        sample(&mut sampling, &mut pending, from);
        if let Some(s) = sampling.as_mut() {
            // A resumable run leaves undecided traces to the next, which reads them again; a
            // delivery hands them back.
            if !matches!(options.mode, Mode::Resumable | Mode::Delivery) {
                let clock = s.clock();
                s.sampler.finish(clock, &mut pending);
            }
        }
        let _ = flush(&mut pending, batch, true, &tx).await;
    }
    if let Some(s) = &sampling {
        for (k, v) in s.sampler.limits() {
            conv.limit_hit(k, *v);
        }
    }
    let (sampling_undecided, sampling_caused) = match sampling.as_mut() {
        Some(s) if options.mode == Mode::Delivery => {
            (s.sampler.take_undecided(), s.sampler.take_caused())
        }
        _ => (Vec::new(), Vec::new()),
    };
    Converted {
        sampling_undecided,
        sampling_caused,
        held_at_end: (conv.held() + sampling.as_ref().map_or(0, |s| s.sampler.held_spans())) as u64,
        pending_at_end: conv.pending_invocations() as u64,
        counters: conv.counters().clone(),
        unplaced: conv.take_unplaced(),
        summary: std::mem::take(&mut conv.summary),
        sampling: sampling.map(|s| s.sampler.counts().clone()),
    }
}

/// What the deliver task ends with.
struct Delivered<C> {
    committer: C,
    failure: Option<Outcome>,
    inputs_failed: u64,
    inputs_read: u64,
    sinks: Vec<SinkReport>,
    already_accepted: u64,
    committed: u64,
    undelivered_inputs: std::collections::BTreeSet<u32>,
    /// What the sinks set aside to keep to their backends' limits ([`AnySink::limits`]).
    sink_limits: std::collections::BTreeMap<&'static str, u64>,
}

/// The deliver task: sends, acknowledges, commits.
async fn deliver<C: Committer>(
    mut rx: mpsc::Receiver<Step>,
    mut sinks: Vec<AnySink>,
    committer: C,
    options: &Options,
    mut observer: Option<Observer>,
) -> Delivered<C> {
    let mut out = Delivered {
        committer,
        failure: None,
        inputs_failed: 0,
        inputs_read: 0,
        sinks: sinks
            .iter()
            .map(|s| SinkReport {
                name: s.name(),
                destination: s.is_destination(),
                ..SinkReport::default()
            })
            .collect(),
        already_accepted: 0,
        committed: 0,
        undelivered_inputs: std::collections::BTreeSet::new(),
        sink_limits: std::collections::BTreeMap::new(),
    };
    let mut tell = |e: RunEvent<'_>| {
        if let Some(o) = observer.as_mut() {
            o(&e);
        }
    };
    let undelivered = |out: &mut Delivered<C>, spans: &[Span]| {
        out.undelivered_inputs.extend(spans.iter().map(|s| s.input));
    };
    // After a failure worth retrying, nothing more is sent (the backend is down).
    let mut sending = true;
    while let Some(step) = rx.recv().await {
        match step {
            Step::Spans(mut spans) => {
                if !sending {
                    // Draining after a failure: only account for what was not delivered.
                    undelivered(&mut out, &spans);
                    continue;
                }
                let before = spans.len();
                spans.retain(|s| !out.committer.already_accepted(s));
                out.already_accepted += (before - spans.len()) as u64;
                if spans.is_empty() {
                    continue;
                }
                let mut failed = None;
                for (i, sink) in sinks.iter_mut().enumerate() {
                    let sent = match options.deadline {
                        Some(d) => {
                            match tokio::time::timeout_at(d.into(), sink.send(&spans)).await {
                                Ok(r) => r,
                                Err(_) => Err(SinkError::Exhausted {
                                    endpoint: sink.name(),
                                    attempts: 0,
                                    last:
                                        "the invocation deadline passed before the backend answered"
                                            .into(),
                                }),
                            }
                        }
                        None => sink.send(&spans).await,
                    };
                    match sent {
                        Ok(d) => {
                            let r = &mut out.sinks[i];
                            r.accepted += d.accepted;
                            r.rejected += d.rejected;
                            r.logs_accepted += d.logs_accepted;
                            r.logs_rejected += d.logs_rejected;
                            r.max_attempts = r.max_attempts.max(d.attempts);
                            r.retries += u64::from(d.attempts.saturating_sub(1));
                            if let Some(m) = &d.message {
                                tell(RunEvent::Rejected {
                                    sink: &r.name,
                                    rejected: d.rejected,
                                    message: m,
                                });
                            }
                        }
                        Err(error) => {
                            failed = Some(Outcome::SinkFailed {
                                sink: sink.name(),
                                error,
                            });
                            break;
                        }
                    }
                }
                if let Some(f) = failed {
                    undelivered(&mut out, &spans);
                    let retryable =
                        matches!(&f, Outcome::SinkFailed { error, .. } if error.is_retryable());
                    out.failure.get_or_insert(f);
                    if options.on_failure == OnFailure::Stop {
                        break;
                    }
                    sending = !retryable;
                    continue;
                }
                if let Err(e) = out.committer.accepted(&spans).await {
                    out.failure = Some(Outcome::CommitFailed(Box::new(e)));
                    break;
                }
            }
            Step::Commit(pos) => {
                if matches!(pos, Position::Input(_)) {
                    out.inputs_read += 1;
                }
                if out.failure.is_some() {
                    continue;
                }
                if let Err(e) = out.committer.commit(&pos).await {
                    out.failure = Some(Outcome::CommitFailed(Box::new(e)));
                    break;
                }
                out.committed += 1;
            }
            Step::Failed(f) => {
                out.inputs_failed += 1;
                tell(RunEvent::InputFailed(&f));
            }
            Step::Notice(n) => tell(RunEvent::Notice(&n)),
            Step::Tick => {
                for sink in &mut sinks {
                    if let Err(error) = sink.tick() {
                        out.failure.get_or_insert(Outcome::SinkFailed {
                            sink: sink.name(),
                            error,
                        });
                    }
                }
            }
        }
    }
    for sink in &mut sinks {
        if let Err(error) = sink.shutdown().await {
            if out.failure.is_none() {
                out.failure = Some(Outcome::SinkFailed {
                    sink: sink.name(),
                    error,
                });
            }
        }
        for (k, v) in sink.limits() {
            *out.sink_limits.entry(k).or_default() += v;
        }
    }
    out
}
