//! `Tracer` and `Span`: the OpenTracing vocabulary over the span line encoder.

use super::clock::{new_span_id, new_trace_id, now_us};
use super::output::{Output, StdoutOutput};
use super::SpanContext;
use crate::span_line::encode::{fixed_len, write_open_record, write_resource_str, write_service};
use crate::span_line::{
    BatchEncoder, SpanEncoder, SpanHead, SpanId, SpanKind, StatusCode, TraceId, Value, MAX_LINKS,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Longest constant suffix (service and resource attributes) a tracer adds to every line.
const MAX_SUFFIX: usize = 1024;
/// Most scratch buffers a thread keeps for reuse.
const POOL_SIZE: usize = 32;

/// Per-span buffers, recycled through a per-thread pool so that spans do not allocate.
#[derive(Default)]
struct Scratch {
    enc: SpanEncoder,
    name: String,
    request_id: String,
    has_request_id: bool,
    message: String,
    has_message: bool,
    line: Vec<u8>,
}

thread_local! {
    // Boxed so that a `Span` moves a pointer, not the buffers' headers.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Scratch>>> = const { RefCell::new(Vec::new()) };
}

fn take_scratch() -> Box<Scratch> {
    POOL.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn give_back(s: Box<Scratch>) {
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_SIZE {
            p.push(s);
        }
    });
}

struct BatchState {
    enc: BatchEncoder,
    line: Vec<u8>,
}

/// Says on stderr that resource attributes were dropped (bytes built by hand: `eprintln!` would
/// link formatting code into every binary for this one message).
#[cold]
#[inline(never)]
fn report_dropped_resources(dropped: usize) {
    let mut msg = Vec::with_capacity(128);
    msg.extend_from_slice(b"spanline: ");
    msg.extend_from_slice(itoa::Buffer::new().format(dropped).as_bytes());
    msg.extend_from_slice(b" resource attributes dropped: they would take more than ");
    msg.extend_from_slice(itoa::Buffer::new().format(MAX_SUFFIX).as_bytes());
    msg.extend_from_slice(b" bytes of every line\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), &msg);
}

fn error_kind(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::BrokenPipe => "broken pipe",
        K::WouldBlock => "would block",
        K::Interrupted => "interrupted",
        K::WriteZero => "write zero",
        K::PermissionDenied => "permission denied",
        K::NotFound => "not found",
        _ => "I/O error",
    }
}

struct Inner {
    enabled: bool,
    service: Option<String>,
    suffix: Vec<u8>,
    output: Box<dyn Output>,
    batch: Option<Mutex<BatchState>>,
    failures: AtomicU64,
    reported: AtomicBool,
}

impl Inner {
    #[inline]
    fn write(&self, line: &[u8]) {
        if let Err(e) = self.output.write_line(line) {
            self.write_failed(&e);
        }
    }

    /// Counts a failed write and reports the first one on stderr. Cold and out of line: the
    /// hot path stays small.
    #[cold]
    #[inline(never)]
    fn write_failed(&self, e: &std::io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.reported.swap(true, Ordering::Relaxed) {
            // The error's kind, without the formatting machinery (kept out of the binary).
            let mut msg = Vec::with_capacity(128);
            msg.extend_from_slice(b"spanline: could not write a span line (");
            msg.extend_from_slice(error_kind(e).as_bytes());
            msg.extend_from_slice(b"); further failures are counted silently\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &msg);
        }
    }

    fn flush_batch(&self, state: &mut BatchState) {
        if state.enc.is_empty() {
            return;
        }
        state.line.clear();
        state.enc.take(&mut state.line);
        state.line.push(b'\n');
        self.write(&state.line);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(b) = &self.batch {
            if let Ok(mut state) = b.lock() {
                let state = &mut *state;
                self.flush_batch(state);
            }
        }
    }
}

/// Creates spans and writes their lines. Configure once per process; cloning is cheap and
/// clones share configuration, output and counters.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.inner.enabled)
            .field("service", &self.inner.service)
            .field("batch", &self.inner.batch.is_some())
            .finish()
    }
}

/// Configures a [`Tracer`].
pub struct TracerBuilder {
    enabled: bool,
    service: Option<String>,
    emit_service: bool,
    resource: Vec<(String, String)>,
    output: Box<dyn Output>,
    batch: bool,
}

impl Default for TracerBuilder {
    fn default() -> Self {
        TracerBuilder {
            enabled: true,
            service: None,
            emit_service: false,
            resource: Vec::new(),
            output: Box::new(StdoutOutput),
            batch: false,
        }
    }
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-encoded as in W3C baggage).
fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TracerBuilder {
    /// Reads the standard environment: `OTEL_SERVICE_NAME` (written into every line), else
    /// `service.name` from `OTEL_RESOURCE_ATTRIBUTES` (written too), else
    /// `AWS_LAMBDA_FUNCTION_NAME` (not written: the converter derives it from the log group);
    /// `OTEL_RESOURCE_ATTRIBUTES` (written as `+` fields); `OTEL_SDK_DISABLED=true` turns the
    /// tracer off; `SPANLINE_BATCH=true` turns on batch records.
    pub fn from_env(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut resource = var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|t| parse_resource_attributes(&t))
            .unwrap_or_default();
        let resource_service = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        if let Some(s) = var("OTEL_SERVICE_NAME").or(resource_service) {
            self = self.service(s);
        } else if let Some(f) = var("AWS_LAMBDA_FUNCTION_NAME") {
            self.service = Some(f);
            self.emit_service = false;
        }
        self.resource.extend(resource);
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.enabled = false;
        }
        if var("SPANLINE_BATCH").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            self.batch = true;
        }
        self
    }

    /// Sets the service name and writes it into every line (`*s=`).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self.emit_service = true;
        self
    }

    /// Adds a string resource attribute written into every line (`+key=value`).
    pub fn resource(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// Where lines go (stdout by default).
    pub fn output(mut self, output: impl Output) -> Self {
        self.output = Box::new(output);
        self
    }

    /// Batch records: spans of one trace are written together when the span carrying the
    /// request id (the invocation's span) finishes, on [`Tracer::flush`], when a span of another
    /// trace or request arrives, when the batch is full, and when the tracer is dropped. Fewer
    /// bytes, but a crash or timeout loses the spans not yet flushed: call [`Tracer::flush`] at
    /// the end of each invocation if no span carries a request id.
    pub fn batch(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// Turns the tracer off entirely (spans still propagate context).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Builds the tracer.
    pub fn build(self) -> Tracer {
        let mut suffix = Vec::new();
        if self.emit_service {
            if let Some(s) = &self.service {
                write_service(&mut suffix, s);
            }
        }
        let mut dropped = 0;
        for (k, v) in &self.resource {
            let mark = suffix.len();
            write_resource_str(&mut suffix, k, v);
            if suffix.len() > MAX_SUFFIX {
                suffix.truncate(mark);
                dropped += 1;
            }
        }
        if dropped > 0 {
            report_dropped_resources(dropped);
        }
        Tracer {
            inner: Arc::new(Inner {
                enabled: self.enabled,
                service: self.service,
                suffix,
                output: self.output,
                batch: self.batch.then(|| {
                    Mutex::new(BatchState {
                        enc: BatchEncoder::new(),
                        line: Vec::new(),
                    })
                }),
                failures: AtomicU64::new(0),
                reported: AtomicBool::new(false),
            }),
        }
    }
}

impl Tracer {
    /// A builder with defaults: stdout, no service override, span records.
    pub fn builder() -> TracerBuilder {
        TracerBuilder::default()
    }

    /// A tracer configured from the environment (see [`TracerBuilder::from_env`]).
    pub fn from_env() -> Tracer {
        Tracer::builder().from_env().build()
    }

    /// The service name, if configured.
    pub fn service(&self) -> Option<&str> {
        self.inner.service.as_deref()
    }

    /// How many lines could not be written.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Starts building a span named `name`.
    pub fn span<'a>(&'a self, name: &'a str) -> SpanBuilder<'a> {
        SpanBuilder {
            tracer: self,
            name,
            parent: None,
            kind: SpanKind::Internal,
            links: [None; MAX_LINKS],
            dropped_links: 0,
            request_id: None,
            start_us: None,
            announce: false,
        }
    }

    /// Starts a root span (or, with [`Tracer::span`], a child).
    pub fn start(&self, name: &str) -> Span {
        self.span(name).start()
    }

    /// Writes the pending batch record, if any (call at the end of an invocation in batch mode;
    /// a no-op otherwise).
    pub fn flush(&self) {
        if let Some(b) = &self.inner.batch {
            if let Ok(mut state) = b.lock() {
                self.inner.flush_batch(&mut state);
            }
        }
    }
}

/// Options for a span before it starts (OpenTracing `startSpan(name, options)`).
pub struct SpanBuilder<'a> {
    tracer: &'a Tracer,
    name: &'a str,
    parent: Option<&'a SpanContext>,
    kind: SpanKind,
    links: [Option<(TraceId, SpanId)>; MAX_LINKS],
    dropped_links: u32,
    request_id: Option<&'a str>,
    start_us: Option<u64>,
    announce: bool,
}

impl<'a> SpanBuilder<'a> {
    /// Child of a span in this process (OpenTracing `childOf`).
    pub fn child_of(mut self, parent: &'a Span) -> Self {
        self.parent = Some(&parent.ctx);
        self
    }

    /// Child of a context extracted from another process (OpenTracing `childOf(SpanContext)`).
    pub fn child_of_context(mut self, parent: &'a SpanContext) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Child of an extracted context when there is one, else a root span.
    pub fn child_of_opt(self, parent: Option<&'a SpanContext>) -> Self {
        match parent {
            Some(p) => self.child_of_context(p),
            None => self,
        }
    }

    /// A link to a span this one follows from (OpenTracing `followsFrom`).
    pub fn follows_from(mut self, ctx: &SpanContext) -> Self {
        match self.links.iter_mut().find(|l| l.is_none()) {
            Some(slot) => *slot = Some((ctx.trace_id, ctx.span_id)),
            None => self.dropped_links += 1,
        }
        self
    }

    /// Span kind (OpenTracing `span.kind` tag).
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    /// The Lambda request id of the invocation (`*r=`), e.g. from `lambda_runtime::Context`.
    pub fn request_id(mut self, id: &'a str) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Also writes an *open* record now, when the span starts (FORMAT.md, "Open records"), so
    /// that the span is known even if the process dies before it finishes. Use it for the
    /// invocation's entry span: a timed-out invocation then still joins its caller's trace.
    pub fn announce(mut self) -> Self {
        self.announce = true;
        self
    }

    /// An explicit start time, microseconds since the epoch.
    pub fn start_time_us(mut self, us: u64) -> Self {
        self.start_us = Some(us);
        self
    }

    /// Starts the span.
    pub fn start(self) -> Span {
        let (trace_id, parent, sampled, trace_state) = match self.parent {
            Some(p) => (
                p.trace_id,
                Some(p.span_id),
                p.sampled,
                p.trace_state.clone(),
            ),
            None => (new_trace_id(), None, true, None),
        };
        let ctx = SpanContext {
            trace_id,
            span_id: new_span_id(),
            sampled,
            trace_state,
        };
        let tracer = self.tracer.clone();
        let recording = sampled && tracer.inner.enabled;
        let scratch = recording.then(|| {
            let mut s = take_scratch();
            s.name.clear();
            s.name.push_str(self.name);
            s.request_id.clear();
            s.has_request_id = false;
            if let Some(r) = self.request_id {
                s.request_id.push_str(r);
                s.has_request_id = true;
            }
            s.message.clear();
            s.has_message = false;
            s.enc.reset(fixed_len(
                self.name,
                self.request_id,
                tracer.inner.suffix.len(),
            ));
            for (t, sp) in self.links.iter().flatten() {
                s.enc.link(*t, *sp);
            }
            for _ in 0..self.dropped_links {
                // Counted as dropped by the encoder (it is already full).
                s.enc.link(TraceId([1; 16]), SpanId([1; 8]));
            }
            s
        });
        let start_us = self.start_us.unwrap_or_else(now_us);
        let mut scratch = scratch;
        if let (true, Some(s)) = (self.announce, scratch.as_mut()) {
            let head = SpanHead {
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent,
                start_us,
                duration_us: 0,
                kind: self.kind,
                status: StatusCode::Unset,
                name: self.name,
            };
            s.line.clear();
            write_open_record(&mut s.line, &head, self.request_id, &tracer.inner.suffix);
            s.line.push(b'\n');
            tracer.inner.write(&s.line);
        }
        Span {
            tracer,
            ctx,
            parent,
            start_us,
            kind: self.kind,
            status: StatusCode::Unset,
            scratch,
        }
    }
}

/// A span in progress. Finishes on [`Span::finish`] or when dropped.
pub struct Span {
    tracer: Tracer,
    ctx: SpanContext,
    parent: Option<SpanId>,
    start_us: u64,
    kind: SpanKind,
    status: StatusCode,
    scratch: Option<Box<Scratch>>,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.ctx)
            .field("parent", &self.parent)
            .field("recording", &self.scratch.is_some())
            .finish()
    }
}

impl Span {
    /// The context to propagate (inject) or to parent other spans with.
    pub fn context(&self) -> &SpanContext {
        &self.ctx
    }

    /// Whether this span will print a line (false when unsampled or the tracer is disabled).
    pub fn is_recording(&self) -> bool {
        self.scratch.is_some()
    }

    /// Starts a child of this span.
    pub fn child<'a>(&'a self, name: &'a str) -> SpanBuilder<'a> {
        self.tracer.span(name).child_of(self)
    }

    /// Sets a tag (OpenTracing `setTag`). `error=true` sets the error status and `span.kind`
    /// sets the kind instead of adding attributes, as OpenTracing defines.
    #[inline]
    pub fn set_tag<'v>(&mut self, key: &str, value: impl Into<Value<'v>>) -> &mut Self {
        let value = value.into();
        match (key, value) {
            ("error", Value::Bool(b)) => {
                if b {
                    self.status = StatusCode::Error;
                }
            }
            ("span.kind", Value::Str(k)) if SpanKind::from_name(k).is_some() => {
                self.kind = SpanKind::from_name(k).unwrap_or(self.kind);
            }
            _ => {
                if let Some(s) = self.scratch.as_mut() {
                    s.enc.attr(key, value);
                }
            }
        }
        self
    }

    /// Sets the kind.
    pub fn set_kind(&mut self, kind: SpanKind) -> &mut Self {
        self.kind = kind;
        self
    }

    /// Renames the span (OpenTracing `setOperationName`).
    pub fn set_name(&mut self, name: &str) -> &mut Self {
        if let Some(s) = self.scratch.as_mut() {
            s.name.clear();
            s.name.push_str(name);
        }
        self
    }

    /// Marks the span failed with a message (status error + `*m=`).
    pub fn set_error(&mut self, message: &str) -> &mut Self {
        self.status = StatusCode::Error;
        if let Some(s) = self.scratch.as_mut() {
            s.message.clear();
            s.message.push_str(message);
            s.has_message = true;
        }
        self
    }

    /// Marks the span explicitly successful.
    pub fn set_ok(&mut self) -> &mut Self {
        self.status = StatusCode::Ok;
        self
    }

    /// Records an event now (OpenTracing `logEvent(name)`).
    pub fn log_event(&mut self, name: &str) -> &mut Self {
        if let Some(s) = self.scratch.as_mut() {
            let offset = now_us() as i64 - self.start_us as i64;
            s.enc.event(offset, name);
        }
        self
    }

    /// Records an event with fields now.
    pub fn log_event_with(&mut self, name: &str, fields: &[(&str, Value<'_>)]) -> &mut Self {
        if let Some(s) = self.scratch.as_mut() {
            let offset = now_us() as i64 - self.start_us as i64;
            if s.enc.event(offset, name) {
                for (k, v) in fields {
                    s.enc.target_attr(k, *v);
                }
            }
        }
        self
    }

    /// OpenTracing `log(fields)`: the `event` field (if a string) names the event, the other
    /// fields become its attributes. An `event=error` log also sets the error status.
    pub fn log_fields(&mut self, fields: &[(&str, Value<'_>)]) -> &mut Self {
        let name = fields
            .iter()
            .find_map(|(k, v)| match (k, v) {
                (&"event", Value::Str(s)) => Some(*s),
                _ => None,
            })
            .unwrap_or("log");
        if name == "error" {
            self.status = StatusCode::Error;
        }
        if let Some(s) = self.scratch.as_mut() {
            let offset = now_us() as i64 - self.start_us as i64;
            if s.enc.event(offset, name) {
                for (k, v) in fields.iter().filter(|(k, _)| *k != "event") {
                    s.enc.target_attr(k, *v);
                }
            }
        }
        self
    }

    /// Finishes the span now and writes its line.
    pub fn finish(mut self) {
        self.finish_at(now_us());
    }

    fn finish_at(&mut self, end_us: u64) {
        let Some(mut s) = self.scratch.take() else {
            return;
        };
        let inner = &self.tracer.inner;
        let head = SpanHead {
            trace_id: self.ctx.trace_id,
            span_id: self.ctx.span_id,
            parent: self.parent,
            start_us: self.start_us,
            duration_us: end_us.saturating_sub(self.start_us),
            kind: self.kind,
            status: self.status,
            name: &s.name,
        };
        let message = s.has_message.then_some(s.message.as_str());
        let request_id = s.has_request_id.then_some(s.request_id.as_str());
        match &inner.batch {
            None => {
                let mut line = std::mem::take(&mut s.line);
                line.clear();
                s.enc
                    .write_record(&mut line, &head, message, request_id, &inner.suffix);
                line.push(b'\n');
                inner.write(&line);
                s.line = line;
            }
            Some(batch) => {
                if let Ok(mut state) = batch.lock() {
                    let state = &mut *state;
                    if state.enc.trace_id() != Some(head.trace_id) {
                        inner.flush_batch(state);
                    }
                    // Request ids travel in the entries (`*r=`): usually only the invocation's
                    // span carries one, and it finishes last.
                    if state.enc.is_empty() {
                        state
                            .enc
                            .begin(head.trace_id, head.start_us, None, &inner.suffix);
                    }
                    if !state.enc.push(&head, &s.enc, message, request_id) {
                        inner.flush_batch(state);
                        state
                            .enc
                            .begin(head.trace_id, head.start_us, None, &inner.suffix);
                        state.enc.push(&head, &s.enc, message, request_id);
                    }
                    // The invocation's span (the one carrying the request id) ends the
                    // invocation: flush before Lambda freezes the sandbox.
                    if request_id.is_some() {
                        inner.flush_batch(state);
                    }
                }
            }
        }
        give_back(s);
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.scratch.is_some() {
            self.finish_at(now_us());
        }
    }
}

static GLOBAL: OnceLock<Tracer> = OnceLock::new();

/// Installs the process-wide tracer (OpenTracing `initGlobalTracer`). Returns `false` when one
/// was already installed.
pub fn set_global(tracer: Tracer) -> bool {
    GLOBAL.set(tracer).is_ok()
}

/// The process-wide tracer; configured from the environment on first use if none was set.
pub fn global() -> &'static Tracer {
    GLOBAL.get_or_init(Tracer::from_env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::CaptureOutput;
    use crate::span_line::{decode, Record};

    fn capture() -> (Tracer, CaptureOutput) {
        let out = CaptureOutput::new();
        (Tracer::builder().output(out.clone()).build(), out)
    }

    #[test]
    fn child_span_carries_parent_and_trace() {
        let (t, out) = capture();
        let root = t.start("root");
        let mut child = root.child("child").kind(SpanKind::Client).start();
        child
            .set_tag("http.method", "POST")
            .set_tag("n", 3)
            .set_tag("error", true);
        child.log_event_with("retry", &[("attempt", Value::Int(2))]);
        let (root_ctx, child_ctx) = (root.context().clone(), child.context().clone());
        child.finish();
        root.finish();
        let lines = out.lines();
        assert_eq!(lines.len(), 2);
        let Record::Span(c) = decode(&lines[0]).unwrap() else {
            panic!()
        };
        assert_eq!(c.trace_id, root_ctx.trace_id);
        assert_eq!(c.span_id, child_ctx.span_id);
        assert_eq!(c.parent_span_id, Some(root_ctx.span_id));
        assert_eq!((c.kind, c.status), (SpanKind::Client, StatusCode::Error));
        assert_eq!(c.attributes().count(), 2);
        let ev: Vec<_> = c.events().collect();
        assert_eq!(ev[0].name.raw(), "retry");
        assert_eq!(ev[0].attributes().count(), 1);
        let Record::Span(r) = decode(&lines[1]).unwrap() else {
            panic!()
        };
        assert_eq!(r.parent_span_id, None);
        assert!(r.start_us <= c.start_us);
    }

    #[test]
    fn unsampled_context_prints_nothing_but_propagates() {
        let (t, out) = capture();
        let mut parent = SpanContext::new(TraceId([7; 16]), SpanId([8; 8]));
        parent.sampled = false;
        let span = t.span("x").child_of_context(&parent).start();
        assert!(!span.is_recording());
        assert_eq!(span.context().trace_id, parent.trace_id);
        assert!(!span.context().sampled);
        let child = span.child("y").start();
        drop(child);
        drop(span);
        assert_eq!(out.text(), "");
    }

    #[test]
    fn drop_finishes_and_service_and_resource_are_written() {
        let out = CaptureOutput::new();
        let t = Tracer::builder()
            .service("svc a")
            .resource("deployment.environment", "prod")
            .output(out.clone())
            .build();
        {
            let _s = t.span("op").request_id("req-1").start();
        }
        let line = out.lines().pop().unwrap();
        assert!(
            line.ends_with(" *r=req-1 *s=svc%20a +deployment.environment=prod;"),
            "{line}"
        );
    }

    #[test]
    fn batch_mode_writes_one_line_when_the_invocation_span_finishes() {
        let out = CaptureOutput::new();
        let t = Tracer::builder().batch(true).output(out.clone()).build();
        let root = t.span("handler").request_id("req-1").start();
        for _ in 0..10 {
            let mut c = root.child("service-egress").kind(SpanKind::Client).start();
            c.set_tag("http.method", "POST");
            c.finish();
        }
        assert_eq!(out.text(), "");
        root.finish();
        let lines = out.lines();
        assert_eq!(lines.len(), 1);
        let rec = decode(&lines[0]).unwrap();
        assert_eq!(rec.spans().count(), 11);
    }

    #[test]
    fn announced_span_writes_an_open_record_first() {
        let (t, out) = capture();
        let s = t
            .span("lambda-execution")
            .kind(SpanKind::Server)
            .request_id("r-1")
            .announce()
            .start();
        assert_eq!(out.lines().len(), 1);
        s.finish();
        let lines = out.lines();
        let Record::Span(open) = decode(&lines[0]).unwrap() else {
            panic!()
        };
        let Record::Span(done) = decode(&lines[1]).unwrap() else {
            panic!()
        };
        assert!(open.open && !done.open);
        assert_eq!(
            (open.span_id, open.start_us, open.kind),
            (done.span_id, done.start_us, done.kind)
        );
        assert_eq!(open.request_id.unwrap().raw(), "r-1");
    }

    #[test]
    fn disabled_tracer_prints_nothing() {
        let out = CaptureOutput::new();
        let t = Tracer::builder().enabled(false).output(out.clone()).build();
        t.start("x").finish();
        assert_eq!(out.text(), "");
    }

    #[test]
    fn write_failures_are_counted_not_raised() {
        struct Broken;
        impl Output for Broken {
            fn write_line(&self, _: &[u8]) -> std::io::Result<()> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
        }
        let t = Tracer::builder().output(Broken).build();
        t.start("a").finish();
        t.start("b").finish();
        assert_eq!(t.failures(), 2);
    }

    #[test]
    fn resource_attributes_parse_like_otel() {
        let r = parse_resource_attributes("a=1, b = x%20y ,bad,=novalue");
        assert_eq!(
            r,
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
    }
}
