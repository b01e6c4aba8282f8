//! The `spanline` command: thin wiring from arguments to the converter.
//!
//! Exit codes: 0 success; 1 an input could not be read or a fatal error; 2 bad usage;
//! 3 with `--strict`, when malformed span lines were found.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use spanline::convert::sink::terminal::{render_trace, Style};
use spanline::convert::source::file::{list_files, read_file};
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
    },
    /// Print the CloudWatch filter pattern and Logs Insights query that find a trace's lines.
    Pattern {
        /// The trace id as tracing backends show it (32 hex digits).
        #[arg(long = "trace-id")]
        trace_id: Option<String>,
    },
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
        } => {
            let files = list_files(&paths)?;
            let mut conv = Converter::default();
            for f in &files {
                for rec in read_file(f, &log_group_name)? {
                    conv.push(&rec);
                }
            }
            let traces = conv.take_traces();
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
            for t in &traces {
                writeln!(out, "{}", render_trace(t, style))?;
            }
            out.flush()?;
            eprintln!("spanline: {} files: {}", files.len(), conv.summary.line());
            if strict && conv.summary.malformed_total() > 0 {
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
