//! Emitter benchmark: spanline against the peers, same span, same run.
//!
//! The span: `service-egress`, client kind, a remote parent, attributes `http.method=POST` and
//! `peer.service=lambda`. For each contender the table gives ns/span (median of 7 samples),
//! heap allocations per span (a counting global allocator), bytes per span written, and the
//! time ratio to spanline's in-memory path. Criterion is not used because it reports neither
//! allocations nor bytes, and the point of this bench is one table of all three, with ratios,
//! from one run.
//!
//! The run ends with one JSON line: `ns_per_span` (in memory), `ns_per_span_write` (stdout
//! pointed at a drained pipe), `ns_bare_write` (a bare `write(2)` of the same line into the same
//! kind of pipe, samples interleaved with the former), `write_ratio`, `allocs_per_span`,
//! `bytes_per_span` and `peers_ns_per_span` by name.
//!
//! Run: `cargo bench --bench emit` (set `SPANLINE_BENCH_SPANS` to change the sample size).

use opentelemetry::trace::{
    SpanContext as OtelContext, SpanKind as OtelKind, TraceContextExt, TraceFlags, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use spanline::emit::{Output, SpanContext, SpanKind, Tracer, WriterOutput};
use spanline::span_line::{SpanId, TraceId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Counts bytes and discards them.
#[derive(Clone, Default)]
struct CountingSink(Arc<AtomicU64>);

impl CountingSink {
    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

impl Output for CountingSink {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        self.0.fetch_add(line.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for CountingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingSink")
    }
}

impl otlp_stdout_span_exporter::Output for CountingSink {
    fn write_line(&self, line: &str) -> Result<(), opentelemetry_sdk::error::OTelSdkError> {
        self.0.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        Ok(())
    }
    fn is_pipe(&self) -> bool {
        false
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CountingSink {
    type Writer = CountingSink;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A pipe whose read end another thread drains, counting bytes.
fn drained_pipe() -> (std::io::PipeWriter, Arc<AtomicU64>) {
    let (mut r, w) = std::io::pipe().expect("pipe");
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = r.read(&mut buf) {
            if k == 0 {
                break;
            }
            n2.fetch_add(k as u64, Ordering::Relaxed);
        }
    });
    (w, n)
}

/// Redirects fd 1 into a drained pipe while `f` runs (for peers that only print to stdout).
fn with_stdout_captured<R>(f: impl FnOnce() -> R) -> (R, u64) {
    use std::os::fd::AsRawFd;
    std::io::stdout().flush().ok();
    let (w, n) = drained_pipe();
    let saved = unsafe { libc::dup(1) };
    unsafe { libc::dup2(w.as_raw_fd(), 1) };
    let r = f();
    std::io::stdout().flush().ok();
    unsafe { libc::dup2(saved, 1) };
    unsafe { libc::close(saved) };
    drop(w);
    std::thread::sleep(std::time::Duration::from_millis(50));
    (r, n.load(Ordering::Relaxed))
}

struct Row {
    name: String,
    ns: f64,
    allocs: f64,
    bytes: f64,
}

/// Runs `f(n)` (which emits `n` spans) as warm-up, one counting pass and 7 timed samples.
fn measure(name: &str, spans: u64, bytes: impl Fn() -> u64, mut f: impl FnMut(u64)) -> Row {
    f(spans / 10 + 1);
    bytes();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    f(spans);
    let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / spans as f64;
    let b = bytes() as f64 / spans as f64;
    let mut samples: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f(spans);
            t.elapsed().as_nanos() as f64 / spans as f64
        })
        .collect();
    bytes();
    samples.sort_by(|a, b| a.total_cmp(b));
    let row = Row {
        name: name.to_owned(),
        ns: samples[3],
        allocs,
        bytes: b,
    };
    eprintln!("measured {name}: {:.0} ns/span", row.ns);
    row
}

/// A name, a byte counter to read and reset, and `f(n)` emitting `n` spans.
type Contender<'a> = (&'a str, &'a dyn Fn() -> u64, &'a mut dyn FnMut(u64));

/// Like [`measure`] for several contenders at once, their timed samples interleaved (A, B, C, A,
/// B, C, ...) so that a busy machine's slow phases hit all of them alike: for ratios.
fn measure_interleaved(spans: u64, contenders: &mut [Contender<'_>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, bytes, f) in contenders.iter_mut() {
        f(spans / 10 + 1);
        bytes();
        let a0 = ALLOCS.load(Ordering::Relaxed);
        f(spans);
        // The drain thread may lag; give it a moment before counting what went through.
        std::thread::sleep(std::time::Duration::from_millis(20));
        rows.push(Row {
            name: (*name).to_owned(),
            ns: 0.0,
            allocs: (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / spans as f64,
            bytes: bytes() as f64 / spans as f64,
        });
    }
    let mut samples = vec![Vec::new(); contenders.len()];
    for _ in 0..7 {
        for (i, (_, _, f)) in contenders.iter_mut().enumerate() {
            let t = Instant::now();
            f(spans);
            samples[i].push(t.elapsed().as_nanos() as f64 / spans as f64);
        }
    }
    for (row, mut s) in rows.iter_mut().zip(samples) {
        s.sort_by(|a, b| a.total_cmp(b));
        row.ns = s[3];
        eprintln!("measured {}: {:.0} ns/span", row.name, row.ns);
    }
    rows
}

/// std's stdout as spanline wrote to it before: the re-entrant lock, the line buffer, a flush.
struct StdLockedStdout;

impl Output for StdLockedStdout {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(line)?;
        out.flush()
    }
}

/// Points fd 1 at a drained pipe; returns the byte counter and the saved fd 1 for
/// [`restore_stdout`].
fn stdout_into_drained_pipe() -> (Arc<AtomicU64>, i32) {
    use std::os::fd::AsRawFd;
    std::io::stdout().flush().ok();
    let (w, n) = drained_pipe();
    let saved = unsafe { libc::dup(1) };
    unsafe { libc::dup2(w.as_raw_fd(), 1) };
    drop(w);
    (n, saved)
}

fn restore_stdout(saved: i32) {
    std::io::stdout().flush().ok();
    unsafe { libc::dup2(saved, 1) };
    unsafe { libc::close(saved) };
}

fn remote_parent() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex(TRACE).unwrap(),
        SpanId::from_hex(PARENT).unwrap(),
    )
}

fn spanline_span(tracer: &Tracer, parent: &SpanContext) {
    let mut s = tracer
        .span("service-egress")
        .child_of_context(parent)
        .kind(SpanKind::Client)
        .start();
    s.set_tag("http.method", "POST")
        .set_tag("peer.service", "lambda");
    s.finish();
}

fn otel_parent() -> Context {
    let sc = OtelContext::new(
        opentelemetry::trace::TraceId::from_hex(TRACE).unwrap(),
        opentelemetry::trace::SpanId::from_hex(PARENT).unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

fn otel_span(tracer: &opentelemetry_sdk::trace::SdkTracer, cx: &Context) {
    let span = tracer
        .span_builder("service-egress")
        .with_kind(OtelKind::Client)
        .with_attributes([
            KeyValue::new("http.method", "POST"),
            KeyValue::new("peer.service", "lambda"),
        ])
        .start_with_context(tracer, cx);
    drop(span);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("emit: bench");
        return;
    }
    let n: u64 = std::env::var("SPANLINE_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let parent = remote_parent();
    let mut rows = Vec::new();

    // spanline, line built in memory and handed to a discarding output; next to it, where the
    // time goes: the encoder alone (the same line from fixed ids and times: no clock, no id
    // generation, no span bookkeeping) and the two clock reads. Samples interleaved.
    let sink = CountingSink::default();
    let tracer = Tracer::builder().output(sink.clone()).build();
    let mut enc = spanline::span_line::SpanEncoder::new();
    let mut line = Vec::with_capacity(256);
    let head = spanline::span_line::SpanHead {
        trace_id: parent.trace_id,
        span_id: SpanId([7; 8]),
        parent: Some(parent.span_id),
        start_us: 1_700_000_000_000_000,
        duration_us: 1234,
        kind: SpanKind::Client,
        status: spanline::span_line::StatusCode::Unset,
        name: "service-egress",
    };
    let line_bytes = AtomicU64::new(0);
    let clock = AtomicU64::new(0);
    rows.extend(measure_interleaved(
        n,
        &mut [
            (
                "spanline, span record, in memory",
                &|| sink.take(),
                &mut |k| {
                    for _ in 0..k {
                        spanline_span(&tracer, &parent);
                    }
                },
            ),
            (
                "spanline, encoder only (fixed ids and times)",
                &|| line_bytes.swap(0, Ordering::Relaxed),
                &mut |k| {
                    for _ in 0..k {
                        enc.reset(200);
                        enc.attr("http.method", spanline::span_line::Value::Str("POST"));
                        enc.attr("peer.service", spanline::span_line::Value::Str("lambda"));
                        line.clear();
                        enc.write_record(&mut line, &head, None, None, b"");
                        line.push(b'\n');
                        line_bytes
                            .fetch_add(std::hint::black_box(&line).len() as u64, Ordering::Relaxed);
                    }
                },
            ),
            ("two clock reads (SystemTime::now)", &|| 0, &mut |k| {
                for _ in 0..k {
                    let a = std::time::SystemTime::now();
                    let b = std::time::SystemTime::now();
                    clock.fetch_add(
                        std::hint::black_box(
                            b.duration_since(a).map_or(0, |d| d.as_nanos() as u64),
                        ),
                        Ordering::Relaxed,
                    );
                }
            }),
            (
                "two clock reads (clock_gettime, µs by hand)",
                &|| 0,
                &mut |k| {
                    let us = || {
                        let mut ts = libc::timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        };
                        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
                        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
                    };
                    for _ in 0..k {
                        let a = us();
                        let b = us();
                        clock.fetch_add(std::hint::black_box(b.wrapping_sub(a)), Ordering::Relaxed);
                    }
                },
            ),
            ("two clock reads (Instant::now)", &|| 0, &mut |k| {
                for _ in 0..k {
                    let a = Instant::now();
                    let b = Instant::now();
                    clock.fetch_add(
                        std::hint::black_box(b.duration_since(a).as_nanos() as u64),
                        Ordering::Relaxed,
                    );
                }
            }),
        ],
    ));
    if std::env::var("SPANLINE_BENCH_ONLY").is_ok_and(|v| v == "memory") {
        print_table(&rows);
        print_json(&rows, &[]);
        return;
    }
    // The same line into a drained pipe on fd 1, three ways, samples interleaved: spanline's
    // default output (one write(2) to fd 1), std's locked, line-buffered stdout (spanline's
    // output before), and a bare write(2) of the same bytes (the floor).
    let capture = spanline::emit::CaptureOutput::new();
    spanline_span(&Tracer::builder().output(capture.clone()).build(), &parent);
    let same_line = capture.text().into_bytes();
    let tracer_fd1 = Tracer::builder().build();
    let tracer_std = Tracer::builder().output(StdLockedStdout).build();
    let tracer_mem = Tracer::builder().output(CountingSink::default()).build();
    let (piped_fd1, saved) = stdout_into_drained_pipe();
    let piped = || piped_fd1.swap(0, Ordering::Relaxed);
    let write_rows = measure_interleaved(
        n,
        &mut [
            (
                "bare write(2) of the same line into a drained pipe",
                &piped,
                &mut |k| {
                    for _ in 0..k {
                        let line = std::hint::black_box(&same_line);
                        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
                    }
                },
            ),
            (
                "spanline, span record, stdout (one write(2)) into a drained pipe",
                &piped,
                &mut |k| {
                    for _ in 0..k {
                        spanline_span(&tracer_fd1, &parent);
                    }
                },
            ),
            (
                // Diagnostic: the in-memory span (into a discarding output), then a bare write(2)
                // of the same line. If this matches spanline's own row, the output path adds
                // nothing beyond the system call; the gap to the bare write is the in-memory
                // work plus how the pipe's reader wakes when lines come slower.
                "in-memory span + bare write(2) of the same line into a drained pipe",
                &piped,
                &mut |k| {
                    for _ in 0..k {
                        spanline_span(&tracer_mem, &parent);
                        let line = std::hint::black_box(&same_line);
                        unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
                    }
                },
            ),
            (
                "spanline, span record, std's locked stdout into a drained pipe",
                &piped,
                &mut |k| {
                    for _ in 0..k {
                        spanline_span(&tracer_std, &parent);
                    }
                },
            ),
        ],
    );
    restore_stdout(saved);
    rows.extend(write_rows);

    // Any writer: a pipe behind `WriterOutput`'s mutex.
    let (w, piped) = drained_pipe();
    let tracer_pipe = Tracer::builder().output(WriterOutput::new(w)).build();
    rows.push(measure(
        "spanline, span record, WriterOutput into a drained pipe",
        n,
        || piped.swap(0, Ordering::Relaxed),
        |k| {
            for _ in 0..k {
                spanline_span(&tracer_pipe, &parent);
            }
        },
    ));

    // spanline batch records, 10 spans per invocation.
    for per in [1u64, 10, 100] {
        let sink_b = CountingSink::default();
        let tracer_b = Tracer::builder().batch(true).output(sink_b.clone()).build();
        rows.push(measure(
            &format!("spanline, batch record, {per} spans/flush"),
            n,
            || sink_b.take(),
            |k| {
                for i in 0..k {
                    spanline_span(&tracer_b, &parent);
                    if (i + 1) % per == 0 {
                        tracer_b.flush();
                    }
                }
                tracer_b.flush();
            },
        ));
    }

    let peers = std::env::var("SPANLINE_BENCH_ONLY").map_or(true, |v| v != "spanline");
    let mut peer_rows = Vec::new();
    if peers {
        peers_rows(n, &mut peer_rows);
    }
    rows.extend(peer_rows.iter().map(|r| Row {
        name: r.name.clone(),
        ..*r
    }));
    print_table(&rows);
    print_json(&rows, &peer_rows);
}

fn peers_rows(n: u64, rows: &mut Vec<Row>) {
    // Peer: otlp-stdout-span-exporter with the OpenTelemetry SDK, simple processor.
    let cx = otel_parent();
    let out = CountingSink::default();
    let exporter = otlp_stdout_span_exporter::OtlpStdoutSpanExporter::builder()
        .output(Arc::new(out.clone()))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let otel = provider.tracer("bench");
    rows.push(measure(
        "otlp-stdout-span-exporter, simple processor",
        n / 4,
        || out.take(),
        |k| {
            for _ in 0..k {
                otel_span(&otel, &cx);
            }
        },
    ));
    let _ = provider.shutdown();

    // Peer: otlp-stdout-span-exporter, batch processor flushed every 1/10/100 spans.
    for per in [1u64, 10, 100] {
        let out = CountingSink::default();
        let exporter = otlp_stdout_span_exporter::OtlpStdoutSpanExporter::builder()
            .output(Arc::new(out.clone()))
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build();
        let otel = provider.tracer("bench");
        rows.push(measure(
            &format!("otlp-stdout-span-exporter, batch, flush every {per}"),
            n / 4,
            || out.take(),
            |k| {
                for i in 0..k {
                    otel_span(&otel, &cx);
                    if (i + 1) % per == 0 {
                        let _ = provider.force_flush();
                    }
                }
                let _ = provider.force_flush();
            },
        ));
        let _ = provider.shutdown();
    }

    // Peer: opentelemetry-stdout (prints to fd 1, captured into a drained pipe).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let otel = provider.tracer("bench");
    let (row, _) = with_stdout_captured(|| {
        let counted = Arc::new(AtomicU64::new(0));
        let mut row = measure(
            "opentelemetry-stdout, simple processor",
            n / 4,
            || 0,
            |k| {
                for _ in 0..k {
                    otel_span(&otel, &cx);
                }
            },
        );
        let _ = counted;
        // Bytes: one more pass, measured through the pipe below.
        row.bytes = f64::NAN;
        row
    });
    let (_, stdout_bytes) = with_stdout_captured(|| {
        for _ in 0..1000 {
            otel_span(&otel, &cx);
        }
    });
    rows.push(Row {
        bytes: stdout_bytes as f64 / 1000.0,
        ..row
    });
    let _ = provider.shutdown();

    // Peer: tracing-subscriber's JSON formatter with span close events.
    let out = CountingSink::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        rows.push(measure(
            "tracing-subscriber JSON, close events",
            n,
            || out.take(),
            |k| {
                for _ in 0..k {
                    let s = tracing::info_span!(
                        "service-egress",
                        http.method = "POST",
                        peer.service = "lambda"
                    );
                    drop(s);
                }
            },
        ));
    });
}

/// The final JSON line. Absent measurements are `null`.
fn print_json(rows: &[Row], peers: &[Row]) {
    let ns = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.ns)
    };
    let num = |x: Option<f64>| x.map_or("null".to_owned(), |x| format!("{x:.1}"));
    let mem = &rows[0];
    let write = ns("spanline, span record, stdout (one write(2))");
    let bare = ns("bare write(2)");
    let ratio = write.zip(bare).map(|(w, b)| w / b);
    let peer_fields: Vec<String> = peers
        .iter()
        .map(|r| format!("{}:{:.1}", serde_json::Value::from(r.name.as_str()), r.ns))
        .collect();
    println!(
        "{{\"ns_per_span\":{:.1},\"ns_per_span_write\":{},\"ns_bare_write\":{},\"write_ratio\":{},\"ns_per_span_write_std_stdout\":{},\"allocs_per_span\":{:.2},\"bytes_per_span\":{:.1},\"peers_ns_per_span\":{{{}}}}}",
        mem.ns,
        num(write),
        num(bare),
        ratio.map_or("null".to_owned(), |r| format!("{r:.2}")),
        num(ns("spanline, span record, std's locked stdout")),
        mem.allocs,
        mem.bytes,
        peer_fields.join(",")
    );
}

fn print_table(rows: &[Row]) {
    let base = rows[0].ns;
    println!();
    println!("| emitter | ns/span | × spanline | allocations/span | bytes/span |");
    println!("|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {:.1} |",
            r.name,
            r.ns,
            r.ns / base,
            r.allocs,
            r.bytes
        );
    }
}
