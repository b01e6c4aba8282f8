//! Assembly: decoded span lines → owned, backend-neutral [`Span`]s, de-duplicated by
//! (trace id, span id), with the service taken from the line or derived from the log group.
//! Knows nothing of AWS APIs; sinks consume its output.

use crate::span_line::decode::{Attr as LineAttr, AttrValue};
use crate::span_line::{EscStr, SpanId, SpanKind, SpanLine, StatusCode, TraceId};
use std::collections::{HashMap, HashSet};

pub mod invocation;

pub use invocation::Invocation;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyValue {
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

/// A key/value attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: AnyValue,
}

impl KeyValue {
    /// A string attribute.
    pub fn str(key: &str, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.to_owned(),
            value: AnyValue::Str(value.into()),
        }
    }

    fn from_line(a: &LineAttr<'_>) -> Self {
        let value = match a.value {
            AttrValue::Str(s) => AnyValue::Str(text(s)),
            AttrValue::Int(i) => AnyValue::Int(i),
            AttrValue::Float(f) => AnyValue::Float(f),
            AttrValue::Bool(b) => AnyValue::Bool(b),
        };
        KeyValue {
            key: text(a.key),
            value,
        }
    }
}

/// Unescaped text; a truncated string keeps a visible `…` at the end.
fn text(s: EscStr<'_>) -> String {
    let mut t = s.text().into_owned();
    if s.is_truncated() {
        t.push('…');
    }
    t
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Time, nanoseconds since the epoch.
    pub time_unix_nano: u64,
    /// Name.
    pub name: String,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
}

/// A link to another span.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// Trace.
    pub trace_id: TraceId,
    /// Span.
    pub span_id: SpanId,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
}

/// A finished span, ready for any sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent, `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Status code.
    pub status: StatusCode,
    /// Status message.
    pub status_message: String,
    /// Start, ns since the epoch.
    pub start_unix_nano: u64,
    /// End, ns since the epoch.
    pub end_unix_nano: u64,
    /// Attributes.
    pub attributes: Vec<KeyValue>,
    /// Events.
    pub events: Vec<Event>,
    /// Links.
    pub links: Vec<Link>,
    /// `service.name`.
    pub service: String,
    /// Other resource attributes (`cloud.*`, `faas.*`, `aws.log.*`, the line's `+` fields).
    pub resource: Vec<KeyValue>,
    /// Attributes, events and links the emitter dropped.
    pub dropped: (u32, u32, u32),
}

/// The service name for spans that do not name one: `/aws/lambda/<fn>` → `<fn>`, any other
/// group → its last path segment, no group → `unknown_service`.
pub fn service_from_log_group(group: &str) -> String {
    if let Some(f) = group.strip_prefix("/aws/lambda/") {
        return f.to_owned();
    }
    match group.trim_end_matches('/').rsplit('/').next() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "unknown_service".to_owned(),
    }
}

/// Context a record adds to the spans it carries.
#[derive(Clone, Debug, Default)]
pub struct Origin<'a> {
    /// Log group.
    pub log_group: &'a str,
    /// Log stream.
    pub log_stream: &'a str,
    /// Request id from the log prefix.
    pub request_id: Option<&'a str>,
}

/// Converts one decoded span line into a [`Span`].
pub fn to_span(line: &SpanLine<'_>, origin: &Origin<'_>) -> Span {
    let start = line.start_us.saturating_mul(1000);
    let service = line
        .service
        .map(text)
        .unwrap_or_else(|| service_from_log_group(origin.log_group));
    let mut resource: Vec<KeyValue> = line.resource().map(|a| KeyValue::from_line(&a)).collect();
    if !origin.log_group.is_empty() {
        resource.push(KeyValue::str("aws.log.group.names", origin.log_group));
    }
    if !origin.log_stream.is_empty() {
        resource.push(KeyValue::str("aws.log.stream.names", origin.log_stream));
    }
    if origin.log_group.starts_with("/aws/lambda/") {
        resource.push(KeyValue::str("cloud.provider", "aws"));
        resource.push(KeyValue::str(
            "faas.name",
            service_from_log_group(origin.log_group),
        ));
    }
    let attributes: Vec<KeyValue> = line.attributes().map(|a| KeyValue::from_line(&a)).collect();
    Span {
        trace_id: line.trace_id,
        span_id: line.span_id,
        parent_span_id: line.parent_span_id,
        name: text(line.name),
        kind: line.kind,
        status: line.status,
        status_message: line.status_message.map(text).unwrap_or_default(),
        start_unix_nano: start,
        end_unix_nano: start.saturating_add(line.duration_us.saturating_mul(1000)),
        attributes,
        events: line
            .events()
            .map(|e| Event {
                time_unix_nano: (line.start_us as i64).saturating_add(e.offset_us).max(0) as u64
                    * 1000,
                name: text(e.name),
                attributes: e.attributes().map(|a| KeyValue::from_line(&a)).collect(),
            })
            .collect(),
        links: line
            .links()
            .map(|l| Link {
                trace_id: l.trace_id,
                span_id: l.span_id,
                attributes: l.attributes().map(|a| KeyValue::from_line(&a)).collect(),
            })
            .collect(),
        service,
        resource,
        dropped: (
            line.dropped.attributes,
            line.dropped.events,
            line.dropped.links,
        ),
    }
}

/// (log group, request id): one Lambda invocation.
pub type RequestKey = (String, String);

/// Collects spans, dropping duplicates (the same line read twice, e.g. from overlapping reads),
/// and remembers which Lambda invocation each span came from.
#[derive(Debug, Default)]
pub struct Assembler {
    seen: HashSet<(TraceId, SpanId)>,
    spans: Vec<Span>,
    /// (log group, request id) of each span, by index into `spans`.
    requests: HashMap<usize, RequestKey>,
    /// Spans announced by an open record and not (yet) finished.
    open: HashMap<(TraceId, SpanId), (Span, Option<RequestKey>)>,
    /// Spans dropped as duplicates.
    pub duplicates: u64,
}

impl Assembler {
    /// Adds a span unless its (trace, span) pair was seen.
    pub fn push(&mut self, span: Span) {
        self.push_from(span, None);
    }

    /// Adds a span that belongs to the invocation `(log group, request id)`.
    pub fn push_from(&mut self, span: Span, request: Option<(String, String)>) {
        if self.seen.insert((span.trace_id, span.span_id)) {
            self.open.remove(&(span.trace_id, span.span_id));
            if let Some(r) = request {
                self.requests.insert(self.spans.len(), r);
            }
            self.spans.push(span);
        } else {
            self.duplicates += 1;
        }
    }

    /// Remembers a span announced by an open record (FORMAT.md, "Open records"); its finished
    /// record, if it comes, replaces it.
    pub fn push_open(&mut self, span: Span, request: Option<(String, String)>) {
        let key = (span.trace_id, span.span_id);
        if !self.seen.contains(&key) {
            self.open.entry(key).or_insert((span, request));
        }
    }

    /// Turns the open spans that never finished into error spans; returns their indices.
    fn close_unfinished(&mut self) -> HashSet<usize> {
        let mut open: Vec<_> = self.open.drain().map(|(_, v)| v).collect();
        open.sort_by_key(|(s, _)| (s.start_unix_nano, s.span_id));
        let mut idx = HashSet::new();
        for (mut span, req) in open {
            span.status = StatusCode::Error;
            span.status_message = "did not finish".to_owned();
            idx.insert(self.spans.len());
            self.push_from(span, req);
        }
        idx
    }

    /// Adds the invocation and init spans of `invocations`, re-parenting the functions' root
    /// spans under them (see [`invocation`]). Spans that were announced and never finished end
    /// with their invocation, as errors that carry its reason.
    pub fn add_invocations<'a>(
        &mut self,
        invocations: impl IntoIterator<Item = &'a Invocation>,
        region: Option<&str>,
    ) {
        let unfinished = self.close_unfinished();
        let mut by_request: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, key) in &self.requests {
            by_request.entry(key.clone()).or_default().push(*i);
        }
        let mut built = Vec::new();
        for inv in invocations {
            let key = (inv.log_group.clone(), inv.request_id.clone());
            let mut own = by_request.get(&key).cloned().unwrap_or_default();
            own.sort_unstable();
            let spans = invocation::build(inv, &mut self.spans, &own, region);
            if let Some(inv_span) = spans.last() {
                for &i in own.iter().filter(|i| unfinished.contains(i)) {
                    let s = &mut self.spans[i];
                    s.end_unix_nano = inv_span.end_unix_nano.max(s.start_unix_nano);
                    if !inv_span.status_message.is_empty() {
                        s.status_message = format!("did not finish: {}", inv_span.status_message);
                    }
                }
            }
            built.extend(spans);
        }
        self.requests.clear();
        for s in built {
            self.push(s);
        }
    }

    /// Takes the spans collected so far, grouped by trace in first-seen order.
    pub fn take_traces(&mut self) -> Vec<Vec<Span>> {
        self.close_unfinished();
        self.requests.clear();
        let mut order: Vec<TraceId> = Vec::new();
        let mut by: HashMap<TraceId, Vec<Span>> = HashMap::new();
        for s in self.spans.drain(..) {
            by.entry(s.trace_id)
                .or_insert_with(|| {
                    order.push(s.trace_id);
                    Vec::new()
                })
                .push(s);
        }
        order.into_iter().filter_map(|t| by.remove(&t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_line::decode;

    #[test]
    fn service_comes_from_line_or_log_group() {
        assert_eq!(service_from_log_group("/aws/lambda/checkout"), "checkout");
        assert_eq!(service_from_log_group("/ecs/express-app"), "express-app");
        assert_eq!(service_from_log_group(""), "unknown_service");
        let rec =
            decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n @2=e k#1 *s=api;").unwrap();
        let line = rec.spans().next().unwrap();
        let origin = Origin {
            log_group: "/aws/lambda/fn",
            ..Origin::default()
        };
        let s = to_span(&line, &origin);
        assert_eq!(s.service, "api");
        assert_eq!((s.start_unix_nano, s.end_unix_nano), (1_000_000, 1_005_000));
        assert_eq!(s.events[0].time_unix_nano, 1_002_000);
    }

    #[test]
    fn duplicates_are_dropped() {
        let rec = decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;").unwrap();
        let line = rec.spans().next().unwrap();
        let mut a = Assembler::default();
        a.push(to_span(&line, &Origin::default()));
        a.push(to_span(&line, &Origin::default()));
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.take_traces().len(), 1);
    }
}
