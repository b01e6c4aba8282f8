//! `spanline forward` end to end: Lambda logs written into the real moto server in waves, the
//! real binary run again and again into the real MLflow (and an OTLP JSON file per run, which
//! counts what was *sent*: MLflow keeps one copy of a span id however often it is sent). Through
//! late arrivals, an invocation still running at the end of a run, a backend outage, a SIGKILL
//! mid-run, concurrent runs and throttling, the spans written must arrive exactly once.
//!
//! moto and MLflow are required (`SPANLINE_TEST_MOTO`, `SPANLINE_TEST_MLFLOW`): without them
//! these tests fail, never skip.

use crate::cloudwatch::{
    aws_env, file_span_ids, fresh_bucket, iso, logs_client, mlflow_args, now_ms, put_events, rt,
    s3_client, scripted, span_line, Put,
};
use crate::support::{
    fresh_id, hex, mlflow_trace, run_spanline, scratch, service, spawn_spanline, wait_spanline, Run,
};
use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One Lambda function's log group, written in waves; remembers every span it should produce.
#[derive(Clone)]
struct Function {
    group: String,
    trace: String,
    caller: String,
    streams: Vec<String>,
    /// Every span id the backend must end up with (span lines and invocation spans are counted
    /// by `invocations`).
    span_ids: BTreeSet<String>,
    invocations: usize,
}

/// An invocation's lines: START, a child span line, output, the execution span line, END and
/// REPORT (left out when `report` is false: the invocation is still running).
struct Invocation {
    puts: Vec<Put>,
    report: Vec<Put>,
    /// The child's span line, for writing it late.
    child: Put,
}

impl Function {
    fn new() -> Function {
        let group = format!("/aws/lambda/spanline-fwd-{}", fresh_id::<4>());
        let client = logs_client();
        let streams: Vec<String> = (0..2)
            .map(|_| format!("2024/05/01/[$LATEST]{}", fresh_id::<16>()))
            .collect();
        rt().block_on(async {
            client
                .create_log_group()
                .log_group_name(&group)
                .send()
                .await
                .expect("CreateLogGroup");
            for s in &streams {
                client
                    .create_log_stream()
                    .log_group_name(&group)
                    .log_stream_name(s)
                    .send()
                    .await
                    .expect("CreateLogStream");
            }
        });
        Function {
            group,
            trace: fresh_id::<16>(),
            caller: fresh_id::<8>(),
            streams,
            span_ids: BTreeSet::new(),
            invocations: 0,
        }
    }

    fn invocation(&mut self, t0: i64) -> Invocation {
        let stream = self.streams[self.invocations % 2].clone();
        self.invocations += 1;
        let req = format!(
            "{}-{}-4{}-8{}-{}",
            fresh_id::<4>(),
            fresh_id::<2>(),
            &fresh_id::<2>()[1..],
            &fresh_id::<2>()[1..],
            fresh_id::<6>()
        );
        let put = |ts: i64, message: String| Put {
            stream: stream.clone(),
            ts,
            message,
        };
        let node = |ts: i64, text: &str| format!("{}\t{req}\tINFO\t{text}\n", iso(ts));
        let exec = fresh_id::<8>();
        let child = fresh_id::<8>();
        self.span_ids.insert(exec.clone());
        self.span_ids.insert(child.clone());
        let child_line = span_line(&self.trace, &child, &exec, t0 + 2, 5_000, "c", "db-query");
        let exec_line = span_line(
            &self.trace,
            &exec,
            &self.caller,
            t0 + 1,
            19_000,
            "s",
            "lambda-execution",
        );
        Invocation {
            puts: vec![
                put(t0, format!("START RequestId: {req} Version: $LATEST\n")),
                put(t0 + 10, node(t0 + 10, "ordinary application output")),
                put(t0 + 20, node(t0 + 20, &exec_line)),
            ],
            report: vec![
                put(t0 + 21, format!("END RequestId: {req}\n")),
                put(
                    t0 + 21,
                    format!("REPORT RequestId: {req}\tDuration: 20.00 ms\tBilled Duration: 21 ms\tMemory Size: 128 MB\tMax Memory Used: 67 MB\t\n"),
                ),
            ],
            child: put(t0 + 8, node(t0 + 8, &child_line)),
        }
    }

    /// `n` complete invocations from `t0`, 40 ms apart.
    fn wave(&mut self, t0: i64, n: usize) -> Vec<Put> {
        (0..n)
            .flat_map(|i| {
                let inv = self.invocation(t0 + i as i64 * 40);
                let mut p = inv.puts;
                p.push(inv.child);
                p.extend(inv.report);
                p
            })
            .collect()
    }

    fn put(&self, puts: &[Put]) {
        put_events(&logs_client(), &self.group, puts);
    }

    fn expected(&self) -> usize {
        self.span_ids.len() + self.invocations
    }

    /// MLflow holds exactly the spans written: every span line's span once, one invocation
    /// span per invocation, nothing else.
    fn assert_in_mlflow(&self) {
        let want = self.expected();
        let trace = mlflow_trace(&self.trace, want, Duration::from_secs(30));
        let spans = trace["trace"]["spans"].as_array().expect("spans");
        let ids: Vec<String> = spans
            .iter()
            .map(|s| {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(s["span_id"].as_str().unwrap_or(""))
                    .expect("base64 span id");
                hex(&b)
            })
            .collect();
        assert_eq!(ids.len(), want, "spans in MLflow");
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), want, "a span id twice in MLflow");
        for id in &self.span_ids {
            assert!(ids.contains(id), "span {id} is missing from MLflow");
        }
        let name = self.group.trim_start_matches("/aws/lambda/");
        let invocations = spans.iter().filter(|s| s["name"] == name).count();
        assert_eq!(invocations, self.invocations, "invocation spans in MLflow");
    }
}

/// A directory with a checkpoint, and one OTLP JSON file per run.
struct Runner {
    dir: PathBuf,
    checkpoint: String,
    runs: usize,
}

impl Runner {
    fn new(name: &str) -> Runner {
        let dir = scratch(name);
        Runner {
            checkpoint: dir.join("checkpoint.json").to_string_lossy().into_owned(),
            dir,
            runs: 0,
        }
    }

    fn args(&mut self, f: &Function, extra: &[&str], otlp: &str) -> Vec<String> {
        self.runs += 1;
        let out = self.dir.join(format!("sent-{}.jsonl", self.runs));
        let mut args: Vec<String> = [
            "forward",
            "--log-group-name",
            &f.group,
            "--checkpoint",
            &self.checkpoint,
            "--start-time",
            "1h",
            "--output",
            &out.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(mlflow_args(otlp));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Starts `spanline <args>` against moto.
    fn spawn(&self, args: &[String]) -> std::process::Child {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = aws_env(&service("SPANLINE_TEST_MOTO"));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn_spanline(&self.dir, &args, &env)
    }

    fn run(&mut self, f: &Function, extra: &[&str]) -> Run {
        let args = self.args(f, extra, &service("SPANLINE_TEST_MLFLOW"));
        wait_spanline(&self.dir, self.spawn(&args), Duration::from_secs(60))
    }

    /// How often each span id was sent, over every run's file.
    fn sent(&self) -> BTreeMap<String, usize> {
        let mut all = BTreeMap::new();
        for i in 1..=self.runs {
            for (id, n) in file_span_ids(&self.dir.join(format!("sent-{i}.jsonl"))) {
                *all.entry(id).or_default() += n;
            }
        }
        all
    }

    /// Each span sent once over every run, but for the one batch (of one span) in flight
    /// when a run was killed, sent twice.
    fn assert_sent_once_but_the_killed_batch(&self, f: &Function) {
        let sent = self.sent();
        assert_eq!(sent.len(), f.expected(), "{sent:?}");
        let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.len() <= 1 && twice.iter().all(|(_, n)| **n == 2),
            "{twice:?}"
        );
    }

    /// Starts a run that sends one span per batch and SIGKILLs it as soon as its checkpoint
    /// changed (or after `wait`); says whether it had recorded a batch, and what it left.
    fn kill_after_first_batch(
        &mut self,
        f: &Function,
        extra: &[&str],
        wait: Duration,
    ) -> (bool, Run) {
        let mut extra = extra.to_vec();
        extra.extend(["--batch-spans", "1"]);
        let args = self.args(f, &extra, &service("SPANLINE_TEST_MLFLOW"));
        let before = self.checkpoint_bytes();
        let child = self.spawn(&args);
        let recorded =
            crate::support::poll(wait, || (self.checkpoint_bytes() != before).then_some(()))
                .is_some();
        // SAFETY: signalling our own child by its id.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        (
            recorded,
            wait_spanline(&self.dir, child, Duration::from_secs(10)),
        )
    }

    fn checkpoint_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.checkpoint).unwrap_or_default()
    }
}

/// The JSON line a run prints on stdout.
fn stats(run: &Run) -> Value {
    let line = run.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stats line {line:?}: {e}\n{}", run.stderr))
}

fn ok(run: &Run) -> Value {
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    stats(run)
}

#[test]
fn forward_delivers_every_span_once_through_late_events_an_outage_and_a_sigkill() {
    let mut f = Function::new();
    let mut r = Runner::new("fwd-story");
    let t = now_ms();

    // Every run re-reads one minute before its cursor (a sweep on every run).
    let lateness: &[&str] = &["--lateness", "1m", "--sweep-every", "0s"];

    // Run 1: four invocations (the child line of the first is held back, to arrive late), and
    // an invocation that started 150 s ago and is still running: its spans wait for its REPORT,
    // and the cursor stays at its START although that is older than the lateness window.
    let mut wave_a = f.wave(t - 40_000, 4);
    let late = wave_a.remove(3);
    assert!(late.message.contains("db-query"), "{}", late.message);
    let running = f.invocation(t - 150_000);
    wave_a.extend(running.puts.iter().cloned());
    wave_a.push(running.child.clone());
    f.put(&wave_a);
    let s = ok(&r.run(&f, lateness));
    assert_eq!(s["spans_forwarded"], 11, "{s}");
    assert_eq!(s["skipped"]["held_for_next_run"], 2, "{s}");
    assert_eq!(s["outcome"], "done");

    // Run 2: the late line (back-dated inside the lateness window), three more invocations,
    // and the running invocation's END and REPORT.
    let mut puts = f.wave(t - 20_000, 3);
    puts.push(late);
    puts.extend(running.report.iter().cloned());
    f.put(&puts);
    let s = ok(&r.run(&f, lateness));
    assert_eq!(s["spans_forwarded"], 1 + 9 + 3, "{s}");
    assert_eq!(s["skipped"]["held_for_next_run"], 0, "{s}");
    assert!(
        s["skipped"]["already_forwarded"].as_u64() >= Some(11),
        "{s}"
    );

    // More invocations; the backend is down for a run: it fails with the retryable code and
    // the checkpoint does not move.
    let puts = f.wave(t - 10_000, 3);
    f.put(&puts);
    let before = r.checkpoint_bytes();
    let mut extra = lateness.to_vec();
    extra.extend(["--retry-deadline", "2s"]);
    let args = r.args(&f, &extra, "http://127.0.0.1:9");
    let down = wait_spanline(&r.dir, r.spawn(&args), Duration::from_secs(60));
    assert_eq!(down.status.code(), Some(4), "{}", down.stderr);
    assert_eq!(stats(&down)["outcome"], "backend failed");
    assert_eq!(
        r.checkpoint_bytes(),
        before,
        "checkpoint moved although nothing was accepted"
    );

    // A run killed with SIGKILL after its first accepted batch (one span per batch).
    let (recorded, killed) = r.kill_after_first_batch(&f, lateness, Duration::from_secs(30));
    assert!(recorded, "the killed run never recorded a batch");
    assert_eq!(killed.status.code(), None, "{}", killed.stderr);

    // The next run takes the lock the dead process held and finishes the job.
    let s = ok(&r.run(&f, lateness));
    assert!(s["spans_forwarded"].as_u64() > Some(0), "{s}");
    // And a run with nothing new sends nothing.
    let s = ok(&r.run(&f, lateness));
    assert_eq!(s["spans_forwarded"], 0, "{s}");

    f.assert_in_mlflow();
    r.assert_sent_once_but_the_killed_batch(&f);
}

#[test]
fn a_second_run_while_the_lock_is_held_does_nothing_and_says_so() {
    let mut f = Function::new();
    let puts = f.wave(now_ms() - 60_000, 2);
    f.put(&puts);
    let mut r = Runner::new("fwd-lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{}.lock", r.checkpoint))
        .expect("lock file");
    lock.try_lock().expect("taking the lock");
    let run = r.run(&f, &[]);
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert!(
        run.stderr.contains("locked by another run"),
        "{}",
        run.stderr
    );
    assert!(r.sent().is_empty());
    assert!(r.checkpoint_bytes().is_empty());
    drop(lock);

    // Two runs started at once: one forwards, the other finds the lock or finds nothing new;
    // nothing is sent twice.
    let env = aws_env(&service("SPANLINE_TEST_MOTO"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mlflow = service("SPANLINE_TEST_MLFLOW");
    let (a, b) = (r.args(&f, &[], &mlflow), r.args(&f, &[], &mlflow));
    let (da, db) = (r.dir.join("a"), r.dir.join("b"));
    std::fs::create_dir_all(&da).expect("dir");
    std::fs::create_dir_all(&db).expect("dir");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let (ca, cb) = (spawn_spanline(&da, &a, &env), spawn_spanline(&db, &b, &env));
    let (ra, rb) = (
        wait_spanline(&da, ca, Duration::from_secs(60)),
        wait_spanline(&db, cb, Duration::from_secs(60)),
    );
    let mut codes = [ra.status.code(), rb.status.code()];
    codes.sort();
    assert!(
        codes == [Some(0), Some(6)] || codes == [Some(0), Some(0)],
        "{codes:?}\n{}\n{}",
        ra.stderr,
        rb.stderr
    );
    let sent = r.sent();
    assert_eq!(sent.len(), f.expected(), "{sent:?}");
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    f.assert_in_mlflow();
}

fn s3_get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    rt().block_on(async {
        let o = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(o.body.collect().await.ok()?.into_bytes().to_vec())
    })
}

#[test]
fn an_s3_checkpoint_is_versioned_json_and_its_lease_keeps_a_second_run_out() {
    let mut f = Function::new();
    let puts = f.wave(now_ms() - 60_000, 3);
    f.put(&puts);
    let s3 = s3_client();
    let bucket = fresh_bucket(&s3);
    let mut r = Runner::new("fwd-s3");
    r.checkpoint = format!("s3://{bucket}/spanline/checkpoint.json");

    // A live lease of another run: this run does nothing.
    let lease =
        serde_json::json!({"owner": "pid 1 on elsewhere", "expires_ms": now_ms() + 600_000});
    rt().block_on(
        s3.put_object()
            .bucket(&bucket)
            .key("spanline/checkpoint.json.lock")
            .body(lease.to_string().into_bytes().into())
            .send(),
    )
    .expect("PutObject lease");
    let run = r.run(&f, &[]);
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert!(run.stderr.contains("pid 1 on elsewhere"), "{}", run.stderr);

    // The lease expires: the next run takes it over, forwards, and releases it.
    let lease = serde_json::json!({"owner": "pid 1 on elsewhere", "expires_ms": now_ms() - 1});
    rt().block_on(
        s3.put_object()
            .bucket(&bucket)
            .key("spanline/checkpoint.json.lock")
            .body(lease.to_string().into_bytes().into())
            .send(),
    )
    .expect("PutObject lease");
    let s = ok(&r.run(&f, &[]));
    assert_eq!(s["spans_forwarded"], f.expected(), "{s}");
    assert!(
        s3_get(&s3, &bucket, "spanline/checkpoint.json.lock").is_none(),
        "the lease was not released"
    );
    let cp: Value = serde_json::from_slice(
        &s3_get(&s3, &bucket, "spanline/checkpoint.json").expect("checkpoint object"),
    )
    .expect("checkpoint JSON");
    assert_eq!(cp["version"], 1);
    assert!(
        cp["groups"][&f.group]["cursor_ms"].as_i64() > Some(0),
        "{cp}"
    );

    let s = ok(&r.run(&f, &[]));
    assert_eq!(s["spans_forwarded"], 0, "{s}");
    f.assert_in_mlflow();
}

#[test]
fn dry_run_shows_what_would_be_sent_and_writes_nothing() {
    let mut f = Function::new();
    let puts = f.wave(now_ms() - 60_000, 2);
    f.put(&puts);
    let r = Runner::new("fwd-dry");
    let env = aws_env(&service("SPANLINE_TEST_MOTO"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Sinks configured as for a real run: a dry run still sends nothing to them.
    let out = r.dir.join("sent.jsonl");
    let mut args: Vec<String> = [
        "forward",
        "--dry-run",
        "--log-group-name",
        &f.group,
        "--checkpoint",
        &r.checkpoint,
        "--color",
        "never",
        "--output",
        &out.to_string_lossy(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(mlflow_args(&service("SPANLINE_TEST_MLFLOW")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_spanline(&r.dir, &args, &env);
    let s = ok(&run);
    assert_eq!(s["outcome"], "dry run");
    assert_eq!(s["spans_would_forward"], f.expected(), "{s}");
    assert!(!Path::new(&r.checkpoint).exists());
    assert!(!out.exists(), "a dry run wrote to its --output sink");
    assert!(
        run.stdout.contains("lambda-execution"),
        "the waterfall of what would be sent:\n{}",
        run.stdout
    );
    let url = format!(
        "{}/api/3.0/mlflow/traces/get?trace_id=tr-{}",
        service("SPANLINE_TEST_MLFLOW"),
        f.trace
    );
    assert_eq!(
        crate::support::http_get(&url).0,
        404,
        "a dry run sent the trace to MLflow"
    );
    // Without a backend, a real run refuses to start.
    let run = run_spanline(
        &r.dir,
        &[
            "forward",
            "--log-group-name",
            &f.group,
            "--checkpoint",
            &r.checkpoint,
        ],
        &env,
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("forward needs a backend"),
        "{}",
        run.stderr
    );
}

#[test]
fn forward_rides_out_throttling_from_a_scripted_endpoint() {
    let mut f = Function::new();
    let puts = f.wave(now_ms() - 60_000, 2);
    let events: Vec<Value> = puts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "logStreamName": p.stream, "timestamp": p.ts, "ingestionTime": p.ts + 5,
                "message": p.message, "eventId": format!("{:056}", 1000 + i),
            })
        })
        .collect();
    let answers = vec![
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        ),
        (
            400,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
        ),
        (200, serde_json::json!({ "events": events }).to_string()),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (url, server) = runtime.block_on(scripted(answers));
    let r = Runner::new("fwd-throttle");
    let out = r.dir.join("sent.jsonl");
    let env = aws_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = run_spanline(
        &r.dir,
        &[
            "forward",
            "--log-group-name",
            &f.group,
            "--checkpoint",
            &r.checkpoint,
            "--output",
            &out.to_string_lossy(),
        ],
        &env,
    );
    let s = ok(&run);
    assert_eq!(s["throttled"], 2, "{s}");
    assert_eq!(s["requests"], 3, "{s}");
    assert_eq!(s["spans_forwarded"], f.expected(), "{s}");
    let seen = runtime.block_on(server).expect("server");
    assert_eq!(seen.len(), 3);
    let sent = file_span_ids(&out);
    assert_eq!(sent.len(), f.expected());
}

#[test]
fn runs_back_to_back_over_continuous_writes_deliver_exactly_what_was_written() {
    let f = std::sync::Arc::new(std::sync::Mutex::new(Function::new()));
    let mut r = Runner::new("fwd-continuous");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer: an invocation every 100 ms, its START and span lines in one PutLogEvents and
    // its END and REPORT in the next, so runs also meet invocations still in progress.
    let writer = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let inv = f.lock().expect("lock").invocation(now_ms());
                let mut first = inv.puts;
                first.push(inv.child);
                f.lock().expect("lock").put(&first);
                std::thread::sleep(Duration::from_millis(30));
                f.lock().expect("lock").put(&inv.report);
                std::thread::sleep(Duration::from_millis(70));
            }
        })
    };
    // Runs read the head (a sweep only every minute); the last two sweep.
    let lateness: &[&str] = &["--lateness", "1m"];
    let sweeping: &[&str] = &["--lateness", "1m", "--sweep-every", "0s"];
    let snapshot = |f: &std::sync::Arc<std::sync::Mutex<Function>>| f.lock().expect("lock").clone();
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(250));
        let view = snapshot(&f);
        if i == 4 {
            // One run is killed after it recorded a batch (if it gets that far).
            r.kill_after_first_batch(&view, lateness, Duration::from_secs(10));
            continue;
        }
        ok(&r.run(&view, lateness));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    let all = snapshot(&f);
    assert!(
        all.invocations >= 15,
        "only {} invocations written",
        all.invocations
    );
    ok(&r.run(&all, sweeping));
    let s = ok(&r.run(&all, sweeping));
    assert_eq!(s["spans_forwarded"], 0, "{s}");
    all.assert_in_mlflow();
    r.assert_sent_once_but_the_killed_batch(&all);
}

/// An OTLP/HTTP endpoint that fails the first two requests (503, then 429 with Retry-After)
/// and relays every later connection to `upstream` (MLflow).
async fn flaky_front(upstream: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = failed.clone();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let n = counter.load(std::sync::atomic::Ordering::SeqCst);
            if n < 2 {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = vec![0u8; 1 << 16];
                let _ = sock.read(&mut buf).await;
                let resp = if n == 0 {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut up) =
                    tokio::net::TcpStream::connect(upstream.trim_end_matches('/')).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                }
            });
        }
    });
    (url, failed)
}

#[test]
fn a_backend_answering_503_and_429_is_retried_and_the_run_completes() {
    let mut f = Function::new();
    let puts = f.wave(now_ms() - 60_000, 3);
    f.put(&puts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (url, failed) = runtime.block_on(flaky_front(service("SPANLINE_TEST_MLFLOW")));
    let mut r = Runner::new("fwd-flaky");
    let args = r.args(&f, &[], &url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = aws_env(&service("SPANLINE_TEST_MOTO"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = ok(&run_spanline(&r.dir, &args, &env));
    assert_eq!(failed.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(s["send_retries"], 2, "{s}");
    assert_eq!(s["spans_forwarded"], f.expected(), "{s}");
    f.assert_in_mlflow();
}

#[test]
fn forward_warns_about_events_ingested_close_to_the_lateness() {
    let mut f = Function::new();
    let mut r = Runner::new("fwd-late-warning");
    let lateness: &[&str] = &["--lateness", "1m", "--sweep-every", "0s"];
    // Run 1: an invocation written on time.
    let wave = f.wave(now_ms() - 5_000, 1);
    f.put(&wave);
    let run = r.run(&f, lateness);
    let s = ok(&run);
    assert!(s["limits"].get("late_near_window").is_none(), "{s}");
    assert!(!run.stderr.contains("--lateness"), "{}", run.stderr);
    // Run 2: an invocation back-dated by 50 s, over 75 % of the lateness but within it: it is
    // forwarded, and its events are counted and warned about (the first run's are not measured
    // again).
    let wave = f.wave(now_ms() - 50_000, 1);
    f.put(&wave);
    let run = r.run(&f, lateness);
    let s = ok(&run);
    let near = s["limits"]["late_near_window"].as_u64().unwrap_or(0);
    assert!((1..=wave.len() as u64).contains(&near), "{s}");
    assert!(s["limits"].get("late_beyond_window").is_none(), "{s}");
    assert!(
        run.stderr.contains("% of --lateness 60 s"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("raise --lateness"), "{}", run.stderr);
    r.assert_sent_once_but_the_killed_batch(&f);
    f.assert_in_mlflow();
}

#[test]
fn runs_between_sweeps_read_only_the_head_and_the_next_sweep_forwards_what_came_late() {
    let mut f = Function::new();
    let mut r = Runner::new("fwd-sweep");
    let args: &[&str] = &["--lateness", "1m", "--sweep-every", "20s"];
    // Run 1, the group's first: a sweep.
    let wave = f.wave(now_ms() - 2_000, 1);
    f.put(&wave);
    let s = ok(&r.run(&f, args));
    assert_eq!(s["groups"][&f.group]["swept"], true, "{s}");
    assert_eq!(s["spans_forwarded"], 3, "{s}");
    let swept_at = s["groups"][&f.group]["read_to_ms"].as_i64().unwrap_or(0);
    // An invocation back-dated by 40 s (within the lateness, far before the head) and one on
    // time.
    let late_t0 = now_ms() - 40_000;
    let mut puts = f.wave(late_t0, 1);
    // On time, and wholly in the past: a wave's lines span 21 ms, and a run that starts within
    // them would not read its REPORT yet (the run reads up to its own start).
    puts.extend(f.wave(now_ms() - 500, 1));
    f.put(&puts);
    // Run 2: the head only. It does not read the late invocation's time, and forwards the one
    // on time.
    let s = ok(&r.run(&f, args));
    let g = &s["groups"][&f.group];
    assert_eq!(g["swept"], false, "{s}");
    assert!(g["read_from_ms"].as_i64() > Some(late_t0 + 100), "{s}");
    assert_eq!(s["spans_forwarded"], 3, "{s}");
    // Runs until the next sweep is due (20 s after the first): it forwards the late
    // invocation, once.
    let mut forwarded = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = ok(&r.run(&f, args));
        forwarded += s["spans_forwarded"].as_u64().unwrap_or(0);
        let g = &s["groups"][&f.group];
        if g["swept"] == true {
            assert!(
                g["read_from_ms"].as_i64() <= Some(swept_at - 60_000),
                "the sweep reads the lateness before the last one: {s}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no sweep came: {s}");
        assert!(
            g["read_to_ms"].as_i64() < Some(swept_at + 20_000),
            "a run after the sweep was due did not sweep: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(forwarded, 3);
    r.assert_sent_once_but_the_killed_batch(&f);
    f.assert_in_mlflow();
}

/// Issue "Traces worth keeping": with sampling, a trace whose error comes in a later `forward`
/// run than its other spans arrives whole at MLflow (the first run holds them undecided and
/// leaves its cursor before them); a trace the ratio drops, without an error, sends nothing.
#[test]
fn sampled_forward_sends_an_error_trace_split_across_runs_whole_and_nothing_of_a_dropped_one() {
    let t = now_ms();
    let sampling: &[&str] = &[
        "--sample-rate",
        "0.01",
        // Shorter than the first wave's age: only the cursor left before the undecided spans
        // makes the second run read them again.
        "--lateness",
        "20s",
        "--sweep-every",
        "0s",
    ];
    // Trace ids whose low 64 bits start with 0xf: the ratio drops them at any rate below 0.9.
    let dropped_by_ratio = || format!("{}f{}", fresh_id::<8>(), &fresh_id::<8>()[1..]);
    let mut f = Function::new();
    f.trace = dropped_by_ratio();
    let mut quiet = Function::new();
    quiet.trace = dropped_by_ratio();
    let (mut r, mut rq) = (Runner::new("fwd-sampled"), Runner::new("fwd-sampled-quiet"));

    // Run 1: two invocations of each trace, no error yet: nothing decides them.
    let wave = f.wave(t - 50_000, 2);
    f.put(&wave);
    let wave = quiet.wave(t - 50_000, 2);
    quiet.put(&wave);
    let s = ok(&r.run(&f, sampling));
    assert_eq!(s["spans_forwarded"], 0, "{s}");
    assert!(s["skipped"]["held_for_next_run"].as_u64() > Some(0), "{s}");
    ok(&rq.run(&quiet, sampling));

    // Run 2: an error in the same trace, later.
    let error_span = fresh_id::<8>();
    let exec = fresh_id::<8>();
    f.span_ids.insert(error_span.clone());
    let stream = f.streams[0].clone();
    f.put(&[Put {
        stream,
        ts: t - 5_000,
        message: span_line(
            &f.trace,
            &error_span,
            &exec,
            t - 5_010,
            3_000,
            "ce",
            "payment",
        ),
    }]);
    let s = ok(&r.run(&f, sampling));
    assert_eq!(s["sampling"]["kept_traces"]["error"], 1, "{s}");
    ok(&rq.run(&quiet, sampling));
    // The error span's parent is not in the logs: MLflow holds the rest and it.
    let sent = r.sent();
    for id in &f.span_ids {
        assert_eq!(sent.get(id), Some(&1), "span {id}: {sent:?}");
    }
    let trace = mlflow_trace(&f.trace, f.expected(), Duration::from_secs(30));
    let n = trace["trace"]["spans"].as_array().map_or(0, Vec::len);
    assert_eq!(n, f.expected(), "{trace}");
    assert!(rq.sent().is_empty(), "{:?}", rq.sent());
}
