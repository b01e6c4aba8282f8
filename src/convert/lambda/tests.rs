//! The event handling with an in-memory sink: shapes, decoding, per-record outcomes, the
//! deadline, the headers secret. Real backends and the runtime loop: tests/lambda.rs.

use super::*;
use crate::convert::assemble::Span;
use crate::convert::sink::MemorySink;
use std::io::Write as _;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn trace(n: u8) -> [u8; 16] {
    [n; 16]
}

/// A root span line of trace `[n; 16]`, span `[s; 8]`.
fn span_line(n: u8, s: u8) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "SPLN1 {}{} 1700000000000000 1500s handler k=v;",
        b.encode(trace(n)),
        b.encode([s; 8])
    )
}

fn payload(kind: &str, group: &str, messages: &[String]) -> String {
    let events: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_700_000_000_000i64 + i as i64, "message": m}))
        .collect();
    serde_json::json!({
        "messageType": kind, "owner": "123456789012", "logGroup": group,
        "logStream": "2024/05/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscriptionFilters": ["spanline"], "logEvents": events,
    })
    .to_string()
}

/// A payload whose events carry the given times (ms since the epoch).
fn payload_at(group: &str, events: &[(i64, String)]) -> String {
    let events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (t, m))| serde_json::json!({"id": i.to_string(), "timestamp": t, "message": m}))
        .collect();
    serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": group,
        "logStream": "2024/05/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "subscriptionFilters": ["spanline"], "logEvents": events,
    })
    .to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn subscription_event(p: &str) -> Value {
    serde_json::json!({"awslogs": {"data": B64.encode(gzip(p.as_bytes()))}})
}

fn kinesis_event(records: &[Vec<u8>]) -> Value {
    let recs: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0", "partitionKey": "k",
                    "sequenceNumber": format!("4959{i:04}"), "data": B64.encode(d),
                    "approximateArrivalTimestamp": 1_700_000_000.5
                },
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:4959{i:04}"),
                "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/r",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s"
            })
        })
        .collect();
    serde_json::json!({ "Records": recs })
}

fn firehose_event(records: &[Vec<u8>]) -> Value {
    let recs: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::json!({
                "recordId": format!("r{i}"), "approximateArrivalTimestamp": 1_700_000_000_500i64,
                "data": B64.encode(d)
            })
        })
        .collect();
    serde_json::json!({
        "invocationId": "inv-1", "region": "us-east-1",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/d",
        "records": recs
    })
}

fn handler(sink: MemorySink) -> Handler<MemorySink> {
    Handler::new(sink)
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn direct_subscription_event_delivers_its_spans() {
    let sink = MemorySink::default();
    let p = payload(
        "DATA_MESSAGE",
        "/aws/lambda/orders",
        &[span_line(1, 1), "noise".into(), span_line(1, 2)],
    );
    let (report, r) = block(handler(sink.clone()).handle(subscription_event(&p), None));
    assert_eq!(r.unwrap(), Value::Null);
    assert_eq!(sink.spans().len(), 2);
    assert_eq!(
        (
            report.event,
            report.items,
            report.items_ok,
            report.log_events
        ),
        (Some(EventKind::Subscription), 1, 1, 3)
    );
    assert_eq!(
        (report.spans, report.spans_delivered, report.foreign),
        (2, 2, 1)
    );
    // The service defaults to the function name of the group.
    assert!(sink.spans().iter().all(|s| s.service() == "orders"));
}

#[test]
fn refused_spans_fail_a_direct_subscription_event() {
    let sink = MemorySink::new().refuse_trace(crate::span_line::TraceId(trace(7)));
    let p = payload("DATA_MESSAGE", "/aws/lambda/f", &[span_line(7, 1)]);
    let (report, r) = block(handler(sink).handle(subscription_event(&p), None));
    let e = r.unwrap_err();
    assert!(
        matches!(e, LambdaError::NotDelivered { failed: 1, .. }),
        "{e}"
    );
    assert!(!e.is_retryable());
    assert_eq!(report.items_failed, 1);
    assert!(report.error.as_deref().unwrap().contains("refused"));
    let d: lambda_runtime::Diagnostic = e.into();
    assert_eq!(d.error_type, "spanline.BackendRefused");
}

#[test]
fn control_messages_and_unknown_events() {
    let sink = MemorySink::default();
    let p = payload(
        "CONTROL_MESSAGE",
        "",
        &["CWL CONTROL MESSAGE: Checking health of destination Kinesis stream.".into()],
    );
    let (report, r) = block(handler(sink.clone()).handle(subscription_event(&p), None));
    assert_eq!(r.unwrap(), Value::Null);
    assert_eq!((report.items_control, report.log_events), (1, 0));
    let (_, r) = block(handler(sink.clone()).handle(serde_json::json!({"hello": 1}), None));
    assert!(matches!(r, Err(LambdaError::UnknownEvent)));
    let (_, r) = block(handler(sink.clone()).handle(serde_json::json!([1]), None));
    assert!(matches!(r, Err(LambdaError::UnknownEvent)));
    let bad = serde_json::json!({"awslogs": {"data": "bm90IGd6aXA="}});
    let (report, r) = block(handler(sink.clone()).handle(bad, None));
    assert!(matches!(r, Err(LambdaError::InvalidPayload(_))), "{r:?}");
    assert!(report.error.is_some());
    assert!(sink.spans().is_empty());
}

#[test]
fn kinesis_reports_only_the_records_whose_spans_were_refused() {
    let sink = MemorySink::new().refuse_trace(crate::span_line::TraceId(trace(9)));
    let records = vec![
        gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(1, 1)]).as_bytes()),
        gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(9, 2)]).as_bytes()),
        gzip(payload("CONTROL_MESSAGE", "", &["CWL CONTROL MESSAGE".into()]).as_bytes()),
        b"not a payload".to_vec(),
        gzip(
            payload(
                "DATA_MESSAGE",
                "/aws/lambda/b",
                &[span_line(2, 3), span_line(9, 4)],
            )
            .as_bytes(),
        ),
        gzip(payload("DATA_MESSAGE", "/aws/lambda/b", &["just text".into()]).as_bytes()),
    ];
    let (report, r) = block(handler(sink.clone()).handle(kinesis_event(&records), None));
    let v = r.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"batchItemFailures": [
            {"itemIdentifier": "49590001"}, {"itemIdentifier": "49590004"}
        ]})
    );
    assert_eq!(
        (
            report.items,
            report.items_ok,
            report.items_failed,
            report.items_control,
            report.items_invalid
        ),
        (6, 2, 2, 1, 1)
    );
    let sent = sink.spans();
    assert_eq!(sent.len(), 1, "only the first record's span is accepted");
    assert_eq!(sent[0].trace_id.0, trace(1));
}

#[test]
fn kinesis_without_failures_answers_an_empty_list() {
    let records = vec![gzip(
        payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(3, 1)]).as_bytes(),
    )];
    let (_, r) = block(handler(MemorySink::default()).handle(kinesis_event(&records), None));
    assert_eq!(r.unwrap(), serde_json::json!({"batchItemFailures": []}));
}

#[test]
fn firehose_records_come_back_with_their_data_and_a_result() {
    let sink = MemorySink::default();
    let records = vec![
        gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(4, 1)]).as_bytes()),
        gzip(payload("CONTROL_MESSAGE", "", &["CWL CONTROL MESSAGE".into()]).as_bytes()),
        b"garbage".to_vec(),
        // Two payloads in one record, as gzip members, and plain JSON.
        [
            gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(4, 2)]).as_bytes()),
            gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(4, 3)]).as_bytes()),
        ]
        .concat(),
        payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(4, 4)]).into_bytes(),
    ];
    let (report, r) = block(handler(sink.clone()).handle(firehose_event(&records), None));
    let v = r.unwrap();
    let out = v["records"].as_array().unwrap();
    let results: Vec<&str> = out.iter().map(|r| r["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["Ok", "Dropped", "ProcessingFailed", "Ok", "Ok"]);
    for (i, (o, d)) in out.iter().zip(&records).enumerate() {
        assert_eq!(o["recordId"], format!("r{i}"));
        assert_eq!(B64.decode(o["data"].as_str().unwrap()).unwrap(), *d);
    }
    assert_eq!(sink.spans().len(), 4);
    assert_eq!(report.spans_delivered, 4);
}

#[test]
fn firehose_fails_the_invocation_when_spans_are_refused() {
    let sink = MemorySink::new().refuse_trace(crate::span_line::TraceId(trace(5)));
    let records = vec![
        gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(4, 1)]).as_bytes()),
        gzip(payload("DATA_MESSAGE", "/aws/lambda/a", &[span_line(5, 1)]).as_bytes()),
    ];
    let (_, r) = block(handler(sink).handle(firehose_event(&records), None));
    assert!(
        matches!(
            r,
            Err(LambdaError::NotDelivered {
                failed: 1,
                items: 2,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn a_backend_slower_than_the_deadline_fails_the_records() {
    let sink = MemorySink::new().hang();
    let mut h = handler(sink);
    h.deadline_margin = Duration::from_millis(100);
    let p = payload("DATA_MESSAGE", "/aws/lambda/f", &[span_line(6, 1)]);
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_millis(400);
    let (report, r) = block(h.handle(subscription_event(&p), Some(deadline)));
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            LambdaError::NotDelivered {
                source: ItemError::Deadline,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_eq!(report.items_failed, 1);
}

#[test]
fn report_is_one_json_line_with_its_counters() {
    let r = Report {
        event: Some(EventKind::Kinesis),
        items: 3,
        spans: 7,
        ..Report::default()
    };
    let line = r.json_line();
    assert!(!line.contains('\n'));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["spanline"], "lambda");
    assert_eq!(v["event"], "kinesis");
    assert_eq!(
        (v["items"].as_u64(), v["spans"].as_u64()),
        (Some(3), Some(7))
    );
    assert!(v["error"].is_null());
}

#[test]
fn headers_secret_in_both_formats_and_no_value_in_errors() {
    assert_eq!(
        headers_from_secret(r#"{"Authorization":"Bearer s3cr3t-token","x-team":7}"#).unwrap(),
        vec![
            ("authorization".to_owned(), "Bearer s3cr3t-token".to_owned()),
            ("x-team".to_owned(), "7".to_owned())
        ]
    );
    assert_eq!(
        headers_from_secret(" api-key=s3cr3t-token,x-b=2 ").unwrap(),
        vec![
            ("api-key".to_owned(), "s3cr3t-token".to_owned()),
            ("x-b".to_owned(), "2".to_owned())
        ]
    );
    for bad in [
        r#"{"a": {"nested": "s3cr3t-token"}}"#,
        "{not json s3cr3t-token",
        "s3cr3t-token",
        r#"{"": "s3cr3t-token"}"#,
    ] {
        let e = headers_from_secret(bad).unwrap_err().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}

/// The traffic of one log stream: a cold start, a plain invocation, a failing one and a timeout
/// whose function only announced its span (an open record). Node prefixes carry request ids.
fn stream_traffic() -> Vec<String> {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut lines = vec!["INIT_START Runtime Version: nodejs:20.v13".to_owned()];
    for (i, kind) in ["ok", "ok", "error", "timeout"].iter().enumerate() {
        let req = format!("c793869b-ee49-115b-a5b6-4fd21e8dec{i:02}");
        let trace = b.encode([i as u8 + 0x10; 16]);
        let caller = b.encode([0xca, i as u8, 0, 0, 0, 0, 0, 1]);
        let root = b.encode([0xa0, i as u8, 0, 0, 0, 0, 0, 1]);
        let child = b.encode([0xb0, i as u8, 0, 0, 0, 0, 0, 1]);
        let p = format!("2023-11-14T22:13:20.000Z\t{req}\tINFO\t");
        lines.push(format!("START RequestId: {req} Version: $LATEST"));
        if *kind == "timeout" {
            lines.push(format!(
                "{p}SPLN1 {trace}{root}{caller} 1700000000000000 0su handler;"
            ));
            lines.push(format!(
                "2023-11-14T22:13:23.000Z {req} Task timed out after 3.00 seconds"
            ));
        } else {
            lines.push(format!(
                "{p}SPLN1 {trace}{child}{root} 1700000000000100 50c call;"
            ));
            let status = if *kind == "error" { "e" } else { "" };
            lines.push(format!(
                "{p}SPLN1 {trace}{root}{caller} 1700000000000000 900s{status} handler;"
            ));
        }
        lines.push(format!("END RequestId: {req}"));
        let extra = if *kind == "timeout" {
            "Status: timeout\t"
        } else {
            ""
        };
        let init = if i == 0 {
            "Init Duration: 120.00 ms\t"
        } else {
            ""
        };
        lines.push(format!(
            "REPORT RequestId: {req}\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\t{init}{extra}"
        ));
    }
    lines
}

/// Issue "One streaming pipeline", tree (c): the same traffic cut into two subscription
/// deliveries at every possible boundary. Whatever the cut, no span id is sent in two versions,
/// no trace id is invented, every span the function printed arrives once, and an invocation
/// span is sent at most once — once, whole, by the delivery holding its REPORT whenever that
/// delivery knows its trace (its root span, the open record of a timed-out function); the rest
/// is counted as unplaced, never sent under a made-up trace.
#[test]
fn an_invocation_cut_across_deliveries_at_any_boundary_is_sent_once_never_in_two_versions() {
    // One event every 10 ms, as CloudWatch stamps them.
    let lines: Vec<(i64, String)> = stream_traffic()
        .into_iter()
        .enumerate()
        .map(|(i, l)| (1_700_000_000_000 + 10 * i as i64, l))
        .collect();
    let whole = {
        let sink = MemorySink::new();
        let p = payload_at("/aws/lambda/orders", &lines);
        let (_, r) = block(handler(sink.clone()).handle(subscription_event(&p), None));
        r.unwrap();
        sink.spans()
    };
    let function_spans: Vec<_> = whole
        .iter()
        .filter(|s| {
            s.name() != "init"
                && !s
                    .data()
                    .attributes
                    .iter()
                    .any(|a| a.key == "faas.invocation_id")
        })
        .map(|s| s.span_id)
        .collect();
    assert_eq!(
        function_spans.len(),
        7,
        "the function's spans, the announced one included"
    );
    // What CloudWatch holds of the stream, for looking an invocation up again.
    let stored: Vec<crate::convert::record::LogRecord> = {
        let mut got = Vec::new();
        let p = payload_at("/aws/lambda/orders", &lines);
        let mut flush = |b: crate::convert::record::RecordBatch| {
            got.extend(b.iter().map(|r| r.to_record()));
            Some(crate::convert::record::RecordBatch::default())
        };
        let mut out = crate::convert::source::payload::BatchOut::new(
            crate::convert::record::RecordBatch::default(),
            1 << 20,
            &mut flush,
        );
        crate::convert::source::payload::decode_payload(
            p.as_bytes(),
            Limits::default(),
            "",
            &mut out,
        )
        .unwrap();
        out.flush_now();
        drop(out);
        got
    };
    let mut unplaced_cuts = 0u64;
    for (cut, fetch_back) in (0..=lines.len()).flat_map(|c| [(c, false), (c, true)]) {
        let sink = MemorySink::new();
        let mut report_unplaced = 0;
        let mut fetched = 0;
        for part in [&lines[..cut], &lines[cut..]] {
            if part.is_empty() {
                continue;
            }
            let p = payload_at("/aws/lambda/orders", part);
            let mut h = handler(sink.clone());
            if fetch_back {
                h.fetch_back = Some(FetchBack::Memory(stored.clone()));
            }
            let (report, r) = block(h.handle(subscription_event(&p), None));
            r.unwrap();
            report_unplaced += report.invocations_unplaced;
            fetched += report.invocations_fetched_back;
        }
        if fetch_back {
            // Looked up again, every invocation is sent, once, whole.
            assert_eq!(
                report_unplaced, 0,
                "cut {cut}: unplaced with the fetch-back"
            );
            let whole_invocations: Vec<_> = whole
                .iter()
                .filter(|s| {
                    s.data()
                        .attributes
                        .iter()
                        .any(|a| a.key == "faas.invocation_id")
                })
                .map(Span::data)
                .collect();
            for w in &whole_invocations {
                let sent: Vec<_> = sink
                    .spans()
                    .into_iter()
                    .filter(|s| s.span_id == w.span_id)
                    .collect();
                assert_eq!(
                    sent.len(),
                    1,
                    "cut {cut}: invocation {} sent {} times",
                    w.span_id,
                    sent.len()
                );
                let d = sent[0].data();
                assert_eq!(
                    (d.trace_id, d.parent_span_id, d.status, &d.status_message),
                    (w.trace_id, w.parent_span_id, w.status, &w.status_message),
                    "cut {cut}: the invocation is whole"
                );
            }
            let _ = fetched;
        }
        let sent = sink.spans();
        let mut by_id: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
        for s in &sent {
            by_id.entry(s.span_id).or_default().push(s.data());
        }
        for (id, versions) in &by_id {
            assert!(
                versions.windows(2).all(|w| w[0] == w[1]),
                "cut {cut}: span {id} sent in {} different versions",
                versions.len()
            );
        }
        for s in &sent {
            let d = s.data();
            if let Some(r) = d.attributes.iter().find(|a| a.key == "faas.invocation_id") {
                let crate::convert::assemble::AnyValue::Str(req) = &r.value else {
                    panic!()
                };
                assert_ne!(
                    s.trace_id,
                    crate::convert::assemble::invocation::derived_trace("/aws/lambda/orders", req),
                    "cut {cut}: an invented trace id"
                );
            }
        }
        let announced = crate::span_line::SpanId([0xa0, 3, 0, 0, 0, 0, 0, 1]);
        for id in &function_spans {
            let n = by_id.get(id).map_or(0, Vec::len);
            if *id == announced {
                // The announced span of the timed-out function is sent by the delivery that
                // ends its invocation; when its open record sits in the other one, that
                // delivery cannot know it.
                assert!(n <= 1, "cut {cut}: span {id} sent {n} times");
            } else {
                assert_eq!(n, 1, "cut {cut}: span {id} sent {n} times");
            }
        }
        let invocations = by_id
            .values()
            .filter(|v| {
                v[0].attributes
                    .iter()
                    .any(|a| a.key == "faas.invocation_id")
            })
            .count() as u64;
        assert_eq!(
            invocations + report_unplaced,
            4,
            "cut {cut}: every invocation is either sent once or counted as unplaced"
        );
        unplaced_cuts += u64::from(report_unplaced > 0);
    }
    // Without the fetch-back, unplaced exactly where the delivery with the REPORT holds nothing
    // of the trace: a cut after the root span (or the open record) and before the REPORT, two
    // per invocation and one more for the timeout's own line.
    assert_eq!(unplaced_cuts, 9, "cuts that left an invocation unplaced");
}

/// A span line of trace `[n; 16]`, span `[s; 8]`, under `[p; 8]` when given, ending at `t_ms`.
fn traced_line(n: u8, s: u8, p: Option<u8>, t_ms: i64, error: bool) -> String {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "SPLN1 {}{}{} {} 1000s{} op{s};",
        b.encode(trace(n)),
        b.encode([s; 8]),
        p.map_or(String::new(), |p| b.encode([p; 8])),
        t_ms * 1000 - 1000,
        if error { "e" } else { "" }
    )
}

/// Issue "Traces worth keeping", the Lambda mode: deliveries handled by different instances
/// (fresh handlers) that share only the decision record. A trace the ratio drops whose error
/// comes in the second delivery arrives whole: the first delivery's span is read back, the
/// third's is kept by the record; a trace the ratio keeps goes out at once; a trace without an
/// error that the ratio drops sends nothing.
#[test]
fn sampled_deliveries_send_every_span_of_a_kept_trace_and_nothing_of_a_dropped_one() {
    use crate::convert::record::LogRecord;
    let group = "/aws/lambda/orders";
    let stream = "2024/05/01/[$LATEST]0123456789abcdef0123456789abcdef";
    let t = crate::convert::time::now_ms() - 60_000;
    // [0x77; 16] and [0x88; 16]: dropped by the ratio at 0.1; [0x01; 16]: kept by it.
    let (dropped_t, quiet_t, ratio_t) = (0x77, 0x88, 0x01);
    let d1 = vec![
        (t, traced_line(dropped_t, 2, Some(1), t, false)),
        (t + 1, traced_line(ratio_t, 1, None, t + 1, false)),
        (t + 2, traced_line(quiet_t, 1, None, t + 2, false)),
    ];
    let d2 = vec![(t + 10, traced_line(dropped_t, 1, None, t + 10, true))];
    let d3 = vec![(t + 20, traced_line(dropped_t, 3, Some(1), t + 20, false))];
    let decisions = Decisions::Memory(Arc::default());
    let policy = crate::convert::sample::Policy {
        rate: 0.1,
        ..Default::default()
    };
    // What CloudWatch holds when a delivery is handled: every line up to it.
    let ingested = |upto: &[&Vec<(i64, String)>]| -> Vec<LogRecord> {
        upto.iter()
            .flat_map(|d| d.iter())
            .map(|(ts, m)| LogRecord {
                log_group: group.into(),
                log_stream: stream.into(),
                event_id: String::new(),
                timestamp_ms: *ts,
                message: m.clone(),
            })
            .collect()
    };
    let deliver = |events: &Vec<(i64, String)>, upto: &[&Vec<(i64, String)>]| {
        let sink = MemorySink::default();
        let mut h = handler(sink.clone());
        h.fetch_back = Some(FetchBack::Memory(ingested(upto)));
        h.sampling = Some(LambdaSampling::new(
            policy.clone(),
            decisions.clone(),
            Vec::new(),
        ));
        let (report, r) = block(h.handle(subscription_event(&payload_at(group, events)), None));
        r.unwrap();
        let ids: Vec<(u8, u8)> = sink
            .spans()
            .iter()
            .map(|s| (s.trace_id.0[0], s.span_id.0[0]))
            .collect();
        (ids, report.sampling.expect("a sampling report"))
    };
    let (first, r1) = deliver(&d1, &[&d1]);
    assert_eq!(first, [(ratio_t, 1)], "{r1:?}");
    assert_eq!((r1.dropped_traces, r1.checked), (2, 2));
    let (mut second, r2) = deliver(&d2, &[&d1, &d2]);
    second.sort_unstable();
    // The error span, and read back: the first delivery's span and the error span again.
    assert_eq!(
        second,
        [(dropped_t, 1), (dropped_t, 1), (dropped_t, 2)],
        "{r2:?}"
    );
    assert_eq!((r2.recorded, r2.fetched_back_spans), (1, 2));
    let (third, r3) = deliver(&d3, &[&d1, &d2, &d3]);
    assert_eq!(third, [(dropped_t, 3)]);
    assert_eq!(r3.kept_traces.get("recorded"), Some(&1));
    assert!(!first
        .iter()
        .chain(&second)
        .chain(&third)
        .any(|(t, _)| *t == quiet_t));
}

/// `SPANLINE_LOGS`: the function's other lines of a delivered invocation go on its span as
/// `log` events (`events`) or beside it as records for the OTLP logs endpoint (`otlp`);
/// `off` counts them as other lines.
#[test]
fn invocation_log_lines_ride_on_their_span_as_events_or_records() {
    let request = "33333333-aaaa-4bbb-8ccc-000000000003";
    let at = 1_700_000_000_000i64;
    let events = vec![
        (at, format!("START RequestId: {request} Version: $LATEST")),
        (
            at + 2,
            format!("[ERROR]\t2023-11-14T22:13:20.002Z\t{request}\tpayment failed"),
        ),
        // A root span (op9) over at+2..at+3 ms: the invocation's trace, and the line's span.
        (at + 3, traced_line(5, 9, None, at + 3, false)),
        (at + 3, format!("END RequestId: {request}")),
        (
            at + 3,
            format!("REPORT RequestId: {request}\tDuration: 3.00 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 70 MB\t"),
        ),
    ];
    let p = payload_at("/aws/lambda/orders", &events);
    let mut seen = Vec::new();
    for logs in [
        crate::convert::Logs::Off,
        crate::convert::Logs::Events,
        crate::convert::Logs::Otlp,
    ] {
        let sink = MemorySink::default();
        let mut h = handler(sink.clone());
        h.logs = logs;
        let (_, r) = block(h.handle(subscription_event(&p), None));
        assert_eq!(r.unwrap(), Value::Null);
        let spans = sink.spans();
        assert_eq!(spans.len(), 2, "{logs:?}: the span and the invocation's");
        let op = spans
            .iter()
            .find(|s| s.name() == "op9")
            .expect("the function's span");
        let events = op.data().events.iter().filter(|e| e.name == "log").count();
        let records: Vec<String> = op
            .logs()
            .iter()
            .map(|l| format!("{} {}", l.level, l.message))
            .collect();
        seen.push((logs, events, records));
    }
    assert_eq!(
        seen,
        [
            (crate::convert::Logs::Off, 0, vec![]),
            (crate::convert::Logs::Events, 1, vec![]),
            (
                crate::convert::Logs::Otlp,
                0,
                vec!["ERROR payment failed".to_owned()]
            ),
        ]
    );
}
