//! Pure OTLP encoding: assembled [`Span`]s → `ExportTraceServiceRequest` (grouped by
//! resource), the request as OTLP/JSON, and the export response (partial success) decoded from
//! protobuf or JSON. No I/O: the transports in `http` and `grpc` only move these bytes.

use crate::convert::assemble::{self, Span};
use crate::span_line::{SpanKind, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Status};
use prost::Message as _;
use serde_json::Value;
use std::collections::HashMap;

/// The instrumentation scope every span is reported under.
pub const SCOPE_NAME: &str = "spanline";
/// The scope version: this crate's version.
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds one export request: one `ResourceSpans` per distinct (service, resource attributes),
/// in first-seen order, each with a single `ScopeSpans` (scope `spanline`, this crate's version).
pub fn encode_request(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut key = Vec::new();
    for s in spans {
        key.clear();
        resource_key(s, &mut key);
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), out.len());
                out.push(resource_spans(s));
                out.len() - 1
            }
        };
        // `resource_spans` always creates exactly one ScopeSpans.
        if let Some(scope) = out[i].scope_spans.first_mut() {
            scope.spans.push(proto_span(s));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

/// An unambiguous byte key for (service, resource attributes): length-prefixed strings and
/// tagged values, so that no two different resources share a key (floats compare by bits).
fn resource_key(s: &Span, key: &mut Vec<u8>) {
    fn put(key: &mut Vec<u8>, bytes: &[u8]) {
        key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        key.extend_from_slice(bytes);
    }
    put(key, s.service.as_bytes());
    for kv in &s.resource {
        put(key, kv.key.as_bytes());
        match &kv.value {
            assemble::AnyValue::Str(v) => {
                key.push(b's');
                put(key, v.as_bytes());
            }
            assemble::AnyValue::Int(v) => {
                key.push(b'i');
                key.extend_from_slice(&v.to_le_bytes());
            }
            assemble::AnyValue::Float(v) => {
                key.push(b'f');
                key.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            assemble::AnyValue::Bool(v) => {
                key.push(b'b');
                key.push(u8::from(*v));
            }
        }
    }
}

fn resource_spans(s: &Span) -> ResourceSpans {
    let mut attributes = Vec::with_capacity(s.resource.len() + 1);
    attributes.push(KeyValue {
        key: "service.name".to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.service.clone())),
        }),
        ..KeyValue::default()
    });
    // `Span::service` is authoritative; a `service.name` among the resource fields would be a
    // duplicate key, which OTLP forbids.
    attributes.extend(
        s.resource
            .iter()
            .filter(|kv| kv.key != "service.name")
            .map(key_value),
    );
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.to_owned(),
                version: SCOPE_VERSION.to_owned(),
                ..InstrumentationScope::default()
            }),
            spans: Vec::new(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn key_value(kv: &assemble::KeyValue) -> KeyValue {
    let value = match &kv.value {
        assemble::AnyValue::Str(v) => any_value::Value::StringValue(v.clone()),
        assemble::AnyValue::Int(v) => any_value::Value::IntValue(*v),
        assemble::AnyValue::Float(v) => any_value::Value::DoubleValue(*v),
        assemble::AnyValue::Bool(v) => any_value::Value::BoolValue(*v),
    };
    KeyValue {
        key: kv.key.clone(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

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

fn proto_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let status = if s.status == StatusCode::Unset && s.status_message.is_empty() {
        None
    } else {
        Some(Status {
            message: s.status_message.clone(),
            code: proto_status(s.status) as i32,
        })
    };
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: 0,
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
    }
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
pub fn to_json(req: &ExportTraceServiceRequest) -> String {
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
                if k == "value" {
                    // `KeyValue.value` is the only field named `value` in the trace protos.
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
    let rejected = match p.get("rejectedSpans") {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::assemble::{AnyValue as A, Event, KeyValue as Kv, Link};
    use crate::span_line::{SpanId, TraceId};
    use serde_json::json;

    fn kv(key: &str, value: A) -> Kv {
        Kv {
            key: key.to_owned(),
            value,
        }
    }

    pub(crate) fn span(name: &str, service: &str) -> Span {
        Span {
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
        let mut s = span("service-egress", "express-app");
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
            let got = key_value(&kv("k", v));
            assert_eq!(got.key, "k");
            assert_eq!(got.value.and_then(|v| v.value), Some(want));
        }
    }

    #[test]
    fn spans_group_by_service_and_resource_in_first_seen_order() {
        let a = span("a", "svc-a");
        let b = span("b", "svc-b");
        let a2 = span("a2", "svc-a");
        let mut a_other = span("a3", "svc-a");
        a_other.resource = vec![kv("faas.name", A::Str("f".into()))];
        let mut a_float = span("a4", "svc-a");
        a_float.resource = vec![kv("x", A::Float(1.0))];
        let mut a_int = span("a5", "svc-a");
        a_int.resource = vec![kv("x", A::Int(1))];
        let req = encode_request(&[a, b, a2, a_other, a_float, a_int]);
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
        let mut s = span("a", "api");
        s.resource = vec![
            kv("service.name", A::Str("stale".into())),
            kv("faas.name", A::Str("f".into())),
        ];
        let req = encode_request(&[s]);
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
}
