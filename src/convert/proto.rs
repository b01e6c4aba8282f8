//! The OTLP protobuf wire format, written by hand into reusable buffers: the span model keeps
//! each span's attributes, events and links pre-encoded ([`crate::convert::assemble::Span`]),
//! and the OTLP sink writes whole export requests around them without building a tree of
//! prost structs per span (that tree was the measured cost of the old encoder).
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`. Primitive encodings come from
//! [`prost::encoding`]; what prost cannot do without its structs (nested messages written in
//! place) is [`nested`]. Everything written here is checked against prost's own decoder in the
//! tests.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// `ExportTraceServiceRequest.resource_spans`.
pub const REQUEST_RESOURCE_SPANS: u32 = 1;
/// `ResourceSpans.resource`.
pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
/// `ResourceSpans.scope_spans`.
pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
/// `Resource.attributes`.
pub const RESOURCE_ATTRIBUTES: u32 = 1;
/// `ScopeSpans.scope`.
pub const SCOPE_SPANS_SCOPE: u32 = 1;
/// `ScopeSpans.spans`.
pub const SCOPE_SPANS_SPANS: u32 = 2;
/// `InstrumentationScope.name`.
pub const SCOPE_NAME: u32 = 1;
/// `InstrumentationScope.version`.
pub const SCOPE_VERSION: u32 = 2;

/// `Span.trace_id`.
pub const SPAN_TRACE_ID: u32 = 1;
/// `Span.span_id`.
pub const SPAN_SPAN_ID: u32 = 2;
/// `Span.parent_span_id`.
pub const SPAN_PARENT_SPAN_ID: u32 = 4;
/// `Span.name`.
pub const SPAN_NAME: u32 = 5;
/// `Span.kind`.
pub const SPAN_KIND: u32 = 6;
/// `Span.start_time_unix_nano`.
pub const SPAN_START: u32 = 7;
/// `Span.end_time_unix_nano`.
pub const SPAN_END: u32 = 8;
/// `Span.attributes`.
pub const SPAN_ATTRIBUTES: u32 = 9;
/// `Span.dropped_attributes_count`.
pub const SPAN_DROPPED_ATTRIBUTES: u32 = 10;
/// `Span.events`.
pub const SPAN_EVENTS: u32 = 11;
/// `Span.dropped_events_count`.
pub const SPAN_DROPPED_EVENTS: u32 = 12;
/// `Span.links`.
pub const SPAN_LINKS: u32 = 13;
/// `Span.dropped_links_count`.
pub const SPAN_DROPPED_LINKS: u32 = 14;
/// `Span.status`.
pub const SPAN_STATUS: u32 = 15;

/// `Span.Event.time_unix_nano`.
pub const EVENT_TIME: u32 = 1;
/// `Span.Event.name`.
pub const EVENT_NAME: u32 = 2;
/// `Span.Event.attributes`.
pub const EVENT_ATTRIBUTES: u32 = 3;
/// `Span.Link.trace_id`.
pub const LINK_TRACE_ID: u32 = 1;
/// `Span.Link.span_id`.
pub const LINK_SPAN_ID: u32 = 2;
/// `Span.Link.attributes`.
pub const LINK_ATTRIBUTES: u32 = 4;
/// `Status.message`.
pub const STATUS_MESSAGE: u32 = 2;
/// `Status.code`.
pub const STATUS_CODE: u32 = 3;

/// `KeyValue.key`.
pub const KV_KEY: u32 = 1;
/// `KeyValue.value`.
pub const KV_VALUE: u32 = 2;
/// `AnyValue.string_value`.
pub const ANY_STRING: u32 = 1;
/// `AnyValue.bool_value`.
pub const ANY_BOOL: u32 = 2;
/// `AnyValue.int_value`.
pub const ANY_INT: u32 = 3;
/// `AnyValue.double_value`.
pub const ANY_DOUBLE: u32 = 4;

/// A length-delimited field holding `bytes`.
#[inline]
pub fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A varint field (also enums, bools, `uint32` counts). Zero is written too; callers skip
/// defaults where proto3 would.
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::Varint, buf);
    encode_varint(v, buf);
}

/// A `fixed64` field (times).
#[inline]
pub fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    encode_key(field, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The encoded size of a length-delimited field with `len` bytes of content.
#[inline]
pub fn field_len(field: u32, len: usize) -> usize {
    prost::encoding::key_len(field) + encoded_len_varint(len as u64) + len
}

/// Writes a nested message (or any length-delimited field) in place: the key, room for a
/// one-byte length, then `body`; when the content turns out to be 128 bytes or more, it is
/// moved to make room for the longer length. Most attributes and events fit in one byte.
#[inline]
pub fn nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let at = begin_nested(buf, field);
    body(buf);
    end_nested(buf, at);
}

/// [`nested`] in two steps, for writers that cannot put the content in a closure: the key and
/// a one-byte length placeholder; returns where the placeholder is, for [`end_nested`].
#[inline]
pub fn begin_nested(buf: &mut Vec<u8>, field: u32) -> usize {
    encode_key(field, WireType::LengthDelimited, buf);
    buf.push(0);
    buf.len() - 1
}

/// Ends what [`begin_nested`] started at `at`: writes the content's length, moving the
/// content when the length needs more than one byte.
#[inline]
pub fn end_nested(buf: &mut Vec<u8>, at: usize) {
    let len = buf.len() - at - 1;
    if len < 128 {
        buf[at] = len as u8;
        return;
    }
    let extra = encoded_len_varint(len as u64) - 1;
    buf.resize(buf.len() + extra, 0);
    buf.copy_within(at + 1..at + 1 + len, at + 1 + extra);
    let mut head = Vec::with_capacity(10);
    encode_varint(len as u64, &mut head);
    buf[at..at + head.len()].copy_from_slice(&head);
}

/// The value of an attribute, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar<'a> {
    /// A string (already unescaped).
    Str(&'a str),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// Writes the content of an `AnyValue` for `v`.
#[inline]
pub fn any_value(buf: &mut Vec<u8>, v: Scalar<'_>) {
    match v {
        Scalar::Str(s) => put_bytes(buf, ANY_STRING, s.as_bytes()),
        Scalar::Bool(b) => put_varint(buf, ANY_BOOL, u64::from(b)),
        Scalar::Int(i) => put_varint(buf, ANY_INT, i as u64),
        Scalar::Float(f) => {
            encode_key(ANY_DOUBLE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
    }
}

/// Writes one `KeyValue` as field `field` of the enclosing message.
#[inline]
pub fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, v: Scalar<'_>) {
    nested(buf, field, |b| {
        put_bytes(b, KV_KEY, key.as_bytes());
        nested(b, KV_VALUE, |b| any_value(b, v));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
    use prost::Message as _;

    /// A message with one repeated `KeyValue` field 1 (as `Resource`), to read back with prost.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Kvs {
        #[prost(message, repeated, tag = "1")]
        kvs: Vec<KeyValue>,
    }

    #[test]
    fn key_values_read_back_with_prost_at_every_length() {
        for len in [0usize, 1, 100, 127, 128, 200, 16_383, 16_384, 70_000] {
            let text = "x".repeat(len);
            let mut buf = Vec::new();
            key_value(&mut buf, 1, "k", Scalar::Str(&text));
            key_value(&mut buf, 1, &text, Scalar::Int(-5));
            key_value(&mut buf, 1, "f", Scalar::Float(1.5));
            key_value(&mut buf, 1, "b", Scalar::Bool(true));
            let got = Kvs::decode(&buf[..]).unwrap();
            let vals: Vec<Option<any_value::Value>> = got
                .kvs
                .iter()
                .map(|kv| kv.value.clone().and_then(|v| v.value))
                .collect();
            assert_eq!(got.kvs[0].key, "k");
            assert_eq!(got.kvs[1].key, text);
            assert_eq!(
                vals,
                [
                    Some(any_value::Value::StringValue(text.clone())),
                    Some(any_value::Value::IntValue(-5)),
                    Some(any_value::Value::DoubleValue(1.5)),
                    Some(any_value::Value::BoolValue(true)),
                ]
            );
        }
    }

    #[test]
    fn field_len_matches_what_is_written() {
        for len in [0usize, 5, 127, 128, 300, 20_000] {
            let mut buf = Vec::new();
            put_bytes(&mut buf, 13, &vec![1u8; len]);
            assert_eq!(buf.len(), field_len(13, len));
        }
    }
}
