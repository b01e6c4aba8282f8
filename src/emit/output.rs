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
///
/// Each line goes to file descriptor 1 with one `write(2)`, not through std's `Stdout` (a
/// re-entrant lock around a line buffer): measured in `benches/emit.rs`, the lock and the buffer
/// copy cost more than the system call's own overhead beyond a bare `write`. Lines never
/// interleave:
/// - a line of at most [`PIPE_BUF`] bytes (4096 on Linux) is written by one `write(2)`, which
///   POSIX makes atomic on a pipe (Lambda's stdout) — no lock is needed, not even against other
///   processes sharing the pipe;
/// - a longer line (span lines reach `MAX_LINE`, 8 KiB) may be split by the kernel into several
///   writes, so it is written while holding [`LINES`] exclusively (short lines hold it shared:
///   they never wait on each other) and std's stdout lock, the one `println!` takes: no thread
///   of this process writes between its parts. Another *process* writing to the same pipe could
///   still land between them; on Lambda only the runtime's own process writes there.
///
/// Text that user code printed with `print!` and no newline yet stays in std's buffer and is not
/// flushed before the span line: a span line is never glued to the end of a partial user line
/// (through std's buffer it would be, and the converter would miss it).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdoutOutput;

/// Bytes a single `write(2)` to a pipe writes atomically (POSIX `PIPE_BUF`; 4096 on Linux, the
/// POSIX minimum is 512 and other Unix systems use 512 to 4096 — 512 is assumed off Linux).
#[cfg(target_os = "linux")]
pub const PIPE_BUF: usize = 4096;
/// Bytes a single `write(2)` to a pipe writes atomically (POSIX minimum; 4096 on Linux).
#[cfg(not(target_os = "linux"))]
pub const PIPE_BUF: usize = 512;

impl Output for StdoutOutput {
    #[inline]
    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        write_fd1(line)
    }
}

#[cfg(unix)]
fn write_fd1(line: &[u8]) -> std::io::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 1 belongs to the process for its whole life (std's own `Stdout` writes to it
    // the same way); `ManuallyDrop` keeps this handle from closing it. If fd 1 was closed the
    // write fails with EBADF, which is counted like any other failed write.
    let fd1 = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
    if line.len() <= PIPE_BUF {
        // Shared: short lines go out concurrently, only never inside a long line's parts. A
        // poisoned lock guards no data (`()`), so its guard is used as is.
        let _shared = LINES.read().unwrap_or_else(|e| e.into_inner());
        // `write_all` loops only on a short write, which a pipe does not do at this size (and
        // retries EINTR).
        (&*fd1).write_all(line)
    } else {
        long_line(&fd1, line)
    }
}

/// Held shared by every line of at most [`PIPE_BUF`] bytes and exclusively by a longer one,
/// whose several `write(2)` calls no other span line of this process may land between.
#[cfg(unix)]
static LINES: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[cfg(unix)]
#[cold]
#[inline(never)]
fn long_line(fd1: &std::fs::File, line: &[u8]) -> std::io::Result<()> {
    let _exclusive = LINES.write().unwrap_or_else(|e| e.into_inner());
    let _stdout = std::io::stdout().lock();
    let mut f = fd1;
    f.write_all(line)
}

#[cfg(not(unix))]
fn write_fd1(line: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line)?;
    out.flush()
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Read;

    const CHILD: &str = "SPANLINE_OUTPUT_TEST_CHILD";
    const THREADS: usize = 4;
    const LINES: usize = 400;

    fn line(thread: usize, seq: usize) -> Vec<u8> {
        // Odd threads write lines over PIPE_BUF (the kernel may split them), even ones short.
        let len = if thread % 2 == 1 {
            3 * PIPE_BUF / 2
        } else {
            200
        };
        let mut l = format!("L{thread}:{seq}:").into_bytes();
        l.resize(len - 1, b'a' + thread as u8);
        l.push(b'\n');
        l
    }

    /// Threads writing short and long lines to standard output at once, into a pipe kept full
    /// by a slow reader: every line arrives whole.
    #[test]
    fn lines_never_interleave_on_a_full_pipe() {
        if std::env::var_os(CHILD).is_some() {
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    std::thread::spawn(move || {
                        for seq in 0..LINES {
                            StdoutOutput.write_line(&line(t, seq)).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "emit::output::tests::lines_never_interleave_on_a_full_pipe",
                "--nocapture",
                "-q",
                "--test-threads",
                "1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let (mut all, mut buf) = (Vec::new(), [0u8; 64]);
        loop {
            // Small reads keep the pipe full, so long writes are split by the kernel.
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert!(child.wait().unwrap().success());
        let ours: Vec<&[u8]> = all
            .split_inclusive(|&b| b == b'\n')
            // `-q`: the harness prints nothing on the test's line, only lines of its own.
            .filter(|l| l.first() == Some(&b'L'))
            .collect();
        let mut seen = 0;
        for l in &ours {
            let text = String::from_utf8_lossy(l);
            let head: Vec<&str> = text.splitn(3, ':').collect();
            let t: usize = head[0]
                .trim_start_matches('L')
                .parse()
                .unwrap_or(usize::MAX);
            let seq: usize = head
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            assert!(t < THREADS && seq < LINES, "a mangled line: {:.80}", text);
            assert_eq!(
                *l,
                line(t, seq).as_slice(),
                "line {t}:{seq} arrived cut or mixed"
            );
            seen += 1;
        }
        assert_eq!(seen, THREADS * LINES);
    }
}
