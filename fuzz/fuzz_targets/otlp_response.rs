//! Fuzz what a tracing backend answers, which spanline does not control: the body of an OTLP
//! export response (`decode_response_proto`, `decode_response_json`: the partial success), the
//! gRPC status details a throttling server sends (`google.rpc.Status` holding a
//! `google.rpc.RetryInfo`), and the HTTP `Retry-After` header (`retry::parse_retry_after`).
//! Nothing may panic; a partial success never carries an empty message; a delay never
//! exceeds its cap.
//!
//! The gRPC decoding lives in `sink/otlp/grpc.rs`, which only the `convert` feature builds
//! (tonic): the messages and the delay arithmetic of its `retry_delay` are repeated here, on
//! the same `prost` version, so that the decoding of a hostile `RetryInfo` (`i64::MAX` seconds,
//! negative nanoseconds) is fuzzed even so.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use spanline::convert::retry::parse_retry_after;
use spanline::convert::sink::otlp::encode::{decode_response_json, decode_response_proto};
use std::time::Duration;

/// `google.rpc.Status`, as carried in `grpc-status-details-bin` (as in `grpc.rs`).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `grpc.rs`'s `retry_delay`: the server's requested delay.
fn retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE)
        .find_map(|a| RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay)
        .map(|d| {
            Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
                .saturating_add(Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0)))
        })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode_response_proto(data) {
        assert_ne!(p.message.as_deref(), Some(""), "{p:?}");
    }
    if let Ok(p) = decode_response_json(data) {
        assert_ne!(p.message.as_deref(), Some(""), "{p:?}");
    }
    // The exporter caps the server's delay by its retry deadline before any arithmetic.
    let deadline = Duration::from_secs(30);
    if let Some(d) = retry_delay(data) {
        assert!(d.min(deadline) <= deadline);
    }
    if let Ok(value) = std::str::from_utf8(data) {
        for now in [0, 1_767_225_600, u64::MAX] {
            if let Some(d) = parse_retry_after(value, now, deadline) {
                assert!(d <= deadline, "{value:?} at {now}: {d:?}");
            }
        }
    }
});
