//! Live Tail (StartLiveTail): the default `tail` mode. Sessions are lossy by design (one update
//! a second, at most 500 events an update, sampled above that; a 3 h session limit; dropped on
//! disconnect), so this module keeps following across session ends and says when it sampled.
//!
//! * [`Connect`] / [`Session`]: the seam between the reconnecting loop and the SDK's event
//!   stream. [`SdkConnector`] is the real one; the tests script sessions.
//! * [`follow`]: one set of at most [`MAX_GROUPS_PER_SESSION`] log groups, session after session,
//!   with backoff; what comes out is de-duplicated by [`Seen`] and announced as [`Notice`]s.
//! * [`Seen`]: Live Tail events carry no event id, so an event is known by a hash of (group,
//!   stream, timestamp, message), remembered for a window of wall time (15 min by default). A
//!   new session can replay what the last one showed (moto replays everything; AWS may overlap
//!   across a reconnect): replays inside the window are dropped.
//!
//! Limits (CloudWatch Logs quotas page, StartLiveTail API reference): ≤ 10 log groups per
//! session, given as ARNs without the trailing `:*`.

use super::budget::Budget;
use super::filter::{with_retries, Progress, ReadError};
use crate::convert::aws::Failure;
use crate::convert::aws::{classify, error_chain};
use crate::convert::record::LogRecord;
use crate::convert::retry::{Backoff, Verdict};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// StartLiveTail takes at most this many log groups; more groups take several sessions.
pub const MAX_GROUPS_PER_SESSION: usize = 10;

/// How long a seen event is remembered by default.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// At most this many events are remembered, whatever the window holds.
pub const MAX_REMEMBERED: usize = 1 << 18;

/// One event of a session update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveEvent {
    /// The log group, as the session names it (its ARN on AWS).
    pub log_group: String,
    /// The log stream.
    pub log_stream: String,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Ingestion time, ms since the epoch.
    pub ingestion_ms: i64,
    /// The message.
    pub message: String,
}

impl LiveEvent {
    /// The record the converter takes, under the group name `log_group` (Live Tail has no
    /// event ids).
    pub fn into_record(self, log_group: &str) -> LogRecord {
        LogRecord {
            log_group: log_group.to_owned(),
            log_stream: self.log_stream,
            event_id: String::new(),
            timestamp_ms: self.timestamp_ms,
            message: self.message,
        }
    }

    fn key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.log_group,
            &self.log_stream,
            self.timestamp_ms,
            &self.message,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// One session update: its events and whether the service sampled them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// The events, as the session sent them.
    pub events: Vec<LiveEvent>,
    /// More than 500 events matched in that second: these are a sample.
    pub sampled: bool,
}

/// Why a session could not start or stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// StartLiveTail failed.
    #[error("StartLiveTail ({groups}): {message}")]
    Start {
        /// The log groups of the session.
        groups: String,
        /// What the service or the connection said.
        message: String,
        /// Whether another try may work.
        verdict: Verdict,
    },
    /// The session's event stream failed or the service ended it with an exception.
    #[error("Live Tail session ({groups}): {message}")]
    Stream {
        /// The log groups of the session.
        groups: String,
        /// What the service or the connection said.
        message: String,
        /// Whether another session may work.
        verdict: Verdict,
    },
}

impl LiveError {
    /// Whether a new session is worth trying (timeouts, disconnects, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        let (LiveError::Start { verdict, .. } | LiveError::Stream { verdict, .. }) = self;
        matches!(verdict, Verdict::Retry | Verdict::Throttle)
    }
}

/// Which verdict an error code of the event stream gets: a session timeout (3 h) and a
/// streaming exception end a session that a new one continues; the rest as any AWS error.
pub fn classify_stream(code: Option<&str>) -> Verdict {
    match code {
        Some("SessionTimeoutException" | "SessionStreamingException") => Verdict::Retry,
        // An error without a code is the connection or the framing, not the service's refusal.
        None => Verdict::Retry,
        Some(c) => match classify(Failure::Service(Some(c), None)) {
            // An unknown code ends a session that may well start again.
            Verdict::Fatal
                if !matches!(
                    c,
                    "AccessDeniedException"
                        | "InvalidParameterException"
                        | "InvalidOperationException"
                        | "ResourceNotFoundException"
                ) =>
            {
                Verdict::Retry
            }
            v => v,
        },
    }
}

/// An open Live Tail session. `next_update` waits for the next update; `Ok(None)` is the end of
/// the session (the service closed it), `Err` a failure. Session-start frames are not updates.
pub trait Session: Send {
    /// The next update of the session.
    fn next_update(&mut self) -> impl Future<Output = Result<Option<Update>, LiveError>> + Send;
}

/// Opens sessions. `connect` is called again for every new session; it does not retry.
pub trait Connect: Send + Sync + 'static {
    /// The session it opens.
    type Session: Session + 'static;
    /// Starts a session on `groups` (ARNs, at most [`MAX_GROUPS_PER_SESSION`]).
    fn connect(
        &self,
        groups: &[String],
    ) -> impl Future<Output = Result<Self::Session, LiveError>> + Send;
}

/// The events already shown, remembered by key for `window` of (caller-supplied) time.
#[derive(Debug, Clone)]
pub struct Seen {
    window_ms: u64,
    last: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
    /// Events forgotten at [`MAX_REMEMBERED`] before their window ended.
    pub forgotten: u64,
}

impl Seen {
    /// Remembers events for `window`.
    pub fn new(window: Duration) -> Self {
        Seen {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            last: HashMap::new(),
            order: VecDeque::new(),
            forgotten: 0,
        }
    }

    /// How many events are remembered.
    pub fn remembered(&self) -> usize {
        self.last.len()
    }

    /// Keeps the events not seen within the window (in their order), remembering them at
    /// `now_ms`. An event seen again is remembered from now on, so a replay that keeps coming
    /// (moto's snapshot on every session) stays recognised.
    pub fn admit(&mut self, events: Vec<LiveEvent>, now_ms: u64) -> Vec<LiveEvent> {
        self.expire(now_ms);
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let k = e.key();
            if self.last.insert(k, now_ms).is_none() {
                out.push(e);
            }
            self.order.push_back((now_ms, k));
        }
        // Re-sightings add to `order` too: it is bounded as well.
        while self.last.len() > MAX_REMEMBERED || self.order.len() > 2 * MAX_REMEMBERED {
            match self.order.pop_front() {
                Some((at, k)) => {
                    if self.last.get(&k) == Some(&at) {
                        self.last.remove(&k);
                        self.forgotten += 1;
                    }
                }
                None => break,
            }
        }
        out
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, k)) = self.order.front() {
            if now_ms.saturating_sub(at) < self.window_ms {
                break;
            }
            self.order.pop_front();
            // Only the latest sighting of a key forgets it.
            if self.last.get(&k) == Some(&at) {
                self.last.remove(&k);
            }
        }
    }
}

/// What [`follow`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Notice {
    /// Events not shown before, in the order the session sent them.
    Events(Vec<LiveEvent>),
    /// The service sampled an update of this session.
    Sampled {
        /// The log groups of the session.
        groups: String,
    },
    /// A session ended or could not start; the next one starts after `delay`.
    Reconnecting {
        /// Why (`None`: the service closed the session normally).
        error: Option<LiveError>,
        /// The wait before the next StartLiveTail.
        delay: Duration,
    },
    /// A failure no new session can fix (access denied, unknown group): this follower stopped.
    Failed(LiveError),
    /// Events forgotten at [`MAX_REMEMBERED`] before their de-duplication window ended.
    Forgotten(u64),
}

/// How [`follow`] reconnects and de-duplicates.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First reconnect delay, and the delay after a session that delivered updates.
    pub reconnect_base: Duration,
    /// The longest reconnect delay.
    pub reconnect_cap: Duration,
    /// How long shown events are remembered.
    pub dedup_window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            reconnect_base: Duration::from_secs(1),
            reconnect_cap: Duration::from_secs(30),
            dedup_window: DEFAULT_DEDUP_WINDOW,
        }
    }
}

fn elapsed_ms(since: tokio::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Follows `groups` (ARNs, at most [`MAX_GROUPS_PER_SESSION`]) session after session until a
/// fatal error or until `tx` is closed. A session that delivered updates is followed by a new
/// one after `reconnect_base`; failures back off up to `reconnect_cap`.
pub async fn follow<C: Connect>(
    connector: C,
    groups: Vec<String>,
    policy: Policy,
    tx: tokio::sync::mpsc::Sender<Notice>,
) {
    let label = groups.join(", ");
    let asked: HashSet<&str> = groups.iter().map(|g| group_name_of(g)).collect();
    let mut seen = Seen::new(policy.dedup_window);
    let clock = tokio::time::Instant::now();
    let mut backoff = Backoff::new(policy.reconnect_base, policy.reconnect_cap);
    loop {
        let mut delivered = false;
        let error = match connector.connect(&groups).await {
            Err(e) => Some(e),
            Ok(mut session) => loop {
                match session.next_update().await {
                    Ok(Some(update)) => {
                        delivered = true;
                        if update.sampled
                            && tx
                                .send(Notice::Sampled {
                                    groups: label.clone(),
                                })
                                .await
                                .is_err()
                        {
                            return;
                        }
                        // Only the groups asked for (an emulator has been seen to answer for
                        // another group).
                        let mut events = update.events;
                        events.retain(|e| asked.contains(group_name_of(&e.log_group)));
                        let forgotten = seen.forgotten;
                        let fresh = seen.admit(events, elapsed_ms(clock));
                        let n = seen.forgotten - forgotten;
                        if n > 0 && tx.send(Notice::Forgotten(n)).await.is_err() {
                            return;
                        }
                        if !fresh.is_empty() && tx.send(Notice::Events(fresh)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            },
        };
        if let Some(e) = &error {
            if !e.is_retryable() {
                let _ = tx.send(Notice::Failed(e.clone())).await;
                return;
            }
        }
        if delivered {
            backoff = Backoff::new(policy.reconnect_base, policy.reconnect_cap);
        }
        let delay = if delivered {
            policy.reconnect_base
        } else {
            backoff.next_delay(Some(policy.reconnect_base))
        };
        if tx
            .send(Notice::Reconnecting { error, delay })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

/// What a session asks for besides its groups.
#[derive(Debug, Clone, Default)]
pub struct LiveQuery {
    /// Only streams whose name starts with this (a single log group only, as the API requires).
    pub log_stream_name_prefix: Option<String>,
    /// The filter pattern (`None`: every event).
    pub filter_pattern: Option<String>,
}

/// Opens real sessions with the SDK client.
#[derive(Debug, Clone)]
pub struct SdkConnector {
    client: aws_sdk_cloudwatchlogs::Client,
    query: LiveQuery,
}

impl SdkConnector {
    /// A connector on `client` (see [`live_tail_client`] for local endpoints).
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, query: LiveQuery) -> Self {
        SdkConnector { client, query }
    }
}

/// A real session: the SDK's event receiver.
#[derive(Debug)]
pub struct SdkSession {
    groups: String,
    // The output holds the event receiver (whose type the SDK does not export).
    out: aws_sdk_cloudwatchlogs::operation::start_live_tail::StartLiveTailOutput,
}

impl Connect for SdkConnector {
    type Session = SdkSession;

    async fn connect(&self, groups: &[String]) -> Result<SdkSession, LiveError> {
        use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata as _;
        let out = self
            .client
            .start_live_tail()
            .set_log_group_identifiers(Some(groups.to_vec()))
            .set_log_stream_name_prefixes(
                self.query.log_stream_name_prefix.clone().map(|p| vec![p]),
            )
            .set_log_event_filter_pattern(self.query.filter_pattern.clone())
            .send()
            .await;
        match out {
            Ok(out) => Ok(SdkSession {
                groups: groups.join(", "),
                out,
            }),
            Err(e) => {
                let verdict = match &e {
                    aws_smithy_runtime_api::client::result::SdkError::ServiceError(s) => classify(
                        Failure::Service(s.err().code(), Some(s.raw().status().as_u16())),
                    ),
                    other => crate::convert::aws::classify_sdk(other),
                };
                Err(LiveError::Start {
                    groups: groups.join(", "),
                    message: crate::convert::aws::error_text(&e),
                    verdict,
                })
            }
        }
    }
}

impl Session for SdkSession {
    async fn next_update(&mut self) -> Result<Option<Update>, LiveError> {
        use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata as _;
        use aws_sdk_cloudwatchlogs::types::StartLiveTailResponseStream as Frame;
        loop {
            let frame = match self.out.response_stream.recv().await {
                Ok(f) => f,
                Err(e) => {
                    let (code, message) = match &e {
                        aws_smithy_runtime_api::client::result::SdkError::ServiceError(s) => (
                            s.err().code().map(str::to_owned),
                            s.err()
                                .message()
                                .map(str::to_owned)
                                .unwrap_or_else(|| s.err().to_string()),
                        ),
                        other => (None, error_chain(other)),
                    };
                    let message = match &code {
                        Some(c) => format!("{c}: {message}"),
                        None => message,
                    };
                    return Err(LiveError::Stream {
                        groups: self.groups.clone(),
                        message,
                        verdict: classify_stream(code.as_deref()),
                    });
                }
            };
            match frame {
                None => return Ok(None),
                Some(Frame::SessionUpdate(u)) => {
                    let sampled = u.session_metadata().is_some_and(|m| m.sampled());
                    let events = u
                        .session_results()
                        .iter()
                        .map(|e| LiveEvent {
                            log_group: e.log_group_identifier().unwrap_or_default().to_owned(),
                            log_stream: e.log_stream_name().unwrap_or_default().to_owned(),
                            timestamp_ms: e.timestamp().unwrap_or(0),
                            ingestion_ms: e.ingestion_time().unwrap_or(0),
                            message: e.message().unwrap_or_default().to_owned(),
                        })
                        .collect();
                    return Ok(Some(Update { events, sampled }));
                }
                // The session start only echoes the request; unknown frames are future ones.
                Some(_) => continue,
            }
        }
    }
}

/// Whether `url` names a host before which `stream-` makes no usable name: `localhost`, an IP
/// address, or a single-label name (`moto` in a compose network): emulators and tunnels.
pub fn is_local_endpoint(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    !host.is_empty()
        && (host == "localhost" || !host.contains('.') || host.parse::<std::net::IpAddr>().is_ok())
}

/// Drops the `stream-` host prefix StartLiveTail puts before the endpoint: an emulator on
/// `http://127.0.0.1:PORT` cannot be reached as `stream-127.0.0.1`.
#[derive(Debug)]
struct NoEndpointPrefix;

impl aws_smithy_runtime_api::client::interceptors::Intercept for NoEndpointPrefix {
    fn name(&self) -> &'static str {
        "NoEndpointPrefix"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut aws_sdk_cloudwatchlogs::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_cloudwatchlogs::config::RuntimeComponents,
        cfg: &mut aws_sdk_cloudwatchlogs::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .unset::<aws_smithy_runtime_api::client::endpoint::EndpointPrefix>();
        Ok(())
    }
}

/// A CloudWatch Logs client for Live Tail: for an endpoint on this machine (an emulator) the
/// `stream-` host prefix is dropped; AWS endpoints are left as the SDK builds them.
pub fn live_tail_client(sdk: &aws_config::SdkConfig) -> aws_sdk_cloudwatchlogs::Client {
    let mut conf = aws_sdk_cloudwatchlogs::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some_and(is_local_endpoint) {
        conf = conf.interceptor(NoEndpointPrefix);
    }
    aws_sdk_cloudwatchlogs::Client::from_conf(conf.build())
}

/// The ARN Live Tail takes: without the `:*` DescribeLogGroups puts in `arn`.
pub fn session_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

/// The group name in a log group ARN (`arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]`), or the
/// identifier itself when it is not one.
pub fn group_name_of(identifier: &str) -> &str {
    let id = session_arn(identifier);
    match id.split_once(":log-group:") {
        Some((_, name)) if id.starts_with("arn:") => name,
        _ => id,
    }
}

/// The session ARN of each group (name, ARN), with DescribeLogGroups: a group given as an ARN
/// is taken as it is; a name must match a group exactly.
pub async fn resolve_arns(
    client: &aws_sdk_cloudwatchlogs::Client,
    budget: &Budget,
    progress: &Progress,
    groups: &[String],
) -> Result<Vec<(String, String)>, ReadError> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        if g.starts_with("arn:") {
            out.push((group_name_of(g).to_owned(), session_arn(g).to_owned()));
            continue;
        }
        let mut token: Option<String> = None;
        let mut found = None;
        while found.is_none() {
            let page = with_retries(budget, progress, g, "DescribeLogGroups", || {
                client
                    .describe_log_groups()
                    .log_group_name_prefix(g)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            found = page
                .log_groups()
                .iter()
                .find(|lg| lg.log_group_name() == Some(g.as_str()))
                .and_then(|lg| lg.log_group_arn().or(lg.arn()))
                .map(|arn| session_arn(arn).to_owned());
            match page.next_token() {
                Some(t) if token.as_deref() != Some(t) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        let arn = found.ok_or_else(|| ReadError::Api {
            group: g.clone(),
            operation: "DescribeLogGroups",
            message: "no such log group".to_owned(),
            attempts: 1,
        })?;
        out.push((g.clone(), arn));
    }
    Ok(out)
}

/// How often the sampling warning may be repeated.
const SAMPLED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// `tail` with Live Tail: one [`follow`]er per ten groups, their events as record batches
/// (in stream order, under the groups' names), sampling and reconnects as notices (the
/// sampling one at most once a minute), a follower that stopped for good as a failed input.
/// Ends when every follower stopped.
pub struct LiveSource {
    rx: tokio::sync::mpsc::Receiver<Notice>,
    /// (name, ARN) of each group.
    names: Vec<(String, String)>,
    followers: Vec<tokio::task::JoinHandle<()>>,
    sampled: u64,
    warned_at: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource")
            .field("groups", &self.names)
            .finish_non_exhaustive()
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        for f in &self.followers {
            f.abort();
        }
    }
}

impl LiveSource {
    /// Follows `groups` ((name, ARN) pairs) through `connector`.
    pub fn start<C: Connect + Clone>(
        connector: C,
        groups: Vec<(String, String)>,
        policy: Policy,
    ) -> LiveSource {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let arns: Vec<String> = groups.iter().map(|(_, arn)| arn.clone()).collect();
        let followers = arns
            .chunks(MAX_GROUPS_PER_SESSION)
            .map(|chunk| {
                tokio::spawn(follow(
                    connector.clone(),
                    chunk.to_vec(),
                    policy.clone(),
                    tx.clone(),
                ))
            })
            .collect();
        LiveSource {
            rx,
            names: groups,
            followers,
            sampled: 0,
            warned_at: None,
        }
    }

    fn name_of(&self, arn: &str) -> String {
        self.names
            .iter()
            .find(|(_, a)| a == arn)
            .map_or_else(|| group_name_of(arn).to_owned(), |(n, _)| n.clone())
    }
}

impl crate::convert::pipeline::Source for LiveSource {
    async fn next(&mut self) -> Option<crate::convert::pipeline::SourceEvent> {
        use crate::convert::pipeline::{InputFailure, SourceEvent};
        loop {
            match self.rx.recv().await? {
                Notice::Events(mut events) => {
                    // The converter wants each stream in order; an update is in time order.
                    events.sort_by(|a, b| {
                        (&a.log_group, &a.log_stream, a.timestamp_ms, a.ingestion_ms).cmp(&(
                            &b.log_group,
                            &b.log_stream,
                            b.timestamp_ms,
                            b.ingestion_ms,
                        ))
                    });
                    let mut batch = crate::convert::record::RecordBatch::new(0);
                    for e in &events {
                        let group = self.name_of(&e.log_group);
                        let o = batch.origin(&group, &e.log_stream);
                        batch.push(o, "", e.timestamp_ms, &e.message);
                    }
                    return Some(SourceEvent::Records(batch));
                }
                Notice::Forgotten(n) => {
                    return Some(SourceEvent::Counted {
                        limit: "live_tail_dedup",
                        n,
                    })
                }
                Notice::Sampled { groups } => {
                    self.sampled += 1;
                    if self
                        .warned_at
                        .is_none_or(|t| t.elapsed() >= SAMPLED_WARNING_EVERY)
                    {
                        self.warned_at = Some(tokio::time::Instant::now());
                        return Some(SourceEvent::Notice(format!(
                            "warning: Live Tail sampled {} update(s) of {groups} (more than 500 events/s matched): spans are missing; use `spanline tail --poll` or a narrower --filter-pattern",
                            self.sampled
                        )));
                    }
                }
                // A session the service closed normally is followed by the next one quietly.
                Notice::Reconnecting {
                    error: Some(e),
                    delay,
                } => {
                    return Some(SourceEvent::Notice(format!(
                        "{e}; new session in {delay:?}"
                    )))
                }
                Notice::Reconnecting { error: None, .. } => {}
                Notice::Failed(e) => {
                    return Some(SourceEvent::Failed(InputFailure {
                        input: "Live Tail".into(),
                        error: Box::new(e),
                    }))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
