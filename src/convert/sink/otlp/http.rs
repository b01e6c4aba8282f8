//! OTLP/HTTP transport (protobuf or JSON bodies) over reqwest: one attempt in, one
//! [`Outcome`] out, signed with SigV4 when the configuration says so ([`super::sigv4`]).
//! Retrying is the caller's job (`super::export_batch`).

use super::config::{Compression, OtlpConfig, Protocol};
use super::encode::{decode_response_json, decode_response_proto, to_json};
use super::export::Request;
use super::sigv4::{RequestToSign, Signer};
use super::Outcome;
use crate::convert::retry::{classify_http, parse_retry_after, Verdict};
use crate::convert::sink::SinkError;
use prost::bytes::Bytes;
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest response body read: OTLP responses are tiny, an error page should not be slurped.
const MAX_RESPONSE: usize = 64 * 1024;

/// Sends request bodies to one OTLP/HTTP URL (traces or logs).
#[derive(Clone)]
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    protocol: Protocol,
    compression: Compression,
    /// Caps `Retry-After`.
    retry_cap: Duration,
    /// Signs each attempt (X-Ray), when configured.
    signer: Option<Arc<Signer>>,
    /// The headers the client adds to every request (content type and encoding, the configured
    /// ones), as text: what a signature must cover besides `host`. Values are secrets.
    signed_headers: Vec<(String, String)>,
}

impl HttpTransport {
    pub(crate) fn new(config: &OtlpConfig) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| SinkError::Config(format!("endpoint: {e}")))?;
        let mut headers = HeaderMap::new();
        for (i, (k, v)) in config.headers.iter().enumerate() {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                SinkError::Config(format!(
                    "header {}: the key is not a valid header name",
                    i + 1
                ))
            })?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                SinkError::Config(format!("header {} ({k}): the value is not valid", i + 1))
            })?;
            // Keeps the value out of any debug output of the request.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        // Ours win over same-named custom headers: a wrong type would make every request fail.
        let content_type = match config.protocol {
            Protocol::HttpJson => "application/json",
            // Exactly this: Phoenix answers 415 to anything else, parameters included.
            _ => "application/x-protobuf",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if config.compression == Compression::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        } else {
            headers.remove(CONTENT_ENCODING);
        }
        let signer = config.signing().map(|s| Arc::new(Signer::new(s)));
        let signed_headers = if signer.is_some() {
            headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect()
        } else {
            Vec::new()
        };
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("spanline/", env!("CARGO_PKG_VERSION")))
            // Never follow: see `Verdict::Redirect`.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|e| SinkError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(HttpTransport {
            client,
            url,
            protocol: config.protocol,
            compression: config.compression,
            retry_cap: config.retry_deadline,
            signer,
            signed_headers,
        })
    }

    /// The request body for `req`: protobuf or JSON, gzipped when configured, and the size it
    /// had before compression. Built once per batch and reused by every attempt.
    pub(crate) fn body(&self, req: &Request) -> Result<(Bytes, usize), SinkError> {
        let raw = match (self.protocol, req) {
            (Protocol::HttpJson, Request::Traces(r)) => to_json(r).into_bytes(),
            (Protocol::HttpJson, Request::Logs(r)) => to_json(r).into_bytes(),
            (_, Request::Traces(r)) => r.encode_to_vec(),
            (_, Request::Logs(r)) => r.encode_to_vec(),
        };
        let raw_len = raw.len();
        let body = Bytes::from(match self.compression {
            Compression::None => raw,
            Compression::Gzip => gzip(&raw)?,
        });
        Ok((body, raw_len))
    }

    /// The SigV4 headers for one attempt with `body`, when signing is configured: signed now,
    /// so a retry minutes later carries a fresh date.
    async fn signature(&self, body: &[u8]) -> Result<Vec<(HeaderName, HeaderValue)>, Outcome> {
        let Some(signer) = &self.signer else {
            return Ok(Vec::new());
        };
        let headers: Vec<(&str, &str)> = self
            .signed_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let request = RequestToSign {
            method: "POST",
            url: self.url.as_str(),
            headers: &headers,
            body,
        };
        let added = match signer.sign(request).await {
            Ok(a) => a,
            Err(e) if e.is_retryable() => {
                return Err(Outcome::Retry {
                    reason: error_chain(&e),
                    after: None,
                })
            }
            Err(e) => return Err(Outcome::Unsigned(error_chain(&e))),
        };
        let mut out = Vec::with_capacity(added.len());
        for (k, v) in added {
            let invalid =
                || Outcome::Unsigned(format!("the signer produced an invalid {k} header"));
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| invalid())?;
            let mut value = HeaderValue::from_str(&v).map_err(|_| invalid())?;
            // The signature and the session token stay out of any debug output.
            value.set_sensitive(true);
            out.push((name, value));
        }
        Ok(out)
    }

    /// One POST.
    pub(crate) async fn attempt(&self, body: Bytes) -> Outcome {
        let signature = match self.signature(&body).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let mut request = self.client.post(self.url.clone());
        for (k, v) in signature {
            request = request.header(k, v);
        }
        let resp = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return transport_failure(e),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now_unix(), self.retry_cap));
        let reply_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .map(|l| self.url.join(&l).map_or(l, |u| u.to_string()));
        let body = read_limited(resp).await;
        match classify_http(status.as_u16()) {
            Verdict::Success => {
                // A 2xx means the spans were accepted; the body only adds partial success.
                // An unreadable or undecodable body therefore does not fail the export (MLflow
                // answers protobuf requests with JSON, others with an empty body).
                let body = body.unwrap_or_default();
                let json_request = self.protocol == Protocol::HttpJson;
                // The reply's own type decides; without one, assume the request's (OTLP/HTTP:
                // the response uses the request's encoding). Other types (an HTML page from a
                // proxy) carry no partial success.
                let partial = match reply_type.as_deref() {
                    Some(t) if t.contains("json") => decode_response_json(&body).ok(),
                    Some(t) if t.contains("protobuf") => decode_response_proto(&body).ok(),
                    None if json_request => decode_response_json(&body).ok(),
                    None => decode_response_proto(&body).ok(),
                    Some(_) => None,
                };
                Outcome::Accepted(partial.unwrap_or_default())
            }
            Verdict::Retry | Verdict::Throttle => Outcome::Retry {
                reason: format!("HTTP {status}: {}", body_text(body)),
                after: retry_after,
            },
            Verdict::Fatal => Outcome::Fatal {
                status: format!("HTTP {status}"),
                body: body_text(body),
            },
            Verdict::Redirect => Outcome::Redirect {
                status: format!("HTTP {status}"),
                location,
            },
        }
    }
}

fn gzip(raw: &[u8]) -> Result<Vec<u8>, SinkError> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(raw)?;
    Ok(enc.finish()?)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads at most [`MAX_RESPONSE`] bytes of the body.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_RESPONSE - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_RESPONSE {
            break;
        }
    }
    Ok(out)
}

fn body_text(body: Result<Vec<u8>, reqwest::Error>) -> String {
    match body {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(e) => format!("(body unreadable: {})", error_chain(&e.without_url())),
    }
}

/// Classifies a request that got no HTTP status. A peer that answers with something that is
/// not HTTP (an SSH or gRPC-only port, a TLS endpoint spoken to in plain text) will answer the
/// same way next time: fatal. Everything else (timeouts, refused or reset connections, peers
/// hanging up without an answer, anything unrecognised) is treated as transient, so an
/// unexpected error costs a retry deadline, never data.
fn transport_failure(e: reqwest::Error) -> Outcome {
    let e = e.without_url();
    let text = error_chain(&e);
    if !e.is_timeout() && !e.is_connect() && !has_io_error(&e) && is_parse_error(&e) {
        return Outcome::Fatal {
            status: "malformed response".to_owned(),
            body: text,
        };
    }
    Outcome::Retry {
        reason: text,
        after: None,
    }
}

fn has_io_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// hyper's response parse errors ("invalid HTTP version parsed", "invalid HTTP status-code
/// parsed", "invalid HTTP header parsed", "message head is too large", …). hyper is not a
/// direct dependency, so its `Error::is_parse` cannot be reached by downcasting; its `Display`
/// texts for these cases have been stable since hyper 0.14, and a miss only means a retry.
fn is_parse_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let t = err.to_string();
        if t.starts_with("invalid HTTP")
            || t.contains(" parsed")
            || t == "message head is too large"
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error and its causes, `: `-separated (reqwest's own `Display` shows only the top).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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
