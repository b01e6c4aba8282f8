//! Hostile input and hostile backends (issue 11): the built binary against span lines, Lambda
//! lines and log group names written by an attacker, and against backends that redirect, echo
//! credentials or speak the wrong protocol. Every case asserts the exit code, that the output is
//! bounded, that no raw control character reaches stdout or stderr, and, where a backend is
//! involved, what it received.
//!
//! The inputs are built here, in code: span lines by hand in the format of
//! `src/span_line/FORMAT.md` (so that they can carry what no emitter writes), scripted backends
//! as small tokio servers. Case 9 needs the moto server (`SPANLINE_TEST_MOTO`); the others need
//! no service.

use crate::cloudwatch::{aws_env, iso, logs_client, now_ms, put_events, rt, Put};
use crate::support::{
    assert_printable, fresh_id, run_spanline, scratch, service, spanline_command, spawn_spanline,
    spawn_spanline_measured, wait_spanline, wait_spanline_with_peak_rss, Run,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Span lines, by hand

/// Every control a terminal acts on, in one string: clear screen and scrollback, cursor home,
/// a window title (OSC 0), an OSC 8 hyperlink, the one-byte C1 CSI (U+009B) and another C1,
/// DEL, a carriage return and a backspace.
const HOSTILE: &str = concat!(
    "x\u{1b}[2J\u{1b}[3J\u{1b}[H",
    "\u{1b}]0;pwned\u{7}",
    "\u{1b}]8;;http://evil.example/\u{1b}\\click\u{1b}]8;;\u{1b}\\",
    "\u{9b}31m\u{90}\u{7f}\r\u{8}y",
);

/// A string field of a span line (FORMAT.md §2): bytes 0x00–0x20, DEL, `%` and `;` as `%XX`,
/// a leading `"` or `|` too (for names); all other UTF-8, C1 controls included, as it is.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        let special = (c as u32) <= 0x20
            || c == '\u{7f}'
            || c == '%'
            || c == ';'
            || (i == 0 && (c == '"' || c == '|'));
        if special {
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// A trace id (22 base64url characters) made from a number.
fn trace_id(n: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&0x5eed_0000_0000_0000u64.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

/// A span id (11 base64url characters) made from a non-zero number.
fn span_id(n: u64) -> String {
    assert_ne!(n, 0, "span ids are never zero");
    URL_SAFE_NO_PAD.encode(n.to_be_bytes())
}

/// A span record (FORMAT.md §3): `fields` are written as given (already escaped).
fn span(
    trace: &str,
    id: u64,
    parent: Option<u64>,
    (start_us, dur_us): (u64, u64),
    flags: &str,
    name: &str,
    fields: &str,
) -> String {
    let parent = parent.map(span_id).unwrap_or_default();
    let fields = if fields.is_empty() {
        String::new()
    } else {
        format!(" {fields}")
    };
    format!(
        "SPLN1 {trace}{}{parent} {start_us} {dur_us}{flags} {}{fields};",
        span_id(id),
        esc(name)
    )
}

/// Writes `lines` (one per line) to `name` in `dir` and returns its path as text.
fn input(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("writing the input");
    path.to_string_lossy().into_owned()
}

/// The fixture every backend case sends: 11 spans.
fn sample() -> String {
    format!("{}/fixtures/sample", env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// What every run must satisfy

/// Fails unless the run's output is at most `cap` bytes and carries no raw control character
/// (colour sequences allowed when `sgr`).
fn assert_contained(run: &Run, cap: usize, sgr: bool) {
    let size = run.stdout_bytes.len() + run.stderr_bytes.len();
    assert!(
        size <= cap,
        "{size} bytes of output, more than {cap}\nstderr:\n{}",
        run.stderr
    );
    assert_printable("stdout", &run.stdout_bytes, sgr);
    assert_printable("stderr", &run.stderr_bytes, sgr);
}

/// The checks above can fail: every raw control a terminal acts on is caught, colours only
/// pass where they are allowed.
#[test]
fn the_output_check_catches_every_raw_control() {
    let caught = |bytes: &[u8], sgr: bool| {
        std::panic::catch_unwind(|| assert_printable("test", bytes, sgr)).is_err()
    };
    for bad in [
        &b"a\x1b[2Jb"[..],
        b"\x1b]0;t\x07",
        b"\x1b]8;;http://x/\x1b\\",
        "\u{9b}31m".as_bytes(),
        "\u{85}".as_bytes(),
        b"\x7f",
        b"\r",
        b"\x00",
        b"\x9b",
        b"\xff",
    ] {
        assert!(caught(bad, false), "{bad:?} passed without colours");
        assert!(caught(bad, true), "{bad:?} passed with colours");
    }
    let colour = b"\x1b[1mtrace\x1b[0m \x1b[31;1m\xe2\x9c\x97\x1b[0m\n\tok";
    assert!(caught(colour, false));
    assert!(!caught(colour, true));
    assert!(!caught(
        "plain \\x1b text, ünïcödé, \u{a0}\n".as_bytes(),
        false
    ));
}

fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.status.code(),
        Some(code),
        "exit status {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// The waterfall rows of the trace whose header names `trace_hex` (rows start with two spaces,
/// the header with `trace `), and the span count that header states.
fn rows_of(stdout: &str, trace_hex: &str) -> (usize, usize) {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(&format!("trace {trace_hex}")));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no waterfall for trace {trace_hex}:\n{stdout}"));
    let counted: usize = header
        .split(" · ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no span count in {header:?}"));
    let rows = lines.take_while(|l| l.starts_with("  ")).count();
    (rows, counted)
}

/// The hex form of [`trace_id`]`(n)`, as the waterfall prints it.
fn trace_hex(n: u64) -> String {
    format!("5eed000000000000{n:016x}")
}

// ---------------------------------------------------------------------------------------------
// 1. Absurd times

#[test]
fn a_start_past_u64_nanoseconds_is_drawn_not_a_division_by_zero() {
    let dir = scratch("hostile-time");
    let lines = [
        // 18446744073709552 µs is past u64::MAX ns: `t0 + 1` wrapped and divided by zero.
        span(
            &trace_id(1),
            1,
            None,
            (18_446_744_073_709_552, 5),
            "",
            "absurd",
            "",
        ),
        // 1 µs and 2^64 ns - 1 µs apart in one trace: `off * w` wrapped.
        span(&trace_id(2), 2, None, (1, 1), "", "early", ""),
        span(
            &trace_id(2),
            3,
            Some(2),
            (18_446_744_073_709_551, 1),
            "",
            "late",
            "",
        ),
    ];
    let file = input(&dir, "times.log", &lines);
    let run = run_spanline(&dir, &["convert", &file, "--color", "never"], &[]);
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert_eq!(
        rows_of(&run.stdout, &trace_hex(1)),
        (1, 1),
        "{}",
        run.stdout
    );
    assert_eq!(
        rows_of(&run.stdout, &trace_hex(2)),
        (2, 2),
        "{}",
        run.stdout
    );
    for name in ["absurd", "early", "late"] {
        assert!(
            run.stdout.contains(name),
            "{name} not drawn:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("out of range"), "{}", run.stdout);
    assert!(
        run.stderr.contains("3 span lines") && run.stderr.contains("3 spans"),
        "no summary:\n{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Terminal escape injection

#[test]
fn terminal_escapes_in_names_services_messages_crashes_and_groups_are_made_visible() {
    let dir = scratch("hostile-escapes");
    let (req1, req2) = (
        "3f6c1a52-7b1e-4d2a-9c3b-0e5f6a7b8c9d",
        "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    );
    let t = 1_707_468_164_000i64;
    let at = |ms: i64| iso(t + ms);
    // Node's prefix inside an export line: `<ts> <ts>\t<requestId>\tLEVEL\t<text>`.
    let node = |ms: i64, req: &str, level: &str, text: &str| {
        format!("{} {}\t{req}\t{level}\t{text}", at(ms), at(ms))
    };
    let report = |ms: i64, req: &str, extra: &str| {
        format!(
            concat!(
                "{} REPORT RequestId: {}\tDuration: 30.00 ms\tBilled Duration: 31 ms\t",
                "Memory Size: 128 MB\tMax Memory Used: 60 MB\t{}"
            ),
            at(ms),
            req,
            extra
        )
    };
    let hostile_json = serde_json::to_string(HOSTILE).expect("json");
    let fields = format!(
        "*s={} *m={} attr={}",
        esc(HOSTILE),
        esc(HOSTILE),
        esc(HOSTILE)
    );
    let start_us = (t as u64 + 5) * 1000;
    let hostile_span = span(
        &trace_id(3),
        7,
        None,
        (start_us, 9_000),
        "se",
        HOSTILE,
        &fields,
    );
    let invoke_error = format!(
        "Invoke Error \t{{\"errorType\":\"Error\",\"errorMessage\":{hostile_json},\"stack\":[]}}"
    );
    let lines = [
        // Invocation 1: a span whose name, service and status message carry the escapes, and
        // a handler error (Node's `Invoke Error`) whose errorMessage does.
        format!("{} START RequestId: {req1} Version: $LATEST", at(0)),
        node(10, req1, "INFO", &hostile_span),
        node(20, req1, "ERROR", &invoke_error),
        format!("{} END RequestId: {req1}", at(30)),
        report(30, req1, ""),
        // Invocation 2: the runtime crashed with a message that sets the window title.
        format!("{} START RequestId: {req2} Version: $LATEST", at(100)),
        format!(
            "{} RequestId: {req2} Error: Runtime exited with error: \u{1b}]0;pwned\u{7}{}",
            at(120),
            HOSTILE
        ),
        format!("{} END RequestId: {req2}", at(130)),
        report(130, req2, "Status: error\tError Type: Runtime.ExitError"),
    ];
    let file = input(&dir, "escapes.log", &lines);
    let group = format!("/aws/lambda/fn{HOSTILE}");
    for (color, sgr) in [("never", false), ("always", true)] {
        let run = run_spanline(
            &dir,
            &[
                "convert",
                &file,
                "--log-group-name",
                &group,
                "--color",
                color,
            ],
            &[],
        );
        assert_code(&run, 0);
        assert_contained(&run, 64 << 10, sgr);
        // Everything was drawn, its controls made visible.
        let out = &run.stdout;
        assert!(
            out.contains("\\x1b[2J") && out.contains("\\x1b]0;pwned\\x07"),
            "{out}"
        );
        assert!(out.contains("\\x1b]8;;http://evil.example/"), "{out}");
        assert!(out.contains("\\u{9b}31m") && out.contains("\\x7f"), "{out}");
        // The span (name, service, message), the handler error and the crash, and the group's
        // service on the invocation spans.
        assert!(out.matches("✗").count() >= 3, "errors not drawn:\n{out}");
        assert!(
            out.contains("Runtime exited with error: \\x1b]0;pwned"),
            "{out}"
        );
        assert!(
            out.contains("fnx\\x1b[2J"),
            "the log group's service:\n{out}"
        );
        assert!(run.stderr.contains("1 span lines"), "{}", run.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Log injection

#[test]
fn a_span_line_inside_application_text_is_counted_not_decoded() {
    let dir = scratch("hostile-injection");
    let req = "3f6c1a52-7b1e-4d2a-9c3b-0e5f6a7b8c9d";
    let forged = span(
        &trace_id(4),
        9,
        None,
        (1_000, 5),
        "e",
        "forged",
        "*s=attacker *m=pwned",
    );
    let genuine = span(&trace_id(5), 10, None, (2_000, 5), "", "genuine", "");
    let lines = [
        format!("2024-02-09T08:42:44.078Z\t{req}\tINFO\tsearch query from user: {forged}"),
        format!("2024-02-09T08:42:44.079Z\t{req}\tINFO\t{genuine}"),
    ];
    let file = input(&dir, "injection.log", &lines);
    let run = run_spanline(&dir, &["convert", &file, "--color", "never"], &[]);
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert!(run.stdout.contains("genuine"), "{}", run.stdout);
    for forged in ["forged", "attacker", "pwned", &trace_hex(4)] {
        assert!(
            !run.stdout.contains(forged),
            "{forged} drawn:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stderr.contains(" 1 spans") && run.stderr.contains("(marker_not_at_start: 1)"),
        "{}",
        run.stderr
    );
    // Counted as malformed: `--strict` says so.
    let strict = run_spanline(
        &dir,
        &["convert", &file, "--strict", "--color", "never"],
        &[],
    );
    assert_code(&strict, 3);
    assert_contained(&strict, 16 << 10, false);
}

// ---------------------------------------------------------------------------------------------
// Scripted backends

/// One request a scripted backend received.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A scripted HTTP/1.1 server: answers every request with the response its function builds,
/// and keeps what it received.
struct Backend {
    /// `http://host:port`.
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Backend {
    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A runtime for scripted servers that keeps serving while the test thread waits for the
/// child.
fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts a backend on `host` (any free port).
fn backend(
    rt: &tokio::runtime::Runtime,
    host: &str,
    answer: impl Fn(&Received) -> Vec<u8> + Send + Sync + 'static,
) -> Backend {
    use tokio::io::AsyncWriteExt as _;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind((host, 0)))
        .unwrap_or_else(|e| panic!("binding {host}: {e}"));
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let answer = Arc::new(answer);
    rt.spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (log, answer) = (Arc::clone(&log), Arc::clone(&answer));
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                let resp = answer(&req);
                log.lock().expect("lock").push(req);
                let _ = sock.write_all(&resp).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Backend {
        url: format!("http://{host}:{port}"),
        seen,
    }
}

/// Reads one request: the head up to the blank line, then a `content-length` body. (gRPC's
/// HTTP/2 preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, reads as a head without a body.)
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Received> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0usize);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        head,
        body: buf[head_end..].to_vec(),
    })
}

/// A whole HTTP/1.1 response.
fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Answers 200 with an empty OTLP response to anything: a login page, a wrong host.
fn accepting(rt: &tokio::runtime::Runtime, host: &str) -> Backend {
    backend(rt, host, |_| {
        response("200 OK", &[("content-type", "application/x-protobuf")], b"")
    })
}

/// Fails unless no line of `stderr` reports spans accepted by a backend.
fn assert_nothing_accepted(stderr: &str) {
    for line in stderr.lines().filter(|l| l.contains("accepted")) {
        assert!(
            line.contains(": 0 spans accepted"),
            "spans reported as accepted: {line}\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Redirects

#[test]
fn a_redirect_to_a_login_page_is_not_followed_nor_reported_as_delivered() {
    let rt = server_runtime();
    let login = accepting(&rt, "127.0.0.1");
    let location = format!("{}/login", login.url);
    let loc = location.clone();
    let otlp = backend(&rt, "127.0.0.1", move |_| {
        response("302 Found", &[("location", &loc)], b"moved")
    });
    let dir = scratch("hostile-302");
    let run = run_spanline(
        &dir,
        &["convert", &sample(), "--otlp-endpoint", &otlp.url],
        &[],
    );
    assert_code(&run, 1);
    assert_contained(&run, 16 << 10, false);
    assert_nothing_accepted(&run.stderr);
    assert!(
        run.stderr.contains("302") && run.stderr.contains(&location),
        "the error names the redirect:\n{}",
        run.stderr
    );
    let posts = otlp.seen();
    assert!(!posts.is_empty(), "the endpoint was never asked");
    for p in &posts {
        assert!(p.head.starts_with("POST /v1/traces "), "{}", p.head);
        assert!(!p.body.is_empty(), "an empty export: {}", p.head);
    }
    assert!(
        login.seen().is_empty(),
        "the redirect was followed: {:?}",
        login.seen()
    );
}

#[test]
fn a_cross_host_redirect_gets_neither_the_spans_nor_the_custom_headers() {
    const SECRET: &str = "secret123456";
    let rt = server_runtime();
    // Another host: 127.0.0.2 is a different address on the loopback interface.
    let other = accepting(&rt, "127.0.0.2");
    // The Location itself carries the secret, in its path and query.
    let loc = format!("{}/{SECRET}/v1/traces?key={SECRET}", other.url);
    let otlp = backend(&rt, "127.0.0.1", move |req| {
        // And the body echoes the request head, custom header included.
        response(
            "307 Temporary Redirect",
            &[("location", &loc)],
            req.head.as_bytes(),
        )
    });
    let dir = scratch("hostile-307");
    let header = format!("x-api-key={SECRET}");
    let run = run_spanline(
        &dir,
        &[
            "convert",
            &sample(),
            "--otlp-endpoint",
            &otlp.url,
            "--otlp-header",
            &header,
        ],
        &[],
    );
    assert_code(&run, 1);
    assert_contained(&run, 16 << 10, false);
    assert_nothing_accepted(&run.stderr);
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.to_ascii_lowercase().contains(SECRET),
            "{stream} shows the header value:\n{text}"
        );
    }
    assert!(run.stderr.contains("307"), "{}", run.stderr);
    let posts = otlp.seen();
    assert!(
        posts.iter().any(|p| p
            .head
            .to_ascii_lowercase()
            .contains(&format!("x-api-key: {SECRET}"))),
        "the configured endpoint did not get the header: {posts:?}"
    );
    assert!(
        other.seen().is_empty(),
        "sent to the other host: {:?}",
        other.seen()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Cleartext credentials

/// This machine's own address on the route to 10.255.255.1, when it has one that is not
/// loopback (a UDP `connect` picks the route and sends nothing).
fn own_address() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

#[test]
fn credentials_in_cleartext_to_a_remote_host_are_refused_before_connecting() {
    const TOKEN: &str = "abcdefgh12345";
    let dir = scratch("hostile-cleartext");
    let header = format!("authorization=Bearer {TOKEN}");
    let sample = sample();
    let args = |endpoint: &str, extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "convert",
            &sample,
            "--otlp-endpoint",
            endpoint,
            "--otlp-header",
            &header,
        ];
        a.extend(extra);
        a.into_iter().map(str::to_owned).collect()
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_spanline(&dir, &args, &[]);
        assert_contained(&run, 16 << 10, false);
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.to_ascii_lowercase().contains(TOKEN),
                "token printed:\n{text}"
            );
        }
        run
    };
    let assert_refused = |refused: &Run| {
        assert_code(refused, 1);
        assert!(
            refused.stderr.contains("--allow-insecure") && refused.stderr.contains("authorization"),
            "{}",
            refused.stderr
        );
        assert_nothing_accepted(&refused.stderr);
    };
    assert_refused(&run(&args("http://10.255.255.1:4318", &[])));

    // The same against a server of ours on this machine's non-loopback address: refused
    // without a connection; with --allow-insecure, delivered. (What answers at 10.255.255.1
    // depends on the network, so the allowed case needs a server the test controls.)
    let ip = own_address().expect(
        "this test needs a non-loopback address on this machine, to stand for a remote host",
    );
    let rt = server_runtime();
    let remote = accepting(&rt, &ip);
    assert_refused(&run(&args(&remote.url, &[])));
    assert!(
        remote.seen().is_empty(),
        "connected before refusing: {:?}",
        remote.seen()
    );
    let allowed = run(&args(&remote.url, &["--allow-insecure"]));
    assert_code(&allowed, 0);
    assert!(
        allowed.stderr.contains("11 spans accepted"),
        "{}",
        allowed.stderr
    );
    assert!(
        remote
            .seen()
            .iter()
            .any(|r| r.head.contains(&format!("Bearer {TOKEN}"))),
        "the allowed run did not send the header: {:?}",
        remote.seen()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Secrets echoed by a backend

#[test]
fn a_backend_echoing_the_token_in_any_case_or_encoding_does_not_get_it_printed() {
    // Characters that percent-encoding changes, and both cases.
    const TOKEN: &str = "AbCdEf/Gh+Ij=Kl12345";
    let lower = TOKEN.to_ascii_lowercase();
    let encoded = "AbCdEf%2FGh%2BIj%3DKl12345";
    let rt = server_runtime();
    let echoed = format!(
        "invalid token {lower}; expected {}; got Bearer+{encoded} ({}) \u{1b}]0;owned\u{7}\u{9b}2J",
        TOKEN.to_ascii_uppercase(),
        encoded.to_ascii_lowercase()
    );
    let otlp = backend(&rt, "127.0.0.1", move |_| {
        response(
            "400 Bad Request",
            &[("content-type", "text/plain")],
            echoed.as_bytes(),
        )
    });
    let dir = scratch("hostile-echo");
    let header = format!("authorization=Bearer {TOKEN}");
    let run = run_spanline(
        &dir,
        &[
            "convert",
            &sample(),
            "--otlp-endpoint",
            &otlp.url,
            "--otlp-header",
            &header,
        ],
        &[],
    );
    // Refused by the backend: do not retry.
    assert_code(&run, 5);
    assert_contained(&run, 16 << 10, false);
    assert_nothing_accepted(&run.stderr);
    assert!(run.stderr.contains("400"), "{}", run.stderr);
    assert!(
        run.stderr.contains("\\x1b]0;owned"),
        "the body is shown, escaped:\n{}",
        run.stderr
    );
    for text in [&run.stdout, &run.stderr] {
        let text = text.to_ascii_lowercase();
        for form in [TOKEN.to_ascii_lowercase(), encoded.to_ascii_lowercase()] {
            assert!(!text.contains(&form), "{form} printed:\n{text}");
        }
    }
    assert!(
        otlp.seen()
            .iter()
            .any(|r| r.head.contains(&format!("Bearer {TOKEN}"))),
        "the backend never got the header"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. gRPC to an HTTP/1 server

#[test]
fn grpc_to_an_http1_server_is_unreachable_not_rejected() {
    let rt = server_runtime();
    let http1 = backend(&rt, "127.0.0.1", |_| {
        response(
            "400 Bad Request",
            &[("content-type", "text/html")],
            b"<h1>HTTP/1 only</h1>",
        )
    });
    let dir = scratch("hostile-grpc");
    let run = run_spanline(
        &dir,
        &[
            "convert",
            &sample(),
            "--otlp-protocol",
            "grpc",
            "--otlp-endpoint",
            &http1.url,
            "--retry-deadline",
            "2s",
        ],
        &[],
    );
    assert_code(&run, 4);
    assert_contained(&run, 16 << 10, false);
    assert_nothing_accepted(&run.stderr);
    assert!(
        http1
            .seen()
            .iter()
            .any(|r| r.head.starts_with("PRI * HTTP/2.0")),
        "no gRPC connection reached the server: {:?}",
        http1.seen()
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Outputs that are not regular files

/// How many spans the OTLP JSON lines in `bytes` hold.
fn otlp_json_spans(bytes: &[u8]) -> usize {
    String::from_utf8_lossy(bytes).matches("\"spanId\"").count()
}

#[test]
fn dev_null_a_fifo_and_a_pipe_are_fine_outputs() {
    let dir = scratch("hostile-outputs");

    let null = run_spanline(&dir, &["convert", &sample(), "--output", "/dev/null"], &[]);
    assert_code(&null, 0);
    assert_contained(&null, 16 << 10, false);
    assert!(
        null.stderr.contains("11 spans"),
        "no summary:\n{}",
        null.stderr
    );

    // A FIFO with a reader draining it.
    let fifo = dir.join("spans.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(&fifo)
                .and_then(|mut f| f.read_to_end(&mut got))
                .expect("reading the FIFO");
            got
        })
    };
    let run = run_spanline(
        &dir,
        &["convert", &sample(), "--output", &fifo.to_string_lossy()],
        &[],
    );
    // If spanline never opened the FIFO, the reader still waits in `open`: a writer that
    // opens and closes it lets it go (non-blocking, so this never waits for a reader).
    if !reader.is_finished() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let through_fifo = reader.join().expect("FIFO reader");
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert!(
        run.stderr.contains("11 spans"),
        "no summary:\n{}",
        run.stderr
    );
    assert_eq!(otlp_json_spans(&through_fifo), 11);

    // A pipe: standard output, named as a file and as `-`.
    for target in ["/dev/stdout", "-"] {
        let (run, piped) = run_into_pipe(&dir, &["convert", &sample(), "--output", target]);
        assert_code(&run, 0);
        assert_printable("stdout", &piped, false);
        assert_contained(&run, 16 << 10, false);
        assert!(
            run.stderr.contains("11 spans"),
            "no summary:\n{}",
            run.stderr
        );
        assert_eq!(otlp_json_spans(&piped), 11, "{target}");
    }
}

/// Runs `spanline <args>` with its standard output a pipe that a thread drains: what came
/// through the pipe, and the run (its `stdout` empty).
fn run_into_pipe(dir: &Path, args: &[&str]) -> (Run, Vec<u8>) {
    let mut child = spanline_command(dir, args, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("spanline.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawning the spanline binary");
    let mut pipe = child.stdout.take().expect("the pipe");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = pipe.read_to_end(&mut got);
        got
    });
    std::fs::write(dir.join("spanline.stdout"), b"").expect("stdout file");
    let run = wait_spanline(dir, child, Duration::from_secs(60));
    // The writer has exited, so the reader sees the end of the pipe.
    (run, reader.join().expect("pipe reader"))
}

// ---------------------------------------------------------------------------------------------
// 9. Symbolic links at the checkpoint's lock and temporary files

#[test]
fn forward_does_not_follow_a_symlink_planted_at_its_lock_or_temporary_file() {
    let moto = service("SPANLINE_TEST_MOTO");
    let group = format!("/aws/lambda/spanline-hostile-{}", fresh_id::<4>());
    let stream = format!("2024/05/01/[$LATEST]{}", fresh_id::<16>());
    let client = logs_client();
    rt().block_on(async {
        client
            .create_log_group()
            .log_group_name(&group)
            .send()
            .await
            .expect("CreateLogGroup");
        client
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await
            .expect("CreateLogStream");
    });
    let t = now_ms() - 60_000;
    let trace = trace_id(9);
    let puts: Vec<Put> = (0..3u64)
        .map(|i| Put {
            stream: stream.clone(),
            ts: t + i as i64,
            message: span(
                &trace,
                20 + i,
                None,
                ((t as u64 + i) * 1000, 500),
                "",
                "work",
                "",
            ),
        })
        .collect();
    put_events(&client, &group, &puts);

    let dir = scratch("hostile-symlink");
    let outside = scratch("hostile-symlink-victim");
    let victim = outside.join("precious.txt");
    std::fs::write(&victim, "precious\n").expect("victim");
    let checkpoint = dir.join("checkpoint.json");
    let sent = dir.join("sent.jsonl");
    let at = |suffix: &str| PathBuf::from(format!("{}{suffix}", checkpoint.display()));
    std::os::unix::fs::symlink(&victim, at(".lock")).expect("planting the lock symlink");
    // The temporary file's old, predictable name.
    std::os::unix::fs::symlink(&victim, at(".tmp")).expect("planting the temp symlink");

    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = [
        "forward",
        "--log-group-name",
        &group,
        "--checkpoint",
        &checkpoint.to_string_lossy(),
        "--start-time",
        "1h",
        "--output",
        &sent.to_string_lossy(),
        "--endpoint-url",
        &moto,
    ];
    let run = wait_spanline(
        &dir,
        spawn_spanline(&dir, &args, &env),
        Duration::from_secs(60),
    );
    assert_code(&run, 1);
    assert_contained(&run, 16 << 10, false);
    let lock = at(".lock").display().to_string();
    assert!(
        run.stderr.contains(&lock) && run.stderr.contains("symbolic link"),
        "the error names the lock file and the link:\n{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    assert!(
        !checkpoint.exists(),
        "a checkpoint was written without the lock"
    );
    assert_eq!(
        std::fs::read(&sent).unwrap_or_default().len(),
        0,
        "sent without the lock"
    );

    // Without the lock link, the run works and leaves the temporary file's old name alone.
    std::fs::remove_file(at(".lock")).expect("removing the lock link");
    let run = wait_spanline(
        &dir,
        spawn_spanline(&dir, &args, &env),
        Duration::from_secs(60),
    );
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    assert!(
        std::fs::symlink_metadata(&checkpoint)
            .expect("the checkpoint")
            .file_type()
            .is_file(),
        "the checkpoint is not a regular file"
    );
    let sent = std::fs::read(&sent).expect("the output");
    assert_eq!(otlp_json_spans(&sent), 3);
}

// ---------------------------------------------------------------------------------------------
// 10. Deep and cyclic trees

#[test]
fn a_20000_deep_chain_is_drawn_in_bounded_memory_one_row_per_span() {
    const DEPTH: u64 = 20_000;
    let dir = scratch("hostile-deep");
    let trace = trace_id(10);
    let base = 1_700_000_000_000_000u64;
    let lines: Vec<String> = (1..=DEPTH)
        .map(|i| {
            let parent = (i > 1).then(|| i - 1);
            span(
                &trace,
                i,
                parent,
                (base + i, 2 * (DEPTH - i) + 1),
                "",
                &format!("s{i}"),
                "",
            )
        })
        .collect();
    let file = input(&dir, "deep.log", &lines);
    let child = spawn_spanline_measured(&dir, &["convert", &file, "--color", "never"], &[], false);
    let (run, peak_kib) = wait_spanline_with_peak_rss(&dir, child, Duration::from_secs(120));
    assert_code(&run, 0);
    assert!(
        peak_kib < 256 << 10,
        "peak RSS {} MiB for {DEPTH} spans",
        peak_kib >> 10
    );
    assert_contained(&run, 8 << 20, false);
    let (rows, counted) = rows_of(&run.stdout, &trace_hex(10));
    assert_eq!((rows, counted), (DEPTH as usize, DEPTH as usize));
    // The depth is capped visibly: the deepest row says how many levels it hides.
    let last = run
        .stdout
        .lines()
        .rfind(|l| l.contains(&format!(" s{DEPTH} ")));
    assert!(
        last.is_some_and(|l| l.contains('…')),
        "the deepest row: {last:?}"
    );
    assert!(
        run.stderr.contains(&format!("{DEPTH} spans")),
        "{}",
        run.stderr
    );
}

#[test]
fn self_parented_and_cyclic_spans_are_each_one_row() {
    let dir = scratch("hostile-cycles");
    let trace = trace_id(11);
    let lines = [
        span(&trace, 1, None, (1_000, 100), "", "root", ""),
        span(&trace, 2, Some(1), (1_010, 10), "", "child", ""),
        // Its own parent.
        span(&trace, 3, Some(3), (1_020, 10), "", "selfish", ""),
        // A two-span cycle, and a three-span one with a tail hanging off it.
        span(&trace, 4, Some(5), (1_030, 10), "", "cycle-a", ""),
        span(&trace, 5, Some(4), (1_040, 10), "", "cycle-b", ""),
        span(&trace, 6, Some(8), (1_050, 10), "", "ring-a", ""),
        span(&trace, 7, Some(6), (1_060, 10), "", "ring-b", ""),
        span(&trace, 8, Some(7), (1_070, 10), "", "ring-c", ""),
        span(&trace, 9, Some(8), (1_080, 10), "", "tail", ""),
    ];
    let file = input(&dir, "cycles.log", &lines);
    let run = run_spanline(&dir, &["convert", &file, "--color", "never"], &[]);
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert_eq!(
        rows_of(&run.stdout, &trace_hex(11)),
        (9, 9),
        "{}",
        run.stdout
    );
    for name in [
        "selfish", "cycle-a", "cycle-b", "ring-a", "ring-b", "ring-c", "tail",
    ] {
        let rows = run
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == name))
            .count();
        assert_eq!(rows, 1, "{name}:\n{}", run.stdout);
    }
    assert!(run.stdout.contains('↺'), "no cycle marker:\n{}", run.stdout);
}

// ---------------------------------------------------------------------------------------------
// 11. Invalid UTF-8

#[test]
fn invalid_utf8_in_a_span_line_is_counted_lossy_not_decoded() {
    let dir = scratch("hostile-utf8");
    let trace = trace_id(12);
    let mut bytes = span(&trace, 1, None, (1_000, 5), "", "bad@@name", "").into_bytes();
    let at = bytes
        .windows(2)
        .position(|w| w == b"@@")
        .expect("placeholder");
    bytes[at..at + 2].copy_from_slice(b"\xff\xfe");
    bytes.push(b'\n');
    bytes.extend_from_slice(span(&trace, 2, None, (2_000, 5), "", "fine", "").as_bytes());
    bytes.push(b'\n');
    let file = dir.join("utf8.log");
    std::fs::write(&file, &bytes).expect("input");
    let run = run_spanline(
        &dir,
        &["convert", &file.to_string_lossy(), "--color", "never"],
        &[],
    );
    assert_code(&run, 0);
    assert_contained(&run, 16 << 10, false);
    assert!(run.stdout.contains("fine"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("bad"),
        "the span with replaced bytes was decoded:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(" 1 spans") && run.stderr.contains("(lossy_utf8: 1)"),
        "{}",
        run.stderr
    );
}
