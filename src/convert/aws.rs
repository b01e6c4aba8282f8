//! AWS plumbing shared by the sources and the checkpoint store: where and as whom to call AWS
//! ([`AwsOptions`], the options every AWS tool takes), and the one classification of SDK errors
//! into retry / throttle / fatal ([`classify`], table-tested).

use crate::convert::retry::Verdict;
use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// Where and as whom to call AWS, as every AWS tool takes it: `--profile`, `--region`,
/// `--endpoint-url` over the standard environment (`AWS_PROFILE`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`, …) and the default credential chain.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// A profile of the shared config files.
    pub profile: Option<String>,
    /// The Region.
    pub region: Option<String>,
    /// An endpoint for every service (a local emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// The HTTP client of every AWS call: hyper and rustls with the ring crypto provider (the one
/// the sinks use), the platform's root certificates as the SDK's default client has them.
pub fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `aws_config::defaults` (the latest behaviour version) with [`https_client`].
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(https_client())
}

/// A role assumed to read another account (`--role-arn`), with aws-config's
/// `AssumeRoleProvider` (STS AssumeRole, refreshed before expiry) over the base credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// `arn:aws:iam::<account>:role/<name>`.
    pub arn: String,
    /// The external id the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// The session name (CloudTrail shows it).
    pub session_name: String,
}

impl Role {
    /// The account the role belongs to (the ARN's fifth field), if the ARN has one.
    pub fn account(&self) -> Option<&str> {
        self.arn.split(':').nth(4).filter(|a| !a.is_empty())
    }
}

/// Where reads go: one account (the base credentials, or a role assumed with them) in one
/// Region (`None`: the configured one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The role, when not the base credentials.
    pub role: Option<Role>,
    /// The Region, when not the configured one.
    pub region: Option<String>,
}

impl Scope {
    /// `account/region`, for keys and summaries: the role's account, else `default`; the
    /// Region, else `default`.
    pub fn label(&self) -> String {
        let account = self
            .role
            .as_ref()
            .and_then(Role::account)
            .unwrap_or("default");
        format!("{account}/{}", self.region.as_deref().unwrap_or("default"))
    }
}

impl AwsOptions {
    /// The configuration of `scope`: this one in the scope's Region, with the scope's role
    /// assumed over the base credentials (STS in that Region, at the same endpoint).
    pub async fn load_scope(&self, scope: &Scope) -> aws_config::SdkConfig {
        let base = AwsOptions {
            region: scope.region.clone().or_else(|| self.region.clone()),
            ..self.clone()
        }
        .load()
        .await;
        let Some(role) = &scope.role else {
            return base;
        };
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.arn.clone())
            .session_name(role.session_name.clone())
            .configure(&base);
        if let Some(id) = &role.external_id {
            builder = builder.external_id(id.clone());
        }
        if let Some(r) = base.region() {
            builder = builder.region(r.clone());
        }
        let provider = builder.build().await;
        base.into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build()
    }

    /// Loads the shared configuration (reads files and the environment; may call IMDS/SSO).
    pub async fn load(&self) -> aws_config::SdkConfig {
        let mut loader = config_loader().retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(p) = &self.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        loader.load().await
    }

    /// A CloudWatch Logs client.
    pub async fn logs_client(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.load().await)
    }

    /// An S3 client. With a custom endpoint (an emulator, a gateway) path-style addressing is
    /// used, because `bucket.127.0.0.1` does not resolve.
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let sdk = self.load().await;
        let custom = sdk.endpoint_url().is_some();
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(custom)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// How an AWS call failed, reduced to what the retry decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// The request could not be built (bad input, no credentials, no region).
    Construction,
    /// No response in time.
    Timeout,
    /// The connection failed (DNS, refused, reset, TLS).
    Dispatch,
    /// A response that could not be parsed.
    Response(Option<u16>),
    /// A service error: its code (`ThrottlingException`, …) and HTTP status.
    Service(Option<&'a str>, Option<u16>),
}

/// The one place that says which AWS failures are worth another try.
pub fn classify(f: Failure<'_>) -> Verdict {
    match f {
        Failure::Construction => Verdict::Fatal,
        Failure::Timeout | Failure::Dispatch => Verdict::Retry,
        Failure::Response(status) => match status {
            Some(429) => Verdict::Throttle,
            Some(500..=599) => Verdict::Retry,
            _ => Verdict::Fatal,
        },
        Failure::Service(code, status) => match code {
            Some(
                "ThrottlingException"
                | "Throttling"
                | "ThrottledException"
                | "TooManyRequestsException"
                | "RequestLimitExceeded"
                | "LimitExceededException"
                | "SlowDown",
            ) => Verdict::Throttle,
            Some(
                "ServiceUnavailableException"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "RequestTimeout"
                | "RequestTimeoutException",
            ) => Verdict::Retry,
            _ => match status {
                Some(429) => Verdict::Throttle,
                Some(500..=599) => Verdict::Retry,
                _ => Verdict::Fatal,
            },
        },
    }
}

/// [`classify`] for an SDK error (any service's: the error metadata trait is shared).
pub fn classify_sdk<E>(e: &SdkError<E, HttpResponse>) -> Verdict
where
    E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    classify(match e {
        SdkError::ConstructionFailure(_) => Failure::Construction,
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(_) => Failure::Dispatch,
        SdkError::ServiceError(s) => Failure::Service(s.err().code(), status),
        _ => Failure::Response(status),
    })
}

/// The text of an SDK error with its causes (the SDK's `Display` alone says "service error").
pub fn error_text<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(s) = e {
        let err = s.err();
        return match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => err.to_string(),
        };
    }
    error_chain(e)
}

/// An error's text followed by its causes, `: `-separated.
/// A cause whose text the message already holds (many errors print their source) is not
/// repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let table: &[(Failure<'_>, Verdict)] = &[
            (Failure::Construction, Verdict::Fatal),
            (Failure::Timeout, Verdict::Retry),
            (Failure::Dispatch, Verdict::Retry),
            (Failure::Response(Some(503)), Verdict::Retry),
            (Failure::Response(Some(429)), Verdict::Throttle),
            (Failure::Response(Some(400)), Verdict::Fatal),
            (Failure::Response(None), Verdict::Fatal),
            (
                Failure::Service(Some("ThrottlingException"), Some(400)),
                Verdict::Throttle,
            ),
            (
                Failure::Service(Some("LimitExceededException"), Some(400)),
                Verdict::Throttle,
            ),
            (
                Failure::Service(Some("SlowDown"), Some(503)),
                Verdict::Throttle,
            ),
            (
                Failure::Service(Some("ServiceUnavailableException"), Some(503)),
                Verdict::Retry,
            ),
            (
                Failure::Service(Some("ResourceNotFoundException"), Some(400)),
                Verdict::Fatal,
            ),
            (
                Failure::Service(Some("AccessDeniedException"), Some(400)),
                Verdict::Fatal,
            ),
            (
                Failure::Service(Some("InvalidParameterException"), Some(400)),
                Verdict::Fatal,
            ),
            (Failure::Service(None, Some(500)), Verdict::Retry),
            (Failure::Service(None, Some(429)), Verdict::Throttle),
            (
                Failure::Service(Some("Whatever"), Some(502)),
                Verdict::Retry,
            ),
        ];
        for (f, want) in table {
            assert_eq!(classify(*f), *want, "{f:?}");
        }
    }
}
