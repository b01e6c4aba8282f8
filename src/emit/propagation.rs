//! Header inject/extract for [`SpanContext`]s: the emit side's version of OpenTracing's
//! `Tracer::inject` / `Tracer::extract` with `FORMAT_HTTP_HEADERS` and `FORMAT_TEXT_MAP`.
//!
//! Lambda handlers [`extract`] the parent context from the header map of the triggering event
//! (API Gateway v1/v2, ALB and function URL events spell header names with varying case, so every
//! [`Extractor`] looks keys up case-insensitively). Callers that send HTTP requests [`inject`] the
//! context of their client span into the outgoing headers. Six wire formats are understood:
//! W3C Trace Context (`traceparent` / `tracestate`), B3 single (`b3`) and multi (`X-B3-*`) header,
//! Jaeger (`uber-trace-id`), OpenTracing/Lightstep (`ot-tracer-*`) and AWS X-Ray
//! (`X-Amzn-Trace-Id`, also the `_X_AMZN_TRACE_ID` environment variable, see
//! [`extract_xray_env`]). Which ones to write is a [`Formats`] value, usually read from
//! `OTEL_PROPAGATORS` ([`Formats::from_otel_propagators`]).
//!
//! Extraction never fails loudly: a malformed value of one format is skipped and the next format
//! is tried; `None` means there is nothing to parent to, and the handler starts a new trace.
//!
//! ```
//! use spanline::emit::propagation::{extract, inject, Formats};
//! use std::collections::HashMap;
//!
//! // An API Gateway event's headers: the key case depends on the client.
//! let mut headers = HashMap::new();
//! headers.insert(
//!     "TraceParent".to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
//! );
//! let parent = extract(&headers).expect("a parent context");
//! assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(parent.sampled);
//!
//! // An outgoing request: propagate in the formats `OTEL_PROPAGATORS` names.
//! let mut outgoing: Vec<(String, String)> = Vec::new();
//! inject(&parent, Formats::from_otel_propagators("tracecontext,xray"), &mut outgoing);
//! assert_eq!(outgoing.len(), 2);
//! assert_eq!(
//!     outgoing[1].1,
//!     "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1",
//! );
//! ```

use super::SpanContext;
use crate::span_line::{SpanId, TraceId};
use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const B3_SINGLE: &str = "b3";
const B3_TRACE_ID: &str = "X-B3-TraceId";
const B3_SPAN_ID: &str = "X-B3-SpanId";
const B3_SAMPLED: &str = "X-B3-Sampled";
const B3_FLAGS: &str = "X-B3-Flags";
const JAEGER: &str = "uber-trace-id";
const OT_TRACE_ID: &str = "ot-tracer-traceid";
const OT_SPAN_ID: &str = "ot-tracer-spanid";
const OT_SAMPLED: &str = "ot-tracer-sampled";
const XRAY: &str = "X-Amzn-Trace-Id";
const XRAY_ENV: &str = "_X_AMZN_TRACE_ID";
const OTEL_PROPAGATORS: &str = "OTEL_PROPAGATORS";

// ---------------------------------------------------------------------------------------------
// Carriers
// ---------------------------------------------------------------------------------------------

/// Read access to a carrier of propagation headers (OpenTracing's `TextMapReader`).
///
/// Lookups are case-insensitive: HTTP header names are, and Lambda event sources pass them on
/// in whatever case the client used (`traceparent`, `TraceParent`, `X-AMZN-TRACE-ID`, ...).
/// Implementations compare names with [`str::eq_ignore_ascii_case`]. When several keys differ only
/// in case, an exact match wins where the carrier can find one cheaply, otherwise the first match
/// in iteration order.
pub trait Extractor {
    /// The value stored under `key`, compared ASCII case-insensitively; `None` when absent.
    fn get(&self, key: &str) -> Option<&str>;
}

/// `String`, `&str`, `Box<str>`... as `&str` (helper for the generic carrier impls).
fn as_str<V: AsRef<str> + ?Sized>(v: &V) -> &str {
    v.as_ref()
}

impl<T: Extractor + ?Sized> Extractor for &T {
    fn get(&self, key: &str) -> Option<&str> {
        T::get(*self, key)
    }
}

/// Header maps as Lambda event types carry them (`HashMap<String, String>`); any key type that
/// borrows as `str` and any hasher.
impl<K, V, S> Extractor for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = HashMap::get(self, key) {
            return Some(as_str(v));
        }
        self.iter()
            .find(|(k, _)| <K as Borrow<str>>::borrow(k).eq_ignore_ascii_case(key))
            .map(|(_, v)| as_str(v))
    }
}

impl<K, V> Extractor for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = BTreeMap::get(self, key) {
            return Some(as_str(v));
        }
        self.iter()
            .find(|(k, _)| <K as Borrow<str>>::borrow(k).eq_ignore_ascii_case(key))
            .map(|(_, v)| as_str(v))
    }
}

/// Name/value pairs, e.g. `[("traceparent", "00-...")]` or `Vec<(String, String)>`; the first
/// pair whose name matches wins.
impl<K: AsRef<str>, V: AsRef<str>> Extractor for [(K, V)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| as_str(k).eq_ignore_ascii_case(key))
            .map(|(_, v)| as_str(v))
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> Extractor for [(K, V); N] {
    fn get(&self, key: &str) -> Option<&str> {
        <[(K, V)] as Extractor>::get(self.as_slice(), key)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extractor for Vec<(K, V)> {
    fn get(&self, key: &str) -> Option<&str> {
        <[(K, V)] as Extractor>::get(self.as_slice(), key)
    }
}

/// Write access to a carrier of propagation headers (OpenTracing's `TextMapWriter`).
///
/// `set` replaces any existing entry whose name matches `key` case-insensitively, so injecting
/// into a map that already holds `TraceParent` leaves a single `traceparent`.
pub trait Injector {
    /// Stores `value` under `key`, replacing entries with the same name in any case.
    fn set(&mut self, key: &str, value: String);
}

impl<T: Injector + ?Sized> Injector for &mut T {
    fn set(&mut self, key: &str, value: String) {
        T::set(&mut **self, key, value);
    }
}

impl<S: BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, key: &str, value: String) {
        self.retain(|k, _| k.as_str() == key || !k.eq_ignore_ascii_case(key));
        self.insert(key.to_owned(), value);
    }
}

impl Injector for BTreeMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.retain(|k, _| k.as_str() == key || !k.eq_ignore_ascii_case(key));
        self.insert(key.to_owned(), value);
    }
}

/// Replaces the first matching pair in place (keeping header order), drops later duplicates and
/// appends when there is no match.
impl Injector for Vec<(String, String)> {
    fn set(&mut self, key: &str, value: String) {
        let mut pending = Some(value);
        self.retain_mut(|(k, v)| {
            if !k.eq_ignore_ascii_case(key) {
                return true;
            }
            match pending.take() {
                Some(new) => {
                    key.clone_into(k);
                    *v = new;
                    true
                }
                None => false,
            }
        });
        if let Some(value) = pending {
            self.push((key.to_owned(), value));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------

/// Which propagation formats to read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    /// W3C Trace Context: `traceparent` and `tracestate` (`OTEL_PROPAGATORS` name `tracecontext`).
    pub w3c: bool,
    /// B3 single header `b3` (`b3`).
    pub b3_single: bool,
    /// B3 multiple headers `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` (`b3multi`).
    pub b3_multi: bool,
    /// Jaeger `uber-trace-id` (`jaeger`).
    pub jaeger: bool,
    /// OpenTracing/Lightstep `ot-tracer-traceid`, `ot-tracer-spanid`, `ot-tracer-sampled`
    /// (`ottrace`).
    pub ot: bool,
    /// AWS X-Ray `X-Amzn-Trace-Id` (`xray`).
    pub xray: bool,
}

impl Formats {
    /// Every format; what [`extract`] reads.
    pub const ALL: Formats = Formats {
        w3c: true,
        b3_single: true,
        b3_multi: true,
        jaeger: true,
        ot: true,
        xray: true,
    };

    /// W3C Trace Context only; the default, as in OpenTelemetry.
    pub const W3C: Formats = Formats {
        w3c: true,
        b3_single: false,
        b3_multi: false,
        jaeger: false,
        ot: false,
        xray: false,
    };

    /// No format: inject writes nothing, extract finds nothing (`OTEL_PROPAGATORS=none`).
    pub const NONE: Formats = Formats {
        w3c: false,
        b3_single: false,
        b3_multi: false,
        jaeger: false,
        ot: false,
        xray: false,
    };

    /// Parses an `OTEL_PROPAGATORS` value: a comma-separated list of `tracecontext`, `b3` (single
    /// header), `b3multi`, `jaeger`, `xray` and `ottrace`, compared case-insensitively and with
    /// surrounding spaces ignored.
    ///
    /// `baggage` (not carried by span contexts) and unknown names are ignored. An empty or blank
    /// value gives the default ([`Formats::W3C`]); `none` anywhere in the list gives
    /// [`Formats::NONE`], as in the OpenTelemetry SDKs. A non-empty list naming no known trace
    /// format (e.g. `baggage`) also gives [`Formats::NONE`]: the user asked for no trace headers.
    pub fn from_otel_propagators(list: &str) -> Formats {
        let mut formats = Formats::NONE;
        let mut any = false;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            any = true;
            match name.to_ascii_lowercase().as_str() {
                "tracecontext" => formats.w3c = true,
                "b3" => formats.b3_single = true,
                "b3multi" => formats.b3_multi = true,
                "jaeger" => formats.jaeger = true,
                "xray" => formats.xray = true,
                "ottrace" => formats.ot = true,
                "none" => return Formats::NONE,
                _ => {}
            }
        }
        if any {
            formats
        } else {
            Formats::default()
        }
    }

    /// [`Formats::from_otel_propagators`] applied to the `OTEL_PROPAGATORS` environment variable;
    /// the default when it is unset or not UTF-8.
    pub fn from_env() -> Formats {
        match std::env::var(OTEL_PROPAGATORS) {
            Ok(list) => Formats::from_otel_propagators(&list),
            Err(_) => Formats::default(),
        }
    }
}

/// W3C Trace Context only.
impl Default for Formats {
    fn default() -> Self {
        Formats::W3C
    }
}

// ---------------------------------------------------------------------------------------------
// Extract
// ---------------------------------------------------------------------------------------------

/// Extracts a parent context from `carrier`, trying every format: see [`extract_with`].
pub fn extract(carrier: &(impl Extractor + ?Sized)) -> Option<SpanContext> {
    extract_with(carrier, Formats::ALL)
}

/// Extracts a parent context from `carrier` using only the enabled `formats`.
///
/// Formats are tried in this order and the first that parses wins: W3C `traceparent` (with
/// `tracestate` carried into [`SpanContext::trace_state`]), B3 single `b3`, B3 multi `X-B3-*`,
/// Jaeger `uber-trace-id`, OpenTracing `ot-tracer-*`, AWS X-Ray `X-Amzn-Trace-Id`. A present but
/// invalid value (wrong length, not hex, an all-zero id, W3C version `ff`, an unknown sampling
/// state) is skipped and the next format tried.
///
/// Sampling: a context whose format carries no decision (B3 "defer", no `ot-tracer-sampled`, no
/// X-Ray `Sampled` or `Sampled=?`) comes back sampled: the upstream left the decision to us and
/// we record. A B3 value carrying only a sampling state (`b3: 0`, `b3: 1`, `b3: d`) has no ids,
/// so there is nothing to parent to: that format yields nothing (and the next one is tried).
/// Likewise an X-Ray header without `Parent` (an ALB adds only `Root`) yields nothing.
pub fn extract_with(carrier: &(impl Extractor + ?Sized), formats: Formats) -> Option<SpanContext> {
    if formats.w3c {
        if let Some(ctx) = extract_w3c(carrier) {
            return Some(ctx);
        }
    }
    if formats.b3_single {
        if let Some(ctx) = extract_b3_single(carrier) {
            return Some(ctx);
        }
    }
    if formats.b3_multi {
        if let Some(ctx) = extract_b3_multi(carrier) {
            return Some(ctx);
        }
    }
    if formats.jaeger {
        if let Some(ctx) = extract_jaeger(carrier) {
            return Some(ctx);
        }
    }
    if formats.ot {
        if let Some(ctx) = extract_ot(carrier) {
            return Some(ctx);
        }
    }
    if formats.xray {
        return extract_xray(carrier);
    }
    None
}

/// Reads the `_X_AMZN_TRACE_ID` environment variable the Lambda runtime sets per invocation and
/// parses it as [`parse_xray_header`] does.
///
/// Custom runtimes (Rust) may not keep the variable current across invocations; prefer
/// `lambda_runtime::Context::xray_trace_id` passed to [`parse_xray_header`] when available.
pub fn extract_xray_env() -> Option<SpanContext> {
    std::env::var(XRAY_ENV)
        .ok()
        .as_deref()
        .and_then(parse_xray_header)
}

/// Parses an X-Ray trace header value such as
/// `Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1`.
///
/// Parts are split on `;` with surrounding spaces ignored; keys are case-sensitive (as AWS
/// writes them) and unknown keys (`Lineage`, `Self`, ...) are ignored, as are repeated keys after
/// the first. `Sampled=1` or `Sampled=?` or no `Sampled` give a sampled context, `Sampled=0` an
/// unsampled one, anything else `None`. `None` too without a valid `Root` and `Parent`.
pub fn parse_xray_header(value: &str) -> Option<SpanContext> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = None;
    for part in value.split(';') {
        let Some((key, val)) = part.split_once('=') else {
            continue;
        };
        let val = val.trim();
        match key.trim() {
            "Root" if root.is_none() => {
                root = Some(parse_xray_trace_id(val)?);
            }
            "Parent" if parent.is_none() => {
                parent = Some(nonzero_span(SpanId::from_hex(val)?)?);
            }
            "Sampled" if sampled.is_none() => {
                sampled = Some(match val {
                    "1" | "?" => true,
                    "0" => false,
                    _ => return None,
                });
            }
            _ => {}
        }
    }
    Some(SpanContext {
        trace_id: root?,
        span_id: parent?,
        sampled: sampled.unwrap_or(true),
        trace_state: None,
    })
}

/// Parses an X-Ray trace id (`1-5759e988-bd862e3fe1be46a994272793`: version `1`, 8 hex digits
/// of epoch seconds, 24 random hex digits) into the 128-bit trace id OpenTelemetry uses, the 32
/// hex digits without the dashes. `None` for another version, wrong lengths, non-hex digits or
/// the all-zero id. Surrounding whitespace is ignored.
pub fn parse_xray_trace_id(s: &str) -> Option<TraceId> {
    let rest = s.trim().strip_prefix("1-")?;
    let (epoch, random) = rest.split_once('-')?;
    if epoch.len() != 8 || random.len() != 24 {
        return None;
    }
    let mut hex = [0u8; 32];
    for (dst, src) in hex.iter_mut().zip(epoch.bytes().chain(random.bytes())) {
        *dst = src;
    }
    let hex = std::str::from_utf8(&hex).ok()?;
    nonzero_trace(TraceId::from_hex(hex)?)
}

/// Formats a trace id the X-Ray way: `1-<first 8 hex digits>-<last 24 hex digits>`, lowercase.
pub fn format_xray(trace_id: &TraceId) -> String {
    let [a, b, c, d, random @ ..] = trace_id.0;
    let mut out = String::with_capacity(35);
    out.push_str("1-");
    push_hex(&mut out, &[a, b, c, d]);
    out.push('-');
    push_hex(&mut out, &random);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
}

/// The value of `key`, trimmed of surrounding whitespace; `None` when absent or blank.
fn header<'a, C: Extractor + ?Sized>(carrier: &'a C, key: &str) -> Option<&'a str> {
    let value = C::get(carrier, key)?.trim();
    (!value.is_empty()).then_some(value)
}

fn nonzero_trace(id: TraceId) -> Option<TraceId> {
    (!id.is_zero()).then_some(id)
}

fn nonzero_span(id: SpanId) -> Option<SpanId> {
    (!id.is_zero()).then_some(id)
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One or more hex digits with a value that fits a byte (leading zeros allowed).
fn hex_u8(s: &str) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

fn context(trace_id: TraceId, span_id: SpanId, sampled: bool) -> SpanContext {
    SpanContext {
        trace_id,
        span_id,
        sampled,
        trace_state: None,
    }
}

fn extract_w3c<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    let (trace_id, span_id, sampled) = parse_traceparent(header(carrier, TRACEPARENT)?)?;
    Some(SpanContext {
        trace_id,
        span_id,
        sampled,
        trace_state: header(carrier, TRACESTATE).map(Arc::from),
    })
}

/// `version-traceid-parentid-flags`, lowercase hex only as the W3C grammar says. Version `00` is
/// exactly 55 characters; a higher version (not `ff`) may append `-...` after those 55, which is
/// ignored, as the spec asks of parsers meeting a future version.
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, bool)> {
    let version = value.get(..2)?;
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    match value.len() {
        55 => {}
        n if n > 55 && version != "00" && value.get(55..56) == Some("-") => {}
        _ => return None,
    }
    let rest = value.get(2..55)?.strip_prefix('-')?;
    let (trace, rest) = rest.split_once('-')?;
    let (span, flags) = rest.split_once('-')?;
    if trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
        || !is_lower_hex(trace)
        || !is_lower_hex(span)
        || !is_lower_hex(flags)
    {
        return None;
    }
    let trace_id = nonzero_trace(TraceId::from_hex(trace)?)?;
    let span_id = nonzero_span(SpanId::from_hex(span)?)?;
    let flags = hex_u8(flags)?;
    Some((trace_id, span_id, flags & 1 == 1))
}

/// B3 trace ids are 16 (64-bit, left-padded) or 32 hex digits.
fn b3_trace_id(s: &str) -> Option<TraceId> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    nonzero_trace(TraceId::from_hex_padded(s)?)
}

/// B3 span ids are exactly 16 hex digits.
fn b3_span_id(s: &str) -> Option<SpanId> {
    nonzero_span(SpanId::from_hex(s)?)
}

/// B3 sampling state: `1`, `d` (debug) and `true` sample, `0` and `false` do not.
fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ if s.eq_ignore_ascii_case("true") => Some(true),
        _ if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `true`/`false` (any case) or `1`/`0`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" => Some(false),
        _ if s.eq_ignore_ascii_case("true") => Some(true),
        _ if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// `{trace}-{span}[-{sampling}[-{parent}]]`. A lone sampling state (`0`, `1`, `d`) has no ids
/// and yields `None`.
fn extract_b3_single<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    let mut parts = header(carrier, B3_SINGLE)?.split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = match parts.next() {
        Some(state) => b3_sampled(state)?,
        None => true,
    };
    if let Some(parent) = parts.next() {
        b3_span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(context(b3_trace_id(trace)?, b3_span_id(span)?, sampled))
}

/// `X-B3-TraceId` and `X-B3-SpanId` are required; `X-B3-Flags: 1` (debug) means sampled whatever
/// `X-B3-Sampled` says; no `X-B3-Sampled` means deferred, hence sampled.
fn extract_b3_multi<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    let trace_id = b3_trace_id(header(carrier, B3_TRACE_ID)?)?;
    let span_id = b3_span_id(header(carrier, B3_SPAN_ID)?)?;
    let sampled = if header(carrier, B3_FLAGS) == Some("1") {
        true
    } else {
        match header(carrier, B3_SAMPLED) {
            Some(state) => b3_sampled(state)?,
            None => true,
        }
    };
    Some(context(trace_id, span_id, sampled))
}

/// `{trace}:{span}:{parent}:{flags}`, possibly URL-encoded (`%3A` for `:`). Ids may be 64-bit or
/// have lost leading zeros (left-padded); the deprecated parent id must be hex but is ignored;
/// flags are hex and bit 0 (`1`) is the sampled flag.
fn extract_jaeger<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    let raw = header(carrier, JAEGER)?;
    let value: Cow<'_, str> = if raw.contains('%') {
        Cow::Owned(raw.replace("%3A", ":").replace("%3a", ":"))
    } else {
        Cow::Borrowed(raw)
    };
    let mut parts = value.split(':');
    let trace = parts.next()?;
    let span = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let trace_id = nonzero_trace(TraceId::from_hex_padded(trace)?)?;
    let span_id = nonzero_span(SpanId::from_hex_padded(span)?)?;
    SpanId::from_hex_padded(parent)?;
    let flags = hex_u8(flags)?;
    Some(context(trace_id, span_id, flags & 1 == 1))
}

/// `ot-tracer-traceid` (16 or 32 hex digits; shorter values, as some Lightstep tracers write
/// them without leading zeros, are left-padded), `ot-tracer-spanid` (up to 16, left-padded),
/// `ot-tracer-sampled` (`true`/`false`/`1`/`0`, absent means sampled).
fn extract_ot<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    let trace_id = nonzero_trace(TraceId::from_hex_padded(header(carrier, OT_TRACE_ID)?)?)?;
    let span_id = nonzero_span(SpanId::from_hex_padded(header(carrier, OT_SPAN_ID)?)?)?;
    let sampled = match header(carrier, OT_SAMPLED) {
        Some(s) => parse_bool(s)?,
        None => true,
    };
    Some(context(trace_id, span_id, sampled))
}

fn extract_xray<C: Extractor + ?Sized>(carrier: &C) -> Option<SpanContext> {
    parse_xray_header(header(carrier, XRAY)?)
}

// ---------------------------------------------------------------------------------------------
// Inject
// ---------------------------------------------------------------------------------------------

/// Writes `ctx` into `carrier` in every enabled format:
///
/// | format | headers |
/// |---|---|
/// | `w3c` | `traceparent: 00-<32 hex>-<16 hex>-01` (`-00`), `tracestate` when there is one |
/// | `b3_single` | `b3: <32 hex>-<16 hex>-1` (`-0`) |
/// | `b3_multi` | `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled: 1` (`0`) |
/// | `jaeger` | `uber-trace-id: <32 hex>:<16 hex>:0:1` (`:0`) |
/// | `ot` | `ot-tracer-traceid` (32 hex), `ot-tracer-spanid`, `ot-tracer-sampled: true` (`false`) |
/// | `xray` | `X-Amzn-Trace-Id: Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1` (`0`) |
///
/// Unsampled contexts are propagated too (with the unsampled flag), so downstream services agree
/// not to record. An invalid context (an all-zero id) writes nothing.
pub fn inject(ctx: &SpanContext, formats: Formats, carrier: &mut (impl Injector + ?Sized)) {
    if !ctx.is_valid() {
        return;
    }
    let trace = ctx.trace_id.to_string();
    let span = ctx.span_id.to_string();
    let (flags, bit, boolean) = if ctx.sampled {
        ("01", "1", "true")
    } else {
        ("00", "0", "false")
    };
    if formats.w3c {
        carrier.set(TRACEPARENT, format!("00-{trace}-{span}-{flags}"));
        if let Some(state) = ctx
            .trace_state
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            carrier.set(TRACESTATE, state.to_owned());
        }
    }
    if formats.b3_single {
        carrier.set(B3_SINGLE, format!("{trace}-{span}-{bit}"));
    }
    if formats.b3_multi {
        carrier.set(B3_TRACE_ID, trace.clone());
        carrier.set(B3_SPAN_ID, span.clone());
        carrier.set(B3_SAMPLED, bit.to_owned());
    }
    if formats.jaeger {
        carrier.set(JAEGER, format!("{trace}:{span}:0:{bit}"));
    }
    if formats.ot {
        carrier.set(OT_TRACE_ID, trace.clone());
        carrier.set(OT_SPAN_ID, span.clone());
        carrier.set(OT_SAMPLED, boolean.to_owned());
    }
    if formats.xray {
        let root = format_xray(&ctx.trace_id);
        carrier.set(XRAY, format!("Root={root};Parent={span};Sampled={bit}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const W3C_SPAN: &str = "00f067aa0ba902b7";
    const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const B3_SPAN: &str = "e457b5a2e4d86bd1";
    const SHORT_TRACE: &str = "a3ce929d0e0e4736";
    const JAEGER_TRACE: &str = "3a2b1c0d4e5f60718293a4b5c6d7e8f9";
    const JAEGER_SPAN: &str = "1a2b3c4d5e6f7081";
    const XRAY_TRACE: &str = "5759e988bd862e3fe1be46a994272793";
    const XRAY_SPAN: &str = "557abcec3ee5a047";
    const XRAY_ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";

    /// A context from (possibly short, left-padded) hex ids.
    fn ctx(trace: &str, span: &str, sampled: bool) -> SpanContext {
        SpanContext {
            trace_id: TraceId::from_hex_padded(trace).unwrap(),
            span_id: SpanId::from_hex_padded(span).unwrap(),
            sampled,
            trace_state: None,
        }
    }

    type Want = Option<(&'static str, &'static str, bool)>;

    /// A test name, the headers, the expected (trace, span, sampled).
    type Case = (&'static str, &'static [(&'static str, &'static str)], Want);

    fn check(cases: &[Case]) {
        for (name, headers, want) in cases {
            let want = want.map(|(t, s, sampled)| ctx(t, s, sampled));
            assert_eq!(extract(*headers), want, "{name}: {headers:?}");
        }
    }

    #[test]
    fn w3c() {
        check(&[
            (
                "spec example",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
                Some((W3C_TRACE, W3C_SPAN, true)),
            ),
            (
                "unsampled",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                )],
                Some((W3C_TRACE, W3C_SPAN, false)),
            ),
            (
                "other flag bits ignored",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                )],
                Some((W3C_TRACE, W3C_SPAN, true)),
            ),
            (
                "surrounding whitespace",
                &[(
                    "traceparent",
                    "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
                )],
                Some((W3C_TRACE, W3C_SPAN, true)),
            ),
            (
                "future version, 55 characters",
                &[(
                    "traceparent",
                    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
                Some((W3C_TRACE, W3C_SPAN, true)),
            ),
            (
                "future version with more fields",
                &[(
                    "traceparent",
                    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future",
                )],
                Some((W3C_TRACE, W3C_SPAN, false)),
            ),
            (
                "future version, no dash after 55",
                &[(
                    "traceparent",
                    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                )],
                None,
            ),
            (
                "version ff",
                &[(
                    "traceparent",
                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
                None,
            ),
            (
                "version 00 with trailing data",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                )],
                None,
            ),
            (
                "uppercase hex",
                &[(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                )],
                None,
            ),
            (
                "zero trace id",
                &[(
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                )],
                None,
            ),
            (
                "zero span id",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                )],
                None,
            ),
            (
                "short trace id",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                )],
                None,
            ),
            (
                "non-hex",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                )],
                None,
            ),
            (
                "misplaced dash",
                &[(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
                )],
                None,
            ),
            ("empty", &[("traceparent", "")], None),
            ("multi-byte", &[("traceparent", "é")], None),
        ]);
    }

    #[test]
    fn b3_single() {
        check(&[
            (
                "spec example with parent",
                &[(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
                )],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "debug",
                &[(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
                )],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "not sampled",
                &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
                Some((B3_TRACE, B3_SPAN, false)),
            ),
            (
                "deferred",
                &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "64-bit trace id",
                &[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-1")],
                Some((SHORT_TRACE, B3_SPAN, true)),
            ),
            ("deny only: no ids", &[("b3", "0")], None),
            ("accept only: no ids", &[("b3", "1")], None),
            ("debug only: no ids", &[("b3", "d")], None),
            (
                "20-digit trace id",
                &[("b3", "a3ce929d0e0e47360000-e457b5a2e4d86bd1-1")],
                None,
            ),
            (
                "short span id",
                &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd-1")],
                None,
            ),
            (
                "unknown sampling state",
                &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x")],
                None,
            ),
            (
                "bad parent",
                &[(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-zz",
                )],
                None,
            ),
            (
                "too many parts",
                &[(
                    "b3",
                    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
                )],
                None,
            ),
            (
                "zero trace id",
                &[("b3", "0000000000000000-e457b5a2e4d86bd1-1")],
                None,
            ),
        ]);
    }

    #[test]
    fn b3_multi() {
        check(&[
            (
                "spec example",
                &[
                    ("X-B3-TraceId", B3_TRACE),
                    ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
                    ("X-B3-SpanId", B3_SPAN),
                    ("X-B3-Sampled", "1"),
                ],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "not sampled",
                &[
                    ("X-B3-TraceId", B3_TRACE),
                    ("X-B3-SpanId", B3_SPAN),
                    ("X-B3-Sampled", "0"),
                ],
                Some((B3_TRACE, B3_SPAN, false)),
            ),
            (
                "legacy true",
                &[
                    ("X-B3-TraceId", B3_TRACE),
                    ("X-B3-SpanId", B3_SPAN),
                    ("X-B3-Sampled", "true"),
                ],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "debug flag wins",
                &[
                    ("X-B3-TraceId", B3_TRACE),
                    ("X-B3-SpanId", B3_SPAN),
                    ("X-B3-Sampled", "0"),
                    ("X-B3-Flags", "1"),
                ],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "deferred",
                &[("X-B3-TraceId", B3_TRACE), ("X-B3-SpanId", B3_SPAN)],
                Some((B3_TRACE, B3_SPAN, true)),
            ),
            (
                "64-bit trace id, lowercase names",
                &[("x-b3-traceid", SHORT_TRACE), ("x-b3-spanid", B3_SPAN)],
                Some((SHORT_TRACE, B3_SPAN, true)),
            ),
            (
                "no span id",
                &[("X-B3-TraceId", B3_TRACE), ("X-B3-Sampled", "1")],
                None,
            ),
            ("sampling only", &[("X-B3-Sampled", "0")], None),
            (
                "bad sampled",
                &[
                    ("X-B3-TraceId", B3_TRACE),
                    ("X-B3-SpanId", B3_SPAN),
                    ("X-B3-Sampled", "yes"),
                ],
                None,
            ),
        ]);
    }

    #[test]
    fn jaeger() {
        check(&[
            (
                "sampled",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:0:1",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, true)),
            ),
            (
                "not sampled",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:0:0",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, false)),
            ),
            (
                "sampled and debug",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:0:3",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, true)),
            ),
            (
                "debug bit alone is not the sampled bit",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:0:2",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, false)),
            ),
            (
                "with parent",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:5e6f:01",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, true)),
            ),
            (
                "URL-encoded",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9%3A1a2b3c4d5e6f7081%3A0%3A1",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, true)),
            ),
            (
                "URL-encoded, lowercase escape",
                &[(
                    "uber-trace-id",
                    "3a2b1c0d4e5f60718293a4b5c6d7e8f9%3a1a2b3c4d5e6f7081%3a0%3a0",
                )],
                Some((JAEGER_TRACE, JAEGER_SPAN, false)),
            ),
            (
                "64-bit trace id",
                &[("uber-trace-id", "a3ce929d0e0e4736:1a2b3c4d5e6f7081:0:1")],
                Some((SHORT_TRACE, JAEGER_SPAN, true)),
            ),
            (
                "short ids",
                &[("uber-trace-id", "abc:def:0:1")],
                Some(("abc", "def", true)),
            ),
            ("three parts", &[("uber-trace-id", "abc:def:1")], None),
            ("five parts", &[("uber-trace-id", "abc:def:0:1:0")], None),
            ("zero trace id", &[("uber-trace-id", "0:def:0:1")], None),
            ("zero span id", &[("uber-trace-id", "abc:0:0:1")], None),
            ("bad flags", &[("uber-trace-id", "abc:def:0:zz")], None),
            ("bad parent", &[("uber-trace-id", "abc:def:x:1")], None),
            (
                "33-digit trace id",
                &[(
                    "uber-trace-id",
                    "13a2b1c0d4e5f60718293a4b5c6d7e8f9:1a2b3c4d5e6f7081:0:1",
                )],
                None,
            ),
            (
                "other escapes",
                &[("uber-trace-id", "abc%20:def:0:1")],
                None,
            ),
        ]);
    }

    #[test]
    fn ot_tracer() {
        check(&[
            (
                "16-hex trace id",
                &[
                    ("ot-tracer-traceid", SHORT_TRACE),
                    ("ot-tracer-spanid", W3C_SPAN),
                    ("ot-tracer-sampled", "true"),
                ],
                Some((SHORT_TRACE, W3C_SPAN, true)),
            ),
            (
                "32-hex trace id, not sampled",
                &[
                    ("ot-tracer-traceid", W3C_TRACE),
                    ("ot-tracer-spanid", W3C_SPAN),
                    ("ot-tracer-sampled", "false"),
                ],
                Some((W3C_TRACE, W3C_SPAN, false)),
            ),
            (
                "numeric sampled",
                &[
                    ("ot-tracer-traceid", W3C_TRACE),
                    ("ot-tracer-spanid", W3C_SPAN),
                    ("ot-tracer-sampled", "0"),
                ],
                Some((W3C_TRACE, W3C_SPAN, false)),
            ),
            (
                "no sampled header",
                &[
                    ("ot-tracer-traceid", W3C_TRACE),
                    ("ot-tracer-spanid", W3C_SPAN),
                ],
                Some((W3C_TRACE, W3C_SPAN, true)),
            ),
            (
                "leading zeros dropped",
                &[
                    ("ot-tracer-traceid", "e0e4736"),
                    ("ot-tracer-spanid", "f067aa0ba902b7"),
                ],
                Some(("e0e4736", W3C_SPAN, true)),
            ),
            (
                "bad sampled",
                &[
                    ("ot-tracer-traceid", W3C_TRACE),
                    ("ot-tracer-spanid", W3C_SPAN),
                    ("ot-tracer-sampled", "maybe"),
                ],
                None,
            ),
            ("no span id", &[("ot-tracer-traceid", W3C_TRACE)], None),
            (
                "too long span id",
                &[
                    ("ot-tracer-traceid", W3C_TRACE),
                    ("ot-tracer-spanid", "100f067aa0ba902b7"),
                ],
                None,
            ),
        ]);
    }

    #[test]
    fn xray() {
        check(&[
            (
                "documented example",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1",
                )],
                Some((XRAY_TRACE, XRAY_SPAN, true)),
            ),
            (
                "lineage and not sampled",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;\
                     Sampled=0;Lineage=a87bd80c:1|68fd508a:5|c512fbe3:2",
                )],
                Some((XRAY_TRACE, XRAY_SPAN, false)),
            ),
            (
                "spaces, Self, order",
                &[(
                    "X-Amzn-Trace-Id",
                    "Self=1-67891234-12456789abcdef012345678; Parent=557abcec3ee5a047 ; \
                     Root=1-5759e988-bd862e3fe1be46a994272793;",
                )],
                Some((XRAY_TRACE, XRAY_SPAN, true)),
            ),
            (
                "sampling requested",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=?",
                )],
                Some((XRAY_TRACE, XRAY_SPAN, true)),
            ),
            (
                "no parent (ALB)",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793",
                )],
                None,
            ),
            (
                "bad root",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988bd862e3fe1be46a994272793;Parent=557abcec3ee5a047",
                )],
                None,
            ),
            (
                "bad sampled",
                &[(
                    "X-Amzn-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=x",
                )],
                None,
            ),
            (
                "keys are case-sensitive",
                &[(
                    "X-Amzn-Trace-Id",
                    "root=1-5759e988-bd862e3fe1be46a994272793;parent=557abcec3ee5a047",
                )],
                None,
            ),
        ]);
    }

    #[test]
    fn keys_are_case_insensitive() {
        let mut map = HashMap::new();
        map.insert(
            "TraceParent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        );
        map.insert(
            "TraceState".to_string(),
            "rojo=00f067aa0ba902b7".to_string(),
        );
        let got = extract(&map).unwrap();
        assert_eq!(got.trace_id.to_string(), W3C_TRACE);
        assert_eq!(got.trace_state.as_deref(), Some("rojo=00f067aa0ba902b7"));

        let mut tree = BTreeMap::new();
        tree.insert(
            "X-AMZN-TRACE-ID",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1",
        );
        assert_eq!(extract(&tree), Some(ctx(XRAY_TRACE, XRAY_SPAN, true)));

        let pairs = vec![("UBER-TRACE-ID".to_string(), "abc:def:0:1".to_string())];
        assert_eq!(extract(&pairs), Some(ctx("abc", "def", true)));

        let array = [("B3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")];
        assert_eq!(extract(&array), Some(ctx(B3_TRACE, B3_SPAN, false)));

        // An exact-case key wins over a case variant in a map.
        let mut both: HashMap<&str, &str> = HashMap::new();
        both.insert("B3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0");
        both.insert("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
        assert_eq!(extract(&both), Some(ctx(B3_TRACE, B3_SPAN, true)));
    }

    #[test]
    fn invalid_values_fall_through_to_the_next_format() {
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=0";
        let headers = [
            (
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("b3", b3),
        ];
        let got = extract(&headers[..]).unwrap();
        assert_eq!(
            got,
            ctx(B3_TRACE, B3_SPAN, true),
            "tracestate needs a valid traceparent"
        );

        let headers = [
            ("b3", "0"),
            ("X-B3-TraceId", B3_TRACE),
            ("X-B3-SpanId", B3_SPAN),
            ("X-B3-Sampled", "0"),
        ];
        assert_eq!(extract(&headers[..]), Some(ctx(B3_TRACE, B3_SPAN, false)));

        let headers = [
            ("traceparent", "00-garbage"),
            ("b3", "garbage"),
            ("X-B3-TraceId", "garbage"),
            ("X-B3-SpanId", B3_SPAN),
            ("uber-trace-id", "garbage"),
            ("ot-tracer-traceid", "garbage"),
            ("ot-tracer-spanid", W3C_SPAN),
            ("X-Amzn-Trace-Id", xray),
        ];
        assert_eq!(
            extract(&headers[..]),
            Some(ctx(XRAY_TRACE, XRAY_SPAN, false))
        );

        // Order: W3C first when several are valid.
        let headers = [
            ("X-Amzn-Trace-Id", xray),
            ("b3", b3),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ];
        assert_eq!(extract(&headers[..]), Some(ctx(W3C_TRACE, W3C_SPAN, true)));
        // Restricted to formats the caller trusts.
        let only_xray = Formats {
            xray: true,
            ..Formats::NONE
        };
        assert_eq!(
            extract_with(&headers[..], only_xray),
            Some(ctx(XRAY_TRACE, XRAY_SPAN, false))
        );
        assert_eq!(extract_with(&[("b3", b3)][..], Formats::W3C), None);
        assert_eq!(extract_with(&headers[..], Formats::NONE), None);
        assert_eq!(extract(&Vec::<(String, String)>::new()), None);
    }

    fn single_formats() -> Vec<(&'static str, Formats)> {
        vec![
            (
                "w3c",
                Formats {
                    w3c: true,
                    ..Formats::NONE
                },
            ),
            (
                "b3_single",
                Formats {
                    b3_single: true,
                    ..Formats::NONE
                },
            ),
            (
                "b3_multi",
                Formats {
                    b3_multi: true,
                    ..Formats::NONE
                },
            ),
            (
                "jaeger",
                Formats {
                    jaeger: true,
                    ..Formats::NONE
                },
            ),
            (
                "ot",
                Formats {
                    ot: true,
                    ..Formats::NONE
                },
            ),
            (
                "xray",
                Formats {
                    xray: true,
                    ..Formats::NONE
                },
            ),
        ]
    }

    #[test]
    fn inject_then_extract_round_trips_every_format() {
        for (name, formats) in single_formats() {
            for sampled in [true, false] {
                let mut sent = ctx(W3C_TRACE, W3C_SPAN, sampled);
                sent.trace_state = Some(Arc::from("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
                let mut want = sent.clone();
                if !formats.w3c {
                    want.trace_state = None;
                }

                let mut map: HashMap<String, String> = HashMap::new();
                inject(&sent, formats, &mut map);
                assert_eq!(extract(&map), Some(want.clone()), "{name} HashMap");
                assert_eq!(
                    extract_with(&map, formats),
                    Some(want.clone()),
                    "{name} only"
                );

                let mut tree: BTreeMap<String, String> = BTreeMap::new();
                inject(&sent, formats, &mut tree);
                assert_eq!(extract(&tree), Some(want.clone()), "{name} BTreeMap");

                let mut pairs: Vec<(String, String)> = Vec::new();
                inject(&sent, formats, &mut pairs);
                assert_eq!(extract(&pairs), Some(want.clone()), "{name} Vec");

                // Nothing leaks into the other formats.
                let others = Formats {
                    w3c: !formats.w3c,
                    b3_single: !formats.b3_single,
                    b3_multi: !formats.b3_multi,
                    jaeger: !formats.jaeger,
                    ot: !formats.ot,
                    xray: !formats.xray,
                };
                assert_eq!(extract_with(&pairs, others), None, "{name}");
            }
        }
        // Short ids survive too (left-padded on the way in, full width on the way out).
        let short = ctx("abc", "def", true);
        for (name, formats) in single_formats() {
            let mut pairs: Vec<(String, String)> = Vec::new();
            inject(&short, formats, &mut pairs);
            assert_eq!(extract(&pairs), Some(short.clone()), "{name}");
        }
    }

    #[test]
    fn inject_writes_every_format() {
        let mut sent = ctx(XRAY_TRACE, XRAY_SPAN, true);
        sent.trace_state = Some(Arc::from("rojo=00f067aa0ba902b7"));
        let mut pairs: Vec<(String, String)> = Vec::new();
        inject(&sent, Formats::ALL, &mut pairs);
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let want = [
            (
                "traceparent",
                "00-5759e988bd862e3fe1be46a994272793-557abcec3ee5a047-01",
            ),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("b3", "5759e988bd862e3fe1be46a994272793-557abcec3ee5a047-1"),
            ("X-B3-TraceId", XRAY_TRACE),
            ("X-B3-SpanId", XRAY_SPAN),
            ("X-B3-Sampled", "1"),
            (
                "uber-trace-id",
                "5759e988bd862e3fe1be46a994272793:557abcec3ee5a047:0:1",
            ),
            ("ot-tracer-traceid", XRAY_TRACE),
            ("ot-tracer-spanid", XRAY_SPAN),
            ("ot-tracer-sampled", "true"),
            (
                "X-Amzn-Trace-Id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;Sampled=1",
            ),
        ];
        assert_eq!(got, want);
        // Everything extracts back to the W3C context (first in order).
        assert_eq!(extract(&pairs), Some(sent));
    }

    #[test]
    fn unsampled_contexts_propagate_as_unsampled() {
        let incoming = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
        ];
        let parent = extract(&incoming).unwrap();
        assert!(!parent.sampled);
        let mut map: HashMap<String, String> = HashMap::new();
        inject(&parent, Formats::ALL, &mut map);
        assert_eq!(
            map["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(
            map["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"
        );
        assert_eq!(map["X-B3-Sampled"], "0");
        assert_eq!(
            map["uber-trace-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:0"
        );
        assert_eq!(map["ot-tracer-sampled"], "false");
        assert!(map["X-Amzn-Trace-Id"].ends_with(";Sampled=0"));
        assert!(!map.contains_key("tracestate"));
        for (name, formats) in single_formats() {
            assert_eq!(extract_with(&map, formats), Some(parent.clone()), "{name}");
        }
    }

    #[test]
    fn injectors_replace_existing_headers_in_any_case() {
        let sent = ctx(W3C_TRACE, W3C_SPAN, true);
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

        let mut pairs = vec![
            ("Accept".to_string(), "*/*".to_string()),
            ("TraceParent".to_string(), "stale".to_string()),
            ("TRACEPARENT".to_string(), "stale too".to_string()),
        ];
        inject(&sent, Formats::W3C, &mut pairs);
        assert_eq!(
            pairs,
            vec![
                ("Accept".to_string(), "*/*".to_string()),
                ("traceparent".to_string(), traceparent.to_string()),
            ]
        );

        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("TraceParent".to_string(), "stale".to_string());
        inject(&sent, Formats::W3C, &mut map);
        assert_eq!(map.len(), 1);
        assert_eq!(map["traceparent"], traceparent);

        let mut tree: BTreeMap<String, String> = BTreeMap::new();
        tree.insert("TraceParent".to_string(), "stale".to_string());
        tree.insert("traceparent".to_string(), "stale".to_string());
        inject(&sent, Formats::W3C, &mut &mut tree);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree["traceparent"], traceparent);
    }

    #[test]
    fn invalid_contexts_and_empty_trace_state_are_not_injected() {
        let mut zero = ctx(W3C_TRACE, W3C_SPAN, true);
        zero.span_id = SpanId::default();
        let mut pairs: Vec<(String, String)> = Vec::new();
        inject(&zero, Formats::ALL, &mut pairs);
        assert!(pairs.is_empty());

        let mut blank = ctx(W3C_TRACE, W3C_SPAN, true);
        blank.trace_state = Some(Arc::from(" "));
        inject(&blank, Formats::W3C, &mut pairs);
        assert_eq!(pairs.len(), 1);
    }

    #[test]
    fn trace_state_is_carried_unchanged() {
        let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
        let headers = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", state),
        ];
        let got = extract(&headers).unwrap();
        assert_eq!(got.trace_state.as_deref(), Some(state));
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        inject(&got, Formats::default(), &mut out);
        assert_eq!(out.get("tracestate").map(String::as_str), Some(state));

        let headers = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", ""),
        ];
        assert_eq!(extract(&headers).unwrap().trace_state, None);
    }

    #[test]
    fn xray_trace_ids() {
        let id = parse_xray_trace_id(XRAY_ROOT).unwrap();
        assert_eq!(id.to_string(), XRAY_TRACE);
        assert_eq!(format_xray(&id), XRAY_ROOT);
        assert_eq!(
            parse_xray_trace_id(" 1-5E34A614-10BDC8A2E8A0E2E6F4A3B3B1 ").map(|t| t.to_string()),
            Some("5e34a61410bdc8a2e8a0e2e6f4a3b3b1".to_string())
        );
        for bad in [
            "",
            "1-",
            "2-5759e988-bd862e3fe1be46a994272793",
            "1-5759e98-8bd862e3fe1be46a994272793",
            "1-5759e988-bd862e3fe1be46a99427279",
            "1-5759e988-bd862e3fe1be46a9942727930",
            "1-5759e988-bd862e3fe1be46a99427279g",
            "1-5759e988bd862e3fe1be46a994272793",
            "1-00000000-000000000000000000000000",
            "1-5759e988-bd862e3fe1be46a9942727é",
        ] {
            assert_eq!(parse_xray_trace_id(bad), None, "{bad:?}");
        }
        let padded = TraceId::from_hex_padded("abc").unwrap();
        assert_eq!(format_xray(&padded), "1-00000000-000000000000000000000abc");
        assert_eq!(parse_xray_trace_id(&format_xray(&padded)), Some(padded));
    }

    #[test]
    fn xray_header_value() {
        assert_eq!(
            parse_xray_header(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=557abcec3ee5a047;\
                 Sampled=1;Lineage=a87bd80c:1"
            ),
            Some(ctx(XRAY_TRACE, XRAY_SPAN, true))
        );
        assert_eq!(parse_xray_header(""), None);
        assert_eq!(parse_xray_header("Parent=557abcec3ee5a047"), None);
        assert_eq!(
            parse_xray_header("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000"),
            None
        );
    }

    #[test]
    fn otel_propagators() {
        let cases: &[(&str, Formats)] = &[
            ("", Formats::W3C),
            ("  ", Formats::W3C),
            (",", Formats::W3C),
            ("tracecontext,baggage", Formats::W3C),
            (
                "b3",
                Formats {
                    b3_single: true,
                    ..Formats::NONE
                },
            ),
            (
                "b3multi",
                Formats {
                    b3_multi: true,
                    ..Formats::NONE
                },
            ),
            (
                "TraceContext, b3 ,jaeger,xray,ottrace,b3multi",
                Formats::ALL,
            ),
            (
                "jaeger,unknown",
                Formats {
                    jaeger: true,
                    ..Formats::NONE
                },
            ),
            (
                "xray",
                Formats {
                    xray: true,
                    ..Formats::NONE
                },
            ),
            (
                "ottrace",
                Formats {
                    ot: true,
                    ..Formats::NONE
                },
            ),
            ("baggage", Formats::NONE),
            ("none", Formats::NONE),
            ("tracecontext,none", Formats::NONE),
        ];
        for (list, want) in cases {
            assert_eq!(Formats::from_otel_propagators(list), *want, "{list:?}");
        }
        assert_eq!(Formats::default(), Formats::W3C);
    }
}
