//! Where converted spans go, shared by every command: building the sinks from flags and the
//! OTEL_* environment, and reading the run's report: the closing summary and the exit code.

use super::Exit;
use anyhow::Context as _;
use clap::ValueEnum;
use spanline::convert::aws::AwsOptions;
use spanline::convert::pipeline::{Outcome, Report, RunEvent};
use spanline::convert::printable::Visible;
use spanline::convert::sink::file::FileSink;
use spanline::convert::sink::otlp::config::http_signal_url;
use spanline::convert::sink::otlp::{
    Compression, LogsTarget, OtlpConfig, OtlpSink, Protocol, SigV4,
};
use spanline::convert::sink::terminal::{Style, TerminalSink};
use spanline::convert::sink::zipkin::{ZipkinConfig, ZipkinSink};
use spanline::convert::sink::{AnySink, SinkError};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Colours in the terminal waterfall.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Color {
    /// When stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Where spans go. Without any of these (and without `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` in the environment) they are drawn in the terminal.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SinkArgs {
    /// OTLP endpoint: the base URL for HTTP (`/v1/traces` is appended), the target for gRPC.
    /// Default: the standard OTEL_EXPORTER_OTLP_* variables.
    #[arg(long = "otlp-endpoint", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc, http/protobuf or http/json (default: OTEL_EXPORTER_OTLP_PROTOCOL,
    /// else http/protobuf).
    #[arg(long = "otlp-protocol", value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,
    /// An OTLP request header, `key=value` (repeatable; added to OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    otlp_headers: Vec<String>,
    /// OTLP compression: gzip or none.
    #[arg(long = "otlp-compression", value_name = "gzip|none")]
    otlp_compression: Option<String>,
    /// Also send to AWS X-Ray's OTLP endpoint in this Region
    /// (https://xray.REGION.amazonaws.com/v1/traces, or AWS_ENDPOINT_URL_XRAY): OTLP/HTTP
    /// protobuf with gzip, every request signed with SigV4 for `xray`, credentials from the
    /// default chain (environment, AWS_PROFILE, SSO, roles), X-Ray's limits kept before sending.
    /// An --otlp-endpoint on xray.REGION.amazonaws.com is signed the same way.
    #[arg(long = "xray-region", value_name = "REGION")]
    xray_region: Option<String>,
    /// With `--logs otlp`: the OTLP logs URL (HTTP: the full URL; gRPC: the server). Default:
    /// OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, else the --otlp-endpoint (or
    /// OTEL_EXPORTER_OTLP_ENDPOINT) base URL with `/v1/logs`.
    #[arg(long = "otlp-logs-endpoint", value_name = "URL")]
    otlp_logs_endpoint: Option<String>,
    /// With `--xray-region` and `--logs otlp`: the log group CloudWatch Logs' OTLP endpoint
    /// (https://logs.REGION.amazonaws.com/v1/logs, or AWS_ENDPOINT_URL_CLOUDWATCH_LOGS) writes
    /// the log records into. It and the stream must exist.
    #[arg(long = "cloudwatch-log-group", value_name = "NAME")]
    cloudwatch_log_group: Option<String>,
    /// With `--xray-region` and `--logs otlp`: the log stream of --cloudwatch-log-group.
    #[arg(long = "cloudwatch-log-stream", value_name = "NAME")]
    cloudwatch_log_stream: Option<String>,
    /// Zipkin v2 endpoint, e.g. http://127.0.0.1:9411/api/v2/spans (default:
    /// OTEL_EXPORTER_ZIPKIN_ENDPOINT).
    #[arg(long = "zipkin-endpoint", value_name = "URL")]
    zipkin_endpoint: Option<String>,
    /// Write OTLP JSON lines (one ExportTraceServiceRequest per line) to a file, `-` for stdout.
    #[arg(long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Also draw the traces in the terminal when a backend is configured.
    #[arg(long)]
    terminal: bool,
    /// How long one OTLP batch is retried (backoff, Retry-After) before the run gives up
    /// (default: 60s).
    #[arg(long = "retry-deadline", value_name = "DURATION")]
    retry_deadline: Option<String>,
    /// Send headers or URL credentials over cleartext http:// to a host that is not a loopback
    /// address (default: SPANLINE_ALLOW_INSECURE, else refused).
    #[arg(long = "allow-insecure")]
    allow_insecure: bool,
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// The variable that points X-Ray's OTLP endpoint elsewhere (a VPC endpoint, a test server),
/// as `AWS_ENDPOINT_URL_<SERVICE>` does for every AWS SDK; a base URL, `/v1/traces` appended.
/// The general `AWS_ENDPOINT_URL` (`--endpoint-url`) does not apply: it points the sources at
/// an emulator, which has no OTLP endpoint.
const XRAY_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_XRAY";

/// The variable that points CloudWatch Logs elsewhere, as for every AWS SDK; its OTLP logs
/// endpoint is on the same host (a base URL, `/v1/logs` appended).
const LOGS_ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS";

/// The retry deadline flag, parsed.
fn retry_deadline(args: &SinkArgs) -> anyhow::Result<Option<std::time::Duration>> {
    let Some(d) = &args.retry_deadline else {
        return Ok(None);
    };
    let ms = spanline::convert::time::parse_duration_ms(d.trim())
        .filter(|ms| *ms > 0)
        .with_context(|| format!("--retry-deadline {d:?}: expected a duration such as 30s, 5m"))?;
    Ok(Some(std::time::Duration::from_millis(ms.unsigned_abs())))
}

/// The X-Ray sink's configuration (`--xray-region`): X-Ray's endpoint or
/// [`XRAY_ENDPOINT_VAR`], signed as `aws` says (its profile); none of the `OTEL_EXPORTER_OTLP_*`
/// settings, which belong to the other OTLP backend (its headers must not go to AWS).
fn xray_config(
    args: &SinkArgs,
    aws: &AwsOptions,
    logs: bool,
) -> anyhow::Result<Option<OtlpConfig>> {
    let Some(region) = &args.xray_region else {
        return Ok(None);
    };
    let endpoint = env_var(XRAY_ENDPOINT_VAR);
    let mut config = OtlpConfig::xray(region.trim(), endpoint.as_deref())
        .with_context(|| format!("--xray-region {:?}", Visible(region)))?;
    config.sigv4 = config
        .sigv4
        .take()
        .map(|s| s.with_profile(aws.profile.clone()));
    if let Some(d) = retry_deadline(args)? {
        config.retry_deadline = d;
    }
    config.allow_insecure = args.allow_insecure
        || spanline::convert::sink::otlp::config::allow_insecure_from_env(env_var)?;
    if logs {
        let (Some(group), Some(stream)) = (&args.cloudwatch_log_group, &args.cloudwatch_log_stream)
        else {
            anyhow::bail!(
                "--logs otlp with --xray-region sends the log records to CloudWatch Logs' OTLP \
                 endpoint, which writes into an existing log group and stream: give \
                 --cloudwatch-log-group and --cloudwatch-log-stream"
            );
        };
        let mut target = LogsTarget::cloudwatch(
            region.trim(),
            env_var(LOGS_ENDPOINT_VAR).as_deref(),
            group,
            stream,
        )
        .with_context(|| format!("--xray-region {:?}", Visible(region)))?;
        target.sigv4 = target
            .sigv4
            .take()
            .map(|s| s.with_profile(aws.profile.clone()));
        config.logs = Some(target);
    }
    config.validate()?;
    Ok(Some(config))
}

/// Builds the OTLP configuration: environment first, flags on top (flag > env > default).
/// With `logs`, log records go to the logs endpoint the flags or the variables name.
fn otlp_config(
    args: &SinkArgs,
    aws: &AwsOptions,
    logs: bool,
) -> anyhow::Result<Option<OtlpConfig>> {
    let from_env = env_var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if args.otlp_endpoint.is_none() && !from_env {
        return Ok(None);
    }
    let mut config = OtlpConfig::from_env(env_var)?;
    if let Some(p) = &args.otlp_protocol {
        config.protocol = Protocol::from_name(p).with_context(|| {
            format!("--otlp-protocol {p:?}: expected grpc, http/protobuf or http/json")
        })?;
    }
    if let Some(e) = &args.otlp_endpoint {
        config.endpoint = match config.protocol {
            Protocol::Grpc => e.clone(),
            _ => http_signal_url(e, "traces"),
        };
    }
    if logs {
        let endpoint = match (&args.otlp_logs_endpoint, &args.otlp_endpoint) {
            (Some(l), _) => Some(l.clone()),
            (None, Some(e)) => Some(match config.protocol {
                Protocol::Grpc => e.clone(),
                _ => http_signal_url(e, "logs"),
            }),
            (None, None) => config.logs_endpoint_from_env(env_var),
        };
        let endpoint = endpoint.with_context(|| {
            format!(
                "--logs otlp: no OTLP logs endpoint for the traces endpoint {}: give \
                 --otlp-logs-endpoint (or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)",
                config.endpoint_redacted()
            )
        })?;
        config.logs = Some(LogsTarget::new(endpoint));
    }
    for h in &args.otlp_headers {
        let (k, v) = h
            .split_once('=')
            .context("--otlp-header: expected key=value")?;
        config
            .headers
            .retain(|(old, _)| !old.eq_ignore_ascii_case(k.trim()));
        config
            .headers
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if let Some(c) = &args.otlp_compression {
        config.compression = match c.as_str() {
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => anyhow::bail!("--otlp-compression {other:?}: expected gzip or none"),
        };
    }
    if let Some(d) = retry_deadline(args)? {
        config.retry_deadline = d;
    }
    config.allow_insecure |= args.allow_insecure;
    // An X-Ray endpoint is signed (see `OtlpConfig::signing`); with the command's profile.
    if config.sigv4.is_none() {
        config.sigv4 = config
            .signing()
            .map(|s: SigV4| s.with_profile(aws.profile.clone()));
    }
    config.validate()?;
    Ok(Some(config))
}

/// Whether the terminal waterfall is drawn, and how.
#[derive(Clone, Copy, Debug)]
pub enum Draw {
    /// Each trace once the input ends (or earlier, when memory runs short).
    AtEnd,
    /// Each trace once it has been quiet for a moment (`tail`).
    Following,
}

fn otlp_sink(config: OtlpConfig) -> anyhow::Result<AnySink> {
    Ok(AnySink::Otlp(OtlpSink::new(config)?))
}

/// Builds the sinks the flags and the environment ask for, and the terminal waterfall when
/// nothing else is configured (or `--terminal` asks for it). `aws` is the command's AWS
/// options: its profile signs requests to X-Ray.
pub fn sinks_with_aws(
    args: &SinkArgs,
    aws: &AwsOptions,
    opts: &super::ConvertOpts,
    draw: Draw,
) -> anyhow::Result<Vec<AnySink>> {
    let color = opts.color;
    let logs = opts.logs_otlp();
    let mut out = Vec::new();
    let otlp = otlp_config(args, aws, logs)?;
    let xray = xray_config(args, aws, logs)?;
    if logs && otlp.is_none() && xray.is_none() {
        anyhow::bail!(
            "--logs otlp sends the log lines to an OTLP logs endpoint: give --otlp-endpoint (or \
             OTEL_EXPORTER_OTLP_ENDPOINT) or --xray-region; --logs events puts them on the spans \
             for every output"
        );
    }
    if let (Some(o), Some(_)) = (&otlp, &xray) {
        if spanline::convert::sink::otlp::xray_region(&o.endpoint).is_some() {
            anyhow::bail!(
                "--xray-region and an X-Ray OTLP endpoint ({}) would send every span to X-Ray \
                 twice: use one of them",
                o.endpoint_redacted()
            );
        }
    }
    for c in otlp.into_iter().chain(xray) {
        out.push(otlp_sink(c)?);
    }
    if let Some(p) = &args.output {
        out.push(AnySink::File(FileSink::open(p)?));
    }
    let zipkin_env = env_var("OTEL_EXPORTER_ZIPKIN_ENDPOINT").is_some();
    if args.zipkin_endpoint.is_some() || zipkin_env {
        let mut c = ZipkinConfig::from_env(env_var)?;
        if let Some(z) = &args.zipkin_endpoint {
            c.endpoint = z.clone();
        }
        c.allow_insecure |= args.allow_insecure;
        c.validate()?;
        out.push(AnySink::Zipkin(ZipkinSink::new(c)?));
    }
    if out.is_empty() || args.terminal {
        if let Some(t) = terminal(color, draw) {
            out.push(t);
        }
    }
    Ok(out)
}

/// The terminal waterfall alone (a dry run: whatever the flags and environment configure, it
/// sends nothing).
pub fn terminal(color: Color, draw: Draw) -> Option<AnySink> {
    let follow = match draw {
        Draw::AtEnd => None,
        Draw::Following => Some(std::time::Duration::from_secs(2)),
    };
    let color = match color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let style = Style {
        color,
        ..Style::default()
    };
    Some(AnySink::Terminal(TerminalSink::new(
        Box::new(std::io::stdout()),
        style,
        follow,
    )))
}

/// Prints what the run tells as it goes, on stderr (untrusted text made visible).
pub fn observer() -> spanline::convert::pipeline::Observer {
    Box::new(|e: &RunEvent<'_>| match e {
        RunEvent::InputFailed(f) => eprintln!("spanline: {}", Visible(&f.to_string())),
        RunEvent::Notice(n) => eprintln!("spanline: {}", Visible(n)),
        RunEvent::Rejected {
            sink,
            rejected,
            message,
        } => eprintln!(
            "spanline: {sink}: {rejected} spans rejected: {}",
            Visible(message)
        ),
        _ => {}
    })
}

/// The exit code for a delivery failure.
pub fn sink_exit(e: &SinkError) -> Exit {
    if e.is_retryable() {
        Exit::Unavailable
    } else if matches!(e, SinkError::Config(_)) {
        Exit::Error
    } else {
        Exit::Refused
    }
}

/// Prints the closing summary of `report` (`what` says what was read, e.g. "3 files") and
/// returns the exit code.
pub fn finish(report: &Report, what: &str, strict: bool) -> Exit {
    let failed = match &report.outcome {
        Outcome::SinkFailed { sink, error } => {
            eprintln!("spanline: {sink}: {error}");
            Some(sink_exit(error))
        }
        Outcome::CommitFailed(e) => {
            eprintln!(
                "spanline: {}",
                Visible(&spanline::convert::aws::error_chain(&**e))
            );
            Some(Exit::Error)
        }
        _ => None,
    };
    eprintln!("spanline: {what}: {}", Visible(&report.summary.line()));
    if let Some(s) = &report.sampling {
        eprintln!("spanline: {}", s.line());
    }
    for s in report.sinks.iter().filter(|s| s.destination) {
        let logs = if s.logs_accepted + s.logs_rejected > 0 {
            format!(
                ", {} log records accepted, {} rejected",
                s.logs_accepted, s.logs_rejected
            )
        } else {
            String::new()
        };
        eprintln!(
            "spanline: {}: {} spans accepted, {} rejected{logs}, at most {} attempts per batch",
            s.name,
            s.accepted,
            s.rejected,
            s.max_attempts.max(1)
        );
    }
    if let Some(code) = failed {
        return code;
    }
    if report
        .sinks
        .iter()
        .any(|s| s.rejected > 0 || s.logs_rejected > 0)
    {
        return Exit::Refused;
    }
    if report.inputs_failed > 0 {
        eprintln!(
            "spanline: {} input(s) could not be read (see above); the others were converted",
            report.inputs_failed
        );
        return Exit::Error;
    }
    if strict && report.summary.malformed_total() > 0 {
        return Exit::Strict;
    }
    Exit::Ok
}
