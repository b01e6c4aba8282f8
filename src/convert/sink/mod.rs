//! Sinks: where spans go. They know nothing of span lines: they take assembled
//! [`Span`](crate::convert::assemble::Span)s.
//!
//! # The contract every sink keeps
//! * [`Sink::send`] returns `Ok` only when the backend accepted the spans (partial acceptance is
//!   reported in [`Delivery`]); a caller moves a checkpoint only after `Ok`.
//! * Retryable failures (timeouts, connection errors, 429/502/503/504, gRPC UNAVAILABLE /
//!   RESOURCE_EXHAUSTED) are retried inside `send` with exponential backoff and jitter,
//!   honouring `Retry-After`, up to the sink's deadline; then `send` returns the last error.
//! * Fatal failures (other 4xx, malformed responses) return at once with the response body.
//!   A gRPC call that failed below gRPC (no status from a server: a refused or reset connection,
//!   an HTTP/1 server) is retryable, like any connection error.
//! * Redirects (3xx) are never followed: a POST turned into a GET, or spans and headers sent to
//!   another host, would be reported as delivered. A 3xx is [`SinkError::Config`] naming the
//!   `Location`, not retried.
//! * Server-provided delays (`Retry-After`, gRPC `RetryInfo`) are capped by the retry deadline.
//! * Secrets (header values) never appear in errors or logs, in any case or percent-encoded;
//!   text from a backend has its control characters made visible
//!   ([`printable`](crate::convert::printable)) before it enters an error.
//! * Credentials (headers, user info in the URL) are not sent over cleartext `http://` to a host
//!   that is not a loopback address unless the configuration's `allow_insecure` says so.
//! * `send` may be called concurrently only through separate clones; `shutdown` is idempotent.
//! * Spans a sink must trim or set aside to meet its backend's limits (X-Ray's, see
//!   [`otlp::xray`]) are not an error: `send` delivers the rest and [`AnySink::limits`] counts
//!   them by name, for the run's summary.

pub mod file;
pub mod otlp;
pub mod terminal;
pub mod zipkin;

use crate::convert::assemble::Span;
use std::future::Future;

/// What the backend said about one `send`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Spans the backend accepted.
    pub accepted: u64,
    /// Spans the backend rejected (OTLP partial success).
    pub rejected: u64,
    /// The backend's message about rejected spans, if any.
    pub message: Option<String>,
    /// Attempts made (1 when the first try succeeded).
    pub attempts: u32,
    /// Log records the backend accepted (an OTLP sink with logs, `--logs otlp`).
    pub logs_accepted: u64,
    /// Log records the backend rejected (OTLP partial success).
    pub logs_rejected: u64,
}

/// Why spans could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Still failing when the retry deadline passed; worth trying again later.
    #[error("{endpoint}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// Where.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The backend refused the data; sending it again will not help.
    #[error("{endpoint}: rejected ({status}): {body}")]
    Fatal {
        /// Where.
        endpoint: String,
        /// HTTP or gRPC status.
        status: String,
        /// The response body (truncated).
        body: String,
    },
    /// The sink could not be set up (bad endpoint, bad header syntax, TLS).
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// Local I/O (file sink, terminal).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl SinkError {
    /// Whether a later run may succeed with the same data.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Exhausted { .. } | SinkError::Io(_))
    }
}

/// A destination for spans.
pub trait Sink: Send {
    /// Delivers `spans` (see the module docs for the contract).
    fn send(&mut self, spans: &[Span]) -> impl Future<Output = Result<Delivery, SinkError>> + Send;
    /// Flushes and releases resources. Idempotent.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Keeps what it is sent, in memory: the test double of the pipeline's tests, and a way for a
/// library user to collect spans. Can be told to fail (see [`MemorySink::fail_after`],
/// [`MemorySink::refuse_trace`], [`MemorySink::hang`]).
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    spans: std::sync::Arc<std::sync::Mutex<Vec<Span>>>,
    /// Sends that succeed before every later one fails (`None`: never fails).
    fail_after: Option<usize>,
    /// Batches holding a span of this trace are refused (fatal), as a backend refusing data.
    refuse: Option<crate::span_line::TraceId>,
    /// Sends never answer (a backend slower than any deadline).
    hang: bool,
    sends: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        MemorySink::default()
    }

    /// Makes every send after the first `n` fail (as an unreachable backend would).
    pub fn fail_after(mut self, n: usize) -> Self {
        self.fail_after = Some(n);
        self
    }

    /// Refuses (fatally) every batch holding a span of `trace`.
    pub fn refuse_trace(mut self, trace: crate::span_line::TraceId) -> Self {
        self.refuse = Some(trace);
        self
    }

    /// Never answers.
    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }

    /// What it was sent and accepted, in order.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        if spans.iter().any(|s| Some(s.trace_id) == self.refuse) {
            return Err(SinkError::Fatal {
                endpoint: "memory".into(),
                status: "400".into(),
                body: "refused".into(),
            });
        }
        let n = self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail_after.is_some_and(|k| n >= k) {
            return Err(SinkError::Exhausted {
                endpoint: "memory".into(),
                attempts: 1,
                last: "told to fail".into(),
            });
        }
        if let Ok(mut v) = self.spans.lock() {
            v.extend_from_slice(spans);
        }
        Ok(Delivery {
            accepted: spans.len() as u64,
            rejected: 0,
            message: None,
            attempts: 1,
            ..Delivery::default()
        })
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Encodes each batch as an OTLP protobuf request into a reused buffer and drops it: what a
/// network sink does before the network, for benchmarks and `--dry-run`-like measurements.
#[derive(Debug, Default)]
pub struct DiscardSink {
    buf: Vec<u8>,
    /// Bytes of OTLP protobuf encoded so far.
    pub bytes: u64,
}

impl Sink for DiscardSink {
    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        otlp::encode::write_request(spans, &mut self.buf);
        self.bytes += self.buf.len() as u64;
        Ok(Delivery {
            accepted: spans.len() as u64,
            rejected: 0,
            message: None,
            attempts: 1,
            ..Delivery::default()
        })
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(feature = "convert")]
impl From<otlp::OtlpSink> for AnySink {
    fn from(s: otlp::OtlpSink) -> Self {
        AnySink::Otlp(s)
    }
}

impl From<MemorySink> for AnySink {
    fn from(s: MemorySink) -> Self {
        AnySink::Memory(s)
    }
}

/// One configured destination.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnySink {
    /// An OTLP endpoint.
    #[cfg(feature = "convert")]
    Otlp(otlp::OtlpSink),
    /// A Zipkin endpoint.
    #[cfg(feature = "convert")]
    Zipkin(zipkin::ZipkinSink),
    /// An OTLP JSON lines file.
    File(file::FileSink),
    /// The terminal waterfall.
    Terminal(terminal::TerminalSink),
    /// Memory (tests, library users).
    Memory(MemorySink),
    /// Encode and drop (benchmarks).
    Discard(DiscardSink),
}

impl AnySink {
    /// How messages name it (never with credentials).
    pub fn name(&self) -> String {
        match self {
            #[cfg(feature = "convert")]
            AnySink::Otlp(s) => format!(
                "OTLP {} {}",
                s.config().protocol.name(),
                s.config().endpoint_redacted()
            ),
            #[cfg(feature = "convert")]
            AnySink::Zipkin(_) => "Zipkin".to_owned(),
            AnySink::File(_) => "OTLP JSON file".to_owned(),
            AnySink::Terminal(_) => "terminal".to_owned(),
            AnySink::Memory(_) => "memory".to_owned(),
            AnySink::Discard(_) => "discard".to_owned(),
        }
    }

    /// Whether it delivers to a backend or a file (the terminal only shows).
    pub fn is_destination(&self) -> bool {
        !matches!(self, AnySink::Terminal(_))
    }

    /// See [`Sink::send`].
    pub async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        match self {
            #[cfg(feature = "convert")]
            AnySink::Otlp(s) => s.send(spans).await,
            #[cfg(feature = "convert")]
            AnySink::Zipkin(s) => s.send(spans).await,
            AnySink::File(s) => s.send(spans).await,
            AnySink::Terminal(s) => s.send(spans).await,
            AnySink::Memory(s) => s.send(spans).await,
            AnySink::Discard(s) => s.send(spans).await,
        }
    }

    /// What the sink trimmed or set aside so far to stay within its backend's limits, by the
    /// names the summary counts bounds under (see [`otlp::xray`]); empty for most sinks.
    pub fn limits(&self) -> std::collections::BTreeMap<&'static str, u64> {
        match self {
            #[cfg(feature = "convert")]
            AnySink::Otlp(s) => s.limits(),
            _ => std::collections::BTreeMap::new(),
        }
    }

    /// Lets a sink act on time passing (the terminal draws traces that settled).
    pub fn tick(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Terminal(s) => s.tick(),
            _ => Ok(()),
        }
    }

    /// See [`Sink::shutdown`].
    pub async fn shutdown(&mut self) -> Result<(), SinkError> {
        match self {
            #[cfg(feature = "convert")]
            AnySink::Otlp(s) => s.shutdown().await,
            #[cfg(feature = "convert")]
            AnySink::Zipkin(s) => s.shutdown().await,
            AnySink::File(s) => s.shutdown().await,
            AnySink::Terminal(s) => s.shutdown().await,
            AnySink::Memory(s) => s.shutdown().await,
            AnySink::Discard(s) => s.shutdown().await,
        }
    }
}
