//! CloudWatch Logs read benchmark: `spanline read`'s library path (FilterLogEvents pages under the
//! shared budget, stream ordering, the converter) from the moto server, through a counting HTTP
//! proxy, into a discarding sink.
//!
//! The log group holds `SPANLINE_BENCH_CW_EVENTS` events (default 500,000) of a Node function in
//! the text format: invocations of 20 lines (START, 4 span lines, 13 application lines, END,
//! REPORT), so a fifth of the events are span lines (100,000 by default) over 50 streams.
//! Rows:
//! * the default filter pattern (span lines and platform lines: every span, invocation spans
//!   included);
//! * `--filter-pattern SPLN1` (span lines only: no invocation spans).
//!
//! Reported per row: spans delivered / expected, API calls (requests through the proxy), bytes
//! on the wire both ways per span delivered, wall time and spans/s end to end.
//!
//! **What moto cannot show**: moto ignores OR patterns (`?a ?b`), so the default pattern returns
//! every event there, where AWS would return only span and platform lines; the default row's
//! calls and bytes are therefore those of an unfiltered read, an upper bound. The `SPLN1` row
//! (a plain term, which moto does filter) shows what server-side filtering saves.
//!
//! Needs the moto server of `tests/services.sh start`: `SPANLINE_TEST_MOTO` (for example
//! `source target/test-services/env`); without it the bench says so and exits. Run:
//! `cargo bench --bench cloudwatch`. Not run in CI. Scale with `SPANLINE_BENCH_CW_EVENTS`
//! (a multiple of 20).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use spanline::convert::pipeline::{self, NoCommit, Options};
use spanline::convert::sink::{AnySink, DiscardSink};
use spanline::convert::source::cloudwatch::budget::Budget;
use spanline::convert::source::cloudwatch::filter::DEFAULT_FILTER_PATTERN;
use spanline::convert::source::cloudwatch::filter::{FilterSource, GroupRange, Progress, Query};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINES_PER_INVOCATION: usize = 20;
const SPANS_PER_INVOCATION: usize = 4;
const STREAMS: usize = 50;
const PUT_BATCH: usize = 10_000;

/// What went through the proxy.
#[derive(Default)]
struct Wire {
    requests: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Wire {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed),
        )
    }
}

/// Counts the occurrences of `needle` (ASCII case-insensitive) in a byte stream that arrives in
/// pieces, matches across piece boundaries included.
struct Counter {
    needle: &'static [u8],
    carry: Vec<u8>,
}

impl Counter {
    fn feed(&mut self, piece: &[u8]) -> u64 {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(piece);
        let n = self.needle.len();
        let found = buf
            .windows(n)
            .filter(|w| w.eq_ignore_ascii_case(self.needle))
            .count() as u64;
        let keep = buf.len().min(n - 1);
        self.carry = buf[buf.len() - keep..].to_vec();
        found
    }
}

/// A TCP proxy to `upstream` counting bytes both ways and requests (`x-amz-target` headers:
/// one per CloudWatch Logs call).
async fn proxy(upstream: String, wire: Arc<Wire>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, wire) = (upstream.clone(), wire.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let w = wire.clone();
                let up = tokio::spawn(async move {
                    let mut counter = Counter {
                        needle: b"x-amz-target:",
                        carry: Vec::new(),
                    };
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        w.up.fetch_add(n as u64, Ordering::Relaxed);
                        w.requests
                            .fetch_add(counter.feed(&buf[..n]), Ordering::Relaxed);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    wire.down.fetch_add(n as u64, Ordering::Relaxed);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
                let _ = up.await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

async fn client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let sdk = spanline::convert::aws::config_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&sdk)
}

fn hex_id(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The events of one invocation: (timestamp, message).
fn invocation(i: usize, t0: i64) -> Vec<(i64, String)> {
    let req = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        i * 31
    );
    let trace = hex_id(i as u64, 16);
    let exec = hex_id(i as u64 + 1_000_000_007, 8);
    let caller = hex_id(i as u64 + 2_000_000_011, 8);
    let line = |span: &[u8], parent: &[u8], start_ms: i64, dur_us: i64, name: &str| {
        let ids: String = [&trace[..], span, parent]
            .iter()
            .map(|id| URL_SAFE_NO_PAD.encode(id))
            .collect();
        format!(
            "{}\t{req}\tINFO\tSPLN1 {ids} {} {dur_us}s {name} http.route=/orders/{{id}};db.system=dynamodb;\n",
            iso(start_ms),
            start_ms * 1000
        )
    };
    let mut out = Vec::with_capacity(LINES_PER_INVOCATION);
    out.push((t0, format!("START RequestId: {req} Version: $LATEST\n")));
    let mut k = 1;
    for s in 0..SPANS_PER_INVOCATION - 1 {
        for _ in 0..4 {
            out.push((
                t0 + k,
                format!(
                    "{}\t{req}\tINFO\tprocessed order item {k} of batch {i}: status=ok latency_ms={} region=us-east-1 sku=SKU-{:06}\n",
                    iso(t0 + k),
                    k * 3,
                    i * 13 + s
                ),
            ));
            k += 1;
        }
        let child = hex_id((i * 8 + s) as u64 + 3_000_000_019, 8);
        out.push((
            t0 + k,
            line(&child, &exec, t0 + k - 2, 1_500, "dynamodb.GetItem"),
        ));
        k += 1;
    }
    out.push((
        t0 + k,
        format!(
            "{}\t{req}\tINFO\trequest complete: 200 bytes=1834\n",
            iso(t0 + k)
        ),
    ));
    k += 1;
    out.push((t0 + k, line(&exec, &caller, t0 + 1, 15_000, "handler")));
    k += 1;
    out.push((t0 + k, format!("END RequestId: {req}\n")));
    out.push((
        t0 + k,
        format!(
            "REPORT RequestId: {req}\tDuration: 16.00 ms\tBilled Duration: 17 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\t\n"
        ),
    ));
    debug_assert_eq!(out.len(), LINES_PER_INVOCATION);
    out
}

async fn put_corpus(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    invocations: usize,
    base_ms: i64,
) {
    use aws_sdk_cloudwatchlogs::types::InputLogEvent;
    client
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .expect("CreateLogGroup (is SPANLINE_TEST_MOTO a moto server?)");
    let mut streams: Vec<Vec<InputLogEvent>> = vec![Vec::new(); STREAMS];
    for i in 0..invocations {
        let t0 = base_ms + (i as i64) * 25;
        for (ts, msg) in invocation(i, t0) {
            streams[i % STREAMS].push(
                InputLogEvent::builder()
                    .timestamp(ts)
                    .message(msg)
                    .build()
                    .expect("event"),
            );
        }
    }
    for (n, events) in streams.into_iter().enumerate() {
        let stream = format!("2026/12/02/[$LATEST]{:032x}", n);
        client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(&stream)
            .send()
            .await
            .expect("CreateLogStream");
        for batch in events.chunks(PUT_BATCH) {
            client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(&stream)
                .set_log_events(Some(batch.to_vec()))
                .send()
                .await
                .expect("PutLogEvents");
        }
    }
}

struct Row {
    name: String,
    spans: u64,
    expected: u64,
    calls: u64,
    bytes: u64,
    secs: f64,
}

async fn read_row(
    endpoint: &str,
    wire: &Wire,
    group: &str,
    pattern: &str,
    name: &str,
    expected: u64,
    start_ms: i64,
) -> Row {
    let client = client(endpoint).await;
    let (calls0, bytes0) = wire.snapshot();
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let query = Query {
        log_stream_name_prefix: None,
        start_ms: Some(start_ms),
        end_ms: None,
        filter_pattern: pattern.to_owned(),
    };
    // moto does not throttle; the budget of `read` still applies (5 TPS).
    // The library's pipeline, page by page, into the discarding sink.
    let source = FilterSource::start(
        client,
        Budget::per_second(5.0),
        progress,
        vec![GroupRange::new(group, query)],
        1,
    );
    let report = pipeline::run(
        source,
        vec![AnySink::Discard(DiscardSink::default())],
        NoCommit,
        Options::default(),
        None,
        None,
    )
    .await;
    assert_eq!(report.inputs_failed, 0, "FilterLogEvents failed");
    let spans = report.sinks[0].accepted;
    let secs = started.elapsed().as_secs_f64();
    let (calls1, bytes1) = wire.snapshot();
    Row {
        name: name.to_owned(),
        spans,
        expected,
        calls: calls1 - calls0,
        bytes: bytes1 - bytes0,
        secs,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cloudwatch: bench");
        return;
    }
    let Ok(moto) = std::env::var("SPANLINE_TEST_MOTO") else {
        eprintln!(
            "benches/cloudwatch.rs needs the moto server: run tests/services.sh start, then `source target/test-services/env` (SPANLINE_TEST_MOTO)"
        );
        return;
    };
    let events: usize = std::env::var("SPANLINE_BENCH_CW_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let invocations = (events / LINES_PER_INVOCATION).max(1);
    let upstream = moto
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let wire = Arc::new(Wire::default());
        let endpoint = proxy(upstream, wire.clone()).await.expect("proxy");
        let group = format!("/aws/lambda/spanline-bench-{}", std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let base_ms = now - 3_600_000;
        let put_started = Instant::now();
        put_corpus(&client(&moto).await, &group, invocations, base_ms).await;
        eprintln!(
            "put {} events ({} span lines) into {group} in {:.1} s",
            invocations * LINES_PER_INVOCATION,
            invocations * SPANS_PER_INVOCATION,
            put_started.elapsed().as_secs_f64()
        );
        let span_lines = (invocations * SPANS_PER_INVOCATION) as u64;
        let mut rows = Vec::new();
        rows.push(
            read_row(
                &endpoint,
                &wire,
                &group,
                DEFAULT_FILTER_PATTERN,
                "spanline read, default pattern (moto: unfiltered)",
                span_lines + invocations as u64,
                base_ms - 1,
            )
            .await,
        );
        rows.push(
            read_row(
                &endpoint,
                &wire,
                &group,
                "SPLN1",
                "spanline read, --filter-pattern SPLN1",
                span_lines,
                base_ms - 1,
            )
            .await,
        );
        println!(
            "\n{} events, {} span lines, {} streams, moto at {moto} (through a counting proxy)\n",
            invocations * LINES_PER_INVOCATION,
            span_lines,
            STREAMS
        );
        println!(
            "{:<52} {:>17} {:>6} {:>12} {:>10} {:>8} {:>10}",
            "row", "spans/expected", "calls", "wire bytes", "B/span", "wall s", "spans/s"
        );
        for r in &rows {
            println!(
                "{:<52} {:>17} {:>6} {:>12} {:>10.0} {:>8.2} {:>10.0}",
                r.name,
                format!("{}/{}", r.spans, r.expected),
                r.calls,
                r.bytes,
                r.bytes as f64 / r.spans.max(1) as f64,
                r.secs,
                r.spans as f64 / r.secs.max(1e-9)
            );
        }
        let _ = client(&moto)
            .await
            .delete_log_group()
            .log_group_name(&group)
            .send()
            .await;
    });
}
