//! The Zipkin sink's transport: configuration from flags and `OTEL_EXPORTER_ZIPKIN_*`,
//! batching, and one HTTP POST per batch with the shared retry policy. The encoding is the
//! parent module's, pure.

use super::encode_zipkin;
use crate::convert::assemble::{Span, SpanData};
use crate::convert::printable::visible;
use crate::convert::retry::{classify_http, instant_after, parse_retry_after, Backoff, Verdict};
use crate::convert::sink::otlp::config::{allow_insecure_from_env, check_cleartext, redact_url};
use crate::convert::sink::otlp::{redact_location, redirect_message};
use crate::convert::sink::{Delivery, Sink, SinkError};
use prost::bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Configuration

/// The spec's default endpoint (`OTEL_EXPORTER_ZIPKIN_ENDPOINT`).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:9411/api/v2/spans";
/// The spec's default request timeout (`OTEL_EXPORTER_ZIPKIN_TIMEOUT`, 10 000 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default spans per request.
pub const DEFAULT_MAX_BATCH_SPANS: usize = 512;
/// Default retry deadline per request.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// Longest response body kept in an error.
pub const MAX_ERROR_BODY: usize = 1024;
/// Largest response body read: Zipkin answers with an empty body or a short message.
const MAX_RESPONSE: usize = 64 * 1024;

/// Everything a [`ZipkinSink`] needs. Start from [`ZipkinConfig::default`] or
/// [`ZipkinConfig::from_env`] and adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ZipkinConfig {
    /// The full URL spans are POSTed to (`…/api/v2/spans`).
    pub endpoint: String,
    /// Time limit of one request (connect, send, response).
    pub timeout: Duration,
    /// Most spans in one request; larger sends are split.
    pub max_batch_spans: usize,
    /// How long one request is retried before `send` gives up with `SinkError::Exhausted`.
    pub retry_deadline: Duration,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Send credentials in the URL over cleartext `http://` to a host that is not a loopback
    /// address (see [`OtlpConfig::allow_insecure`](crate::convert::sink::otlp::OtlpConfig)).
    pub allow_insecure: bool,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        ZipkinConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_batch_spans: DEFAULT_MAX_BATCH_SPANS,
            retry_deadline: DEFAULT_RETRY_DEADLINE,
            backoff: Backoff::default(),
            allow_insecure: false,
        }
    }
}

impl ZipkinConfig {
    /// Reads `OTEL_EXPORTER_ZIPKIN_ENDPOINT` and `OTEL_EXPORTER_ZIPKIN_TIMEOUT` (milliseconds,
    /// as the spec says; the Python exporter reads seconds) through `get` (pass
    /// `|k| std::env::var(k).ok()`). Empty values count as unset. `SPANLINE_ALLOW_INSECURE`
    /// sets `allow_insecure`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ZipkinConfig, SinkError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut config = ZipkinConfig {
            allow_insecure: allow_insecure_from_env(&get)?,
            ..ZipkinConfig::default()
        };
        if let Some(v) = var("OTEL_EXPORTER_ZIPKIN_ENDPOINT") {
            config.endpoint = v.trim().to_owned();
        }
        if let Some(v) = var("OTEL_EXPORTER_ZIPKIN_TIMEOUT") {
            config.timeout = match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(SinkError::Config(format!(
                        "OTEL_EXPORTER_ZIPKIN_TIMEOUT={v:?}: expected a positive number of \
                         milliseconds"
                    )))
                }
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks settings made by hand.
    pub fn validate(&self) -> Result<(), SinkError> {
        let url = reqwest::Url::parse(&self.endpoint).map_err(|e| {
            SinkError::Config(format!("endpoint {:?}: {e}", redact_url(&self.endpoint)))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SinkError::Config(format!(
                "endpoint {:?}: expected an http:// or https:// URL with a host",
                redact_url(&self.endpoint)
            )));
        }
        if self.max_batch_spans == 0 {
            return Err(SinkError::Config(
                "max_batch_spans must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(SinkError::Config("timeout must be positive".into()));
        }
        check_cleartext(&self.endpoint, &[], self.allow_insecure)
    }
}

// ---------------------------------------------------------------------------------------------
// Sending

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Accepted,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fatal {
        status: String,
        body: String,
    },
    /// A 3xx, not followed (see [`Verdict::Redirect`]).
    Redirect {
        status: String,
        location: Option<String>,
    },
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The endpoint without credentials, for errors.
    endpoint: String,
    config: ZipkinConfig,
}

/// Sends spans to a Zipkin collector (`POST /api/v2/spans`). Clone it to send concurrently;
/// clones share connections.
///
/// `send` splits the spans into requests of at most `max_batch_spans` and sends them one after
/// another, each retried until accepted (any 2xx; Zipkin answers 202), refused (fatal 4xx and
/// 500, see [`classify_http`]) or `retry_deadline` has passed. It returns `Ok` only when every
/// request was accepted; on `Err` some batches may have been stored, which is harmless when the
/// caller resends: Zipkin merges spans with the same ids.
#[derive(Clone, Debug)]
pub struct ZipkinSink {
    inner: Option<Arc<Inner>>,
}

impl ZipkinSink {
    /// Validates `config` and prepares the client. Connects lazily, on the first `send`.
    pub fn new(config: ZipkinConfig) -> Result<ZipkinSink, SinkError> {
        config.validate()?;
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| SinkError::Config(format!("endpoint: {e}")))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("spanline/", env!("CARGO_PKG_VERSION")))
            // Never follow: see `Verdict::Redirect`.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|e| SinkError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(ZipkinSink {
            inner: Some(Arc::new(Inner {
                client,
                url,
                endpoint: redact_url(&config.endpoint),
                config,
            })),
        })
    }
}

impl Sink for ZipkinSink {
    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        let Some(inner) = self.inner.clone() else {
            return Err(SinkError::Config("send after shutdown".into()));
        };
        let mut delivery = Delivery::default();
        for batch in spans.chunks(inner.config.max_batch_spans.max(1)) {
            let data: Vec<SpanData> = batch.iter().map(Span::data).collect();
            let body = Bytes::from(encode_zipkin(&data).to_string());
            let attempts = inner.deliver(body).await?;
            delivery.accepted += batch.len() as u64;
            delivery.attempts = delivery.attempts.max(attempts);
        }
        Ok(delivery)
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        // Nothing is buffered between sends; the client closes its connections when the last
        // clone goes.
        self.inner = None;
        Ok(())
    }
}

impl Inner {
    /// Sends one body until it is accepted, refused, or the retry deadline passes; returns the
    /// attempts made.
    async fn deliver(&self, body: Bytes) -> Result<u32, SinkError> {
        // Checked: a configured deadline of years must not overflow the clock.
        let deadline = instant_after(Instant::now(), self.config.retry_deadline);
        let mut backoff = self.config.backoff.clone();
        let mut attempts: u32 = 0;
        // Why the previous attempt failed: an attempt cut short by the deadline must not hide
        // the real cause behind "no response within 0 ms".
        let mut previous: Option<String> = None;
        loop {
            // Retries never run past the deadline; the first attempt gets the full timeout.
            let budget = match &previous {
                None => self.config.timeout,
                Some(_) => self
                    .config
                    .timeout
                    .min(deadline.saturating_duration_since(Instant::now())),
            };
            if let (Some(reason), true) = (&previous, budget.is_zero()) {
                return Err(self.exhausted(attempts, reason));
            }
            attempts = attempts.saturating_add(1);
            let outcome = match tokio::time::timeout(budget, self.attempt(body.clone())).await {
                Ok(o) => o,
                Err(_) => Outcome::Retry {
                    reason: match &previous {
                        Some(prev) if budget < self.config.timeout => format!(
                            "{prev} (then no response in the {} ms left before the retry \
                             deadline)",
                            budget.as_millis()
                        ),
                        _ => format!("no response within {} ms", budget.as_millis()),
                    },
                    after: None,
                },
            };
            match outcome {
                Outcome::Accepted => return Ok(attempts),
                Outcome::Fatal { status, body } => {
                    return Err(SinkError::Fatal {
                        endpoint: self.endpoint.clone(),
                        status: visible(&status).into_owned(),
                        body: truncate(&visible(&body), MAX_ERROR_BODY),
                    })
                }
                Outcome::Redirect { status, location } => {
                    let location = location.map(|l| visible(&redact_location(&l)).into_owned());
                    return Err(SinkError::Config(redirect_message(
                        &self.endpoint,
                        &status,
                        location,
                    )));
                }
                Outcome::Retry { reason, after } => {
                    let delay =
                        backoff.next_delay(after.map(|a| a.min(self.config.retry_deadline)));
                    if instant_after(Instant::now(), delay) >= deadline {
                        return Err(self.exhausted(attempts, &reason));
                    }
                    previous = Some(reason);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn exhausted(&self, attempts: u32, reason: &str) -> SinkError {
        SinkError::Exhausted {
            endpoint: self.endpoint.clone(),
            attempts,
            last: truncate(&visible(reason), MAX_ERROR_BODY),
        }
    }

    /// One POST.
    async fn attempt(&self, body: Bytes) -> Outcome {
        let resp = match self.client.post(self.url.clone()).body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                // A request that cannot be built will not build next time; anything else
                // (timeouts, refused or reset connections) is worth another try.
                return if e.is_builder() {
                    Outcome::Fatal {
                        status: "request not sent".into(),
                        body: error_chain(&e),
                    }
                } else {
                    Outcome::Retry {
                        reason: error_chain(&e),
                        after: None,
                    }
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now_unix(), self.config.retry_deadline));
        match classify_http(status.as_u16()) {
            // Zipkin's answer to a POST carries nothing: accepted means stored or queued.
            Verdict::Success => Outcome::Accepted,
            Verdict::Redirect => Outcome::Redirect {
                status: format!("HTTP {status}"),
                location: resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .map(|l| self.url.join(&l).map_or(l, |u| u.to_string())),
            },
            Verdict::Retry | Verdict::Throttle => Outcome::Retry {
                reason: format!("HTTP {status}: {}", read_body(resp).await),
                after: retry_after,
            },
            Verdict::Fatal => Outcome::Fatal {
                status: format!("HTTP {status}"),
                body: read_body(resp).await,
            },
        }
    }
}

/// At most [`MAX_RESPONSE`] bytes of the body, as text.
async fn read_body(mut resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= MAX_RESPONSE {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return format!("(body unreadable: {})", error_chain(&e.without_url()));
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error and its causes, `: `-separated (reqwest's own `Display` shows only the top).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let t = err.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = err.source();
    }
    s
}

/// At most `max` bytes of `s`, cut at a character boundary, `…` marking a cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
