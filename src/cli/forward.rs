//! `spanline forward`: one scheduled run. Everything new since the checkpoint is read, converted
//! and sent; the checkpoint moves only after the backend accepted what it covers.
//!
//! Per log group, a run reads `[cursor - lateness, now]` with FilterLogEvents and:
//! 1. drops the spans the checkpoint records as accepted (the re-read lateness window meets them
//!    again);
//! 2. sends the rest in batches, recording each batch's span ids in the checkpoint (written
//!    durably) as soon as the backend accepted it — a crash re-sends at most the batch in flight,
//!    with the same deterministic ids;
//! 3. holds back the invocations whose REPORT has not come yet (their spans are not sent) and
//!    puts the cursor at the earliest of them, so the next run reads them whole; an invocation
//!    silent for `--give-up-after` is finished with what is known;
//! 4. moves the cursor and forgets the accepted ids no later read can meet.
//!
//! A backend failure after `--retry-deadline` stops the run with nothing recorded that was not
//! accepted. Exit codes: 0 done; 1 usage, configuration or a log group that could not be read;
//! 4 backend unreachable or failing (retry later); 5 backend refused spans; 6 another run holds
//! the checkpoint's lock.

use super::cloudwatch::{converter, duration_arg, time_arg, GroupArgs};
use super::output::{Output, SinkArgs};
use super::{AwsArgs, ConvertOpts};
use spanline::convert::assemble::Span;
use spanline::convert::checkpoint::{CheckpointError, Location, Store};
use spanline::convert::source::cloudwatch::budget::Budget;
use spanline::convert::source::cloudwatch::filter::{read_group, resolve_groups, Progress, Query};
use spanline::convert::time::now_ms;
use spanline::convert::Summary;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// Exit code when another run holds the lock.
const EXIT_LOCKED: u8 = 6;

/// `spanline forward`.
#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    groups: GroupArgs,
    /// Where the checkpoint is kept: a local file, or `s3://bucket/key` for stateless runners.
    #[arg(
        long,
        default_value = "spanline-checkpoint.json",
        value_name = "PATH|S3 URL"
    )]
    checkpoint: String,
    /// Where a log group without a checkpoint starts: RFC 3339, epoch ms or a duration before
    /// now.
    #[arg(long = "start-time", default_value = "1h", value_name = "TIME")]
    start_time: String,
    /// How much event time before the cursor every run reads again, for events ingested late
    /// (CloudWatch ingestion lag, back-dated writes); they are forwarded once, the rest is
    /// dropped by span id.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    lateness: String,
    /// An invocation whose REPORT line has not come after this long is finished with what is
    /// known (Lambda ends every invocation within 15 minutes).
    #[arg(long = "give-up-after", default_value = "20m", value_name = "DURATION")]
    give_up_after: String,
    /// How long an S3 lock lease lasts; it is renewed at every checkpoint write.
    #[arg(long = "lock-ttl", default_value = "15m", value_name = "DURATION")]
    lock_ttl: String,
    /// Spans per batch sent and recorded in the checkpoint.
    #[arg(long = "batch-spans", default_value_t = 1000, value_name = "N")]
    batch_spans: usize,
    /// Read and convert, print what would be forwarded, send nothing, write nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    #[command(flatten)]
    opts: ConvertOpts,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// What one run did, printed as a JSON line on stdout at the end.
#[derive(Debug, Default)]
struct Stats {
    groups: usize,
    groups_failed: usize,
    forwarded: u64,
    would_forward: u64,
    already_forwarded: u64,
    held_back: u64,
    requests: u64,
    throttled: u64,
    send_retries: u64,
    summary: Summary,
    lag_ms: Option<i64>,
    per_group: BTreeMap<String, serde_json::Value>,
}

impl Stats {
    fn print(&self, outcome: &str, code: u8) {
        let line = serde_json::json!({
            "spanline": "forward",
            "outcome": outcome,
            "exit_code": code,
            "log_groups": self.groups,
            "log_groups_failed": self.groups_failed,
            "records_read": self.summary.records,
            "span_lines": self.summary.span_lines,
            "platform_lines": self.summary.platform_lines,
            "spans_forwarded": self.forwarded,
            "spans_would_forward": self.would_forward,
            "skipped": {
                "already_forwarded": self.already_forwarded,
                "duplicates": self.summary.duplicates,
                "held_for_next_run": self.held_back,
                "other_lines": self.summary.foreign,
                "malformed": self.summary.malformed,
            },
            "requests": self.requests,
            "throttled": self.throttled,
            "send_retries": self.send_retries,
            "lag_ms": self.lag_ms,
            "groups": self.per_group,
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        eprintln!(
            "spanline forward: {outcome}: {} log groups ({} failed), {} records, {} spans forwarded, {} already forwarded, {} held for the next run, {} malformed, lag {} s",
            self.groups,
            self.groups_failed,
            self.summary.records,
            if self.would_forward > 0 { self.would_forward } else { self.forwarded },
            self.already_forwarded,
            self.held_back,
            self.summary.malformed_total(),
            self.lag_ms.map_or("-".to_owned(), |l| (l / 1000).to_string()),
        );
    }
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `spanline forward`.
pub async fn forward(args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let sel = args.groups.selection()?;
    let now = now_ms();
    let lateness = ms(duration_arg("lateness", &args.lateness)?);
    let give_up = ms(duration_arg("give-up-after", &args.give_up_after)?);
    let lock_ttl = duration_arg("lock-ttl", &args.lock_ttl)?;
    let first_start = time_arg("start-time", &Some(args.start_time.clone()), now)?.unwrap_or(now);
    let location = Location::parse(&args.checkpoint)?;
    let mut output = if args.dry_run {
        Output::terminal_only(args.opts.color)
    } else {
        Output::new(&args.sinks, args.opts.color, false)?
    };
    if !args.dry_run && !output.has_sinks() {
        anyhow::bail!(
            "forward needs a backend: --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT), --zipkin-endpoint or --output; --dry-run shows what would be sent"
        );
    }
    let aws = args.aws.options();
    let mut store = match Store::open(location, &aws, !args.dry_run, lock_ttl).await {
        Ok(s) => s,
        Err(e @ CheckpointError::Locked { .. }) => {
            eprintln!("spanline: {e}; this run does nothing");
            return Ok(ExitCode::from(EXIT_LOCKED));
        }
        Err(e) => return Err(e.into()),
    };
    let mut cp = store.load(&aws).await?;
    let (conv, client) = converter(&args.opts, &args.aws).await?;
    let region = conv.config().region.clone();
    let budget = Budget::per_second(args.groups.max_tps);
    let progress = Progress::default();
    let groups = resolve_groups(&client, &budget, &progress, &sel).await?;
    if groups.is_empty() {
        anyhow::bail!("no log group matches the selection");
    }
    let mut stats = Stats {
        groups: groups.len(),
        ..Stats::default()
    };
    let batch = args.batch_spans.max(1);
    let mut lag: Option<i64> = None;
    for group in &groups {
        let mut state = cp.groups.get(group).cloned();
        let from = state
            .as_ref()
            .map_or(first_start, |s| s.cursor_ms.saturating_sub(lateness));
        let to = now;
        let query = Query {
            log_stream_name_prefix: args.groups.log_stream_name_prefix.clone(),
            start_ms: Some(from),
            end_ms: Some(to),
            filter_pattern: args.groups.filter_pattern.clone(),
        };
        let events = match read_group(&client, &budget, &progress, group, &query).await {
            Ok(e) => e,
            Err(e) => {
                // Its checkpoint stays where it was: the next run reads the same range.
                eprintln!("spanline: {e}");
                stats.groups_failed += 1;
                continue;
            }
        };
        let mut conv = args.opts.converter(region.clone())?;
        for e in events {
            conv.push(&e.into_record(group));
        }
        let mut ready = conv.take_ready();
        ready.extend(conv.finish_stale(to.saturating_sub(give_up)));
        let accepted = state.as_ref().map(|s| s.accepted()).unwrap_or_default();
        let before = ready.len();
        let fresh: Vec<Span> = ready
            .into_iter()
            .filter(|s| !accepted.contains(&s.span_id.to_string()))
            .collect();
        let already = (before - fresh.len()) as u64;
        stats.already_forwarded += already;
        let held = conv.held() as u64;
        stats.held_back += held;
        stats.summary.add(&conv.summary);
        let pending = conv.oldest_pending_ms(group);
        let cursor = pending.map_or(to, |p| p.min(to));
        stats.per_group.insert(
            group.clone(),
            serde_json::json!({
                "read_from_ms": from, "read_to_ms": to, "spans_new": fresh.len(),
                "already_forwarded": already, "held_for_next_run": held,
                "next_cursor_ms": cursor,
            }),
        );
        if args.dry_run {
            stats.would_forward += fresh.len() as u64;
            output.deliver(fresh).await?.ok();
            continue;
        }
        let st = state.get_or_insert_with(Default::default);
        for chunk in fresh.chunks(batch) {
            if let Err(failed) = output.deliver(chunk.to_vec()).await? {
                // Nothing of this batch is recorded: the next run sends it again.
                stats.send_retries = output.retries();
                stats.requests = progress.requests.load(Ordering::Relaxed);
                stats.throttled = progress.throttled.load(Ordering::Relaxed);
                stats.print("backend failed", exit_u8(&failed.0));
                store.unlock().await?;
                return Ok(failed.0);
            }
            stats.forwarded += chunk.len() as u64;
            st.add(to, chunk.iter().map(|s| s.span_id.to_string()));
            cp.groups.insert(group.clone(), st.clone());
            store.save(&cp).await?;
        }
        st.advance(cursor, st.cursor_ms.max(cursor).saturating_sub(lateness));
        lag = Some(lag.map_or(now - st.cursor_ms, |l: i64| l.max(now - st.cursor_ms)));
        cp.groups.insert(group.clone(), st.clone());
        store.save(&cp).await?;
    }
    stats.lag_ms = lag;
    stats.requests = progress.requests.load(Ordering::Relaxed);
    stats.throttled = progress.throttled.load(Ordering::Relaxed);
    stats.send_retries = output.retries();
    let total = stats.summary.clone();
    let code = output
        .close(
            &total,
            &format!("{} log groups", groups.len()),
            args.opts.strict,
        )
        .await?;
    let code = if stats.groups_failed > 0 && code == ExitCode::SUCCESS {
        ExitCode::from(1)
    } else {
        code
    };
    let outcome = match (args.dry_run, code == ExitCode::SUCCESS) {
        (true, _) => "dry run",
        (false, true) => "done",
        (false, false) => "incomplete",
    };
    stats.print(outcome, exit_u8(&code));
    if !args.dry_run {
        store.unlock().await?;
    }
    Ok(code)
}

/// The number behind an exit code (for the JSON line).
fn exit_u8(code: &ExitCode) -> u8 {
    [0u8, 1, 3, 4, 5, 6]
        .into_iter()
        .find(|c| ExitCode::from(*c) == *code)
        .unwrap_or(1)
}
