//! The OTLP sink proper: batching, bounded concurrency and retries around the transports
//! (see the parent module). Sending to X-Ray (signing for `xray`), the spans first go through
//! [`xray::prepare`](super::xray::prepare), and what it set aside is counted in
//! [`OtlpSink::limits`].

use super::config::OtlpConfig;
use super::config::Protocol;
use super::encode::{encode_request, PartialSuccess};
use super::logs::{log_items, logs_request};
use super::sigv4::XRAY_SERVICE;
use super::xray::{self, XrayLimits, XRAY_LIMITS};
use super::{grpc, http};
use crate::convert::assemble::Span;
use crate::convert::printable::visible;
use crate::convert::retry::{instant_after, Backoff};
use crate::convert::sink::{Delivery, Sink, SinkError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest response body kept in an error.
pub const MAX_ERROR_BODY: usize = 1024;

/// Header values shorter than this are not scrubbed from response text: they are ids (MLflow's
/// `x-mlflow-experiment-id: 0`), and replacing every `0` would garble the message.
const MIN_SECRET_LEN: usize = 6;

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The backend took the request (possibly rejecting some spans).
    Accepted(PartialSuccess),
    /// Transient failure; `after` is the server's requested delay.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The backend refused the request.
    Fatal { status: String, body: String },
    /// The backend answered with a redirect (3xx), which is not followed: `location` is the
    /// `Location` header resolved against the endpoint, unredacted (the caller scrubs it).
    Redirect {
        status: String,
        location: Option<String>,
    },
    /// The request could not be signed, and trying again will not help (no credentials, a
    /// bad profile): the text of the error and its causes, never a key.
    Unsigned(String),
}

#[derive(Clone)]
enum Transport {
    Http(http::HttpTransport),
    // Boxed: tonic's `Endpoint` is large and clippy rightly objects to the size gap.
    Grpc(Box<grpc::GrpcTransport>),
}

/// One export request, of either signal.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

/// One batch, encoded once for every attempt.
enum Payload {
    Http(Bytes),
    Grpc(Request),
}

impl Transport {
    /// The payload of `req`, and the size of an HTTP body before compression (`None` for
    /// gRPC, which neither of AWS's endpoints takes).
    fn payload(&self, req: Request) -> Result<(Payload, Option<usize>), SinkError> {
        match self {
            Transport::Http(t) => {
                let (body, raw_len) = t.body(&req)?;
                Ok((Payload::Http(body), Some(raw_len)))
            }
            Transport::Grpc(_) => Ok((Payload::Grpc(req), None)),
        }
    }

    fn new(config: &OtlpConfig) -> Result<Transport, SinkError> {
        Ok(match config.protocol {
            Protocol::Grpc => Transport::Grpc(Box::new(grpc::GrpcTransport::new(config)?)),
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                Transport::Http(http::HttpTransport::new(config)?)
            }
        })
    }

    async fn attempt(&self, payload: &Payload) -> Outcome {
        match (self, payload) {
            (Transport::Http(t), Payload::Http(body)) => t.attempt(body.clone()).await,
            (Transport::Grpc(t), Payload::Grpc(req)) => t.attempt(req.clone()).await,
            // `payload` is always built by the same transport.
            _ => Outcome::Fatal {
                status: "internal".into(),
                body: "payload does not match the transport".into(),
            },
        }
    }
}

/// What the batches of one `send` share. Deliberately not `Debug`: it holds the secrets.
struct Exporter {
    transport: Transport,
    /// The endpoint without credentials, for errors.
    endpoint: String,
    /// Header values to scrub from anything a server sends back.
    secrets: Vec<String>,
    timeout: Duration,
    retry_deadline: Duration,
    backoff: Backoff,
}

/// Sends spans to an OTLP endpoint. Clone it to send concurrently; clones share connections
/// and [`OtlpSink::limits`].
#[derive(Clone)]
pub struct OtlpSink {
    exporter: Option<Arc<Exporter>>,
    /// Where log records go (`--logs otlp`), when configured.
    logs: Option<Arc<LogsExporter>>,
    config: Arc<OtlpConfig>,
    /// X-Ray's limits, applied before sending, when the requests are signed for X-Ray.
    xray: Option<XrayLimits>,
    /// Spans set aside or changed to stay within `xray`, by summary name, over every send.
    limits: Arc<Mutex<BTreeMap<&'static str, u64>>>,
}

/// Shows the (redacted) configuration only: the clients carry header values.
impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("config", &self.config)
            .field("shut_down", &self.exporter.is_none())
            .finish()
    }
}

impl OtlpSink {
    /// Validates `config` and prepares the client. Connects lazily, on the first `send`, so
    /// this needs no runtime and no reachable endpoint.
    pub fn new(config: OtlpConfig) -> Result<OtlpSink, SinkError> {
        config.validate()?;
        let xray = config
            .signing()
            .filter(|s| s.service == XRAY_SERVICE)
            .map(|_| XRAY_LIMITS);
        let exporter = Exporter::new(&config)?;
        let logs = match (config.logs_config(), &config.logs) {
            (Some(c), Some(target)) => Some(Arc::new(LogsExporter {
                exporter: Exporter::new(&c)?,
                max_records: target.max_records.max(1),
                max_request_bytes: target.max_request_bytes,
            })),
            _ => None,
        };
        Ok(OtlpSink {
            exporter: Some(Arc::new(exporter)),
            logs,
            config: Arc::new(config),
            xray,
            limits: Arc::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    /// The spans this sink (and its clones) trimmed or set aside so far to stay within the
    /// endpoint's limits, by the names the summary counts them under
    /// ([`xray::TRIMMED`](super::xray::TRIMMED), …). Empty when nothing was.
    pub fn limits(&self) -> BTreeMap<&'static str, u64> {
        self.limits.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count(&self, counts: &xray::XrayCounts) {
        if let Ok(mut m) = self.limits.lock() {
            for (k, v) in counts.named() {
                if v > 0 {
                    *m.entry(k).or_default() += v;
                }
            }
        }
    }
}

fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Sink for OtlpSink {
    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        let Some(exporter) = self.exporter.clone() else {
            return Err(SinkError::Config("send after shutdown".into()));
        };
        let mut delivery = Delivery::default();
        let original = spans;
        let max_batch = self.config.max_batch_spans.max(1);
        let prepared;
        let (spans, mut batches): (&[Span], VecDeque<Range<usize>>) = match &self.xray {
            Some(limits) => {
                prepared = xray::prepare(spans, now_unix_nano(), limits, max_batch);
                self.count(&prepared.counts);
                (&prepared.spans, prepared.batches.iter().cloned().collect())
            }
            None => (spans, chunks(spans.len(), max_batch)),
        };
        let mut in_flight: JoinSet<(u64, Result<Accepted, SinkError>)> = JoinSet::new();
        let mut failure: Option<SinkError> = None;
        loop {
            while failure.is_none() && in_flight.len() < self.config.max_concurrency.max(1) {
                let Some(range) = batches.pop_front() else {
                    break;
                };
                let batch = &spans[range.clone()];
                let (payload, raw_len) = exporter
                    .transport
                    .payload(Request::Traces(encode_request(batch)))?;
                // The plan sized requests by their protobuf; an OTLP/JSON body is larger. One
                // over the endpoint's limit is halved until it fits.
                let limit = self.xray.as_ref().map(|l| l.max_request_bytes);
                if halve_if_over(limit, raw_len, &range, &mut batches) {
                    continue;
                }
                let exporter = Arc::clone(&exporter);
                let n = batch.len() as u64;
                in_flight.spawn(async move { (n, export_batch(&exporter, payload).await) });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            match joined {
                Ok((n, Ok(a))) => {
                    delivery.accepted += n.saturating_sub(a.partial.rejected);
                    delivery.rejected += a.partial.rejected;
                    delivery.attempts = delivery.attempts.max(a.attempts);
                    if let Some(m) = a.partial.message {
                        delivery.message = Some(match delivery.message.take() {
                            Some(prev) if prev != m => format!("{prev}; {m}"),
                            Some(prev) => prev,
                            None => m,
                        });
                    }
                }
                Ok((_, Err(e))) => {
                    // The whole send fails: stop the other batches, the caller will resend.
                    if failure.is_none() {
                        failure = Some(e);
                        in_flight.abort_all();
                    }
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(SinkError::Exhausted {
                            endpoint: exporter.endpoint.clone(),
                            attempts: 0,
                            last: format!("export task failed: {e}"),
                        });
                        in_flight.abort_all();
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // The log records after the spans: a failure sends both again, and a backend keys the
        // spans by id, not the records.
        if let Some(logs) = &self.logs {
            let (accepted, rejected, message) = send_logs(logs, original).await?;
            delivery.logs_accepted = accepted;
            delivery.logs_rejected = rejected;
            if let Some(m) = message {
                delivery.message = Some(match delivery.message.take() {
                    Some(prev) => format!("{prev}; logs: {m}"),
                    None => format!("logs: {m}"),
                });
            }
        }
        Ok(delivery)
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        // Nothing is buffered between sends; dropping the client closes its connections once
        // the last clone goes.
        self.exporter = None;
        self.logs = None;
        Ok(())
    }
}

/// Where log records go: an exporter, and how much one request may hold.
struct LogsExporter {
    exporter: Exporter,
    /// Most records in one request.
    max_records: usize,
    /// Most bytes of one request before compression, when the endpoint has a limit.
    max_request_bytes: Option<usize>,
}

/// `0..n` in consecutive ranges of at most `max` (at least 1).
fn chunks(n: usize, max: usize) -> VecDeque<Range<usize>> {
    let max = max.max(1);
    (0..n).step_by(max).map(|i| i..(i + max).min(n)).collect()
}

/// When a request for `range` is over `limit` bytes (`raw`: its size before compression) and
/// can be split, puts its two halves at the front of `batches` and says so.
fn halve_if_over(
    limit: Option<usize>,
    raw: Option<usize>,
    range: &Range<usize>,
    batches: &mut VecDeque<Range<usize>>,
) -> bool {
    let (Some(limit), Some(raw)) = (limit, raw) else {
        return false;
    };
    if raw <= limit || range.len() < 2 {
        return false;
    }
    let mid = range.start + range.len() / 2;
    batches.push_front(mid..range.end);
    batches.push_front(range.start..mid);
    true
}

/// Sends the log records kept beside `spans` to the logs endpoint, one request at a time, at
/// most `max_records` each and, when the endpoint has a byte limit, halved until each fits.
/// Returns the records accepted, rejected and the backend's message.
async fn send_logs(
    logs: &LogsExporter,
    spans: &[Span],
) -> Result<(u64, u64, Option<String>), SinkError> {
    let ex = &logs.exporter;
    let items = log_items(spans);
    let mut batches = chunks(items.len(), logs.max_records);
    let (mut accepted, mut rejected, mut message) = (0u64, 0u64, None::<String>);
    while let Some(range) = batches.pop_front() {
        let request = logs_request(&items[range.clone()]);
        let (payload, raw_len) = ex.transport.payload(Request::Logs(request))?;
        if halve_if_over(logs.max_request_bytes, raw_len, &range, &mut batches) {
            continue;
        }
        let a = export_batch(ex, payload).await?;
        let n = range.len() as u64;
        accepted += n.saturating_sub(a.partial.rejected);
        rejected += a.partial.rejected;
        if let Some(m) = a.partial.message {
            if message.as_deref() != Some(m.as_str()) {
                message = Some(match message.take() {
                    Some(prev) => format!("{prev}; {m}"),
                    None => m,
                });
            }
        }
    }
    Ok((accepted, rejected, message))
}

/// One batch's result.
struct Accepted {
    partial: PartialSuccess,
    attempts: u32,
}

/// The shortest time worth giving an attempt.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Sends one batch until it is accepted, refused, or the retry deadline passes.
async fn export_batch(ex: &Exporter, payload: Payload) -> Result<Accepted, SinkError> {
    // Checked: a configured deadline of years must not overflow the clock.
    let deadline = instant_after(Instant::now(), ex.retry_deadline);
    let mut backoff = ex.backoff.clone();
    let mut attempts: u32 = 0;
    let mut last_reason = String::new();
    loop {
        // Retries never run past the deadline; the first attempt always gets the full timeout.
        let budget = if attempts == 0 {
            ex.timeout
        } else {
            ex.timeout
                .min(deadline.saturating_duration_since(Instant::now()))
        };
        // A retry with (almost) no time left would only fail with a meaningless timeout and
        // hide the real cause: give up with the last real failure instead.
        if attempts > 0 && budget < MIN_ATTEMPT {
            return Err(SinkError::Exhausted {
                endpoint: ex.endpoint.clone(),
                attempts,
                last: ex.scrub(&last_reason),
            });
        }
        attempts = attempts.saturating_add(1);
        let outcome = match tokio::time::timeout(budget, ex.transport.attempt(&payload)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry {
                reason: format!("no response within {} ms", budget.as_millis()),
                after: None,
            },
        };
        match outcome {
            Outcome::Accepted(partial) => {
                let partial = PartialSuccess {
                    message: partial.message.map(|m| ex.scrub(&m)),
                    ..partial
                };
                return Ok(Accepted { partial, attempts });
            }
            Outcome::Fatal { status, body } => {
                return Err(SinkError::Fatal {
                    endpoint: ex.endpoint.clone(),
                    status: ex.scrub(&status),
                    body: ex.scrub(&body),
                });
            }
            Outcome::Redirect { status, location } => {
                return Err(SinkError::Config(redirect_message(
                    &ex.endpoint,
                    &ex.scrub(&status),
                    location.map(|l| ex.scrub(&redact_location(&l))),
                )));
            }
            Outcome::Unsigned(reason) => {
                return Err(SinkError::Config(format!(
                    "{}: cannot sign the request (AWS SigV4): {}",
                    ex.endpoint,
                    ex.scrub(&reason)
                )));
            }
            Outcome::Retry { reason, after } => {
                // A server's delay never runs past the deadline (a gRPC RetryInfo of i64::MAX
                // seconds overflowed `Instant + delay`).
                let delay = backoff.next_delay(after.map(|a| a.min(ex.retry_deadline)));
                last_reason.clone_from(&reason);
                if instant_after(Instant::now(), delay) >= deadline {
                    return Err(SinkError::Exhausted {
                        endpoint: ex.endpoint.clone(),
                        attempts,
                        last: ex.scrub(&reason),
                    });
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl Exporter {
    fn new(config: &OtlpConfig) -> Result<Exporter, SinkError> {
        Ok(Exporter {
            transport: Transport::new(config)?,
            endpoint: config.endpoint_redacted(),
            secrets: secret_forms(&config.headers),
            timeout: config.timeout,
            retry_deadline: config.retry_deadline,
            backoff: Backoff::new(config.backoff.base, config.backoff.cap),
        })
    }

    /// Makes server-supplied text printable: removes header values (some servers echo request
    /// headers in error pages, in any case and percent-encoded), makes control characters
    /// visible, then truncates it to [`MAX_ERROR_BODY`]. Scrubbing comes first so a secret cut
    /// by the truncation cannot leave a prefix behind.
    fn scrub(&self, text: &str) -> String {
        let t = scrub_secrets(text, &self.secrets);
        truncate(&visible(&t), MAX_ERROR_BODY)
    }
}

/// The error for a redirect: names where the server wanted the spans to go.
pub(crate) fn redirect_message(endpoint: &str, status: &str, location: Option<String>) -> String {
    let to = match location {
        Some(l) => format!("redirects to {l}"),
        None => "redirects (no Location)".to_owned(),
    };
    format!(
        "{endpoint}: the server answered {status} and {to}; redirects are not followed and \
         nothing was delivered: set the endpoint to the final URL"
    )
}

/// A `Location` for printing: a URL without its user info and query, anything else as is.
pub(crate) fn redact_location(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(_) => super::config::redact_url(location),
        Err(_) => location.to_owned(),
    }
}

/// The texts to scrub for the header values: each value (and each whitespace-separated part,
/// for `Bearer <token>`) of at least [`MIN_SECRET_LEN`] bytes, as is and percent-encoded
/// (every byte but the unreserved ones as `%XX`, and again with `+` for a space, as HTML forms
/// write it). Matching is ASCII-case-insensitive, which also covers lowercase hex digits.
pub(crate) fn secret_forms(headers: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, v) in headers {
        for s in std::iter::once(v.as_str()).chain(v.split_whitespace()) {
            if s.len() < MIN_SECRET_LEN {
                continue;
            }
            let encoded = percent_encode(s);
            let plus = encoded.replace("%20", "+");
            for form in [s.to_owned(), encoded, plus] {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&form)) {
                    out.push(form);
                }
            }
        }
    }
    // Longest first, so a value is replaced whole before one of its parts.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// Every byte except the unreserved ones (RFC 3986: letters, digits, `-._~`) as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with every ASCII-case-insensitive occurrence of a secret replaced by `<redacted>`.
pub(crate) fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_owned();
    for s in secrets {
        // ASCII lowercasing keeps byte offsets and character boundaries.
        let needle = s.to_ascii_lowercase();
        if needle.is_empty() {
            continue;
        }
        let mut out = String::with_capacity(t.len());
        let lower = t.to_ascii_lowercase();
        let mut from = 0;
        while let Some(at) = lower[from..].find(&needle) {
            out.push_str(&t[from..from + at]);
            out.push_str("<redacted>");
            from += at + needle.len();
        }
        out.push_str(&t[from..]);
        t = out;
    }
    t
}

/// At most `max` bytes of `s`, cut at a character boundary, `…` marking a cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
