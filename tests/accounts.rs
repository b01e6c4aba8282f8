//! Issue 13, item 3: many accounts and Regions, against moto's CloudWatch Logs and STS.
//! `--role-arn` is assumed with STS AssumeRole (moto hands out credentials of the role's
//! account, so each role sees only its account's log groups), `--region` is repeated, and
//! every account and Region has a request budget and counters of its own.

use crate::cloudwatch::{
    aws_env, create_group, file_span_ids, now_ms, put_events, rt, span_line, Put,
};
use crate::support::{fresh_id, run_spanline, scratch, service, Run};
use serde_json::Value;
use std::path::Path;

const OWN: &str = "123456789012";
const OTHER: &str = "222222222222";
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/spanline-reader")
}

/// A CloudWatch Logs client of `account` in `region`: the role assumed through moto's STS.
fn client_of(moto: &str, account: &str, region: &'static str) -> aws_sdk_cloudwatchlogs::Client {
    rt().block_on(async {
        let base = spanline::convert::aws::config_loader()
            .endpoint_url(moto)
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "testing", "testing", None, None, "static",
            ))
            .load()
            .await;
        let provider = aws_config::sts::AssumeRoleProvider::builder(role(account))
            .session_name("spanline-test")
            .configure(&base)
            .build()
            .await;
        let sdk = base
            .into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
        aws_sdk_cloudwatchlogs::Client::new(&sdk)
    })
}

/// Creates `group` in `client`'s account and Region with two span lines of fresh ids; returns
/// their span ids.
fn group_with_spans(client: &aws_sdk_cloudwatchlogs::Client, group: &str) -> Vec<String> {
    let stream = format!("2026/12/03/[$LATEST]{}", fresh_id::<16>());
    create_group(client, group, &[&stream]);
    let t = now_ms() - 120_000;
    let mut ids = Vec::new();
    let mut puts = Vec::new();
    for i in 0..2 {
        let (trace, span) = (fresh_id::<16>(), fresh_id::<8>());
        let parent = fresh_id::<8>();
        puts.push(Put {
            stream: stream.clone(),
            ts: t + i,
            message: span_line(&trace, &span, &parent, t + i, 1_000, "s", "handler"),
        });
        ids.push(span);
    }
    put_events(client, group, &puts);
    ids
}

fn run(dir: &Path, args: &[&str]) -> Run {
    let moto = service("SPANLINE_TEST_MOTO");
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_spanline(dir, args, &env)
}

/// The accounts and Regions flags: both roles, both Regions.
fn scope_args() -> Vec<String> {
    let mut a = Vec::new();
    for acct in [OWN, OTHER] {
        a.extend(["--role-arn".to_owned(), role(acct)]);
    }
    for r in REGIONS {
        a.extend(["--region".to_owned(), r.to_owned()]);
    }
    a
}

/// Runs the binary with `args` followed by the flags of both accounts and both Regions.
fn run_scoped(dir: &Path, args: &[&str]) -> Run {
    let scopes = scope_args();
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(scopes.iter().map(String::as_str))
        .collect();
    run(dir, &all)
}

/// One group name in two accounts × two Regions (four groups), and a group in one of them
/// only: `read` sends every span of each once, and counts requests per account and Region.
#[test]
fn read_reads_each_accounts_and_regions_groups_once_within_their_own_budgets() {
    let moto = service("SPANLINE_TEST_MOTO");
    let group = format!("/aws/lambda/acct-{}", fresh_id::<4>());
    let only = format!("/aws/lambda/only-{}", fresh_id::<4>());
    let mut want: Vec<String> = Vec::new();
    for acct in [OWN, OTHER] {
        for region in REGIONS {
            want.extend(group_with_spans(&client_of(&moto, acct, region), &group));
        }
    }
    want.extend(group_with_spans(
        &client_of(&moto, OTHER, "eu-west-1"),
        &only,
    ));
    let dir = scratch("accounts-read");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "read",
        "--log-group-name",
        &group,
        "--log-group-name",
        &only,
        "--start-time",
        "1h",
        "--output",
        &out_arg,
    ];
    let r = run_scoped(&dir, &args);
    assert!(r.status.success(), "{}\n{}", r.status, r.stderr);
    let ids = file_span_ids(&out);
    let mut got: Vec<&String> = ids.keys().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "{}", r.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    // One line per account and Region, each with its own requests.
    for acct in [OWN, OTHER] {
        for region in REGIONS {
            let groups = if acct == OTHER && region == "eu-west-1" {
                2
            } else {
                1
            };
            let prefix = format!("spanline: {acct}/{region}: {groups} log groups, ");
            let line = r
                .stderr
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?}:\n{}", r.stderr));
            let requests: u64 = line[prefix.len()..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("requests");
            // DescribeLogGroups for each name, and FilterLogEvents for each group found.
            assert!(requests >= 2 + groups, "{line}");
        }
    }
    assert!(r.stderr.contains("5 log groups"), "{}", r.stderr);
}

#[test]
fn a_group_in_none_of_the_accounts_and_regions_is_an_error() {
    let dir = scratch("accounts-missing");
    let missing = format!("/aws/lambda/none-{}", fresh_id::<4>());
    let args = ["read", "--log-group-name", &missing, "--output", "-"];
    let r = run_scoped(&dir, &args);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("is in none of the 4 accounts and Regions read"),
        "{}",
        r.stderr
    );
    // Commands that read one Region say so.
    let r = run(
        &dir,
        &[
            "export",
            "--log-group-name",
            &missing,
            "--start-time",
            "1h",
            "--destination",
            "s3://nowhere/x",
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
        ],
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("export reads one Region"), "{}", r.stderr);
}

/// `forward` keys each group by account and Region in its checkpoint: the same group name in
/// four places keeps four cursors, and a second run forwards nothing again.
#[test]
fn forward_keeps_a_cursor_per_account_and_region() {
    let moto = service("SPANLINE_TEST_MOTO");
    let group = format!("/aws/lambda/acct-fwd-{}", fresh_id::<4>());
    let mut want = 0;
    for acct in [OWN, OTHER] {
        for region in REGIONS {
            want += group_with_spans(&client_of(&moto, acct, region), &group).len();
        }
    }
    let dir = scratch("accounts-forward");
    let checkpoint = dir.join("checkpoint.json").to_string_lossy().into_owned();
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "forward",
        "--log-group-name",
        &group,
        "--checkpoint",
        &checkpoint,
        "--start-time",
        "1h",
        "--output",
        &out_arg,
    ];
    let first = run_scoped(&dir, &args);
    assert!(first.status.success(), "{}", first.stderr);
    let stats: Value =
        serde_json::from_str(first.stdout.lines().last().unwrap_or("")).expect("stats");
    assert_eq!(stats["spans_forwarded"], want as u64, "{stats}");
    let keys: Vec<String> = stats["groups"]
        .as_object()
        .expect("groups")
        .keys()
        .cloned()
        .collect();
    let mut expected: Vec<String> = [OWN, OTHER]
        .iter()
        .flat_map(|a| {
            let group = &group;
            REGIONS.iter().map(move |r| format!("{a}/{r}/{group}"))
        })
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    let scopes = stats["scopes"].as_object().expect("scopes");
    assert_eq!(scopes.len(), 4, "{stats}");
    assert!(
        scopes.values().all(|s| s["requests"].as_u64() >= Some(2)),
        "{stats}"
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).expect("checkpoint"))
            .expect("checkpoint JSON");
    for k in &expected {
        assert!(saved["groups"][k]["cursor_ms"].is_i64(), "{k}: {saved}");
    }
    let second = run_scoped(&dir, &args);
    assert!(second.status.success(), "{}", second.stderr);
    let stats: Value =
        serde_json::from_str(second.stdout.lines().last().unwrap_or("")).expect("stats");
    assert_eq!(stats["spans_forwarded"], 0, "{stats}");
    let ids = file_span_ids(&out);
    assert_eq!(ids.len(), want);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
}

/// A log group given by ARN (another account's, as cross-account observability shares them)
/// is read with FilterLogEvents' `logGroupIdentifier` (moto ignores that field, so a scripted
/// endpoint checks the request); its spans carry the group's name.
#[test]
fn a_log_group_arn_is_read_by_identifier_and_its_spans_carry_the_name() {
    use crate::cloudwatch::scripted;
    let name = format!("/aws/lambda/shared-{}", fresh_id::<4>());
    let arn = format!("arn:aws:logs:us-east-1:{OTHER}:log-group:{name}");
    let (trace, span) = (fresh_id::<16>(), fresh_id::<8>());
    let t = now_ms() - 60_000;
    let line = span_line(&trace, &span, &fresh_id::<8>(), t, 1_000, "s", "handler");
    let page = serde_json::json!({"events": [{
        "logStreamName": "2026/12/03/[$LATEST]abc", "timestamp": t, "ingestionTime": t + 5,
        "message": line, "eventId": format!("{:056}", 1),
    }]});
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (url, server) = runtime.block_on(scripted(vec![(200, page.to_string())]));
    let dir = scratch("accounts-arn");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let env = aws_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = run_spanline(
        &dir,
        &[
            "read",
            "--log-group-name",
            &arn,
            "--start-time",
            "1h",
            "--output",
            &out_arg,
        ],
        &env,
    );
    assert!(r.status.success(), "{}\n{}", r.status, r.stderr);
    let seen = runtime.block_on(server).expect("server");
    assert_eq!(seen.len(), 1);
    let (target, req) = &seen[0];
    assert_eq!(target, "Logs_20140328.FilterLogEvents");
    assert_eq!(req["logGroupIdentifier"], arn.as_str());
    assert!(req.get("logGroupName").is_none(), "{req}");
    let text = std::fs::read_to_string(&out).expect("output");
    assert!(text.contains(&span), "{text}");
    assert!(
        text.contains(&format!("\"stringValue\":\"{name}\"")),
        "the spans carry the group's name: {text}"
    );
}

/// `tail --poll` follows each account's groups with a source and a budget of its own, merged
/// into one run: every span of both accounts once, a line per account.
#[test]
fn tail_poll_follows_two_accounts_at_once() {
    use crate::support::{poll, spawn_spanline, wait_spanline};
    use std::time::Duration;
    let moto = service("SPANLINE_TEST_MOTO");
    let group = format!("/aws/lambda/acct-tail-{}", fresh_id::<4>());
    let mut want: Vec<String> = Vec::new();
    for acct in [OWN, OTHER] {
        want.extend(group_with_spans(
            &client_of(&moto, acct, "us-east-1"),
            &group,
        ));
    }
    let dir = scratch("accounts-tail");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let (own, other) = (role(OWN), role(OTHER));
    let args = [
        "tail",
        "--poll",
        "--interval",
        "300ms",
        "--start-time",
        "10m",
        "--log-group-name",
        &group,
        "--role-arn",
        &own,
        "--role-arn",
        &other,
        "--region",
        "us-east-1",
        "--output",
        &out_arg,
    ];
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = spawn_spanline(&dir, &args, &env);
    poll(Duration::from_secs(60), || {
        (file_span_ids(&out).len() >= want.len()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{:?} of {want:?}\n{}",
            file_span_ids(&out),
            std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
        )
    });
    // SAFETY: signalling our own child by its id.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let r = wait_spanline(&dir, child, Duration::from_secs(30));
    assert!(r.status.success(), "{}\n{}", r.status, r.stderr);
    let ids = file_span_ids(&out);
    let mut got: Vec<&String> = ids.keys().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "{}", r.stderr);
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    for acct in [OWN, OTHER] {
        let prefix = format!("spanline: {acct}/us-east-1: 1 log groups, ");
        assert!(
            r.stderr.lines().any(|l| l.starts_with(&prefix)),
            "{prefix}\n{}",
            r.stderr
        );
    }
}
