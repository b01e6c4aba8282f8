//! Fuzz the converter's input side: any file content (export lines, JSON payloads, Lambda
//! platform lines, JSON log records, span lines) must convert or be counted, never panic.
//!
//! The records travel the way the pipeline moves them: batches out of `read_input`, each record
//! borrowed by `Converter::push_ref` (the invalid-UTF-8 flag included), the spans drained after
//! every batch. No record is copied into an owned `LogRecord`: under the address sanitizer every
//! allocation is costly, and the owned copies made most of this target's time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::record::RecordBatch;
use spanline::convert::source::file::read_input;
use spanline::convert::source::payload::{BatchOut, Limits};
use spanline::convert::Converter;
use std::path::Path;

/// Small bounds, so that a gzip bomb stops at 1 MiB, and lines are cut and batches handed on
/// at sizes a small input reaches.
const LIMITS: Limits = Limits {
    max_line: 1000,
    max_payload: 1 << 20,
    max_inflated: 1 << 20,
    batch_bytes: 512,
};

fuzz_target!(|data: &[u8]| {
    // Inputs of odd length also put the function's log lines on spans (`--logs events`).
    let logs = if data.len() % 2 == 1 {
        spanline::convert::Logs::Events
    } else {
        spanline::convert::Logs::Off
    };
    let mut conv = Converter::new(spanline::convert::Config {
        logs,
        ..Default::default()
    });
    let mut records = 0u64;
    let mut spans = Vec::new();
    let mut flush = |mut batch: RecordBatch| {
        for r in batch.iter() {
            conv.push_ref(r);
        }
        records += batch.len() as u64;
        conv.drain_ready(&mut spans);
        batch.clear();
        Some(batch)
    };
    let mut out = BatchOut::new(RecordBatch::default(), LIMITS.batch_bytes, &mut flush);
    let read = read_input(
        data,
        Path::new("fuzz"),
        "stream",
        "/aws/lambda/fuzz",
        LIMITS,
        &mut out,
    );
    assert!(out.flush_now(), "the receiver never goes away");
    drop(out);
    spans.extend(conv.finish());

    let s = &conv.summary;
    assert_eq!(s.records, records);
    if let Ok(stats) = read {
        assert_eq!(
            stats.found.records, records,
            "records counted as handed out"
        );
    }
    assert_eq!(
        s.foreign + s.span_lines + s.platform_lines + s.malformed_total(),
        s.records,
        "every record is counted once: {s:?}"
    );
    assert_eq!(s.spans, spans.len() as u64);
});
