//! Peak memory of the binary on large and hostile inputs (README, "Limits"): every case runs
//! `spanline` as a child process and reads its peak resident set size from `wait4`, and checks
//! what came out, so that a run which stayed small by dropping data fails too.
//!
//! The sizes are scaled so that the suite's debug build runs each case in seconds;
//! `SPANLINE_MEMORY_FULL=1` runs the sizes the README quotes (1 M span lines, a 2 GiB line,
//! 1 GiB gzip bombs and files, 5 M FilterLogEvents events). The bound is 64 MiB either way.

use crate::cloudwatch::{aws_env, fresh_bucket, s3_client};
use crate::lambda::{gzip, kinesis_event, refusing_backend, request_id, runtime_api, Invocation};
use crate::support::{
    fresh_id, poll, scratch, service, spawn_spanline_measured, stop_measured,
    wait_spanline_with_peak_rss, Run,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The bound every case must stay under, in KiB.
const MAX_RSS_KIB: u64 = 64 << 10;

/// How long one case may take (a debug build on a busy 2-core machine).
const TIMEOUT: Duration = Duration::from_secs(600);

fn full() -> bool {
    std::env::var("SPANLINE_MEMORY_FULL").is_ok_and(|v| v == "1")
}

/// `scaled` normally, `full_size` under `SPANLINE_MEMORY_FULL=1`.
fn sized(scaled: u64, full_size: u64) -> u64 {
    if full() {
        full_size
    } else {
        scaled
    }
}

fn assert_bounded(case: &str, peak_kib: u64, run: &Run) {
    eprintln!("{case}: peak RSS {} KiB", peak_kib);
    assert!(
        peak_kib > 0 && peak_kib <= MAX_RSS_KIB,
        "{case}: peak RSS {} MiB, the bound is {} MiB\nstderr:\n{}",
        peak_kib >> 10,
        MAX_RSS_KIB >> 10,
        run.stderr
    );
}

fn assert_exit(run: &Run, code: i32) {
    assert_eq!(
        run.status.code(),
        Some(code),
        "{}\nstderr:\n{}",
        run.status,
        run.stderr
    );
}

/// Span line `i` of a run: its own trace, span id `i + 1`, a millisecond apart.
fn span_line(nonce: u64, i: u64, name: &str) -> String {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&nonce.to_be_bytes());
    trace[8..].copy_from_slice(&(i + 1).to_be_bytes());
    let ids = format!(
        "{}{}",
        URL_SAFE_NO_PAD.encode(trace),
        URL_SAFE_NO_PAD.encode((i + 1).to_be_bytes())
    );
    format!(
        "SPLN1 {ids} {} 1500 {name} memory.case=1;",
        1_700_000_000_000_000 + i * 1000
    )
}

fn nonce() -> u64 {
    u64::from_str_radix(&fresh_id::<8>(), 16).expect("hex")
}

/// Spans in a file of OTLP JSON lines.
fn spans_in(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap_or_default();
    memchr::memmem::find_iter(&bytes, b"\"spanId\"").count()
}

/// Writes `n` bytes of `byte` to `w`.
fn fill(w: &mut impl Write, byte: u8, n: u64) -> std::io::Result<()> {
    let block = vec![byte; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        w.write_all(&block[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// Feeds `n` span lines to `spanline <args>` on standard input, the second half only once
/// `written` (the run's output) is not empty: spans must come out while input is still being
/// read. Returns the run, its peak RSS and whether output came before the input ended.
fn span_lines_on_stdin(dir: &Path, args: &[&str], n: u64, written: &Path) -> (Run, u64, bool) {
    let mut child = spawn_spanline_measured(dir, args, &[], true);
    let mut stdin = child.stdin.take().expect("stdin");
    let written = written.to_owned();
    let feeder = std::thread::spawn(move || {
        let nonce = nonce();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        let mut early = false;
        for i in 0..n {
            if i == n / 2 {
                if w.flush().is_err() {
                    return false;
                }
                early = poll(Duration::from_secs(120), || {
                    std::fs::metadata(&written)
                        .is_ok_and(|m| m.len() > 0)
                        .then_some(())
                })
                .is_some();
            }
            if writeln!(w, "{}", span_line(nonce, i, "op")).is_err() {
                return early;
            }
        }
        let _ = w.flush();
        early
    });
    let (run, peak) = wait_spanline_with_peak_rss(dir, child, TIMEOUT);
    let early = feeder.join().expect("the feeder");
    (run, peak, early)
}

#[test]
fn a_million_span_lines_on_stdin_are_sent_as_they_come_in_bounded_memory() {
    let n = sized(200_000, 1_000_000);
    let dir = scratch("memory-stdin");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let (run, peak, early) =
        span_lines_on_stdin(&dir, &["convert", "-", "--output", &out_arg], n, &out);
    assert_exit(&run, 0);
    assert!(early, "nothing was written before the input ended");
    assert_eq!(spans_in(&out) as u64, n, "{}", run.stderr);
    assert_bounded("span lines on stdin to a file", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_million_span_lines_on_stdin_are_drawn_in_the_terminal_in_bounded_memory() {
    let n = sized(200_000, 1_000_000);
    let dir = scratch("memory-terminal");
    let stdout = dir.join("spanline.stdout");
    let (run, peak, early) =
        span_lines_on_stdin(&dir, &["convert", "-", "--color", "never"], n, &stdout);
    assert_exit(&run, 0);
    assert!(early, "nothing was drawn before the input ended");
    let traces = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("trace "))
        .count() as u64;
    assert_eq!(traces, n, "{}", run.stderr);
    assert_bounded("span lines on stdin to the terminal", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sampling holds the spans of undecided traces: with a wait longer than the input, every
/// trace the ratio drops is held until the bound, then decided early and counted.
#[test]
fn sampling_holds_at_most_its_bound_of_undecided_spans() {
    let n = sized(200_000, 1_000_000);
    let dir = scratch("memory-sampling");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let args = [
        "convert",
        "-",
        "--output",
        &out_arg,
        "--sample-rate",
        "0",
        "--sample-wait",
        "1h",
    ];
    let mut child = spawn_spanline_measured(&dir, &args, &[], true);
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let nonce = nonce();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        for i in 0..n {
            let line = span_line(nonce, i, "op");
            // Every 1,000th span is an error: its trace is kept.
            let line = if i % 1_000 == 0 {
                line.replacen(" 1500 ", " 1500e ", 1)
            } else {
                line
            };
            if writeln!(w, "{line}").is_err() {
                return;
            }
        }
        let _ = w.flush();
    });
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    feeder.join().expect("the feeder");
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out) as u64, n / 1_000, "{}", run.stderr);
    assert!(run.stderr.contains("sample_held: "), "{}", run.stderr);
    let counts = format!(
        "dropped {} traces and {} spans",
        n - n / 1_000,
        n - n / 1_000
    );
    assert!(run.stderr.contains(&counts), "{}", run.stderr);
    assert_bounded("sampling, spans held undecided", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_line_without_end_is_skipped_in_bounded_memory_and_counted() {
    let len = sized(512 << 20, 2 << 30);
    let dir = scratch("memory-long-line");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let mut child =
        spawn_spanline_measured(&dir, &["convert", "-", "--output", &out_arg], &[], true);
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        let nonce = nonce();
        writeln!(stdin, "{}", span_line(nonce, 0, "before"))?;
        fill(&mut stdin, b'x', len)?;
        writeln!(stdin)?;
        writeln!(stdin, "{}", span_line(nonce, 1, "after"))?;
        // And one more, ended by the end of the input instead of a newline.
        fill(&mut stdin, b'y', len)
    });
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    feeder.join().expect("the feeder").expect("writing stdin");
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out), 2, "{}", run.stderr);
    assert!(run.stderr.contains("max_line: 2"), "{}", run.stderr);
    assert_bounded("lines without end on stdin", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The start of a subscription payload, in CloudWatch's key order, up to its first event (a
/// span line) and the comma after it.
fn payload_head(nonce: u64) -> String {
    let first = json!({"id": "0", "timestamp": 1_700_000_000_000i64,
                       "message": span_line(nonce, 0, "first")});
    format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/bomb","logStream":"2024/05/01/[$LATEST]0123","subscriptionFilters":["spanline"],"logEvents":[{first}"#
    )
}

/// A subscription payload whose first event is a span line and whose events then go on past
/// `size` bytes (4 KiB of text each), gzipped: a bomb of valid JSON.
fn bomb_of_events(nonce: u64, size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let head = payload_head(nonce);
    let head = head.as_str();
    gz.write_all(head.as_bytes()).unwrap();
    let event = format!(
        r#",{{"id":"1","timestamp":1700000000001,"message":"{}"}}"#,
        "x".repeat(4096)
    );
    let mut written = head.len() as u64;
    while written < size {
        gz.write_all(event.as_bytes()).unwrap();
        written += event.len() as u64;
    }
    gz.write_all(b"]}").unwrap();
    gz.finish().unwrap()
}

/// A subscription payload whose second event's message never ends, gzipped.
fn bomb_of_one_string(nonce: u64, size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let head = payload_head(nonce);
    let head = head.as_str();
    gz.write_all(head.as_bytes()).unwrap();
    gz.write_all(br#",{"id":"1","timestamp":1700000000001,"message":""#)
        .unwrap();
    fill(&mut gz, b'x', size).unwrap();
    gz.finish().unwrap()
}

#[test]
fn gzip_bombs_in_payload_files_stop_at_their_limit_in_bounded_memory() {
    let size = sized(320 << 20, 1 << 30);
    let dir = scratch("memory-payload-bomb");
    let nonce = nonce();
    let events = dir.join("events.json.gz");
    std::fs::write(&events, bomb_of_events(nonce, size)).unwrap();
    let string = dir.join("string.json.gz");
    std::fs::write(&string, bomb_of_one_string(nonce ^ 1, size)).unwrap();
    for (bomb, limit) in [(&events, "256 MiB"), (&string, "--max-line")] {
        let bomb_arg = bomb.to_string_lossy().into_owned();
        let out = bomb.with_extension("out");
        let out_arg = out.to_string_lossy().into_owned();
        let child = spawn_spanline_measured(
            &dir,
            &["convert", &bomb_arg, "--output", &out_arg],
            &[],
            false,
        );
        let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
        // The payload is reported with the limit it passed; what came before is converted.
        assert_exit(&run, 1);
        assert!(
            run.stderr.contains(&*bomb_arg) && run.stderr.contains(limit),
            "{}",
            run.stderr
        );
        assert_eq!(spans_in(&out), 1, "{}", run.stderr);
        assert_bounded(&format!("payload bomb {bomb_arg}"), peak, &run);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Export-file lines (`<ISO>Z <message>`) of `size` bytes: a span line first and last, 4 KiB
/// of text in between, gzipped.
fn export_gz(nonce: u64, size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let ts = "2024-05-01T12:00:00.000Z";
    writeln!(gz, "{ts} {}", span_line(nonce, 0, "first")).unwrap();
    let line = format!("{ts} {}\n", "x".repeat(4096));
    let mut written = 0u64;
    while written < size {
        gz.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
    }
    writeln!(
        gz,
        "2024-05-01T12:00:01.000Z {}",
        span_line(nonce, 1, "last")
    )
    .unwrap();
    gz.finish().unwrap()
}

#[test]
fn an_export_gz_that_inflates_to_a_gigabyte_streams_in_bounded_memory() {
    let size = sized(256 << 20, 1 << 30);
    let dir = scratch("memory-export-gz");
    let tree = dir.join("export/0f9c5ad2-task/2024/05/01/[$LATEST]0123");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("000000.gz"), export_gz(nonce(), size)).unwrap();
    let out = dir.join("spans.jsonl");
    let (export, out_arg) = (
        dir.join("export").to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let child = spawn_spanline_measured(
        &dir,
        &[
            "convert",
            &export,
            "--log-group-name",
            "/aws/lambda/f",
            "--output",
            &out_arg,
        ],
        &[],
        false,
    );
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out), 2, "{}", run.stderr);
    // Larger than one sort window: sorted window by window, and the summary says so.
    assert!(run.stderr.contains("export_sort_window"), "{}", run.stderr);
    assert_bounded("export .gz", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gigabyte_file_streams_in_bounded_memory() {
    let size = sized(256 << 20, 1 << 30);
    let dir = scratch("memory-file");
    let file = dir.join("stdout.log");
    let nonce = nonce();
    let mut spans = 0u64;
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let text = "y".repeat(2000);
        let mut written = 0u64;
        while written < size {
            // One span line in eight, the rest application output.
            let line = if written.is_multiple_of(8 * 2001) || spans == 0 {
                spans += 1;
                span_line(nonce, spans, "op")
            } else {
                text.clone()
            };
            writeln!(w, "{line}").unwrap();
            written += line.len() as u64 + 1;
        }
    }
    let out = dir.join("spans.jsonl");
    let (file_arg, out_arg) = (
        file.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let child = spawn_spanline_measured(
        &dir,
        &["convert", &file_arg, "--output", &out_arg],
        &[],
        false,
    );
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out) as u64, spans, "{}", run.stderr);
    assert_bounded("a large file", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_large_export_object_in_s3_is_streamed_in_bounded_memory() {
    let moto = service("SPANLINE_TEST_MOTO");
    let s3 = s3_client();
    let bucket = fresh_bucket(&s3);
    let nonce = nonce();
    // Span lines of random ids compress poorly: the object is several MiB, fetched as a stream.
    let n = sized(120_000, 1_000_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..n {
        let ms = i % 60_000;
        writeln!(
            gz,
            "2024-05-01T12:{:02}:{:02}.{:03}Z {}",
            ms / 60_000,
            ms / 1000 % 60,
            ms % 1000,
            span_line(nonce, i, &fresh_id::<6>())
        )
        .unwrap();
    }
    let object = gz.finish().unwrap();
    assert!(
        object.len() as i64 > spanline::convert::source::s3::WHOLE_OBJECT_BYTES,
        "{} bytes",
        object.len()
    );
    crate::cloudwatch::rt().block_on(async {
        s3.put_object()
            .bucket(&bucket)
            .key("exports/0f9c5ad2-task/2024/05/01/[$LATEST]0123/000000.gz")
            .body(object.into())
            .send()
            .await
            .expect("PutObject");
    });
    let dir = scratch("memory-s3");
    let out = dir.join("spans.jsonl");
    let (url, out_arg) = (
        format!("s3://{bucket}/exports/"),
        out.to_string_lossy().into_owned(),
    );
    let env = aws_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = spawn_spanline_measured(
        &dir,
        &[
            "convert",
            &url,
            "--log-group-name",
            "/aws/lambda/f",
            "--endpoint-url",
            &moto,
            "--output",
            &out_arg,
        ],
        &env,
        false,
    );
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out) as u64, n, "{}", run.stderr);
    assert_bounded("a large S3 export object", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_lambda_handler_answers_gzip_bombs_with_a_record_failure_in_bounded_memory() {
    let size = sized(320 << 20, 1 << 30);
    let server = crate::lambda::rt();
    // Nothing is refused: the poison is a trace id no span has.
    let backend = server.block_on(refusing_backend([0xa5; 16]));
    let group = format!("/aws/lambda/spanline-bomb-{}", fresh_id::<4>());
    let good = Invocation::new(&group, &fresh_id::<16>());
    let (kinesis, seqs) = kinesis_event(&[
        gzip(good.payload().as_bytes()),
        bomb_of_events(nonce(), size),
        bomb_of_one_string(nonce(), size),
    ]);
    let ids: Vec<String> = (0..1).map(|_| request_id()).collect();
    let (addr, posted) = server.block_on(runtime_api(vec![(ids[0].clone(), kinesis)]));
    let dir = scratch("memory-lambda");
    let traces = backend.url.trim_end_matches("/v1/traces").to_owned();
    let env = [
        ("AWS_LAMBDA_RUNTIME_API", addr.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "spanline-forwarder"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", traces.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("SPANLINE_FETCH_BACK", "off"),
    ];
    let mut child = spawn_spanline_measured(&dir, &["lambda"], &env, false);
    let answered = poll(TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "spanline lambda exited with {status}\nstderr:\n{}",
                std::fs::read_to_string(dir.join("spanline.stderr")).unwrap_or_default()
            );
        }
        (!posted.lock().unwrap().is_empty()).then_some(())
    });
    stop_measured(&child);
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    assert!(answered.is_some(), "no answer\nstderr:\n{}", run.stderr);
    let posted = posted.lock().unwrap().clone();
    assert_eq!(
        (posted[0].0.as_str(), posted[0].1.as_str(), &posted[0].2),
        (
            ids[0].as_str(),
            "response",
            &json!({"batchItemFailures": [
                {"itemIdentifier": seqs[1]}, {"itemIdentifier": seqs[2]}
            ]})
        ),
        "stderr:\n{}",
        run.stderr
    );
    // The good record's spans went out, and the first span line of each bomb too.
    let seen: Vec<(bool, u16)> = backend.seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|(_, s)| *s == 200),
        "{seen:?}"
    );
    assert_bounded("Kinesis records that are gzip bombs", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FilterLogEvents endpoint that serves `total` span-line events in pages of 10,000, made
/// as they are asked for. Returns its URL and the number of pages served.
async fn filter_pages(
    nonce: u64,
    total: u64,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PAGE: u64 = 10_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let count = std::sync::Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let (head_end, len) = loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                let page: u64 = req["nextToken"]
                    .as_str()
                    .and_then(|t| t.strip_prefix('p'))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let first = page * PAGE;
                let last = (first + PAGE).min(total);
                let events: Vec<Value> = (first..last)
                    .map(|i| {
                        let ts = 1_714_564_800_000i64 + (i / 100) as i64;
                        json!({
                            "logStreamName": "2024/05/01/[$LATEST]0123", "timestamp": ts,
                            "ingestionTime": ts + 5, "eventId": format!("{i:056}"),
                            "message": span_line(nonce, i, "op"),
                        })
                    })
                    .collect();
                let mut body = json!({ "events": events, "searchedLogStreams": [] });
                if last < total {
                    body["nextToken"] = json!(format!("p{}", page + 1));
                }
                let body = body.to_string();
                count.fetch_add(1, Ordering::Relaxed);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, served)
}

#[test]
fn read_streams_millions_of_events_page_by_page_in_bounded_memory() {
    let total = sized(200_000, 5_000_000);
    let server = crate::lambda::rt();
    let (url, served) = server.block_on(filter_pages(nonce(), total));
    let dir = scratch("memory-filter");
    let out = dir.join("spans.jsonl");
    let out_arg = out.to_string_lossy().into_owned();
    let env = aws_env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let child = spawn_spanline_measured(
        &dir,
        &[
            "read",
            "--log-group-name",
            "/aws/lambda/f",
            "--start-time",
            "2024-05-01T00:00:00Z",
            "--end-time",
            "2024-05-02T00:00:00Z",
            "--output",
            &out_arg,
        ],
        &env,
        false,
    );
    let (run, peak) = wait_spanline_with_peak_rss(&dir, child, TIMEOUT);
    assert_exit(&run, 0);
    assert_eq!(spans_in(&out) as u64, total, "{}", run.stderr);
    assert_eq!(
        served.load(std::sync::atomic::Ordering::Relaxed),
        total.div_ceil(10_000)
    );
    assert_bounded("FilterLogEvents pages", peak, &run);
    let _ = std::fs::remove_dir_all(&dir);
}
