//! The converter (feature `convert`): log records → span lines → spans → a sink.
//!
//! The data flows `source` → `parse` → `assemble` → `sink`; [`Summary`] counts every record
//! on the way, malformed lines by reason, so nothing is dropped silently.

pub mod assemble;
pub mod parse;
pub mod platform;
pub mod record;
pub mod sink;
pub mod source;

use crate::span_line::DecodeErrorKind;
use assemble::{Assembler, Invocation, Origin};
use parse::{parse_text, unwrap_message, Message, Parsed};
use platform::Platform;
use record::LogRecord;
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

impl Converter {
    /// Feeds one record.
    pub fn push(&mut self, rec: &LogRecord) {
        self.summary.records += 1;
        let (text, json_req) = match unwrap_message(&rec.message) {
            Message::Platform(p) => return self.platform(rec, p),
            Message::Text(t, r) => (t, r),
        };
        match parse_text(&text) {
            Parsed::Foreign => self.summary.foreign += 1,
            Parsed::Platform(p) => self.platform(rec, p),
            Parsed::Malformed(kind) => {
                *self
                    .summary
                    .malformed
                    .entry(DecodeErrorKind::code(kind))
                    .or_default() += 1;
            }
            Parsed::Spans { record, request_id } => {
                self.summary.span_lines += 1;
                let stream_key = (rec.log_group.clone(), rec.log_stream.clone());
                let stream_req = self.current.get(&stream_key).map(String::as_str);
                let origin = Origin {
                    log_group: &rec.log_group,
                    log_stream: &rec.log_stream,
                    request_id: request_id.or(json_req.as_deref()).or(stream_req),
                };
                for line in record.spans() {
                    let req = line
                        .request_id
                        .map(|r| r.text().into_owned())
                        .or_else(|| origin.request_id.map(str::to_owned));
                    let span = assemble::to_span(&line, &origin);
                    let key = req.map(|r| (rec.log_group.clone(), r));
                    if line.open {
                        self.assembler.push_open(span, key);
                    } else {
                        self.assembler.push_from(span, key);
                    }
                }
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
            | Platform::Crash { request_id, .. } => Some(request_id.as_str()),
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
            // An END alone says nothing worth a span.
            if inv.start_ms.is_none() && inv.timeout.is_none() && inv.crash.is_none() {
                continue;
            }
            self.summary.invocations += 1;
            self.assembler
                .finish_invocation(inv, self.region.as_deref());
        }
        self.current.clear();
        self.cold_pending.clear();
        self.assembler.flush();
        self.take_ready()
    }

    /// [`Converter::finish`], grouped by trace (for the terminal).
    pub fn take_traces(&mut self) -> Vec<Vec<assemble::Span>> {
        assemble::group_by_trace(self.finish())
    }
}
