//! Offline inputs: files and directory trees holding CloudWatch data.
//!
//! Recognised by content, so users need not say what they have: gzip (single or concatenated
//! members, as Firehose writes) is unpacked first; then a subscription payload
//! (`{"messageType":"DATA_MESSAGE","logGroup",…,"logEvents":[…]}`), the Lambda subscription
//! event (`{"awslogs":{"data":"<base64 gzip>"}}`), `aws logs filter-log-events` /
//! `get-log-events` output (`{"events":[…]}`), a CloudWatch export file (lines
//! `<ISO-8601>Z <message>`, continuation lines without a timestamp belong to the line before),
//! or plain captured stdout (one message per line).
//!
//! Files are streamed: [`for_each_record`] reads text line by line through a reused buffer (gzip
//! through a streaming decoder) and hands out records borrowed from it, so a captured stdout of
//! any size is converted in constant memory. Two exceptions hold one file in memory: JSON
//! payloads (parsed as one document, as CloudWatch delivers them), and CloudWatch export files,
//! whose lines are not time-sorted and are sorted per file (export objects are small; their
//! messages are kept in one buffer, not one allocation per line).

use crate::convert::record::{LogRecord, LogRecordRef};
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read};
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

/// Read buffer size: a syscall (or a gzip block) is amortised over hundreds of lines.
const BUF_SIZE: usize = 256 * 1024;

/// Reads one file into records. `log_group` fills in the group where the data does not say.
///
/// Holds every record of the file in memory; prefer [`for_each_record`], which streams.
pub fn read_file(path: &Path, log_group: &str) -> Result<Vec<LogRecord>, FileError> {
    let mut out = Vec::new();
    for_each_record(path, log_group, |r| out.push(r.to_record()))?;
    Ok(out)
}

/// Reads one file and hands its records to `f`, in the order [`read_file`] returns them,
/// without holding the file in memory (see the module documentation for the two exceptions).
/// `log_group` fills in the group where the data does not say. On an error, the records before
/// it have already been handed to `f`.
pub fn for_each_record<F>(path: &Path, log_group: &str, f: F) -> Result<(), FileError>
where
    F: FnMut(LogRecordRef<'_>),
{
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for_each_record_in(file, path, &stream_of(path), log_group, f)
}

/// The log stream of a file's records that do not name one: its directory's name, as in an
/// export tree (`<prefix>/<task>/<stream>/000000.gz`).
pub fn stream_of(path: &Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// [`for_each_record`] over any reader (standard input for `spanline convert -`): `name` names
/// the input in errors, `stream` is the log stream of records that do not name one.
pub fn for_each_record_in<R, F>(
    input: R,
    name: &Path,
    stream: &str,
    log_group: &str,
    mut f: F,
) -> Result<(), FileError>
where
    R: Read,
    F: FnMut(LogRecordRef<'_>),
{
    let io = |source| FileError::Io {
        path: name.to_owned(),
        source,
    };
    let mut raw = BufReader::with_capacity(BUF_SIZE, input);
    let gzip = raw.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(
            BUF_SIZE,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    };
    if starts_as_text(&mut *reader).map_err(io)? {
        return for_each_text_record(&mut *reader, log_group, stream, f).map_err(io);
    }
    // JSON (or text that only looks like it at first): parsed whole, as before.
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    let records = parse_content(&text, log_group, stream).map_err(|reason| FileError::Payload {
        path: name.to_owned(),
        reason,
    })?;
    for r in &records {
        f(r.as_ref());
    }
    Ok(())
}

/// Whether the content can be streamed as text: its first non-whitespace character, within the
/// first buffer, is not `{`. Anything unusual (no such character in the first buffer, a
/// non-ASCII one that might be whitespace) answers `false`, so that the whole-content path
/// decides exactly as [`parse_content`] does.
fn starts_as_text(reader: &mut dyn BufRead) -> std::io::Result<bool> {
    let head = reader.fill_buf()?;
    // `char::is_whitespace` on ASCII: space, \t, \n, \x0B, \x0C, \r.
    let first = head
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r'));
    Ok(matches!(first, Some(&b) if b != b'{' && b.is_ascii()))
}

/// Calls `f` with every line of `reader` (terminator removed; `true` when one was there),
/// borrowed from the reader's buffer when the line lies in one buffer, else from a reused copy.
fn for_each_line<R: BufRead + ?Sized>(
    reader: &mut R,
    mut f: impl FnMut(&[u8], bool),
) -> std::io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !carry.is_empty() {
                f(&carry, false);
            }
            return Ok(());
        }
        let len = buf.len();
        let mut pos = 0;
        if !carry.is_empty() {
            // The end of a line that started in the previous buffer.
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    carry.extend_from_slice(&buf[..i]);
                    f(&carry, true);
                    carry.clear();
                    pos = i + 1;
                }
                None => {
                    carry.extend_from_slice(buf);
                    reader.consume(len);
                    continue;
                }
            }
        }
        let rest = &buf[pos..];
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            f(&rest[at..nl], true);
            at = nl + 1;
        }
        carry.extend_from_slice(&rest[at..]);
        reader.consume(len);
    }
}

/// One export line kept for sorting: time, and the message's range in the shared buffer.
struct ExportEntry {
    timestamp_ms: i64,
    start: usize,
    end: usize,
}

/// Text content: plain captured stdout (one record per non-empty line, streamed), or a
/// CloudWatch export file (`<ISO-8601>Z <message>` lines, continuation lines without the
/// timestamp, sorted by time because export files are not). From the first timestamped line on,
/// the rest of the content is read as an export file and handed out sorted at the end; the
/// untimestamped lines before it were handed out as they came, which is where a stable sort by
/// time would have put them (time 0 first).
fn for_each_text_record<R: BufRead + ?Sized>(
    reader: &mut R,
    log_group: &str,
    stream: &str,
    mut f: impl FnMut(LogRecordRef<'_>),
) -> std::io::Result<()> {
    let mut export = false;
    // Export messages, one after the other, and where each one is.
    let mut messages = String::new();
    let mut entries: Vec<ExportEntry> = Vec::new();
    for_each_line(reader, |bytes, terminated| {
        let text = String::from_utf8_lossy(bytes);
        // As `str::lines`: a `\r` before the `\n` belongs to the terminator.
        let line = match text.strip_suffix('\r') {
            Some(l) if terminated => l,
            _ => &*text,
        };
        if let Some(ts) = export_timestamp(line) {
            export = true;
            let start = messages.len();
            messages.push_str(&line[25..]);
            entries.push(ExportEntry {
                timestamp_ms: ts,
                start,
                end: messages.len(),
            });
        } else if export {
            // A continuation line of a multi-line message: the last message ends the buffer.
            messages.push('\n');
            messages.push_str(line);
            if let Some(last) = entries.last_mut() {
                last.end = messages.len();
            }
        } else if !line.is_empty() {
            f(LogRecordRef {
                log_group,
                log_stream: stream,
                event_id: "",
                timestamp_ms: 0,
                message: line,
            });
        }
    })?;
    // Stable, so lines of the same millisecond keep their file order.
    entries.sort_by_key(|e| e.timestamp_ms);
    for e in &entries {
        f(LogRecordRef {
            log_group,
            log_stream: stream,
            event_id: "",
            timestamp_ms: e.timestamp_ms,
            message: messages.get(e.start..e.end).unwrap_or_default(),
        });
    }
    Ok(())
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

fn text_records(text: &str, log_group: &str, stream: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    // Reading from a byte slice cannot fail.
    let _ = for_each_text_record(&mut text.as_bytes(), log_group, stream, |r| {
        out.push(r.to_record())
    });
    out
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

/// `2024-02-09T08:42:44.078Z ` at the start of an export line (25 bytes): its time in ms.
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

    /// The whole-text implementation the streaming one replaced: the reference it must match.
    fn reference_text_records(text: &str, log_group: &str, stream: &str) -> Vec<LogRecord> {
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
            out.sort_by_key(|r| r.timestamp_ms);
        }
        out
    }

    /// Streams `bytes` through a reader whose buffer holds `cap` bytes.
    fn streamed(bytes: &[u8], cap: usize) -> Vec<LogRecord> {
        let mut reader = BufReader::with_capacity(cap, bytes);
        let mut out = Vec::new();
        for_each_text_record(&mut reader, "g", "s", |r| out.push(r.to_record())).unwrap();
        out
    }

    proptest::proptest! {
        #[test]
        fn streaming_matches_the_whole_text_reading(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "2024-02-09T08:42:45.000Z second", "2024-02-09T08:42:44.078Z first",
                "2024-02-09T08:42:44.078Z same ms", "  continued", "plain", "", "\n", "\r\n",
                "\r", "é", "SPLN1 x;", "\t",
            ]), 0..40),
            cap in 1usize..64,
        ) {
            let text: String = parts.concat();
            let want = reference_text_records(&text, "g", "s");
            proptest::prop_assert_eq!(streamed(text.as_bytes(), cap), want.clone());
            proptest::prop_assert_eq!(text_records(&text, "g", "s"), want);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_line_by_line() {
        let bytes = b"ok\n\xff\xfe bad\r\nlast \xe2\x82";
        let got = streamed(bytes, 3);
        let want = reference_text_records(&String::from_utf8_lossy(bytes), "g", "s");
        assert_eq!(got, want);
        assert_eq!(got[1].message, "\u{fffd}\u{fffd} bad");
    }

    #[test]
    fn files_stream_plain_gzip_and_json() {
        let dir = std::env::temp_dir().join(format!("spanline-file-{}", std::process::id()));
        let stream_dir = dir.join("stream-a");
        std::fs::create_dir_all(&stream_dir).unwrap();
        let text = "2024-02-09T08:42:45.000Z second\n2024-02-09T08:42:44.078Z first\n  more\n";
        let plain = stream_dir.join("000000");
        std::fs::write(&plain, text).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let gz_path = stream_dir.join("000001.gz");
        std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
        let want = reference_text_records(text, "/aws/lambda/f", "stream-a");
        assert_eq!(read_file(&plain, "/aws/lambda/f").unwrap(), want);
        assert_eq!(read_file(&gz_path, "/aws/lambda/f").unwrap(), want);
        let json = stream_dir.join("events.json");
        std::fs::write(
            &json,
            "\n {\"events\":[{\"logStreamName\":\"s\",\"timestamp\":7,\"message\":\"m\"}]}",
        )
        .unwrap();
        let r = read_file(&json, "g").unwrap();
        assert_eq!((r[0].timestamp_ms, r[0].message.as_str()), (7, "m"));
        std::fs::write(&json, "{\"other\":1}").unwrap();
        assert!(matches!(
            read_file(&json, "g"),
            Err(FileError::Payload { .. })
        ));
        // Text that merely starts with `{` is still text.
        std::fs::write(&json, "{not json\nSPLN1 x;\n").unwrap();
        assert_eq!(read_file(&json, "g").unwrap().len(), 2);
        assert!(matches!(
            read_file(&dir.join("missing"), "g"),
            Err(FileError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
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
