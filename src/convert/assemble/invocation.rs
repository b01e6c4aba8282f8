//! Invocation and init spans from Lambda's own lines, so that an invocation whose process died
//! before printing its spans still appears, as an error, in its caller's trace.
//!
//! # Derived ids (deterministic: converting the same logs twice gives the same ids)
//! With `fnv(s)` the 64-bit FNV-1a hash of the UTF-8 bytes of `s` (written big-endian):
//! * invocation span id = `fnv("spanline/invocation/" + log group + "/" + request id)`;
//! * init span id = `fnv("spanline/init/" + log group + "/" + request id)`;
//! * trace id, only when nothing else names one = `fnv("spanline/trace/a/" + group + "/" +
//!   request id)` ++ `fnv("spanline/trace/b/" + group + "/" + request id)`.
//!
//! The trace is, in order of preference: the trace of the function's own root spans of that
//! request (so the invocation joins its caller's trace; their common parent becomes the
//! invocation's parent and the roots become the invocation's children), the `platform.start`
//! tracing header, the REPORT line's `XRAY TraceId`, else the derived id. An id is never 0:
//! a zero hash is replaced by 1.

use super::span::{Resource, Span};
use super::{service_from_log_group, KeyValue};
use crate::convert::platform::Report;
use crate::convert::proto::{self, Scalar};
use crate::emit::SpanContext;
use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
use std::sync::Arc;

/// 64-bit FNV-1a.
pub fn fnv64(s: &str) -> u64 {
    fnv64_bytes(s.as_bytes(), 0xcbf2_9ce4_8422_2325)
}

/// 64-bit FNV-1a of `bytes`, continuing from `h`.
pub fn fnv64_bytes(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a of `spanline/<kind>/<group>/<request id>`, without building the string.
fn fnv_path(kind: &str, group: &str, request_id: &str) -> u64 {
    let mut h = fnv64_bytes(b"spanline/", 0xcbf2_9ce4_8422_2325);
    h = fnv64_bytes(kind.as_bytes(), h);
    h = fnv64_bytes(b"/", h);
    h = fnv64_bytes(group.as_bytes(), h);
    h = fnv64_bytes(b"/", h);
    fnv64_bytes(request_id.as_bytes(), h)
}

/// The derived span id of an invocation (`kind` "invocation") or init span ("init").
pub fn span_id(kind: &str, group: &str, request_id: &str) -> SpanId {
    let h = fnv_path(kind, group, request_id);
    SpanId(if h == 0 { 1 } else { h }.to_be_bytes())
}

/// The trace id derived when nothing else names one.
pub fn derived_trace(group: &str, request_id: &str) -> TraceId {
    let a = fnv_path("trace/a", group, request_id);
    let b = fnv_path("trace/b", group, request_id);
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&a.to_be_bytes());
    t[8..].copy_from_slice(&b.to_be_bytes());
    if t == [0; 16] {
        t[15] = 1;
    }
    TraceId(t)
}

/// The REPORT figures an invocation keeps (owned, without the request id it is filed under).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportFigures {
    /// `Duration`, ms.
    pub duration_ms: f64,
    /// `Billed Duration`, ms.
    pub billed_ms: Option<f64>,
    /// `Memory Size`, MB.
    pub memory_mb: Option<i64>,
    /// `Max Memory Used`, MB.
    pub max_memory_mb: Option<i64>,
    /// `Init Duration`, ms.
    pub init_ms: Option<f64>,
    /// The X-Ray trace.
    pub xray: Option<SpanContext>,
    /// `Status`.
    pub status: Option<String>,
    /// `Error Type`.
    pub error_type: Option<String>,
}

impl From<&Report<'_>> for ReportFigures {
    fn from(r: &Report<'_>) -> Self {
        ReportFigures {
            duration_ms: r.duration_ms,
            billed_ms: r.billed_ms,
            memory_mb: r.memory_mb,
            max_memory_mb: r.max_memory_mb,
            init_ms: r.init_ms,
            xray: r.xray.clone(),
            status: r.status.as_deref().map(str::to_owned),
            error_type: r.error_type.as_deref().map(str::to_owned),
        }
    }
}

/// What the platform lines said about one invocation.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// Log group.
    pub log_group: Arc<str>,
    /// Log stream.
    pub log_stream: Arc<str>,
    /// Request id.
    pub request_id: String,
    /// Function version from START.
    pub version: Option<String>,
    /// START time, ms.
    pub start_ms: Option<i64>,
    /// INIT_START time, ms (cold start).
    pub init_start_ms: Option<i64>,
    /// Time of the last line seen for it (END, REPORT, timeout), ms.
    pub last_ms: Option<i64>,
    /// The REPORT figures.
    pub report: Option<ReportFigures>,
    /// Trace context from `platform.start`.
    pub tracing: Option<SpanContext>,
    /// `Task timed out …` message.
    pub timeout: Option<String>,
    /// Crash message and whether it looks like out-of-memory.
    pub crash: Option<(String, bool)>,
    /// The handler's error (`errorType: errorMessage`), from the runtime's error line.
    pub handler_error: Option<String>,
}

impl Invocation {
    /// The times of its lines seen so far (INIT_START, START, the last one), ms.
    pub fn times_ms(&self) -> impl Iterator<Item = i64> {
        [self.init_start_ms, self.start_ms, self.last_ms]
            .into_iter()
            .flatten()
    }

    /// Whether its lines say enough to be worth a span (an END alone does not).
    pub fn is_worth_a_span(&self) -> bool {
        self.start_ms.is_some()
            || self.report.is_some()
            || self.timeout.is_some()
            || self.crash.is_some()
    }

    fn status(&self) -> (StatusCode, String) {
        if let Some(t) = &self.timeout {
            return (StatusCode::Error, t.clone());
        }
        if let Some((m, oom)) = &self.crash {
            let msg = if *oom {
                format!("{m} (out of memory)")
            } else {
                m.clone()
            };
            return (StatusCode::Error, msg);
        }
        if let Some(e) = &self.handler_error {
            return (StatusCode::Error, e.clone());
        }
        if let Some(r) = &self.report {
            match r.status.as_deref() {
                Some("timeout") => return (StatusCode::Error, "timeout".to_owned()),
                Some(s @ ("error" | "failure")) => {
                    let et = r.error_type.as_deref().unwrap_or(s);
                    return (StatusCode::Error, et.to_owned());
                }
                _ => {}
            }
            if r.error_type.as_deref() == Some("Runtime.OutOfMemory") {
                return (StatusCode::Error, "out of memory".to_owned());
            }
        }
        (StatusCode::Unset, String::new())
    }
}

/// The resource attributes of invocation and init spans.
pub fn resource_attributes(group: &str, stream: &str, region: Option<&str>) -> Vec<KeyValue> {
    let mut resource = vec![
        KeyValue::str("cloud.provider", "aws"),
        KeyValue::str("cloud.platform", "aws_lambda"),
        KeyValue::str("faas.name", service_from_log_group(group)),
        KeyValue::str("aws.log.group.names", group),
        KeyValue::str("aws.log.stream.names", stream),
    ];
    if let Some(r) = region {
        resource.push(KeyValue::str("cloud.region", r));
    }
    resource
}

/// Where the invocation's trace came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceSource {
    /// The function's own root spans.
    OwnSpans,
    /// A caller's span that recorded the request id.
    Caller,
    /// `platform.start` tracing (X-Ray header with the parent).
    PlatformTracing,
    /// REPORT's `XRAY TraceId` (no parent).
    Xray,
    /// Nothing: derived from group and request id.
    Derived,
}

/// The invocation (and init) spans of one invocation, and where their trace came from.
#[derive(Debug)]
pub struct Built {
    /// Init span (cold starts) then the invocation span, last.
    pub spans: Vec<Span>,
    /// Where the trace came from.
    pub source: TraceSource,
}

/// Builds the invocation (and init) spans of `inv`, re-parenting the function's root spans of
/// that request (`own`: the spans the function printed for it) under the invocation span.
/// `caller` is a span that recorded this request id (used when the function printed no span of
/// its own). `resource` is the resource of invocation spans (see [`resource_attributes`]).
pub fn build(
    inv: &Invocation,
    own: &mut [Span],
    caller: Option<(TraceId, SpanId)>,
    resource: Arc<Resource>,
) -> Built {
    let group = &*inv.log_group;
    let req = inv.request_id.as_str();
    // An invocation holds a handful of spans: linear scans beat building hash tables.
    let mut ids: Vec<SpanId> = own.iter().map(|s| s.span_id).collect();
    ids.sort_unstable();
    let is_root = |s: &Span| {
        s.parent_span_id
            .is_none_or(|p| ids.binary_search(&p).is_err())
    };
    // The trace the function's roots agree on (the most common one).
    let mut votes: Vec<(TraceId, usize)> = Vec::new();
    for s in own.iter().filter(|s| is_root(s)) {
        match votes.iter_mut().find(|(t, _)| *t == s.trace_id) {
            Some(v) => v.1 += 1,
            None => votes.push((s.trace_id, 1)),
        }
    }
    let root_trace = votes
        .into_iter()
        .max_by_key(|(t, n)| (*n, *t))
        .map(|(t, _)| t);
    let xray = inv
        .tracing
        .clone()
        .or_else(|| inv.report.as_ref().and_then(|r| r.xray.clone()));
    let (trace_id, parent, source) = match (root_trace, caller, &xray) {
        (Some(t), _, _) => {
            let mut parents = own
                .iter()
                .filter(|s| is_root(s) && s.trace_id == t)
                .map(|s| s.parent_span_id);
            let first = parents.next().flatten();
            // Their common parent, when they agree on one.
            let parent = if parents.all(|p| p == first) {
                first
            } else {
                None
            };
            (t, parent, TraceSource::OwnSpans)
        }
        (None, Some((t, p)), _) => (t, Some(p), TraceSource::Caller),
        (None, None, Some(x)) if inv.tracing.is_some() => {
            (x.trace_id, Some(x.span_id), TraceSource::PlatformTracing)
        }
        (None, None, Some(x)) => (x.trace_id, None, TraceSource::Xray),
        (None, None, None) => (derived_trace(group, req), None, TraceSource::Derived),
    };
    let inv_id = span_id("invocation", group, req);
    let own_start = own.iter().map(|s| s.start_unix_nano).min();
    let own_end = own.iter().map(|s| s.end_unix_nano).max();
    let roots: Vec<usize> = (0..own.len()).filter(|&i| is_root(&own[i])).collect();
    for i in roots {
        if own[i].trace_id == trace_id {
            own[i].parent_span_id = Some(inv_id);
        }
    }
    let ms = |m: i64| (m.max(0) as u64).saturating_mul(1_000_000);
    let ns = |m: f64| (m * 1e6) as u64;
    let dur_ns = inv.report.as_ref().map(|r| ns(r.duration_ms));
    let mut start = match (inv.start_ms, dur_ns, inv.last_ms) {
        (Some(s), _, _) => ms(s),
        (None, Some(d), Some(l)) => ms(l).saturating_sub(d),
        (None, _, Some(l)) => ms(l),
        (None, _, None) => own_start.unwrap_or(0),
    };
    if let Some(s) = own_start {
        start = start.min(s);
    }
    let mut end = match (dur_ns, inv.last_ms) {
        (Some(d), _) => start.saturating_add(d),
        (None, Some(l)) => ms(l),
        (None, None) => start,
    };
    if let Some(e) = own_end {
        end = end.max(e);
    }
    let function = service_from_log_group(group);
    let report = inv.report.clone().unwrap_or_default();
    let init_ns = report.init_ms.map(ns).or_else(|| {
        // INIT_START without an Init Duration (the REPORT is missing): init ran until START.
        match (inv.init_start_ms, inv.start_ms) {
            (Some(a), Some(b)) if b >= a => Some(ms(b) - ms(a)),
            _ => None,
        }
    });
    let cold = init_ns.is_some() || inv.init_start_ms.is_some();
    let mut body = Vec::with_capacity(512);
    proto::put_bytes(&mut body, proto::SPAN_NAME, function.as_bytes());
    let attr = |b: &mut Vec<u8>, k: &str, v: Scalar<'_>| {
        proto::key_value(b, proto::SPAN_ATTRIBUTES, k, v);
    };
    attr(&mut body, "faas.invocation_id", Scalar::Str(req));
    attr(&mut body, "faas.coldstart", Scalar::Bool(cold));
    if let Some(v) = &inv.version {
        attr(&mut body, "faas.version", Scalar::Str(v));
    }
    if inv.report.is_some() {
        attr(
            &mut body,
            "aws.lambda.duration_ms",
            Scalar::Float(report.duration_ms),
        );
    }
    if let Some(b) = report.billed_ms {
        attr(&mut body, "aws.lambda.billed_duration_ms", Scalar::Float(b));
    }
    if let Some(m) = report.memory_mb {
        attr(
            &mut body,
            "faas.max_memory",
            Scalar::Int(m.saturating_mul(1024 * 1024)),
        );
    }
    if let Some(m) = report.max_memory_mb {
        attr(&mut body, "aws.lambda.max_memory_used_mb", Scalar::Int(m));
    }
    if let Some(i) = report.init_ms {
        attr(&mut body, "aws.lambda.init_duration_ms", Scalar::Float(i));
    }
    let (status, status_message) = inv.status();
    let mut out = Vec::with_capacity(2);
    let inv_start = start.saturating_sub(init_ns.unwrap_or(0));
    if let Some(init) = init_ns {
        let mut ib = Vec::with_capacity(48);
        proto::put_bytes(&mut ib, proto::SPAN_NAME, b"init");
        proto::key_value(
            &mut ib,
            proto::SPAN_ATTRIBUTES,
            "faas.coldstart",
            Scalar::Bool(true),
        );
        out.push(Span::from_parts(
            trace_id,
            span_id("init", group, req),
            Some(inv_id),
            SpanKind::Internal,
            (StatusCode::Unset, ""),
            (inv_start, inv_start.saturating_add(init)),
            Arc::clone(&resource),
            &ib,
        ));
    }
    out.push(Span::from_parts(
        trace_id,
        inv_id,
        parent,
        SpanKind::Server,
        (status, &status_message),
        (inv_start, end.max(inv_start)),
        resource,
        &body,
    ));
    Built { spans: out, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_resource() -> Arc<Resource> {
        Arc::new(Resource::new(
            "f".into(),
            resource_attributes("/aws/lambda/f", "s", None),
        ))
    }

    #[test]
    fn derived_ids_are_stable_and_documented() {
        // FNV-1a 64 test vector: fnv64("a") = 0xaf63dc4c8601ec8c.
        assert_eq!(fnv64("a"), 0xaf63_dc4c_8601_ec8c);
        let a = span_id("invocation", "/aws/lambda/f", "r");
        assert_eq!(a, span_id("invocation", "/aws/lambda/f", "r"));
        assert_ne!(a, span_id("init", "/aws/lambda/f", "r"));
        assert_eq!(derived_trace("g", "r"), derived_trace("g", "r"));
    }

    #[test]
    fn a_timed_out_invocation_without_spans_is_an_error_span() {
        let inv = Invocation {
            log_group: "/aws/lambda/f".into(),
            request_id: "r".into(),
            start_ms: Some(1000),
            last_ms: Some(4000),
            timeout: Some("Task timed out after 3.00 seconds".into()),
            report: Some(ReportFigures {
                duration_ms: 3000.0,
                status: Some("timeout".into()),
                ..ReportFigures::default()
            }),
            ..Invocation::default()
        };
        let out = build(&inv, &mut [], None, test_resource()).spans;
        assert_eq!(out.len(), 1);
        let s = &out[0].data();
        assert_eq!(
            (s.status, s.status_message.as_str()),
            (StatusCode::Error, "Task timed out after 3.00 seconds")
        );
        assert_eq!(
            (s.start_unix_nano, s.end_unix_nano),
            (1_000_000_000, 4_000_000_000)
        );
        assert_eq!(s.trace_id, derived_trace("/aws/lambda/f", "r"));
    }

    /// Found by the converter fuzz target: a REPORT line claiming an absurd memory size (or init
    /// duration) must saturate, not overflow.
    #[test]
    fn absurd_report_numbers_saturate() {
        let inv = Invocation {
            log_group: "/aws/lambda/f".into(),
            request_id: "r".into(),
            start_ms: Some(i64::MAX / 1_000_000),
            report: Some(ReportFigures {
                duration_ms: 1e300,
                memory_mb: Some(i64::MAX / 3),
                init_ms: Some(1e300),
                ..ReportFigures::default()
            }),
            ..Invocation::default()
        };
        let out: Vec<_> = build(&inv, &mut [], None, test_resource())
            .spans
            .iter()
            .map(Span::data)
            .collect();
        let max = out
            .iter()
            .flat_map(|s| &s.attributes)
            .find(|kv| kv.key == "faas.max_memory")
            .map(|kv| kv.value.clone());
        assert_eq!(max, Some(crate::convert::assemble::AnyValue::Int(i64::MAX)));
        assert!(out.iter().all(|s| s.start_unix_nano <= s.end_unix_nano));
    }
}
