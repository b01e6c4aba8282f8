//! The command line: clap arguments, one function per command. Thin: the work is in the
//! library (`spanline::convert`).

mod cloudwatch;
mod forward;
#[cfg(feature = "lambda")]
mod lambda;
mod output;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cloudwatch::{AwsArgs, ReadArgs, TailArgs};
use output::{Color, Output, SinkArgs};
use spanline::convert::assemble::ServiceMap;
use spanline::convert::source::file::{for_each_record_in, list_files, stream_of, FileError};
use spanline::convert::source::s3;
use spanline::convert::Converter;
use spanline::span_line::{TraceId, FILTER_PATTERN};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

impl ConvertOpts {
    fn converter(&self, region: Option<String>) -> anyhow::Result<Converter> {
        let services = ServiceMap::parse(self.service.iter().map(String::as_str))
            .map_err(|e| anyhow::anyhow!("--service {e}"))?;
        Ok(Converter::new(spanline::convert::Config {
            region,
            services,
            ..spanline::convert::Config::default()
        }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Convert exported logs, subscription payloads, CLI output or captured stdout, from files
    /// and directories or from an export in S3 (`s3://bucket/prefix/`).
    Convert {
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
        sinks: Box<SinkArgs>,
    },
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pattern { trace_id } => pattern(trace_id),
        Command::Convert {
            paths,
            log_group_name,
            opts,
            aws,
            sinks,
        } => runtime()?.block_on(convert(paths, log_group_name, opts, aws, *sinks)),
        Command::Read(args) => runtime()?.block_on(cloudwatch::read(*args)),
        Command::Tail(args) => runtime()?.block_on(cloudwatch::tail(*args)),
        Command::Forward(args) => runtime()?.block_on(forward::forward(*args)),
        Command::Export(args) => runtime()?.block_on(cloudwatch::export(*args)),
        #[cfg(feature = "lambda")]
        Command::Lambda => runtime()?.block_on(lambda::run()),
    }
}

fn pattern(trace_id: Option<String>) -> anyhow::Result<ExitCode> {
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

/// A progress bar over the files' bytes, drawn on stderr when it is a terminal and there is
/// enough to read for it to matter (hidden otherwise, so logs and pipes stay clean).
fn progress_bar(files: &[PathBuf]) -> indicatif::ProgressBar {
    let total: u64 = files
        .iter()
        .filter(|f| f.as_os_str() != "-")
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
        "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

async fn convert(
    paths: Vec<PathBuf>,
    log_group_name: String,
    opts: ConvertOpts,
    aws: AwsArgs,
    sink_args: SinkArgs,
) -> anyhow::Result<ExitCode> {
    let (urls, local): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .into_iter()
        .partition(|p| p.to_str().is_some_and(|s| s.starts_with("s3://")));
    // `-` is standard input (captured stdout, a payload or CLI output piped in), read in its
    // place among the other inputs.
    let mut files = Vec::new();
    for p in local {
        if p.as_os_str() == "-" {
            files.push(p);
        } else {
            files.extend(list_files(std::slice::from_ref(&p))?);
        }
    }
    let mut output = Output::new(&sink_args, opts.color, false)?;
    let mut conv = opts.converter(aws.region.clone())?;
    let mut read = 0usize;
    // File by file: complete spans are sent as soon as a file is read, so memory stays bounded
    // by what is still waiting for its invocation to end.
    let progress = progress_bar(&files);
    for f in &files {
        if f.as_os_str() == "-" {
            let name = std::path::Path::new("standard input");
            for_each_record_in(std::io::stdin().lock(), name, "", &log_group_name, |rec| {
                conv.push_ref(rec)
            })?;
        } else {
            let file = std::fs::File::open(f).map_err(|source| FileError::Io {
                path: f.clone(),
                source,
            })?;
            progress.set_message(f.display().to_string());
            for_each_record_in(
                progress.wrap_read(file),
                f,
                &stream_of(f),
                &log_group_name,
                |rec| conv.push_ref(rec),
            )?;
        }
        read += 1;
        if let Err(failed) = output.deliver(conv.take_ready()).await? {
            return Ok(Output::fail(
                &conv.summary,
                &format!("{read} files"),
                failed,
            ));
        }
    }
    progress.finish_and_clear();
    if !urls.is_empty() {
        let client = aws.options().s3_client().await;
        for url in &urls {
            let url = url.to_string_lossy();
            let (bucket, prefix) = s3::parse_url(&url)?;
            let mut ready = Vec::new();
            let objects =
                s3::for_each_object(&client, &bucket, &prefix, &log_group_name, |_, recs| {
                    for r in &recs {
                        conv.push(r);
                    }
                    ready.append(&mut conv.take_ready());
                })
                .await?;
            read += objects;
            if let Err(failed) = output.deliver(std::mem::take(&mut ready)).await? {
                return Ok(Output::fail(
                    &conv.summary,
                    &format!("{read} files"),
                    failed,
                ));
            }
        }
    }
    let rest = conv.finish();
    if let Err(failed) = output.deliver(rest).await? {
        return Ok(Output::fail(
            &conv.summary,
            &format!("{read} files"),
            failed,
        ));
    }
    output
        .close(&conv.summary, &format!("{read} files"), opts.strict)
        .await
}
