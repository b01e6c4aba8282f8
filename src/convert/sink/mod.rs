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

pub mod file;
pub mod otlp;
pub mod retry;
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
