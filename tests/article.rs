//! The article's story end to end (issue 6): the Express app and the two functions run under
//! the local Lambda harness (`node examples/article/run-story.js`), their captured output is put
//! into the real moto server with the real SDK client (the container's stdout into an ECS-like
//! group, each function's into its `/aws/lambda/<name>` group), the real `spanline read` binary
//! reads the groups back and sends the trace to the real MLflow, and the trace MLflow stores must
//! be exactly the story's tree:
//!
//! ```text
//! router
//! └─ service-egress ×3
//!    └─ <ot-lambda invocation>            (first one: cold start, with its init span)
//!       ├─ init
//!       └─ lambda-execution
//!          └─ lambda-egress
//!             └─ <ot-lambda-py invocation> (first one: cold start, with its init span)
//!                ├─ init
//!                └─ python-execution
//! ```
//!
//! 21 spans: one call succeeds, one fails (the Python function answers 500, the Node function
//! throws), one times out in the Node function before it prints its span.
//!
//! Needs node with `examples/article/node_modules` (`npm ci` there; tests/run.sh does it before
//! `cargo test`), python3, and moto and MLflow (`SPANLINE_TEST_MOTO`, `SPANLINE_TEST_MLFLOW`):
//! without them the test fails, never skips. Log groups and the trace are fresh on every run.

use crate::support::{fresh_id, mlflow_trace, run_spanline, scratch, service};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Node function's timeout in the story (seconds): short, so the test is quick, and long
/// enough for the downstream call it makes before hanging.
const TIMEOUT_SECONDS: u32 = 2;
/// The story's spans: router, 3 × (service-egress, invocation, lambda-execution, lambda-egress,
/// invocation, python-execution), and the two init spans of the cold starts.
const SPANS: usize = 21;
/// Lambda's platform lines (START, END, REPORT) and every log event's timestamp have millisecond
/// precision while span lines have microseconds, so a span built from platform lines (an
/// invocation, an init) may be off by up to 1 ms against the spans around it: the tolerance of
/// every "within its parent" check. (The converter widens an invocation to cover its own spans,
/// src/convert/assemble/invocation.rs, so the tolerance matters against the caller's span.)
const MS_NS: u64 = 1_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let config = rt().block_on(
        spanline::convert::aws::config_loader()
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "testing", "testing", None, None, "static",
            ))
            .load(),
    );
    aws_sdk_cloudwatchlogs::Client::new(&config)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the story into `out`; returns run-story's stdout.
fn run_story(out: &Path) -> String {
    let article = repo().join("examples/article");
    assert!(
        article.join("node_modules/opentracing").is_dir(),
        "examples/article/node_modules is missing: run `npm ci` in examples/article \
         (tests/run.sh does it before cargo test)"
    );
    let output = Command::new("node")
        .arg("run-story.js")
        .args(["--out".as_ref(), out.as_os_str()])
        .args(["--count", "3", "--timeout", &TIMEOUT_SECONDS.to_string()])
        .current_dir(&article)
        .output()
        .unwrap_or_else(|e| panic!("running node (is Node >= 20 installed?): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "run-story.js: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// One captured log stream (a subscription payload written by run-story.js).
struct Stream {
    group: String,
    stream: String,
    /// (timestamp ms, message), chronological.
    events: Vec<(i64, String)>,
}

fn read_payload(path: &Path) -> Stream {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut events: Vec<(i64, String)> = v["logEvents"]
        .as_array()
        .expect("logEvents")
        .iter()
        .map(|e| {
            (
                e["timestamp"].as_i64().expect("timestamp"),
                e["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect();
    events.sort_by_key(|e| e.0); // stable: same-millisecond events keep their order
    Stream {
        group: v["logGroup"].as_str().expect("logGroup").to_owned(),
        stream: v["logStream"].as_str().expect("logStream").to_owned(),
        events,
    }
}

/// Creates the group and stream and puts the events in valid PutLogEvents batches:
/// chronological, at most 10,000 events and 1,048,576 bytes (message bytes + 26 per event).
fn upload(client: &aws_sdk_cloudwatchlogs::Client, group: &str, s: &Stream) {
    rt().block_on(async {
        match client.create_log_group().log_group_name(group).send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) => {}
            Err(e) => panic!("CreateLogGroup {group}: {e:?}"),
        }
        client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(&s.stream)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateLogStream {group} {}: {e:?}", s.stream));
        let mut batches: Vec<Vec<InputLogEvent>> = vec![Vec::new()];
        let mut bytes = 0;
        for (ts, message) in &s.events {
            let size = message.len() + 26;
            let full =
                batches.last().is_some_and(|b| b.len() == 10_000) || bytes + size > 1_048_576;
            if full {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches.last_mut().expect("a batch").push(
                InputLogEvent::builder()
                    .timestamp(*ts)
                    .message(message)
                    .build()
                    .expect("event"),
            );
        }
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(&s.stream)
                .set_log_events(Some(batch))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutLogEvents {group}: {e:?}"));
        }
    });
}

/// A span as MLflow returns it.
#[derive(Clone, Debug)]
struct S {
    id: String,
    parent: Option<String>,
    name: String,
    start: u64,
    end: u64,
    error: Option<String>,
    attrs: BTreeMap<String, Value>,
    events: Vec<(String, BTreeMap<String, Value>)>,
}

fn b64hex(v: &Value) -> Option<String> {
    let s = v.as_str().filter(|s| !s.is_empty())?;
    let b = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64 id");
    Some(crate::support::hex(&b))
}

fn kv(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let v = a["value"]
                .as_object()
                .and_then(|o| o.values().next().cloned())
                .unwrap_or(Value::Null);
            (a["key"].as_str().unwrap_or("").to_owned(), v)
        })
        .collect()
}

fn nanos(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .expect("a time in ns")
}

fn mlflow_spans(trace: &Value) -> Vec<S> {
    trace["trace"]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| S {
            id: b64hex(&s["span_id"]).expect("span id"),
            parent: b64hex(&s["parent_span_id"]),
            name: s["name"].as_str().unwrap_or("").to_owned(),
            start: nanos(&s["start_time_unix_nano"]),
            end: nanos(&s["end_time_unix_nano"]),
            error: (s["status"]["code"].as_str() == Some("STATUS_CODE_ERROR"))
                .then(|| s["status"]["message"].as_str().unwrap_or("").to_owned()),
            attrs: kv(&s["attributes"]),
            events: s["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap_or("").to_owned(),
                        kv(&e["attributes"]),
                    )
                })
                .collect(),
        })
        .collect()
}

/// (trace id, service.name) of every span in the `--output` file, by span id.
fn file_spans(path: &Path) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("OTLP JSON line");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let id = s["spanId"].as_str().unwrap_or("").to_owned();
                    let trace = s["traceId"].as_str().unwrap_or("").to_owned();
                    assert!(
                        out.insert(id.clone(), (trace, service.clone())).is_none(),
                        "span {id} written twice"
                    );
                }
            }
        }
    }
    out
}

/// The one child of `parent` named `name` (and nothing else beside the names in `also`).
fn only_child<'a>(
    children: &HashMap<String, Vec<&'a S>>,
    parent: &S,
    name: &str,
    also: &[&str],
) -> &'a S {
    let kids = children.get(&parent.id).cloned().unwrap_or_default();
    let mut names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = also.iter().copied().chain([name]).collect();
    want.sort_unstable();
    assert_eq!(names, want, "children of {} {}", parent.name, parent.id);
    kids.into_iter()
        .find(|s| s.name == name)
        .expect("the child")
}

fn has_exception(s: &S, message: &str) {
    assert!(
        s.events.iter().any(|(n, a)| n == "exception"
            && a.get("exception.message").and_then(Value::as_str) == Some(message)),
        "{} has no exception event {message:?}: {:?}",
        s.name,
        s.events
    );
}

#[test]
fn the_story_lands_in_mlflow_as_one_exact_tree() {
    // Fail, not skip, without the services.
    let moto = service("SPANLINE_TEST_MOTO");
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let run = fresh_id::<4>();
    let dir = scratch("article");
    let story = dir.join("story");
    let said = run_story(&story);
    assert!(said.contains("GET /ot-gen -> 200"), "{said}");

    // The captured streams, put into fresh groups of this run: `/ecs/<run>/express-app` (service
    // express-app, the group's last segment) and `/aws/lambda/<fn>-<run>` (mapped back to the
    // service `<fn>` with --service).
    let client = logs_client(&moto);
    let mut groups = Vec::new();
    let mut service_rules = Vec::new();
    let mut functions = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&story)
        .expect("story dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in &files {
        let s = read_payload(f);
        let group = if let Some(function) = s.group.strip_prefix("/aws/lambda/") {
            let g = format!("/aws/lambda/{function}-{run}");
            service_rules.push(format!("{g}={function}"));
            functions.insert(function.to_owned(), format!("{function}-{run}"));
            g
        } else {
            let last = s.group.rsplit('/').next().expect("segment");
            format!("/ecs/spanline-it-{run}/{last}")
        };
        upload(&client, &group, &s);
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    assert_eq!(groups.len(), 3, "{groups:?}");
    let inv_node = functions
        .get("ot-lambda")
        .expect("ot-lambda's group")
        .clone();
    let inv_py = functions
        .get("ot-lambda-py")
        .expect("ot-lambda-py's group")
        .clone();

    // The real CLI over the three groups, into MLflow and a file.
    let out = dir.join("spans.jsonl");
    let mut args: Vec<String> = vec!["read".into()];
    for g in &groups {
        args.extend(["--log-group-name".into(), g.clone()]);
    }
    for r in &service_rules {
        args.extend(["--service".into(), r.clone()]);
    }
    args.extend([
        "--start-time".into(),
        "1h".into(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
        "--otlp-endpoint".into(),
        mlflow.clone(),
        "--otlp-header".into(),
        "x-mlflow-experiment-id=0".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = [
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    let read = run_spanline(&dir, &args, &env);
    assert!(read.status.success(), "{}\n{}", read.status, read.stderr);
    for want in [
        "3 log groups",
        "21 spans (6 invocations)",
        " 0 duplicates",
        " 0 malformed",
        "21 spans accepted, 0 rejected",
    ] {
        assert!(
            read.stderr.contains(want),
            "{want:?} not in:\n{}",
            read.stderr
        );
    }

    // One trace; every span's service from its log group.
    let written = file_spans(&out);
    assert_eq!(written.len(), SPANS, "{written:?}");
    let traces: BTreeSet<&str> = written.values().map(|(t, _)| t.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace: {traces:?}");
    let trace = traces.into_iter().next().expect("trace").to_owned();
    let service_of = |s: &S| written.get(&s.id).map_or("", |(_, n)| n.as_str());

    let got = mlflow_trace(&trace, SPANS, Duration::from_secs(20));
    let spans = mlflow_spans(&got);
    assert_eq!(spans.len(), SPANS, "spans in MLflow: {spans:#?}");
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), SPANS, "span ids are unique");
    let mut children: HashMap<String, Vec<&S>> = HashMap::new();
    for s in &spans {
        if let Some(p) = &s.parent {
            assert!(ids.contains(p.as_str()), "{} has no parent {p}", s.name);
            children.entry(p.clone()).or_default().push(s);
        }
    }
    let roots: Vec<&S> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    let router = roots[0];
    assert_eq!(router.name, "router");
    assert_eq!(router.error, None);
    assert_eq!(router.attrs.get("calls.failed"), Some(&Value::from(2)));

    // Every child within its parent (1 ms for the millisecond platform lines).
    for s in &spans {
        assert!(s.start <= s.end, "{} ends before it starts", s.name);
        if let Some(p) = spans.iter().find(|p| Some(&p.id) == s.parent.as_ref()) {
            assert!(
                s.start + MS_NS >= p.start && s.end <= p.end + MS_NS,
                "{} [{}, {}] is not within its parent {} [{}, {}]",
                s.name,
                s.start,
                s.end,
                p.name,
                p.start,
                p.end
            );
        }
    }

    // router → 3 × service-egress, told apart by the status the gateway answered.
    let egress = children.get(&router.id).cloned().unwrap_or_default();
    assert_eq!(
        egress.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["service-egress"; 3]
    );
    let by_status = |code: i64| -> &S {
        let hits: Vec<&&S> = egress
            .iter()
            .filter(|s| s.attrs.get("http.status_code") == Some(&Value::from(code)))
            .collect();
        assert_eq!(hits.len(), 1, "service-egress with {code}: {egress:#?}");
        hits[0]
    };
    let (ok, failed, timed_out) = (by_status(200), by_status(502), by_status(504));

    // Each call: the invocation of ot-lambda → lambda-execution → lambda-egress → the
    // invocation of ot-lambda-py → python-execution; the cold starts have init spans.
    struct Call<'a> {
        egress: &'a S,
        node_inv: &'a S,
        exec: &'a S,
        lambda_egress: &'a S,
        py_inv: &'a S,
        py_exec: &'a S,
    }
    let mut cold = BTreeMap::new();
    let mut calls = Vec::new();
    for e in [ok, failed, timed_out] {
        let node_inv = only_child(&children, e, &inv_node, &[]);
        let node_cold = node_inv.attrs.get("faas.coldstart") == Some(&Value::Bool(true));
        let exec = only_child(
            &children,
            node_inv,
            "lambda-execution",
            if node_cold { &["init"] } else { &[] },
        );
        let lambda_egress = only_child(&children, exec, "lambda-egress", &[]);
        let py_inv = only_child(&children, lambda_egress, &inv_py, &[]);
        let py_cold = py_inv.attrs.get("faas.coldstart") == Some(&Value::Bool(true));
        let py_exec = only_child(
            &children,
            py_inv,
            "python-execution",
            if py_cold { &["init"] } else { &[] },
        );
        assert!(
            !children.contains_key(&py_exec.id),
            "python-execution is a leaf"
        );
        for (inv, execution) in [(node_inv, exec), (py_inv, py_exec)] {
            assert!(
                inv.attrs
                    .get("faas.coldstart")
                    .is_some_and(Value::is_boolean),
                "{} has faas.coldstart",
                inv.name
            );
            assert!(inv.attrs.contains_key("faas.invocation_id"), "{inv:?}");
            if let Some(init) = children
                .get(&inv.id)
                .and_then(|k| k.iter().find(|s| s.name == "init"))
            {
                assert_eq!(
                    init.attrs.get("faas.coldstart"),
                    Some(&Value::Bool(true)),
                    "{init:?}"
                );
                assert!(
                    init.end <= execution.start + MS_NS,
                    "init ends before {} starts",
                    execution.name
                );
                assert!(!children.contains_key(&init.id), "init is a leaf");
            }
        }
        cold.entry("node")
            .or_insert_with(Vec::new)
            .push((node_inv.start, node_cold));
        cold.entry("py")
            .or_insert_with(Vec::new)
            .push((py_inv.start, py_cold));
        // Services from the log groups: the container's and each function's.
        assert_eq!(service_of(e), "express-app", "{}", e.name);
        for s in [node_inv, exec, lambda_egress] {
            assert_eq!(service_of(s), "ot-lambda", "{}", s.name);
        }
        for s in [py_inv, py_exec] {
            assert_eq!(service_of(s), "ot-lambda-py", "{}", s.name);
        }
        calls.push(Call {
            egress: e,
            node_inv,
            exec,
            lambda_egress,
            py_inv,
            py_exec,
        });
    }
    assert_eq!(service_of(router), "express-app");
    // The cold start is the first invocation of each function, and only that one.
    for (function, mut starts) in cold {
        starts.sort();
        let flags: Vec<bool> = starts.iter().map(|(_, c)| *c).collect();
        assert_eq!(flags, [true, false, false], "cold starts of {function}");
    }

    // The successful call: no error anywhere.
    let c = &calls[0];
    for s in [
        c.egress,
        c.node_inv,
        c.exec,
        c.lambda_egress,
        c.py_inv,
        c.py_exec,
    ] {
        assert_eq!(s.error, None, "{s:?}");
    }
    assert!(
        c.exec.events.iter().any(|(n, _)| n == "done"),
        "{:?}",
        c.exec
    );

    // The failed call: the Python function's error, propagated up as errors with exception
    // events (the 500 it answered, the Node function's throw, the gateway's 502).
    let c = &calls[1];
    assert_eq!(c.py_exec.error.as_deref(), Some("item not found"));
    has_exception(c.py_exec, "item not found");
    assert_eq!(
        c.py_inv.error, None,
        "the Python invocation itself succeeded"
    );
    assert_eq!(
        c.lambda_egress.error.as_deref(),
        Some("upstream returned 500")
    );
    assert_eq!(c.exec.error.as_deref(), Some("upstream returned 500"));
    has_exception(c.exec, "upstream returned 500");
    // The Node handler threw: the runtime's `Invoke Error` line makes its invocation an error.
    assert_eq!(
        c.node_inv.error.as_deref(),
        Some("Error: upstream returned 500"),
        "the Node invocation whose handler threw"
    );
    assert_eq!(c.egress.error.as_deref(), Some("Internal Server Error"));
    has_exception(c.egress, "Internal Server Error");

    // The timed-out call: the function never printed lambda-execution's span line, only the open
    // record it announced; the invocation and the announced span are errors, the Python call
    // it made before hanging is fine.
    let c = &calls[2];
    let timeout = format!("Task timed out after {TIMEOUT_SECONDS}.00 seconds");
    assert_eq!(c.node_inv.error.as_deref(), Some(timeout.as_str()));
    assert_eq!(
        c.exec.error.as_deref(),
        Some(format!("did not finish: {timeout}").as_str())
    );
    assert!(!c.exec.events.iter().any(|(n, _)| n == "done"));
    let lasted = c.node_inv.end - c.node_inv.start;
    assert!(
        lasted + MS_NS >= u64::from(TIMEOUT_SECONDS) * 1_000_000_000,
        "the timed-out invocation lasted {lasted} ns"
    );
    assert_eq!(
        c.egress.error.as_deref(),
        Some("Endpoint request timed out")
    );
    assert_eq!(c.lambda_egress.error, None);
    assert_eq!(c.py_exec.error, None);
    // In the captured stream, lambda-execution's only span line for that request is the open
    // record (flag `u`) it wrote when it started.
    let req = c.node_inv.attrs["faas.invocation_id"]
        .as_str()
        .expect("request id");
    let stream = read_payload(&story.join("ot-lambda.json"));
    let lines: Vec<&str> = stream
        .events
        .iter()
        .filter_map(|(_, m)| m.find("SPLN1 ").map(|i| &m[i..]))
        .filter(|l| l.contains(&format!("*r={req}")) && l.contains(" lambda-execution "))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let flags = lines[0].split(' ').nth(3).expect("duration and flags");
    assert!(flags.ends_with('u'), "{lines:?}");
}
