//! X-Ray's OTLP endpoint limits, applied before anything is sent: pure, no I/O.
//!
//! The endpoint (`https://xray.<region>.amazonaws.com/v1/traces`; AWS CloudWatch user guide,
//! "OTLP Endpoints", table "Endpoint limits and restrictions") rejects a whole request that
//! holds more than 10,000 spans or more than 5 MB uncompressed, a span over 200 KB, or any span
//! more than 14 days in the past or 2 hours in the future, and lists 24 as the "maximum time gap
//! in events / request" (read as hours). One bad span would cost the whole batch, so
//! [`prepare`] makes every request acceptable first:
//!
//! * a span outside the time window is skipped and counted ([`TOO_OLD`], [`IN_FUTURE`]);
//! * a span over the size limit loses its events (the latest first), then its attributes (the
//!   last first), then its links, until it fits, with OTLP's dropped counts raised so the
//!   backend shows what is missing; it is counted as [`TRIMMED`]. One that cannot fit even
//!   bare (a name or status message over the limit) is skipped and counted as [`TOO_LARGE`];
//! * the rest are cut into requests of at most 10,000 spans, at most 5 MB of protobuf and at
//!   most 24 hours between their earliest and latest start. (OTLP/JSON bodies are larger than
//!   the protobuf this plans with; the sink halves a request whose JSON body is over the limit.)
//!
//! "KB" and "MB" are read as 1,000 and 1,000,000 bytes, and the window is narrowed by
//! [`XrayLimits::margin`] on both sides, so a span at the edge is not rejected because the
//! request took a moment or the clocks differ a little.

use crate::convert::assemble::{AnyValue, KeyValue, Span, SpanData};
use crate::convert::proto::{self, Scalar};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Counted as: a span trimmed to fit the per-span size limit.
pub const TRIMMED: &str = "xray_span_trimmed";
/// Counted as: a span skipped because even bare it was over the per-span size limit.
pub const TOO_LARGE: &str = "xray_span_too_large";
/// Counted as: a span skipped because it started more than 14 days ago.
pub const TOO_OLD: &str = "xray_span_too_old";
/// Counted as: a span skipped because it ends more than 2 hours from now.
pub const IN_FUTURE: &str = "xray_span_in_future";

/// The bounds [`prepare`] keeps requests within.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XrayLimits {
    /// Most spans in one request.
    pub max_spans: usize,
    /// Most bytes of uncompressed body in one request.
    pub max_request_bytes: usize,
    /// Most bytes of one span (its OTLP `Span` message with its resource).
    pub max_span_bytes: usize,
    /// How far back a span may start.
    pub max_age: Duration,
    /// How far ahead a span may end.
    pub max_ahead: Duration,
    /// Most time between the earliest and the latest span start in one request.
    pub max_gap: Duration,
    /// Taken off both ends of the time window: the request's own delay and clock skew.
    pub margin: Duration,
}

/// X-Ray's published limits.
pub const XRAY_LIMITS: XrayLimits = XrayLimits {
    max_spans: 10_000,
    max_request_bytes: 5_000_000,
    max_span_bytes: 200_000,
    max_age: Duration::from_secs(14 * 24 * 3600),
    max_ahead: Duration::from_secs(2 * 3600),
    max_gap: Duration::from_secs(24 * 3600),
    margin: Duration::from_secs(5 * 60),
};

/// What [`prepare`] set aside or changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XrayCounts {
    /// Spans trimmed to fit.
    pub trimmed: u64,
    /// Spans skipped: too large even bare.
    pub too_large: u64,
    /// Spans skipped: too old.
    pub too_old: u64,
    /// Spans skipped: too far ahead.
    pub in_future: u64,
}

impl XrayCounts {
    /// The counts under their summary names.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            (TRIMMED, self.trimmed),
            (TOO_LARGE, self.too_large),
            (TOO_OLD, self.too_old),
            (IN_FUTURE, self.in_future),
        ]
    }
}

/// The spans to send and how they are cut into requests.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// The spans that go out: the input itself when nothing had to change.
    pub spans: Cow<'a, [Span]>,
    /// Each request's part of `spans`, in order, covering it.
    pub batches: Vec<Range<usize>>,
    /// What was trimmed or skipped.
    pub counts: XrayCounts,
}

/// Makes `spans` acceptable to X-Ray at `now_unix_nano` and cuts them into requests of at most
/// `max_batch_spans` (and `limits.max_spans`) spans. See the module documentation.
pub fn prepare<'a>(
    spans: &'a [Span],
    now_unix_nano: u64,
    limits: &XrayLimits,
    max_batch_spans: usize,
) -> Prepared<'a> {
    let mut counts = XrayCounts::default();
    let oldest = now_unix_nano
        .saturating_sub(nanos(limits.max_age))
        .saturating_add(nanos(limits.margin));
    let latest = now_unix_nano
        .saturating_add(nanos(limits.max_ahead))
        .saturating_sub(nanos(limits.margin));
    // Only copied when something changes (a span skipped or trimmed).
    let mut owned: Option<Vec<Span>> = None;
    for (i, s) in spans.iter().enumerate() {
        let verdict = if s.start_unix_nano < oldest {
            counts.too_old += 1;
            None
        } else if s.end_unix_nano > latest {
            counts.in_future += 1;
            None
        } else if span_size(s) > limits.max_span_bytes {
            match trim(s, limits.max_span_bytes) {
                Some(t) => {
                    counts.trimmed += 1;
                    Some(Cow::Owned(t))
                }
                None => {
                    counts.too_large += 1;
                    None
                }
            }
        } else {
            Some(Cow::Borrowed(s))
        };
        match verdict {
            Some(Cow::Borrowed(s)) => {
                if let Some(v) = owned.as_mut() {
                    v.push(s.clone());
                }
            }
            changed => {
                let v = owned.get_or_insert_with(|| spans[..i].to_vec());
                if let Some(t) = changed {
                    v.push(t.into_owned());
                }
            }
        }
    }
    let spans: Cow<'a, [Span]> = match owned {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(spans),
    };
    let batches = cut(&spans, limits, max_batch_spans);
    Prepared {
        spans,
        batches,
        counts,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The size the per-span limit is measured on: the span's OTLP `Span` message as it sits in a
/// request, plus its resource (which X-Ray stores with every span).
pub fn span_size(s: &Span) -> usize {
    proto::field_len(proto::SCOPE_SPANS_SPANS, super::encode::encoded_span_len(s))
        + s.resource.encoded().len()
}

/// Framing a request adds per resource besides the resource itself: the `ResourceSpans` and
/// `ScopeSpans` keys and lengths (at most 6 bytes each) and the scope (`spanline` and this
/// crate's version, under 32 bytes). Generous on purpose: the plan must never undercount.
const GROUP_OVERHEAD: usize = 64;

/// Cuts `spans` into requests within the count, size and time-gap bounds.
fn cut(spans: &[Span], limits: &XrayLimits, max_batch_spans: usize) -> Vec<Range<usize>> {
    let max_spans = limits.max_spans.min(max_batch_spans).max(1);
    let max_gap = nanos(limits.max_gap);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    let mut resources: Vec<*const crate::convert::assemble::Resource> = Vec::new();
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for (i, s) in spans.iter().enumerate() {
        let res = Arc::as_ptr(&s.resource);
        let new_group = !resources.contains(&res);
        let cost = proto::field_len(proto::SCOPE_SPANS_SPANS, super::encode::encoded_span_len(s))
            + if new_group {
                s.resource.encoded().len() + GROUP_OVERHEAD
            } else {
                0
            };
        let (nlo, nhi) = (lo.min(s.start_unix_nano), hi.max(s.start_unix_nano));
        let full = i - start >= max_spans
            || bytes + cost > limits.max_request_bytes
            || nhi - nlo > max_gap;
        if full && i > start {
            out.push(start..i);
            start = i;
            bytes = 0;
            resources.clear();
            lo = s.start_unix_nano;
            hi = s.start_unix_nano;
            bytes += proto::field_len(proto::SCOPE_SPANS_SPANS, super::encode::encoded_span_len(s))
                + s.resource.encoded().len()
                + GROUP_OVERHEAD;
            resources.push(res);
            continue;
        }
        if new_group {
            resources.push(res);
        }
        bytes += cost;
        (lo, hi) = (nlo, nhi);
    }
    if start < spans.len() {
        out.push(start..spans.len());
    }
    out
}

fn scalar(v: &AnyValue) -> Scalar<'_> {
    match v {
        AnyValue::Str(s) => Scalar::Str(s),
        AnyValue::Int(i) => Scalar::Int(*i),
        AnyValue::Float(f) => Scalar::Float(*f),
        AnyValue::Bool(b) => Scalar::Bool(*b),
    }
}

/// The encoded size of attributes as fields `field` of their message.
fn attrs_len(buf: &mut Vec<u8>, field: u32, kvs: &[KeyValue]) -> usize {
    buf.clear();
    for kv in kvs {
        proto::key_value(buf, field, &kv.key, scalar(&kv.value));
    }
    buf.len()
}

/// `span` without as many events (the latest first), then attributes (the last first), then
/// links as it takes to fit in `max` bytes, with the dropped counts raised; `None` when even a
/// bare span is over `max`.
fn trim(span: &Span, max: usize) -> Option<Span> {
    let mut d: SpanData = span.data();
    let mut scratch = Vec::new();
    loop {
        let mut t = Span::from_data_with(&d, Arc::clone(&span.resource));
        t.input = span.input;
        let size = span_size(&t);
        if size <= max {
            return Some(t);
        }
        // Drop what covers the excess (each item's encoded size, exactly), then measure again:
        // the dropped counts themselves take a byte or two.
        let mut excess = size - max;
        while excess > 0 {
            let freed = if let Some(e) = d.events.pop() {
                d.dropped.1 = d.dropped.1.saturating_add(1);
                proto::field_len(
                    proto::SPAN_EVENTS,
                    proto::field_len(proto::EVENT_NAME, e.name.len())
                        + 9
                        + attrs_len(&mut scratch, proto::EVENT_ATTRIBUTES, &e.attributes),
                )
            } else if let Some(a) = d.attributes.pop() {
                d.dropped.0 = d.dropped.0.saturating_add(1);
                attrs_len(
                    &mut scratch,
                    proto::SPAN_ATTRIBUTES,
                    std::slice::from_ref(&a),
                )
            } else if let Some(l) = d.links.pop() {
                d.dropped.2 = d.dropped.2.saturating_add(1);
                proto::field_len(
                    proto::SPAN_LINKS,
                    proto::field_len(proto::LINK_TRACE_ID, 16)
                        + proto::field_len(proto::LINK_SPAN_ID, 8)
                        + attrs_len(&mut scratch, proto::LINK_ATTRIBUTES, &l.attributes),
                )
            } else {
                return None;
            };
            excess = excess.saturating_sub(freed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::assemble::{Event, Link};
    use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};

    const NOW: u64 = 1_714_564_800_000_000_000; // 2024-05-01T12:00:00Z
    const SEC: u64 = 1_000_000_000;

    fn data(i: u64, start: u64) -> SpanData {
        SpanData {
            trace_id: TraceId([7; 16]),
            span_id: SpanId((i + 1).to_be_bytes()),
            parent_span_id: None,
            name: format!("span-{i}"),
            kind: SpanKind::Server,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: start,
            end_unix_nano: start + SEC,
            attributes: vec![KeyValue {
                key: "i".into(),
                value: AnyValue::Int(i as i64),
            }],
            events: Vec::new(),
            links: Vec::new(),
            service: "svc".into(),
            resource: Vec::new(),
            dropped: (0, 0, 0),
        }
    }

    fn big_str(n: usize) -> AnyValue {
        AnyValue::Str("x".repeat(n))
    }

    /// A span with `events` events and `attrs` attributes of 10,000 bytes each.
    fn heavy(i: u64, events: usize, attrs: usize) -> SpanData {
        let mut d = data(i, NOW - 60 * SEC);
        d.events = (0..events)
            .map(|e| Event {
                time_unix_nano: d.start_unix_nano + e as u64,
                name: format!("event-{e}"),
                attributes: vec![KeyValue {
                    key: "payload".into(),
                    value: big_str(10_000),
                }],
            })
            .collect();
        d.attributes = (0..attrs)
            .map(|a| KeyValue {
                key: format!("attr-{a}"),
                value: big_str(10_000),
            })
            .collect();
        d
    }

    fn spans_at(starts: &[u64]) -> Vec<Span> {
        starts
            .iter()
            .enumerate()
            .map(|(i, s)| Span::from_data(&data(i as u64, *s)))
            .collect()
    }

    #[test]
    fn the_time_window_keeps_its_edges_and_skips_beyond_them() {
        let l = &XRAY_LIMITS;
        let oldest = NOW - nanos(l.max_age) + nanos(l.margin);
        // (start, end offset from start, kept, too_old, in_future)
        let latest_end = NOW + nanos(l.max_ahead) - nanos(l.margin);
        let table: &[(u64, u64, bool, u64, u64)] = &[
            (NOW, SEC, true, 0, 0),
            (oldest, SEC, true, 0, 0),
            (oldest - 1, SEC, false, 1, 0),
            (NOW - 15 * 24 * 3600 * SEC, SEC, false, 1, 0),
            (latest_end - SEC, SEC, true, 0, 0),
            (latest_end - SEC + 1, SEC, false, 0, 1),
            (NOW + 3 * 3600 * SEC, SEC, false, 0, 1),
            // Starts now but lasts past the window's end.
            (NOW, 3 * 3600 * SEC, false, 0, 1),
            (0, 0, false, 1, 0),
        ];
        for &(start, dur, kept, old, future) in table {
            let mut d = data(0, start);
            d.end_unix_nano = start + dur;
            let spans = vec![Span::from_data(&d)];
            let p = prepare(&spans, NOW, l, 512);
            assert_eq!(p.spans.len(), usize::from(kept), "start {start}");
            assert_eq!(p.counts.too_old, old, "start {start}");
            assert_eq!(p.counts.in_future, future, "start {start}");
            assert_eq!(p.batches.is_empty(), !kept);
        }
    }

    #[test]
    fn nothing_is_copied_when_nothing_changes() {
        let spans = spans_at(&[NOW, NOW - SEC]);
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert!(matches!(p.spans, Cow::Borrowed(_)));
        assert_eq!(p.batches, vec![0..2]);
        assert_eq!(p.counts, XrayCounts::default());
        // A skipped span in the middle: the others keep their order.
        let spans = spans_at(&[NOW, 0, NOW - SEC]);
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert!(matches!(p.spans, Cow::Owned(_)));
        let names: Vec<&str> = p.spans.iter().map(Span::name).collect();
        assert_eq!(names, ["span-0", "span-2"]);
    }

    #[test]
    fn requests_are_cut_at_ten_thousand_spans_and_the_batch_size() {
        let spans = spans_at(&vec![NOW; 20_001]);
        let p = prepare(&spans, NOW, &XRAY_LIMITS, usize::MAX);
        assert_eq!(p.batches, vec![0..10_000, 10_000..20_000, 20_000..20_001]);
        let p = prepare(&spans[..10_000], NOW, &XRAY_LIMITS, usize::MAX);
        assert_eq!(p.batches, vec![0..10_000]);
        let p = prepare(&spans[..1_000], NOW, &XRAY_LIMITS, 512);
        assert_eq!(p.batches, vec![0..512, 512..1_000]);
    }

    #[test]
    fn requests_stay_under_five_megabytes_of_protobuf() {
        // 190,000-byte spans: 26 fit in 5,000,000 bytes, 27 do not.
        let spans: Vec<Span> = (0..60)
            .map(|i| {
                let mut d = data(i, NOW);
                d.attributes = vec![KeyValue {
                    key: "big".into(),
                    value: big_str(190_000),
                }];
                Span::from_data(&d)
            })
            .collect();
        let p = prepare(&spans, NOW, &XRAY_LIMITS, usize::MAX);
        assert_eq!(p.counts, XrayCounts::default());
        assert_eq!(p.batches, vec![0..26, 26..52, 52..60]);
        for b in &p.batches {
            let mut buf = Vec::new();
            super::super::encode::write_request(&p.spans[b.clone()], &mut buf);
            assert!(buf.len() <= 5_000_000, "{} bytes", buf.len());
        }
        // Exactly at the limit: a request of one span of the maximum size, many of them.
        let at_max: Vec<Span> = (0..30)
            .map(|i| {
                let mut d = data(i, NOW);
                let mut pad = XRAY_LIMITS.max_span_bytes - 100;
                loop {
                    d.attributes = vec![KeyValue {
                        key: "p".into(),
                        value: big_str(pad),
                    }];
                    let s = Span::from_data(&d);
                    let size = span_size(&s);
                    if size == XRAY_LIMITS.max_span_bytes {
                        return s;
                    }
                    pad = (pad + XRAY_LIMITS.max_span_bytes).saturating_sub(size);
                }
            })
            .collect();
        let p = prepare(&at_max, NOW, &XRAY_LIMITS, usize::MAX);
        assert_eq!(
            p.counts,
            XrayCounts::default(),
            "a span at the limit is not trimmed"
        );
        for b in &p.batches {
            let mut buf = Vec::new();
            super::super::encode::write_request(&p.spans[b.clone()], &mut buf);
            assert!(buf.len() <= 5_000_000, "{} bytes", buf.len());
        }
        assert_eq!(p.batches.iter().map(|b| b.len()).sum::<usize>(), 30);
    }

    #[test]
    fn requests_span_at_most_a_day_of_start_times() {
        let h = 3600 * SEC;
        let spans = spans_at(&[NOW - 30 * h, NOW - 5 * h, NOW - 4 * h, NOW - 31 * h, NOW]);
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert_eq!(p.batches, vec![0..1, 1..3, 3..4, 4..5]);
        let spans = spans_at(&[NOW - 24 * h, NOW]);
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert_eq!(
            p.batches,
            vec![0..2],
            "exactly a day apart is within the gap"
        );
    }

    #[test]
    fn a_span_over_the_size_limit_loses_events_first_then_attributes() {
        // (events, attributes of 10,000 bytes) → (events kept, attributes kept)
        let table: &[(usize, usize, usize, usize)] = &[
            (10, 5, 10, 5),  // 150 kB: untouched
            (30, 0, 19, 0),  // 300 kB of events: the latest 11 go
            (25, 10, 9, 10), // events go first, all the attributes stay
            (0, 30, 0, 19),  // no events: the last attributes go
            (40, 25, 0, 19), // every event, then attributes
        ];
        for &(events, attrs, keep_e, keep_a) in table {
            let span = Span::from_data(&heavy(1, events, attrs));
            let spans = vec![span];
            let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
            let trimmed = u64::from(events != keep_e || attrs != keep_a);
            assert_eq!(p.counts.trimmed, trimmed, "{events}/{attrs}");
            let out = &p.spans[0];
            assert!(span_size(out) <= XRAY_LIMITS.max_span_bytes);
            let d = out.data();
            assert_eq!(d.events.len(), keep_e, "{events}/{attrs}");
            assert_eq!(d.attributes.len(), keep_a, "{events}/{attrs}");
            assert_eq!(
                d.dropped,
                ((attrs - keep_a) as u32, (events - keep_e) as u32, 0)
            );
            // The earliest events and the first attributes are the ones kept.
            for (i, e) in d.events.iter().enumerate() {
                assert_eq!(e.name, format!("event-{i}"));
            }
            assert_eq!(out.name(), "span-1");
            assert_eq!(out.span_id, spans[0].span_id);
            assert_eq!(out.start_unix_nano, spans[0].start_unix_nano);
        }
    }

    #[test]
    fn links_go_last_and_a_span_that_cannot_fit_is_skipped() {
        let mut d = heavy(1, 0, 0);
        d.links = (0..25)
            .map(|i| Link {
                trace_id: TraceId([i + 1; 16]),
                span_id: SpanId([i + 1; 8]),
                attributes: vec![KeyValue {
                    key: "why".into(),
                    value: big_str(10_000),
                }],
            })
            .collect();
        let spans = vec![Span::from_data(&d)];
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert_eq!(p.counts.trimmed, 1);
        assert_eq!(p.spans[0].data().links.len(), 19);
        assert_eq!(p.spans[0].data().dropped, (0, 0, 6));
        // A name alone over the limit: nothing to drop.
        let mut d = data(2, NOW);
        d.name = "n".repeat(250_000);
        let spans = vec![Span::from_data(&d), Span::from_data(&data(3, NOW))];
        let p = prepare(&spans, NOW, &XRAY_LIMITS, 512);
        assert_eq!(p.counts.too_large, 1);
        assert_eq!(p.spans.len(), 1);
        assert_eq!(p.spans[0].name(), "span-3");
    }

    #[test]
    fn counts_have_their_summary_names() {
        let c = XrayCounts {
            trimmed: 1,
            too_large: 2,
            too_old: 3,
            in_future: 4,
        };
        assert_eq!(
            c.named(),
            [
                ("xray_span_trimmed", 1),
                ("xray_span_too_large", 2),
                ("xray_span_too_old", 3),
                ("xray_span_in_future", 4)
            ]
        );
    }
}
