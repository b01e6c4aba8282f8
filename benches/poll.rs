//! `spanline tail --poll` benchmark: exactly-once delivery, read cost and request rate, with the
//! peer `livetrace` 0.3.0 (its FilterLogEvents polling mode) in the same run.
//!
//! **Part a: moto, in real time.** Two log groups with the same timing: one holds span lines
//! for spanline, the other the peer's JSON envelope (`otlp-stdout-span-exporter`: one gzipped,
//! base64 OTLP request per line) for livetrace, one span per event with unique span ids. The
//! workload is the one of the unit test
//! `late_and_same_millisecond_events_come_once_for_at_most_three_reads_each` (same generator,
//! same seed): 1,000 timestamps over 180 s, 10 % of them ingested 30–90 s late, 40 of them
//! shared by three events (1,080 events). A writer task calls PutLogEvents at each event's
//! ingestion moment (a late event is put with its old timestamp). Both tools are started before
//! the first event, at `--interval 2s` / `--poll-interval 2s`, the rest at their defaults, and
//! each reaches moto through its own counting proxy (FilterLogEvents requests and the events in
//! their answers). livetrace names the group by ARN (`logGroupIdentifier`), which moto 5.x
//! rejects, and discovers groups with `logGroupNamePattern`, which moto ignores: its proxy
//! rewrites the first into `logGroupName` and the second into `logGroupNamePrefix` (the
//! pattern given is the whole group name), and the bench says so. Each tool sends to its own
//! OTLP/HTTP recorder, which notes every span id with its arrival time. The run lasts until
//! spanline's final pass (a read ending `--overlap` before the moment it is sent) has read past
//! the last event, or a deadline; then spanline gets SIGINT (it drains) and livetrace is
//! killed.
//!
//! **Part b: a scripted FilterLogEvents endpoint, 1,000 events/s per group.** The endpoint
//! makes each group's events on the fly: one a millisecond for `SPANLINE_BENCH_POLL_B_SECS`
//! (default 180) seconds, each a span line with its own span id, ingested 100–500 ms after its
//! timestamp (95 %) or 5–20 s after (5 %), visible only once ingested; it honours
//! `logGroupName`, `startTime` and `endTime` (inclusive), answers at most 10,000 events a page
//! with a `nextToken`, and ignores the filter pattern. spanline runs at its default flags
//! (`--interval 5s`, `--overlap 2m`, `--max-tps 5`) on 1, 4 and 16 groups (one row each) until
//! its final pass has read past every group's last event (or a deadline), then gets SIGINT. So
//! every event is expected: none is ingested later than the overlap. 180 s rather than a minute:
//! the late pass learns the lags from the events delivered, and the late events are first
//! delivered by the final pass, a little over two minutes into a run.
//!
//! Reported per tool or row: spans lost (expected − distinct span ids delivered), duplicates
//! (deliveries − distinct), FilterLogEvents requests and events returned, events returned per
//! delivered span, latency (arrival at the recorder − the event's ingestion), and for part b the
//! request rate (mean, and the most requests in any 1 s and any 10 s window) against the
//! budget, the longest gap between two head reads of a group, and whether spanline counted
//! `poll_behind` and warned that the budget cannot keep up, and each child's CPU seconds. The
//! run ends with one JSON line of the figures.
//!
//! Both parts and every row of part b run at the same time, each spanline with its own
//! endpoint, proxy, recorder and request budget: the runs are mostly waiting (spanline uses
//! about a fifth of a core with 16 groups), and one at a time would take four times as long.
//!
//! Needs the moto server of `tests/services.sh start` for part a (`SPANLINE_TEST_MOTO`, e.g.
//! `source target/test-services/env`); without it part a is skipped, said so. livetrace is
//! taken from `SPANLINE_BENCH_LIVETRACE`, else `livetrace` on `PATH`, else
//! `/work/livetrace-bin/bin/livetrace`; without it the peer row is missing, said so. Run:
//! `cargo bench --bench poll` (about 8 minutes). Not run in CI. Scale with
//! `SPANLINE_BENCH_POLL_SECS` (part a's 180 s; shorter runs shrink the late lags in
//! proportion), `SPANLINE_BENCH_POLL_B_SECS`, `SPANLINE_BENCH_POLL_GROUPS` (`1,4,16`) and
//! `SPANLINE_BENCH_POLL_PARTS` (`a,b`); `SPANLINE_BENCH_POLL_BIN` runs another spanline build
//! (to compare two).

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use prost::Message as _;
use serde_json::{json, Value};
use spanline::span_line::encode::{fixed_len, write_service};
use spanline::span_line::{
    SpanEncoder, SpanHead, SpanId, SpanKind, StatusCode, TraceId, Value as Attr,
};
use std::collections::HashMap;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// spanline's defaults that the stop conditions depend on: `--overlap` and the longest time
/// between two sweeps.
const OVERLAP_MS: i64 = 120_000;
const SWEEP_MS: i64 = 15_000;
/// The FilterLogEvents request budget (`--max-tps`, default 5).
const BUDGET_TPS: f64 = 5.0;
const SERVICE: &str = "bench";
/// Part a's streams per group (as in the unit test).
const STREAMS: usize = 7;
/// Part b: events per FilterLogEvents page at most (the API's limit).
const PAGE_EVENTS: usize = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn env_i64(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// A hand HTTP/1.1 server (keep-alive), for the proxies, the recorders and the scripted endpoint.

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    /// An AWS JSON-protocol error answer.
    fn aws_error(code: &str, message: &str) -> Self {
        let mut r = HttpResponse::new(
            400,
            "application/x-amz-json-1.1",
            json!({"__type": code, "message": message})
                .to_string()
                .into_bytes(),
        );
        r.headers.push(("x-amzn-errortype".into(), code.into()));
        r
    }
}

fn bad_input(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("POST").to_owned();
    let path = parts.next().unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut req = HttpRequest {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| bad_input("chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = req.body.len();
            req.body.resize(at + size, 0);
            r.read_exact(&mut req.body[at..]).await?;
            line.clear();
            r.read_line(&mut line).await?;
        }
    } else if let Some(n) = req.header("content-length") {
        let n: usize = n.parse().map_err(|_| bad_input("content-length"))?;
        req.body.resize(n, 0);
        r.read_exact(&mut req.body).await?;
    }
    Ok(Some(req))
}

async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: &HttpResponse,
) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", resp.body.len()));
    w.write_all(head.as_bytes()).await?;
    w.write_all(&resp.body).await?;
    w.flush().await
}

/// Serves `handle` on a fresh 127.0.0.1 port; returns its base URL.
async fn serve<F, Fut>(handle: F) -> String
where
    F: Fn(HttpRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut rd = tokio::io::BufReader::new(rd);
                while let Ok(Some(req)) = read_request(&mut rd).await {
                    let close = req
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    let resp = handle(req).await;
                    if write_response(&mut wr, &resp).await.is_err() || close {
                        break;
                    }
                }
            });
        }
    });
    url
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP recorder: each span id with its first arrival.

#[derive(Default)]
struct Arrivals {
    first: HashMap<u64, i64>,
    spans: u64,
    requests: u64,
    refused: u64,
}

fn record(arrivals: &Mutex<Arrivals>, req: HttpRequest) -> HttpResponse {
    let at = now_ms();
    let gzip = req
        .header("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let proto = req
        .header("content-type")
        .is_some_and(|v| v.contains("protobuf"));
    let body = if gzip {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&req.body[..]).read_to_end(&mut out) {
            Ok(_) => out,
            Err(_) => Vec::new(),
        }
    } else {
        req.body
    };
    let decoded = if proto {
        ExportTraceServiceRequest::decode(&body[..]).ok()
    } else {
        None
    };
    let mut a = arrivals.lock().expect("arrivals");
    a.requests += 1;
    let Some(r) = decoded else {
        a.refused += 1;
        return HttpResponse::new(400, "text/plain", b"expected OTLP protobuf".to_vec());
    };
    for s in r
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
    {
        let id = <[u8; 8]>::try_from(s.span_id.as_slice()).map_or(0, u64::from_be_bytes);
        a.spans += 1;
        a.first.entry(id).or_insert(at);
    }
    HttpResponse::new(200, "application/x-protobuf", Vec::new())
}

async fn recorder() -> (String, Arc<Mutex<Arrivals>>) {
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let a = arrivals.clone();
    let url = serve(move |req| {
        let a = a.clone();
        async move { record(&a, req) }
    })
    .await;
    (url, arrivals)
}

// ---------------------------------------------------------------------------------------------
// Counting proxy in front of moto (part a).

/// One FilterLogEvents call, as a proxy or the scripted endpoint saw it.
#[derive(Clone, Debug)]
struct Call {
    at_ms: i64,
    group: usize,
    end: Option<i64>,
    /// A page after the first (the request carried a `nextToken`).
    continued: bool,
    events: u64,
    status: u16,
}

#[derive(Default)]
struct Tap {
    calls: Vec<Call>,
    other_calls: u64,
    rewritten_arn: u64,
    rewritten_pattern: u64,
    errors: Vec<String>,
}

/// `arn:aws:logs:R:A:log-group:NAME` (possibly ending in `:*`) → NAME.
fn group_of_arn(arn: &str) -> Option<&str> {
    let name = arn.split_once(":log-group:")?.1;
    Some(name.strip_suffix(":*").unwrap_or(name))
}

const HOP_BY_HOP: [&str; 6] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "accept-encoding",
    "keep-alive",
];

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    tap: &Mutex<Tap>,
    rewrite: bool,
    mut req: HttpRequest,
) -> HttpResponse {
    let op = req
        .header("x-amz-target")
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned();
    let mut json_body: Option<Value> = serde_json::from_slice(&req.body).ok();
    let mut pattern: Option<String> = None;
    if rewrite {
        if let Some(obj) = json_body.as_mut().and_then(Value::as_object_mut) {
            if op == "FilterLogEvents" {
                let name = obj
                    .get("logGroupIdentifier")
                    .and_then(Value::as_str)
                    .and_then(|id| group_of_arn(id).map(str::to_owned));
                if let Some(name) = name {
                    obj.remove("logGroupIdentifier");
                    obj.insert("logGroupName".into(), json!(name));
                    tap.lock().expect("tap").rewritten_arn += 1;
                }
            } else if op == "DescribeLogGroups" {
                if let Some(p) = obj.remove("logGroupNamePattern") {
                    pattern = p.as_str().map(str::to_owned);
                    obj.insert("logGroupNamePrefix".into(), p);
                    tap.lock().expect("tap").rewritten_pattern += 1;
                }
            }
        }
        if let Some(v) = &json_body {
            req.body = serde_json::to_vec(v).expect("JSON");
        }
    }
    let field = |k: &str| {
        json_body
            .as_ref()
            .and_then(|b| b.get(k))
            .and_then(Value::as_i64)
    };
    let end = field("endTime");
    let continued = json_body
        .as_ref()
        .is_some_and(|b| b.get("nextToken").is_some_and(|t| !t.is_null()));
    let at_ms = now_ms();
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut rb = client.request(method, format!("{upstream}{}", req.path));
    for (k, v) in &req.headers {
        if !HOP_BY_HOP.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            rb = rb.header(k.as_str(), v.as_str());
        }
    }
    let resp = match rb.body(req.body).send().await {
        Ok(r) => r,
        Err(e) => {
            tap.lock().expect("tap").errors.push(e.to_string());
            return HttpResponse::new(502, "text/plain", e.to_string().into_bytes());
        }
    };
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| {
            !HOP_BY_HOP
                .iter()
                .any(|h| k.as_str().eq_ignore_ascii_case(h))
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let mut body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    let mut tap = tap.lock().expect("tap");
    if let Some(p) = pattern {
        // What AWS does with logGroupNamePattern (a substring match), which moto ignores.
        if let Ok(mut v) = serde_json::from_slice::<Value>(&body) {
            if let Some(groups) = v.get_mut("logGroups").and_then(Value::as_array_mut) {
                groups.retain(|g| {
                    g.get("logGroupName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.contains(&p))
                });
            }
            body = serde_json::to_vec(&v).expect("JSON");
        }
    }
    if op == "FilterLogEvents" {
        let events = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("events").and_then(Value::as_array).map(Vec::len))
            .unwrap_or(0) as u64;
        if status != 200 {
            tap.errors.push(format!(
                "FilterLogEvents {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        tap.calls.push(Call {
            at_ms,
            group: 0,
            end,
            continued,
            events,
            status,
        });
    } else {
        tap.other_calls += 1;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

async fn proxy(upstream: &str, rewrite: bool) -> (String, Arc<Mutex<Tap>>) {
    let tap = Arc::new(Mutex::new(Tap::default()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let (t, upstream) = (tap.clone(), upstream.trim_end_matches('/').to_owned());
    let url = serve(move |req| {
        let (client, upstream, tap) = (client.clone(), upstream.clone(), t.clone());
        async move { forward(&client, &upstream, &tap, rewrite, req).await }
    })
    .await;
    (url, tap)
}

/// Whether spanline's final pass of `group` has read past `through_ms`: a successful read
/// ending at `through_ms` or later, sent at least (almost) `--overlap` after its end. (The late
/// pass ends at most half the overlap before it is sent; the head has no end.)
fn final_pass_read(calls: &[Call], group: usize, through_ms: i64) -> bool {
    calls.iter().any(|c| {
        c.group == group
            && c.status == 200
            && c.end
                .is_some_and(|e| e >= through_ms && c.at_ms - e >= OVERLAP_MS - 2_000)
    })
}

// ---------------------------------------------------------------------------------------------
// The events: span lines for spanline, otlp-stdout-span-exporter envelopes for livetrace.

/// Builds span lines with the library's encoder.
struct Lines {
    enc: SpanEncoder,
    suffix: Vec<u8>,
    out: Vec<u8>,
}

impl Lines {
    fn new() -> Self {
        let mut suffix = Vec::new();
        write_service(&mut suffix, SERVICE);
        Lines {
            enc: SpanEncoder::new(),
            suffix,
            out: Vec::with_capacity(256),
        }
    }

    /// One root span of 1 ms starting at `start_ms`, as a custom runtime prints it.
    fn span_line(&mut self, trace: [u8; 16], span: u64, start_ms: i64, seq: u64) -> &str {
        let head = SpanHead {
            trace_id: TraceId(trace),
            span_id: SpanId(span.to_be_bytes()),
            parent: None,
            start_us: start_ms as u64 * 1000,
            duration_us: 1000,
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            name: "bench.event",
        };
        self.enc
            .reset(fixed_len(head.name, None, self.suffix.len()));
        self.enc.attr("bench.seq", Attr::Int(seq as i64));
        self.out.clear();
        self.enc
            .write_record(&mut self.out, &head, None, None, &self.suffix);
        std::str::from_utf8(&self.out).expect("span lines are ASCII")
    }
}

/// The same span as `otlp-stdout-span-exporter` 0.18 prints it: one JSON line carrying the
/// gzipped, base64 OTLP protobuf request.
fn envelope(trace: [u8; 16], span: u64, start_ms: i64) -> String {
    let start_ns = start_ms as u64 * 1_000_000;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(SERVICE.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![ProtoSpan {
                    trace_id: trace.to_vec(),
                    span_id: span.to_be_bytes().to_vec(),
                    name: "bench.event".into(),
                    kind: 1,
                    start_time_unix_nano: start_ns,
                    end_time_unix_nano: start_ns + 1_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&request.encode_to_vec()).expect("gzip");
    let payload = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    let line = otlp_stdout_span_exporter::ExporterOutput {
        version: "0.18.0".to_owned(),
        source: SERVICE.to_owned(),
        endpoint: "http://localhost:4318/v1/traces".to_owned(),
        method: "POST".to_owned(),
        content_type: "application/x-protobuf".to_owned(),
        content_encoding: "gzip".to_owned(),
        headers: None,
        payload,
        base64: true,
        level: None,
    };
    serde_json::to_string(&line).expect("envelope")
}

/// The unit test's generator (`tail/tests.rs`), for the same workload.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One event of part a, relative to the start of the workload.
struct Planned {
    seq: u64,
    ts_off: i64,
    ing_off: i64,
    stream: usize,
}

impl Planned {
    fn span_id(&self) -> u64 {
        0x5350_4c4e_0000_0000 | (self.seq + 1)
    }

    fn trace_id(&self) -> [u8; 16] {
        (0xbe9c_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(self.seq + 1)).to_be_bytes()
    }
}

/// The workload over `secs` seconds (180 by default): the unit test's events with
/// their timestamps spread over `secs`, and the late lags (30–90 s) shrunk in proportion when
/// `secs` is shorter.
fn workload(secs: i64) -> Vec<Planned> {
    let mut rng = Lcg(15);
    let mut out = Vec::new();
    for i in 0..1_000u64 {
        let ts = rng.below(180_000) as i64 * secs / 180;
        let lag = if i % 10 == 0 {
            (30_000 + rng.below(60_001) as i64) * secs.min(180) / 180
        } else {
            rng.below(1_001) as i64
        };
        let n = if i % 25 == 0 { 3 } else { 1 };
        for k in 0..n {
            out.push(Planned {
                seq: i * 10 + k,
                ts_off: ts,
                ing_off: ts + lag + k as i64,
                stream: (i % STREAMS as u64) as usize,
            });
        }
    }
    out.sort_by_key(|p| (p.ing_off, p.seq));
    out
}

// ---------------------------------------------------------------------------------------------
// Children.

fn find_livetrace() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("SPANLINE_BENCH_LIVETRACE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "SPANLINE_BENCH_LIVETRACE={} is not a file",
                p.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("livetrace"))
            .find(|p| p.is_file())
    });
    let fallback = PathBuf::from("/work/livetrace-bin/bin/livetrace");
    on_path
        .or_else(|| fallback.is_file().then_some(fallback))
        .ok_or_else(|| {
            "livetrace is not installed (not in SPANLINE_BENCH_LIVETRACE, on PATH or at \
             /work/livetrace-bin/bin/livetrace; `cargo install livetrace --version 0.3.0 --locked`)"
                .to_owned()
        })
}

fn spawn(bin: &Path, args: &[String], endpoint: &str, dir: &Path, name: &str) -> Child {
    let file = |ext: &str| std::fs::File::create(dir.join(format!("{name}.{ext}"))).expect("log");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdin(Stdio::null())
        .stdout(file("stdout"))
        .stderr(file("stderr"));
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
        "AWS_ENDPOINT_URL_STS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ] {
        cmd.env_remove(var);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

/// The spanline binary: this build's, or `SPANLINE_BENCH_POLL_BIN` (another build, to compare).
fn spanline_bin() -> PathBuf {
    std::env::var_os("SPANLINE_BENCH_POLL_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_spanline")),
        PathBuf::from,
    )
}

/// CPU seconds (user + system) a running child has used so far (Linux `/proc`).
fn cpu_secs(child: &Child) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", child.id())) else {
        return f64::NAN;
    };
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) if hz > 0.0 => (u + s) / hz,
        _ => f64::NAN,
    }
}

/// SIGINT, then waits up to `grace` before killing. Returns whether it exited by itself.
async fn interrupt(child: &mut Child, grace: Duration) -> bool {
    // SAFETY: signalling our own child by its id.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let until = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The number just before `suffix` in `text` (e.g. `" records,"` in spanline's summary).
fn number_before(text: &str, suffix: &str) -> Option<u64> {
    let at = text.find(suffix)?;
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The number just after `prefix` in `text` (e.g. `"poll_behind: "`).
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let at = text.find(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// spanline's closing summary line (the one with the read cost).
fn summary_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("events returned"))
        .unwrap_or("")
        .to_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn quantile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64
}

/// The most calls in any window of `window_ms`.
fn max_in_window(sorted_at: &[i64], window_ms: i64) -> usize {
    let (mut lo, mut best) = (0, 0);
    for hi in 0..sorted_at.len() {
        while sorted_at[hi] - sorted_at[lo] >= window_ms {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// Part a.

struct ToolRow {
    name: String,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    unexpected: u64,
    requests: u64,
    failed_requests: u64,
    returned: u64,
    latency_p50_s: f64,
    latency_max_s: f64,
    /// The source's own count of records (spanline's summary), when known.
    source_records: Option<u64>,
    cpu_s: f64,
    note: String,
}

impl ToolRow {
    fn lost(&self) -> u64 {
        self.expected - self.delivered
    }

    fn per_delivered(&self) -> f64 {
        self.returned as f64 / self.delivered as f64
    }

    fn json(&self) -> Value {
        json!({
            "expected": self.expected,
            "lost": self.lost(),
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "filter_requests": self.requests,
            "filter_requests_failed": self.failed_requests,
            "events_returned": self.returned,
            "returned_per_delivered": num(self.per_delivered()),
            "latency_p50_s": num(self.latency_p50_s),
            "latency_max_s": num(self.latency_max_s),
            "source_records": self.source_records,
            "cpu_s": num(self.cpu_s),
        })
    }
}

fn tool_row(
    name: &str,
    put_at: &HashMap<u64, i64>,
    arrivals: &Arrivals,
    tap: &Tap,
    note: String,
) -> ToolRow {
    let mut latencies: Vec<i64> = arrivals
        .first
        .iter()
        .filter_map(|(id, at)| put_at.get(id).map(|put| at - put))
        .collect();
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    ToolRow {
        name: name.to_owned(),
        expected: put_at.len() as u64,
        delivered,
        duplicates: arrivals.spans - arrivals.first.len() as u64,
        unexpected: arrivals.first.len() as u64 - delivered,
        requests: tap.calls.len() as u64,
        failed_requests: tap.calls.iter().filter(|c| c.status != 200).count() as u64,
        returned: tap.calls.iter().map(|c| c.events).sum(),
        latency_p50_s: quantile(&latencies, 0.5) / 1000.0,
        latency_max_s: latencies.last().map_or(f64::NAN, |l| *l as f64 / 1000.0),
        source_records: None,
        cpu_s: f64::NAN,
        note,
    }
}

struct PartA {
    secs: i64,
    events: usize,
    rows: Vec<ToolRow>,
    peer_missing: Option<String>,
    peer_version: Option<String>,
    rewrites: (u64, u64),
    notes: Vec<String>,
}

async fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let sdk = spanline::convert::aws::config_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&sdk)
}

async fn put_one(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    ts: i64,
    message: &str,
) -> i64 {
    let event = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
        .timestamp(ts)
        .message(message)
        .build()
        .expect("event");
    client
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .log_events(event)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutLogEvents into {group}: {e:?}"));
    now_ms()
}

async fn part_a(moto: String, secs: i64, dir: PathBuf) -> PartA {
    let (moto, dir) = (moto.as_str(), dir.as_path());
    let client = logs_client(moto).await;
    let tag = format!("{}-{}", std::process::id(), now_ms());
    let groups = [
        format!("/aws/lambda/bench-poll-spanline-{tag}"),
        format!("/aws/lambda/bench-poll-livetrace-{tag}"),
    ];
    let streams: Vec<String> = (0..STREAMS)
        .map(|s| format!("2026/01/01/[$LATEST]{s:032x}"))
        .collect();
    for g in &groups {
        client
            .create_log_group()
            .log_group_name(g)
            .send()
            .await
            .expect("CreateLogGroup (is SPANLINE_TEST_MOTO a moto server?)");
        for s in &streams {
            client
                .create_log_stream()
                .log_group_name(g)
                .log_stream_name(s)
                .send()
                .await
                .expect("CreateLogStream");
        }
    }
    let planned = workload(secs);
    let mut notes = Vec::new();
    let (rec_s, arr_s) = recorder().await;
    let (rec_l, arr_l) = recorder().await;
    let (proxy_s, tap_s) = proxy(moto, false).await;
    let (proxy_l, tap_l) = proxy(moto, true).await;

    let spanline_args: Vec<String> = [
        "tail",
        "--poll",
        "--interval",
        "2s",
        "--log-group-name",
        &groups[0],
        "--otlp-endpoint",
        &rec_s,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spanline = spawn(&spanline_bin(), &spanline_args, &proxy_s, dir, "a-spanline");
    let mut peer_version = None;
    let mut peer = match find_livetrace() {
        Ok(bin) => {
            peer_version = Command::new(&bin)
                .arg("--version")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
            let args: Vec<String> = [
                "-g",
                &groups[1],
                "--poll-interval",
                "2s",
                "-e",
                &format!("{rec_l}/v1/traces"),
                "--forward-only",
                "--session-timeout",
                "60m",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Ok(spawn(&bin, &args, &proxy_l, dir, "a-livetrace"))
        }
        Err(why) => Err(why),
    };

    // Both are polling before the first event.
    let ready_by = now_ms() + 60_000;
    loop {
        let s_ready = !tap_s.lock().expect("tap").calls.is_empty();
        let l_ready = match &mut peer {
            Ok(child) => {
                if let Ok(Some(status)) = child.try_wait() {
                    let why = format!(
                        "livetrace exited before the first event ({status}): {}",
                        last_lines(&read_log(dir, "a-livetrace.stderr"), 5)
                    );
                    peer = Err(why);
                    true
                } else {
                    !tap_l.lock().expect("tap").calls.is_empty()
                }
            }
            Err(_) => true,
        };
        if s_ready && l_ready {
            break;
        }
        if now_ms() > ready_by {
            notes.push("not every tool had polled 60 s after its start".to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The writer: each event at its ingestion moment, into both groups.
    let t0 = now_ms() + 2_000;
    let start = tokio::time::Instant::now() + Duration::from_millis(2_000);
    let mut lines = Lines::new();
    let mut put_s: HashMap<u64, i64> = HashMap::new();
    let mut put_l: HashMap<u64, i64> = HashMap::new();
    let total = planned.len();
    let mut said = now_ms();
    for (n, p) in planned.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(p.ing_off as u64)).await;
        let ts = t0 + p.ts_off;
        let line = lines
            .span_line(p.trace_id(), p.span_id(), ts, p.seq)
            .to_owned();
        let env = envelope(p.trace_id(), p.span_id(), ts);
        let stream = &streams[p.stream];
        let (a, b) = tokio::join!(
            put_one(&client, &groups[0], stream, ts, &line),
            put_one(&client, &groups[1], stream, ts, &env),
        );
        put_s.insert(p.span_id(), a);
        put_l.insert(p.span_id(), b);
        if now_ms() - said >= 30_000 {
            said = now_ms();
            let got = arr_s.lock().expect("arrivals").first.len();
            eprintln!("part a: {n}/{total} events put, spanline has {got} spans so far");
        }
    }
    let last_put = put_s
        .values()
        .chain(put_l.values())
        .copied()
        .max()
        .unwrap_or(t0);
    let through = t0 + planned.iter().map(|p| p.ts_off).max().unwrap_or(0);
    eprintln!("part a: all {total} events put; waiting for spanline's final pass");
    let deadline = last_put + OVERLAP_MS + 2 * SWEEP_MS + 30_000;
    loop {
        if final_pass_read(&tap_s.lock().expect("tap").calls, 0, through) {
            // Its pages and the delivery of what they held.
            tokio::time::sleep(Duration::from_secs(3)).await;
            break;
        }
        if now_ms() > deadline {
            notes.push(
                "spanline's final pass had not read past the last event by the deadline \
                 (last ingestion + overlap + 2 sweeps + 30 s)"
                    .to_owned(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_spanline = cpu_secs(&spanline);
    let cpu_peer = peer.as_ref().map_or(f64::NAN, cpu_secs);
    if !interrupt(&mut spanline, Duration::from_secs(30)).await {
        notes.push("spanline did not exit within 30 s of SIGINT (killed)".to_owned());
    }
    let peer_missing = match &mut peer {
        Ok(child) => {
            let exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            exited.map(|s| {
                format!(
                    "livetrace exited during the run ({s}): {}",
                    last_lines(&read_log(dir, "a-livetrace.stderr"), 5)
                )
            })
        }
        Err(why) => Some(why.clone()),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    for g in &groups {
        let _ = client.delete_log_group().log_group_name(g).send().await;
    }
    let stderr = read_log(dir, "a-spanline.stderr");
    let summary = summary_line(&stderr);
    let mut rows = Vec::new();
    let mut s = tool_row(
        "spanline tail --poll --interval 2s",
        &put_s,
        &arr_s.lock().expect("arrivals"),
        &tap_s.lock().expect("tap"),
        summary.clone(),
    );
    s.source_records = number_before(&summary, " records,");
    s.cpu_s = cpu_spanline;
    rows.push(s);
    let tap_l = tap_l.lock().expect("tap");
    if peer_missing.is_none() {
        let note = tap_l
            .errors
            .first()
            .map_or_else(String::new, |e| format!("first error: {e}"));
        let mut p = tool_row(
            &format!(
                "livetrace --poll-interval 2s ({})",
                peer_version.as_deref().unwrap_or("version unknown")
            ),
            &put_l,
            &arr_l.lock().expect("arrivals"),
            &tap_l,
            note,
        );
        p.cpu_s = cpu_peer;
        rows.push(p);
    }
    PartA {
        secs,
        events: total,
        rows,
        peer_missing,
        peer_version,
        rewrites: (tap_l.rewritten_arn, tap_l.rewritten_pattern),
        notes,
    }
}

fn print_part_a(a: &PartA) {
    println!(
        "\npart a: moto, real time, {} s: {} events (1,000 timestamps, 10 % ingested {}–{} s \
         late, 40 shared by 3 events), one span each",
        a.secs,
        a.events,
        30 * a.secs.min(180) / 180,
        90 * a.secs.min(180) / 180,
    );
    if a.secs < 180 {
        println!("  (shorter than 180 s: the late lags are shrunk in proportion)");
    }
    println!(
        "{:<44} {:>8} {:>5} {:>5} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}",
        "tool",
        "expected",
        "lost",
        "dups",
        "requests",
        "returned",
        "ret/dlv",
        "lat p50",
        "lat max",
        "CPU"
    );
    for r in &a.rows {
        println!(
            "{:<44} {:>8} {:>5} {:>5} {:>8} {:>8} {:>7.2} {:>7.1}s {:>7.1}s {:>5.1}s",
            r.name,
            r.expected,
            r.lost(),
            r.duplicates,
            r.requests,
            r.returned,
            r.per_delivered(),
            r.latency_p50_s,
            r.latency_max_s,
            r.cpu_s
        );
        if r.failed_requests > 0 {
            println!("  {} FilterLogEvents requests failed", r.failed_requests);
        }
        if r.unexpected > 0 {
            println!("  {} span ids that were not written arrived", r.unexpected);
        }
        if !r.note.is_empty() {
            println!("  {}", r.note);
        }
    }
    match &a.peer_missing {
        Some(why) => println!("  PEER ROW MISSING: {why}"),
        None => println!(
            "  livetrace's proxy rewrote {} FilterLogEvents logGroupIdentifier ARNs into \
             logGroupName and {} DescribeLogGroups logGroupNamePattern into logGroupNamePrefix \
             (moto 5.x rejects the first and ignores the second)",
            a.rewrites.0, a.rewrites.1
        ),
    }
    for n in &a.notes {
        println!("  NOTE: {n}");
    }
    println!(
        "  latency: arrival at the tool's OTLP recorder − the end of the event's PutLogEvents; \
         requests and returned: FilterLogEvents through the tool's proxy"
    );
}

// ---------------------------------------------------------------------------------------------
// Part b.

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Ingestion lag of event `n` of group `g`: 95 % 100–500 ms, 5 % 5–20 s.
fn lag_ms(g: usize, n: i64) -> i64 {
    let h = mix(((g as u64) << 40) ^ n as u64);
    if h % 100 < 95 {
        100 + ((h >> 8) % 401) as i64
    } else {
        5_000 + ((h >> 8) % 15_001) as i64
    }
}

fn b_span_id(g: usize, n: i64) -> u64 {
    ((g as u64 + 1) << 40) | n as u64
}

fn b_of_span_id(id: u64) -> Option<(usize, i64)> {
    let g = (id >> 40).checked_sub(1)?;
    Some((g as usize, (id & ((1 << 40) - 1)) as i64))
}

/// The scripted FilterLogEvents endpoint: `per_group` events a group, one a millisecond from
/// `t0`.
struct Script {
    t0: i64,
    per_group: i64,
    groups: Vec<String>,
    calls: Mutex<Vec<Call>>,
    /// Events returned, by second of event time (all groups).
    returned_by_sec: Mutex<Vec<u64>>,
}

impl Script {
    fn answer(&self, req: HttpRequest) -> HttpResponse {
        let at = now_ms();
        let target = req.header("x-amz-target").unwrap_or("");
        if !target.ends_with(".FilterLogEvents") {
            return HttpResponse::aws_error("UnknownOperationException", target);
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return HttpResponse::aws_error("SerializationException", "not JSON");
        };
        let name = body
            .get("logGroupName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(g) = self.groups.iter().position(|x| x == name) else {
            return HttpResponse::aws_error(
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            );
        };
        let start = body.get("startTime").and_then(Value::as_i64);
        let end = body.get("endTime").and_then(Value::as_i64);
        let token = body.get("nextToken").and_then(Value::as_str);
        let from = match token {
            Some(t) => match t.strip_prefix("n").and_then(|n| n.parse::<i64>().ok()) {
                Some(n) => n,
                None => return HttpResponse::aws_error("InvalidParameterException", "nextToken"),
            },
            None => start.unwrap_or(0).saturating_sub(self.t0).max(0),
        };
        // Nothing is ingested less than 100 ms after its timestamp.
        let to = end
            .unwrap_or(i64::MAX)
            .saturating_sub(self.t0)
            .min(self.per_group - 1)
            .min(at - self.t0 - 100);
        let mut lines = Lines::new();
        let mut by_sec: Vec<u64> = Vec::new();
        let first_sec = (from / 1000).max(0) as usize;
        let mut text = String::with_capacity(1 << 16);
        text.push_str("{\"events\":[");
        let (mut count, mut next) = (0usize, None);
        let mut n = from;
        while n <= to {
            let ts = self.t0 + n;
            let ingested = ts + lag_ms(g, n);
            if ingested <= at {
                if count == PAGE_EVENTS {
                    next = Some(n);
                    break;
                }
                if count > 0 {
                    text.push(',');
                }
                let trace = (u128::from(b_span_id(g, n)) | (0xb0b0u128 << 112)).to_be_bytes();
                let line = lines.span_line(trace, b_span_id(g, n), ts, n as u64);
                debug_assert!(!line.contains(['"', '\\']));
                text.push_str(&format!(
                    "{{\"logStreamName\":\"bench-{}\",\"timestamp\":{ts},\"message\":\"{line}\",\
                     \"ingestionTime\":{ingested},\"eventId\":\"{:08}{:048}\"}}",
                    n % 4,
                    g,
                    n
                ));
                count += 1;
                let sec = n as usize / 1000 - first_sec;
                if by_sec.len() <= sec {
                    by_sec.resize(sec + 1, 0);
                }
                by_sec[sec] += 1;
            }
            n += 1;
        }
        text.push_str("],\"searchedLogStreams\":[]");
        if let Some(n) = next {
            text.push_str(&format!(",\"nextToken\":\"n{n}\""));
        }
        text.push('}');
        {
            let mut all = self.returned_by_sec.lock().expect("returned");
            for (i, n) in by_sec.into_iter().enumerate() {
                if let Some(slot) = all.get_mut(first_sec + i) {
                    *slot += n;
                }
            }
        }
        self.calls.lock().expect("calls").push(Call {
            at_ms: at,
            group: g,
            end,
            continued: token.is_some(),
            events: count as u64,
            status: 200,
        });
        HttpResponse::new(200, "application/x-amz-json-1.1", text.into_bytes())
    }
}

struct RowB {
    groups: usize,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    requests: u64,
    returned: u64,
    secs: f64,
    rps_mean: f64,
    rps_max_1s: usize,
    rps_max_10s: f64,
    latency_p50_s: f64,
    latency_p99_s: f64,
    latency_max_s: f64,
    on_time_p99_s: f64,
    late_p50_s: f64,
    /// Events returned per event, by 30 s of event time.
    returned_per_event_by_30s: Vec<f64>,
    cpu_s: f64,
    head_gap_p50_s: f64,
    head_gap_max_s: f64,
    poll_behind: u64,
    warned: bool,
    covered: bool,
    source_records: Option<u64>,
    summary: String,
}

impl RowB {
    fn lost(&self) -> u64 {
        self.expected - self.delivered
    }

    fn per_delivered(&self) -> f64 {
        self.returned as f64 / self.delivered as f64
    }

    fn json(&self) -> Value {
        json!({
            "groups": self.groups,
            "expected": self.expected,
            "lost": self.lost(),
            "duplicates": self.duplicates,
            "final_pass_covered": self.covered,
            "filter_requests": self.requests,
            "secs": num(self.secs),
            "rps_mean": num(self.rps_mean),
            "rps_max_1s": self.rps_max_1s,
            "rps_max_10s": num(self.rps_max_10s),
            "events_returned": self.returned,
            "returned_per_delivered": num(self.per_delivered()),
            "latency_p50_s": num(self.latency_p50_s),
            "latency_p99_s": num(self.latency_p99_s),
            "latency_max_s": num(self.latency_max_s),
            "on_time_latency_p99_s": num(self.on_time_p99_s),
            "late_latency_p50_s": num(self.late_p50_s),
            "returned_per_event_by_30s": self.returned_per_event_by_30s.iter().map(|x| num(*x)).collect::<Vec<_>>(),
            "cpu_s": num(self.cpu_s),
            "head_gap_p50_s": num(self.head_gap_p50_s),
            "head_gap_max_s": num(self.head_gap_max_s),
            "poll_behind": self.poll_behind,
            "warned_cannot_keep_up": self.warned,
            "source_records": self.source_records,
        })
    }
}

async fn part_b_row(groups: usize, secs: i64, dir: PathBuf) -> RowB {
    let dir = dir.as_path();
    let tag = format!("{}-{}", std::process::id(), now_ms());
    let names: Vec<String> = (0..groups)
        .map(|g| format!("/aws/lambda/bench-scripted-{tag}-{g:02}"))
        .collect();
    let t0 = now_ms() + 500;
    let script = Arc::new(Script {
        t0,
        per_group: secs * 1000,
        groups: names.clone(),
        calls: Mutex::new(Vec::new()),
        returned_by_sec: Mutex::new(vec![0; secs as usize]),
    });
    let s = script.clone();
    let endpoint = serve(move |req| {
        let s = s.clone();
        async move {
            // Pages take milliseconds to make: off the runtime's workers.
            tokio::task::spawn_blocking(move || s.answer(req))
                .await
                .unwrap_or_else(|e| {
                    HttpResponse::new(500, "text/plain", e.to_string().into_bytes())
                })
        }
    })
    .await;
    let (rec, arrivals) = recorder().await;
    let mut args: Vec<String> = vec!["tail".into(), "--poll".into()];
    for n in &names {
        args.push("--log-group-name".into());
        args.push(n.clone());
    }
    args.push("--otlp-endpoint".into());
    args.push(rec);
    let log = format!("b-spanline-{groups}");
    let mut child = spawn(&spanline_bin(), &args, &endpoint, dir, &log);
    let last_ts = t0 + secs * 1000 - 1;
    let deadline = last_ts + 20_000 + OVERLAP_MS + 2 * SWEEP_MS + 60_000;
    let mut said = now_ms();
    let covered = loop {
        let done = {
            let calls = script.calls.lock().expect("calls");
            (0..groups).all(|g| final_pass_read(&calls, g, last_ts))
        };
        if done {
            tokio::time::sleep(Duration::from_secs(3)).await;
            break true;
        }
        if now_ms() > deadline {
            break false;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "part b, {groups} groups: spanline exited early ({status}): {}",
                last_lines(&read_log(dir, &format!("{log}.stderr")), 5)
            );
            break false;
        }
        if now_ms() - said >= 30_000 {
            said = now_ms();
            let got = arrivals.lock().expect("arrivals").first.len();
            let req = script.calls.lock().expect("calls").len();
            eprintln!(
                "part b, {groups} groups: {:.0} s, {req} requests, {got} spans delivered",
                (now_ms() - t0) as f64 / 1000.0
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu_s = cpu_secs(&child);
    let exited = interrupt(&mut child, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stderr = read_log(dir, &format!("{log}.stderr"));
    if !exited {
        eprintln!("part b, {groups} groups: spanline did not exit within 60 s of SIGINT (killed)");
    }
    let calls = script.calls.lock().expect("calls").clone();
    let arrivals = arrivals.lock().expect("arrivals");
    let mut at: Vec<i64> = calls.iter().map(|c| c.at_ms).collect();
    at.sort_unstable();
    let span_s = at
        .last()
        .zip(at.first())
        .map_or(0.0, |(l, f)| (l - f) as f64 / 1000.0);
    let mut latencies = Vec::with_capacity(arrivals.first.len());
    let mut on_time = Vec::new();
    let mut late = Vec::new();
    for (id, arrived) in &arrivals.first {
        if let Some((g, n)) = b_of_span_id(*id).filter(|(g, n)| *g < groups && *n < secs * 1000) {
            let lag = lag_ms(g, n);
            let l = arrived - (t0 + n + lag);
            latencies.push(l);
            if lag < 1_000 {
                on_time.push(l);
            } else {
                late.push(l);
            }
        }
    }
    latencies.sort_unstable();
    on_time.sort_unstable();
    late.sort_unstable();
    let by_sec = script.returned_by_sec.lock().expect("returned").clone();
    let returned_per_event_by_30s: Vec<f64> = by_sec
        .chunks(30)
        .map(|c| c.iter().sum::<u64>() as f64 / (c.len() * 1000 * groups) as f64)
        .collect();
    let mut gaps = Vec::new();
    for g in 0..groups {
        let heads: Vec<i64> = calls
            .iter()
            .filter(|c| c.group == g && c.end.is_none() && !c.continued)
            .map(|c| c.at_ms)
            .collect();
        gaps.extend(heads.windows(2).map(|w| w[1] - w[0]));
    }
    gaps.sort_unstable();
    let summary = summary_line(&stderr);
    RowB {
        groups,
        expected: groups as u64 * secs as u64 * 1000,
        delivered: latencies.len() as u64,
        duplicates: arrivals.spans - arrivals.first.len() as u64,
        requests: calls.len() as u64,
        returned: calls.iter().map(|c| c.events).sum(),
        secs: span_s,
        rps_mean: calls.len() as f64 / span_s.max(1e-9),
        rps_max_1s: max_in_window(&at, 1_000),
        rps_max_10s: max_in_window(&at, 10_000) as f64 / 10.0,
        latency_p50_s: quantile(&latencies, 0.5) / 1000.0,
        latency_p99_s: quantile(&latencies, 0.99) / 1000.0,
        latency_max_s: latencies.last().map_or(f64::NAN, |l| *l as f64 / 1000.0),
        on_time_p99_s: quantile(&on_time, 0.99) / 1000.0,
        late_p50_s: quantile(&late, 0.5) / 1000.0,
        returned_per_event_by_30s,
        cpu_s,
        head_gap_p50_s: quantile(&gaps, 0.5) / 1000.0,
        head_gap_max_s: gaps.last().map_or(f64::NAN, |g| *g as f64 / 1000.0),
        poll_behind: number_after(&stderr, "poll_behind: ").unwrap_or(0),
        warned: stderr.contains("cannot keep up"),
        covered,
        source_records: number_before(&summary, " records,"),
        summary,
    }
}

fn print_part_b(rows: &[RowB], secs: i64) {
    println!(
        "\npart b: scripted FilterLogEvents endpoint, 1,000 events/s per group for {secs} s \
         (95 % ingested 0.1–0.5 s late, 5 % 5–20 s), spanline tail --poll at its default flags \
         (--interval 5s, --overlap 2m, --max-tps {BUDGET_TPS}), run until its final pass has read \
         past every group's last event"
    );
    println!(
        "{:>6} {:>8} {:>5} {:>4} {:>5} {:>6} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6}",
        "groups",
        "expected",
        "lost",
        "dups",
        "reqs",
        "rps",
        "1s",
        "10s",
        "ret/dlv",
        "lat p50",
        "lat p99",
        "lat max",
        "ontime",
        "late",
        "headgap",
        "behind",
        "CPU"
    );
    for r in rows {
        println!(
            "{:>6} {:>8} {:>5} {:>4} {:>5} {:>6.2} {:>5} {:>6.1} {:>7.2} {:>6.1}s {:>6.1}s {:>6.1}s {:>6.1}s {:>6.1}s {:>6.1}s {:>6} {:>5.1}s",
            r.groups,
            r.expected,
            r.lost(),
            r.duplicates,
            r.requests,
            r.rps_mean,
            r.rps_max_1s,
            r.rps_max_10s,
            r.per_delivered(),
            r.latency_p50_s,
            r.latency_p99_s,
            r.latency_max_s,
            r.on_time_p99_s,
            r.late_p50_s,
            r.head_gap_max_s,
            r.poll_behind,
            r.cpu_s
        );
    }
    for r in rows {
        let buckets: Vec<String> = r
            .returned_per_event_by_30s
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect();
        println!(
            "  {} groups: returned per event by 30 s of event time: {}",
            r.groups,
            buckets.join(" ")
        );
        if !r.covered {
            println!(
                "  {} groups: the final pass had not read past every group's last event by the \
                 deadline: 'lost' counts events not delivered by then",
                r.groups
            );
        }
        if r.warned {
            println!(
                "  {} groups: spanline warned that the budget cannot keep up",
                r.groups
            );
        }
        println!("  {} groups: {}", r.groups, r.summary);
    }
    println!(
        "  rps: FilterLogEvents requests at the endpoint, mean over the run; 1s / 10s: the most \
         in any 1 s / 10 s window, per second (the budget is a token bucket of {BUDGET_TPS}/s that \
         saves up no burst, so at most {} in a closed 1 s window and {} per second over 10 s); \
         latency: \
         arrival at the recorder − ingestion (ontime: p99 of the events ingested within 1 s; \
         late: p50 of those ingested 5–20 s late); headgap: longest time between two head reads \
         of a group; CPU: spanline's user + system seconds",
        BUDGET_TPS + 1.0,
        (BUDGET_TPS * 10.0 + 1.0) / 10.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("poll: bench");
        return;
    }
    let parts = std::env::var("SPANLINE_BENCH_POLL_PARTS").unwrap_or_else(|_| "a,b".into());
    let secs_a = env_i64("SPANLINE_BENCH_POLL_SECS", 180).max(10);
    let secs_b = env_i64("SPANLINE_BENCH_POLL_B_SECS", 180).max(5);
    let groups_b: Vec<usize> = std::env::var("SPANLINE_BENCH_POLL_GROUPS")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .filter_map(|g| g.trim().parse().ok())
        .filter(|g| *g > 0)
        .collect();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let bin = spanline_bin();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        eprintln!(
            "spanline: {}; logs in {}; parts a and b run at the same time (each tool with its \
             own endpoint, proxy, recorder and budget)",
            bin.display(),
            dir.display()
        );
        let moto = std::env::var("SPANLINE_TEST_MOTO").ok();
        let a_task = match (parts.contains('a'), moto) {
            (true, Some(moto)) => {
                eprintln!("part a: {secs_a} s against moto at {moto}");
                Some(tokio::spawn(part_a(moto, secs_a, dir.clone())))
            }
            _ => None,
        };
        let mut b_tasks = Vec::new();
        if parts.contains('b') {
            for g in &groups_b {
                eprintln!("part b: {g} groups, {secs_b} s of events");
                b_tasks.push(tokio::spawn(part_b_row(*g, secs_b, dir.clone())));
            }
        }
        let a_json = match a_task {
            Some(task) => {
                let a = task.await.expect("part a");
                print_part_a(&a);
                let tool = |i: usize| a.rows.get(i).map_or(Value::Null, ToolRow::json);
                let vs_peer = match (a.rows.first(), a.rows.get(1)) {
                    (Some(s), Some(p)) => json!({
                        "returned_per_delivered": num(s.per_delivered() / p.per_delivered()),
                        "filter_requests": num(s.requests as f64 / p.requests as f64),
                        "latency_p50": num(s.latency_p50_s / p.latency_p50_s),
                        "latency_max": num(s.latency_max_s / p.latency_max_s),
                        "lost": [s.lost(), p.lost()],
                        "duplicates": [s.duplicates, p.duplicates],
                    }),
                    _ => Value::Null,
                };
                json!({
                    "secs": a.secs,
                    "events": a.events,
                    "spanline": tool(0),
                    "livetrace": tool(1),
                    "livetrace_version": a.peer_version,
                    "livetrace_missing": a.peer_missing,
                    "livetrace_proxy_rewrites": {
                        "arn_to_name": a.rewrites.0,
                        "pattern_to_prefix": a.rewrites.1,
                    },
                    "spanline_vs_livetrace": vs_peer,
                })
            }
            None if parts.contains('a') => {
                println!(
                    "\npart a SKIPPED: it needs the moto server: run `bash tests/services.sh \
                     start`, then `source target/test-services/env` (SPANLINE_TEST_MOTO); the \
                     peer livetrace runs only in part a, so the peer row is missing too"
                );
                json!({"skipped": "SPANLINE_TEST_MOTO is not set"})
            }
            None => Value::Null,
        };
        let mut rows = Vec::new();
        for t in b_tasks {
            rows.push(t.await.expect("part b"));
        }
        if !rows.is_empty() {
            print_part_b(&rows, secs_b);
        }
        let b_json: Vec<Value> = rows.iter().map(RowB::json).collect();
        println!();
        println!(
            "{}",
            json!({
                "bench": "poll",
                "budget_tps": BUDGET_TPS,
                "a": a_json,
                "b_secs": secs_b,
                "b": b_json,
            })
        );
    });
}
