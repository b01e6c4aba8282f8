//! `spanline lambda`: the event handler with real subscription, Kinesis and Firehose events
//! (gzip + base64 built here) sending to the real MLflow; partial failures against an
//! in-process OTLP endpoint that refuses some requests; and the real binary serving invocations
//! from a scripted Lambda Runtime API on 127.0.0.1, with its headers secret in moto's Secrets
//! Manager. MLflow and moto come from `tests/services.sh` and are required.

use crate::support::{fresh_id, mlflow_trace, scratch, service, spawn_spanline, unhex};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use spanline::convert::lambda::{EventKind, Handler, LambdaError};
use spanline::convert::sink::otlp::{OtlpConfig, OtlpSink};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// 64-bit FNV-1a, as `src/convert/assemble/invocation.rs` documents for derived span ids.
fn invocation_span_id(group: &str, request_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("spanline/invocation/{group}/{request_id}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:016x}", if h == 0 { 1 } else { h })
}

pub(crate) fn request_id() -> String {
    let h = fresh_id::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One invocation of a Node function in the text log format: START, two span lines (a child
/// and the handler span), application output, END and REPORT, in one log stream. Knows the
/// span ids MLflow must hold for it.
pub(crate) struct Invocation {
    group: String,
    stream: String,
    trace: String,
    spans: Vec<String>,
    messages: Vec<(i64, String)>,
}

impl Invocation {
    pub(crate) fn new(group: &str, trace: &str) -> Invocation {
        let req = request_id();
        let t0 = now_ms() - 5_000;
        let (exec, child, caller) = (fresh_id::<8>(), fresh_id::<8>(), fresh_id::<8>());
        let line = |span: &str, parent: &str, start: i64, dur_us: i64, flags: &str, name: &str| {
            let ids: String = [trace, span, parent]
                .iter()
                .map(|id| URL_SAFE_NO_PAD.encode(unhex(id)))
                .collect();
            format!(
                "SPLN1 {ids} {} {dur_us}{flags} {name} test.case=lambda;",
                start * 1000
            )
        };
        let iso = |ms: i64| {
            // Only the shape matters to the converter: it reads span times from the lines.
            format!("2024-05-01T12:00:{:02}.{:03}Z", ms / 1000 % 60, ms % 1000)
        };
        let node = |ms: i64, text: &str| format!("{}\t{req}\tINFO\t{text}\n", iso(ms));
        let messages = vec![
            (t0, format!("START RequestId: {req} Version: $LATEST\n")),
            (t0 + 3, node(t0 + 3, &line(&child, &exec, t0 + 2, 4_000, "c", "db-query"))),
            (t0 + 5, node(t0 + 5, "ordinary application output")),
            (t0 + 9, node(t0 + 9, &line(&exec, &caller, t0 + 1, 8_000, "s", "handler"))),
            (t0 + 10, format!("END RequestId: {req}\n")),
            (
                t0 + 10,
                format!(
                    "REPORT RequestId: {req}\tDuration: 9.00 ms\tBilled Duration: 10 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\t\n"
                ),
            ),
        ];
        Invocation {
            group: group.to_owned(),
            stream: format!("2024/05/01/[$LATEST]{}", fresh_id::<16>()),
            trace: trace.to_owned(),
            spans: vec![exec, child, invocation_span_id(group, &req)],
            messages,
        }
    }

    /// The subscription payload (JSON) of this invocation's log events.
    pub(crate) fn payload(&self) -> String {
        let events: Vec<Value> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, (ts, m))| json!({"id": format!("{:056}", i), "timestamp": ts, "message": m}))
            .collect();
        json!({
            "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": self.group,
            "logStream": self.stream, "subscriptionFilters": ["spanline"], "logEvents": events,
        })
        .to_string()
    }
}

const CONTROL: &str = r#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1700000000000,"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}"#;

pub(crate) fn subscription_event(payload: &str) -> Value {
    json!({"awslogs": {"data": STANDARD.encode(gzip(payload.as_bytes()))}})
}

pub(crate) fn kinesis_event(records: &[Vec<u8>]) -> (Value, Vec<String>) {
    let seqs: Vec<String> = (0..records.len())
        .map(|i| format!("49590338271490256608559692538361571095921575989136588{i:03}"))
        .collect();
    let recs: Vec<Value> = records
        .iter()
        .zip(&seqs)
        .map(|(d, seq)| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0", "partitionKey": "/aws/lambda/f",
                    "sequenceNumber": seq, "data": STANDARD.encode(d),
                    "approximateArrivalTimestamp": 1_700_000_000.428
                },
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("shardId-000000000006:{seq}"),
                "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/spanline",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/spans"
            })
        })
        .collect();
    (json!({ "Records": recs }), seqs)
}

fn firehose_event(records: &[Vec<u8>]) -> Value {
    let recs: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "recordId": format!("4959{i:04}"), "data": STANDARD.encode(d),
                "approximateArrivalTimestamp": 1_700_000_000_428i64
            })
        })
        .collect();
    json!({
        "invocationId": format!("{}", request_id()), "region": "us-east-1",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/spans",
        "records": recs
    })
}

fn mlflow_config() -> OtlpConfig {
    let mut c = OtlpConfig::default();
    c.endpoint = format!("{}/v1/traces", service("SPANLINE_TEST_MLFLOW"));
    c.headers = vec![("x-mlflow-experiment-id".into(), "0".into())];
    c.retry_deadline = Duration::from_secs(20);
    c
}

/// The span ids (hex) MLflow holds for `trace`, once it holds at least `n`.
fn mlflow_span_ids(trace: &str, n: usize) -> BTreeSet<String> {
    let t = mlflow_trace(trace, n, Duration::from_secs(10));
    t["trace"]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            let b = STANDARD
                .decode(s["span_id"].as_str().expect("span_id"))
                .expect("base64 span id");
            crate::support::hex(&b)
        })
        .collect()
}

#[test]
fn subscription_kinesis_and_firehose_events_reach_mlflow() {
    let group = format!("/aws/lambda/spanline-lambda-{}", fresh_id::<4>());
    let handler = Handler::new(OtlpSink::new(mlflow_config()).unwrap());
    let rt = rt();

    // Direct subscription: one payload.
    let direct = Invocation::new(&group, &fresh_id::<16>());
    let (report, r) = rt.block_on(handler.handle(subscription_event(&direct.payload()), None));
    assert_eq!(r.expect("direct event"), Value::Null, "{report:?}");
    assert_eq!(report.event, Some(EventKind::Subscription));
    assert_eq!((report.spans, report.spans_delivered), (3, 3), "{report:?}");

    // Kinesis: two records of one trace, a CONTROL_MESSAGE, a record of another trace.
    let trace = fresh_id::<16>();
    let (a, b) = (
        Invocation::new(&group, &trace),
        Invocation::new(&group, &trace),
    );
    let other = Invocation::new(&group, &fresh_id::<16>());
    let records = vec![
        gzip(a.payload().as_bytes()),
        gzip(CONTROL.as_bytes()),
        gzip(b.payload().as_bytes()),
        gzip(other.payload().as_bytes()),
    ];
    let (event, _) = kinesis_event(&records);
    let (report, r) = rt.block_on(handler.handle(event, None));
    assert_eq!(
        r.expect("kinesis event"),
        json!({"batchItemFailures": []}),
        "{report:?}"
    );
    assert_eq!(
        (report.items, report.items_ok, report.items_control),
        (4, 3, 1)
    );

    // Firehose: the records come back unchanged with their results.
    let fh = Invocation::new(&group, &fresh_id::<16>());
    let records = vec![
        gzip(fh.payload().as_bytes()),
        gzip(CONTROL.as_bytes()),
        b"{\"not\":\"a payload\"}".to_vec(),
    ];
    let (report, r) = rt.block_on(handler.handle(firehose_event(&records), None));
    let v = r.expect("firehose event");
    let results: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["Ok", "Dropped", "ProcessingFailed"], "{report:?}");
    assert_eq!(
        STANDARD
            .decode(v["records"][0]["data"].as_str().unwrap())
            .unwrap(),
        records[0]
    );

    // Read every trace back: exactly the span-line spans plus one invocation span each.
    for inv in [&direct, &other, &fh] {
        let want: BTreeSet<String> = inv.spans.iter().cloned().collect();
        assert_eq!(mlflow_span_ids(&inv.trace, want.len()), want);
    }
    let want: BTreeSet<String> = a.spans.iter().chain(&b.spans).cloned().collect();
    assert_eq!(mlflow_span_ids(&trace, want.len()), want);
}

// ---------------------------------------------------------------------------------------------
// An OTLP/HTTP endpoint that refuses requests carrying a poisoned trace id

pub(crate) struct Refusing {
    pub(crate) url: String,
    /// (whether the body held the poison, status answered), per request.
    pub(crate) seen: Arc<Mutex<Vec<(bool, u16)>>>,
}

/// Reads more bytes into `body`; `None` at the end of the connection.
async fn more(body: &mut Vec<u8>, sock: &mut tokio::net::TcpStream) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let n = sock.read(&mut chunk).await.ok()?;
    (n > 0).then(|| body.extend_from_slice(&chunk[..n]))
}

/// Reads one HTTP/1.1 request (content-length or chunked body): (head, body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let lower = head.to_lowercase();
    let mut body = buf[head_end..].to_vec();
    if lower.contains("transfer-encoding: chunked") {
        // Chunks until the zero-length one.
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let Some(nl) = body[pos..].windows(2).position(|w| w == b"\r\n") else {
                more(&mut body, sock).await?;
                continue;
            };
            let size_text = String::from_utf8_lossy(&body[pos..pos + nl]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16).ok()?;
            let start = pos + nl + 2;
            while body.len() < start + size + 2 {
                more(&mut body, sock).await?;
            }
            if size == 0 {
                return Some((head, out));
            }
            out.extend_from_slice(&body[start..start + size]);
            pos = start + size + 2;
        }
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
    while body.len() < len {
        more(&mut body, sock).await?;
    }
    Some((head, body))
}

async fn respond(sock: &mut tokio::net::TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
    let _ = sock.shutdown().await;
}

/// Answers 500 to requests whose (uncompressed protobuf) body holds `poison`'s 16 bytes, 200
/// with an empty `ExportTraceServiceResponse` to the others.
pub(crate) async fn refusing_backend(poison: [u8; 16]) -> Refusing {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let Some((_, body)) = read_request(&mut sock).await else {
                    return;
                };
                let poisoned = body.windows(16).any(|w| w == poison);
                let status = if poisoned { 500 } else { 200 };
                log.lock().unwrap().push((poisoned, status));
                respond(&mut sock, status, "application/x-protobuf", b"").await;
            });
        }
    });
    Refusing { url, seen }
}

#[test]
fn kinesis_reports_exactly_the_records_the_backend_refused_and_direct_events_fail() {
    let rt = rt();
    let poison_hex = fresh_id::<16>();
    let poison: [u8; 16] = unhex(&poison_hex).try_into().unwrap();
    let backend = rt.block_on(refusing_backend(poison));
    let mut config = OtlpConfig::default();
    config.endpoint = backend.url.clone();
    config.retry_deadline = Duration::from_secs(5);
    let handler = Handler::new(OtlpSink::new(config).unwrap());
    let group = "/aws/lambda/spanline-refused";

    let good = |_| Invocation::new(group, &fresh_id::<16>());
    let invs = [
        good(0),
        Invocation::new(group, &poison_hex),
        good(2),
        Invocation::new(group, &poison_hex),
        good(4),
    ];
    let records: Vec<Vec<u8>> = invs.iter().map(|i| gzip(i.payload().as_bytes())).collect();
    let (event, seqs) = kinesis_event(&records);
    let (report, r) = rt.block_on(handler.handle(event, None));
    let response = r.expect("a Kinesis batch answers with its failures, not an error");
    assert_eq!(
        response,
        json!({"batchItemFailures": [
            {"itemIdentifier": seqs[1]}, {"itemIdentifier": seqs[3]}
        ]}),
        "{report:?}"
    );
    assert_eq!((report.items_ok, report.items_failed), (3, 2));
    assert_eq!(report.spans_delivered, 9);
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|(p, s)| *p && *s == 500).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|(p, s)| !*p && *s == 200).count(),
        3,
        "{seen:?}"
    );

    // A direct subscription event whose spans are refused fails the invocation.
    let bad = Invocation::new(group, &poison_hex);
    let (report, r) = rt.block_on(handler.handle(subscription_event(&bad.payload()), None));
    let e = r.expect_err("refused spans must fail the invocation");
    assert!(matches!(e, LambdaError::NotDelivered { .. }), "{e}");
    assert!(report.error.unwrap().contains("500"));
    // And one whose spans are accepted succeeds against the same endpoint.
    let ok = Invocation::new(group, &fresh_id::<16>());
    let (_, r) = rt.block_on(handler.handle(subscription_event(&ok.payload()), None));
    assert_eq!(r.expect("accepted"), Value::Null);
}

// ---------------------------------------------------------------------------------------------
// A scripted Lambda Runtime API

/// What the function posted back: (request id, "response" or "error", body).
pub(crate) type Posted = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Serves `events` to `/next` one by one (further `/next` calls wait forever), records the
/// `/response` and `/error` posts.
pub(crate) async fn runtime_api(events: Vec<(String, Value)>) -> (String, Posted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let posted: Posted = Arc::new(Mutex::new(Vec::new()));
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(events)));
    let log = Arc::clone(&posted);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (log, queue) = (Arc::clone(&log), Arc::clone(&queue));
            tokio::spawn(async move {
                let Some((head, body)) = read_request(&mut sock).await else {
                    return;
                };
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                if path == "/2018-06-01/runtime/invocation/next" {
                    let next = queue.lock().unwrap().pop_front();
                    let Some((id, event)) = next else {
                        // No more events: keep the long poll open, as Lambda does when idle.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    };
                    let body = event.to_string();
                    let deadline = now_ms() + 30_000;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         lambda-runtime-aws-request-id: {id}\r\n\
                         lambda-runtime-deadline-ms: {deadline}\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:spanline\r\n\
                         lambda-runtime-trace-id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                    return;
                }
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                if let ["2018-06-01", "runtime", "invocation", id, what] = parts.as_slice() {
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock()
                        .unwrap()
                        .push(((*id).to_owned(), (*what).to_owned(), v));
                    respond(&mut sock, 202, "application/json", b"{\"status\":\"OK\"}").await;
                } else {
                    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    log.lock().unwrap().push((String::new(), path.clone(), v));
                    respond(&mut sock, 202, "application/json", b"{\"status\":\"OK\"}").await;
                }
            });
        }
    });
    (addr, posted)
}

/// Creates a secret in moto's Secrets Manager; returns its ARN.
fn create_secret(moto: &str, name: &str, value: &str) -> String {
    rt().block_on(async {
        let config = spanline::convert::aws::config_loader()
            .endpoint_url(moto)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "static",
            ))
            .load()
            .await;
        let client = aws_sdk_secretsmanager::Client::new(&config);
        let out = client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("CreateSecret on moto");
        out.arn().expect("secret ARN").to_owned()
    })
}

#[test]
fn the_bootstrap_serves_invocations_with_headers_from_secrets_manager() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    // MLflow refuses spans without its experiment header: only the secret supplies it. The
    // token is there to check that no secret value is printed.
    let token = format!("tok-{}", fresh_id::<12>());
    let arn = create_secret(
        &moto,
        &format!("spanline/otlp-headers-{}", fresh_id::<6>()),
        &format!(r#"{{"x-mlflow-experiment-id":"0","x-spanline-token":"{token}"}}"#),
    );
    let group = format!("/aws/lambda/spanline-bootstrap-{}", fresh_id::<4>());
    let direct = Invocation::new(&group, &fresh_id::<16>());
    let kin = Invocation::new(&group, &fresh_id::<16>());
    let (kinesis, _) = kinesis_event(&[gzip(kin.payload().as_bytes())]);
    let ids: Vec<String> = (0..3).map(|_| request_id()).collect();
    let events = vec![
        (ids[0].clone(), subscription_event(&direct.payload())),
        (ids[1].clone(), kinesis),
        (ids[2].clone(), json!({"unexpected": "event"})),
    ];
    let server = rt();
    let (addr, posted) = server.block_on(runtime_api(events));

    let dir = scratch("lambda-bootstrap");
    let env = [
        ("AWS_LAMBDA_RUNTIME_API", addr.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "spanline-forwarder"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/spanline-forwarder",
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2024/05/01/[$LATEST]0123456789abcdef",
        ),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", mlflow.as_str()),
        ("SPANLINE_OTLP_HEADERS_SECRET_ARN", arn.as_str()),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut child = spawn_spanline(&dir, &["lambda"], &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while posted.lock().unwrap().len() < 3 && Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "spanline lambda exited with {status}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The process serves until Lambda freezes or ends it; the test ends it.
    let _ = child.kill();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(dir.join("spanline.stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default();
    let posted = posted.lock().unwrap().clone();
    assert_eq!(
        posted.len(),
        3,
        "{posted:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        (posted[0].0.as_str(), posted[0].1.as_str(), &posted[0].2),
        (ids[0].as_str(), "response", &Value::Null),
        "stderr:\n{stderr}"
    );
    assert_eq!(
        (posted[1].0.as_str(), posted[1].1.as_str(), &posted[1].2),
        (
            ids[1].as_str(),
            "response",
            &json!({"batchItemFailures": []})
        ),
        "stderr:\n{stderr}"
    );
    assert_eq!(
        (posted[2].0.as_str(), posted[2].1.as_str()),
        (ids[2].as_str(), "error")
    );
    assert_eq!(
        posted[2].2["errorType"], "spanline.InvalidEvent",
        "{:?}",
        posted[2]
    );

    // One JSON summary line per invocation on stdout.
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["spanline"] == "lambda")
        .collect();
    assert_eq!(reports.len(), 3, "stdout:\n{stdout}");
    assert_eq!(reports[0]["event"], "subscription");
    assert_eq!(reports[0]["spans_delivered"], 3);
    assert_eq!(reports[1]["event"], "kinesis");
    assert!(reports[2]["error"]
        .as_str()
        .unwrap()
        .contains("unrecognised event"));
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token),
        "the secret was printed"
    );

    for inv in [&direct, &kin] {
        let want: BTreeSet<String> = inv.spans.iter().cloned().collect();
        assert_eq!(mlflow_span_ids(&inv.trace, want.len()), want);
    }
}

#[test]
fn the_bootstrap_refuses_to_start_without_a_backend_or_runtime_api() {
    let dir = scratch("lambda-config");
    let run = crate::support::run_spanline(
        &dir,
        &["lambda"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("AWS_LAMBDA_RUNTIME_API"),
        "{}",
        run.stderr
    );
    let run = crate::support::run_spanline(
        &dir,
        &["lambda"],
        &[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        run.stderr
    );
}

/// Lambda starts `bootstrap` without arguments: the binary under that name is `spanline lambda`
/// (here it stops at the missing runtime API, exit 1, where clap would have printed its usage
/// and exited with 2).
#[test]
fn the_binary_named_bootstrap_runs_the_lambda_command() {
    let dir = scratch("lambda-bootstrap-name");
    let bootstrap = dir.join("bootstrap");
    std::fs::hard_link(env!("CARGO_BIN_EXE_spanline"), &bootstrap)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_spanline"), &bootstrap).map(|_| ()))
        .expect("bootstrap copy");
    let mut cmd = std::process::Command::new(&bootstrap);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("running bootstrap");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API"), "{stderr}");
    // With arguments it is the ordinary CLI.
    let out = std::process::Command::new(&bootstrap)
        .arg("pattern")
        .output()
        .expect("running bootstrap pattern");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SPLN1");
}

/// The template's filter pattern is the converter's: span lines and the platform lines
/// invocation spans need (examples/deploy is checked by cfn-lint in tests/cfn-lint.sh).
#[test]
fn the_subscription_template_filters_with_the_converters_pattern() {
    use spanline::convert::source::cloudwatch::filter::DEFAULT_FILTER_PATTERN;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/deploy/subscription.yaml"
    );
    let t = std::fs::read_to_string(path).expect("the subscription template");
    assert!(
        t.contains(&format!("Default: '{DEFAULT_FILTER_PATTERN}'")),
        "the FilterPattern default of {path} differs from DEFAULT_FILTER_PATTERN"
    );
    for needed in [
        "Runtime: provided.al2023",
        "Handler: bootstrap",
        "ReportBatchItemFailures",
    ] {
        assert!(t.contains(needed), "{needed}");
    }
}

/// Through the real binary: a direct event whose spans the backend refuses makes the function
/// report an error to the Runtime API (so Lambda retries it); a Kinesis batch answers with
/// exactly the refused record.
#[test]
fn the_bootstrap_reports_refused_spans_as_errors_and_batch_item_failures() {
    let server = rt();
    let poison_hex = fresh_id::<16>();
    let poison: [u8; 16] = unhex(&poison_hex).try_into().unwrap();
    let backend = server.block_on(refusing_backend(poison));
    let group = format!("/aws/lambda/spanline-refusing-{}", fresh_id::<4>());
    let bad = Invocation::new(&group, &poison_hex);
    let good = Invocation::new(&group, &fresh_id::<16>());
    let (kinesis, seqs) = kinesis_event(&[
        gzip(good.payload().as_bytes()),
        gzip(bad.payload().as_bytes()),
    ]);
    let ids: Vec<String> = (0..3).map(|_| request_id()).collect();
    let events = vec![
        (ids[0].clone(), subscription_event(&bad.payload())),
        (ids[1].clone(), kinesis),
        (ids[2].clone(), subscription_event(&good.payload())),
    ];
    let (addr, posted) = server.block_on(runtime_api(events));
    let dir = scratch("lambda-refused");
    let traces = backend.url.trim_end_matches("/v1/traces").to_owned();
    let env = [
        ("AWS_LAMBDA_RUNTIME_API", addr.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "spanline-forwarder"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", traces.as_str()),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut child = spawn_spanline(&dir, &["lambda"], &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while posted.lock().unwrap().len() < 3 && Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "spanline lambda exited with {status}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default();
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 3, "{posted:?}\nstderr:\n{stderr}");
    assert_eq!(
        (posted[0].0.as_str(), posted[0].1.as_str()),
        (ids[0].as_str(), "error")
    );
    assert_eq!(
        posted[0].2["errorType"], "spanline.BackendRefused",
        "{:?}",
        posted[0]
    );
    assert!(
        posted[0].2["errorMessage"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{:?}",
        posted[0]
    );
    assert_eq!(
        (posted[1].0.as_str(), posted[1].1.as_str(), &posted[1].2),
        (
            ids[1].as_str(),
            "response",
            &json!({"batchItemFailures": [{"itemIdentifier": seqs[1]}]})
        )
    );
    assert_eq!(
        (posted[2].0.as_str(), posted[2].1.as_str(), &posted[2].2),
        (ids[2].as_str(), "response", &Value::Null)
    );
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|(p, _)| *p).count(),
        2,
        "the refused spans were sent twice, once per event: {seen:?}"
    );
    assert_eq!(seen.iter().filter(|(p, _)| !*p).count(), 2, "{seen:?}");
}

/// A headers secret that cannot be read stops the cold start with the variable's name, before
/// any invocation is taken.
#[test]
fn a_missing_headers_secret_stops_the_cold_start() {
    let moto = service("SPANLINE_TEST_MOTO");
    let dir = scratch("lambda-no-secret");
    let arn = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:spanline-missing-{}",
        fresh_id::<6>()
    );
    let run = crate::support::run_spanline(
        &dir,
        &["lambda"],
        &[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("SPANLINE_OTLP_HEADERS_SECRET_ARN", arn.as_str()),
            ("AWS_ENDPOINT_URL", moto.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("SPANLINE_OTLP_HEADERS_SECRET_ARN: cannot read the secret"),
        "{}",
        run.stderr
    );
}

/// Issue "One streaming pipeline", tree (c), with the real fetch-back: an invocation whose
/// START and span lines came in one delivery and END/REPORT in the next is sent once, whole,
/// by the second: the bootstrap reads the invocation's log stream back from (moto's)
/// CloudWatch Logs to place it in its trace, with the REPORT's figures and START's version.
#[test]
fn an_invocation_split_across_deliveries_is_looked_up_again_and_sent_whole() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let group = format!("/aws/lambda/spanline-split-{}", fresh_id::<4>());
    let trace = fresh_id::<16>();
    let inv = Invocation::new(&group, &trace);
    // CloudWatch holds the whole stream.
    let logs = crate::cloudwatch::logs_client();
    rt().block_on(async {
        logs.create_log_group()
            .log_group_name(&group)
            .send()
            .await
            .expect("CreateLogGroup");
        logs.create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&inv.stream)
            .send()
            .await
            .expect("CreateLogStream");
    });
    let puts: Vec<crate::cloudwatch::Put> = inv
        .messages
        .iter()
        .map(|(ts, m)| crate::cloudwatch::Put {
            stream: inv.stream.clone(),
            ts: *ts,
            message: m.clone(),
        })
        .collect();
    crate::cloudwatch::put_events(&logs, &group, &puts);
    // The subscription delivers it in two: up to the handler span, then END and REPORT.
    let half = |range: std::ops::Range<usize>| {
        let events: Vec<Value> = inv.messages[range.clone()]
            .iter()
            .zip(range)
            .map(|((ts, m), i)| json!({"id": format!("{:056}", i), "timestamp": ts, "message": m}))
            .collect();
        json!({
            "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": group,
            "logStream": inv.stream, "subscriptionFilters": ["spanline"], "logEvents": events,
        })
        .to_string()
    };
    let ids: Vec<String> = (0..2).map(|_| request_id()).collect();
    let events = vec![
        (ids[0].clone(), subscription_event(&half(0..4))),
        (
            ids[1].clone(),
            subscription_event(&half(4..inv.messages.len())),
        ),
    ];
    let server = rt();
    let (addr, posted) = server.block_on(runtime_api(events));
    let dir = scratch("lambda-split");
    let env = [
        ("AWS_LAMBDA_RUNTIME_API", addr.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "spanline-forwarder"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", mlflow.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-mlflow-experiment-id=0"),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut child = spawn_spanline(&dir, &["lambda"], &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while posted.lock().unwrap().len() < 2 && Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "spanline lambda exited with {status}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(dir.join("spanline.stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default();
    let reports: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["spanline"] == "lambda")
        .collect();
    assert_eq!(reports.len(), 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(reports[0]["invocations_left"], 1, "{stdout}");
    assert_eq!(
        reports[1]["invocations_fetched_back"], 1,
        "{stdout}\n{stderr}"
    );
    assert_eq!(reports[1]["invocations_unplaced"], 0, "{stdout}");
    let want: BTreeSet<String> = inv.spans.iter().cloned().collect();
    assert_eq!(mlflow_span_ids(&inv.trace, want.len()), want);
    // The invocation span is whole: REPORT's duration and START's version.
    let t = mlflow_trace(&inv.trace, want.len(), Duration::from_secs(10));
    let inv_id = &inv.spans[2];
    let span = t["trace"]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            crate::support::hex(&STANDARD.decode(s["span_id"].as_str().unwrap()).unwrap())
                == *inv_id
        })
        .expect("the invocation span in MLflow");
    let attr = |key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
    };
    assert_eq!(
        attr("aws.lambda.duration_ms"),
        Some(json!({"double_value": 9.0})),
        "{span}"
    );
    assert_eq!(
        attr("faas.version"),
        Some(json!({"string_value": "$LATEST"})),
        "{span}"
    );
}

/// Runs `spanline lambda` (one instance) over `events` with `env`; returns its JSON reports.
fn serve(dir: &std::path::Path, events: Vec<(String, Value)>, env: &[(&str, &str)]) -> Vec<Value> {
    let n = events.len();
    let server = rt();
    let (addr, posted) = server.block_on(runtime_api(events));
    let mut env = env.to_vec();
    env.push(("AWS_LAMBDA_RUNTIME_API", addr.as_str()));
    let mut child = spawn_spanline(dir, &["lambda"], &env);
    let found = crate::support::poll(Duration::from_secs(60), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "spanline lambda exited with {status}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
            );
        }
        (posted.lock().unwrap().len() >= n).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(dir.join("spanline.stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default();
    assert!(found.is_some(), "{n} answers expected\n{stdout}\n{stderr}");
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["spanline"] == "lambda")
        .collect()
}

/// Issue "Traces worth keeping", the Lambda mode against moto (CloudWatch Logs and S3) and
/// MLflow: a trace the ratio drops has a span in a first delivery, its error in a second and
/// another span in a third, handled by another instance. The second records the decision in S3
/// and reads the first's span back from CloudWatch; the other instance finds the record and
/// sends the third's: MLflow holds the whole trace. A trace without an error sends nothing.
#[test]
fn sampled_lambda_sends_an_error_trace_split_across_deliveries_and_instances_whole() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let group = format!("/aws/lambda/spanline-sampled-{}", fresh_id::<4>());
    let stream = format!("2026/12/03/[$LATEST]{}", fresh_id::<16>());
    let bucket = crate::cloudwatch::fresh_bucket(&crate::cloudwatch::s3_client());
    // Low 64 bits from 0xf…: the ratio drops them at 0.1.
    let dropped = || format!("{}f{}", fresh_id::<8>(), &fresh_id::<8>()[1..]);
    let (trace, quiet) = (dropped(), dropped());
    let (root, a, b, q) = (
        fresh_id::<8>(),
        fresh_id::<8>(),
        fresh_id::<8>(),
        fresh_id::<8>(),
    );
    let t = now_ms() - 120_000;
    let line = |tr: &str, id: &str, parent: Option<&str>, at: i64, flags: &str| {
        let ids: String = std::iter::once(tr)
            .chain(std::iter::once(id))
            .chain(parent)
            .map(|x| URL_SAFE_NO_PAD.encode(unhex(x)))
            .collect();
        format!("SPLN1 {ids} {} 1000{flags} op;", (at - 1) * 1000)
    };
    let d1 = vec![
        (t, line(&trace, &a, Some(&root), t, "")),
        (t + 1, line(&quiet, &q, None, t + 1, "s")),
    ];
    let d2 = vec![(t + 10, line(&trace, &root, None, t + 10, "se"))];
    let d3 = vec![(t + 20, line(&trace, &b, Some(&root), t + 20, ""))];
    // CloudWatch holds what the first two delivered (the third's line is only delivered).
    let logs = crate::cloudwatch::logs_client();
    rt().block_on(async {
        logs.create_log_group()
            .log_group_name(&group)
            .send()
            .await
            .expect("CreateLogGroup");
        logs.create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await
            .expect("CreateLogStream");
    });
    let puts: Vec<crate::cloudwatch::Put> = d1
        .iter()
        .chain(&d2)
        .map(|(ts, m)| crate::cloudwatch::Put {
            stream: stream.clone(),
            ts: *ts,
            message: m.clone(),
        })
        .collect();
    crate::cloudwatch::put_events(&logs, &group, &puts);
    let event = |d: &[(i64, String)]| {
        let events: Vec<Value> = d
            .iter()
            .enumerate()
            .map(|(i, (ts, m))| json!({"id": format!("{:056}", i), "timestamp": ts, "message": m}))
            .collect();
        let p = json!({
            "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": group,
            "logStream": stream, "subscriptionFilters": ["spanline"], "logEvents": events,
        });
        (request_id(), subscription_event(&p.to_string()))
    };
    let decisions = format!("s3://{bucket}/decisions/");
    let env = [
        ("AWS_LAMBDA_FUNCTION_NAME", "spanline-forwarder"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", mlflow.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-mlflow-experiment-id=0"),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("SPANLINE_SAMPLE_RATE", "0.1"),
        ("SPANLINE_SAMPLE_DECISIONS", decisions.as_str()),
    ];
    let first = serve(
        &scratch("lambda-sampled-1"),
        vec![event(&d1), event(&d2)],
        &env,
    );
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["sampling"]["dropped_traces"], 2, "{first:?}");
    assert_eq!(first[1]["sampling"]["recorded"], 1, "{first:?}");
    assert_eq!(first[1]["sampling"]["fetched_back_spans"], 2, "{first:?}");
    // The record is in S3.
    let key = format!("decisions/{trace}");
    rt().block_on(
        crate::cloudwatch::s3_client()
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send(),
    )
    .expect("the decision's object");
    // Another instance, whose cache is empty, finds the record.
    let second = serve(&scratch("lambda-sampled-2"), vec![event(&d3)], &env);
    assert_eq!(
        second[0]["sampling"]["kept_traces"]["recorded"], 1,
        "{second:?}"
    );
    let want: BTreeSet<String> = [root, a, b].into_iter().collect();
    assert_eq!(mlflow_span_ids(&trace, 3), want);
    // The quiet trace: dropped in the first delivery, never sent.
    assert_eq!(first[0]["spans_delivered"], 0, "{first:?}");
}
