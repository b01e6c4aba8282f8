//! Fuzz the converter's input side: any file content (export lines, JSON payloads, Lambda
//! platform lines, JSON log records, span lines) must convert or be counted, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::source::file::parse_content;
use spanline::convert::Converter;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(records) = parse_content(&text, "/aws/lambda/fuzz", "stream") else { return };
    let mut conv = Converter::default();
    for r in &records {
        conv.push(r);
    }
    let spans = conv.finish();
    assert!(conv.summary.records as usize == records.len());
    let _ = spans.len();
});
