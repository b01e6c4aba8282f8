//! Fuzz the converter's input side: any file content (export lines, JSON payloads, Lambda
//! platform lines, JSON log records, span lines) must convert or be counted, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::source::file::read_bytes;
use spanline::convert::source::payload::Limits;
use spanline::convert::Converter;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_line: 64 << 10,
        max_payload: 1 << 20,
        max_inflated: 1 << 20,
        batch_bytes: 64 << 10,
    };
    let Ok(records) = read_bytes(data, "stream", "/aws/lambda/fuzz", limits) else {
        return;
    };
    let mut conv = Converter::default();
    for r in &records {
        conv.push(r);
    }
    let spans = conv.finish();
    assert!(conv.summary.records as usize == records.len());
    let _ = spans.len();
});
