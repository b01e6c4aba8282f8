//! The `spanline` command: thin wiring from arguments to the converter.
//!
//! Exit codes: 0 success; 1 an input could not be read or the configuration is invalid;
//! 2 bad usage; 3 with `--strict`, when malformed span lines were found; 4 the backend could not
//! be reached or kept failing until the retry deadline (try again later); 5 the backend rejected
//! the data (sending it again will not help).

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use spanline::convert::assemble::{group_by_trace, ServiceMap, Span};
use spanline::convert::sink::file::FileSink;
use spanline::convert::sink::otlp::{Compression, OtlpConfig, OtlpSink, Protocol};
use spanline::convert::sink::terminal::{render_trace, Style};
use spanline::convert::sink::zipkin::{ZipkinConfig, ZipkinSink};
use spanline::convert::sink::{Delivery, Sink, SinkError};
use spanline::convert::source::file::{for_each_record, list_files};
use spanline::convert::Converter;
use spanline::span_line::{TraceId, FILTER_PATTERN};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spanline",
    version,
    about = "Turn span lines in CloudWatch Logs into traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Convert exported logs, subscription payloads, CLI output or captured stdout.
    Convert {
        /// Files or directories (recursively); `.gz` is unpacked.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Log group of inputs that do not name one (export files, captured stdout).
        #[arg(long = "log-group-name", default_value = "")]
        log_group_name: String,
        /// Colours in the terminal waterfall.
        #[arg(long, value_enum, default_value = "auto")]
        color: Color,
        /// Exit with code 3 when malformed span lines were found.
        #[arg(long)]
        strict: bool,
        /// Service name for a log group whose spans do not name one: `GROUP=NAME`, or
        /// `PREFIX*=NAME` (repeatable). Default: `/aws/lambda/<fn>` → `<fn>`, otherwise the
        /// group's last path segment.
        #[arg(long = "service", value_name = "GROUP=NAME")]
        service: Vec<String>,
        /// AWS region, recorded as `cloud.region` on invocation spans.
        #[arg(long, env = "AWS_REGION")]
        region: Option<String>,
        #[command(flatten)]
        sinks: Box<SinkArgs>,
    },
    /// Print the CloudWatch filter pattern and Logs Insights query that find a trace's lines.
    Pattern {
        /// The trace id as tracing backends show it (32 hex digits).
        #[arg(long = "trace-id")]
        trace_id: Option<String>,
    },
}

/// Where spans go. Without any of these (and without `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` in the environment) they are drawn in the terminal.
#[derive(clap::Args, Clone, Debug, Default)]
struct SinkArgs {
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
}

/// The sinks the arguments ask for.
enum AnySink {
    Otlp(OtlpSink),
    Zipkin(ZipkinSink),
    File(FileSink),
}

impl AnySink {
    fn name(&self) -> String {
        match self {
            AnySink::Otlp(s) => format!(
                "OTLP {} {}",
                s.config().protocol.name(),
                s.config().endpoint_redacted()
            ),
            AnySink::Zipkin(_) => "Zipkin".to_owned(),
            AnySink::File(_) => "OTLP JSON file".to_owned(),
        }
    }

    async fn send(&mut self, spans: &[Span]) -> Result<Delivery, SinkError> {
        match self {
            AnySink::Otlp(s) => s.send(spans).await,
            AnySink::Zipkin(s) => s.send(spans).await,
            AnySink::File(s) => s.send(spans).await,
        }
    }

    async fn shutdown(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Otlp(s) => s.shutdown().await,
            AnySink::Zipkin(s) => s.shutdown().await,
            AnySink::File(s) => s.shutdown().await,
        }
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// Builds the OTLP configuration: environment first, flags on top (flag > env > default).
fn otlp_config(args: &SinkArgs) -> anyhow::Result<Option<OtlpConfig>> {
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
            _ => format!("{}/v1/traces", e.trim_end_matches('/')),
        };
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
    config.validate()?;
    Ok(Some(config))
}

fn sinks(args: &SinkArgs) -> anyhow::Result<Vec<AnySink>> {
    let mut out = Vec::new();
    if let Some(c) = otlp_config(args)? {
        out.push(AnySink::Otlp(OtlpSink::new(c)?));
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
        c.validate()?;
        out.push(AnySink::Zipkin(ZipkinSink::new(c)?));
    }
    Ok(out)
}

/// The exit code for a delivery failure.
fn sink_exit(e: &SinkError) -> ExitCode {
    if e.is_retryable() {
        ExitCode::from(4)
    } else if matches!(e, SinkError::Config(_)) {
        ExitCode::from(1)
    } else {
        ExitCode::from(5)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("spanline: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pattern { trace_id } => {
            let mut out = std::io::stdout().lock();
            match trace_id {
                None => writeln!(out, "{FILTER_PATTERN}")?,
                Some(hex) => {
                    let t = TraceId::from_hex(hex.trim())
                        .with_context(|| format!("--trace-id {hex:?}: expected 32 hex digits"))?;
                    let b64 = String::from_utf8_lossy(&t.to_b64()).into_owned();
                    writeln!(out, "filter pattern:       {FILTER_PATTERN} \"{b64}\"")?;
                    writeln!(
                        out,
                        "Logs Insights query:  fields @timestamp, @message | filter @message like \"{b64}\" | sort @timestamp"
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert {
            paths,
            log_group_name,
            color,
            strict,
            service,
            region,
            sinks: sink_args,
        } => {
            let files = list_files(&paths)?;
            let mut sinks = sinks(&sink_args)?;
            let draw = sinks.is_empty() || sink_args.terminal;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let mut conv = Converter::default();
            conv.region = region;
            conv.services = ServiceMap::parse(service.iter().map(String::as_str))
                .map_err(|e| anyhow::anyhow!("--service {e}"))?;
            let mut drawn: Vec<Span> = Vec::new();
            let mut attempts = 0u32;
            let mut rejected = 0u64;
            // File by file: complete spans are sent as soon as a file is read, so memory
            // stays bounded by what is still waiting for its invocation to end.
            let total = files.len();
            for i in 0..=total {
                if let Some(f) = files.get(i) {
                    for_each_record(f, &log_group_name, |rec| conv.push_ref(rec))?;
                }
                let mut pending = conv.take_ready();
                if i == total {
                    pending.extend(conv.finish());
                }
                if pending.is_empty() {
                    continue;
                }
                for sink in &mut sinks {
                    match runtime.block_on(sink.send(&pending)) {
                        Ok(d) => {
                            rejected += d.rejected;
                            attempts = attempts.max(d.attempts);
                            if let Some(m) = d.message {
                                eprintln!(
                                    "spanline: {}: {} spans rejected: {m}",
                                    sink.name(),
                                    d.rejected
                                );
                            }
                        }
                        Err(e) => {
                            eprintln!("spanline: {}: {e}", sink.name());
                            eprintln!("spanline: {} files: {}", total, conv.summary.line());
                            return Ok(sink_exit(&e));
                        }
                    }
                }
                if draw {
                    drawn.append(&mut pending);
                }
            }
            for sink in &mut sinks {
                if let Err(e) = runtime.block_on(sink.shutdown()) {
                    eprintln!("spanline: {}: {e}", sink.name());
                    return Ok(sink_exit(&e));
                }
            }
            if draw {
                let stdout = std::io::stdout();
                let color = match color {
                    Color::Always => true,
                    Color::Never => false,
                    Color::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                };
                let style = Style {
                    color,
                    ..Style::default()
                };
                let mut out = stdout.lock();
                for t in group_by_trace(drawn) {
                    writeln!(out, "{}", render_trace(&t, style))?;
                }
                out.flush()?;
            }
            eprintln!("spanline: {} files: {}", total, conv.summary.line());
            for sink in &sinks {
                eprintln!(
                    "spanline: {}: {} spans accepted, {} rejected, at most {} attempts per batch",
                    sink.name(),
                    conv.summary.spans.saturating_sub(rejected),
                    rejected,
                    attempts.max(1)
                );
            }
            if rejected > 0 {
                return Ok(ExitCode::from(5));
            }
            if strict && conv.summary.malformed_total() > 0 {
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
