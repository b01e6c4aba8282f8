//! `LogRecord`: one CloudWatch log event, whatever it came from (API, export file,
//! subscription payload, a plain file). The unit every source produces and `parse` consumes.
//!
//! [`LogRecordRef`] is the same event borrowed from a source's buffer: streaming sources hand
//! it to [`Converter::push_ref`](crate::convert::Converter::push_ref) so that the common case,
//! a line that is neither a span line nor a platform line, costs no allocation.

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
}
