//! End-to-end: the real `spanline` binary converts the built-in sample (fixtures/sample) and sends
//! it to real backends started by `tests/services.sh` on 127.0.0.1: MLflow over OTLP/HTTP
//! (protobuf and JSON), Arize Phoenix over OTLP/gRPC, and the rotel collector in between. Each test
//! reads the trace back through the backend's query API and compares it, span by span, with what
//! the span lines and Lambda's platform lines of the sample say.
//!
//! The services are required: without the `SPANLINE_TEST_*` variables these tests fail, they
//! never skip (`bash tests/services.sh start && source target/test-services/env`; tests/run.sh
//! does both). What each backend keeps and how to query it: shared/reference/test-services.md.
//!
//! Backends keep state between tests and between runs (and Phoenix silently ignores a span id it
//! has seen before, in any trace), so every test sends its own copy of the sample with fresh trace
//! id, span ids and Lambda request ids; the expected trace is computed from the same mapping.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{fresh_id, hex, http_get, mlflow_trace, poll, service, unhex};

// ---------------------------------------------------------------------------------------------
// Services

/// Runs `spanline convert <args>` with `env` and without the caller's own `OTEL_*` variables
/// (they must not redirect a test); fails the test on a non-zero exit or after 60 s.
fn convert(dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    let stdout = dir.join("spanline.stdout");
    let stderr = dir.join("spanline.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spanline"));
    cmd.arg("convert").args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawning the spanline binary");
    let status = poll(Duration::from_secs(60), || child.try_wait().expect("wait"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "spanline convert {args:?} {env:?} did not finish in 60 s\nstderr:\n{}",
            read(&stderr)
        );
    };
    assert!(
        status.success(),
        "spanline convert {args:?} {env:?} exited with {status}\nstdout:\n{}\nstderr:\n{}",
        read(&stdout),
        read(&stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The sample, with fresh ids

/// The ids fixtures/make_sample.py wrote into fixtures/sample.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROUTER: &str = "a1b2c3d4e5f60718";
const EGRESS: [&str; 3] = ["1111aaaa2222bbbb", "3333cccc4444dddd", "5555eeee6666ffff"];
const LAMBDA: [&str; 3] = ["0a0b0c0d0e0f1011", "1213141516171819", "2223242526272829"];
const REQUESTS: [&str; 3] = [
    "c793869b-ee49-415b-a5b6-4fd21e8dedac",
    "7a9b2c1d-1111-4e5f-8a9b-0c1d2e3f4a5b",
    "e2f3a4b5-2222-4c6d-9e8f-a0b1c2d3e4f5",
];
const LAMBDA_GROUP: &str = "/aws/lambda/ot-lambda";

fn fresh_request_id() -> String {
    let h = fresh_id::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// 64-bit FNV-1a, as `src/convert/assemble/invocation.rs` documents for derived span ids.
fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The span id the converter derives for the invocation (`kind` "invocation") or init span of
/// a Lambda request.
fn derived_span_id(kind: &str, request_id: &str) -> String {
    let h = fnv64(&format!("spanline/{kind}/{LAMBDA_GROUP}/{request_id}"));
    format!("{:016x}", if h == 0 { 1 } else { h })
}

/// A copy of fixtures/sample in a temporary directory with a fresh trace id, fresh span ids and
/// fresh Lambda request ids; removed on drop.
struct Sample {
    dir: PathBuf,
    trace: String,
    /// Sample span id → this copy's span id.
    spans: HashMap<&'static str, String>,
    requests: [String; 3],
}

impl Sample {
    fn new() -> Sample {
        let trace = fresh_id::<16>();
        let spans: HashMap<&'static str, String> = std::iter::once(ROUTER)
            .chain(EGRESS)
            .chain(LAMBDA)
            .map(|s| (s, fresh_id::<8>()))
            .collect();
        let requests = [fresh_request_id(), fresh_request_id(), fresh_request_id()];
        let dir = std::env::temp_dir().join(format!(
            "spanline-e2e-{}-{}",
            std::process::id(),
            &trace[..12]
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let sample = Sample {
            dir,
            trace,
            spans,
            requests,
        };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample");
        for name in ["express-app.json", "ot-lambda.json"] {
            let text = std::fs::read_to_string(src.join(name)).expect("fixtures/sample");
            std::fs::write(sample.input().join(name), sample.rewrite(&text)).expect("write");
        }
        sample
    }

    /// The directory to convert (the temporary directory also holds the CLI's output).
    fn input(&self) -> PathBuf {
        let d = self.dir.join("input");
        std::fs::create_dir_all(&d).expect("input directory");
        d
    }

    fn input_arg(&self) -> String {
        self.input().to_string_lossy().into_owned()
    }

    /// This copy's id for a span of the sample.
    fn span(&self, sample_id: &str) -> String {
        self.spans[sample_id].clone()
    }

    /// Rewrites the ids field (`trace ++ span [++ parent]`, base64url) after each `SPLN1 ` marker
    /// and every request id. Any id this table does not know fails the test: the sample changed.
    fn rewrite(&self, text: &str) -> String {
        let b64 = |h: &str| URL_SAFE_NO_PAD.encode(unhex(h));
        let trace_b64 = b64(TRACE);
        let span_b64: HashMap<String, String> = self
            .spans
            .iter()
            .map(|(old, new)| (b64(old), b64(new)))
            .collect();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut lines = 0;
        while let Some(at) = rest.find("SPLN1 ") {
            let (head, tail) = rest.split_at(at + "SPLN1 ".len());
            out.push_str(head);
            let end = tail
                .find(' ')
                .expect("a span line has fields after its ids");
            let ids = &tail[..end];
            assert!(
                ids.len() == 33 || ids.len() == 44,
                "unexpected ids field {ids:?} in fixtures/sample"
            );
            assert_eq!(
                &ids[..22],
                trace_b64,
                "fixtures/sample has another trace id"
            );
            out.push_str(&b64(&self.trace));
            for chunk in [&ids[22..33], ids.get(33..44).unwrap_or("")] {
                if !chunk.is_empty() {
                    let new = span_b64.get(chunk).unwrap_or_else(|| {
                        panic!("unknown span id {chunk:?} in fixtures/sample: update tests/e2e.rs")
                    });
                    out.push_str(new);
                }
            }
            rest = &tail[end..];
            lines += 1;
        }
        out.push_str(rest);
        assert!(lines > 0, "no span line found in fixtures/sample");
        for (old, new) in REQUESTS.iter().zip(&self.requests) {
            out = out.replace(old, new);
        }
        out
    }

    /// The trace the converter must produce from this copy, read from the span lines and the
    /// platform lines of fixtures/sample (times in ns since the epoch).
    fn expected(&self) -> Vec<Want> {
        // A span line's start (µs) and duration (µs) → (start, end) in ns.
        let line = |start_us: u64, dur_us: u64| (start_us * 1000, (start_us + dur_us) * 1000);
        let ms = |ms: u64| ms * 1_000_000;
        let str_ = |k: &'static str, v: &str| (k, Val::Str(v.to_owned()));
        let int = |k: &'static str, v: i64| (k, Val::Int(v));
        let float = |k: &'static str, v: f64| (k, Val::Float(v));
        let boolean = |k: &'static str, v: bool| (k, Val::Bool(v));
        let egress_attrs = || {
            vec![
                str_("http.method", "POST"),
                str_("peer.service", "lambda"),
                str_("http.url", "https://api.example.com/ot-lambda"),
            ]
        };
        let router = self.span(ROUTER);
        let egress: Vec<String> = EGRESS.iter().map(|s| self.span(s)).collect();
        let lambda: Vec<String> = LAMBDA.iter().map(|s| self.span(s)).collect();
        let inv: Vec<String> = self
            .requests
            .iter()
            .map(|r| derived_span_id("invocation", r))
            .collect();
        let init0 = derived_span_id("init", &self.requests[0]);

        vec![
            // express-app: `router` and three `service-egress` calls.
            Want::line(
                &router,
                None,
                "router",
                line(1_795_428_000_000_200, 3_519_800),
            )
            .attrs(vec![
                str_("http.method", "GET"),
                str_("http.route", "/ot-gen"),
                int("http.status_code", 200),
            ]),
            Want::line(
                &egress[0],
                Some(&router),
                "service-egress",
                line(1_795_428_000_000_400, 282_000),
            )
            .attrs(egress_attrs()),
            Want::line(
                &egress[1],
                Some(&router),
                "service-egress",
                line(1_795_428_000_000_450, 95_000),
            )
            .status("ERROR", "")
            .attrs([egress_attrs(), vec![int("http.status_code", 502)]].concat())
            .event(
                1_795_428_000_000_450 + 94_800,
                "exception",
                vec![str_("exception.message", "Internal Server Error")],
            ),
            Want::line(
                &egress[2],
                Some(&router),
                "service-egress",
                line(1_795_428_000_000_500, 3_012_000),
            )
            .status("ERROR", "Endpoint request timed out")
            .attrs([egress_attrs(), vec![int("http.status_code", 504)]].concat()),
            // ot-lambda, call 1 (cold start): the invocation starts Init Duration (130.49 ms)
            // before START (…136 ms) and lasts Duration (120.51 ms) from START; init ends at
            // START.
            Want::derived(
                &inv[0],
                Some(&egress[0]),
                "ot-lambda",
                (
                    ms(1_795_428_000_136) - 130_490_000,
                    ms(1_795_428_000_136) + 120_510_000,
                ),
            )
            .attrs(vec![
                str_("faas.invocation_id", &self.requests[0]),
                boolean("faas.coldstart", true),
                str_("faas.version", "$LATEST"),
                float("aws.lambda.duration_ms", 120.51),
                float("aws.lambda.billed_duration_ms", 121.0),
                int("faas.max_memory", 128 * 1024 * 1024),
                int("aws.lambda.max_memory_used_mb", 67),
                float("aws.lambda.init_duration_ms", 130.49),
            ]),
            Want::derived(
                &init0,
                Some(&inv[0]),
                "init",
                (ms(1_795_428_000_136) - 130_490_000, ms(1_795_428_000_136)),
            )
            .attrs(vec![boolean("faas.coldstart", true)]),
            // The function's root span is re-parented from its caller under the invocation.
            Want::line(
                &lambda[0],
                Some(&inv[0]),
                "lambda-execution",
                line(1_795_428_000_137_300, 119_000),
            )
            .attrs(vec![str_("faas.trigger", "http")])
            .event(
                1_795_428_000_137_300 + 50_000,
                "fetched item",
                vec![str_("item.id", "42")],
            ),
            // Call 2 fails; the invocation (START …020 ms, 61.20 ms) stretches to cover its span.
            Want::derived(
                &inv[1],
                Some(&egress[1]),
                "ot-lambda",
                (
                    ms(1_795_428_000_020),
                    (1_795_428_000_020_950 + 60_400) * 1000,
                ),
            )
            .attrs(vec![
                str_("faas.invocation_id", &self.requests[1]),
                boolean("faas.coldstart", false),
                float("aws.lambda.duration_ms", 61.2),
                int("aws.lambda.max_memory_used_mb", 68),
            ]),
            Want::line(
                &lambda[1],
                Some(&inv[1]),
                "lambda-execution",
                line(1_795_428_000_020_950, 60_400),
            )
            .status("ERROR", "upstream returned 500")
            .attrs(vec![str_("faas.trigger", "http")])
            .event(
                1_795_428_000_020_950 + 59_000,
                "exception",
                vec![
                    str_("exception.type", "Error"),
                    str_("exception.message", "upstream returned 500"),
                ],
            ),
            // Call 3 times out (START …005 ms, 3000 ms): its span was only announced (open
            // record), so it ends with the invocation, as an error carrying the reason.
            Want::derived(
                &inv[2],
                Some(&egress[2]),
                "ot-lambda",
                (ms(1_795_428_000_005), ms(1_795_428_000_005) + 3_000_000_000),
            )
            .status("ERROR", "Task timed out after 3.00 seconds")
            .attrs(vec![
                str_("faas.invocation_id", &self.requests[2]),
                boolean("faas.coldstart", false),
                float("aws.lambda.duration_ms", 3000.0),
                int("aws.lambda.max_memory_used_mb", 70),
            ]),
            Want::line(
                &lambda[2],
                Some(&inv[2]),
                "lambda-execution",
                (
                    1_795_428_000_005_900 * 1000,
                    ms(1_795_428_000_005) + 3_000_000_000,
                ),
            )
            .status("ERROR", "did not finish: Task timed out after 3.00 seconds"),
        ]
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Spans as a backend returns them, normalised for comparison

/// A typed attribute value.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
struct EventView {
    time_ns: u64,
    name: String,
    attributes: BTreeMap<String, Val>,
}

/// One span, in the terms every backend keeps. Times are ns (Phoenix's µs are scaled).
#[derive(Clone, Debug, PartialEq)]
struct SpanView {
    span_id: String,
    parent_span_id: Option<String>,
    name: String,
    start_ns: u64,
    end_ns: u64,
    /// `UNSET`, `OK` or `ERROR`.
    status: String,
    status_message: String,
    attributes: BTreeMap<String, Val>,
    events: Vec<EventView>,
}

/// An expected span. Spans from span lines must carry exactly their line's attributes; spans
/// derived from platform lines must carry at least the listed ones (the converter may add more).
#[derive(Clone, Debug)]
struct Want {
    view: SpanView,
    exact_attributes: bool,
}

impl Want {
    fn new(id: &str, parent: Option<&String>, name: &str, (start_ns, end_ns): (u64, u64)) -> Want {
        Want {
            view: SpanView {
                span_id: id.to_owned(),
                parent_span_id: parent.cloned(),
                name: name.to_owned(),
                start_ns,
                end_ns,
                status: "UNSET".to_owned(),
                status_message: String::new(),
                attributes: BTreeMap::new(),
                events: Vec::new(),
            },
            exact_attributes: true,
        }
    }

    fn line(id: &str, parent: Option<&String>, name: &str, times: (u64, u64)) -> Want {
        Want::new(id, parent, name, times)
    }

    fn derived(id: &str, parent: Option<&String>, name: &str, times: (u64, u64)) -> Want {
        Want {
            exact_attributes: false,
            ..Want::new(id, parent, name, times)
        }
    }

    fn status(mut self, code: &str, message: &str) -> Want {
        self.view.status = code.to_owned();
        self.view.status_message = message.to_owned();
        self
    }

    fn attrs(mut self, attrs: Vec<(&str, Val)>) -> Want {
        self.view.attributes = attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self
    }

    fn event(mut self, time_us: u64, name: &str, attrs: Vec<(&str, Val)>) -> Want {
        self.view.events.push(EventView {
            time_ns: time_us * 1000,
            name: name.to_owned(),
            attributes: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        });
        self
    }
}

/// Compares a backend's spans with the expected trace: first the tree (names, span ids, parent
/// ids), then each span. Derived spans keep only the attributes the expectation names.
fn assert_trace(backend: &str, want: &[Want], got: Vec<SpanView>) {
    let tree = |spans: &mut dyn Iterator<Item = &SpanView>| -> Vec<String> {
        let mut t: Vec<(u64, String)> = spans
            .map(|s| {
                let parent = s.parent_span_id.as_deref().unwrap_or("(root)");
                (
                    s.start_ns,
                    format!("{} {} parent {parent}", s.span_id, s.name),
                )
            })
            .collect();
        t.sort();
        t.into_iter().map(|(_, line)| line).collect()
    };
    similar_asserts::assert_eq!(
        expected: tree(&mut want.iter().map(|w| &w.view)),
        got: tree(&mut got.iter()),
        "{backend}: the trace read back has other spans than the sample"
    );
    let by_id: HashMap<&str, &SpanView> = got.iter().map(|g| (g.span_id.as_str(), g)).collect();
    for w in want {
        let mut g = by_id[w.view.span_id.as_str()].clone();
        if !w.exact_attributes {
            g.attributes
                .retain(|k, _| w.view.attributes.contains_key(k));
        }
        similar_asserts::assert_eq!(
            expected: &w.view,
            got: &g,
            "{backend}: span {} {} differs from the sample",
            w.view.name,
            w.view.span_id
        );
    }
}

// ---------------------------------------------------------------------------------------------
// MLflow

fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// An OTLP/JSON-like AnyValue as MLflow returns it (`{"int_value": 502}`).
fn mlflow_value(v: &Value) -> Val {
    if let Some(s) = v.get("string_value").and_then(Value::as_str) {
        Val::Str(s.to_owned())
    } else if let Some(i) = v.get("int_value") {
        Val::Int(
            i.as_i64()
                .or_else(|| i.as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("MLflow int_value {i}")),
        )
    } else if let Some(f) = v.get("double_value").and_then(Value::as_f64) {
        Val::Float(f)
    } else if let Some(b) = v.get("bool_value").and_then(Value::as_bool) {
        Val::Bool(b)
    } else {
        panic!("MLflow attribute value of an unexpected type: {v}")
    }
}

fn mlflow_attributes(v: Option<&Value>) -> BTreeMap<String, Val> {
    let mut out = BTreeMap::new();
    for kv in v.and_then(Value::as_array).into_iter().flatten() {
        let key = kv["key"].as_str().expect("attribute key").to_owned();
        // MLflow adds its own request id to every span.
        if key == "mlflow.traceRequestId" {
            continue;
        }
        let val = mlflow_value(&kv["value"]);
        assert!(
            out.insert(key.clone(), val).is_none(),
            "MLflow: attribute {key} appears twice"
        );
    }
    out
}

fn b64_hex(v: &Value) -> Option<String> {
    let s = v.as_str().filter(|s| !s.is_empty())?;
    Some(hex(&STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("MLflow id {s:?}: {e}"))))
}

fn mlflow_span(s: &Value) -> SpanView {
    let status = &s["status"];
    SpanView {
        span_id: b64_hex(&s["span_id"]).expect("span_id"),
        parent_span_id: b64_hex(&s["parent_span_id"]),
        name: s["name"].as_str().unwrap_or_default().to_owned(),
        start_ns: json_u64(&s["start_time_unix_nano"]).expect("start_time_unix_nano"),
        end_ns: json_u64(&s["end_time_unix_nano"]).expect("end_time_unix_nano"),
        status: match status["code"].as_str().unwrap_or("STATUS_CODE_UNSET") {
            "STATUS_CODE_OK" => "OK",
            "STATUS_CODE_ERROR" => "ERROR",
            "STATUS_CODE_UNSET" => "UNSET",
            other => panic!("MLflow status code {other}"),
        }
        .to_owned(),
        status_message: status["message"].as_str().unwrap_or_default().to_owned(),
        attributes: mlflow_attributes(s.get("attributes")),
        events: s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| EventView {
                time_ns: json_u64(&e["time_unix_nano"]).expect("event time_unix_nano"),
                name: e["name"].as_str().unwrap_or_default().to_owned(),
                attributes: mlflow_attributes(e.get("attributes")),
            })
            .collect(),
    }
}

/// Reads `sample`'s trace back from MLflow and compares it with the expectation.
fn assert_mlflow_has(sample: &Sample, timeout: Duration) {
    let want = sample.expected();
    let trace = mlflow_trace(&sample.trace, want.len(), timeout);
    let spans = trace["trace"]["spans"].as_array().expect("spans");
    for s in spans {
        assert_eq!(
            b64_hex(&s["trace_id"]).as_deref(),
            Some(sample.trace.as_str()),
            "MLflow: span in the wrong trace: {s}"
        );
    }
    // One resource per trace in MLflow: the first ResourceSpans' one, either service.
    let service = &trace["trace"]["trace_info"]["tags"]["service.name"];
    assert!(
        service == "express-app" || service == "ot-lambda",
        "MLflow: trace resource service.name {service}"
    );
    assert_trace("MLflow", &want, spans.iter().map(mlflow_span).collect());
}

// ---------------------------------------------------------------------------------------------
// Phoenix

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Phoenix's times: Python `isoformat()` in UTC, `2026-11-23T10:00:00.000200+00:00`, the
/// fraction left out when it is zero → ns since the epoch.
fn phoenix_time(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("Phoenix time {v}"));
    let body = s
        .strip_suffix("+00:00")
        .or_else(|| s.strip_suffix('Z'))
        .unwrap_or_else(|| panic!("Phoenix time not in UTC: {s}"));
    let (date, time) = body.split_once('T').expect("date T time");
    let num = |x: &str| -> i64 { x.parse().unwrap_or_else(|_| panic!("Phoenix time {s}")) };
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    let micros = num(&format!("{frac:0<6}")[..6]);
    let secs = days_from_civil(d[0], d[1], d[2]) * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    (secs * 1_000_000 + micros) as u64 * 1000
}

fn phoenix_attributes(v: &Value) -> BTreeMap<String, Val> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let val = match v {
                Value::String(s) => Val::Str(s.clone()),
                Value::Bool(b) => Val::Bool(*b),
                Value::Number(n) if n.is_i64() || n.is_u64() => Val::Int(n.as_i64().expect("i64")),
                Value::Number(n) => Val::Float(n.as_f64().expect("f64")),
                other => panic!("Phoenix attribute {k} of an unexpected type: {other}"),
            };
            (k.clone(), val)
        })
        .collect()
}

fn phoenix_span(s: &Value) -> SpanView {
    SpanView {
        span_id: s["context"]["span_id"]
            .as_str()
            .expect("span_id")
            .to_owned(),
        parent_span_id: s["parent_id"].as_str().map(str::to_owned),
        name: s["name"].as_str().unwrap_or_default().to_owned(),
        start_ns: phoenix_time(&s["start_time"]),
        end_ns: phoenix_time(&s["end_time"]),
        status: s["status_code"].as_str().unwrap_or_default().to_owned(),
        status_message: s["status_message"].as_str().unwrap_or_default().to_owned(),
        attributes: phoenix_attributes(&s["attributes"]),
        events: s["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| EventView {
                time_ns: phoenix_time(&e["timestamp"]),
                name: e["name"].as_str().unwrap_or_default().to_owned(),
                attributes: phoenix_attributes(&e["attributes"]),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

/// MLflow over OTLP/HTTP protobuf, configured by flags; MLflow keeps ids, ns times, typed
/// attributes, events and statuses, so the whole trace is compared.
#[test]
fn mlflow_receives_the_sample_over_http_protobuf() {
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let sample = Sample::new();
    convert(
        &sample.dir,
        &[
            &sample.input_arg(),
            "--otlp-endpoint",
            &mlflow,
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-header",
            "x-mlflow-experiment-id=0",
        ],
        &[],
    );
    assert_mlflow_has(&sample, Duration::ZERO);
}

/// The same over OTLP/HTTP JSON, gzip-compressed.
#[test]
fn mlflow_receives_the_sample_over_http_json_with_gzip() {
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let sample = Sample::new();
    convert(
        &sample.dir,
        &[
            &sample.input_arg(),
            "--otlp-endpoint",
            &mlflow,
            "--otlp-protocol",
            "http/json",
            "--otlp-compression",
            "gzip",
            "--otlp-header",
            "x-mlflow-experiment-id=0",
        ],
        &[],
    );
    assert_mlflow_has(&sample, Duration::ZERO);
}

/// The standard OpenTelemetry variables configure the exporter without any flag.
#[test]
fn otel_environment_variables_configure_the_otlp_exporter() {
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let sample = Sample::new();
    convert(
        &sample.dir,
        &[&sample.input_arg()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &mlflow),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-mlflow-experiment-id=0"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    assert_mlflow_has(&sample, Duration::ZERO);
}

/// Phoenix over OTLP/gRPC. Phoenix stores in the background (poll) and keeps µs times.
#[test]
fn phoenix_receives_the_sample_over_grpc() {
    let phoenix = service("SPANLINE_TEST_PHOENIX");
    let grpc = service("SPANLINE_TEST_PHOENIX_GRPC");
    let sample = Sample::new();
    convert(
        &sample.dir,
        &[
            &sample.input_arg(),
            "--otlp-endpoint",
            &grpc,
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    );
    let want = sample.expected();
    let url = format!(
        "{phoenix}/v1/projects/default/spans?trace_id={}&limit=100",
        sample.trace
    );
    let mut last = (0, String::new());
    let spans = poll(Duration::from_secs(20), || {
        last = http_get(&url);
        if last.0 != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&last.1).expect("Phoenix JSON");
        let data = v["data"].as_array().cloned().unwrap_or_default();
        (data.len() >= want.len()).then_some(data)
    })
    .unwrap_or_else(|| {
        panic!(
            "Phoenix has no trace {} with {} spans after 20 s; last answer {}: {}",
            sample.trace,
            want.len(),
            last.0,
            last.1
        )
    });
    for s in &spans {
        assert_eq!(
            s["context"]["trace_id"].as_str(),
            Some(sample.trace.as_str()),
            "Phoenix: span in the wrong trace: {s}"
        );
    }
    // Phoenix keeps µs: every time in the sample is a whole µs, so nothing is lost.
    for w in &want {
        assert_eq!(w.view.start_ns % 1000, 0);
        assert_eq!(w.view.end_ns % 1000, 0);
    }
    assert_trace("Phoenix", &want, spans.iter().map(phoenix_span).collect());
}

/// Through a real collector: OTLP/gRPC into rotel, which forwards over OTLP/HTTP to MLflow
/// (batched: poll).
#[test]
fn rotel_forwards_the_sample_from_grpc_to_mlflow() {
    let rotel = service("SPANLINE_TEST_ROTEL_GRPC");
    let sample = Sample::new();
    convert(
        &sample.dir,
        &[
            &sample.input_arg(),
            "--otlp-endpoint",
            &rotel,
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    );
    assert_mlflow_has(&sample, Duration::from_secs(20));
}

/// Issue "Traces worth keeping", item 3: with `--logs events` the function's log lines arrive at
/// MLflow as `log` events of the span active when they were written (a traceback on the client
/// span that failed), with their message and level.
#[test]
fn mlflow_receives_invocation_logs_as_span_events() {
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let dir = crate::support::scratch("e2e-logs");
    // The fixture with a fresh trace id, so that every run sends a trace of its own.
    let trace = fresh_id::<16>();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lambda/logs/checkout.json");
    let text = std::fs::read_to_string(fixture).expect("fixture");
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(unhex("5b8efff798038103d269b633813fc60c"));
    let new = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(unhex(&trace));
    assert!(text.contains(&old));
    let input = dir.join("checkout.json");
    std::fs::write(&input, text.replace(&old, &new)).expect("write");
    convert(
        &dir,
        &[
            &input.to_string_lossy(),
            "--log-group-name",
            "/aws/lambda/checkout",
            "--logs",
            "events",
            "--otlp-endpoint",
            &mlflow,
            "--otlp-header",
            "x-mlflow-experiment-id=0",
        ],
        &[],
    );
    let got = mlflow_trace(&trace, 3, Duration::from_secs(30));
    let spans = got["trace"]["spans"].as_array().expect("spans");
    let card = spans
        .iter()
        .find(|s| s["name"] == "charge-card")
        .unwrap_or_else(|| panic!("no charge-card span: {got}"));
    let events = card["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{card}"));
    let logs: Vec<BTreeMap<String, Val>> = events
        .iter()
        .filter(|e| e["name"] == "log")
        .map(|e| mlflow_attributes(e.get("attributes")))
        .collect();
    assert_eq!(logs.len(), 2, "{card}");
    assert!(
        logs.iter().any(|a| a.get("level") == Some(&Val::Str("ERROR".into()))
            && matches!(a.get("message"), Some(Val::Str(m)) if m.contains("TimeoutError: provider"))),
        "{logs:?}"
    );
}

/// Issue "AWS-native", item 2: an API Gateway span from `aws/spans`, the invocation span from
/// the platform lines and the function's span lines, converted together, read back from MLflow
/// as one trace with the right parents.
#[test]
fn mlflow_receives_aws_spans_merged_with_span_lines() {
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let dir = crate::support::scratch("e2e-aws-spans");
    let trace = fresh_id::<16>();
    let old = "5759e988bd862e3fe1be46a994272793";
    let xray = |t: &str| format!("1-{}-{}", &t[..8], &t[8..]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/aws-spans");
    let mut inputs = Vec::new();
    for name in ["orders.json", "aws-spans.json"] {
        let text = std::fs::read_to_string(fixtures.join(name)).expect("fixture");
        let text = text
            .replace(&xray(old), &xray(&trace))
            .replace(old, &trace)
            .replace(
                &URL_SAFE_NO_PAD.encode(unhex(old)),
                &URL_SAFE_NO_PAD.encode(unhex(&trace)),
            );
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        inputs.push(path.to_string_lossy().into_owned());
    }
    let mut args: Vec<&str> = inputs.iter().map(String::as_str).collect();
    args.extend([
        "--otlp-endpoint",
        &mlflow,
        "--otlp-header",
        "x-mlflow-experiment-id=0",
    ]);
    convert(&dir, &args, &[]);
    let got = mlflow_trace(&trace, 4, Duration::from_secs(30));
    let spans: Vec<SpanView> = got["trace"]["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(mlflow_span)
        .collect();
    assert_eq!(spans.len(), 4, "{got}");
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no span {n}: {got}"))
    };
    let apigw = by_name("POST /orders");
    assert_eq!(apigw.parent_span_id, None);
    assert_eq!(
        by_name("orders").parent_span_id.as_deref(),
        Some(apigw.span_id.as_str())
    );
    assert_eq!(
        by_name("handle-order").parent_span_id.as_deref(),
        Some(by_name("orders").span_id.as_str())
    );
    assert_eq!(
        by_name("dynamodb.put").parent_span_id.as_deref(),
        Some(by_name("handle-order").span_id.as_str())
    );
}
