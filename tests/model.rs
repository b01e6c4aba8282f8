//! The owned span model of the conformance vectors (`fixtures/conformance/*.json`), with the
//! glue between it and the crate's encoder and decoder.

use serde::{Deserialize, Serialize};
use spanline::span_line::decode::{Attr as LineAttr, AttrValue};
use spanline::span_line::encode::{fixed_len, write_resource, write_service};
use spanline::span_line::{
    decode, BatchEncoder, EscStr, Record, SpanEncoder, SpanHead, SpanId, SpanKind, SpanLine,
    StatusCode, TraceId, Value,
};

/// A string that may carry the truncation marker.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Str {
    Plain(String),
    Cut { text: String, truncated: bool },
}

impl Str {
    pub fn text(&self) -> &str {
        match self {
            Str::Plain(s) | Str::Cut { text: s, .. } => s,
        }
    }
    fn normal(self) -> Str {
        match self {
            Str::Cut {
                text,
                truncated: false,
            } => Str::Plain(text),
            s => s,
        }
    }
    pub fn from_esc(e: EscStr<'_>) -> Str {
        let text = e.text().into_owned();
        if e.is_truncated() {
            Str::Cut {
                text,
                truncated: true,
            }
        } else {
            Str::Plain(text)
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Attr {
    pub key: Str,
    #[serde(rename = "type")]
    pub ty: String,
    pub value: serde_json::Value,
}

/// A typed view of an attribute for comparisons (NaN equals NaN).
#[derive(Debug, Clone)]
pub enum Typed {
    Str(Str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl PartialEq for Typed {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Typed::Str(a), Typed::Str(b)) => a.clone().normal() == b.clone().normal(),
            (Typed::Int(a), Typed::Int(b)) => a == b,
            (Typed::Float(a), Typed::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Typed::Bool(a), Typed::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Attr {
    pub fn typed(&self) -> Typed {
        match self.ty.as_str() {
            "string" => {
                Typed::Str(serde_json::from_value(self.value.clone()).expect("string value"))
            }
            "int" => Typed::Int(match &self.value {
                serde_json::Value::String(s) => s.parse().expect("int as decimal string"),
                v => v.as_i64().expect("int"),
            }),
            "float" => Typed::Float(match &self.value {
                serde_json::Value::String(s) => match s.as_str() {
                    "nan" => f64::NAN,
                    "inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    other => other.parse().expect("float string"),
                },
                v => v.as_f64().expect("float"),
            }),
            "bool" => Typed::Bool(self.value.as_bool().expect("bool")),
            t => panic!("unknown attribute type {t}"),
        }
    }

    pub fn value(&self) -> (Value<'_>, Option<String>) {
        match self.typed() {
            Typed::Str(s) => (Value::Str(""), Some(s.text().to_owned())),
            Typed::Int(i) => (Value::Int(i), None),
            Typed::Float(f) => (Value::Float(f), None),
            Typed::Bool(b) => (Value::Bool(b), None),
        }
    }

    pub fn from_line(a: LineAttr<'_>) -> Attr {
        let (ty, value) = match a.value {
            AttrValue::Str(s) => ("string", serde_json::to_value(Str::from_esc(s)).unwrap()),
            AttrValue::Int(i) => ("int", serde_json::Value::String(i.to_string())),
            AttrValue::Float(f) if f.is_nan() => ("float", "nan".into()),
            AttrValue::Float(f) if f.is_infinite() => {
                ("float", if f > 0.0 { "inf".into() } else { "-inf".into() })
            }
            AttrValue::Float(f) => ("float", serde_json::json!(f)),
            AttrValue::Bool(b) => ("bool", b.into()),
        };
        Attr {
            key: Str::from_esc(a.key),
            ty: ty.into(),
            value,
        }
    }
}

impl PartialEq for Attr {
    fn eq(&self, o: &Self) -> bool {
        self.key.clone().normal() == o.key.clone().normal() && self.typed() == o.typed()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub offset_us: i64,
    pub name: Str,
    pub attributes: Vec<Attr>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Vec<Attr>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Dropped {
    pub attributes: u32,
    pub events: u32,
    pub links: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub start_us: u64,
    pub duration_us: u64,
    pub name: Str,
    pub kind: String,
    pub status: String,
    pub status_message: Option<Str>,
    pub service: Option<Str>,
    pub request_id: Option<Str>,
    pub attributes: Vec<Attr>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub resource: Vec<Attr>,
    #[serde(default)]
    pub dropped: Dropped,
}

/// The model of a decoded span.
pub fn from_line(s: &SpanLine<'_>) -> Span {
    Span {
        trace_id: s.trace_id.to_string(),
        span_id: s.span_id.to_string(),
        parent_span_id: s.parent_span_id.map(|p| p.to_string()),
        start_us: s.start_us,
        duration_us: s.duration_us,
        name: Str::from_esc(s.name),
        kind: s.kind.name().into(),
        status: s.status.name().into(),
        status_message: s.status_message.map(Str::from_esc),
        service: s.service.map(Str::from_esc),
        request_id: s.request_id.map(Str::from_esc),
        attributes: s.attributes().map(Attr::from_line).collect(),
        events: s
            .events()
            .map(|e| Event {
                offset_us: e.offset_us,
                name: Str::from_esc(e.name),
                attributes: e.attributes().map(Attr::from_line).collect(),
            })
            .collect(),
        links: s
            .links()
            .map(|l| Link {
                trace_id: l.trace_id.to_string(),
                span_id: l.span_id.to_string(),
                attributes: l.attributes().map(Attr::from_line).collect(),
            })
            .collect(),
        resource: s.resource().map(Attr::from_line).collect(),
        dropped: Dropped {
            attributes: s.dropped.attributes,
            events: s.dropped.events,
            links: s.dropped.links,
        },
    }
}

/// Decodes a line with the crate's decoder into the model, or the error code.
pub fn decode_line(line: &str) -> Result<Vec<Span>, String> {
    let rec = decode(line).map_err(|e| e.kind.code().to_owned())?;
    let spans: Vec<Span> = rec.spans().map(|s| from_line(&s)).collect();
    if let Record::Batch(b) = &rec {
        assert_eq!(b.len, spans.len());
    }
    Ok(spans)
}

fn kind(k: &str) -> SpanKind {
    SpanKind::from_name(k).unwrap_or_else(|| panic!("kind {k}"))
}

fn status(s: &str) -> StatusCode {
    match s {
        "unset" => StatusCode::Unset,
        "ok" => StatusCode::Ok,
        "error" => StatusCode::Error,
        s => panic!("status {s}"),
    }
}

fn with_value<R>(a: &Attr, f: impl FnOnce(&str, Value<'_>) -> R) -> R {
    let (v, s) = a.value();
    match s {
        Some(s) => f(a.key.text(), Value::Str(&s)),
        None => f(a.key.text(), v),
    }
}

fn fields(span: &Span, suffix_len: usize) -> SpanEncoder {
    let mut enc = SpanEncoder::new();
    enc.reset(fixed_len(
        span.name.text(),
        span.request_id.as_ref().map(Str::text),
        suffix_len,
    ));
    for a in &span.attributes {
        with_value(a, |k, v| enc.attr(k, v));
    }
    for l in &span.links {
        enc.link(
            TraceId::from_hex(&l.trace_id).unwrap(),
            SpanId::from_hex(&l.span_id).unwrap(),
        );
        for a in &l.attributes {
            with_value(a, |k, v| enc.target_attr(k, v));
        }
    }
    for e in &span.events {
        enc.event(e.offset_us, e.name.text());
        for a in &e.attributes {
            with_value(a, |k, v| enc.target_attr(k, v));
        }
    }
    enc
}

fn suffix(span: &Span) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(s) = &span.service {
        write_service(&mut out, s.text());
    }
    for a in &span.resource {
        with_value(a, |k, v| write_resource(&mut out, k, v));
    }
    out
}

fn head(span: &Span) -> SpanHead<'_> {
    SpanHead {
        trace_id: TraceId::from_hex(&span.trace_id).unwrap(),
        span_id: SpanId::from_hex(&span.span_id).unwrap(),
        parent: span
            .parent_span_id
            .as_deref()
            .map(|p| SpanId::from_hex(p).unwrap()),
        start_us: span.start_us,
        duration_us: span.duration_us,
        kind: kind(&span.kind),
        status: status(&span.status),
        name: span.name.text(),
    }
}

/// Encodes one span record with the crate's encoder.
pub fn encode_span(span: &Span) -> String {
    let suffix = suffix(span);
    let enc = fields(span, suffix.len());
    let mut out = Vec::new();
    enc.write_record(
        &mut out,
        &head(span),
        span.status_message.as_ref().map(Str::text),
        span.request_id.as_ref().map(Str::text),
        &suffix,
    );
    String::from_utf8(out).unwrap()
}

/// Encodes one batch record (all spans must fit) with the crate's encoder.
pub fn encode_batch(spans: &[Span]) -> String {
    let first = &spans[0];
    let suffix = suffix(first);
    let mut b = BatchEncoder::new();
    b.begin(
        TraceId::from_hex(&first.trace_id).unwrap(),
        first.start_us,
        first.request_id.as_ref().map(Str::text),
        &suffix,
    );
    for s in spans {
        let enc = fields(s, 0);
        assert!(
            b.push(
                &head(s),
                &enc,
                s.status_message.as_ref().map(Str::text),
                None
            ),
            "batch full"
        );
    }
    let mut out = Vec::new();
    b.take(&mut out);
    String::from_utf8(out).unwrap()
}
