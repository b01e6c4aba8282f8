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
    let mut span = Span {
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
    };
    opentracing_to_otel(&mut span);
    span
}

/// Maps OpenTracing conventions that emitters in other languages may pass through as plain
/// tags and logs onto their OpenTelemetry equivalents (OpenTelemetry's "OpenTracing
/// Compatibility" specification):
/// * tag `error=true` → status error (the tag is dropped; `error=false` is dropped too);
/// * tag `span.kind` → the span kind, when the line did not set one;
/// * a log with `event=error` (or named `error`) → an `exception` event, with `error.kind` /
///   `error.object` → `exception.type`, `message` → `exception.message`, `stack` →
///   `exception.stacktrace`.
pub fn opentracing_to_otel(span: &mut Span) {
    let mut kind = None;
    let mut error = false;
    span.attributes
        .retain(|kv| match (kv.key.as_str(), &kv.value) {
            ("error", AnyValue::Bool(b)) => {
                error |= *b;
                false
            }
            ("span.kind", AnyValue::Str(k)) => {
                kind = SpanKind::from_name(k);
                kind.is_none()
            }
            _ => true,
        });
    if error && span.status == StatusCode::Unset {
        span.status = StatusCode::Error;
    }
    if let (Some(k), SpanKind::Internal) = (kind, span.kind) {
        span.kind = k;
    }
    for e in &mut span.events {
        let is_error_log = e.name == "error"
            || e.attributes
                .iter()
                .any(|kv| kv.key == "event" && kv.value == AnyValue::Str("error".into()));
        if !is_error_log {
            continue;
        }
        e.name = "exception".to_owned();
        e.attributes.retain(|kv| kv.key != "event");
        for kv in &mut e.attributes {
            let renamed = match kv.key.as_str() {
                "error.kind" | "error.object" => "exception.type",
                "message" => "exception.message",
                "stack" => "exception.stacktrace",
                _ => continue,
            };
            kv.key = renamed.to_owned();
        }
    }
}

/// Service names by log group, for groups whose spans do not name their service (`*s=`):
/// `GROUP=NAME` for one group, `PREFIX*=NAME` for every group starting with `PREFIX`.
#[derive(Clone, Debug, Default)]
pub struct ServiceMap {
    rules: Vec<(String, bool, String)>,
}

impl ServiceMap {
    /// Parses rules (`GROUP=NAME` or `PREFIX*=NAME`).
    pub fn parse<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<ServiceMap, String> {
        let mut out = ServiceMap::default();
        for r in rules {
            let (pat, name) = r
                .split_once('=')
                .filter(|(p, n)| !p.is_empty() && !n.is_empty())
                .ok_or_else(|| format!("{r:?}: expected LOG_GROUP=SERVICE or PREFIX*=SERVICE"))?;
            let (pat, prefix) = match pat.strip_suffix('*') {
                Some(p) => (p, true),
                None => (pat, false),
            };
            out.rules.push((pat.to_owned(), prefix, name.to_owned()));
        }
        Ok(out)
    }

    /// The service for `group` by the first matching rule, else the built-in rule
    /// ([`service_from_log_group`]).
    pub fn service(&self, group: &str) -> String {
        self.rules
            .iter()
            .find(|(p, prefix, _)| {
                if *prefix {
                    group.starts_with(p.as_str())
                } else {
                    group == p
                }
            })
            .map_or_else(|| service_from_log_group(group), |(_, _, n)| n.clone())
    }

    /// Renames a span whose service was derived from its log group.
    pub fn apply(&self, span: &mut Span) {
        if self.rules.is_empty() {
            return;
        }
        let group = span
            .resource
            .iter()
            .find_map(|kv| match (&kv.key[..], &kv.value) {
                ("aws.log.group.names", AnyValue::Str(g)) => Some(g.clone()),
                _ => None,
            });
        if let Some(g) = group {
            if span.service == service_from_log_group(&g) {
                span.service = self.service(&g);
            }
        }
    }
}

/// (log group, request id): one Lambda invocation.
pub type RequestKey = (String, String);

/// How many span ids the de-duplication remembers. Duplicates come from overlapping reads of
/// the same window, which are close together; a bound keeps memory flat on any input size.
pub const DEDUP_CAPACITY: usize = 1 << 20;

/// A set of recently seen ids that forgets the oldest beyond its capacity.
#[derive(Debug, Default)]
struct RecentIds {
    set: HashSet<(TraceId, SpanId)>,
    order: std::collections::VecDeque<(TraceId, SpanId)>,
}

impl RecentIds {
    fn insert(&mut self, id: (TraceId, SpanId)) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, id: &(TraceId, SpanId)) -> bool {
        self.set.contains(id)
    }
}

/// Collects spans as they are parsed and releases them as soon as they are complete, so memory
/// stays bounded however long the input is:
/// * spans that belong to no Lambda invocation are ready at once;
/// * spans of an invocation are held until its REPORT line (the last line Lambda writes for it),
///   then released together with the invocation and init spans built from the platform lines;
/// * spans announced by an open record wait for their finished record, or for their invocation
///   to end (then they become error spans).
///
/// Duplicates (the same line read twice, e.g. from overlapping reads) are dropped by
/// (trace id, span id) among the last [`DEDUP_CAPACITY`] spans.
#[derive(Debug, Default)]
pub struct Assembler {
    seen: RecentIds,
    ready: Vec<Span>,
    held: HashMap<RequestKey, Vec<Span>>,
    open: HashMap<(TraceId, SpanId), (Span, Option<RequestKey>)>,
    /// Spans dropped as duplicates.
    pub duplicates: u64,
}

impl Assembler {
    /// Adds a span that belongs to no known invocation.
    pub fn push(&mut self, span: Span) {
        self.push_from(span, None);
    }

    /// Adds a span that belongs to the invocation `request`, if any.
    pub fn push_from(&mut self, span: Span, request: Option<RequestKey>) {
        let id = (span.trace_id, span.span_id);
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return;
        }
        self.open.remove(&id);
        match request {
            Some(r) => self.held.entry(r).or_default().push(span),
            None => self.ready.push(span),
        }
    }

    /// Remembers a span announced by an open record (FORMAT.md, "Open records"); its finished
    /// record, if it comes, replaces it.
    pub fn push_open(&mut self, span: Span, request: Option<RequestKey>) {
        let key = (span.trace_id, span.span_id);
        if !self.seen.contains(&key) {
            self.open.entry(key).or_insert((span, request));
        }
    }

    fn unfinished(mut span: Span) -> Span {
        span.status = StatusCode::Error;
        span.status_message = "did not finish".to_owned();
        span
    }

    /// Ends invocation `inv`: builds its invocation and init spans, nests the function's root
    /// spans under them, closes its unfinished open spans, and releases everything.
    pub fn finish_invocation(&mut self, inv: &Invocation, region: Option<&str>) {
        let key = (inv.log_group.clone(), inv.request_id.clone());
        let mut own = self.held.remove(&key).unwrap_or_default();
        let open_ids: Vec<(TraceId, SpanId)> = self
            .open
            .iter()
            .filter(|(_, (_, r))| r.as_ref() == Some(&key))
            .map(|(id, _)| *id)
            .collect();
        let first_unfinished = own.len();
        for id in open_ids {
            if let Some((span, _)) = self.open.remove(&id) {
                if self.seen.insert(id) {
                    own.push(Self::unfinished(span));
                }
            }
        }
        let idx: Vec<usize> = (0..own.len()).collect();
        let built = invocation::build(inv, &mut own, &idx, region);
        if let Some(inv_span) = built.last() {
            for s in &mut own[first_unfinished..] {
                s.end_unix_nano = inv_span.end_unix_nano.max(s.start_unix_nano);
                if !inv_span.status_message.is_empty() {
                    s.status_message = format!("did not finish: {}", inv_span.status_message);
                }
            }
        }
        self.ready.extend(own);
        for s in built {
            if self.seen.insert((s.trace_id, s.span_id)) {
                self.ready.push(s);
            } else {
                self.duplicates += 1;
            }
        }
    }

    /// Releases everything still held: spans of invocations whose REPORT never came (they were
    /// already finished by the caller with what is known), unfinished open spans as errors.
    pub fn flush(&mut self) {
        for (_, spans) in self.held.drain() {
            self.ready.extend(spans);
        }
        let mut open: Vec<_> = self.open.drain().map(|(_, v)| v.0).collect();
        open.sort_by_key(|s| (s.start_unix_nano, s.span_id));
        for s in open {
            if self.seen.insert((s.trace_id, s.span_id)) {
                self.ready.push(Self::unfinished(s));
            }
        }
    }

    /// The earliest start (ms) of the spans held for invocations of `log_group`, open ones
    /// included.
    pub fn oldest_held_ms(&self, log_group: &str) -> Option<i64> {
        let held = self
            .held
            .iter()
            .filter(|(k, _)| k.0 == log_group)
            .flat_map(|(_, v)| v.iter());
        let open = self
            .open
            .values()
            .filter(|(_, k)| k.as_ref().is_none_or(|k| k.0 == log_group))
            .map(|(s, _)| s);
        held.chain(open)
            .map(|s| i64::try_from(s.start_unix_nano / 1_000_000).unwrap_or(i64::MAX))
            .min()
    }

    /// Releases the spans held for an invocation that is not `live` and that all started
    /// before `before_ms`, and open spans (as unfinished) that started before it.
    pub fn flush_stale(&mut self, before_ms: i64, live: impl Fn(&RequestKey) -> bool) {
        let before_ns = u64::try_from(before_ms.max(0))
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        let stale: Vec<RequestKey> = self
            .held
            .iter()
            .filter(|(k, v)| !live(k) && v.iter().all(|s| s.start_unix_nano < before_ns))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(spans) = self.held.remove(&k) {
                self.ready.extend(spans);
            }
        }
        let open: Vec<(TraceId, SpanId)> = self
            .open
            .iter()
            .filter(|(_, (s, k))| {
                s.start_unix_nano < before_ns && k.as_ref().is_none_or(|k| !live(k))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            if let Some((s, _)) = self.open.remove(&id) {
                if self.seen.insert(id) {
                    self.ready.push(Self::unfinished(s));
                }
            }
        }
    }

    /// Takes the spans that are complete.
    pub fn take_ready(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.ready)
    }

    /// Number of spans held back, waiting for their invocation to end.
    pub fn held(&self) -> usize {
        self.held.values().map(Vec::len).sum::<usize>() + self.open.len()
    }
}

/// Groups spans by trace, in first-seen order.
pub fn group_by_trace(spans: Vec<Span>) -> Vec<Vec<Span>> {
    let mut order: Vec<TraceId> = Vec::new();
    let mut by: HashMap<TraceId, Vec<Span>> = HashMap::new();
    for s in spans {
        by.entry(s.trace_id)
            .or_insert_with(|| {
                order.push(s.trace_id);
                Vec::new()
            })
            .push(s);
    }
    order.into_iter().filter_map(|t| by.remove(&t)).collect()
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
    fn opentracing_tags_and_logs_map_to_otel() {
        let rec = decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n error!t span.kind=client @2=log event=error error.kind=TypeError message=boom stack=x;").unwrap();
        let s = to_span(&rec.spans().next().unwrap(), &Origin::default());
        assert_eq!((s.status, s.kind), (StatusCode::Error, SpanKind::Client));
        assert!(s.attributes.is_empty());
        assert_eq!(s.events[0].name, "exception");
        let keys: Vec<&str> = s.events[0]
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "exception.type",
                "exception.message",
                "exception.stacktrace"
            ]
        );
    }

    #[test]
    fn service_map_rules() {
        let m = ServiceMap::parse(["/ecs/express-app=web", "/aws/lambda/orders-*=orders"]).unwrap();
        assert_eq!(m.service("/ecs/express-app"), "web");
        assert_eq!(m.service("/aws/lambda/orders-prod"), "orders");
        assert_eq!(m.service("/aws/lambda/other"), "other");
        assert!(ServiceMap::parse(["nope"]).is_err());
    }

    #[test]
    fn duplicates_are_dropped() {
        let rec = decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;").unwrap();
        let line = rec.spans().next().unwrap();
        let mut a = Assembler::default();
        a.push(to_span(&line, &Origin::default()));
        a.push(to_span(&line, &Origin::default()));
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.take_ready().len(), 1);
    }
}
