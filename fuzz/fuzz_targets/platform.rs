//! Fuzz the reading of one log message: Lambda's platform lines in the text format
//! (`platform::parse_text`), `platform.*` records of the JSON log format (`platform::parse_json`,
//! on the input parsed as JSON), the JSON log format's unwrapping (`parse::unwrap_message`) and
//! the span line search behind it (`parse::parse_text_with`) with both marker placements and
//! both UTF-8 flags. Nothing may panic, and:
//! * the invalid-UTF-8 flag changes an outcome only into `Malformed(LossyUtf8)`, and only for a
//!   text that holds U+FFFD;
//! * with the default placement, text written after someone else's words (`user input: …`) is
//!   never decoded as spans, whatever it holds (FORMAT.md "Trust model");
//! * everything a result exposes can be read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::parse::{
    parse_text_with, unwrap_message, MarkerPlacement, Message, ParseOptions, Parsed,
};
use spanline::convert::platform::{self, Platform};
use spanline::span_line::DecodeErrorKind;

/// Reads everything a platform event holds; of a text line, checks the request id it names
/// (a JSON record without `requestId` names the empty one).
fn read_platform(p: &Platform<'_>, text_format: bool) {
    if text_format {
        match p {
            Platform::Start { request_id, .. } => assert!(!request_id.is_empty()),
            Platform::Report(r) => assert!(!r.request_id.is_empty()),
            Platform::Timeout { request_id, .. } | Platform::Crash { request_id, .. } => {
                assert_eq!(
                    request_id.len(),
                    36,
                    "a request id is a UUID: {request_id:?}"
                )
            }
            _ => {}
        }
    }
    let _ = format!("{p:?}");
}

/// What a result was, for comparing two of them.
fn outcome(p: &Parsed<'_>) -> String {
    match p {
        Parsed::Spans { record, request_id } => {
            let mut n = 0;
            for span in record.spans() {
                n += 1;
                let _ = span.name.text();
                let _ = span.status_message.map(|m| m.text());
                let _ = span.request_id.map(|r| r.text());
                for a in span.attributes() {
                    let _ = a.key.text();
                }
                for e in span.events() {
                    let _ = e.name.text();
                    let _ = e.attributes().count();
                }
                for l in span.links() {
                    let _ = l.attributes().count();
                }
                let _ = span.resource().count();
            }
            format!("spans {n} {request_id:?}")
        }
        Parsed::Platform(p) => {
            read_platform(p, true);
            format!("platform {p:?}")
        }
        Parsed::Foreign => "foreign".to_owned(),
        Parsed::Malformed(kind) => format!("malformed {}", kind.code()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(p) = platform::parse_text(message) {
        read_platform(&p, true);
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(message) {
        if let Some(p) = platform::parse_json(&v) {
            read_platform(&p, false);
        }
    }
    let text = match unwrap_message(message) {
        Message::Platform(p) => {
            read_platform(&p, false);
            return;
        }
        Message::Text(text, _request_id) => text,
    };
    for marker in [MarkerPlacement::Start, MarkerPlacement::Anywhere] {
        let plain = parse_text_with(&text, marker);
        let lossy = parse_text_with(
            &text,
            ParseOptions {
                marker,
                lossy_utf8: true,
            },
        );
        let (plain, lossy_outcome) = (outcome(&plain), outcome(&lossy));
        if plain != lossy_outcome {
            assert!(
                matches!(lossy, Parsed::Malformed(DecodeErrorKind::LossyUtf8))
                    && text.contains('\u{fffd}'),
                "the UTF-8 flag turned {plain} into {lossy_outcome}"
            );
        }
    }
    let quoted = format!("user input: {text}");
    let parsed = parse_text_with(&quoted, MarkerPlacement::Start);
    assert!(
        !matches!(parsed, Parsed::Spans { .. }),
        "a span line after other text was decoded: {}",
        outcome(&parsed)
    );
});
