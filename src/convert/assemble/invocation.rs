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

use super::{service_from_log_group, KeyValue, Span};
use crate::convert::platform::Report;
use crate::emit::SpanContext;
use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
use std::collections::{HashMap, HashSet};

/// 64-bit FNV-1a.
pub fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn span_id(kind: &str, group: &str, request_id: &str) -> SpanId {
    let h = fnv64(&format!("spanline/{kind}/{group}/{request_id}"));
    SpanId(if h == 0 { 1 } else { h }.to_be_bytes())
}

fn derived_trace(group: &str, request_id: &str) -> TraceId {
    let a = fnv64(&format!("spanline/trace/a/{group}/{request_id}"));
    let b = fnv64(&format!("spanline/trace/b/{group}/{request_id}"));
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&a.to_be_bytes());
    t[8..].copy_from_slice(&b.to_be_bytes());
    if t == [0; 16] {
        t[15] = 1;
    }
    TraceId(t)
}

/// What the platform lines said about one invocation.
#[derive(Clone, Debug, Default)]
pub struct Invocation {
    /// Log group.
    pub log_group: String,
    /// Log stream.
    pub log_stream: String,
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
    pub report: Option<Report>,
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

/// Builds the invocation (and init) spans of `inv`, re-parenting the function's root spans of
/// that request (`spans[i]` for `i` in `own`) under the invocation span.
pub fn build(
    inv: &Invocation,
    spans: &mut [Span],
    own: &[usize],
    region: Option<&str>,
) -> Vec<Span> {
    let group = inv.log_group.as_str();
    let req = inv.request_id.as_str();
    let ids: HashSet<SpanId> = own.iter().map(|&i| spans[i].span_id).collect();
    let roots: Vec<usize> = own
        .iter()
        .copied()
        .filter(|&i| spans[i].parent_span_id.is_none_or(|p| !ids.contains(&p)))
        .collect();
    // The trace the function's roots agree on (the most common one).
    let mut votes: HashMap<TraceId, usize> = HashMap::new();
    for &i in &roots {
        *votes.entry(spans[i].trace_id).or_default() += 1;
    }
    let root_trace = votes
        .into_iter()
        .max_by_key(|(t, n)| (*n, *t))
        .map(|(t, _)| t);
    let xray = inv
        .tracing
        .clone()
        .or_else(|| inv.report.as_ref().and_then(|r| r.xray.clone()));
    let (trace_id, parent) = match (root_trace, &xray) {
        (Some(t), _) => {
            let parents: HashSet<Option<SpanId>> = roots
                .iter()
                .filter(|&&i| spans[i].trace_id == t)
                .map(|&i| spans[i].parent_span_id)
                .collect();
            let parent = if parents.len() == 1 {
                parents.into_iter().next().flatten()
            } else {
                None
            };
            (t, parent)
        }
        (None, Some(x)) if inv.tracing.is_some() => (x.trace_id, Some(x.span_id)),
        (None, Some(x)) => (x.trace_id, None),
        (None, None) => (derived_trace(group, req), None),
    };
    let inv_id = span_id("invocation", group, req);
    let own_start = own.iter().map(|&i| spans[i].start_unix_nano).min();
    let own_end = own.iter().map(|&i| spans[i].end_unix_nano).max();
    for &i in &roots {
        if spans[i].trace_id == trace_id {
            spans[i].parent_span_id = Some(inv_id);
        }
    }
    let ms = |m: i64| (m.max(0) as u64).saturating_mul(1_000_000);
    let dur_ns = inv.report.as_ref().map(|r| (r.duration_ms * 1e6) as u64);
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
    let mut resource = vec![
        KeyValue::str("cloud.provider", "aws"),
        KeyValue::str("cloud.platform", "aws_lambda"),
        KeyValue::str("faas.name", function.clone()),
        KeyValue::str("aws.log.group.names", group),
        KeyValue::str("aws.log.stream.names", inv.log_stream.clone()),
    ];
    if let Some(r) = region {
        resource.push(KeyValue::str("cloud.region", r));
    }
    let report = inv.report.clone().unwrap_or_default();
    let init_ns = report.init_ms.map(|m| (m * 1e6) as u64).or_else(|| {
        // INIT_START without an Init Duration (the REPORT is missing): init ran until START.
        match (inv.init_start_ms, inv.start_ms) {
            (Some(a), Some(b)) if b >= a => Some(ms(b) - ms(a)),
            _ => None,
        }
    });
    let cold = init_ns.is_some() || inv.init_start_ms.is_some();
    let mut attributes = vec![
        KeyValue::str("faas.invocation_id", req),
        KeyValue {
            key: "faas.coldstart".into(),
            value: super::AnyValue::Bool(cold),
        },
    ];
    if let Some(v) = &inv.version {
        attributes.push(KeyValue::str("faas.version", v.clone()));
    }
    let int = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: super::AnyValue::Int(v),
    };
    let float = |k: &str, v: f64| KeyValue {
        key: k.into(),
        value: super::AnyValue::Float(v),
    };
    if inv.report.is_some() {
        attributes.push(float("aws.lambda.duration_ms", report.duration_ms));
    }
    if let Some(b) = report.billed_ms {
        attributes.push(float("aws.lambda.billed_duration_ms", b));
    }
    if let Some(m) = report.memory_mb {
        attributes.push(int("faas.max_memory", m.saturating_mul(1024 * 1024)));
    }
    if let Some(m) = report.max_memory_mb {
        attributes.push(int("aws.lambda.max_memory_used_mb", m));
    }
    if let Some(i) = report.init_ms {
        attributes.push(float("aws.lambda.init_duration_ms", i));
    }
    let (status, status_message) = inv.status();
    let mut out = Vec::new();
    let inv_start = start.saturating_sub(init_ns.unwrap_or(0));
    if let Some(init) = init_ns {
        out.push(Span {
            trace_id,
            span_id: span_id("init", group, req),
            parent_span_id: Some(inv_id),
            name: "init".to_owned(),
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: inv_start,
            end_unix_nano: inv_start.saturating_add(init),
            attributes: vec![KeyValue {
                key: "faas.coldstart".into(),
                value: super::AnyValue::Bool(true),
            }],
            events: vec![],
            links: vec![],
            service: function.clone(),
            resource: resource.clone(),
            dropped: (0, 0, 0),
        });
    }
    out.push(Span {
        trace_id,
        span_id: inv_id,
        parent_span_id: parent,
        name: function.clone(),
        kind: SpanKind::Server,
        status,
        status_message,
        start_unix_nano: inv_start,
        end_unix_nano: end.max(inv_start),
        attributes,
        events: vec![],
        links: vec![],
        service: function,
        resource,
        dropped: (0, 0, 0),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            report: Some(Report {
                request_id: "r".into(),
                duration_ms: 3000.0,
                status: Some("timeout".into()),
                ..Report::default()
            }),
            ..Invocation::default()
        };
        let out = build(&inv, &mut [], &[], None);
        assert_eq!(out.len(), 1);
        let s = &out[0];
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
            report: Some(Report {
                request_id: "r".into(),
                duration_ms: 1e300,
                memory_mb: Some(i64::MAX / 3),
                init_ms: Some(1e300),
                ..Report::default()
            }),
            ..Invocation::default()
        };
        let out = build(&inv, &mut [], &[], None);
        let max = out
            .iter()
            .flat_map(|s| &s.attributes)
            .find(|kv| kv.key == "faas.max_memory")
            .map(|kv| kv.value.clone());
        assert_eq!(max, Some(crate::convert::assemble::AnyValue::Int(i64::MAX)));
        assert!(out.iter().all(|s| s.start_unix_nano <= s.end_unix_nano));
    }
}
