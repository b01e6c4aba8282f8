//! The `spanline convert` command on the fixtures, compared with golden outputs.
//! Regenerate the goldens with `SPANLINE_BLESS=1 cargo test --test main convert`.

use std::path::Path;
use std::process::Command;

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(name);
    if std::env::var_os("SPANLINE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with SPANLINE_BLESS=1 to create it)",
            path.display()
        )
    });
    similar_asserts::assert_eq!(expected, actual, "golden {name}");
}

fn convert(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_spanline"))
        .arg("convert")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn sample_waterfall_matches_golden() {
    let (stdout, stderr, code) = convert(&["fixtures/sample", "--color", "never"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("25 records, 9 span lines, 11 platform lines, 11 spans (3 invocations)"),
        "{stderr}"
    );
    golden("sample.txt", &stdout);
}

#[test]
fn converting_twice_gives_the_same_ids() {
    let a = convert(&["fixtures/sample", "--color", "never"]).0;
    let b = convert(&["fixtures/sample", "--color", "never"]).0;
    assert_eq!(a, b);
}

#[test]
fn malformed_lines_are_counted_and_strict_fails() {
    let dir = tempdir();
    std::fs::write(
        dir.join("stdout.log"),
        "SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1000 5 ok;\nSPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupA\nSPLN9 x;\nhello\n",
    )
    .unwrap();
    let p = dir.join("stdout.log");
    let (_, stderr, code) = convert(&[p.to_str().unwrap(), "--color", "never"]);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("2 malformed (truncated: 1, unsupported_version: 1)"),
        "{stderr}"
    );
    let (_, _, code) = convert(&[p.to_str().unwrap(), "--strict"]);
    assert_eq!(code, 3);
    let (_, stderr, code) = convert(&["/nonexistent/path"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/path"), "{stderr}");
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "spanline-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[test]
fn json_log_format_matches_golden() {
    let (stdout, stderr, code) = convert(&["fixtures/lambda/json", "--color", "never"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("10 platform lines, 9 spans (3 invocations)"),
        "{stderr}"
    );
    golden("lambda-json.txt", &stdout);
}

/// Issue "Traces worth keeping", item 3: with `--logs events` the function's other lines go on
/// the span active when they were written (a Python traceback on the client span that failed,
/// a JSON-format warning on the handler), the waterfall draws the error and warning lines under
/// their span, and a line after the REPORT is counted outside an invocation.
#[test]
fn invocation_logs_are_drawn_under_their_span_and_counted() {
    let args = [
        "fixtures/lambda/logs",
        "--log-group-name",
        "/aws/lambda/checkout",
        "--color",
        "never",
    ];
    let mut with_logs = args.to_vec();
    with_logs.extend(["--logs", "events"]);
    let (stdout, stderr, code) = convert(&with_logs);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("5 other lines, 0 malformed; 4 log lines on spans, 1 outside an invocation"),
        "{stderr}"
    );
    golden("lambda-logs.txt", &stdout);
    // Off (the default): counted as other lines, drawn nowhere.
    let (stdout, stderr, code) = convert(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("! "), "{stdout}");
    assert!(stderr.ends_with("5 other lines, 0 malformed\n"), "{stderr}");
    // As span events in OTLP, with the message and level.
    let mut to_json = with_logs.clone();
    to_json.extend(["--output", "-"]);
    let (stdout, _, code) = convert(&to_json);
    assert_eq!(code, 0);
    let mut events = Vec::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for s in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                for e in s["events"].as_array().into_iter().flatten() {
                    let attr = |k: &str| {
                        e["attributes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|a| a["key"] == k)
                            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_owned())
                    };
                    if e["name"] == "log" {
                        events.push((
                            s["name"].as_str().unwrap().to_owned(),
                            attr("level").unwrap_or_default(),
                            attr("message").unwrap_or_default(),
                        ));
                    }
                }
            }
        }
    }
    events.sort();
    assert_eq!(events.len(), 4, "{events:?}");
    let on = |span: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e.0 == span)
            .map(|e| e.1.as_str())
            .collect()
    };
    assert_eq!(on("POST /orders"), ["INFO", "WARN"]);
    assert_eq!(on("charge-card"), ["ERROR", "WARNING"]);
    let traceback = events.iter().find(|e| e.1 == "ERROR").unwrap();
    assert_eq!(traceback.0, "charge-card");
    assert!(
        traceback.2.contains("TimeoutError: provider"),
        "{traceback:?}"
    );
    assert!(events.iter().any(|e| e.2 == "charging order 42"));
}

/// (name, span id, parent span id) of the spans of an OTLP JSON lines text.
fn span_tree(otlp_json: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for line in otlp_json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for s in rs["scopeSpans"][0]["spans"].as_array().unwrap() {
                out.push((
                    s["name"].as_str().unwrap().to_owned(),
                    s["spanId"].as_str().unwrap().to_owned(),
                    s["parentSpanId"].as_str().map(str::to_owned),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Issue "AWS-native", item 2: records of `aws/spans` (an API Gateway span, and a copy of the
/// function's handler span) merge with the function's span lines and platform lines into one
/// trace: the API Gateway span is the root and the invocation span its child, the handler's
/// two copies are one span, in either order of the inputs.
#[test]
fn aws_spans_records_merge_with_span_lines_into_one_trace() {
    let spans_first = [
        "fixtures/aws-spans/aws-spans.json",
        "fixtures/aws-spans/orders.json",
    ];
    let lines_first = [
        "fixtures/aws-spans/orders.json",
        "fixtures/aws-spans/aws-spans.json",
    ];
    for (i, inputs) in [spans_first, lines_first].iter().enumerate() {
        let mut args = inputs.to_vec();
        args.extend(["--output", "-"]);
        let (stdout, stderr, code) = convert(&args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stderr.contains("4 spans (1 invocations), 1 duplicates"),
            "{stderr}"
        );
        let tree = span_tree(&stdout);
        let find = |name: &str| {
            tree.iter()
                .find(|s| s.0 == name)
                .unwrap_or_else(|| panic!("{name}: {tree:?}"))
        };
        let apigw = find("POST /orders");
        assert_eq!(apigw.2, None, "the API Gateway span is the root");
        let invocation = find("orders");
        assert_eq!(invocation.2.as_deref(), Some(apigw.1.as_str()), "{tree:?}");
        let handler = find("handle-order");
        let db = find("dynamodb.put");
        assert_eq!(db.2.as_deref(), Some(handler.1.as_str()));
        // Span lines read first: the handler under the invocation span; the aws/spans copy
        // read first keeps its own parent, the API Gateway span.
        let handler_parent = if i == 1 { &invocation.1 } else { &apigw.1 };
        assert_eq!(
            handler.2.as_deref(),
            Some(handler_parent.as_str()),
            "{tree:?}"
        );
        assert!(stdout.contains("5759e988bd862e3fe1be46a994272793"));
    }
    let mut args = lines_first.to_vec();
    args.extend(["--color", "never"]);
    let (stdout, _, _) = convert(&args);
    golden("aws-spans.txt", &stdout);
}

#[test]
fn export_tree_with_crash_and_interleaving_matches_golden() {
    let (stdout, stderr, code) = convert(&[
        "fixtures/lambda/export",
        "--log-group-name",
        "/aws/lambda/batcher",
        "--color",
        "never",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The aws-logs-write-test object is skipped: two files, four invocations.
    assert!(stderr.contains("2 files:"), "{stderr}");
    assert!(stderr.contains("(4 invocations)"), "{stderr}");
    assert!(stdout.contains("out of memory"), "{stdout}");
    golden("lambda-export.txt", &stdout);
}

/// `convert -` reads standard input (gzip or plain, any supported shape) exactly as a file.
#[test]
fn standard_input_converts_like_the_file() {
    let file = "fixtures/lambda/export/7e1f6a2b-task/2026-11-23-[$LATEST]eeee5555ffff6666aaaa7777bbbb8888/000000.gz";
    let args = ["--color", "never", "--log-group-name", "/aws/lambda/batch"];
    let from_file = convert(&[&[file][..], &args[..]].concat());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_spanline"))
        .args(["convert", "-"])
        .args(args)
        .current_dir(root)
        .stdin(std::fs::File::open(root.join(file)).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(from_file.0.contains("process-batch"), "{}", from_file.0);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), from_file.0);
    assert!(stderr.contains("0 malformed"), "{stderr}");
}

#[test]
fn output_to_dev_null_succeeds_with_the_summary() {
    // `fsync` of /dev/null fails with EINVAL; that made the run exit 4 without a summary.
    let (stdout, stderr, code) = convert(&["fixtures/sample", "--output", "/dev/null"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("11 spans"), "{stderr}");
}

#[test]
fn cleartext_headers_to_a_remote_host_are_refused() {
    let (stdout, stderr, code) = convert(&[
        "fixtures/sample",
        "--otlp-endpoint",
        "http://collector.example:4318",
        "--otlp-header",
        "x-api-key=k3y-v4lue-secret",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("--allow-insecure") && stderr.contains("x-api-key"),
        "{stderr}"
    );
    assert!(!stderr.contains("k3y-v4lue-secret"), "{stderr}");
}

/// The resource attribute `key` of every span in an OTLP JSON lines file.
fn resource_values(path: &Path, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            let n = rs["scopeSpans"][0]["spans"].as_array().map_or(0, Vec::len);
            let value = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key)
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_owned();
            out.extend(std::iter::repeat_n(value, n));
        }
    }
    out
}

/// Issue "One streaming pipeline", tree (b): a local CreateExportTask tree names each stream by
/// its whole path under the task id (`2026/11/23/[$LATEST]…`), as `convert s3://` does, not by
/// its last segment.
#[test]
fn a_local_export_tree_names_streams_by_their_whole_path_under_the_task_id() {
    let dir = crate::support::scratch("export-tree");
    let task = "0f3a1b2c-4d5e-6f70-8192-a3b4c5d6e7f8";
    let stream = "2026/11/23/[$LATEST]eeee5555ffff6666aaaa7777bbbb8888";
    let leaf = dir.join("exports").join(task).join(stream);
    std::fs::create_dir_all(&leaf).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "fixtures/lambda/export/7e1f6a2b-task/2026-11-23-[$LATEST]eeee5555ffff6666aaaa7777bbbb8888/000000.gz",
        ),
        leaf.join("000000.gz"),
    )
    .unwrap();
    let out = dir.join("spans.jsonl");
    let (_, stderr, code) = convert(&[
        dir.join("exports").to_str().unwrap(),
        "--log-group-name",
        "/aws/lambda/batcher",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let streams = resource_values(&out, "aws.log.stream.names");
    assert!(!streams.is_empty());
    assert!(streams.iter().all(|s| s == stream), "{streams:?}");
}

/// A bad input (a truncated `.gz` among good ones) is reported with its name and reason; the
/// inputs after it are still converted, the summary is printed and the exit code is 1.
#[test]
fn a_truncated_gzip_among_good_inputs_is_reported_and_the_rest_converted() {
    let dir = crate::support::scratch("bad-input");
    let fixture = |stream: &str| {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "fixtures/lambda/export/7e1f6a2b-task/2026-11-23-[$LATEST]{stream}/000000.gz"
        )))
        .unwrap()
    };
    let (one, other) = (
        fixture("eeee5555ffff6666aaaa7777bbbb8888"),
        fixture("aaaa1111bbbb2222cccc3333dddd4444"),
    );
    let tree = dir.join("tree");
    for (name, bytes) in [
        ("a/000000.gz", &one[..]),
        ("b/000000.gz", &other[..other.len() / 2]),
        ("c/000000.gz", &other[..]),
    ] {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let out = dir.join("spans.jsonl");
    let (_, stderr, code) = convert(&[
        tree.to_str().unwrap(),
        "--log-group-name",
        "/aws/lambda/batcher",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("b/000000.gz") && stderr.contains("cannot read"),
        "the bad input is named with its reason: {stderr}"
    );
    assert!(
        stderr.contains("2 files:"),
        "two inputs read whole: {stderr}"
    );
    // The spans of the third input made it: `c` is its own stream.
    let streams = resource_values(&out, "aws.log.stream.names");
    assert!(streams.iter().any(|s| s == "c"), "{streams:?}");
    assert!(streams.iter().any(|s| s == "a"), "{streams:?}");
}
