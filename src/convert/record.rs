//! `LogRecord`: one CloudWatch log event, whatever it came from (API, export file,
//! subscription payload, a plain file). The unit every source produces and `parse` consumes.

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
