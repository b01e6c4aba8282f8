//! Tail-based sampling through the binary: the same decisions in every process, whole traces,
//! the ratio rule as OpenTelemetry's own SDK computes it, counts that add up.

use crate::support::{hex, run_spanline, scratch, service};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One generated trace: root, child, grandchild.
struct Trace {
    id: [u8; 16],
    error: bool,
    slow: bool,
}

const TRACES: u64 = 600;

/// splitmix64: ids spread over the whole range from one seed.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn traces(seed: u64) -> Vec<Trace> {
    (0..TRACES)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&mix(seed ^ (2 * i)).to_be_bytes());
            id[8..].copy_from_slice(&mix(seed ^ (2 * i + 1)).to_be_bytes());
            Trace {
                id,
                error: i % 17 == 3,
                slow: i % 23 == 5,
            }
        })
        .collect()
}

/// The span lines of `traces`, interleaved as several functions would print them: each span
/// when it ends (grandchild, child, root), a trace's spans apart by other traces' lines.
fn lines(traces: &[Trace]) -> String {
    let t0: u64 = 1_700_000_000_000_000;
    let mut out: Vec<(u64, String)> = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        let start = t0 + i as u64 * 50_000;
        let tid = URL_SAFE_NO_PAD.encode(t.id);
        let sid = |n: u64| URL_SAFE_NO_PAD.encode((i as u64 * 4 + n).to_be_bytes());
        let root_dur: u64 = if t.slow { 3_000_000 } else { 120_000 };
        let flags = if t.error { "ce" } else { "c" };
        let spans = [
            (
                format!("{tid}{}{}", sid(3), sid(2)),
                start + 20_000,
                40_000,
                flags,
                "db",
            ),
            (
                format!("{tid}{}{}", sid(2), sid(1)),
                start + 10_000,
                80_000,
                "",
                "work",
            ),
            (format!("{tid}{}", sid(1)), start, root_dur, "s", "GET%20/"),
        ];
        for (ids, s, d, f, name) in spans {
            out.push((
                s + d,
                format!("SPLN1 {ids} {s} {d}{f} {name} *s=shop sample.case=1;"),
            ));
        }
    }
    // In the order the spans end.
    out.sort_by_key(|(end, _)| *end);
    out.into_iter().map(|(_, l)| l + "\n").collect()
}

/// (trace id hex → span ids hex) of an OTLP JSON lines file.
fn spans_by_trace(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("OTLP JSON line");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let t = s["traceId"].as_str().expect("traceId").to_owned();
                    let id = s["spanId"].as_str().expect("spanId").to_owned();
                    assert!(out.entry(t).or_default().insert(id), "a span sent twice");
                }
            }
        }
    }
    out
}

/// The trace ids (hex) OpenTelemetry's Python SDK `TraceIdRatioBased(rate)` samples.
fn python_sdk_samples(ids: &[String], rate: f64) -> BTreeSet<String> {
    let python = service("SPANLINE_TEST_PYTHON");
    let script = "import sys\n\
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased\n\
        s = TraceIdRatioBased(float(sys.argv[1]))\n\
        for line in sys.stdin:\n\
        \x20   t = line.strip()\n\
        \x20   if t and s.should_sample(None, int(t, 16), 'n').decision.is_sampled():\n\
        \x20       print(t)\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script, &rate.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running the test services' Python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(ids.join("\n").as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sampled_run(dir: &Path, input: &Path, out: &str, extra: &[&str]) -> String {
    let out = dir.join(out);
    let (i, o) = (input.to_string_lossy(), out.to_string_lossy());
    let mut args = vec!["convert", &*i, "--output", &*o];
    args.extend_from_slice(extra);
    let run = run_spanline(dir, &args, &[]);
    assert!(run.status.success(), "{}", run.stderr);
    run.stderr
}

/// Issue "Traces worth keeping", sampling tests: decisions equal across processes and runs,
/// the ratio rule against OpenTelemetry's SDK on the same ids, errors and slow roots kept whole,
/// an unsampled trace sends nothing, the summary's counts add up.
#[test]
fn sampling_keeps_errors_slow_roots_and_the_sdk_ratio_whole_and_the_same_in_every_process() {
    let dir = scratch("sampling");
    let seed = u64::from_str_radix(&crate::support::fresh_id::<8>(), 16).expect("hex");
    let traces = traces(seed);
    let input = dir.join("stdout.log");
    std::fs::write(&input, lines(&traces)).expect("write input");
    let flags = ["--sample-rate", "0.1", "--keep-slower-than", "2s"];
    let stderr = sampled_run(&dir, &input, "a.jsonl", &flags);
    let a = spans_by_trace(&dir.join("a.jsonl"));
    sampled_run(&dir, &input, "b.jsonl", &flags);
    let b = spans_by_trace(&dir.join("b.jsonl"));
    assert_eq!(a, b, "two processes decided differently");

    let ids: Vec<String> = traces.iter().map(|t| hex(&t.id)).collect();
    let by_sdk = python_sdk_samples(&ids, 0.1);
    let expected: BTreeSet<String> = traces
        .iter()
        .filter(|t| t.error || t.slow || by_sdk.contains(&hex(&t.id)))
        .map(|t| hex(&t.id))
        .collect();
    let kept: BTreeSet<String> = a.keys().cloned().collect();
    assert_eq!(kept, expected);
    // Every kept trace whole; the ratio near its rate.
    assert!(a.values().all(|s| s.len() == 3), "{a:?}");
    let ratio = by_sdk.len() as f64 / TRACES as f64;
    assert!((0.04..0.18).contains(&ratio), "{ratio}");

    let errors = traces.iter().filter(|t| t.error).count();
    let dropped = TRACES as usize - kept.len();
    let line = format!(
        "sampling kept {} traces (error: {errors}, slow: ",
        kept.len()
    );
    assert!(stderr.contains(&line), "{line}\n{stderr}");
    let tail = format!(
        "and {} spans, dropped {dropped} traces and {} spans",
        3 * kept.len(),
        3 * dropped
    );
    assert!(stderr.contains(&tail), "{tail}\n{stderr}");

    // Without sampling flags everything goes; at rate 0 with errors not kept, nothing does.
    sampled_run(&dir, &input, "all.jsonl", &[]);
    assert_eq!(
        spans_by_trace(&dir.join("all.jsonl")).len(),
        TRACES as usize
    );
    sampled_run(
        &dir,
        &input,
        "none.jsonl",
        &["--sample-rate", "0", "--keep-errors", "false"],
    );
    assert!(spans_by_trace(&dir.join("none.jsonl")).is_empty());
}

#[test]
fn a_bad_sampling_policy_or_rate_is_a_clear_error() {
    let dir = scratch("sampling-bad");
    let policy = dir.join("policy.json");
    std::fs::write(&policy, r#"{"rate": 0.1, "keep_errorz": true}"#).expect("write");
    let p = policy.to_string_lossy();
    let run = run_spanline(
        &dir,
        &[
            "convert",
            "-",
            "--sample-policy",
            &p,
            "--output",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("keep_errorz"), "{}", run.stderr);
    let run = run_spanline(
        &dir,
        &[
            "convert",
            "-",
            "--sample-rate",
            "1.5",
            "--output",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("rate 1.5"), "{}", run.stderr);
}
