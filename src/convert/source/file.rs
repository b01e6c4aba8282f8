//! Offline inputs: files, directory trees and standard input holding CloudWatch data.
//!
//! Recognised by content, so users need not say what they have: gzip (single or concatenated
//! members, as Firehose writes) is unpacked first; then JSON payloads — a subscription payload,
//! the Lambda subscription event, `aws logs filter-log-events` / `get-log-events` output — go
//! through the one payload decoder ([`super::payload`]); anything else is text: a CloudWatch
//! export file (lines `<ISO-8601>Z <message>`, continuation lines without a timestamp belong to
//! the line before) or plain captured stdout (one message per line; JSON-lines output of the
//! Lambda JSON log format is text too).
//!
//! Everything is streamed into [`RecordBatch`]es, in bounded memory whatever the input's size:
//! * a line longer than [`Limits::max_line`] keeps its first part; the rest is skipped up to
//!   the next newline and counted;
//! * gzip inflates within [`Limits::max_inflated`] (JSON payloads within
//!   [`Limits::max_payload`]): beyond, the input is an error naming the limit;
//! * export files are not time-sorted: their lines are sorted in windows of
//!   [`EXPORT_SORT_WINDOW`] bytes (a file larger than one window is sorted window by window, and
//!   counted);
//! * invalid UTF-8 is replaced (U+FFFD) and the line counted as lossy.
//!
//! [`FileSource`](super::local::FileSource) reads a list of inputs on a thread of its own and
//! hands the batches to the pipeline.

use super::payload::{self, BatchOut, Found, Limits, PayloadError};
use crate::convert::record::{LogRecord, RecordBatch};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes of export lines sorted together.
pub const EXPORT_SORT_WINDOW: usize = 4 << 20;

/// Read buffer size: a syscall (or a gzip block) is amortised over hundreds of lines. Kept
/// under 128 KiB, where allocators (glibc's default mmap threshold, the address sanitizer's
/// large-chunk allocator) switch to a fresh mapping per buffer: every small input would pay
/// for an mmap, its page faults and an munmap.
const BUF_SIZE: usize = 64 * 1024;

/// Why an input could not be read (the records before the error were handed out).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file or directory could not be read (or its gzip does not inflate).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON that looked like a CloudWatch payload but is not one.
    #[error("{path}: {source}")]
    Payload {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: PayloadError,
    },
    /// Inflated beyond a limit.
    #[error("{path}: inflates to more than {} ({limit_name}): stopped there", payload::human_bytes(*limit))]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        limit: u64,
        /// The flag that sets it.
        limit_name: &'static str,
    },
    /// The pipeline stopped taking records.
    #[error("stopped")]
    Stopped,
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

/// The log stream an export key or path holds: the segments between the task id and the file
/// name, as CreateExportTask lays them out (`<prefix>/<taskId>/<stream>/000000.gz`, the stream
/// keeping its `/`: `2024/05/01/[$LATEST]abc…`). The task id is a UUID; when no segment after
/// `prefix` is one (a tree copied elsewhere), the stream is the file's parent directory.
pub fn stream_of_key(prefix: &str, key: &str) -> String {
    let mut segs: Vec<&str> = key.split('/').collect();
    segs.pop(); // the file name
    if let Some(i) = segs.iter().rposition(|s| is_uuid(s)) {
        return segs[i + 1..].join("/");
    }
    let rel = key
        .strip_prefix(prefix)
        .unwrap_or(key)
        .trim_start_matches('/');
    let mut rel: Vec<&str> = rel.split('/').collect();
    rel.pop();
    rel.last().map(|s| (*s).to_owned()).unwrap_or_default()
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The log stream of a file's records that do not name one: as in an export tree (see
/// [`stream_of_key`]), the whole path under the task id, else the file's directory name.
pub fn stream_of(path: &Path) -> String {
    stream_of_key("", &path.to_string_lossy())
}

/// What reading an input found besides its records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Payload counts (JSON inputs) and records.
    pub found: Found,
    /// Lines whose invalid UTF-8 was replaced.
    pub lossy_lines: u64,
    /// Export files larger than one sort window (sorted window by window).
    pub export_windows: u64,
}

impl InputStats {
    /// The bounds reading reached, by the names the summary counts them under: lines cut at
    /// `--max-line` (`max_line`), export files sorted window by window
    /// (`export_sort_window`).
    pub fn limits(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("max_line", self.found.long_lines),
            ("export_sort_window", self.export_windows),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
    }
}

/// Whether the content is a JSON payload rather than text: it starts with `{` and one of the
/// payload keys appears in the first buffer (a line of the JSON log format is text).
fn looks_like_payload(head: &[u8]) -> bool {
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return false;
    }
    let has = |needle: &[u8]| memchr::memmem::find(head, needle).is_some();
    if has(b"\"logEvents\"") || has(b"\"awslogs\"") {
        return true;
    }
    // CLI output: `"events"` whose value is an array.
    memchr::memmem::find_iter(head, b"\"events\"").any(|at| {
        head[at + 8..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b':')
            && head[at + 8..]
                .iter()
                .skip_while(|b| **b != b':')
                .skip(1)
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'[')
    })
}

/// Reads one input into `out`. `name` names it in errors; `stream` is the log stream of records
/// that do not name one, `log_group` their group.
pub fn read_input<R: Read>(
    input: R,
    name: &Path,
    stream: &str,
    log_group: &str,
    limits: Limits,
    out: &mut BatchOut<'_>,
) -> Result<InputStats, FileError> {
    let io = |source: std::io::Error| match payload::over_limit(&source) {
        Some((limit, limit_name)) => FileError::TooLarge {
            path: name.to_owned(),
            limit,
            limit_name,
        },
        None => FileError::Io {
            path: name.to_owned(),
            source,
        },
    };
    let mut raw = BufReader::with_capacity(BUF_SIZE, input);
    let gzip = raw.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(
            BUF_SIZE,
            payload::Limited::new(
                flate2::bufread::MultiGzDecoder::new(raw),
                limits.max_inflated,
                "--max-inflated",
            ),
        ))
    } else {
        Box::new(raw)
    };
    if looks_like_payload(reader.fill_buf().map_err(io)?) {
        let found =
            payload::decode_stream(reader, limits, log_group, out).map_err(|e| match e {
                PayloadError::TooLarge { limit, limit_name } => FileError::TooLarge {
                    path: name.to_owned(),
                    limit,
                    limit_name,
                },
                PayloadError::Stopped => FileError::Stopped,
                PayloadError::Io(source) => io(source),
                source => FileError::Payload {
                    path: name.to_owned(),
                    source,
                },
            })?;
        return Ok(InputStats {
            found,
            ..InputStats::default()
        });
    }
    read_text(&mut *reader, log_group, stream, limits, out).map_err(|e| match e {
        TextError::Io(e) => io(e),
        TextError::Stopped => FileError::Stopped,
    })
}

/// Reads a file (see [`read_input`]) and returns its records: for tests and small inputs.
pub fn read_file(path: &Path, log_group: &str) -> Result<Vec<LogRecord>, FileError> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    collect(file, path, &stream_of(path), log_group, Limits::default())
}

/// Reads content held in memory (see [`read_input`]) and returns its records.
pub fn read_bytes(
    bytes: &[u8],
    stream: &str,
    log_group: &str,
    limits: Limits,
) -> Result<Vec<LogRecord>, FileError> {
    collect(bytes, Path::new("<memory>"), stream, log_group, limits)
}

fn collect<R: Read>(
    input: R,
    name: &Path,
    stream: &str,
    log_group: &str,
    limits: Limits,
) -> Result<Vec<LogRecord>, FileError> {
    let mut records = Vec::new();
    let mut flush = |b: RecordBatch| {
        records.extend(b.iter().map(|r| r.to_record()));
        Some(RecordBatch::default())
    };
    let mut out = BatchOut::new(RecordBatch::default(), limits.batch_bytes, &mut flush);
    let r = read_input(input, name, stream, log_group, limits, &mut out);
    out.flush_now();
    drop(out);
    r.map(|_| records)
}

/// Why reading text stopped.
enum TextError {
    Io(std::io::Error),
    Stopped,
}

/// Calls `f` with every line of `reader` (terminator removed; `true` when one was there),
/// borrowed from the reader's buffer when the line lies in one buffer, else from a reused copy
/// of at most `max_line` bytes; the rest of a longer line is skipped and `f` is told so.
fn for_each_line<R: BufRead + ?Sized>(
    reader: &mut R,
    max_line: usize,
    mut f: impl FnMut(&[u8], bool, bool) -> bool,
) -> Result<(), TextError> {
    let mut carry: Vec<u8> = Vec::new();
    // The current line was cut: skip to its end.
    let mut cut = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TextError::Io(e)),
        };
        if buf.is_empty() {
            if (!carry.is_empty() || cut) && !f(&carry, false, cut) {
                return Err(TextError::Stopped);
            }
            return Ok(());
        }
        let len = buf.len();
        let mut pos = 0;
        if !carry.is_empty() || cut {
            // The end of a line that started in an earlier buffer.
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    if !cut {
                        let room = max_line.saturating_sub(carry.len());
                        cut = i > room;
                        carry.extend_from_slice(&buf[..i.min(room)]);
                    }
                    if !f(&carry, true, cut) {
                        return Err(TextError::Stopped);
                    }
                    carry.clear();
                    pos = i + 1;
                }
                None => {
                    if !cut {
                        let room = max_line.saturating_sub(carry.len());
                        cut = len > room;
                        carry.extend_from_slice(&buf[..len.min(room)]);
                    }
                    reader.consume(len);
                    continue;
                }
            }
        }
        let rest = &buf[pos..];
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            let line = &rest[at..nl];
            let ok = if line.len() > max_line {
                f(&line[..max_line], true, true)
            } else {
                f(line, true, false)
            };
            if !ok {
                return Err(TextError::Stopped);
            }
            at = nl + 1;
        }
        let tail = &rest[at..];
        cut = tail.len() > max_line;
        carry.extend_from_slice(&tail[..tail.len().min(max_line)]);
        reader.consume(len);
    }
}

/// One export line kept for sorting: time, and the message's range in the window's buffer.
struct ExportEntry {
    timestamp_ms: i64,
    lossy: bool,
    start: usize,
    end: usize,
}

/// Export lines waiting to be sorted.
#[derive(Default)]
struct ExportWindow {
    messages: String,
    entries: Vec<ExportEntry>,
}

impl ExportWindow {
    /// Sorts (stable: lines of one millisecond keep their order) and hands out the window.
    fn flush(&mut self, origin: u32, out: &mut BatchOut<'_>) -> bool {
        self.entries.sort_by_key(|e| e.timestamp_ms);
        for e in &self.entries {
            let msg = self.messages.get(e.start..e.end).unwrap_or_default();
            out.batch
                .push_read(origin, "", e.timestamp_ms, msg, e.lossy);
            if !out.maybe_flush() {
                return false;
            }
        }
        self.entries.clear();
        self.messages.clear();
        true
    }
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

/// Text content: plain captured stdout (one record per non-empty line, streamed), or a
/// CloudWatch export file (`<ISO-8601>Z <message>` lines, continuation lines without the
/// timestamp, sorted by time within windows). From the first timestamped line on, the rest of
/// the content is read as an export file; the untimestamped lines before it were handed out as
/// they came, which is where a stable sort by time would have put them (time 0 first).
fn read_text<R: BufRead + ?Sized>(
    reader: &mut R,
    log_group: &str,
    stream: &str,
    limits: Limits,
    out: &mut BatchOut<'_>,
) -> Result<InputStats, TextError> {
    let origin = out.batch.origin(log_group, stream);
    let mut export = false;
    let mut window = ExportWindow::default();
    let mut read = InputStats::default();
    let mut stopped = false;
    for_each_line(reader, limits.max_line, |bytes, terminated, cut| {
        if cut {
            read.found.long_lines += 1;
        }
        let text = String::from_utf8_lossy(bytes);
        let lossy = matches!(text, std::borrow::Cow::Owned(_));
        if lossy {
            read.lossy_lines += 1;
        }
        // As `str::lines`: a `\r` before the `\n` belongs to the terminator.
        let line = match text.strip_suffix('\r') {
            Some(l) if terminated => l,
            _ => &*text,
        };
        if let Some(ts) = export_timestamp(line) {
            if !export {
                // Room for a whole window at once: growing by doubling would copy it and,
                // for a moment, hold it twice. Pages are only touched as they are filled.
                window
                    .messages
                    .reserve(EXPORT_SORT_WINDOW + limits.max_line + 1);
            }
            export = true;
            if window.messages.len() >= EXPORT_SORT_WINDOW {
                read.export_windows += 1;
                if !window.flush(origin, out) {
                    stopped = true;
                    return false;
                }
            }
            read.found.records += 1;
            let start = window.messages.len();
            window.messages.push_str(&line[25..]);
            window.entries.push(ExportEntry {
                timestamp_ms: ts,
                lossy,
                start,
                end: window.messages.len(),
            });
        } else if export {
            // A continuation line of a multi-line message: the last message ends the buffer.
            if let Some(last) = window.entries.last_mut() {
                if window.messages.len() - last.start < limits.max_line {
                    window.messages.push('\n');
                    window.messages.push_str(line);
                    last.end = window.messages.len();
                    last.lossy |= lossy;
                } else {
                    read.found.long_lines += 1;
                }
            }
        } else if !line.is_empty() {
            out.batch.push_read(origin, "", 0, line, lossy);
            read.found.records += 1;
            if !out.maybe_flush() {
                stopped = true;
                return false;
            }
        }
        true
    })?;
    if stopped {
        return Err(TextError::Stopped);
    }
    if !window.flush(origin, out) {
        return Err(TextError::Stopped);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str, stream: &str, group: &str) -> Vec<LogRecord> {
        read_bytes(text.as_bytes(), stream, group, Limits::default()).unwrap()
    }

    #[test]
    fn export_lines_with_continuations() {
        let text = "2024-02-09T08:42:45.000Z second\n2024-02-09T08:42:44.078Z first\n  continued\n";
        let r = records(text, "s", "/aws/lambda/f");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].message, "first\n  continued");
        assert_eq!(r[0].timestamp_ms, 1_707_468_164_078);
        assert_eq!(r[1].log_group, "/aws/lambda/f");
    }

    #[test]
    fn subscription_payload_and_lambda_event() {
        let payload = r#"{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"/aws/lambda/f","logStream":"s","subscriptionFilters":["x"],"logEvents":[{"id":"1","timestamp":5,"message":"m"}]}"#;
        let r = records(payload, "", "");
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
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let event = format!(r#"{{"awslogs":{{"data":"{data}"}}}}"#);
        assert_eq!(records(&event, "", ""), r);
        let control = payload.replace("DATA_MESSAGE", "CONTROL_MESSAGE");
        assert!(records(&control, "", "").is_empty());
    }

    /// The whole-text reading the streaming one replaced: the reference it must match.
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

    /// Streams `bytes` through a reader whose buffer holds `cap` bytes, batches of `batch`.
    fn streamed(bytes: &[u8], cap: usize, batch: usize) -> Vec<LogRecord> {
        let mut reader = BufReader::with_capacity(cap, bytes);
        let mut got = Vec::new();
        let mut flush = |b: RecordBatch| {
            got.extend(b.iter().map(|r| r.to_record()));
            Some(RecordBatch::default())
        };
        let mut out = BatchOut::new(RecordBatch::default(), batch, &mut flush);
        let limits = Limits::default();
        let _ = read_text(&mut reader, "g", "s", limits, &mut out);
        out.flush_now();
        drop(out);
        got
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
            batch in 1usize..256,
        ) {
            let text: String = parts.concat();
            let want = reference_text_records(&text, "g", "s");
            proptest::prop_assert_eq!(streamed(text.as_bytes(), cap, batch), want);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_line_by_line_and_counted() {
        let bytes = b"ok\n\xff\xfe bad\r\nlast \xe2\x82";
        let got = streamed(bytes, 3, 1 << 20);
        let want = reference_text_records(&String::from_utf8_lossy(bytes), "g", "s");
        assert_eq!(got, want);
        assert_eq!(got[1].message, "\u{fffd}\u{fffd} bad");
        let mut flush = |_: RecordBatch| Some(RecordBatch::default());
        let mut out = BatchOut::new(RecordBatch::default(), 1 << 20, &mut flush);
        let r = read_input(
            &bytes[..],
            Path::new("x"),
            "s",
            "g",
            Limits::default(),
            &mut out,
        )
        .ok()
        .unwrap();
        assert_eq!(r.lossy_lines, 2);
    }

    #[test]
    fn long_lines_keep_their_start_and_the_rest_is_skipped() {
        let limits = Limits {
            max_line: 10,
            ..Limits::default()
        };
        for cap in [3, 7, 64] {
            let text = format!("short\n{}\nafter\n{}", "x".repeat(50), "y".repeat(30));
            let mut reader = BufReader::with_capacity(cap, text.as_bytes());
            let mut got = Vec::new();
            let mut flush = |b: RecordBatch| {
                got.extend(b.iter().map(|r| r.message.to_owned()));
                Some(RecordBatch::default())
            };
            let mut out = BatchOut::new(RecordBatch::default(), 1 << 20, &mut flush);
            let r = read_text(&mut reader, "g", "s", limits, &mut out)
                .ok()
                .unwrap();
            out.flush_now();
            drop(out);
            assert_eq!(
                got,
                ["short", "xxxxxxxxxx", "after", "yyyyyyyyyy"],
                "cap {cap}"
            );
            assert_eq!(r.found.long_lines, 2, "cap {cap}");
        }
    }

    #[test]
    fn a_line_without_end_stays_within_the_limit() {
        // 8 MiB without a newline, read with a 1 KiB limit: one record of 1 KiB.
        let limits = Limits {
            max_line: 1024,
            ..Limits::default()
        };
        let big = vec![b'a'; 8 << 20];
        let r = read_bytes(&big, "s", "g", limits).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].message.len(), 1024);
    }

    #[test]
    fn a_gzip_bomb_is_an_error_naming_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![b'\n'; 1 << 20];
        for _ in 0..32 {
            std::io::Write::write_all(&mut gz, &chunk).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let limits = Limits {
            max_inflated: 4 << 20,
            ..Limits::default()
        };
        let e = read_bytes(&bomb, "s", "g", limits).unwrap_err();
        assert!(
            matches!(e, FileError::TooLarge { limit, .. } if limit == 4 << 20),
            "{e}"
        );
        assert!(e.to_string().contains("4 MiB (--max-inflated)"), "{e}");
    }

    #[test]
    fn json_log_format_lines_are_text_and_payloads_are_payloads() {
        let lines = "{\"timestamp\":\"t\",\"level\":\"INFO\",\"message\":\"SPLN1 x;\"}\n{\"message\":\"b\"}\n";
        let r = records(lines, "s", "g");
        assert_eq!(r.len(), 2);
        assert!(r[0].message.starts_with("{\"timestamp\""));
        let cli =
            "{\n  \"events\": [ {\"logStreamName\":\"s\",\"timestamp\":7,\"message\":\"m\"} ]\n}";
        let r = records(cli, "", "g");
        assert_eq!((r[0].timestamp_ms, r[0].message.as_str()), (7, "m"));
        assert!(matches!(
            read_bytes(b"{\"logEvents\": 3}", "s", "g", Limits::default()),
            Err(FileError::Payload { .. })
        ));
    }

    #[test]
    fn export_tree_streams_are_the_whole_path_under_the_task_id() {
        let task = "0f3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f8";
        let cases = [
            (
                "exports/",
                format!("exports/{task}/2024/05/01/[$LATEST]0123abcd/000000.gz"),
                "2024/05/01/[$LATEST]0123abcd",
            ),
            ("", format!("{task}/plain-stream/000001.gz"), "plain-stream"),
            (
                "",
                format!("/tmp/exp/{task}/2026/11/20/[$LATEST]abc/000000.gz"),
                "2026/11/20/[$LATEST]abc",
            ),
            (
                "copied/",
                "copied/some-stream/000000.gz".to_owned(),
                "some-stream",
            ),
        ];
        for (prefix, key, want) in cases {
            assert_eq!(stream_of_key(prefix, &key), want, "{key}");
        }
        assert_eq!(
            stream_of(Path::new(&format!(
                "/data/{task}/2026/11/20/[$LATEST]ab/000001.gz"
            ))),
            "2026/11/20/[$LATEST]ab"
        );
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
        // Text that merely starts with `{` is still text.
        std::fs::write(&json, "{not json\nSPLN1 x;\n").unwrap();
        assert_eq!(read_file(&json, "g").unwrap().len(), 2);
        assert!(matches!(
            read_file(&dir.join("missing"), "g"),
            Err(FileError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
