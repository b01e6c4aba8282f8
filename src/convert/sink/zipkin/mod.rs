//! The Zipkin sink: spans → Zipkin v2 JSON (`POST /api/v2/spans`).
//!
//! [`encode_zipkin`] is pure and follows the OpenTelemetry specification's Zipkin mapping
//! ("OpenTelemetry to Zipkin Transformation") as the OpenTelemetry Python exporter
//! (`opentelemetry-exporter-zipkin-json`) implements it; a test runs that exporter's encoder on
//! `fixtures/zipkin/spans.json` and compares field by field. Where spanline differs, on purpose:
//!
//! * `kind` is omitted for internal spans (the spec: "must be omitted"); Python writes `null`.
//! * `debug` is never set. Python sets `debug: true` on every sampled span, but Zipkin's
//!   `debug` is a request to bypass collector sampling (`X-B3-Flags: 1`), not "sampled"
//!   (a Zipkin maintainer on open-telemetry/opentelemetry-python#549: "sampled != debug").
//! * `duration` is at least 1 µs: Zipkin's v2 API says "Durations of less than one are rounded
//!   up", and Zipkin stores a zero duration as absent (the span looks unfinished). Python
//!   writes 0 for spans shorter than 0.5 µs.
//! * CLIENT and PRODUCER spans with a `peer.service` attribute get
//!   `remoteEndpoint.serviceName`, as the spec recommends ("Remote endpoint", rank 1) so that
//!   Zipkin draws the dependency. Python sets no remote endpoint. The lower ranks (host names,
//!   socket addresses) are not used: they name hosts, not services, and would add host names
//!   as nodes to Zipkin's service graph.
//! * An `error` tag of `"false"` (from an attribute `error=false`, an OpenTracing habit) is
//!   removed, as the spec asks ("If a boolean version … is present, it SHOULD be removed"):
//!   Zipkin marks every span that has an `error` tag as failed. Python keeps it.
//! * `localEndpoint.serviceName` is each span's own service. Python's exporter takes it from
//!   the first span of a batch (it assumes one service per batch); a spanline batch mixes the
//!   services of a whole trace.
//!
//! Everything else follows Python. `tags` hold the span attributes, then the resource
//! attributes with `service.name`, then the instrumentation scope (`otel.scope.*` and the older
//! `otel.library.*`: `spanline` and this crate's version, as the OTLP sink reports it), then
//! `otel.status_code` and `error`, then the `otel.dropped_*_count`s, a later one winning over an
//! earlier one of the same name; every value is a string as Python's `str()` prints it
//! (`true`/`false`, `0.1`, `1e+16`, `inf`). Events become annotations whose value is Python's
//! `json.dumps({name: attributes}, sort_keys=True)`, byte for byte. Times are rounded to the
//! nearest microsecond. Links are dropped: Zipkin has no links and the spec leaves them "TBD".
//!
//! [`ZipkinSink`] POSTs the array in batches with `Content-Type: application/json` and retries
//! with [`retry`](crate::convert::retry)'s policy.

#[cfg(feature = "convert")]
mod http;
#[cfg(feature = "convert")]
pub use http::*;

use crate::convert::assemble::{AnyValue, SpanData};
use crate::span_line::{SpanKind, StatusCode};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
// The `bytes` crate, as reqwest takes it: one body shared by every attempt without copying.

/// The instrumentation scope reported for every span (the OTLP sink reports the same).
const SCOPE_NAME: &str = "spanline";
/// The scope version: this crate's version.
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes `spans` as a Zipkin v2 JSON array (`ListOfSpans`), in the given order. See the
/// module docs for the mapping.
pub fn encode_zipkin(spans: &[SpanData]) -> Value {
    Value::Array(spans.iter().map(encode_span).collect())
}

fn encode_span(s: &SpanData) -> Value {
    let mut o = Map::new();
    o.insert("traceId".into(), Value::String(s.trace_id.to_string()));
    o.insert("id".into(), Value::String(s.span_id.to_string()));
    if let Some(parent) = s.parent_span_id {
        o.insert("parentId".into(), Value::String(parent.to_string()));
    }
    o.insert("name".into(), Value::String(s.name.clone()));
    if let Some(kind) = kind_name(s.kind) {
        o.insert("kind".into(), Value::String(kind.into()));
    }
    o.insert("timestamp".into(), Value::from(ns_to_us(s.start_unix_nano)));
    let duration = ns_to_us(s.end_unix_nano.saturating_sub(s.start_unix_nano)).max(1);
    o.insert("duration".into(), Value::from(duration));
    o.insert("localEndpoint".into(), endpoint(&s.service));
    if let Some(peer) = remote_service(s) {
        o.insert("remoteEndpoint".into(), endpoint(peer));
    }
    let tags = tags(s);
    if !tags.is_empty() {
        o.insert("tags".into(), Value::Object(tags));
    }
    if !s.events.is_empty() {
        let annotations = s
            .events
            .iter()
            .map(|e| {
                let mut a = Map::new();
                a.insert("timestamp".into(), Value::from(ns_to_us(e.time_unix_nano)));
                a.insert(
                    "value".into(),
                    Value::String(annotation_value(&e.name, &e.attributes)),
                );
                Value::Object(a)
            })
            .collect();
        o.insert("annotations".into(), Value::Array(annotations));
    }
    Value::Object(o)
}

/// Zipkin's kind; `None` for internal spans (the field is then omitted).
fn kind_name(kind: SpanKind) -> Option<&'static str> {
    match kind {
        SpanKind::Internal => None,
        SpanKind::Server => Some("SERVER"),
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
    }
}

/// Nanoseconds → microseconds, rounded half up (Python: `(nsec + 500) // 10**3`).
fn ns_to_us(ns: u64) -> u64 {
    ns.saturating_add(500) / 1000
}

fn endpoint(service: &str) -> Value {
    let mut e = Map::new();
    e.insert("serviceName".into(), Value::String(service.to_owned()));
    Value::Object(e)
}

/// `peer.service` of a CLIENT or PRODUCER span (the last one, as for tags).
fn remote_service(s: &SpanData) -> Option<&str> {
    if !matches!(s.kind, SpanKind::Client | SpanKind::Producer) {
        return None;
    }
    match s.attributes.iter().rev().find(|a| a.key == "peer.service") {
        Some(a) => match &a.value {
            AnyValue::Str(v) if !v.is_empty() => Some(v),
            _ => None,
        },
        None => None,
    }
}

fn tags(s: &SpanData) -> Map<String, Value> {
    let mut tags = Map::new();
    let mut put = |k: &str, v: String| {
        tags.insert(k.to_owned(), Value::String(v));
    };
    // Later entries win, as in Python's dict updates: attributes, then the resource.
    for a in &s.attributes {
        put(&a.key, tag_value(&a.value));
    }
    put("service.name", s.service.clone());
    for a in &s.resource {
        put(&a.key, tag_value(&a.value));
    }
    put("otel.library.name", SCOPE_NAME.into());
    put("otel.library.version", SCOPE_VERSION.into());
    put("otel.scope.name", SCOPE_NAME.into());
    put("otel.scope.version", SCOPE_VERSION.into());
    match s.status {
        StatusCode::Unset => {}
        StatusCode::Ok => put("otel.status_code", "OK".into()),
        StatusCode::Error => {
            put("otel.status_code", "ERROR".into());
            put("error", s.status_message.clone());
        }
    }
    let (attributes, events, links) = s.dropped;
    for (key, n) in [
        ("otel.dropped_attributes_count", attributes),
        ("otel.dropped_events_count", events),
        ("otel.dropped_links_count", links),
    ] {
        if n > 0 {
            put(key, n.to_string());
        }
    }
    // An `error=false` attribute (or resource attribute); an error status always keeps its
    // description, even one that reads "false".
    if s.status != StatusCode::Error && tags.get("error").and_then(Value::as_str) == Some("false") {
        tags.remove("error");
    }
    tags
}

/// An attribute value as a tag, the way Python's `str()` prints it.
fn tag_value(v: &AnyValue) -> String {
    match v {
        AnyValue::Str(s) => s.clone(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Float(f) => python_float_repr(*f),
        AnyValue::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust's `{:e}` finds the same
/// digits), positional notation for decimal exponents from -4 to 15, scientific otherwise
/// (`1e+16`, `1.5e-05`), `.0` on whole numbers, `inf`, `-inf`, `nan`.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if let Some(even) = even_tie(f.abs(), &digits, exp) {
        digits = even;
    }
    let n = digits.len() as i32;
    // The value is 0.DIGITS × 10^decpt (CPython's `format_float_short`).
    let decpt = exp + 1;
    let mut out = String::with_capacity(24);
    if f < 0.0 {
        out.push('-');
    }
    if !(-4 < decpt && decpt <= 16) {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if decpt >= n {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (decpt - n) as usize));
        out.push_str(".0");
    } else {
        out.push_str(&digits[..decpt as usize]);
        out.push('.');
        out.push_str(&digits[decpt as usize..]);
    }
    out
}

/// When `x` lies exactly halfway between two shortest round-tripping digit strings, Rust's
/// `{:e}` picks the upper one and CPython the even one (`19657848128154.8125` prints as
/// `…154.813` in Rust and `…154.812` in Python). Returns the even one when `digits`
/// (`d.ddd × 10^exp`) is the odd upper half of such a tie. Rare: found 23 times in 200 000
/// random doubles.
fn even_tie(x: f64, digits: &str, exp: i32) -> Option<String> {
    let last = *digits.as_bytes().last()?;
    if !matches!(last, b'1' | b'3' | b'5' | b'7' | b'9') || digits == "1" {
        return None;
    }
    let mut lower = digits[..digits.len() - 1].to_owned();
    lower.push(char::from(last - 1));
    let as_number = |d: &str| format!("{}.{}e{exp}", &d[..1], &d[1..]);
    if as_number(&lower).parse::<f64>().ok()? != x {
        return None;
    }
    // Both round-trip: a tie only if x is exactly `lower` followed by a 5. A double's exact
    // decimal expansion has at most 767 significant digits, so 800 places show all of it.
    let exact = format!("{x:.800e}");
    let (mantissa, e) = exact.split_once('e')?;
    let exact_digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let rest = exact_digits.strip_prefix(lower.as_str())?;
    let tie = e.parse::<i32>().ok()? == exp
        && rest.starts_with('5')
        && rest[1..].bytes().all(|b| b == b'0');
    tie.then_some(lower)
}

/// Python's `json.dumps({name: attributes}, sort_keys=True)`: `", "` and `": "` separators,
/// keys sorted by code point (a repeated key keeps its last value, as in a dict), ASCII-only
/// output, `Infinity`/`NaN` for non-finite floats.
fn annotation_value(name: &str, attributes: &[crate::convert::assemble::KeyValue]) -> String {
    let attrs: BTreeMap<&str, &AnyValue> = attributes
        .iter()
        .map(|a| (a.key.as_str(), &a.value))
        .collect();
    let mut out = String::with_capacity(32 + 24 * attrs.len());
    out.push('{');
    python_json_str(&mut out, name);
    out.push_str(": {");
    for (i, (k, v)) in attrs.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        python_json_str(&mut out, k);
        out.push_str(": ");
        match v {
            AnyValue::Str(s) => python_json_str(&mut out, s),
            AnyValue::Int(n) => {
                let _ = write!(out, "{n}");
            }
            AnyValue::Float(f) if f.is_nan() => out.push_str("NaN"),
            AnyValue::Float(f) if f.is_infinite() => {
                out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
            }
            AnyValue::Float(f) => out.push_str(&python_float_repr(*f)),
            AnyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push_str("}}");
    out
}

/// A JSON string as Python's `json.dumps` writes it with `ensure_ascii=True`: `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f`, and `\uXXXX` (lowercase, surrogate pairs above U+FFFF) for
/// everything else outside printable ASCII.
fn python_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(all(test, feature = "convert"))]
mod tests {
    use super::*;
    use crate::convert::assemble::Span;
    use crate::convert::assemble::{Event, KeyValue, Link};
    use crate::convert::retry::Backoff;
    use crate::convert::sink::{Delivery, Sink, SinkError};
    use crate::span_line::{SpanId, TraceId};
    use serde::Deserialize;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    // -----------------------------------------------------------------------------------------
    // The shared fixture: fixtures/zipkin/spans.json (its "about" entry describes the schema).

    #[derive(Deserialize)]
    struct FixtureFile {
        spans: Vec<FixtureSpan>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FixtureSpan {
        trace_id: String,
        span_id: String,
        parent_span_id: Option<String>,
        name: String,
        kind: String,
        status: String,
        #[serde(default)]
        status_message: String,
        start_unix_nano: u64,
        end_unix_nano: u64,
        #[serde(default)]
        attributes: Vec<FixtureAttr>,
        #[serde(default)]
        events: Vec<FixtureEvent>,
        #[serde(default)]
        links: Vec<FixtureLink>,
        service: String,
        #[serde(default)]
        resource: Vec<FixtureAttr>,
        #[serde(default)]
        dropped: (u32, u32, u32),
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FixtureAttr {
        key: String,
        #[serde(rename = "type")]
        kind: String,
        value: Value,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FixtureEvent {
        time_unix_nano: u64,
        name: String,
        #[serde(default)]
        attributes: Vec<FixtureAttr>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FixtureLink {
        trace_id: String,
        span_id: String,
        #[serde(default)]
        attributes: Vec<FixtureAttr>,
    }

    fn fixture_path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/zipkin")
            .join(name)
    }

    fn attrs(items: &[FixtureAttr]) -> Vec<KeyValue> {
        items
            .iter()
            .map(|a| {
                let value = match (a.kind.as_str(), &a.value) {
                    ("str", Value::String(s)) => AnyValue::Str(s.clone()),
                    ("int", v) if v.is_i64() => AnyValue::Int(v.as_i64().unwrap()),
                    // Floats are strings in the fixture: `str::parse` rounds correctly, as
                    // Python's `float()` does.
                    ("float", Value::String(s)) => AnyValue::Float(s.parse().unwrap()),
                    ("bool", Value::Bool(b)) => AnyValue::Bool(*b),
                    other => panic!("attribute {}: bad type/value {other:?}", a.key),
                };
                KeyValue {
                    key: a.key.clone(),
                    value,
                }
            })
            .collect()
    }

    fn fixture_spans() -> Vec<Span> {
        load_fixture().iter().map(Span::from_data).collect()
    }

    fn load_fixture() -> Vec<SpanData> {
        let text = std::fs::read_to_string(fixture_path("spans.json")).unwrap();
        let file: FixtureFile = serde_json::from_str(&text).unwrap();
        file.spans
            .iter()
            .map(|s| SpanData {
                trace_id: TraceId::from_hex(&s.trace_id).unwrap(),
                span_id: SpanId::from_hex(&s.span_id).unwrap(),
                parent_span_id: s
                    .parent_span_id
                    .as_deref()
                    .map(|p| SpanId::from_hex(p).unwrap()),
                name: s.name.clone(),
                kind: match s.kind.as_str() {
                    "internal" => SpanKind::Internal,
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    k => panic!("kind {k}"),
                },
                status: match s.status.as_str() {
                    "unset" => StatusCode::Unset,
                    "ok" => StatusCode::Ok,
                    "error" => StatusCode::Error,
                    k => panic!("status {k}"),
                },
                status_message: s.status_message.clone(),
                start_unix_nano: s.start_unix_nano,
                end_unix_nano: s.end_unix_nano,
                attributes: attrs(&s.attributes),
                events: s
                    .events
                    .iter()
                    .map(|e| Event {
                        time_unix_nano: e.time_unix_nano,
                        name: e.name.clone(),
                        attributes: attrs(&e.attributes),
                    })
                    .collect(),
                links: s
                    .links
                    .iter()
                    .map(|l| Link {
                        trace_id: TraceId::from_hex(&l.trace_id).unwrap(),
                        span_id: SpanId::from_hex(&l.span_id).unwrap(),
                        attributes: attrs(&l.attributes),
                    })
                    .collect(),
                service: s.service.clone(),
                resource: attrs(&s.resource),
                dropped: s.dropped,
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Golden file

    const VERSION_PLACEHOLDER: &str = "${CARGO_PKG_VERSION}";

    /// The crate version in the scope tags becomes a placeholder, so a release does not
    /// invalidate the golden file.
    fn without_version(mut v: Value) -> Value {
        for span in v.as_array_mut().into_iter().flatten() {
            if let Some(tags) = span.get_mut("tags").and_then(Value::as_object_mut) {
                for key in ["otel.scope.version", "otel.library.version"] {
                    if let Some(t) = tags.get_mut(key) {
                        *t = Value::String(VERSION_PLACEHOLDER.into());
                    }
                }
            }
        }
        v
    }

    /// Regenerate with `SPANLINE_BLESS=1 cargo test --lib zipkin`.
    #[test]
    fn encodes_the_fixture_as_the_golden_file() {
        let ours = without_version(encode_zipkin(&load_fixture()));
        let path = fixture_path("expected.json");
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap() + "\n";
        if std::env::var_os("SPANLINE_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, pretty(&ours)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create it with SPANLINE_BLESS=1 cargo test --lib zipkin",
                path.display()
            )
        });
        let expected: Value = serde_json::from_str(&text).unwrap();
        similar_asserts::assert_eq!(pretty(&expected), pretty(&ours));
    }

    // -----------------------------------------------------------------------------------------
    // The reference: OpenTelemetry Python's Zipkin JSON v2 encoder on the same spans

    /// The versions tests/zipkin_reference.py insists on (tests/services.sh installs them).
    const PYTHON_PINS: &str =
        "opentelemetry-exporter-zipkin-json==1.45.1 opentelemetry-sdk==1.45.1";

    fn python_reference() -> Value {
        let python = match std::env::var_os("SPANLINE_TEST_PYTHON") {
            Some(p) if !p.is_empty() => p,
            _ => panic!(
                "SPANLINE_TEST_PYTHON is not set. It must name a Python interpreter with \
                 {PYTHON_PINS} installed: `bash tests/services.sh start` installs them into \
                 target/test-services/venv (then `source target/test-services/env`), or make \
                 a virtualenv under target/ with those pins \
                 and point SPANLINE_TEST_PYTHON at its bin/python. This comparison fails rather \
                 than skips without it."
            ),
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(&python)
            .arg(root.join("tests/zipkin_reference.py"))
            .arg(fixture_path("spans.json"))
            .args(["--scope", SCOPE_NAME, SCOPE_VERSION])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "SPANLINE_TEST_PYTHON={}: cannot run it: {e}",
                    python.to_string_lossy()
                )
            });
        assert!(
            out.status.success(),
            "tests/zipkin_reference.py failed ({}) with SPANLINE_TEST_PYTHON={} (it needs \
             {PYTHON_PINS}):\n{}",
            out.status,
            python.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Which deliberate differences the comparison met (each must occur in the fixture, so
    /// that the explanations below stay tested).
    #[derive(Debug, Default)]
    struct Deliberate {
        kind_null: usize,
        debug: usize,
        duration: usize,
        remote_endpoint: usize,
        error_false: usize,
    }

    /// Every difference between our span and Python's that is not one of the deliberate ones
    /// explained in the comments.
    fn compare_span(ours: &Value, py: &Value, seen: &mut Deliberate) -> Vec<String> {
        let mut diffs = Vec::new();
        let (Some(o), Some(p)) = (ours.as_object(), py.as_object()) else {
            return vec!["not an object".into()];
        };
        let mut keys: Vec<&String> = o.keys().chain(p.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (ov, pv) = (o.get(key.as_str()), p.get(key.as_str()));
            match key.as_str() {
                // `kind`: Python writes `"kind": null` for internal spans; the spec says the
                // field "must be omitted (set to null)" and Zipkin reads both alike. spanline
                // omits it (smaller payload, the spec's "Request Payload" rule).
                "kind" if pv == Some(&Value::Null) => {
                    seen.kind_null += 1;
                    if ov.is_some() {
                        diffs.push(format!("kind: ours {ov:?}, Python null"));
                    }
                }
                // `debug`: Python sets `debug: true` on every sampled span. Zipkin's `debug`
                // asks the collector to bypass sampling (B3 flags = 1); sampled is not debug
                // (open-telemetry/opentelemetry-python#549). spanline never sets it.
                "debug" => {
                    seen.debug += 1;
                    if ov.is_some() || pv != Some(&Value::Bool(true)) {
                        diffs.push(format!("debug: ours {ov:?}, Python {pv:?}"));
                    }
                }
                // `duration`: Zipkin's API rounds durations below 1 µs up to 1 (it reads 0 as
                // "unknown", an unfinished span); Python writes 0. Otherwise equal.
                "duration" => {
                    let (a, b) = (ov.and_then(Value::as_u64), pv.and_then(Value::as_u64));
                    if a != b {
                        if b == Some(0) && a == Some(1) {
                            seen.duration += 1;
                        } else {
                            diffs.push(format!("duration: ours {a:?}, Python {b:?}"));
                        }
                    }
                }
                // `remoteEndpoint`: the spec's "Remote endpoint" rule (rank 1, `peer.service`
                // for CLIENT and PRODUCER spans), which Python does not implement.
                "remoteEndpoint" => {
                    let peer = p.get("tags").and_then(|t| t.get("peer.service")).cloned();
                    let client = matches!(
                        p.get("kind").and_then(Value::as_str),
                        Some("CLIENT" | "PRODUCER")
                    );
                    let expected = peer.filter(|_| client).map(|s| {
                        let mut e = Map::new();
                        e.insert("serviceName".into(), s);
                        Value::Object(e)
                    });
                    if pv.is_some() || ov != expected.as_ref() {
                        diffs.push(format!("remoteEndpoint: ours {ov:?}, Python {pv:?}"));
                    } else {
                        seen.remote_endpoint += 1;
                    }
                }
                "tags" => {
                    let empty = Map::new();
                    let ot = ov.and_then(Value::as_object).unwrap_or(&empty);
                    let pt = pv.and_then(Value::as_object).unwrap_or(&empty);
                    let mut tag_keys: Vec<&String> = ot.keys().chain(pt.keys()).collect();
                    tag_keys.sort();
                    tag_keys.dedup();
                    for k in tag_keys {
                        let (a, b) = (ot.get(k.as_str()), pt.get(k.as_str()));
                        // `tags.error`: the spec says a boolean-looking `error=false` "SHOULD
                        // be removed" because Zipkin marks any span with an `error` tag as
                        // failed; Python keeps it. Only error *attributes* are concerned:
                        // an error status always writes its description.
                        if k == "error"
                            && a.is_none()
                            && b == Some(&Value::String("false".into()))
                            && pt.get("otel.status_code") != Some(&Value::String("ERROR".into()))
                        {
                            seen.error_false += 1;
                            continue;
                        }
                        if a != b {
                            diffs.push(format!("tags.{k}: ours {a:?}, Python {b:?}"));
                        }
                    }
                }
                // Zipkin orders annotations by time; the order in the array carries nothing.
                "annotations" => {
                    let sorted = |v: Option<&Value>| {
                        let mut a: Vec<(u64, String)> = v
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(|x| {
                                (
                                    x["timestamp"].as_u64().unwrap_or(u64::MAX),
                                    x["value"].as_str().unwrap_or("<not a string>").to_owned(),
                                )
                            })
                            .collect();
                        a.sort();
                        a
                    };
                    let (a, b) = (sorted(ov), sorted(pv));
                    if a != b {
                        diffs.push(format!("annotations:\n  ours   {a:?}\n  Python {b:?}"));
                    }
                }
                // Everything else (ids, name, kind, timestamp, localEndpoint) must be equal;
                // localEndpoint is comparable because the script serializes each span with the
                // endpoint Python's exporter would give a batch of that span's service.
                _ => {
                    if ov != pv {
                        diffs.push(format!("{key}: ours {ov:?}, Python {pv:?}"));
                    }
                }
            }
        }
        diffs
    }

    #[test]
    fn matches_the_opentelemetry_python_zipkin_encoder() {
        let reference = python_reference();
        let ours = encode_zipkin(&load_fixture());
        let index = |v: &Value| -> BTreeMap<(String, String), Value> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let id = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    ((id("traceId"), id("id")), s.clone())
                })
                .collect()
        };
        let (ours, py) = (index(&ours), index(&reference));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            py.keys().collect::<Vec<_>>(),
            "the same spans"
        );
        let mut seen = Deliberate::default();
        let mut report = Vec::new();
        for (id, o) in &ours {
            for d in compare_span(o, &py[id], &mut seen) {
                report.push(format!("span {}/{}: {d}", id.0, id.1));
            }
        }
        assert!(
            report.is_empty(),
            "spanline's Zipkin JSON differs from OpenTelemetry Python's:\n{}",
            report.join("\n")
        );
        // Each deliberate difference occurs in the fixture, so each explanation is exercised.
        assert!(seen.kind_null > 0, "{seen:?}");
        assert!(seen.debug > 0, "{seen:?}");
        assert!(seen.duration > 0, "{seen:?}");
        assert!(seen.remote_endpoint > 0, "{seen:?}");
        assert!(seen.error_false > 0, "{seen:?}");
    }

    // -----------------------------------------------------------------------------------------
    // Encoder units

    fn span() -> SpanData {
        SpanData {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            parent_span_id: None,
            name: "n".into(),
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_001_000_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            service: "svc".into(),
            resource: Vec::new(),
            dropped: (0, 0, 0),
        }
    }

    #[test]
    fn python_float_repr_matches_cpython() {
        // Expected values are CPython's `repr(float(text))`.
        let table = [
            ("0.1", "0.1"),
            ("1.0", "1.0"),
            ("123.0", "123.0"),
            ("-2.5", "-2.5"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-5", "1.5e-05"),
            ("1234567890123456.0", "1234567890123456.0"),
            ("1e16", "1e+16"),
            ("12345678901234567.0", "1.2345678901234568e+16"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("0.3333333333333333", "0.3333333333333333"),
            // Exact ties between two shortest forms: CPython takes the even one.
            ("19657848128154.8125", "19657848128154.812"),
            ("-2032606824207703.25", "-2032606824207703.2"),
            ("1156983321958482.75", "1156983321958482.8"),
            ("0.5", "0.5"),
            ("3.0", "3.0"),
            ("100.5", "100.5"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("inf", "inf"),
            ("-inf", "-inf"),
            ("nan", "nan"),
        ];
        for (text, want) in table {
            let f: f64 = text.parse().unwrap();
            assert_eq!(python_float_repr(f), want, "{text}");
        }
    }

    #[test]
    fn annotation_values_are_python_json_dumps() {
        let kv = |k: &str, v: AnyValue| KeyValue {
            key: k.into(),
            value: v,
        };
        assert_eq!(annotation_value("e", &[]), r#"{"e": {}}"#);
        let attrs = [
            kv("b", AnyValue::Float(f64::NAN)),
            kv("a", AnyValue::Str("q\"\\\n\u{1}é😀".into())),
            kv("c", AnyValue::Bool(true)),
            kv("b", AnyValue::Int(-3)),
            kv("d", AnyValue::Float(f64::NEG_INFINITY)),
        ];
        assert_eq!(
            annotation_value("ev\u{7f}", &attrs),
            r#"{"ev\u007f": {"a": "q\"\\\n\u0001\u00e9\ud83d\ude00", "b": -3, "c": true, "d": -Infinity}}"#
        );
    }

    #[test]
    fn times_round_to_the_nearest_microsecond_and_durations_are_at_least_one() {
        let mut s = span();
        s.start_unix_nano = 1_499;
        s.end_unix_nano = 1_899;
        let v = &encode_zipkin(&[s.clone()])[0];
        assert_eq!(v["timestamp"], 1);
        assert_eq!(v["duration"], 1, "400 ns rounds to 0 µs, shown as 1");
        s.start_unix_nano = 1_500;
        s.end_unix_nano = 2_000_000_500;
        let v = &encode_zipkin(&[s])[0];
        assert_eq!(v["timestamp"], 2);
        assert_eq!(v["duration"], 1_999_999, "1 999 999 000 ns");
    }

    #[test]
    fn kinds_parents_and_empty_fields() {
        let mut s = span();
        let v = &encode_zipkin(&[s.clone()])[0];
        for absent in ["kind", "parentId", "annotations", "remoteEndpoint", "debug"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        assert_eq!(
            v["localEndpoint"],
            serde_json::json!({"serviceName": "svc"})
        );
        assert_eq!(v["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        s.parent_span_id = SpanId::from_hex("a3ce929d0e0e4736");
        for (kind, name) in [
            (SpanKind::Server, "SERVER"),
            (SpanKind::Client, "CLIENT"),
            (SpanKind::Producer, "PRODUCER"),
            (SpanKind::Consumer, "CONSUMER"),
        ] {
            s.kind = kind;
            let v = &encode_zipkin(&[s.clone()])[0];
            assert_eq!(v["kind"], name);
            assert_eq!(v["parentId"], "a3ce929d0e0e4736");
        }
    }

    #[test]
    fn status_becomes_tags_and_error_false_attributes_go() {
        let mut s = span();
        s.attributes = vec![KeyValue {
            key: "error".into(),
            value: AnyValue::Bool(false),
        }];
        let v = &encode_zipkin(&[s.clone()])[0];
        assert!(v["tags"].get("error").is_none());
        assert!(v["tags"].get("otel.status_code").is_none());
        s.status = StatusCode::Ok;
        s.status_message = "ignored".into();
        let v = &encode_zipkin(&[s.clone()])[0];
        assert_eq!(v["tags"]["otel.status_code"], "OK");
        assert!(v["tags"].get("error").is_none());
        s.status = StatusCode::Error;
        s.status_message = String::new();
        let v = &encode_zipkin(&[s.clone()])[0];
        assert_eq!(v["tags"]["otel.status_code"], "ERROR");
        assert_eq!(v["tags"]["error"], "", "an error without a message");
        s.status_message = "false".into();
        let v = &encode_zipkin(&[s.clone()])[0];
        assert_eq!(
            v["tags"]["error"], "false",
            "an error status keeps its description"
        );
        s.status = StatusCode::Unset;
        s.attributes[0].value = AnyValue::Bool(true);
        let v = &encode_zipkin(&[s])[0];
        assert_eq!(v["tags"]["error"], "true", "error=true is kept");
    }

    #[test]
    fn resource_attributes_win_and_links_are_dropped() {
        let mut s = span();
        s.attributes = vec![KeyValue::str("faas.name", "span"), KeyValue::str("k", "v")];
        s.resource = vec![KeyValue::str("faas.name", "resource")];
        s.links = vec![Link {
            trace_id: s.trace_id,
            span_id: s.span_id,
            attributes: Vec::new(),
        }];
        s.dropped = (0, 0, 2);
        let v = &encode_zipkin(&[s])[0];
        assert_eq!(v["tags"]["faas.name"], "resource");
        assert_eq!(v["tags"]["service.name"], "svc");
        assert_eq!(v["tags"]["otel.dropped_links_count"], "2");
        assert!(v["tags"].get("otel.dropped_events_count").is_none());
        assert_eq!(v["tags"]["otel.scope.name"], "spanline");
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "duration",
                "id",
                "localEndpoint",
                "name",
                "tags",
                "timestamp",
                "traceId"
            ],
            "no field for links"
        );
    }

    #[test]
    fn remote_endpoint_only_for_clients_and_producers_with_a_peer_service() {
        let mut s = span();
        s.attributes = vec![KeyValue::str("peer.service", "lambda")];
        for (kind, remote) in [
            (SpanKind::Client, true),
            (SpanKind::Producer, true),
            (SpanKind::Server, false),
            (SpanKind::Consumer, false),
            (SpanKind::Internal, false),
        ] {
            s.kind = kind;
            let v = &encode_zipkin(&[s.clone()])[0];
            assert_eq!(v.get("remoteEndpoint").is_some(), remote, "{kind:?}");
        }
        s.kind = SpanKind::Client;
        let v = &encode_zipkin(&[s.clone()])[0];
        assert_eq!(
            v["remoteEndpoint"],
            serde_json::json!({"serviceName": "lambda"})
        );
        s.attributes[0].value = AnyValue::Int(1);
        assert!(encode_zipkin(&[s])[0].get("remoteEndpoint").is_none());
    }

    // -----------------------------------------------------------------------------------------
    // Configuration

    #[test]
    fn config_from_env() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = ZipkinConfig::from_env(env(&[])).unwrap();
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = ZipkinConfig::from_env(env(&[
            (
                "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
                " http://zipkin:9411/api/v2/spans ",
            ),
            ("OTEL_EXPORTER_ZIPKIN_TIMEOUT", "2500"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, "http://zipkin:9411/api/v2/spans");
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let e = ZipkinConfig::from_env(env(&[("OTEL_EXPORTER_ZIPKIN_TIMEOUT", "10s")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_ZIPKIN_TIMEOUT=\"10s\""), "{e}");
        let e = ZipkinConfig::from_env(env(&[(
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT",
            "ftp://u:secret@host/x",
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected an http"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let bad = ZipkinConfig {
            max_batch_spans: 0,
            ..ZipkinConfig::default()
        };
        assert!(matches!(ZipkinSink::new(bad), Err(SinkError::Config(_))));
    }

    // -----------------------------------------------------------------------------------------
    // Sending, against a scripted HTTP/1.1 server on 127.0.0.1 (one request per connection)

    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    }

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: "",
        }
    }

    #[derive(Clone, Debug)]
    struct Request {
        line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    struct Server {
        port: u16,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl Server {
        fn url(&self) -> String {
            format!("http://127.0.0.1:{}/api/v2/spans", self.port)
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// Answers the n-th request with `replies[n]`, repeating the last.
    async fn server(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let Some(req) = read_request(&mut sock).await else {
                    continue;
                };
                seen.lock().unwrap().push(req);
                let r = replies[n.min(replies.len() - 1)].clone();
                n += 1;
                let mut out = format!("HTTP/1.1 {} Scripted\r\n", r.status);
                for (k, v) in r.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n{}",
                    r.body.len(),
                    r.body
                ));
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            }
        });
        Server { port, requests }
    }

    async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let line = lines.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Request {
            line,
            headers,
            body,
        })
    }

    fn config(url: String) -> ZipkinConfig {
        ZipkinConfig {
            endpoint: url,
            timeout: Duration::from_secs(5),
            retry_deadline: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(10)),
            ..ZipkinConfig::default()
        }
    }

    #[tokio::test]
    async fn posts_the_json_array_and_takes_202() {
        let srv = server(vec![reply(202)]).await;
        let spans = fixture_spans();
        let mut sink = ZipkinSink::new(config(srv.url())).unwrap();
        let d = sink.send(&spans).await.unwrap();
        assert_eq!((d.accepted, d.rejected, d.attempts), (6, 0, 1));
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].line, "POST /api/v2/spans HTTP/1.1");
        assert_eq!(reqs[0].header("content-type"), Some("application/json"));
        assert_eq!(reqs[0].json(), encode_zipkin(&load_fixture()));
        sink.shutdown().await.unwrap();
        sink.shutdown().await.unwrap();
        assert!(matches!(sink.send(&spans).await, Err(SinkError::Config(_))));
    }

    #[tokio::test]
    async fn large_sends_are_split_into_batches_and_200_is_success() {
        let srv = server(vec![reply(200)]).await;
        let spans = fixture_spans();
        let mut sink = ZipkinSink::new(ZipkinConfig {
            max_batch_spans: 4,
            ..config(srv.url())
        })
        .unwrap();
        let d = sink.send(&spans).await.unwrap();
        assert_eq!((d.accepted, d.attempts), (6, 1));
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].json(), encode_zipkin(&load_fixture()[..4]));
        assert_eq!(reqs[1].json(), encode_zipkin(&load_fixture()[4..]));
        assert_eq!(sink.send(&[]).await.unwrap(), Delivery::default());
        assert_eq!(srv.requests().len(), 2, "nothing to send, no request");
    }

    #[tokio::test]
    async fn retries_a_503_then_succeeds() {
        let unavailable = Reply {
            status: 503,
            headers: vec![("retry-after", "0")],
            body: "busy",
        };
        let srv = server(vec![unavailable, reply(202)]).await;
        let spans = fixture_spans();
        let mut sink = ZipkinSink::new(config(srv.url())).unwrap();
        let d = sink.send(&spans).await.unwrap();
        assert_eq!((d.accepted, d.attempts), (6, 2));
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, reqs[1].body, "the same body again");
    }

    #[tokio::test]
    async fn waits_as_long_as_retry_after_asks() {
        let throttled = Reply {
            status: 429,
            headers: vec![("retry-after", "1")],
            body: "",
        };
        let srv = server(vec![throttled, reply(202)]).await;
        let mut sink = ZipkinSink::new(config(srv.url())).unwrap();
        let t = std::time::Instant::now();
        let d = sink.send(&fixture_spans()[..1]).await.unwrap();
        assert_eq!(d.attempts, 2);
        assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn gives_up_at_the_retry_deadline() {
        let srv = server(vec![Reply {
            status: 503,
            headers: Vec::new(),
            body: "still busy",
        }])
        .await;
        let mut sink = ZipkinSink::new(ZipkinConfig {
            retry_deadline: Duration::from_millis(300),
            ..config(srv.url())
        })
        .unwrap();
        let t = std::time::Instant::now();
        let e = sink.send(&fixture_spans()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        match &e {
            SinkError::Exhausted { attempts, last, .. } => {
                assert!(*attempts >= 2, "{e}");
                assert!(last.contains("503") && last.contains("still busy"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn a_400_is_fatal_with_the_body_and_no_credentials() {
        let srv = server(vec![Reply {
            status: 400,
            headers: vec![("content-type", "text/plain")],
            body: "Expected a JSON_V2 encoded list\n",
        }])
        .await;
        let url = srv.url().replace("http://", "http://user:hunter2@");
        let mut sink = ZipkinSink::new(config(url)).unwrap();
        let e = sink.send(&fixture_spans()).await.unwrap_err();
        match &e {
            SinkError::Fatal { status, body, .. } => {
                assert!(status.contains("400"), "{e}");
                assert_eq!(body, "Expected a JSON_V2 encoded list");
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_retryable());
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(srv.requests().len(), 1, "no retry after a 4xx");
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_retried_until_the_deadline() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut sink = ZipkinSink::new(ZipkinConfig {
            retry_deadline: Duration::from_millis(200),
            ..config(format!("http://127.0.0.1:{port}/api/v2/spans"))
        })
        .unwrap();
        let e = sink.send(&fixture_spans()).await.unwrap_err();
        assert!(matches!(e, SinkError::Exhausted { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_redirect_is_a_configuration_error_and_is_not_followed() {
        let elsewhere = server(vec![reply(202)]).await;
        let location: &'static str = Box::leak(
            format!(
                "http://user:pw@127.0.0.1:{}/api/v2/spans?key=topsecret",
                elsewhere.port
            )
            .into_boxed_str(),
        );
        for code in [302, 307, 308] {
            let srv = server(vec![Reply {
                status: code,
                headers: vec![("location", location)],
                body: "moved",
            }])
            .await;
            let e = ZipkinSink::new(config(srv.url()))
                .unwrap()
                .send(&fixture_spans())
                .await
                .unwrap_err();
            let SinkError::Config(msg) = &e else {
                panic!("{code}: {e:?}")
            };
            assert!(msg.contains(&code.to_string()), "{msg}");
            let shown = format!(
                "http://<redacted>@127.0.0.1:{}/api/v2/spans?<redacted>",
                elsewhere.port
            );
            assert!(msg.contains(&shown), "{msg}");
            assert!(!msg.contains("topsecret") && !msg.contains("pw@"), "{msg}");
            assert_eq!(srv.requests().len(), 1, "{code}: not retried");
        }
        assert!(elsewhere.requests().is_empty(), "a redirect was followed");
    }

    #[test]
    fn cleartext_credentials_to_a_remote_host_are_refused_unless_allowed() {
        let remote = "http://user:pw@zipkin.example:9411/api/v2/spans";
        let e = ZipkinSink::new(config(remote.into())).unwrap_err();
        let SinkError::Config(msg) = &e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("--allow-insecure"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        let allowed = ZipkinConfig {
            allow_insecure: true,
            ..config(remote.into())
        };
        assert!(ZipkinSink::new(allowed).is_ok());
        for fine in [
            "https://user:pw@zipkin.example:9411/api/v2/spans",
            "http://user:pw@127.0.0.1:9411/api/v2/spans",
            "http://zipkin.example:9411/api/v2/spans",
        ] {
            assert!(ZipkinSink::new(config(fine.into())).is_ok(), "{fine}");
        }
        let from_env = ZipkinConfig::from_env(|k| match k {
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT" => Some(remote.to_owned()),
            "SPANLINE_ALLOW_INSECURE" => Some("true".to_owned()),
            _ => None,
        })
        .unwrap();
        assert!(from_env.allow_insecure);
        assert!(ZipkinConfig::from_env(|k| match k {
            "OTEL_EXPORTER_ZIPKIN_ENDPOINT" => Some(remote.to_owned()),
            _ => None,
        })
        .is_err());
    }

    #[tokio::test]
    async fn backend_bodies_are_made_visible() {
        let srv = server(vec![Reply {
            status: 400,
            headers: vec![("content-type", "text/plain")],
            body: "bad\u{1b}[2J\u{1b}]0;pwned\u{7} \u{9b}31m",
        }])
        .await;
        let e = ZipkinSink::new(config(srv.url()))
            .unwrap()
            .send(&fixture_spans())
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("bad\\x1b[2J\\x1b]0;pwned\\x07 \\u{9b}31m"),
            "{text}"
        );
        assert!(!crate::convert::printable::has_control(&text), "{text:?}");
    }
}
