//! Helpers shared by the integration tests that talk to real services: service URLs, plain
//! HTTP, polling, ids, MLflow queries, running the CLI.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The URL of a test service from the environment written by `tests/services.sh start`.
pub fn service(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{var} is not set: the end-to-end tests need the real backends. Start them with \
             `bash tests/services.sh start && source target/test-services/env` \
             (tests/run.sh does this), then run the tests again"
        ),
    }
}

/// `GET url` → (status, body). A fresh current-thread runtime per call keeps the tests plain
/// `#[test]`s (reqwest's blocking client is not enabled).
pub fn http_get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e} (is the service running?)"));
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        (status, body)
    })
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A random non-zero id of `N` bytes, as hex.
pub fn fresh_id<const N: usize>() -> String {
    loop {
        let b: [u8; N] = rand::random();
        if b.iter().any(|&x| x != 0) {
            return hex(&b);
        }
    }
}

/// The trace as MLflow returns it, once it holds at least `spans` spans; waits up to `timeout`
/// (zero: one look, for direct ingestion, which MLflow stores before it answers).
pub fn mlflow_trace(trace: &str, spans: usize, timeout: Duration) -> Value {
    let url = format!(
        "{}/api/3.0/mlflow/traces/get?trace_id=tr-{trace}",
        service("SPANLINE_TEST_MLFLOW")
    );
    let mut last = (0, String::new());
    let found = poll(timeout, || {
        last = http_get(&url);
        match last.0 {
            200 => {
                let v: Value = serde_json::from_str(&last.1)
                    .unwrap_or_else(|e| panic!("MLflow: {e}: {}", last.1));
                let n = v["trace"]["spans"].as_array().map_or(0, Vec::len);
                (n >= spans).then_some(v)
            }
            404 => None,
            code => panic!("GET {url}: {code}: {}", last.1),
        }
    });
    found.unwrap_or_else(|| {
        panic!(
            "MLflow has no trace {trace} with {spans} spans after {timeout:?}; last answer {}: {}",
            last.0, last.1
        )
    })
}

/// What a finished `spanline` run left: the exit status and what it wrote, as text (invalid
/// UTF-8 replaced, so a stray byte cannot empty a string an assertion looks into) and as the
/// raw bytes (for what must not reach a terminal).
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr_bytes: Vec<u8>,
}

/// `spanline <args>` with `env`, without the caller's `OTEL_*`, `AWS_*` and
/// `SPANLINE_ALLOW_INSECURE` variables (they must not redirect or loosen a test) and with no
/// AWS configuration files, standard input closed; the caller
/// chooses where its output goes.
pub fn spanline_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spanline"));
    prepare(&mut cmd, dir, args, env);
    cmd
}

/// Adds `args` and the environment of [`spanline_command`] to `cmd`.
fn prepare(cmd: &mut Command, dir: &Path, args: &[&str], env: &[(&str, &str)]) {
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("AWS_") || k == "SPANLINE_ALLOW_INSECURE" {
            cmd.env_remove(&*k);
        }
    }
    cmd.env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
}

/// Starts `spanline <args>` (see [`spanline_command`]), output captured in files under `dir`.
pub fn spawn_spanline(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    spanline_command(dir, args, env)
        .stdout(std::fs::File::create(dir.join("spanline.stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("spanline.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawning the spanline binary")
}

/// What a run spawned by [`spawn_spanline`] left in `dir`, once it exited with `status`.
fn captured(dir: &Path, status: ExitStatus) -> Run {
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap_or_default();
    let (stdout_bytes, stderr_bytes) = (read("spanline.stdout"), read("spanline.stderr"));
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stderr: String::from_utf8_lossy(&stderr_bytes).into_owned(),
        stdout_bytes,
        stderr_bytes,
    }
}

/// Waits for a spawned run (at most `timeout`, then kills it and fails the test).
pub fn wait_spanline(dir: &Path, mut child: std::process::Child, timeout: Duration) -> Run {
    let status = poll(timeout, || child.try_wait().expect("wait"));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "spanline did not finish in {timeout:?}\nstderr:\n{}",
            captured(dir, ExitStatus::default()).stderr
        );
    };
    captured(dir, status)
}

/// Starts `spanline <args>` as [`spawn_spanline`] does (standard input piped when `piped`),
/// through `tests/peak_rss.py`, which reports the run's peak resident set size to
/// [`wait_spanline_with_peak_rss`]. A child spawned straight from the test process would
/// start with the test process's peak (the kernel keeps it across exec), whatever the
/// binary itself uses. [`stop_measured`] ends such a run.
pub fn spawn_spanline_measured(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    piped: bool,
) -> std::process::Child {
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peak_rss.py");
    let mut cmd = Command::new("python3");
    cmd.arg(wrapper)
        .arg(dir.join("spanline.peak-rss"))
        .arg(env!("CARGO_BIN_EXE_spanline"));
    prepare(&mut cmd, dir, args, env);
    if piped {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(std::fs::File::create(dir.join("spanline.stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("spanline.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawning python3 tests/peak_rss.py (python3 is required by the suite)")
}

/// Ends a run started by [`spawn_spanline_measured`] (its peak is still reported).
pub fn stop_measured(child: &std::process::Child) {
    // SAFETY: signalling our own child, not yet reaped, by its id.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

/// [`wait_spanline`] for a run started by [`spawn_spanline_measured`], and its peak resident
/// set size in KiB.
pub fn wait_spanline_with_peak_rss(
    dir: &Path,
    child: std::process::Child,
    timeout: Duration,
) -> (Run, u64) {
    let run = wait_spanline(dir, child, timeout);
    let peak = std::fs::read_to_string(dir.join("spanline.peak-rss"))
        .unwrap_or_else(|e| panic!("no peak RSS from tests/peak_rss.py: {e}\n{}", run.stderr));
    (run, peak.trim().parse().expect("a number of KiB"))
}

/// Runs `spanline <args>` to the end (at most 60 s).
pub fn run_spanline(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let child = spawn_spanline(dir, args, env);
    wait_spanline(dir, child, Duration::from_secs(60))
}

/// A fresh scratch directory under target/tmp.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", fresh_id::<6>()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Fails unless `bytes` (what a run wrote to `stream`) is UTF-8 without a raw control
/// character a terminal would act on: no C0 control but newline and tab, no DEL, no C1
/// control (U+0080–U+009F, the CSI U+009B among them), and no ESC, except, when `sgr` is true,
/// in a colour sequence `ESC [ <digits and ;> m` (what `--color always` draws).
pub fn assert_printable(stream: &str, bytes: &[u8], sgr: bool) {
    let context = |at: usize| {
        let from = at.saturating_sub(60);
        let to = (at + 60).min(bytes.len());
        format!("{:?}", String::from_utf8_lossy(&bytes[from..to]))
    };
    let mut at = 0;
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let raw = match c {
                '\n' | '\t' => false,
                '\u{1b}' if sgr => {
                    // ESC [ digits/; m, nothing else.
                    let rest = &text.as_bytes()[i + 1..];
                    let params = rest
                        .get(1..)
                        .unwrap_or_default()
                        .iter()
                        .take_while(|b| b.is_ascii_digit() || **b == b';')
                        .count();
                    let sgr_seq =
                        rest.first() == Some(&b'[') && rest.get(1 + params) == Some(&b'm');
                    if sgr_seq {
                        for _ in 0..params + 2 {
                            chars.next();
                        }
                    }
                    !sgr_seq
                }
                c => c.is_control(),
            };
            assert!(
                !raw,
                "{stream}: raw control character {c:?} at byte {}: {}",
                at + i,
                context(at + i)
            );
        }
        at += text.len();
        assert!(
            chunk.invalid().is_empty(),
            "{stream}: bytes that are not UTF-8 ({:02x?}) at byte {at}: {}",
            chunk.invalid(),
            context(at)
        );
        at += chunk.invalid().len();
    }
}
