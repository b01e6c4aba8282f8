//! The OTLP sink: spans → `ExportTraceServiceRequest`s → an OpenTelemetry collector or
//! backend, over OTLP/HTTP (protobuf or JSON) or OTLP/gRPC.
//!
//! With a [`LogsTarget`] (`--logs otlp`) the sink also sends the function's log lines kept
//! beside the spans as `ExportLogsServiceRequest`s ([`logs`]), after the spans of each send.
//!
//! Split the vector way: [`encode`] is pure (spans → request, request → JSON, response →
//! partial success), [`xray`] is pure (X-Ray's limits: which spans go, trimmed how, in which
//! requests), [`config`] reads the `OTEL_EXPORTER_OTLP_*` variables, [`sigv4`] signs requests
//! for AWS, `http` and `grpc` make one attempt each, and this module batches, bounds
//! concurrency and retries with [`retry`](crate::convert::retry)'s policy.
//!
//! `send` splits the spans into requests of at most `max_batch_spans` (to X-Ray: within its
//! limits), keeps at most `max_concurrency` in flight, retries each until it is accepted,
//! refused (fatal) or `retry_deadline` has passed, and returns `Ok` only when every request was
//! accepted.

#[cfg(feature = "convert")]
pub mod config;
pub mod encode;
#[cfg(feature = "convert")]
mod export;
#[cfg(feature = "convert")]
mod grpc;
#[cfg(feature = "convert")]
mod http;
#[cfg(feature = "convert")]
pub mod logs;
#[cfg(feature = "convert")]
pub mod sigv4;
#[cfg(all(test, feature = "convert"))]
mod tests;
pub mod xray;

#[cfg(feature = "convert")]
pub use config::{
    cloudwatch_logs_endpoint, parse_headers, xray_endpoint, xray_region, Compression, HeadersError,
    LogsTarget, OtlpConfig, Protocol,
};
pub use encode::{encode_request, to_json, PartialSuccess};
#[cfg(feature = "convert")]
pub use export::*;
#[cfg(feature = "convert")]
pub use sigv4::{SigV4, SignError};
