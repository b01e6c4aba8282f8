use super::*;
use crate::convert::assemble::SpanData;
use crate::span_line::{SpanId, SpanKind};

/// A trace id whose low 64 bits are `low` (the part the ratio rule reads).
fn trace(high: u64, low: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&high.to_be_bytes());
    b[8..].copy_from_slice(&low.to_be_bytes());
    TraceId(b)
}

/// A trace the ratio rule keeps at 10 % (low bits near 0) and one it drops (near the top).
fn kept_at_10() -> TraceId {
    trace(1, 5)
}
fn dropped_at_10() -> TraceId {
    trace(2, u64::MAX - 5)
}

fn span(t: TraceId, id: u64, parent: Option<u64>, ms: (u64, u64), error: bool) -> Span {
    Span::from_data(&SpanData {
        trace_id: t,
        span_id: SpanId(id.to_be_bytes()),
        parent_span_id: parent.map(|p| SpanId(p.to_be_bytes())),
        name: format!("op{}", id % 3),
        kind: SpanKind::Server,
        status: if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: String::new(),
        start_unix_nano: ms.0 * 1_000_000,
        end_unix_nano: ms.1 * 1_000_000,
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        service: "svc".into(),
        resource: Vec::new(),
        dropped: (0, 0, 0),
    })
}

fn ids(spans: &[Span]) -> Vec<u64> {
    spans
        .iter()
        .map(|s| u64::from_be_bytes(s.span_id.0))
        .collect()
}

fn at_10() -> Policy {
    Policy {
        rate: 0.1,
        ..Policy::default()
    }
}

#[test]
fn the_ratio_rule_is_the_low_64_bits_below_rate_times_two_to_the_64() {
    // The bound for 0.5 is 2^63: the low half is kept, the high half dropped.
    assert!(ratio_keeps(&trace(u64::MAX, (1 << 63) - 1), 0.5));
    assert!(!ratio_keeps(&trace(0, 1 << 63), 0.5));
    // The high 64 bits play no part.
    assert_eq!(
        ratio_keeps(&trace(0, 12345), 0.001),
        ratio_keeps(&trace(u64::MAX, 12345), 0.001)
    );
    assert!(ratio_keeps(&trace(0, u64::MAX), 1.0));
    assert!(!ratio_keeps(&trace(0, 0), 0.0));
    assert!(!ratio_keeps(&trace(0, 0), f64::NAN));
    // 0.1 × 2^64 as a double is 1844674407370955264: that id is the first dropped.
    assert!(ratio_keeps(&trace(0, 1_844_674_407_370_955_263), 0.1));
    assert!(!ratio_keeps(&trace(0, 1_844_674_407_370_955_264), 0.1));
}

#[test]
fn a_trace_the_ratio_keeps_goes_out_at_once_and_one_it_drops_is_held_then_dropped() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    s.push(
        span(kept_at_10(), 1, Some(9), (0, 10), false),
        100,
        &mut out,
    );
    assert_eq!(ids(&out), [1]);
    s.push(
        span(dropped_at_10(), 2, Some(3), (0, 10), false),
        100,
        &mut out,
    );
    s.push(
        span(dropped_at_10(), 3, None, (0, 20), false),
        100,
        &mut out,
    );
    assert_eq!(ids(&out), [1]);
    assert_eq!(s.held_spans(), 2);
    // Not before the wait after the root.
    s.expire(100 + 29_999, &mut out);
    assert_eq!(s.held_spans(), 2);
    s.expire(100 + 30_000, &mut out);
    assert_eq!(s.held_spans(), 0);
    assert_eq!(ids(&out), [1]);
    // A later span of the dropped trace follows the decision.
    s.push(
        span(dropped_at_10(), 4, Some(3), (0, 5), false),
        40_000,
        &mut out,
    );
    assert_eq!(ids(&out), [1]);
    let c = s.counts();
    assert_eq!(c.kept_traces.get(&Reason::Ratio), Some(&1));
    assert_eq!((c.kept_spans, c.dropped_traces, c.dropped_spans), (1, 1, 3));
}

#[test]
fn an_error_keeps_the_whole_trace_whichever_span_holds_it() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    let t = dropped_at_10();
    s.push(span(t, 1, Some(2), (0, 10), false), 0, &mut out);
    s.push(span(t, 2, None, (0, 50), false), 0, &mut out);
    assert!(out.is_empty());
    // The error comes in a child after the root, within the wait.
    s.push(span(t, 3, Some(2), (5, 8), true), 10_000, &mut out);
    assert_eq!(ids(&out), [1, 2, 3]);
    s.push(span(t, 4, Some(3), (6, 7), false), 90_000, &mut out);
    assert_eq!(ids(&out), [1, 2, 3, 4]);
    assert_eq!(s.counts().kept_traces.get(&Reason::Error), Some(&1));
    assert_eq!(s.counts().kept_spans, 4);
    // Without keep_errors the same trace is dropped.
    let mut s = Sampler::new(Policy {
        keep_errors: false,
        ..at_10()
    });
    let mut out = Vec::new();
    s.push(span(t, 3, Some(2), (5, 8), true), 0, &mut out);
    s.finish(0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn slow_roots_are_kept_and_slow_children_only_when_any_span_counts() {
    let t = dropped_at_10();
    let slow_child = || span(t, 1, Some(2), (0, 3_000), false);
    let fast_root = || span(t, 2, None, (0, 3_500), false);
    let policy = Policy {
        slower_than_ms: Some(4_000),
        ..at_10()
    };
    let mut s = Sampler::new(policy.clone());
    let mut out = Vec::new();
    s.push(slow_child(), 0, &mut out);
    s.push(fast_root(), 0, &mut out);
    s.finish(0, &mut out);
    assert!(out.is_empty());
    s = Sampler::new(policy.clone());
    s.push(span(t, 2, None, (0, 4_001), false), 0, &mut out);
    assert_eq!(ids(&out), [2]);
    out.clear();
    s = Sampler::new(Policy {
        slower_than_ms: Some(2_000),
        slow_scope: SlowScope::Any,
        ..policy
    });
    s.push(slow_child(), 0, &mut out);
    assert_eq!(ids(&out), [1]);
    assert_eq!(s.counts().kept_traces.get(&Reason::Slow), Some(&1));
}

#[test]
fn rules_give_the_rate_of_the_root_service_and_operation() {
    // 0.5 keeps a trace whose low bits are 2^62; 0.1 does not.
    let t = trace(7, 1 << 62);
    let policy = Policy {
        rate: 0.1,
        rules: vec![Rule {
            service: Some("svc".into()),
            operation: Some("op2".into()),
            rate: 0.5,
        }],
        ..Policy::default()
    };
    policy.validate().unwrap();
    let mut s = Sampler::new(policy.clone());
    let mut out = Vec::new();
    // A child: the rate is not known before the root comes.
    s.push(span(t, 4, Some(5), (0, 1), false), 0, &mut out);
    assert!(out.is_empty());
    // The root is op2 (id 5 % 3 = 2): kept at 0.5, with the child held.
    s.push(span(t, 5, None, (0, 2), false), 0, &mut out);
    assert_eq!(ids(&out), [4, 5]);
    // A root op1 falls back to 0.1: dropped.
    let mut s = Sampler::new(policy);
    let mut out = Vec::new();
    s.push(span(t, 4, None, (0, 1), false), 0, &mut out);
    s.finish(0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_trace_without_root_is_decided_after_the_longer_wait() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    s.push(
        span(dropped_at_10(), 1, Some(2), (0, 1), false),
        0,
        &mut out,
    );
    s.expire(299_999, &mut out);
    assert_eq!(s.held_spans(), 1);
    s.expire(300_000, &mut out);
    assert_eq!(s.held_spans(), 0);
    assert_eq!(s.counts().dropped_traces, 1);
}

#[test]
fn the_first_trace_of_a_kind_in_an_interval_is_kept_when_asked() {
    let mut s = Sampler::new(Policy {
        at_least_one_per_ms: Some(60_000),
        ..at_10()
    });
    let mut out = Vec::new();
    for (i, now) in [(1u64, 0i64), (2, 1_000), (3, 61_000)] {
        s.push(
            span(trace(i, u64::MAX - i), 3 * i, None, (0, 1), false),
            now,
            &mut out,
        );
        s.finish(now, &mut out);
    }
    // The first and the one a minute later; not the second.
    assert_eq!(ids(&out), [3, 9]);
    assert_eq!(s.counts().kept_traces.get(&Reason::Rare), Some(&2));
    assert_eq!(s.counts().dropped_traces, 1);
}

#[test]
fn an_error_after_the_drop_keeps_the_rest_and_is_counted() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    let t = dropped_at_10();
    s.push(span(t, 1, None, (0, 1), false), 0, &mut out);
    s.expire(30_000, &mut out);
    s.push(span(t, 2, Some(1), (0, 1), true), 31_000, &mut out);
    s.push(span(t, 3, Some(1), (0, 1), false), 31_000, &mut out);
    assert_eq!(ids(&out), [2, 3]);
    assert_eq!(s.limits().get("sample_late"), Some(&1));
}

#[test]
fn held_spans_are_bounded_and_the_trace_decided_soonest_goes_first() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    let one = held_size(&span(trace(0, 0), 1, Some(2), (0, 1), false));
    let fit = (MAX_HELD_BYTES / one) as u64;
    let n = fit + 10;
    for i in 0..n {
        let t = trace(i, u64::MAX - i);
        s.push(
            span(t, i + 1, Some(1 << 40), (0, 1), false),
            i as i64,
            &mut out,
        );
    }
    assert_eq!(s.held_spans() as u64, fit);
    assert_eq!(s.limits().get("sample_held"), Some(&10));
    assert_eq!(s.counts().dropped_traces, 10);
    assert!(out.is_empty());
    // The first ten (decided soonest) went; the last is still held.
    let mut rest = Vec::new();
    s.push(
        span(trace(0, u64::MAX), 99, Some(1 << 40), (0, 1), true),
        0,
        &mut rest,
    );
    assert_eq!(ids(&rest), [99]);
    s.push(
        span(
            trace(n - 1, u64::MAX - (n - 1)),
            98,
            Some(1 << 40),
            (0, 1),
            true,
        ),
        0,
        &mut rest,
    );
    assert_eq!(ids(&rest), [99, n, 98]);
}

#[test]
fn counts_add_up() {
    let mut s = Sampler::new(Policy {
        slower_than_ms: Some(100),
        ..at_10()
    });
    let mut out = Vec::new();
    let mut pushed = 0;
    for i in 0..2_000u64 {
        // Spread the low bits over the whole range.
        let t = trace(i, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for j in 0..3 {
            let parent = (j > 0).then_some(i * 10);
            let slow = i % 97 == 0 && j == 0;
            let error = i % 89 == 0 && j == 2;
            let end = if slow { 500 } else { 50 };
            s.push(
                span(t, i * 10 + j, parent, (0, end), error),
                i as i64,
                &mut out,
            );
            pushed += 1;
        }
    }
    s.finish(3_000, &mut out);
    let c = s.counts();
    assert_eq!(c.kept_spans + c.dropped_spans, pushed);
    assert_eq!(c.kept_spans, out.len() as u64);
    assert_eq!(c.kept_total() + c.dropped_traces, 2_000);
    let ratio = c.kept_traces[&Reason::Ratio] as f64 / 2_000.0;
    assert!((0.07..0.13).contains(&ratio), "{ratio}");
    assert!(c.kept_traces[&Reason::Error] > 0 && c.kept_traces[&Reason::Slow] > 0);
}

#[test]
fn policies_are_checked() {
    assert!(matches!(
        Policy {
            rate: 1.5,
            ..Policy::default()
        }
        .validate(),
        Err(PolicyError::Rate(r)) if r == 1.5
    ));
    assert!(matches!(
        Policy {
            rules: vec![Rule {
                service: None,
                operation: None,
                rate: 0.5
            }],
            ..Policy::default()
        }
        .validate(),
        Err(PolicyError::EmptyRule)
    ));
    assert!(!Policy::default().samples());
    assert!(at_10().samples());
}

#[test]
fn a_policy_file_sets_what_it_names_and_keeps_the_defaults_for_the_rest() {
    let p = Policy::from_json(
        r#"{"rate": 0.05, "keep_slower_than": "2s", "slow": "any",
            "rules": [{"service": "checkout", "rate": 1}, {"operation": "GET /health", "rate": 0}],
            "at_least_one_per": "1m"}"#,
    )
    .unwrap();
    assert_eq!(p.rate, 0.05);
    assert_eq!(p.slower_than_ms, Some(2_000));
    assert_eq!(p.slow_scope, SlowScope::Any);
    assert_eq!(p.at_least_one_per_ms, Some(60_000));
    assert!(p.keep_errors);
    assert_eq!(p.wait_ms, Policy::default().wait_ms);
    assert_eq!(p.rate_for("checkout", "anything"), 1.0);
    assert_eq!(p.rate_for("web", "GET /health"), 0.0);
    assert_eq!(p.rate_for("web", "GET /"), 0.05);
    for bad in [
        r#"{"rate": 2}"#,
        r#"{"rate": 0.1, "colour": "red"}"#,
        r#"{"wait": "soon"}"#,
        r#"{"rules": [{"rate": 0.5}]}"#,
        "not json",
    ] {
        assert!(Policy::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn traces_kept_for_cause_are_remembered_only_when_asked() {
    let t = dropped_at_10();
    let error = || span(t, 1, None, (0, 1), true);
    let mut out = Vec::new();
    let mut s = Sampler::new(at_10());
    s.push(error(), 0, &mut out);
    assert!(s.take_caused().is_empty());
    let mut s = Sampler::new(at_10()).tracking_caused();
    s.push(error(), 0, &mut out);
    s.push(span(kept_at_10(), 2, None, (0, 1), false), 0, &mut out);
    assert_eq!(s.take_caused(), [(t, Reason::Error)]);
    assert!(s.take_caused().is_empty());
}

#[test]
fn decisions_are_bounded_and_a_forgotten_trace_is_decided_again() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    let n = MAX_DECISIONS as u64 + 3;
    // n roots the ratio drops, each decided at its deadline.
    for i in 0..n {
        s.push(
            span(trace(i + 1, u64::MAX - i), i + 1, None, (0, 1), false),
            0,
            &mut out,
        );
    }
    s.expire(30_000, &mut out);
    assert_eq!(s.counts().dropped_traces, n);
    assert_eq!(s.limits().get("sample_decisions"), Some(&3));
    // The newest decision is remembered: a late child of that trace is dropped at once.
    let newest = trace(n, u64::MAX - (n - 1));
    s.push(
        span(newest, 1 << 40, Some(n), (0, 1), false),
        30_000,
        &mut out,
    );
    assert_eq!(s.held_spans(), 0);
    assert_eq!(s.counts().dropped_spans, n + 1);
    // The oldest was forgotten: a late child of it is held and decided again by the rules.
    let oldest = trace(1, u64::MAX);
    s.push(
        span(oldest, 1 << 41, Some(1), (0, 1), false),
        30_000,
        &mut out,
    );
    assert_eq!(s.held_spans(), 1);
    assert!(out.is_empty());
}

#[test]
fn traces_an_earlier_run_kept_are_kept_and_undecided_spans_can_be_taken_back() {
    let mut s = Sampler::new(at_10());
    let mut out = Vec::new();
    let known = dropped_at_10();
    s.known_kept([known]);
    s.push(span(known, 7, Some(1), (0, 1), false), 0, &mut out);
    assert_eq!(ids(&out), [7]);
    // Kept before this run: its trace is not counted again, its span is.
    assert_eq!(s.counts().kept_total(), 0);
    assert_eq!(s.counts().kept_spans, 1);
    // An undecided trace's spans are handed back whole, not counted as dropped, and its later
    // spans are held afresh.
    let other = trace(3, u64::MAX - 3);
    s.push(span(other, 8, Some(1), (0, 1), false), 0, &mut out);
    s.push(span(other, 9, Some(1), (0, 1), false), 0, &mut out);
    let mut back = s.take_undecided();
    back.sort_by_key(|s| s.span_id);
    assert_eq!(ids(&back), [8, 9]);
    assert_eq!(s.held_spans(), 0);
    assert_eq!(s.counts().dropped_spans, 0);
    s.push(span(other, 10, Some(1), (0, 1), false), 0, &mut out);
    assert_eq!(s.held_spans(), 1);
    // The kept trace's decision stayed.
    s.push(span(known, 11, Some(1), (0, 1), false), 0, &mut out);
    assert_eq!(ids(&out), [7, 11]);
}
