//! The one decoder of CloudWatch Logs JSON payloads, shared by file inputs, S3 objects and the
//! Lambda handler. Streamed: records go out in batches as the JSON is read, so memory stays
//! bounded whatever the payload's size, and every size read from the input has a limit.
//!
//! Shapes (shared/reference/cloudwatch.md, "Subscriptions" and "CLI JSON"):
//! * a subscription payload, `{"messageType":"DATA_MESSAGE","owner","logGroup","logStream",
//!   "subscriptionFilters":[…],"logEvents":[{"id","timestamp","message"}]}`, or several
//!   concatenated (Firehose objects); `CONTROL_MESSAGE`s carry no records;
//! * the Lambda subscription event, `{"awslogs":{"data":"<base64 gzip payload>"}}`;
//! * `aws logs filter-log-events` / `get-log-events` output, `{"events":[{"logStreamName",
//!   "timestamp","message","ingestionTime","eventId"}],…}`.
//!
//! Gzip (one member or several) is unpacked on the way, within [`Limits::max_payload`] inflated
//! bytes per payload: a bomb is an error naming the limit, never an allocation of its size.
//! Strings are copied from the parser's buffer into the batch; nothing is allocated per event.

use crate::convert::record::RecordBatch;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::{BufRead, BufReader, Read};

/// Bounds on what is read from an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest record kept, in bytes; the rest of a longer line is skipped (counted).
    pub max_line: usize,
    /// Most bytes one JSON payload (a subscription payload, a Kinesis or Firehose record, an
    /// `awslogs.data` string, CLI output) may take once inflated.
    pub max_payload: u64,
    /// Most bytes one gzip input (a file, an S3 object) may inflate to.
    pub max_inflated: u64,
    /// Bytes of records per batch handed downstream.
    pub batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 1 << 20,
            max_payload: 256 << 20,
            max_inflated: 16 << 30,
            batch_bytes: 256 << 10,
        }
    }
}

/// Formats a byte count the way the limits are documented (`256 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    for (name, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {name}", n / size);
        }
    }
    format!("{n} B")
}

/// Why a payload could not be read. Records before the error have been handed out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON, or JSON cut short.
    #[error("invalid JSON after {records} records: {source}")]
    Json {
        /// Records handed out before it.
        records: u64,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but none of the shapes above.
    #[error("not a CloudWatch Logs payload: expected logEvents, awslogs.data or events")]
    Shape,
    /// `awslogs.data` is not base64.
    #[error("awslogs.data is not base64: {0}")]
    Base64(#[source] base64::DecodeError),
    /// Gzip that does not inflate, or a read error.
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    /// Inflated beyond a limit.
    #[error("inflates to more than {} ({limit_name}): stopped there", human_bytes(*limit))]
    TooLarge {
        /// The limit.
        limit: u64,
        /// Its name (the flag that sets it).
        limit_name: &'static str,
    },
    /// The receiver of the records went away (the run is stopping).
    #[error("stopped")]
    Stopped,
}

/// What decoding found besides records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Records handed out.
    pub records: u64,
    /// `DATA_MESSAGE` payloads (and CLI documents).
    pub data_messages: u64,
    /// `CONTROL_MESSAGE` payloads (CloudWatch's destination checks).
    pub control_messages: u64,
    /// Records cut at [`Limits::max_line`].
    pub long_lines: u64,
}

/// Where decoded records go: a batch that is handed on (by `flush`) when it holds
/// [`Limits::batch_bytes`]. `flush` gets the full batch and returns an empty one, or `None`
/// when nobody wants more.
pub struct BatchOut<'f> {
    /// The batch being filled.
    pub batch: RecordBatch,
    flush: &'f mut dyn FnMut(RecordBatch) -> Option<RecordBatch>,
    batch_bytes: usize,
    stopped: bool,
}

impl<'f> BatchOut<'f> {
    /// Records go into `batch`, full batches to `flush`.
    pub fn new(
        batch: RecordBatch,
        batch_bytes: usize,
        flush: &'f mut dyn FnMut(RecordBatch) -> Option<RecordBatch>,
    ) -> Self {
        BatchOut {
            batch,
            flush,
            batch_bytes,
            stopped: false,
        }
    }

    /// Hands the batch on if it is full; `false` when the receiver is gone.
    pub fn maybe_flush(&mut self) -> bool {
        if self.batch.text_len() >= self.batch_bytes {
            return self.flush_now();
        }
        !self.stopped
    }

    /// Hands the batch on if it holds records; `false` when the receiver is gone.
    pub fn flush_now(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        if self.batch.is_empty() {
            return true;
        }
        let input = self.batch.input;
        // Origin indices handed out for this batch stay valid in the next one.
        let origins = self.batch.origins().to_vec();
        let full = std::mem::replace(&mut self.batch, RecordBatch::new(input));
        match (self.flush)(full) {
            Some(mut fresh) => {
                fresh.reset_with_origins(&origins);
                fresh.input = input;
                self.batch = fresh;
                true
            }
            None => {
                self.stopped = true;
                false
            }
        }
    }

    /// Whether the receiver went away.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the batch being filled (at the end of an input).
    pub fn into_batch(self) -> RecordBatch {
        self.batch
    }
}

/// A reader that fails once more than `limit` bytes came through.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
    limit_name: &'static str,
}

impl<R> Limited<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limit: u64, limit_name: &'static str) -> Self {
        Limited {
            inner,
            left: limit,
            limit,
            limit_name,
        }
    }
}

/// The marker inside an I/O error that [`Limited`] raised.
#[derive(Debug)]
struct OverLimit {
    limit: u64,
    limit_name: &'static str,
}

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inflates to more than {} ({})",
            human_bytes(self.limit),
            self.limit_name
        )
    }
}

impl std::error::Error for OverLimit {}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the limit from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(OverLimit {
                    limit: self.limit,
                    limit_name: self.limit_name,
                })),
            };
        }
        let cap = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A reader that fails when more than `limit` bytes pass without a `"`: in a CloudWatch
/// payload no value runs that long, and the JSON parser would buffer a string of any length
/// whole (a gzip bomb of one endless string would otherwise grow to the payload limit).
pub struct QuoteGuard<R> {
    inner: R,
    run: u64,
    limit: u64,
}

impl<R> QuoteGuard<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limit: u64) -> Self {
        QuoteGuard {
            inner,
            run: 0,
            limit,
        }
    }
}

impl<R: Read> Read for QuoteGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        match memchr::memrchr(b'"', got) {
            Some(last) => self.run = (n - last - 1) as u64,
            None => self.run += n as u64,
        }
        if self.run > self.limit {
            return Err(std::io::Error::other(OverLimit {
                limit: self.limit,
                limit_name: "a JSON value longer than --max-line allows",
            }));
        }
        Ok(n)
    }
}

/// The limit an I/O error of [`Limited`] names, if it is one.
pub fn over_limit(e: &std::io::Error) -> Option<(u64, &'static str)> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<OverLimit>())
        .map(|o| (o.limit, o.limit_name))
}

fn io_error(e: std::io::Error) -> PayloadError {
    match over_limit(&e) {
        Some((limit, limit_name)) => PayloadError::TooLarge { limit, limit_name },
        None => PayloadError::Io(e),
    }
}

/// The state shared by the visitors.
struct Ctx<'o, 'f> {
    out: &'o mut BatchOut<'f>,
    limits: Limits,
    found: Found,
    /// `log_group` of records whose payload names none (CLI output, captured files).
    default_group: String,
    group: String,
    stream: String,
    message_type: String,
    id: String,
    message: String,
    event_stream: String,
    depth: u8,
    /// A nested payload (`awslogs.data`) failed: the reason, kept out of serde's error text.
    nested_error: Option<PayloadError>,
    /// Events read before the payload said its type and group (JSON keys come in any order;
    /// CloudWatch writes `messageType`, `logGroup` and `logStream` first, so only re-serialised
    /// payloads get here): held until the end of the payload, up to [`HOLD_BYTES`].
    hold: Option<RecordBatch>,
}

/// Most bytes of events held while a payload has not named its type and group yet.
pub const HOLD_BYTES: usize = 16 << 20;

/// A seed that appends a JSON string to a `String` (no allocation of its own).
struct StrInto<'s>(&'s mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.clear();
        Ok(())
    }
    // Numbers where a string was expected (an id written as a number) are kept as text.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(&v.to_string());
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(&v.to_string());
        Ok(())
    }
}

/// A lenient timestamp: integer milliseconds, a float, or anything else (0).
struct Millis;

impl<'de> DeserializeSeed<'de> for Millis {
    type Value = i64;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Millis {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("milliseconds")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        Ok(i64::try_from(v).unwrap_or(i64::MAX))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        Ok(v as i64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        Ok(v.trim().parse().unwrap_or(0))
    }
    fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
        Ok(0)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<i64, E> {
        Ok(0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<i64, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<i64, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(0)
    }
}

/// Keys of the objects we read; anything else is skipped.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Key {
    MessageType,
    LogGroup,
    LogStream,
    LogEvents,
    Awslogs,
    Data,
    Events,
    Id,
    EventId,
    Timestamp,
    Message,
    LogStreamName,
    #[serde(other)]
    Other,
}

/// Which array of events is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Events {
    /// `logEvents` of a subscription payload.
    Subscription,
    /// `events` of CLI output.
    Cli,
}

/// One top-level document.
struct Doc<'c, 'o, 'f>(&'c mut Ctx<'o, 'f>);

/// What a document turned out to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DocKind {
    Payload,
    Event,
    Cli,
    Unknown,
}

impl<'de> DeserializeSeed<'de> for Doc<'_, '_, '_> {
    type Value = DocKind;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<DocKind, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Doc<'_, '_, '_> {
    type Value = DocKind;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudWatch Logs payload object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<DocKind, A::Error> {
        let ctx = self.0;
        ctx.group.clear();
        ctx.stream.clear();
        ctx.message_type.clear();
        let mut kind = DocKind::Unknown;
        while let Some(k) = m.next_key::<Key>()? {
            match k {
                Key::MessageType => m.next_value_seed(StrInto(&mut ctx.message_type))?,
                Key::LogGroup => m.next_value_seed(StrInto(&mut ctx.group))?,
                Key::LogStream => m.next_value_seed(StrInto(&mut ctx.stream))?,
                Key::LogEvents => {
                    kind = DocKind::Payload;
                    if ctx.message_type.is_empty() || ctx.group.is_empty() {
                        ctx.hold = Some(RecordBatch::new(ctx.out.batch.input));
                    }
                    m.next_value_seed(EventList(ctx, Events::Subscription))?;
                }
                Key::Events => {
                    kind = DocKind::Cli;
                    m.next_value_seed(EventList(ctx, Events::Cli))?;
                }
                Key::Awslogs => {
                    kind = DocKind::Event;
                    m.next_value_seed(Awslogs(ctx))?;
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        if ctx.message_type == "CONTROL_MESSAGE" {
            ctx.hold = None;
        }
        release_held(ctx)?;
        match kind {
            DocKind::Payload if ctx.message_type == "CONTROL_MESSAGE" => {
                ctx.found.control_messages += 1
            }
            DocKind::Payload | DocKind::Cli => ctx.found.data_messages += 1,
            _ => {}
        }
        Ok(kind)
    }
}

/// `{"data":"…"}` of the Lambda event.
struct Awslogs<'c, 'o, 'f>(&'c mut Ctx<'o, 'f>);

impl<'de> DeserializeSeed<'de> for Awslogs<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Awslogs<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{\"data\": base64}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let ctx = self.0;
        while let Some(k) = m.next_key::<Key>()? {
            match k {
                Key::Data => m.next_value_seed(Nested(&mut *ctx))?,
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The base64 gzip payload inside `awslogs.data`, decoded on the spot.
struct Nested<'c, 'o, 'f>(&'c mut Ctx<'o, 'f>);

impl<'de> DeserializeSeed<'de> for Nested<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Nested<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let ctx = self.0;
        if ctx.depth > 1 {
            return Err(E::custom("awslogs.data nested in awslogs.data"));
        }
        let bytes = match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
            Ok(b) => b,
            Err(e) => {
                ctx.nested_error = Some(PayloadError::Base64(e));
                return Err(E::custom("awslogs.data"));
            }
        };
        ctx.depth += 1;
        let r = decode_in(&bytes[..], ctx);
        ctx.depth -= 1;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                ctx.nested_error = Some(e);
                Err(E::custom("awslogs.data"))
            }
        }
    }
}

/// An array of events.
struct EventList<'c, 'o, 'f>(&'c mut Ctx<'o, 'f>, Events);

impl<'de> DeserializeSeed<'de> for EventList<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventList<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of log events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        let (ctx, which) = (self.0, self.1);
        while s.next_element_seed(OneEvent(&mut *ctx, which))?.is_some() {}
        Ok(())
    }
}

/// One event object.
struct OneEvent<'c, 'o, 'f>(&'c mut Ctx<'o, 'f>, Events);

impl<'de> DeserializeSeed<'de> for OneEvent<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OneEvent<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let (ctx, which) = (self.0, self.1);
        ctx.id.clear();
        ctx.message.clear();
        ctx.event_stream.clear();
        let mut ts = 0;
        while let Some(k) = m.next_key::<Key>()? {
            match k {
                Key::Id | Key::EventId => m.next_value_seed(StrInto(&mut ctx.id))?,
                Key::Timestamp => ts = m.next_value_seed(Millis)?,
                Key::Message => m.next_value_seed(StrInto(&mut ctx.message))?,
                Key::LogStreamName => m.next_value_seed(StrInto(&mut ctx.event_stream))?,
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        if which == Events::Subscription && ctx.message_type == "CONTROL_MESSAGE" {
            return Ok(());
        }
        if which == Events::Subscription && ctx.hold.is_some() {
            let held = ctx.hold.as_ref().map_or(0, RecordBatch::text_len);
            if held + ctx.message.len() > HOLD_BYTES {
                // Too much to hold: what is known of the payload's group now stands.
                release_held(ctx)?;
            } else if let Some(hold) = ctx.hold.as_mut() {
                let cut = cut_at(&ctx.message, ctx.limits.max_line);
                if cut < ctx.message.len() {
                    ctx.found.long_lines += 1;
                }
                let o = hold.origin("", "");
                hold.push(o, &ctx.id, ts, &ctx.message[..cut]);
                return Ok(());
            }
        }
        let group = match which {
            Events::Subscription if !ctx.group.is_empty() => ctx.group.as_str(),
            _ => ctx.default_group.as_str(),
        };
        let stream = match which {
            Events::Subscription => ctx.stream.as_str(),
            Events::Cli => ctx.event_stream.as_str(),
        };
        let origin = ctx.out.batch.origin(group, stream);
        let cut = cut_at(&ctx.message, ctx.limits.max_line);
        if cut < ctx.message.len() {
            ctx.found.long_lines += 1;
        }
        let msg = &ctx.message[..cut];
        ctx.out.batch.push(origin, &ctx.id, ts, msg);
        ctx.found.records += 1;
        if !ctx.out.maybe_flush() {
            return Err(de::Error::custom("stopped"));
        }
        Ok(())
    }
}

/// Where to cut `s` to keep at most `max` bytes, on a character boundary.
fn cut_at(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Hands the events held back (see [`Ctx::hold`]) on, under the group and stream known now.
fn release_held<E: de::Error>(ctx: &mut Ctx<'_, '_>) -> Result<(), E> {
    let Some(held) = ctx.hold.take() else {
        return Ok(());
    };
    let group = if ctx.group.is_empty() {
        ctx.default_group.as_str()
    } else {
        ctx.group.as_str()
    };
    for r in held.iter() {
        let origin = ctx.out.batch.origin(group, &ctx.stream);
        ctx.out
            .batch
            .push(origin, r.event_id, r.timestamp_ms, r.message);
        ctx.found.records += 1;
        if !ctx.out.maybe_flush() {
            return Err(E::custom("stopped"));
        }
    }
    Ok(())
}

/// Skips whitespace; `false` at the end of the input.
fn more<R: BufRead>(r: &mut R) -> std::io::Result<bool> {
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let all = ws == buf.len();
        r.consume(ws);
        if !all {
            return Ok(true);
        }
    }
}

/// Decodes `input` (gzip or not) within the limits of `ctx`.
fn decode_in(input: &[u8], ctx: &mut Ctx<'_, '_>) -> Result<(), PayloadError> {
    let limit = ctx.limits.max_payload;
    let value_limit = (ctx.limits.max_line as u64)
        .saturating_mul(6)
        .saturating_add(4096);
    if input.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::MultiGzDecoder::new(input);
        decode_docs(
            BufReader::new(QuoteGuard::new(
                Limited::new(gz, limit, "--max-payload"),
                value_limit,
            )),
            ctx,
        )
    } else {
        decode_docs(
            BufReader::new(QuoteGuard::new(
                Limited::new(input, limit, "--max-payload"),
                value_limit,
            )),
            ctx,
        )
    }
}

/// Reads one or more concatenated JSON documents.
fn decode_docs<R: BufRead>(mut r: R, ctx: &mut Ctx<'_, '_>) -> Result<(), PayloadError> {
    let mut docs = 0;
    while more(&mut r).map_err(io_error)? {
        let mut de = serde_json::Deserializer::from_reader(&mut r);
        match Doc(&mut *ctx).deserialize(&mut de) {
            Ok(DocKind::Unknown) => return Err(PayloadError::Shape),
            Ok(_) => docs += 1,
            Err(source) => {
                if let Some(e) = ctx.nested_error.take() {
                    return Err(e);
                }
                if ctx.out.is_stopped() {
                    return Err(PayloadError::Stopped);
                }
                return Err(json_error(source, ctx.found.records));
            }
        }
    }
    if docs == 0 {
        return Err(PayloadError::Shape);
    }
    Ok(())
}

/// A parse error, or the read error (a limit hit) underneath it.
fn json_error(source: serde_json::Error, records: u64) -> PayloadError {
    if source.is_io() {
        // serde_json gives back the reader's own error.
        return io_error(std::io::Error::from(source));
    }
    PayloadError::Json { records, source }
}

/// Decodes CloudWatch payloads from `input` (already unpacked, or gzip: see
/// [`decode_payload`]) into `out`, streaming. `default_group` names the group of records whose
/// payload names none.
pub fn decode_stream<R: Read>(
    input: R,
    limits: Limits,
    default_group: &str,
    out: &mut BatchOut<'_>,
) -> Result<Found, PayloadError> {
    let mut ctx = Ctx {
        out,
        limits,
        found: Found::default(),
        default_group: default_group.to_owned(),
        group: String::new(),
        stream: String::new(),
        message_type: String::new(),
        id: String::new(),
        message: String::new(),
        event_stream: String::new(),
        depth: 0,
        nested_error: None,
        hold: None,
    };
    // Escapes make a message up to six times its text; keys and punctuation add a little.
    let value_limit = (limits.max_line as u64)
        .saturating_mul(6)
        .saturating_add(4096);
    let r = decode_docs(
        // 64 KiB, as the file reader's buffer: below the size where allocators map a fresh
        // region per buffer (one payload per Kinesis record or fuzz input).
        BufReader::with_capacity(
            64 * 1024,
            QuoteGuard::new(
                Limited::new(input, limits.max_payload, "--max-payload"),
                value_limit,
            ),
        ),
        &mut ctx,
    );
    r.map(|()| ctx.found)
}

/// Decodes one payload held in memory (a Kinesis or Firehose record, an `awslogs.data` already
/// decoded from base64): gzip or plain JSON.
pub fn decode_payload(
    data: &[u8],
    limits: Limits,
    default_group: &str,
    out: &mut BatchOut<'_>,
) -> Result<Found, PayloadError> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::MultiGzDecoder::new(data);
        decode_stream(gz, limits, default_group, out)
    } else {
        decode_stream(data, limits, default_group, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::record::LogRecord;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b).unwrap();
        gz.finish().unwrap()
    }

    /// Decodes `data`, collecting every record; batches flush every `batch_bytes`.
    fn decode(
        data: &[u8],
        batch_bytes: usize,
    ) -> (Result<Found, PayloadError>, Vec<LogRecord>, usize) {
        let mut got = Vec::new();
        let mut flushes = 0;
        let mut flush = |b: RecordBatch| {
            flushes += 1;
            got.extend(b.iter().map(|r| r.to_record()));
            Some(RecordBatch::default())
        };
        let mut out = BatchOut::new(RecordBatch::default(), batch_bytes, &mut flush);
        let limits = Limits {
            batch_bytes,
            ..Limits::default()
        };
        let r = decode_payload(data, limits, "/default", &mut out);
        let last = out.into_batch();
        got.extend(last.iter().map(|r| r.to_record()));
        (r, got, flushes)
    }

    const PAYLOAD: &str = r#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/aws/lambda/f","logStream":"s","subscriptionFilters":["x"],"logEvents":[{"id":"1","timestamp":5,"message":"m1"},{"id":"2","timestamp":6,"message":"m\"2\n"}]}"#;

    #[test]
    fn a_subscription_payload_plain_and_gzipped() {
        for data in [PAYLOAD.as_bytes().to_vec(), gzip(PAYLOAD.as_bytes())] {
            let (r, got, _) = decode(&data, 1 << 20);
            let found = r.unwrap();
            assert_eq!((found.records, found.data_messages), (2, 1));
            assert_eq!(got[0].log_group, "/aws/lambda/f");
            assert_eq!(got[0].log_stream, "s");
            assert_eq!((got[0].event_id.as_str(), got[0].timestamp_ms), ("1", 5));
            assert_eq!(got[1].message, "m\"2\n");
        }
    }

    #[test]
    fn the_lambda_event_firehose_concatenation_and_cli_output() {
        let data = base64::engine::general_purpose::STANDARD.encode(gzip(PAYLOAD.as_bytes()));
        let event = format!(r#"{{"awslogs":{{"data":"{data}"}}}}"#);
        let (r, got, _) = decode(event.as_bytes(), 1 << 20);
        assert_eq!(r.unwrap().records, 2);
        assert_eq!(got.len(), 2);
        // Firehose: concatenated gzip members of payloads, a control message among them.
        let control = PAYLOAD.replace("DATA_MESSAGE", "CONTROL_MESSAGE");
        let mut fh = gzip(PAYLOAD.as_bytes());
        fh.extend(gzip(control.as_bytes()));
        fh.extend(gzip(PAYLOAD.as_bytes()));
        let (r, got, _) = decode(&fh, 1 << 20);
        let found = r.unwrap();
        assert_eq!((found.records, found.control_messages), (4, 1));
        assert_eq!(got.len(), 4);
        let cli = r#"{"events":[{"logStreamName":"st","timestamp":7,"message":"m","ingestionTime":8,"eventId":"e1"}],"searchedLogStreams":[]}"#;
        let (r, got, _) = decode(cli.as_bytes(), 1 << 20);
        r.unwrap();
        assert_eq!(
            (
                got[0].log_group.as_str(),
                got[0].log_stream.as_str(),
                got[0].event_id.as_str()
            ),
            ("/default", "st", "e1")
        );
    }

    #[test]
    fn records_go_out_in_batches_while_reading() {
        let events: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"id":"{i}","timestamp":{i},"message":"message number {i}"}}"#))
            .collect();
        let payload = format!(
            r#"{{"logGroup":"g","logStream":"s","logEvents":[{}]}}"#,
            events.join(",")
        );
        let (r, got, flushes) = decode(payload.as_bytes(), 1024);
        assert_eq!(r.unwrap().records, 1000);
        assert_eq!(got.len(), 1000);
        assert!(flushes > 10, "{flushes} flushes");
        assert_eq!(got[999].message, "message number 999");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 64 MiB of spaces inside a JSON string, gzipped to a few dozen KiB.
        let mut raw = Vec::with_capacity(64 << 20);
        raw.extend_from_slice(br#"{"logGroup":"g","logEvents":[{"message":""#);
        raw.resize(64 << 20, b' ');
        let bomb = gzip(&raw);
        let mut got = Vec::new();
        let mut flush = |b: RecordBatch| {
            got.push(b.len());
            Some(RecordBatch::default())
        };
        let mut out = BatchOut::new(RecordBatch::default(), 1 << 20, &mut flush);
        let limits = Limits {
            max_payload: 1 << 20,
            ..Limits::default()
        };
        let e = decode_payload(&bomb, limits, "", &mut out).unwrap_err();
        assert!(
            matches!(
                e,
                PayloadError::TooLarge {
                    limit: 1_048_576,
                    ..
                }
            ) || e.to_string().contains("inflates to more than 1 MiB"),
            "{e}"
        );
    }

    #[test]
    fn not_a_payload() {
        for bad in ["{\"other\":1}", "[1,2]", "", "  "] {
            let (r, _, _) = decode(bad.as_bytes(), 1 << 20);
            assert!(r.is_err(), "{bad:?}");
        }
        let (r, got, _) = decode(format!("{PAYLOAD} {{oops").as_bytes(), 1 << 20);
        assert!(
            matches!(r, Err(PayloadError::Json { records: 2, .. })),
            "{r:?}"
        );
        assert_eq!(got.len(), 2, "records before the error are kept");
    }

    #[test]
    fn a_receiver_that_goes_away_stops_decoding() {
        let events: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"id":"{i}","timestamp":1,"message":"{i}"}}"#))
            .collect();
        let payload = format!(r#"{{"logGroup":"g","logEvents":[{}]}}"#, events.join(","));
        let mut flush = |_: RecordBatch| None;
        let mut out = BatchOut::new(RecordBatch::default(), 16, &mut flush);
        let e = decode_payload(payload.as_bytes(), Limits::default(), "", &mut out).unwrap_err();
        assert!(matches!(e, PayloadError::Stopped), "{e}");
    }

    #[test]
    fn long_messages_are_cut_at_the_line_limit() {
        let payload = format!(
            r#"{{"logGroup":"g","logEvents":[{{"id":"1","timestamp":1,"message":"{}"}}]}}"#,
            "é".repeat(100)
        );
        let mut got = Vec::new();
        let mut flush = |b: RecordBatch| {
            got.extend(b.iter().map(|r| r.to_record()));
            Some(RecordBatch::default())
        };
        let mut out = BatchOut::new(RecordBatch::default(), 1 << 20, &mut flush);
        let limits = Limits {
            max_line: 11,
            ..Limits::default()
        };
        let found = decode_payload(payload.as_bytes(), limits, "", &mut out).unwrap();
        let last = out.into_batch();
        got.extend(last.iter().map(|r| r.to_record()));
        assert_eq!(found.long_lines, 1);
        assert_eq!(got[0].message, "ééééé");
    }
}
