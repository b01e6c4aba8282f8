//! OTLP exporter configuration: the OpenTelemetry environment variables
//! (`OTEL_EXPORTER_OTLP_*`, "OpenTelemetry Protocol Exporter" spec), validated once, plus the
//! batching and retry knobs, and SigV4 signing for X-Ray's OTLP endpoint. Header values are
//! secrets: `Debug` redacts them, and no error built here quotes one.

use super::sigv4::SigV4;
use crate::convert::retry::Backoff;
use crate::convert::sink::SinkError;
use std::fmt;
use std::time::Duration;

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`).
    Grpc,
    /// OTLP/HTTP with a protobuf body (`http/protobuf`), the spec's default.
    #[default]
    HttpProtobuf,
    /// OTLP/HTTP with a JSON body (`http/json`).
    HttpJson,
}

impl Protocol {
    /// Parses the `OTEL_EXPORTER_OTLP_PROTOCOL` values.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            "http/json" => Some(Protocol::HttpJson),
            _ => None,
        }
    }

    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }

    /// The spec's default endpoint for this protocol (a base URL, without `/v1/traces`).
    pub fn default_base(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf | Protocol::HttpJson => "http://localhost:4318",
        }
    }
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Uncompressed (the spec's default).
    #[default]
    None,
    /// gzip (`Content-Encoding: gzip`, or gRPC message compression).
    Gzip,
}

/// Everything an [`OtlpSink`](super::OtlpSink) needs. Start from [`OtlpConfig::default`] or
/// [`OtlpConfig::from_env`] and adjust fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct OtlpConfig {
    /// The full URL requests go to: for HTTP the traces URL (`…/v1/traces`), for gRPC the
    /// server's base URL (`http://host:4317`).
    pub endpoint: String,
    /// Transport and body encoding.
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata). Values are secrets.
    pub headers: Vec<(String, String)>,
    /// Body compression.
    pub compression: Compression,
    /// Time limit of one request (connect, send, response).
    pub timeout: Duration,
    /// Most spans in one export request; larger sends are split.
    pub max_batch_spans: usize,
    /// Most export requests in flight at once within one `send`.
    pub max_concurrency: usize,
    /// How long one batch is retried before `send` gives up with `SinkError::Exhausted`.
    pub retry_deadline: Duration,
    /// Backoff between retries.
    pub backoff: Backoff,
    /// Send headers (or URL credentials) over cleartext `http://` to a host that is not a
    /// loopback address. Off by default: [`OtlpConfig::validate`] refuses such a configuration
    /// (`--allow-insecure`, [`ALLOW_INSECURE_VAR`]`=true`).
    pub allow_insecure: bool,
    /// Sign every request with AWS SigV4. `None` signs only when the endpoint is X-Ray's
    /// (`https://xray.<region>.amazonaws.com`, see [`xray_region`]), for that Region with the
    /// default credential chain. Signing for the service `xray` also applies X-Ray's limits
    /// before sending ([`super::xray`]).
    pub sigv4: Option<SigV4>,
    /// Where the function's log lines go as OTLP log records (`--logs otlp`); `None`: spans
    /// only.
    pub logs: Option<LogsTarget>,
}

/// The OTLP logs endpoint of an [`OtlpConfig`] (`--logs otlp`): the log records kept beside the
/// spans ([`crate::convert::assemble::SpanLog`]) go there after the spans, with the
/// configuration's protocol, compression, headers, timeout and retries.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogsTarget {
    /// For HTTP the logs URL (`…/v1/logs`), for gRPC the server's base URL.
    pub endpoint: String,
    /// Headers sent to the logs endpoint only, after the configuration's (CloudWatch Logs'
    /// `x-aws-log-group` and `x-aws-log-stream`). Values are secrets like the others.
    pub headers: Vec<(String, String)>,
    /// How requests to the logs endpoint are signed; `None`: as [`OtlpConfig::signing`] says
    /// for that endpoint (CloudWatch Logs' own endpoint is signed for `logs`).
    pub sigv4: Option<SigV4>,
    /// Most records in one request.
    pub max_records: usize,
    /// Most bytes of one request before compression (CloudWatch Logs: 1 MB); a larger one is
    /// halved until it fits.
    pub max_request_bytes: Option<usize>,
}

/// Default records per logs request (the spec's `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_MAX_BATCH_LOGS: usize = 512;

/// CloudWatch Logs' OTLP endpoint limits (AWS CloudWatch user guide, "OTLP Endpoints"):
/// 10,000 log events and 1 MB uncompressed per request.
pub const CLOUDWATCH_LOGS_MAX_RECORDS: usize = 10_000;
/// See [`CLOUDWATCH_LOGS_MAX_RECORDS`].
pub const CLOUDWATCH_LOGS_MAX_REQUEST_BYTES: usize = 1_000_000;

/// The signing name of CloudWatch Logs.
pub const LOGS_SERVICE: &str = "logs";

impl LogsTarget {
    /// Log records to `endpoint` (a full URL for HTTP, the server for gRPC).
    pub fn new(endpoint: impl Into<String>) -> LogsTarget {
        LogsTarget {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            sigv4: None,
            max_records: DEFAULT_MAX_BATCH_LOGS,
            max_request_bytes: None,
        }
    }

    /// CloudWatch Logs' OTLP endpoint in `region` (`endpoint`: another base URL for it, a VPC
    /// endpoint or a test server; `/v1/logs` is appended), writing into `group` and `stream`,
    /// which must exist; signed for `logs`; within its limits.
    pub fn cloudwatch(
        region: &str,
        endpoint: Option<&str>,
        group: &str,
        stream: &str,
    ) -> Result<LogsTarget, SinkError> {
        if !is_region(region) {
            return Err(SinkError::Config(format!(
                "CloudWatch Logs Region {:?}: expected a Region such as us-east-1",
                crate::convert::printable::visible(region)
            )));
        }
        let endpoint = match endpoint {
            Some(base) => http_signal_url(base.trim(), "logs"),
            None => cloudwatch_logs_endpoint(region),
        };
        validate_endpoint(&endpoint)?;
        Ok(LogsTarget {
            endpoint,
            headers: vec![
                ("x-aws-log-group".to_owned(), group.to_owned()),
                ("x-aws-log-stream".to_owned(), stream.to_owned()),
            ],
            sigv4: Some(SigV4::logs(region)),
            max_records: CLOUDWATCH_LOGS_MAX_RECORDS,
            max_request_bytes: Some(CLOUDWATCH_LOGS_MAX_REQUEST_BYTES),
        })
    }
}

/// CloudWatch Logs' OTLP logs URL in `region`: `https://logs.<region>.amazonaws.com/v1/logs`
/// (`amazonaws.com.cn` in the China Regions).
pub fn cloudwatch_logs_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://logs.{region}.{suffix}/v1/logs")
}

/// The environment variable that sets `allow_insecure` (`true` or `false`).
pub const ALLOW_INSECURE_VAR: &str = "SPANLINE_ALLOW_INSECURE";

/// Default request timeout (the spec's 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default spans per request (the spec's `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_MAX_BATCH_SPANS: usize = 512;
/// Default requests in flight.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// Default retry deadline.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(60);

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: http_traces_url(Protocol::HttpProtobuf.default_base()),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            compression: Compression::None,
            timeout: DEFAULT_TIMEOUT,
            max_batch_spans: DEFAULT_MAX_BATCH_SPANS,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            retry_deadline: DEFAULT_RETRY_DEADLINE,
            backoff: Backoff::default(),
            allow_insecure: false,
            sigv4: None,
            logs: None,
        }
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("protocol", &self.protocol)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .field("max_batch_spans", &self.max_batch_spans)
            .field("max_concurrency", &self.max_concurrency)
            .field("retry_deadline", &self.retry_deadline)
            .field("backoff", &self.backoff)
            .field("allow_insecure", &self.allow_insecure)
            .field("sigv4", &self.sigv4)
            .field("logs", &self.logs.as_ref().map(|l| redact_url(&l.endpoint)))
            .finish()
    }
}

const PREFIX: &str = "OTEL_EXPORTER_OTLP_";
const TRACES_PREFIX: &str = "OTEL_EXPORTER_OTLP_TRACES_";

impl OtlpConfig {
    /// Reads the OTLP exporter variables through `get` (pass `|k| std::env::var(k).ok()`).
    ///
    /// For each setting the `OTEL_EXPORTER_OTLP_TRACES_*` variable wins over the generic
    /// `OTEL_EXPORTER_OTLP_*` one (headers too: the signal-specific list replaces the generic
    /// one, as the Python and Go SDKs do); empty values count as unset. With HTTP, the generic
    /// endpoint is a base URL that gets `v1/traces` appended to its path, while the
    /// signal-specific endpoint is used as is; gRPC uses either as is. Defaults:
    /// `http/protobuf`, `http://localhost:4318` (gRPC: `http://localhost:4317`), no
    /// compression, 10 000 ms. [`ALLOW_INSECURE_VAR`] sets `allow_insecure`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<OtlpConfig, SinkError> {
        let var = |suffix: &str| -> Option<(String, String)> {
            [TRACES_PREFIX, PREFIX].iter().find_map(|p| {
                let name = format!("{p}{suffix}");
                get(&name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        let protocol = match var("PROTOCOL") {
            None => Protocol::default(),
            Some((name, v)) => Protocol::from_name(&v).ok_or_else(|| {
                SinkError::Config(format!(
                    "{name}={v:?}: expected grpc, http/protobuf or http/json"
                ))
            })?,
        };
        let endpoint = match (
            get(&format!("{TRACES_PREFIX}ENDPOINT")).filter(|v| !v.trim().is_empty()),
            get(&format!("{PREFIX}ENDPOINT")).filter(|v| !v.trim().is_empty()),
        ) {
            (Some(signal), _) => signal.trim().to_owned(),
            (None, Some(base)) if protocol == Protocol::Grpc => base.trim().to_owned(),
            (None, Some(base)) => http_traces_url(base.trim()),
            (None, None) if protocol == Protocol::Grpc => protocol.default_base().to_owned(),
            (None, None) => http_traces_url(protocol.default_base()),
        };
        validate_endpoint(&endpoint)?;
        let headers = match var("HEADERS") {
            None => Vec::new(),
            Some((name, v)) => {
                parse_headers(&v).map_err(|e| SinkError::Config(format!("{name}: {e}")))?
            }
        };
        let compression = match var("COMPRESSION") {
            None => Compression::None,
            Some((name, v)) => match v.trim() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => {
                    return Err(SinkError::Config(format!(
                        "{name}={v:?}: expected gzip or none"
                    )))
                }
            },
        };
        let timeout = match var("TIMEOUT") {
            None => DEFAULT_TIMEOUT,
            Some((name, v)) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(SinkError::Config(format!(
                        "{name}={v:?}: expected a positive number of milliseconds"
                    )))
                }
            },
        };
        Ok(OtlpConfig {
            endpoint,
            protocol,
            headers,
            compression,
            timeout,
            allow_insecure: allow_insecure_from_env(&get)?,
            ..OtlpConfig::default()
        })
    }

    /// Checks the settings `from_env` cannot check for fields set by hand.
    pub fn validate(&self) -> Result<(), SinkError> {
        if let Some(logs) = self.logs_config() {
            logs.validate().map_err(|e| match e {
                SinkError::Config(m) => SinkError::Config(format!("logs: {m}")),
                other => other,
            })?;
        }
        validate_endpoint(&self.endpoint)?;
        if self.max_batch_spans == 0 {
            return Err(SinkError::Config(
                "max_batch_spans must be at least 1".into(),
            ));
        }
        if self.max_concurrency == 0 {
            return Err(SinkError::Config(
                "max_concurrency must be at least 1".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(SinkError::Config("timeout must be positive".into()));
        }
        let mut keys: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        let signing = self.signing();
        if signing.is_some() {
            // A signature can be replayed for minutes, and the session token goes with it.
            keys.push("authorization (AWS SigV4)");
        }
        check_cleartext(&self.endpoint, &keys, self.allow_insecure)?;
        if let Some(s) = &signing {
            if !is_region(&s.region) {
                return Err(SinkError::Config(format!(
                    "SigV4 region {:?}: expected a Region such as us-east-1",
                    crate::convert::printable::visible(&s.region)
                )));
            }
            if self.protocol == Protocol::Grpc {
                return Err(SinkError::Config(format!(
                    "endpoint {}: SigV4 signing (X-Ray's OTLP endpoint) works over OTLP/HTTP \
                     only, not grpc: use http/protobuf or http/json",
                    redact_url(&self.endpoint)
                )));
            }
        }
        for (i, (k, v)) in self.headers.iter().enumerate() {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(SinkError::Config(format!(
                    "header {}: the key is not a valid header name",
                    i + 1
                )));
            }
            if reqwest::header::HeaderValue::from_str(v).is_err() {
                return Err(SinkError::Config(format!(
                    "header {} ({k}): the value is not a valid header value",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// The endpoint without user info or query, safe to print.
    pub fn endpoint_redacted(&self) -> String {
        redact_url(&self.endpoint)
    }

    /// How requests are signed: [`OtlpConfig::sigv4`] when set, else X-Ray's signing when the
    /// endpoint is X-Ray's (CloudWatch Logs' for its OTLP endpoint), else not at all.
    pub fn signing(&self) -> Option<SigV4> {
        self.sigv4
            .clone()
            .or_else(|| xray_region(&self.endpoint).map(SigV4::xray))
            .or_else(|| aws_region(&self.endpoint, "logs").map(SigV4::logs))
    }

    /// The configuration of requests to the logs endpoint, when there is one: this one with
    /// the target's endpoint, its headers added, its signing, no logs target of its own.
    pub fn logs_config(&self) -> Option<OtlpConfig> {
        let target = self.logs.as_ref()?;
        let mut c = self.clone();
        c.logs = None;
        c.endpoint = target.endpoint.clone();
        for (k, v) in &target.headers {
            c.headers.retain(|(old, _)| !old.eq_ignore_ascii_case(k));
            c.headers.push((k.clone(), v.clone()));
        }
        // The traces endpoint's signing (X-Ray's) is not the logs endpoint's.
        c.sigv4 = match (&target.sigv4, &self.sigv4) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(s)) if s.service != super::sigv4::XRAY_SERVICE => Some(s.clone()),
            _ => None,
        };
        c.max_batch_spans = target.max_records.max(1);
        Some(c)
    }

    /// The logs endpoint the OTLP variables name for this configuration (`--logs otlp`):
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as is, else for gRPC the traces endpoint (one
    /// server takes both), else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/logs`, else the traces
    /// URL with `/v1/traces` replaced by `/v1/logs`; `None` when none of these applies (a
    /// traces URL of another shape).
    pub fn logs_endpoint_from_env(&self, get: impl Fn(&str) -> Option<String>) -> Option<String> {
        if let Some(e) = get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            return Some(e.trim().to_owned());
        }
        if self.protocol == Protocol::Grpc {
            return Some(self.endpoint.clone());
        }
        if let Some(base) = get("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            return Some(http_signal_url(base.trim(), "logs"));
        }
        let mut u = reqwest::Url::parse(&self.endpoint).ok()?;
        let path = u.path().strip_suffix("/v1/traces")?.to_owned();
        u.set_path(&format!("{path}/v1/logs"));
        Some(u.to_string())
    }

    /// A configuration that sends to X-Ray's OTLP endpoint in `region` (`endpoint`: another
    /// base URL for it, e.g. a VPC endpoint or a local test server; `/v1/traces` is appended):
    /// OTLP/HTTP protobuf, gzip, signed for `xray`, requests of up to X-Ray's 10,000 spans. No
    /// `OTEL_EXPORTER_OTLP_*` variable applies (their headers are meant for another backend and
    /// must not go to AWS).
    pub fn xray(region: &str, endpoint: Option<&str>) -> Result<OtlpConfig, SinkError> {
        if !is_region(region) {
            return Err(SinkError::Config(format!(
                "X-Ray Region {:?}: expected a Region such as us-east-1",
                crate::convert::printable::visible(region)
            )));
        }
        let endpoint = match endpoint {
            Some(base) => http_traces_url(base.trim()),
            None => xray_endpoint(region),
        };
        validate_endpoint(&endpoint)?;
        Ok(OtlpConfig {
            endpoint,
            protocol: Protocol::HttpProtobuf,
            compression: Compression::Gzip,
            sigv4: Some(SigV4::xray(region)),
            max_batch_spans: super::xray::XRAY_LIMITS.max_spans,
            ..OtlpConfig::default()
        })
    }
}

/// Whether `r` looks like an AWS Region name (`us-east-1`, `cn-north-1`, `us-gov-west-1`):
/// lowercase letters, digits and dashes. Checked because it becomes part of a host name.
fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 32
        && r.starts_with(|c: char| c.is_ascii_lowercase())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// X-Ray's OTLP traces URL in `region` (AWS CloudWatch user guide, "OTLP Endpoints"):
/// `https://xray.<region>.amazonaws.com/v1/traces`, `amazonaws.com.cn` in the China Regions.
pub fn xray_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://xray.{region}.{suffix}/v1/traces")
}

/// The Region of an X-Ray endpoint URL (`https://xray.<region>.amazonaws.com[.cn]/…`), `None`
/// for any other URL.
pub fn xray_region(endpoint: &str) -> Option<String> {
    aws_region(endpoint, "xray")
}

/// The Region of an AWS endpoint URL of `service` (`https://<service>.<region>.amazonaws.com[.cn]/…`),
/// `None` for any other URL.
fn aws_region(endpoint: &str, service: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    let rest = host.strip_prefix(service)?.strip_prefix('.')?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    is_region(region).then(|| region.to_owned())
}

/// `base` + `v1/traces`, with exactly one `/` between them (spec: "…/v1/traces relative to the
/// base URL"; a base with a path keeps it).
fn http_traces_url(base: &str) -> String {
    http_signal_url(base, "traces")
}

/// `base` + `v1/<signal>` (`traces`, `logs`), as [`http_traces_url`].
pub fn http_signal_url(base: &str, signal: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut u) => {
            let path = u.path().trim_end_matches('/').to_owned();
            u.set_path(&format!("{path}/v1/{signal}"));
            u.to_string()
        }
        // Reported by `validate_endpoint` with the original text.
        Err(_) => format!("{}/v1/{signal}", base.trim_end_matches('/')),
    }
}

fn validate_endpoint(endpoint: &str) -> Result<(), SinkError> {
    let u = reqwest::Url::parse(endpoint)
        .map_err(|e| SinkError::Config(format!("endpoint {:?}: {e}", redact_url(endpoint))))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(SinkError::Config(format!(
            "endpoint {:?}: expected an http:// or https:// URL with a host",
            redact_url(endpoint)
        )));
    }
    Ok(())
}

/// Reads [`ALLOW_INSECURE_VAR`]: `true`/`1` or `false`/`0` (any case), unset or empty is
/// `false`; anything else is an error naming the variable.
pub fn allow_insecure_from_env(get: impl Fn(&str) -> Option<String>) -> Result<bool, SinkError> {
    match get(ALLOW_INSECURE_VAR) {
        None => Ok(false),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "false" | "0" => Ok(false),
            "true" | "1" => Ok(true),
            _ => Err(SinkError::Config(format!(
                "{ALLOW_INSECURE_VAR}={:?}: expected true or false",
                crate::convert::printable::visible(&v)
            ))),
        },
    }
}

/// Whether `url` names this machine: `localhost` (and `*.localhost`, RFC 6761), 127.0.0.0/8
/// or `::1`. Traffic to it does not cross a network.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let d = bare.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// Refuses to send credentials (the header `keys`, or user info in the URL) over cleartext
/// `http://` to a host that is not a loopback address, unless `allow_insecure`: anyone on the
/// path could read them. The error names the header keys, never their values.
pub(crate) fn check_cleartext(
    endpoint: &str,
    keys: &[&str],
    allow_insecure: bool,
) -> Result<(), SinkError> {
    let Ok(url) = reqwest::Url::parse(endpoint) else {
        // `validate_endpoint` reports it.
        return Ok(());
    };
    let userinfo = !url.username().is_empty() || url.password().is_some();
    if allow_insecure
        || url.scheme() != "http"
        || is_loopback(&url)
        || (keys.is_empty() && !userinfo)
    {
        return Ok(());
    }
    let what = match (keys.is_empty(), userinfo) {
        (false, false) => format!("the headers {}", keys.join(", ")),
        (false, true) => format!(
            "the credentials in the URL and the headers {}",
            keys.join(", ")
        ),
        _ => "the credentials in the URL".to_owned(),
    };
    Err(SinkError::Config(format!(
        "endpoint {}: refusing to send {what} in cleartext (http://) to a host that is not a \
         loopback address; use https://, or pass --allow-insecure \
         ({ALLOW_INSECURE_VAR}=true) if the network is trusted",
        redact_url(endpoint)
    )))
}

/// Drops user info and the query (either may carry a credential) from a URL for printing.
pub(crate) fn redact_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut u) => {
            let had_user = !u.username().is_empty() || u.password().is_some();
            // Both fail only for URLs that cannot have user info, which then have none.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let redacted_query = u.query().is_some();
            u.set_query(None);
            let mut s = u.to_string();
            if redacted_query {
                s.push_str("?<redacted>");
            }
            if had_user {
                s = s.replacen("://", "://<redacted>@", 1);
            }
            s
        }
        Err(_) => "<unparsable endpoint>".to_owned(),
    }
}

/// Why a headers list is malformed. Never carries a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadersError {
    /// An entry without `=`.
    #[error("entry {0} is not key=value")]
    NotKeyValue(usize),
    /// An empty key.
    #[error("entry {0} has an empty key")]
    EmptyKey(usize),
    /// A key that is not a valid header name (not quoted: a malformed entry may be a
    /// credential pasted in the wrong place).
    #[error("entry {0}: the key is not a valid header name")]
    BadName(usize),
    /// A value that is not valid UTF-8 after percent-decoding, or not a valid header value.
    #[error("entry {0} ({1}): the value is not a valid header value")]
    BadValue(usize, String),
}

/// Parses the `OTEL_EXPORTER_OTLP_HEADERS` syntax: comma-separated `key=value` (W3C Baggage
/// without properties), whitespace around entries, keys and values trimmed, values
/// percent-decoded. Keys are lowercased (HTTP header names and gRPC metadata keys are).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, HeadersError> {
    let mut out = Vec::new();
    for (i, entry) in text.split(',').enumerate() {
        let n = i + 1;
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (k, v) = entry.split_once('=').ok_or(HeadersError::NotKeyValue(n))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(HeadersError::EmptyKey(n));
        }
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| HeadersError::BadName(n))?;
        let value = percent_decode(v.trim())
            .filter(|v| reqwest::header::HeaderValue::from_str(v).is_ok())
            .ok_or_else(|| HeadersError::BadValue(n, name.as_str().to_owned()))?;
        out.push((name.as_str().to_owned(), value));
    }
    Ok(out)
}

/// Percent-decodes `%XX` sequences (a `%` not followed by two hex digits stays literal);
/// `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = OtlpConfig::from_env(env(&[])).unwrap();
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(c.headers.is_empty());
        assert_eq!(c.max_batch_spans, 512);
        assert_eq!(c.max_concurrency, 4);
        assert_eq!(c.retry_deadline, Duration::from_secs(60));
        let g = OtlpConfig::from_env(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap();
        assert_eq!(g.endpoint, "http://localhost:4317");
    }

    #[test]
    fn endpoints_table() {
        let g = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let t = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
        let p = "OTEL_EXPORTER_OTLP_PROTOCOL";
        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[(g, "http://collector:4318")],
                "http://collector:4318/v1/traces",
            ),
            (
                &[(g, "http://collector:4318/")],
                "http://collector:4318/v1/traces",
            ),
            (&[(g, "https://h/otlp")], "https://h/otlp/v1/traces"),
            (&[(g, "https://h/otlp/")], "https://h/otlp/v1/traces"),
            (&[(t, "http://x:1/custom")], "http://x:1/custom"),
            (
                &[(t, "http://x:1/custom"), (g, "http://y:2")],
                "http://x:1/custom",
            ),
            (&[(t, ""), (g, "http://y:2")], "http://y:2/v1/traces"),
            (&[(g, "http://y:4317"), (p, "grpc")], "http://y:4317"),
            (
                &[(t, "http://z:4317"), (g, "http://y:4317"), (p, "grpc")],
                "http://z:4317",
            ),
            (&[(p, "http/json")], "http://localhost:4318/v1/traces"),
        ];
        for (vars, want) in table {
            let c = OtlpConfig::from_env(env(vars)).unwrap();
            assert_eq!(c.endpoint, *want, "{vars:?}");
        }
    }

    #[test]
    fn signal_specific_settings_win() {
        let c = OtlpConfig::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
        ]))
        .unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.headers, vec![("b".to_owned(), "2".to_owned())]);
        let c = OtlpConfig::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
        ]))
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(c.headers, vec![("a".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let table = [
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "zstd",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "10s",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "0",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "endpoint"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://h", "endpoint"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "novalue",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
        ];
        for (k, v, needle) in table {
            let e = OtlpConfig::from_env(env(&[(k, v)])).unwrap_err();
            assert!(matches!(e, SinkError::Config(_)), "{k}={v}");
            assert!(e.to_string().contains(needle), "{k}={v}: {e}");
        }
    }

    #[test]
    fn headers_are_baggage_like_and_percent_decoded() {
        let h = parse_headers(" Api-Key = abc%20def , x-tenant=t%2C1,,empty=,pct=100%").unwrap();
        assert_eq!(
            h,
            vec![
                ("api-key".to_owned(), "abc def".to_owned()),
                ("x-tenant".to_owned(), "t,1".to_owned()),
                ("empty".to_owned(), String::new()),
                ("pct".to_owned(), "100%".to_owned()),
            ]
        );
        assert_eq!(
            parse_headers("authorization=Basic%20dXNlcjpwYXNz").unwrap()[0].1,
            "Basic dXNlcjpwYXNz"
        );
        assert_eq!(
            parse_headers("a=1,b").unwrap_err(),
            HeadersError::NotKeyValue(2)
        );
        assert_eq!(parse_headers("=x").unwrap_err(), HeadersError::EmptyKey(1));
        assert!(matches!(
            parse_headers("bad key=x"),
            Err(HeadersError::BadName(1))
        ));
        assert!(matches!(
            parse_headers("k=%0Asecret"),
            Err(HeadersError::BadValue(1, _))
        ));
        assert!(matches!(
            parse_headers("k=%FF"),
            Err(HeadersError::BadValue(1, _))
        ));
    }

    #[test]
    fn secrets_never_printed() {
        let c = OtlpConfig::from_env(env(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://user:hunter2@collector/otlp?api_key=topsecret",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cr3t-token,x-api-key=k3y-value",
            ),
        ]))
        .unwrap();
        let dbg = format!("{c:?}");
        for secret in ["s3cr3t-token", "k3y-value", "hunter2", "topsecret", "user:"] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(dbg.contains("authorization"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        // Header errors name the entry and key, never the value.
        let e = OtlpConfig::from_env(env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%0Asupersecret",
        )]))
        .unwrap_err();
        assert!(!e.to_string().contains("supersecret"), "{e}");
        assert!(e.to_string().contains("authorization"), "{e}");
        let e = OtlpConfig::from_env(env(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "supersecret-without-equals",
        )]))
        .unwrap_err();
        assert!(!e.to_string().contains("supersecret"), "{e}");
    }

    #[test]
    fn redacted_endpoints() {
        let table = [
            (
                "http://localhost:4318/v1/traces",
                "http://localhost:4318/v1/traces",
            ),
            ("https://u:p@h/v1/traces", "https://<redacted>@h/v1/traces"),
            (
                "https://h/v1/traces?key=s",
                "https://h/v1/traces?<redacted>",
            ),
            ("not a url", "<unparsable endpoint>"),
        ];
        for (input, want) in table {
            assert_eq!(redact_url(input), want);
        }
    }

    #[test]
    fn xray_endpoints_are_recognised_by_their_host() {
        let table = [
            (
                "https://xray.us-east-1.amazonaws.com/v1/traces",
                Some("us-east-1"),
            ),
            ("https://xray.us-east-1.amazonaws.com", Some("us-east-1")),
            (
                "https://XRAY.eu-west-3.AmazonAWS.com./v1/traces",
                Some("eu-west-3"),
            ),
            (
                "https://xray.cn-north-1.amazonaws.com.cn/v1/traces",
                Some("cn-north-1"),
            ),
            (
                "https://xray.us-gov-west-1.amazonaws.com/v1/traces",
                Some("us-gov-west-1"),
            ),
            ("https://logs.us-east-1.amazonaws.com/v1/logs", None),
            (
                "https://xray.us-east-1.amazonaws.com.evil.example/v1/traces",
                None,
            ),
            ("https://xray.amazonaws.com/v1/traces", None),
            ("https://evilxray.us-east-1.amazonaws.com/v1/traces", None),
            ("http://127.0.0.1:4318/v1/traces", None),
            ("not a url", None),
        ];
        for (url, want) in table {
            assert_eq!(xray_region(url).as_deref(), want, "{url}");
        }
        assert_eq!(
            xray_endpoint("us-west-2"),
            "https://xray.us-west-2.amazonaws.com/v1/traces"
        );
        assert_eq!(
            xray_endpoint("cn-northwest-1"),
            "https://xray.cn-northwest-1.amazonaws.com.cn/v1/traces"
        );
        for r in ["us-east-1", "cn-north-1", "eu-central-2"] {
            assert_eq!(xray_region(&xray_endpoint(r)).as_deref(), Some(r));
        }
    }

    #[test]
    fn an_xray_endpoint_turns_signing_on() {
        let c = OtlpConfig {
            endpoint: "https://xray.ap-south-1.amazonaws.com/v1/traces".into(),
            ..OtlpConfig::default()
        };
        let s = c.signing().unwrap();
        assert_eq!(
            (s.region.as_str(), s.service.as_str()),
            ("ap-south-1", "xray")
        );
        assert!(OtlpConfig::default().signing().is_none());
        // Explicit signing wins, for any endpoint (a local server, a VPC endpoint).
        let c = OtlpConfig {
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            sigv4: Some(SigV4::xray("eu-west-1")),
            ..OtlpConfig::default()
        };
        assert_eq!(c.signing().unwrap().region, "eu-west-1");
        assert!(c.validate().is_ok());
        let x = OtlpConfig::xray("eu-west-1", None).unwrap();
        assert_eq!(x.endpoint, "https://xray.eu-west-1.amazonaws.com/v1/traces");
        assert_eq!(x.compression, Compression::Gzip);
        assert_eq!(x.protocol, Protocol::HttpProtobuf);
        assert!(x.headers.is_empty());
        let x = OtlpConfig::xray("eu-west-1", Some("http://127.0.0.1:9/")).unwrap();
        assert_eq!(x.endpoint, "http://127.0.0.1:9/v1/traces");
        assert_eq!(x.signing().unwrap().region, "eu-west-1");
    }

    #[test]
    fn signing_is_refused_over_grpc_cleartext_or_with_a_bad_region() {
        let bad = [
            OtlpConfig {
                endpoint: "https://xray.us-east-1.amazonaws.com".into(),
                protocol: Protocol::Grpc,
                ..OtlpConfig::default()
            },
            OtlpConfig {
                endpoint: "http://xray.example.net/v1/traces".into(),
                sigv4: Some(SigV4::xray("us-east-1")),
                ..OtlpConfig::default()
            },
            OtlpConfig {
                endpoint: "https://collector/v1/traces".into(),
                sigv4: Some(SigV4::xray("us-east-1/../x")),
                ..OtlpConfig::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(SinkError::Config(_))), "{c:?}");
        }
        assert!(OtlpConfig::xray("US East", None).is_err());
        assert!(OtlpConfig::xray("", None).is_err());
        let insecure = OtlpConfig {
            endpoint: "http://xray.example.net/v1/traces".into(),
            sigv4: Some(SigV4::xray("us-east-1")),
            allow_insecure: true,
            ..OtlpConfig::default()
        };
        assert!(insecure.validate().is_ok());
    }

    #[test]
    fn validate_rejects_zero_knobs() {
        assert!(OtlpConfig::default().validate().is_ok());
        let table = [
            OtlpConfig {
                max_batch_spans: 0,
                ..OtlpConfig::default()
            },
            OtlpConfig {
                max_concurrency: 0,
                ..OtlpConfig::default()
            },
            OtlpConfig {
                timeout: Duration::ZERO,
                ..OtlpConfig::default()
            },
            OtlpConfig {
                endpoint: "localhost:4318".into(),
                ..OtlpConfig::default()
            },
        ];
        for c in table {
            assert!(matches!(c.validate(), Err(SinkError::Config(_))), "{c:?}");
        }
    }
}
