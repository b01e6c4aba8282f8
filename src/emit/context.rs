//! `SpanContext`: what travels between processes (OpenTracing's SpanContext) and what a child
//! span needs from its parent.

use crate::span_line::{SpanId, TraceId};
use std::sync::Arc;

/// The identity of a span as seen by its children and by other processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace this span belongs to.
    pub trace_id: TraceId,
    /// The span itself.
    pub span_id: SpanId,
    /// The sampling decision carried by the trace. Unsampled spans print nothing, and neither do
    /// their children, but the context is still propagated so downstream services agree.
    pub sampled: bool,
    /// The W3C `tracestate` header, carried through unchanged (`None` when absent; shared, so
    /// children copy it without allocating).
    pub trace_state: Option<Arc<str>>,
}

impl SpanContext {
    /// A sampled context without trace state.
    pub fn new(trace_id: TraceId, span_id: SpanId) -> Self {
        Self {
            trace_id,
            span_id,
            sampled: true,
            trace_state: None,
        }
    }

    /// Whether both ids are non-zero.
    pub fn is_valid(&self) -> bool {
        !self.trace_id.is_zero() && !self.span_id.is_zero()
    }
}
