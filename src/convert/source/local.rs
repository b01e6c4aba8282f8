//! Files, directories and standard input as a pipeline [`Source`]: read in order on a thread
//! of their own with the file reader ([`super::file`]), streamed; an input that cannot be read
//! is reported and the next one is read.

use super::file::{list_files, read_input, stream_of, FileError};
use super::payload::{BatchOut, Limits};
use crate::convert::pipeline::{Position, Source, SourceEvent};
use crate::convert::record::RecordBatch;
use std::io::Read;
use std::path::PathBuf;

/// One input of a [`FileSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A file or a directory (read recursively, sorted).
    Path(PathBuf),
    /// Standard input.
    Stdin,
}

/// Counts bytes read, for a progress display.
pub type OnBytes = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Files, directories and standard input, read on a thread of their own, in order (see the
/// module documentation).
pub struct FileSource {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource").finish_non_exhaustive()
    }
}

/// A reader that reports the bytes it reads.
struct Counting<R> {
    inner: R,
    on_bytes: Option<OnBytes>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(f) = &self.on_bytes {
            f(n as u64);
        }
        Ok(n)
    }
}

impl FileSource {
    /// Starts reading `inputs`. `log_group` names the group of records that do not carry one.
    /// Input `i` of the list (and each file of a directory, in turn) is numbered from
    /// `first_input` on.
    pub fn start(
        inputs: Vec<Input>,
        log_group: String,
        limits: Limits,
        on_bytes: Option<OnBytes>,
    ) -> FileSource {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        std::thread::spawn(move || read_inputs(inputs, &log_group, limits, on_bytes, &tx));
        FileSource { rx }
    }
}

fn read_inputs(
    inputs: Vec<Input>,
    log_group: &str,
    limits: Limits,
    on_bytes: Option<OnBytes>,
    tx: &tokio::sync::mpsc::Sender<SourceEvent>,
) {
    use crate::convert::pipeline::{InputFailure, SourceEvent};
    let fail = |input: String, error: FileError| {
        tx.blocking_send(SourceEvent::Failed(InputFailure {
            input,
            error: Box::new(error),
        }))
        .is_ok()
    };
    let mut index = 0u32;
    for input in inputs {
        let files = match &input {
            Input::Stdin => vec![None],
            Input::Path(p) => match list_files(std::slice::from_ref(p)) {
                Ok(f) => f.into_iter().map(Some).collect(),
                Err(e) => {
                    if !fail(p.display().to_string(), e) {
                        return;
                    }
                    continue;
                }
            },
        };
        for file in files {
            let mut flush = |b: RecordBatch| {
                let input = b.input;
                tx.blocking_send(SourceEvent::Records(b))
                    .ok()
                    .map(|()| RecordBatch::new(input))
            };
            let mut out = BatchOut::new(RecordBatch::new(index), limits.batch_bytes, &mut flush);
            let (name, result) = match &file {
                None => {
                    let name = PathBuf::from("standard input");
                    let stdin = Counting {
                        inner: std::io::stdin().lock(),
                        on_bytes: on_bytes.clone(),
                    };
                    let r = read_input(stdin, &name, "", log_group, limits, &mut out);
                    (name, r)
                }
                Some(path) => {
                    let r = std::fs::File::open(path)
                        .map_err(|source| FileError::Io {
                            path: path.clone(),
                            source,
                        })
                        .and_then(|f| {
                            let f = Counting {
                                inner: f,
                                on_bytes: on_bytes.clone(),
                            };
                            read_input(f, path, &stream_of(path), log_group, limits, &mut out)
                        });
                    (path.clone(), r)
                }
            };
            // What was read before an error is delivered too.
            let delivered = out.flush_now();
            drop(out);
            if !delivered {
                return;
            }
            let next = match result {
                Err(FileError::Stopped) => return,
                Err(e) => fail(name.display().to_string(), e),
                Ok(stats) => stats
                    .limits()
                    .map(|(limit, n)| SourceEvent::Counted { limit, n })
                    .chain([SourceEvent::Mark(Position::Input(index))])
                    .all(|ev| tx.blocking_send(ev).is_ok()),
            };
            if !next {
                return;
            }
            index += 1;
        }
    }
}

impl Source for FileSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

/// One source after another.
#[derive(Debug)]
pub struct Chain<A, B> {
    first: Option<A>,
    second: B,
}

impl<A, B> Chain<A, B> {
    /// `first`'s events, then `second`'s.
    pub fn new(first: A, second: B) -> Self {
        Chain {
            first: Some(first),
            second,
        }
    }
}

impl<A, B> Source for Chain<A, B>
where
    A: Source,
    B: Source,
{
    async fn next(&mut self) -> Option<SourceEvent> {
        if let Some(a) = self.first.as_mut() {
            if let Some(ev) = a.next().await {
                return Some(ev);
            }
            self.first = None;
        }
        self.second.next().await
    }
}
