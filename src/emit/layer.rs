//! A `tracing` layer: existing `#[instrument]` code emits span lines (feature `tracing`).
//!
//! Every `tracing` span becomes a span line when it closes; fields become attributes, events
//! inside a span become span events (an `ERROR` event also sets the error status). These fields
//! have a meaning, as in `tracing-opentelemetry`: `otel.name` renames the span, `otel.kind`
//! (`server`, `client`, …) sets the kind, `otel.status_code` (`ERROR`/`OK`) and
//! `otel.status_message` set the status, `error = true` marks it failed, and a `traceparent`
//! field (a W3C header value) makes the span a child of that remote context.
//!
//! ```
//! use tracing_subscriber::prelude::*;
//! let out = spanline::emit::CaptureOutput::new();
//! let tracer = spanline::emit::Tracer::builder().output(out.clone()).build();
//! let subscriber = tracing_subscriber::registry().with(spanline::emit::layer::SpanlineLayer::new(tracer));
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("handler", http.method = "POST");
//!     let _g = span.enter();
//!     tracing::info!(attempt = 1, "retry");
//! });
//! assert!(out.text().contains(" handler http.method=POST @"));
//! ```

use super::propagation;
use super::{Span, SpanContext, SpanKind, Tracer, Value};
use core::fmt::Write as _;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The layer. Add it to a `tracing_subscriber::registry()`.
#[derive(Clone, Debug)]
pub struct SpanlineLayer {
    tracer: Tracer,
}

impl SpanlineLayer {
    /// A layer writing through `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        SpanlineLayer { tracer }
    }
}

/// The open spanline span of a `tracing` span, kept in its extensions.
struct Recording(Span);

/// Finds the `traceparent` field.
#[derive(Default)]
struct ParentVisitor(Option<SpanContext>);

impl Visit for ParentVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "traceparent" {
            self.0 = propagation::extract(&[("traceparent", value)][..]);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        if field.name() == "traceparent" {
            let mut s = String::new();
            let _ = write!(s, "{value:?}");
            self.record_str(field, s.trim_matches('"'));
        }
    }
}

/// Applies fields to a span as tags.
struct TagVisitor<'a>(&'a mut Span);

impl Visit for TagVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "traceparent" => {}
            "otel.name" => {
                self.0.set_name(value);
            }
            "otel.kind" => {
                if let Some(k) = SpanKind::from_name(&value.to_ascii_lowercase()) {
                    self.0.set_kind(k);
                }
            }
            "otel.status_code" => {
                if value.eq_ignore_ascii_case("error") {
                    self.0.set_tag("error", true);
                } else if value.eq_ignore_ascii_case("ok") {
                    self.0.set_ok();
                }
            }
            "otel.status_message" => {
                self.0.set_error(value);
            }
            name => {
                self.0.set_tag(name, value);
            }
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set_tag(field.name(), value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.0.set_tag(field.name(), v),
            Err(_) => self.0.set_tag(field.name(), Value::Float(value as f64)),
        };
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set_tag(field.name(), value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set_tag(field.name(), value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = String::new();
        let _ = write!(s, "{value}");
        self.0.set_error(&s);
        let _ = field;
    }
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

/// Collects an event's fields (events are rare next to spans; allocation is fine here).
#[derive(Default)]
struct EventVisitor {
    message: Option<String>,
    fields: Vec<(&'static str, Owned)>,
}

enum Owned {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Visit for EventVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.fields
                .push((field.name(), Owned::Str(value.to_owned())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Owned::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).map_or(Owned::Float(value as f64), Owned::Int);
        self.fields.push((field.name(), v));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Owned::Float(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Owned::Bool(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.record_str(field, &s);
    }
}

impl<S> Layer<S> for SpanlineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(id) else { return };
        let mut remote = ParentVisitor::default();
        attrs.record(&mut remote);
        let name = attrs.metadata().name();
        let mut span = match (&remote.0, span_ref.parent()) {
            (Some(ctx), _) => self.tracer.span(name).child_of_context(ctx).start(),
            (None, Some(parent)) => {
                let ext = parent.extensions();
                match ext.get::<Recording>() {
                    Some(Recording(p)) => p.child(name).start(),
                    None => self.tracer.start(name),
                }
            }
            (None, None) => self.tracer.start(name),
        };
        attrs.record(&mut TagVisitor(&mut span));
        span_ref.extensions_mut().insert(Recording(span));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(id) else { return };
        let mut ext = span_ref.extensions_mut();
        if let Some(Recording(span)) = ext.get_mut::<Recording>() {
            values.record(&mut TagVisitor(span));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.event_span(event) else {
            return;
        };
        let mut ext = span_ref.extensions_mut();
        let Some(Recording(span)) = ext.get_mut::<Recording>() else {
            return;
        };
        let mut v = EventVisitor::default();
        event.record(&mut v);
        let name = v.message.as_deref().unwrap_or(event.metadata().name());
        let fields: Vec<(&str, Value<'_>)> = v
            .fields
            .iter()
            .map(|(k, o)| {
                let val = match o {
                    Owned::Str(s) => Value::Str(s),
                    Owned::Int(i) => Value::Int(*i),
                    Owned::Float(f) => Value::Float(*f),
                    Owned::Bool(b) => Value::Bool(*b),
                };
                (*k, val)
            })
            .collect();
        span.log_event_with(name, &fields);
        if *event.metadata().level() == Level::ERROR {
            span.set_error(name);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span_ref) = ctx.span(&id) else {
            return;
        };
        let recording = span_ref.extensions_mut().remove::<Recording>();
        if let Some(Recording(span)) = recording {
            span.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::CaptureOutput;
    use crate::span_line::{decode, Record, StatusCode};
    use tracing_subscriber::prelude::*;

    #[test]
    fn nested_spans_events_and_remote_parent() {
        let out = CaptureOutput::new();
        let tracer = Tracer::builder().output(out.clone()).build();
        let sub = tracing_subscriber::registry().with(SpanlineLayer::new(tracer));
        tracing::subscriber::with_default(sub, || {
            let outer = tracing::info_span!(
                "lambda-execution",
                traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                otel.kind = "server"
            );
            let _o = outer.enter();
            let inner = tracing::info_span!("query", db.rows = 3u64);
            let _i = inner.enter();
            tracing::error!(code = 7, "boom");
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let Record::Span(inner) = decode(&lines[0]).unwrap() else {
            panic!()
        };
        let Record::Span(outer) = decode(&lines[1]).unwrap() else {
            panic!()
        };
        assert_eq!(
            outer.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            outer.parent_span_id.unwrap().to_string(),
            "00f067aa0ba902b7"
        );
        assert_eq!(outer.kind, SpanKind::Server);
        assert_eq!(inner.parent_span_id, Some(outer.span_id));
        assert_eq!(inner.status, StatusCode::Error);
        assert_eq!(inner.events().next().unwrap().name.raw(), "boom");
        assert_eq!(inner.attributes().next().unwrap().key.raw(), "db.rows");
    }
}
