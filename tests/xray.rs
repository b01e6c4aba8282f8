//! Spans straight into AWS X-Ray's OTLP endpoint (issue 13, item 1), against a local endpoint
//! that behaves as AWS documents it:
//!
//! * every request's SigV4 signature is checked by an independent implementation, botocore's
//!   own signer (`tests/sigv4_verify.py`, run with the Python of the test services,
//!   `SPANLINE_TEST_PYTHON`), recomputed over the headers the request says it signed and the
//!   body bytes received, with the secret key the test knows; a mismatch, a missing or wrong
//!   session token, an unsigned `content-encoding` or a date more than 5 minutes off is answered
//!   403, as AWS would;
//! * a request that breaks X-Ray's limits (AWS CloudWatch user guide, "OTLP Endpoints": more
//!   than 10,000 spans or 5 MB uncompressed, a span over 200 KB, a span more than 14 days old or
//!   2 hours ahead, more than 24 hours between its spans) is answered 400;
//! * scripted answers on top: throttling (429 with `Retry-After`, 503) and `partialSuccess`.
//!
//! The binary runs with `--xray-region us-east-1` and `AWS_ENDPOINT_URL_XRAY` pointing at the
//! endpoint; the library's sink is used directly where a case needs more than the CLI offers
//! (OTLP/JSON, more spans than the pipeline puts in one batch).

use crate::support::{hex, run_spanline, scratch, service, Run};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use serde_json::{json, Value};
use spanline::convert::assemble::{AnyValue, Event, KeyValue, Span, SpanData};
use spanline::convert::sink::otlp::{Compression, OtlpConfig, OtlpSink, Protocol, SigV4};
use spanline::convert::sink::{Sink as _, SinkError};
use spanline::span_line::{SpanId, SpanKind, StatusCode, TraceId};
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "AKIDSPANLINEXRAYTEST";
const SECRET_KEY: &str = "spanline/Xray+Test/SecretKey0123456789abcd";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEspanline//session+token==";

// ---------------------------------------------------------------------------------------------
// The verifier: botocore in a child process

/// `tests/sigv4_verify.py`, started once per endpoint.
struct Verifier {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Verifier {
    fn start() -> Verifier {
        let python = service("SPANLINE_TEST_PYTHON");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4_verify.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Verifier {
            child,
            stdin,
            stdout,
        }
    }

    /// `None` when botocore computes the same signature, else AWS's kind of reason.
    fn check(&mut self, request: &Value) -> Option<String> {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("writing to the verifier (did botocore fail to import? see stderr)");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("verifier answer");
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("verifier answered {answer:?}: {e}"));
        match v["ok"].as_bool() {
            Some(true) => None,
            _ => Some(v["reason"].as_str().unwrap_or("rejected").to_owned()),
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoint

/// What the endpoint answers after a request passed the signature and limit checks.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 429 `ThrottlingException` with `Retry-After: <secs>`.
    Throttle(u64),
    /// 503.
    Unavailable,
    /// 200 with `partialSuccess`.
    Partial(i64, &'static str),
}

/// One span as the endpoint decoded it.
#[derive(Clone, Debug)]
struct SeenSpan {
    name: String,
    start: u64,
    /// Its size as the sink measures it (protobuf requests only).
    size: Option<usize>,
    events: usize,
    dropped_events: u32,
    attributes: usize,
    dropped_attributes: u32,
}

/// One request as the endpoint saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// Why the signature was refused, if it was.
    refused: Option<String>,
    /// Which of X-Ray's limits the request broke, if any.
    broke: Vec<String>,
    status: u16,
    content_type: String,
    content_encoding: Option<String>,
    signed_headers: String,
    x_amz_date: String,
    raw_len: usize,
    spans: Vec<SeenSpan>,
    /// The request's path: `/v1/traces`, or `/v1/logs` for CloudWatch Logs' OTLP endpoint.
    path: String,
    /// `x-aws-log-group` and `x-aws-log-stream` (logs requests).
    log_group: Option<String>,
    log_stream: Option<String>,
    /// The log records of a logs request: (trace id, span id, severity text, body).
    records: Vec<(String, String, String, String)>,
}

struct Endpoint {
    /// `http://127.0.0.1:port`.
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    _rt: tokio::runtime::Runtime,
}

impl Endpoint {
    /// An endpoint that accepts what is signed with [`SECRET_KEY`] (and `token`, when given).
    fn start(token: Option<&str>) -> Endpoint {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .expect("binding 127.0.0.1");
        let port = listener.local_addr().expect("address").port();
        let verifier = Arc::new(Mutex::new(Verifier::start()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let token = token.map(str::to_owned);
        let (log, script) = (Arc::clone(&seen), Arc::clone(&answers));
        rt.spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (log, script, verifier, token) = (
                    Arc::clone(&log),
                    Arc::clone(&script),
                    Arc::clone(&verifier),
                    token.clone(),
                );
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt as _;
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let (seen, response) = tokio::task::spawn_blocking(move || {
                        handle(&req, &verifier, token.as_deref(), &script)
                    })
                    .await
                    .expect("handler");
                    log.lock().expect("lock").push(seen);
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Endpoint {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            answers,
            _rt: rt,
        }
    }

    fn then(&self, answers: &[Answer]) {
        self.answers
            .lock()
            .expect("lock")
            .extend(answers.iter().cloned());
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The spans of the requests it accepted.
    fn accepted_spans(&self) -> Vec<SeenSpan> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .flat_map(|s| s.spans)
            .collect()
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body: buf[head_end..].to_vec(),
    })
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn aws_error(status: &str, kind: &str, message: &str) -> Vec<u8> {
    response(
        status,
        &[
            ("content-type", "application/json"),
            ("x-amzn-errortype", kind),
        ],
        json!({ "message": message }).to_string().as_bytes(),
    )
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// The endpoint's handling of one request: signature, then limits, then the script.
fn handle(
    req: &Request,
    verifier: &Mutex<Verifier>,
    token: Option<&str>,
    script: &Mutex<VecDeque<Answer>>,
) -> (Seen, Vec<u8>) {
    let host = req.header("host").unwrap_or("");
    // One endpoint plays both of AWS's: X-Ray's traces and CloudWatch Logs' logs, each signed
    // for its own service.
    let logs = req.path.ends_with("/v1/logs");
    let check = json!({
        "method": req.method,
        "url": format!("http://{host}{}", req.path),
        "headers": req.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body_b64": STANDARD.encode(&req.body),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "token": token,
        "region": REGION,
        "service": if logs { "logs" } else { "xray" },
    });
    let refused = verifier.lock().expect("lock").check(&check);
    let signed_headers = req
        .header("authorization")
        .and_then(|a| a.split("SignedHeaders=").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_owned();
    let mut seen = Seen {
        refused: refused.clone(),
        broke: Vec::new(),
        status: 0,
        content_type: req.header("content-type").unwrap_or("").to_owned(),
        content_encoding: req.header("content-encoding").map(str::to_owned),
        signed_headers,
        x_amz_date: req.header("x-amz-date").unwrap_or("").to_owned(),
        raw_len: 0,
        spans: Vec::new(),
        path: req.path.clone(),
        log_group: req.header("x-aws-log-group").map(str::to_owned),
        log_stream: req.header("x-aws-log-stream").map(str::to_owned),
        records: Vec::new(),
    };
    if let Some(reason) = refused {
        seen.status = 403;
        let (kind, message) = reason.split_once(": ").unwrap_or(("AccessDenied", &reason));
        return (seen, aws_error("403 Forbidden", kind, message));
    }
    let raw = if seen.content_encoding.as_deref() == Some("gzip") {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(req.body.as_slice())
            .read_to_end(&mut out)
            .is_err()
        {
            seen.status = 400;
            return (
                seen,
                aws_error("400 Bad Request", "ValidationException", "bad gzip"),
            );
        }
        out
    } else {
        req.body.clone()
    };
    seen.raw_len = raw.len();
    if logs {
        let Ok(request) = ExportLogsServiceRequest::decode(raw.as_slice()) else {
            seen.status = 400;
            return (
                seen,
                aws_error(
                    "400 Bad Request",
                    "ValidationException",
                    "not a logs request",
                ),
            );
        };
        seen.records = request
            .resource_logs
            .iter()
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter())
            .map(|r| {
                let body = match r.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                (
                    hex(&r.trace_id),
                    hex(&r.span_id),
                    r.severity_text.clone(),
                    body,
                )
            })
            .collect();
        seen.status = 200;
        return (
            seen,
            response("200 OK", &[("content-type", "application/x-protobuf")], &[]),
        );
    }
    let json = seen.content_type.contains("json");
    seen.spans = if json {
        json_spans(&raw)
    } else {
        proto_spans(&raw)
    };
    seen.broke = broken_limits(&seen);
    if !seen.broke.is_empty() {
        seen.status = 400;
        let message = seen.broke.join("; ");
        return (
            seen,
            aws_error("400 Bad Request", "ValidationException", &message),
        );
    }
    let next = script.lock().expect("lock").pop_front();
    let (status, partial) = match next {
        Some(Answer::Throttle(after)) => {
            seen.status = 429;
            let resp = response(
                "429 Too Many Requests",
                &[
                    ("content-type", "application/json"),
                    ("x-amzn-errortype", "ThrottlingException"),
                    ("retry-after", &after.to_string()),
                ],
                br#"{"message":"Rate exceeded"}"#,
            );
            return (seen, resp);
        }
        Some(Answer::Unavailable) => {
            seen.status = 503;
            return (
                seen,
                aws_error(
                    "503 Service Unavailable",
                    "ServiceUnavailableException",
                    "try again",
                ),
            );
        }
        Some(Answer::Partial(n, m)) => ("200 OK", Some((n, m))),
        None => ("200 OK", None),
    };
    seen.status = 200;
    let partial = partial.map(|(n, m)| ExportTracePartialSuccess {
        rejected_spans: n,
        error_message: m.to_owned(),
    });
    let body = if json {
        match &partial {
            Some(p) => json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message}})
            .to_string()
            .into_bytes(),
            None => b"{}".to_vec(),
        }
    } else {
        ExportTraceServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec()
    };
    let ct = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    (seen, response(status, &[("content-type", ct)], &body))
}

fn proto_spans(raw: &[u8]) -> Vec<SeenSpan> {
    let req = ExportTraceServiceRequest::decode(raw).expect("an OTLP protobuf request");
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let res_len = rs.resource.as_ref().map_or(0, |r| r.encoded_len());
        for ss in rs.scope_spans {
            for s in ss.spans {
                let len = s.encoded_len();
                out.push(SeenSpan {
                    name: s.name.clone(),
                    start: s.start_time_unix_nano,
                    size: Some(1 + prost::encoding::encoded_len_varint(len as u64) + len + res_len),
                    events: s.events.len(),
                    dropped_events: s.dropped_events_count,
                    attributes: s.attributes.len(),
                    dropped_attributes: s.dropped_attributes_count,
                });
            }
        }
    }
    out
}

fn json_spans(raw: &[u8]) -> Vec<SeenSpan> {
    let v: Value = serde_json::from_slice(raw).expect("an OTLP/JSON request");
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let n = |k: &str| s[k].as_array().map_or(0, Vec::len);
                let c = |k: &str| s[k].as_u64().unwrap_or(0) as u32;
                out.push(SeenSpan {
                    name: s["name"].as_str().unwrap_or("").to_owned(),
                    start: s["startTimeUnixNano"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0),
                    size: None,
                    events: n("events"),
                    dropped_events: c("droppedEventsCount"),
                    attributes: n("attributes"),
                    dropped_attributes: c("droppedAttributesCount"),
                });
            }
        }
    }
    out
}

/// X-Ray's documented limits a request broke (the real ones, without the sink's margin).
fn broken_limits(seen: &Seen) -> Vec<String> {
    const H: u64 = 3_600_000_000_000;
    let now = now_nanos();
    let mut out = Vec::new();
    if seen.raw_len > 5_000_000 {
        out.push(format!("{} bytes uncompressed", seen.raw_len));
    }
    if seen.spans.len() > 10_000 {
        out.push(format!("{} spans", seen.spans.len()));
    }
    for s in &seen.spans {
        if s.size.is_some_and(|n| n > 200_000) {
            out.push(format!("span {} is {:?} bytes", s.name, s.size));
        }
        if s.start < now - 14 * 24 * H {
            out.push(format!("span {} is more than 14 days old", s.name));
        }
        if s.start > now + 2 * H {
            out.push(format!("span {} is more than 2 hours ahead", s.name));
        }
    }
    let starts = seen.spans.iter().map(|s| s.start);
    if let (Some(lo), Some(hi)) = (starts.clone().min(), starts.max()) {
        if hi - lo > 24 * H {
            out.push("spans more than 24 hours apart".to_owned());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Inputs

const US_PER_H: u64 = 3_600_000_000;

fn now_us() -> u64 {
    now_nanos() / 1_000
}

fn b64_trace(n: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&0x7a7a_0000_0000_0000u64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

fn b64_span(n: u64) -> String {
    URL_SAFE_NO_PAD.encode(n.to_be_bytes())
}

/// A span line (`src/span_line/FORMAT.md` §3): a server span of trace `trace`, `fields` as
/// written (names and values here need no escaping).
fn line(trace: u64, id: u64, start_us: u64, name: &str, fields: &str) -> String {
    let fields = if fields.is_empty() {
        String::new()
    } else {
        format!(" {fields}")
    };
    format!(
        "SPLN1 {}{} {start_us} 1000s {name} *s=checkout{fields};",
        b64_trace(trace),
        b64_span(id)
    )
}

/// `n` events of a 10,000-byte payload each, as span line fields.
fn event_fields(n: usize) -> String {
    let payload = "e".repeat(10_000);
    (0..n)
        .map(|i| format!("@{i}=event-{i} payload={payload}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `n` attributes of 10,000 bytes each.
fn attribute_fields(n: usize, width: usize) -> String {
    let value = "a".repeat(width);
    (0..n)
        .map(|i| format!("attr-{i}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_input(dir: &Path, lines: &[String]) -> String {
    let path = dir.join("spans.log");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("writing the input");
    path.to_string_lossy().into_owned()
}

/// The environment of a run against `endpoint` with static credentials (`secret`, the session
/// token).
fn creds_env(endpoint: &Endpoint, secret: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL_XRAY".into(), endpoint.url.clone()),
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_SESSION_TOKEN".into(), SESSION_TOKEN.into()),
    ]
}

fn run(dir: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_spanline(dir, args, &env)
}

fn code(run: &Run) -> i32 {
    run.status.code().unwrap_or(-1)
}

/// Fails if a credential appears in what the run printed.
fn assert_no_secrets(run: &Run) {
    for secret in [SECRET_KEY, SESSION_TOKEN, "wrong/Secret"] {
        assert!(
            !run.stderr.contains(secret) && !run.stdout.contains(secret),
            "a credential was printed:\n{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Signing

#[test]
fn every_request_to_xray_is_signed_as_botocore_signs_it() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-signed");
    let now = now_us();
    let lines: Vec<String> = (0..40)
        .map(|i| {
            line(
                1 + i % 2,
                100 + i,
                now - 60_000_000 + i,
                &format!("op-{i}"),
                "k=v",
            )
        })
        .collect();
    let input = write_input(&dir, &lines);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, SECRET_KEY),
    );
    assert_eq!(code(&r), 0, "{}", r.stderr);
    assert_no_secrets(&r);
    let seen = endpoint.seen();
    assert!(
        !seen.is_empty(),
        "nothing reached the endpoint\n{}",
        r.stderr
    );
    for s in &seen {
        assert_eq!(s.refused, None, "{s:?}");
        assert_eq!(s.status, 200, "{s:?}");
        assert_eq!(s.content_type, "application/x-protobuf");
        // The signature covers the compressed body as sent, and says so.
        assert_eq!(s.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(
            s.signed_headers,
            "content-encoding;content-type;host;x-amz-date;x-amz-security-token"
        );
    }
    assert_eq!(endpoint.accepted_spans().len(), 40);
    assert!(
        r.stderr.contains("40 spans accepted, 0 rejected"),
        "{}",
        r.stderr
    );
}

/// Issue 13, item 1 with the logs of issue 12: `--logs otlp --xray-region` sends the spans to
/// X-Ray and the function's log lines to CloudWatch Logs' OTLP endpoint, into the group and
/// stream the flags name, each request signed for its own service (botocore checks both).
#[test]
fn log_lines_go_to_cloudwatch_logs_otlp_endpoint_signed_for_logs() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-logs");
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lambda/logs/checkout.json");
    let input = input.to_string_lossy().into_owned();
    let mut env = creds_env(&endpoint, SECRET_KEY);
    env.push((
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS".into(),
        endpoint.url.clone(),
    ));
    let args = [
        "convert",
        &input,
        "--log-group-name",
        "/aws/lambda/checkout",
        "--logs",
        "otlp",
        "--xray-region",
        REGION,
    ];
    // CloudWatch Logs writes into an existing group and stream: without them, nothing is sent.
    let r = run(&dir, &args, &env);
    assert_eq!(code(&r), 1, "{}", r.stderr);
    assert!(r.stderr.contains("--cloudwatch-log-group"), "{}", r.stderr);
    assert!(endpoint.seen().is_empty());
    let mut with_dest = args.to_vec();
    with_dest.extend([
        "--cloudwatch-log-group",
        "spanline-app-logs",
        "--cloudwatch-log-stream",
        "checkout",
    ]);
    let r = run(&dir, &with_dest, &env);
    assert_eq!(code(&r), 0, "{}", r.stderr);
    assert_no_secrets(&r);
    let seen = endpoint.seen();
    for s in &seen {
        assert_eq!(s.refused, None, "{s:?}");
        assert_eq!(s.status, 200, "{s:?}");
    }
    let traces: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/traces").collect();
    let logs: Vec<&Seen> = seen.iter().filter(|s| s.path == "/v1/logs").collect();
    assert_eq!(traces.iter().map(|s| s.spans.len()).sum::<usize>(), 3);
    assert_eq!(logs.len(), 1, "{seen:?}");
    let l = logs[0];
    assert_eq!(l.log_group.as_deref(), Some("spanline-app-logs"));
    assert_eq!(l.log_stream.as_deref(), Some("checkout"));
    // The destination headers are signed with the rest.
    assert_eq!(
        l.signed_headers,
        "content-encoding;content-type;host;x-amz-date;x-amz-security-token;x-aws-log-group;\
         x-aws-log-stream"
    );
    let trace = "5b8efff798038103d269b633813fc60c";
    assert_eq!(l.records.len(), 4, "{:?}", l.records);
    assert!(l.records.iter().all(|r| r.0 == trace), "{:?}", l.records);
    let mut levels: Vec<&str> = l.records.iter().map(|r| r.2.as_str()).collect();
    levels.sort_unstable();
    assert_eq!(
        levels,
        ["ERROR", "INFO", "WARN", "WARNING"],
        "{:?}",
        l.records
    );
    assert!(r.stderr.contains("4 log records accepted"), "{}", r.stderr);
}

#[test]
fn a_request_signed_with_a_wrong_secret_key_is_rejected_and_reported() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-wrong-key");
    let input = write_input(&dir, &[line(3, 1, now_us() - 1_000_000, "op", "")]);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, "wrong/Secret+Key0123456789abcdefghijklmno"),
    );
    // 5: the backend refused the data; not retried (a 403 will not change).
    assert_eq!(code(&r), 5, "{}", r.stderr);
    assert_no_secrets(&r);
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0]
            .refused
            .as_deref()
            .is_some_and(|r| r.starts_with("SignatureDoesNotMatch")),
        "{seen:?}"
    );
    assert!(r.stderr.contains("403"), "{}", r.stderr);
    assert!(
        r.stderr.contains("signature we calculated does not match"),
        "{}",
        r.stderr
    );
    assert!(endpoint.accepted_spans().is_empty());
}

#[test]
fn credentials_come_from_the_shared_files_profile() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-profile");
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = AKIDNOTTHISONE\naws_secret_access_key = nope\n\n\
             [xray-writer]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\
             aws_session_token = {SESSION_TOKEN}\n"
        ),
    )
    .expect("credentials file");
    let input = write_input(&dir, &[line(4, 1, now_us() - 1_000_000, "op", "")]);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &[
            ("AWS_ENDPOINT_URL_XRAY".into(), endpoint.url.clone()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                creds.to_string_lossy().into_owned(),
            ),
            ("AWS_PROFILE".into(), "xray-writer".into()),
        ],
    );
    assert_eq!(code(&r), 0, "{}", r.stderr);
    assert_no_secrets(&r);
    let seen = endpoint.seen();
    assert!(seen.iter().all(|s| s.refused.is_none()), "{seen:?}");
    assert_eq!(endpoint.accepted_spans().len(), 1);
}

#[test]
fn without_credentials_nothing_is_sent_and_the_run_says_why() {
    let endpoint = Endpoint::start(None);
    let dir = scratch("xray-no-creds");
    let input = write_input(&dir, &[line(5, 1, now_us() - 1_000_000, "op", "")]);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &[("AWS_ENDPOINT_URL_XRAY".into(), endpoint.url.clone())],
    );
    assert_eq!(code(&r), 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot sign"), "{}", r.stderr);
    assert!(endpoint.seen().is_empty());
}

/// The library's sink, signed for X-Ray against `endpoint` with the test's static credentials.
fn library_sink(endpoint: &Endpoint, protocol: Protocol, compression: Compression) -> OtlpSink {
    let mut c = OtlpConfig::xray(REGION, Some(&endpoint.url)).expect("config");
    c.protocol = protocol;
    c.compression = compression;
    c.retry_deadline = Duration::from_secs(20);
    // More than X-Ray takes: its own limit must cut the requests.
    c.max_batch_spans = 50_000;
    c.sigv4 = Some(
        SigV4::xray(REGION).with_credentials(aws_credential_types::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )),
    );
    OtlpSink::new(c).expect("sink")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn span_data(i: u64, start: u64) -> SpanData {
    SpanData {
        trace_id: TraceId([0x58; 16]),
        span_id: SpanId((i + 1).to_be_bytes()),
        parent_span_id: None,
        name: format!("span-{i}"),
        kind: SpanKind::Server,
        status: StatusCode::Unset,
        status_message: String::new(),
        start_unix_nano: start,
        end_unix_nano: start + 1_000_000,
        attributes: vec![KeyValue {
            key: "i".into(),
            value: AnyValue::Int(i as i64),
        }],
        events: Vec::new(),
        links: Vec::new(),
        service: "svc".into(),
        resource: Vec::new(),
        dropped: (0, 0, 0),
    }
}

#[test]
fn otlp_json_without_compression_is_signed_too() {
    let endpoint = Endpoint::start(None);
    let mut sink = library_sink(&endpoint, Protocol::HttpJson, Compression::None);
    let start = now_nanos() - 5_000_000_000;
    let spans: Vec<Span> = (0..3)
        .map(|i| Span::from_data(&span_data(i, start)))
        .collect();
    let d = rt().block_on(sink.send(&spans)).expect("delivered");
    assert_eq!((d.accepted, d.rejected), (3, 0));
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].refused, None, "{seen:?}");
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(seen[0].content_encoding, None);
    assert_eq!(seen[0].signed_headers, "content-type;host;x-amz-date");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn xrays_limits_are_kept_spans_trimmed_and_skipped_are_counted() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-limits");
    let now = now_us();
    let mut lines = Vec::new();
    // 28 spans of 190,000 bytes: 5.3 MB, more than one request holds.
    for i in 0..28 {
        lines.push(line(
            10,
            1 + i,
            now - 30_000_000,
            &format!("big-{i}"),
            &attribute_fields(1, 190_000),
        ));
    }
    // Over 200 KB: 30 events of 10 kB (trimmed: events go); 30 attributes (attributes go).
    lines.push(line(
        11,
        1,
        now - 20_000_000,
        "many-events",
        &event_fields(30),
    ));
    lines.push(line(
        11,
        2,
        now - 20_000_000,
        "many-attributes",
        &attribute_fields(30, 10_000),
    ));
    // Outside the window: 15 days old, 3 hours ahead. Inside, but 13 days old: not in the same
    // request as today's spans (24 hours at most between them).
    lines.push(line(12, 1, now - 15 * 24 * US_PER_H, "too-old", ""));
    lines.push(line(12, 2, now + 3 * US_PER_H, "in-the-future", ""));
    lines.push(line(
        12,
        3,
        now - 13 * 24 * US_PER_H,
        "thirteen-days-old",
        "",
    ));
    let input = write_input(&dir, &lines);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, SECRET_KEY),
    );
    assert_eq!(code(&r), 0, "{}", r.stderr);
    let seen = endpoint.seen();
    for s in &seen {
        assert_eq!(s.refused, None);
        assert!(
            s.broke.is_empty(),
            "a request broke X-Ray's limits: {:?}",
            s.broke
        );
        assert_eq!(s.status, 200);
    }
    assert!(
        seen.iter()
            .filter(|s| s.spans.iter().any(|s| s.name.starts_with("big-")))
            .count()
            >= 2,
        "5.3 MB went in one request"
    );
    let spans = endpoint.accepted_spans();
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 31, "{names:?}");
    assert!(!names.contains("too-old") && !names.contains("in-the-future"));
    assert!(names.contains("thirteen-days-old"));
    let by = |n: &str| spans.iter().find(|s| s.name == n).expect(n).clone();
    let ev = by("many-events");
    assert!(ev.size.expect("size") <= 200_000);
    assert_eq!((ev.events + ev.dropped_events as usize), 30);
    assert!(ev.dropped_events > 0 && ev.events > 0, "{ev:?}");
    let at = by("many-attributes");
    assert!(at.size.expect("size") <= 200_000);
    assert_eq!(at.attributes + at.dropped_attributes as usize, 30);
    assert!(at.dropped_attributes > 0, "{at:?}");
    for want in [
        "xray_span_in_future: 1",
        "xray_span_too_old: 1",
        "xray_span_trimmed: 2",
    ] {
        assert!(
            r.stderr.contains("limits reached:") && r.stderr.contains(want),
            "{want} not in the summary:\n{}",
            r.stderr
        );
    }
}

#[test]
fn logs_older_than_fourteen_days_are_skipped_and_counted_not_refused() {
    // Converting last month's logs: X-Ray would refuse every request holding one of them.
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    let dir = scratch("xray-old");
    let then = now_us() - 20 * 24 * US_PER_H;
    let lines: Vec<String> = (0..11)
        .map(|i| line(13, 1 + i, then + i, "op", ""))
        .collect();
    let input = write_input(&dir, &lines);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, SECRET_KEY),
    );
    assert_eq!(code(&r), 0, "{}", r.stderr);
    assert!(endpoint.seen().is_empty(), "{:?}", endpoint.seen());
    assert!(
        r.stderr.contains("limits reached: xray_span_too_old: 11"),
        "{}",
        r.stderr
    );
}

#[test]
fn ten_thousand_and_one_spans_go_in_two_requests() {
    let endpoint = Endpoint::start(None);
    let mut sink = library_sink(&endpoint, Protocol::HttpProtobuf, Compression::Gzip);
    let start = now_nanos() - 5_000_000_000;
    let spans: Vec<Span> = (0..10_001)
        .map(|i| Span::from_data(&span_data(i, start)))
        .collect();
    let d = rt().block_on(sink.send(&spans)).expect("delivered");
    assert_eq!(d.accepted, 10_001);
    let mut sizes: Vec<usize> = endpoint.seen().iter().map(|s| s.spans.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 10_000]);
    assert!(endpoint
        .seen()
        .iter()
        .all(|s| s.refused.is_none() && s.broke.is_empty()));
    assert!(sink.limits().is_empty(), "{:?}", sink.limits());
}

#[test]
fn an_otlp_json_request_over_five_megabytes_is_halved_until_it_fits() {
    let endpoint = Endpoint::start(None);
    let mut sink = library_sink(&endpoint, Protocol::HttpJson, Compression::Gzip);
    let start = now_nanos() - 5_000_000_000;
    // 40 spans of ~150 kB of protobuf: 6 MB, twice that as JSON. The plan cuts by protobuf
    // size; the JSON bodies are measured again and halved.
    let spans: Vec<Span> = (0..40)
        .map(|i| {
            let mut d = span_data(i, start);
            d.events = (0..15)
                .map(|e| Event {
                    time_unix_nano: start + e,
                    name: format!("e{e}"),
                    attributes: vec![KeyValue {
                        key: "p".into(),
                        // Written `\"` in JSON: twice its protobuf size.
                        value: AnyValue::Str("\"".repeat(10_000)),
                    }],
                })
                .collect();
            Span::from_data(&d)
        })
        .collect();
    let d = rt().block_on(sink.send(&spans)).expect("delivered");
    assert_eq!(d.accepted, 40);
    let seen = endpoint.seen();
    assert!(seen.len() >= 3, "{} requests", seen.len());
    for s in &seen {
        assert!(s.raw_len <= 5_000_000, "{} bytes", s.raw_len);
        assert!(s.broke.is_empty() && s.refused.is_none());
    }
    assert_eq!(seen.iter().map(|s| s.spans.len()).sum::<usize>(), 40);
}

// ---------------------------------------------------------------------------------------------
// Answers: partial success, throttling

#[test]
fn partial_success_from_xray_is_reported() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    endpoint.then(&[Answer::Partial(2, "2 spans have an invalid trace id")]);
    let dir = scratch("xray-partial");
    let now = now_us();
    let lines: Vec<String> = (0..5)
        .map(|i| line(20, 1 + i, now - 1_000_000, "op", ""))
        .collect();
    let input = write_input(&dir, &lines);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, SECRET_KEY),
    );
    // 5: the backend rejected some of the data.
    assert_eq!(code(&r), 5, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("2 spans rejected: 2 spans have an invalid trace id"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("3 spans accepted, 2 rejected"),
        "{}",
        r.stderr
    );
}

#[test]
fn throttling_is_retried_with_a_fresh_signature_within_the_deadline() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    endpoint.then(&[Answer::Throttle(1), Answer::Unavailable]);
    let dir = scratch("xray-throttled");
    let input = write_input(&dir, &[line(21, 1, now_us() - 1_000_000, "op", "")]);
    let r = run(
        &dir,
        &["convert", &input, "--xray-region", REGION],
        &creds_env(&endpoint, SECRET_KEY),
    );
    assert_eq!(code(&r), 0, "{}", r.stderr);
    let seen = endpoint.seen();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
    // Each attempt was signed again (and each signature checked).
    assert!(seen.iter().all(|s| s.refused.is_none()), "{seen:?}");
    assert!(seen[0].x_amz_date <= seen[2].x_amz_date);
    assert!(r.stderr.contains("at most 3 attempts"), "{}", r.stderr);
}

#[test]
fn throttling_past_the_retry_deadline_exits_for_a_later_run() {
    let endpoint = Endpoint::start(Some(SESSION_TOKEN));
    endpoint.then(&[Answer::Throttle(1); 20]);
    let dir = scratch("xray-throttled-out");
    let input = write_input(&dir, &[line(22, 1, now_us() - 1_000_000, "op", "")]);
    let r = run(
        &dir,
        &[
            "convert",
            &input,
            "--xray-region",
            REGION,
            "--retry-deadline",
            "3s",
        ],
        &creds_env(&endpoint, SECRET_KEY),
    );
    // 4: the backend kept failing until the deadline; try again later.
    assert_eq!(code(&r), 4, "{}", r.stderr);
    assert!(r.stderr.contains("429"), "{}", r.stderr);
    assert!(endpoint.seen().len() >= 2);
}

#[test]
fn xray_region_and_an_xray_otlp_endpoint_together_are_refused() {
    let dir = scratch("xray-twice");
    let r = run(
        &dir,
        &[
            "convert",
            "-",
            "--xray-region",
            REGION,
            "--otlp-endpoint",
            "https://xray.us-east-1.amazonaws.com",
        ],
        &[],
    );
    assert_eq!(code(&r), 1, "{}", r.stderr);
    assert!(r.stderr.contains("twice"), "{}", r.stderr);
    let r = run(&dir, &["convert", "-", "--xray-region", "US East"], &[]);
    assert_eq!(code(&r), 1, "{}", r.stderr);
    assert!(r.stderr.contains("--xray-region"), "{}", r.stderr);
}

/// The error a sink reports when every attempt was throttled: retryable.
#[test]
fn a_throttled_library_send_is_a_retryable_error() {
    let endpoint = Endpoint::start(None);
    endpoint.then(&[Answer::Throttle(1); 10]);
    let mut c = OtlpConfig::xray(REGION, Some(&endpoint.url)).expect("config");
    c.retry_deadline = Duration::from_secs(2);
    c.sigv4 = Some(
        SigV4::xray(REGION).with_credentials(aws_credential_types::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        )),
    );
    let mut sink = OtlpSink::new(c).expect("sink");
    let spans = vec![Span::from_data(&span_data(1, now_nanos() - 1_000_000_000))];
    let e = rt().block_on(sink.send(&spans)).expect_err("throttled");
    assert!(matches!(e, SinkError::Exhausted { .. }), "{e}");
    assert!(e.is_retryable());
}
