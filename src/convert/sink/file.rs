//! The file sink: OTLP/JSON lines, one `ExportTraceServiceRequest` per line (the shape of the
//! OpenTelemetry Collector's file exporter and of `otlp-stdout-span-exporter`), to a file or to
//! stdout (`-`), for piping into other tools or replaying into a collector later.

use crate::convert::assemble::Span;
use crate::convert::sink::otlp::{encode_request, to_json};
use crate::convert::sink::{Delivery, Sink, SinkError};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Spans per line unless set otherwise: the OTLP exporters' default batch size, which keeps
/// lines a reader can hold in memory.
pub const DEFAULT_SPANS_PER_LINE: usize = 512;

enum Output {
    Stdout(io::Stdout),
    File(File),
    Writer(Box<dyn Write + Send>),
}

impl Output {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(o) => {
                let mut lock = o.lock();
                lock.write_all(b)?;
                lock.flush()
            }
            Output::File(f) => f.write_all(b),
            Output::Writer(w) => {
                w.write_all(b)?;
                w.flush()
            }
        }
    }
}

/// Writes OTLP/JSON lines. Each `send` ends with the lines handed to the operating system
/// (one `write_all`, no user-space buffering), so a checkpoint taken after `Ok` never runs ahead
/// of the output; `shutdown` also syncs a regular file to disk (a pipe, a FIFO or `/dev/null`
/// is a fine output too: there is nothing to sync).
///
/// Writes are blocking: they are small and sequential, and this is the last stage, so there is
/// nothing to overlap them with.
pub struct FileSink {
    out: Option<Output>,
    target: PathBuf,
    spans_per_line: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("target", &self.target)
            .field("spans_per_line", &self.spans_per_line)
            .field("open", &self.out.is_some())
            .finish()
    }
}

impl FileSink {
    /// Appends to `path` (created if missing), or writes to stdout when `path` is `-`.
    /// Appending, not truncating: a resumed run adds to what earlier runs wrote.
    pub fn open(path: impl AsRef<Path>) -> Result<FileSink, SinkError> {
        let path = path.as_ref();
        let out = if path == Path::new("-") {
            Output::Stdout(io::stdout())
        } else {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    SinkError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                })?;
            Output::File(f)
        };
        Ok(FileSink::with_output(out, path.to_path_buf()))
    }

    /// Writes to any writer (a test double, a pipe).
    pub fn to_writer(w: impl Write + Send + 'static) -> FileSink {
        FileSink::with_output(Output::Writer(Box::new(w)), PathBuf::from("<writer>"))
    }

    fn with_output(out: Output, target: PathBuf) -> FileSink {
        FileSink {
            out: Some(out),
            target,
            spans_per_line: DEFAULT_SPANS_PER_LINE,
            buf: Vec::new(),
        }
    }

    /// Sets the most spans written in one line (at least 1).
    pub fn spans_per_line(mut self, n: usize) -> FileSink {
        self.spans_per_line = n.max(1);
        self
    }
}

impl Sink for FileSink {
    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        let Some(out) = self.out.as_mut() else {
            return Err(SinkError::Config("send after shutdown".into()));
        };
        if spans.is_empty() {
            return Ok(Delivery::default());
        }
        self.buf.clear();
        for chunk in spans.chunks(self.spans_per_line) {
            self.buf
                .extend_from_slice(to_json(&encode_request(chunk)).as_bytes());
            self.buf.push(b'\n');
        }
        out.write_all(&self.buf).map_err(|e| {
            SinkError::Io(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.target.display()),
            ))
        })?;
        Ok(Delivery {
            accepted: spans.len() as u64,
            rejected: 0,
            message: None,
            attempts: 1,
            ..Default::default()
        })
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        match self.out.take() {
            None => Ok(()),
            Some(Output::File(f)) => {
                // Only a regular file can be synced: `fsync` on a pipe, a FIFO or a character
                // device such as /dev/null fails with EINVAL, and there is nothing to make
                // durable there anyway.
                let regular = f.metadata().map(|m| m.file_type().is_file());
                match regular {
                    Ok(true) => f.sync_data(),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                }
                .map_err(|e| {
                    SinkError::Io(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.target.display()),
                    ))
                })
            }
            Some(Output::Stdout(o)) => Ok(o.lock().flush()?),
            Some(Output::Writer(mut w)) => Ok(w.flush()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::sync::{Arc, Mutex};

    fn span(i: u8) -> Span {
        Span::from_data(&crate::convert::assemble::SpanData {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([i; 8]),
            parent_span_id: None,
            name: format!("s{i}"),
            kind: SpanKind::Server,
            status: StatusCode::Ok,
            status_message: String::new(),
            start_unix_nano: 1_000,
            end_unix_nano: 2_000,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            service: "svc".into(),
            resource: Vec::new(),
            dropped: (0, 0, 0),
        })
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(c: &Capture) -> Vec<ExportTraceServiceRequest> {
        let text = String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn one_request_per_line_split_at_the_line_limit() {
        let cap = Capture::default();
        let mut sink = FileSink::to_writer(cap.clone()).spans_per_line(2);
        let spans: Vec<Span> = (1..=5).map(span).collect();
        let d = sink.send(&spans).await.unwrap();
        assert_eq!((d.accepted, d.rejected, d.attempts), (5, 0, 1));
        let reqs = lines(&cap);
        let counts: Vec<usize> = reqs
            .iter()
            .map(|r| r.resource_spans[0].scope_spans[0].spans.len())
            .collect();
        assert_eq!(counts, [2, 2, 1]);
        assert_eq!(reqs[0], encode_request(&spans[..2]));
        // Nothing written for nothing sent.
        sink.send(&[]).await.unwrap();
        assert_eq!(lines(&cap).len(), 3);
    }

    #[tokio::test]
    async fn file_is_appended_and_shutdown_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("spanline-file-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&path);
        for i in 1..=2 {
            let mut sink = FileSink::open(&path).unwrap();
            sink.send(&[span(i)]).await.unwrap();
            sink.shutdown().await.unwrap();
            sink.shutdown().await.unwrap();
            assert!(matches!(
                sink.send(&[span(i)]).await,
                Err(SinkError::Config(_))
            ));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let names: Vec<String> = text
            .lines()
            .map(|l| {
                let r: ExportTraceServiceRequest = serde_json::from_str(l).unwrap();
                r.resource_spans[0].scope_spans[0].spans[0].name.clone()
            })
            .collect();
        assert_eq!(names, ["s1", "s2"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unopenable_path_is_an_io_error_naming_it() {
        let e = FileSink::open("/nonexistent-dir-spanline/x.jsonl").unwrap_err();
        assert!(matches!(e, SinkError::Io(_)));
        assert!(
            e.to_string().contains("/nonexistent-dir-spanline/x.jsonl"),
            "{e}"
        );
    }

    #[test]
    fn dash_is_stdout() {
        let sink = FileSink::open("-").unwrap();
        assert!(matches!(sink.out, Some(Output::Stdout(_))));
    }

    #[tokio::test]
    async fn dev_null_and_a_fifo_are_fine_outputs() {
        // `fsync` on a character device or a pipe fails (EINVAL): it must not fail the run.
        let mut sink = FileSink::open("/dev/null").unwrap();
        sink.send(&[span(1)]).await.unwrap();
        sink.shutdown().await.unwrap();

        let dir = std::env::temp_dir().join(format!("spanline-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("spans.fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
        };
        let mut sink = FileSink::open(&fifo).unwrap();
        sink.send(&[span(1)]).await.unwrap();
        sink.shutdown().await.unwrap();
        drop(sink);
        assert!(reader.join().unwrap().contains("\"s1\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
