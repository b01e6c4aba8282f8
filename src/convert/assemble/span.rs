//! The span model.
//!
//! * [`Span`]: what flows from the converter to the sinks. Compact: the head (ids, times, kind,
//!   status) as plain fields, the resource shared ([`Resource`], interned per log stream and
//!   emitter configuration), and everything else — name, attributes, events, links, drop counts
//!   — **pre-encoded as OTLP protobuf fields** in one allocation. A span line costs one
//!   allocation on its way to the wire; the OTLP sink copies the bytes into its request.
//! * [`SpanData`]: the same span with every field spelled out and owned, for the sinks that need
//!   fields one by one (Zipkin, the terminal), for tests and golden files. [`Span::data`] and
//!   [`Span::from_data`] convert.
//!
//! OpenTracing conventions that emitters in other languages pass through as plain tags and logs
//! are mapped onto OpenTelemetry while the body is written (OpenTelemetry's "OpenTracing
//! Compatibility" specification): tag `error=true` → status error (the tag is dropped, and so
//! is `error=false`); tag `span.kind` → the kind, when the line set none; a log with
//! `event=error` (or named `error`) → an `exception` event, with `error.kind` / `error.object`
//! → `exception.type`, `message` → `exception.message`, `stack` → `exception.stacktrace`.

use crate::convert::proto::{self, Scalar};
use crate::span_line::decode::{Attr as LineAttr, AttrValue, FieldRef};
use crate::span_line::{EscStr, SpanId, SpanKind, SpanLine, StatusCode, TraceId};
use prost::Message as _;
use std::sync::Arc;

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

impl AnyValue {
    fn scalar(&self) -> Scalar<'_> {
        match self {
            AnyValue::Str(s) => Scalar::Str(s),
            AnyValue::Int(i) => Scalar::Int(*i),
            AnyValue::Float(f) => Scalar::Float(*f),
            AnyValue::Bool(b) => Scalar::Bool(*b),
        }
    }
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

    /// An integer attribute.
    pub fn int(key: &str, value: i64) -> Self {
        KeyValue {
            key: key.to_owned(),
            value: AnyValue::Int(value),
        }
    }

    /// A float attribute.
    pub fn float(key: &str, value: f64) -> Self {
        KeyValue {
            key: key.to_owned(),
            value: AnyValue::Float(value),
        }
    }

    /// A boolean attribute.
    pub fn bool(key: &str, value: bool) -> Self {
        KeyValue {
            key: key.to_owned(),
            value: AnyValue::Bool(value),
        }
    }

    /// An attribute of a span line.
    pub fn from_line(a: &LineAttr<'_>) -> Self {
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
pub(crate) fn text(s: EscStr<'_>) -> String {
    let mut t = Vec::with_capacity(s.text_len());
    s.write_text(&mut t);
    String::from_utf8(t).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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

/// A span with every field owned and spelled out (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanData {
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

/// The resource of a span: `service.name` and the other resource attributes, with the OTLP
/// `Resource` message encoded once. Shared by every span of one log stream and emitter
/// configuration.
#[derive(Debug, PartialEq)]
pub struct Resource {
    /// `service.name`.
    pub service: String,
    /// The other attributes, in order.
    pub attributes: Vec<KeyValue>,
    /// The content of the OTLP `Resource` message (`service.name` first).
    encoded: Box<[u8]>,
}

impl Resource {
    /// A resource; a `service.name` among `attributes` is dropped (the service wins: OTLP
    /// forbids duplicate keys).
    pub fn new(service: String, mut attributes: Vec<KeyValue>) -> Resource {
        attributes.retain(|kv| kv.key != "service.name");
        let mut buf = Vec::with_capacity(64 + 32 * attributes.len());
        proto::key_value(
            &mut buf,
            proto::RESOURCE_ATTRIBUTES,
            "service.name",
            Scalar::Str(&service),
        );
        for kv in &attributes {
            proto::key_value(
                &mut buf,
                proto::RESOURCE_ATTRIBUTES,
                &kv.key,
                kv.value.scalar(),
            );
        }
        Resource {
            service,
            attributes,
            encoded: buf.into_boxed_slice(),
        }
    }

    /// The content of the OTLP `Resource` message.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// The tag byte of `Span.name` (field 5, length-delimited): the body always starts with it.
const NAME_TAG: u8 = (proto::SPAN_NAME as u8) << 3 | 2;

/// A span on its way to the sinks (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent, `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// Kind.
    pub kind: SpanKind,
    /// Status code.
    pub status: StatusCode,
    /// Start, ns since the epoch.
    pub start_unix_nano: u64,
    /// End, ns since the epoch.
    pub end_unix_nano: u64,
    /// The resource, shared.
    pub resource: Arc<Resource>,
    /// The input of the run the span came from (a file, an object, a Kinesis record; see
    /// [`crate::convert::record::RecordBatch::input`]); for spans built from several, the
    /// earliest. A failed delivery is traced back to its inputs through it.
    pub input: u32,
    /// The OTLP `Span` fields name (first), attributes, events, links and drop counts, then the
    /// status message's bytes.
    body: Box<[u8]>,
    /// Where the status message starts in `body`.
    proto_len: u32,
    /// The function's log lines written under this span, kept for an OTLP logs sink
    /// (`--logs otlp`); empty otherwise (no allocation).
    logs: Box<[SpanLog]>,
}

/// One of the function's log lines, kept beside the span it was written under for an OTLP logs
/// sink (`--logs otlp`): the sink sends it as a `LogRecord` with the span's trace and span id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanLog {
    /// When it was written, ns since the epoch.
    pub time_unix_nano: u64,
    /// Its level as the runtime or the JSON log format wrote it (`ERROR`, `WARN`, …); empty
    /// when it named none.
    pub level: Box<str>,
    /// The message.
    pub message: Box<str>,
}

/// What writing a span line's body found out besides the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineFacts<'a> {
    /// The kind after the OpenTracing `span.kind` tag.
    pub kind: SpanKind,
    /// The status after the OpenTracing `error` tag.
    pub status: StatusCode,
    /// The value of an attribute naming another Lambda invocation's request id
    /// (`aws.request_id` and its variants, see [`CALLER_REQUEST_KEYS`]): this span called it.
    pub called_request: Option<EscStr<'a>>,
}

/// Attribute keys under which a span records the request id of an invocation it made: the
/// `x-amzn-RequestId` of a Lambda Invoke response, as AWS SDK instrumentation records it
/// (`aws.request_id`, OpenTelemetry semantic conventions for AWS SDK calls; `aws.requestId`, the
/// older JavaScript instrumentation), the response header in the HTTP and RPC conventions'
/// header attributes, and `faas.invocation_id`.
pub const CALLER_REQUEST_KEYS: [&str; 6] = [
    "aws.request_id",
    "aws.requestId",
    "faas.invocation_id",
    "http.response.header.x-amzn-requestid",
    "rpc.response.metadata.x-amzn-requestid",
    "rpc.grpc.response.metadata.x-amzn-requestid",
];

fn esc_eq(e: EscStr<'_>, s: &str) -> bool {
    // Keys are compared as written: a key with escapes is not one of ours.
    e.raw() == s
}

fn put_esc(buf: &mut Vec<u8>, field: u32, e: EscStr<'_>) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(e.text_len() as u64, buf);
    e.write_text(buf);
}

fn put_line_value(buf: &mut Vec<u8>, v: AttrValue<'_>) {
    match v {
        AttrValue::Str(s) => put_esc(buf, proto::ANY_STRING, s),
        AttrValue::Int(i) => proto::any_value(buf, Scalar::Int(i)),
        AttrValue::Float(f) => proto::any_value(buf, Scalar::Float(f)),
        AttrValue::Bool(b) => proto::any_value(buf, Scalar::Bool(b)),
    }
}

fn put_line_attr(buf: &mut Vec<u8>, field: u32, key: EscStr<'_>, v: AttrValue<'_>) {
    proto::nested(buf, field, |b| {
        put_esc(b, proto::KV_KEY, key);
        proto::nested(b, proto::KV_VALUE, |b| put_line_value(b, v));
    });
}

/// The OpenTracing → OpenTelemetry key of an attribute of an error log.
fn exception_key(key: &str) -> Option<&'static str> {
    Some(match key {
        "error.kind" | "error.object" => "exception.type",
        "message" => "exception.message",
        "stack" => "exception.stacktrace",
        _ => return None,
    })
}

/// What the attributes being written belong to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Span,
    /// An event; `true` when it is an OpenTracing error log.
    Event(bool),
    Link,
}

/// Writes the body of `line` (see [`Span`]) into `buf` (cleared first) and returns what it
/// found, in one pass over the line's fields; `resource` sees each resource (`+`) field.
pub fn write_line_body<'a>(
    line: &SpanLine<'a>,
    buf: &mut Vec<u8>,
    mut resource: impl FnMut(LineAttr<'a>),
) -> LineFacts<'a> {
    buf.clear();
    put_esc(buf, proto::SPAN_NAME, line.name);
    let mut facts = LineFacts {
        kind: line.kind,
        status: line.status,
        called_request: None,
    };
    let mut error_tag = false;
    let mut ot_kind = None;
    let mut owner = Owner::Span;
    // Where the open event or link message started.
    let mut open: Option<usize> = None;
    let mut fields = line.field_refs();
    while let Some(f) = fields.next() {
        match f {
            FieldRef::Resource(a) => resource(a),
            FieldRef::Attr(a) => match owner {
                Owner::Span => {
                    if esc_eq(a.key, "error") {
                        if let AttrValue::Bool(b) = a.value {
                            error_tag |= b;
                            continue;
                        }
                    }
                    if esc_eq(a.key, "span.kind") {
                        if let AttrValue::Str(s) = a.value {
                            if let Some(k) = SpanKind::from_name(s.raw()) {
                                ot_kind = Some(k);
                                continue;
                            }
                        }
                    }
                    if let AttrValue::Str(v) = a.value {
                        if facts.called_request.is_none()
                            && CALLER_REQUEST_KEYS.iter().any(|k| esc_eq(a.key, k))
                        {
                            facts.called_request = Some(v);
                        }
                    }
                    put_line_attr(buf, proto::SPAN_ATTRIBUTES, a.key, a.value);
                }
                Owner::Event(true) => {
                    if esc_eq(a.key, "event") {
                        continue;
                    }
                    match exception_key(a.key.raw()) {
                        Some(k) => proto::nested(buf, proto::EVENT_ATTRIBUTES, |b| {
                            proto::put_bytes(b, proto::KV_KEY, k.as_bytes());
                            proto::nested(b, proto::KV_VALUE, |b| put_line_value(b, a.value));
                        }),
                        None => put_line_attr(buf, proto::EVENT_ATTRIBUTES, a.key, a.value),
                    }
                }
                Owner::Event(false) => put_line_attr(buf, proto::EVENT_ATTRIBUTES, a.key, a.value),
                Owner::Link => put_line_attr(buf, proto::LINK_ATTRIBUTES, a.key, a.value),
            },
            FieldRef::Event { offset_us, name } => {
                if let Some(at) = open.take() {
                    proto::end_nested(buf, at);
                }
                // An error log is known by its name or by an `event=error` field among the
                // ones that follow: look ahead on a copy of the iterator.
                let is_error = esc_eq(name, "error")
                    || fields
                        .clone()
                        .take_while(|f| {
                            !matches!(f, FieldRef::Event { .. } | FieldRef::Link { .. })
                        })
                        .any(|f| match f {
                            FieldRef::Attr(a) => {
                                esc_eq(a.key, "event")
                                    && matches!(a.value, AttrValue::Str(v) if v.raw() == "error")
                            }
                            _ => false,
                        });
                let t_us = (line.start_us as i64).saturating_add(offset_us).max(0) as u64;
                open = Some(proto::begin_nested(buf, proto::SPAN_EVENTS));
                proto::put_fixed64(buf, proto::EVENT_TIME, t_us.saturating_mul(1000));
                if is_error {
                    proto::put_bytes(buf, proto::EVENT_NAME, b"exception");
                } else {
                    put_esc(buf, proto::EVENT_NAME, name);
                }
                owner = Owner::Event(is_error);
            }
            FieldRef::Link { trace_id, span_id } => {
                if let Some(at) = open.take() {
                    proto::end_nested(buf, at);
                }
                open = Some(proto::begin_nested(buf, proto::SPAN_LINKS));
                proto::put_bytes(buf, proto::LINK_TRACE_ID, &trace_id.0);
                proto::put_bytes(buf, proto::LINK_SPAN_ID, &span_id.0);
                owner = Owner::Link;
            }
        }
    }
    if let Some(at) = open.take() {
        proto::end_nested(buf, at);
    }
    let d = line.dropped;
    if d.attributes > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_ATTRIBUTES, d.attributes.into());
    }
    if d.events > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_EVENTS, d.events.into());
    }
    if d.links > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_LINKS, d.links.into());
    }
    if error_tag && facts.status == StatusCode::Unset {
        facts.status = StatusCode::Error;
    }
    if let (Some(k), SpanKind::Internal) = (ot_kind, facts.kind) {
        facts.kind = k;
    }
    facts
}

/// Writes the body of an owned span (name, attributes, events, links, drop counts).
fn write_data_body(d: &SpanData, buf: &mut Vec<u8>) {
    buf.clear();
    proto::put_bytes(buf, proto::SPAN_NAME, d.name.as_bytes());
    for kv in &d.attributes {
        proto::key_value(buf, proto::SPAN_ATTRIBUTES, &kv.key, kv.value.scalar());
    }
    for e in &d.events {
        proto::nested(buf, proto::SPAN_EVENTS, |b| {
            proto::put_fixed64(b, proto::EVENT_TIME, e.time_unix_nano);
            proto::put_bytes(b, proto::EVENT_NAME, e.name.as_bytes());
            for kv in &e.attributes {
                proto::key_value(b, proto::EVENT_ATTRIBUTES, &kv.key, kv.value.scalar());
            }
        });
    }
    for l in &d.links {
        proto::nested(buf, proto::SPAN_LINKS, |b| {
            proto::put_bytes(b, proto::LINK_TRACE_ID, &l.trace_id.0);
            proto::put_bytes(b, proto::LINK_SPAN_ID, &l.span_id.0);
            for kv in &l.attributes {
                proto::key_value(b, proto::LINK_ATTRIBUTES, &kv.key, kv.value.scalar());
            }
        });
    }
    let (a, e, l) = d.dropped;
    if a > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_ATTRIBUTES, a.into());
    }
    if e > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_EVENTS, e.into());
    }
    if l > 0 {
        proto::put_varint(buf, proto::SPAN_DROPPED_LINKS, l.into());
    }
}

fn box_body(proto_part: &[u8], status_message: &[u8]) -> (Box<[u8]>, u32) {
    let mut v = Vec::with_capacity(proto_part.len() + status_message.len());
    v.extend_from_slice(proto_part);
    v.extend_from_slice(status_message);
    (
        v.into_boxed_slice(),
        u32::try_from(proto_part.len()).unwrap_or(u32::MAX),
    )
}

fn from_proto_value(v: Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> AnyValue {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.and_then(|v| v.value) {
        Some(Value::StringValue(s)) => AnyValue::Str(s),
        Some(Value::IntValue(i)) => AnyValue::Int(i),
        Some(Value::DoubleValue(f)) => AnyValue::Float(f),
        Some(Value::BoolValue(b)) => AnyValue::Bool(b),
        _ => AnyValue::Str(String::new()),
    }
}

fn from_proto_kvs(kvs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: from_proto_value(kv.value),
        })
        .collect()
}

impl Span {
    /// A span from a decoded span line. `scratch` is a reused buffer. The kind and status are
    /// those after the OpenTracing mapping; the status message is the line's.
    pub fn from_line<'a>(
        line: &SpanLine<'a>,
        resource: Arc<Resource>,
        scratch: &mut Vec<u8>,
    ) -> (Span, LineFacts<'a>) {
        let facts = write_line_body(line, scratch, |_| {});
        (Span::from_line_body(line, &facts, scratch, resource), facts)
    }

    /// A span from a decoded span line whose body [`write_line_body`] wrote into `body` (the
    /// status message is appended to it here).
    pub fn from_line_body(
        line: &SpanLine<'_>,
        facts: &LineFacts<'_>,
        body: &mut Vec<u8>,
        resource: Arc<Resource>,
    ) -> Span {
        let start = line.start_us.saturating_mul(1000);
        let msg_at = body.len();
        if let Some(m) = line.status_message {
            m.write_text(body);
        }
        Span {
            trace_id: line.trace_id,
            span_id: line.span_id,
            parent_span_id: line.parent_span_id,
            kind: facts.kind,
            status: facts.status,
            start_unix_nano: start,
            end_unix_nano: start.saturating_add(line.duration_us.saturating_mul(1000)),
            resource,
            input: 0,
            body: Box::from(&body[..]),
            proto_len: u32::try_from(msg_at).unwrap_or(u32::MAX),
            logs: Box::default(),
        }
    }

    /// A span from its head and its pre-encoded OTLP fields (`fields` must start with the
    /// name, as [`Span::name`] reads it).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        kind: SpanKind,
        (status, status_message): (StatusCode, &str),
        (start_unix_nano, end_unix_nano): (u64, u64),
        resource: Arc<Resource>,
        fields: &[u8],
    ) -> Span {
        let (body, proto_len) = box_body(fields, status_message.as_bytes());
        Span {
            trace_id,
            span_id,
            parent_span_id,
            kind,
            status,
            start_unix_nano,
            end_unix_nano,
            resource,
            input: 0,
            body,
            proto_len,
            logs: Box::default(),
        }
    }

    /// A span from its owned form, with a resource of its own.
    pub fn from_data(d: &SpanData) -> Span {
        let resource = Arc::new(Resource::new(d.service.clone(), d.resource.clone()));
        Span::from_data_with(d, resource)
    }

    /// A span from its owned form, with `resource` (its service and attributes replace the
    /// data's).
    pub fn from_data_with(d: &SpanData, resource: Arc<Resource>) -> Span {
        let mut buf = Vec::new();
        write_data_body(d, &mut buf);
        let (body, proto_len) = box_body(&buf, d.status_message.as_bytes());
        Span {
            trace_id: d.trace_id,
            span_id: d.span_id,
            parent_span_id: d.parent_span_id,
            kind: d.kind,
            status: d.status,
            start_unix_nano: d.start_unix_nano,
            end_unix_nano: d.end_unix_nano,
            resource,
            input: 0,
            body,
            proto_len,
            logs: Box::default(),
        }
    }

    fn proto_part(&self) -> &[u8] {
        self.body.get(..self.proto_len as usize).unwrap_or(&[])
    }

    /// The name.
    pub fn name(&self) -> &str {
        let b = self.proto_part();
        if b.first() != Some(&NAME_TAG) {
            return "";
        }
        let mut rest = &b[1..];
        let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
            return "";
        };
        rest.get(..len as usize)
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("")
    }

    /// `service.name`.
    pub fn service(&self) -> &str {
        &self.resource.service
    }

    /// The status message (empty when there is none).
    pub fn status_message(&self) -> &str {
        self.body
            .get(self.proto_len as usize..)
            .and_then(|m| std::str::from_utf8(m).ok())
            .unwrap_or("")
    }

    /// The log group the span was read from (its `aws.log.group.names` resource attribute).
    pub fn log_group(&self) -> Option<&str> {
        self.resource
            .attributes
            .iter()
            .find_map(|kv| match (kv.key.as_str(), &kv.value) {
                ("aws.log.group.names", AnyValue::Str(g)) => Some(g.as_str()),
                _ => None,
            })
    }

    /// Adds an event `name` at `time_unix_nano` with string attributes (an invocation's log
    /// line, [`crate::convert::assemble::LogLine`]).
    pub fn push_event(&mut self, time_unix_nano: u64, name: &str, attributes: &[(&str, &str)]) {
        let mut proto_part = self.proto_part().to_vec();
        proto::nested(&mut proto_part, proto::SPAN_EVENTS, |b| {
            proto::put_fixed64(b, proto::EVENT_TIME, time_unix_nano);
            proto::put_bytes(b, proto::EVENT_NAME, name.as_bytes());
            for (k, v) in attributes {
                proto::key_value(b, proto::EVENT_ATTRIBUTES, k, proto::Scalar::Str(v));
            }
        });
        let message = self.body.get(self.proto_len as usize..).unwrap_or(&[]);
        let (body, proto_len) = box_body(&proto_part, message);
        self.body = body;
        self.proto_len = proto_len;
    }

    /// Replaces the status message.
    pub fn set_status_message(&mut self, message: &str) {
        let (body, proto_len) = box_body(self.proto_part(), message.as_bytes());
        self.body = body;
        self.proto_len = proto_len;
    }

    /// The pre-encoded OTLP fields: name, attributes, events, links, drop counts.
    pub fn encoded_fields(&self) -> &[u8] {
        self.proto_part()
    }

    /// Heap bytes this span holds on its own (its resource is shared), for memory accounting.
    pub fn heap_size(&self) -> usize {
        self.body.len()
            + self
                .logs
                .iter()
                .map(|l| std::mem::size_of::<SpanLog>() + l.level.len() + l.message.len())
                .sum::<usize>()
    }

    /// The function's log lines kept beside this span (`--logs otlp`).
    pub fn logs(&self) -> &[SpanLog] {
        &self.logs
    }

    /// Keeps the function's log lines `logs` beside this span, after those it has
    /// (`--logs otlp`).
    pub fn extend_logs(&mut self, logs: impl IntoIterator<Item = SpanLog>) {
        let mut all = std::mem::take(&mut self.logs).into_vec();
        all.extend(logs);
        self.logs = all.into_boxed_slice();
    }

    /// Every field, owned.
    pub fn data(&self) -> SpanData {
        use opentelemetry_proto::tonic::trace::v1::Span as P;
        let p = P::decode(self.proto_part()).unwrap_or_default();
        SpanData {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: p.name,
            kind: self.kind,
            status: self.status,
            status_message: self.status_message().to_owned(),
            start_unix_nano: self.start_unix_nano,
            end_unix_nano: self.end_unix_nano,
            attributes: from_proto_kvs(p.attributes),
            events: p
                .events
                .into_iter()
                .map(|e| Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: from_proto_kvs(e.attributes),
                })
                .collect(),
            links: p
                .links
                .into_iter()
                .filter_map(|l| {
                    Some(Link {
                        trace_id: TraceId(l.trace_id.try_into().ok()?),
                        span_id: SpanId(l.span_id.try_into().ok()?),
                        attributes: from_proto_kvs(l.attributes),
                    })
                })
                .collect(),
            service: self.resource.service.clone(),
            resource: self.resource.attributes.clone(),
            dropped: (
                p.dropped_attributes_count,
                p.dropped_events_count,
                p.dropped_links_count,
            ),
        }
    }
}

impl From<&SpanData> for Span {
    fn from(d: &SpanData) -> Span {
        Span::from_data(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_line::decode;

    fn line_span(text: &str) -> SpanData {
        let rec = decode(text).unwrap();
        let line = rec.spans().next().unwrap();
        let res = Arc::new(Resource::new("svc".into(), vec![]));
        let mut scratch = Vec::new();
        Span::from_line(&line, res, &mut scratch).0.data()
    }

    #[test]
    fn a_line_round_trips_through_the_body() {
        let d = line_span(
            "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5c GET%20/x%* k=v%3Bw n#-3 f~1.5 b!t @2=retry attempt#1 ^S_kvNXezTaajzpKdDg5HNgAPBnqgupArc l=1 *m=bad%20thing *a#2 *e#1;",
        );
        assert_eq!(d.name, "GET /x…");
        assert_eq!(d.kind, SpanKind::Client);
        assert_eq!((d.start_unix_nano, d.end_unix_nano), (1_000_000, 1_005_000));
        assert_eq!(
            d.attributes,
            [
                KeyValue::str("k", "v;w"),
                KeyValue::int("n", -3),
                KeyValue::float("f", 1.5),
                KeyValue::bool("b", true)
            ]
        );
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].name, "retry");
        assert_eq!(d.events[0].time_unix_nano, 1_002_000);
        assert_eq!(d.events[0].attributes, [KeyValue::int("attempt", 1)]);
        assert_eq!(d.links.len(), 1);
        assert_eq!(d.links[0].attributes, [KeyValue::str("l", "1")]);
        assert_eq!(d.status_message, "bad thing");
        assert_eq!(d.dropped, (2, 1, 0));
        let again = Span::from_data(&d).data();
        assert_eq!(again, d);
    }

    #[test]
    fn opentracing_tags_and_logs_map_to_otel() {
        let d = line_span("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n error!t span.kind=client @2=log event=error error.kind=TypeError message=boom stack=x;");
        assert_eq!((d.status, d.kind), (StatusCode::Error, SpanKind::Client));
        assert!(d.attributes.is_empty());
        assert_eq!(d.events[0].name, "exception");
        let keys: Vec<&str> = d.events[0]
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
    fn name_and_status_message_accessors() {
        let rec = decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5e a%20b *m=x;").unwrap();
        let line = rec.spans().next().unwrap();
        let res = Arc::new(Resource::new("svc".into(), vec![]));
        let (mut s, facts) = Span::from_line(&line, res, &mut Vec::new());
        assert_eq!(facts.called_request, None);
        assert_eq!((s.name(), s.status_message()), ("a b", "x"));
        s.set_status_message("did not finish");
        assert_eq!((s.name(), s.status_message()), ("a b", "did not finish"));
        assert_eq!(s.data().name, "a b");
    }

    #[test]
    fn a_called_request_id_is_found() {
        let rec =
            decode("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5c invoke aws.request_id=abc-1;")
                .unwrap();
        let line = rec.spans().next().unwrap();
        let res = Arc::new(Resource::new("svc".into(), vec![]));
        let (_, facts) = Span::from_line(&line, res, &mut Vec::new());
        assert_eq!(facts.called_request.map(|r| r.raw()), Some("abc-1"));
    }

    #[test]
    fn resources_encode_service_first_and_drop_duplicates() {
        use opentelemetry_proto::tonic::resource::v1::Resource as P;
        let r = Resource::new(
            "api".into(),
            vec![KeyValue::str("service.name", "x"), KeyValue::int("n", 1)],
        );
        let p = P::decode(r.encoded()).unwrap();
        let keys: Vec<&str> = p.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "n"]);
    }
}
