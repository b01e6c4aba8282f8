//! Parsing: a `LogRecord`'s message → span lines, or a reason to skip it.
//!
//! Span lines are found where emitters put them (FORMAT.md §1): at the start of raw stdout,
//! after the Node `ts\treqId\tLEVEL\t` prefix or the Python logging prefix, at the start of the
//! `message` of the JSON log format, after an export file's timestamp. A marker anywhere else is
//! counted (`marker_not_at_start`), not decoded, unless [`MarkerPlacement::Anywhere`] is asked
//! for: that is the trust model (FORMAT.md "Trust model"). Messages that carry no marker are
//! skipped with one substring search; messages that carry one but do not decode are counted by
//! reason.

use crate::convert::platform::{self, Platform};
use crate::span_line::{decode, find_marker, DecodeErrorKind, Record, MARKER};
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

/// Where a span line's marker counts (FORMAT.md "Where the marker is found", "Trust model").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarkerPlacement {
    /// Only where an emitter puts it: at the start of the message text, after the runtime's
    /// own prefix (Node `ts\treqId\tLEVEL\t`, Python logging `[LEVEL]\tts\treqId\t`, an export
    /// file's `<timestamp> `; for the JSON log format the text is the `message` field). A
    /// marker anywhere else is text that quotes a span line, maybe a forged one, and is counted
    /// as [`DecodeErrorKind::MarkerNotAtStart`]. The default.
    #[default]
    Start,
    /// After any space or tab anywhere in the message, as [`find_marker`] finds it: for
    /// emitters that put their own text before the line (a logging library's prefix). Anyone
    /// whose text the function logs can then make a span appear.
    Anywhere,
}

/// How [`parse_text_with`] reads a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Where the marker counts.
    pub marker: MarkerPlacement,
    /// The text was decoded from bytes that were not all UTF-8, replacing them with U+FFFD
    /// (`String::from_utf8_lossy` returned `Cow::Owned`). A span line that then contains
    /// U+FFFD is counted as [`DecodeErrorKind::LossyUtf8`] instead of being decoded with the
    /// replacement characters in it.
    ///
    /// Only the reader knows this: U+FFFD is valid UTF-8 and a legal character in a span
    /// line's strings (FORMAT.md §2 passes all UTF-8 other than the escaped bytes through), so
    /// the parser cannot tell a replaced byte from an emitter that wrote U+FFFD on purpose.
    pub lossy_utf8: bool,
}

impl From<MarkerPlacement> for ParseOptions {
    fn from(marker: MarkerPlacement) -> Self {
        ParseOptions {
            marker,
            ..ParseOptions::default()
        }
    }
}

/// Finds and decodes the span line in `text` (already unwrapped by [`unwrap_message`]), with
/// the default, strict [`ParseOptions`]: the marker counts only at the start, after a runtime
/// prefix.
pub fn parse_text(text: &str) -> Parsed<'_> {
    parse_text_with(text, ParseOptions::default())
}

/// [`parse_text`] with options: `parse_text_with(text, MarkerPlacement::Anywhere)`.
pub fn parse_text_with(text: &str, options: impl Into<ParseOptions>) -> Parsed<'_> {
    let options = options.into();
    let Some(anywhere) = find_marker(text) else {
        return match platform::parse_text(text) {
            Some(p) => Parsed::Platform(p),
            None => Parsed::Foreign,
        };
    };
    let (at, request_id) = match options.marker {
        MarkerPlacement::Start => {
            let (len, request_id) = runtime_prefix(text);
            if !marker_at(text, len) {
                // Text that mentions a span line: a platform line quoting user input (a crash
                // message) is still that platform line; anything else is counted.
                return match platform::parse_text(text) {
                    Some(p) => Parsed::Platform(p),
                    None => Parsed::Malformed(DecodeErrorKind::MarkerNotAtStart),
                };
            }
            (len, request_id)
        }
        MarkerPlacement::Anywhere => (anywhere, loose_request_id(&text[..anywhere])),
    };
    let line = &text[at..];
    if options.lossy_utf8 && line.contains('\u{fffd}') {
        return Parsed::Malformed(DecodeErrorKind::LossyUtf8);
    }
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

/// Whether `SPLN<digit>` starts at byte `at` of `text`.
fn marker_at(text: &str, at: usize) -> bool {
    let rest = text.as_bytes().get(at..).unwrap_or_default();
    rest.starts_with(MARKER.as_bytes()) && rest.get(MARKER.len()).is_some_and(u8::is_ascii_digit)
}

/// The length of the prefix a Lambda runtime or CloudWatch puts before what the function
/// printed, and the request id it names (FORMAT.md "Where the marker is found"):
///
/// * Node: `2024-02-09T08:42:44.078Z\t<requestId>\tINFO\t`
/// * Python logging: `[INFO]\t2024-02-09T08:42:44.078Z\t<requestId>\t`
/// * an export file line: `2024-02-09T08:42:44.078Z ` (when the reader left it on)
///
/// Every part is checked (the timestamp's shape, an upper-case level, a request id without
/// spaces), so a message that only contains tabs does not pass for a prefix. `(0, None)` when
/// there is none: raw stdout and the JSON `message` field start with what was printed.
fn runtime_prefix(text: &str) -> (usize, Option<&str>) {
    let b = text.as_bytes();
    // Node: ts \t req \t LEVEL \t
    if is_timestamp(b) && b.get(TIMESTAMP_LEN) == Some(&b'\t') {
        let rest = &text[TIMESTAMP_LEN + 1..];
        if let Some((req, rest2)) = rest.split_once('\t') {
            if let Some((level, _)) = rest2.split_once('\t') {
                if is_request_id_field(req) && is_level(level) {
                    let len = TIMESTAMP_LEN + 1 + req.len() + 1 + level.len() + 1;
                    return (len, looks_like_request_id(req).then_some(req));
                }
            }
        }
    }
    // Python logging: [LEVEL] \t ts \t req \t
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((level, rest)) = rest.split_once("]\t") {
            let rb = rest.as_bytes();
            if is_level(level) && is_timestamp(rb) && rb.get(TIMESTAMP_LEN) == Some(&b'\t') {
                if let Some((req, _)) = rest[TIMESTAMP_LEN + 1..].split_once('\t') {
                    if is_request_id_field(req) {
                        let len = 1 + level.len() + 2 + TIMESTAMP_LEN + 1 + req.len() + 1;
                        return (len, looks_like_request_id(req).then_some(req));
                    }
                }
            }
        }
    }
    // Export file: ts ' '
    if is_timestamp(b) && b.get(TIMESTAMP_LEN) == Some(&b' ') {
        return (TIMESTAMP_LEN + 1, None);
    }
    (0, None)
}

/// A line of the function's own output that is neither a span line nor a platform line, split
/// into what the runtime put before it and the message: `(request id, level, message)`.
///
/// * Node: `2024-02-09T08:42:44.078Z\t<requestId>\tERROR\tmessage`
/// * Python logging: `[ERROR]\t2024-02-09T08:42:44.078Z\t<requestId>\tmessage`
/// * the Python runtime's own error line: `[ERROR] Runtime.ImportModuleError: …`
/// * anything else (raw stdout, a JSON log record's `message`): no request id, no level.
pub fn log_line(text: &str) -> (Option<&str>, Option<&str>, &str) {
    let b = text.as_bytes();
    if is_timestamp(b) && b.get(TIMESTAMP_LEN) == Some(&b'\t') {
        let rest = &text[TIMESTAMP_LEN + 1..];
        if let Some((req, rest2)) = rest.split_once('\t') {
            if let Some((level, message)) = rest2.split_once('\t') {
                if is_request_id_field(req) && is_level(level) {
                    return (
                        looks_like_request_id(req).then_some(req),
                        Some(level),
                        message,
                    );
                }
            }
        }
    }
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((level, rest)) = rest.split_once("]\t") {
            let rb = rest.as_bytes();
            if is_level(level) && is_timestamp(rb) && rb.get(TIMESTAMP_LEN) == Some(&b'\t') {
                if let Some((req, message)) = rest[TIMESTAMP_LEN + 1..].split_once('\t') {
                    if is_request_id_field(req) {
                        return (
                            looks_like_request_id(req).then_some(req),
                            Some(level),
                            message,
                        );
                    }
                }
            }
        }
        if let Some((level, message)) = rest.split_once("] ") {
            if is_level(level) {
                return (None, Some(level), message);
            }
        }
    }
    (None, None, text)
}

/// `2024-02-09T08:42:44.078Z`: what Node's `toISOString`, the Python runtime's log format and
/// CloudWatch export files write.
const TIMESTAMP_LEN: usize = 24;

fn is_timestamp(b: &[u8]) -> bool {
    let Some(t) = b.get(..TIMESTAMP_LEN) else {
        return false;
    };
    // The separators first: most messages fail there, at once.
    if t[4] != b'-'
        || t[7] != b'-'
        || t[10] != b'T'
        || t[13] != b':'
        || t[16] != b':'
        || t[19] != b'.'
        || t[23] != b'Z'
    {
        return false;
    }
    const DIGITS: [usize; 17] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    DIGITS.iter().all(|&i| t[i].is_ascii_digit())
}

/// A log level as the runtimes print it: `INFO`, `WARN`, `WARNING`, `ERROR`, `DEBUG`, `TRACE`,
/// `FATAL`, `CRITICAL`, …
fn is_level(s: &str) -> bool {
    (3..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// The request id field of a prefix: a UUID, or what the runtimes print outside an invocation
/// (empty, `undefined`); at most 64 characters from `[0-9A-Za-z-]`.
fn is_request_id_field(s: &str) -> bool {
    s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The request id of a Node/Python prefix before a marker found anywhere: `ts\treqId\tLEVEL\t`
/// or `[LEVEL]\tts\treqId\t`.
fn loose_request_id(prefix: &str) -> Option<&str> {
    prefix.strip_suffix('\t').and_then(|p| {
        let parts: Vec<&str> = p.split('\t').collect();
        match parts.as_slice() {
            [_, id, _] if looks_like_request_id(id) => Some(*id),
            [_, _, id] if looks_like_request_id(id) => Some(*id),
            _ => None,
        }
    })
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
    fn log_lines_give_their_request_id_level_and_message() {
        let req = "c793869b-ee49-115b-a5b6-4fd21e8dedac";
        let node = format!("2024-02-09T08:42:44.078Z\t{req}\tERROR\tboom\n  at x");
        assert_eq!(log_line(&node), (Some(req), Some("ERROR"), "boom\n  at x"));
        let python = format!("[WARNING]\t2024-02-09T08:42:44.078Z\t{req}\tslow call");
        assert_eq!(log_line(&python), (Some(req), Some("WARNING"), "slow call"));
        assert_eq!(
            log_line("[ERROR] Runtime.ImportModuleError: no module"),
            (None, Some("ERROR"), "Runtime.ImportModuleError: no module")
        );
        // Outside an invocation the runtimes print `undefined` or nothing as the request id.
        assert_eq!(
            log_line("2024-02-09T08:42:44.078Z\tundefined\tINFO\tloading"),
            (None, Some("INFO"), "loading")
        );
        assert_eq!(log_line("plain stdout"), (None, None, "plain stdout"));
        assert_eq!(log_line("[not a level] x"), (None, None, "[not a level] x"));
    }

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

    const REQ: &str = "c793869b-ee49-115b-a5b6-4fd21e8dedac";
    const TS: &str = "2024-02-09T08:42:44.078Z";

    /// Messages that quote a span line where no emitter puts one: an application logging what
    /// a user typed.
    fn forged() -> Vec<String> {
        vec![
            format!("search query from user: {LINE}"),
            format!("{TS}\t{REQ}\tINFO\tsearch query from user: {LINE}"),
            format!("[INFO]\t{TS}\t{REQ}\tuser said {LINE}"),
            format!(" {LINE}"),
            format!("\t{LINE}"),
            format!("{TS}  {LINE}"),
            // A prefix faked inside the message is not at the start of it.
            format!("query: {TS}\t{REQ}\tINFO\t{LINE}"),
            format!("query:\t{TS}\t{REQ}\tINFO\t{LINE}"),
            // Tabs alone do not make a prefix.
            format!("a\tb\tc\t{LINE}"),
            format!("{TS}\t{REQ}\tinfo\t{LINE}"),
            format!("[INFO]\tyesterday\t{REQ}\t{LINE}"),
        ]
    }

    #[test]
    fn a_marker_elsewhere_is_counted_not_decoded() {
        for m in forged() {
            assert!(
                matches!(
                    parse_text(&m),
                    Parsed::Malformed(DecodeErrorKind::MarkerNotAtStart)
                ),
                "{m:?}: {:?}",
                parse_text(&m)
            );
        }
        // The JSON log format: the start of `message` only.
        let json = format!("{{\"requestId\":\"{REQ}\",\"message\":\"user typed {LINE}\"}}");
        let Message::Text(text, _) = unwrap_message(&json) else {
            panic!()
        };
        assert!(matches!(
            parse_text(&text),
            Parsed::Malformed(DecodeErrorKind::MarkerNotAtStart)
        ));
        assert_eq!(
            DecodeErrorKind::MarkerNotAtStart.code(),
            "marker_not_at_start"
        );
    }

    #[test]
    fn anywhere_restores_the_permissive_search() {
        for m in forged() {
            assert!(
                matches!(
                    parse_text_with(&m, MarkerPlacement::Anywhere),
                    Parsed::Spans { .. }
                ),
                "{m:?}"
            );
        }
        let m = format!("{TS}\t{REQ}\tINFO\tmy-logger: {LINE}");
        match parse_text_with(&m, MarkerPlacement::Anywhere) {
            Parsed::Spans { request_id, .. } => assert_eq!(request_id, None),
            other => panic!("{other:?}"),
        }
        // Lines where emitters put them are read the same either way.
        let m = format!("{TS}\t{REQ}\tINFO\t{LINE}");
        for placement in [MarkerPlacement::Start, MarkerPlacement::Anywhere] {
            match parse_text_with(&m, placement) {
                Parsed::Spans { request_id, .. } => assert_eq!(request_id, Some(REQ)),
                other => panic!("{placement:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn runtime_prefixes_outside_an_invocation_and_other_levels() {
        let shapes = [
            format!("{TS}\tundefined\tINFO\t{LINE}"),
            format!("{TS}\t{REQ}\tWARN\t{LINE}"),
            format!("[WARNING]\t{TS}\t\t{LINE}"),
            format!("[CRITICAL]\t{TS}\t{REQ}\t{LINE}"),
        ];
        for m in shapes {
            assert!(matches!(parse_text(&m), Parsed::Spans { .. }), "{m:?}");
        }
    }

    #[test]
    fn a_platform_line_quoting_a_marker_stays_a_platform_line() {
        let m = format!(
            "{TS}\t{REQ}\tERROR\tInvoke Error \t{{\"errorType\":\"Error\",\"errorMessage\":\"bad input {LINE}\"}}"
        );
        assert!(
            matches!(parse_text(&m), Parsed::Platform(_)),
            "{:?}",
            parse_text(&m)
        );
    }

    #[test]
    fn replaced_bytes_in_a_span_line_are_counted_when_the_reader_says_so() {
        let bytes =
            b"SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LNitg 1700000000000000 1234c caf\xe9;";
        let text = String::from_utf8_lossy(bytes);
        assert!(matches!(text, Cow::Owned(_)));
        let lossy = ParseOptions {
            lossy_utf8: true,
            ..ParseOptions::default()
        };
        assert!(matches!(
            parse_text_with(&text, lossy),
            Parsed::Malformed(DecodeErrorKind::LossyUtf8)
        ));
        assert_eq!(DecodeErrorKind::LossyUtf8.code(), "lossy_utf8");
        // U+FFFD is a legal character: written by an emitter, it is just text.
        match parse_text(&text) {
            Parsed::Spans { record, .. } => {
                let span = record.spans().next().unwrap();
                assert_eq!(span.name.text(), "caf\u{fffd}");
            }
            other => panic!("{other:?}"),
        }
        // A replacement before the line (in text that is not part of it) does not count.
        let m = format!("caf\u{fffd}: {LINE}");
        let anywhere_lossy = ParseOptions {
            marker: MarkerPlacement::Anywhere,
            lossy_utf8: true,
        };
        assert!(matches!(
            parse_text_with(&m, anywhere_lossy),
            Parsed::Spans { .. }
        ));
    }
}
