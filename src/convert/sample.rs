//! Tail-based sampling: which traces go to the backend, decided after the fact, with the logs
//! as the buffer.
//!
//! A function cannot know when its span ends whether the trace will fail or be slow; the
//! converter sees whole traces. A trace is **kept** when one of its spans is an error
//! ([`Policy::keep_errors`]), when its root (or any span, [`SlowScope`]) lasted longer than
//! [`Policy::slower_than_ms`], when the ratio rule keeps its trace id, or (optionally) when its
//! root's (service, operation) had no kept trace for an interval. Otherwise it is dropped.
//!
//! **The ratio rule is OpenTelemetry's `TraceIdRatioBased`** ([`ratio_keeps`]): the low 64 bits
//! of the trace id, big-endian, below `round(rate × 2⁶⁴)`. It depends on the trace id alone, so
//! every process, run and Lambda instance decides the same for the same trace, and so does an
//! upstream SDK sampler with the same ratio.
//!
//! **Streaming.** A trace the ratio keeps (at the lowest rate any rule could give it) or with a
//! span that decides "keep" goes out at once, with what was held of it. The rest is held, per
//! trace, until the trace is decided:
//! * its root was seen and [`Policy::wait_ms`] passed since (stragglers: spans that end after
//!   the root, asynchronous callees), or no root came within [`Policy::max_wait_ms`] of its first
//!   span: then it is dropped (or kept as the first of its kind in the interval);
//! * the end of the input: undecided traces are dropped.
//!
//! Time is the caller's clock ([`Sampler::push`], [`Sampler::expire`]): the wall clock when
//! following, the latest span end seen when converting a finished input (the input's own time,
//! so a file converted a year later decides the same).
//!
//! **Bounded.** At most [`MAX_HELD_BYTES`] of spans are held (their heap size plus
//! [`HELD_OVERHEAD`] each); past it the trace decided soonest is decided now (counted as the
//! `sample_held` limit). Decisions are remembered for
//! [`MAX_DECISIONS`] traces, so later spans of a decided trace follow its decision; past it the
//! oldest is forgotten (`sample_decisions`) and a later span of that trace is decided again by
//! the same rules. A span that would keep a trace already dropped (an error that came after the
//! decision) is kept with the rest of the trace from then on, and counted as `sample_late`: the
//! spans dropped before it are gone.

use crate::convert::assemble::Map;
use crate::convert::assemble::Span;
use crate::span_line::{StatusCode, TraceId};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Most bytes of spans held while their traces are undecided.
pub const MAX_HELD_BYTES: usize = 8 << 20;

/// What holding a span costs besides its heap size: the span itself, the trace's entry in the
/// tables, the allocator's share.
pub const HELD_OVERHEAD: usize = 384;

fn held_size(span: &Span) -> usize {
    span.heap_size() + HELD_OVERHEAD
}

/// Most traces whose decision is remembered.
pub const MAX_DECISIONS: usize = 1 << 17;

/// Whether OpenTelemetry's `TraceIdRatioBased` sampler with `rate` samples `trace_id`: the
/// trace id's low 64 bits (big-endian) below `round(rate × 2⁶⁴)` (rounded half to even, as
/// Python's `round`). A rate ≥ 1 keeps every trace, ≤ 0 (or NaN) none.
pub fn ratio_keeps(trace_id: &TraceId, rate: f64) -> bool {
    ratio_bound(rate).is_some_and(|bound| u128::from(low_bits(trace_id)) < bound)
}

/// `round(rate × 2⁶⁴)`, `None` when nothing is kept.
fn ratio_bound(rate: f64) -> Option<u128> {
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    if rate >= 1.0 {
        return Some(1u128 << 64);
    }
    // rate × 2⁶⁴ < 2⁶⁴ here; the cast is exact for integral floats in range.
    Some((rate * 18_446_744_073_709_551_616.0).round_ties_even() as u128)
}

fn low_bits(trace_id: &TraceId) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id.0[8..]);
    u64::from_be_bytes(low)
}

/// Which spans the slow threshold looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowScope {
    /// The trace's root span.
    #[default]
    Root,
    /// Any span of the trace.
    Any,
}

/// A rate for the traces whose root has this service and/or operation (span name).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The root's service, any when `None`.
    pub service: Option<String>,
    /// The root's operation (span name), any when `None`.
    pub operation: Option<String>,
    /// The ratio for those traces.
    pub rate: f64,
}

impl Rule {
    fn matches(&self, service: &str, operation: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service)
            && self.operation.as_deref().is_none_or(|o| o == operation)
    }
}

/// What is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The ratio for traces no rule names.
    pub rate: f64,
    /// Rates by the root's service and operation; the first that matches applies.
    pub rules: Vec<Rule>,
    /// Keep every trace with an error span.
    pub keep_errors: bool,
    /// Keep traces slower than this, ms.
    pub slower_than_ms: Option<u64>,
    /// Which spans the slow threshold looks at.
    pub slow_scope: SlowScope,
    /// Keep the first trace of each root (service, operation) in each interval of this many ms,
    /// whatever the ratio says (rare paths stay visible). Depends on the order traces are seen
    /// in: not the same across processes.
    pub at_least_one_per_ms: Option<i64>,
    /// How long after the root is seen the trace is decided, ms.
    pub wait_ms: i64,
    /// How long after its first span a trace without a root is decided, ms.
    pub max_wait_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            rate: 1.0,
            rules: Vec::new(),
            keep_errors: true,
            slower_than_ms: None,
            slow_scope: SlowScope::Root,
            at_least_one_per_ms: None,
            wait_ms: 30_000,
            max_wait_ms: 300_000,
        }
    }
}

/// A problem in a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A rate outside [0, 1].
    #[error("rate {0}: expected a number from 0 to 1")]
    Rate(f64),
    /// A negative or zero wait.
    #[error("{0}: expected a positive duration")]
    Wait(&'static str),
    /// A rule naming neither a service nor an operation.
    #[error("a rule names neither a service nor an operation")]
    EmptyRule,
    /// A duration that is not `<n><unit>`.
    #[error("{field} {value:?}: expected a duration such as 500ms, 30s, 2m")]
    Duration {
        /// The field.
        field: &'static str,
        /// What it said.
        value: String,
    },
    /// A policy file that is not the expected JSON.
    #[error("not a sampling policy")]
    Json(#[source] serde_json::Error),
}

/// A policy file, as written (see the README's "Sampling").
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    rate: Option<f64>,
    keep_errors: Option<bool>,
    keep_slower_than: Option<String>,
    slow: Option<SlowFile>,
    #[serde(default)]
    rules: Vec<RuleFile>,
    at_least_one_per: Option<String>,
    wait: Option<String>,
    max_wait: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SlowFile {
    Root,
    Any,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    service: Option<String>,
    operation: Option<String>,
    rate: f64,
}

/// Parses a duration field of a policy (`500ms`, `30s`, `2m`, …) into ms.
pub fn duration_field(field: &'static str, value: &str) -> Result<i64, PolicyError> {
    crate::convert::time::parse_duration_ms(value.trim())
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| PolicyError::Duration {
            field,
            value: value.to_owned(),
        })
}

impl Policy {
    /// Reads a policy file (JSON; fields left out keep their defaults) and checks it.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let f: PolicyFile = serde_json::from_str(text).map_err(PolicyError::Json)?;
        let d = Policy::default();
        let ms = |field, v: Option<String>| v.map(|v| duration_field(field, &v)).transpose();
        let policy = Policy {
            rate: f.rate.unwrap_or(d.rate),
            rules: f
                .rules
                .into_iter()
                .map(|r| Rule {
                    service: r.service,
                    operation: r.operation,
                    rate: r.rate,
                })
                .collect(),
            keep_errors: f.keep_errors.unwrap_or(d.keep_errors),
            slower_than_ms: ms("keep_slower_than", f.keep_slower_than)?.map(i64::unsigned_abs),
            slow_scope: match f.slow {
                Some(SlowFile::Any) => SlowScope::Any,
                Some(SlowFile::Root) | None => SlowScope::Root,
            },
            at_least_one_per_ms: ms("at_least_one_per", f.at_least_one_per)?,
            wait_ms: ms("wait", f.wait)?.unwrap_or(d.wait_ms),
            max_wait_ms: ms("max_wait", f.max_wait)?.unwrap_or(d.max_wait_ms),
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let rates = std::iter::once(self.rate).chain(self.rules.iter().map(|r| r.rate));
        for r in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err(PolicyError::Rate(r));
            }
        }
        if self
            .rules
            .iter()
            .any(|r| r.service.is_none() && r.operation.is_none())
        {
            return Err(PolicyError::EmptyRule);
        }
        if self.wait_ms <= 0 {
            return Err(PolicyError::Wait("wait"));
        }
        if self.max_wait_ms <= 0 {
            return Err(PolicyError::Wait("max wait"));
        }
        if self.at_least_one_per_ms.is_some_and(|i| i <= 0) {
            return Err(PolicyError::Wait("at least one per"));
        }
        Ok(())
    }

    /// Whether anything is ever dropped.
    pub fn samples(&self) -> bool {
        self.rate < 1.0 || self.rules.iter().any(|r| r.rate < 1.0)
    }

    /// The ratio for a trace whose root has `service` and `operation`.
    pub fn rate_for(&self, service: &str, operation: &str) -> f64 {
        self.rules
            .iter()
            .find(|r| r.matches(service, operation))
            .map_or(self.rate, |r| r.rate)
    }

    fn min_rate(&self) -> f64 {
        self.rules.iter().map(|r| r.rate).fold(self.rate, f64::min)
    }

    /// The root's (service, operation), when the policy keeps the first trace of each.
    fn kind_of_root(&self, span: &Span) -> Option<(String, String)> {
        self.at_least_one_per_ms
            .map(|_| (span.service().to_owned(), span.name().to_owned()))
    }

    fn slow(&self, span: &Span) -> bool {
        self.slower_than_ms.is_some_and(|t| {
            let took = span.end_unix_nano.saturating_sub(span.start_unix_nano) / 1_000_000;
            took > t && (self.slow_scope == SlowScope::Any || span.parent_span_id.is_none())
        })
    }
}

/// Why a trace was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// It holds an error span.
    Error,
    /// It was slower than the threshold.
    Slow,
    /// The ratio rule keeps its trace id.
    Ratio,
    /// The first of its (service, operation) in the interval.
    Rare,
}

impl Reason {
    /// The name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Error => "error",
            Reason::Slow => "slow",
            Reason::Ratio => "ratio",
            Reason::Rare => "rare",
        }
    }
}

/// What the sampler did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleCounts {
    /// Traces kept, by reason.
    pub kept_traces: BTreeMap<Reason, u64>,
    /// Traces dropped.
    pub dropped_traces: u64,
    /// Spans sent on.
    pub kept_spans: u64,
    /// Spans dropped.
    pub dropped_spans: u64,
}

impl SampleCounts {
    /// Traces kept.
    pub fn kept_total(&self) -> u64 {
        self.kept_traces.values().sum()
    }

    /// One human line.
    pub fn line(&self) -> String {
        let reasons: Vec<String> = self
            .kept_traces
            .iter()
            .map(|(r, n)| format!("{}: {n}", r.name()))
            .collect();
        format!(
            "sampling kept {} traces ({}) and {} spans, dropped {} traces and {} spans",
            self.kept_total(),
            if reasons.is_empty() {
                "none".to_owned()
            } else {
                reasons.join(", ")
            },
            self.kept_spans,
            self.dropped_traces,
            self.dropped_spans
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Keep,
    Drop,
}

/// A trace not decided yet.
#[derive(Debug)]
struct Held {
    spans: Vec<Span>,
    /// When it is decided (the caller's clock).
    deadline_ms: i64,
    /// The root's service and operation, once seen (when the policy keeps the first of each;
    /// boxed, for the table's entries to stay small).
    root: Option<Box<(String, String)>>,
}

/// What the sampler knows of a trace: one table, so a span costs one look-up.
#[derive(Debug)]
enum Slot {
    Held(Held),
    Decided(Decision),
}

/// The sampling stage: spans in, the spans of kept traces out.
#[derive(Debug)]
pub struct Sampler {
    policy: Policy,
    /// `round(rate × 2⁶⁴)` of the lowest rate any trace has: a trace id whose low bits are
    /// below it is kept whatever its root.
    min_bound: Option<u128>,
    /// Every trace held or decided (the decided ones bounded by [`MAX_DECISIONS`]).
    traces: Map<TraceId, Slot>,
    held_spans: usize,
    held_bytes: usize,
    /// (deadline, trace) of every held trace.
    deadlines: BTreeSet<(i64, TraceId)>,
    /// The decided traces, oldest first.
    decided_order: VecDeque<TraceId>,
    /// (service, operation) → when a trace of it was last kept.
    last_kept: HashMap<(String, String), i64>,
    counts: SampleCounts,
    /// Bounds reached, as the summary's limits name them.
    limits: BTreeMap<&'static str, u64>,
    /// Traces kept for what one of their spans showed (an error, a slow span), in order; kept
    /// only when asked for ([`Sampler::tracking_caused`]): a follower would grow it forever.
    caused: Option<Vec<(TraceId, Reason)>>,
}

impl Sampler {
    /// A sampler with `policy` (validated by the caller).
    pub fn new(policy: Policy) -> Self {
        Sampler {
            min_bound: ratio_bound(policy.min_rate()),
            policy,
            traces: Map::default(),
            held_spans: 0,
            held_bytes: 0,
            deadlines: BTreeSet::new(),
            decided_order: VecDeque::new(),
            last_kept: HashMap::new(),
            counts: SampleCounts::default(),
            limits: BTreeMap::new(),
            caused: None,
        }
    }

    /// The traces kept so far for what one of their spans showed (not the ratio, which every
    /// process computes alike), emptied: a stateless deliverer records them and reads their
    /// other spans back.
    pub fn take_caused(&mut self) -> Vec<(TraceId, Reason)> {
        self.caused.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Remembers the traces kept for cause until [`Sampler::take_caused`] takes them.
    pub fn tracking_caused(mut self) -> Self {
        self.caused = Some(Vec::new());
        self
    }

    /// Every span still held, undecided, emptied (not counted as dropped): a stateless
    /// deliverer asks a shared record whether their traces were kept elsewhere.
    pub fn take_undecided(&mut self) -> Vec<Span> {
        self.deadlines.clear();
        self.held_spans = 0;
        self.held_bytes = 0;
        let mut spans = Vec::new();
        self.traces.retain(|_, slot| match slot {
            Slot::Held(h) => {
                spans.append(&mut h.spans);
                false
            }
            Slot::Decided(_) => true,
        });
        spans
    }

    /// Traces an earlier run kept, before the first span of this one: their spans are kept
    /// now too (not counted again).
    pub fn known_kept(&mut self, traces: impl IntoIterator<Item = TraceId>) {
        for t in traces {
            match self.traces.get_mut(&t) {
                Some(Slot::Decided(d)) => *d = Decision::Keep,
                // Held: decided by this run's spans.
                Some(Slot::Held(_)) => {}
                None => {
                    self.remember(t, Decision::Keep);
                }
            }
        }
    }

    /// The earliest start of the spans held from log group `group`, ms (a resumable run
    /// must read them again).
    pub fn oldest_held_ms(&self, group: &str) -> Option<i64> {
        self.traces
            .values()
            .filter_map(|slot| match slot {
                Slot::Held(h) => Some(h.spans.iter()),
                Slot::Decided(_) => None,
            })
            .flatten()
            .filter(|s| s.log_group() == Some(group))
            .map(|s| i64::try_from(s.start_unix_nano / 1_000_000).unwrap_or(i64::MAX))
            .min()
    }

    /// What it did so far.
    pub fn counts(&self) -> &SampleCounts {
        &self.counts
    }

    /// Bounds reached (`sample_held`, `sample_decisions`, `sample_late`).
    pub fn limits(&self) -> &BTreeMap<&'static str, u64> {
        &self.limits
    }

    /// Spans held while their traces are undecided.
    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    fn limit(&mut self, name: &'static str) {
        *self.limits.entry(name).or_default() += 1;
    }

    /// Records the decision on `trace`; what was held of it comes back.
    fn remember(&mut self, trace: TraceId, d: Decision) -> Option<Held> {
        let held = match self.traces.insert(trace, Slot::Decided(d)) {
            Some(Slot::Decided(_)) => return None,
            Some(Slot::Held(h)) => Some(h),
            None => None,
        };
        self.decided_order.push_back(trace);
        while self.decided_order.len() > MAX_DECISIONS {
            if let Some(old) = self.decided_order.pop_front() {
                if let Entry::Occupied(o) = self.traces.entry(old) {
                    if matches!(o.get(), Slot::Decided(_)) {
                        o.remove();
                    }
                }
                self.limit("sample_decisions");
            }
        }
        held
    }

    /// Why `span` alone keeps its trace, if it does.
    fn keeps(&self, span: &Span) -> Option<Reason> {
        if self.policy.keep_errors && span.status == StatusCode::Error {
            return Some(Reason::Error);
        }
        if self.policy.slow(span) {
            return Some(Reason::Slow);
        }
        let low = u128::from(low_bits(&span.trace_id));
        if self.min_bound.is_some_and(|bound| low < bound) {
            return Some(Reason::Ratio);
        }
        // Without rules every trace has the lowest rate, just checked.
        if span.parent_span_id.is_none()
            && !self.policy.rules.is_empty()
            && ratio_keeps(
                &span.trace_id,
                self.policy.rate_for(span.service(), span.name()),
            )
        {
            return Some(Reason::Ratio);
        }
        None
    }

    /// Takes one span at `now_ms`; the spans to send now go to `out`.
    pub fn push(&mut self, span: Span, now_ms: i64, out: &mut Vec<Span>) {
        let trace = span.trace_id;
        let cause = self.keeps(&span);
        let is_root = span.parent_span_id.is_none();
        match self.traces.get_mut(&trace) {
            Some(Slot::Decided(Decision::Keep)) => {
                self.counts.kept_spans += 1;
                out.push(span);
                return;
            }
            Some(Slot::Decided(decision)) => {
                match cause.filter(|r| *r != Reason::Ratio) {
                    Some(reason) => {
                        // Decided too early: the rest of the trace is kept, what was dropped
                        // is gone.
                        *decision = Decision::Keep;
                        self.limit("sample_late");
                        if let Some(c) = self.caused.as_mut() {
                            c.push((trace, reason));
                        }
                        *self.counts.kept_traces.entry(reason).or_default() += 1;
                        self.counts.kept_spans += 1;
                        out.push(span);
                    }
                    None => self.counts.dropped_spans += 1,
                }
                return;
            }
            Some(Slot::Held(h)) => {
                if cause.is_none() {
                    // The trace's deadline moves when its root comes; its other spans leave
                    // the index as it is.
                    if is_root {
                        h.root = self.policy.kind_of_root(&span).map(Box::new);
                        let old = h.deadline_ms;
                        h.deadline_ms = now_ms.saturating_add(self.policy.wait_ms);
                        self.deadlines.remove(&(old, trace));
                        self.deadlines.insert((h.deadline_ms, trace));
                    }
                    self.held_bytes += held_size(&span);
                    self.held_spans += 1;
                    h.spans.push(span);
                    self.shed(now_ms, out);
                    return;
                }
            }
            None => {
                if cause.is_none() {
                    let (wait, root) = if is_root {
                        (
                            self.policy.wait_ms,
                            self.policy.kind_of_root(&span).map(Box::new),
                        )
                    } else {
                        (self.policy.max_wait_ms, None)
                    };
                    let deadline_ms = now_ms.saturating_add(wait);
                    self.held_bytes += held_size(&span);
                    self.held_spans += 1;
                    self.traces.insert(
                        trace,
                        Slot::Held(Held {
                            spans: vec![span],
                            deadline_ms,
                            root,
                        }),
                    );
                    self.deadlines.insert((deadline_ms, trace));
                    self.shed(now_ms, out);
                    return;
                }
            }
        }
        if let Some(reason) = cause {
            self.keep(trace, reason, now_ms, Some(span), out);
        }
    }

    /// Past [`MAX_HELD_BYTES`], decides the traces due soonest now.
    fn shed(&mut self, now_ms: i64, out: &mut Vec<Span>) {
        while self.held_bytes > MAX_HELD_BYTES {
            let Some((_, first)) = self.deadlines.pop_first() else {
                break;
            };
            self.limit("sample_held");
            self.decide(first, now_ms, out);
        }
    }

    /// What was held of a trace no longer is.
    fn release(&mut self, trace: TraceId, h: &Held) {
        self.held_spans -= h.spans.len();
        self.held_bytes -= h.spans.iter().map(held_size).sum::<usize>();
        self.deadlines.remove(&(h.deadline_ms, trace));
    }

    /// Keeps `trace` for `reason`: what was held of it, and `span`, go out.
    fn keep(
        &mut self,
        trace: TraceId,
        reason: Reason,
        now_ms: i64,
        span: Option<Span>,
        out: &mut Vec<Span>,
    ) {
        *self.counts.kept_traces.entry(reason).or_default() += 1;
        if matches!(reason, Reason::Error | Reason::Slow) {
            if let Some(c) = self.caused.as_mut() {
                c.push((trace, reason));
            }
        }
        let mut root = None;
        if let Some(h) = self.remember(trace, Decision::Keep) {
            self.release(trace, &h);
            self.counts.kept_spans += h.spans.len() as u64;
            root = h.root.map(|r| *r);
            out.extend(h.spans);
        }
        if let Some(s) = span {
            if s.parent_span_id.is_none() {
                root = self.policy.kind_of_root(&s);
            }
            self.counts.kept_spans += 1;
            out.push(s);
        }
        if let (Some(key), Some(_)) = (root, self.policy.at_least_one_per_ms) {
            self.last_kept.insert(key, now_ms);
        }
    }

    /// Decides a held trace now (its deadline may be out of the index already): dropped,
    /// unless it is the first of its kind in the interval.
    fn decide(&mut self, trace: TraceId, now_ms: i64, out: &mut Vec<Span>) {
        let Some(Slot::Held(h)) = self.traces.get(&trace) else {
            return;
        };
        // The trace's kind is looked up only when the policy keeps the first of each.
        let kind = self.policy.at_least_one_per_ms.and_then(|interval| {
            let key = h.root.as_deref().cloned().or_else(|| {
                h.spans
                    .first()
                    .map(|s| (s.service().to_owned(), s.name().to_owned()))
            })?;
            Some((interval, key))
        });
        if let Some((interval, key)) = kind {
            let due = self
                .last_kept
                .get(&key)
                .is_none_or(|t| now_ms.saturating_sub(*t) >= interval);
            if due {
                self.keep(trace, Reason::Rare, now_ms, None, out);
                self.last_kept.insert(key, now_ms);
                return;
            }
        }
        if let Some(h) = self.remember(trace, Decision::Drop) {
            self.release(trace, &h);
            self.counts.dropped_spans += h.spans.len() as u64;
            self.counts.dropped_traces += 1;
        }
    }

    /// Decides the traces whose time came by `now_ms`.
    pub fn expire(&mut self, now_ms: i64, out: &mut Vec<Span>) {
        while let Some((deadline, trace)) = self.deadlines.first().copied() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_first();
            self.decide(trace, now_ms, out);
        }
    }

    /// The end of the input: every trace still held is decided.
    pub fn finish(&mut self, now_ms: i64, out: &mut Vec<Span>) {
        while let Some((_, trace)) = self.deadlines.pop_first() {
            self.decide(trace, now_ms, out);
        }
    }
}

#[cfg(test)]
mod tests;
