//! Pure OTLP logs encoding (`--logs otlp`): the function's log lines the assembler kept beside
//! the spans they were written under ([`SpanLog`]) → `ExportLogsServiceRequest`s, one
//! `LogRecord` per line with the span's trace and span id, the severity from the line's level
//! and the log group and stream as attributes. No I/O: the transports move the bytes.

use crate::convert::assemble::{AnyValue, Span, SpanLog};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::collections::HashMap;

use super::encode::{PartialSuccess, SCOPE_NAME, SCOPE_VERSION};

/// The W3C `sampled` trace flag: every record belongs to a trace that was kept.
const SAMPLED: u32 = 1;

/// The OTLP severity of a level as Lambda's runtimes, the JSON log format and the common
/// logging libraries write it (case-insensitive; `WARNING`, `CRITICAL`, Python's names, Node's
/// `console` levels). Unknown or absent: unspecified (the text is kept as `severityText`).
pub fn severity(level: &str) -> SeverityNumber {
    match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => SeverityNumber::Trace,
        "DEBUG" => SeverityNumber::Debug,
        "INFO" | "LOG" | "NOTICE" => SeverityNumber::Info,
        "WARN" | "WARNING" => SeverityNumber::Warn,
        "ERROR" | "ERR" => SeverityNumber::Error,
        "FATAL" | "CRITICAL" | "CRIT" | "ALERT" | "EMERGENCY" | "PANIC" => SeverityNumber::Fatal,
        _ => SeverityNumber::Unspecified,
    }
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// A string resource attribute of `span`.
fn resource_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.resource
        .attributes
        .iter()
        .find_map(|kv| match (&kv.value, kv.key == key) {
            (AnyValue::Str(v), true) => Some(v.as_str()),
            _ => None,
        })
}

/// The record of one log line of `span`.
fn record(span: &Span, log: &SpanLog) -> LogRecord {
    let mut attributes = Vec::with_capacity(2);
    for key in ["aws.log.group.names", "aws.log.stream.names"] {
        if let Some(v) = resource_str(span, key) {
            attributes.push(str_kv(key, v));
        }
    }
    LogRecord {
        time_unix_nano: log.time_unix_nano,
        // When the converter saw the line is not known any better than when it was written.
        observed_time_unix_nano: log.time_unix_nano,
        severity_number: severity(&log.level) as i32,
        severity_text: log.level.to_string(),
        body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(any_value::Value::StringValue(log.message.to_string())),
        }),
        attributes,
        dropped_attributes_count: 0,
        flags: SAMPLED,
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        event_name: String::new(),
    }
}

/// Every log record kept beside `spans`, with its span, in input order.
pub fn log_items(spans: &[Span]) -> Vec<(&Span, &SpanLog)> {
    spans
        .iter()
        .flat_map(|s| s.logs().iter().map(move |l| (s, l)))
        .collect()
}

/// One request for `items`: one `ResourceLogs` per distinct resource of their spans (the
/// span's, decoded from its encoding: `service.name`, `faas.*`, `cloud.*`, `aws.log.*`), in
/// first-seen order, each with one `ScopeLogs` (scope `spanline`); records in input order.
pub fn logs_request(items: &[(&Span, &SpanLog)]) -> ExportLogsServiceRequest {
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    for (span, log) in items {
        let key = span.resource.encoded();
        let at = *index.entry(key).or_insert_with(|| {
            resource_logs.push(ResourceLogs {
                // The encoding was written by this crate: it decodes.
                resource: Some(Resource::decode(key).unwrap_or_default()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: SCOPE_VERSION.to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            resource_logs.len() - 1
        });
        if let Some(scope) = resource_logs[at].scope_logs.first_mut() {
            scope.log_records.push(record(span, log));
        }
    }
    ExportLogsServiceRequest { resource_logs }
}

/// The partial success of an OTLP logs response.
pub fn partial_success_of_logs(
    resp: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse,
) -> PartialSuccess {
    match resp.partial_success {
        Some(p) => PartialSuccess {
            rejected: u64::try_from(p.rejected_log_records).unwrap_or(0),
            message: Some(p.error_message).filter(|m| !m.is_empty()),
        },
        None => PartialSuccess::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::assemble::{KeyValue as Kv, SpanData};
    use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
    use std::sync::Arc;

    fn span(id: u8, group: &str, logs: &[(&str, &str)]) -> Span {
        let d = SpanData {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: None,
            name: "handler".into(),
            kind: SpanKind::Server,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: 1_000,
            end_unix_nano: 2_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            service: "checkout".into(),
            resource: vec![
                Kv::str("aws.log.group.names", group),
                Kv::str("aws.log.stream.names", "2026/12/03/[$LATEST]abc"),
            ],
            dropped: (0, 0, 0),
        };
        let mut s = Span::from_data(&d);
        s.extend_logs(
            logs.iter()
                .enumerate()
                .map(|(i, (level, message))| SpanLog {
                    time_unix_nano: 1_000 + i as u64,
                    level: (*level).into(),
                    message: (*message).into(),
                }),
        );
        s
    }

    /// The requests the sink makes of `spans`, at most `max` records each, and their sizes.
    fn encode_logs_requests(spans: &[Span], max: usize) -> Vec<(ExportLogsServiceRequest, usize)> {
        log_items(spans)
            .chunks(max)
            .map(|c| (logs_request(c), c.len()))
            .collect()
    }

    #[test]
    fn levels_map_to_otlp_severities() {
        for (level, want) in [
            ("ERROR", SeverityNumber::Error),
            ("error", SeverityNumber::Error),
            ("WARN", SeverityNumber::Warn),
            ("warning", SeverityNumber::Warn),
            ("INFO", SeverityNumber::Info),
            ("DEBUG", SeverityNumber::Debug),
            ("TRACE", SeverityNumber::Trace),
            ("FATAL", SeverityNumber::Fatal),
            ("CRITICAL", SeverityNumber::Fatal),
            ("", SeverityNumber::Unspecified),
            ("LOUD", SeverityNumber::Unspecified),
        ] {
            assert_eq!(severity(level), want, "{level:?}");
        }
    }

    #[test]
    fn records_carry_the_spans_ids_level_message_group_and_stream() {
        let spans = [
            span(
                1,
                "/aws/lambda/checkout",
                &[("ERROR", "boom"), ("", "plain")],
            ),
            span(2, "/aws/lambda/checkout", &[]),
        ];
        let reqs = encode_logs_requests(&spans, 100);
        assert_eq!(reqs.len(), 1);
        let (req, n) = &reqs[0];
        assert_eq!(*n, 2);
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let res = rl.resource.as_ref().expect("resource");
        assert_eq!(res.attributes[0], str_kv("service.name", "checkout"));
        let scope = &rl.scope_logs[0];
        assert_eq!(
            scope.scope.as_ref().map(|s| s.name.as_str()),
            Some("spanline")
        );
        let r = &scope.log_records[0];
        assert_eq!(r.trace_id, vec![7; 16]);
        assert_eq!(r.span_id, vec![1; 8]);
        assert_eq!(r.time_unix_nano, 1_000);
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.severity_text, "ERROR");
        assert_eq!(
            r.body.as_ref().and_then(|b| b.value.clone()),
            Some(any_value::Value::StringValue("boom".into()))
        );
        assert_eq!(
            r.attributes,
            [
                str_kv("aws.log.group.names", "/aws/lambda/checkout"),
                str_kv("aws.log.stream.names", "2026/12/03/[$LATEST]abc")
            ]
        );
        assert_eq!(r.flags, SAMPLED);
        let plain = &scope.log_records[1];
        assert_eq!(plain.severity_number, SeverityNumber::Unspecified as i32);
        assert_eq!(plain.severity_text, "");
    }

    #[test]
    fn requests_hold_at_most_max_records_and_group_by_resource() {
        let a = span(
            1,
            "/aws/lambda/a",
            &[("INFO", "1"), ("INFO", "2"), ("INFO", "3")],
        );
        let b = span(2, "/aws/lambda/b", &[("INFO", "4")]);
        let shared = Arc::clone(&a.resource);
        let mut c = span(3, "/aws/lambda/a", &[("INFO", "5")]);
        c.resource = shared;
        let reqs = encode_logs_requests(&[a, b, c], 4);
        let sizes: Vec<usize> = reqs.iter().map(|(_, n)| *n).collect();
        assert_eq!(sizes, [4, 1]);
        let first = &reqs[0].0;
        assert_eq!(
            first.resource_logs.len(),
            2,
            "two resources in the first request"
        );
        let bodies: Vec<String> = reqs
            .iter()
            .flat_map(|(r, _)| r.resource_logs.iter())
            .flat_map(|rl| rl.scope_logs[0].log_records.iter())
            .filter_map(|r| match r.body.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, ["1", "2", "3", "4", "5"]);
        assert!(encode_logs_requests(&[span(9, "g", &[])], 10).is_empty());
        assert_eq!(log_items(&[span(9, "g", &[("", "x")])]).len(), 1);
    }
}
