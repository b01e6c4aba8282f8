//! Offline inputs: files and directory trees holding CloudWatch data.
//!
//! Recognised by content, so users need not say what they have: gzip (single or concatenated
//! members, as Firehose writes) is unpacked first; then a subscription payload
//! (`{"messageType":"DATA_MESSAGE","logGroup",…,"logEvents":[…]}`), the Lambda subscription
//! event (`{"awslogs":{"data":"<base64 gzip>"}}`), `aws logs filter-log-events` /
//! `get-log-events` output (`{"events":[…]}`), a CloudWatch export file (lines
//! `<ISO-8601>Z <message>`, continuation lines without a timestamp belong to the line before),
//! or plain captured stdout (one message per line).

use crate::convert::record::LogRecord;
use base64::Engine as _;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON that looked like a CloudWatch payload but is not one.
    #[error("{path}: not a CloudWatch payload: {reason}")]
    Payload {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Lists the files under `paths` (directories recursively, sorted), skipping the
/// `aws-logs-write-test` object that CreateExportTask leaves.
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileError> {
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: p.to_owned(),
        source,
    };
    let meta = std::fs::metadata(p).map_err(io)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            walk(&e, out)?;
        }
    } else if p.file_name().is_none_or(|n| n != "aws-logs-write-test") {
        out.push(p.to_owned());
    }
    Ok(())
}

fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads one file into records. `log_group` fills in the group where the data does not say.
pub fn read_file(path: &Path, log_group: &str) -> Result<Vec<LogRecord>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = std::fs::read(path).map_err(io)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        bytes = gunzip(&bytes).map_err(io)?;
    }
    let text = String::from_utf8_lossy(&bytes);
    let stream = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_content(&text, log_group, &stream).map_err(|reason| FileError::Payload {
        path: path.to_owned(),
        reason,
    })
}

/// Parses file content (already unpacked).
pub fn parse_content(text: &str, log_group: &str, stream: &str) -> Result<Vec<LogRecord>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // One JSON document, or several (a Firehose object holds concatenated payloads).
        let mut out = Vec::new();
        let mut any_json = false;
        for doc in serde_json::Deserializer::from_str(trimmed).into_iter::<serde_json::Value>() {
            match doc {
                Ok(v) => {
                    any_json = true;
                    json_records(&v, log_group, &mut out)?;
                }
                Err(_) if !any_json => return Ok(text_records(text, log_group, stream)),
                Err(e) => return Err(format!("invalid JSON after {} records: {e}", out.len())),
            }
        }
        return Ok(out);
    }
    Ok(text_records(text, log_group, stream))
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

fn json_records(
    v: &serde_json::Value,
    log_group: &str,
    out: &mut Vec<LogRecord>,
) -> Result<(), String> {
    if let Some(data) = v.pointer("/awslogs/data").and_then(|d| d.as_str()) {
        let gz = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("awslogs.data is not base64: {e}"))?;
        let raw = gunzip(&gz).map_err(|e| format!("awslogs.data is not gzip: {e}"))?;
        let inner: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| format!("awslogs.data is not JSON: {e}"))?;
        return json_records(&inner, log_group, out);
    }
    if let Some(events) = v.get("logEvents").and_then(|e| e.as_array()) {
        if str_field(v, "messageType") == "CONTROL_MESSAGE" {
            return Ok(());
        }
        let group = Some(str_field(v, "logGroup"))
            .filter(|g| !g.is_empty())
            .unwrap_or(log_group);
        for e in events {
            out.push(LogRecord {
                log_group: group.to_owned(),
                log_stream: str_field(v, "logStream").to_owned(),
                event_id: str_field(e, "id").to_owned(),
                timestamp_ms: e.get("timestamp").and_then(|t| t.as_i64()).unwrap_or(0),
                message: str_field(e, "message").to_owned(),
            });
        }
        return Ok(());
    }
    if let Some(events) = v.get("events").and_then(|e| e.as_array()) {
        for e in events {
            out.push(LogRecord {
                log_group: log_group.to_owned(),
                log_stream: str_field(e, "logStreamName").to_owned(),
                event_id: str_field(e, "eventId").to_owned(),
                timestamp_ms: e.get("timestamp").and_then(|t| t.as_i64()).unwrap_or(0),
                message: str_field(e, "message").to_owned(),
            });
        }
        return Ok(());
    }
    Err("expected logEvents, awslogs.data or events".to_owned())
}

/// `2024-02-09T08:42:44.078Z` at the start of an export line: its length, and its time in ms.
fn export_timestamp(line: &str) -> Option<i64> {
    let b = line.as_bytes();
    if b.len() < 25 || b[4] != b'-' || b[10] != b'T' || b[23] != b'Z' || b[24] != b' ' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

fn text_records(text: &str, log_group: &str, stream: &str) -> Vec<LogRecord> {
    let mut out: Vec<LogRecord> = Vec::new();
    let mut export = false;
    for line in text.lines() {
        if let Some(ts) = export_timestamp(line) {
            export = true;
            out.push(LogRecord {
                log_group: log_group.to_owned(),
                log_stream: stream.to_owned(),
                event_id: String::new(),
                timestamp_ms: ts,
                message: line[25..].to_owned(),
            });
        } else if export && !out.is_empty() {
            // A continuation line of a multi-line message.
            if let Some(last) = out.last_mut() {
                last.message.push('\n');
                last.message.push_str(line);
            }
        } else if !line.is_empty() {
            out.push(LogRecord {
                log_group: log_group.to_owned(),
                log_stream: stream.to_owned(),
                event_id: String::new(),
                timestamp_ms: 0,
                message: line.to_owned(),
            });
        }
    }
    if export {
        // Export files are not time-sorted; the converter needs stream order. Stable, so lines
        // of the same millisecond keep their file order.
        out.sort_by_key(|r| r.timestamp_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_with_continuations() {
        let text = "2024-02-09T08:42:45.000Z second\n2024-02-09T08:42:44.078Z first\n  continued\n";
        let r = parse_content(text, "/aws/lambda/f", "s").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].message, "first\n  continued");
        assert_eq!(r[0].timestamp_ms, 1_707_468_164_078);
        assert_eq!(r[1].log_group, "/aws/lambda/f");
    }

    #[test]
    fn subscription_payload_and_lambda_event() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/aws/lambda/f","logStream":"s","subscriptionFilters":["x"],"logEvents":[{"id":"1","timestamp":5,"message":"m"}]}"#;
        let r = parse_content(payload, "", "").unwrap();
        assert_eq!(
            (
                r[0].log_group.as_str(),
                r[0].event_id.as_str(),
                r[0].timestamp_ms
            ),
            ("/aws/lambda/f", "1", 5)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, payload.as_bytes()).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let event = format!(r#"{{"awslogs":{{"data":"{data}"}}}}"#);
        assert_eq!(parse_content(&event, "", "").unwrap(), r);
        let control = payload.replace("DATA_MESSAGE", "CONTROL_MESSAGE");
        assert!(parse_content(&control, "", "").unwrap().is_empty());
    }

    #[test]
    fn plain_lines() {
        let r = parse_content("a\n\nb\n", "g", "s").unwrap();
        assert_eq!(
            r.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
