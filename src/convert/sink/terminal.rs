//! The default sink: a waterfall per trace in the terminal (tree, service, name, offset and
//! duration bars, errors highlighted), for when no backend is configured.
//!
//! [`TerminalSink`] holds spans by trace and draws each trace once: when the input ends, or
//! earlier when what it holds passes its memory bound (oldest traces first), or, when
//! following (`tail`), once a trace has been quiet for a moment. [`render_trace`] draws one.
//!
//! Everything drawn comes from log lines that anyone able to make a function log a string
//! controls, so the renderer assumes nothing about it:
//! * names, services and status messages are drawn with their control characters made visible
//!   ([`printable`](crate::convert::printable)); the only escape sequences in the output are the
//!   renderer's own colours;
//! * times are compared in 128-bit arithmetic; a span with an absurd time (past
//!   [`MAX_SANE_NANOS`], or ending before it starts) does not stretch the timeline: its bar is
//!   clamped to the timeline's edges and the row says so;
//! * every span is one row, whatever the parent links: spans that no root reaches (self
//!   parents, cycles) are drawn as extra roots with a marker, and rows deeper than
//!   [`MAX_DRAWN_DEPTH`] levels show the hidden levels as `…N` instead of their connectors, so a
//!   row costs bounded memory and output however deep the tree is.

use crate::convert::assemble::SpanData as Span;
use crate::convert::printable::Visible;
use crate::convert::sink::SinkError;
use crate::span_line::{SpanId, SpanKind, StatusCode};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// How to draw.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// ANSI colours (red errors, dim ids).
    pub color: bool,
    /// Width of the timeline bar in columns.
    pub bar_width: usize,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            color: false,
            bar_width: 40,
        }
    }
}

/// The latest time drawn on a timeline: 2262-04-11T23:47:16Z, where clocks that count
/// nanoseconds in a signed 64-bit integer (most tracing SDKs and backends) end. A span line
/// that claims a later time (its start is in µs, so anything from 9223372036854776) comes from
/// a broken or hostile emitter.
pub const MAX_SANE_NANOS: u64 = i64::MAX as u64;

/// Tree levels drawn with their own connector; deeper rows show how many levels are hidden.
pub const MAX_DRAWN_DEPTH: usize = 32;

fn fmt_dur(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn kind_label(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Server => " (server)",
        SpanKind::Client => " (client)",
        SpanKind::Producer => " (producer)",
        SpanKind::Consumer => " (consumer)",
        _ => "",
    }
}

/// A time the timeline cannot place (see [`MAX_SANE_NANOS`]).
fn absurd(s: &Span) -> bool {
    s.start_unix_nano > MAX_SANE_NANOS
        || s.end_unix_nano > MAX_SANE_NANOS
        || s.end_unix_nano < s.start_unix_nano
}

/// One row to draw: the span, its tree prefix (at most [`MAX_DRAWN_DEPTH`] connectors), and
/// whether it is a root only because no root reaches it.
struct Row {
    index: usize,
    prefix: String,
    cycle: bool,
}

/// The tree prefix of a row at `depth` (roots are depth 0): one connector per ancestor level
/// (`lasts[k]`: whether the ancestor at depth k+1 was a last child), then its own.
fn tree_prefix(lasts: &[bool], depth: usize, last: bool) -> String {
    let mut p = String::new();
    if depth == 0 {
        return p;
    }
    let ancestors = depth - 1;
    for &l in lasts.iter().take(ancestors.min(MAX_DRAWN_DEPTH)) {
        p.push_str(if l { "   " } else { "│  " });
    }
    if ancestors > MAX_DRAWN_DEPTH {
        let _ = write!(p, "…{} ", ancestors - MAX_DRAWN_DEPTH);
    }
    p.push_str(if last { "└─ " } else { "├─ " });
    p
}

/// The rows in drawing order: a depth-first walk from the roots (spans without a parent in
/// the trace), then from every span still not drawn (a cycle), so that each span is exactly
/// one row. An explicit stack keeps deep traces from overflowing the real one; the only state
/// that grows with depth is one flag per level.
fn layout(spans: &[Span], ids: &HashSet<SpanId>) -> Vec<Row> {
    let order = |a: &usize, b: &usize| -> Ordering {
        let (x, y) = (&spans[*a], &spans[*b]);
        (x.start_unix_nano, &x.name).cmp(&(y.start_unix_nano, &y.name))
    };
    let mut children: HashMap<Option<SpanId>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s.parent_span_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(i);
    }
    for v in children.values_mut() {
        v.sort_by(order);
    }
    let roots = children.get(&None).cloned().unwrap_or_default();
    let mut rest: Vec<usize> = (0..spans.len()).collect();
    rest.sort_by(order);
    let starts = roots
        .into_iter()
        .map(|i| (i, false))
        .chain(rest.into_iter().map(|i| (i, true)));

    let mut visited = vec![false; spans.len()];
    let mut rows = Vec::with_capacity(spans.len());
    let mut lasts: Vec<bool> = Vec::new();
    let mut stack: Vec<(usize, usize, bool)> = Vec::new();
    for (start, cycle) in starts {
        if visited[start] {
            continue;
        }
        stack.push((start, 0, true));
        while let Some((i, depth, last)) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            lasts.truncate(depth.saturating_sub(1));
            rows.push(Row {
                index: i,
                prefix: tree_prefix(&lasts, depth, last),
                cycle: cycle && depth == 0,
            });
            if depth > 0 {
                lasts.push(last);
            }
            let kids: Vec<usize> = children
                .get(&Some(spans[i].span_id))
                .map(|k| k.iter().copied().filter(|&c| !visited[c]).collect())
                .unwrap_or_default();
            let n = kids.len();
            for (k, &c) in kids.iter().enumerate().rev() {
                stack.push((c, depth + 1, k + 1 == n));
            }
        }
    }
    rows
}

/// Renders one trace as text.
pub fn render_trace(spans: &[Span], style: Style) -> String {
    let mut out = String::new();
    if spans.is_empty() {
        return out;
    }
    // The timeline spans the sane times; absurd ones are clamped to it. When every time is
    // absurd, all of them make the timeline (and only the order of the bars says anything).
    let sane = |s: &&Span| !absurd(s);
    let (t0, t1) = if spans.iter().any(|s| !absurd(s)) {
        let t0 = spans.iter().filter(sane).map(|s| s.start_unix_nano).min();
        let t1 = spans.iter().filter(sane).map(|s| s.end_unix_nano).max();
        (t0.unwrap_or(0), t1.unwrap_or(0))
    } else {
        let t0 = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
        let t1 = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(t0);
        (t0, t1)
    };
    let t1 = t1.max(t0.saturating_add(1));
    // At least 1, even when t0 is u64::MAX.
    let total = t1.saturating_sub(t0).max(1);
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let services: Vec<Cow<'_, str>> = {
        let mut v: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v.into_iter()
            .map(crate::convert::printable::visible)
            .collect()
    };
    let errors = spans
        .iter()
        .filter(|s| s.status == StatusCode::Error)
        .count();
    let (red, dim, bold, reset) = if style.color {
        ("\x1b[31m", "\x1b[2m", "\x1b[1m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let _ = writeln!(
        out,
        "{bold}trace {}{reset} · {} span{} · {} · {}{}",
        spans[0].trace_id,
        spans.len(),
        if spans.len() == 1 { "" } else { "s" },
        fmt_dur(total),
        services.join(", "),
        if errors > 0 {
            format!(
                " · {red}{errors} error{}{reset}",
                if errors == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        },
    );
    let svc_w = services
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(7)
        .clamp(7, 24);
    let rows = layout(spans, &ids);
    let name_w = rows
        .iter()
        .map(|r| {
            let s = &spans[r.index];
            r.prefix.chars().count()
                + Visible(&s.name).to_string().chars().count()
                + kind_label(s.kind).len()
        })
        .max()
        .unwrap_or(10)
        .clamp(10, 60);
    let w = style.bar_width.max(1) as u128;
    let (t0w, totalw) = (u128::from(t0), u128::from(total));
    for r in rows {
        let s = &spans[r.index];
        let off = s.start_unix_nano.saturating_sub(t0);
        let dur = s.end_unix_nano.saturating_sub(s.start_unix_nano);
        // The bar: the span clamped to [t0, t1], in 128-bit arithmetic (`off * w` overflows
        // u64 for offsets past u64::MAX / w).
        let from = u128::from(s.start_unix_nano.clamp(t0, t1)) - t0w;
        let to = u128::from(s.end_unix_nano.clamp(t0, t1)) - t0w;
        let a = (from * w / totalw).min(w - 1);
        let b = (to * w).div_ceil(totalw).clamp(a + 1, w);
        let bar: String = (0..w)
            .map(|c| if c >= a && c < b { '█' } else { '·' })
            .collect();
        let mut label = format!("{}{}{}", r.prefix, Visible(&s.name), kind_label(s.kind));
        let pad = name_w.saturating_sub(label.chars().count());
        label.push_str(&" ".repeat(pad));
        let svc: String = Visible(&s.service)
            .to_string()
            .chars()
            .take(svc_w)
            .collect();
        let (c0, c1) = if s.status == StatusCode::Error {
            (red, reset)
        } else {
            ("", "")
        };
        let mut line = format!(
            "  {dim}{:>9}{reset} {:>9}  {svc:<svc_w$}  {c0}{label}{c1}  {c0}{bar}{c1}",
            fmt_dur(off),
            fmt_dur(dur),
        );
        if s.status == StatusCode::Error {
            let msg = if s.status_message.is_empty() {
                "error"
            } else {
                s.status_message.as_str()
            };
            let _ = write!(line, "  {red}✗ {}{reset}", Visible(msg));
        }
        if let Some(p) = s.parent_span_id.filter(|p| !ids.contains(p)) {
            let _ = write!(line, "  {dim}↑ parent {p} not in input{reset}");
        }
        if r.cycle {
            let p = s.parent_span_id.unwrap_or(s.span_id);
            let _ = write!(line, "  {dim}↺ parent {p} forms a cycle{reset}");
        }
        if absurd(s) {
            let _ = write!(line, "  {dim}⚠ time out of range, bar clamped{reset}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        // The error and warning lines the function logged under this span (`--logs events`).
        let logs: Vec<(&str, &str)> = s.events.iter().filter_map(warning_log).collect();
        let indent = " ".repeat(r.prefix.chars().count() + 3);
        for (level, message) in logs.iter().take(MAX_LOG_ROWS) {
            let first = message.lines().next().unwrap_or("");
            let text: String = Visible(first).to_string().chars().take(160).collect();
            let _ = writeln!(
                out,
                "  {:>9} {:>9}  {:svc_w$}  {indent}{c}! {} {text}{reset}",
                "",
                "",
                "",
                Visible(level),
                c = if is_error_level(level) { red } else { dim },
            );
        }
        if logs.len() > MAX_LOG_ROWS {
            let _ = writeln!(
                out,
                "  {:>9} {:>9}  {:svc_w$}  {indent}{dim}! … {} more{reset}",
                "",
                "",
                "",
                logs.len() - MAX_LOG_ROWS
            );
        }
    }
    out
}

/// Most log lines drawn under one span.
const MAX_LOG_ROWS: usize = 8;

fn is_error_level(level: &str) -> bool {
    matches!(
        level.to_ascii_uppercase().as_str(),
        "ERROR" | "FATAL" | "CRITICAL"
    )
}

/// A `log` event of level error or warning: (level, message).
fn warning_log(e: &crate::convert::assemble::Event) -> Option<(&str, &str)> {
    use crate::convert::assemble::AnyValue;
    if e.name != "log" {
        return None;
    }
    let attr = |k: &str| {
        e.attributes.iter().find_map(|kv| match &kv.value {
            AnyValue::Str(v) if kv.key == k => Some(v.as_str()),
            _ => None,
        })
    };
    let level = attr("level")?;
    let warn =
        is_error_level(level) || matches!(level.to_ascii_uppercase().as_str(), "WARN" | "WARNING");
    warn.then(|| (level, attr("message").unwrap_or("")))
}

/// The span's fields, with the log lines kept beside it (`--logs otlp`) as the `log` events
/// `--logs events` would have put on it, so both draw the same.
fn data_with_logs(s: &crate::convert::assemble::Span) -> Span {
    use crate::convert::assemble::{Event, KeyValue};
    let mut d = s.data();
    d.events.extend(s.logs().iter().map(|l| {
        let mut attributes = vec![KeyValue::str("message", l.message.to_string())];
        if !l.level.is_empty() {
            attributes.push(KeyValue::str("level", l.level.to_string()));
        }
        Event {
            time_unix_nano: l.time_unix_nano,
            name: "log".to_owned(),
            attributes,
        }
    }));
    d
}

/// What the terminal sink holds for one trace.
#[derive(Debug)]
struct Held {
    spans: Vec<crate::convert::assemble::Span>,
    bytes: usize,
    last: std::time::Instant,
    drawn_before: bool,
}

/// Draws traces on a terminal (or any writer), each once it is complete (see the module
/// documentation). Memory is bounded by `max_held_bytes`.
pub struct TerminalSink {
    out: Box<dyn std::io::Write + Send>,
    style: Style,
    follow: Option<std::time::Duration>,
    traces: HashMap<crate::span_line::TraceId, Held>,
    order: std::collections::VecDeque<crate::span_line::TraceId>,
    held_bytes: usize,
    max_held_bytes: usize,
    /// Traces already drawn (bounded), so that later spans of one are marked as a continuation.
    drawn: std::collections::HashSet<crate::span_line::TraceId>,
    drawn_order: std::collections::VecDeque<crate::span_line::TraceId>,
    /// Traces drawn before the input ended because the bound was reached.
    pub drawn_early: u64,
}

impl std::fmt::Debug for TerminalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalSink")
            .field("follow", &self.follow)
            .field("traces", &self.traces.len())
            .field("held_bytes", &self.held_bytes)
            .finish()
    }
}

/// Bytes of spans the terminal sink holds before it draws the oldest traces early.
pub const DEFAULT_MAX_HELD_BYTES: usize = 8 << 20;

/// Traces remembered as drawn, so that a later span of one is drawn as its continuation.
pub const DRAWN_REMEMBERED: usize = 16_384;

const SPAN_SIZE: usize = std::mem::size_of::<crate::convert::assemble::Span>();

/// What holding one trace costs besides its spans: its entry in the drawing order and in the
/// table, four times over (a hash table whose entries come and go in FIFO order can be a
/// quarter full: its tombstones make it grow, and while it grows the old table is alive too).
const TRACE_OVERHEAD: usize = 4
    * (std::mem::size_of::<crate::span_line::TraceId>() + std::mem::size_of::<Held>() + 1)
    + std::mem::size_of::<crate::span_line::TraceId>();

impl TerminalSink {
    /// Draws to `out`. `follow`: draw a trace once it has been quiet that long (`tail`);
    /// `None`: at the end of the input (or when the bound is reached).
    pub fn new(
        out: Box<dyn std::io::Write + Send>,
        style: Style,
        follow: Option<std::time::Duration>,
    ) -> Self {
        TerminalSink {
            out,
            style,
            follow,
            traces: HashMap::new(),
            order: std::collections::VecDeque::new(),
            held_bytes: 0,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            drawn: std::collections::HashSet::new(),
            drawn_order: std::collections::VecDeque::new(),
            drawn_early: 0,
        }
    }

    /// Sets the memory bound.
    pub fn max_held_bytes(mut self, n: usize) -> Self {
        self.max_held_bytes = n.max(1);
        self
    }

    fn draw(&mut self, id: crate::span_line::TraceId) -> std::io::Result<()> {
        let Some(h) = self.traces.remove(&id) else {
            return Ok(());
        };
        self.held_bytes = self.held_bytes.saturating_sub(h.bytes);
        if self.drawn.insert(id) {
            self.drawn_order.push_back(id);
            if self.drawn_order.len() > DRAWN_REMEMBERED {
                if let Some(old) = self.drawn_order.pop_front() {
                    self.drawn.remove(&old);
                }
            }
        }
        let data: Vec<Span> = h.spans.iter().map(data_with_logs).collect();
        let mut text = render_trace(&data, self.style);
        if h.drawn_before {
            if let Some(nl) = text.find('\n') {
                text.insert_str(nl, " (continued)");
            }
        }
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }

    fn draw_where(&mut self, mut pick: impl FnMut(&Held) -> bool) -> std::io::Result<()> {
        let ids: Vec<crate::span_line::TraceId> = self
            .order
            .iter()
            .filter(|id| self.traces.get(id).is_some_and(&mut pick))
            .copied()
            .collect();
        for id in &ids {
            self.draw(*id)?;
        }
        self.order.retain(|id| self.traces.contains_key(id));
        Ok(())
    }

    /// Draws what is due: traces quiet for the follow delay; the oldest traces while over the
    /// memory bound.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        if let Some(quiet) = self.follow {
            let now = std::time::Instant::now();
            self.draw_where(|h| now.duration_since(h.last) >= quiet)?;
        }
        while self.held_bytes > self.max_held_bytes {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            if self.traces.contains_key(&id) {
                self.drawn_early += 1;
                self.draw(id)?;
            }
        }
        Ok(())
    }
}

impl super::Sink for TerminalSink {
    async fn send(
        &mut self,
        spans: &[crate::convert::assemble::Span],
    ) -> Result<super::Delivery, SinkError> {
        let now = std::time::Instant::now();
        for s in spans {
            let drawn_before = self.drawn.contains(&s.trace_id);
            let h = self.traces.entry(s.trace_id).or_insert_with(|| Held {
                spans: Vec::with_capacity(1),
                bytes: 0,
                last: now,
                drawn_before,
            });
            let mut size = s.heap_size();
            if h.spans.is_empty() {
                self.order.push_back(s.trace_id);
                size += TRACE_OVERHEAD + h.spans.capacity() * SPAN_SIZE;
            }
            let capacity = h.spans.capacity();
            h.spans.push(s.clone());
            size += (h.spans.capacity() - capacity) * SPAN_SIZE;
            h.bytes += size;
            h.last = now;
            self.held_bytes += size;
        }
        self.tick()?;
        Ok(super::Delivery {
            accepted: spans.len() as u64,
            rejected: 0,
            message: None,
            attempts: 1,
            ..Default::default()
        })
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        self.draw_where(|_| true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_line::TraceId;
    use proptest::prelude::*;

    fn span(id: u8, parent: Option<u8>, start: u64, end: u64, name: &str) -> Span {
        Span {
            trace_id: TraceId([9; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            name: name.into(),
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: start,
            end_unix_nano: end,
            attributes: vec![],
            events: vec![],
            links: vec![],
            service: "svc".into(),
            resource: vec![],
            dropped: (0, 0, 0),
        }
    }

    #[test]
    fn draws_a_tree_with_bars_and_errors() {
        let mut child = span(2, Some(1), 2_000_000, 6_000_000, "child");
        child.status = StatusCode::Error;
        child.status_message = "timeout".into();
        let spans = vec![
            span(1, None, 0, 10_000_000, "root"),
            child,
            span(3, Some(1), 6_000_000, 9_000_000, "second"),
        ];
        let text = render_trace(
            &spans,
            Style {
                color: false,
                bar_width: 10,
            },
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("3 spans · 10.00ms · svc · 1 error"),
            "{text}"
        );
        assert!(
            lines[1].contains("root") && lines[1].contains("██████████"),
            "{text}"
        );
        assert!(
            lines[2].contains("├─ child")
                && lines[2].contains("··████····")
                && lines[2].contains("✗ timeout"),
            "{text}"
        );
        assert!(
            lines[3].contains("└─ second") && lines[3].contains("······███·"),
            "{text}"
        );
    }

    fn plain(bar_width: usize) -> Style {
        Style {
            color: false,
            bar_width,
        }
    }

    /// The rows of a rendering (the header line left out).
    fn rows_of(text: &str) -> Vec<&str> {
        text.lines().skip(1).collect()
    }

    /// The bar of a row: the run of `█` and `·` characters.
    fn bar(row: &str) -> String {
        row.chars().filter(|c| matches!(c, '█' | '·')).collect()
    }

    #[test]
    fn a_start_at_the_end_of_time_is_drawn_clamped_and_marked() {
        // `SPLN1 … 18446744073709552 …`: µs → ns saturates at u64::MAX, and `t0 + 1` wrapped
        // to 0, which divided by zero.
        let text = render_trace(&[span(1, None, u64::MAX, u64::MAX, "late")], plain(10));
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 1, "{text}");
        assert!(
            rows[0].contains("late") && rows[0].contains("time out of range"),
            "{text}"
        );
        assert_eq!(bar(rows[0]).chars().count(), 10, "{text}");
        // Beside a normal span, it does not flatten the normal span's bar.
        let spans = [
            span(1, None, 1_000, 11_000, "root"),
            span(2, Some(1), u64::MAX, u64::MAX, "late"),
        ];
        let text = render_trace(&spans, plain(10));
        let rows = rows_of(&text);
        assert_eq!(rows.len(), 2, "{text}");
        assert!(text.lines().next().unwrap().contains("· 10µs ·"), "{text}");
        assert_eq!(bar(rows[0]), "██████████", "{text}");
        assert_eq!(bar(rows[1]), "·········█", "{text}");
        assert!(rows[1].contains("time out of range"), "{text}");
        assert!(!rows[0].contains("time out of range"), "{text}");
    }

    #[test]
    fn bars_of_spans_far_apart_do_not_wrap() {
        // `off * w` overflowed u64 for offsets above u64::MAX / w.
        let far = 9_000_000_000_000_000_000;
        let spans = [
            span(1, None, 0, 1_000, "first"),
            span(2, None, far, far + 1_000, "second"),
        ];
        let text = render_trace(&spans, plain(40));
        let rows = rows_of(&text);
        assert_eq!(bar(rows[0]), format!("█{}", "·".repeat(39)), "{text}");
        assert_eq!(bar(rows[1]), format!("{}█", "·".repeat(39)), "{text}");
        assert!(!text.contains("out of range"), "{text}");
        // Backwards spans (end before start) are marked too, and never panic.
        let text = render_trace(&[span(1, None, 5_000, 1_000, "backwards")], plain(10));
        assert!(text.contains("time out of range"), "{text}");
    }

    #[test]
    fn a_deep_chain_keeps_every_row_and_bounded_output() {
        // Every row used to carry its full prefix: quadratic memory and output.
        let depth = 3_000;
        let spans: Vec<Span> = (0..depth)
            .map(|i| {
                let mut s = span(0, None, i as u64, 10_000, &format!("s{i}"));
                s.span_id = SpanId((i as u64 + 1).to_be_bytes());
                s.parent_span_id = (i > 0).then(|| SpanId((i as u64).to_be_bytes()));
                s
            })
            .collect();
        let text = render_trace(&spans, plain(10));
        let rows = rows_of(&text);
        assert_eq!(rows.len(), depth, "rows");
        assert!(text.len() < depth * 400, "{} bytes", text.len());
        let deepest = rows.last().unwrap();
        // The last span is at depth `depth - 1`: its ancestors below the root beyond the cap.
        let hidden = depth - 2 - MAX_DRAWN_DEPTH;
        assert!(
            deepest.contains(&format!("…{hidden} └─ s{}", depth - 1)),
            "{deepest}"
        );
        // Rows above the cap are drawn as before.
        assert!(rows[3].contains("      └─ s3"), "{}", rows[3]);
    }

    #[test]
    fn cycles_and_self_parents_are_drawn_as_marked_roots() {
        let spans = [
            span(1, None, 0, 10_000, "root"),
            span(2, Some(2), 1_000, 2_000, "self"),
            span(3, Some(4), 2_000, 3_000, "a"),
            span(4, Some(3), 3_000, 4_000, "b"),
        ];
        let text = render_trace(&spans, plain(10));
        let rows = rows_of(&text);
        assert!(
            text.starts_with(&format!("trace {} · 4 spans", TraceId([9; 16]))),
            "{text}"
        );
        assert_eq!(rows.len(), 4, "{text}");
        assert!(rows[0].contains("root") && !rows[0].contains('↺'), "{text}");
        assert!(
            rows[1].contains("self") && rows[1].contains("↺ parent 0202020202020202 forms a cycle"),
            "{text}"
        );
        assert!(
            rows[2].contains(" a ") && rows[2].contains("↺ parent 0404040404040404 forms a cycle"),
            "{text}"
        );
        assert!(rows[3].contains("└─ b") && !rows[3].contains('↺'), "{text}");
    }

    #[test]
    fn untrusted_strings_are_drawn_visible() {
        let mut s = span(1, None, 0, 1_000, "name\u{1b}]0;pwned\u{7}");
        s.service = "svc\u{9b}2J".into();
        s.status = StatusCode::Error;
        s.status_message = "boom\u{1b}[2J\nnext".into();
        for color in [false, true] {
            let text = render_trace(
                std::slice::from_ref(&s),
                Style {
                    color,
                    bar_width: 10,
                },
            );
            assert!(text.contains("name\\x1b]0;pwned\\x07"), "{text}");
            assert!(text.contains("svc\\u{9b}2J"), "{text}");
            assert!(text.contains("boom\\x1b[2J\\x0anext"), "{text}");
            assert_eq!(text.lines().count(), 2, "{text}");
            assert_eq!(stray_controls(&text), Vec::<char>::new(), "{text}");
        }
    }

    /// Control characters in `text` other than `\n` and the renderer's own SGR sequences.
    fn stray_controls(text: &str) -> Vec<char> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' && chars.peek() == Some(&'[') {
                chars.next();
                let mut body = String::new();
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                    body.push(d);
                }
                if !["0", "1", "2", "31"].contains(&body.as_str()) {
                    out.push(c);
                }
                continue;
            }
            let code = u32::from(c);
            if c != '\n' && (code < 0x20 || code == 0x7f || (0x80..0xa0).contains(&code)) {
                out.push(c);
            }
        }
        out
    }

    fn any_span() -> impl Strategy<Value = Span> {
        let text = "(\\PC|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]){0,12}";
        (
            (0u8..6, proptest::option::of(0u8..7)),
            (any::<u64>(), any::<u64>(), 0u64..3_000_000_000),
            (text, text, text),
            any::<bool>(),
        )
            .prop_map(
                |((id, parent), (start, end, short), (name, service, msg), err)| {
                    let mut s = span(id + 1, parent.map(|p| p + 1), start, end, &name);
                    if start % 3 == 0 {
                        // Mostly sensible traces too: a start near the others, a short duration.
                        s.start_unix_nano = 1_700_000_000_000_000_000 + short;
                        s.end_unix_nano = s.start_unix_nano + short / 7;
                    }
                    s.service = service;
                    s.status_message = msg;
                    if err {
                        s.status = StatusCode::Error;
                    }
                    s
                },
            )
    }

    proptest! {
        #[test]
        fn any_spans_draw_one_clean_row_each(
            spans in proptest::collection::vec(any_span(), 1..24),
            color in any::<bool>(),
            bar_width in 1usize..50,
        ) {
            let text = render_trace(&spans, Style { color, bar_width });
            prop_assert_eq!(text.lines().count(), spans.len() + 1, "{}", text);
            prop_assert_eq!(stray_controls(&text), Vec::<char>::new(), "{}", text);
        }
    }
}
