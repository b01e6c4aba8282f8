//! The Lambda mode's sampling requests when 1 % of traces are errors (issue "Traces worth
//! keeping", target: the read-back stays within its request budget).
//!
//! `cargo bench --bench sampling` (no services: the handler reads back from records in memory
//! and records decisions in memory, counting each request it would make). 400 events of 50
//! traces each, every trace's three spans split over two consecutive events, 1 % of the traces
//! with an error in their second event, sampled at 10 %. Per event: the FilterLogEvents reads
//! of the read-back, the decision records written (PUT) and looked up (HEAD), against the
//! bounds (`MAX_CAUSED_PER_EVENT` traces read back, `MAX_CHECKS_PER_EVENT` look-ups) and
//! against the read-back's budget of 2 requests a second per instance (the time those reads
//! need at that rate). Ends with one JSON line of its figures.

use spanline::convert::lambda::{
    Decisions, FetchBack, Handler, LambdaSampling, MAX_CAUSED_PER_EVENT, MAX_CHECKS_PER_EVENT,
};
use spanline::convert::record::LogRecord;
use spanline::convert::sample::Policy;
use spanline::convert::sink::MemorySink;
use std::sync::Arc;

const EVENTS: usize = 400;
const TRACES_PER_EVENT: usize = 50;
const ERROR_EVERY: usize = 100;
const GROUP: &str = "/aws/lambda/orders";
const STREAM: &str = "2026/12/03/[$LATEST]0123456789abcdef0123456789abcdef";
/// The read-back's budget per instance (`spanline lambda`'s FetchBack).
const READ_BACK_TPS: f64 = 2.0;

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// splitmix64, for trace ids spread over the whole range.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn line(trace: &[u8; 16], span: u64, parent: Option<u64>, t_ms: i64, error: bool) -> String {
    format!(
        "SPLN1 {}{}{} {} 1000s{} op;",
        b64(trace),
        b64(&span.to_be_bytes()),
        parent.map_or(String::new(), |p| b64(&p.to_be_bytes())),
        t_ms * 1000 - 1000,
        if error { "e" } else { "" }
    )
}

fn event(lines: &[(i64, String)]) -> serde_json::Value {
    use base64::Engine as _;
    use std::io::Write as _;
    let events: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (t, m))| serde_json::json!({"id": i.to_string(), "timestamp": t, "message": m}))
        .collect();
    let p = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": GROUP,
        "logStream": STREAM, "subscriptionFilters": ["spanline"], "logEvents": events,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(p.to_string().as_bytes()).expect("gzip");
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    serde_json::json!({"awslogs": {"data": data}})
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sampling: bench");
        return;
    }
    let t0 = spanline::convert::time::now_ms() - 600_000;
    // Trace k: spans 1 and 2 in event k / TRACES_PER_EVENT, span 3 (the error for 1 %) in the
    // next event.
    let mut deliveries: Vec<Vec<(i64, String)>> = vec![Vec::new(); EVENTS + 1];
    let mut errors = 0;
    for k in 0..EVENTS * TRACES_PER_EVENT {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&mix(2 * k as u64).to_be_bytes());
        trace[8..].copy_from_slice(&mix(2 * k as u64 + 1).to_be_bytes());
        let e = k / TRACES_PER_EVENT;
        let t = t0 + k as i64;
        let id = 1 + 3 * k as u64;
        deliveries[e].push((t, line(&trace, id + 1, Some(id), t, false)));
        deliveries[e].push((t, line(&trace, id, None, t + 1, false)));
        let error = k % ERROR_EVERY == 7;
        errors += usize::from(error);
        deliveries[e + 1].push((t + 50, line(&trace, id + 2, Some(id), t + 50, error)));
    }
    let decisions = Decisions::Memory(Arc::default());
    let policy = Policy {
        rate: 0.1,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // What the read-back can find: the lines of the last events (a trace's lines are at most
    // two events apart here; older ones would only slow the in-memory search).
    let mut ingested: std::collections::VecDeque<Vec<LogRecord>> = Default::default();
    let (mut reads, mut puts, mut heads, mut over) = (Vec::new(), 0u64, Vec::new(), 0u64);
    let mut sent = 0u64;
    let started = std::time::Instant::now();
    for d in &deliveries {
        ingested.push_back(
            d.iter()
                .map(|(t, m)| LogRecord {
                    log_group: GROUP.into(),
                    log_stream: STREAM.into(),
                    event_id: String::new(),
                    timestamp_ms: *t,
                    message: m.clone(),
                })
                .collect(),
        );
        if ingested.len() > 3 {
            ingested.pop_front();
        }
        // A fresh instance per event: nothing remembered but the records.
        let sink = MemorySink::default();
        let mut h = Handler::new(sink.clone());
        h.fetch_back = Some(FetchBack::Memory(
            ingested.iter().flatten().cloned().collect(),
        ));
        h.sampling = Some(LambdaSampling::new(
            policy.clone(),
            decisions.clone(),
            Vec::new(),
        ));
        let (report, r) = runtime.block_on(h.handle(event(d), None));
        r.expect("delivered");
        let s = report.sampling.expect("sampling report");
        reads.push(s.read_back_reads);
        heads.push(s.checked);
        puts += s.recorded;
        over += s.over_budget;
        sent += sink.spans().len() as u64;
    }
    let elapsed = started.elapsed();
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let read_max = max(&reads);
    let read_bound = MAX_CAUSED_PER_EVENT as u64 * (1 + 8);
    println!("| per event ({} events, {TRACES_PER_EVENT} traces each, {errors} error traces) | mean | max | bound |", deliveries.len());
    println!("|---|---:|---:|---:|");
    println!(
        "| FilterLogEvents reads (read-back) | {:.2} | {read_max} | {read_bound} ({} traces × (1 group + 8 streams)) |",
        mean(&reads),
        MAX_CAUSED_PER_EVENT
    );
    println!(
        "| seconds those reads take at {READ_BACK_TPS} req/s | {:.2} | {:.1} | – |",
        mean(&reads) / READ_BACK_TPS,
        read_max as f64 / READ_BACK_TPS
    );
    println!(
        "| decision look-ups (HEAD) | {:.1} | {} | {MAX_CHECKS_PER_EVENT} |",
        mean(&heads),
        max(&heads)
    );
    println!("decisions recorded (PUT): {puts}; traces past a bound: {over}; spans sent: {sent}; wall {:.2} s", elapsed.as_secs_f64());
    assert!(read_max <= read_bound && max(&heads) <= MAX_CHECKS_PER_EVENT as u64);
    println!(
        "{{\"bench\":\"sampling\",\"events\":{},\"error_traces\":{errors},\"read_back_reads_mean\":{:.3},\"read_back_reads_max\":{read_max},\"read_back_bound\":{read_bound},\"read_back_secs_at_budget_max\":{:.2},\"heads_mean\":{:.2},\"heads_max\":{},\"puts\":{puts},\"over_budget\":{over}}}",
        deliveries.len(),
        mean(&reads),
        read_max as f64 / READ_BACK_TPS,
        mean(&heads),
        max(&heads),
    );
}
