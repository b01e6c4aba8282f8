//! Pure OTLP encoding: assembled [`Span`]s → an `ExportTraceServiceRequest` written straight
//! into a reusable buffer (grouped by resource), the request as OTLP/JSON, and the export
//! response (partial success) decoded from protobuf or JSON. No I/O: the transports in `http`
//! and `grpc` only move these bytes.
//!
//! Each span carries its attributes, events and links already encoded
//! ([`Span::encoded_fields`]); writing a request is computing lengths and copying bytes, with
//! no prost struct per span (building that tree was most of the old encoder's cost).

use crate::convert::assemble::Span;
use crate::convert::proto;
use crate::span_line::{SpanKind, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message as _;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// The instrumentation scope every span is reported under.
pub const SCOPE_NAME: &str = "spanline";
/// The scope version: this crate's version.
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The OTLP `Span.SpanKind` number.
pub fn proto_kind(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

/// The OTLP `Status.StatusCode`.
pub fn proto_status(code: StatusCode) -> status::StatusCode {
    match code {
        StatusCode::Unset => status::StatusCode::Unset,
        StatusCode::Ok => status::StatusCode::Ok,
        StatusCode::Error => status::StatusCode::Error,
    }
}

/// The content of the `InstrumentationScope` message.
fn scope_bytes() -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    proto::put_bytes(&mut b, proto::SCOPE_NAME, SCOPE_NAME.as_bytes());
    proto::put_bytes(&mut b, proto::SCOPE_VERSION, SCOPE_VERSION.as_bytes());
    b
}

/// The length of the content of `Status`, when the span has one.
fn status_len(s: &Span) -> Option<usize> {
    let msg = s.status_message();
    if s.status == StatusCode::Unset && msg.is_empty() {
        return None;
    }
    let mut n = 0;
    if !msg.is_empty() {
        n += proto::field_len(proto::STATUS_MESSAGE, msg.len());
    }
    let code = proto_status(s.status) as u64;
    if code != 0 {
        n += key_len(proto::STATUS_CODE) + encoded_len_varint(code);
    }
    Some(n)
}

/// The length of the content of one `Span` message.
fn span_len(s: &Span) -> usize {
    let mut n =
        proto::field_len(proto::SPAN_TRACE_ID, 16) + proto::field_len(proto::SPAN_SPAN_ID, 8);
    if s.parent_span_id.is_some() {
        n += proto::field_len(proto::SPAN_PARENT_SPAN_ID, 8);
    }
    n += s.encoded_fields().len();
    n += key_len(proto::SPAN_KIND) + encoded_len_varint(proto_kind(s.kind) as u64);
    n += 2 * (key_len(proto::SPAN_START) + 8);
    if let Some(st) = status_len(s) {
        n += proto::field_len(proto::SPAN_STATUS, st);
    }
    n
}

/// The length of the content of the `Span` message [`write_request`] writes for `s` (what a
/// backend's per-span size limit is measured on).
pub fn encoded_span_len(s: &Span) -> usize {
    span_len(s)
}

fn write_span(s: &Span, buf: &mut Vec<u8>) {
    proto::put_bytes(buf, proto::SPAN_TRACE_ID, &s.trace_id.0);
    proto::put_bytes(buf, proto::SPAN_SPAN_ID, &s.span_id.0);
    if let Some(p) = s.parent_span_id {
        proto::put_bytes(buf, proto::SPAN_PARENT_SPAN_ID, &p.0);
    }
    buf.extend_from_slice(s.encoded_fields());
    proto::put_varint(buf, proto::SPAN_KIND, proto_kind(s.kind) as u64);
    proto::put_fixed64(buf, proto::SPAN_START, s.start_unix_nano);
    proto::put_fixed64(buf, proto::SPAN_END, s.end_unix_nano);
    if let Some(st) = status_len(s) {
        encode_key(proto::SPAN_STATUS, WireType::LengthDelimited, buf);
        encode_varint(st as u64, buf);
        let msg = s.status_message();
        if !msg.is_empty() {
            proto::put_bytes(buf, proto::STATUS_MESSAGE, msg.as_bytes());
        }
        let code = proto_status(s.status) as u64;
        if code != 0 {
            proto::put_varint(buf, proto::STATUS_CODE, code);
        }
    }
}

/// Writes one `ExportTraceServiceRequest` for `spans` into `buf` (cleared first): one
/// `ResourceSpans` per distinct resource (compared by content), in first-seen order, each with
/// a single `ScopeSpans` (scope `spanline`, this crate's version) holding its spans in input
/// order.
pub fn write_request(spans: &[Span], buf: &mut Vec<u8>) {
    buf.clear();
    if spans.is_empty() {
        return;
    }
    // Which resource group each span is in: pointer equality first (spans of one stream share
    // one `Arc`), content equality for resources built separately.
    let mut group_of: Vec<u32> = Vec::with_capacity(spans.len());
    let mut groups: Vec<&[u8]> = Vec::new();
    let mut by_bytes: HashMap<&[u8], u32> = HashMap::new();
    let mut last: Option<(*const crate::convert::assemble::Resource, u32)> = None;
    for s in spans {
        let ptr = std::sync::Arc::as_ptr(&s.resource);
        let g = match last {
            Some((p, g)) if p == ptr => g,
            _ => {
                let bytes = s.resource.encoded();
                let g = *by_bytes.entry(bytes).or_insert_with(|| {
                    groups.push(bytes);
                    (groups.len() - 1) as u32
                });
                last = Some((ptr, g));
                g
            }
        };
        group_of.push(g);
    }
    // Span indices ordered by group, input order kept within a group (a counting sort).
    let mut starts = vec![0usize; groups.len() + 1];
    for g in &group_of {
        starts[*g as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; spans.len()];
    for (i, g) in group_of.iter().enumerate() {
        order[fill[*g as usize]] = i as u32;
        fill[*g as usize] += 1;
    }
    let scope = scope_bytes();
    let scope_field = proto::field_len(proto::SCOPE_SPANS_SCOPE, scope.len());
    let mut total = 0usize;
    let mut group_lens = Vec::with_capacity(groups.len());
    for (g, res) in groups.iter().enumerate() {
        let members = &order[starts[g]..starts[g + 1]];
        let spans_len: usize = members
            .iter()
            .map(|&i| proto::field_len(proto::SCOPE_SPANS_SPANS, span_len(&spans[i as usize])))
            .sum();
        let scope_spans = scope_field + spans_len;
        let rs = proto::field_len(proto::RESOURCE_SPANS_RESOURCE, res.len())
            + proto::field_len(proto::RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
        group_lens.push((rs, scope_spans));
        total += proto::field_len(proto::REQUEST_RESOURCE_SPANS, rs);
    }
    buf.reserve(total);
    for (g, res) in groups.iter().enumerate() {
        let (rs, scope_spans) = group_lens[g];
        encode_key(
            proto::REQUEST_RESOURCE_SPANS,
            WireType::LengthDelimited,
            buf,
        );
        encode_varint(rs as u64, buf);
        proto::put_bytes(buf, proto::RESOURCE_SPANS_RESOURCE, res);
        encode_key(
            proto::RESOURCE_SPANS_SCOPE_SPANS,
            WireType::LengthDelimited,
            buf,
        );
        encode_varint(scope_spans as u64, buf);
        proto::put_bytes(buf, proto::SCOPE_SPANS_SCOPE, &scope);
        for &i in &order[starts[g]..starts[g + 1]] {
            let s = &spans[i as usize];
            encode_key(proto::SCOPE_SPANS_SPANS, WireType::LengthDelimited, buf);
            encode_varint(span_len(s) as u64, buf);
            write_span(s, buf);
        }
    }
}

/// The request [`write_request`] writes, as prost structs (for OTLP/JSON and gRPC).
pub fn encode_request(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut buf = Vec::new();
    write_request(spans, &mut buf);
    // The bytes were written just above by this module: they decode.
    ExportTraceServiceRequest::decode(buf.as_slice()).unwrap_or_default()
}

/// The request as OTLP/JSON (OTLP spec, "JSON Protobuf Encoding"): lowerCamelCase field names,
/// trace and span ids as lowercase hex, enums as integers, 64-bit integers as decimal strings.
///
/// opentelemetry-proto's `with-serde` gets the names, ids, enums and 64-bit integers right but
/// writes every field, defaults included: `null` for absent messages, `""`, `0`, `[]`, and
/// fields newer than many receivers (`flags`, `entityRefs`). The proto3 JSON mapping omits
/// default values, and OTLP/JSON receivers built on strict protobuf JSON parsers (MLflow's
/// Python `json_format`) reject unknown field names, so defaults are pruned here, except
/// inside `AnyValue`, where the member present *is* the value (`{"intValue":"0"}`).
pub fn to_json<R: serde::Serialize>(req: &R) -> String {
    match serde_json::to_value(req) {
        Ok(mut v) => {
            prune(&mut v);
            v.to_string()
        }
        // Serialising generated structs into a `Value` has no failure path (no maps with
        // non-string keys, no I/O); keep a valid empty request rather than panic.
        Err(_) => "{}".to_owned(),
    }
}

/// Drops default-valued fields from a message object, recursively.
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "value" || k == "body" {
                    // `KeyValue.value` and `LogRecord.body` are the only fields of these names
                    // in the trace and logs protos, and both are `AnyValue`s.
                    prune_any_value(child);
                } else {
                    prune(child);
                }
            }
            m.retain(|k, child| k == "value" || !is_default(child));
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

/// An `AnyValue` keeps its one member whatever its value; nested lists are pruned as usual.
fn prune_any_value(v: &mut Value) {
    let Value::Object(m) = v else { return };
    if let Some(Value::Object(arr)) = m.get_mut("arrayValue") {
        if let Some(Value::Array(items)) = arr.get_mut("values") {
            items.iter_mut().for_each(prune_any_value);
        }
    }
    if let Some(Value::Object(kvs)) = m.get_mut("kvlistValue") {
        if let Some(Value::Array(items)) = kvs.get_mut("values") {
            items.iter_mut().for_each(prune);
        }
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// What an export response said about rejected spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    /// Spans the backend rejected.
    pub rejected: u64,
    /// Its message (also sent alone, as a warning, with `rejected == 0`).
    pub message: Option<String>,
}

impl PartialSuccess {
    fn from_proto(p: Option<ExportTracePartialSuccess>) -> Self {
        let Some(p) = p else {
            return PartialSuccess::default();
        };
        PartialSuccess {
            rejected: u64::try_from(p.rejected_spans).unwrap_or(0),
            message: Some(p.error_message).filter(|m| !m.is_empty()),
        }
    }
}

/// Decodes a protobuf `ExportTraceServiceResponse` (an empty body is full success).
pub fn decode_response_proto(body: &[u8]) -> Result<PartialSuccess, prost::DecodeError> {
    let resp = ExportTraceServiceResponse::decode(body)?;
    Ok(PartialSuccess::from_proto(resp.partial_success))
}

/// The partial success of a gRPC response.
pub fn partial_success_of(resp: ExportTraceServiceResponse) -> PartialSuccess {
    PartialSuccess::from_proto(resp.partial_success)
}

/// Decodes an OTLP/JSON `ExportTraceServiceResponse`. `rejectedSpans` is an int64, so a string
/// per the spec, but a number is accepted too; missing fields are defaults (opentelemetry-proto's
/// serde derive requires both fields and a number, hence this hand decoder). An empty body is
/// full success.
pub fn decode_response_json(body: &[u8]) -> Result<PartialSuccess, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PartialSuccess::default());
    }
    let v: Value = serde_json::from_slice(body)?;
    let Some(p) = v.get("partialSuccess").filter(|p| p.is_object()) else {
        return Ok(PartialSuccess::default());
    };
    // `rejectedLogRecords` in a logs response.
    let count = p
        .get("rejectedSpans")
        .or_else(|| p.get("rejectedLogRecords"));
    let rejected = match count {
        Some(Value::String(s)) => s.trim().parse::<u64>().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    let message = p
        .get("errorMessage")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    Ok(PartialSuccess { rejected, message })
}

// ---------------------------------------------------------------- gRPC status details

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    /// The gRPC status code.
    pub code: i32,
    #[prost(string, tag = "2")]
    /// The status message.
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    /// Typed details, `RetryInfo` among them.
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    /// The type of `value`.
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    /// The encoded message.
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    /// How long the client should wait.
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    /// Whole seconds (signed, as the server sends them).
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    /// Nanoseconds (signed, as the server sends them).
    pub nanos: i32,
}

/// The `type_url` of a `google.rpc.RetryInfo` detail.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay a gRPC server requests in its status details (`grpc-status-details-bin`;
/// OTLP/gRPC spec: a throttling server "MAY" send
/// `google.rpc.RetryInfo` in the status details; the client "SHOULD" honour it).
pub fn grpc_retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE)
        .find_map(|a| RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay)
        .map(|d| {
            // Saturating: the values are the server's, `i64::MAX` seconds included.
            Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
                .saturating_add(Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::assemble::{AnyValue as A, Event, KeyValue as Kv, Link, SpanData};
    use crate::span_line::{SpanId, TraceId};
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::Status;
    use serde_json::json;

    fn kv(key: &str, value: A) -> Kv {
        Kv {
            key: key.to_owned(),
            value,
        }
    }

    fn span(name: &str, service: &str) -> Span {
        Span::from_data(&data(name, service))
    }

    fn data(name: &str, service: &str) -> SpanData {
        SpanData {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            parent_span_id: None,
            name: name.to_owned(),
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_001_234_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            service: service.to_owned(),
            resource: Vec::new(),
            dropped: (0, 0, 0),
        }
    }

    fn full_span() -> Span {
        Span::from_data(&full_data())
    }

    fn full_data() -> SpanData {
        let mut s = data("service-egress", "express-app");
        s.parent_span_id = SpanId::from_hex("a3ce929d0e0e4736");
        s.kind = SpanKind::Client;
        s.status = StatusCode::Error;
        s.status_message = "upstream returned 500".to_owned();
        s.attributes = vec![
            kv("http.method", A::Str("POST".into())),
            kv("http.status_code", A::Int(500)),
            kv("ratio", A::Float(0.5)),
            kv("retry", A::Bool(false)),
            kv("zero", A::Int(0)),
        ];
        s.events = vec![Event {
            time_unix_nano: 1_700_000_000_000_500_000,
            name: "done".into(),
            attributes: vec![kv("n", A::Int(-3))],
        }];
        s.links = vec![Link {
            trace_id: TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            span_id: SpanId::from_hex("b7ad6b7169203331").unwrap(),
            attributes: vec![kv("why", A::Str("batch".into()))],
        }];
        s.resource = vec![kv("cloud.provider", A::Str("aws".into()))];
        s.dropped = (1, 2, 3);
        s
    }

    #[test]
    fn kinds_and_statuses_map_to_proto_numbers() {
        let kinds = [
            (SpanKind::Internal, 1),
            (SpanKind::Server, 2),
            (SpanKind::Client, 3),
            (SpanKind::Producer, 4),
            (SpanKind::Consumer, 5),
        ];
        for (k, n) in kinds {
            assert_eq!(proto_kind(k) as i32, n, "{k:?}");
        }
        let statuses = [
            (StatusCode::Unset, 0),
            (StatusCode::Ok, 1),
            (StatusCode::Error, 2),
        ];
        for (c, n) in statuses {
            assert_eq!(proto_status(c) as i32, n, "{c:?}");
        }
    }

    #[test]
    fn attribute_values_are_typed() {
        let table = [
            (
                A::Str("x".into()),
                any_value::Value::StringValue("x".into()),
            ),
            (A::Int(-7), any_value::Value::IntValue(-7)),
            (A::Float(1.5), any_value::Value::DoubleValue(1.5)),
            (A::Bool(true), any_value::Value::BoolValue(true)),
        ];
        for (v, want) in table {
            let mut d = data("a", "svc");
            d.attributes = vec![kv("k", v)];
            let req = encode_request(&[Span::from_data(&d)]);
            let got = &req.resource_spans[0].scope_spans[0].spans[0].attributes[0];
            assert_eq!(got.key, "k");
            assert_eq!(got.value.clone().and_then(|v| v.value), Some(want));
        }
    }

    #[test]
    fn spans_group_by_service_and_resource_in_first_seen_order() {
        let a = data("a", "svc-a");
        let b = data("b", "svc-b");
        let a2 = data("a2", "svc-a");
        let mut a_other = data("a3", "svc-a");
        a_other.resource = vec![kv("faas.name", A::Str("f".into()))];
        let mut a_float = data("a4", "svc-a");
        a_float.resource = vec![kv("x", A::Float(1.0))];
        let mut a_int = data("a5", "svc-a");
        a_int.resource = vec![kv("x", A::Int(1))];
        let spans: Vec<Span> = [a, b, a2, a_other, a_float, a_int]
            .iter()
            .map(Span::from_data)
            .collect();
        let req = encode_request(&spans);
        let names: Vec<Vec<&str>> = req
            .resource_spans
            .iter()
            .map(|rs| {
                assert_eq!(rs.scope_spans.len(), 1);
                rs.scope_spans[0]
                    .spans
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["a", "a2"],
                vec!["b"],
                vec!["a3"],
                vec!["a4"],
                vec!["a5"]
            ]
        );
        let scope = req.resource_spans[0].scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, "spanline");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn resource_gets_service_name_once() {
        let mut s = data("a", "api");
        s.resource = vec![
            kv("service.name", A::Str("stale".into())),
            kv("faas.name", A::Str("f".into())),
        ];
        let req = encode_request(&[Span::from_data(&s)]);
        let attrs = &req.resource_spans[0].resource.as_ref().unwrap().attributes;
        let keys: Vec<&str> = attrs.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "faas.name"]);
        assert_eq!(
            attrs[0].value.clone().and_then(|v| v.value),
            Some(any_value::Value::StringValue("api".into()))
        );
    }

    #[test]
    fn span_fields_map_one_to_one() {
        let req = encode_request(&[full_span()]);
        let p = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex(&p.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "ids are raw bytes"
        );
        assert_eq!(hex(&p.span_id), "00f067aa0ba902b7");
        assert_eq!(hex(&p.parent_span_id), "a3ce929d0e0e4736");
        assert_eq!(p.kind, 3);
        assert_eq!(
            p.status,
            Some(Status {
                message: "upstream returned 500".into(),
                code: 2
            })
        );
        assert_eq!(
            (p.start_time_unix_nano, p.end_time_unix_nano),
            (1_700_000_000_000_000_000, 1_700_000_000_001_234_000)
        );
        assert_eq!(p.attributes.len(), 5);
        assert_eq!(p.events[0].time_unix_nano, 1_700_000_000_000_500_000);
        assert_eq!(p.events[0].attributes[0].key, "n");
        assert_eq!(hex(&p.links[0].span_id), "b7ad6b7169203331");
        assert_eq!(p.links[0].attributes[0].key, "why");
        assert_eq!(
            (
                p.dropped_attributes_count,
                p.dropped_events_count,
                p.dropped_links_count
            ),
            (1, 2, 3)
        );
        let root = &encode_request(&[span("r", "s")]).resource_spans[0].scope_spans[0].spans[0];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.status, None, "unset status without message is absent");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn json_shape_of_one_span() {
        let json: Value = serde_json::from_str(&to_json(&encode_request(&[full_span()]))).unwrap();
        let want = json!({
          "resourceSpans": [{
            "resource": {"attributes": [
              {"key": "service.name", "value": {"stringValue": "express-app"}},
              {"key": "cloud.provider", "value": {"stringValue": "aws"}}
            ]},
            "scopeSpans": [{
              "scope": {"name": "spanline", "version": env!("CARGO_PKG_VERSION")},
              "spans": [{
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
                "parentSpanId": "a3ce929d0e0e4736",
                "name": "service-egress",
                "kind": 3,
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000001234000",
                "attributes": [
                  {"key": "http.method", "value": {"stringValue": "POST"}},
                  {"key": "http.status_code", "value": {"intValue": "500"}},
                  {"key": "ratio", "value": {"doubleValue": 0.5}},
                  {"key": "retry", "value": {"boolValue": false}},
                  {"key": "zero", "value": {"intValue": "0"}}
                ],
                "droppedAttributesCount": 1,
                "events": [{
                  "timeUnixNano": "1700000000000500000",
                  "name": "done",
                  "attributes": [{"key": "n", "value": {"intValue": "-3"}}]
                }],
                "droppedEventsCount": 2,
                "links": [{
                  "traceId": "0af7651916cd43dd8448eb211c80319c",
                  "spanId": "b7ad6b7169203331",
                  "attributes": [{"key": "why", "value": {"stringValue": "batch"}}]
                }],
                "droppedLinksCount": 3,
                "status": {"message": "upstream returned 500", "code": 2}
              }]
            }]
          }]
        });
        similar_asserts::assert_eq!(json, want);
    }

    #[test]
    fn json_root_span_omits_defaults_and_parses_back() {
        let req = encode_request(&[span("root", "api")]);
        let text = to_json(&req);
        assert!(!text.contains("null"), "{text}");
        assert!(!text.contains("parentSpanId"), "{text}");
        assert!(!text.contains("flags"), "{text}");
        assert!(!text.contains("entityRefs"), "{text}");
        // opentelemetry-proto reads it back into the same request.
        let back: ExportTraceServiceRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, req);
        // One line: the file sink relies on it.
        assert!(!text.contains('\n'));
    }

    #[test]
    fn json_full_span_parses_back_to_the_same_request() {
        let req = encode_request(&[full_span(), span("other", "api")]);
        let back: ExportTraceServiceRequest = serde_json::from_str(&to_json(&req)).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn protobuf_round_trip() {
        let req = encode_request(&[full_span()]);
        let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn partial_success_from_protobuf() {
        let resp = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            decode_response_proto(&resp.encode_to_vec()).unwrap(),
            PartialSuccess {
                rejected: 2,
                message: Some("too old".into())
            }
        );
        assert_eq!(
            decode_response_proto(b"").unwrap(),
            PartialSuccess::default()
        );
        assert!(decode_response_proto(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn partial_success_from_json() {
        let table: [(&str, PartialSuccess); 6] = [
            ("", PartialSuccess::default()),
            ("{}", PartialSuccess::default()),
            (
                r#"{"partialSuccess":{"rejectedSpans":"5","errorMessage":"bad"}}"#,
                PartialSuccess {
                    rejected: 5,
                    message: Some("bad".into()),
                },
            ),
            (
                r#"{"partialSuccess":{"rejectedSpans":5}}"#,
                PartialSuccess {
                    rejected: 5,
                    message: None,
                },
            ),
            (
                r#"{"partialSuccess":{"errorMessage":"slow down"}}"#,
                PartialSuccess {
                    rejected: 0,
                    message: Some("slow down".into()),
                },
            ),
            (r#"{"partialSuccess":{}}"#, PartialSuccess::default()),
        ];
        for (body, want) in table {
            assert_eq!(
                decode_response_json(body.as_bytes()).unwrap(),
                want,
                "{body}"
            );
        }
        assert!(decode_response_json(b"<html>").is_err());
    }

    /// The encoder this module replaced (one prost struct per span, grouped by service and
    /// resource attributes): the reference the hand-written bytes must match.
    fn reference_request(spans: &[SpanData]) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        fn key_value(kv: &Kv) -> KeyValue {
            let value = match &kv.value {
                A::Str(v) => any_value::Value::StringValue(v.clone()),
                A::Int(v) => any_value::Value::IntValue(*v),
                A::Float(v) => any_value::Value::DoubleValue(*v),
                A::Bool(v) => any_value::Value::BoolValue(*v),
            };
            KeyValue {
                key: kv.key.clone(),
                value: Some(AnyValue { value: Some(value) }),
                ..KeyValue::default()
            }
        }
        let mut out: Vec<(String, ResourceSpans)> = Vec::new();
        for s in spans {
            let key = format!("{:?}{:?}", s.service, s.resource);
            let i = match out.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    let mut attributes = vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(s.service.clone())),
                        }),
                        ..KeyValue::default()
                    }];
                    attributes.extend(
                        s.resource
                            .iter()
                            .filter(|kv| kv.key != "service.name")
                            .map(key_value),
                    );
                    out.push((
                        key,
                        ResourceSpans {
                            resource: Some(Resource {
                                attributes,
                                ..Resource::default()
                            }),
                            scope_spans: vec![ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: SCOPE_NAME.into(),
                                    version: SCOPE_VERSION.into(),
                                    ..InstrumentationScope::default()
                                }),
                                ..ScopeSpans::default()
                            }],
                            ..ResourceSpans::default()
                        },
                    ));
                    out.len() - 1
                }
            };
            let status = if s.status == StatusCode::Unset && s.status_message.is_empty() {
                None
            } else {
                Some(Status {
                    message: s.status_message.clone(),
                    code: proto_status(s.status) as i32,
                })
            };
            out[i].1.scope_spans[0]
                .spans
                .push(opentelemetry_proto::tonic::trace::v1::Span {
                    trace_id: s.trace_id.0.to_vec(),
                    span_id: s.span_id.0.to_vec(),
                    parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
                    name: s.name.clone(),
                    kind: proto_kind(s.kind) as i32,
                    start_time_unix_nano: s.start_unix_nano,
                    end_time_unix_nano: s.end_unix_nano,
                    attributes: s.attributes.iter().map(key_value).collect(),
                    dropped_attributes_count: s.dropped.0,
                    events: s
                        .events
                        .iter()
                        .map(|e| span::Event {
                            time_unix_nano: e.time_unix_nano,
                            name: e.name.clone(),
                            attributes: e.attributes.iter().map(key_value).collect(),
                            dropped_attributes_count: 0,
                        })
                        .collect(),
                    dropped_events_count: s.dropped.1,
                    links: s
                        .links
                        .iter()
                        .map(|l| span::Link {
                            trace_id: l.trace_id.0.to_vec(),
                            span_id: l.span_id.0.to_vec(),
                            attributes: l.attributes.iter().map(key_value).collect(),
                            ..span::Link::default()
                        })
                        .collect(),
                    dropped_links_count: s.dropped.2,
                    status,
                    ..Default::default()
                });
        }
        ExportTraceServiceRequest {
            resource_spans: out.into_iter().map(|(_, rs)| rs).collect(),
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = A> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,200}".prop_map(A::Str),
            any::<i64>().prop_map(A::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(A::Float),
            any::<bool>().prop_map(A::Bool),
        ]
    }

    fn arb_kvs(n: usize) -> impl proptest::strategy::Strategy<Value = Vec<Kv>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            ("[a-z.]{1,12}", arb_value()).prop_map(|(key, value)| Kv { key, value }),
            0..n,
        )
    }

    fn arb_span() -> impl proptest::strategy::Strategy<Value = SpanData> {
        use proptest::prelude::*;
        (
            (
                any::<[u8; 16]>(),
                any::<[u8; 8]>(),
                any::<Option<[u8; 8]>>(),
            ),
            (".{0,150}", 0u8..5, 0u8..3, ".{0,300}"),
            (any::<u64>(), any::<u64>()),
            (arb_kvs(6), arb_kvs(3)),
            proptest::collection::vec((any::<u64>(), ".{0,20}", arb_kvs(3)), 0..3),
            proptest::collection::vec((any::<[u8; 16]>(), any::<[u8; 8]>(), arb_kvs(2)), 0..2),
            (0u8..3, any::<(u32, u32, u32)>()),
        )
            .prop_map(
                |(
                    ids,
                    (name, kind, status, msg),
                    times,
                    (attrs, res),
                    events,
                    links,
                    (svc, dropped),
                )| {
                    SpanData {
                        trace_id: TraceId(ids.0),
                        span_id: SpanId(ids.1),
                        parent_span_id: ids.2.map(SpanId),
                        name,
                        kind: [
                            SpanKind::Internal,
                            SpanKind::Server,
                            SpanKind::Client,
                            SpanKind::Producer,
                            SpanKind::Consumer,
                        ][kind as usize],
                        status: [StatusCode::Unset, StatusCode::Ok, StatusCode::Error]
                            [status as usize],
                        status_message: msg,
                        start_unix_nano: times.0,
                        end_unix_nano: times.1,
                        attributes: attrs,
                        events: events
                            .into_iter()
                            .map(|(t, name, attributes)| Event {
                                time_unix_nano: t,
                                name,
                                attributes,
                            })
                            .collect(),
                        links: links
                            .into_iter()
                            .map(|(t, s, attributes)| Link {
                                trace_id: TraceId(t),
                                span_id: SpanId(s),
                                attributes,
                            })
                            .collect(),
                        service: format!("svc-{svc}"),
                        resource: res
                            .into_iter()
                            .filter(|kv| kv.key != "service.name")
                            .collect(),
                        dropped,
                    }
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn written_requests_match_the_reference_encoder(
            spans in proptest::collection::vec(arb_span(), 0..12),
        ) {
            let ours: Vec<Span> = spans.iter().map(Span::from_data).collect();
            let mut buf = Vec::new();
            write_request(&ours, &mut buf);
            let decoded = ExportTraceServiceRequest::decode(buf.as_slice()).unwrap();
            proptest::prop_assert_eq!(decoded, reference_request(&spans));
            // And each span reads back to what it was built from.
            for (s, d) in ours.iter().zip(&spans) {
                proptest::prop_assert_eq!(&s.data(), d);
            }
        }
    }
}
