//! The converter (feature `convert`): log records → span lines → spans → a sink.
//!
//! The data flows `source` → `parse` → `assemble` → `sink`; [`Summary`] counts every record
//! on the way, malformed lines by reason, so nothing is dropped silently.

pub mod assemble;
pub mod checkpoint;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod parse;
pub mod platform;
pub mod printable;
pub mod record;
pub mod sink;
pub mod source;

use crate::span_line::DecodeErrorKind;
use assemble::{Assembler, Invocation, Origin};
use parse::{parse_text, unwrap_message, Message, Parsed};
use platform::Platform;
use record::{LogRecord, LogRecordRef};
use std::collections::{BTreeMap, HashMap};

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
}

impl Summary {
    /// Total malformed span lines.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
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
        for (k, v) in &other.malformed {
            *self.malformed.entry(k).or_default() += v;
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
        s
    }
}

/// Parses and assembles records, counting as it goes. Records of one log stream must arrive in
/// stream order (spans printed between a request's START and END belong to that request).
#[derive(Debug, Default)]
pub struct Converter {
    /// Collected spans.
    pub assembler: Assembler,
    /// Counters.
    pub summary: Summary,
    /// `cloud.region` for invocation spans, when known.
    pub region: Option<String>,
    /// Service names for log groups (`--service`).
    pub services: assemble::ServiceMap,
    invocations: BTreeMap<(String, String), Invocation>,
    current: HashMap<(String, String), String>,
    cold_pending: HashMap<(String, String), i64>,
    /// Invocations already finished (bounded), so that a line of theirs that arrives after the
    /// REPORT (lines of one millisecond come in any order) does not start a new one.
    finished: std::collections::HashSet<(String, String)>,
    finished_order: std::collections::VecDeque<(String, String)>,
}

/// How many finished invocations the converter remembers.
const FINISHED_CAPACITY: usize = 100_000;

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

impl Converter {
    /// Feeds one record.
    pub fn push(&mut self, rec: &LogRecord) {
        self.push_record(rec.as_ref(), Some(rec));
    }

    /// Feeds one record borrowed from a source's buffer (what streaming sources use): a record
    /// that is neither a span line nor a platform line, the common case, costs no allocation.
    pub fn push_ref(&mut self, rec: LogRecordRef<'_>) {
        self.push_record(rec, None);
    }

    /// [`Converter::push`] and [`Converter::push_ref`]; `owned` is `rec` itself when the caller
    /// has it owned, which spares a copy for platform lines.
    fn push_record(&mut self, rec: LogRecordRef<'_>, owned: Option<&LogRecord>) {
        self.summary.records += 1;
        if surely_foreign(rec.message) {
            self.summary.foreign += 1;
            return;
        }
        let (text, json_req) = match unwrap_message(rec.message) {
            Message::Platform(p) => return self.platform_ref(rec, owned, p),
            Message::Text(t, r) => (t, r),
        };
        match parse_text(&text) {
            Parsed::Foreign => self.summary.foreign += 1,
            Parsed::Platform(p) => self.platform_ref(rec, owned, p),
            Parsed::Malformed(kind) => {
                *self
                    .summary
                    .malformed
                    .entry(DecodeErrorKind::code(kind))
                    .or_default() += 1;
            }
            Parsed::Spans { record, request_id } => {
                self.summary.span_lines += 1;
                // The stream's current invocation is the last resort: looked up (which needs
                // an owned key) only when the line's prefix names no request.
                let request_id = match request_id.or(json_req.as_deref()) {
                    Some(r) => Some(r),
                    None => self
                        .current
                        .get(&(rec.log_group.to_owned(), rec.log_stream.to_owned()))
                        .map(String::as_str),
                };
                let origin = Origin {
                    log_group: rec.log_group,
                    log_stream: rec.log_stream,
                    request_id,
                };
                for line in record.spans() {
                    let req = line
                        .request_id
                        .map(|r| r.text().into_owned())
                        .or_else(|| origin.request_id.map(str::to_owned));
                    let span = assemble::to_span(&line, &origin);
                    // A line of an invocation that already ended (written after its REPORT, or
                    // re-read after it was finished) has nothing left to wait for.
                    let key = req
                        .map(|r| (rec.log_group.to_owned(), r))
                        .filter(|k| !self.finished.contains(k));
                    if line.open {
                        self.assembler.push_open(span, key);
                    } else {
                        self.assembler.push_from(span, key);
                    }
                }
            }
        }
    }

    /// [`Converter::platform`] for a borrowed record. Platform lines are a few per invocation;
    /// the copy of group and stream is small next to what the invocation keeps anyway.
    fn platform_ref(&mut self, rec: LogRecordRef<'_>, owned: Option<&LogRecord>, p: Platform) {
        match owned {
            Some(r) => self.platform(r, p),
            None => {
                // `platform` reads group, stream and time only.
                let r = LogRecord {
                    log_group: rec.log_group.to_owned(),
                    log_stream: rec.log_stream.to_owned(),
                    timestamp_ms: rec.timestamp_ms,
                    ..LogRecord::default()
                };
                self.platform(&r, p);
            }
        }
    }

    fn mark_finished(&mut self, key: (String, String)) {
        if self.finished.insert(key.clone()) {
            self.finished_order.push_back(key);
            if self.finished_order.len() > FINISHED_CAPACITY {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    fn invocation(&mut self, rec: &LogRecord, request_id: &str) -> &mut Invocation {
        let inv = self
            .invocations
            .entry((rec.log_group.clone(), request_id.to_owned()))
            .or_insert_with(|| Invocation {
                log_group: rec.log_group.clone(),
                log_stream: rec.log_stream.clone(),
                request_id: request_id.to_owned(),
                ..Invocation::default()
            });
        if rec.timestamp_ms > 0 {
            let t = rec.timestamp_ms;
            inv.last_ms = Some(inv.last_ms.map_or(t, |l| l.max(t)));
        }
        inv
    }

    fn platform(&mut self, rec: &LogRecord, p: Platform) {
        self.summary.platform_lines += 1;
        let late = match &p {
            Platform::Start { request_id, .. }
            | Platform::End { request_id }
            | Platform::Timeout { request_id, .. }
            | Platform::Crash { request_id, .. }
            | Platform::HandlerError { request_id, .. } => Some(request_id.as_str()),
            Platform::Report(r) => Some(r.request_id.as_str()),
            Platform::InitStart { .. } => None,
        }
        .is_some_and(|r| {
            self.finished
                .contains(&(rec.log_group.clone(), r.to_owned()))
        });
        if late {
            return;
        }
        let stream_key = (rec.log_group.clone(), rec.log_stream.clone());
        let ts = (rec.timestamp_ms > 0).then_some(rec.timestamp_ms);
        match p {
            Platform::InitStart { .. } => {
                self.cold_pending.insert(stream_key, ts.unwrap_or(0));
            }
            Platform::Start {
                request_id,
                version,
                tracing,
            } => {
                let cold = self.cold_pending.remove(&stream_key);
                let inv = self.invocation(rec, &request_id);
                inv.start_ms = ts;
                inv.version = Some(version).filter(|v| !v.is_empty());
                inv.tracing = tracing.or(inv.tracing.take());
                if let Some(c) = cold {
                    inv.init_start_ms = Some(c).filter(|c| *c > 0);
                }
                self.current.insert(stream_key, request_id);
            }
            Platform::End { request_id } => {
                self.invocation(rec, &request_id);
            }
            Platform::Report(r) => {
                // REPORT is the last line Lambda writes for an invocation: finish it now, so
                // its spans are released and memory stays bounded.
                let req = r.request_id.clone();
                self.invocation(rec, &req).report = Some(r);
                let key = (rec.log_group.clone(), req);
                if let Some(inv) = self.invocations.remove(&key) {
                    self.summary.invocations += 1;
                    self.assembler
                        .finish_invocation(&inv, self.region.as_deref());
                }
                self.mark_finished(key);
            }
            Platform::Timeout {
                request_id,
                message,
            } => {
                self.invocation(rec, &request_id).timeout = Some(message);
            }
            Platform::HandlerError {
                request_id,
                message,
            } => {
                // Python's line names no request: the stream's current one failed.
                let request_id = if request_id.is_empty() {
                    match self.current.get(&stream_key) {
                        Some(r) => r.clone(),
                        None => return,
                    }
                } else {
                    request_id
                };
                self.invocation(rec, &request_id).handler_error = Some(message);
            }
            Platform::Crash {
                request_id,
                message,
                out_of_memory,
            } => {
                self.invocation(rec, &request_id).crash = Some((message, out_of_memory));
            }
        }
    }

    /// Takes the spans that are complete (see [`Assembler`]).
    pub fn take_ready(&mut self) -> Vec<assemble::Span> {
        let mut spans = self.assembler.take_ready();
        for s in &mut spans {
            self.services.apply(s);
        }
        self.summary.spans += spans.len() as u64;
        self.summary.duplicates = self.assembler.duplicates;
        spans
    }

    /// Ends the input: finishes the invocations whose REPORT line never came (crashed, or cut
    /// off by the time range) with what is known, and takes every remaining span.
    pub fn finish(&mut self) -> Vec<assemble::Span> {
        let invocations = std::mem::take(&mut self.invocations);
        for inv in invocations.values() {
            self.end_without_report(inv);
        }
        self.current.clear();
        self.cold_pending.clear();
        self.assembler.flush();
        self.take_ready()
    }

    /// Ends an invocation whose REPORT line never came with what is known of it.
    fn end_without_report(&mut self, inv: &Invocation) {
        // An END alone says nothing worth a span.
        if inv.start_ms.is_none() && inv.timeout.is_none() && inv.crash.is_none() {
            return;
        }
        self.summary.invocations += 1;
        self.assembler
            .finish_invocation(inv, self.region.as_deref());
    }

    /// The earliest time (ms) of what `log_group` still holds back: invocations whose REPORT
    /// line has not come and the spans waiting for them. A reader that stops here (the
    /// forwarder) must read again from this time on its next run, or those spans are lost.
    pub fn oldest_pending_ms(&self, log_group: &str) -> Option<i64> {
        let invocations = self
            .invocations
            .values()
            .filter(|i| i.log_group == log_group)
            .filter_map(|i| i.times_ms().min());
        let held = self.assembler.oldest_held_ms(log_group);
        invocations.chain(held).min()
    }

    /// Finishes what has waited too long to be completed by lines still to come: invocations
    /// whose last line is older than `before_ms` (they crashed or were cut off; Lambda ends
    /// every invocation within 15 minutes) and spans held for an invocation never seen, then
    /// takes every complete span. What is newer stays held.
    pub fn finish_stale(&mut self, before_ms: i64) -> Vec<assemble::Span> {
        let stale: Vec<(String, String)> = self
            .invocations
            .iter()
            .filter(|(_, i)| i.times_ms().max().is_none_or(|t| t < before_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(inv) = self.invocations.remove(&key) {
                self.end_without_report(&inv);
                self.current.retain(|_, r| *r != key.1);
                self.mark_finished(key);
            }
        }
        let live: std::collections::HashSet<&(String, String)> = self.invocations.keys().collect();
        self.assembler.flush_stale(before_ms, |k| live.contains(k));
        self.take_ready()
    }

    /// [`Converter::finish`], grouped by trace (for the terminal).
    pub fn take_traces(&mut self) -> Vec<Vec<assemble::Span>> {
        assemble::group_by_trace(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
