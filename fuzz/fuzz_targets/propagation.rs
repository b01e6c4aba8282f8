//! Fuzz the emitter's one entry point for outside bytes: the trace headers of an incoming
//! request (`traceparent`/`tracestate`, `b3`, `X-B3-*`, `uber-trace-id`, `ot-tracer-*`,
//! `X-Amzn-Trace-Id`), read by `propagation::extract_with`. The input is a header block, one
//! `name: value` per line. Nothing may panic, and a context extracted with one format and
//! injected again in that format extracts to the same trace, span and sampling decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::emit::propagation::{extract_with, inject, Formats};

/// Every format alone, then all together.
const FORMATS: [Formats; 7] = {
    let none = Formats::NONE;
    [
        Formats { w3c: true, ..none },
        Formats {
            b3_single: true,
            ..none
        },
        Formats {
            b3_multi: true,
            ..none
        },
        Formats {
            jaeger: true,
            ..none
        },
        Formats { ot: true, ..none },
        Formats { xray: true, ..none },
        Formats::ALL,
    ]
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let headers: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    for formats in FORMATS {
        let Some(ctx) = extract_with(&headers, formats) else {
            continue;
        };
        let mut out: Vec<(String, String)> = Vec::new();
        inject(&ctx, formats, &mut out);
        if !ctx.is_valid() {
            assert!(out.is_empty(), "an invalid context was injected: {out:?}");
            continue;
        }
        let Some(again) = extract_with(&out, formats) else {
            panic!("{ctx:?} injected as {out:?} does not extract");
        };
        assert_eq!(
            (again.trace_id, again.span_id, again.sampled),
            (ctx.trace_id, ctx.span_id, ctx.sampled),
            "injected as {out:?}"
        );
    }
});
