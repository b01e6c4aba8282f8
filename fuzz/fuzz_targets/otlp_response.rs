//! Fuzz what a tracing backend answers, which spanline does not control: the body of an OTLP
//! export response (`decode_response_proto`, `decode_response_json`: the partial success), the
//! gRPC status details a throttling server sends (`google.rpc.Status` holding a
//! `google.rpc.RetryInfo`), and the HTTP `Retry-After` header (`retry::parse_retry_after`).
//! Nothing may panic; a partial success never carries an empty message; a delay never
//! exceeds its cap.
//!
//! The gRPC status details are decoded by the core's `encode::grpc_retry_delay`, the function
//! the gRPC transport calls, so a hostile `RetryInfo` (`i64::MAX` seconds, negative
//! nanoseconds) is fuzzed where it is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spanline::convert::retry::parse_retry_after;
use spanline::convert::sink::otlp::encode::{
    decode_response_json, decode_response_proto, grpc_retry_delay,
};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_response_proto(data) {
        assert_ne!(p.message.as_deref(), Some(""), "{p:?}");
    }
    if let Ok(p) = decode_response_json(data) {
        assert_ne!(p.message.as_deref(), Some(""), "{p:?}");
    }
    // Decoding the server's gRPC status details must not panic (the exporter caps what it
    // returns by its retry deadline).
    let _ = grpc_retry_delay(data);
    let deadline = Duration::from_secs(30);
    if let Ok(value) = std::str::from_utf8(data) {
        for now in [0, 1_767_225_600, u64::MAX] {
            if let Some(d) = parse_retry_after(value, now, deadline) {
                assert!(d <= deadline, "{value:?} at {now}: {d:?}");
            }
        }
    }
});
