//! The converter (feature `convert`): log records → span lines → spans → a sink.
//!
//! The data flows `source` → `parse` → `assemble` → `sink`; [`Summary`] counts every record
//! on the way, malformed lines by reason, so nothing is dropped silently.

pub mod assemble;
pub mod parse;
pub mod record;
pub mod sink;
pub mod source;

use crate::span_line::DecodeErrorKind;
use assemble::{Assembler, Origin};
use parse::{message_text, parse_text, Parsed};
use record::LogRecord;
use std::collections::BTreeMap;

/// What a conversion saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Log records read.
    pub records: u64,
    /// Records that carried a span or batch record.
    pub span_lines: u64,
    /// Spans produced (after de-duplication).
    pub spans: u64,
    /// Spans seen twice and dropped.
    pub duplicates: u64,
    /// Records that were not span lines.
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
            "{} records, {} span lines, {} spans, {} duplicates, {} other lines, {} malformed",
            self.records,
            self.span_lines,
            self.spans,
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

/// Parses and assembles records, counting as it goes.
#[derive(Debug, Default)]
pub struct Converter {
    /// Collected spans.
    pub assembler: Assembler,
    /// Counters.
    pub summary: Summary,
}

impl Converter {
    /// Feeds one record.
    pub fn push(&mut self, rec: &LogRecord) {
        self.summary.records += 1;
        let (text, json_req) = message_text(&rec.message);
        match parse_text(&text) {
            Parsed::Foreign => self.summary.foreign += 1,
            Parsed::Malformed(kind) => {
                *self
                    .summary
                    .malformed
                    .entry(DecodeErrorKind::code(kind))
                    .or_default() += 1;
            }
            Parsed::Spans { record, request_id } => {
                self.summary.span_lines += 1;
                let origin = Origin {
                    log_group: &rec.log_group,
                    log_stream: &rec.log_stream,
                    request_id: request_id.or(json_req.as_deref()),
                };
                for line in record.spans() {
                    self.assembler.push(assemble::to_span(&line, &origin));
                }
            }
        }
    }

    /// Takes the spans grouped by trace and brings the counters up to date.
    pub fn take_traces(&mut self) -> Vec<Vec<assemble::Span>> {
        let traces = self.assembler.take_traces();
        self.summary.spans += traces.iter().map(|t| t.len() as u64).sum::<u64>();
        self.summary.duplicates = self.assembler.duplicates;
        traces
    }
}
