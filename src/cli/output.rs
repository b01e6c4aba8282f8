//! Where converted spans go, shared by `convert`, `read` and `tail`: building the sinks from
//! flags and the OTEL_* environment, sending batches, drawing the terminal waterfall, the closing
//! summary and the exit code.

use anyhow::Context as _;
use clap::ValueEnum;
use spanline::convert::assemble::{group_by_trace, Span, SpanData};
use spanline::convert::sink::file::FileSink;
use spanline::convert::sink::otlp::{Compression, OtlpConfig, OtlpSink, Protocol};
use spanline::convert::sink::terminal::{render_trace, Style};
use spanline::convert::sink::zipkin::{ZipkinConfig, ZipkinSink};
use spanline::convert::sink::{Delivery, Sink, SinkError};
use spanline::convert::Summary;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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
    if let Some(d) = &args.retry_deadline {
        let ms = spanline::convert::time::parse_duration_ms(d.trim())
            .filter(|ms| *ms > 0)
            .with_context(|| {
                format!("--retry-deadline {d:?}: expected a duration such as 30s, 5m")
            })?;
        config.retry_deadline = std::time::Duration::from_millis(ms.unsigned_abs());
    }
    config.allow_insecure |= args.allow_insecure;
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
        c.allow_insecure |= args.allow_insecure;
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

/// A delivery failed; the message is printed, this is the exit code to return.
#[derive(Debug)]
pub struct Failed(pub ExitCode);

/// The configured sinks of one run and what they reported.
pub struct Output {
    sinks: Vec<AnySink>,
    draw: bool,
    /// Draw each batch as it comes (`tail`) instead of everything at the end.
    draw_now: bool,
    color: bool,
    drawn: Vec<Span>,
    attempts: u32,
    retries: u64,
    rejected: u64,
}

impl Output {
    /// Builds the sinks the flags and environment ask for.
    pub fn new(args: &SinkArgs, color: Color, draw_now: bool) -> anyhow::Result<Self> {
        let sinks = sinks(args)?;
        let draw = sinks.is_empty() || args.terminal;
        Ok(Self::with(sinks, draw, draw_now, color))
    }

    /// Only the terminal waterfall, whatever the flags and environment configure: for a dry run,
    /// which must send nothing.
    pub fn terminal_only(color: Color) -> Self {
        Self::with(Vec::new(), true, false, color)
    }

    fn with(sinks: Vec<AnySink>, draw: bool, draw_now: bool, color: Color) -> Self {
        let color = match color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        Output {
            sinks,
            draw,
            draw_now,
            color,
            drawn: Vec::new(),
            attempts: 0,
            retries: 0,
            rejected: 0,
        }
    }

    /// Sends that had to be repeated (backoff after a failure) before a sink accepted them.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Whether a backend or file is configured (otherwise spans are only drawn).
    pub fn has_sinks(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Sends a batch to every sink (and keeps it for drawing).
    pub async fn deliver(&mut self, mut spans: Vec<Span>) -> anyhow::Result<Result<(), Failed>> {
        if spans.is_empty() {
            return Ok(Ok(()));
        }
        for sink in &mut self.sinks {
            match sink.send(&spans).await {
                Ok(d) => {
                    self.rejected += d.rejected;
                    self.attempts = self.attempts.max(d.attempts);
                    self.retries += u64::from(d.attempts.saturating_sub(1));
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
                    return Ok(Err(Failed(sink_exit(&e))));
                }
            }
        }
        if self.draw {
            if self.draw_now {
                self.draw(spans)?;
            } else {
                self.drawn.append(&mut spans);
            }
        }
        Ok(Ok(()))
    }

    fn draw(&self, spans: Vec<Span>) -> anyhow::Result<()> {
        let style = Style {
            color: self.color,
            ..Style::default()
        };
        let mut out = std::io::stdout().lock();
        for t in group_by_trace(spans, |s| s.trace_id) {
            let data: Vec<SpanData> = t.iter().map(Span::data).collect();
            writeln!(out, "{}", render_trace(&data, style))?;
        }
        out.flush()?;
        Ok(())
    }

    /// Ends the run: shuts the sinks down, draws, prints the summary (`what` says what was
    /// read, e.g. "3 files") and returns the exit code.
    pub async fn close(
        &mut self,
        summary: &Summary,
        what: &str,
        strict: bool,
    ) -> anyhow::Result<ExitCode> {
        for sink in &mut self.sinks {
            if let Err(e) = sink.shutdown().await {
                eprintln!("spanline: {}: {e}", sink.name());
                return Ok(sink_exit(&e));
            }
        }
        if self.draw && !self.draw_now {
            let drawn = std::mem::take(&mut self.drawn);
            self.draw(drawn)?;
        }
        eprintln!("spanline: {what}: {}", summary.line());
        for sink in &self.sinks {
            eprintln!(
                "spanline: {}: {} spans accepted, {} rejected, at most {} attempts per batch",
                sink.name(),
                summary.spans.saturating_sub(self.rejected),
                self.rejected,
                self.attempts.max(1)
            );
        }
        if self.rejected > 0 {
            return Ok(ExitCode::from(5));
        }
        if strict && summary.malformed_total() > 0 {
            return Ok(ExitCode::from(3));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// After a failed delivery: the summary so far, and the failure's exit code.
    pub fn fail(summary: &Summary, what: &str, failed: Failed) -> ExitCode {
        eprintln!("spanline: {what}: {}", summary.line());
        failed.0
    }
}
