#![doc = include_str!("FORMAT.md")]
//!
//! # In this crate
//!
//! This module is the contract and nothing else: constants, the encoder that writes records into
//! reusable buffers ([`encode`]) and the borrowing decoder ([`decode`]). No I/O, no optional
//! dependencies; the emitter (`crate::emit`) and the converter both build on it.

pub mod decode;
pub mod encode;
mod ids;

pub use decode::{decode, find_marker, DecodeError, DecodeErrorKind, EscStr, Record, SpanLine};
pub use encode::{BatchEncoder, SpanEncoder, SpanHead};
pub use ids::{SpanId, TraceId, SPAN_ID_B64_LEN, TRACE_ID_B64_LEN};

/// The alphanumeric marker token, without the version.
pub const MARKER: &str = "SPLN";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// What every version-1 record starts with: marker, version and the separating space.
pub const PREFIX: &[u8] = b"SPLN1 ";
/// The CloudWatch filter pattern that selects version-1 span lines in every Lambda log format.
pub const FILTER_PATTERN: &str = "SPLN1";

/// Longest record an emitter writes, in bytes, without the newline.
pub const MAX_LINE: usize = 8192;
/// Longest span or event name, in bytes before escaping.
pub const MAX_NAME: usize = 128;
/// Longest attribute key, in bytes before escaping.
pub const MAX_KEY: usize = 128;
/// Longest string value (also status message, service, request id), in bytes before escaping.
pub const MAX_VALUE: usize = 512;
/// Most attributes per span, event or link.
pub const MAX_ATTRIBUTES: usize = 64;
/// Most events per span.
pub const MAX_EVENTS: usize = 32;
/// Most links per span.
pub const MAX_LINKS: usize = 8;
/// Most spans in one batch record.
pub const MAX_BATCH_SPANS: usize = 64;
/// Bytes kept free at the end of a line for the drop counters and the terminator.
pub const RESERVE: usize = 64;

/// The OpenTelemetry span kind, written as a flag letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SpanKind {
    /// No letter.
    #[default]
    Internal,
    /// `s`
    Server,
    /// `c`
    Client,
    /// `p`
    Producer,
    /// `o`
    Consumer,
}

impl SpanKind {
    /// The flag letter, `None` for internal.
    pub fn letter(self) -> Option<u8> {
        match self {
            SpanKind::Internal => None,
            SpanKind::Server => Some(b's'),
            SpanKind::Client => Some(b'c'),
            SpanKind::Producer => Some(b'p'),
            SpanKind::Consumer => Some(b'o'),
        }
    }

    /// The OpenTracing `span.kind` tag value, or the lowercase OpenTelemetry name.
    pub fn from_name(name: &str) -> Option<SpanKind> {
        Some(match name {
            "internal" => SpanKind::Internal,
            "server" | "rpc.server" => SpanKind::Server,
            "client" | "rpc.client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }

    /// The lowercase OpenTelemetry name.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// The span status code, written as a flag letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StatusCode {
    /// No letter.
    #[default]
    Unset,
    /// `k`
    Ok,
    /// `e`
    Error,
}

impl StatusCode {
    /// The flag letter, `None` for unset.
    pub fn letter(self) -> Option<u8> {
        match self {
            StatusCode::Unset => None,
            StatusCode::Ok => Some(b'k'),
            StatusCode::Error => Some(b'e'),
        }
    }

    /// The lowercase name used in fixtures.
    pub fn name(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
}

/// A typed attribute value as an emitter hands it to the encoder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// `key=value`
    Str(&'a str),
    /// `key#123`
    Int(i64),
    /// `key~1.5`
    Float(f64),
    /// `key!t`
    Bool(bool),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
