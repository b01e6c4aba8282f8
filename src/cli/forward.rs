//! `spanline forward`: one scheduled run. Everything new since the checkpoint is read, converted
//! and sent; the checkpoint moves only after the backend accepted what it covers.
//!
//! Per log group, a run reads with FilterLogEvents the head `[cursor - head, now]` (`head`: the
//! measured 99th percentile of the ingestion lag plus a second), or, once `--sweep-every` has
//! passed since the last sweep, the sweep `[last sweep - lateness, now]`, which meets every
//! event ingested late within `--lateness` since (see `spanline::convert::checkpoint`), and:
//! 1. drops the spans the checkpoint records as accepted (a re-read meets them again);
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

use super::cloudwatch::{duration_arg, time_arg, GroupArgs};
use super::output::{self, Draw, SinkArgs};
use super::{AwsArgs, ConvertOpts, Exit};
use spanline::convert::checkpoint::{
    Checkpoint, CheckpointError, Forwarding, Location, NoSave, ReadPlan, Store,
};
use spanline::convert::pipeline::{self, Mode, Outcome, Report};
use spanline::convert::source::cloudwatch::filter::{FilterSource, GroupRange, LateCheck, Query};
use spanline::convert::time::now_ms;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    /// How long after its timestamp an event may be ingested (CloudWatch ingestion lag,
    /// back-dated writes) and still be forwarded, once: each sweep reads this much event time
    /// before the last sweep again; what it meets again is dropped by span id.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    lateness: String,
    /// How often a run reads the whole lateness window again (a sweep); runs in between read
    /// only from just before the cursor. An event ingested late is forwarded by the next
    /// sweep. Default: the --lateness; 0 sweeps on every run.
    #[arg(long = "sweep-every", value_name = "DURATION")]
    sweep_every: Option<String>,
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
    scopes: super::scopes::ScopeArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// What a run did besides its report.
struct RunFacts<'a> {
    groups: &'a [GroupRange],
    plans: &'a [ReadPlan],
    failed_groups: u64,
    scopes: &'a [super::scopes::Scoped],
    cp: &'a Checkpoint,
    forwarded: &'a BTreeMap<String, u64>,
    dry_run: bool,
}

/// What one run did, printed as a JSON line on stdout at the end.
fn stats_line(
    outcome: &str,
    code: Exit,
    report: &Report,
    facts: &RunFacts<'_>,
) -> serde_json::Value {
    let RunFacts {
        groups,
        plans,
        failed_groups,
        scopes,
        cp,
        forwarded,
        dry_run,
    } = *facts;
    let now = now_ms();
    let lag = groups
        .iter()
        .filter_map(|g| cp.groups.get(g.key()))
        .map(|st| now - st.cursor_ms)
        .max();
    let per_group: BTreeMap<&str, serde_json::Value> = groups
        .iter()
        .zip(plans)
        .map(|(g, plan)| {
            (
                g.key(),
                serde_json::json!({
                    "read_from_ms": g.query.start_ms,
                    "read_to_ms": g.query.end_ms,
                    "swept": plan.sweep,
                    "head_ms": plan.head_ms,
                    "spans_forwarded": forwarded.get(g.key()).copied().unwrap_or(0),
                    "next_cursor_ms": cp.groups.get(g.key()).map(|st| st.cursor_ms),
                }),
            )
        })
        .collect();
    let sent: u64 = report
        .sinks
        .iter()
        .filter(|s| s.destination)
        .map(|s| s.accepted)
        .max()
        .unwrap_or(0);
    let would = if dry_run {
        report.summary.spans.saturating_sub(report.already_accepted)
    } else {
        0
    };
    let (requests, throttled, _) = super::scopes::total(scopes);
    // Requests per account and Region, when several are read (each has its own budget).
    let scopes_json: Option<BTreeMap<String, serde_json::Value>> = (scopes.len() > 1).then(|| {
        scopes
            .iter()
            .map(|s| {
                let p = &s.reader.progress;
                (
                    s.scope.label(),
                    serde_json::json!({
                        "requests": p.requests.load(Ordering::Relaxed),
                        "throttled": p.throttled.load(Ordering::Relaxed),
                    }),
                )
            })
            .collect()
    });
    let sampling = report.sampling.as_ref().map(|c| {
        let kept: std::collections::BTreeMap<&str, u64> =
            c.kept_traces.iter().map(|(r, n)| (r.name(), *n)).collect();
        serde_json::json!({
            "kept_traces": kept,
            "dropped_traces": c.dropped_traces,
            "kept_spans": c.kept_spans,
            "dropped_spans": c.dropped_spans,
        })
    });
    serde_json::json!({
        "spanline": "forward",
        "outcome": outcome,
        "exit_code": code.code(),
        "log_groups": groups.len(),
        "log_groups_failed": failed_groups,
        "records_read": report.summary.records,
        "span_lines": report.summary.span_lines,
        "platform_lines": report.summary.platform_lines,
        "spans_forwarded": if dry_run { 0 } else { sent },
        "spans_would_forward": would,
        "skipped": {
            "already_forwarded": report.already_accepted,
            "duplicates": report.summary.duplicates,
            "held_for_next_run": report.held_at_end,
            "other_lines": report.summary.foreign,
            "malformed": report.summary.malformed,
        },
        "limits": report.summary.limits,
        "requests": requests,
        "throttled": throttled,
        "scopes": scopes_json,
        "send_retries": report.sinks.iter().map(|s| s.retries).sum::<u64>(),
        "lag_ms": lag,
        "sampling": sampling,
        "groups": per_group,
    })
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `spanline forward`.
pub async fn forward(args: ForwardArgs) -> anyhow::Result<Exit> {
    let sel = args.groups.selection()?;
    let now = now_ms();
    let lateness = ms(duration_arg("lateness", &args.lateness)?);
    let sweep_every = match &args.sweep_every {
        Some(s) => ms(duration_arg("sweep-every", s)?),
        None => lateness,
    };
    let give_up = duration_arg("give-up-after", &args.give_up_after)?;
    let lock_ttl = duration_arg("lock-ttl", &args.lock_ttl)?;
    let first_start = time_arg("start-time", &Some(args.start_time.clone()), now)?.unwrap_or(now);
    let location = Location::parse(&args.checkpoint)?;
    let sinks = if args.dry_run {
        output::terminal(args.opts.color, Draw::AtEnd)
            .into_iter()
            .collect()
    } else {
        output::sinks_with_aws(&args.sinks, &args.aws.options(), &args.opts, Draw::AtEnd)?
    };
    if !args.dry_run && !sinks.iter().any(|s| s.is_destination()) {
        anyhow::bail!(
            "forward needs a backend: --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT), --zipkin-endpoint or --output; --dry-run shows what would be sent"
        );
    }
    let aws = args.aws.options();
    let mut store = match Store::open(location, &aws, !args.dry_run, lock_ttl).await {
        Ok(s) => s,
        Err(e @ CheckpointError::Locked { .. }) => {
            eprintln!(
                "spanline: {}; this run does nothing",
                spanline::convert::printable::Visible(&e.to_string())
            );
            return Ok(Exit::Locked);
        }
        Err(e) => return Err(e.into()),
    };
    let cp = store.load(&aws).await?;
    let scopes = super::scopes::scopes(&args.aws, &args.scopes, args.groups.max_tps).await?;
    let region = super::scopes::single_region(&scopes);
    let mut options = args.opts.options(region, Mode::Resumable)?;
    options.give_up_after = give_up;
    options.batch_spans = args.batch_spans.max(1);
    let sampling = options.sampling.is_some();
    if sampling {
        options.kept_traces = cp.kept_trace_ids();
    }
    let query = Query {
        log_stream_name_prefix: args.groups.log_stream_name_prefix.clone(),
        start_ms: None,
        end_ms: Some(now),
        filter_pattern: args.groups.pattern(args.opts.logs_on()),
    };
    let mut ranges = super::scopes::ranges(&scopes, &sel, &query).await?;
    if ranges.is_empty() {
        anyhow::bail!("no log group matches the selection");
    }
    // A group without state is read whole from --start-time: a sweep. Groups are keyed in the
    // checkpoint by name, or by account/region/name when several accounts or Regions are read.
    let plans: Vec<ReadPlan> = ranges
        .iter()
        .map(|r| {
            cp.groups
                .get(r.key())
                .map_or(ReadPlan::first(first_start), |s| {
                    s.plan(now, lateness, sweep_every)
                })
        })
        .collect();
    for (r, plan) in ranges.iter_mut().zip(&plans) {
        r.query.start_ms = Some(plan.from_ms);
    }
    let sweeps: Vec<String> = ranges
        .iter()
        .zip(&plans)
        .filter(|(_, p)| p.sweep)
        .map(|(r, _)| r.key().to_owned())
        .collect();
    // Groups one after another, inside one request budget per account and Region.
    // Events that come close to the lateness, or past it, are said before they are lost.
    // Those ingested before the cursor were measured by the previous run (but for the ones
    // under an invocation held back, measured twice); a sweep measures what came in since the
    // last sweep, which no head met.
    let watched = ranges
        .iter()
        .zip(&plans)
        .map(|(r, plan)| {
            let ingested_after_ms = cp
                .groups
                .get(r.key())
                .map_or(i64::MIN, |s| match s.swept_ms {
                    Some(swept) if plan.sweep => swept.min(s.cursor_ms),
                    _ => s.cursor_ms,
                });
            let check = LateCheck {
                window_ms: lateness,
                flag: "--lateness",
                ingested_after_ms,
            };
            (r.clone(), Some(check))
        })
        .collect();
    let per_scope = super::scopes::groups_per_scope(&scopes, &ranges);
    let first = &scopes[0].reader;
    let source = FilterSource::start_watching(
        first.client.clone(),
        first.budget.clone(),
        first.progress.clone(),
        watched,
        1,
    );
    let failed_groups = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let observer = {
        let failed_groups = Arc::clone(&failed_groups);
        let mut print = output::observer();
        Box::new(move |e: &pipeline::RunEvent<'_>| {
            if matches!(e, pipeline::RunEvent::InputFailed(_)) {
                failed_groups.fetch_add(1, Ordering::Relaxed);
            }
            print(e);
        }) as pipeline::Observer
    };
    let what = format!("{} log groups", ranges.len());
    let keys: Vec<String> = ranges.iter().map(|r| r.key().to_owned()).collect();
    // A dry run records nothing: its store keeps nothing (and holds no lock), so the run
    // shows what would be forwarded.
    let (report, cp, forwarded, store) = if args.dry_run {
        let committer = Forwarding::new(NoSave, cp, now, lateness)
            .sweeping(sweeps)
            .sampling(sampling)
            .input_keys(keys);
        let (report, c) = pipeline::run_committing(
            source,
            sinks,
            committer,
            options,
            Some(super::ctrl_c()),
            Some(observer),
        )
        .await;
        (report, c.checkpoint().clone(), c.forwarded.clone(), None)
    } else {
        let committer = Forwarding::new(store, cp, now, lateness)
            .sweeping(sweeps)
            .sampling(sampling)
            .input_keys(keys);
        let (report, c) =
            pipeline::run_committing(source, sinks, committer, options, None, Some(observer)).await;
        let (cp, forwarded) = (c.checkpoint().clone(), c.forwarded.clone());
        (report, cp, forwarded, Some(c.into_store()))
    };
    for line in super::scopes::summary(&scopes, &per_scope) {
        eprintln!("spanline: {line}");
    }
    let code = output::finish(&report, &what, args.opts.strict);
    let code = if failed_groups.load(Ordering::Relaxed) > 0 && code == Exit::Ok {
        Exit::Error
    } else {
        code
    };
    let outcome = match (&report.outcome, args.dry_run, code) {
        (_, true, _) => "dry run",
        (Outcome::SinkFailed { .. }, _, _) => "backend failed",
        (_, false, Exit::Ok) => "done",
        _ => "incomplete",
    };
    let facts = RunFacts {
        groups: &ranges,
        plans: &plans,
        failed_groups: failed_groups.load(Ordering::Relaxed),
        scopes: &scopes,
        cp: &cp,
        forwarded: &forwarded,
        dry_run: args.dry_run,
    };
    let line = stats_line(outcome, code, &report, &facts);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    eprintln!(
        "spanline forward: {outcome}: {} log groups ({} failed), {} records, {} spans {}, {} already forwarded, {} held for the next run, {} malformed",
        ranges.len(),
        failed_groups.load(Ordering::Relaxed),
        report.summary.records,
        line["spans_forwarded"].as_u64().unwrap_or(0).max(line["spans_would_forward"].as_u64().unwrap_or(0)),
        if args.dry_run { "would be forwarded" } else { "forwarded" },
        report.already_accepted,
        report.held_at_end,
        report.summary.malformed_total(),
    );
    if let Some(store) = store {
        store.unlock().await?;
    }
    Ok(code)
}
