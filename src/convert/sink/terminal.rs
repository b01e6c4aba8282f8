//! The default sink: a waterfall per trace in the terminal (tree, service, name, offset and
//! duration bars, errors highlighted), for when no backend is configured.
//!
//! [`TerminalSink`] holds spans by trace and draws each trace once: when the input ends, or
//! earlier when what it holds passes its memory bound (oldest traces first), or, when
//! following (`tail`), once a trace has been quiet for a moment. [`render_trace`] draws one.

use crate::convert::assemble::SpanData as Span;
use crate::convert::sink::SinkError;
use crate::span_line::{SpanId, SpanKind, StatusCode};
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

/// Renders one trace as text.
pub fn render_trace(spans: &[Span], style: Style) -> String {
    let mut out = String::new();
    if spans.is_empty() {
        return out;
    }
    let t0 = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.end_unix_nano)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let total = t1 - t0;
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<Option<SpanId>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s.parent_span_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(i);
    }
    for v in children.values_mut() {
        v.sort_by_key(|&i| (spans[i].start_unix_nano, spans[i].name.clone()));
    }
    let mut services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
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
    // Depth-first walk; an explicit stack keeps deep traces from overflowing the real one.
    let mut rows: Vec<(usize, String)> = Vec::new();
    let mut stack: Vec<(usize, String, bool)> = children
        .get(&None)
        .map(|r| r.iter().rev().map(|&i| (i, String::new(), true)).collect())
        .unwrap_or_default();
    let mut first_level = true;
    while let Some((i, prefix, is_root)) = stack.pop() {
        let s = &spans[i];
        let kids = children.get(&Some(s.span_id)).cloned().unwrap_or_default();
        rows.push((i, prefix.clone()));
        let _ = first_level;
        first_level = false;
        let n = kids.len();
        for (k, &c) in kids.iter().enumerate().rev() {
            let last = k + 1 == n;
            let base = if is_root {
                String::new()
            } else {
                prefix.replace("└─ ", "   ").replace("├─ ", "│  ")
            };
            let p = format!("{base}{}", if last { "└─ " } else { "├─ " });
            stack.push((c, p, false));
        }
    }
    let name_w = rows
        .iter()
        .map(|(i, p)| {
            p.chars().count() + spans[*i].name.chars().count() + kind_label(spans[*i].kind).len()
        })
        .max()
        .unwrap_or(10)
        .clamp(10, 60);
    for (i, prefix) in rows {
        let s = &spans[i];
        let off = s.start_unix_nano.saturating_sub(t0);
        let dur = s.end_unix_nano.saturating_sub(s.start_unix_nano);
        let w = style.bar_width as u64;
        let a = (off * w / total).min(w - 1) as usize;
        let b = (((off + dur) * w).div_ceil(total)).clamp(a as u64 + 1, w) as usize;
        let bar: String = (0..style.bar_width)
            .map(|c| if c >= a && c < b { '█' } else { '·' })
            .collect();
        let mut label = format!("{prefix}{}{}", s.name, kind_label(s.kind));
        let pad = name_w.saturating_sub(label.chars().count());
        label.push_str(&" ".repeat(pad));
        let svc: String = s.service.chars().take(svc_w).collect();
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
            let _ = write!(line, "  {red}✗ {msg}{reset}");
        }
        if let Some(p) = s.parent_span_id.filter(|p| !ids.contains(p)) {
            let _ = write!(line, "  {dim}↑ parent {p} not in input{reset}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
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
pub const DEFAULT_MAX_HELD_BYTES: usize = 16 << 20;

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
            if self.drawn_order.len() > 65_536 {
                if let Some(old) = self.drawn_order.pop_front() {
                    self.drawn.remove(&old);
                }
            }
        }
        let data: Vec<Span> = h.spans.iter().map(|s| s.data()).collect();
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
            let size = s.heap_size() + std::mem::size_of::<crate::convert::assemble::Span>();
            let drawn_before = self.drawn.contains(&s.trace_id);
            let h = self.traces.entry(s.trace_id).or_insert_with(|| Held {
                spans: Vec::new(),
                bytes: 0,
                last: now,
                drawn_before,
            });
            if h.spans.is_empty() {
                self.order.push_back(s.trace_id);
            }
            h.spans.push(s.clone());
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
}
