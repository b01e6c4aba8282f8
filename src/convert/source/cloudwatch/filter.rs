//! FilterLogEvents for one log group over a time range: every page (an empty page with a
//! `nextToken` is not the end), each request paid from the shared [`Budget`], throttling and
//! transient failures retried with backoff, and the events put in stream order.
//!
//! FilterLogEvents "interleaves" streams and sorts by (timestamp, ingestion time, event id) on
//! AWS; moto returns stream by stream. Neither order is what the converter needs, which is
//! *each stream in order*: so a group's events are sorted by [`order_key`] before they leave.

use super::budget::Budget;
use super::late::LateWatch;
use crate::convert::aws::{classify_sdk, error_text};
use crate::convert::pipeline::{InputFailure, Position, Source, SourceEvent};
use crate::convert::record::{LogRecord, RecordBatch};
use crate::convert::retry::{Backoff, Verdict};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Selects span lines and the Lambda platform lines invocation spans are built from, in every
/// Lambda log format (plain alphanumeric terms match inside prefixes and JSON alike).
pub const DEFAULT_FILTER_PATTERN: &str = r#"?SPLN ?START ?END ?REPORT ?"Task timed out" ?"Runtime exited" ?"Process exited" ?"Invoke Error" ?Traceback ?"platform." ?startTimeUnixNano"#;

/// How many attempts one request gets before the group fails.
const MAX_ATTEMPTS: u32 = 10;

/// Why a group could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The service refused, or kept failing after every retry.
    #[error("log group {group}: {operation}: {message} (after {attempts} attempts)")]
    Api {
        /// The log group (or prefix) being read.
        group: String,
        /// The API operation.
        operation: &'static str,
        /// What the service said.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// One event as FilterLogEvents returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The log stream.
    pub log_stream: String,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Ingestion time, ms since the epoch.
    pub ingestion_ms: i64,
    /// The opaque event id (56 digits on AWS, small integers on moto).
    pub event_id: String,
    /// The message.
    pub message: String,
}

impl Event {
    /// The record the converter takes.
    pub fn into_record(self, log_group: &str) -> LogRecord {
        LogRecord {
            log_group: log_group.to_owned(),
            log_stream: self.log_stream,
            event_id: self.event_id,
            timestamp_ms: self.timestamp_ms,
            message: self.message,
        }
    }
}

/// The sort key that puts each stream in order: stream, time, ingestion time, event id (event
/// ids compared as numbers when both are digits, as AWS's are, else as text).
pub fn order_key(e: &Event) -> (&str, i64, i64, usize, &str) {
    let id = e.event_id.as_str();
    let numeric_len = if id.bytes().all(|b| b.is_ascii_digit()) {
        id.trim_start_matches('0').len()
    } else {
        usize::MAX
    };
    (
        &e.log_stream,
        e.timestamp_ms,
        e.ingestion_ms,
        numeric_len,
        id.trim_start_matches('0'),
    )
}

/// Sorts events into stream order (stable).
pub fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
}

/// What to read from one group.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only streams whose name starts with this.
    pub log_stream_name_prefix: Option<String>,
    /// Event time from (inclusive), ms.
    pub start_ms: Option<i64>,
    /// Event time to (inclusive), ms.
    pub end_ms: Option<i64>,
    /// The filter pattern.
    pub filter_pattern: String,
}

/// Running totals for progress.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests sent (retries included).
    pub requests: AtomicU64,
    /// Events received.
    pub events: AtomicU64,
    /// Pages that came back empty with a `nextToken`.
    pub empty_pages: AtomicU64,
    /// Throttling answers.
    pub throttled: AtomicU64,
}

/// Runs `call` until it succeeds, retrying throttling and transient failures; every attempt
/// pays a token from `budget`.
pub async fn with_retries<T, E, F, Fut>(
    budget: &Budget,
    progress: &Progress,
    group: &str,
    operation: &'static str,
    mut call: F,
) -> Result<T, ReadError>
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
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(20));
    let mut attempts = 0;
    loop {
        budget.acquire().await;
        attempts += 1;
        progress.requests.fetch_add(1, Ordering::Relaxed);
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let verdict = classify_sdk(&err);
        if verdict == Verdict::Throttle {
            progress.throttled.fetch_add(1, Ordering::Relaxed);
            budget.drain().await;
        }
        if matches!(verdict, Verdict::Fatal | Verdict::Success) || attempts >= MAX_ATTEMPTS {
            return Err(ReadError::Api {
                group: group.to_owned(),
                operation,
                message: error_text(&err),
                attempts,
            });
        }
        tokio::time::sleep(backoff.next_delay(None)).await;
    }
}

/// The pages of FilterLogEvents for one group and query, one request at a time.
#[derive(Debug)]
pub struct Pages<'a> {
    client: &'a aws_sdk_cloudwatchlogs::Client,
    group: &'a str,
    query: &'a Query,
    token: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    /// The pages of `group` for `query`.
    pub fn new(
        client: &'a aws_sdk_cloudwatchlogs::Client,
        group: &'a str,
        query: &'a Query,
    ) -> Self {
        Pages {
            client,
            group,
            query,
            token: None,
            done: false,
        }
    }

    /// The next page's events in stream order (sorted within the page: AWS interleaves streams
    /// by time, moto returns them stream by stream; either way each stream comes in order), or
    /// `None` after the last page. Empty pages with a `nextToken` are read through.
    pub async fn next_page(
        &mut self,
        budget: &Budget,
        progress: &Progress,
    ) -> Result<Option<Vec<Event>>, ReadError> {
        while !self.done {
            let (client, group, query, token) = (self.client, self.group, self.query, &self.token);
            let page = with_retries(budget, progress, group, "FilterLogEvents", || {
                let request = client.filter_log_events();
                // A group given by ARN (another account's, as cross-account observability
                // shares them) is named by `logGroupIdentifier`, which takes ARNs.
                let request = if group.starts_with("arn:") {
                    request.log_group_identifier(group)
                } else {
                    request.log_group_name(group)
                };
                request
                    .set_log_stream_name_prefix(query.log_stream_name_prefix.clone())
                    .set_start_time(query.start_ms)
                    .set_end_time(query.end_ms)
                    .filter_pattern(&query.filter_pattern)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            let events = page.events();
            if events.is_empty() && page.next_token().is_some() {
                progress.empty_pages.fetch_add(1, Ordering::Relaxed);
            }
            progress
                .events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            let mut out: Vec<Event> = events
                .iter()
                .map(|e| Event {
                    log_stream: e.log_stream_name().unwrap_or_default().to_owned(),
                    timestamp_ms: e.timestamp().unwrap_or(0),
                    ingestion_ms: e.ingestion_time().unwrap_or(0),
                    event_id: e.event_id().unwrap_or_default().to_owned(),
                    message: e.message().unwrap_or_default().to_owned(),
                })
                .collect();
            sort_events(&mut out);
            match page.next_token() {
                // A token equal to the one sent would loop forever (GetLogEvents does that at
                // the end; FilterLogEvents is not documented to, but costs nothing to guard).
                Some(t) if self.token.as_deref() != Some(t) => self.token = Some(t.to_owned()),
                _ => self.done = true,
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

/// Reads every event of `group` matching `query`, in stream order, into memory (for small
/// ranges and tests; the pipeline streams pages with [`FilterSource`]).
pub async fn read_group(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &Budget,
    progress: &Progress,
    group: &str,
    query: &Query,
) -> Result<Vec<Event>, ReadError> {
    let mut out = Vec::new();
    let mut pages = Pages::new(client, group, query);
    while let Some(page) = pages.next_page(budget, progress).await? {
        out.extend(page);
    }
    sort_events(&mut out);
    Ok(out)
}

/// Bytes of events per batch made of a page: a page (up to 10,000 events, 1 MB of messages)
/// goes downstream in a few batches, so the batches queued between stages stay small.
pub const PAGE_BATCH_BYTES: usize = 256 << 10;

/// Events of one page as record batches of group `group`, [`PAGE_BATCH_BYTES`] each at most
/// (and at least one event each).
pub fn page_batches<'a>(
    group: &'a str,
    events: &'a [Event],
    input: u32,
) -> impl Iterator<Item = RecordBatch> + 'a {
    let size = |e: &Event| e.event_id.len() + e.message.len();
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (mut n, mut text) = (0, 0);
        while n < rest.len() && (n == 0 || text + size(&rest[n]) <= PAGE_BATCH_BYTES) {
            text += size(&rest[n]);
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut b = RecordBatch::with_capacity(input, chunk.len(), text);
        for e in chunk {
            let o = b.origin(group, &e.log_stream);
            b.push(o, &e.event_id, e.timestamp_ms, &e.message);
        }
        Some(b)
    })
}

/// One group's range, as [`FilterSource`] reads it.
#[derive(Debug, Clone)]
pub struct GroupRange {
    /// The log group: a name, or an ARN (read with `logGroupIdentifier`; its records carry the
    /// name).
    pub group: String,
    /// What to read.
    pub query: Query,
    /// Who reads it when not the source's own client: another account or Region, with a
    /// request budget and counters of its own.
    pub reader: Option<Reader>,
    /// The name its end is marked under ([`Position::Group`], `forward`'s checkpoint key);
    /// `None`: the group.
    pub key: Option<String>,
}

impl GroupRange {
    /// `group` over `query`, read by the source's client, marked under its own name.
    pub fn new(group: impl Into<String>, query: Query) -> GroupRange {
        GroupRange {
            group: group.into(),
            query,
            reader: None,
            key: None,
        }
    }

    /// The name its end is marked under.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.group)
    }
}

/// A client of one account and Region, with that account and Region's request budget
/// (FilterLogEvents' quota is per account and Region) and its own counters.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The client.
    pub client: aws_sdk_cloudwatchlogs::Client,
    /// Its budget.
    pub budget: Budget,
    /// Its counters.
    pub progress: Arc<Progress>,
}

/// Log groups over time ranges (FilterLogEvents), `parallel` groups at a time inside one
/// request budget, streamed page by page: each page is a batch, each group's end a
/// [`Position::Group`] (through its range's end), a group that cannot be read a failed input.
pub struct FilterSource {
    rx: tokio::sync::mpsc::Receiver<SourceEvent>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FilterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSource").finish_non_exhaustive()
    }
}

impl Drop for FilterSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Late events to watch for in one group's range (see [`LateWatch`]).
#[derive(Debug, Clone)]
pub struct LateCheck {
    /// How long after its timestamp an event may be ingested and still be read, ms.
    pub window_ms: i64,
    /// The flag that sets it (`--lateness`).
    pub flag: &'static str,
    /// Events ingested at or before this were there for an earlier read, which measured them:
    /// they are not measured again.
    pub ingested_after_ms: i64,
}

impl FilterSource {
    /// Starts reading `ranges`; group `i` is input `i`.
    pub fn start(
        client: aws_sdk_cloudwatchlogs::Client,
        budget: Budget,
        progress: Arc<Progress>,
        ranges: Vec<GroupRange>,
        parallel: usize,
    ) -> FilterSource {
        let ranges = ranges.into_iter().map(|r| (r, None)).collect();
        FilterSource::start_watching(client, budget, progress, ranges, parallel)
    }

    /// As [`FilterSource::start`], and for each range with a [`LateCheck`], events ingested
    /// close to its window or past it are counted (`late_near_window`, `late_beyond_window`)
    /// and said (a notice, at most once a minute per group).
    pub fn start_watching(
        client: aws_sdk_cloudwatchlogs::Client,
        budget: Budget,
        progress: Arc<Progress>,
        ranges: Vec<(GroupRange, Option<LateCheck>)>,
        parallel: usize,
    ) -> FilterSource {
        // Each group's task holds the page it is handing on: `parallel` pages wait at most.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::new();
        for (i, (range, check)) in ranges.into_iter().enumerate() {
            let (client, budget, progress) = match &range.reader {
                Some(r) => (r.client.clone(), r.budget.clone(), r.progress.clone()),
                None => (client.clone(), budget.clone(), progress.clone()),
            };
            let (tx, permits) = (tx.clone(), permits.clone());
            let input = u32::try_from(i).unwrap_or(u32::MAX);
            tasks.push(tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let key = range.key().to_owned();
                let GroupRange { group, query, .. } = range;
                // Records carry the group's name, whichever way it was named.
                let name = super::live::group_name_of(&group).to_owned();
                let mut watch = check.as_ref().map(|c| LateWatch::new(c.window_ms, c.flag));
                // One page in memory at a time: it goes downstream before the next is asked for.
                let mut pages = Pages::new(&client, &group, &query);
                let r = loop {
                    match pages.next_page(&budget, &progress).await {
                        Ok(Some(p)) => {
                            if let (Some(w), Some(c)) = (watch.as_mut(), check.as_ref()) {
                                for ev in late_events(w, c, &group, &p) {
                                    if tx.send(ev).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            for b in page_batches(&name, &p, input) {
                                if tx.send(SourceEvent::Records(b)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                let ev = match r {
                    Ok(_) => SourceEvent::Mark(Position::Group {
                        key: (key != name).then(|| Arc::from(key.as_str())),
                        group: Arc::from(name.as_str()),
                        through_ms: query.end_ms.unwrap_or_else(crate::convert::time::now_ms),
                        lag_p99_ms: watch.as_ref().and_then(|w| w.quantile(990)),
                    }),
                    Err(e) => SourceEvent::Failed(InputFailure {
                        input: format!("log group {group}"),
                        error: Box::new(e),
                    }),
                };
                let _ = tx.send(ev).await;
            }));
        }
        FilterSource { rx, tasks }
    }
}

/// What `watch` has to say about a page of `group`: counts, and a notice.
fn late_events(
    watch: &mut LateWatch,
    check: &LateCheck,
    group: &str,
    page: &[Event],
) -> Vec<SourceEvent> {
    let new: Vec<Event> = page
        .iter()
        .filter(|e| e.ingestion_ms > check.ingested_after_ms)
        .cloned()
        .collect();
    let before = (watch.near, watch.beyond);
    let notice = watch.observe(&new, crate::convert::time::now_ms());
    let mut out: Vec<SourceEvent> = [
        ("late_near_window", watch.near - before.0),
        ("late_beyond_window", watch.beyond - before.1),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(limit, n)| SourceEvent::Counted { limit, n })
    .collect();
    out.extend(notice.map(|n| SourceEvent::Notice(format!("log group {group}: {n}"))));
    out
}

impl Source for FilterSource {
    async fn next(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }
}

/// Which groups to read.
#[derive(Debug, Clone, Default)]
pub struct GroupSelection {
    /// Named groups.
    pub names: Vec<String>,
    /// Groups whose name starts with this (DescribeLogGroups `logGroupNamePrefix`).
    pub prefix: Option<String>,
    /// Groups whose name contains this, case-insensitively (`logGroupNamePattern`).
    pub pattern: Option<String>,
}

/// Resolves a selection to group names (named ones first, then listed ones, no repeats).
pub async fn resolve_groups(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &Budget,
    progress: &Progress,
    sel: &GroupSelection,
) -> Result<Vec<String>, ReadError> {
    let mut out: Vec<String> = Vec::new();
    let push = |g: String, out: &mut Vec<String>| {
        if !out.contains(&g) {
            out.push(g);
        }
    };
    for n in &sel.names {
        push(n.clone(), &mut out);
    }
    let listed = [
        sel.prefix.as_ref().map(|p| (Some(p), None)),
        sel.pattern.as_ref().map(|p| (None, Some(p))),
    ];
    for (prefix, pattern) in listed.into_iter().flatten() {
        let what = prefix.or(pattern).cloned().unwrap_or_default();
        let mut token: Option<String> = None;
        loop {
            let page = with_retries(budget, progress, &what, "DescribeLogGroups", || {
                client
                    .describe_log_groups()
                    .set_log_group_name_prefix(prefix.cloned())
                    .set_log_group_name_pattern(pattern.cloned())
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            for g in page.log_groups() {
                let Some(name) = g.log_group_name() else {
                    continue;
                };
                // The service matches the pattern case-insensitively; checking again keeps
                // emulators that ignore the parameter from widening the selection.
                if let Some(p) = pattern {
                    if !name.to_lowercase().contains(&p.to_lowercase()) {
                        continue;
                    }
                }
                push(name.to_owned(), &mut out);
            }
            match page.next_token() {
                Some(t) if token.as_deref() != Some(t) => token = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(stream: &str, ts: i64, ing: i64, id: &str) -> Event {
        Event {
            log_stream: stream.into(),
            timestamp_ms: ts,
            ingestion_ms: ing,
            event_id: id.into(),
            message: format!("{stream} {ts} {id}"),
        }
    }

    #[test]
    fn events_are_put_in_stream_order() {
        // As AWS interleaves them (and a late, back-dated event ingested last).
        let mut got = vec![
            ev("b", 10, 11, "5"),
            ev("a", 10, 12, "10"),
            ev("a", 10, 12, "9"),
            ev("a", 5, 100, "20"),
            ev("b", 3, 4, "1"),
            ev("a", 10, 11, "30"),
        ];
        sort_events(&mut got);
        let ids: Vec<(&str, &str)> = got
            .iter()
            .map(|e| (e.log_stream.as_str(), e.event_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("a", "20"),
                ("a", "30"),
                ("a", "9"),
                ("a", "10"),
                ("b", "1"),
                ("b", "5")
            ]
        );
    }

    #[test]
    fn aws_event_ids_compare_as_numbers() {
        let a = "37134448277055435232147433599009981254663617153574158336";
        let b = "37134448277055435232147433599009981254663617153574158337";
        let mut got = vec![ev("s", 1, 1, b), ev("s", 1, 1, a), ev("s", 1, 1, "x")];
        sort_events(&mut got);
        assert_eq!(got[0].event_id, a);
        assert_eq!(got[1].event_id, b);
        assert_eq!(got[2].event_id, "x");
    }

    #[test]
    fn late_events_are_counted_once_per_run_and_said() {
        let check = LateCheck {
            window_ms: 60_000,
            flag: "--lateness",
            ingested_after_ms: 1_000_000,
        };
        let mut watch = LateWatch::new(check.window_ms, check.flag);
        let page = [
            // Ingested before the cursor: the previous run measured it.
            ev("s", 900_000, 980_000, "1"),
            // 50 s and 70 s late, after the cursor.
            ev("s", 960_000, 1_010_000, "2"),
            ev("s", 940_000, 1_010_000, "3"),
            ev("s", 1_009_000, 1_010_000, "4"),
        ];
        let got = late_events(&mut watch, &check, "/aws/lambda/f", &page);
        let counted: Vec<(&str, u64)> = got
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Counted { limit, n } => Some((*limit, *n)),
                _ => None,
            })
            .collect();
        assert_eq!(
            counted,
            [("late_near_window", 1), ("late_beyond_window", 1)]
        );
        let notice = got.iter().find_map(|e| match e {
            SourceEvent::Notice(n) => Some(n.as_str()),
            _ => None,
        });
        let notice = notice.expect("a notice");
        assert!(notice.starts_with("log group /aws/lambda/f: "), "{notice}");
        assert!(notice.ends_with("raise --lateness"), "{notice}");
        // The next page: counted, not said again within the minute.
        let got = late_events(&mut watch, &check, "/aws/lambda/f", &page[1..2]);
        assert!(matches!(
            got.as_slice(),
            [SourceEvent::Counted {
                limit: "late_near_window",
                n: 1
            }]
        ));
    }

    #[test]
    fn default_pattern_selects_span_and_platform_lines() {
        for term in [
            "SPLN",
            "START",
            "END",
            "REPORT",
            "\"Task timed out\"",
            "\"platform.\"",
            // Records of `aws/spans` (crate::convert::aws_spans).
            "startTimeUnixNano",
        ] {
            assert!(
                DEFAULT_FILTER_PATTERN.contains(&format!("?{term}")),
                "{term}"
            );
        }
    }
}
