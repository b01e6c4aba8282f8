//! Fuzz the span line decoder: any input must decode or be rejected with a reason, never
//! panic, and everything a decoded record exposes must be readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::span_line::{decode, find_marker};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let line = match find_marker(text) {
        Some(at) => &text[at..],
        None => text,
    };
    if let Ok(record) = decode(line) {
        for span in record.spans() {
            let _ = span.name.text();
            let _ = span.status_message.map(|m| m.text());
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
    }
});
