//! Issue "Traces worth keeping", item 3: `--logs otlp` sends the function's log lines as OTLP
//! log records, each with the trace and span id of the span that was active when it was written,
//! the severity of its level and the log group and stream. Checked at a recording OTLP/HTTP
//! receiver for the exact records, and through rotel (a real collector, started here with its
//! OTLP exporter pointed at the recorder) for OTLP/gRPC.

use crate::support::{hex, poll, run_spanline, scratch, service, Run};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the recorder received: its path and body (gunzipped).
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A recording OTLP/HTTP receiver: answers every POST 200 with an empty body and keeps it.
struct Recorder {
    url: String,
    got: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let got = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&got);
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { return };
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(sock, &log));
            }
        });
        Recorder { url, got }
    }

    fn got(&self) -> Vec<Recorded> {
        self.got.lock().expect("lock").clone()
    }

    /// The log records of every `/v1/logs` request (protobuf or JSON).
    fn records(&self) -> Vec<Record> {
        self.got()
            .iter()
            .filter(|r| r.path.ends_with("/v1/logs"))
            .flat_map(records_of)
            .collect()
    }

    /// The spans of every `/v1/traces` request (protobuf only).
    fn span_count(&self) -> usize {
        self.got()
            .iter()
            .filter(|r| r.path.ends_with("/v1/traces") && r.content_type.contains("protobuf"))
            .filter_map(|r| ExportTraceServiceRequest::decode(r.body.as_slice()).ok())
            .flat_map(|req| req.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until it closes.
fn serve(mut sock: TcpStream, log: &Mutex<Vec<Recorded>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_owned();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match sock.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let body = if header("content-encoding").as_deref() == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .expect("gzip body");
            out
        } else {
            raw
        };
        log.lock().expect("lock").push(Recorded {
            path,
            content_type: header("content-type").unwrap_or_default(),
            body,
        });
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if sock.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One log record as received.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    time_unix_nano: u64,
    trace_id: String,
    span_id: String,
    severity_number: i32,
    severity_text: String,
    body: String,
    /// Its attributes and its resource's, `key=value`, sorted.
    attributes: Vec<String>,
}

fn records_of(r: &Recorded) -> Vec<Record> {
    let req = if r.content_type.contains("json") {
        // OTLP/JSON: hex ids, as the spec says; decoded with opentelemetry-proto's serde.
        serde_json::from_slice::<ExportLogsServiceRequest>(&r.body).expect("OTLP/JSON logs")
    } else {
        ExportLogsServiceRequest::decode(r.body.as_slice()).expect("OTLP logs")
    };
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let resource: Vec<String> = rl
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .map(|kv| format!("resource.{}={}", kv.key, text(&kv.value)))
            .collect();
        for sl in rl.scope_logs {
            for lr in sl.log_records {
                let mut attributes: Vec<String> = lr
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, text(&kv.value)))
                    .chain(resource.iter().cloned())
                    .collect();
                attributes.sort();
                out.push(Record {
                    time_unix_nano: lr.time_unix_nano,
                    trace_id: hex(&lr.trace_id),
                    span_id: hex(&lr.span_id),
                    severity_number: lr.severity_number,
                    severity_text: lr.severity_text.clone(),
                    body: text(&lr.body),
                    attributes,
                });
            }
        }
    }
    out.sort();
    out
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lambda/logs/checkout.json")
}

/// The span ids of the fixture's span lines by name: (charge-card, POST /orders).
fn fixture_span_ids() -> (String, String) {
    let text = std::fs::read_to_string(fixture()).expect("fixture");
    let id = |name: &str| {
        let line = text
            .split("SPLN1 ")
            .skip(1)
            .find(|l| l.contains(name))
            .expect("span line");
        // The trace id (22 characters of base64url), the span id (11), the parent's (11).
        let ids = line.split_whitespace().next().expect("ids");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&ids[22..33])
            .expect("base64 span id");
        hex(&bytes)
    };
    (id("charge-card"), id("POST%20/orders"))
}

/// The records the fixture's invocation must produce, in [`Record`] order.
fn expected_records() -> Vec<Record> {
    let (card, orders) = fixture_span_ids();
    let trace = "5b8efff798038103d269b633813fc60c".to_owned();
    let at = |ms: u64| 1_795_428_120_000u64 * 1_000_000 + ms * 1_000_000;
    // Filled in by `assert_records`.
    let attributes = Vec::new();
    let rec = |ms, span: &String, sev, text: &str, body: &str| Record {
        time_unix_nano: at(ms),
        trace_id: trace.clone(),
        span_id: span.clone(),
        severity_number: sev,
        severity_text: text.to_owned(),
        body: body.to_owned(),
        attributes: attributes.clone(),
    };
    let traceback = "payment failed\nTraceback (most recent call last):\n  File \"/var/task/app.py\", line 12, in charge\n    raise TimeoutError(\"provider\")\nTimeoutError: provider";
    vec![
        rec(2, &orders, 9, "INFO", "charging order 42"),
        rec(30, &card, 13, "WARNING", "payment provider slow: retrying"),
        rec(60, &card, 17, "ERROR", traceback),
        rec(70, &orders, 13, "WARN", "order 42 left unpaid"),
    ]
}

/// Compares what arrived with [`expected_records`], the resource attributes left out but
/// `service.name` (the records' resource is their span's).
fn assert_records(got: &[Record]) {
    let mut want = expected_records();
    let stream = fixture_stream();
    for w in &mut want {
        w.attributes = vec![
            "aws.log.group.names=/aws/lambda/checkout".to_owned(),
            format!("aws.log.stream.names={stream}"),
        ];
    }
    let trimmed: Vec<Record> = got
        .iter()
        .map(|r| {
            let mut r = r.clone();
            assert!(
                r.attributes
                    .contains(&"resource.service.name=checkout".to_owned()),
                "{r:?}"
            );
            r.attributes.retain(|a| !a.starts_with("resource."));
            r
        })
        .collect();
    similar_asserts::assert_eq!(want, trimmed);
}

/// The log stream the fixture's events are in.
fn fixture_stream() -> String {
    let text = std::fs::read_to_string(fixture()).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["events"][0]["logStreamName"]
        .as_str()
        .expect("logStreamName")
        .to_owned()
}

fn convert(dir: &Path, extra: &[&str]) -> Run {
    let input = fixture().to_string_lossy().into_owned();
    let mut args = vec![
        "convert",
        &input,
        "--log-group-name",
        "/aws/lambda/checkout",
    ];
    args.extend_from_slice(extra);
    run_spanline(dir, &args, &[])
}

#[test]
fn log_records_reach_an_otlp_http_receiver_with_their_spans_ids_in_protobuf_and_json() {
    for protocol in ["http/protobuf", "http/json"] {
        let recorder = Recorder::start();
        let dir = scratch("otlp-logs-http");
        let r = convert(
            &dir,
            &[
                "--logs",
                "otlp",
                "--otlp-endpoint",
                &recorder.url,
                "--otlp-protocol",
                protocol,
            ],
        );
        assert_eq!(r.status.code(), Some(0), "{protocol}: {}", r.stderr);
        let got = recorder.got();
        let paths: Vec<&str> = got.iter().map(|g| g.path.as_str()).collect();
        // The spans first, then their records.
        assert_eq!(paths, ["/v1/traces", "/v1/logs"], "{protocol}");
        assert_records(&recorder.records());
        if protocol == "http/protobuf" {
            assert_eq!(recorder.span_count(), 3);
        }
        assert!(
            r.stderr.contains("4 log records accepted, 0 rejected"),
            "{}",
            r.stderr
        );
    }
}

/// With `--terminal`, the waterfall draws the error and warning records under their span as
/// `--logs events` draws its events (the same golden).
#[test]
fn the_waterfall_draws_log_records_as_it_draws_log_events() {
    let recorder = Recorder::start();
    let dir = scratch("otlp-logs-terminal");
    let r = convert(
        &dir,
        &[
            "--logs",
            "otlp",
            "--otlp-endpoint",
            &recorder.url,
            "--terminal",
            "--color",
            "never",
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/lambda-logs.txt");
    let want = std::fs::read_to_string(golden).expect("golden");
    similar_asserts::assert_eq!(want, r.stdout);
}

#[test]
fn sampling_drops_a_traces_log_records_with_its_spans() {
    let recorder = Recorder::start();
    let dir = scratch("otlp-logs-sampled");
    let r = convert(
        &dir,
        &[
            "--logs",
            "otlp",
            "--otlp-endpoint",
            &recorder.url,
            "--sample-rate",
            "0",
            "--keep-errors",
            "false",
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert!(recorder.records().is_empty(), "{:?}", recorder.got());
    assert_eq!(recorder.span_count(), 0);
    // Kept (it holds errors), the records come along.
    let recorder = Recorder::start();
    let r = convert(
        &dir,
        &[
            "--logs",
            "otlp",
            "--otlp-endpoint",
            &recorder.url,
            "--sample-rate",
            "0",
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_records(&recorder.records());
}

#[test]
fn logs_otlp_without_an_otlp_endpoint_is_refused_before_reading() {
    let dir = scratch("otlp-logs-refused");
    let r = convert(&dir, &["--logs", "otlp", "--output", "-"]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("--logs otlp"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// rotel, the collector, receiving OTLP on its own ports and exporting over OTLP/HTTP to
/// `to`. Killed on drop.
struct Rotel {
    child: Child,
    grpc: u16,
}

impl Rotel {
    fn start(to: &str) -> Rotel {
        let agent = service("SPANLINE_TEST_ROTEL_AGENT");
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(agent)
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{grpc}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{http}"),
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                to,
                "--otlp-exporter-protocol",
                "http",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rotel");
        let up = poll(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", grpc)).ok()
        });
        assert!(up.is_some(), "rotel did not open its gRPC port");
        Rotel { child, grpc }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rotel_takes_the_log_records_over_grpc_and_passes_them_on_unchanged() {
    let recorder = Recorder::start();
    let rotel = Rotel::start(&recorder.url);
    let dir = scratch("otlp-logs-rotel");
    let r = convert(
        &dir,
        &[
            "--logs",
            "otlp",
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", rotel.grpc),
            "--otlp-protocol",
            "grpc",
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("4 log records accepted, 0 rejected"),
        "{}",
        r.stderr
    );
    // rotel batches: poll until it has exported all four.
    let got = poll(Duration::from_secs(30), || {
        let recs = recorder.records();
        (recs.len() >= 4).then_some(recs)
    });
    let got = got.unwrap_or_else(|| panic!("rotel exported {:?}", recorder.got()));
    assert_records(&got);
}
