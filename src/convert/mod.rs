//! The converter (feature `convert`): log records → span lines → spans → a sink.
//!
//! The data flows `source` → `parse` → `assemble` → `sink`; [`Summary`] counts every record
//! on the way, malformed lines by reason, so nothing is dropped silently.

pub mod assemble;
#[cfg(feature = "convert")]
pub mod aws;
pub mod aws_spans;
pub mod checkpoint;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod parse;
#[cfg(feature = "convert")]
pub mod pipeline;
pub mod platform;
pub mod printable;
pub mod proto;
pub mod record;
pub mod retry;
pub mod sample;
pub mod sink;
pub mod source;
pub mod time;

use crate::span_line::decode::{Attr as LineAttr, AttrValue};
use crate::span_line::{DecodeErrorKind, SpanKind};
use assemble::invocation::{resource_attributes, ReportFigures};
use assemble::span::write_line_body;
use assemble::{
    Assembler, Ending, GroupId, KeyValue, Limits, RequestId, RequestKey, RequestRef, Resource,
    ServiceMap, Span,
};
use parse::{parse_text_with, unwrap_message, Message, Parsed};
use platform::Platform;
use record::RecordBatch;
use record::{LogRecord, LogRecordRef};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// What a conversion saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Log records read.
    pub records: u64,
    /// Records that carried a span or batch record.
    pub span_lines: u64,
    /// Lambda platform lines (START, END, REPORT, timeouts, crashes).
    pub platform_lines: u64,
    /// Invocation spans built from platform lines.
    pub invocations: u64,
    /// Spans produced (after de-duplication), invocation spans included.
    pub spans: u64,
    /// Spans seen twice and dropped.
    pub duplicates: u64,
    /// Records that were neither span lines nor platform lines.
    pub foreign: u64,
    /// Span lines that could not be decoded, by reason code.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Bounds that were reached, by name: what happened at each is in the README ("Limits").
    pub limits: BTreeMap<&'static str, u64>,
    /// The function's log lines put on spans (`--logs events` or `otlp`).
    pub log_lines: u64,
    /// Log lines of no invocation being assembled (not put on a span).
    pub logs_unplaced: u64,
}

impl Summary {
    /// Total malformed span lines.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }

    /// Counts a bound that was reached.
    pub fn limit_hit(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.limits.entry(name).or_default() += n;
        }
    }

    /// Adds the counts of `other` (another converter's, e.g. of another log group).
    pub fn add(&mut self, other: &Summary) {
        self.records += other.records;
        self.span_lines += other.span_lines;
        self.platform_lines += other.platform_lines;
        self.invocations += other.invocations;
        self.spans += other.spans;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        self.log_lines += other.log_lines;
        self.logs_unplaced += other.logs_unplaced;
        for (k, v) in &other.malformed {
            *self.malformed.entry(k).or_default() += v;
        }
        for (k, v) in &other.limits {
            *self.limits.entry(k).or_default() += v;
        }
    }

    /// One human line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} records, {} span lines, {} platform lines, {} spans ({} invocations), {} duplicates, {} other lines, {} malformed",
            self.records,
            self.span_lines,
            self.platform_lines,
            self.spans,
            self.invocations,
            self.duplicates,
            self.foreign,
            self.malformed_total()
        );
        if !self.malformed.is_empty() {
            let reasons: Vec<String> = self
                .malformed
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s.push_str(&format!(" ({})", reasons.join(", ")));
        }
        if self.log_lines + self.logs_unplaced > 0 {
            s.push_str(&format!(
                "; {} log lines on spans, {} outside an invocation",
                self.log_lines, self.logs_unplaced
            ));
        }
        if !self.limits.is_empty() {
            let hits: Vec<String> = self
                .limits
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s.push_str(&format!("; limits reached: {}", hits.join(", ")));
        }
        s
    }
}

/// Prebuilt finders for the substrings without which a message is neither a span line nor a
/// platform line (see [`surely_foreign`]).
struct Needles {
    marker: memchr::memmem::Finder<'static>,
    timeout: memchr::memmem::Finder<'static>,
    exited: memchr::memmem::Finder<'static>,
    request_id: memchr::memmem::Finder<'static>,
    init_start: memchr::memmem::Finder<'static>,
    json_platform: memchr::memmem::Finder<'static>,
    json_escape: memchr::memmem::Finder<'static>,
    invoke_error: memchr::memmem::Finder<'static>,
    python_error: memchr::memmem::Finder<'static>,
    aws_span: memchr::memmem::Finder<'static>,
}

static NEEDLES: std::sync::LazyLock<Needles> = std::sync::LazyLock::new(|| {
    use memchr::memmem::Finder;
    Needles {
        marker: Finder::new(crate::span_line::MARKER),
        // `Task timed out after`; `Runtime exited with error`, `Process exited before …`.
        timeout: Finder::new("timed out after"),
        exited: Finder::new(" exited "),
        request_id: Finder::new("RequestId: "),
        init_start: Finder::new("INIT_START"),
        json_platform: Finder::new("\"platform."),
        json_escape: Finder::new("\\u"),
        invoke_error: Finder::new("\tERROR\tInvoke Error "),
        python_error: Finder::new("[ERROR] "),
        aws_span: Finder::new("\"spanId\""),
    }
});

/// Whether `message` is certainly neither a span line nor a platform line, in any shape (raw,
/// behind a Lambda prefix, as the `message` of the JSON log format): `false` means "parse it".
/// The skipping of the bulk of the logs, so it costs a few vectorised scans and no allocation.
///
/// What `parse` looks for: the marker anywhere; a text platform line *starts* with
/// `START`/`END`/`REPORT RequestId: `, `INIT_START` or Python's `[ERROR] `, or contains a timeout,
/// crash or Node `Invoke Error` text. In
/// a JSON message those starts may sit inside the `message` field, so they are searched for
/// anywhere; JSON escapes none of these characters, except that `\u` escapes could spell
/// anything, so a JSON message with one (or a `platform.*` record) is always parsed.
fn surely_foreign(message: &str) -> bool {
    let b = message.as_bytes();
    let n = &*NEEDLES;
    // `parse::unwrap_message`'s test, `trim_start().starts_with('{')`, without the Unicode
    // trimming in the usual case of a line that starts with a visible ASCII character.
    let json = match b.first() {
        Some(b'{') => true,
        Some(c)
            if c.is_ascii() && !matches!(c, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r') =>
        {
            false
        }
        _ => message.trim_start().starts_with('{'),
    };
    if json {
        if n.json_platform.find(b).is_some()
            || n.json_escape.find(b).is_some()
            || n.request_id.find(b).is_some()
            || n.init_start.find(b).is_some()
            || n.python_error.find(b).is_some()
            || n.aws_span.find(b).is_some()
        {
            return false;
        }
    } else if [
        &b"START RequestId: "[..],
        b"END RequestId: ",
        b"REPORT RequestId: ",
        b"INIT_START",
        b"[ERROR] ",
    ]
    .iter()
    .any(|p| b.starts_with(p))
    {
        return false;
    }
    n.marker.find(b).is_none()
        && n.timeout.find(b).is_none()
        && n.exited.find(b).is_none()
        && n.invoke_error.find(b).is_none()
}

/// How the converter is set up.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `cloud.region` for invocation spans, when known.
    pub region: Option<String>,
    /// Service names for log groups (`--service`).
    pub services: ServiceMap,
    /// Bounds of the assembly state.
    pub limits: Limits,
    /// Where a span line's marker counts (`--marker-anywhere`).
    pub marker: parse::MarkerPlacement,
    /// What becomes of the function's other log lines (`--logs`).
    pub logs: Logs,
}

/// What becomes of the function's own log lines (neither span lines nor platform lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Logs {
    /// Counted as other lines.
    #[default]
    Off,
    /// Put on the span that was active when they were written (same request id, inside the
    /// span's time; else the invocation span) as `log` events with `message` and `level`.
    Events,
    /// Kept beside the span they were written under as [`assemble::SpanLog`]s, for an OTLP
    /// logs sink to send as log records with the span's trace and span id.
    Otlp,
}

/// A request id as a line names it: inline ([`RequestId`]), its text kept aside only when it
/// is too long to inline (Lambda's are not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestName {
    id: RequestId,
    long: Option<Box<str>>,
}

impl RequestName {
    fn new(text: &str) -> Self {
        let id = RequestId::new(text);
        let long = id.as_str().is_none().then(|| text.into());
        RequestName { id, long }
    }

    fn text(&self) -> &str {
        self.long
            .as_deref()
            .or_else(|| self.id.as_str())
            .unwrap_or("")
    }
}

/// What a platform line said, owned: parsed on one thread, assembled on another.
#[derive(Debug)]
enum PlatformEvent {
    InitStart,
    Start {
        request: RequestName,
        version: Option<RequestId>,
        tracing: Option<crate::emit::SpanContext>,
    },
    End {
        request: RequestName,
    },
    Report {
        request: RequestName,
        figures: ReportFigures,
    },
    Timeout {
        request: RequestName,
        message: String,
    },
    /// Python's line names no request (`None`): the stream's current one is meant.
    HandlerError {
        request: Option<RequestName>,
        message: String,
    },
    Crash {
        request: RequestName,
        message: String,
        out_of_memory: bool,
    },
}

impl PlatformEvent {
    fn of(p: Platform<'_>) -> PlatformEvent {
        match p {
            Platform::InitStart { .. } => PlatformEvent::InitStart,
            Platform::Start {
                request_id,
                version,
                tracing,
            } => PlatformEvent::Start {
                request: RequestName::new(&request_id),
                version: Some(RequestId::new(&version)).filter(|_| !version.is_empty()),
                tracing,
            },
            Platform::End { request_id } => PlatformEvent::End {
                request: RequestName::new(&request_id),
            },
            Platform::Report(r) => PlatformEvent::Report {
                request: RequestName::new(&r.request_id),
                figures: ReportFigures::from(&r),
            },
            Platform::Timeout {
                request_id,
                message,
            } => PlatformEvent::Timeout {
                request: RequestName::new(&request_id),
                message: message.into_owned(),
            },
            Platform::HandlerError {
                request_id,
                message,
            } => PlatformEvent::HandlerError {
                request: Some(RequestName::new(&request_id)).filter(|_| !request_id.is_empty()),
                message: message.into_owned(),
            },
            Platform::Crash {
                request_id,
                message,
                out_of_memory,
            } => PlatformEvent::Crash {
                request: RequestName::new(&request_id),
                message: message.into_owned(),
                out_of_memory,
            },
        }
    }
}

/// One record, parsed.
#[derive(Debug)]
enum Item {
    /// A span (of a span record, or one of a batch record).
    Span {
        span: Span,
        /// The request the line names (its `*r=`, the runtime prefix's, the JSON `requestId`).
        named: Option<RequestName>,
        open: bool,
        called: Option<RequestId>,
        t_ms: i64,
    },
    /// A Lambda platform line.
    Platform { event: PlatformEvent, t_ms: i64 },
    /// One of the function's log lines ([`Logs::Events`], [`Logs::Otlp`]).
    Log {
        line: assemble::LogLine,
        named: Option<RequestName>,
    },
}

/// How many malformed reasons there are (the slots of [`ParseCounts::malformed`]).
const REASONS: usize = 24;

/// What the parse stage counted.
#[derive(Clone, Debug)]
struct ParseCounts {
    records: u64,
    span_lines: u64,
    platform_lines: u64,
    foreign: u64,
    malformed: [(Option<&'static str>, u64); REASONS],
}

impl Default for ParseCounts {
    fn default() -> Self {
        ParseCounts {
            records: 0,
            span_lines: 0,
            platform_lines: 0,
            foreign: 0,
            malformed: [(None, 0); REASONS],
        }
    }
}

impl ParseCounts {
    fn malformed(&mut self, code: &'static str) {
        for slot in &mut self.malformed {
            match slot.0 {
                Some(c) if c == code => {
                    slot.1 += 1;
                    return;
                }
                None => {
                    *slot = (Some(code), 1);
                    return;
                }
                _ => {}
            }
        }
    }

    fn into_summary(self, s: &mut Summary) {
        s.records += self.records;
        s.span_lines += self.span_lines;
        s.platform_lines += self.platform_lines;
        s.foreign += self.foreign;
        for (code, n) in self.malformed {
            if let Some(c) = code {
                *s.malformed.entry(c).or_default() += n;
            }
        }
    }
}

/// A batch of records, parsed: what the assembly stage ([`Converter::apply`]) takes, in order.
#[derive(Debug)]
pub struct ParsedBatch {
    input: u32,
    origins: Vec<record::Origin>,
    items: Vec<(u32, Item)>,
    counts: ParseCounts,
}

/// How many distinct resources a parser keeps for sharing; beyond this the table starts
/// afresh (spans keep theirs).
const MAX_RESOURCES: usize = 4096;

/// The parse stage: records → spans (their OTLP fields written) and platform events. It keeps
/// no state across records but caches (shared resources, scratch buffers), so any number of
/// parsers can work on batches in parallel; the assembly stage takes their output in order.
#[derive(Debug)]
pub struct Parser {
    config: Config,
    resources: Interner,
    key_scratch: Vec<u8>,
    body_scratch: Vec<u8>,
}

/// Resources shared by key (group, stream, the line's service and resource fields).
#[derive(Debug, Default)]
struct Interner {
    map: assemble::Map<Box<[u8]>, Arc<Resource>>,
    /// The last resource looked up, with its key: consecutive lines of a stream share one.
    last: Option<(Vec<u8>, Arc<Resource>)>,
}

impl Interner {
    /// The shared resource for `key`, built by `make` when new.
    fn intern(&mut self, key: &[u8], make: impl FnOnce() -> Resource) -> Arc<Resource> {
        if let Some((k, r)) = &self.last {
            if k.as_slice() == key {
                return Arc::clone(r);
            }
        }
        let r = match self.map.get(key) {
            Some(r) => Arc::clone(r),
            None => {
                if self.map.len() >= MAX_RESOURCES {
                    self.map.clear();
                }
                let r = Arc::new(make());
                self.map.insert(Box::from(key), Arc::clone(&r));
                r
            }
        };
        match &mut self.last {
            Some((k, last)) => {
                k.clear();
                k.extend_from_slice(key);
                *last = Arc::clone(&r);
            }
            None => self.last = Some((key.to_vec(), Arc::clone(&r))),
        }
        r
    }
}

impl Parser {
    /// A parser set up by `config`.
    pub fn new(config: &Config) -> Parser {
        Parser {
            config: config.clone(),
            resources: Interner::default(),
            key_scratch: Vec::new(),
            body_scratch: Vec::with_capacity(1024),
        }
    }

    /// Parses every record of `batch`.
    pub fn parse_batch(&mut self, batch: &RecordBatch) -> ParsedBatch {
        let mut counts = ParseCounts::default();
        // At most one item per record: no regrowth (pages past what is filled stay untouched).
        let mut items = Vec::with_capacity(batch.len());
        let origins = batch.origins().to_vec();
        let mut i = 0;
        while let Some((origin, rec)) = batch.get_with_origin(i) {
            self.parse_record(rec, &mut counts, &mut |item| items.push((origin, item)));
            i += 1;
        }
        ParsedBatch {
            input: batch.input,
            origins,
            items,
            counts,
        }
    }

    /// Parses one record, handing its items to `out`.
    fn parse_record(
        &mut self,
        rec: LogRecordRef<'_>,
        counts: &mut ParseCounts,
        out: &mut dyn FnMut(Item),
    ) {
        counts.records += 1;
        let logs = self.config.logs != Logs::Off;
        if !logs && surely_foreign(rec.message) {
            counts.foreign += 1;
            return;
        }
        let t_ms = rec.timestamp_ms;
        if aws_spans::looks_like(rec.message) {
            let service = self.config.services.service(rec.log_group);
            match aws_spans::parse(rec.message, &service) {
                Ok(mut data) => {
                    counts.span_lines += 1;
                    if !rec.log_group.is_empty()
                        && !data
                            .resource
                            .iter()
                            .any(|kv| kv.key == "aws.log.group.names")
                    {
                        data.resource.push(assemble::KeyValue::str(
                            "aws.log.group.names",
                            rec.log_group,
                        ));
                    }
                    out(Item::Span {
                        span: Span::from_data(&data),
                        named: None,
                        open: false,
                        called: None,
                        t_ms,
                    });
                }
                Err(_) => counts.malformed("aws_span"),
            }
            return;
        }
        let (text, json_req) = match unwrap_message(rec.message) {
            Message::Platform(p) => {
                counts.platform_lines += 1;
                out(Item::Platform {
                    event: PlatformEvent::of(p),
                    t_ms,
                });
                return;
            }
            Message::Text(t, r) => (t, r),
        };
        let options = parse::ParseOptions {
            marker: self.config.marker,
            lossy_utf8: rec.lossy,
        };
        match parse_text_with(&text, options) {
            Parsed::Foreign if logs => {
                counts.foreign += 1;
                out(log_item(rec, &text, json_req.as_deref()));
            }
            Parsed::Foreign => counts.foreign += 1,
            Parsed::Platform(p) => {
                counts.platform_lines += 1;
                out(Item::Platform {
                    event: PlatformEvent::of(p),
                    t_ms,
                });
            }
            Parsed::Malformed(kind) => counts.malformed(DecodeErrorKind::code(kind)),
            Parsed::Spans { record, request_id } => {
                counts.span_lines += 1;
                let prefix_req = request_id.or(json_req.as_deref());
                for line in record.spans() {
                    let item = self.span_item(rec, &line, prefix_req);
                    out(item);
                }
            }
        }
    }

    fn span_item(
        &mut self,
        rec: LogRecordRef<'_>,
        line: &crate::span_line::SpanLine<'_>,
        prefix_req: Option<&str>,
    ) -> Item {
        // The resource key: group, stream, the line's service and resource fields, as written.
        let mut key = std::mem::take(&mut self.key_scratch);
        key.clear();
        key.extend_from_slice(rec.log_group.as_bytes());
        key.push(0);
        key.extend_from_slice(rec.log_stream.as_bytes());
        key.push(0);
        match line.service {
            Some(s) => key.extend_from_slice(s.raw().as_bytes()),
            None => key.push(1),
        }
        let mut body = std::mem::take(&mut self.body_scratch);
        let facts = write_line_body(line, &mut body, |a: LineAttr<'_>| {
            key.push(0);
            key.extend_from_slice(a.key.raw().as_bytes());
            match a.value {
                AttrValue::Str(v) => {
                    key.push(b'=');
                    key.extend_from_slice(v.raw().as_bytes());
                }
                AttrValue::Int(i) => {
                    key.push(b'#');
                    key.extend_from_slice(&i.to_le_bytes());
                }
                AttrValue::Float(f) => {
                    key.push(b'~');
                    key.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                AttrValue::Bool(b) => key.extend_from_slice(if b { b"!t" } else { b"!f" }),
            }
        });
        self.key_scratch = key;
        let services = &self.config.services;
        let make = || {
            let service = line
                .service
                .map(assemble::span::text)
                .unwrap_or_else(|| services.service(rec.log_group));
            let mut attrs: Vec<KeyValue> =
                line.resource().map(|a| KeyValue::from_line(&a)).collect();
            if !rec.log_group.is_empty() {
                attrs.push(KeyValue::str("aws.log.group.names", rec.log_group));
            }
            if !rec.log_stream.is_empty() {
                attrs.push(KeyValue::str("aws.log.stream.names", rec.log_stream));
            }
            if rec.log_group.starts_with("/aws/lambda/") {
                attrs.push(KeyValue::str("cloud.provider", "aws"));
                attrs.push(KeyValue::str(
                    "faas.name",
                    assemble::service_from_log_group(rec.log_group),
                ));
            }
            Resource::new(service, attrs)
        };
        let resource = self.resources.intern(&self.key_scratch, make);
        let span = Span::from_line_body(line, &facts, &mut body, resource);
        self.body_scratch = body;
        // The request the line names: its own `*r=`, else the runtime prefix's.
        let named = match line.request_id {
            Some(r) => Some(RequestName::new(&r.text())),
            None => prefix_req.map(RequestName::new),
        };
        // A request the span called: only a span on the calling side records one (a handler
        // span records its own invocation's `faas.invocation_id`, OpenTelemetry's FaaS
        // conventions).
        let called = facts
            .called_request
            .filter(|_| !matches!(facts.kind, SpanKind::Server | SpanKind::Consumer))
            .map(|r| RequestId::new(&r.text()));
        Item::Span {
            span,
            named,
            open: line.open,
            called,
            t_ms: rec.timestamp_ms,
        }
    }
}

/// A log line's item: its request id (from the runtime's prefix or the JSON `requestId`), its
/// level (the prefix's, or the JSON `level`), its message cut at
/// [`assemble::MAX_LOG_MESSAGE`].
fn log_item(rec: LogRecordRef<'_>, text: &str, json_req: Option<&str>) -> Item {
    let (req, level, message) = parse::log_line(text);
    let json_level = if level.is_none() && rec.message.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Level<'a> {
            #[serde(borrow)]
            level: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_str::<Level<'_>>(rec.message.trim_start())
            .ok()
            .and_then(|l| l.level)
            .map(|l| l.into_owned())
    } else {
        None
    };
    let message = message.trim_end_matches(['\n', '\r']);
    let message = if message.len() > assemble::MAX_LOG_MESSAGE {
        let mut cut = assemble::MAX_LOG_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &message[..cut])
    } else {
        message.to_owned()
    };
    Item::Log {
        line: assemble::LogLine {
            t_ms: rec.timestamp_ms,
            level: level
                .map(Box::from)
                .or(json_level.map(String::into_boxed_str)),
            message: message.into_boxed_str(),
        },
        named: req.or(json_req).map(RequestName::new),
    }
}

/// What the converter remembers per log stream./// What the converter remembers per log stream.
#[derive(Debug)]
struct StreamState {
    group: GroupId,
    group_name: Arc<str>,
    stream: Arc<str>,
    /// The invocation between its START and its REPORT: prefix-less span lines (custom
    /// runtimes) belong to it.
    current: Option<RequestId>,
    /// INIT_START seen, START not yet: the next invocation is a cold start (time, ms).
    cold_pending: Option<i64>,
    /// The resource of this stream's invocation spans.
    invocation_resource: Option<Arc<Resource>>,
}

/// How many log streams the converter keeps state for; beyond this the oldest is forgotten
/// (counted as `streams`).
pub const MAX_STREAMS: usize = 65_536;

/// The state of every log stream, and the log groups by index.
#[derive(Debug, Default)]
struct Streams {
    groups: Vec<Arc<str>>,
    group_ids: assemble::Map<Arc<str>, GroupId>,
    map: assemble::Map<Box<str>, StreamState>,
    order: VecDeque<Box<str>>,
    key: String,
    /// Streams forgotten at the bound.
    forgotten: u64,
}

impl Streams {
    /// The state of a stream, created if new (`None` only if the table failed to keep it,
    /// which it does not).
    fn get(&mut self, group: &str, stream: &str) -> Option<&mut StreamState> {
        self.key.clear();
        self.key.push_str(group);
        self.key.push('\0');
        self.key.push_str(stream);
        if !self.map.contains_key(self.key.as_str()) {
            let gid = self.group_id(group);
            if self.map.len() >= MAX_STREAMS {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                    self.forgotten += 1;
                }
            }
            let key: Box<str> = self.key.as_str().into();
            self.order.push_back(key.clone());
            let group_name = self
                .groups
                .get(gid as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from(group));
            self.map.insert(
                key,
                StreamState {
                    group: gid,
                    group_name,
                    stream: Arc::from(stream),
                    current: None,
                    cold_pending: None,
                    invocation_resource: None,
                },
            );
        }
        self.map.get_mut(self.key.as_str())
    }

    fn group_id(&mut self, group: &str) -> GroupId {
        if let Some(id) = self.group_ids.get(group) {
            return *id;
        }
        let id = GroupId::try_from(self.groups.len()).unwrap_or(GroupId::MAX);
        let name: Arc<str> = Arc::from(group);
        self.groups.push(Arc::clone(&name));
        self.group_ids.insert(name, id);
        id
    }
}

/// The invocation a line of stream `st` belongs to: the request it names, else (custom
/// runtimes and raw stdout print no prefix) the stream's current invocation.
fn request_of<'a>(
    st: &'a StreamState,
    named: Option<&'a RequestName>,
    input: u32,
) -> Option<RequestRef<'a>> {
    let (id, text) = match named {
        Some(n) => (n.id, n.text()),
        None => (
            st.current?,
            st.current.as_ref().and_then(|c| c.as_str()).unwrap_or(""),
        ),
    };
    Some(RequestRef {
        key: RequestKey {
            group: st.group,
            id,
        },
        group: &st.group_name,
        stream: &st.stream,
        id: text,
        input,
    })
}

/// Parses and assembles records, counting as it goes. Records of one log stream must arrive in
/// stream order (spans printed between a request's START and END belong to that request).
///
/// It is the assembly stage of the pipeline ([`Converter::apply`] takes what [`Parser`]s made,
/// in order) and, with a parser of its own, a whole converter for one thread
/// ([`Converter::push_ref`]).
#[derive(Debug)]
pub struct Converter {
    /// Counters.
    pub summary: Summary,
    config: Config,
    parser: Parser,
    assembler: Assembler,
    streams: Streams,
    items: Vec<Item>,
    input: u32,
}

impl Default for Converter {
    fn default() -> Self {
        Converter::new(Config::default())
    }
}

impl Converter {
    /// A converter set up by `config`.
    pub fn new(config: Config) -> Self {
        let mut assembler = Assembler::new(config.limits);
        assembler.keep_logs_as_records(config.logs == Logs::Otlp);
        Converter {
            summary: Summary::default(),
            assembler,
            parser: Parser::new(&config),
            config,
            streams: Streams::default(),
            items: Vec::new(),
            input: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A parser for this converter's configuration (for parsing on other threads).
    pub fn parser(&self) -> Parser {
        Parser::new(&self.config)
    }

    /// Sets the input the next records come from (spans carry it: see
    /// [`Span::input`](assemble::Span::input)).
    pub fn set_input(&mut self, input: u32) {
        self.input = input;
    }

    /// Feeds one owned record.
    pub fn push(&mut self, rec: &LogRecord) {
        self.push_ref(rec.as_ref());
    }

    /// Feeds one record borrowed from a source's buffer: a record that is neither a span line
    /// nor a platform line, the common case, costs no allocation.
    pub fn push_ref(&mut self, rec: LogRecordRef<'_>) {
        let mut counts = ParseCounts::default();
        let mut items = std::mem::take(&mut self.items);
        self.parser
            .parse_record(rec, &mut counts, &mut |item| items.push(item));
        counts.into_summary(&mut self.summary);
        for item in items.drain(..) {
            self.apply_item(rec.log_group, rec.log_stream, item);
        }
        self.items = items;
    }

    /// Feeds every record of `batch`.
    pub fn push_batch(&mut self, batch: &RecordBatch) {
        self.set_input(batch.input);
        for rec in batch.iter() {
            self.push_ref(rec);
        }
    }

    /// Takes what a [`Parser`] made of a batch (batches in input order).
    pub fn apply(&mut self, parsed: ParsedBatch) {
        self.set_input(parsed.input);
        parsed.counts.into_summary(&mut self.summary);
        for (origin, item) in parsed.items {
            let (g, s) = match parsed.origins.get(origin as usize) {
                Some((g, s)) => (Arc::clone(g), Arc::clone(s)),
                None => continue,
            };
            self.apply_item(&g, &s, item);
        }
    }

    fn apply_item(&mut self, group: &str, stream: &str, item: Item) {
        let input = self.input;
        match item {
            Item::Span {
                mut span,
                named,
                open,
                called,
                t_ms,
            } => {
                span.input = input;
                let Some(st) = self.streams.get(group, stream) else {
                    return;
                };
                let request = request_of(st, named.as_ref(), input);
                self.assembler.push_span(span, request, open, called, t_ms);
            }
            Item::Platform { event, t_ms } => self.platform(group, stream, event, t_ms),
            Item::Log { line, named } => {
                let Some(st) = self.streams.get(group, stream) else {
                    return;
                };
                let request = request_of(st, named.as_ref(), input);
                self.assembler.push_log(line, request);
            }
        }
    }

    fn invocation_resource(&mut self, group: &str, stream: &str) -> Arc<Resource> {
        let region = self.config.region.clone();
        let service = self.config.services.service(group);
        let st = self.streams.get(group, stream);
        if let Some(r) = st.as_ref().and_then(|st| st.invocation_resource.as_ref()) {
            return Arc::clone(r);
        }
        let r = Arc::new(Resource::new(
            service,
            resource_attributes(group, stream, region.as_deref()),
        ));
        if let Some(st) = st {
            st.invocation_resource = Some(Arc::clone(&r));
        }
        r
    }

    fn platform(&mut self, group: &str, stream: &str, event: PlatformEvent, t: i64) {
        let ts = (t > 0).then_some(t);
        let request: RequestName = match &event {
            PlatformEvent::Start { request, .. }
            | PlatformEvent::End { request }
            | PlatformEvent::Report { request, .. }
            | PlatformEvent::Timeout { request, .. }
            | PlatformEvent::Crash { request, .. }
            | PlatformEvent::HandlerError {
                request: Some(request),
                ..
            } => request.clone(),
            // Python's handler-error line names no request: the stream's current one failed.
            PlatformEvent::HandlerError { request: None, .. } => {
                let current = self.streams.get(group, stream).and_then(|st| st.current);
                match current {
                    Some(c) => RequestName { id: c, long: None },
                    None => return,
                }
            }
            PlatformEvent::InitStart => {
                if let Some(st) = self.streams.get(group, stream) {
                    st.cold_pending = Some(t);
                }
                return;
            }
        };
        let input = self.input;
        let is_start = matches!(event, PlatformEvent::Start { .. });
        let is_report = matches!(event, PlatformEvent::Report { .. });
        let resource = is_report.then(|| self.invocation_resource(group, stream));
        let Some(st) = self.streams.get(group, stream) else {
            return;
        };
        let key = RequestKey {
            group: st.group,
            id: request.id,
        };
        if self.assembler.is_finished(&key) {
            // A late line of a finished invocation (lines of one millisecond come in any order).
            return;
        }
        let cold = if is_start {
            st.current = Some(request.id);
            st.cold_pending.take()
        } else {
            None
        };
        if is_report && st.current == Some(request.id) {
            st.current = None;
        }
        let r = RequestRef {
            key,
            group: &st.group_name,
            stream: &st.stream,
            id: request.text(),
            input,
        };
        let inv = self.assembler.request(r, t);
        if let Some(t) = ts {
            inv.last_ms = Some(inv.last_ms.map_or(t, |l| l.max(t)));
        }
        match event {
            PlatformEvent::Start {
                version, tracing, ..
            } => {
                inv.start_ms = ts;
                inv.version = version.and_then(|v| v.as_str().map(str::to_owned));
                inv.tracing = tracing.or(inv.tracing.take());
                if let Some(c) = cold {
                    inv.init_start_ms = Some(c).filter(|c| *c > 0);
                }
            }
            PlatformEvent::Report { figures, .. } => {
                // REPORT is the last line Lambda writes for an invocation: finish it now, so
                // its spans are released and memory stays bounded.
                inv.report = Some(figures);
                if let Some(resource) = resource {
                    self.assembler.finish(key, resource);
                }
            }
            PlatformEvent::Timeout { message, .. } => inv.timeout = Some(message),
            PlatformEvent::HandlerError { message, .. } => inv.handler_error = Some(message),
            PlatformEvent::Crash {
                message,
                out_of_memory,
                ..
            } => inv.crash = Some((message, out_of_memory)),
            PlatformEvent::End { .. } | PlatformEvent::InitStart => {}
        }
    }

    fn sync_counters(&mut self) {
        if self.streams.forgotten > 0 {
            self.summary
                .limits
                .insert("streams", self.streams.forgotten);
        }
        let c = &self.assembler.counters;
        self.summary.duplicates = c.duplicates;
        self.summary.invocations = c.invocations;
        self.summary.log_lines = c.log_lines;
        self.summary.logs_unplaced = c.logs_unplaced;
        let limits = [
            ("log_events", c.logs_dropped),
            ("pending_invocations", c.evicted_invocations),
            ("dedup_ids", c.dedup_forgotten),
            ("finished_invocations", c.finished_forgotten),
            ("callers", c.callers_forgotten),
        ];
        for (k, v) in limits {
            if v > 0 {
                self.summary.limits.insert(k, v);
            }
        }
    }

    /// Counts a bound reached before conversion (by a source), `n` times.
    pub fn limit_hit(&mut self, name: &'static str, n: u64) {
        self.summary.limit_hit(name, n);
    }

    /// The assembler's counters (invocations placed by their caller, left to a later delivery,
    /// …).
    pub fn counters(&self) -> &assemble::Counters {
        &self.assembler.counters
    }

    /// Moves the spans that are complete into `out`.
    pub fn drain_ready(&mut self, out: &mut Vec<Span>) {
        let before = out.len();
        self.assembler.drain_ready(out);
        self.summary.spans += (out.len() - before) as u64;
        self.sync_counters();
    }

    /// Takes the spans that are complete.
    pub fn take_ready(&mut self) -> Vec<Span> {
        let mut out = Vec::new();
        self.drain_ready(&mut out);
        out
    }

    /// Ends the input: finishes the invocations whose REPORT line never came (crashed, or cut
    /// off by the time range) with what is known, and takes every remaining span.
    pub fn finish(&mut self) -> Vec<Span> {
        self.assembler.finish_all(Ending::WithWhatIsKnown);
        self.take_ready()
    }

    /// Ends one delivery of a stream of deliveries (a subscription event in `spanline lambda`):
    /// invocations whose REPORT has not come are left to the delivery that completes them —
    /// their function spans are sent as they are, their invocation span is not — and no trace
    /// id is invented for an invocation nothing places.
    pub fn finish_delivery(&mut self) -> Vec<Span> {
        self.assembler.finish_all(Ending::LeaveToLaterDelivery);
        self.take_ready()
    }

    /// The earliest time (ms) of what `log_group` still holds back: invocations whose REPORT
    /// line has not come and the spans waiting for them. A reader that stops here (the
    /// forwarder) must read again from this time on its next run, or those spans are lost.
    pub fn oldest_pending_ms(&self, log_group: &str) -> Option<i64> {
        let id = self.streams.group_ids.get(log_group)?;
        self.assembler.oldest_pending_ms(*id)
    }

    /// Finishes what has waited too long to be completed by lines still to come: invocations
    /// whose last line is older than `before_ms` (they crashed or were cut off; Lambda ends
    /// every invocation within 15 minutes) and spans held for an invocation never seen, then
    /// takes every complete span. What is newer stays held.
    pub fn finish_stale(&mut self, before_ms: i64) -> Vec<Span> {
        self.assembler.finish_stale(before_ms);
        self.take_ready()
    }

    /// Finishes what has waited too long (see [`Converter::finish_stale`]), leaving the spans
    /// it releases to the next [`Converter::drain_ready`].
    pub fn assembler_finish_stale(&mut self, before_ms: i64) {
        self.assembler.finish_stale(before_ms);
    }

    /// The invocations a delivery could not place ([`Converter::finish_delivery`]): what their
    /// lines said.
    pub fn take_unplaced(&mut self) -> Vec<assemble::Invocation> {
        self.assembler.take_unplaced()
    }

    /// Spans held back, waiting for their invocation to end.
    pub fn held(&self) -> usize {
        self.assembler.held()
    }

    /// Invocations not ended yet.
    pub fn pending_invocations(&self) -> usize {
        self.assembler.pending_invocations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::parse::parse_text;

    #[test]
    fn summaries_add_up_by_field_and_malformed_reason() {
        let mut a = Summary {
            records: 3,
            spans: 2,
            malformed: BTreeMap::from([("marker", 1)]),
            ..Summary::default()
        };
        let b = Summary {
            records: 4,
            foreign: 1,
            malformed: BTreeMap::from([("marker", 2), ("ids", 1)]),
            ..Summary::default()
        };
        a.add(&b);
        assert_eq!((a.records, a.spans, a.foreign), (7, 2, 1));
        assert_eq!(a.malformed, BTreeMap::from([("ids", 1), ("marker", 3)]));
    }

    /// What `push` would make of `message` without the shortcut.
    fn parsed_foreign(message: &str) -> bool {
        match unwrap_message(message) {
            Message::Platform(_) => false,
            Message::Text(t, _) => matches!(parse_text(&t), Parsed::Foreign),
        }
    }

    const REQ: &str = "c793869b-ee49-115b-a5b6-4fd21e8dedac";

    #[test]
    fn the_shortcut_never_skips_what_parse_finds() {
        let span = "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;";
        let found = [
            span.to_owned(),
            format!("2024-02-09T08:42:44.078Z\t{REQ}\tINFO\t{span}"),
            format!("{{\"requestId\":\"{REQ}\",\"message\":\"{span}\"}}"),
            r#"{"message":"\u0053PLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;"}"#.to_owned(),
            format!("START RequestId: {REQ} Version: $LATEST"),
            format!("END RequestId: {REQ}"),
            format!("REPORT RequestId: {REQ}\tDuration: 1.00 ms\t"),
            "INIT_START Runtime Version: nodejs:20.v13".to_owned(),
            format!("2026-11-23T10:00:03.500Z {REQ} Task timed out after 3.00 seconds"),
            format!("RequestId: {REQ} Error: Runtime exited with error: signal: killed"),
            format!("RequestId: {REQ} Process exited before completing request"),
            format!("  {{\"message\":\"START RequestId: {REQ} Version: $LATEST\"}}"),
            format!("\u{a0}{{\"message\":\"RequestId: {REQ} Process exited before completing request\"}}"),
            r#"{"time":"t","type":"platform.start","record":{"requestId":"r1","version":"$LATEST"}}"#
                .to_owned(),
        ];
        for m in &found {
            assert!(!parsed_foreign(m), "test input should not be foreign: {m}");
            assert!(!surely_foreign(m), "skipped: {m}");
        }
        let skipped = [
            "hello world".to_owned(),
            format!("2024-02-09T08:42:44.078Z\t{REQ}\tINFO\tGET /orders 200"),
            "{\"level\":\"info\",\"message\":\"cache miss\"}".to_owned(),
            format!("we START RequestId: {REQ}"),
            String::new(),
        ];
        for m in &skipped {
            assert!(parsed_foreign(m));
            assert!(surely_foreign(m), "not skipped: {m}");
        }
    }

    proptest::proptest! {
        #[test]
        fn skipped_messages_are_foreign(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "SPLN1 ", "S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;", "START RequestId: ",
                "END RequestId: ", "REPORT RequestId: ", "INIT_START", "RequestId: ",
                "c793869b-ee49-115b-a5b6-4fd21e8dedac", " Task timed out after 3 s",
                " Runtime exited with error", " Process exited before completing request",
                "{", "}", "\"message\":\"", "\"", "\\u0053", "\"type\":\"platform.start\"", "\t",
                " ", "\n", "INFO", "text", "\u{a0}", "é",
            ]), 0..12),
        ) {
            let m: String = parts.concat();
            if surely_foreign(&m) {
                proptest::prop_assert!(parsed_foreign(&m), "skipped but not foreign: {:?}", m);
            }
        }
    }

    #[test]
    fn borrowed_and_owned_records_convert_alike() {
        let lines = [
            format!("START RequestId: {REQ} Version: $LATEST"),
            format!("2024-02-09T08:42:44.078Z\t{REQ}\tINFO\tSPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;"),
            "noise".to_owned(),
            format!("REPORT RequestId: {REQ}\tDuration: 1.00 ms\t"),
        ];
        let records: Vec<LogRecord> = lines
            .iter()
            .map(|m| LogRecord {
                log_group: "/aws/lambda/f".into(),
                log_stream: "s".into(),
                message: m.clone(),
                ..LogRecord::default()
            })
            .collect();
        let (mut a, mut b) = (Converter::default(), Converter::default());
        for r in &records {
            a.push(r);
            b.push_ref(r.as_ref());
        }
        assert_eq!(a.finish(), b.finish());
        assert_eq!(a.summary, b.summary);
        assert_eq!(
            (a.summary.records, a.summary.span_lines, a.summary.foreign),
            (4, 1, 1)
        );
        assert_eq!(a.summary.invocations, 1);
    }

    fn rec(group: &str, stream: &str, t: i64, message: &str) -> LogRecord {
        LogRecord {
            log_group: group.into(),
            log_stream: stream.into(),
            timestamp_ms: t,
            message: message.into(),
            ..LogRecord::default()
        }
    }

    /// Issue "One streaming pipeline", tree (a): an invocation whose function printed nothing
    /// (it timed out before its span was written) is placed under the caller's span that
    /// recorded its request id, whichever group is read first, instead of floating beside the
    /// tree as a root of a trace of its own.
    #[test]
    fn an_invocation_without_spans_goes_under_the_caller_that_recorded_its_request_id() {
        let caller = "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LNitg 1700000000000000 3000000c invoke-orders aws.request_id=c793869b-ee49-115b-a5b6-4fd21e8dedac;";
        let express: Vec<LogRecord> =
            vec![rec("/ecs/express-app", "web/1", 1_700_000_003_100, caller)];
        let lambda: Vec<LogRecord> = [
            (1_700_000_000_010, format!("START RequestId: {REQ} Version: $LATEST")),
            (
                1_700_000_003_010,
                format!("2023-11-14T22:13:23.010Z {REQ} Task timed out after 3.00 seconds"),
            ),
            (
                1_700_000_003_011,
                format!("REPORT RequestId: {REQ}\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\tStatus: timeout\t"),
            ),
        ]
        .into_iter()
        .map(|(t, m)| rec("/aws/lambda/orders", "2023/11/14/[$LATEST]ab", t, &m))
        .collect();
        let caller_trace = crate::span_line::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736");
        let caller_span = crate::span_line::SpanId::from_hex("00f067aa0ba902b7");
        for order in [[&express, &lambda], [&lambda, &express]] {
            let mut conv = Converter::default();
            for r in order.into_iter().flatten() {
                conv.push(r);
            }
            let spans = conv.finish();
            let inv = spans
                .iter()
                .find(|s| s.name() == "orders")
                .expect("the invocation span");
            assert_eq!(Some(inv.trace_id), caller_trace, "joins the caller's trace");
            assert_eq!(inv.parent_span_id, caller_span, "under the caller's span");
            assert_eq!(inv.status, crate::span_line::StatusCode::Error);
            assert_eq!(conv.counters().placed_by_caller, 1);
        }
    }

    /// A span on the receiving side of a call (server or consumer) that records an
    /// invocation id (`faas.invocation_id` on an OpenTelemetry handler span, printed to another
    /// log group) describes that invocation, it did not call it: the invocation, which printed
    /// no span of its own, is not placed under it. A client span recording the same id is.
    #[test]
    fn an_invocation_is_placed_under_a_client_span_recording_its_id_not_a_server_span() {
        for (flags, placed) in [("s", 0), ("o", 0), ("c", 1)] {
            let handler = format!(
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LNitg 1700000000100000 5000{flags} handler faas.invocation_id={REQ};"
            );
            let mut conv = Converter::default();
            conv.push(&rec("/ecs/gateway", "g/1", 1_700_000_000_100, &handler));
            for (t, m) in [
                (1_700_000_000_010, format!("START RequestId: {REQ} Version: $LATEST")),
                (
                    1_700_000_000_200,
                    format!("REPORT RequestId: {REQ}\tDuration: 190.00 ms\tBilled Duration: 190 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\t"),
                ),
            ] {
                conv.push(&rec("/aws/lambda/orders", "2023/11/14/[$LATEST]ab", t, &m));
            }
            let spans = conv.finish();
            let handler = spans
                .iter()
                .find(|s| s.name() == "handler")
                .expect("the span");
            let inv = spans
                .iter()
                .find(|s| s.name() == "orders")
                .expect("the invocation");
            let under = inv.parent_span_id == Some(handler.span_id);
            assert_eq!(
                (under, conv.counters().placed_by_caller),
                (placed == 1, placed),
                "kind {flags:?}"
            );
        }
    }
}
