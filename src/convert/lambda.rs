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
//! them), failed in the Firehose case (Firehose keeps them). `CONTROL_MESSAGE`s are skipped.
//!
//! Each invocation is converted on its own, with no state kept between invocations: Lambda may
//! run any number of instances at once. An invocation whose START and REPORT lines arrive in
//! different payloads is finished with what each payload knows, under the same deterministic
//! span id.

use crate::convert::assemble::{ServiceMap, Span};
use crate::convert::record::LogRecord;
use crate::convert::sink::{Sink, SinkError};
use crate::convert::{Converter, Summary};
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::cloudwatch_logs::LogData;
use aws_lambda_events::event::firehose::{
    KinesisFirehoseEvent, KinesisFirehoseResponse, KinesisFirehoseResponseRecord,
};
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine as _;
use serde_json::Value;
use std::io::Read as _;
use std::time::Instant;

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
    /// The delivery task ended abnormally.
    #[error("the delivery task failed: {0}")]
    Task(String),
}

impl LambdaError {
    /// Whether retrying the same event may succeed (the backend was unreachable or slow, rather
    /// than the event being unusable or the data refused).
    pub fn is_retryable(&self) -> bool {
        match self {
            LambdaError::NotDelivered { source, .. } => match source {
                ItemError::Sink(e) => e.is_retryable(),
                ItemError::Deadline | ItemError::Task(_) => true,
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
    /// Spans seen twice within a record and dropped.
    pub duplicates: u64,
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

/// One record of an event, decoded.
#[derive(Debug)]
enum Item {
    /// Log events to convert.
    Data(Vec<LogRecord>),
    /// A `CONTROL_MESSAGE` (CloudWatch's check that the destination is reachable).
    Control,
    /// Not a subscription payload.
    Invalid(String),
}

/// Decodes a subscription payload as Kinesis and Firehose carry it: gzip (possibly several
/// members) of one or more concatenated JSON payloads. Plain JSON is accepted too (a Firehose
/// stream that decompresses for its Lambda processor).
fn decode_payload(data: &[u8]) -> Item {
    let raw = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out) {
            return Item::Invalid(format!("not gzip: {e}"));
        }
        out
    } else {
        data.to_vec()
    };
    let mut records = Vec::new();
    let mut data_messages = 0usize;
    for doc in serde_json::Deserializer::from_slice(&raw).into_iter::<LogData>() {
        match doc {
            Ok(d) if d.message_type == "CONTROL_MESSAGE" => {}
            Ok(d) => {
                data_messages += 1;
                records.extend(log_records(d));
            }
            Err(e) => return Item::Invalid(format!("not a subscription payload: {e}")),
        }
    }
    if data_messages == 0 {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Item::Invalid("empty".into());
        }
        return Item::Control;
    }
    Item::Data(records)
}

fn log_records(d: LogData) -> impl Iterator<Item = LogRecord> {
    let (group, stream) = (d.log_group, d.log_stream);
    d.log_events.into_iter().map(move |e| LogRecord {
        log_group: group.clone(),
        log_stream: stream.clone(),
        event_id: e.id,
        timestamp_ms: e.timestamp,
        message: e.message,
    })
}

/// A recognised event.
#[derive(Debug)]
enum Event {
    Subscription(Item),
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
        return match decode_payload(&bytes) {
            Item::Invalid(reason) => Err(LambdaError::InvalidPayload(reason)),
            item => Ok(Event::Subscription(item)),
        };
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

/// Converts and delivers subscription events. Cheap to share: one per cold start.
#[derive(Debug)]
pub struct Handler<S> {
    sink: S,
    /// `cloud.region` of invocation spans (the function's region: subscriptions deliver within
    /// one region).
    pub region: Option<String>,
    /// Service names for log groups.
    pub services: ServiceMap,
    /// Most records delivered at once.
    pub concurrency: usize,
    /// Time kept free before the invocation deadline, to answer Lambda.
    pub deadline_margin: std::time::Duration,
}

/// What one record's delivery came to.
type Delivered = Result<(u64, u64, u32), ItemError>;

impl<S> Handler<S>
where
    S: Sink + Clone + Sync + 'static,
{
    /// A handler sending to `sink`.
    pub fn new(sink: S) -> Self {
        Handler {
            sink,
            region: None,
            services: ServiceMap::default(),
            concurrency: 4,
            deadline_margin: std::time::Duration::from_millis(1500),
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
            Event::Subscription(item) => {
                report.event = Some(EventKind::Subscription);
                let mut outcomes = self.deliver(vec![item], deadline, report).await;
                match outcomes.pop() {
                    Some(Outcome::Failed(e)) => Err(LambdaError::NotDelivered {
                        failed: 1,
                        items: 1,
                        source: e,
                    }),
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
                let items = e
                    .records
                    .into_iter()
                    .map(|r| decode_payload(&r.kinesis.data.0))
                    .collect();
                let outcomes = self.deliver(items, deadline, report).await;
                let mut response = KinesisEventResponse::default();
                for (id, o) in ids.into_iter().zip(outcomes) {
                    if matches!(o, Outcome::Failed(_)) {
                        let mut f = KinesisBatchItemFailure::default();
                        f.item_identifier = Some(id);
                        response.batch_item_failures.push(f);
                    }
                }
                serde_json::to_value(response).map_err(LambdaError::Response)
            }
            Event::Firehose(e) => {
                report.event = Some(EventKind::Firehose);
                let items: Vec<Item> = e
                    .records
                    .iter()
                    .map(|r| decode_payload(&r.data.0))
                    .collect();
                let n = items.len();
                let outcomes = self.deliver(items, deadline, report).await;
                let mut response = KinesisFirehoseResponse::default();
                let mut first_failure = None;
                let mut failed = 0;
                for (rec, o) in e.records.into_iter().zip(outcomes) {
                    let result = match o {
                        Outcome::Delivered => "Ok",
                        Outcome::Control => "Dropped",
                        Outcome::Invalid => "ProcessingFailed",
                        Outcome::Failed(err) => {
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

    /// Converts each item on its own and delivers the spans, at most `concurrency` items at
    /// once, until `deadline`. One outcome per item, in order.
    async fn deliver(
        &self,
        items: Vec<Item>,
        deadline: Option<Instant>,
        report: &mut Report,
    ) -> Vec<Outcome> {
        report.items = items.len() as u64;
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(items.len());
        let mut pending: Vec<(usize, Vec<Span>)> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Item::Control => {
                    report.items_control += 1;
                    outcomes.push(Some(Outcome::Control));
                }
                Item::Invalid(reason) => {
                    report.items_invalid += 1;
                    // One line per bad record: rare, and the operator needs to know.
                    eprintln!("spanline: record {i}: skipped: {reason}");
                    outcomes.push(Some(Outcome::Invalid));
                }
                Item::Data(records) => {
                    let mut conv = Converter::new(crate::convert::Config {
                        region: self.region.clone(),
                        services: self.services.clone(),
                        ..crate::convert::Config::default()
                    });
                    for r in &records {
                        conv.push(r);
                    }
                    let spans = conv.finish();
                    report.add(&conv.summary);
                    if spans.is_empty() {
                        outcomes.push(Some(Outcome::Delivered));
                    } else {
                        outcomes.push(None);
                        pending.push((i, spans));
                    }
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        // Task id → item, to tell which item a panicked task carried.
        let mut running = std::collections::HashMap::new();
        let mut queue = pending.into_iter();
        loop {
            while tasks.len() < self.concurrency.max(1) {
                let Some((i, spans)) = queue.next() else {
                    break;
                };
                let mut sink = self.sink.clone();
                let handle = tasks.spawn(async move {
                    let r: Delivered = sink
                        .send(&spans)
                        .await
                        .map(|d| (d.accepted, d.rejected, d.attempts))
                        .map_err(ItemError::from);
                    (i, r)
                });
                running.insert(handle.id(), i);
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), tasks.join_next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => tasks.join_next().await,
            };
            let Some(joined) = next else { break };
            match joined {
                Ok((i, r)) => {
                    running.retain(|_, item| *item != i);
                    let outcome = match r {
                        Ok((accepted, rejected, attempts)) => {
                            report.spans_delivered += accepted;
                            report.spans_rejected += rejected;
                            report.max_attempts = report.max_attempts.max(attempts);
                            Outcome::Delivered
                        }
                        Err(e) => Outcome::Failed(e),
                    };
                    if let Some(slot) = outcomes.get_mut(i) {
                        *slot = Some(outcome);
                    }
                }
                Err(e) => {
                    if let Some(i) = running.remove(&e.id()) {
                        if let Some(slot) = outcomes.get_mut(i) {
                            *slot = Some(Outcome::Failed(ItemError::Task(e.to_string())));
                        }
                    }
                }
            }
        }
        tasks.abort_all();
        let timed_out = running.len() + queue.len() > 0;
        let out: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Outcome::Failed(if timed_out {
                    ItemError::Deadline
                } else {
                    ItemError::Task("ended without an answer".into())
                }))
            })
            .collect();
        for o in &out {
            match o {
                Outcome::Delivered => report.items_ok += 1,
                Outcome::Failed(_) => report.items_failed += 1,
                Outcome::Control | Outcome::Invalid => {}
            }
        }
        out
    }
}

/// One item's fate.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Control,
    Invalid,
    Failed(ItemError),
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
            LambdaError::InvalidPayload(_) => "InvalidPayload",
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
