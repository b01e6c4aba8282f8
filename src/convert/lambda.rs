//! The converter as an AWS Lambda function (feature `lambda`, `spanline lambda`): the events a
//! CloudWatch Logs subscription delivers → log records → the [`Converter`] → a [`Sink`] → the
//! response Lambda expects.
//!
//! Three event shapes arrive (shared/reference/cloudwatch.md, "Subscriptions"):
//! * **Direct subscription** `{"awslogs":{"data":"<base64 gzip JSON>"}}`, invoked
//!   asynchronously: an `Err` makes Lambda retry the event (twice by default) and then hand it to
//!   the function's on-failure destination or dead-letter queue.
//! * **Kinesis Data Streams** records whose data is the gzip JSON payload. Each record is
//!   converted and delivered on its own; the response lists the sequence numbers of the records
//!   whose spans the backend did not accept (`batchItemFailures`, "Handling partial batch
//!   failures", AWS Lambda developer guide), so only those are retried. The event source mapping
//!   must enable `ReportBatchItemFailures`, otherwise Lambda ignores the list and the failed
//!   records are lost.
//! * **Firehose data transformation** records, the same gzip payload: each record comes back with
//!   its data unchanged and a result, `Ok` (spans delivered), `Dropped` (a `CONTROL_MESSAGE`) or
//!   `ProcessingFailed` (not a subscription payload; Firehose writes it to the error prefix).
//!
//! Whatever the shape, the invocation fails (`Err`) when spans were not accepted by the backend,
//! except Kinesis, whose failures are reported per record. Records that are not subscription
//! payloads are counted and skipped in the direct and Kinesis cases (retrying cannot repair
//! them), failed in the Firehose case (Firehose keeps them). `CONTROL_MESSAGE`s are skipped. A
//! record that inflates beyond `--max-payload`'s limit (a gzip bomb) is a failure of that record
//! (a batch item failure, `ProcessingFailed`), decoded within bounded memory like every record.
//!
//! **One event, one conversion.** The records of one event go through one pipeline run and one
//! [`Converter`](crate::convert::Converter) (the shared payload decoder, streamed), so an
//! invocation whose START and REPORT lines sit in two records of one Kinesis or Firehose batch
//! is one invocation. Across events, nothing is kept (Lambda may run any number of instances):
//! an invocation whose REPORT has not come by the end of the event is left to the event that
//! completes it ([`Mode::Delivery`]): its function's finished spans are sent as they are, its
//! invocation span is sent once, whole, by the event holding the REPORT (which carries the
//! duration, the init duration and the X-Ray trace; START-only facts such as the version are
//! left out then), and no trace id is ever invented for an invocation nothing places.
//!
//! A record is failed when a span made from it was not accepted ([`Span::input`]).

use crate::convert::assemble::ServiceMap;
#[cfg(doc)]
use crate::convert::assemble::Span;
use crate::convert::pipeline::{
    self, InputFailure, Mode, NoCommit, OnFailure, Options, Outcome, Position, Source, SourceEvent,
};
use crate::convert::record::RecordBatch;
use crate::convert::sink::{AnySink, SinkError};
use crate::convert::source::payload::{self, BatchOut, Limits, PayloadError};
use crate::convert::Summary;
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::firehose::{
    KinesisFirehoseEvent, KinesisFirehoseResponse, KinesisFirehoseResponseRecord,
};
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine as _;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod sampling;
pub use sampling::*;

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LambdaError {
    /// The event is none of the three shapes.
    #[error(
        "unrecognised event: expected a CloudWatch Logs subscription event (awslogs.data), \
         Kinesis Data Streams records or Firehose transformation records"
    )]
    UnknownEvent,
    /// The event has a known shape but does not deserialize.
    #[error("invalid {kind} event: {source}")]
    InvalidEvent {
        /// Which shape.
        kind: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The direct event's payload is not a subscription payload (not base64 gzip JSON).
    #[error("the awslogs.data of the event is not a subscription payload: {0}")]
    InvalidPayload(String),
    /// The direct event's payload inflates beyond the limit.
    #[error("the awslogs.data of the event: {0}")]
    PayloadTooLarge(#[source] PayloadError),
    /// Spans were not accepted by the backend; the event should be retried.
    #[error("{failed} of {items} records not delivered; the first failure: {source}")]
    NotDelivered {
        /// Records (payloads) whose spans were not accepted.
        failed: usize,
        /// Records in the event.
        items: usize,
        /// The first failure.
        #[source]
        source: ItemError,
    },
    /// The response could not be serialised.
    #[error("cannot serialise the response: {0}")]
    Response(#[source] serde_json::Error),
}

/// Why one record's spans were not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The invocation's deadline came first.
    #[error("the invocation deadline passed before the backend answered")]
    Deadline,
    /// The record inflates beyond the limit (a gzip bomb).
    #[error("{0}")]
    TooLarge(String),
}

impl LambdaError {
    /// Whether retrying the same event may succeed (the backend was unreachable or slow, rather
    /// than the event being unusable or the data refused).
    pub fn is_retryable(&self) -> bool {
        match self {
            LambdaError::NotDelivered { source, .. } => match source {
                ItemError::Sink(e) => e.is_retryable(),
                ItemError::Deadline => true,
                ItemError::TooLarge(_) => false,
            },
            _ => false,
        }
    }
}

/// Which event shape an invocation carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// `{"awslogs":{"data":…}}`.
    Subscription,
    /// Kinesis Data Streams records.
    Kinesis,
    /// Firehose transformation records.
    Firehose,
}

/// The counters of one invocation, logged as one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The event shape (absent when unrecognised).
    pub event: Option<EventKind>,
    /// Records (subscription payloads) in the event: 1 for a direct subscription event.
    pub items: u64,
    /// Records whose spans were delivered (or that had none).
    pub items_ok: u64,
    /// Records whose spans were not accepted (Kinesis: reported as batch item failures).
    pub items_failed: u64,
    /// `CONTROL_MESSAGE` records, skipped.
    pub items_control: u64,
    /// Records that were not subscription payloads.
    pub items_invalid: u64,
    /// Log events read.
    pub log_events: u64,
    /// Log events carrying span lines.
    pub span_lines: u64,
    /// Lambda platform lines.
    pub platform_lines: u64,
    /// Spans produced (invocation spans included).
    pub spans: u64,
    /// Spans the backend accepted.
    pub spans_delivered: u64,
    /// Spans the backend rejected in a partial success.
    pub spans_rejected: u64,
    /// Malformed span lines.
    pub malformed: u64,
    /// Log events that were neither span lines nor platform lines.
    pub foreign: u64,
    /// Spans seen twice within the event and dropped.
    pub duplicates: u64,
    /// Invocations whose REPORT is not in this event: their invocation span is left to the
    /// event that holds it.
    pub invocations_left: u64,
    /// Invocations nothing in this event places in a trace (their function printed no span,
    /// no X-Ray trace, no caller) and that could not be looked up again: not sent, no trace id
    /// is invented for them.
    pub invocations_unplaced: u64,
    /// Invocations placed by reading their log stream back ([`FetchBack`]).
    pub invocations_fetched_back: u64,
    /// What sampling did (absent without sampling).
    pub sampling: Option<SamplingReport>,
    /// Bounds reached, by the README's names ("Limits and memory"), X-Ray's included.
    pub limits: std::collections::BTreeMap<&'static str, u64>,
    /// Most attempts one record needed.
    pub max_attempts: u32,
    /// Wall time of the invocation, ms.
    pub duration_ms: u64,
    /// The error the invocation returned, if any (never holds a secret: sink errors do not).
    pub error: Option<String>,
}

impl Report {
    fn add(&mut self, s: &Summary) {
        self.log_events += s.records;
        self.span_lines += s.span_lines;
        self.platform_lines += s.platform_lines;
        self.spans += s.spans;
        self.malformed += s.malformed_total();
        self.foreign += s.foreign;
        self.duplicates += s.duplicates;
        for (k, v) in &s.limits {
            *self.limits.entry(k).or_default() += v;
        }
    }

    /// The report as one JSON line (`{"spanline":"lambda",…}`).
    pub fn json_line(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("spanline".into(), Value::from("lambda"));
        }
        v.to_string()
    }
}

/// A recognised event.
#[derive(Debug)]
enum Event {
    /// The payload, decoded from base64.
    Subscription(Vec<u8>),
    Kinesis(KinesisEvent),
    Firehose(KinesisFirehoseEvent),
}

fn invalid(kind: &'static str) -> impl FnOnce(serde_json::Error) -> LambdaError {
    move |source| LambdaError::InvalidEvent { kind, source }
}

/// Tells the three shapes apart by their keys: `awslogs`; `Records` (Kinesis, whose records say
/// `"eventSource":"aws:kinesis"`); `records` with `deliveryStreamArn` or `invocationId`
/// (Firehose).
fn classify(event: Value) -> Result<Event, LambdaError> {
    let obj = event.as_object().ok_or(LambdaError::UnknownEvent)?;
    if let Some(aws_logs) = obj.get("awslogs") {
        // Decoded here rather than through `LogsEvent`, whose `awslogs.data` deserializer needs
        // borrowed strings and so cannot read an already-parsed `Value`.
        let data = aws_logs
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| LambdaError::InvalidPayload("awslogs.data is not a string".into()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| LambdaError::InvalidPayload(format!("not base64: {e}")))?;
        return Ok(Event::Subscription(bytes));
    }
    if obj.contains_key("Records") {
        return serde_json::from_value(event)
            .map(Event::Kinesis)
            .map_err(invalid("Kinesis"));
    }
    if obj.contains_key("records")
        && (obj.contains_key("deliveryStreamArn") || obj.contains_key("invocationId"))
    {
        return serde_json::from_value(event)
            .map(Event::Firehose)
            .map_err(invalid("Firehose"));
    }
    Err(LambdaError::UnknownEvent)
}

/// Where the lines of an invocation a delivery could not place are looked up again.
///
/// Its START, its span lines and REPORT can reach the function in different deliveries (one
/// event each; CloudWatch batches by time). The delivery holding the REPORT sends the
/// invocation span; when nothing in it says which trace the invocation belongs to (its root
/// span, or the open record of a function that timed out, sat in the earlier delivery, and
/// there is no X-Ray trace), the invocation's own log stream is read back over its time span
/// (FilterLogEvents, one request per invocation, paid from a budget) and the invocation is
/// converted whole from it: its invocation and init spans, and the spans announced by open
/// records that never finished, are sent — the spans the function printed were sent by their
/// own delivery and are not sent again.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchBack {
    /// FilterLogEvents on the invocation's log stream.
    CloudWatch {
        /// The client (the function's role needs `logs:FilterLogEvents` on the groups).
        client: aws_sdk_cloudwatchlogs::Client,
        /// Requests per second, shared by every event this instance handles.
        budget: crate::convert::source::cloudwatch::budget::Budget,
    },
    /// Records held in memory (tests): what CloudWatch would return.
    Memory(Vec<crate::convert::record::LogRecord>),
}

/// Most invocations looked up again per event: the rest are counted as unplaced.
pub const MAX_FETCH_BACK: usize = 16;

impl FetchBack {
    /// The span lines of `trace` in `group` between `from_ms` and `to_ms`: FilterLogEvents
    /// with the trace id as span lines write it (22 base64url characters, quoted) as the term.
    async fn fetch_trace(
        &self,
        group: &str,
        trace: &crate::span_line::TraceId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::convert::record::LogRecord>, String> {
        let b64 = String::from_utf8_lossy(&trace.to_b64()).into_owned();
        match self {
            FetchBack::Memory(records) => Ok(records
                .iter()
                .filter(|r| r.log_group == group && r.message.contains(&b64))
                .filter(|r| r.timestamp_ms >= from_ms && r.timestamp_ms <= to_ms)
                .cloned()
                .collect()),
            FetchBack::CloudWatch { client, budget } => {
                use crate::convert::source::cloudwatch::filter::Query;
                let query = Query {
                    log_stream_name_prefix: None,
                    start_ms: Some(from_ms),
                    end_ms: Some(to_ms),
                    filter_pattern: format!("\"{b64}\""),
                };
                read_all(client, budget, group, &query, |e| e.message.contains(&b64)).await
            }
        }
    }

    async fn fetch(
        &self,
        group: &str,
        stream: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::convert::record::LogRecord>, String> {
        match self {
            FetchBack::Memory(records) => Ok(records
                .iter()
                .filter(|r| r.log_group == group && r.log_stream == stream)
                .filter(|r| r.timestamp_ms >= from_ms && r.timestamp_ms <= to_ms)
                .cloned()
                .collect()),
            FetchBack::CloudWatch { client, budget } => {
                use crate::convert::source::cloudwatch::filter::{Query, DEFAULT_FILTER_PATTERN};
                let query = Query {
                    log_stream_name_prefix: Some(stream.to_owned()),
                    start_ms: Some(from_ms),
                    end_ms: Some(to_ms),
                    filter_pattern: DEFAULT_FILTER_PATTERN.to_owned(),
                };
                // A prefix also matches longer names: only the invocation's own stream.
                read_all(client, budget, group, &query, |e| e.log_stream == stream).await
            }
        }
    }
}

/// Every page of `query` on `group`, the events `keep` keeps, as records.
async fn read_all(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &crate::convert::source::cloudwatch::budget::Budget,
    group: &str,
    query: &crate::convert::source::cloudwatch::filter::Query,
    keep: impl Fn(&crate::convert::source::cloudwatch::filter::Event) -> bool,
) -> Result<Vec<crate::convert::record::LogRecord>, String> {
    use crate::convert::source::cloudwatch::filter::{Pages, Progress};
    let progress = Progress::default();
    let mut pages = Pages::new(client, group, query);
    let mut out = Vec::new();
    while let Some(page) = pages
        .next_page(budget, &progress)
        .await
        .map_err(|e| e.to_string())?
    {
        out.extend(
            page.into_iter()
                .filter(|e| keep(e))
                .map(|e| e.into_record(group)),
        );
    }
    Ok(out)
}

/// Converts and delivers subscription events. Cheap to share: one per cold start.
#[derive(Debug)]
pub struct Handler<S> {
    sink: S,
    /// Where invocations a delivery cannot place are looked up again (`None`: they are
    /// counted as unplaced).
    pub fetch_back: Option<FetchBack>,
    /// `cloud.region` of invocation spans (the function's region: subscriptions deliver within
    /// one region).
    pub region: Option<String>,
    /// Service names for log groups.
    pub services: ServiceMap,
    /// Input limits (a record inflating beyond `max_payload` fails).
    pub limits: Limits,
    /// Time kept free before the invocation deadline, to answer Lambda.
    pub deadline_margin: std::time::Duration,
    /// Tail-based sampling across deliveries (`None`: every span is sent).
    pub sampling: Option<LambdaSampling>,
    /// What becomes of the function's other log lines (`SPANLINE_LOGS`).
    pub logs: crate::convert::Logs,
}

/// How one record of the event was read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RecordRead {
    /// Not read (the deadline came first).
    Unread,
    /// Log events were decoded from it.
    Data,
    /// Only `CONTROL_MESSAGE`s.
    Control,
    /// Not a subscription payload.
    Invalid(String),
    /// Inflated beyond the limit.
    TooLarge(String),
}

/// One record's fate.
#[derive(Debug)]
enum Outcome1 {
    Delivered,
    Control,
    Invalid,
    Failed(ItemError),
}

/// The records of one event, decoded one after another on a blocking thread (the shared,
/// streaming payload decoder), each one input of the run.
struct Records {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
}

/// The log groups an event's records came from.
type Groups = Arc<Mutex<std::collections::BTreeSet<String>>>;

impl Records {
    fn start(
        items: Vec<Vec<u8>>,
        limits: Limits,
        states: Arc<Mutex<Vec<RecordRead>>>,
        groups: Groups,
    ) -> Records {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            for (i, data) in items.into_iter().enumerate() {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let mut flush = |b: RecordBatch| {
                    if let Ok(mut g) = groups.lock() {
                        for (group, _) in b.origins() {
                            if g.len() < 64 && !g.contains(&**group) {
                                g.insert(group.to_string());
                            }
                        }
                    }
                    let input = b.input;
                    tx.blocking_send(SourceEvent::Records(b))
                        .ok()
                        .map(|()| RecordBatch::new(input))
                };
                let mut out =
                    BatchOut::new(RecordBatch::new(index), limits.batch_bytes, &mut flush);
                let r = payload::decode_payload(&data, limits, "", &mut out);
                drop(data);
                if !out.flush_now() {
                    return;
                }
                drop(out);
                if let Ok(f) = &r {
                    let cut = SourceEvent::Counted {
                        limit: "max_line",
                        n: f.long_lines,
                    };
                    if f.long_lines > 0 && tx.blocking_send(cut).is_err() {
                        return;
                    }
                }
                let read = match r {
                    Ok(f) if f.data_messages == 0 && f.control_messages > 0 => RecordRead::Control,
                    Ok(_) => RecordRead::Data,
                    Err(PayloadError::Stopped) => return,
                    Err(e @ PayloadError::TooLarge { .. }) => RecordRead::TooLarge(e.to_string()),
                    Err(e) => RecordRead::Invalid(e.to_string()),
                };
                let ev = match &read {
                    RecordRead::Invalid(reason) | RecordRead::TooLarge(reason) => {
                        SourceEvent::Failed(InputFailure {
                            input: format!("record {i}"),
                            error: reason.clone().into(),
                        })
                    }
                    _ => SourceEvent::Mark(Position::Input(index)),
                };
                if let Ok(mut s) = states.lock() {
                    if let Some(slot) = s.get_mut(i) {
                        *slot = read;
                    }
                }
                if tx.blocking_send(ev).is_err() {
                    return;
                }
            }
        });
        Records { rx }
    }
}

impl Source for Records {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

impl<S> Handler<S>
where
    S: Into<AnySink> + Clone + Send + Sync + 'static,
{
    /// A handler sending to `sink`.
    pub fn new(sink: S) -> Self {
        Handler {
            sink,
            fetch_back: None,
            region: None,
            services: ServiceMap::default(),
            limits: Limits::default(),
            deadline_margin: std::time::Duration::from_millis(1500),
            sampling: None,
            logs: crate::convert::Logs::Off,
        }
    }

    /// Handles one invocation. `deadline` is when Lambda stops the function; deliveries still
    /// running `deadline_margin` before it count as failed. Returns the response (JSON) or the
    /// error the function must return, and the counters in both cases.
    pub async fn handle(
        &self,
        event: Value,
        deadline: Option<Instant>,
    ) -> (Report, Result<Value, LambdaError>) {
        let started = Instant::now();
        let mut report = Report::default();
        let result = self.dispatch(event, deadline, &mut report).await;
        report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = &result {
            report.error = Some(error_chain(e));
        }
        (report, result)
    }

    async fn dispatch(
        &self,
        event: Value,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Result<Value, LambdaError> {
        let deadline = deadline.map(|d| {
            d.checked_sub(self.deadline_margin)
                .unwrap_or_else(Instant::now)
        });
        match classify(event)? {
            Event::Subscription(bytes) => {
                report.event = Some(EventKind::Subscription);
                let mut outcomes = self.deliver(vec![bytes], deadline, report).await;
                match outcomes.pop() {
                    Some(Outcome1::Failed(ItemError::TooLarge(reason))) => {
                        Err(LambdaError::InvalidPayload(reason))
                    }
                    Some(Outcome1::Failed(e)) => Err(LambdaError::NotDelivered {
                        failed: 1,
                        items: 1,
                        source: e,
                    }),
                    Some(Outcome1::Invalid) => Err(LambdaError::InvalidPayload(
                        report.error.take().unwrap_or_else(|| "invalid".into()),
                    )),
                    _ => Ok(Value::Null),
                }
            }
            Event::Kinesis(e) => {
                report.event = Some(EventKind::Kinesis);
                let ids: Vec<String> = e
                    .records
                    .iter()
                    .map(|r| r.kinesis.sequence_number.clone())
                    .collect();
                let items = e.records.into_iter().map(|r| r.kinesis.data.0).collect();
                let outcomes = self.deliver(items, deadline, report).await;
                let mut response = KinesisEventResponse::default();
                for (id, o) in ids.into_iter().zip(outcomes) {
                    if matches!(o, Outcome1::Failed(_)) {
                        let mut f = KinesisBatchItemFailure::default();
                        f.item_identifier = Some(id);
                        response.batch_item_failures.push(f);
                    }
                }
                serde_json::to_value(response).map_err(LambdaError::Response)
            }
            Event::Firehose(e) => {
                report.event = Some(EventKind::Firehose);
                let items: Vec<Vec<u8>> = e.records.iter().map(|r| r.data.0.clone()).collect();
                let n = items.len();
                let outcomes = self.deliver(items, deadline, report).await;
                let mut response = KinesisFirehoseResponse::default();
                let mut first_failure = None;
                let mut failed = 0;
                for (rec, o) in e.records.into_iter().zip(outcomes) {
                    let result = match o {
                        Outcome1::Delivered => "Ok",
                        Outcome1::Control => "Dropped",
                        Outcome1::Invalid => "ProcessingFailed",
                        Outcome1::Failed(ItemError::TooLarge(_)) => "ProcessingFailed",
                        Outcome1::Failed(err) => {
                            failed += 1;
                            first_failure.get_or_insert(err);
                            "ProcessingFailed"
                        }
                    };
                    let mut out = KinesisFirehoseResponseRecord::default();
                    out.record_id = rec.record_id;
                    out.result = Some(result.to_owned());
                    let mut data = Base64Data::default();
                    data.0 = rec.data.0;
                    out.data = data;
                    response.records.push(out);
                }
                // Spans not accepted: fail the invocation, so that Firehose retries it (and,
                // when its retries run out, keeps the records under its error prefix).
                if let Some(source) = first_failure {
                    return Err(LambdaError::NotDelivered {
                        failed,
                        items: n,
                        source,
                    });
                }
                serde_json::to_value(response).map_err(LambdaError::Response)
            }
        }
    }

    /// Converts the records of one event in one pipeline run and delivers the spans until
    /// `deadline`. One outcome per record, in order.
    async fn deliver(
        &self,
        items: Vec<Vec<u8>>,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Vec<Outcome1> {
        let n = items.len();
        report.items = n as u64;
        let states = Arc::new(Mutex::new(vec![RecordRead::Unread; n]));
        let groups: Groups = Arc::default();
        let source = Records::start(items, self.limits, Arc::clone(&states), Arc::clone(&groups));
        let converter = crate::convert::Config {
            region: self.region.clone(),
            services: self.services.clone(),
            logs: self.logs,
            ..crate::convert::Config::default()
        };
        let options = Options {
            converter: converter.clone(),
            mode: Mode::Delivery,
            on_failure: OnFailure::Account,
            deadline,
            sampling: self.sampling.as_ref().map(|s| s.policy.clone()),
            ..Options::default()
        };
        let stop: Option<pipeline::Stop> = deadline.map(|d| {
            Box::pin(async move { tokio::time::sleep_until(d.into()).await }) as pipeline::Stop
        });
        let run = pipeline::run(
            source,
            vec![self.sink.clone().into()],
            NoCommit,
            options,
            stop,
            None,
        )
        .await;
        report.add(&run.summary);
        report.invocations_left = run.counters.incomplete_at_end;
        report.invocations_unplaced = run.counters.unplaced;
        let mut failure_extra = None;
        let mut extra = Vec::new();
        if let Some(fetch) = &self.fetch_back {
            let (spans, placed) = self.fetch_back(fetch, &run.unplaced, deadline).await;
            report.invocations_fetched_back = placed;
            report.invocations_unplaced = report.invocations_unplaced.saturating_sub(placed);
            extra = spans;
        }
        if let Some(sampling) = &self.sampling {
            let mut sr = SamplingReport::default();
            if let Some(c) = &run.sampling {
                for (reason, k) in &c.kept_traces {
                    *sr.kept_traces.entry(reason.name()).or_default() += k;
                }
            }
            let delivered = groups.lock().map(|g| g.clone()).unwrap_or_default();
            let more = sampling
                .settle(
                    self.fetch_back.as_ref(),
                    &run.sampling_caused,
                    run.sampling_undecided,
                    &delivered,
                    &converter,
                    &mut sr,
                )
                .await;
            extra.extend(more);
            report.sampling = Some(sr);
        }
        {
            let spans = extra;
            if !spans.is_empty() {
                let mut sink: AnySink = self.sink.clone().into();
                let sent = match deadline {
                    Some(d) => tokio::time::timeout_at(d.into(), sink.send(&spans))
                        .await
                        .unwrap_or_else(|_| {
                            Err(SinkError::Exhausted {
                                endpoint: sink.name(),
                                attempts: 0,
                                last: "the invocation deadline passed before the backend answered"
                                    .into(),
                            })
                        }),
                    None => sink.send(&spans).await,
                };
                match sent {
                    Ok(d) => {
                        report.spans += spans.len() as u64;
                        report.spans_delivered += d.accepted;
                        report.spans_rejected += d.rejected;
                    }
                    Err(e) => {
                        // Which record completed them is not kept: the whole event is retried
                        // (spans are deterministic, a resend repeats the same ids).
                        let inputs: Vec<u32> = (0..u32::try_from(n).unwrap_or(u32::MAX)).collect();
                        failure_extra = Some((inputs, e));
                    }
                }
            }
        }
        if let Some(s) = run.sinks.first() {
            report.spans_delivered = s.accepted;
            report.spans_rejected = s.rejected;
            report.max_attempts = s.max_attempts;
        }
        let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
        let failure = match &run.outcome {
            Outcome::SinkFailed { error, .. } if past_deadline => {
                let _ = error;
                Some(ItemError::Deadline)
            }
            Outcome::SinkFailed { error, .. } => Some(ItemError::Sink(clone_sink_error(error))),
            Outcome::Interrupted => Some(ItemError::Deadline),
            _ => None,
        };
        let states = states.lock().map(|s| s.clone()).unwrap_or_default();
        let out: Vec<Outcome1> = states
            .into_iter()
            .enumerate()
            .map(|(i, read)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                let undelivered = run.undelivered_inputs.contains(&index)
                    || failure_extra
                        .as_ref()
                        .is_some_and(|(inputs, _)| inputs.contains(&index));
                match read {
                    RecordRead::Control => Outcome1::Control,
                    RecordRead::Invalid(reason) => {
                        // One line per bad record: rare, and the operator needs to know.
                        eprintln!(
                            "spanline: record {i}: skipped: {}",
                            crate::convert::printable::Visible(&reason)
                        );
                        if n == 1 {
                            report.error = Some(reason);
                        }
                        Outcome1::Invalid
                    }
                    RecordRead::TooLarge(reason) => Outcome1::Failed(ItemError::TooLarge(reason)),
                    RecordRead::Unread => Outcome1::Failed(ItemError::Deadline),
                    RecordRead::Data if undelivered => {
                        Outcome1::Failed(match (&failure, &failure_extra) {
                            (Some(ItemError::Sink(e)), _) | (_, Some((_, e))) => {
                                ItemError::Sink(clone_sink_error(e))
                            }
                            _ => ItemError::Deadline,
                        })
                    }
                    RecordRead::Data => Outcome1::Delivered,
                }
            })
            .collect();
        for o in &out {
            match o {
                Outcome1::Delivered => report.items_ok += 1,
                Outcome1::Failed(_) => report.items_failed += 1,
                Outcome1::Control => report.items_control += 1,
                Outcome1::Invalid => report.items_invalid += 1,
            }
        }
        out
    }
}

impl<S> Handler<S>
where
    S: Into<AnySink> + Clone + Send + Sync + 'static,
{
    /// Looks the unplaced invocations up again and converts each whole: the spans to send
    /// (invocation and init spans, open spans that never finished) and how many were placed.
    async fn fetch_back(
        &self,
        fetch: &FetchBack,
        unplaced: &[crate::convert::assemble::Invocation],
        deadline: Option<Instant>,
    ) -> (Vec<crate::convert::assemble::Span>, u64) {
        use crate::convert::assemble::invocation::{derived_trace, span_id};
        let mut out = Vec::new();
        let mut placed = 0u64;
        for inv in unplaced.iter().take(MAX_FETCH_BACK) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // The invocation's time span: REPORT's time back over its duration and init, and a
            // margin for the clocks of the lines.
            let Some(to) = inv.last_ms else { continue };
            let report = inv.report.clone().unwrap_or_default();
            let span_ms = (report.duration_ms + report.init_ms.unwrap_or(0.0)) as i64;
            let from = to.saturating_sub(span_ms).saturating_sub(2_000);
            let records = match fetch
                .fetch(&inv.log_group, &inv.log_stream, from, to.saturating_add(1))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "spanline: looking up invocation {} again: {}",
                        crate::convert::printable::Visible(&inv.request_id),
                        crate::convert::printable::Visible(&e)
                    );
                    continue;
                }
            };
            // Which spans the function announced and never finished: those are sent; the ones
            // it finished went out with their own delivery.
            let (mut announced, mut finished) = (
                std::collections::HashSet::new(),
                std::collections::HashSet::new(),
            );
            for r in &records {
                let crate::convert::parse::Message::Text(text, _) =
                    crate::convert::parse::unwrap_message(&r.message)
                else {
                    continue;
                };
                if let crate::convert::parse::Parsed::Spans { record, .. } =
                    crate::convert::parse::parse_text(&text)
                {
                    for line in record.spans() {
                        let id = (line.trace_id, line.span_id);
                        if line.open {
                            announced.insert(id);
                        } else {
                            finished.insert(id);
                        }
                    }
                }
            }
            let mut conv = crate::convert::Converter::new(crate::convert::Config {
                region: self.region.clone(),
                services: self.services.clone(),
                logs: self.logs,
                ..crate::convert::Config::default()
            });
            let mut records = records;
            records.sort_by_key(|r| r.timestamp_ms);
            for r in &records {
                conv.push(r);
            }
            let spans = conv.finish_delivery();
            let group = &*inv.log_group;
            let ids = [
                span_id("invocation", group, &inv.request_id),
                span_id("init", group, &inv.request_id),
            ];
            let derived = derived_trace(group, &inv.request_id);
            let keep: Vec<_> = spans
                .into_iter()
                .filter(|s| {
                    ids.contains(&s.span_id)
                        || (announced.contains(&(s.trace_id, s.span_id))
                            && !finished.contains(&(s.trace_id, s.span_id)))
                })
                .collect();
            let placed_now = keep
                .iter()
                .any(|s| s.span_id == ids[0] && s.trace_id != derived);
            if placed_now {
                placed += 1;
                out.extend(keep);
            }
        }
        (out, placed)
    }
}

/// A sink error for each record it failed (sink errors hold only text).
fn clone_sink_error(e: &SinkError) -> SinkError {
    match e {
        SinkError::Exhausted {
            endpoint,
            attempts,
            last,
        } => SinkError::Exhausted {
            endpoint: endpoint.clone(),
            attempts: *attempts,
            last: last.clone(),
        },
        SinkError::Fatal {
            endpoint,
            status,
            body,
        } => SinkError::Fatal {
            endpoint: endpoint.clone(),
            status: status.clone(),
            body: body.clone(),
        },
        SinkError::Config(m) => SinkError::Config(m.clone()),
        SinkError::Io(io) => SinkError::Io(std::io::Error::new(io.kind(), io.to_string())),
    }
}

/// `e` and its causes, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Parses the OTLP headers kept in a Secrets Manager secret: either a JSON object
/// (`{"authorization":"Bearer …"}`, what the console's key/value editor writes) or the
/// `OTEL_EXPORTER_OTLP_HEADERS` syntax (`key=value,key2=value2`). Keys are lowercased. Errors
/// never quote a value.
pub fn headers_from_secret(
    text: &str,
) -> Result<Vec<(String, String)>, crate::convert::sink::otlp::HeadersError> {
    use crate::convert::sink::otlp::{parse_headers, HeadersError};
    let t = text.trim();
    if t.starts_with('{') {
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(t).map_err(|_| HeadersError::NotKeyValue(1))?;
        let mut out = Vec::new();
        for (i, (k, v)) in map.into_iter().enumerate() {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => return Err(HeadersError::BadValue(i + 1, k)),
            };
            if k.trim().is_empty() {
                return Err(HeadersError::EmptyKey(i + 1));
            }
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        return Ok(out);
    }
    parse_headers(t)
}

/// Lambda's view of [`LambdaError`]: the error type it logs and reports.
impl From<LambdaError> for lambda_runtime::Diagnostic {
    fn from(e: LambdaError) -> Self {
        let kind = match &e {
            LambdaError::UnknownEvent | LambdaError::InvalidEvent { .. } => "InvalidEvent",
            LambdaError::InvalidPayload(_) | LambdaError::PayloadTooLarge(_) => "InvalidPayload",
            LambdaError::NotDelivered { .. } if e.is_retryable() => "BackendUnavailable",
            LambdaError::NotDelivered { .. } => "BackendRefused",
            LambdaError::Response(_) => "Response",
        };
        lambda_runtime::Diagnostic {
            error_type: format!("spanline.{kind}"),
            error_message: error_chain(&e),
        }
    }
}

#[cfg(test)]
mod tests;
