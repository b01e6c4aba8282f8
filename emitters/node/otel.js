'use strict';
// spanline/otel: an OpenTelemetry bridge. Spans created through the OpenTelemetry API (by your
// code or by auto-instrumentation) print span lines (src/span_line/FORMAT.md) on stdout:
//
//   const { BasicTracerProvider } = require('@opentelemetry/sdk-trace-base');
//   const { SpanlineSpanProcessor } = require('spanline/otel');
//   const provider = new BasicTracerProvider({ spanProcessors: [new SpanlineSpanProcessor()] });
//
// * SpanlineSpanProcessor: synchronous; encodes and writes the line in onEnd. Nothing is queued,
//   so nothing waits for a flush and nothing is lost when the Lambda sandbox freezes or times out.
// * SpanlineSpanExporter: a SpanExporter (export / shutdown / forceFlush) for code that wants an
//   exporter (e.g. behind SimpleSpanProcessor); BatchSpanProcessor would reintroduce the flush
//   problem, so prefer the processor.
//
// This file requires nothing from OpenTelemetry (the packages are optional peer dependencies):
// it reads the ReadableSpan interface of @opentelemetry/sdk-trace-base 1.x and 2.x and uses the
// numeric values of SpanKind, SpanStatusCode and ExportResultCode, which are stable.
//
// Mapping (what the converter maps back to OTLP): trace, span and parent ids; start and end
// (HrTime → µs since the epoch, duration = end − start); kind (`s` `c` `p` `o`, internal none);
// status code (`k` ok, `e` error) and its message (`*m=`, error only, as OTLP keeps a message only
// for errors); attributes typed string / int (integer numbers) / float / bool, arrays and other
// values as JSON text (the format has no arrays); events (name, offset from the start in µs,
// attributes); links (trace and span id, attributes); the Resource's `service.name` as `*s=`
// (left out when it is the SDK's `unknown_service…` default: the converter then names the
// service after the log group) and its other attributes as `+` fields, except the SDK's
// self-description `telemetry.sdk.*` (option `resourceFilter`); the SDK's dropped-attribute,
// event and link counts as `*a#`, `*e#`, `*l#`. The Lambda request id (`*r=`): the span's own
// `faas.invocation_id` attribute, else (processor only: an exporter sees no span start) the id of
// the last started span that carried one (the handler span of the current invocation, as the AWS
// Lambda instrumentation sets it), else setRequestId()/the `requestId` option. `aws.request_id` is not used: in the OpenTelemetry
// conventions it is the id of an AWS API call the span made, and the converter reads it as such.

const spanline = require('./spanline.js');

const KIND = ['internal', 'server', 'client', 'producer', 'consumer'];
const STATUS = ['unset', 'ok', 'error'];
const I64 = 2 ** 63;
const SAMPLED = 1;

function hrUs(t) {
  if (Array.isArray(t)) return t[0] * 1e6 + Math.floor(t[1] / 1e3);
  if (typeof t === 'number') return Math.round(t * 1e3); // ms since the epoch (TimeInput)
  if (t instanceof Date) return t.getTime() * 1e3;
  return 0;
}

function attr(key, value) {
  switch (typeof value) {
    case 'string':
      return { key, type: 'string', value };
    case 'boolean':
      return { key, type: 'bool', value };
    case 'number':
      if (Number.isInteger(value) && Math.abs(value) < I64) return { key, type: 'int', value };
      return { key, type: 'float', value };
    case 'bigint':
      return { key, type: 'int', value };
    default: {
      let text;
      try {
        text = JSON.stringify(value);
      } catch (_) {
        text = undefined;
      }
      return { key, type: 'string', value: text === undefined ? String(value) : text };
    }
  }
}

function attrList(attributes) {
  const out = [];
  if (!attributes) return out;
  for (const k in attributes) {
    const v = attributes[k];
    if (v !== undefined && v !== null) out.push(attr(k, v));
  }
  return out;
}

function defaultResourceFilter(key) {
  return !key.startsWith('telemetry.sdk.');
}

function resourceAttributes(resource) {
  if (!resource) return null;
  try {
    // 2.x: attributes of pending async detectors are left out until they settle.
    return resource.attributes || null;
  } catch (_) {
    return null;
  }
}

/**
 * ReadableSpan → the span model of spanline.js (what encodeSpan writes). `opts`: service (overrides
 * the Resource's), requestId, resourceFilter(key) → boolean.
 */
function toModel(span, opts) {
  const o = opts || {};
  const ctx = span.spanContext();
  const parentId = span.parentSpanContext ? span.parentSpanContext.spanId : span.parentSpanId;
  const startUs = hrUs(span.startTime);
  const endUs = hrUs(span.endTime);
  const status = span.status || {};
  const statusName = STATUS[status.code] || 'unset';
  const attrs = span.attributes || {};
  let requestId = o.requestId === undefined ? null : o.requestId;
  const inv = attrs['faas.invocation_id'];
  if (typeof inv === 'string' && inv !== '') requestId = inv;
  const events = [];
  for (const e of span.events || []) {
    events.push({ offset_us: hrUs(e.time) - startUs, name: e.name, attributes: attrList(e.attributes) });
  }
  const links = [];
  for (const l of span.links || []) {
    const c = l.context || {};
    links.push({ trace_id: c.traceId, span_id: c.spanId, attributes: attrList(l.attributes) });
  }
  const r = resourceFields(span.resource, o.resourceFilter || defaultResourceFilter);
  return {
    trace_id: ctx.traceId,
    span_id: ctx.spanId,
    parent_span_id: parentId || null,
    start_us: startUs,
    duration_us: endUs > startUs ? endUs - startUs : 0,
    name: span.name,
    kind: KIND[span.kind] || 'internal',
    status: statusName,
    status_message: statusName === 'error' && status.message ? status.message : null,
    service: o.service !== undefined ? o.service : r.service,
    request_id: requestId === undefined || requestId === null ? null : String(requestId),
    attributes: attrList(attrs),
    events,
    links,
    resource: r.attributes,
    dropped: {
      attributes: span.droppedAttributesCount || 0,
      events: span.droppedEventsCount || 0,
      links: span.droppedLinksCount || 0,
    },
  };
}

// The service and `+` fields of a Resource, computed once per Resource object and filter.
const resourceCache = new WeakMap();
const NO_RESOURCE = { service: null, attributes: [] };

function resourceFields(resource, filter) {
  if (!resource || typeof resource !== 'object') return NO_RESOURCE;
  let byFilter = resourceCache.get(resource);
  let hit = byFilter && byFilter.get(filter);
  if (hit) return hit;
  const attributes = resourceAttributes(resource);
  let service = null;
  const list = [];
  if (attributes) {
    for (const k in attributes) {
      const v = attributes[k];
      if (v === undefined || v === null) continue;
      if (k === 'service.name') {
        const s = String(v);
        if (!s.startsWith('unknown_service')) service = s;
        continue;
      }
      if (filter(k)) list.push(attr(k, v));
    }
  }
  hit = { service, attributes: list };
  // A Resource whose async attributes are still pending is not cached: they may settle later.
  if (!resource.asyncAttributesPending) {
    if (!byFilter) {
      byFilter = new Map();
      resourceCache.set(resource, byFilter);
    }
    byFilter.set(filter, hit);
  }
  return hit;
}

// Shared by the processor and the exporter: options, request id, writing, failures.
class LineWriter {
  constructor(options) {
    const o = options || {};
    this._opts = {
      service: o.service,
      requestId: o.requestId === undefined ? null : o.requestId,
      resourceFilter: typeof o.resourceFilter === 'function' ? o.resourceFilter : defaultResourceFilter,
    };
    this._write = typeof o.write === 'function' ? o.write : null;
    this.failures = 0;
    this._warned = false;
  }

  /** The Lambda request id (context.awsRequestId) stamped on spans from now on (`*r=`). */
  setRequestId(id) {
    this._opts.requestId = id === undefined || id === null ? null : String(id);
  }

  _line(span) {
    return spanline.encodeSpan(toModel(span, this._opts)) + '\n';
  }

  _out(text) {
    if (this._write !== null) this._write(text);
    else process.stdout.write(text);
  }

  _writeSpan(span) {
    try {
      this._out(this._line(span));
      return true;
    } catch (e) {
      this._fail(e);
      return false;
    }
  }

  _fail(err) {
    this.failures++;
    if (this._warned) return;
    this._warned = true;
    try {
      process.stderr.write(`spanline: dropping span output (${err && err.message ? err.message : err}); further failures are only counted\n`);
    } catch (_) {
      // nothing left to report to
    }
  }
}

function sampled(span) {
  const c = span.spanContext();
  return (c.traceFlags & SAMPLED) === SAMPLED;
}

/**
 * A synchronous SpanProcessor: each span's line is written in onEnd. Options: service (instead of
 * the Resource's service.name), requestId, resourceFilter(key), write(text) (default
 * process.stdout.write), announce (true: an open record at the start of every span without a
 * local parent of kind server or consumer, the invocation's entry span, so that a timed-out
 * invocation still joins its caller's trace; or a function(span) → boolean).
 */
class SpanlineSpanProcessor extends LineWriter {
  constructor(options) {
    super(options);
    const a = options && options.announce;
    this._announce = typeof a === 'function' ? a : a ? isEntrySpan : null;
    this._shutdown = false;
  }

  onStart(span, _parentContext) {
    const attrs = span.attributes;
    const inv = attrs && attrs['faas.invocation_id'];
    if (typeof inv === 'string' && inv !== '') this._opts.requestId = inv;
    if (this._announce === null || this._shutdown || !sampled(span)) return;
    try {
      if (!this._announce(span)) return;
      const m = toModel(span, this._opts);
      this._out(spanline.encodeOpen(m) + '\n');
    } catch (e) {
      this._fail(e);
    }
  }

  onEnd(span) {
    if (this._shutdown || !sampled(span)) return;
    this._writeSpan(span);
  }

  /** Nothing is queued. */
  forceFlush() {
    return Promise.resolve();
  }

  shutdown() {
    this._shutdown = true;
    return Promise.resolve();
  }
}

function isEntrySpan(span) {
  const local = span.parentSpanContext ? !span.parentSpanContext.isRemote : !!span.parentSpanId;
  return (span.kind === 1 || span.kind === 4) && !local;
}

const SUCCESS = 0; // ExportResultCode.SUCCESS
const FAILED = 1; // ExportResultCode.FAILED

/** A SpanExporter of @opentelemetry/sdk-trace-base that writes one span line per span. */
class SpanlineSpanExporter extends LineWriter {
  constructor(options) {
    super(options);
    this._shutdown = false;
  }

  export(spans, resultCallback) {
    if (this._shutdown) {
      resultCallback({ code: FAILED, error: new Error('spanline: exporter is shut down') });
      return;
    }
    let ok = true;
    for (const s of spans) if (!this._writeSpan(s)) ok = false;
    resultCallback(ok ? { code: SUCCESS } : { code: FAILED, error: new Error('spanline: a span line could not be written') });
  }

  shutdown() {
    this._shutdown = true;
    return Promise.resolve();
  }

  forceFlush() {
    return Promise.resolve();
  }
}

module.exports = { SpanlineSpanProcessor, SpanlineSpanExporter, toModel };
