//! Fuzz the terminal waterfall, `render_trace`, on spans whose every field comes from the
//! input, as they would from log lines anyone can write: absurd times (the end of time, ends
//! before starts, spans 2^64 ns apart), parents that are missing, self-parents, cycles and
//! duplicate ids (ids are drawn from 256 values so that links between spans are common), deep
//! chains, and names, services and status messages holding control characters. It must never
//! panic and:
//! * draws one header line and exactly one row per span;
//! * writes no control character but `\n`, and with colour on only its own SGR sequences;
//! * writes an amount of text bounded by what it was given (a deep chain once took 603 MB).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use spanline::convert::assemble::SpanData;
use spanline::convert::sink::terminal::{render_trace, Style};
use spanline::span_line::{SpanId, SpanKind, StatusCode, TraceId};

/// 2026-01-01T00:00:00Z in ns: where the sensible times of a trace sit.
const BASE_NANOS: u64 = 1_767_225_600_000_000_000;

/// Spans drawn per input: enough for chains four times deeper than the drawn depth (32).
const MAX_SPANS: usize = 128;

#[derive(Arbitrary, Debug)]
struct Input {
    color: bool,
    bar_width: u8,
    spans: Vec<FuzzSpan>,
}

#[derive(Arbitrary, Debug)]
struct FuzzSpan {
    trace: u8,
    id: u8,
    parent: Option<u8>,
    start: Time,
    end: Time,
    name: String,
    service: String,
    status_message: String,
    status: u8,
    kind: u8,
}

#[derive(Arbitrary, Debug)]
enum Time {
    /// Nanoseconds after [`BASE_NANOS`]: an ordinary trace.
    Near(u32),
    /// Any time at all.
    Raw(u64),
    /// The edges: 0, `i64::MAX` (where the timeline ends), one past it, `u64::MAX` (a start in
    /// µs of 18446744073709552 saturates there), …
    Edge(u8),
}

impl Time {
    fn nanos(&self) -> u64 {
        match *self {
            Time::Near(n) => BASE_NANOS + u64::from(n),
            Time::Raw(n) => n,
            Time::Edge(e) => match e % 6 {
                0 => 0,
                1 => i64::MAX as u64,
                2 => i64::MAX as u64 + 1,
                3 => u64::MAX,
                4 => u64::MAX - 1,
                _ => 1,
            },
        }
    }
}

impl FuzzSpan {
    fn data(self) -> SpanData {
        SpanData {
            trace_id: TraceId([self.trace; 16]),
            span_id: SpanId([self.id; 8]),
            parent_span_id: self.parent.map(|p| SpanId([p; 8])),
            name: self.name,
            kind: match self.kind % 5 {
                0 => SpanKind::Internal,
                1 => SpanKind::Server,
                2 => SpanKind::Client,
                3 => SpanKind::Producer,
                _ => SpanKind::Consumer,
            },
            status: match self.status % 3 {
                0 => StatusCode::Unset,
                1 => StatusCode::Ok,
                _ => StatusCode::Error,
            },
            status_message: self.status_message,
            start_unix_nano: self.start.nanos(),
            end_unix_nano: self.end.nanos(),
            attributes: vec![],
            events: vec![],
            links: vec![],
            service: self.service,
            resource: vec![],
            dropped: (0, 0, 0),
        }
    }
}

/// The first control character other than `\n` and, with colour, the renderer's own SGR
/// sequences: its offset and bytes. A byte scan (C0 and DEL are single bytes, C1 characters
/// `C2 80`–`C2 9F`), which costs a fraction of decoding characters under instrumentation.
fn stray_control(text: &str, color: bool) -> Option<(usize, &[u8])> {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = b[i..]
        .iter()
        .position(|&c| c < 0x20 || c == 0x7f || c == 0xc2)
        .map(|p| i + p)
    {
        i = at + 1;
        match b[at] {
            b'\n' => continue,
            0xc2 if !matches!(b.get(at + 1), Some(0x80..=0x9f)) => continue,
            0x1b if color => {
                let rest = &b[at + 1..];
                if let Some(sgr) = [&b"[0m"[..], b"[1m", b"[2m", b"[31m"]
                    .into_iter()
                    .find(|s| rest.starts_with(s))
                {
                    i += sgr.len();
                    continue;
                }
            }
            _ => {}
        }
        return Some((at, &b[at..b.len().min(at + 2)]));
    }
    None
}

fuzz_target!(|input: Input| {
    let Input {
        color,
        bar_width,
        mut spans,
    } = input;
    spans.truncate(MAX_SPANS);
    let spans: Vec<SpanData> = spans.into_iter().map(FuzzSpan::data).collect();
    // Up to 63 columns: every clamp of the bar arithmetic is reached (0 and 1 included) without
    // spending the run on scanning kilobytes of bars.
    let bar_width = usize::from(bar_width % 64);
    let style = Style { color, bar_width };
    let text = render_trace(&spans, style);
    if spans.is_empty() {
        assert!(text.is_empty());
        return;
    }
    let lines = text.lines().count();
    assert_eq!(
        lines,
        spans.len() + 1,
        "rows for {} spans:\n{text}",
        spans.len()
    );
    if let Some((at, bytes)) = stray_control(&text, color) {
        panic!("a raw control {bytes:02x?} at byte {at}:\n{text}");
    }
    // An escaped byte takes at most 6 bytes (`\u{9b}` for a 2-byte C1 character, `\x1b` for
    // one); the rest of a row is bounded: its tree prefix (32 levels of 3-byte connectors and
    // a count), the padding, the service (24 characters), the bar and the notes.
    let given: usize = spans
        .iter()
        .map(|s| 4 * (s.name.len() + s.status_message.len() + s.service.len()))
        .sum();
    let per_row = 600 + 4 * 24 + 3 * bar_width.max(1);
    let bound = given + (spans.len() + 1) * per_row;
    assert!(
        text.len() <= bound,
        "{} bytes drawn for {} spans (bound {bound})",
        text.len(),
        spans.len()
    );
});
