//! Converter benchmark: log text in, encoded OTLP out, against the peer forwarder on the same
//! spans, in one run.
//!
//! The corpus is generated from a fixed seed: Lambda text-format logs of a Node function
//! (`ts\treqId\tLEVEL\t<message>` application logs of realistic lengths, some of them JSON, some
//! raw JSON lines as a Python `print` writes them; START/END/REPORT platform lines, an
//! INIT_START now and then), about 20% of the lines span lines written with the crate's own
//! encoder behind the Node prefix. Every span line is checked to decode.
//!
//! Rows (one core: everything runs on the calling thread):
//! * foreign lines only, streamed from a file: what skipping the bulk of a log costs;
//! * the mixed corpus streamed from a file, end to end: parse, assemble (invocation spans from
//!   the platform lines), `encode_request` and `prost::Message::encode` into a reused buffer;
//! * the same from lines in memory (no file reading);
//! * span lines plus REPORT lines in memory (what a subscription filter on both delivers);
//! * the peer, `serverless-otlp-forwarder-core` 0.3, on the same spans in its own format: one
//!   `__otel_otlp_stdout` JSON line per invocation (its exporter with a batch processor flushed
//!   per invocation) or per span (simple processor), payload base64(gzip(OTLP protobuf)), built
//!   as `otlp-stdout-span-exporter` 0.18 builds it; processed as its CloudWatch forwarder does
//!   (`ExporterOutput` from JSON, `TelemetryData::from_log_record`, `compact_telemetry_payloads`
//!   without compression) into one protobuf request per batch.
//!
//! Both sides encode batches of about [`BATCH_SPANS`] spans. Times are medians of
//! [`SAMPLES`] passes.
//!
//! Run: `cargo bench --bench convert`. `SPANLINE_BENCH_MB` (default 48) sizes the corpora.
//! `SPANLINE_BENCH_BIG=1` adds a streaming run over a file of `SPANLINE_BENCH_BIG_MB` (default
//! 1100) MB written under `target/` (removed afterwards), in a child process that reports its
//! peak RSS (`VmHWM`).

use base64::Engine as _;
use prost::Message as _;
use serverless_otlp_forwarder_core::span_compactor::CompressionPreference;
use serverless_otlp_forwarder_core::TelemetryData;
use serverless_otlp_forwarder_core::{compact_telemetry_payloads, SpanCompactionConfig};
use spanline::convert::assemble::{Resource, Span};
use spanline::convert::record::LogRecordRef;
use spanline::convert::sink::otlp::encode::write_request;
use spanline::convert::sink::otlp::encode_request;
use spanline::convert::Converter;
use spanline::span_line::encode::{fixed_len, write_resource_str, write_service};
use spanline::span_line::Value;
use spanline::span_line::{decode, SpanEncoder, SpanHead, SpanId, SpanKind, StatusCode, TraceId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts heap allocations, to report allocations per span record.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LOG_GROUP: &str = "/aws/lambda/orders-api";
const SERVICE: &str = "orders-api";
/// Spans per encoded request, both sides.
const BATCH_SPANS: usize = 1000;
/// Timed passes per row; the median is reported.
const SAMPLES: usize = 5;
/// Records pushed between two `take_ready` calls.
const DRAIN_EVERY: u64 = 256;
/// Interleaved pairs of passes when two runs are compared ([`paired`]).
const PAIRS: usize = 21;

// ---------------------------------------------------------------- the corpus

/// splitmix64: deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// What a generated line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Application output.
    Foreign,
    /// START, END, INIT_START.
    Platform,
    /// REPORT.
    Report,
    /// A span line.
    Span,
}

/// Generates invocations of a Node function, line by line.
struct Gen {
    rng: Rng,
    enc: SpanEncoder,
    suffix: Vec<u8>,
    clock_ms: u64,
    line: Vec<u8>,
    span: Vec<u8>,
}

const FIRST_MS: u64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

impl Gen {
    fn new(seed: u64) -> Self {
        let mut suffix = Vec::new();
        write_service(&mut suffix, SERVICE);
        write_resource_str(&mut suffix, "deployment.environment", "prod");
        write_resource_str(&mut suffix, "service.version", "1.42.0");
        Gen {
            rng: Rng(seed),
            enc: SpanEncoder::new(),
            suffix,
            clock_ms: FIRST_MS,
            line: Vec::with_capacity(1024),
            span: Vec::with_capacity(1024),
        }
    }

    fn hex(&mut self, out: &mut Vec<u8>, n: usize) {
        const H: &[u8; 16] = b"0123456789abcdef";
        for _ in 0..n {
            out.push(H[self.rng.below(16) as usize]);
        }
    }

    fn request_id(&mut self) -> String {
        let mut b = Vec::with_capacity(36);
        for (i, n) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if i > 0 {
                b.push(b'-');
            }
            self.hex(&mut b, n);
        }
        String::from_utf8(b).unwrap()
    }

    /// `2026-11-23T10:00:00.123Z` for the current clock.
    fn timestamp(&self, out: &mut Vec<u8>) {
        let ms = self.clock_ms - FIRST_MS + 10 * 3_600_000;
        let (h, m, s, milli) = (
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
        );
        write!(out, "2026-11-23T{h:02}:{m:02}:{s:02}.{milli:03}Z").unwrap();
    }

    /// The Node `console.log` prefix.
    fn prefix(&mut self, req: &str, level: &str) {
        self.line.clear();
        let mut l = std::mem::take(&mut self.line);
        self.timestamp(&mut l);
        write!(l, "\t{req}\t{level}\t").unwrap();
        self.line = l;
    }

    /// One application log message (after the prefix), of realistic length and shape.
    fn app_message(&mut self, out: &mut Vec<u8>) {
        let r = &mut self.rng;
        match r.below(20) {
            0..=4 => write!(
                out,
                "Received event for order {} from customer c-{}",
                r.range(100_000, 999_999),
                r.range(1000, 99_999)
            ),
            5..=7 => write!(
                out,
                "GET /api/v1/orders/{}?include=items,customer,shipping 200 {}ms",
                r.range(100_000, 999_999),
                r.range(1, 400)
            ),
            8..=10 => write!(
                out,
                "{{\"level\":\"info\",\"msg\":\"cache lookup\",\"key\":\"order:{}\",\"hit\":{},\"latencyMs\":{}.{},\"table\":\"orders-prod\",\"region\":\"us-east-1\"}}",
                r.range(100_000, 999_999),
                r.percent(70),
                r.below(40),
                r.below(1000)
            ),
            11..=12 => write!(
                out,
                "{{\"event\":\"payment.authorized\",\"orderId\":\"{}\",\"amount\":{}.{:02},\"currency\":\"EUR\",\"card\":{{\"brand\":\"visa\",\"last4\":\"{:04}\"}},\"risk\":{{\"score\":0.{},\"rules\":[\"velocity\",\"geo\",\"amount\"]}},\"durationMs\":{}}}",
                r.range(100_000, 999_999),
                r.range(1, 2000),
                r.below(100),
                r.below(10_000),
                r.below(1000),
                r.range(20, 900)
            ),
            13 => {
                // A configuration dump: the long line of a log.
                out.extend_from_slice(b"Loaded configuration: {\"features\":[");
                for i in 0..r.range(8, 30) {
                    if i > 0 {
                        out.push(b',');
                    }
                    write!(out, "{{\"name\":\"flag-{i}\",\"enabled\":{}}}", r.percent(50)).unwrap();
                }
                out.extend_from_slice(b"],\"retries\":3,\"timeoutMs\":2500}");
                Ok(())
            }
            14 => write!(
                out,
                "Error: ConditionalCheckFailedException: The conditional request failed (order {}, attempt {})",
                r.range(100_000, 999_999),
                r.range(1, 3)
            ),
            15 => write!(
                out,
                "    at processOrder (/var/task/handlers/orders.js:{}:{})",
                r.range(10, 400),
                r.range(1, 40)
            ),
            16..=17 => write!(
                out,
                "Publishing {} items to queue https://sqs.us-east-1.amazonaws.com/123456789012/orders-events",
                r.range(1, 25)
            ),
            _ => write!(out, "Done in {} ms", r.range(1, 900)),
        }
        .unwrap();
    }

    /// Writes one span line (after the prefix) to `self.span`.
    fn span_line(
        &mut self,
        head: &SpanHead<'_>,
        attrs: &[(&str, Value<'_>)],
        event: Option<(i64, &str)>,
        status_message: Option<&str>,
        request_id: Option<&str>,
    ) {
        self.enc
            .reset(fixed_len(head.name, request_id, self.suffix.len()));
        for (k, v) in attrs {
            self.enc.attr(k, *v);
        }
        if let Some((off, name)) = event {
            if self.enc.event(off, name) {
                self.enc.target_attr("attempt", Value::Int(1));
            }
        }
        self.span.clear();
        self.enc.write_record(
            &mut self.span,
            head,
            status_message,
            request_id,
            &self.suffix,
        );
    }

    /// Generates one invocation; `emit(kind, line)` receives each line without its newline.
    fn invocation(&mut self, emit: &mut impl FnMut(Kind, &[u8])) {
        let req = self.request_id();
        self.clock_ms += self.rng.range(5, 400);
        let cold = self.rng.percent(2);
        if cold {
            self.line.clear();
            self.line.extend_from_slice(b"INIT_START Runtime Version: nodejs:20.v13\tRuntime Version ARN: arn:aws:lambda:us-east-1::runtime:0cd6d6e9a7b1e4c2f5d1a1b0c3e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4");
            emit(Kind::Platform, &self.line);
        }
        self.line.clear();
        write!(self.line, "START RequestId: {req} Version: $LATEST").unwrap();
        emit(Kind::Platform, &self.line);

        let trace = TraceId(
            [self.rng.next().to_be_bytes(), self.rng.next().to_be_bytes()]
                .concat()
                .try_into()
                .unwrap(),
        );
        let remote_parent = self
            .rng
            .percent(70)
            .then(|| SpanId(self.rng.next().max(1).to_be_bytes()));
        let root = SpanId(self.rng.next().max(1).to_be_bytes());
        let start_us = self.clock_ms * 1000;
        let children = self.rng.range(2, 6);
        let app_lines = self.rng.range(10, 24);
        // Application lines are spread between the spans, which print when they finish.
        let mut apps_left = app_lines;
        let mut t_us = start_us + self.rng.range(100, 2000);
        for c in 0..children {
            for _ in 0..apps_left / (children - c + 1) {
                self.app_line(&req);
                emit(Kind::Foreign, &self.line);
                apps_left -= 1;
            }
            let dur = self.rng.range(800, 60_000);
            let (name, kind, attrs): (&str, SpanKind, Vec<(&str, Value<'_>)>) =
                match self.rng.below(4) {
                    0 => (
                        "dynamodb.GetItem",
                        SpanKind::Client,
                        vec![
                            ("db.system", Value::Str("dynamodb")),
                            ("db.operation", Value::Str("GetItem")),
                            ("aws.dynamodb.table_names", Value::Str("orders-prod")),
                            (
                                "aws.request_id",
                                Value::Str("Q3J9V2K8L1M0N4P7R6S5T2U1V0W9X8Y7"),
                            ),
                        ],
                    ),
                    1 => (
                        "POST",
                        SpanKind::Client,
                        vec![
                            ("http.request.method", Value::Str("POST")),
                            (
                                "url.full",
                                Value::Str("https://payments.internal.example.com/v2/authorize"),
                            ),
                            ("http.response.status_code", Value::Int(200)),
                            ("peer.service", Value::Str("payments")),
                            (
                                "server.address",
                                Value::Str("payments.internal.example.com"),
                            ),
                        ],
                    ),
                    2 => (
                        "orders-events publish",
                        SpanKind::Producer,
                        vec![
                            ("messaging.system", Value::Str("aws_sqs")),
                            ("messaging.destination.name", Value::Str("orders-events")),
                            ("messaging.batch.message_count", Value::Int(3)),
                        ],
                    ),
                    _ => (
                        "render-receipt",
                        SpanKind::Internal,
                        vec![
                            ("template", Value::Str("receipt-v3")),
                            ("bytes", Value::Int(18_324)),
                            ("cache.hit", Value::Bool(true)),
                            ("ratio", Value::Float(0.82)),
                        ],
                    ),
                };
            let error = self.rng.percent(3);
            let head = SpanHead {
                trace_id: trace,
                span_id: SpanId(self.rng.next().max(1).to_be_bytes()),
                parent: Some(root),
                start_us: t_us,
                duration_us: dur,
                kind,
                status: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                name,
            };
            let event = self.rng.percent(20).then_some((dur as i64 / 2, "retry"));
            let msg = error.then_some("upstream returned 503");
            self.span_line(&head, &attrs, event, msg, None);
            self.prefix(&req, "INFO");
            self.line.extend_from_slice(&self.span);
            emit(Kind::Span, &self.line);
            t_us += dur + self.rng.range(50, 3000);
        }
        for _ in 0..apps_left {
            self.app_line(&req);
            emit(Kind::Foreign, &self.line);
        }
        let root_dur = t_us - start_us + self.rng.range(100, 900);
        let head = SpanHead {
            trace_id: trace,
            span_id: root,
            parent: remote_parent,
            start_us,
            duration_us: root_dur,
            kind: SpanKind::Server,
            status: StatusCode::Unset,
            name: "POST /orders",
        };
        let attrs = [
            ("http.request.method", Value::Str("POST")),
            ("http.route", Value::Str("/orders")),
            ("http.response.status_code", Value::Int(201)),
            ("faas.trigger", Value::Str("http")),
        ];
        self.span_line(&head, &attrs, None, None, Some(&req));
        self.prefix(&req, "INFO");
        self.line.extend_from_slice(&self.span);
        emit(Kind::Span, &self.line);

        self.clock_ms += root_dur / 1000 + 1;
        self.line.clear();
        write!(self.line, "END RequestId: {req}").unwrap();
        emit(Kind::Platform, &self.line);
        let ms = root_dur as f64 / 1000.0 + 0.7;
        self.line.clear();
        write!(
            self.line,
            "REPORT RequestId: {req}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: 512 MB\tMax Memory Used: {} MB\t",
            ms.ceil() as u64,
            self.rng.range(70, 180)
        )
        .unwrap();
        if cold {
            let init = self.rng.range(120_000, 450_000) as f64 / 1000.0;
            write!(self.line, "Init Duration: {init:.2} ms\t").unwrap();
        }
        if self.rng.percent(10) {
            let mut x = Vec::new();
            self.hex(&mut x, 8);
            x.push(b'-');
            self.hex(&mut x, 24);
            let mut seg = Vec::new();
            self.hex(&mut seg, 16);
            write!(
                self.line,
                "XRAY TraceId: 1-{}\tSegmentId: {}\tSampled: true\t",
                String::from_utf8_lossy(&x),
                String::from_utf8_lossy(&seg)
            )
            .unwrap();
        }
        emit(Kind::Report, &self.line);
    }

    /// One application line: the Node prefix and a message, or now and then a raw JSON line
    /// (a Python `print(json.dumps(…))`).
    fn app_line(&mut self, req: &str) {
        if self.rng.percent(5) {
            self.line.clear();
            let ms = self.clock_ms;
            let n = self.rng.range(1000, 9999);
            write!(
                self.line,
                "{{\"ts\":{ms},\"message\":\"inventory sync\",\"sku\":\"SKU-{n}\",\"delta\":-1,\"warehouse\":\"fra-1\"}}"
            )
            .unwrap();
            return;
        }
        let level = match self.rng.below(20) {
            0 => "ERROR",
            1..=2 => "WARN",
            3..=4 => "DEBUG",
            _ => "INFO",
        };
        self.prefix(req, level);
        let mut l = std::mem::take(&mut self.line);
        self.app_message(&mut l);
        self.line = l;
    }
}

/// A corpus: lines with their kind, and totals.
#[derive(Default)]
struct Corpus {
    lines: Vec<(Kind, String)>,
    bytes: u64,
}

impl Corpus {
    fn push(&mut self, kind: Kind, line: &[u8]) {
        self.bytes += line.len() as u64 + 1;
        self.lines
            .push((kind, String::from_utf8(line.to_vec()).unwrap()));
    }
    fn count(&self, kind: Kind) -> u64 {
        self.lines.iter().filter(|(k, _)| *k == kind).count() as u64
    }
    fn write_to(&self, path: &Path) {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (_, l) in &self.lines {
            w.write_all(l.as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.flush().unwrap();
    }
}

/// Generates invocations until `keep`-filtered lines reach `bytes`.
fn corpus(seed: u64, bytes: u64, keep: impl Fn(Kind) -> bool) -> Corpus {
    let mut g = Gen::new(seed);
    let mut c = Corpus::default();
    while c.bytes < bytes {
        g.invocation(&mut |k, l| {
            if keep(k) {
                c.push(k, l)
            }
        });
    }
    c
}

// ---------------------------------------------------------------- spanline, end to end

/// What one pass produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Out {
    span_lines: u64,
    spans: u64,
    otlp_bytes: u64,
    malformed: u64,
}

/// The end of the pipeline: ready spans are encoded in batches into one reused buffer, then
/// discarded (what a sink does before the network).
struct Encoder {
    pending: Vec<Span>,
    buf: Vec<u8>,
    pushed: u64,
    spans: u64,
    otlp_bytes: u64,
    /// Tail-based sampling between the converter and the encoder, with its clock (the
    /// latest span end, ms).
    sampler: Option<(spanline::convert::sample::Sampler, i64)>,
}

impl Encoder {
    fn new() -> Self {
        Encoder {
            pending: Vec::new(),
            buf: Vec::with_capacity(1 << 20),
            pushed: 0,
            spans: 0,
            otlp_bytes: 0,
            sampler: None,
        }
    }

    fn sampling(policy: spanline::convert::sample::Policy) -> Self {
        Encoder {
            sampler: Some((spanline::convert::sample::Sampler::new(policy), i64::MIN)),
            ..Encoder::new()
        }
    }

    /// Hands `ready` on, through the sampler when there is one.
    fn take(&mut self, mut ready: Vec<Span>) {
        match &mut self.sampler {
            None => self.pending.append(&mut ready),
            Some((sampler, clock)) => {
                for span in ready {
                    *clock = (*clock).max((span.end_unix_nano / 1_000_000) as i64);
                    sampler.push(span, *clock, &mut self.pending);
                }
                sampler.expire(*clock, &mut self.pending);
            }
        }
    }

    /// After each record: every [`DRAIN_EVERY`] records, take what is ready.
    #[inline]
    fn after_push(&mut self, conv: &mut Converter) {
        self.pushed += 1;
        if self.pushed.is_multiple_of(DRAIN_EVERY) {
            let ready = conv.take_ready();
            self.take(ready);
            if self.pending.len() >= BATCH_SPANS {
                self.encode();
            }
        }
    }

    fn encode(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        write_request(&self.pending, &mut self.buf);
        self.otlp_bytes += black_box(&self.buf).len() as u64;
        self.spans += self.pending.len() as u64;
        self.pending.clear();
    }

    fn finish(mut self, conv: &mut Converter) -> Out {
        let rest = conv.finish();
        self.take(rest);
        if let Some((sampler, clock)) = &mut self.sampler {
            sampler.finish(*clock, &mut self.pending);
        }
        self.encode();
        Out {
            span_lines: conv.summary.span_lines,
            spans: self.spans,
            otlp_bytes: self.otlp_bytes,
            malformed: conv.summary.malformed_total(),
        }
    }
}

fn spanline_file(path: &Path) -> Out {
    use spanline::convert::record::RecordBatch;
    use spanline::convert::source::file::read_input;
    use spanline::convert::source::payload::{BatchOut, Limits};
    let mut conv = Converter::default();
    let mut enc = Encoder::new();
    let mut flush = |b: RecordBatch| {
        for rec in b.iter() {
            conv.push_ref(rec);
            enc.after_push(&mut conv);
        }
        Some(b)
    };
    let limits = Limits::default();
    let mut out = BatchOut::new(RecordBatch::default(), limits.batch_bytes, &mut flush);
    let file = std::fs::File::open(path).unwrap();
    read_input(file, path, "s", LOG_GROUP, limits, &mut out).unwrap();
    out.flush_now();
    drop(out);
    enc.finish(&mut conv)
}

/// `n` invocations that started and wrote an open record (the `u` flag) but have not ended,
/// then `n` other invocations, START and REPORT each: what the quadratic case of the issue
/// measured (every REPORT scanned every open span).
fn open_and_reports(n: u64) -> Vec<String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let req = |k: u64| format!("{:08x}-0000-4000-8000-{:012x}", k >> 16, k);
    let ts = "2026-11-23T10:00:00.000Z";
    let mut lines = Vec::with_capacity(4 * n as usize);
    for i in 0..n {
        let r = req(i);
        let mut trace = [7u8; 16];
        trace[8..].copy_from_slice(&(i + 1).to_be_bytes());
        let ids = format!("{}{}", b64(&trace), b64(&(i + 1).to_be_bytes()));
        lines.push(format!("START RequestId: {r} Version: $LATEST"));
        lines.push(format!(
            "{ts}\t{r}\tINFO\tSPLN1 {ids} {} 0u handler;",
            FIRST_MS * 1000 + i
        ));
    }
    for j in 0..n {
        let r = req(n + j);
        lines.push(format!("START RequestId: {r} Version: $LATEST"));
        lines.push(format!(
            "REPORT RequestId: {r}\tDuration: 2.00 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 64 MB\t"
        ));
    }
    lines
}

fn spanline_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Out {
    spanline_lines_into(lines, Encoder::new())
}

fn spanline_lines_into<'a>(lines: impl Iterator<Item = &'a str>, mut enc: Encoder) -> Out {
    let mut conv = Converter::default();
    for message in lines {
        conv.push_ref(LogRecordRef {
            log_group: LOG_GROUP,
            log_stream: "2026/11/23/[$LATEST]0123456789abcdef0123456789abcdef",
            message,
            ..LogRecordRef::default()
        });
        enc.after_push(&mut conv);
    }
    enc.finish(&mut conv)
}

// ---------------------------------------------------------------- the peer

/// The peer's lines for the span lines of `c`: one per invocation (`per_span` false) or one per
/// span, as `otlp-stdout-span-exporter` prints them.
fn peer_lines(c: &Corpus, per_span: bool) -> (Vec<String>, u64) {
    let mut out = Vec::new();
    let mut spans_total = 0;
    let mut batch: Vec<Span> = Vec::new();
    let flush = |batch: &mut Vec<Span>, out: &mut Vec<String>| {
        if batch.is_empty() {
            return;
        }
        let proto = encode_request(batch).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&proto).unwrap();
        let payload = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
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
        out.push(serde_json::to_string(&line).unwrap());
        batch.clear();
    };
    for (kind, line) in &c.lines {
        match kind {
            Kind::Span => {
                let at = spanline::span_line::find_marker(line).unwrap();
                let rec = decode(&line[at..]).unwrap();
                let res = Arc::new(Resource::new(SERVICE.into(), vec![]));
                for s in rec.spans() {
                    batch.push(Span::from_line(&s, res.clone(), &mut Vec::new()).0);
                    spans_total += 1;
                    if per_span {
                        flush(&mut batch, &mut out);
                    }
                }
            }
            Kind::Report => flush(&mut batch, &mut out),
            _ => {}
        }
    }
    flush(&mut batch, &mut out);
    (out, spans_total)
}

/// The peer's forwarder on `lines`: parse, decode, compact into one protobuf per batch of about
/// [`BATCH_SPANS`] spans (`spans_per_line` on average).
fn peer_run(lines: &[String], spans_per_line: f64) -> Out {
    let config = SpanCompactionConfig {
        compression: CompressionPreference::None,
        gzip_compression_level: 6,
    };
    let per_batch = ((BATCH_SPANS as f64 / spans_per_line).round() as usize).max(1);
    let mut out = Out::default();
    for chunk in lines.chunks(per_batch) {
        let items: Vec<TelemetryData> = chunk
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter_map(|r| TelemetryData::from_log_record(r).ok())
            .collect();
        let compacted = compact_telemetry_payloads(items, &config).unwrap();
        out.otlp_bytes += black_box(&compacted.payload).len() as u64;
    }
    out
}

// ---------------------------------------------------------------- measuring

struct Row {
    name: String,
    input_mb: f64,
    span_records: u64,
    secs: f64,
    bytes_per_span: f64,
    allocs: u64,
}

/// Median seconds of [`SAMPLES`] passes of `f`, after one warm-up pass whose result (for
/// checking) and heap allocations are returned too.
fn time<T>(mut f: impl FnMut() -> T) -> (f64, T, u64) {
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let first = f();
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let mut s: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[SAMPLES / 2], first, allocs)
}

/// Runs `a` and `b` alternately, [`PAIRS`] times each after one warm-up pass of each, `b`
/// first every other time; the quartiles (first, median, third) of `b`'s time over `a`'s in
/// the same pair. Whatever else slows the machine down slows both sides of a pair alike.
fn paired<A, B>(mut a: impl FnMut() -> A, mut b: impl FnMut() -> B) -> [f64; 3] {
    black_box(a());
    black_box(b());
    let mut ratios: Vec<f64> = (0..PAIRS)
        .map(|i| {
            let mut ta = 0.0;
            let mut tb = 0.0;
            for side in [i % 2, 1 - i % 2] {
                let t = Instant::now();
                if side == 0 {
                    black_box(a());
                    ta = t.elapsed().as_secs_f64();
                } else {
                    black_box(b());
                    tb = t.elapsed().as_secs_f64();
                }
            }
            tb / ta
        })
        .collect();
    ratios.sort_by(|x, y| x.total_cmp(y));
    [ratios[PAIRS / 4], ratios[PAIRS / 2], ratios[3 * PAIRS / 4]]
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> PathBuf {
    let d = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a file when dropped, also on a panic.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const CHILD_ENV: &str = "SPANLINE_BENCH_STREAM_FILE";

/// The child of the big run: streams the file and prints one result line.
fn child(path: &Path) {
    let base = vm_hwm_kb();
    let t = Instant::now();
    let out = spanline_file(path);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT secs={secs} span_lines={} spans={} malformed={} hwm_kb={} base_kb={base}",
        out.span_lines,
        out.spans,
        out.malformed,
        vm_hwm_kb()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("convert: bench");
        return;
    }
    if let Some(p) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&p));
        return;
    }
    let mb = env_u64("SPANLINE_BENCH_MB", 48);
    let bytes = mb << 20;
    if let Ok(what) = std::env::var("SPANLINE_BENCH_PROFILE") {
        profile(&what, bytes);
        return;
    }
    let mut rows = Vec::new();
    let dir = target_dir();

    // (a) foreign lines only, streamed from a file.
    let foreign = corpus(1, bytes, |k| k == Kind::Foreign);
    let foreign_file =
        TempFile(dir.join(format!("spanline-bench-foreign-{}.log", std::process::id())));
    foreign.write_to(&foreign_file.0);
    let (secs, out, allocs) = time(|| spanline_file(&foreign_file.0));
    assert_eq!(out.spans, 0);
    rows.push(Row {
        name: "spanline: foreign lines only, file streamed (skipped)".into(),
        input_mb: foreign.bytes as f64 / 1e6,
        span_records: 0,
        secs,
        allocs,
        bytes_per_span: f64::NAN,
    });
    let foreign_lines = foreign.lines.len() as f64;
    drop(foreign);
    drop(foreign_file);

    // (b) the mixed corpus, end to end.
    let mixed = corpus(2, bytes, |_| true);
    let n_span_lines = mixed.count(Kind::Span);
    let n_reports = mixed.count(Kind::Report);
    eprintln!(
        "mixed corpus: {:.1} MB, {} lines, {} span lines ({:.1}%), {} platform lines, {} invocations",
        mixed.bytes as f64 / 1e6,
        mixed.lines.len(),
        n_span_lines,
        100.0 * n_span_lines as f64 / mixed.lines.len() as f64,
        mixed.count(Kind::Platform) + n_reports,
        n_reports
    );
    let mixed_file = TempFile(dir.join(format!("spanline-bench-mixed-{}.log", std::process::id())));
    mixed.write_to(&mixed_file.0);
    let (secs, out, allocs) = time(|| spanline_file(&mixed_file.0));
    assert_eq!(out.malformed, 0, "generated span lines must decode");
    assert_eq!(out.span_lines, n_span_lines);
    // Every function span, plus one invocation span per REPORT, plus the cold starts' init spans.
    assert!(out.spans > n_span_lines + n_reports, "{out:?}");
    rows.push(Row {
        name: "spanline: mixed corpus, file streamed → encoded OTLP".into(),
        input_mb: mixed.bytes as f64 / 1e6,
        span_records: n_span_lines,
        secs,
        allocs,
        bytes_per_span: f64::NAN,
    });
    drop(mixed_file);
    let (secs, out2, allocs) = time(|| spanline_lines(mixed.lines.iter().map(|(_, l)| l.as_str())));
    assert_eq!(
        (out2.span_lines, out2.spans, out2.malformed),
        (out.span_lines, out.spans, out.malformed),
        "the same records in memory give the same result"
    );
    rows.push(Row {
        name: "spanline: mixed corpus, lines in memory → encoded OTLP".into(),
        input_mb: mixed.bytes as f64 / 1e6,
        span_records: n_span_lines,
        secs,
        allocs,
        bytes_per_span: f64::NAN,
    });

    // (c) the same spans: span lines (and REPORT lines) against the peer's lines.
    let spans_only: Vec<&str> = mixed
        .lines
        .iter()
        .filter(|(k, _)| matches!(k, Kind::Span | Kind::Report))
        .map(|(_, l)| l.as_str())
        .collect();
    let span_bytes: u64 = mixed
        .lines
        .iter()
        .filter(|(k, _)| *k == Kind::Span)
        .map(|(_, l)| l.len() as u64 + 1)
        .sum();
    let in_bytes: u64 = spans_only.iter().map(|l| l.len() as u64 + 1).sum();
    let (secs, out, allocs) = time(|| spanline_lines(spans_only.iter().copied()));
    assert_eq!(out.span_lines, n_span_lines);
    let base_rate = n_span_lines as f64 / secs;
    let end_to_end = (secs, allocs);
    rows.push(Row {
        name: "spanline: span + REPORT lines in memory → encoded OTLP".into(),
        input_mb: in_bytes as f64 / 1e6,
        span_records: n_span_lines,
        secs,
        allocs,
        bytes_per_span: span_bytes as f64 / n_span_lines as f64,
    });
    // The same, sampled: errors kept, 10 % of the rest by trace id.
    let (secs_sampled, sampled, allocs) = time(|| {
        let policy = spanline::convert::sample::Policy {
            rate: 0.1,
            ..Default::default()
        };
        spanline_lines_into(spans_only.iter().copied(), Encoder::sampling(policy))
    });
    assert!(sampled.spans < out.spans / 2, "{sampled:?} of {out:?}");
    rows.push(Row {
        name: format!(
            "spanline: the same, sampled at 10 % (errors kept): {:.1} % of the spans sent",
            100.0 * sampled.spans as f64 / out.spans as f64
        ),
        input_mb: in_bytes as f64 / 1e6,
        span_records: n_span_lines,
        secs: secs_sampled,
        allocs,
        bytes_per_span: span_bytes as f64 / n_span_lines as f64,
    });
    // What sampling changes, from interleaved pairs of passes: on a shared machine two
    // separate medians differ by more than the sampler costs.
    let sampling_change = paired(
        || spanline_lines(spans_only.iter().copied()),
        || {
            let policy = spanline::convert::sample::Policy {
                rate: 0.1,
                ..Default::default()
            };
            spanline_lines_into(spans_only.iter().copied(), Encoder::sampling(policy))
        },
    )
    .map(|r| r - 1.0);
    // The same input through the library's pipeline, parsing on every core.
    #[cfg(feature = "convert")]
    let all_cores = {
        let (secs, spans, allocs) = pipeline_run(&spans_only);
        assert!(spans > n_span_lines, "the pipeline made {spans} spans");
        rows.push(Row {
            name: format!(
                "spanline: span + REPORT lines in memory → encoded OTLP, pipeline on {} cores",
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
            input_mb: in_bytes as f64 / 1e6,
            span_records: n_span_lines,
            secs,
            allocs,
            bytes_per_span: span_bytes as f64 / n_span_lines as f64,
        });
        Some(n_span_lines as f64 / secs)
    };
    #[cfg(not(feature = "convert"))]
    let all_cores: Option<f64> = None;
    let mut peer_rates = Vec::new();
    for per_span in [false, true] {
        let (lines, spans) = peer_lines(&mixed, per_span);
        assert_eq!(spans, n_span_lines);
        let peer_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
        let (secs, out, allocs) = time(|| peer_run(&lines, spans as f64 / lines.len() as f64));
        assert!(out.otlp_bytes > 0);
        peer_rates.push(spans as f64 / secs);
        rows.push(Row {
            name: format!(
                "peer serverless-otlp-forwarder-core 0.3: one line per {} → OTLP",
                if per_span { "span" } else { "invocation" }
            ),
            input_mb: peer_bytes as f64 / 1e6,
            span_records: spans,
            secs,
            allocs,
            bytes_per_span: peer_bytes as f64 / spans as f64,
        });
    }
    drop(spans_only);
    let stages = || print_stages(&mixed, end_to_end);

    // (d) Open records of invocations still running, and the REPORT lines of other requests:
    // time per record must not grow with what is pending (linear: x4 from 10k to 40k).
    let mut open_secs = Vec::new();
    for n in [10_000u64, 20_000, 40_000] {
        let lines = open_and_reports(n);
        let (secs, out, allocs) = time(|| spanline_lines(lines.iter().map(String::as_str)));
        // Each open record ends as an error span with its invocation (at the end of the
        // input); each REPORT makes an invocation span.
        assert_eq!(out.span_lines, n);
        assert!(out.spans >= 2 * n, "{out:?}");
        rows.push(Row {
            name: format!("spanline: {n} open records + {n} REPORTs of other requests"),
            input_mb: lines.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / 1e6,
            span_records: n,
            secs,
            allocs,
            bytes_per_span: f64::NAN,
        });
        open_secs.push(secs);
    }

    // The big run: ≥ 1 GB streamed from a file, peak RSS measured in a fresh process.
    let big = if std::env::var("SPANLINE_BENCH_BIG").is_ok_and(|v| v == "1") {
        Some(big_run(&dir, env_u64("SPANLINE_BENCH_BIG_MB", 1100)))
    } else {
        None
    };

    print_table(&rows, base_rate, foreign_lines);
    let sampler_ns = stages();
    let end_to_end_ns = end_to_end.0 * 1e9 / n_span_lines as f64;
    if let Some(b) = big {
        println!();
        println!("{b}");
    }
    // One JSON line of the figures, last, to compare runs.
    let skip_mb_per_s = rows[0].input_mb / rows[0].secs;
    let json = format!(
        "{{\"bench\":\"convert\",\"spans_per_s_1core\":{:.0},\"spans_per_s_all_cores\":{},\"cores\":{},\"vs_peer_batch\":{:.2},\"vs_peer_per_span\":{:.2},\"allocs_per_span\":{:.2},\"skip_mb_per_s\":{:.0},\"spans_per_s_mixed_file\":{:.0},\"open_records_secs\":[{:.4},{:.4},{:.4}],\"open_records_growth_10k_to_40k\":{:.2},\"sampling_10pct_time_change\":{:.3},\"sampling_10pct_time_change_quartiles\":[{:.3},{:.3}],\"sampler_ns_per_span_record\":{:.0},\"sampler_share_of_end_to_end\":{:.3}}}",
        base_rate,
        all_cores.map_or("null".to_owned(), |r| format!("{r:.0}")),
        std::thread::available_parallelism().map_or(1, usize::from),
        base_rate / peer_rates[0],
        base_rate / peer_rates[1],
        end_to_end.1 as f64 / n_span_lines as f64,
        skip_mb_per_s,
        rows[1].span_records as f64 / rows[1].secs,
        open_secs[0],
        open_secs[1],
        open_secs[2],
        open_secs[2] / open_secs[0],
        sampling_change[1],
        sampling_change[0],
        sampling_change[2],
        sampler_ns,
        sampler_ns / end_to_end_ns,
    );
    println!();
    println!("{json}");
}

/// The library's pipeline on `lines` (as 1 MiB record batches) into a sink that encodes and
/// drops: parsing on every core, assembly in order. Median seconds, spans out, allocations.
#[cfg(feature = "convert")]
fn pipeline_run(lines: &[&str]) -> (f64, u64, u64) {
    use spanline::convert::pipeline::{self, MemorySource, NoCommit, Options, SourceEvent};
    use spanline::convert::record::RecordBatch;
    use spanline::convert::sink::{AnySink, DiscardSink};
    let batches = || {
        let mut out = Vec::new();
        let mut b = RecordBatch::new(0);
        let o = b.origin(
            LOG_GROUP,
            "2026/11/23/[$LATEST]0123456789abcdef0123456789abcdef",
        );
        for l in lines {
            b.push(o, "", 0, l);
            if b.text_len() >= 1 << 20 {
                out.push(SourceEvent::Records(std::mem::replace(
                    &mut b,
                    RecordBatch::new(0),
                )));
                b.origin(
                    LOG_GROUP,
                    "2026/11/23/[$LATEST]0123456789abcdef0123456789abcdef",
                );
            }
        }
        out.push(SourceEvent::Records(b));
        out
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(1, usize::from))
        .enable_all()
        .build()
        .unwrap();
    let (secs, spans, allocs) = time(|| {
        let events = batches();
        let report = rt.block_on(pipeline::run(
            MemorySource::new(events),
            vec![AnySink::Discard(DiscardSink::default())],
            NoCommit,
            Options {
                batch_spans: BATCH_SPANS,
                ..Options::default()
            },
            None,
            None,
        ));
        report.sinks[0].accepted
    });
    (secs, spans, allocs)
}

/// `SPANLINE_BENCH_PROFILE=mixed|spans|foreign|peer|decode`: runs one row's work many times, for
/// `perf record`.
fn profile(what: &str, bytes: u64) {
    let c = corpus(2, bytes, |k| what != "foreign" || k == Kind::Foreign);
    let lines: Vec<&str> = c
        .lines
        .iter()
        .filter(|(k, _)| what != "spans" || matches!(k, Kind::Span | Kind::Report))
        .map(|(_, l)| l.as_str())
        .collect();
    let peer = (what == "peer").then(|| peer_lines(&c, false));
    if what == "decode" {
        for _ in 0..200 {
            for (_, l) in c.lines.iter().filter(|(k, _)| *k == Kind::Span) {
                black_box(spanline::convert::parse::parse_text(l));
            }
        }
        return;
    }
    for _ in 0..20 {
        match &peer {
            Some((l, n)) => {
                black_box(peer_run(l, *n as f64 / l.len() as f64));
            }
            None => {
                black_box(spanline_lines(lines.iter().copied()));
            }
        }
    }
}

fn big_run(dir: &Path, mb: u64) -> String {
    let file = TempFile(dir.join(format!("spanline-bench-big-{}.log", std::process::id())));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file.0).unwrap());
    let mut g = Gen::new(3);
    let (mut bytes, mut span_lines) = (0u64, 0u64);
    while bytes < mb << 20 {
        g.invocation(&mut |k, l| {
            w.write_all(l).unwrap();
            w.write_all(b"\n").unwrap();
            bytes += l.len() as u64 + 1;
            span_lines += u64::from(k == Kind::Span);
        });
    }
    w.flush().unwrap();
    drop(w);
    eprintln!(
        "big run: {:.0} MB written, streaming it in a child process",
        bytes as f64 / 1e6
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &file.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or_else(|| panic!("child failed: {}", String::from_utf8_lossy(&out.stderr)))
        .to_owned();
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(field("span_lines") as u64, span_lines);
    assert_eq!(field("malformed"), 0.0);
    let secs = field("secs");
    format!(
        "streaming run: {:.0} MB file, {} span lines, {} spans out in {:.1} s: {:.0} MB/s, {:.0} span records/s; peak RSS (VmHWM) {:.1} MB (process baseline {:.1} MB)",
        bytes as f64 / 1e6,
        span_lines,
        field("spans"),
        secs,
        bytes as f64 / 1e6 / secs,
        span_lines as f64 / secs,
        field("hwm_kb") / 1024.0,
        field("base_kb") / 1024.0,
    )
}

fn print_table(rows: &[Row], base_rate: f64, foreign_lines: f64) {
    println!();
    println!(
        "| run | input MB | MB/s | span records/s | allocations/span record | input bytes/span | spanline ×faster |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let rate = r.span_records as f64 / r.secs;
        let (records, allocs) = if r.span_records == 0 {
            (
                format!("– ({:.2} M lines/s)", foreign_lines / r.secs / 1e6),
                format!("{:.2} per line", r.allocs as f64 / foreign_lines),
            )
        } else {
            (
                format!("{rate:.0}"),
                format!("{:.1}", r.allocs as f64 / r.span_records as f64),
            )
        };
        let ratio = if r.name.starts_with("peer") {
            format!("{:.1}", base_rate / rate)
        } else {
            String::new()
        };
        let bps = if r.bytes_per_span.is_nan() {
            String::new()
        } else {
            format!("{:.0}", r.bytes_per_span)
        };
        println!(
            "| {} | {:.1} | {:.0} | {records} | {allocs} | {bps} | {ratio} |",
            r.name,
            r.input_mb,
            r.input_mb / r.secs,
        );
    }
}

/// Where the time of one span record goes: the pipeline's stages run alone on the span lines
/// of `c`, cumulatively; each row is the increment over the one before, in ns and allocations
/// per span record. `end_to_end` is the span + REPORT row, for the remainder (assembly,
/// invocation spans, bookkeeping). Returns the sampler's ns per span record (a 10 % rate,
/// errors kept), shown apart: it is not part of the unsampled end to end.
fn print_stages(c: &Corpus, end_to_end: (f64, u64)) -> f64 {
    use spanline::convert::parse::{parse_text, Parsed};
    let lines: Vec<&str> = c
        .lines
        .iter()
        .filter(|(k, _)| *k == Kind::Span)
        .map(|(_, l)| l.as_str())
        .collect();
    let n = lines.len() as f64;
    let res = Arc::new(Resource::new(SERVICE.into(), vec![]));
    let mut scratch = Vec::new();
    let decode = time(|| {
        let mut k = 0;
        for l in &lines {
            if let Parsed::Spans { record, .. } = parse_text(l) {
                k += record.spans().count();
            }
        }
        k
    });
    let to_span = time(|| {
        let mut k = 0;
        for l in &lines {
            if let Parsed::Spans { record, .. } = parse_text(l) {
                for s in record.spans() {
                    k += black_box(Span::from_line(&s, res.clone(), &mut scratch).0).heap_size();
                }
            }
        }
        k
    });
    let mut spans: Vec<Span> = Vec::with_capacity(lines.len());
    for l in &lines {
        if let Parsed::Spans { record, .. } = parse_text(l) {
            spans.extend(
                record
                    .spans()
                    .map(|s| Span::from_line(&s, res.clone(), &mut scratch).0),
            );
        }
    }
    let mut buf = Vec::with_capacity(1 << 20);
    let request = time(|| {
        spans
            .chunks(BATCH_SPANS)
            .map(|b| {
                write_request(b, &mut buf);
                buf.len()
            })
            .sum::<usize>()
    });
    // The sampler alone on the built spans: copies made outside the clock, pushed in input
    // order with the clock at the latest end seen, expired every `DRAIN_EVERY` spans.
    let mut sampler_secs = Vec::with_capacity(SAMPLES + 1);
    let mut sampler_allocs = 0;
    for pass in 0..=SAMPLES {
        let input = spans.clone();
        let mut out = Vec::with_capacity(input.len());
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut sampler =
            spanline::convert::sample::Sampler::new(spanline::convert::sample::Policy {
                rate: 0.1,
                ..Default::default()
            });
        let mut clock = i64::MIN;
        for (i, span) in input.into_iter().enumerate() {
            clock = clock.max((span.end_unix_nano / 1_000_000) as i64);
            sampler.push(span, clock, &mut out);
            if (i as u64 + 1).is_multiple_of(DRAIN_EVERY) {
                sampler.expire(clock, &mut out);
            }
        }
        sampler.finish(clock, &mut out);
        black_box(&out);
        let secs = t.elapsed().as_secs_f64();
        if pass == 0 {
            sampler_allocs = ALLOCS.load(Ordering::Relaxed) - a0;
        } else {
            sampler_secs.push(secs);
        }
        drop(sampler);
        drop(out);
    }
    sampler_secs.sort_by(|a, b| a.total_cmp(b));
    let sampler_time = sampler_secs[SAMPLES / 2];
    // What dropping the same spans costs alone (the unsampled path drops each after encoding).
    let mut drop_secs: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let input = spans.clone();
            let t = Instant::now();
            drop(black_box(input));
            t.elapsed().as_secs_f64()
        })
        .collect();
    drop_secs.sort_by(|a, b| a.total_cmp(b));
    let drop_time = drop_secs[SAMPLES / 2];
    let ns = |t: f64| t * 1e9 / n;
    let al = |a: u64| a as f64 / n;
    let rows = [
        (
            "find the marker, decode (`parse::parse_text`)",
            ns(decode.0),
            al(decode.2),
        ),
        (
            "`Span::from_line` (the OTLP fields written once), its drop",
            ns(to_span.0 - decode.0),
            al(to_span.2.saturating_sub(decode.2)),
        ),
        (
            "`write_request` into a reused buffer",
            ns(request.0),
            al(request.2),
        ),
    ];
    let known: f64 = rows.iter().map(|r| r.1).sum();
    let known_allocs: f64 = rows.iter().map(|r| r.2).sum();
    println!();
    println!(
        "| stage (span + REPORT lines in memory) | ns/span record | allocations/span record |"
    );
    println!("|---|---:|---:|");
    for (name, t, a) in rows {
        println!("| {name} | {t:.0} | {a:.1} |");
    }
    println!(
        "| the rest: `Converter` bookkeeping, `Assembler` (dedup, held spans), invocation spans from REPORT, dropping spans | {:.0} | {:.1} |",
        ns(end_to_end.0) - known,
        al(end_to_end.1) - known_allocs
    );
    println!(
        "| **end to end** | {:.0} | {:.1} |",
        ns(end_to_end.0),
        al(end_to_end.1)
    );
    println!(
        "| besides, when sampling: the sampler alone at 10 % (errors kept), spans held and decided, the dropped ones freed | {:.0} | {:.1} |",
        ns(sampler_time),
        al(sampler_allocs)
    );
    println!(
        "| (for scale: freeing every span, as the unsampled path does after encoding) | {:.0} | 0.0 |",
        ns(drop_time)
    );
    ns(sampler_time)
}
