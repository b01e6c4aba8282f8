//! Reading records (FORMAT.md §3–§6) without allocating.
//!
//! [`decode`] validates a whole record up front, so a malformed line is rejected with one stable
//! reason and the accessors that follow cannot fail. [`SpanLine`] borrows from the input;
//! strings stay escaped ([`EscStr`]) until someone asks for their text, and attributes, events
//! and links are lazy iterators over the record's text.

use super::{SpanId, SpanKind, StatusCode, TraceId, MARKER, SPAN_ID_B64_LEN, TRACE_ID_B64_LEN};
use std::borrow::Cow;

/// Why a line that carries the marker could not be read (FORMAT.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The line does not start with `SPLN<digits> `: not a span line at all.
    NoMarker,
    /// A version this decoder does not know.
    UnsupportedVersion,
    /// No `;` terminator: the line was cut short.
    Truncated,
    /// The id token is not canonical base64url of the right length.
    BadIds,
    /// An all-zero trace or span id.
    ZeroId,
    /// A start time, duration or offset that is not a well-formed integer.
    BadTime,
    /// Flag letters that are not lowercase ASCII letters.
    BadFlags,
    /// `%` not followed by two hex digits (or `*` at the end).
    BadEscape,
    /// Escapes that decode to invalid UTF-8.
    BadUtf8,
    /// A field with no type separator, or an empty token.
    BadField,
    /// An integer or float value that does not parse.
    BadNumber,
    /// A boolean other than `t` or `f`.
    BadBool,
    /// An attribute with an empty key.
    EmptyKey,
    /// A batch without entries, or a misplaced `"`.
    BadBatch,
    /// A raw control character inside the record.
    ControlChar,
    /// A piece of a line longer than Lambda's split point (reported by the converter, which
    /// knows the event size; the decoder itself says `Truncated`).
    Fragment,
    /// The marker is in the message, but not where an emitter puts it (at the start, after the
    /// runtime's own prefix): text that quotes or forges a span line (reported by the
    /// converter, FORMAT.md "Trust model").
    MarkerNotAtStart,
    /// The line held bytes that were not UTF-8 and were replaced (U+FFFD) when the log was
    /// read (reported by the converter when its source says the text was converted lossily).
    LossyUtf8,
}

impl DecodeErrorKind {
    /// The stable reason code used in counters, summaries and the conformance vectors.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoMarker => "no_marker",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Truncated => "truncated",
            Self::BadIds => "bad_ids",
            Self::ZeroId => "zero_id",
            Self::BadTime => "bad_time",
            Self::BadFlags => "bad_flags",
            Self::BadEscape => "bad_escape",
            Self::BadUtf8 => "bad_utf8",
            Self::BadField => "bad_field",
            Self::BadNumber => "bad_number",
            Self::BadBool => "bad_bool",
            Self::EmptyKey => "empty_key",
            Self::BadBatch => "bad_batch",
            Self::ControlChar => "control_char",
            Self::Fragment => "fragment",
            Self::MarkerNotAtStart => "marker_not_at_start",
            Self::LossyUtf8 => "lossy_utf8",
        }
    }
}

/// A line that could not be decoded, with the byte offset of the offending token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed span line ({}) at byte {offset}", kind.code())]
pub struct DecodeError {
    /// What is wrong.
    pub kind: DecodeErrorKind,
    /// Byte offset into the line where the problem was found.
    pub offset: usize,
}

type Result<T> = core::result::Result<T, DecodeError>;

fn err<T>(kind: DecodeErrorKind, offset: usize) -> Result<T> {
    Err(DecodeError { kind, offset })
}

/// Finds a span line inside a log message: the byte offset of the first `SPLN<digit>` that starts
/// the message or follows a space or tab. Lines of any version are found, so that a converter
/// can report versions it does not know.
///
/// This is the permissive search ("anywhere"). It does not say whether an emitter wrote the
/// line: text that merely quotes one is found too. The converter accepts a marker only at the
/// start of the message, after the runtime's own prefix, unless told otherwise
/// (`convert::parse::MarkerPlacement`, FORMAT.md "Trust model").
pub fn find_marker(message: &str) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARKER.as_bytes()));
    let bytes = message.as_bytes();
    for pos in FINDER.find_iter(bytes) {
        let before_ok = pos == 0 || matches!(bytes[pos - 1], b' ' | b'\t');
        let digit_ok = bytes
            .get(pos + MARKER.len())
            .is_some_and(u8::is_ascii_digit);
        if before_ok && digit_ok {
            return Some(pos);
        }
    }
    None
}

/// An escaped string borrowed from a record. Validated: escapes are well formed and decode to
/// UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EscStr<'a>(&'a str);

impl<'a> EscStr<'a> {
    /// The text as it appears in the line.
    pub fn raw(&self) -> &'a str {
        self.0
    }

    /// Whether the emitter truncated this string (it ends with the `%*` marker).
    pub fn is_truncated(&self) -> bool {
        self.0.ends_with("%*")
    }

    /// The unescaped text, without the truncation marker. Borrows when nothing is escaped.
    pub fn text(&self) -> Cow<'a, str> {
        let raw = self.0.strip_suffix("%*").unwrap_or(self.0);
        if !raw.contains('%') {
            return Cow::Borrowed(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            // Unreachable for validated strings; keep the raw text rather than panic.
            Err(_) => Cow::Borrowed(raw),
        }
    }

    /// The length in bytes of [`EscStr::write_text`]'s output.
    pub fn text_len(&self) -> usize {
        let (raw, cut) = match self.0.strip_suffix("%*") {
            Some(r) => (r, true),
            None => (self.0, false),
        };
        let escapes = memchr::memchr_iter(b'%', raw.as_bytes()).count();
        raw.len() - 2 * escapes + if cut { '…'.len_utf8() } else { 0 }
    }

    /// Appends the unescaped text to `out`, with a visible `…` when the emitter truncated it:
    /// what [`EscStr::text`] gives, without an allocation of its own.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let (raw, cut) = match self.0.strip_suffix("%*") {
            Some(r) => (r, true),
            None => (self.0, false),
        };
        let b = raw.as_bytes();
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'%', &b[i..]) {
            let at = i + p;
            out.extend_from_slice(&b[i..at]);
            match (hex(b.get(at + 1)), hex(b.get(at + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i = at + 3;
                }
                // Unreachable for validated strings: keep the byte as it is.
                _ => {
                    out.push(b'%');
                    i = at + 1;
                }
            }
        }
        out.extend_from_slice(&b[i..]);
        if cut {
            out.extend_from_slice("…".as_bytes());
        }
    }

    /// Validates escapes and UTF-8; `offset` is the string's position in the line.
    fn check(raw: &'a str, offset: usize) -> Result<Self> {
        let b = raw.as_bytes();
        let mut high = false;
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'%', &b[i..]) {
            let at = i + p;
            match (b.get(at + 1), b.get(at + 2)) {
                (Some(b'*'), None) => break,
                (h, l) => match (hex(h), hex(l)) {
                    (Some(h), Some(_)) => high |= h >= 8,
                    _ => return err(DecodeErrorKind::BadEscape, offset + at),
                },
            }
            i = at + 3;
        }
        let s = EscStr(raw);
        if high && matches!(s.text(), Cow::Borrowed(_)) {
            return err(DecodeErrorKind::BadUtf8, offset);
        }
        Ok(s)
    }
}

fn hex(c: Option<&u8>) -> Option<u8> {
    let c = *c?;
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Strict unsigned decimal: no sign, no leading zeros.
fn parse_u64(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || (b.len() > 1 && b[0] == b'0') || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse().ok()
}

/// Strict signed decimal: optional `-`, no leading zeros.
fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    parse_u64(digits)?;
    s.parse().ok()
}

fn parse_f64(s: &str) -> Option<f64> {
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ if s
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
            && s.bytes().any(|c| c.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// A typed attribute value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrValue<'a> {
    /// `=`
    Str(EscStr<'a>),
    /// `#`
    Int(i64),
    /// `~`
    Float(f64),
    /// `!`
    Bool(bool),
}

/// An attribute: span, event, link or resource.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attr<'a> {
    /// The key, escaped.
    pub key: EscStr<'a>,
    /// The value.
    pub value: AttrValue<'a>,
}

/// One field token, classified.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field<'a> {
    Attr(Attr<'a>),
    Resource(Attr<'a>),
    Event(i64, EscStr<'a>),
    Link(TraceId, SpanId),
    Special(u8, Special<'a>),
    /// A reserved token of a future version, or an unknown special.
    Skip,
    /// `"` (batch fields ditto).
    Ditto,
    /// A token starting with `|` (next batch entry).
    Entry,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Special<'a> {
    Str(EscStr<'a>),
    Count(u32),
}

fn parse_attr(t: &str, offset: usize) -> Result<Attr<'_>> {
    let b = t.as_bytes();
    let Some(sep) = b
        .iter()
        .position(|&c| matches!(c, b'=' | b'#' | b'~' | b'!'))
    else {
        return err(DecodeErrorKind::BadField, offset);
    };
    if sep == 0 {
        return err(DecodeErrorKind::EmptyKey, offset);
    }
    let key = EscStr::check(&t[..sep], offset)?;
    let v = &t[sep + 1..];
    let voff = offset + sep + 1;
    let value = match b[sep] {
        b'=' => AttrValue::Str(EscStr::check(v, voff)?),
        b'#' => AttrValue::Int(parse_i64(v).ok_or(DecodeError {
            kind: DecodeErrorKind::BadNumber,
            offset: voff,
        })?),
        b'~' => AttrValue::Float(parse_f64(v).ok_or(DecodeError {
            kind: DecodeErrorKind::BadNumber,
            offset: voff,
        })?),
        _ => match v {
            "t" => AttrValue::Bool(true),
            "f" => AttrValue::Bool(false),
            _ => return err(DecodeErrorKind::BadBool, voff),
        },
    };
    Ok(Attr { key, value })
}

fn parse_field(t: &str, offset: usize, in_batch: bool) -> Result<Field<'_>> {
    let Some(&first) = t.as_bytes().first() else {
        return err(DecodeErrorKind::BadField, offset);
    };
    Ok(match first {
        b'@' => {
            let Some((off, name)) = t[1..].split_once('=') else {
                return err(DecodeErrorKind::BadField, offset);
            };
            let off = parse_i64(off).ok_or(DecodeError {
                kind: DecodeErrorKind::BadTime,
                offset: offset + 1,
            })?;
            Field::Event(off, EscStr::check(name, offset + 2)?)
        }
        b'^' => {
            let ids = &t.as_bytes()[1..];
            if ids.len() != TRACE_ID_B64_LEN + SPAN_ID_B64_LEN {
                return err(DecodeErrorKind::BadIds, offset);
            }
            let (tr, sp) = ids.split_at(TRACE_ID_B64_LEN);
            let (Some(tr), Some(sp)) = (TraceId::from_b64(tr), SpanId::from_b64(sp)) else {
                return err(DecodeErrorKind::BadIds, offset);
            };
            if tr.is_zero() || sp.is_zero() {
                return err(DecodeErrorKind::ZeroId, offset);
            }
            Field::Link(tr, sp)
        }
        b'*' => {
            let b = t.as_bytes();
            match (b.get(1), b.get(2)) {
                (Some(&l @ (b's' | b'r' | b'm')), Some(b'=')) => {
                    Field::Special(l, Special::Str(EscStr::check(&t[3..], offset + 3)?))
                }
                (Some(&l @ (b'a' | b'e' | b'l')), Some(b'#')) => {
                    let n = parse_u64(&t[3..])
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(DecodeError {
                            kind: DecodeErrorKind::BadNumber,
                            offset: offset + 3,
                        })?;
                    Field::Special(l, Special::Count(n))
                }
                (Some(b's' | b'r' | b'm' | b'a' | b'e' | b'l'), _) => {
                    return err(DecodeErrorKind::BadField, offset)
                }
                _ => Field::Skip,
            }
        }
        b'+' => Field::Resource(parse_attr(&t[1..], offset + 1)?),
        b'"' if in_batch && t.len() == 1 => Field::Ditto,
        b'|' if in_batch => Field::Entry,
        b'_' | b'.' | b'%' | b'=' | b'#' | b'~' | b'!' => Field::Attr(parse_attr(t, offset)?),
        c if c.is_ascii_punctuation() => Field::Skip,
        _ => Field::Attr(parse_attr(t, offset)?),
    })
}

/// [`parse_field`] for a token of a record [`decode`] already validated: the same
/// classification without checking escapes and numbers again (the accessors' hot path).
fn parse_field_trusted(t: &str) -> Field<'_> {
    fn attr(t: &str) -> Option<Attr<'_>> {
        let b = t.as_bytes();
        let sep = b
            .iter()
            .position(|&c| matches!(c, b'=' | b'#' | b'~' | b'!'))?;
        let key = EscStr(&t[..sep]);
        let v = &t[sep + 1..];
        let value = match b[sep] {
            b'=' => AttrValue::Str(EscStr(v)),
            b'#' => AttrValue::Int(v.parse().ok()?),
            b'~' => AttrValue::Float(parse_f64(v)?),
            _ => AttrValue::Bool(v == "t"),
        };
        Some(Attr { key, value })
    }
    let Some(&first) = t.as_bytes().first() else {
        return Field::Skip;
    };
    match first {
        b'@' | b'^' | b'*' => parse_field(t, 0, false).unwrap_or(Field::Skip),
        b'+' => attr(&t[1..]).map_or(Field::Skip, Field::Resource),
        b'_' | b'.' | b'%' | b'=' | b'#' | b'~' | b'!' => attr(t).map_or(Field::Skip, Field::Attr),
        c if c.is_ascii_punctuation() => Field::Skip,
        _ => attr(t).map_or(Field::Skip, Field::Attr),
    }
}

/// Space-separated tokens with their byte offsets relative to `base`.
#[derive(Clone, Debug)]
struct Tokens<'a> {
    rest: &'a str,
    offset: usize,
    done: bool,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str, offset: usize) -> Self {
        Tokens {
            rest: s,
            offset,
            done: false,
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (&'a str, usize);
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.offset;
        match memchr::memchr(b' ', self.rest.as_bytes()) {
            Some(p) => {
                let tok = &self.rest[..p];
                self.rest = &self.rest[p + 1..];
                self.offset += p + 1;
                Some((tok, at))
            }
            None => {
                self.done = true;
                Some((self.rest, at))
            }
        }
    }
}

/// Specials found while validating a field list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Specials<'a> {
    service: Option<EscStr<'a>>,
    request_id: Option<EscStr<'a>>,
    status_message: Option<EscStr<'a>>,
    dropped: Dropped,
}

/// Counts of fields the emitter dropped to stay within the limits (`*a#`, `*e#`, `*l#`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Attributes (of the span, its events and links).
    pub attributes: u32,
    /// Events.
    pub events: u32,
    /// Links.
    pub links: u32,
}

impl<'a> Specials<'a> {
    fn apply(&mut self, letter: u8, s: Special<'a>) {
        match (letter, s) {
            (b's', Special::Str(v)) => self.service = Some(v),
            (b'r', Special::Str(v)) => self.request_id = Some(v),
            (b'm', Special::Str(v)) => self.status_message = Some(v),
            (b'a', Special::Count(n)) => self.dropped.attributes = n,
            (b'e', Special::Count(n)) => self.dropped.events = n,
            (b'l', Special::Count(n)) => self.dropped.links = n,
            _ => {}
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record<'a> {
    /// One span (FORMAT.md §3).
    Span(SpanLine<'a>),
    /// Several spans of one trace (FORMAT.md §4).
    Batch(BatchLine<'a>),
}

impl<'a> Record<'a> {
    /// The spans of the record, in order.
    pub fn spans(&self) -> RecordSpans<'a> {
        match self {
            Record::Span(s) => RecordSpans::One(Some(s.clone())),
            Record::Batch(b) => RecordSpans::Batch(b.spans()),
        }
    }
}

/// Iterator over the spans of a [`Record`].
#[derive(Clone, Debug)]
pub enum RecordSpans<'a> {
    /// A span record.
    One(Option<SpanLine<'a>>),
    /// A batch record.
    Batch(BatchSpans<'a>),
}

impl<'a> Iterator for RecordSpans<'a> {
    type Item = SpanLine<'a>;
    fn next(&mut self) -> Option<SpanLine<'a>> {
        match self {
            RecordSpans::One(s) => s.take(),
            RecordSpans::Batch(b) => b.next(),
        }
    }
}

/// One span, borrowed from its line.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLine<'a> {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Kind.
    pub kind: SpanKind,
    /// Status code.
    pub status: StatusCode,
    /// Name.
    pub name: EscStr<'a>,
    /// Status message (`*m=`).
    pub status_message: Option<EscStr<'a>>,
    /// Service name override (`*s=`).
    pub service: Option<EscStr<'a>>,
    /// Lambda request id (`*r=`).
    pub request_id: Option<EscStr<'a>>,
    /// What the emitter dropped.
    pub dropped: Dropped,
    /// An *open* record (flag `u`): the span started and has not finished yet; a later record
    /// with the same ids supersedes it.
    pub open: bool,
    fields: &'a str,
    shared: &'a str,
}

impl<'a> SpanLine<'a> {
    fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        Tokens::new(self.fields, 0)
            .filter(|(t, _)| !t.is_empty())
            .map(|(t, o)| parse_field(t, o, false).unwrap_or(Field::Skip))
    }

    /// The span's own attributes.
    pub fn attributes(&self) -> impl Iterator<Item = Attr<'a>> + 'a {
        self.fields()
            .take_while(|f| !matches!(f, Field::Event(..) | Field::Link(..)))
            .filter_map(|f| match f {
                Field::Attr(a) => Some(a),
                _ => None,
            })
    }

    /// Events with their attributes, in order.
    pub fn events(&self) -> impl Iterator<Item = Event<'a>> + 'a {
        let fields = self.fields;
        Tokens::new(fields, 0).filter_map(move |(t, o)| match parse_field(t, o, false) {
            Ok(Field::Event(offset_us, name)) => Some(Event {
                offset_us,
                name,
                rest: fields.get(o + t.len() + 1..).unwrap_or(""),
            }),
            _ => None,
        })
    }

    /// Links with their attributes, in order.
    pub fn links(&self) -> impl Iterator<Item = Link<'a>> + 'a {
        let fields = self.fields;
        Tokens::new(fields, 0).filter_map(move |(t, o)| match parse_field(t, o, false) {
            Ok(Field::Link(trace_id, span_id)) => Some(Link {
                trace_id,
                span_id,
                rest: fields.get(o + t.len() + 1..).unwrap_or(""),
            }),
            _ => None,
        })
    }

    /// Resource attributes (`+` fields): the batch's, then the span's own.
    pub fn resource(&self) -> impl Iterator<Item = Attr<'a>> + 'a {
        let own = Tokens::new(self.fields, 0);
        Tokens::new(self.shared, 0)
            .chain(own)
            .filter_map(|(t, o)| match parse_field(t, o, false) {
                Ok(Field::Resource(a)) => Some(a),
                _ => None,
            })
    }
}

/// One field of a span, in line order, as [`SpanLine::field_refs`] hands them out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldRef<'a> {
    /// An attribute: the span's when it comes before any event or link, else the attribute of
    /// the event or link before it.
    Attr(Attr<'a>),
    /// A resource attribute (`+`).
    Resource(Attr<'a>),
    /// An event (`@`); the attributes up to the next event or link are its fields.
    Event {
        /// Microseconds after the span start.
        offset_us: i64,
        /// Event name.
        name: EscStr<'a>,
    },
    /// A link (`^`); the attributes up to the next event or link are its attributes.
    Link {
        /// Linked trace.
        trace_id: TraceId,
        /// Linked span.
        span_id: SpanId,
    },
}

impl<'a> SpanLine<'a> {
    /// Every field of the span's own token list in one pass (specials and skipped tokens left
    /// out), for readers that want attributes, events, links and resource fields at once.
    /// The batch's shared resource fields come first, as [`SpanLine::resource`] gives them.
    pub fn field_refs(&self) -> FieldRefs<'a> {
        FieldRefs {
            shared: Tokens::new(self.shared, 0),
            own: Tokens::new(self.fields, 0),
        }
    }
}

/// The iterator of [`SpanLine::field_refs`]; cloning it is cheap (two string slices), so a
/// reader can look ahead.
#[derive(Clone, Debug)]
pub struct FieldRefs<'a> {
    shared: Tokens<'a>,
    own: Tokens<'a>,
}

impl<'a> Iterator for FieldRefs<'a> {
    type Item = FieldRef<'a>;
    fn next(&mut self) -> Option<FieldRef<'a>> {
        for (t, _) in self.shared.by_ref() {
            if let Field::Resource(a) = parse_field_trusted(t) {
                return Some(FieldRef::Resource(a));
            }
        }
        for (t, _) in self.own.by_ref() {
            match parse_field_trusted(t) {
                Field::Attr(a) => return Some(FieldRef::Attr(a)),
                Field::Resource(a) => return Some(FieldRef::Resource(a)),
                Field::Event(offset_us, name) => return Some(FieldRef::Event { offset_us, name }),
                Field::Link(trace_id, span_id) => {
                    return Some(FieldRef::Link { trace_id, span_id })
                }
                _ => {}
            }
        }
        None
    }
}

/// Attributes that follow an event or link token, up to the next event or link.
fn trailing_attrs(rest: &str) -> impl Iterator<Item = Attr<'_>> + '_ {
    Tokens::new(rest, 0)
        .filter(|(t, _)| !t.is_empty())
        .map(|(t, o)| parse_field(t, o, false).unwrap_or(Field::Skip))
        .take_while(|f| !matches!(f, Field::Event(..) | Field::Link(..)))
        .filter_map(|f| match f {
            Field::Attr(a) => Some(a),
            _ => None,
        })
}

/// An event (`@` field).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event<'a> {
    /// Microseconds after the span start (may be negative).
    pub offset_us: i64,
    /// Event name.
    pub name: EscStr<'a>,
    rest: &'a str,
}

impl<'a> Event<'a> {
    /// The event's fields.
    pub fn attributes(&self) -> impl Iterator<Item = Attr<'a>> + 'a {
        trailing_attrs(self.rest)
    }
}

/// A link (`^` field).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link<'a> {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    rest: &'a str,
}

impl<'a> Link<'a> {
    /// The link's attributes.
    pub fn attributes(&self) -> impl Iterator<Item = Attr<'a>> + 'a {
        trailing_attrs(self.rest)
    }
}

/// A batch record: spans of one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchLine<'a> {
    /// The trace every entry belongs to.
    pub trace_id: TraceId,
    /// Time base, microseconds since the epoch.
    pub base_us: u64,
    /// Number of entries.
    pub len: usize,
    shared: &'a str,
    shared_specials: Specials<'a>,
    entries: &'a str,
    entries_offset: usize,
}

impl<'a> BatchLine<'a> {
    /// The spans, dittos resolved, batch fields applied.
    pub fn spans(&self) -> BatchSpans<'a> {
        BatchSpans {
            batch: self.clone(),
            tokens: Tokens::new(self.entries, self.entries_offset),
            pending: None,
            prev: None,
        }
    }
}

/// Iterator over a batch's spans.
#[derive(Clone, Debug)]
pub struct BatchSpans<'a> {
    batch: BatchLine<'a>,
    tokens: Tokens<'a>,
    pending: Option<(&'a str, usize)>,
    prev: Option<SpanLine<'a>>,
}

impl<'a> BatchSpans<'a> {
    fn next_entry(&mut self) -> Result<Option<SpanLine<'a>>> {
        let Some((first, off)) = self.pending.take().or_else(|| self.tokens.next()) else {
            return Ok(None);
        };
        let b = &self.batch;
        let Some(span_b64) = first.strip_prefix('|') else {
            return err(DecodeErrorKind::BadBatch, off);
        };
        let span_id = decode_span_id(span_b64.as_bytes(), off + 1)?;
        let prev = self.prev.as_ref();
        let (ptok, poff) = self.tokens.next().ok_or(DecodeError {
            kind: DecodeErrorKind::BadIds,
            offset: off,
        })?;
        let parent_span_id = match ptok {
            "\"" => {
                prev.ok_or(DecodeError {
                    kind: DecodeErrorKind::BadBatch,
                    offset: poff,
                })?
                .parent_span_id
            }
            "-" => None,
            p => Some(decode_span_id(p.as_bytes(), poff)?),
        };
        let (otok, ooff) = self.tokens.next().ok_or(DecodeError {
            kind: DecodeErrorKind::BadTime,
            offset: poff,
        })?;
        let start = parse_i64(otok)
            .and_then(|o| b.base_us.checked_add_signed(o))
            .ok_or(DecodeError {
                kind: DecodeErrorKind::BadTime,
                offset: ooff,
            })?;
        let (dtok, doff) = self.tokens.next().ok_or(DecodeError {
            kind: DecodeErrorKind::BadTime,
            offset: ooff,
        })?;
        let (duration_us, kind, status, open) = parse_dur_flags(dtok, doff)?;
        let (ntok, noff) = self.tokens.next().ok_or(DecodeError {
            kind: DecodeErrorKind::BadField,
            offset: doff,
        })?;
        let name = if ntok == "\"" {
            prev.ok_or(DecodeError {
                kind: DecodeErrorKind::BadBatch,
                offset: noff,
            })?
            .name
        } else {
            EscStr::check(ntok, noff)?
        };
        // Fields run until the next token that starts an entry.
        let fields_start = self.tokens.offset;
        let mut fields_end = fields_start;
        let mut ditto = false;
        let mut specials = self.batch.shared_specials;
        specials.status_message = None;
        specials.dropped = Dropped::default();
        for (count, (t, o)) in self.tokens.by_ref().enumerate() {
            match parse_field(t, o, true)? {
                Field::Entry => {
                    self.pending = Some((t, o));
                    break;
                }
                Field::Ditto => {
                    if count > 0 || prev.is_none() {
                        return err(DecodeErrorKind::BadBatch, o);
                    }
                    ditto = true;
                }
                _ if ditto => return err(DecodeErrorKind::BadBatch, o),
                Field::Special(l, s) => specials.apply(l, s),
                _ => {}
            }
            fields_end = o + t.len();
        }
        let base = self.entries_offset();
        let fields = if ditto {
            prev.map(|p| p.fields).unwrap_or("")
        } else if fields_end > fields_start {
            self.batch
                .entries
                .get(fields_start - base..fields_end - base)
                .unwrap_or("")
        } else {
            ""
        };
        if ditto {
            if let Some(p) = prev {
                specials.status_message = p.status_message;
                specials.dropped = p.dropped;
                if p.service != self.batch.shared_specials.service {
                    specials.service = p.service;
                }
                if p.request_id != self.batch.shared_specials.request_id {
                    specials.request_id = p.request_id;
                }
            }
        }
        let span = SpanLine {
            trace_id: b.trace_id,
            span_id,
            parent_span_id,
            start_us: start,
            duration_us,
            kind,
            status,
            name,
            status_message: specials.status_message,
            service: specials.service,
            request_id: specials.request_id,
            dropped: specials.dropped,
            open,
            fields,
            shared: b.shared,
        };
        self.prev = Some(span.clone());
        Ok(Some(span))
    }

    fn entries_offset(&self) -> usize {
        self.batch.entries_offset
    }
}

impl<'a> Iterator for BatchSpans<'a> {
    type Item = SpanLine<'a>;
    fn next(&mut self) -> Option<SpanLine<'a>> {
        // Validated by `decode`, so an error cannot happen here; stop rather than panic.
        self.next_entry().ok().flatten()
    }
}

fn decode_span_id(b: &[u8], offset: usize) -> Result<SpanId> {
    let id = SpanId::from_b64(b).ok_or(DecodeError {
        kind: DecodeErrorKind::BadIds,
        offset,
    })?;
    if id.is_zero() {
        return err(DecodeErrorKind::ZeroId, offset);
    }
    Ok(id)
}

fn parse_dur_flags(t: &str, offset: usize) -> Result<(u64, SpanKind, StatusCode, bool)> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let dur = parse_u64(&t[..digits]).ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset,
    })?;
    let mut kind = SpanKind::Internal;
    let mut status = StatusCode::Unset;
    let mut open = false;
    for (i, c) in t.bytes().enumerate().skip(digits) {
        match c {
            b's' => kind = SpanKind::Server,
            b'c' => kind = SpanKind::Client,
            b'p' => kind = SpanKind::Producer,
            b'o' => kind = SpanKind::Consumer,
            b'e' => status = StatusCode::Error,
            b'k' => status = StatusCode::Ok,
            b'u' => open = true,
            b'a'..=b'z' => {}
            _ => return err(DecodeErrorKind::BadFlags, offset + i),
        }
    }
    Ok((dur, kind, status, open))
}

/// Decodes one record. `line` starts at the marker (see [`find_marker`]); trailing `\r`/`\n` are
/// ignored.
pub fn decode(line: &str) -> Result<Record<'_>> {
    let line = line.trim_end_matches(['\n', '\r']);
    let b = line.as_bytes();
    if !line.starts_with(MARKER) {
        return err(DecodeErrorKind::NoMarker, 0);
    }
    let vdigits = b[MARKER.len()..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let vend = MARKER.len() + vdigits;
    if vdigits == 0 || b.get(vend) != Some(&b' ') {
        return err(DecodeErrorKind::NoMarker, 0);
    }
    if &line[MARKER.len()..vend] != "1" {
        return err(DecodeErrorKind::UnsupportedVersion, MARKER.len());
    }
    let Some(body) = line[vend + 1..].strip_suffix(';') else {
        return err(DecodeErrorKind::Truncated, line.len());
    };
    // The common case, no control character, in one pass the compiler vectorises; the
    // position only when there is one.
    if b.iter()
        .fold(false, |any, &c| any | (c < 0x20) | (c == 0x7f))
    {
        let p = b.iter().position(|&c| c < 0x20 || c == 0x7f).unwrap_or(0);
        return err(DecodeErrorKind::ControlChar, p);
    }
    let base = vend + 1;
    if body.starts_with('+') {
        decode_batch(body, base).map(Record::Batch)
    } else {
        decode_span(body, base).map(Record::Span)
    }
}

fn decode_span(body: &str, base: usize) -> Result<SpanLine<'_>> {
    let mut tokens = Tokens::new(body, base);
    let (ids, ioff) = tokens.next().unwrap_or(("", base));
    let ib = ids.as_bytes();
    let parent_len = match ib.len() {
        33 => 0,
        44 => SPAN_ID_B64_LEN,
        _ => return err(DecodeErrorKind::BadIds, ioff),
    };
    let trace_id = TraceId::from_b64(&ib[..TRACE_ID_B64_LEN]).ok_or(DecodeError {
        kind: DecodeErrorKind::BadIds,
        offset: ioff,
    })?;
    let span_id = SpanId::from_b64(&ib[TRACE_ID_B64_LEN..TRACE_ID_B64_LEN + SPAN_ID_B64_LEN])
        .ok_or(DecodeError {
            kind: DecodeErrorKind::BadIds,
            offset: ioff,
        })?;
    let parent_span_id = if parent_len > 0 {
        Some(
            SpanId::from_b64(&ib[TRACE_ID_B64_LEN + SPAN_ID_B64_LEN..]).ok_or(DecodeError {
                kind: DecodeErrorKind::BadIds,
                offset: ioff,
            })?,
        )
    } else {
        None
    };
    if trace_id.is_zero() || span_id.is_zero() || parent_span_id.is_some_and(|p| p.is_zero()) {
        return err(DecodeErrorKind::ZeroId, ioff);
    }
    let (st, soff) = tokens.next().ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset: ioff,
    })?;
    let start_us = parse_u64(st).ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset: soff,
    })?;
    let (dt, doff) = tokens.next().ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset: soff,
    })?;
    let (duration_us, kind, status, open) = parse_dur_flags(dt, doff)?;
    let (nt, noff) = tokens.next().ok_or(DecodeError {
        kind: DecodeErrorKind::BadField,
        offset: doff,
    })?;
    let name = EscStr::check(nt, noff)?;
    let fields = if tokens.done { "" } else { tokens.rest };
    let mut specials = Specials::default();
    if !tokens.done {
        for (t, o) in tokens {
            if let Field::Special(l, s) = parse_field(t, o, false)? {
                specials.apply(l, s);
            }
        }
    }
    Ok(SpanLine {
        trace_id,
        span_id,
        parent_span_id,
        start_us,
        duration_us,
        kind,
        status,
        name,
        status_message: specials.status_message,
        service: specials.service,
        request_id: specials.request_id,
        dropped: specials.dropped,
        open,
        fields,
        shared: "",
    })
}

fn decode_batch(body: &str, base: usize) -> Result<BatchLine<'_>> {
    let mut tokens = Tokens::new(body, base);
    let (tt, toff) = tokens.next().unwrap_or(("", base));
    let trace_id =
        TraceId::from_b64(tt.as_bytes().get(1..).unwrap_or_default()).ok_or(DecodeError {
            kind: DecodeErrorKind::BadIds,
            offset: toff,
        })?;
    if trace_id.is_zero() {
        return err(DecodeErrorKind::ZeroId, toff);
    }
    let (bt, boff) = tokens.next().ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset: toff,
    })?;
    let base_us = parse_u64(bt).ok_or(DecodeError {
        kind: DecodeErrorKind::BadTime,
        offset: boff,
    })?;
    if tokens.done {
        return err(DecodeErrorKind::BadBatch, boff + bt.len());
    }
    let shared_start = tokens.offset;
    let mut shared_specials = Specials::default();
    let mut entries = None;
    let mut shared_end = shared_start;
    for (t, o) in tokens.by_ref() {
        match parse_field(t, o, true)? {
            Field::Entry => {
                entries = Some(o);
                break;
            }
            Field::Special(l, s) => shared_specials.apply(l, s),
            Field::Resource(_) | Field::Skip => {}
            _ => return err(DecodeErrorKind::BadBatch, o),
        }
        shared_end = o + t.len();
    }
    let Some(entries_offset) = entries else {
        return err(DecodeErrorKind::BadBatch, base + body.len());
    };
    let shared = body
        .get(shared_start - base..shared_end - base)
        .unwrap_or("");
    let mut batch = BatchLine {
        trace_id,
        base_us,
        len: 0,
        shared,
        shared_specials,
        entries: body.get(entries_offset - base..).unwrap_or(""),
        entries_offset,
    };
    let mut it = batch.spans();
    let mut n = 0;
    while it.next_entry()?.is_some() {
        n += 1;
    }
    batch.len = n;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArcU5lcP0LNitg 1700000000000000 1234c service-egress http.method=POST peer.service=lambda;";

    #[test]
    fn decodes_the_reference_span() {
        let Record::Span(s) = decode(REFERENCE).unwrap() else {
            panic!("not a span")
        };
        assert_eq!(s.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(s.parent_span_id.unwrap().to_string(), "53995c3f42cd8ad8");
        assert_eq!((s.start_us, s.duration_us), (1_700_000_000_000_000, 1234));
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.name.text(), "service-egress");
        let attrs: Vec<_> = s.attributes().map(|a| a.key.raw()).collect();
        assert_eq!(attrs, ["http.method", "peer.service"]);
    }

    #[test]
    fn finds_the_marker_after_lambda_prefixes() {
        let node = format!("2024-02-09T08:42:44.078Z\tabc\tINFO\t{REFERENCE}\n");
        assert_eq!(find_marker(&node), Some(node.find("SPLN1").unwrap()));
        assert_eq!(find_marker("xSPLN1 a"), None);
        assert_eq!(find_marker("SPLN a"), None);
        assert_eq!(find_marker(REFERENCE), Some(0));
    }

    #[test]
    fn reports_each_reason() {
        let cases = [
            ("SPLN2 x;", DecodeErrorKind::UnsupportedVersion),
            ("SPLN1 S_kvNX", DecodeErrorKind::Truncated),
            ("SPLN1 abc 1 1 n;", DecodeErrorKind::BadIds),
            (
                "SPLN1 AAAAAAAAAAAAAAAAAAAAAAAPBnqgupArc 1 1 n;",
                DecodeErrorKind::ZeroId,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 01 1 n;",
                DecodeErrorKind::BadTime,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1C n;",
                DecodeErrorKind::BadFlags,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n%G1;",
                DecodeErrorKind::BadEscape,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n%C3%28;",
                DecodeErrorKind::BadUtf8,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n word;",
                DecodeErrorKind::BadField,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n k#1x;",
                DecodeErrorKind::BadNumber,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n k!x;",
                DecodeErrorKind::BadBool,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n =v;",
                DecodeErrorKind::EmptyKey,
            ),
            (
                "SPLN1 +S_kvNXezTaajzpKdDg5HNg 1;",
                DecodeErrorKind::BadBatch,
            ),
            (
                "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1 1 n\tx;",
                DecodeErrorKind::ControlChar,
            ),
        ];
        for (line, kind) in cases {
            assert_eq!(
                decode(line).map(|_| ()).map_err(|e| e.kind),
                Err(kind),
                "{line}"
            );
        }
    }

    #[test]
    fn batch_dittos_resolve() {
        let line = "SPLN1 +S_kvNXezTaajzpKdDg5HNg 1000 *r=req |APBnqgupArc U5lcP0LNitg 0 5c n a=1 |U5lcP0LNitg \" 7 3c \" \";";
        let Record::Batch(b) = decode(line).unwrap() else {
            panic!()
        };
        let spans: Vec<_> = b.spans().collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].parent_span_id, spans[0].parent_span_id);
        assert_eq!(spans[1].name.text(), "n");
        assert_eq!(spans[1].start_us, 1007);
        assert_eq!(spans[1].attributes().count(), 1);
        assert_eq!(spans[1].request_id.unwrap().raw(), "req");
    }
}
