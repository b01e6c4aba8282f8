//! CloudWatch sources end to end: realistic Lambda logs put into the real moto server with the
//! real SDK client, read back by the real CLI (`read`, `tail` in both modes, `convert s3://…`, `export`) and sent
//! to the real MLflow; every span must arrive exactly once. A scripted in-process endpoint
//! speaking the CloudWatch Logs JSON protocol injects what moto cannot: throttling and empty pages
//! that carry a `nextToken`.
//!
//! moto and MLflow are required (`SPANLINE_TEST_MOTO`, `SPANLINE_TEST_MLFLOW`): without them
//! these tests fail, never skip. Each test uses its own log group names and ids, so tests can
//! run in parallel against one moto.

use crate::support::{
    fresh_id, mlflow_trace, run_spanline, scratch, service, spawn_spanline, unhex, wait_spanline,
};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_in(endpoint, "us-east-1")
}

fn sdk_config_in(endpoint: &str, region: &'static str) -> aws_config::SdkConfig {
    rt().block_on(
        spanline::convert::aws::config_loader()
            .endpoint_url(endpoint)
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "testing", "testing", None, None, "static",
            ))
            .load(),
    )
}

pub(crate) fn logs_client() -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&sdk_config(&service("SPANLINE_TEST_MOTO")))
}

pub(crate) fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `2024-05-01T12:00:00.123Z` for a time in ms.
pub(crate) fn iso(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Creates `group` and its `streams`.
pub(crate) fn create_group(client: &aws_sdk_cloudwatchlogs::Client, group: &str, streams: &[&str]) {
    rt().block_on(async {
        client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
            .expect("CreateLogGroup");
        for s in streams {
            client
                .create_log_stream()
                .log_group_name(group)
                .log_stream_name(*s)
                .send()
                .await
                .expect("CreateLogStream");
        }
    });
}

/// Puts `puts` into `group` stream by stream (chronological within a call, as PutLogEvents
/// requires).
pub(crate) fn put_events(client: &aws_sdk_cloudwatchlogs::Client, group: &str, puts: &[Put]) {
    let mut by_stream: BTreeMap<&str, Vec<&Put>> = BTreeMap::new();
    for p in puts {
        by_stream.entry(&p.stream).or_default().push(p);
    }
    rt().block_on(async {
        for (stream, mut events) in by_stream {
            events.sort_by_key(|p| p.ts);
            let events: Vec<InputLogEvent> = events
                .iter()
                .map(|p| {
                    InputLogEvent::builder()
                        .timestamp(p.ts)
                        .message(&p.message)
                        .build()
                        .expect("event")
                })
                .collect();
            client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(events))
                .send()
                .await
                .expect("PutLogEvents");
        }
    });
}

/// An S3 client for moto (path-style addressing: `bucket.127.0.0.1` does not resolve).
pub(crate) fn s3_client() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk_config(&service("SPANLINE_TEST_MOTO")))
            .force_path_style(true)
            .build(),
    )
}

/// A new, empty bucket in moto.
pub(crate) fn fresh_bucket(s3: &aws_sdk_s3::Client) -> String {
    let bucket = format!("spanline-it-{}", fresh_id::<4>());
    rt().block_on(s3.create_bucket().bucket(&bucket).send())
        .expect("CreateBucket");
    bucket
}

/// One log event to put: stream, time, message.
#[derive(Clone, Debug)]
pub(crate) struct Put {
    pub(crate) stream: String,
    pub(crate) ts: i64,
    pub(crate) message: String,
}

/// A Lambda function's logs in the Node text format: several execution environments (streams),
/// interleaved invocations, a span line back-dated and put last (a late arrival), and two span
/// lines of one millisecond. All spans share one trace (as if one caller made every call).
struct Logs {
    group: String,
    trace: String,
    /// Span ids of the span lines.
    span_ids: Vec<String>,
    invocations: usize,
    /// In put order; the late event is the last one.
    puts: Vec<Put>,
}

pub(crate) fn span_line(
    trace: &str,
    span: &str,
    parent: &str,
    start_ms: i64,
    dur_us: i64,
    flags: &str,
    name: &str,
) -> String {
    // Each id encoded on its own: 22 + 11 + 11 characters (FORMAT.md, section 2).
    let ids: String = [trace, span, parent]
        .iter()
        .map(|id| URL_SAFE_NO_PAD.encode(unhex(id)))
        .collect();
    format!(
        "SPLN1 {ids} {} {dur_us}{flags} {name} test.case=cloudwatch;",
        start_ms * 1000
    )
}

impl Logs {
    fn new(base_ms: i64) -> Logs {
        let function = format!("spanline-it-{}", fresh_id::<4>());
        let group = format!("/aws/lambda/{function}");
        let trace = fresh_id::<16>();
        let caller = fresh_id::<8>();
        let mut puts = Vec::new();
        let mut span_ids = Vec::new();
        let mut late = None;
        let streams: Vec<String> = (0..2)
            .map(|_| format!("2024/05/01/[$LATEST]{}", fresh_id::<16>()))
            .collect();
        let invocations = 4;
        for i in 0..invocations {
            // Invocations alternate between the two environments and overlap in time.
            let stream = &streams[i % 2];
            let t0 = base_ms + (i as i64) * 40;
            let req = format!(
                "{}-{}-4{}-8{}-{}",
                fresh_id::<4>(),
                &fresh_id::<2>(),
                &fresh_id::<2>()[1..],
                &fresh_id::<2>()[1..],
                fresh_id::<6>()
            );
            let node = |ts: i64, text: &str| format!("{}\t{req}\tINFO\t{text}\n", iso(ts));
            let mut p = |ts: i64, message: String| {
                puts.push(Put {
                    stream: stream.clone(),
                    ts,
                    message,
                })
            };
            p(t0, format!("START RequestId: {req} Version: $LATEST\n"));
            let exec = fresh_id::<8>();
            let child = fresh_id::<8>();
            span_ids.push(exec.clone());
            span_ids.push(child.clone());
            // The child finishes first and is printed first.
            let child_line = span_line(&trace, &child, &exec, t0 + 2, 5_000, "c", "db-query");
            if i == 0 {
                // Printed at t0+8 but ingested after everything else.
                late = Some(Put {
                    stream: stream.clone(),
                    ts: t0 + 8,
                    message: node(t0 + 8, &child_line),
                });
            } else if i == 1 {
                // Same millisecond as the parent's line.
                p(t0 + 20, node(t0 + 20, &child_line));
            } else {
                p(t0 + 8, node(t0 + 8, &child_line));
            }
            p(t0 + 10, node(t0 + 10, "ordinary application output"));
            let exec_line = span_line(
                &trace,
                &exec,
                &caller,
                t0 + 1,
                19_000,
                "s",
                "lambda-execution",
            );
            p(t0 + 20, node(t0 + 20, &exec_line));
            p(t0 + 21, format!("END RequestId: {req}\n"));
            p(
                t0 + 21,
                format!(
                    "REPORT RequestId: {req}\tDuration: 20.00 ms\tBilled Duration: 21 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\t\n"
                ),
            );
        }
        puts.push(late.expect("late event"));
        Logs {
            group,
            trace,
            span_ids,
            invocations,
            puts,
        }
    }

    /// Every span the trace must hold: the span lines' spans plus one invocation span each.
    fn expected_spans(&self) -> usize {
        self.span_ids.len() + self.invocations
    }

    fn create(&self, client: &aws_sdk_cloudwatchlogs::Client) {
        let mut streams: Vec<&str> = self.puts.iter().map(|p| p.stream.as_str()).collect();
        streams.sort();
        streams.dedup();
        create_group(client, &self.group, &streams);
    }

    /// Puts `puts` into the group (see [`put_events`]).
    fn put(&self, client: &aws_sdk_cloudwatchlogs::Client, puts: &[Put]) {
        put_events(client, &self.group, puts);
    }

    /// MLflow holds the trace with every span exactly once.
    fn assert_in_mlflow(&self) {
        let want = self.expected_spans();
        let trace = mlflow_trace(&self.trace, want, Duration::from_secs(20));
        let spans = trace["trace"]["spans"].as_array().expect("spans");
        let ids: Vec<String> = spans
            .iter()
            .map(|s| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(s["span_id"].as_str().unwrap_or(""))
                    .expect("base64 span id");
                crate::support::hex(&b)
            })
            .collect();
        assert_eq!(ids.len(), want, "spans in MLflow: {ids:?}");
        for id in &self.span_ids {
            let n = ids.iter().filter(|x| *x == id).count();
            assert_eq!(n, 1, "span {id} arrived {n} times");
        }
        let invocations = spans
            .iter()
            .filter(|s| s["name"].as_str() == self.group.strip_prefix("/aws/lambda/"))
            .count();
        assert_eq!(invocations, self.invocations, "invocation spans");
    }
}

/// Span ids in an OTLP JSON lines file (`--output`), with how often each appears.
pub(crate) fn file_span_ids(path: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("OTLP JSON line");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    *out.entry(s["spanId"].as_str().unwrap_or("").to_owned())
                        .or_default() += 1;
                }
            }
        }
    }
    out
}

pub(crate) fn mlflow_args(mlflow: &str) -> Vec<String> {
    vec![
        "--otlp-endpoint".into(),
        mlflow.to_owned(),
        "--otlp-header".into(),
        "x-mlflow-experiment-id=0".into(),
    ]
}

#[test]
fn read_sends_every_span_of_a_log_group_exactly_once() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let client = logs_client();
    let logs = Logs::new(now_ms() - 600_000);
    logs.create(&client);
    logs.put(&client, &logs.puts);
    let dir = scratch("cw-read");
    let out = dir.join("spans.jsonl");
    let mut args: Vec<String> = vec![
        "read".into(),
        "--log-group-name".into(),
        logs.group.clone(),
        "--start-time".into(),
        "1h".into(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(mlflow_args(&mlflow));
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_spanline(&dir, &args, &env);
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    assert!(run.stderr.contains(" 0 duplicates"), "{}", run.stderr);
    assert!(run.stderr.contains(" 0 malformed"), "{}", run.stderr);
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), logs.expected_spans(), "{ids:?}\n{}", run.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    logs.assert_in_mlflow();
}

#[test]
fn read_selects_groups_by_prefix_pattern_and_file() {
    let moto = service("SPANLINE_TEST_MOTO");
    let client = logs_client();
    let a = Logs::new(now_ms() - 300_000);
    let b = Logs::new(now_ms() - 300_000);
    for l in [&a, &b] {
        l.create(&client);
        l.put(&client, &l.puts);
    }
    let dir = scratch("cw-select");
    let list = dir.join("groups.txt");
    std::fs::write(&list, format!("# groups\n{}\n\n", b.group)).unwrap();
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cases: Vec<(Vec<String>, usize)> = vec![
        (vec!["--log-group-name-prefix".into(), a.group.clone()], 1),
        (
            vec![
                "--log-group-pattern".into(),
                a.group.trim_start_matches("/aws/lambda/").to_uppercase(),
            ],
            1,
        ),
        (
            vec![
                "--log-groups-from".into(),
                list.to_string_lossy().into_owned(),
                "--log-group-name".into(),
                a.group.clone(),
            ],
            2,
        ),
    ];
    for (sel, groups) in cases {
        let out = dir.join(format!("spans-{}.jsonl", fresh_id::<4>()));
        let mut args: Vec<String> = vec!["read".into()];
        args.extend(sel.clone());
        args.extend([
            "--output".into(),
            out.to_string_lossy().into_owned(),
            "--endpoint-url".into(),
            moto.clone(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_spanline(&dir, &args, &env);
        assert!(run.status.success(), "{sel:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{groups} log groups")),
            "{sel:?}: {}",
            run.stderr
        );
        assert_eq!(
            file_span_ids(&out).len(),
            groups * a.expected_spans(),
            "{sel:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn read_without_a_log_group_is_refused_with_the_flags_to_use() {
    let dir = scratch("cw-nogroup");
    let run = run_spanline(&dir, &["read", "--output", "-"], &[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("--log-group-name"), "{}", run.stderr);
    let run = run_spanline(
        &dir,
        &["read", "--log-group-name", "g", "--start-time", "yesterday"],
        &[],
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("--start-time"), "{}", run.stderr);
}

/// Span ids in a file still being written: lines not complete yet are left for the next look.
fn file_span_ids_so_far(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            v["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
                .map(|ss| ss["spans"].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .sum()
}

#[test]
fn live_tail_follows_a_log_group_across_sessions_and_shows_each_span_once() {
    // moto answers StartLiveTail with one snapshot of the group and ends the session: every
    // reconnect replays everything, which the de-duplication must absorb. The endpoint is
    // 127.0.0.1, so this also checks that the `stream-` host prefix is dropped for it.
    //
    // moto 5.x looks a Live Tail group up by ARN in a loop without `break` and so always tails
    // the group created last in the Region: this test has a Region of its own, where the group
    // it creates is the last one.
    const REGION: &str = "eu-central-2";
    let moto = service("SPANLINE_TEST_MOTO");
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk_config_in(&moto, REGION));
    let logs = Logs::new(now_ms() - 30_000);
    logs.create(&client);
    let half = logs.puts.len() / 2;
    logs.put(&client, &logs.puts[..half]);
    let dir = scratch("cw-livetail");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let mut env = aws_env(&moto);
    env.push(("AWS_REGION", REGION.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args: Vec<String> = [
        "tail",
        "--log-group-name",
        &logs.group,
        "--output",
        &out_arg,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(mlflow_args(&service("SPANLINE_TEST_MLFLOW")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn_spanline(&dir, &args, &env);
    // The rest while it follows (the late event last), in two sessions' time at least.
    std::thread::sleep(Duration::from_millis(1500));
    logs.put(&client, &logs.puts[half..logs.puts.len() - 1]);
    std::thread::sleep(Duration::from_millis(1500));
    logs.put(&client, &logs.puts[logs.puts.len() - 1..]);
    // Complete invocations are written as soon as they are seen; the late child span may wait
    // for the flush. Generous timeout: the machine is shared.
    let want = logs.expected_spans();
    crate::support::poll(Duration::from_secs(60), || {
        (file_span_ids_so_far(&out) + 1 >= want).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} of {want} spans after 60 s\n{}",
            file_span_ids_so_far(&out),
            std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
        )
    });
    // A few more sessions replaying the same snapshot.
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: signalling our own child by its id.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let run = wait_spanline(&dir, child, Duration::from_secs(30));
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    // Every event converted once, however many sessions replayed it.
    let records = format!(" {} records,", logs.puts.len());
    assert!(run.stderr.contains(&records), "{records}\n{}", run.stderr);
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), want, "{ids:?}\n{}", run.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    for id in &logs.span_ids {
        assert_eq!(ids.get(id), Some(&1), "span {id}: {ids:?}");
    }
    logs.assert_in_mlflow();
}

#[test]
fn live_tail_of_a_missing_log_group_says_so() {
    let moto = service("SPANLINE_TEST_MOTO");
    let dir = scratch("cw-livetail-missing");
    let group = format!("/aws/lambda/spanline-missing-{}", fresh_id::<4>());
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_spanline(&dir, &["tail", "--log-group-name", &group], &env);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(&group), "{}", run.stderr);
    assert!(run.stderr.contains("no such log group"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn tail_poll_picks_up_late_and_same_millisecond_events_once_and_flushes_on_ctrl_c() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let client = logs_client();
    let logs = Logs::new(now_ms() - 30_000);
    logs.create(&client);
    // Half the events before tail starts, the rest (the late event last) while it polls.
    let half = logs.puts.len() / 2;
    logs.put(&client, &logs.puts[..half]);
    let dir = scratch("cw-tail");
    let out = dir.join("spans.jsonl");
    let mut args: Vec<String> = vec![
        "tail".into(),
        "--poll".into(),
        "--interval".into(),
        "300ms".into(),
        "--log-group-name".into(),
        logs.group.clone(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(mlflow_args(&mlflow));
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn_spanline(&dir, &args, &env);
    std::thread::sleep(Duration::from_millis(1500));
    logs.put(&client, &logs.puts[half..logs.puts.len() - 1]);
    std::thread::sleep(Duration::from_millis(1000));
    logs.put(&client, &logs.puts[logs.puts.len() - 1..]);
    // Events put now are ~30 s behind their timestamps: past the head, they come with the
    // late pass (at 1.5 times the measured lag, every sweep). The late child span may wait
    // for the flush. Generous timeout: the machine is shared.
    let want = logs.expected_spans();
    crate::support::poll(Duration::from_secs(90), || {
        (file_span_ids_so_far(&out) + 1 >= want).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} of {want} spans after 90 s\n{}",
            file_span_ids_so_far(&out),
            std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
        )
    });
    // A few more polls, whose reads overlap the earlier ones.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child by its id.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let run = wait_spanline(&dir, child, Duration::from_secs(30));
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    assert!(run.stderr.contains(" 0 duplicates"), "{}", run.stderr);
    let records = format!(" {} records,", logs.puts.len());
    assert!(run.stderr.contains(&records), "{records}\n{}", run.stderr);
    assert!(run.stderr.contains(" events returned ("), "{}", run.stderr);
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), logs.expected_spans(), "{ids:?}\n{}", run.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    logs.assert_in_mlflow();
}

#[test]
fn convert_reads_an_export_tree_from_s3() {
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let logs = Logs::new(now_ms() - 600_000);
    let s3 = s3_client();
    let bucket = fresh_bucket(&s3);
    // The real layout: <prefix>/<taskId>/<stream>/000000.gz, lines `<ISO>Z <message>` not
    // time-sorted, and the write-test object.
    let task = format!(
        "{}-{}-{}-{}-{}",
        fresh_id::<4>(),
        fresh_id::<2>(),
        fresh_id::<2>(),
        fresh_id::<2>(),
        fresh_id::<6>()
    );
    let mut by_stream: BTreeMap<&str, Vec<&Put>> = BTreeMap::new();
    for p in &logs.puts {
        by_stream.entry(&p.stream).or_default().push(p);
    }
    rt().block_on(async {
        s3.put_object()
            .bucket(&bucket)
            .key("exports/aws-logs-write-test")
            .body("Permission Check Successful".as_bytes().to_vec().into())
            .send()
            .await
            .expect("PutObject");
        for (stream, mut puts) in by_stream {
            puts.reverse(); // export files are not sorted
            let mut text = String::new();
            for p in puts {
                text.push_str(&format!("{} {}", iso(p.ts), p.message));
            }
            // Two parts per stream, as large streams get.
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            let (first, second) = lines.split_at(lines.len() / 2);
            for (n, part) in [first, second].iter().enumerate() {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(part.concat().as_bytes()).unwrap();
                s3.put_object()
                    .bucket(&bucket)
                    .key(format!("exports/{task}/{stream}/00000{n}.gz"))
                    .body(gz.finish().unwrap().into())
                    .send()
                    .await
                    .expect("PutObject");
            }
        }
    });
    let dir = scratch("cw-s3");
    let out = dir.join("spans.jsonl");
    let url = format!("s3://{bucket}/exports/");
    let mut args: Vec<String> = vec![
        "convert".into(),
        url,
        "--log-group-name".into(),
        logs.group.clone(),
        "--endpoint-url".into(),
        moto.clone(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
    ];
    args.extend(mlflow_args(&mlflow));
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_spanline(&dir, &args, &env);
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    assert!(run.stderr.contains("4 files"), "{}", run.stderr);
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), logs.expected_spans(), "{ids:?}\n{}", run.stderr);
    logs.assert_in_mlflow();
}

#[test]
fn export_runs_an_export_task_into_s3_and_converts_what_it_wrote() {
    // moto runs CreateExportTask synchronously into its own S3, with its own key layout (a
    // random id per stream instead of the task id, `/` in stream names turned into `-`): the
    // destination prefix is fresh, so `export` reads all of it.
    let moto = service("SPANLINE_TEST_MOTO");
    let client = logs_client();
    let logs = Logs::new(now_ms() - 600_000);
    logs.create(&client);
    logs.put(&client, &logs.puts);
    let bucket = fresh_bucket(&s3_client());
    let dir = scratch("cw-export");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let dest = format!("s3://{bucket}/exports");
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_spanline(
        &dir,
        &[
            "export",
            "--log-group-name",
            &logs.group,
            "--start-time",
            "1h",
            "--destination",
            &dest,
            "--output",
            &out_arg,
        ],
        &env,
    );
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    assert!(run.stderr.contains("export task"), "{}", run.stderr);
    assert!(run.stderr.contains("2 files"), "{}", run.stderr);
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), logs.expected_spans(), "{ids:?}\n{}", run.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
}

#[test]
fn export_of_a_missing_log_group_fails_with_its_name() {
    let moto = service("SPANLINE_TEST_MOTO");
    let bucket = fresh_bucket(&s3_client());
    let group = format!("/aws/lambda/spanline-missing-{}", fresh_id::<4>());
    let dir = scratch("cw-export-missing");
    let dest = format!("s3://{bucket}/exports");
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_spanline(
        &dir,
        &[
            "export",
            "--log-group-name",
            &group,
            "--start-time",
            "1h",
            "--destination",
            &dest,
        ],
        &env,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains(&group), "{}", run.stderr);
    assert!(run.stderr.contains("CreateExportTask"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// A scripted CloudWatch Logs endpoint

/// Serves `answers` in order, one per request (status, body), and records each request's
/// `X-Amz-Target` and body.
pub(crate) async fn scripted(
    answers: Vec<(u16, String)>,
) -> (String, tokio::task::JoinHandle<Vec<(String, Value)>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let (head_end, len) = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let target = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .starts_with("x-amz-target:")
                        .then(|| l[13..].trim().to_owned())
                })
                .unwrap_or_default();
            let req: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
            seen.push((target, req));
            let reason = if status == 200 { "OK" } else { "Bad Request" };
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
        }
        seen
    });
    (url, handle)
}

#[test]
fn read_retries_throttling_and_pages_past_an_empty_page_with_a_next_token() {
    let logs = Logs::new(now_ms() - 600_000);
    let events: Vec<Value> = logs
        .puts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "logStreamName": p.stream, "timestamp": p.ts, "ingestionTime": p.ts + 5,
                "message": p.message, "eventId": format!("{:056}", 1000 + i),
            })
        })
        .collect();
    let (first, second) = events.split_at(events.len() / 2);
    let answers = vec![
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        ),
        (
            200,
            r#"{"events":[],"nextToken":"t1","searchedLogStreams":[]}"#.to_owned(),
        ),
        (
            200,
            serde_json::json!({"events": first, "nextToken": "t2"}).to_string(),
        ),
        (
            503,
            r#"{"__type":"ServiceUnavailableException","message":"try again"}"#.to_owned(),
        ),
        (200, serde_json::json!({ "events": second }).to_string()),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, server) = runtime.block_on(scripted(answers));
    let dir = scratch("cw-scripted");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let env = aws_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_spanline(
        &dir,
        &[
            "read",
            "--log-group-name",
            &logs.group,
            "--start-time",
            "2024-05-01T00:00:00Z",
            "--end-time",
            "1700000000000",
            "--output",
            &out_arg,
        ],
        &env,
    );
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    let seen = runtime.block_on(server).unwrap();
    assert_eq!(seen.len(), 5);
    for (target, req) in &seen {
        assert_eq!(target, "Logs_20140328.FilterLogEvents");
        assert_eq!(req["logGroupName"], logs.group.as_str());
        assert_eq!(req["startTime"], 1_714_521_600_000i64);
        assert_eq!(req["endTime"], 1_700_000_000_000i64);
        assert!(req["filterPattern"].as_str().unwrap().contains("?SPLN"));
    }
    let tokens: Vec<Option<&str>> = seen.iter().map(|(_, r)| r["nextToken"].as_str()).collect();
    assert_eq!(tokens, [None, None, Some("t1"), Some("t2"), Some("t2")]);
    assert!(
        run.stderr
            .contains("5 requests (1 throttled, 1 empty pages)"),
        "{}",
        run.stderr
    );
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), logs.expected_spans(), "{ids:?}\n{}", run.stderr);
}
