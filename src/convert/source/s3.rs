//! A CreateExportTask tree in S3 (`spanline convert s3://bucket/prefix/`).
//!
//! Export keys are `<prefix>/<taskId>/<logStreamName>/000000.gz`, `000001.gz`, … plus an
//! `aws-logs-write-test` object (CreateExportTask API reference). [`S3Source`] fetches small
//! objects [`PARALLEL_OBJECTS`] at a time, streams larger ones (see [`WHOLE_OBJECT_BYTES`]),
//! and reads each, in key order (so the parts of one stream arrive in order), with the same
//! reader as local files
//! ([`read_input`](super::file::read_input)): streamed, within the same limits. The stream
//! name is taken from the key ([`stream_of_key`]). An object that cannot be read is reported
//! and the next one is read.

use super::file::{read_input, stream_of_key, FileError};
use super::payload::{BatchOut, Limits};
use crate::convert::aws::{classify_sdk, error_text};
use crate::convert::pipeline::{InputFailure, Position, Source, SourceEvent};
use crate::convert::record::RecordBatch;
use crate::convert::retry::{Backoff, Verdict};
use std::time::Duration;

/// How many objects are fetched at once.
pub const PARALLEL_OBJECTS: usize = 8;

/// Why an S3 export could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// Not `s3://bucket[/prefix]`.
    #[error("{0:?}: expected s3://bucket/prefix/")]
    Url(String),
    /// A call failed (after retries where worth it).
    #[error("s3://{bucket}/{key}: {operation}: {message}")]
    Api {
        /// The bucket.
        bucket: String,
        /// The key or prefix.
        key: String,
        /// The operation.
        operation: &'static str,
        /// What the service said.
        message: String,
    },
    /// An object that is not an export file.
    #[error("s3://{bucket}/{key}: {reason}")]
    Content {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Splits `s3://bucket/prefix` into bucket and prefix.
pub fn parse_url(url: &str) -> Result<(String, String), S3Error> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| S3Error::Url(url.to_owned()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(S3Error::Url(url.to_owned()));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// Whether a key is one of the export's data objects (not the write test, not a "folder").
pub fn is_export_object(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    !name.is_empty() && name != "aws-logs-write-test"
}

/// Lists the export objects under `prefix`, sorted by key.
pub async fn list_objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, S3Error> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = retry(bucket, prefix, "ListObjectsV2", || {
            client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
        })
        .await?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key())
                .filter(|k| is_export_object(k))
                .map(str::to_owned),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    keys.sort();
    Ok(keys)
}

/// Runs an S3 call, retrying throttling and transient failures with backoff.
pub(crate) async fn retry<T, E, F, Fut>(
    bucket: &str,
    key: &str,
    operation: &'static str,
    mut call: F,
) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
        Output = Result<
            T,
            aws_smithy_runtime_api::client::result::SdkError<
                E,
                aws_smithy_runtime_api::client::orchestrator::HttpResponse,
            >,
        >,
    >,
    E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let v = classify_sdk(&e);
                if matches!(v, Verdict::Fatal | Verdict::Success) || attempts >= 6 {
                    return Err(S3Error::Api {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        operation,
                        message: error_text(&e),
                    });
                }
                tokio::time::sleep(backoff.next_delay(None)).await;
            }
        }
    }
}

/// Objects up to this size (compressed) are fetched whole, [`PARALLEL_OBJECTS`] at a time;
/// larger ones are streamed when their turn comes, so memory stays bounded whatever an
/// object's size.
pub const WHOLE_OBJECT_BYTES: i64 = 1 << 20;

/// One object's bytes, or word that it is too large to fetch whole.
enum Fetched {
    Whole(Vec<u8>),
    Large,
}

/// Starts a GetObject (with retries).
async fn get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, S3Error> {
    retry(bucket, key, "GetObject", || {
        client.get_object().bucket(bucket).key(key).send()
    })
    .await
}

/// Fetches one object's bytes if it is small.
async fn fetch(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Fetched, S3Error> {
    let out = get(client, bucket, key).await?;
    if out.content_length().is_none_or(|n| n > WHOLE_OBJECT_BYTES) {
        // Dropping the response closes its connection; the body is read when its turn comes.
        return Ok(Fetched::Large);
    }
    Ok(Fetched::Whole(
        out.body
            .collect()
            .await
            .map_err(|e| S3Error::Content {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: format!("reading the body: {e}"),
            })?
            .into_bytes()
            .to_vec(),
    ))
}

/// A blocking reader over an object's body, fed chunk by chunk by an async task (at most a
/// few chunks ahead).
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl BodyReader {
    /// Streams `body` (on the current runtime).
    fn start(mut body: aws_sdk_s3::primitives::ByteStream) -> BodyReader {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let item = match body.next().await {
                    None => return,
                    Some(Ok(b)) => Ok(b.to_vec()),
                    Some(Err(e)) => Err(std::io::Error::other(e)),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        BodyReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Export trees in S3, read object by object (see the module documentation).
pub struct S3Source {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Source").finish_non_exhaustive()
    }
}

impl Drop for S3Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Source {
    /// Starts reading the trees at `urls` (`s3://bucket/prefix/`). Objects are numbered as
    /// inputs from `first_input` on. `log_group` names the group of the records.
    pub fn start(
        client: aws_sdk_s3::Client,
        urls: Vec<String>,
        log_group: String,
        limits: Limits,
        first_input: u32,
    ) -> S3Source {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = tokio::spawn(async move {
            let mut index = first_input;
            for url in urls {
                let (bucket, prefix) = match parse_url(&url) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(failed(url, e)).await;
                        continue;
                    }
                };
                let keys = match list_objects(&client, &bucket, &prefix).await {
                    Ok(k) => k,
                    Err(e) => {
                        if tx.send(failed(url, e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                for chunk in keys.chunks(PARALLEL_OBJECTS) {
                    let mut set = tokio::task::JoinSet::new();
                    for (i, key) in chunk.iter().enumerate() {
                        let (client, bucket, key) = (client.clone(), bucket.clone(), key.clone());
                        set.spawn(async move { (i, fetch(&client, &bucket, &key).await) });
                    }
                    let mut fetched: Vec<Option<Result<Fetched, S3Error>>> =
                        (0..chunk.len()).map(|_| None).collect();
                    while let Some(joined) = set.join_next().await {
                        if let Ok((i, r)) = joined {
                            fetched[i] = Some(r);
                        }
                    }
                    for (key, r) in chunk.iter().zip(fetched) {
                        let name = format!("s3://{bucket}/{key}");
                        let fetched = match r {
                            Some(Ok(f)) => f,
                            Some(Err(e)) => {
                                if tx.send(failed(name, e)).await.is_err() {
                                    return;
                                }
                                index += 1;
                                continue;
                            }
                            None => {
                                let e = S3Error::Content {
                                    bucket: bucket.clone(),
                                    key: key.clone(),
                                    reason: "the fetching task failed".into(),
                                };
                                if tx.send(failed(name, e)).await.is_err() {
                                    return;
                                }
                                index += 1;
                                continue;
                            }
                        };
                        let stream = stream_of_key(&prefix, key);
                        let (tx2, group) = (tx.clone(), log_group.clone());
                        let read = match fetched {
                            Fetched::Whole(bytes) => {
                                tokio::task::spawn_blocking(move || {
                                    read_object(
                                        bytes.as_slice(),
                                        &name,
                                        &stream,
                                        &group,
                                        limits,
                                        index,
                                        &tx2,
                                    )
                                })
                                .await
                            }
                            Fetched::Large => match get(&client, &bucket, key).await {
                                Ok(out) => {
                                    let body = BodyReader::start(out.body);
                                    tokio::task::spawn_blocking(move || {
                                        read_object(
                                            body, &name, &stream, &group, limits, index, &tx2,
                                        )
                                    })
                                    .await
                                }
                                Err(e) => Ok(tx.send(failed(name, e)).await.is_ok()),
                            },
                        };
                        if !matches!(read, Ok(true)) {
                            return;
                        }
                        index += 1;
                    }
                }
            }
        });
        S3Source { rx, task }
    }
}

fn failed(input: String, e: impl std::error::Error + Send + Sync + 'static) -> SourceEvent {
    SourceEvent::Failed(InputFailure {
        input,
        error: Box::new(e),
    })
}

/// Reads one fetched object into batches (on a blocking thread); `false` when the pipeline
/// went away.
fn read_object(
    bytes: impl std::io::Read,
    name: &str,
    stream: &str,
    group: &str,
    limits: Limits,
    index: u32,
    tx: &tokio::sync::mpsc::Sender<SourceEvent>,
) -> bool {
    let mut flush = |b: RecordBatch| {
        let input = b.input;
        tx.blocking_send(SourceEvent::Records(b))
            .ok()
            .map(|()| RecordBatch::new(input))
    };
    let mut out = BatchOut::new(RecordBatch::new(index), limits.batch_bytes, &mut flush);
    let r = read_input(
        bytes,
        std::path::Path::new(name),
        stream,
        group,
        limits,
        &mut out,
    );
    if !out.flush_now() {
        return false;
    }
    drop(out);
    match r {
        Err(FileError::Stopped) => false,
        Err(e) => tx.blocking_send(failed(name.to_owned(), e)).is_ok(),
        Ok(stats) => stats
            .limits()
            .map(|(limit, n)| SourceEvent::Counted { limit, n })
            .chain([SourceEvent::Mark(Position::Input(index))])
            .all(|ev| tx.blocking_send(ev).is_ok()),
    }
}

impl Source for S3Source {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("s3://b/exports/x/").unwrap(),
            ("b".into(), "exports/x/".into())
        );
        assert_eq!(parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("/tmp/x").is_err());
    }

    #[test]
    fn the_write_test_object_is_skipped() {
        assert!(!is_export_object("exports/aws-logs-write-test"));
        assert!(!is_export_object("exports/dir/"));
        assert!(is_export_object("exports/t/s/000000.gz"));
    }
}
