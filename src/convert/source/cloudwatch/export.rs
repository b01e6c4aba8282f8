//! CreateExportTask: a time range of one log group written to S3 by the service, then read back
//! by the S3 source ([`crate::convert::source::s3`]). The cheapest way to read a large range:
//! no FilterLogEvents pages, no 5 TPS limit, but slow to start (data can take up to 12 hours to
//! be exportable) and at most one RUNNING or PENDING export task per account
//! (CreateExportTask API reference): a second one is refused with `LimitExceededException`.
//!
//! Objects land under `<prefix>/<taskId>/<logStreamName>/000000.gz` on AWS.

use super::budget::Budget;
use super::filter::{with_retries, Progress, ReadError};
use crate::convert::retry::Backoff;
use aws_sdk_cloudwatchlogs::types::ExportTaskStatusCode;
use std::time::Duration;

/// Why an export did not produce objects to read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Another export task of the account is running or pending.
    #[error(
        "log group {group}: CreateExportTask: another export task is running or pending (one per account): wait for it (aws logs describe-export-tasks --status-code RUNNING) or cancel it, then try again"
    )]
    Busy {
        /// The log group.
        group: String,
    },
    /// A call failed.
    #[error(transparent)]
    Api(#[from] ReadError),
    /// The task ended without completing.
    #[error("export task {task_id} ({group}): {status}: {message}")]
    Ended {
        /// The task.
        task_id: String,
        /// The log group.
        group: String,
        /// `FAILED`, `CANCELLED`, …
        status: String,
        /// What the service said.
        message: String,
    },
    /// The task did not finish in time (it keeps running on the service).
    #[error("export task {task_id} ({group}) still {status} after {waited:?}: it keeps running; convert s3://…/{task_id}/ once it is COMPLETED")]
    TimedOut {
        /// The task.
        task_id: String,
        /// The log group.
        group: String,
        /// The last status seen.
        status: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// One export: a log group's events with timestamps in `from_ms..=to_ms` into
/// `s3://bucket/prefix`.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// The log group name.
    pub log_group: String,
    /// Only streams whose name starts with this.
    pub log_stream_name_prefix: Option<String>,
    /// From (inclusive), ms since the epoch.
    pub from_ms: i64,
    /// To (inclusive), ms since the epoch.
    pub to_ms: i64,
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no trailing `/`; empty for the bucket's root).
    pub prefix: String,
}

/// How long and how often to ask DescribeExportTasks.
#[derive(Debug, Clone)]
pub struct Wait {
    /// First interval between two looks.
    pub first: Duration,
    /// The longest interval.
    pub cap: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Wait {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Starts the export; returns the task id.
pub async fn start(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &Budget,
    progress: &Progress,
    req: &ExportRequest,
) -> Result<String, ExportError> {
    let call = || {
        client
            .create_export_task()
            .task_name(format!("spanline-{}-{}", req.from_ms, req.to_ms))
            .log_group_name(&req.log_group)
            .set_log_stream_name_prefix(req.log_stream_name_prefix.clone())
            .from(req.from_ms)
            .to(req.to_ms)
            .destination(&req.bucket)
            .set_destination_prefix(Some(req.prefix.clone()).filter(|p| !p.is_empty()))
            .send()
    };
    // The one-task limit answers LimitExceededException, which is also throttling: it is
    // checked once before the usual retries, so a busy account is said so at once instead of
    // being retried for minutes.
    budget.acquire().await;
    progress
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = match call().await {
        Ok(out) => out,
        Err(e) if is_busy(&e) => {
            return Err(ExportError::Busy {
                group: req.log_group.clone(),
            })
        }
        Err(_) => with_retries(budget, progress, &req.log_group, "CreateExportTask", call).await?,
    };
    out.task_id().map(str::to_owned).ok_or_else(|| {
        ExportError::Api(ReadError::Api {
            group: req.log_group.clone(),
            operation: "CreateExportTask",
            message: "no task id in the answer".into(),
            attempts: 1,
        })
    })
}

fn is_busy(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        aws_sdk_cloudwatchlogs::operation::create_export_task::CreateExportTaskError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_limit_exceeded_exception())
}

/// Waits until task `task_id` is COMPLETED, looking with DescribeExportTasks at growing
/// intervals.
pub async fn wait(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &Budget,
    progress: &Progress,
    group: &str,
    task_id: &str,
    policy: &Wait,
) -> Result<(), ExportError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(policy.first, policy.cap);
    loop {
        let out = with_retries(budget, progress, group, "DescribeExportTasks", || {
            client.describe_export_tasks().task_id(task_id).send()
        })
        .await?;
        let status = out.export_tasks().first().and_then(|t| t.status()).cloned();
        let code = status.as_ref().and_then(|s| s.code()).cloned();
        let message = status
            .as_ref()
            .and_then(|s| s.message())
            .unwrap_or_default()
            .to_owned();
        match code {
            Some(ExportTaskStatusCode::Completed) => return Ok(()),
            Some(ExportTaskStatusCode::Pending | ExportTaskStatusCode::Running) | None => {}
            Some(other) => {
                return Err(ExportError::Ended {
                    task_id: task_id.to_owned(),
                    group: group.to_owned(),
                    status: other.as_str().to_owned(),
                    message,
                })
            }
        }
        if started.elapsed() >= policy.timeout {
            return Err(ExportError::TimedOut {
                task_id: task_id.to_owned(),
                group: group.to_owned(),
                status: code.map_or_else(|| "unknown".to_owned(), |c| c.as_str().to_owned()),
                waited: started.elapsed(),
            });
        }
        // The floor keeps the intervals growing instead of jittering near zero.
        let floor = backoff.ceiling() / 2;
        tokio::time::sleep(backoff.next_delay(Some(floor))).await;
    }
}

/// Where the task's objects are: `<prefix>/<taskId>/` (AWS's layout).
pub fn task_prefix(prefix: &str, task_id: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        format!("{task_id}/")
    } else {
        format!("{p}/{task_id}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_prefixes() {
        assert_eq!(task_prefix("", "t"), "t/");
        assert_eq!(task_prefix("exports", "t"), "exports/t/");
        assert_eq!(task_prefix("exports/", "t"), "exports/t/");
    }

    #[test]
    fn the_busy_error_says_what_to_do() {
        let e = ExportError::Busy { group: "g".into() };
        let text = e.to_string();
        assert!(text.contains("one per account"), "{text}");
        assert!(text.contains("describe-export-tasks"), "{text}");
    }
}
