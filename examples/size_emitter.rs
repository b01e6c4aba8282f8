//! For `benches/binary_size.sh`: the baseline program, plus one span through the emitter
//! (no header propagation; see `size_propagation`).
use std::io::Write;

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "service-egress {arg} http.method=POST peer.service=lambda"
    );
    drop(out);
    let tracer = spanline::emit::Tracer::from_env();
    let parent = spanline::span_line::TraceId::from_hex(&arg)
        .map(|t| spanline::emit::SpanContext::new(t, spanline::span_line::SpanId([1; 8])));
    let mut span = tracer
        .span("service-egress")
        .child_of_opt(parent.as_ref())
        .kind(spanline::emit::SpanKind::Client)
        .start();
    span.set_tag("http.method", "POST")
        .set_tag("peer.service", "lambda");
    span.log_event("sent");
    span.finish();
}
