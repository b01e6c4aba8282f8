//! Fault injection against in-process servers on 127.0.0.1: a scripted HTTP/1.1 server
//! (hand-written responses, one per connection) and a tonic `TraceService`.

use super::*;
use crate::convert::assemble::{AnyValue, KeyValue, Span};
use crate::convert::retry::Backoff;
use crate::convert::sink::{Delivery, Sink, SinkError};
use crate::span_line::{SpanId, SpanKind, StatusCode, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::bytes::Bytes;
use prost::Message as _;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant as StdInstant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "s3cr3t-t0ken-value";

fn spans(n: usize) -> Vec<Span> {
    (0..n)
        .map(|i| {
            Span::from_data(&crate::convert::assemble::SpanData {
                trace_id: TraceId([0x4b; 16]),
                span_id: SpanId([i as u8 + 1; 8]),
                parent_span_id: None,
                name: format!("span-{i}"),
                kind: SpanKind::Server,
                status: StatusCode::Unset,
                status_message: String::new(),
                start_unix_nano: 1_700_000_000_000_000_000,
                end_unix_nano: 1_700_000_000_001_000_000,
                attributes: vec![KeyValue {
                    key: "i".into(),
                    value: AnyValue::Int(i as i64),
                }],
                events: Vec::new(),
                links: Vec::new(),
                service: "svc".into(),
                resource: Vec::new(),
                dropped: (0, 0, 0),
            })
        })
        .collect()
}

fn config(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        timeout: Duration::from_secs(2),
        retry_deadline: Duration::from_secs(5),
        // Small waits keep the suite fast; Retry-After floors still apply.
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
        headers: vec![
            ("authorization".into(), format!("Bearer {SECRET}")),
            ("x-tenant".into(), "acme".into()),
        ],
        ..OtlpConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted HTTP/1.1 server

/// What the server does with one request.
#[derive(Clone)]
enum Step {
    /// A complete response: status line, extra headers, body.
    Reply(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Waits, then does the inner step (a slow peer).
    After(Duration, Box<Step>),
    /// Writes these bytes and closes (not HTTP).
    Raw(&'static [u8]),
}

fn ok() -> Step {
    Step::Reply(200, vec![], Vec::new())
}

fn status(code: u16, body: &str) -> Step {
    Step::Reply(
        code,
        vec![("content-type", "text/plain".into())],
        body.as_bytes().to_vec(),
    )
}

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Scripted {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Scripted {
    fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Serves `steps` in order, one per request (one request per connection), repeating the last.
async fn scripted(steps: Vec<Step>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let (r, inf, maxf) = (received.clone(), in_flight.clone(), max_in_flight.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (r, inf, maxf, next, steps) = (
                r.clone(),
                inf.clone(),
                maxf.clone(),
                next.clone(),
                steps.clone(),
            );
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                let now = inf.fetch_add(1, Ordering::SeqCst) + 1;
                maxf.fetch_max(now, Ordering::SeqCst);
                let i = next.fetch_add(1, Ordering::SeqCst);
                r.lock().unwrap().push(req);
                let step = steps[i.min(steps.len() - 1)].clone();
                play(&mut sock, step).await;
                inf.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Scripted {
        addr,
        received,
        max_in_flight,
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received { headers, body })
}

fn play(
    sock: &mut tokio::net::TcpStream,
    step: Step,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        match step {
            Step::Reply(code, headers, body) => {
                let mut out = format!("HTTP/1.1 {code} Scripted\r\n");
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                ));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                let _ = sock.write_all(&bytes).await;
                let _ = sock.shutdown().await;
            }
            Step::After(d, inner) => {
                tokio::time::sleep(d).await;
                play(sock, *inner).await;
            }
            Step::Raw(bytes) => {
                let _ = sock.write_all(bytes).await;
                let _ = sock.shutdown().await;
            }
        }
    })
}

fn assert_no_secret(e: &SinkError) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP

#[tokio::test]
async fn http_503_then_200_is_retried() {
    let srv = scripted(vec![status(503, "busy"), ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let d = sink.send(&spans(3)).await.unwrap();
    assert_eq!(
        d,
        Delivery {
            accepted: 3,
            rejected: 0,
            message: None,
            attempts: 2,
            ..Default::default()
        }
    );
    let got = srv.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body, "the same body is resent");
}

#[tokio::test]
async fn http_429_retry_after_is_honoured() {
    let throttle = Step::Reply(
        429,
        vec![("retry-after", "1".into())],
        b"slow down".to_vec(),
    );
    let srv = scripted(vec![throttle, ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let t = StdInstant::now();
    let d = sink.send(&spans(1)).await.unwrap();
    let elapsed = t.elapsed();
    assert_eq!(d.attempts, 2);
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn http_retry_after_beyond_the_deadline_gives_up_at_once() {
    let throttle = Step::Reply(429, vec![("retry-after", "30".into())], Vec::new());
    let srv = scripted(vec![throttle]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let t = StdInstant::now();
    let e = sink.send(&spans(1)).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(e, SinkError::Exhausted { attempts: 1, .. }),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn http_400_is_fatal_with_the_body() {
    let srv = scripted(vec![status(400, "invalid span: name is empty"), ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let e = sink.send(&spans(2)).await.unwrap_err();
    match &e {
        SinkError::Fatal {
            endpoint,
            status,
            body,
        } => {
            assert_eq!(endpoint, &srv.url());
            assert!(status.contains("400"), "{status}");
            assert_eq!(body, "invalid span: name is empty");
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert_eq!(srv.received().len(), 1, "fatal is not retried");
}

#[tokio::test]
async fn fatal_body_is_truncated_to_1_kib() {
    let long = "é".repeat(3000);
    let srv = scripted(vec![status(413, &long)]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let SinkError::Fatal { body, .. } = sink.send(&spans(1)).await.unwrap_err() else {
        panic!("not fatal")
    };
    assert!(
        body.len() <= MAX_ERROR_BODY + '…'.len_utf8(),
        "{}",
        body.len()
    );
    assert!(body.ends_with('…'));
}

#[tokio::test]
async fn connection_refused_until_the_deadline_is_exhausted() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = config(format!("http://{addr}/v1/traces"));
    c.retry_deadline = Duration::from_millis(300);
    let mut sink = OtlpSink::new(c).unwrap();
    let t = StdInstant::now();
    let e = sink.send(&spans(1)).await.unwrap_err();
    let elapsed = t.elapsed();
    match &e {
        SinkError::Exhausted { attempts, last, .. } => {
            assert!(*attempts >= 2, "{attempts}");
            assert!(!last.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn slow_peer_exceeding_the_timeout_is_retried() {
    let slow = Step::After(Duration::from_secs(3), Box::new(ok()));
    let srv = scripted(vec![slow, ok()]).await;
    let mut c = config(srv.url());
    c.timeout = Duration::from_millis(200);
    let mut sink = OtlpSink::new(c).unwrap();
    let t = StdInstant::now();
    let d = sink.send(&spans(1)).await.unwrap();
    assert_eq!(d.attempts, 2);
    // Did not wait for the slow answer.
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn garbage_response_is_fatal() {
    let srv = scripted(vec![Step::Raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let e = sink.send(&spans(1)).await.unwrap_err();
    match &e {
        SinkError::Fatal { status, .. } => assert_eq!(status, "malformed response"),
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.received().len(), 1);
}

#[tokio::test]
async fn peer_hanging_up_without_answer_is_retried() {
    let srv = scripted(vec![Step::Raw(b""), ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let d = sink.send(&spans(1)).await.unwrap();
    assert_eq!(d.attempts, 2);
}

#[tokio::test]
async fn http_protobuf_partial_success_is_reported() {
    let resp = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "2 spans too old".into(),
        }),
    };
    let srv = scripted(vec![Step::Reply(
        200,
        vec![("content-type", "application/x-protobuf".into())],
        resp.encode_to_vec(),
    )])
    .await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let d = sink.send(&spans(5)).await.unwrap();
    assert_eq!(
        d,
        Delivery {
            accepted: 3,
            rejected: 2,
            message: Some("2 spans too old".into()),
            attempts: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn http_json_sends_json_and_decodes_partial_success() {
    let body = r#"{"partialSuccess":{"rejectedSpans":"1","errorMessage":"bad attr"}}"#;
    let srv = scripted(vec![Step::Reply(
        200,
        vec![("content-type", "application/json".into())],
        body.as_bytes().to_vec(),
    )])
    .await;
    let mut c = config(srv.url());
    c.protocol = Protocol::HttpJson;
    let mut sink = OtlpSink::new(c).unwrap();
    let sent = spans(2);
    let d = sink.send(&sent).await.unwrap();
    assert_eq!((d.accepted, d.rejected), (1, 1));
    assert_eq!(d.message.as_deref(), Some("bad attr"));
    let got = &srv.received()[0];
    assert_eq!(got.header("content-type"), Some("application/json"));
    let req: ExportTraceServiceRequest = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(req, encode_request(&sent));
}

#[tokio::test]
async fn json_reply_to_a_protobuf_request_is_accepted() {
    // MLflow answers protobuf requests with a JSON body.
    let srv = scripted(vec![Step::Reply(
        200,
        vec![("content-type", "application/json".into())],
        b"{}".to_vec(),
    )])
    .await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let d = sink.send(&spans(2)).await.unwrap();
    assert_eq!((d.accepted, d.rejected, d.message), (2, 0, None));
}

#[tokio::test]
async fn html_reply_with_200_is_full_success() {
    let srv = scripted(vec![Step::Reply(
        200,
        vec![("content-type", "text/html".into())],
        b"\n\x08<html>ok</html>".to_vec(),
    )])
    .await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let d = sink.send(&spans(2)).await.unwrap();
    assert_eq!((d.accepted, d.rejected, d.message), (2, 0, None));
}

#[tokio::test]
async fn gzip_body_is_gzip_and_decodes_to_the_request() {
    let srv = scripted(vec![ok()]).await;
    let mut c = config(srv.url());
    c.compression = Compression::Gzip;
    let mut sink = OtlpSink::new(c).unwrap();
    let sent = spans(4);
    sink.send(&sent).await.unwrap();
    let got = &srv.received()[0];
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(&got.body[..2], &[0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(got.body.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    let req = ExportTraceServiceRequest::decode(raw.as_slice()).unwrap();
    assert_eq!(req, encode_request(&sent));
}

#[tokio::test]
async fn custom_headers_and_exact_content_type_are_sent() {
    let srv = scripted(vec![ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let sent = spans(1);
    sink.send(&sent).await.unwrap();
    let got = &srv.received()[0];
    assert_eq!(got.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(got.header("x-tenant"), Some("acme"));
    assert_eq!(got.header("content-encoding"), None);
    let req = ExportTraceServiceRequest::decode(got.body.as_slice()).unwrap();
    assert_eq!(req, encode_request(&sent));
}

#[tokio::test]
async fn no_header_secret_in_any_error() {
    // A server that echoes the request's Authorization header in its error pages.
    let echo = format!("denied for Bearer {SECRET}");
    let srv = scripted(vec![status(401, &echo)]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    let e = sink.send(&spans(1)).await.unwrap_err();
    assert!(matches!(e, SinkError::Fatal { .. }));
    assert!(e.to_string().contains("<redacted>"), "{e}");
    assert_no_secret(&e);

    let srv = scripted(vec![status(503, &format!("retry later, {SECRET}"))]).await;
    let mut c = config(srv.url());
    c.retry_deadline = Duration::from_millis(100);
    let e = OtlpSink::new(c).unwrap().send(&spans(1)).await.unwrap_err();
    assert!(matches!(e, SinkError::Exhausted { .. }), "{e:?}");
    assert_no_secret(&e);

    let srv = scripted(vec![Step::Raw(b"garbage")]).await;
    let e = OtlpSink::new(config(srv.url()))
        .unwrap()
        .send(&spans(1))
        .await
        .unwrap_err();
    assert_no_secret(&e);

    // Credentials in the endpoint URL are not printed either.
    let srv = scripted(vec![status(400, "no")]).await;
    let e = OtlpSink::new(config(format!(
        "http://user:{SECRET}@{}/v1/traces?key={SECRET}",
        srv.addr
    )))
    .unwrap()
    .send(&spans(1))
    .await
    .unwrap_err();
    assert!(matches!(e, SinkError::Fatal { .. }), "{e:?}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn large_sends_are_split_and_bounded_in_flight() {
    let srv = scripted(vec![Step::After(
        Duration::from_millis(200),
        Box::new(ok()),
    )])
    .await;
    let mut c = config(srv.url());
    c.max_batch_spans = 3;
    c.max_concurrency = 2;
    let mut sink = OtlpSink::new(c).unwrap();
    let sent = spans(10);
    let d = sink.send(&sent).await.unwrap();
    assert_eq!((d.accepted, d.attempts), (10, 1));
    let got = srv.received();
    let mut sizes: Vec<usize> = got
        .iter()
        .map(|r| {
            ExportTraceServiceRequest::decode(r.body.as_slice())
                .unwrap()
                .resource_spans[0]
                .scope_spans[0]
                .spans
                .len()
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 3, 3, 3]);
    assert_eq!(srv.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn one_refused_batch_fails_the_send() {
    let srv = scripted(vec![ok(), status(400, "bad batch"), ok()]).await;
    let mut c = config(srv.url());
    c.max_batch_spans = 1;
    c.max_concurrency = 1;
    let mut sink = OtlpSink::new(c).unwrap();
    let e = sink.send(&spans(3)).await.unwrap_err();
    assert!(matches!(e, SinkError::Fatal { .. }), "{e:?}");
    assert_eq!(
        srv.received().len(),
        2,
        "no batch is started after a failure"
    );
}

#[tokio::test]
async fn empty_send_and_idempotent_shutdown() {
    let srv = scripted(vec![ok()]).await;
    let mut sink = OtlpSink::new(config(srv.url())).unwrap();
    assert_eq!(sink.send(&[]).await.unwrap(), Delivery::default());
    assert!(srv.received().is_empty());
    sink.shutdown().await.unwrap();
    sink.shutdown().await.unwrap();
    assert!(matches!(
        sink.send(&spans(1)).await,
        Err(SinkError::Config(_))
    ));
}

#[test]
fn new_needs_no_runtime_and_rejects_bad_config() {
    let grpc = OtlpConfig {
        protocol: Protocol::Grpc,
        endpoint: "http://127.0.0.1:4317".into(),
        ..OtlpConfig::default()
    };
    assert!(OtlpSink::new(grpc).is_ok());
    let zero = OtlpConfig {
        max_batch_spans: 0,
        ..OtlpConfig::default()
    };
    assert!(matches!(OtlpSink::new(zero), Err(SinkError::Config(_))));
    let bad_value = OtlpConfig {
        headers: vec![("x-key".into(), format!("{SECRET}\n"))],
        ..OtlpConfig::default()
    };
    let e = OtlpSink::new(bad_value).unwrap_err();
    assert_no_secret(&e);
}

#[test]
fn sink_debug_shows_no_secret() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let sink = OtlpSink::new(OtlpConfig {
            protocol,
            ..config("http://127.0.0.1:4318/v1/traces".into())
        })
        .unwrap();
        let text = format!("{sink:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("authorization"), "{text}");
    }
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate("abc", 3), "abc");
    assert_eq!(truncate("abcd", 3), "abc…");
    assert_eq!(truncate("aé", 2), "a…");
}

// ---------------------------------------------------------------------------------------------
// OTLP/gRPC

/// A scripted `TraceService`: answers with `script` in order, repeating the last.
struct ScriptedTrace {
    script: Vec<Result<ExportTraceServiceResponse, (tonic::Code, Vec<u8>)>>,
    calls: Arc<Mutex<Vec<(tonic::metadata::MetadataMap, ExportTraceServiceRequest)>>>,
}

#[tonic::async_trait]
impl TraceService for ScriptedTrace {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let metadata = request.metadata().clone();
        let mut calls = self.calls.lock().unwrap();
        calls.push((metadata, request.into_inner()));
        let i = (calls.len() - 1).min(self.script.len() - 1);
        match &self.script[i] {
            Ok(resp) => Ok(tonic::Response::new(resp.clone())),
            Err((code, details)) => Err(tonic::Status::with_details(
                *code,
                format!("scripted {code:?}"),
                Bytes::from(details.clone()),
            )),
        }
    }
}

type GrpcCalls = Arc<Mutex<Vec<(tonic::metadata::MetadataMap, ExportTraceServiceRequest)>>>;

async fn grpc_server(
    script: Vec<Result<ExportTraceServiceResponse, (tonic::Code, Vec<u8>)>>,
) -> (String, GrpcCalls) {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let calls: GrpcCalls = Arc::default();
    let svc = TraceServiceServer::new(ScriptedTrace {
        script,
        calls: calls.clone(),
    })
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(svc, incoming));
    (format!("http://{addr}"), calls)
}

fn grpc_config(endpoint: String) -> OtlpConfig {
    let mut c = config(endpoint);
    c.protocol = Protocol::Grpc;
    c
}

#[tokio::test]
async fn grpc_unavailable_then_ok_is_retried_and_delivered() {
    let (url, calls) = grpc_server(vec![
        Err((tonic::Code::Unavailable, Vec::new())),
        Ok(ExportTraceServiceResponse::default()),
    ])
    .await;
    let mut sink = OtlpSink::new(grpc_config(url)).unwrap();
    let sent = spans(3);
    let d = sink.send(&sent).await.unwrap();
    assert_eq!(
        d,
        Delivery {
            accepted: 3,
            rejected: 0,
            message: None,
            attempts: 2,
            ..Default::default()
        }
    );
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].1, encode_request(&sent));
    assert_eq!(
        calls[1].0.get("authorization").unwrap(),
        format!("Bearer {SECRET}").as_str()
    );
    assert_eq!(calls[1].0.get("x-tenant").unwrap(), "acme");
}

#[tokio::test]
async fn grpc_gzip_and_partial_success() {
    let (url, calls) = grpc_server(vec![Ok(ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "one bad span".into(),
        }),
    })])
    .await;
    let mut c = grpc_config(url);
    c.compression = Compression::Gzip;
    let mut sink = OtlpSink::new(c).unwrap();
    let d = sink.send(&spans(4)).await.unwrap();
    assert_eq!((d.accepted, d.rejected), (3, 1));
    assert_eq!(d.message.as_deref(), Some("one bad span"));
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0].0.get("grpc-encoding").unwrap(), "gzip");
}

#[tokio::test]
async fn grpc_invalid_argument_is_fatal() {
    let (url, calls) = grpc_server(vec![Err((tonic::Code::InvalidArgument, Vec::new()))]).await;
    let mut sink = OtlpSink::new(grpc_config(url)).unwrap();
    let e = sink.send(&spans(1)).await.unwrap_err();
    match &e {
        SinkError::Fatal { status, body, .. } => {
            assert!(status.contains("InvalidArgument"), "{status}");
            assert_eq!(body, "scripted InvalidArgument");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_no_secret(&e);
}

#[tokio::test]
async fn grpc_retry_info_is_honoured() {
    let details = grpc::tests::retry_info_details(Duration::from_millis(400));
    let (url, _) = grpc_server(vec![
        Err((tonic::Code::ResourceExhausted, details)),
        Ok(ExportTraceServiceResponse::default()),
    ])
    .await;
    let mut sink = OtlpSink::new(grpc_config(url)).unwrap();
    let t = StdInstant::now();
    let d = sink.send(&spans(1)).await.unwrap();
    assert_eq!(d.attempts, 2);
    assert!(
        t.elapsed() >= Duration::from_millis(390),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn grpc_connection_refused_is_exhausted() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = grpc_config(format!("http://{addr}"));
    c.retry_deadline = Duration::from_millis(300);
    let mut sink = OtlpSink::new(c).unwrap();
    let e = sink.send(&spans(1)).await.unwrap_err();
    assert!(
        matches!(e, SinkError::Exhausted { attempts, .. } if attempts >= 2),
        "{e:?}"
    );
    assert_no_secret(&e);
}

// ---------------------------------------------------------------------------------------------
// Hostile backends

fn assert_no_secret_any_case(text: &str) {
    let lower = text.to_ascii_lowercase();
    for form in [
        SECRET.to_owned(),
        format!("bearer%20{SECRET}"),
        format!("bearer+{SECRET}"),
    ] {
        assert!(!lower.contains(&form), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn a_redirect_is_a_configuration_error_and_is_not_followed() {
    // A login page that answers 200 to anything: following the redirect turned the POST into
    // a body-less GET and reported the spans as accepted.
    let elsewhere = scripted(vec![ok()]).await;
    for code in [301, 302, 303, 307, 308] {
        let location = format!("http://user:pw@{}/login?token={SECRET}", elsewhere.addr);
        let srv = scripted(vec![Step::Reply(
            code,
            vec![("location", location)],
            b"moved".to_vec(),
        )])
        .await;
        let mut sink = OtlpSink::new(config(srv.url())).unwrap();
        let e = sink.send(&spans(2)).await.unwrap_err();
        let SinkError::Config(msg) = &e else {
            panic!("{code}: {e:?}")
        };
        assert!(msg.contains(&code.to_string()), "{msg}");
        assert!(
            msg.contains(&format!(
                "http://<redacted>@{}/login?<redacted>",
                elsewhere.addr
            )),
            "{msg}"
        );
        assert!(!msg.contains("pw@"), "{msg}");
        assert_no_secret(&e);
        assert_eq!(srv.received().len(), 1, "{code}: not retried");
    }
    assert!(elsewhere.received().is_empty(), "a redirect was followed");
}

#[test]
fn cleartext_headers_to_a_remote_host_are_refused_unless_allowed() {
    let remote = |endpoint: &str| OtlpConfig {
        endpoint: endpoint.into(),
        headers: vec![("x-api-key".into(), SECRET.into())],
        ..OtlpConfig::default()
    };
    for endpoint in [
        "http://collector.example:4318/v1/traces",
        "http://10.0.0.7:4318/v1/traces",
        "http://[2001:db8::1]:4318/v1/traces",
    ] {
        let e = OtlpSink::new(remote(endpoint)).unwrap_err();
        let SinkError::Config(msg) = &e else {
            panic!("{endpoint}: {e:?}")
        };
        assert!(
            msg.contains("x-api-key") && msg.contains("--allow-insecure"),
            "{msg}"
        );
        assert!(msg.contains("SPANLINE_ALLOW_INSECURE"), "{msg}");
        assert_no_secret(&e);
        let allowed = OtlpConfig {
            allow_insecure: true,
            ..remote(endpoint)
        };
        assert!(OtlpSink::new(allowed).is_ok(), "{endpoint}");
        let grpc = OtlpConfig {
            protocol: Protocol::Grpc,
            ..remote(endpoint)
        };
        assert!(OtlpSink::new(grpc).is_err(), "{endpoint} (gRPC)");
    }
    for endpoint in [
        "https://collector.example:4318/v1/traces",
        "http://127.0.0.1:4318/v1/traces",
        "http://127.1.2.3:4318/v1/traces",
        "http://localhost:4318/v1/traces",
        "http://[::1]:4318/v1/traces",
    ] {
        assert!(OtlpSink::new(remote(endpoint)).is_ok(), "{endpoint}");
    }
    // Without headers nothing secret goes out; credentials in the URL count as headers.
    let plain = OtlpConfig {
        endpoint: "http://collector.example:4318/v1/traces".into(),
        ..OtlpConfig::default()
    };
    assert!(OtlpSink::new(plain).is_ok());
    let userinfo = OtlpConfig {
        endpoint: "http://u:p@collector.example:4318/v1/traces".into(),
        ..OtlpConfig::default()
    };
    assert!(matches!(OtlpSink::new(userinfo), Err(SinkError::Config(_))));
}

#[test]
fn allow_insecure_is_read_from_the_environment() {
    let vars = |v: &'static str| {
        move |k: &str| match k {
            "SPANLINE_ALLOW_INSECURE" => Some(v.to_owned()),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector.example:4318".to_owned()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some(format!("x-api-key={SECRET}")),
            _ => None,
        }
    };
    let c = OtlpConfig::from_env(vars("true")).unwrap();
    assert!(c.allow_insecure);
    assert!(OtlpSink::new(c).is_ok());
    let c = OtlpConfig::from_env(vars("false")).unwrap();
    assert!(!c.allow_insecure);
    assert!(OtlpSink::new(c).is_err());
    let e = OtlpConfig::from_env(vars("sure")).unwrap_err();
    assert!(e.to_string().contains("SPANLINE_ALLOW_INSECURE"), "{e}");
}

#[tokio::test]
async fn a_retry_info_of_i64_max_seconds_gives_up_without_a_panic() {
    let details = grpc::tests::retry_info_details(Duration::from_secs(i64::MAX as u64));
    let (url, calls) = grpc_server(vec![Err((tonic::Code::ResourceExhausted, details))]).await;
    let mut sink = OtlpSink::new(grpc_config(url)).unwrap();
    let t = StdInstant::now();
    let e = sink.send(&spans(1)).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    match &e {
        SinkError::Exhausted { attempts, last, .. } => {
            assert_eq!(*attempts, 1, "{e}");
            assert!(last.contains("ResourceExhausted"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn secrets_echoed_in_another_case_or_percent_encoded_are_scrubbed() {
    let upper = SECRET.to_ascii_uppercase();
    let echoes = [
        format!("denied for bearer {upper}"),
        format!("denied: authorization=Bearer%20{SECRET}"),
        format!("denied: authorization=bearer%20{upper}"),
        format!("denied: authorization=Bearer+{SECRET}"),
    ];
    for echo in echoes {
        let srv = scripted(vec![status(401, &echo)]).await;
        let e = OtlpSink::new(config(srv.url()))
            .unwrap()
            .send(&spans(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("<redacted>"), "{e}");
        assert_no_secret_any_case(&e.to_string());
        assert_no_secret_any_case(&format!("{e:?}"));
    }
}

#[tokio::test]
async fn backend_bodies_are_made_visible() {
    let srv = scripted(vec![status(
        400,
        "bad\u{1b}[2J\u{1b}]0;pwned\u{7} \u{9b}31m",
    )])
    .await;
    let e = OtlpSink::new(config(srv.url()))
        .unwrap()
        .send(&spans(1))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("bad\\x1b[2J\\x1b]0;pwned\\x07 \\u{9b}31m"),
        "{text}"
    );
    assert!(!crate::convert::printable::has_control(&text), "{text:?}");
}

#[tokio::test]
async fn grpc_to_an_http1_server_is_unreachable_not_rejected() {
    let srv = scripted(vec![status(400, "this is not gRPC")]).await;
    let mut c = grpc_config(format!("http://{}", srv.addr));
    c.retry_deadline = Duration::from_millis(300);
    let e = OtlpSink::new(c).unwrap().send(&spans(1)).await.unwrap_err();
    assert!(matches!(e, SinkError::Exhausted { .. }), "{e:?}");
    assert!(e.is_retryable(), "{e}");
    assert_no_secret(&e);
}

// ---------------------------------------------------------------------------------------------
// Log records (`--logs otlp`)

/// `spans(n)` with `per_span` log records of `message_len` bytes on each.
fn spans_with_logs(n: usize, per_span: usize, message_len: usize) -> Vec<Span> {
    let mut out = spans(n);
    for (i, s) in out.iter_mut().enumerate() {
        s.extend_logs((0..per_span).map(|j| crate::convert::assemble::SpanLog {
            time_unix_nano: 1_700_000_000_000_500_000 + j as u64,
            level: "ERROR".into(),
            message: format!("{i}-{j}-{}", "x".repeat(message_len)).into(),
        }));
    }
    out
}

fn logs_config(srv: &Scripted) -> OtlpConfig {
    let mut c = config(srv.url());
    c.logs = Some(LogsTarget::new(format!("http://{}/v1/logs", srv.addr)));
    c
}

fn decode_logs(r: &Received) -> Vec<(Vec<u8>, Vec<u8>, i32, String)> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    ExportLogsServiceRequest::decode(r.body.as_slice())
        .expect("a logs request")
        .resource_logs
        .into_iter()
        .flat_map(|rl| rl.scope_logs)
        .flat_map(|sl| sl.log_records)
        .map(|lr| {
            let body = match lr.body.and_then(|b| b.value) {
                Some(Value::StringValue(s)) => s,
                other => format!("{other:?}"),
            };
            (lr.trace_id, lr.span_id, lr.severity_number, body)
        })
        .collect()
}

#[tokio::test]
async fn log_records_follow_their_spans_and_partial_rejections_are_counted() {
    let partial = Step::Reply(
        200,
        vec![("content-type", "application/json".into())],
        br#"{"partialSuccess":{"rejectedLogRecords":"1","errorMessage":"1 too old"}}"#.to_vec(),
    );
    let srv = scripted(vec![ok(), partial]).await;
    let mut sink = OtlpSink::new(logs_config(&srv)).unwrap();
    let d = sink.send(&spans_with_logs(2, 1, 3)).await.unwrap();
    assert_eq!((d.accepted, d.logs_accepted, d.logs_rejected), (2, 1, 1));
    assert_eq!(d.message.as_deref(), Some("logs: 1 too old"));
    let got = srv.received();
    assert_eq!(got.len(), 2, "the spans, then the records");
    ExportTraceServiceRequest::decode(got[0].body.as_slice()).expect("spans first");
    let records = decode_logs(&got[1]);
    assert_eq!(
        records,
        [
            (vec![0x4b; 16], vec![1; 8], 17, "0-0-xxx".to_owned()),
            (vec![0x4b; 16], vec![2; 8], 17, "1-0-xxx".to_owned()),
        ]
    );
    // The configured headers go to the logs endpoint too.
    assert_eq!(
        got[1].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    // Spans without records send no logs request.
    let srv = scripted(vec![ok()]).await;
    let mut sink = OtlpSink::new(logs_config(&srv)).unwrap();
    let d = sink.send(&spans(2)).await.unwrap();
    assert_eq!((d.accepted, d.logs_accepted), (2, 0));
    assert_eq!(srv.received().len(), 1);
}

#[tokio::test]
async fn a_refused_logs_request_fails_the_send() {
    let srv = scripted(vec![ok(), status(400, "bad logs")]).await;
    let mut sink = OtlpSink::new(logs_config(&srv)).unwrap();
    let e = sink.send(&spans_with_logs(1, 2, 3)).await.unwrap_err();
    assert!(matches!(e, SinkError::Fatal { .. }), "{e}");
    assert!(e.to_string().contains("bad logs"), "{e}");
    assert!(e.to_string().contains("/v1/logs"), "{e}");
    assert_no_secret(&e);
}

#[tokio::test]
async fn logs_requests_are_cut_at_max_records_and_halved_to_fit_the_byte_limit() {
    let srv = scripted(vec![ok()]).await;
    let mut c = logs_config(&srv);
    if let Some(t) = c.logs.as_mut() {
        t.max_records = 5;
        t.max_request_bytes = Some(700);
    }
    let mut sink = OtlpSink::new(c).unwrap();
    // 12 records of ~110 bytes each: 5, 5, 2 by count; 700 bytes halve the fives.
    let d = sink.send(&spans_with_logs(3, 4, 100)).await.unwrap();
    assert_eq!(d.logs_accepted, 12);
    let got = srv.received();
    let logs: Vec<&Received> = got.iter().skip(1).collect();
    assert!(logs.len() > 3, "{} requests", logs.len());
    let mut bodies = Vec::new();
    for r in &logs {
        assert!(r.body.len() <= 700, "{} bytes", r.body.len());
        bodies.extend(decode_logs(r).into_iter().map(|x| x.3));
    }
    let mut want: Vec<String> = (0..3)
        .flat_map(|i| (0..4).map(move |j| format!("{i}-{j}-{}", "x".repeat(100))))
        .collect();
    want.sort();
    bodies.sort();
    assert_eq!(bodies, want, "every record once");
}

#[test]
fn logs_endpoints_from_the_environment() {
    let c = OtlpConfig {
        endpoint: "http://collector:4318/v1/traces".into(),
        ..OtlpConfig::default()
    };
    let none = |_: &str| None;
    assert_eq!(
        c.logs_endpoint_from_env(none).as_deref(),
        Some("http://collector:4318/v1/logs")
    );
    let logs = |k: &str| (k == "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").then(|| "http://l/x".into());
    assert_eq!(
        c.logs_endpoint_from_env(logs).as_deref(),
        Some("http://l/x")
    );
    let base = |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://b/otlp".into());
    assert_eq!(
        c.logs_endpoint_from_env(base).as_deref(),
        Some("http://b/otlp/v1/logs")
    );
    let odd = OtlpConfig {
        endpoint: "http://collector:4318/traces".into(),
        ..OtlpConfig::default()
    };
    assert_eq!(odd.logs_endpoint_from_env(none), None);
    let grpc = OtlpConfig {
        endpoint: "http://collector:4317".into(),
        protocol: Protocol::Grpc,
        ..OtlpConfig::default()
    };
    assert_eq!(
        grpc.logs_endpoint_from_env(none).as_deref(),
        Some("http://collector:4317")
    );
    // CloudWatch Logs' endpoint is signed for `logs` in its Region, with its headers.
    let t = LogsTarget::cloudwatch("eu-west-1", None, "g", "s").unwrap();
    assert_eq!(t.endpoint, "https://logs.eu-west-1.amazonaws.com/v1/logs");
    assert_eq!(t.sigv4.as_ref().map(|s| s.service.as_str()), Some("logs"));
    let mut x = OtlpConfig::xray("eu-west-1", None).unwrap();
    x.logs = Some(t);
    let lc = x.logs_config().unwrap();
    assert_eq!(lc.signing().map(|s| s.service), Some("logs".to_owned()));
    assert!(lc.headers.contains(&("x-aws-log-group".into(), "g".into())));
    assert!(LogsTarget::cloudwatch("EU", None, "g", "s").is_err());
}
