//! `read`, `tail` and `export`: log groups through FilterLogEvents, Live Tail or an export into
//! the pipeline.

use super::output::{self, Draw, SinkArgs};
use super::{ctrl_c, ConvertOpts, Exit};
use anyhow::Context as _;
use spanline::convert::aws::AwsOptions;
use spanline::convert::pipeline::{self, Mode, NoCommit};
use spanline::convert::source::cloudwatch::budget::Budget;
use spanline::convert::source::cloudwatch::filter::{
    FilterSource, GroupSelection, Progress, Query, DEFAULT_FILTER_PATTERN,
};
use spanline::convert::source::cloudwatch::tail::{Poll, PollSource};
use spanline::convert::source::merge::Merge;
use spanline::convert::time::{now_ms, parse_duration_ms, parse_time};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// AWS configuration as every AWS tool takes it; unset flags fall back to the standard
/// environment and shared config files, credentials to the default chain.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AwsArgs {
    /// A named profile of ~/.aws/config (default: AWS_PROFILE, else `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// AWS Region (default: AWS_REGION, the profile's region); also recorded as
    /// `cloud.region` on invocation spans. `read`, `tail` and `forward` take it more than
    /// once: each Region is read (with each --role-arn).
    #[arg(long, env = "AWS_REGION", value_name = "REGION")]
    pub region: Vec<String>,
    /// Endpoint URL for every AWS call, e.g. a local emulator (default: AWS_ENDPOINT_URL and
    /// the service-specific AWS_ENDPOINT_URL_* variables).
    #[arg(long = "endpoint-url", value_name = "URL")]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    /// The options the library takes (the first Region).
    pub fn options(&self) -> AwsOptions {
        AwsOptions {
            profile: self.profile.clone(),
            region: self.first_region(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    /// The first --region, if any.
    pub fn first_region(&self) -> Option<String> {
        self.region.first().map(|r| r.trim().to_owned())
    }

    /// Refuses more than one --region for a command that reads one Region (`what`).
    pub fn one_region(&self, what: &str) -> anyhow::Result<()> {
        if self.region.len() > 1 {
            anyhow::bail!(
                "{what} reads one Region: give --region once (read, tail and forward take several)"
            );
        }
        Ok(())
    }
}

/// Which log groups and streams (shared by `read` and `tail`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GroupArgs {
    /// A log group (repeatable).
    #[arg(long = "log-group-name", value_name = "NAME")]
    log_group_name: Vec<String>,
    /// Every log group whose name starts with this.
    #[arg(long = "log-group-name-prefix", value_name = "PREFIX")]
    log_group_name_prefix: Option<String>,
    /// Every log group whose name contains this (case-insensitive).
    #[arg(long = "log-group-pattern", value_name = "TEXT")]
    log_group_pattern: Option<String>,
    /// A file naming log groups, one per line (`#` starts a comment).
    #[arg(long = "log-groups-from", value_name = "FILE")]
    log_groups_from: Option<PathBuf>,
    /// Only log streams whose name starts with this.
    #[arg(long = "log-stream-name-prefix", value_name = "PREFIX")]
    pub(super) log_stream_name_prefix: Option<String>,
    /// The FilterLogEvents filter pattern. The default selects span lines and Lambda platform
    /// lines in every log format (with `--logs events`: every line).
    #[arg(long = "filter-pattern")]
    pub(super) filter_pattern: Option<String>,
    /// Requests per second for the whole run, all groups together (FilterLogEvents allows 5
    /// per account and Region; leave room for other readers).
    #[arg(long = "max-tps", default_value_t = 5.0, value_name = "N")]
    pub(super) max_tps: f64,
    /// Log groups read at the same time.
    #[arg(long, default_value_t = 4, value_name = "N")]
    parallel: usize,
}

impl GroupArgs {
    /// The filter pattern: the one given, else the default for what `logs` needs (the
    /// function's own lines too when they go on the spans).
    pub(super) fn pattern(&self, logs: bool) -> String {
        match &self.filter_pattern {
            Some(p) => p.clone(),
            None if logs => String::new(),
            None => DEFAULT_FILTER_PATTERN.to_owned(),
        }
    }

    pub(super) fn selection(&self) -> anyhow::Result<GroupSelection> {
        let mut names = self.log_group_name.clone();
        if let Some(f) = &self.log_groups_from {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--log-groups-from {}", f.display()))?;
            names.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        let sel = GroupSelection {
            names,
            prefix: self.log_group_name_prefix.clone(),
            pattern: self.log_group_pattern.clone(),
        };
        if sel.names.is_empty() && sel.prefix.is_none() && sel.pattern.is_none() {
            anyhow::bail!(
                "no log group: give --log-group-name, --log-group-name-prefix, --log-group-pattern or --log-groups-from"
            );
        }
        if self.max_tps.is_nan() || self.max_tps <= 0.0 {
            anyhow::bail!("--max-tps {}: expected a positive number", self.max_tps);
        }
        Ok(sel)
    }
}

/// `spanline read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    groups: GroupArgs,
    /// From this time: RFC 3339, epoch milliseconds, or a duration before now (`2h`, `30m`,
    /// `45s`, `1d`). Default: the beginning.
    #[arg(long = "start-time", value_name = "TIME")]
    start_time: Option<String>,
    /// Up to this time (same forms). Default: now.
    #[arg(long = "end-time", value_name = "TIME")]
    end_time: Option<String>,
    #[command(flatten)]
    opts: ConvertOpts,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    scopes: super::scopes::ScopeArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// `spanline tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Poll with FilterLogEvents instead of Live Tail: every event, nothing sampled, late
    /// events picked up, at the cost of requests (5 TPS per account) and latency.
    #[arg(long)]
    poll: bool,
    /// Live Tail: how long events already shown are remembered, so that a new session
    /// replaying them does not show them twice.
    #[arg(long = "dedup-window", default_value = "15m", value_name = "DURATION")]
    dedup_window: String,
    #[command(flatten)]
    groups: GroupArgs,
    /// `--poll`: start here (same forms as `read`). Default: one overlap window before now.
    #[arg(long = "start-time", value_name = "TIME", requires = "poll")]
    start_time: Option<String>,
    /// `--poll`: time between polls (`5s`, `1m`, `500ms`).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    interval: String,
    /// `--poll`: how long after its timestamp an event may be ingested and still be
    /// delivered (once: seen events are dropped by id); events near it are warned about.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    overlap: String,
    /// An invocation whose REPORT line has not come after this long (a crash, or a
    /// `--filter-pattern` that selects only span lines) is shown with what is known.
    #[arg(long = "give-up-after", default_value = "20m", value_name = "DURATION")]
    give_up_after: String,
    #[command(flatten)]
    opts: ConvertOpts,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    scopes: super::scopes::ScopeArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

pub(super) fn time_arg(flag: &str, v: &Option<String>, now: i64) -> anyhow::Result<Option<i64>> {
    v.as_deref()
        .map(|t| parse_time(t, now).with_context(|| format!("--{flag}")))
        .transpose()
}

pub(super) fn duration_arg(flag: &str, v: &str) -> anyhow::Result<Duration> {
    let ms = parse_duration_ms(v.trim())
        .filter(|ms| *ms >= 0)
        .with_context(|| format!("--{flag} {v:?}: expected a duration such as 5s, 2m, 500ms"))?;
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// Prints progress on stderr every 250 ms while it lives, when stderr is a terminal.
struct Ticker(Option<tokio::task::JoinHandle<()>>);

impl Ticker {
    fn start(
        progress: Vec<Arc<Progress>>,
        groups: usize,
        done: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Self {
        if !std::io::stderr().is_terminal() {
            return Ticker(None);
        }
        Ticker(Some(tokio::spawn(async move {
            loop {
                let sum = |f: fn(&Progress) -> u64| progress.iter().map(|p| f(p)).sum::<u64>();
                eprint!(
                    "\rspanline: {}/{groups} log groups, {} events, {} requests, {} throttled ",
                    done.load(Ordering::Relaxed),
                    sum(|p| p.events.load(Ordering::Relaxed)),
                    sum(|p| p.requests.load(Ordering::Relaxed)),
                    sum(|p| p.throttled.load(Ordering::Relaxed)),
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

/// The loaded AWS configuration, its region (the flag or environment, else the profile's), and
/// a CloudWatch Logs client.
pub(super) async fn aws_setup(
    aws: &AwsArgs,
) -> (
    aws_config::SdkConfig,
    Option<String>,
    aws_sdk_cloudwatchlogs::Client,
) {
    let sdk = aws.options().load().await;
    let region = aws
        .first_region()
        .or_else(|| sdk.region().map(|r| r.to_string()));
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    (sdk, region, client)
}

/// `spanline read`: every selected group over the time range, streamed page by page, then the
/// summary.
pub async fn read(args: ReadArgs) -> anyhow::Result<Exit> {
    let sel = args.groups.selection()?;
    let now = now_ms();
    let query = Query {
        log_stream_name_prefix: args.groups.log_stream_name_prefix.clone(),
        start_ms: time_arg("start-time", &args.start_time, now)?,
        end_ms: time_arg("end-time", &args.end_time, now)?,
        filter_pattern: args.groups.pattern(args.opts.logs_on()),
    };
    let sinks = output::sinks_with_aws(&args.sinks, &args.aws.options(), &args.opts, Draw::AtEnd)?;
    let scopes = super::scopes::scopes(&args.aws, &args.scopes, args.groups.max_tps).await?;
    let region = super::scopes::single_region(&scopes);
    let options = args.opts.options(region, Mode::Batch)?;
    let ranges = super::scopes::ranges(&scopes, &sel, &query).await?;
    if ranges.is_empty() {
        anyhow::bail!("no log group matches the selection");
    }
    let total = ranges.len();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress: Vec<Arc<Progress>> = scopes.iter().map(|s| s.reader.progress.clone()).collect();
    let ticker = Ticker::start(progress, total, done);
    // Every range carries its scope's reader; the source's own is the first scope's.
    let first = &scopes[0].reader;
    let per_scope = super::scopes::groups_per_scope(&scopes, &ranges);
    let source = FilterSource::start(
        first.client.clone(),
        first.budget.clone(),
        first.progress.clone(),
        ranges,
        args.groups.parallel,
    );
    let report = pipeline::run(
        source,
        sinks,
        NoCommit,
        options,
        Some(ctrl_c()),
        Some(output::observer()),
    )
    .await;
    drop(ticker);
    let (requests, throttled, empty) = super::scopes::total(&scopes);
    for line in super::scopes::summary(&scopes, &per_scope) {
        eprintln!("spanline: {line}");
    }
    let what = format!(
        "{total} log groups, {requests} requests ({throttled} throttled, {empty} empty pages)"
    );
    Ok(output::finish(&report, &what, args.opts.strict))
}

/// `spanline tail`: Live Tail, or polling with `--poll`, until Ctrl-C, then flushes and exits 0.
pub async fn tail(args: TailArgs) -> anyhow::Result<Exit> {
    let sel = args.groups.selection()?;
    let give_up = duration_arg("give-up-after", &args.give_up_after)?;
    let sinks = output::sinks_with_aws(
        &args.sinks,
        &args.aws.options(),
        &args.opts,
        Draw::Following,
    )?;
    let scopes = super::scopes::scopes(&args.aws, &args.scopes, args.groups.max_tps).await?;
    let region = super::scopes::single_region(&scopes);
    let mut options = args.opts.options(region, Mode::Follow)?;
    options.give_up_after = give_up;
    // Batches as they come: a person is watching.
    options.batch_spans = 1000;
    let query = Query {
        log_stream_name_prefix: args.groups.log_stream_name_prefix.clone(),
        start_ms: None,
        end_ms: None,
        filter_pattern: args.groups.pattern(args.opts.logs_on()),
    };
    let ranges = super::scopes::ranges(&scopes, &sel, &query).await?;
    if ranges.is_empty() {
        anyhow::bail!("no log group matches the selection");
    }
    let what = format!("{} log groups", ranges.len());
    let per_scope = super::scopes::groups_per_scope(&scopes, &ranges);
    // Each account and Region is followed by a source of its own, with its own budget.
    let by_scope: Vec<(&super::scopes::Scoped, Vec<String>)> = scopes
        .iter()
        .zip(super::scopes::groups_by_scope(&scopes, &ranges))
        .filter(|(_, groups)| !groups.is_empty())
        .collect();
    let report = if args.poll {
        let interval = duration_arg("interval", &args.interval)?;
        let overlap = duration_arg("overlap", &args.overlap)?;
        let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let start = time_arg("start-time", &args.start_time, now)?.unwrap_or(now - overlap_ms);
        let sources = by_scope
            .into_iter()
            .map(|(s, groups)| {
                let poll = Poll {
                    groups,
                    query: query.clone(),
                    start_ms: start,
                    overlap_ms,
                    interval,
                };
                let r = &s.reader;
                PollSource::start(r.client.clone(), r.budget.clone(), r.progress.clone(), poll)
            })
            .collect();
        let report = pipeline::run(
            Merge::new(sources),
            sinks,
            NoCommit,
            options,
            Some(ctrl_c()),
            Some(output::observer()),
        )
        .await;
        // What the schedule costs: each event is returned by a few reads, once delivered.
        let returned: u64 = scopes
            .iter()
            .map(|s| s.reader.progress.events.load(Ordering::Relaxed))
            .sum();
        let per_record = returned as f64 / report.summary.records.max(1) as f64;
        for line in super::scopes::summary(&scopes, &per_scope) {
            eprintln!("spanline: {line}");
        }
        let what = format!(
            "{what}, {} requests, {returned} events returned ({per_record:.2} per record)",
            super::scopes::total(&scopes).0
        );
        return Ok(output::finish(&report, &what, args.opts.strict));
    } else {
        use spanline::convert::source::cloudwatch::live::{
            live_tail_client, resolve_arns, LiveQuery, LiveSource, Policy, SdkConnector,
        };
        let dedup_window = duration_arg("dedup-window", &args.dedup_window)?;
        let prefix = args.groups.log_stream_name_prefix.clone();
        if prefix.is_some() && ranges.len() > 1 {
            anyhow::bail!(
                "--log-stream-name-prefix: Live Tail takes a stream prefix for a single log group only ({} selected); use --poll",
                ranges.len()
            );
        }
        let filter_pattern = Some(query.filter_pattern.clone()).filter(|p| !p.trim().is_empty());
        let policy = Policy {
            dedup_window,
            ..Policy::default()
        };
        let mut sources = Vec::new();
        for (s, names) in by_scope {
            let r = &s.reader;
            let groups = resolve_arns(&r.client, &r.budget, &r.progress, &names).await?;
            let connector = SdkConnector::new(
                live_tail_client(&s.sdk),
                LiveQuery {
                    log_stream_name_prefix: prefix.clone(),
                    filter_pattern: filter_pattern.clone(),
                },
            );
            sources.push(LiveSource::start(connector, groups, policy.clone()));
        }
        pipeline::run(
            Merge::new(sources),
            sinks,
            NoCommit,
            options,
            Some(ctrl_c()),
            Some(output::observer()),
        )
        .await
    };
    Ok(output::finish(&report, &what, args.opts.strict))
}

/// `spanline export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The log group to export (CreateExportTask takes one).
    #[arg(long = "log-group-name", value_name = "NAME")]
    log_group_name: String,
    /// Only log streams whose name starts with this.
    #[arg(long = "log-stream-name-prefix", value_name = "PREFIX")]
    log_stream_name_prefix: Option<String>,
    /// From this time: RFC 3339, epoch milliseconds, or a duration before now (`2h`, `1d`).
    #[arg(long = "start-time", value_name = "TIME")]
    start_time: String,
    /// Up to this time (same forms). Default: now.
    #[arg(long = "end-time", value_name = "TIME")]
    end_time: Option<String>,
    /// Where the service writes the export: `s3://bucket/prefix` (the bucket policy must let
    /// CloudWatch Logs write there). The files are then read from `<prefix>/<taskId>/`.
    #[arg(long, value_name = "S3_URL")]
    destination: String,
    /// How long to wait for the task to complete (it keeps running after that).
    #[arg(long = "wait-timeout", default_value = "1h", value_name = "DURATION")]
    wait_timeout: String,
    #[command(flatten)]
    opts: ConvertOpts,
    #[command(flatten)]
    aws: AwsArgs,
    #[command(flatten)]
    sinks: SinkArgs,
}

/// `spanline export`: CreateExportTask, wait for it, then convert the files it wrote.
pub async fn export(args: ExportArgs) -> anyhow::Result<Exit> {
    use spanline::convert::source::cloudwatch::export::{
        start, task_prefix, wait, ExportRequest, Wait,
    };
    use spanline::convert::source::s3::{self, S3Source};
    let now = now_ms();
    let from_ms = parse_time(&args.start_time, now).context("--start-time")?;
    let to_ms = time_arg("end-time", &args.end_time, now)?.unwrap_or(now);
    if from_ms > to_ms {
        anyhow::bail!("--start-time is after --end-time");
    }
    let timeout = duration_arg("wait-timeout", &args.wait_timeout)?;
    let (bucket, prefix) = s3::parse_url(&args.destination).context("--destination")?;
    let prefix = prefix.trim_end_matches('/').to_owned();
    // The "folder", so that `exports` does not also list `exports-old/…`.
    let folder = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let limits = args.opts.limits()?;
    let sinks = output::sinks_with_aws(&args.sinks, &args.aws.options(), &args.opts, Draw::AtEnd)?;
    args.aws.one_region("export")?;
    let (_, region, client) = aws_setup(&args.aws).await;
    let options = args.opts.options(region, Mode::Batch)?;
    let s3_client = args.aws.options().s3_client().await;
    // Whether the destination held exports before: if it did not, everything under it after
    // the task is this task's.
    let before = s3::list_objects(&s3_client, &bucket, &folder).await?;
    // A handful of calls: the default budget of `read`.
    let budget = Budget::per_second(5.0);
    let progress = Progress::default();
    let req = ExportRequest {
        log_group: args.log_group_name.clone(),
        log_stream_name_prefix: args.log_stream_name_prefix.clone(),
        from_ms,
        to_ms,
        bucket: bucket.clone(),
        prefix: prefix.clone(),
    };
    let task_id = start(&client, &budget, &progress, &req).await?;
    eprintln!(
        "spanline: export task {task_id} started ({})",
        spanline::convert::printable::Visible(&args.log_group_name)
    );
    let policy = Wait {
        timeout,
        ..Wait::default()
    };
    wait(
        &client,
        &budget,
        &progress,
        &args.log_group_name,
        &task_id,
        &policy,
    )
    .await?;
    let mut read_prefix = task_prefix(&prefix, &task_id);
    if s3::list_objects(&s3_client, &bucket, &read_prefix)
        .await?
        .is_empty()
        && before.is_empty()
    {
        // Emulators (moto) do not put the task id in the keys; the prefix was empty before,
        // so what is there now is this task's.
        read_prefix = folder;
    }
    let source = S3Source::start(
        s3_client,
        vec![format!("s3://{bucket}/{read_prefix}")],
        args.log_group_name.clone(),
        limits,
        0,
    );
    let report = pipeline::run(
        source,
        sinks,
        NoCommit,
        options,
        Some(ctrl_c()),
        Some(output::observer()),
    )
    .await;
    let what = format!("{} files of export task {task_id}", report.inputs_read);
    Ok(output::finish(&report, &what, args.opts.strict))
}
