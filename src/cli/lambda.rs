//! `spanline lambda`: the binary as the bootstrap of an AWS Lambda function (`provided.al2023`)
//! behind a CloudWatch Logs subscription. Reads the configuration once per cold start, fetches
//! the OTLP headers secret if one is named, then serves invocations with `lambda_runtime`; the
//! work is in `spanline::convert::lambda`.
//!
//! Environment: the `OTEL_EXPORTER_OTLP_*` variables as for `convert` (an endpoint is
//! required); `SPANLINE_OTLP_HEADERS_SECRET_ARN`, a Secrets Manager secret holding more headers
//! (a JSON object or `key=value,…`; they win over `OTEL_EXPORTER_OTLP_HEADERS`);
//! `SPANLINE_SERVICE`, comma-separated `GROUP=NAME` rules as `--service` takes them;
//! sampling (see [`sampling`]): `SPANLINE_SAMPLE_RATE`, `SPANLINE_KEEP_ERRORS`,
//! `SPANLINE_KEEP_SLOWER_THAN`, `SPANLINE_SAMPLE_POLICY` (the policy's JSON),
//! `SPANLINE_SAMPLE_DECISIONS` (`s3://bucket/prefix/`, required with sampling) and
//! `SPANLINE_SAMPLE_GROUPS` (more log groups to read kept traces back from); `SPANLINE_LOGS`,
//! `events`, `otlp` (to `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, else the endpoint's `/v1/logs`) or
//! `off` (default), as `--logs` (the subscription's filter must then pass every line). Lambda sets
//! `AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
//! `AWS_LAMBDA_FUNCTION_VERSION` and `AWS_REGION`.

use super::Exit;
use anyhow::Context as _;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use spanline::convert::assemble::ServiceMap;
use spanline::convert::lambda::{headers_from_secret, FetchBack, Handler};
use spanline::convert::sink::otlp::{OtlpConfig, OtlpSink};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The variable naming the headers secret.
const SECRET_VAR: &str = "SPANLINE_OTLP_HEADERS_SECRET_ARN";

/// What `lambda_runtime` reads, and panics without.
const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// Reads the OTLP headers secret (never printed; errors name the variable, not the value).
async fn secret_headers(arn: &str) -> anyhow::Result<Vec<(String, String)>> {
    let config = spanline::convert::aws::config_loader().load().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{SECRET_VAR}: cannot read the secret: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        })?;
    let text = out
        .secret_string()
        .with_context(|| format!("{SECRET_VAR}: the secret has no SecretString"))?;
    headers_from_secret(text).with_context(|| format!("{SECRET_VAR}: the secret's headers"))
}

async fn configure() -> anyhow::Result<Handler<OtlpSink>> {
    for v in RUNTIME_VARS {
        if env_var(v).is_none() {
            anyhow::bail!(
                "{v} is not set: `spanline lambda` runs inside AWS Lambda (or a runtime API \
                 emulator), which sets it"
            );
        }
    }
    if env_var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is not set: \
             the function needs a backend to forward spans to"
        );
    }
    let mut config = OtlpConfig::from_env(env_var)?;
    if let Some(arn) = env_var(SECRET_VAR) {
        for (k, v) in secret_headers(arn.trim()).await? {
            config
                .headers
                .retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
            config.headers.push((k, v));
        }
    }
    let logs = match env_var("SPANLINE_LOGS").as_deref().map(str::trim) {
        None | Some("off") => spanline::convert::Logs::Off,
        Some("events") => spanline::convert::Logs::Events,
        Some("otlp") => {
            let endpoint = config.logs_endpoint_from_env(env_var).with_context(|| {
                format!(
                    "SPANLINE_LOGS=otlp: no OTLP logs endpoint for {}: set \
                     OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    config.endpoint_redacted()
                )
            })?;
            config.logs = Some(spanline::convert::sink::otlp::LogsTarget::new(endpoint));
            spanline::convert::Logs::Otlp
        }
        Some(other) => anyhow::bail!(
            "SPANLINE_LOGS {:?}: expected events, otlp or off",
            spanline::convert::printable::Visible(other)
        ),
    };
    config.validate()?;
    let endpoint = config.endpoint_redacted();
    let protocol = config.protocol.name();
    let mut handler = Handler::new(OtlpSink::new(config)?);
    handler.logs = logs;
    handler.region = env_var("AWS_REGION").or_else(|| env_var("AWS_DEFAULT_REGION"));
    if let Some(rules) = env_var("SPANLINE_SERVICE") {
        handler.services = ServiceMap::parse(rules.split(',').map(str::trim))
            .map_err(|e| anyhow::anyhow!("SPANLINE_SERVICE {e}"))?;
    }
    // Invocations a delivery cannot place are looked up in their log stream (FilterLogEvents,
    // at most 2 requests a second from this instance), unless SPANLINE_FETCH_BACK=off.
    if env_var("SPANLINE_FETCH_BACK").is_none_or(|v| v.trim() != "off") {
        let sdk = spanline::convert::aws::config_loader()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        handler.fetch_back = Some(FetchBack::CloudWatch {
            client: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            budget: spanline::convert::source::cloudwatch::budget::Budget::per_second(2.0),
        });
    }
    handler.sampling = sampling().await?;
    if handler.sampling.is_some() && handler.fetch_back.is_none() {
        anyhow::bail!(
            "sampling reads kept traces back from CloudWatch: SPANLINE_FETCH_BACK=off cannot \
             be used with SPANLINE_SAMPLE_*"
        );
    }
    // One line per cold start: where spans go (no header names or values).
    eprintln!("spanline: lambda: forwarding to OTLP {protocol} {endpoint}");
    Ok(handler)
}

/// The sampling the environment asks for, if any.
async fn sampling() -> anyhow::Result<Option<spanline::convert::lambda::LambdaSampling>> {
    use spanline::convert::lambda::{Decisions, LambdaSampling};
    use spanline::convert::sample::{duration_field, Policy};
    let vars = [
        "SPANLINE_SAMPLE_RATE",
        "SPANLINE_KEEP_ERRORS",
        "SPANLINE_KEEP_SLOWER_THAN",
        "SPANLINE_SAMPLE_POLICY",
    ];
    if vars.iter().all(|v| env_var(v).is_none()) {
        return Ok(None);
    }
    let mut p = match env_var("SPANLINE_SAMPLE_POLICY") {
        Some(json) => Policy::from_json(&json).context("SPANLINE_SAMPLE_POLICY")?,
        None => Policy::default(),
    };
    if let Some(r) = env_var("SPANLINE_SAMPLE_RATE") {
        p.rate = r.trim().parse().with_context(|| {
            format!("SPANLINE_SAMPLE_RATE {r:?}: expected a number from 0 to 1")
        })?;
    }
    if let Some(k) = env_var("SPANLINE_KEEP_ERRORS") {
        p.keep_errors = k
            .trim()
            .parse()
            .with_context(|| format!("SPANLINE_KEEP_ERRORS {k:?}: expected true or false"))?;
    }
    if let Some(t) = env_var("SPANLINE_KEEP_SLOWER_THAN") {
        p.slower_than_ms = Some(duration_field("SPANLINE_KEEP_SLOWER_THAN", &t)?.unsigned_abs());
    }
    p.validate().context("sampling")?;
    let url = env_var("SPANLINE_SAMPLE_DECISIONS").context(
        "SPANLINE_SAMPLE_DECISIONS is not set: sampling in Lambda records the traces it keeps \
         in S3 (s3://bucket/prefix/) so that other instances keep their later spans",
    )?;
    // Path-style addressing with a custom endpoint (AWS_ENDPOINT_URL: an emulator).
    let client = spanline::convert::aws::AwsOptions::default()
        .s3_client()
        .await;
    let decisions = Decisions::s3(client, url.trim())
        .map_err(|e| anyhow::anyhow!("SPANLINE_SAMPLE_DECISIONS {e}"))?;
    let groups = env_var("SPANLINE_SAMPLE_GROUPS")
        .map(|g| {
            g.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(LambdaSampling::new(p, decisions, groups)))
}

/// Serves invocations until the runtime stops the process.
pub async fn run() -> anyhow::Result<Exit> {
    let handler = Arc::new(configure().await?);
    let service = service_fn(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        async move {
            let remaining = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let deadline = Instant::now() + remaining;
            let (report, result) = handler.handle(event.payload, Some(deadline)).await;
            // The counters of this invocation, one JSON line in the function's log.
            println!("{}", report.json_line());
            result
        }
    });
    lambda_runtime::run(service)
        .await
        .map_err(|e| anyhow::anyhow!("the Lambda runtime loop ended: {e}"))?;
    Ok(Exit::Ok)
}
