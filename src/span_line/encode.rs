//! Writing records (FORMAT.md §3–§5) into reusable buffers.
//!
//! Everything here appends to a caller-owned `Vec<u8>` and never allocates once the buffers have
//! grown to their working size: integers and ids are formatted by hand, strings are escaped in
//! runs. The emitter keeps one [`SpanEncoder`] per open span (taken from a pool) and writes the
//! finished record with exactly one `write_all`.

use super::{
    SpanId, SpanKind, StatusCode, TraceId, Value, MAX_ATTRIBUTES, MAX_BATCH_SPANS, MAX_EVENTS,
    MAX_KEY, MAX_LINE, MAX_LINKS, MAX_NAME, MAX_VALUE, PREFIX, RESERVE,
};
use core::fmt::Write as _;

/// Which escaping rules apply to a string (FORMAT.md §2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    /// Span name position: also a leading `"` or `|`.
    Name,
    /// Attribute keys: also `= # ~ !` and leading ASCII punctuation except `_` and `.`.
    Key,
    /// Values, event names, specials.
    Value,
}

/// Which bits of [`ESCAPE`] say "escape this byte" for one class: `rest` for every byte,
/// `first` for the first byte of the string.
#[derive(Clone, Copy)]
struct Masks {
    rest: u8,
    first: u8,
}

/// The escape rules of FORMAT.md §2 as one 256-byte table, two bits per class (one 256-entry
/// table of `bool` per class and position took six times the space in every binary).
static ESCAPE: [u8; 256] = escape_table();

const fn escape_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        // Escaped in every string: controls, space, DEL, `%` and `;`.
        let base = b <= 0x20 || b == 0x7f || b == b'%' || b == b';';
        let key = base || b == b'=' || b == b'#' || b == b'~' || b == b'!';
        let key_first = key || (b.is_ascii_punctuation() && b != b'_' && b != b'.');
        let name_first = base || b == b'"' || b == b'|';
        let bits = [base, base, base, name_first, key, key_first];
        let mut k = 0;
        while k < 6 {
            if bits[k] {
                t[i] |= 1 << k;
            }
            k += 1;
        }
        i += 1;
    }
    t
}

#[inline]
fn masks(class: Class) -> Masks {
    match class {
        Class::Value => Masks {
            rest: 1,
            first: 1 << 1,
        },
        Class::Name => Masks {
            rest: 1 << 2,
            first: 1 << 3,
        },
        Class::Key => Masks {
            rest: 1 << 4,
            first: 1 << 5,
        },
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Cuts `s` to at most `limit` bytes at a character boundary; returns whether it was cut.
fn truncate(s: &str, limit: usize) -> (&str, bool) {
    if s.len() <= limit {
        return (s, false);
    }
    let mut end = limit;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    (s.get(..end).unwrap_or(""), true)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of the word equals `b`.
#[inline(always)]
fn has_byte(x: u64, b: u8) -> bool {
    let y = x ^ (LO * u64::from(b));
    y.wrapping_sub(LO) & !y & HI != 0
}

/// Whether any byte of `bytes` (after the first, which the caller checks) needs escaping.
/// Eight bytes at a time: a word is clean when no byte is below 0x21 (controls and space),
/// 0x7F, `%` or `;` (and, for keys, `=`, `#`, `~`, `!`). Non-ASCII bytes are all ≥ 0x80 and
/// never escaped.
#[inline]
fn any_escaped(bytes: &[u8], class: Class, t: Masks) -> bool {
    let rest = bytes.get(1..).unwrap_or_default();
    let mut chunks = rest.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        // Bytes below 0x21 that are ASCII (high bit clear): (x - 0x21..) & !x & 0x80...
        let low = x.wrapping_sub(LO * 0x21) & !x & HI;
        let mut hit = low != 0 || has_byte(x, 0x7f) || has_byte(x, b'%') || has_byte(x, b';');
        if class == Class::Key {
            hit = hit
                || has_byte(x, b'=')
                || has_byte(x, b'#')
                || has_byte(x, b'~')
                || has_byte(x, b'!');
        }
        if hit {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| ESCAPE[b as usize] & t.rest != 0)
}

/// Appends `s` escaped for `class`, cut to `limit` bytes with the `%*` marker when longer.
///
/// Inlined: most names, keys and values are short and need no escaping, and at each call site
/// the class is a constant, so the check is a few word operations and one copy. Strings that
/// need escaping or cutting take the out-of-line path.
#[inline]
pub(crate) fn write_escaped(buf: &mut Vec<u8>, s: &str, class: Class, limit: usize) {
    let bytes = s.as_bytes();
    if bytes.len() <= limit && is_clean(bytes, class) {
        buf.extend_from_slice(bytes);
    } else {
        write_escaped_slow(buf, s, class, limit);
    }
}

/// Whether `bytes` needs no escaping at all for `class`.
#[inline]
fn is_clean(bytes: &[u8], class: Class) -> bool {
    let t = masks(class);
    match bytes.first() {
        None => true,
        Some(&b0) => ESCAPE[b0 as usize] & t.first == 0 && !any_escaped(bytes, class, t),
    }
}

/// [`write_escaped`] for strings with bytes to escape or longer than `limit`.
#[inline(never)]
fn write_escaped_slow(buf: &mut Vec<u8>, s: &str, class: Class, limit: usize) {
    let (s, cut) = truncate(s, limit);
    let bytes = s.as_bytes();
    let t = masks(class);
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = if i == 0 {
            ESCAPE[b as usize] & t.first != 0
        } else {
            ESCAPE[b as usize] & t.rest != 0
        };
        if esc {
            buf.extend_from_slice(&bytes[run..i]);
            buf.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            run = i + 1;
        }
    }
    buf.extend_from_slice(&bytes[run..]);
    if cut {
        buf.extend_from_slice(b"%*");
    }
}

/// Appends the decimal form of `n`.
#[inline]
pub(crate) fn write_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the decimal form of `n`, with `-` when negative.
#[inline]
pub(crate) fn write_i64(buf: &mut Vec<u8>, n: i64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A fixed stack buffer for `core::fmt` output (no allocation).
struct StackText {
    bytes: [u8; 40],
    len: usize,
}

impl core::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends `x` as ECMAScript `Number.prototype.toString` would (shortest round-trip digits),
/// with `nan`, `inf` and `-inf` for the non-finite values.
pub(crate) fn write_f64(buf: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        buf.extend_from_slice(b"nan");
        return;
    }
    if x.is_infinite() {
        buf.extend_from_slice(if x > 0.0 { b"inf" } else { b"-inf" });
        return;
    }
    if x == 0.0 {
        buf.push(b'0');
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e<exp>`.
    let mut text = StackText {
        bytes: [0; 40],
        len: 0,
    };
    if write!(text, "{:e}", x.abs()).is_err() {
        buf.extend_from_slice(b"nan");
        return;
    }
    let t = &text.bytes[..text.len];
    let e_pos = t.iter().position(|&c| c == b'e').unwrap_or(t.len());
    let mut digits = [0u8; 24];
    let mut k = 0;
    for &c in &t[..e_pos] {
        if c.is_ascii_digit() && k < digits.len() {
            digits[k] = c;
            k += 1;
        }
    }
    let digits = &digits[..k];
    let exp: i32 = core::str::from_utf8(t.get(e_pos + 1..).unwrap_or(b"0"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let n = exp + 1;
    let k = k as i32;
    if x < 0.0 {
        buf.push(b'-');
    }
    if k <= n && n <= 21 {
        buf.extend_from_slice(digits);
        buf.extend(core::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        buf.extend_from_slice(int);
        buf.push(b'.');
        buf.extend_from_slice(frac);
    } else if -6 < n && n <= 0 {
        buf.extend_from_slice(b"0.");
        buf.extend(core::iter::repeat_n(b'0', (-n) as usize));
        buf.extend_from_slice(digits);
    } else {
        buf.push(digits[0]);
        if k > 1 {
            buf.push(b'.');
            buf.extend_from_slice(&digits[1..]);
        }
        buf.push(b'e');
        buf.push(if n > 0 { b'+' } else { b'-' });
        write_u64(buf, u64::from((n - 1).unsigned_abs()));
    }
}

/// Appends ` <key><sep><value>` (an attribute field; `prefix` is `b""` or `b"+"`).
#[inline]
fn write_attr_field(buf: &mut Vec<u8>, prefix: &[u8], key: &str, value: Value<'_>) {
    buf.push(b' ');
    buf.extend_from_slice(prefix);
    let key = if key.is_empty() { "_" } else { key };
    write_escaped(buf, key, Class::Key, MAX_KEY);
    match value {
        Value::Str(s) => {
            buf.push(b'=');
            write_escaped(buf, s, Class::Value, MAX_VALUE);
        }
        Value::Int(i) => {
            buf.push(b'#');
            write_i64(buf, i);
        }
        Value::Float(f) => {
            buf.push(b'~');
            write_f64(buf, f);
        }
        Value::Bool(b) => {
            buf.extend_from_slice(if b { b"!t" } else { b"!f" });
        }
    }
}

/// Appends ` *<letter>=<value>`.
fn write_special(buf: &mut Vec<u8>, letter: u8, value: &str) {
    buf.extend_from_slice(&[b' ', b'*', letter, b'=']);
    write_escaped(buf, value, Class::Value, MAX_VALUE);
}

/// Appends ` *<letter>#<n>` when `n > 0`.
fn write_count(buf: &mut Vec<u8>, letter: u8, n: u32) {
    if n > 0 {
        buf.extend_from_slice(&[b' ', b'*', letter, b'#']);
        write_u64(buf, n.into());
    }
}

/// Appends the service override field ` *s=<name>` (for a tracer's constant suffix).
pub fn write_service(buf: &mut Vec<u8>, service: &str) {
    write_special(buf, b's', service);
}

/// Appends a resource attribute field ` +key=value` (for a tracer's constant suffix).
#[inline]
pub fn write_resource(buf: &mut Vec<u8>, key: &str, value: Value<'_>) {
    write_attr_field(buf, b"+", key, value);
}

/// Appends a string resource attribute field ` +key=value`; unlike [`write_resource`] it never
/// links float formatting into the binary.
pub fn write_resource_str(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(b" +");
    write_escaped(
        buf,
        if key.is_empty() { "_" } else { key },
        Class::Key,
        MAX_KEY,
    );
    buf.push(b'=');
    write_escaped(buf, value, Class::Value, MAX_VALUE);
}

fn write_flags(buf: &mut Vec<u8>, kind: SpanKind, status: StatusCode) {
    if let Some(l) = kind.letter() {
        buf.push(l);
    }
    if let Some(l) = status.letter() {
        buf.push(l);
    }
}

/// The fixed part of a span: everything before the fields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpanHead<'a> {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id, `None` for a root span.
    pub parent: Option<SpanId>,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Span kind.
    pub kind: SpanKind,
    /// Status code (the message travels separately).
    pub status: StatusCode,
    /// Span name.
    pub name: &'a str,
}

/// Upper bound of the bytes a span record needs besides its fields: marker, ids, times, flags,
/// name, request id and the constant suffix. Strings count three bytes per byte (all escaped),
/// which avoids scanning them on the hot path at the price of a slightly smaller field budget.
pub fn fixed_len(name: &str, request_id: Option<&str>, suffix_len: usize) -> usize {
    // "SPLN1 " + 44 ids + " " + 20 digits + " " + 20 digits + 2 flags + " " + name
    PREFIX.len()
        + 44
        + 1
        + 20
        + 1
        + 22
        + 1
        + 3 * name.len().min(MAX_NAME)
        + 2
        + request_id.map_or(0, |r| 4 + 3 * r.len().min(MAX_VALUE) + 2)
        + suffix_len
}

/// The fields of one span (attributes, links, events and their counts), built up while the span
/// is open. Reusable: [`SpanEncoder::reset`] keeps the buffers' capacity.
#[derive(Debug, Default, Clone)]
pub struct SpanEncoder {
    attrs: Vec<u8>,
    tail: Vec<u8>,
    n_attrs: usize,
    n_events: usize,
    n_links: usize,
    /// Attributes on the current event or link; `None` when the current event was dropped.
    target_attrs: Option<usize>,
    dropped_attrs: u32,
    dropped_events: u32,
    dropped_links: u32,
    budget: usize,
}

impl SpanEncoder {
    /// An empty encoder with a budget for a span whose fixed part is 256 bytes.
    pub fn new() -> Self {
        let mut e = Self::default();
        e.reset(256);
        e
    }

    /// Clears the fields and sets the byte budget for a span whose fixed part (see
    /// [`fixed_len`]) is `fixed_len` bytes long.
    pub fn reset(&mut self, fixed_len: usize) {
        self.attrs.clear();
        self.tail.clear();
        self.n_attrs = 0;
        self.n_events = 0;
        self.n_links = 0;
        self.target_attrs = None;
        self.dropped_attrs = 0;
        self.dropped_events = 0;
        self.dropped_links = 0;
        self.budget = MAX_LINE.saturating_sub(RESERVE + fixed_len);
    }

    fn used(&self) -> usize {
        self.attrs.len() + self.tail.len()
    }

    /// Adds a span attribute (OpenTracing `setTag`). Beyond the limits it is dropped and counted.
    #[inline]
    pub fn attr(&mut self, key: &str, value: Value<'_>) {
        if self.n_attrs >= MAX_ATTRIBUTES {
            self.dropped_attrs += 1;
            return;
        }
        let mark = self.attrs.len();
        write_attr_field(&mut self.attrs, b"", key, value);
        if self.used() > self.budget {
            self.attrs.truncate(mark);
            self.dropped_attrs += 1;
            return;
        }
        self.n_attrs += 1;
    }

    /// Starts an event `offset_us` after the span start; [`SpanEncoder::target_attr`] adds its
    /// fields. Returns whether the event was kept.
    pub fn event(&mut self, offset_us: i64, name: &str) -> bool {
        if self.n_events >= MAX_EVENTS {
            self.dropped_events += 1;
            self.target_attrs = None;
            return false;
        }
        let mark = self.tail.len();
        self.tail.extend_from_slice(b" @");
        write_i64(&mut self.tail, offset_us);
        self.tail.push(b'=');
        write_escaped(&mut self.tail, name, Class::Value, MAX_NAME);
        if self.used() > self.budget {
            self.tail.truncate(mark);
            self.dropped_events += 1;
            self.target_attrs = None;
            return false;
        }
        self.n_events += 1;
        self.target_attrs = Some(0);
        true
    }

    /// Adds a link (OpenTracing `followsFrom`); [`SpanEncoder::target_attr`] adds its
    /// attributes. Links must be added before the first event. Returns whether it was kept.
    pub fn link(&mut self, trace_id: TraceId, span_id: SpanId) -> bool {
        if self.n_links >= MAX_LINKS {
            self.dropped_links += 1;
            self.target_attrs = None;
            return false;
        }
        let mark = self.tail.len();
        self.tail.extend_from_slice(b" ^");
        self.tail.extend_from_slice(&trace_id.to_b64());
        self.tail.extend_from_slice(&span_id.to_b64());
        if self.used() > self.budget {
            self.tail.truncate(mark);
            self.dropped_links += 1;
            self.target_attrs = None;
            return false;
        }
        self.n_links += 1;
        self.target_attrs = Some(0);
        true
    }

    /// Adds an attribute to the event or link added last. Ignored when that event or link was
    /// dropped (its attributes are not counted twice).
    #[inline]
    pub fn target_attr(&mut self, key: &str, value: Value<'_>) {
        let Some(n) = self.target_attrs else { return };
        if n >= MAX_ATTRIBUTES {
            self.dropped_attrs += 1;
            return;
        }
        let mark = self.tail.len();
        write_attr_field(&mut self.tail, b"", key, value);
        if self.used() > self.budget {
            self.tail.truncate(mark);
            self.dropped_attrs += 1;
            return;
        }
        self.target_attrs = Some(n + 1);
    }

    /// Number of attributes kept on the span itself.
    pub fn attr_count(&self) -> usize {
        self.n_attrs
    }

    /// Appends the fields in canonical order: attributes, links, events, `*m=`, `*r=`, the
    /// constant suffix (`*s=`, `+…`), then the drop counters.
    fn write_fields(
        &self,
        out: &mut Vec<u8>,
        status_message: Option<&str>,
        request_id: Option<&str>,
        suffix: &[u8],
        drop_all: bool,
    ) {
        let (da, de, dl) = if drop_all {
            // Last resort when the fixed part alone is too long: keep the span, drop its fields.
            (
                self.dropped_attrs + self.n_attrs as u32,
                self.dropped_events + self.n_events as u32,
                self.dropped_links + self.n_links as u32,
            )
        } else {
            out.extend_from_slice(&self.attrs);
            if !self.tail.is_empty() {
                out.extend_from_slice(&self.tail);
            }
            (self.dropped_attrs, self.dropped_events, self.dropped_links)
        };
        if let Some(m) = status_message {
            write_special(out, b'm', m);
        }
        if let Some(r) = request_id {
            write_special(out, b'r', r);
        }
        if !suffix.is_empty() {
            out.extend_from_slice(suffix);
        }
        write_count(out, b'a', da);
        write_count(out, b'e', de);
        write_count(out, b'l', dl);
    }

    /// Appends one complete span record (without newline) to `out`. `suffix` holds the
    /// tracer's constant fields (`*s=` and `+` resource attributes, see [`write_service`] and
    /// [`write_resource`]).
    pub fn write_record(
        &self,
        out: &mut Vec<u8>,
        head: &SpanHead<'_>,
        status_message: Option<&str>,
        request_id: Option<&str>,
        suffix: &[u8],
    ) {
        let start = out.len();
        out.reserve(128 + head.name.len() + self.attrs.len() + self.tail.len() + suffix.len());
        for drop_all in [false, true] {
            out.truncate(start);
            write_head(out, head);
            write_escaped(out, head.name, Class::Name, MAX_NAME);
            self.write_fields(out, status_message, request_id, suffix, drop_all);
            out.push(b';');
            if out.len() - start <= MAX_LINE {
                break;
            }
        }
    }
}

/// Appends everything before the name: marker, ids, start, duration and flags, and the space.
/// Written straight into `out` (the caller reserved room): fixed-size pieces compile to plain
/// stores, with no stack buffer copied afterwards.
#[inline]
fn write_head(out: &mut Vec<u8>, head: &SpanHead<'_>) {
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(&head.trace_id.to_b64());
    out.extend_from_slice(&head.span_id.to_b64());
    if let Some(p) = head.parent {
        out.extend_from_slice(&p.to_b64());
    }
    out.push(b' ');
    write_u64(out, head.start_us);
    out.push(b' ');
    write_u64(out, head.duration_us);
    write_flags(out, head.kind, head.status);
    out.push(b' ');
}

/// Appends an *open* record (FORMAT.md §3, flag `u`): the span `head` has started. Duration,
/// status and fields are not written.
pub fn write_open_record(
    out: &mut Vec<u8>,
    head: &SpanHead<'_>,
    request_id: Option<&str>,
    suffix: &[u8],
) {
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(&head.trace_id.to_b64());
    out.extend_from_slice(&head.span_id.to_b64());
    if let Some(p) = head.parent {
        out.extend_from_slice(&p.to_b64());
    }
    out.push(b' ');
    write_u64(out, head.start_us);
    out.extend_from_slice(b" 0");
    if let Some(l) = head.kind.letter() {
        out.push(l);
    }
    out.extend_from_slice(b"u ");
    write_escaped(out, head.name, Class::Name, MAX_NAME);
    if let Some(r) = request_id {
        write_special(out, b'r', r);
    }
    out.extend_from_slice(suffix);
    out.push(b';');
}

/// Builds one batch record (FORMAT.md §4) from spans of one trace.
#[derive(Debug, Default, Clone)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    trace_id: Option<TraceId>,
    base_us: u64,
    count: usize,
    prev_parent: Option<Option<SpanId>>,
    prev_name: (usize, usize),
    prev_fields: (usize, usize),
}

impl BatchEncoder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no entry has been added since the last [`BatchEncoder::take`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The trace the current batch belongs to.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace_id
    }

    /// Starts a batch: header with trace id, time base, request id and constant suffix.
    pub fn begin(
        &mut self,
        trace_id: TraceId,
        base_us: u64,
        request_id: Option<&str>,
        suffix: &[u8],
    ) {
        self.buf.clear();
        self.count = 0;
        self.prev_parent = None;
        self.trace_id = Some(trace_id);
        self.base_us = base_us;
        self.buf.extend_from_slice(PREFIX);
        self.buf.push(b'+');
        self.buf.extend_from_slice(&trace_id.to_b64());
        self.buf.push(b' ');
        write_u64(&mut self.buf, base_us);
        if let Some(r) = request_id {
            write_special(&mut self.buf, b'r', r);
        }
        self.buf.extend_from_slice(suffix);
    }

    /// Adds a span. Returns `false`, leaving the batch unchanged, when the batch has no room
    /// (line length or span count): take the batch, begin a new one and push again. A span that
    /// does not fit even an empty batch is still added (the line then exceeds the bound only by
    /// that span's own size, which [`SpanEncoder`]'s budget keeps below `MAX_LINE`).
    /// `request_id` is written into the entry (`*r=`), for spans whose request id the batch
    /// header does not carry.
    pub fn push(
        &mut self,
        head: &SpanHead<'_>,
        fields: &SpanEncoder,
        status_message: Option<&str>,
        request_id: Option<&str>,
    ) -> bool {
        if self.count >= MAX_BATCH_SPANS {
            return false;
        }
        let mark = self.buf.len();
        let b = &mut self.buf;
        b.extend_from_slice(b" |");
        b.extend_from_slice(&head.span_id.to_b64());
        b.push(b' ');
        match head.parent {
            _ if self.prev_parent == Some(head.parent) => b.push(b'"'),
            None => b.push(b'-'),
            Some(p) => b.extend_from_slice(&p.to_b64()),
        }
        b.push(b' ');
        // Offsets are signed: spans finish child-first, so later entries may start earlier.
        write_i64(b, head.start_us as i64 - self.base_us as i64);
        b.push(b' ');
        write_u64(b, head.duration_us);
        write_flags(b, head.kind, head.status);
        b.push(b' ');
        let name_start = b.len();
        write_escaped(b, head.name, Class::Name, MAX_NAME);
        let name_end = b.len();
        let (pn0, pn1) = self.prev_name;
        let same_name = self.count > 0 && b[name_start..name_end] == b[pn0..pn1];
        let name = if same_name {
            b.truncate(name_start);
            b.push(b'"');
            (pn0, pn1)
        } else {
            (name_start, name_end)
        };
        let fields_start = b.len();
        fields.write_fields(b, status_message, request_id, b"", false);
        let fields_end = b.len();
        let (pf0, pf1) = self.prev_fields;
        let same_fields = self.count > 0
            && fields_end > fields_start
            && b[fields_start..fields_end] == b[pf0..pf1];
        let field_range = if same_fields {
            b.truncate(fields_start);
            b.extend_from_slice(b" \"");
            (pf0, pf1)
        } else {
            (fields_start, fields_end)
        };
        if self.count > 0 && b.len() + 1 > MAX_LINE {
            b.truncate(mark);
            return false;
        }
        self.prev_name = name;
        self.prev_fields = field_range;
        self.prev_parent = Some(head.parent);
        self.count += 1;
        true
    }

    /// Appends the finished record (without newline) to `out` and empties the batch. Does
    /// nothing when the batch is empty.
    pub fn take(&mut self, out: &mut Vec<u8>) {
        if self.count > 0 {
            out.extend_from_slice(&self.buf);
            out.push(b';');
        }
        self.buf.clear();
        self.count = 0;
        self.trace_id = None;
        self.prev_parent = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut b = Vec::new();
        write_f64(&mut b, x);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn floats_follow_ecmascript_number_to_string() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123456.789, "123456.789"),
            (-0.0, "0"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (x, want) in cases {
            assert_eq!(f(x), want, "{x:e}");
        }
    }

    #[test]
    fn escaping_follows_the_class_rules() {
        let esc = |s: &str, c| {
            let mut b = Vec::new();
            write_escaped(&mut b, s, c, 512);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(esc("a b;c%d\n\t", Class::Value), "a%20b%3Bc%25d%0A%09");
        assert_eq!(esc("k=v#~!", Class::Value), "k=v#~!");
        assert_eq!(esc("k=v#~!", Class::Key), "k%3Dv%23%7E%21");
        assert_eq!(esc("@key", Class::Key), "%40key");
        assert_eq!(esc("_key.x-y", Class::Key), "_key.x-y");
        assert_eq!(esc("|x\"", Class::Name), "%7Cx\"");
        assert_eq!(esc("\"", Class::Name), "%22");
        assert_eq!(esc("é😀", Class::Value), "é😀");
    }

    #[test]
    fn truncation_cuts_at_char_boundary_and_marks() {
        let mut b = Vec::new();
        write_escaped(&mut b, "aé", Class::Value, 2);
        assert_eq!(b, b"a%*");
    }

    #[test]
    fn integers() {
        let mut b = Vec::new();
        write_i64(&mut b, i64::MIN);
        b.push(b' ');
        write_u64(&mut b, 0);
        b.push(b' ');
        write_u64(&mut b, u64::MAX);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "-9223372036854775808 0 18446744073709551615"
        );
    }
}
