//! The emitter: what functions link.
//!
//! An OpenTracing-style API ([`Tracer`], [`Span`], [`SpanContext`]) that writes one span line
//! (see [`crate::span_line`]) per finished span to an [`Output`], stdout by default. On the hot
//! path it checks whether the span is recorded, formats into a buffer taken from a per-thread
//! pool, and issues exactly one `write_all`; after warm-up a span allocates nothing. It never
//! panics and never returns an I/O error into the handler: failed writes are counted
//! ([`Tracer::failures`]) and reported once on stderr.
//!
//! ```
//! use spanline::emit::{Tracer, CaptureOutput, SpanKind};
//! let out = CaptureOutput::new();
//! let tracer = Tracer::builder().service("checkout").output(out.clone()).build();
//! let headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
//! let parent = spanline::emit::propagation::extract(&headers[..]);
//! let mut span = tracer.span("service-egress").child_of_opt(parent.as_ref()).kind(SpanKind::Client).start();
//! span.set_tag("http.method", "POST");
//! span.log_event("retry");
//! span.finish();
//! assert!(out.text().starts_with("SPLN1 S_kvNXezTaajzpKdDg5HNg"));
//! ```

mod clock;
mod context;
mod output;
pub mod propagation;
mod tracer;

#[cfg(feature = "tracing")]
pub mod layer;

pub use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId, Value};
pub use context::SpanContext;
pub use output::{CaptureOutput, Output, StdoutOutput, WriterOutput, PIPE_BUF};
pub use tracer::{global, set_global, Span, SpanBuilder, Tracer, TracerBuilder};
