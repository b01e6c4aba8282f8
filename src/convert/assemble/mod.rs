//! Assembly: spans and Lambda platform events → finished spans, in order of completeness.
//! Knows nothing of AWS APIs; sinks consume its output.
//!
//! * spans that belong to no Lambda invocation are ready at once;
//! * spans of an invocation are held until its REPORT line (the last line Lambda writes for
//!   it), then released together with the invocation and init spans built from its platform
//!   lines ([`invocation`]);
//! * spans announced by an open record wait for their finished record, or for their invocation
//!   to end (then they become error spans);
//! * an invocation whose function printed no span waits (within the assembly window) for the
//!   caller's span that recorded its request id, and is placed under it;
//! * duplicates (the same line read twice) are dropped by (trace id, span id).
//!
//! Every piece of state is indexed by what looks it up (request, span id, caller request id),
//! and nothing scans all pending state per record: time-based work (giving up on silent
//! invocations) pops a heap ordered by time. Every set is bounded (see [`Limits`]); a bound
//! that is hit finishes or forgets the oldest entry and is counted in [`Counters`].

pub mod invocation;
pub mod span;

pub use invocation::Invocation;
pub use span::{AnyValue, Event, KeyValue, LineFacts, Link, Resource, Span, SpanData, SpanLog};

use crate::span_line::{SpanId, StatusCode, TraceId};
use invocation::{build, TraceSource};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A hash map whose keys come from input: fast, seeded at random per process.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set whose keys come from input (see [`Map`]).
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use std::sync::Arc;

/// The service name for spans that do not name one: `/aws/lambda/<fn>` → `<fn>`, any other
/// group → its last path segment, no group → `unknown_service`.
pub fn service_from_log_group(group: &str) -> String {
    if let Some(f) = group.strip_prefix("/aws/lambda/") {
        return f.to_owned();
    }
    match group.trim_end_matches('/').rsplit('/').next() {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "unknown_service".to_owned(),
    }
}

/// Service names by log group, for groups whose spans do not name their service (`*s=`):
/// `GROUP=NAME` for one group, `PREFIX*=NAME` for every group starting with `PREFIX`.
#[derive(Clone, Debug, Default)]
pub struct ServiceMap {
    rules: Vec<(String, bool, String)>,
}

/// A `--service` rule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected LOG_GROUP=SERVICE or PREFIX*=SERVICE")]
pub struct ServiceRuleError(pub String);

impl ServiceMap {
    /// Parses rules (`GROUP=NAME` or `PREFIX*=NAME`).
    pub fn parse<'a>(
        rules: impl IntoIterator<Item = &'a str>,
    ) -> Result<ServiceMap, ServiceRuleError> {
        let mut out = ServiceMap::default();
        for r in rules {
            let (pat, name) = r
                .split_once('=')
                .filter(|(p, n)| !p.is_empty() && !n.is_empty())
                .ok_or_else(|| ServiceRuleError(r.to_owned()))?;
            let (pat, prefix) = match pat.strip_suffix('*') {
                Some(p) => (p, true),
                None => (pat, false),
            };
            out.rules.push((pat.to_owned(), prefix, name.to_owned()));
        }
        Ok(out)
    }

    /// The service for `group` by the first matching rule, else the built-in rule
    /// ([`service_from_log_group`]).
    pub fn service(&self, group: &str) -> String {
        self.rules
            .iter()
            .find(|(p, prefix, _)| {
                if *prefix {
                    group.starts_with(p.as_str())
                } else {
                    group == p
                }
            })
            .map_or_else(|| service_from_log_group(group), |(_, _, n)| n.clone())
    }
}

/// A Lambda request id, held inline so that keys cost no allocation. Ids longer than
/// [`RequestId::INLINE`] bytes (Lambda's are 36) are kept as a 128-bit hash of their text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    len: u8,
    bytes: [u8; RequestId::INLINE],
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "RequestId({s:?})"),
            None => write!(f, "RequestId(hash)"),
        }
    }
}

impl RequestId {
    /// The longest id kept as text.
    pub const INLINE: usize = 46;
    const HASHED: u8 = u8::MAX;

    /// The key for `text`.
    pub fn new(text: &str) -> RequestId {
        let mut bytes = [0u8; Self::INLINE];
        let b = text.as_bytes();
        if b.len() <= Self::INLINE {
            bytes[..b.len()].copy_from_slice(b);
            return RequestId {
                len: b.len() as u8,
                bytes,
            };
        }
        let a = invocation::fnv64_bytes(b, 0xcbf2_9ce4_8422_2325);
        let c = invocation::fnv64_bytes(b, 0x6c62_272e_07bb_0142);
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..16].copy_from_slice(&c.to_le_bytes());
        RequestId {
            len: Self::HASHED,
            bytes,
        }
    }

    /// The text, when it was short enough to keep.
    pub fn as_str(&self) -> Option<&str> {
        if self.len == Self::HASHED {
            return None;
        }
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).ok()
    }
}

/// One log group, by its index in the converter's table of groups.
pub type GroupId = u32;

/// One invocation: (log group, request id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    /// The log group.
    pub group: GroupId,
    /// The request id.
    pub id: RequestId,
}

/// (trace id, span id).
pub type SpanKey = (TraceId, SpanId);

/// The bounds of assembly state. Hitting one is never silent: it is counted in [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Invocations whose REPORT has not come yet. Beyond this, the oldest is finished with
    /// what is known.
    pub pending_invocations: usize,
    /// Spans held for invocations (open spans included). Beyond this, the invocation that has
    /// waited longest is finished with what is known.
    pub held_spans: usize,
    /// Span ids remembered for de-duplication.
    pub dedup_ids: usize,
    /// Finished invocations remembered, so that their late lines do not start a new one.
    pub finished_invocations: usize,
    /// Spans remembered by the request id they recorded (callers of invocations).
    pub callers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pending_invocations: 50_000,
            held_spans: 200_000,
            dedup_ids: 1 << 18,
            finished_invocations: 1 << 17,
            callers: 1 << 16,
        }
    }
}

/// What assembly counted besides the spans it made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Spans dropped as duplicates.
    pub duplicates: u64,
    /// Invocation spans built.
    pub invocations: u64,
    /// Invocations finished before their REPORT because [`Limits::pending_invocations`] or
    /// [`Limits::held_spans`] was reached.
    pub evicted_invocations: u64,
    /// Span ids forgotten by the de-duplication (a later copy of one would not be recognised).
    pub dedup_forgotten: u64,
    /// Finished invocations forgotten (a late line of one would start it again).
    pub finished_forgotten: u64,
    /// Caller spans forgotten (an invocation calling back to one is not placed under it).
    pub callers_forgotten: u64,
    /// Invocations placed under the caller's span that recorded their request id.
    pub placed_by_caller: u64,
    /// Invocations left without a trace at the end of a delivery (lambda mode): not sent.
    pub unplaced: u64,
    /// Invocations whose REPORT had not come at the end of a delivery (lambda mode): their
    /// function spans were sent, the invocation span is left to the delivery that completes it.
    pub incomplete_at_end: u64,
    /// Open spans dropped at the end of a delivery because their invocation had not ended.
    pub open_left: u64,
    /// Log lines put on a span (as an event, or kept beside it as a record).
    pub log_lines: u64,
    /// Log lines of no invocation being assembled (outside one, or after its REPORT): not put
    /// on a span.
    pub logs_unplaced: u64,
    /// Log lines dropped at [`MAX_LOG_EVENTS`] per span or [`MAX_LOG_BYTES`] held.
    pub logs_dropped: u64,
    /// Log lines cut at [`MAX_LOG_MESSAGE`].
    pub logs_cut: u64,
}

/// Most log lines put on one span as events.
pub const MAX_LOG_EVENTS: usize = 32;

/// Longest log message kept on a span (bytes; a longer one is cut at a character boundary
/// and ends with `…`).
pub const MAX_LOG_MESSAGE: usize = 2048;

/// Most bytes of log lines held for invocations not finished yet.
pub const MAX_LOG_BYTES: usize = 8 << 20;

/// Most log lines of one invocation kept as records for an OTLP logs sink (`--logs otlp`):
/// they do not weigh on a span's size, so the bound is the invocation's, not the span's.
pub const MAX_LOG_RECORDS: usize = 1024;

/// One of the function's own log lines (not a span line, not a platform line), held with its
/// invocation until it can be put on the span that was active when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When it was written (the record's timestamp), ms.
    pub t_ms: i64,
    /// Its level as the runtime or the JSON log format wrote it (`ERROR`, `WARN`, …).
    pub level: Option<Box<str>>,
    /// The message (without the runtime's prefix), at most [`MAX_LOG_MESSAGE`] bytes.
    pub message: Box<str>,
}

impl LogLine {
    fn size(&self) -> usize {
        self.message.len() + self.level.as_ref().map_or(0, |l| l.len()) + 48
    }
}

/// Puts `logs` on the spans they were written under: each on the span of `own` whose time
/// range holds it and that started last (the innermost), else on `fallback` (the invocation
/// span): as `log` events, at most [`MAX_LOG_EVENTS`] per span, or with `as_records` as
/// [`SpanLog`]s beside the span (at most [`MAX_LOG_RECORDS`] per span). Returns (put, dropped).
fn attach_logs(
    logs: Vec<LogLine>,
    own: &mut [Span],
    fallback: Option<&mut Span>,
    as_records: bool,
) -> (u64, u64) {
    let cap = if as_records {
        MAX_LOG_RECORDS
    } else {
        MAX_LOG_EVENTS
    };
    let (mut put, mut dropped) = (0, 0);
    let mut counts = vec![0usize; own.len() + 1];
    // Records are gathered per span and set once each (a span's list is a boxed slice).
    let mut records: Vec<Vec<SpanLog>> = Vec::new();
    if as_records {
        records.resize_with(own.len() + 1, Vec::new);
    }
    let mut fallback = fallback;
    for l in logs {
        let t_ns = u64::try_from(l.t_ms).unwrap_or(0).saturating_mul(1_000_000);
        let inner = own
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.start_unix_nano <= t_ns && t_ns <= s.end_unix_nano.max(s.start_unix_nano)
            })
            .max_by_key(|(_, s)| s.start_unix_nano)
            .map(|(i, _)| i);
        let (slot, span) = match (inner, fallback.as_deref_mut()) {
            (Some(i), _) => (i, &mut own[i]),
            (None, Some(f)) => (own.len(), f),
            (None, None) => match own.first_mut() {
                Some(s) => (0, s),
                None => {
                    dropped += 1;
                    continue;
                }
            },
        };
        if counts[slot] >= cap {
            dropped += 1;
            continue;
        }
        counts[slot] += 1;
        put += 1;
        if as_records {
            records[slot].push(SpanLog {
                time_unix_nano: t_ns,
                level: l.level.unwrap_or_default(),
                message: l.message,
            });
            continue;
        }
        let level = l.level.as_deref().unwrap_or("");
        let mut attrs: Vec<(&str, &str)> = vec![("message", &l.message)];
        if !level.is_empty() {
            attrs.push(("level", level));
        }
        span.push_event(t_ns, "log", &attrs);
    }
    for (slot, recs) in records.into_iter().enumerate() {
        if recs.is_empty() {
            continue;
        }
        match own.get_mut(slot) {
            Some(s) => s.extend_logs(recs),
            None => {
                if let Some(f) = fallback.as_deref_mut() {
                    f.extend_logs(recs);
                }
            }
        }
    }
    (put, dropped)
}

/// A bounded set of recent keys (FIFO).
#[derive(Debug)]
struct RecentSet<K: std::hash::Hash + Eq + Copy> {
    set: Set<K>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: std::hash::Hash + Eq + Copy> RecentSet<K> {
    fn new(capacity: usize) -> Self {
        RecentSet {
            set: Set::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Inserts `k`; `Some(evicted)` tells whether an old key had to go, `None` when `k` was
    /// already there.
    fn insert(&mut self, k: K) -> Option<bool> {
        if !self.set.insert(k) {
            return None;
        }
        // The oldest key leaves before the new one is queued, so the queue never grows past
        // its capacity (a push first would double its allocation for one element).
        let evicted = self.order.len() >= self.capacity;
        if evicted {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(k);
        Some(evicted)
    }

    fn contains(&self, k: &K) -> bool {
        self.set.contains(k)
    }
}

/// A compact key for a span id pair in the de-duplication set.
fn span_key_hash(k: &SpanKey) -> u64 {
    let mut h = invocation::fnv64_bytes(&k.0 .0, 0xcbf2_9ce4_8422_2325);
    h = invocation::fnv64_bytes(&k.1 .0, h);
    h
}

/// The state of one invocation not finished yet.
#[derive(Debug)]
struct Request {
    inv: Invocation,
    /// Finished spans the function printed for it.
    spans: Vec<Span>,
    /// Its open spans (in `Assembler::open`).
    open: Vec<SpanKey>,
    /// When its first line was seen (record time, else span start), ms.
    first_ms: i64,
    /// When its latest line was seen, ms.
    last_ms: i64,
    /// The earliest input any of its lines came from.
    first_input: u32,
    /// Its log lines, to put on its spans when it ends.
    logs: Vec<LogLine>,
    /// Its spans that arrived after another copy of them was released (from `aws/spans`):
    /// not sent again, but the invocation's place in the trace is worked out with them.
    dups: Vec<Span>,
}

impl Request {
    fn touch(&mut self, t: i64, input: u32) {
        self.first_input = self.first_input.min(input);
        if t > self.last_ms {
            self.last_ms = t;
        }
        if t < self.first_ms {
            self.first_ms = t;
        }
    }
}

/// An open span waiting for its finished record.
#[derive(Debug)]
struct OpenSpan {
    span: Span,
    request: Option<RequestKey>,
    seen_ms: i64,
}

/// An invocation finished without a trace of its own, waiting for its caller's span.
#[derive(Debug)]
struct Waiting {
    spans: Vec<Span>,
    since_ms: i64,
    /// Its trace is the derived one (no X-Ray trace either).
    derived: bool,
    /// What its lines said (kept for the invocation to be looked up again if left unplaced).
    inv: Invocation,
}

/// Where a request for a line of an invocation comes from: its key and the names it is filed
/// under.
#[derive(Clone, Copy, Debug)]
pub struct RequestRef<'a> {
    /// The key.
    pub key: RequestKey,
    /// The log group.
    pub group: &'a Arc<str>,
    /// The log stream of the line.
    pub stream: &'a Arc<str>,
    /// The request id as text.
    pub id: &'a str,
    /// The input the line came from.
    pub input: u32,
}

/// How an invocation without REPORT is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The input is over (or the invocation went silent): build its spans with what is known.
    WithWhatIsKnown,
    /// A delivery is over but a later one will complete it (lambda mode): send the function's
    /// finished spans as they are, leave the invocation span to the delivery with its REPORT.
    LeaveToLaterDelivery,
}

/// The assembler (see the module documentation).
#[derive(Debug)]
pub struct Assembler {
    limits: Limits,
    requests: Map<RequestKey, Request>,
    open: Map<SpanKey, OpenSpan>,
    finished: RecentSet<RequestKey>,
    seen: RecentSet<u64>,
    callers: Map<RequestId, SpanKey>,
    callers_order: VecDeque<RequestId>,
    waiting: Map<RequestId, Waiting>,
    /// When each pending invocation was last looked at (lazily: an entry whose invocation was
    /// touched since is pushed again with its latest time when it comes up).
    due_requests: BinaryHeap<Reverse<(i64, RequestKey)>>,
    due_open: BinaryHeap<Reverse<(i64, SpanKey)>>,
    due_waiting: BinaryHeap<Reverse<(i64, RequestId)>>,
    held: usize,
    /// Bytes of log lines held ([`LogLine`]).
    log_bytes: usize,
    /// Log lines are kept as [`SpanLog`]s (`--logs otlp`), not put on spans as events.
    logs_as_records: bool,
    ready: Vec<Span>,
    unplaced: Vec<Invocation>,
    /// What it counted.
    pub counters: Counters,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler::new(Limits::default())
    }
}

impl Assembler {
    /// An assembler within `limits`.
    pub fn new(limits: Limits) -> Self {
        Assembler {
            limits,
            requests: Map::default(),
            open: Map::default(),
            finished: RecentSet::new(limits.finished_invocations),
            seen: RecentSet::new(limits.dedup_ids),
            callers: Map::default(),
            callers_order: VecDeque::new(),
            waiting: Map::default(),
            due_requests: BinaryHeap::new(),
            due_open: BinaryHeap::new(),
            due_waiting: BinaryHeap::new(),
            held: 0,
            log_bytes: 0,
            logs_as_records: false,
            ready: Vec::new(),
            unplaced: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Whether `key` ended already (its late lines are not held for it).
    pub fn is_finished(&self, key: &RequestKey) -> bool {
        self.finished.contains(key)
    }

    /// Marks a span id as seen; `false` when it was seen already (a duplicate).
    fn first_sighting(&mut self, id: &SpanKey) -> bool {
        match self.seen.insert(span_key_hash(id)) {
            None => false,
            Some(evicted) => {
                if evicted {
                    self.counters.dedup_forgotten += 1;
                }
                true
            }
        }
    }

    fn was_seen(&self, id: &SpanKey) -> bool {
        self.seen.contains(&span_key_hash(id))
    }

    /// The invocation of `r`, created if new (its lines may come in any order), its latest
    /// time moved to `t_ms`.
    pub fn request(&mut self, r: RequestRef<'_>, t_ms: i64) -> &mut Invocation {
        &mut self.request_entry(r, t_ms).inv
    }

    fn request_entry(&mut self, r: RequestRef<'_>, t_ms: i64) -> &mut Request {
        if self.requests.len() >= self.limits.pending_invocations
            && !self.requests.contains_key(&r.key)
        {
            self.evict_oldest();
        }
        self.compact_heaps();
        let due = &mut self.due_requests;
        match self.requests.entry(r.key) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let req = e.into_mut();
                req.touch(t_ms, r.input);
                req
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                due.push(Reverse((t_ms, r.key)));
                e.insert(Request {
                    inv: Invocation {
                        log_group: Arc::clone(r.group),
                        log_stream: Arc::clone(r.stream),
                        request_id: r.id.to_owned(),
                        ..Invocation::default()
                    },
                    spans: Vec::new(),
                    open: Vec::new(),
                    first_ms: t_ms,
                    last_ms: t_ms,
                    first_input: r.input,
                    logs: Vec::new(),
                    dups: Vec::new(),
                })
            }
        }
    }

    /// Keeps the time heaps from outgrowing the state they point at: entries of what ended
    /// stay until they come up, so when they are many, the heaps are rebuilt from the live
    /// state (amortised over the pushes that made them grow).
    fn compact_heaps(&mut self) {
        let live = self.requests.len() + self.open.len() + self.waiting.len();
        let total = self.due_requests.len() + self.due_open.len() + self.due_waiting.len();
        if total <= 2 * live + 4096 {
            return;
        }
        self.due_requests = self
            .requests
            .iter()
            .map(|(k, r)| Reverse((r.last_ms, *k)))
            .collect();
        self.due_open = self
            .open
            .iter()
            .filter(|(_, o)| o.request.is_none())
            .map(|(k, o)| Reverse((o.seen_ms, *k)))
            .collect();
        self.due_waiting = self
            .waiting
            .iter()
            .map(|(k, w)| Reverse((w.since_ms, *k)))
            .collect();
    }

    /// The pending invocation whose latest line is the oldest, found through the heap (entries
    /// of ended invocations are dropped, touched ones pushed again with their latest time).
    fn oldest_request(&mut self) -> Option<RequestKey> {
        while let Some(Reverse((t, key))) = self.due_requests.pop() {
            let Some(r) = self.requests.get(&key) else {
                continue;
            };
            if r.last_ms > t {
                self.due_requests.push(Reverse((r.last_ms, key)));
                continue;
            }
            return Some(key);
        }
        None
    }

    /// Finishes the invocation that has waited longest (a bound was hit).
    fn evict_oldest(&mut self) {
        if let Some(key) = self.oldest_request() {
            self.counters.evicted_invocations += 1;
            self.end(key, Ending::WithWhatIsKnown, None);
        }
    }

    /// Adds a finished span (`open` false) or an open record (`open` true) that belongs to
    /// invocation `request`, if any (`None`: ready at once). `called` is the request id the
    /// span recorded as one it invoked. `t_ms` is the record's time (0: unknown).
    pub fn push_span(
        &mut self,
        span: Span,
        request: Option<RequestRef<'_>>,
        open: bool,
        called: Option<RequestId>,
        t_ms: i64,
    ) {
        let id = (span.trace_id, span.span_id);
        let t = if t_ms > 0 {
            t_ms
        } else {
            i64::try_from(span.start_unix_nano / 1_000_000).unwrap_or(i64::MAX)
        };
        // A line of an invocation that already ended (written after its REPORT, or re-read
        // after it was finished) has nothing left to wait for.
        let request = request.filter(|r| !self.finished.contains(&r.key));
        if open {
            if self.was_seen(&id) || self.open.contains_key(&id) {
                return;
            }
            match request {
                Some(r) => self.request_entry(r, t).open.push(id),
                None => self.due_open.push(Reverse((t, id))),
            }
            self.open.insert(
                id,
                OpenSpan {
                    span,
                    request: request.map(|r| r.key),
                    seen_ms: t,
                },
            );
            self.held += 1;
            self.enforce_held();
            return;
        }
        if !self.first_sighting(&id) {
            self.counters.duplicates += 1;
            // Another copy went out already (`aws/spans` read first): this one still says
            // where the invocation belongs.
            if let Some(r) = request.filter(|_| !open) {
                let req = self.request_entry(r, t);
                if req.dups.len() < 64 && !req.spans.iter().any(|s| (s.trace_id, s.span_id) == id) {
                    req.dups.push(span);
                }
            }
            return;
        }
        if let Some(o) = self.open.remove(&id) {
            self.held -= 1;
            if let Some(k) = o.request {
                if let Some(r) = self.requests.get_mut(&k) {
                    r.open.retain(|x| *x != id);
                }
            }
        }
        if let Some(called) = called {
            self.caller_seen(called, id);
        }
        match request {
            Some(r) => {
                self.request_entry(r, t).spans.push(span);
                self.held += 1;
                self.enforce_held();
            }
            None => self.ready.push(span),
        }
    }

    /// Keeps log lines beside their spans as [`SpanLog`]s for an OTLP logs sink (`true`,
    /// `--logs otlp`) instead of putting them on the spans as `log` events.
    pub fn keep_logs_as_records(&mut self, on: bool) {
        self.logs_as_records = on;
    }

    /// One of the function's log lines, of the invocation `request` (`None`: outside any).
    pub fn push_log(&mut self, line: LogLine, request: Option<RequestRef<'_>>) {
        let Some(r) = request.filter(|r| !self.finished.contains(&r.key)) else {
            self.counters.logs_unplaced += 1;
            return;
        };
        let size = line.size();
        if self.log_bytes + size > MAX_LOG_BYTES {
            self.counters.logs_dropped += 1;
            return;
        }
        let t = line.t_ms;
        let per_request = if self.logs_as_records {
            MAX_LOG_RECORDS
        } else {
            4 * MAX_LOG_EVENTS
        };
        let req = self.request_entry(r, t);
        if req.logs.len() >= per_request {
            self.counters.logs_dropped += 1;
            return;
        }
        req.logs.push(line);
        self.log_bytes += size;
    }

    /// A span recorded that it invoked request `called`: remember it, and place an invocation
    /// waiting for it.
    fn caller_seen(&mut self, called: RequestId, id: SpanKey) {
        if let Some(w) = self.waiting.remove(&called) {
            self.release_placed(w.spans, id);
        }
        if self.callers.insert(called, id).is_none() {
            self.callers_order.push_back(called);
            if self.callers_order.len() > self.limits.callers {
                if let Some(old) = self.callers_order.pop_front() {
                    self.callers.remove(&old);
                    self.counters.callers_forgotten += 1;
                }
            }
        }
    }

    /// Releases an invocation's spans placed under the caller span `caller`.
    fn release_placed(&mut self, mut spans: Vec<Span>, caller: SpanKey) {
        self.counters.placed_by_caller += 1;
        let inv_id = spans.last().map(|s| s.span_id);
        for s in &mut spans {
            s.trace_id = caller.0;
            if Some(s.span_id) == inv_id {
                s.parent_span_id = Some(caller.1);
            }
        }
        self.release_built(spans);
    }

    fn release_built(&mut self, spans: Vec<Span>) {
        for s in spans {
            if self.first_sighting(&(s.trace_id, s.span_id)) {
                self.ready.push(s);
            } else {
                self.counters.duplicates += 1;
            }
        }
    }

    fn enforce_held(&mut self) {
        while self.held > self.limits.held_spans && !self.requests.is_empty() {
            self.evict_oldest();
        }
        if self.held > self.limits.held_spans {
            // Only open spans without an invocation are left: end the oldest.
            let oldest = self
                .open
                .iter()
                .filter(|(_, o)| o.request.is_none())
                .min_by_key(|(_, o)| o.seen_ms)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.counters.evicted_invocations += 1;
                self.close_open(k);
            }
        }
    }

    /// Ends an open span that never finished: an error span.
    fn close_open(&mut self, k: SpanKey) {
        if let Some(o) = self.open.remove(&k) {
            self.held -= 1;
            if self.first_sighting(&k) {
                let mut s = o.span;
                s.status = StatusCode::Error;
                s.set_status_message("did not finish");
                self.ready.push(s);
            }
        }
    }

    /// The invocation `key` is complete (its REPORT came): build its spans and release
    /// everything. `resource` is the resource of its invocation spans.
    pub fn finish(&mut self, key: RequestKey, resource: Arc<Resource>) {
        self.end(key, Ending::WithWhatIsKnown, Some(resource));
    }

    /// Ends `key`: see [`Ending`]. Without `resource`, the invocation spans get a resource of
    /// their own.
    fn end(&mut self, key: RequestKey, how: Ending, resource: Option<Arc<Resource>>) {
        let Some(req) = self.requests.remove(&key) else {
            return;
        };
        if self.finished.insert(key) == Some(true) {
            self.counters.finished_forgotten += 1;
        }
        self.held -= req.spans.len();
        let logs = req.logs;
        self.log_bytes -= logs.iter().map(LogLine::size).sum::<usize>();
        let mut own = req.spans;
        let first_unfinished = own.len();
        for id in &req.open {
            if let Some(o) = self.open.remove(id) {
                self.held -= 1;
                match how {
                    Ending::WithWhatIsKnown => {
                        if self.first_sighting(id) {
                            let mut s = o.span;
                            s.status = StatusCode::Error;
                            own.push(s);
                        }
                    }
                    Ending::LeaveToLaterDelivery => self.counters.open_left += 1,
                }
            }
        }
        if how == Ending::LeaveToLaterDelivery {
            self.counters.incomplete_at_end += 1;
            self.counters.logs_unplaced += logs.len() as u64;
            self.ready.extend(own);
            return;
        }
        if !req.inv.is_worth_a_span() && first_unfinished == own.len() {
            // An END alone says nothing worth a span.
            let (put, dropped) = attach_logs(logs, &mut own, None, self.logs_as_records);
            self.counters.log_lines += put;
            self.counters.logs_dropped += dropped;
            self.ready.extend(own);
            return;
        }
        let resource = resource.unwrap_or_else(|| {
            Arc::new(Resource::new(
                service_from_log_group(&req.inv.log_group),
                invocation::resource_attributes(&req.inv.log_group, &req.inv.log_stream, None),
            ))
        });
        let caller = if own.is_empty() && req.inv.tracing.is_none() {
            self.callers.get(&key.id).copied()
        } else {
            None
        };
        // The copies already sent take part in placing the invocation, then go.
        let phantoms: Vec<SpanKey> = req.dups.iter().map(|s| (s.trace_id, s.span_id)).collect();
        own.extend(req.dups);
        let mut built = build(&req.inv, &mut own, caller, resource);
        if !phantoms.is_empty() {
            own.retain(|s| !phantoms.contains(&(s.trace_id, s.span_id)));
        }
        if !logs.is_empty() {
            let (put, dropped) =
                attach_logs(logs, &mut own, built.spans.last_mut(), self.logs_as_records);
            self.counters.log_lines += put;
            self.counters.logs_dropped += dropped;
        }
        let input = own.iter().map(|s| s.input).fold(req.first_input, u32::min);
        for s in &mut built.spans {
            s.input = input;
        }
        if let Some(inv_span) = built.spans.last() {
            let reason = inv_span.status_message();
            let msg = if reason.is_empty() {
                "did not finish".to_owned()
            } else {
                format!("did not finish: {reason}")
            };
            for s in &mut own[first_unfinished..] {
                s.end_unix_nano = inv_span.end_unix_nano.max(s.start_unix_nano);
                s.set_status_message(&msg);
            }
        }
        self.counters.invocations += 1;
        if built.source == TraceSource::Caller {
            self.counters.placed_by_caller += 1;
        }
        self.ready.extend(own);
        if matches!(built.source, TraceSource::Xray | TraceSource::Derived) {
            // Nothing of its own says where it belongs: wait for the caller's span.
            self.due_waiting.push(Reverse((req.last_ms, key.id)));
            self.waiting.insert(
                key.id,
                Waiting {
                    spans: built.spans,
                    since_ms: req.last_ms,
                    derived: built.source == TraceSource::Derived,
                    inv: req.inv,
                },
            );
        } else {
            self.release_built(built.spans);
        }
    }

    /// Ends every invocation and open span still held (the input is over): see [`Ending`].
    pub fn finish_all(&mut self, how: Ending) {
        let keys: Vec<RequestKey> = self.requests.keys().copied().collect();
        for k in keys {
            self.end(k, how, None);
        }
        let open: Vec<(SpanKey, i64, u64)> = self
            .open
            .iter()
            .map(|(k, o)| (*k, o.seen_ms, o.span.start_unix_nano))
            .collect();
        let mut open = open;
        open.sort_by_key(|(k, t, s)| (*t, *s, k.1));
        for (k, ..) in open {
            match how {
                Ending::WithWhatIsKnown => self.close_open(k),
                Ending::LeaveToLaterDelivery => {
                    self.open.remove(&k);
                    self.held -= 1;
                    self.counters.open_left += 1;
                }
            }
        }
        self.release_waiting(how);
        self.due_requests.clear();
        self.due_open.clear();
        self.due_waiting.clear();
    }

    /// Releases the invocations still waiting for a caller: as they are, or (lambda mode) only
    /// those with an X-Ray trace — the rest would need an invented trace id and are counted.
    fn release_waiting(&mut self, how: Ending) {
        let waiting: Vec<(RequestId, Waiting)> = self.waiting.drain().collect();
        let mut waiting = waiting;
        waiting.sort_by_key(|(_, w)| w.since_ms);
        for (_, w) in waiting {
            self.release_unplaced(w, how);
        }
    }

    fn release_unplaced(&mut self, w: Waiting, how: Ending) {
        if how == Ending::LeaveToLaterDelivery && w.derived {
            self.counters.unplaced += 1;
            if self.unplaced.len() < self.limits.pending_invocations {
                self.unplaced.push(w.inv);
            }
            return;
        }
        self.release_built(w.spans);
    }

    /// Takes the invocations a delivery could not place (see [`Counters::unplaced`]): what their
    /// lines said, to look the rest of their lines up elsewhere.
    pub fn take_unplaced(&mut self) -> Vec<Invocation> {
        std::mem::take(&mut self.unplaced)
    }

    /// Finishes what has waited too long to be completed by lines still to come: invocations
    /// whose latest line is older than `before_ms` (they crashed or were cut off; Lambda ends
    /// every invocation within 15 minutes), open spans seen before it, and invocations waiting
    /// for their caller since before it.
    pub fn finish_stale(&mut self, before_ms: i64) {
        while self
            .due_requests
            .peek()
            .is_some_and(|Reverse((t, _))| *t < before_ms)
        {
            match self.oldest_request() {
                Some(key) => {
                    let fresh = self
                        .requests
                        .get(&key)
                        .is_some_and(|r| r.last_ms >= before_ms);
                    if fresh {
                        if let Some(r) = self.requests.get(&key) {
                            self.due_requests.push(Reverse((r.last_ms, key)));
                        }
                        break;
                    }
                    self.end(key, Ending::WithWhatIsKnown, None);
                }
                None => break,
            }
        }
        while let Some(Reverse((t, k))) = self.due_open.peek().copied() {
            if t >= before_ms {
                break;
            }
            self.due_open.pop();
            if self.open.get(&k).is_some_and(|o| o.request.is_none()) {
                self.close_open(k);
            }
        }
        while let Some(Reverse((t, id))) = self.due_waiting.peek().copied() {
            if t >= before_ms {
                break;
            }
            self.due_waiting.pop();
            if let Some(w) = self.waiting.remove(&id) {
                self.release_unplaced(w, Ending::WithWhatIsKnown);
            }
        }
    }

    /// The earliest time (ms) of what group `group` still holds back: invocations not ended,
    /// their spans, open spans, invocations waiting for their caller. A reader that stops here
    /// (the forwarder) must read again from this time on its next run, or those spans are
    /// lost. Scans the pending state of that group: called once per group and run, not per
    /// record.
    pub fn oldest_pending_ms(&self, group: GroupId) -> Option<i64> {
        let requests = self
            .requests
            .iter()
            .filter(|(k, _)| k.group == group)
            .flat_map(|(_, r)| {
                r.inv
                    .times_ms()
                    .chain(std::iter::once(r.first_ms))
                    .chain(r.spans.iter().map(|s| span_ms(s.start_unix_nano)))
            });
        let open = self
            .open
            .values()
            .filter(|o| o.request.is_none_or(|k| k.group == group))
            .map(|o| o.seen_ms.min(span_ms(o.span.start_unix_nano)));
        requests.chain(open).filter(|t| *t > 0).min()
    }

    /// Spans held back, waiting for their invocation to end (open spans included).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Invocations not ended yet.
    pub fn pending_invocations(&self) -> usize {
        self.requests.len()
    }

    /// Moves the spans that are complete into `out`.
    pub fn drain_ready(&mut self, out: &mut Vec<Span>) {
        out.append(&mut self.ready);
    }

    /// Takes the spans that are complete.
    pub fn take_ready(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.ready)
    }

    /// How many spans are ready.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }
}

fn span_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

/// Groups spans by trace, in first-seen order.
pub fn group_by_trace<S>(spans: Vec<S>, trace: impl Fn(&S) -> TraceId) -> Vec<Vec<S>> {
    let mut order: Vec<TraceId> = Vec::new();
    let mut by: Map<TraceId, Vec<S>> = Map::default();
    for s in spans {
        let t = trace(&s);
        by.entry(t)
            .or_insert_with(|| {
                order.push(t);
                Vec::new()
            })
            .push(s);
    }
    order.into_iter().filter_map(|t| by.remove(&t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_line::decode;
    use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};

    #[test]
    fn service_comes_from_log_group() {
        assert_eq!(service_from_log_group("/aws/lambda/checkout"), "checkout");
        assert_eq!(service_from_log_group("/ecs/express-app"), "express-app");
        assert_eq!(service_from_log_group(""), "unknown_service");
    }

    #[test]
    fn service_map_rules() {
        let m = ServiceMap::parse(["/ecs/express-app=web", "/aws/lambda/orders-*=orders"]).unwrap();
        assert_eq!(m.service("/ecs/express-app"), "web");
        assert_eq!(m.service("/aws/lambda/orders-prod"), "orders");
        assert_eq!(m.service("/aws/lambda/other"), "other");
        assert!(ServiceMap::parse(["nope"]).is_err());
    }

    #[test]
    fn request_ids_are_inline_or_hashed() {
        let a = RequestId::new("c793869b-ee49-115b-a5b6-4fd21e8dedac");
        assert_eq!(a.as_str(), Some("c793869b-ee49-115b-a5b6-4fd21e8dedac"));
        let long = "x".repeat(100);
        let b = RequestId::new(&long);
        assert_eq!(b.as_str(), None);
        assert_eq!(b, RequestId::new(&long));
        assert_ne!(b, RequestId::new(&"y".repeat(100)));
    }

    fn span(line: &str) -> Span {
        let rec = decode(line).unwrap();
        let l = rec.spans().next().unwrap();
        let res = Arc::new(Resource::new("svc".into(), vec![]));
        Span::from_line(&l, res, &mut Vec::new()).0
    }

    fn timed(id: u8, parent: Option<u8>, start_ms: u64, end_ms: u64) -> Span {
        Span::from_data(&SpanData {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            name: format!("s{id}"),
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: start_ms * 1_000_000,
            end_unix_nano: end_ms * 1_000_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            service: "svc".into(),
            resource: Vec::new(),
            dropped: (0, 0, 0),
        })
    }

    fn log(t_ms: i64, level: &str, message: &str) -> LogLine {
        LogLine {
            t_ms,
            level: Some(level.into()),
            message: message.into(),
        }
    }

    fn log_messages(s: &Span) -> Vec<String> {
        s.data()
            .events
            .iter()
            .filter(|e| e.name == "log")
            .filter_map(|e| {
                e.attributes.iter().find_map(|kv| match &kv.value {
                    AnyValue::Str(v) if kv.key == "message" => Some(v.clone()),
                    _ => None,
                })
            })
            .collect()
    }

    #[test]
    fn log_lines_go_on_the_innermost_span_active_when_written_else_the_invocation() {
        // handler 10..100 ms, its child 20..50 ms; the invocation span around them.
        let mut own = vec![timed(2, Some(1), 10, 100), timed(3, Some(2), 20, 50)];
        let mut inv = timed(1, None, 0, 120);
        let logs = vec![
            log(5, "INFO", "before the handler"),
            log(30, "ERROR", "in the child"),
            log(60, "WARN", "in the handler"),
            log(110, "INFO", "after"),
        ];
        let (put, dropped) = attach_logs(logs, &mut own, Some(&mut inv), false);
        assert_eq!((put, dropped), (4, 0));
        assert_eq!(log_messages(&own[1]), ["in the child"]);
        assert_eq!(log_messages(&own[0]), ["in the handler"]);
        assert_eq!(log_messages(&inv), ["before the handler", "after"]);
        // The event keeps the level and the time.
        let e = &own[1].data().events[0];
        assert_eq!(e.time_unix_nano, 30_000_000);
        assert!(e.attributes.contains(&KeyValue::str("level", "ERROR")));
        // The span's own fields are untouched.
        assert_eq!(own[1].name(), "s3");
    }

    #[test]
    fn log_events_per_span_are_bounded_and_the_rest_counted() {
        let mut own = vec![timed(2, None, 0, 100)];
        let logs = (0..MAX_LOG_EVENTS as i64 + 5)
            .map(|i| log(i, "INFO", "x"))
            .collect();
        let (put, dropped) = attach_logs(logs, &mut own, None, false);
        assert_eq!((put, dropped), (MAX_LOG_EVENTS as u64, 5));
        assert_eq!(log_messages(&own[0]).len(), MAX_LOG_EVENTS);
    }

    #[test]
    fn log_records_stay_beside_the_span_and_leave_its_fields_alone() {
        let mut own = vec![timed(2, Some(1), 10, 100), timed(3, Some(2), 20, 50)];
        let mut inv = timed(1, None, 0, 120);
        let before = own[1].encoded_fields().to_vec();
        let logs = vec![
            log(30, "ERROR", "in the child"),
            LogLine {
                t_ms: 110,
                level: None,
                message: "after".into(),
            },
        ];
        let (put, dropped) = attach_logs(logs, &mut own, Some(&mut inv), true);
        assert_eq!((put, dropped), (2, 0));
        assert_eq!(
            own[1].logs(),
            [SpanLog {
                time_unix_nano: 30_000_000,
                level: "ERROR".into(),
                message: "in the child".into(),
            }]
        );
        assert_eq!(inv.logs()[0].message.as_ref(), "after");
        assert_eq!(inv.logs()[0].level.as_ref(), "");
        // No events: the span's encoded fields are what they were.
        assert_eq!(own[1].encoded_fields(), before.as_slice());
        assert!(own[1].heap_size() > before.len());
        // Records are bounded per span too, at a higher bound than events.
        let mut one = vec![timed(4, None, 0, 100)];
        let many = (0..MAX_LOG_RECORDS as i64 + 3)
            .map(|i| log(i % 100, "INFO", "x"))
            .collect();
        assert_eq!(
            attach_logs(many, &mut one, None, true),
            (MAX_LOG_RECORDS as u64, 3)
        );
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut a = Assembler::default();
        let s = span("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;");
        a.push_span(s.clone(), None, false, None, 0);
        a.push_span(s, None, false, None, 0);
        assert_eq!(a.counters.duplicates, 1);
        assert_eq!(a.take_ready().len(), 1);
    }

    #[test]
    fn the_dedup_bound_is_counted() {
        let mut a = Assembler::new(Limits {
            dedup_ids: 2,
            ..Limits::default()
        });
        for i in 1..=3u8 {
            let mut s = span("SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 n;");
            s.span_id = SpanId([i; 8]);
            a.push_span(s, None, false, None, 0);
        }
        assert_eq!(a.counters.dedup_forgotten, 1);
    }
}
