//! Parsing: a `LogRecord`'s message → span lines, or a reason to skip it.
//!
//! Span lines are found wherever Lambda puts them (FORMAT.md §1): raw stdout, after the Node
//! `ts\treqId\tLEVEL\t` prefix or the Python logging prefix, inside the `message` of the JSON log
//! format, after an export file's timestamp. Messages that carry no marker are skipped with one
//! substring search; messages that carry one but do not decode are counted by reason.

use crate::convert::platform::{self, Platform};
use crate::span_line::{decode, find_marker, DecodeErrorKind, Record};
use std::borrow::Cow;

/// What a message turned out to be.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A span or batch record, with the text it was decoded from (escapes resolved when the
    /// message was JSON) and the request id from a Lambda prefix, if any.
    Spans {
        /// The decoded record.
        record: Record<'a>,
        /// Lambda request id from the Node/Python prefix or the JSON `requestId` field.
        request_id: Option<&'a str>,
    },
    /// One of Lambda's own lines (START, END, REPORT, timeouts, crashes).
    Platform(Platform<'a>),
    /// Not a span line.
    Foreign,
    /// A span line that could not be decoded.
    Malformed(DecodeErrorKind),
}

/// A message, unwrapped from the JSON log format when it is JSON.
#[derive(Debug)]
pub enum Message<'a> {
    /// Text to search for a span line: the JSON `message` field (with the JSON `requestId`),
    /// or the message itself.
    Text(Cow<'a, str>, Option<String>),
    /// A JSON `platform.*` record.
    Platform(Platform<'static>),
}

/// Unwraps the JSON log format: the `message` field, or a `platform.*` record; any other
/// message is returned as it is.
pub fn unwrap_message(message: &str) -> Message<'_> {
    let trimmed = message.trim_start();
    if trimmed.starts_with('{') {
        if trimmed.contains("\"message\"") {
            #[derive(serde::Deserialize)]
            struct JsonLog<'a> {
                #[serde(borrow)]
                message: Option<Cow<'a, str>>,
                #[serde(rename = "requestId")]
                request_id: Option<String>,
            }
            if let Ok(j) = serde_json::from_str::<JsonLog<'_>>(trimmed) {
                if let Some(m) = j.message {
                    return Message::Text(m, j.request_id);
                }
            }
        } else if trimmed.contains("\"platform.") {
            if let Some(p) = serde_json::from_str::<serde_json::Value>(trimmed)
                .ok()
                .as_ref()
                .and_then(platform::parse_json)
            {
                return Message::Platform(p);
            }
        }
    }
    Message::Text(Cow::Borrowed(message), None)
}

/// Finds and decodes the span line in `text` (already extracted by [`message_text`]).
pub fn parse_text(text: &str) -> Parsed<'_> {
    let Some(at) = find_marker(text) else {
        return match platform::parse_text(text) {
            Some(p) => Parsed::Platform(p),
            None => Parsed::Foreign,
        };
    };
    let line = &text[at..];
    // A Node/Python prefix carries the request id: `ts\treqId\tLEVEL\t` or
    // `[LEVEL]\tts\treqId\t`.
    let prefix = &text[..at];
    let request_id = prefix.strip_suffix('\t').and_then(|p| {
        let parts: Vec<&str> = p.split('\t').collect();
        match parts.as_slice() {
            [_, id, _] if looks_like_request_id(id) => Some(*id),
            [_, _, id] if looks_like_request_id(id) => Some(*id),
            _ => None,
        }
    });
    match decode(line) {
        Ok(record) => Parsed::Spans { record, request_id },
        // Lambda splits lines longer than 64 KiB into several events; the first part keeps the
        // marker and loses its terminator. Emitters never write such lines, so this is a
        // fragment of something else that merely contains the marker.
        Err(e) if e.kind == DecodeErrorKind::Truncated && line.len() >= SPLIT_AT => {
            Parsed::Malformed(DecodeErrorKind::Fragment)
        }
        Err(e) => Parsed::Malformed(e.kind),
    }
}

/// The smallest size at which Lambda has been seen to split a line (65,536 bytes).
const SPLIT_AT: usize = 65_000;

/// Lambda request ids are UUIDs.
fn looks_like_request_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LNitg 1700000000000000 1234c service-egress http.method=POST;";

    #[test]
    fn finds_span_lines_in_every_lambda_shape() {
        let req = "c793869b-ee49-115b-a5b6-4fd21e8dedac";
        let shapes = [
            format!("{LINE}\n"),
            format!("2024-02-09T08:42:44.078Z\t{req}\tINFO\t{LINE}\n"),
            format!("[INFO]\t2024-02-09T08:42:44.078Z\t{req}\t{LINE}\n"),
            format!("2024-02-09T08:42:44.078Z {LINE}"),
            format!(
                "{{\"timestamp\":\"2024-02-09T08:42:44.078Z\",\"level\":\"INFO\",\"requestId\":\"{req}\",\"message\":\"{LINE}\"}}"
            ),
        ];
        for (i, m) in shapes.iter().enumerate() {
            let Message::Text(text, json_req) = unwrap_message(m) else {
                panic!()
            };
            match parse_text(&text) {
                Parsed::Spans { record, request_id } => {
                    assert_eq!(record.spans().count(), 1);
                    let want = if matches!(i, 1 | 2) { Some(req) } else { None };
                    assert_eq!(request_id, want, "shape {i}");
                    if i == 4 {
                        assert_eq!(json_req.as_deref(), Some(req));
                    }
                }
                other => panic!("shape {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn foreign_and_malformed_are_told_apart() {
        assert!(matches!(parse_text("hello world"), Parsed::Foreign));
        assert!(matches!(
            parse_text("START RequestId: x"),
            Parsed::Platform(_)
        ));
        assert!(matches!(
            parse_text("we START RequestId: x"),
            Parsed::Foreign
        ));
        let long = format!("SPLN1 {}", "a".repeat(70_000));
        assert!(matches!(
            parse_text(&long),
            Parsed::Malformed(DecodeErrorKind::Fragment)
        ));
        assert!(matches!(
            parse_text("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LN"),
            Parsed::Malformed(DecodeErrorKind::Truncated)
        ));
    }
}
