//! Where span lines go: the output seam of the emitter.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A destination for complete span lines. Implementations must write the whole line (which ends
/// with `\n`) with one `write_all`, so concurrent spans never interleave inside a line.
pub trait Output: Send + Sync + 'static {
    /// Writes one line. Errors are counted by the tracer, never surfaced to the handler.
    fn write_line(&self, line: &[u8]) -> std::io::Result<()>;
}

/// Standard output, the default: Lambda captures it into CloudWatch Logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdoutOutput;

impl Output for StdoutOutput {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(line)?;
        // Stdout is line-buffered; the line ends in '\n', so this is normally a no-op.
        out.flush()
    }
}

/// Any writer (a file, a pipe, a socket), behind a mutex.
#[derive(Debug)]
pub struct WriterOutput<W>(pub Mutex<W>);

impl<W: Write + Send + 'static> WriterOutput<W> {
    /// Wraps a writer.
    pub fn new(w: W) -> Self {
        WriterOutput(Mutex::new(w))
    }
}

impl<W: Write + Send + 'static> Output for WriterOutput<W> {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut w = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("output writer poisoned"))?;
        w.write_all(line)
    }
}

/// Keeps lines in memory: the test double for handlers and for this crate's own tests.
#[derive(Clone, Debug, Default)]
pub struct CaptureOutput(Arc<Mutex<Vec<u8>>>);

impl CaptureOutput {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The lines written so far, without their newlines.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    /// Forgets what was written.
    pub fn clear(&self) {
        if let Ok(mut b) = self.0.lock() {
            b.clear();
        }
    }
}

impl Output for CaptureOutput {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("capture poisoned"))?
            .extend_from_slice(line);
        Ok(())
    }
}

impl<O: Output> Output for Arc<O> {
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        (**self).write_line(line)
    }
}
