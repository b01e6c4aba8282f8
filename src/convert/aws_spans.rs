//! Records of the `aws/spans` log group: the spans CloudWatch Transaction Search stores, AWS's
//! own (API Gateway, the Lambda service) among them, one JSON object per log event. They become
//! spans of the same model as span lines, so that the converter merges them into the trace the
//! span lines make (the same span seen both ways is one span: spans are de-duplicated by id).
//!
//! The record is OpenTelemetry's span in JSON with a few AWS spellings, as AWS's documentation
//! of Transaction Search and the published processor for this group
//! (dev7a/serverless-otlp-forwarder, `forwarders/experimental/aws-span-processor`, `otlp.rs`)
//! read it:
//!
//! ```json
//! {"resource":{"attributes":{"service.name":"orders-api","cloud.provider":"aws"}},
//!  "scope":{"name":"…","version":"…"},
//!  "traceId":"5759e988bd862e3fe1be46a994272793","spanId":"53995c3f42cd8ad8",
//!  "parentSpanId":"…","name":"POST /orders","kind":"SERVER",
//!  "startTimeUnixNano":1795428059990000000,"endTimeUnixNano":1795428060400000000,
//!  "attributes":{"http.request.method":"POST","http.response.status_code":200},
//!  "status":{"code":"UNSET"},"events":[{"timeUnixNano":…,"name":"…","attributes":{}}]}
//! ```
//!
//! * `traceId`: 32 hex digits, or X-Ray's form `1-5759e988-bd862e3fe1be46a994272793`, which is
//!   the same id (X-Ray's documentation: the version, then the 8 hex digits of the epoch time and
//!   24 more, together the W3C trace id).
//! * `kind` and `status.code`: the names (`SERVER`, `ERROR`) or OTLP's numbers, also with the
//!   `SPAN_KIND_` / `STATUS_CODE_` prefixes of OTLP JSON.
//! * attribute values: strings, integers, floats, booleans; arrays and objects are kept as
//!   their JSON text.
//! * a record without `endTimeUnixNano` (a span still open) is not a span yet: skipped, counted
//!   as malformed `aws_span`, as is a record whose ids do not parse.

use crate::convert::assemble::{Event, KeyValue, SpanData};
use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
use serde_json::{Map, Value};

/// Whether `message` looks like an `aws/spans` record (a JSON object naming a trace id, a span
/// id and a start time; a JSON log record that carries a trace and span id for correlation has
/// no start time): the cheap test before parsing.
pub fn looks_like(message: &str) -> bool {
    let t = message.trim_start();
    t.starts_with('{')
        && t.contains("\"spanId\"")
        && t.contains("\"traceId\"")
        && t.contains("\"startTimeUnixNano\"")
}

/// Why a record is not a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwsSpanError {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotJson,
    /// No valid trace id.
    #[error("no valid traceId")]
    TraceId,
    /// No valid span id.
    #[error("no valid spanId")]
    SpanId,
    /// Not finished: no `endTimeUnixNano`.
    #[error("no endTimeUnixNano")]
    Open,
}

/// A trace id as `aws/spans` writes it: 32 hex digits, or X-Ray's `1-xxxxxxxx-xxxx…`.
pub fn trace_id(text: &str) -> Option<TraceId> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("1-") {
        let (time, random) = rest.split_once('-')?;
        if time.len() != 8 || random.len() != 24 {
            return None;
        }
        return TraceId::from_hex(&format!("{time}{random}"));
    }
    TraceId::from_hex(t)
}

fn u64_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        // OTLP JSON writes 64-bit integers as strings.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn kind_of(v: Option<&Value>) -> SpanKind {
    let name = match v {
        Some(Value::String(s)) => s.trim_start_matches("SPAN_KIND_").to_ascii_uppercase(),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(2) => "SERVER".into(),
            Some(3) => "CLIENT".into(),
            Some(4) => "PRODUCER".into(),
            Some(5) => "CONSUMER".into(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    match name.as_str() {
        "SERVER" => SpanKind::Server,
        "CLIENT" => SpanKind::Client,
        "PRODUCER" => SpanKind::Producer,
        "CONSUMER" => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

fn status_of(v: Option<&Value>) -> (StatusCode, String) {
    let Some(Value::Object(s)) = v else {
        return (StatusCode::Unset, String::new());
    };
    let code = match s.get("code") {
        Some(Value::String(c)) => match c
            .trim_start_matches("STATUS_CODE_")
            .to_ascii_uppercase()
            .as_str()
        {
            "OK" => StatusCode::Ok,
            "ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(1) => StatusCode::Ok,
            Some(2) => StatusCode::Error,
            _ => StatusCode::Unset,
        },
        _ => StatusCode::Unset,
    };
    let message = s
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    (code, message)
}

fn attributes(v: Option<&Value>) -> Vec<KeyValue> {
    let Some(Value::Object(m)) = v else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => KeyValue::str(k, s.clone()),
            Value::Bool(b) => KeyValue::bool(k, *b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => KeyValue::int(k, i),
                None => KeyValue::float(k, n.as_f64().unwrap_or(0.0)),
            },
            other => KeyValue::str(k, other.to_string()),
        })
        .collect()
}

/// The span of an `aws/spans` record. `default_service` names the service when the record's
/// resource does not (`service.name`, else `aws.local.service`).
pub fn parse(message: &str, default_service: &str) -> Result<SpanData, AwsSpanError> {
    let v: Map<String, Value> =
        serde_json::from_str(message.trim_start()).map_err(|_| AwsSpanError::NotJson)?;
    let trace_id = v
        .get("traceId")
        .and_then(Value::as_str)
        .and_then(trace_id)
        .ok_or(AwsSpanError::TraceId)?;
    let span_id = v
        .get("spanId")
        .and_then(Value::as_str)
        .and_then(|s| SpanId::from_hex(s.trim()))
        .ok_or(AwsSpanError::SpanId)?;
    let parent_span_id = v
        .get("parentSpanId")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| SpanId::from_hex(s.trim()));
    let end = u64_of(v.get("endTimeUnixNano")).ok_or(AwsSpanError::Open)?;
    let start = u64_of(v.get("startTimeUnixNano")).unwrap_or(end);
    let (status, status_message) = status_of(v.get("status"));
    let mut resource = attributes(v.get("resource").and_then(|r| r.get("attributes")));
    let service = ["service.name", "aws.local.service"]
        .iter()
        .find_map(|k| {
            resource.iter().find_map(|kv| match &kv.value {
                crate::convert::assemble::AnyValue::Str(s) if kv.key == *k && !s.is_empty() => {
                    Some(s.clone())
                }
                _ => None,
            })
        })
        .unwrap_or_else(|| default_service.to_owned());
    resource.retain(|kv| kv.key != "service.name");
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_object)
                .map(|e| Event {
                    time_unix_nano: u64_of(e.get("timeUnixNano")).unwrap_or(start),
                    name: e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    attributes: attributes(e.get("attributes")),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SpanData {
        trace_id,
        span_id,
        parent_span_id,
        name: v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        kind: kind_of(v.get("kind")),
        status,
        status_message,
        start_unix_nano: start,
        end_unix_nano: end.max(start),
        attributes: attributes(v.get("attributes")),
        events,
        links: Vec::new(),
        service,
        resource,
        dropped: (0, 0, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_ray_trace_ids_are_the_w3c_id() {
        assert_eq!(
            trace_id("1-5759e988-bd862e3fe1be46a994272793"),
            trace_id("5759e988bd862e3fe1be46a994272793")
        );
        assert!(trace_id("5759e988bd862e3fe1be46a994272793").is_some());
        assert_eq!(trace_id("1-5759e988-bd86"), None);
        assert_eq!(trace_id("zz"), None);
    }

    #[test]
    fn a_record_becomes_a_span_field_by_field() {
        let r = r#"{"resource":{"attributes":{"service.name":"orders-api","cloud.provider":"aws","cloud.region":"eu-west-1"}},
            "scope":{"name":"aws.apigateway"},
            "traceId":"1-5759e988-bd862e3fe1be46a994272793","spanId":"53995c3f42cd8ad8",
            "name":"POST /orders","kind":"SERVER",
            "startTimeUnixNano":1795428059990000000,"endTimeUnixNano":"1795428060400000000",
            "attributes":{"http.request.method":"POST","http.response.status_code":502,"aws.retries":[1,2],"ok":false,"ratio":0.5},
            "status":{"code":"ERROR","message":"Bad gateway"},
            "events":[{"timeUnixNano":1795428060000000000,"name":"retry","attributes":{"n":1}}]}"#;
        assert!(looks_like(r));
        let s = parse(r, "aws/spans").unwrap();
        assert_eq!(s.trace_id.to_string(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(s.span_id.to_string(), "53995c3f42cd8ad8");
        assert_eq!(s.parent_span_id, None);
        assert_eq!(
            (s.name.as_str(), s.kind),
            ("POST /orders", SpanKind::Server)
        );
        assert_eq!(
            (s.status, s.status_message.as_str()),
            (StatusCode::Error, "Bad gateway")
        );
        assert_eq!(
            (s.start_unix_nano, s.end_unix_nano),
            (1_795_428_059_990_000_000, 1_795_428_060_400_000_000)
        );
        assert_eq!(s.service, "orders-api");
        assert!(s
            .resource
            .contains(&KeyValue::str("cloud.region", "eu-west-1")));
        assert!(s
            .attributes
            .contains(&KeyValue::int("http.response.status_code", 502)));
        assert!(s
            .attributes
            .contains(&KeyValue::str("aws.retries", "[1,2]")));
        assert!(s.attributes.contains(&KeyValue::bool("ok", false)));
        assert!(s.attributes.contains(&KeyValue::float("ratio", 0.5)));
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retry");
        assert_eq!(s.events[0].time_unix_nano, 1_795_428_060_000_000_000);
    }

    #[test]
    fn kinds_and_statuses_in_every_spelling() {
        let rec = |kind: &str, code: &str| {
            format!(
                r#"{{"traceId":"5759e988bd862e3fe1be46a994272793","spanId":"53995c3f42cd8ad8","startTimeUnixNano":1,"endTimeUnixNano":2,"kind":{kind},"status":{{"code":{code}}}}}"#
            )
        };
        let s = parse(&rec("\"SPAN_KIND_CLIENT\"", "\"STATUS_CODE_OK\""), "x").unwrap();
        assert_eq!((s.kind, s.status), (SpanKind::Client, StatusCode::Ok));
        let s = parse(&rec("4", "2"), "x").unwrap();
        assert_eq!((s.kind, s.status), (SpanKind::Producer, StatusCode::Error));
        let s = parse(&rec("\"whatever\"", "\"UNSET\""), "x").unwrap();
        assert_eq!((s.kind, s.status), (SpanKind::Internal, StatusCode::Unset));
        assert_eq!(s.service, "x");
    }

    #[test]
    fn json_logs_that_carry_trace_context_are_not_records() {
        assert!(!looks_like(
            r#"{"level":"INFO","message":"SPLN1 …;","traceId":"5759e988bd862e3fe1be46a994272793","spanId":"53995c3f42cd8ad8"}"#
        ));
    }

    #[test]
    fn records_that_are_not_spans_say_why() {
        assert_eq!(parse("{", "x"), Err(AwsSpanError::NotJson));
        assert_eq!(
            parse(
                r#"{"traceId":"no","spanId":"53995c3f42cd8ad8","endTimeUnixNano":1}"#,
                "x"
            ),
            Err(AwsSpanError::TraceId)
        );
        assert_eq!(
            parse(
                r#"{"traceId":"5759e988bd862e3fe1be46a994272793","spanId":"","endTimeUnixNano":1}"#,
                "x"
            ),
            Err(AwsSpanError::SpanId)
        );
        assert_eq!(
            parse(
                r#"{"traceId":"5759e988bd862e3fe1be46a994272793","spanId":"53995c3f42cd8ad8"}"#,
                "x"
            ),
            Err(AwsSpanError::Open)
        );
    }
}
