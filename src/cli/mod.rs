//! The command line: clap arguments → a validated configuration, built once → the library's
//! `pipeline::run` → an exit code ([`Exit`]). The work is in the library.

mod cloudwatch;
mod forward;
#[cfg(feature = "lambda")]
mod lambda;
mod output;
mod scopes;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cloudwatch::{AwsArgs, ReadArgs, TailArgs};
use output::{Color, Draw, SinkArgs};
use spanline::convert::assemble::ServiceMap;
use spanline::convert::parse::MarkerPlacement;
use spanline::convert::pipeline::{self, NoCommit, Options, Stop};
use spanline::convert::source::local::{Chain, FileSource, Input};
use spanline::convert::source::payload::Limits;
use spanline::convert::source::s3::S3Source;
use spanline::span_line::{TraceId, FILTER_PATTERN};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The exit codes, documented in the README and `main.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// An input could not be read, or the configuration is invalid.
    Error = 1,
    /// Bad usage (clap's own code).
    #[allow(dead_code)]
    Usage = 2,
    /// `--strict` and malformed span lines were found.
    Strict = 3,
    /// The backend could not be reached or kept failing until the retry deadline: try later.
    Unavailable = 4,
    /// The backend rejected the data: sending it again will not help.
    Refused = 5,
    /// Another run holds the checkpoint's lock (`forward`).
    Locked = 6,
}

impl Exit {
    /// The number.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[derive(Parser)]
#[command(
    name = "spanline",
    version,
    about = "Turn span lines in CloudWatch Logs into traces"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every converting command shares.
#[derive(clap::Args, Clone, Debug)]
pub struct ConvertOpts {
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
    /// Accept the span line marker anywhere after a space in a message, not only where an
    /// emitter puts it (for emitters that print their own prefix before the line). Anyone whose
    /// text the function logs can then make spans appear: see the README's trust model.
    #[arg(long = "marker-anywhere")]
    marker_anywhere: bool,
    /// Longest log record kept; the rest of a longer line is skipped and counted.
    #[arg(long = "max-line", value_name = "SIZE", default_value = "1MiB")]
    max_line: String,
    /// Most bytes one JSON payload (subscription payload, Kinesis or Firehose record, CLI
    /// output) may inflate to.
    #[arg(long = "max-payload", value_name = "SIZE", default_value = "256MiB")]
    max_payload: String,
    /// Most bytes one gzip file or S3 object may inflate to.
    #[arg(long = "max-inflated", value_name = "SIZE", default_value = "16GiB")]
    max_inflated: String,
    /// The function's other log lines (application logs, tracebacks, the runtime's errors):
    /// `events` puts each on the span that was active when it was written (the invocation span
    /// otherwise) as a `log` event; `otlp` sends each as an OTLP log record with that span's
    /// trace and span id to the OTLP endpoint's logs endpoint (--otlp-logs-endpoint; with
    /// --xray-region, CloudWatch Logs'); both draw the error and warning lines under their span
    /// in the terminal; `off` counts them as other lines. With `events` or `otlp`, `read`, `tail`
    /// and `forward` read every line of the groups, not only span and platform lines.
    #[arg(long, value_enum, default_value = "off")]
    logs: LogsArg,
    #[command(flatten)]
    sampling: SampleArgs,
}

/// `--logs`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogsArg {
    /// As span events.
    Events,
    /// As OTLP log records, to the OTLP endpoints' logs endpoint.
    Otlp,
    /// Not at all.
    Off,
}

/// Tail-based sampling (see the README's "Sampling").
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Sampling")]
pub struct SampleArgs {
    /// Keep this fraction of the traces that nothing else keeps, decided from the trace id as
    /// OpenTelemetry's TraceIdRatioBased sampler decides (0 to 1; default 1: keep everything).
    #[arg(long = "sample-rate", value_name = "RATE")]
    rate: Option<f64>,
    /// Keep every trace with an error span, whatever the rate (default: true).
    #[arg(long = "keep-errors", value_name = "BOOL")]
    keep_errors: Option<bool>,
    /// Keep every trace whose root span lasted longer than this (`2s`, `500ms`).
    #[arg(long = "keep-slower-than", value_name = "DURATION")]
    keep_slower_than: Option<String>,
    /// How long after its root span a trace is decided (stragglers: spans that end after the
    /// root). Default 30s; in `tail` wall-clock time, otherwise the input's own time.
    #[arg(long = "sample-wait", value_name = "DURATION")]
    wait: Option<String>,
    /// A JSON sampling policy (per-service and per-operation rates, `at_least_one_per`, …);
    /// the flags above override what it says.
    #[arg(long = "sample-policy", value_name = "FILE")]
    policy: Option<PathBuf>,
}

impl SampleArgs {
    /// The policy, when any sampling flag was given.
    fn policy(&self) -> anyhow::Result<Option<spanline::convert::sample::Policy>> {
        use spanline::convert::sample::{duration_field, Policy};
        let given = self.rate.is_some()
            || self.keep_errors.is_some()
            || self.keep_slower_than.is_some()
            || self.wait.is_some()
            || self.policy.is_some();
        if !given {
            return Ok(None);
        }
        let mut p = match &self.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--sample-policy {}", path.display()))?;
                Policy::from_json(&text)
                    .with_context(|| format!("--sample-policy {}", path.display()))?
            }
            None => Policy::default(),
        };
        if let Some(r) = self.rate {
            p.rate = r;
        }
        if let Some(k) = self.keep_errors {
            p.keep_errors = k;
        }
        if let Some(t) = &self.keep_slower_than {
            let ms = duration_field("--keep-slower-than", t)?;
            p.slower_than_ms = Some(ms.unsigned_abs());
        }
        if let Some(w) = &self.wait {
            p.wait_ms = duration_field("--sample-wait", w)?;
        }
        p.validate().context("sampling")?;
        Ok(Some(p))
    }
}

/// Parses `123`, `64KiB`, `16MiB`, `8GiB` (also `KB`/`MB`/`GB`, taken as binary units).
pub fn parse_size(flag: &str, v: &str) -> anyhow::Result<u64> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("--{flag} {v:?}: expected a size such as 1MiB, 256MiB, 8GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => anyhow::bail!("--{flag} {v:?}: unknown unit {other:?} (B, KiB, MiB, GiB)"),
    };
    let size = n
        .checked_mul(mult)
        .with_context(|| format!("--{flag} {v:?}: too large"))?;
    if size == 0 {
        anyhow::bail!("--{flag} {v:?}: must be more than 0");
    }
    Ok(size)
}

impl ConvertOpts {
    /// Whether the function's log lines are read (as events or records).
    fn logs_on(&self) -> bool {
        self.logs != LogsArg::Off
    }

    /// Whether the function's log lines go to an OTLP logs endpoint.
    fn logs_otlp(&self) -> bool {
        self.logs == LogsArg::Otlp
    }

    /// The input limits.
    fn limits(&self) -> anyhow::Result<Limits> {
        Ok(Limits {
            max_line: usize::try_from(parse_size("max-line", &self.max_line)?)
                .unwrap_or(usize::MAX),
            max_payload: parse_size("max-payload", &self.max_payload)?,
            max_inflated: parse_size("max-inflated", &self.max_inflated)?,
            ..Limits::default()
        })
    }

    /// The converter's configuration.
    fn config(&self, region: Option<String>) -> anyhow::Result<spanline::convert::Config> {
        let services = ServiceMap::parse(self.service.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("--service {e}"))?;
        Ok(spanline::convert::Config {
            region,
            services,
            marker: if self.marker_anywhere {
                MarkerPlacement::Anywhere
            } else {
                MarkerPlacement::Start
            },
            logs: match self.logs {
                LogsArg::Events => spanline::convert::Logs::Events,
                LogsArg::Otlp => spanline::convert::Logs::Otlp,
                LogsArg::Off => spanline::convert::Logs::Off,
            },
            ..spanline::convert::Config::default()
        })
    }

    /// Pipeline options for `mode`.
    fn options(&self, region: Option<String>, mode: pipeline::Mode) -> anyhow::Result<Options> {
        let sampling = self.sampling.policy()?;
        Ok(Options {
            converter: self.config(region)?,
            mode,
            sampling,
            ..Options::default()
        })
    }
}

/// `spanline convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Files or directories (recursively; `.gz` is unpacked), `s3://bucket/prefix/` (the
    /// tree CreateExportTask wrote), or `-` for standard input.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Log group of inputs that do not name one (export files, captured stdout).
    #[arg(long = "log-group-name", default_value = "")]
    log_group_name: String,
    #[command(flatten)]
    opts: ConvertOpts,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Convert exported logs, subscription payloads, CLI output or captured stdout, from files
    /// and directories or from an export in S3 (`s3://bucket/prefix/`).
    Convert(Box<ConvertArgs>),
    /// Read log groups over a time range with FilterLogEvents and convert them.
    Read(Box<ReadArgs>),
    /// Export a time range of a log group to S3 (CreateExportTask), wait for it, and convert it.
    Export(Box<cloudwatch::ExportArgs>),
    /// Follow log groups and convert as events arrive (Live Tail; `--poll`: FilterLogEvents polling).
    Tail(Box<TailArgs>),
    /// One scheduled run: forward everything new since the checkpoint to the backend, once
    /// (see the README for what a killed run may send again), and exit (codes: 0 done, 1 error,
    /// 4 backend failing, 5 refused, 6 locked).
    Forward(Box<forward::ForwardArgs>),
    /// Run as the bootstrap of an AWS Lambda function behind a CloudWatch Logs subscription
    /// (direct, Kinesis or Firehose); configured by OTEL_EXPORTER_OTLP_* and
    /// SPANLINE_OTLP_HEADERS_SECRET_ARN (see the README).
    #[cfg(feature = "lambda")]
    Lambda,
    /// Print the CloudWatch filter pattern and Logs Insights query that find a trace's lines.
    Pattern {
        /// The trace id as tracing backends show it (32 hex digits).
        #[arg(long = "trace-id")]
        trace_id: Option<String>,
    },
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match bootstrap() {
        Some(cli) => cli,
        None => Cli::parse(),
    };
    match run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "spanline: {}",
                spanline::convert::printable::Visible(&format!("{e:#}"))
            );
            Exit::Error.into()
        }
    }
}

/// Lambda's `provided` runtimes start the file named `bootstrap` without arguments: the binary
/// installed under that name runs `spanline lambda`.
#[cfg(feature = "lambda")]
fn bootstrap() -> Option<Cli> {
    let mut args = std::env::args_os();
    let name = args.next()?;
    let is_bootstrap = std::path::Path::new(&name)
        .file_name()
        .is_some_and(|n| n == "bootstrap");
    (is_bootstrap && args.next().is_none()).then_some(Cli {
        command: Command::Lambda,
    })
}

#[cfg(not(feature = "lambda"))]
fn bootstrap() -> Option<Cli> {
    None
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Pattern { trace_id } => pattern(trace_id),
        Command::Convert(args) => runtime()?.block_on(convert(*args)),
        Command::Read(args) => runtime()?.block_on(cloudwatch::read(*args)),
        Command::Tail(args) => runtime()?.block_on(cloudwatch::tail(*args)),
        Command::Forward(args) => runtime()?.block_on(forward::forward(*args)),
        Command::Export(args) => runtime()?.block_on(cloudwatch::export(*args)),
        #[cfg(feature = "lambda")]
        Command::Lambda => runtime()?.block_on(lambda::run()),
    }
}

fn pattern(trace_id: Option<String>) -> anyhow::Result<Exit> {
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
    Ok(Exit::Ok)
}

/// Ctrl-C as a [`Stop`].
pub(crate) fn ctrl_c() -> Stop {
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// A progress bar over the files' bytes, drawn on stderr when it is a terminal and there is
/// enough to read for it to matter (hidden otherwise, so logs and pipes stay clean).
fn progress_bar(paths: &[PathBuf]) -> indicatif::ProgressBar {
    let total: u64 = paths
        .iter()
        .filter(|f| f.as_os_str() != "-")
        .filter_map(|p| spanline::convert::source::file::list_files(std::slice::from_ref(p)).ok())
        .flatten()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total < 16 << 20 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

async fn convert(args: ConvertArgs) -> anyhow::Result<Exit> {
    let ConvertArgs {
        paths,
        log_group_name,
        opts,
        aws,
        sinks: sink_args,
    } = args;
    let (urls, local): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .into_iter()
        .partition(|p| p.to_str().is_some_and(|s| s.starts_with("s3://")));
    let limits = opts.limits()?;
    let sinks = output::sinks_with_aws(&sink_args, &aws.options(), &opts, Draw::AtEnd)?;
    aws.one_region("convert")?;
    let options = opts.options(aws.first_region(), pipeline::Mode::Batch)?;
    let progress = progress_bar(&local);
    let bar = progress.clone();
    let on_bytes: spanline::convert::source::local::OnBytes =
        std::sync::Arc::new(move |n| bar.inc(n));
    let inputs: Vec<Input> = local
        .into_iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                Input::Stdin
            } else {
                Input::Path(p)
            }
        })
        .collect();
    let files = FileSource::start(inputs, log_group_name.clone(), limits, Some(on_bytes));
    let s3 = if urls.is_empty() {
        None
    } else {
        let client = aws.options().s3_client().await;
        let urls = urls
            .iter()
            .map(|u| u.to_string_lossy().into_owned())
            .collect();
        // Objects are numbered after the local inputs (which count fewer than this).
        Some(S3Source::start(
            client,
            urls,
            log_group_name,
            limits,
            1 << 30,
        ))
    };
    let report = pipeline::run(
        Chain::new(files, s3),
        sinks,
        NoCommit,
        options,
        Some(ctrl_c()),
        Some(output::observer()),
    )
    .await;
    progress.finish_and_clear();
    let inputs = report.inputs_read;
    Ok(output::finish(
        &report,
        &format!("{inputs} files"),
        opts.strict,
    ))
}
