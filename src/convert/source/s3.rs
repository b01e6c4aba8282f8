//! A CreateExportTask tree in S3 (`spanline convert s3://bucket/prefix/`).
//!
//! Export keys are `<prefix>/<taskId>/<logStreamName>/000000.gz`, `000001.gz`, … plus an
//! `aws-logs-write-test` object (CreateExportTask API reference). Objects are fetched several at
//! a time, unpacked, and parsed by the same parser as local export files
//! ([`parse_content`](super::file::parse_content)); they come out in key order, so the parts of
//! one stream arrive in order. The stream name is taken from the key.

use super::file::parse_content;
use crate::convert::aws::{classify_sdk, error_text};
use crate::convert::record::LogRecord;
use crate::convert::retry::{Backoff, Verdict};
use std::io::Read;
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

/// The log stream an export key holds: the segments between the task id and the file name.
/// The task id is a UUID; when no segment after `prefix` is one (a tree copied elsewhere), the
/// stream is the file's parent directory. Stream names keep their `/`
/// (`2024/05/01/[$LATEST]abc…`).
pub fn stream_of_key(prefix: &str, key: &str) -> String {
    // The task id may be inside the prefix the user gave (`s3://b/exports/<taskId>/`).
    let mut segs: Vec<&str> = key.split('/').collect();
    segs.pop(); // the file name
    if let Some(i) = segs.iter().position(|s| is_uuid(s)) {
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

/// Fetches one object and parses it into records.
pub async fn read_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    key: &str,
    log_group: &str,
) -> Result<Vec<LogRecord>, S3Error> {
    let out = retry(bucket, key, "GetObject", || {
        client.get_object().bucket(bucket).key(key).send()
    })
    .await?;
    let content = |reason: String| S3Error::Content {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| content(format!("reading the body: {e}")))?
        .into_bytes();
    let mut text = String::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .map_err(|e| content(format!("not gzip: {e}")))?;
        text.push_str(&String::from_utf8_lossy(&raw));
    } else {
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    let stream = stream_of_key(prefix, key);
    parse_content(&text, log_group, &stream).map_err(content)
}

/// Reads every export object under `s3://bucket/prefix`, [`PARALLEL_OBJECTS`] at a time, and
/// hands each object's records to `f` in key order.
pub async fn for_each_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    log_group: &str,
    mut f: impl FnMut(&str, Vec<LogRecord>),
) -> Result<usize, S3Error> {
    let keys = list_objects(client, bucket, prefix).await?;
    for chunk in keys.chunks(PARALLEL_OBJECTS) {
        let mut set = tokio::task::JoinSet::new();
        for (i, key) in chunk.iter().enumerate() {
            let (client, bucket, prefix, key, group) = (
                client.clone(),
                bucket.to_owned(),
                prefix.to_owned(),
                key.clone(),
                log_group.to_owned(),
            );
            set.spawn(async move {
                (
                    i,
                    read_object(&client, &bucket, &prefix, &key, &group).await,
                )
            });
        }
        let mut results: Vec<Option<Result<Vec<LogRecord>, S3Error>>> =
            (0..chunk.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, r)) = joined {
                results[i] = Some(r);
            }
        }
        for (key, r) in chunk.iter().zip(results) {
            let records = r.ok_or_else(|| S3Error::Content {
                bucket: bucket.to_owned(),
                key: key.clone(),
                reason: "the reading task failed".to_owned(),
            })??;
            f(key, records);
        }
    }
    Ok(keys.len())
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
    fn streams_come_from_keys() {
        let task = "0f3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f8";
        let cases = [
            (
                "exports/",
                format!("exports/{task}/2024/05/01/[$LATEST]0123abcd/000000.gz"),
                "2024/05/01/[$LATEST]0123abcd",
            ),
            ("", format!("{task}/plain-stream/000001.gz"), "plain-stream"),
            (
                &format!("exports/{task}/") as &str,
                format!("exports/{task}/2024/05/01/[$LATEST]ab/000000.gz"),
                "2024/05/01/[$LATEST]ab",
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
    }

    #[test]
    fn the_write_test_object_is_skipped() {
        assert!(!is_export_object("exports/aws-logs-write-test"));
        assert!(!is_export_object("exports/dir/"));
        assert!(is_export_object("exports/t/s/000000.gz"));
    }
}
