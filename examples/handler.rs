//! A Lambda-style handler instrumented with the spanline emitter.
//!
//! Run it with `cargo run --example handler`: it handles two fake API Gateway requests, the
//! second of which fails, and prints span lines exactly as a function would in CloudWatch.
//! In a real function the loop is `lambda_runtime::run(service_fn(handler))` and the request id
//! comes from `lambda_runtime::Context`; nothing else changes.

use spanline::emit::{propagation, SpanKind, Tracer, Value};
use std::collections::HashMap;

/// What an API Gateway proxy event carries that matters here.
struct Request {
    request_id: &'static str,
    headers: HashMap<String, String>,
    body: &'static str,
}

fn handler(tracer: &Tracer, req: &Request) -> Result<String, String> {
    // Continue the caller's trace (W3C, B3, Jaeger, ot-tracer-* or X-Ray headers; any case).
    let parent = propagation::extract(&req.headers);
    let mut root = tracer
        .span("lambda-execution")
        .child_of_opt(parent.as_ref())
        .kind(SpanKind::Server)
        .request_id(req.request_id)
        .start();
    root.set_tag("http.method", "POST");

    // A child span per downstream call, with the context injected into its headers.
    let mut call = root.child("dynamodb.get").kind(SpanKind::Client).start();
    call.set_tag("db.system", "dynamodb")
        .set_tag("aws.dynamodb.consistent_read", true);
    let mut outgoing: HashMap<String, String> = HashMap::new();
    propagation::inject(call.context(), propagation::Formats::W3C, &mut outgoing);
    call.set_tag("rows", 1);
    call.finish();

    let result = if req.body.is_empty() {
        // OpenTracing style: error=true plus a log event carrying the error.
        root.set_tag("error", true);
        root.log_fields(&[
            ("event", Value::Str("error")),
            ("error.kind", Value::Str("ValidationError")),
            ("message", Value::Str("empty body")),
        ]);
        Err("empty body".to_owned())
    } else {
        root.log_event_with("parsed", &[("bytes", Value::Int(req.body.len() as i64))]);
        Ok(format!("hello {}", req.body))
    };
    root.finish();
    result
}

fn main() {
    // Configured once per cold start: OTEL_SERVICE_NAME / AWS_LAMBDA_FUNCTION_NAME,
    // OTEL_RESOURCE_ATTRIBUTES. Lines go to stdout.
    let tracer = Tracer::from_env();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let requests = [
        Request {
            request_id: "c793869b-ee49-115b-a5b6-4fd21e8dedac",
            headers: HashMap::from([("TraceParent".to_owned(), traceparent.to_owned())]),
            body: "world",
        },
        Request {
            request_id: "7a9b2c1d-0000-4e5f-8a9b-0c1d2e3f4a5b",
            headers: HashMap::new(),
            body: "",
        },
    ];
    for req in &requests {
        if let Err(e) = handler(&tracer, req) {
            eprintln!("request {} failed: {e}", req.request_id);
        }
    }
}
