//! AWS Signature Version 4 for OTLP/HTTP requests: what X-Ray's OTLP endpoint
//! (`https://xray.<region>.amazonaws.com/v1/traces`) requires of every caller.
//!
//! Two halves, the usual way here: [`sign_request`] is pure (credentials, a clock reading and
//! the exact request in; the headers to add out) and is what the tests pin down; `Signer` is
//! the thin shell the HTTP transport holds, built once per sink: it loads the credential
//! provider from aws-config's chain on first use (the profile, environment, SSO,
//! `credential_process`, web identity and role options the sources use), caches the credentials
//! until shortly before they expire, and signs each attempt afresh (a retry minutes later needs a
//! new `X-Amz-Date`). The signature covers the method, the URL, every header the request carries
//! except those proxies rewrite (`user-agent`, hop-by-hop ones) and the body bytes exactly as
//! sent, so after gzip.
//!
//! Credentials never leave this module except inside the `Authorization` and
//! `X-Amz-Security-Token` headers: `Debug` shows neither, and no error quotes them.

use crate::convert::aws::AwsOptions;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::{Duration, SystemTime};

/// The signing name of X-Ray (the service part of the credential scope).
pub const XRAY_SERVICE: &str = "xray";

/// Credentials are fetched again this long before they expire, so a request signed with them
/// cannot arrive after the expiry (the SDKs refresh five minutes ahead too).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// What signing needs besides the request: where and as whom.
#[derive(Clone)]
#[non_exhaustive]
pub struct SigV4 {
    /// The Region of the credential scope, e.g. `us-east-1`.
    pub region: String,
    /// The signing name of the service, e.g. [`XRAY_SERVICE`].
    pub service: String,
    /// A profile of the shared config files (default: `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Credentials to use instead of aws-config's default chain (library users, tests).
    pub credentials: Option<SharedCredentialsProvider>,
}

impl SigV4 {
    /// Signing for X-Ray in `region`, with the default credential chain.
    pub fn xray(region: impl Into<String>) -> SigV4 {
        SigV4 {
            region: region.into(),
            service: XRAY_SERVICE.to_owned(),
            profile: None,
            credentials: None,
        }
    }

    /// Signing for CloudWatch Logs (its OTLP logs endpoint) in `region`, with the default
    /// credential chain.
    pub fn logs(region: impl Into<String>) -> SigV4 {
        SigV4 {
            region: region.into(),
            service: super::config::LOGS_SERVICE.to_owned(),
            profile: None,
            credentials: None,
        }
    }

    /// With a named profile of the shared config files.
    pub fn with_profile(mut self, profile: Option<String>) -> SigV4 {
        self.profile = profile;
        self
    }

    /// With this credential provider instead of the default chain.
    pub fn with_credentials(mut self, provider: impl ProvideCredentials + 'static) -> SigV4 {
        self.credentials = Some(SharedCredentialsProvider::new(provider));
        self
    }
}

/// Shows where and as which profile, never the credentials.
impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("profile", &self.profile)
            .field(
                "credentials",
                &if self.credentials.is_some() {
                    "<given>"
                } else {
                    "<default chain>"
                },
            )
            .finish()
    }
}

/// Why a request could not be signed. Never carries a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The credential chain gave no credentials.
    #[error("no AWS credentials to sign the request with")]
    Credentials(#[source] CredentialsError),
    /// The signing parameters were incomplete.
    #[error("SigV4 signing parameters")]
    Params(#[source] v4::signing_params::BuildError),
    /// The signer refused the request (a URL or header it cannot canonicalise).
    #[error("SigV4 signing")]
    Sign(#[source] aws_sigv4::http_request::SigningError),
}

impl SignError {
    /// Whether trying again later may succeed: a credential provider that timed out or failed
    /// on the way (STS, SSO, IMDS down), as opposed to no credentials at all or a bad
    /// configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SignError::Credentials(
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)
            )
        )
    }
}

/// One HTTP request, as far as a signature covers it.
#[derive(Clone, Copy)]
pub struct RequestToSign<'a> {
    /// `POST`.
    pub method: &'a str,
    /// The whole URL, already percent-encoded.
    pub url: &'a str,
    /// Every header the request will carry that a server may check (`host` is derived from
    /// `url` when absent).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body exactly as sent (after compression).
    pub body: &'a [u8],
}

/// The headers that sign `request` for `service` in `region` as of `time`: `authorization`,
/// `x-amz-date` and, with temporary credentials, `x-amz-security-token`. The caller adds them
/// and changes nothing else in the request.
pub fn sign_request(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    request: RequestToSign<'_>,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(SignError::Params)?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.url,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(SignError::Sign)?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(SignError::Sign)?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    Ok(added
        .into_iter()
        .map(|h| (h.name(), h.value().to_owned()))
        .collect())
}

/// Whether cached credentials that expire at `expiry` may still sign a request at `now`.
pub fn still_fresh(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    match expiry {
        None => true,
        Some(e) => now
            .checked_add(REFRESH_BEFORE_EXPIRY)
            .is_some_and(|limit| e > limit),
    }
}

/// Signs requests for one sink: the provider loaded once, credentials cached until
/// [`still_fresh`] says otherwise. Deliberately not `Debug`: it holds credentials.
pub(crate) struct Signer {
    config: SigV4,
    provider: tokio::sync::OnceCell<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl Signer {
    pub(crate) fn new(config: SigV4) -> Signer {
        Signer {
            config,
            provider: tokio::sync::OnceCell::new(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The provider: the configured one, else aws-config's default chain for the profile
    /// (loaded on first use: reading the config files may block on SSO or IMDS, which `new`,
    /// running before any runtime, must not).
    async fn provider(&self) -> Result<&SharedCredentialsProvider, SignError> {
        self.provider
            .get_or_try_init(|| async {
                if let Some(p) = &self.config.credentials {
                    return Ok(p.clone());
                }
                // The endpoint of the spans is not where credentials come from: no
                // `endpoint_url` here (an emulator for the sources must not receive STS calls).
                let sdk = AwsOptions {
                    profile: self.config.profile.clone(),
                    region: Some(self.config.region.clone()),
                    endpoint_url: None,
                }
                .load()
                .await;
                sdk.credentials_provider().ok_or_else(|| {
                    SignError::Credentials(CredentialsError::not_loaded(
                        "aws-config found no credential provider",
                    ))
                })
            })
            .await
    }

    /// Credentials fresh enough to sign with now.
    async fn credentials(&self) -> Result<Credentials, SignError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if still_fresh(c.expiry(), SystemTime::now()) {
                return Ok(c.clone());
            }
        }
        let fresh = self
            .provider()
            .await?
            .provide_credentials()
            .await
            .map_err(SignError::Credentials)?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// The headers that sign this request now (see [`sign_request`]).
    pub(crate) async fn sign(
        &self,
        request: RequestToSign<'_>,
    ) -> Result<Vec<(&'static str, String)>, SignError> {
        let credentials = self.credentials().await?;
        sign_request(
            &credentials,
            &self.config.region,
            &self.config.service,
            SystemTime::now(),
            request,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A known answer computed with botocore 1.44.8 (`SigV4Auth(Credentials(ak, sk, token),
    /// "xray", "us-east-1")`, `add_auth` with the clock fixed at 2024-05-01T12:00:00Z) for the
    /// same request: an independent implementation agrees on every byte of the signature.
    /// The integration tests (`tests/xray.rs`) check every request the sink sends the same way,
    /// live.
    #[test]
    fn the_signature_matches_botocore_for_a_fixed_request() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-example".into()),
            None,
            "test",
        );
        let body = b"\x0a\x02hi";
        let headers = [
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ];
        let added = sign_request(
            &creds,
            "us-east-1",
            XRAY_SERVICE,
            at(1_714_564_800),
            RequestToSign {
                method: "POST",
                url: "https://xray.us-east-1.amazonaws.com/v1/traces",
                headers: &headers,
                body,
            },
        )
        .unwrap();
        let get = |n: &str| {
            added
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20240501T120000Z"));
        assert_eq!(get("x-amz-security-token"), Some("session-token-example"));
        assert_eq!(get("authorization"), Some(BOTOCORE_AUTHORIZATION));
    }

    const BOTOCORE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
        Credential=AKIDEXAMPLE/20240501/us-east-1/xray/aws4_request, \
        SignedHeaders=content-encoding;content-type;host;x-amz-date;x-amz-security-token, \
        Signature=4d210f4b254e3bb33cac6e051fe9c2ce5feb7b0bfd63491b2f782c036e9f0c2a";

    #[test]
    fn the_signature_covers_the_body_the_headers_and_the_region() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let sig = |region: &str, headers: &[(&str, &str)], body: &[u8]| {
            let added = sign_request(
                &creds,
                region,
                XRAY_SERVICE,
                at(1_714_564_800),
                RequestToSign {
                    method: "POST",
                    url: "http://127.0.0.1:4318/v1/traces",
                    headers,
                    body,
                },
            )
            .unwrap();
            added
                .into_iter()
                .find(|(k, _)| *k == "authorization")
                .map(|(_, v)| v)
                .unwrap()
        };
        let base = sig("us-east-1", &[("content-type", "a")], b"body");
        assert!(
            base.contains("SignedHeaders=content-type;host;x-amz-date,"),
            "{base}"
        );
        assert!(!base.contains("x-amz-security-token"), "{base}");
        assert_ne!(base, sig("us-east-1", &[("content-type", "a")], b"bodz"));
        assert_ne!(base, sig("us-east-1", &[("content-type", "b")], b"body"));
        assert_ne!(base, sig("eu-west-1", &[("content-type", "a")], b"body"));
        assert_eq!(base, sig("us-east-1", &[("content-type", "a")], b"body"));
        // Headers proxies rewrite are left out of the signature.
        assert_eq!(
            base,
            sig(
                "us-east-1",
                &[("content-type", "a"), ("user-agent", "x")],
                b"body"
            )
        );
        assert!(!base.contains("secret"), "{base}");
    }

    #[test]
    fn cached_credentials_are_refreshed_five_minutes_before_they_expire() {
        let now = at(1_000_000);
        let table = [
            (None, true),
            (Some(at(1_000_000 + 3600)), true),
            (Some(at(1_000_000 + 301)), true),
            (Some(at(1_000_000 + 300)), false),
            (Some(at(1_000_000 + 10)), false),
            (Some(at(999_000)), false),
        ];
        for (expiry, fresh) in table {
            assert_eq!(still_fresh(expiry, now), fresh, "{expiry:?}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let creds = Credentials::new("AKIDVISIBLE", "s3cr3t-key", Some("tok".into()), None, "t");
        let c = SigV4::xray("us-east-1").with_credentials(creds);
        let d = format!("{c:?}");
        assert!(
            !d.contains("s3cr3t-key") && !d.contains("AKIDVISIBLE"),
            "{d}"
        );
        assert!(d.contains("us-east-1") && d.contains("xray"), "{d}");
    }

    #[test]
    fn only_provider_failures_on_the_way_are_retryable() {
        assert!(
            SignError::Credentials(CredentialsError::provider_timed_out(Duration::from_secs(5)))
                .is_retryable()
        );
        assert!(
            SignError::Credentials(CredentialsError::provider_error("sts down")).is_retryable()
        );
        assert!(!SignError::Credentials(CredentialsError::not_loaded("none")).is_retryable());
        assert!(
            !SignError::Credentials(CredentialsError::invalid_configuration("bad profile"))
                .is_retryable()
        );
    }
}
