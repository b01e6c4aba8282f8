//! Property tests: `decode(encode(span)) == span` for the crate's decoder and for the naive
//! reference decoder, and agreement of the two decoders on mutated lines.

use crate::model::{self, Attr, Dropped, Event, Link, Span, Str};
use crate::reference;
use proptest::prelude::*;

fn text(max_chars: usize) -> impl Strategy<Value = String> {
    // Any Unicode scalar, controls and separators included, biased towards the bytes the
    // format treats specially.
    let special = prop::sample::select(vec![
        ' ', '\n', '\t', '\r', ';', '%', '=', '#', '~', '!', '@', '^', '*', '+', '|', '"',
        '\u{7f}', '\u{2028}', 'é', '😀', 'S', 'P', 'L', 'N', '1',
    ]);
    let ch = prop_oneof![3 => any::<char>(), 2 => special, 3 => prop::char::range('a', 'z')];
    prop::collection::vec(ch, 0..max_chars).prop_map(|v| v.into_iter().collect())
}

fn key() -> impl Strategy<Value = String> {
    text(12).prop_filter("keys are non-empty", |k| !k.is_empty())
}

fn hex(bytes: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), bytes)
        .prop_filter("non-zero id", |b| b.iter().any(|&x| x != 0))
        .prop_map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
}

fn attr() -> impl Strategy<Value = Attr> {
    let value = prop_oneof![
        text(24).prop_map(|s| ("string", serde_json::to_value(Str::Plain(s)).unwrap())),
        any::<i64>().prop_map(|i| ("int", serde_json::Value::String(i.to_string()))),
        any::<f64>().prop_map(|f| {
            let f = if f == 0.0 { 0.0 } else { f };
            let v = if f.is_nan() {
                "nan".into()
            } else if f.is_infinite() {
                if f > 0.0 {
                    "inf".into()
                } else {
                    "-inf".into()
                }
            } else {
                serde_json::json!(f)
            };
            ("float", v)
        }),
        any::<bool>().prop_map(|b| ("bool", b.into())),
    ];
    (key(), value).prop_map(|(k, (ty, value))| Attr {
        key: Str::Plain(k),
        ty: ty.into(),
        value,
    })
}

fn kind() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["internal", "server", "client", "producer", "consumer"])
        .prop_map(String::from)
}

fn status() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["unset", "ok", "error"]).prop_map(String::from)
}

fn opt_text() -> impl Strategy<Value = Option<Str>> {
    prop::option::of(text(16).prop_map(Str::Plain))
}

prop_compose! {
    fn span_body(trace: String)(
        span_id in hex(8),
        parent in prop::option::of(hex(8)),
        start_us in 1_600_000_000_000_000u64..1_900_000_000_000_000,
        duration_us in 0u64..10_000_000_000,
        name in text(20),
        kind in kind(),
        status in status(),
        message in opt_text(),
        attributes in prop::collection::vec(attr(), 0..5),
        events in prop::collection::vec((-1_000_000i64..1_000_000_000, text(10), prop::collection::vec(attr(), 0..3)), 0..3),
        links in prop::collection::vec((hex(16), hex(8), prop::collection::vec(attr(), 0..2)), 0..3),
    ) -> Span {
        Span {
            trace_id: trace.clone(),
            span_id,
            parent_span_id: parent,
            start_us,
            duration_us,
            name: Str::Plain(name),
            kind,
            status,
            status_message: message,
            service: None,
            request_id: None,
            attributes,
            events: events.into_iter().map(|(offset_us, name, attributes)| Event { offset_us, name: Str::Plain(name), attributes }).collect(),
            links: links.into_iter().map(|(trace_id, span_id, attributes)| Link { trace_id, span_id, attributes }).collect(),
            resource: vec![],
            dropped: Dropped::default(),
        }
    }
}

fn shared() -> impl Strategy<Value = (Option<Str>, Option<Str>, Vec<Attr>)> {
    (opt_text(), opt_text(), prop::collection::vec(attr(), 0..2))
}

fn span() -> impl Strategy<Value = Span> {
    (hex(16), shared()).prop_flat_map(|(trace, (service, request_id, resource))| {
        span_body(trace).prop_map(move |mut s| {
            s.service = service.clone();
            s.request_id = request_id.clone();
            s.resource = resource.clone();
            s
        })
    })
}

fn batch() -> impl Strategy<Value = Vec<Span>> {
    (hex(16), shared(), 1usize..8).prop_flat_map(|(trace, (service, request_id, resource), n)| {
        let one = span_body(trace).prop_map(move |mut s| {
            s.service = service.clone();
            s.request_id = request_id.clone();
            s.resource = resource.clone();
            s
        });
        // Repeat spans sometimes so that the ditto paths run.
        prop::collection::vec(one, n).prop_map(|mut v| {
            for i in 1..v.len() {
                if i % 2 == 0 {
                    v[i].name = v[i - 1].name.clone();
                    v[i].parent_span_id = v[i - 1].parent_span_id.clone();
                    v[i].attributes = v[i - 1].attributes.clone();
                    v[i].events = v[i - 1].events.clone();
                    v[i].links = v[i - 1].links.clone();
                    v[i].status_message = v[i - 1].status_message.clone();
                }
            }
            v
        })
    })
}

/// Mutations a line may suffer: a byte replaced, removed or duplicated; cut short.
fn mutate(line: &str, pos: usize, what: u8, with: char) -> String {
    let chars: Vec<char> = line.chars().collect();
    let pos = pos % chars.len().max(1);
    let mut out: Vec<char> = chars.clone();
    match what % 4 {
        0 => out[pos] = with,
        1 => {
            out.remove(pos);
        }
        2 => out.insert(pos, with),
        _ => out.truncate(pos),
    }
    out.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn span_records_round_trip(span in span()) {
        let line = model::encode_span(&span);
        prop_assert!(line.len() <= spanline::span_line::MAX_LINE);
        prop_assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "control byte in {line:?}");
        let decoded = model::decode_line(&line);
        prop_assert_eq!(decoded, Ok(vec![span.clone()]), "line {}", line);
        prop_assert_eq!(reference::decode(&line), Ok(vec![span]), "reference, line {}", line);
    }

    #[test]
    fn batch_records_round_trip(spans in batch()) {
        let line = model::encode_batch(&spans);
        let decoded = model::decode_line(&line);
        prop_assert_eq!(decoded, Ok(spans.clone()), "line {}", line);
        prop_assert_eq!(reference::decode(&line), Ok(spans), "reference, line {}", line);
    }

    #[test]
    fn decoders_agree_on_damaged_lines(span in span(), pos in any::<usize>(), what in any::<u8>(), with in prop::sample::select(vec![' ', ';', '%', '"', '|', '@', '^', '*', '+', '=', '#', '!', '~', 'A', '0', '\t', '-'])) {
        let line = mutate(&model::encode_span(&span), pos, what, with);
        let fast = model::decode_line(&line);
        let naive = reference::decode(&line);
        prop_assert_eq!(fast.is_ok(), naive.is_ok(), "line {:?}: fast {:?} naive {:?}", line, fast, naive);
        if let (Ok(a), Ok(b)) = (fast, naive) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn decoders_agree_on_damaged_batches(spans in batch(), pos in any::<usize>(), what in any::<u8>(), with in prop::sample::select(vec![' ', ';', '"', '|', '-', '@', 'A', '0'])) {
        let line = mutate(&model::encode_batch(&spans), pos, what, with);
        let fast = model::decode_line(&line);
        let naive = reference::decode(&line);
        prop_assert_eq!(fast.is_ok(), naive.is_ok(), "line {:?}: fast {:?} naive {:?}", line, fast, naive);
        if let (Ok(a), Ok(b)) = (fast, naive) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn decoder_never_panics(s in ".{0,300}") {
        let _ = spanline::span_line::decode(&s);
        let _ = spanline::span_line::decode(&format!("SPLN1 {s}"));
        let _ = spanline::span_line::find_marker(&s);
    }
}
