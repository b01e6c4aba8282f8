//! `LogRecord`: one CloudWatch log event, whatever it came from (API, export file,
//! subscription payload, a plain file). The unit every source produces and `parse` consumes.
//!
//! [`LogRecordRef`] is the same event borrowed from a source's buffer: streaming sources hand
//! it to [`Converter::push_ref`](crate::convert::Converter::push_ref) so that the common case,
//! a line that is neither a span line nor a platform line, costs no allocation.
//!
//! [`RecordBatch`] is how records travel through the pipeline: their text in one buffer, so a
//! batch of thousands of records costs a handful of allocations.

use std::sync::Arc;

/// One log event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// Log group name (`/aws/lambda/<function>`), empty when unknown.
    pub log_group: String,
    /// Log stream name, empty when unknown.
    pub log_stream: String,
    /// CloudWatch event id, empty when unknown.
    pub event_id: String,
    /// Event timestamp, milliseconds since the epoch (0 when unknown).
    pub timestamp_ms: i64,
    /// The message as CloudWatch stores it (prefixes included).
    pub message: String,
}

impl LogRecord {
    /// Borrows this record.
    pub fn as_ref(&self) -> LogRecordRef<'_> {
        LogRecordRef {
            log_group: &self.log_group,
            log_stream: &self.log_stream,
            event_id: &self.event_id,
            timestamp_ms: self.timestamp_ms,
            message: &self.message,
            lossy: false,
        }
    }
}

/// One log event borrowed from wherever it was read (fields as in [`LogRecord`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRecordRef<'a> {
    /// Log group name, empty when unknown.
    pub log_group: &'a str,
    /// Log stream name, empty when unknown.
    pub log_stream: &'a str,
    /// CloudWatch event id, empty when unknown.
    pub event_id: &'a str,
    /// Event timestamp, milliseconds since the epoch (0 when unknown).
    pub timestamp_ms: i64,
    /// The message as CloudWatch stores it (prefixes included).
    pub message: &'a str,
    /// The message was read from bytes that were not all UTF-8 (replaced by U+FFFD): a span
    /// line in it is counted as `lossy_utf8`, not decoded.
    pub lossy: bool,
}

impl LogRecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> LogRecord {
        LogRecord {
            log_group: self.log_group.to_owned(),
            log_stream: self.log_stream.to_owned(),
            event_id: self.event_id.to_owned(),
            timestamp_ms: self.timestamp_ms,
            message: self.message.to_owned(),
        }
    }
}

impl<'a> From<&'a LogRecord> for LogRecordRef<'a> {
    fn from(r: &'a LogRecord) -> Self {
        r.as_ref()
    }
}

/// Where a record of a batch comes from: (log group, log stream).
pub type Origin = (Arc<str>, Arc<str>);

/// One record of a batch: ranges into the batch's text.
#[derive(Clone, Copy, Debug)]
struct Entry {
    origin: u32,
    lossy: bool,
    timestamp_ms: i64,
    event_id: (u32, u32),
    message: (u32, u32),
}

/// Records that travel together, in order: one text buffer, the (group, stream) pairs they
/// come from, and per record a few offsets.
#[derive(Clone, Debug, Default)]
pub struct RecordBatch {
    text: String,
    origins: Vec<Origin>,
    entries: Vec<Entry>,
    /// Which input of the run the records came from (a file, an object, a Kinesis record):
    /// spans made from them carry it, so that a failed delivery can be traced back.
    pub input: u32,
}

impl RecordBatch {
    /// An empty batch of input `input`.
    pub fn new(input: u32) -> Self {
        RecordBatch {
            input,
            ..RecordBatch::default()
        }
    }

    /// An empty batch with room for `records` records of `text` bytes (ids and messages).
    pub fn with_capacity(input: u32, records: usize, text: usize) -> Self {
        RecordBatch {
            input,
            text: String::with_capacity(text),
            origins: Vec::new(),
            entries: Vec::with_capacity(records),
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of text it holds.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The (group, stream) pairs its records refer to, by index.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// Empties it and gives it `origins` (so that indices handed out for another batch stay
    /// valid in this one).
    pub fn reset_with_origins(&mut self, origins: &[Origin]) {
        self.clear();
        self.origins.extend(origins.iter().cloned());
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.origins.clear();
        self.entries.clear();
    }

    /// The index of `(group, stream)` among the batch's origins, added if new (the last one is
    /// checked first: records of one stream come together).
    pub fn origin(&mut self, group: &str, stream: &str) -> u32 {
        if let Some((i, (g, s))) = self.origins.iter().enumerate().next_back() {
            if &**g == group && &**s == stream {
                return i as u32;
            }
        }
        self.origins.push((Arc::from(group), Arc::from(stream)));
        (self.origins.len() - 1) as u32
    }

    /// The index of an origin given as shared names (no copy).
    pub fn origin_shared(&mut self, origin: &Origin) -> u32 {
        if let Some((i, (g, s))) = self.origins.iter().enumerate().next_back() {
            if Arc::ptr_eq(g, &origin.0) && Arc::ptr_eq(s, &origin.1) {
                return i as u32;
            }
        }
        self.origins
            .push((Arc::clone(&origin.0), Arc::clone(&origin.1)));
        (self.origins.len() - 1) as u32
    }

    fn put(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len();
        self.text.push_str(s);
        (start as u32, self.text.len() as u32)
    }

    /// Appends a record of origin `origin` (see [`RecordBatch::origin`]).
    pub fn push(&mut self, origin: u32, event_id: &str, timestamp_ms: i64, message: &str) {
        self.push_read(origin, event_id, timestamp_ms, message, false);
    }

    /// [`RecordBatch::push`], saying whether the message's bytes were not all UTF-8 (see
    /// [`LogRecordRef::lossy`]).
    pub fn push_read(
        &mut self,
        origin: u32,
        event_id: &str,
        timestamp_ms: i64,
        message: &str,
        lossy: bool,
    ) {
        let event_id = self.put(event_id);
        let message = self.put(message);
        self.entries.push(Entry {
            origin,
            lossy,
            timestamp_ms,
            event_id,
            message,
        });
    }

    /// Appends a borrowed record.
    pub fn push_ref(&mut self, r: LogRecordRef<'_>) {
        let o = self.origin(r.log_group, r.log_stream);
        self.push_read(o, r.event_id, r.timestamp_ms, r.message, r.lossy);
    }

    /// Text appended as it is, for [`RecordBatch::push_span`] to point into (a reader that
    /// reads straight into the batch).
    pub fn text_mut(&mut self) -> &mut String {
        &mut self.text
    }

    /// Appends a record whose message is `text[start..end]`, already in the batch.
    pub fn push_span(&mut self, origin: u32, timestamp_ms: i64, start: usize, end: usize) {
        let at = self.text.len() as u32;
        self.entries.push(Entry {
            origin,
            lossy: false,
            timestamp_ms,
            event_id: (at, at),
            message: (start as u32, end as u32),
        });
    }

    /// The `i`th record.
    pub fn get(&self, i: usize) -> Option<LogRecordRef<'_>> {
        let e = self.entries.get(i)?;
        let (g, s) = self.origins.get(e.origin as usize)?;
        let text = |r: (u32, u32)| self.text.get(r.0 as usize..r.1 as usize).unwrap_or("");
        Some(LogRecordRef {
            log_group: g,
            log_stream: s,
            event_id: text(e.event_id),
            timestamp_ms: e.timestamp_ms,
            message: text(e.message),
            lossy: e.lossy,
        })
    }

    /// The `i`th record and the index of its origin.
    pub fn get_with_origin(&self, i: usize) -> Option<(u32, LogRecordRef<'_>)> {
        let origin = self.entries.get(i)?.origin;
        Some((origin, self.get(i)?))
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = LogRecordRef<'_>> + '_ {
        (0..self.entries.len()).filter_map(|i| self.get(i))
    }

    /// Sorts the records into stream order by `key` (stable).
    pub fn sort_by_key<K: Ord>(&mut self, mut key: impl FnMut(LogRecordRef<'_>) -> K) {
        let mut idx: Vec<usize> = (0..self.entries.len()).collect();
        idx.sort_by_cached_key(|&i| key(self.get(i).unwrap_or_default()));
        self.entries = idx.into_iter().map(|i| self.entries[i]).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowing_and_owning_round_trip() {
        let r = LogRecord {
            log_group: "/aws/lambda/f".into(),
            log_stream: "s".into(),
            event_id: "1".into(),
            timestamp_ms: 5,
            message: "m".into(),
        };
        assert_eq!(r.as_ref().to_record(), r);
        assert_eq!(LogRecordRef::from(&r).message, "m");
    }

    #[test]
    fn batches_hold_records_in_one_buffer() {
        let mut b = RecordBatch::new(3);
        b.push_ref(LogRecordRef {
            log_group: "g",
            log_stream: "s",
            event_id: "1",
            timestamp_ms: 5,
            message: "m1",
            lossy: false,
        });
        b.push_ref(LogRecordRef {
            log_group: "g",
            log_stream: "s",
            event_id: "",
            timestamp_ms: 6,
            message: "m2",
            lossy: false,
        });
        let o = b.origin("g", "t");
        let start = b.text_len();
        b.text_mut().push_str("m3");
        b.push_span(o, 7, start, start + 2);
        let got: Vec<(String, String, i64)> = b
            .iter()
            .map(|r| {
                (
                    r.log_stream.to_owned(),
                    r.message.to_owned(),
                    r.timestamp_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("s".into(), "m1".into(), 5),
                ("s".into(), "m2".into(), 6),
                ("t".into(), "m3".into(), 7)
            ]
        );
        assert_eq!(b.origins.len(), 2, "one origin per stream");
        b.sort_by_key(|r| std::cmp::Reverse(r.timestamp_ms));
        assert_eq!(b.get(0).unwrap().message, "m3");
        b.clear();
        assert!(b.is_empty());
    }
}
