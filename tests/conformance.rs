//! The conformance vectors in `fixtures/conformance/`: every valid line decodes to its spans,
//! every canonical vector's spans encode to its line byte for byte, every malformed line is
//! rejected with its reason, and the reference decoder agrees.

use crate::model::{self, Span};
use crate::reference;
use serde::Deserialize;
use similar_asserts::assert_eq;

#[derive(Deserialize)]
struct Valid {
    vectors: Vec<ValidVector>,
}

#[derive(Deserialize)]
struct ValidVector {
    name: String,
    canonical: bool,
    record: String,
    line: String,
    spans: Vec<Span>,
    input: Option<Vec<Span>>,
}

#[derive(Deserialize)]
struct Malformed {
    vectors: Vec<MalformedVector>,
}

#[derive(Deserialize)]
struct MalformedVector {
    name: String,
    line: String,
    error: String,
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/fixtures/conformance/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn valid_vectors_decode() {
    let valid: Valid = load("valid.json");
    assert!(valid.vectors.len() >= 30, "too few vectors");
    for v in &valid.vectors {
        let got = model::decode_line(&v.line);
        assert_eq!(got, Ok(v.spans.clone()), "vector {:?}", v.name);
        assert_eq!(
            reference::decode(&v.line),
            Ok(v.spans.clone()),
            "reference, vector {:?}",
            v.name
        );
    }
}

#[test]
fn canonical_vectors_encode_byte_for_byte() {
    let valid: Valid = load("valid.json");
    let mut n = 0;
    for v in valid.vectors.iter().filter(|v| v.canonical) {
        let input = v.input.as_ref().unwrap_or(&v.spans);
        let line = match v.record.as_str() {
            "span" => model::encode_span(&input[0]),
            "batch" => model::encode_batch(input),
            r => panic!("record kind {r}"),
        };
        assert_eq!(line, v.line, "vector {:?}", v.name);
        n += 1;
    }
    assert!(n >= 20, "too few canonical vectors: {n}");
}

#[test]
fn malformed_vectors_are_rejected_with_their_reason() {
    let malformed: Malformed = load("malformed.json");
    assert!(malformed.vectors.len() >= 15);
    for v in &malformed.vectors {
        let got = model::decode_line(&v.line).map(|_| ());
        assert_eq!(got, Err(v.error.clone()), "vector {:?}", v.name);
        assert!(
            reference::decode(&v.line).is_err(),
            "reference accepted {:?}",
            v.name
        );
    }
}

#[derive(Deserialize)]
struct Placement {
    vectors: Vec<PlacementVector>,
}

#[derive(Deserialize)]
struct PlacementVector {
    name: String,
    message: String,
    expect: String,
}

#[test]
fn the_marker_counts_only_where_an_emitter_puts_it() {
    use spanline::convert::parse::{parse_text, parse_text_with, MarkerPlacement, Parsed};
    let placement: Placement = load("placement.json");
    assert!(placement.vectors.len() >= 10);
    let outcome = |p: Parsed<'_>| match p {
        Parsed::Spans { .. } => "span".to_owned(),
        Parsed::Foreign => "foreign".to_owned(),
        Parsed::Malformed(kind) => kind.code().to_owned(),
        Parsed::Platform(_) => "platform".to_owned(),
    };
    for v in &placement.vectors {
        assert_eq!(
            outcome(parse_text(&v.message)),
            v.expect,
            "vector {:?}",
            v.name
        );
        // The permissive search decodes every one that carries a marker after a space or tab.
        let anywhere = outcome(parse_text_with(&v.message, MarkerPlacement::Anywhere));
        let want = if v.expect == "marker_not_at_start" {
            "span"
        } else {
            v.expect.as_str()
        };
        assert_eq!(anywhere, want, "anywhere, vector {:?}", v.name);
    }
}

#[test]
fn reference_span_is_at_most_130_bytes() {
    let valid: Valid = load("valid.json");
    let reference = valid
        .vectors
        .iter()
        .find(|v| {
            v.spans[0].name == model::Str::Plain("service-egress".into()) && v.record == "span"
        })
        .expect("a reference span vector");
    let with_newline = reference.line.len() + 1;
    assert!(with_newline <= 130, "{} bytes", reference.line.len() + 1);
}
