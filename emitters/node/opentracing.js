'use strict';
// A drop-in OpenTracing tracer for Node that prints span lines (src/span_line/FORMAT.md).
//
//   const opentracing = require('opentracing');
//   const { SpanlineTracer } = require('spanline/opentracing');
//   opentracing.initGlobalTracer(new SpanlineTracer({ component_name: 'node-service' }));
//
// It subclasses the `opentracing` package's Tracer / Span / SpanContext (overriding the `_startSpan`,
// `_inject`, `_extract`, `_context`, `_tracer`, `_setOperationName`, `_setBaggageItem`,
// `_getBaggageItem`, `_addTags`, `_log`, `_finish` hooks) and writes through the dependency-free
// encoder spanline.js of this package. Each span prints one line to stdout when it finishes: zero
// reporting delay, nothing over the network, no background timer, nothing to flush (`flush(cb)`
// exists for code written against tracers that need it and calls back at once).
//
// * Tags: `error=true` sets the error status (not an attribute); `span.kind` sets the kind
//   (`server`, `client`, `producer`, `consumer`, `rpc.server`, `rpc.client`); other tags become
//   typed attributes (string, integer, float, boolean; anything else as JSON text).
// * Logs: `log({event: 'name', ...fields})` and `logEvent(name, payload)` become span events.
//   An `error` event's `message` (or `error.object`) becomes the status message of an error span.
// * References: the first `childOf` is the parent (else the first `followsFrom`, which per
//   OpenTracing is in the same trace); further `followsFrom` references become links.
// * Propagation, FORMAT_HTTP_HEADERS and FORMAT_TEXT_MAP: inject writes W3C `traceparent` and the
//   Lightstep/basictracer `ot-tracer-traceid`, `ot-tracer-spanid`, `ot-tracer-sampled` headers plus
//   `ot-baggage-*`; extract reads either, with any header-name case (API Gateway and Lambda
//   function URLs lowercase them), `traceparent` first. FORMAT_BINARY is not supported: inject
//   does nothing and extract returns null. Unsampled contexts print nothing but still propagate.
// * Announcing: `span.announce()`, or `startSpan(name, { childOf, announce: true })`, writes an
//   open record (flag `u`) at once, so a Lambda invocation that times out still joins its
//   caller's trace. Use it for the handler's entry span.

const spanline = require('./spanline.js');

// `opentracing` is an optional peer dependency: the application's copy, so that the tracer is an
// instance of the application's `opentracing.Tracer`. Installed (inside node_modules), plain
// resolution finds it. Required by path from a checkout of the repository (examples/article does
// `require('../../emitters/node/opentracing.js')`), the copy next to the application's main
// module or working directory is taken first, then this directory's own (its devDependency).
function loadOpentracing() {
  const path = require('path');
  const from = [];
  if (!__dirname.split(path.sep).includes('node_modules')) {
    if (require.main && require.main.filename) from.push(path.dirname(require.main.filename));
    from.push(process.cwd());
  }
  for (const dir of from) {
    let resolved = null;
    try {
      resolved = require.resolve('opentracing', { paths: [dir] });
    } catch (_) {
      continue;
    }
    return require(resolved);
  }
  try {
    return require('opentracing');
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND') {
      throw new Error("spanline/opentracing needs the 'opentracing' package: npm install opentracing");
    }
    throw e;
  }
}
const opentracing = loadOpentracing();

const FORMATS = new Set([opentracing.FORMAT_HTTP_HEADERS, opentracing.FORMAT_TEXT_MAP]);
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const HEX_RE = /^[0-9a-f]+$/;
const ZERO_RE = /^0+$/;
const BAGGAGE_PREFIX = 'ot-baggage-';

class SpanlineSpanContext extends opentracing.SpanContext {
  /** traceId: 32 lowercase hex digits; spanId: 16; sampled: boolean; baggage: plain object. */
  constructor(traceId, spanId, sampled, baggage) {
    super();
    this.traceId = traceId;
    this.spanId = spanId;
    this.sampled = sampled !== false;
    this.baggage = Object.assign({}, baggage || {});
  }

  toTraceId() {
    return this.traceId;
  }

  toSpanId() {
    return this.spanId;
  }
}

// Ids of any OpenTracing SpanContext (ours or another tracer's), or null.
function contextOf(x) {
  if (!x) return null;
  if (x instanceof SpanlineSpanContext) return x;
  let ctx = x;
  if (typeof x.context === 'function' && typeof x.toTraceId !== 'function') ctx = x.context();
  if (!ctx || typeof ctx.toTraceId !== 'function' || typeof ctx.toSpanId !== 'function') return null;
  const t = normalizeTraceId(ctx.toTraceId());
  const s = normalizeSpanId(ctx.toSpanId());
  if (!t || !s) return null;
  return new SpanlineSpanContext(t, s, ctx.sampled !== false, ctx.baggage);
}

function normalizeTraceId(v) {
  let t = String(v === undefined || v === null ? '' : v).trim().toLowerCase();
  if (t.length === 16) t = t.padStart(32, '0'); // 64-bit trace ids (older Lightstep, Jaeger, B3)
  return t.length === 32 && HEX_RE.test(t) && !ZERO_RE.test(t) ? t : null;
}

function normalizeSpanId(v) {
  const s = String(v === undefined || v === null ? '' : v).trim().toLowerCase();
  return s.length === 16 && HEX_RE.test(s) && !ZERO_RE.test(s) ? s : null;
}

function errorMessage(v) {
  if (v === undefined || v === null) return null;
  if (v instanceof Error) return v.message || String(v);
  return typeof v === 'string' ? v : null;
}

class SpanlineSpan extends opentracing.Span {
  constructor(tracer, inner, ctx) {
    super();
    this._otTracer = tracer;
    this._inner = inner; // spanline.js Span
    this._ctx = ctx;
    this._errorMessage = null;
  }

  _context() {
    return this._ctx;
  }

  _tracer() {
    return this._otTracer;
  }

  _setOperationName(name) {
    this._inner.setOperationName(name);
  }

  _setBaggageItem(key, value) {
    this._ctx.baggage[String(key)] = String(value);
  }

  _getBaggageItem(key) {
    return this._ctx.baggage[String(key)];
  }

  _addTags(keyValuePairs) {
    for (const k of Object.keys(keyValuePairs || {})) this._inner.setTag(k, keyValuePairs[k]);
  }

  _log(keyValuePairs, timestamp) {
    const kv = Object.assign({}, keyValuePairs || {});
    // logEvent(name, payload) arrives as {event: name, payload}: an object payload's fields
    // become the event's fields, a missing payload adds nothing.
    if (Object.prototype.hasOwnProperty.call(kv, 'payload')) {
      const p = kv.payload;
      delete kv.payload;
      if (p !== null && typeof p === 'object' && !Array.isArray(p) && !(p instanceof Error)) Object.assign(kv, p);
      else if (p !== undefined) kv.payload = p;
    }
    if (kv.event === 'error') {
      const m = errorMessage(kv.message) || errorMessage(kv['error.object']);
      if (m) this._errorMessage = m;
    }
    if (kv['error.object'] instanceof Error) {
      const e = kv['error.object'];
      kv['error.object'] = String(e);
      if (kv['error.kind'] === undefined && e.name) kv['error.kind'] = e.name;
      if (kv.stack === undefined && e.stack) kv.stack = String(e.stack);
    }
    this._inner.log(kv, timestamp);
  }

  _finish(finishTime) {
    if (this._errorMessage !== null && this._inner._status === 'error' && this._inner._statusMessage === null) {
      this._inner.setError(this._errorMessage);
    }
    if (!this._ctx.sampled) {
      this._inner._finished = true; // unsampled: nothing is printed
      return;
    }
    this._inner.finish(finishTime);
  }

  /** Writes the open record (flag `u`) now; see the header comment. Returns this. */
  announce() {
    if (this._ctx.sampled) this._inner.announce();
    return this;
  }

  /** Error status with a message (string or Error), like setTag('error', true) plus a message. */
  setError(message) {
    this._inner.setError(message);
    return this;
  }
}

class SpanlineTracer extends opentracing.Tracer {
  /**
   * options:
   *   component_name (Lightstep's option) or service: the service name written as `*s=`;
   *     default OTEL_SERVICE_NAME, else none (the converter derives it from the log group);
   *   resource: object or attribute list, default parsed from OTEL_RESOURCE_ATTRIBUTES;
   *   requestId: the Lambda request id stamped on spans (`*r=`), see setRequestId();
   *   buffered: batch records written by flush() instead of one line per span.
   * Options of network reporters (access_token, collector_host, …) are accepted and ignored.
   */
  constructor(options) {
    super();
    const opts = options || {};
    const service = opts.component_name !== undefined ? opts.component_name : opts.service;
    this._emitter = new spanline.Tracer({
      service,
      resource: opts.resource,
      requestId: opts.requestId,
      buffered: !!opts.buffered,
    });
  }

  /** The Lambda request id (context.awsRequestId) stamped on spans started from now on. */
  setRequestId(id) {
    this._emitter.setRequestId(id);
  }

  /** Nothing is queued (unless buffered): calls back at once. Never throws. */
  flush(done) {
    this._emitter.flush();
    if (typeof done === 'function') done(null);
    return Promise.resolve();
  }

  _startSpan(name, fields) {
    const f = fields || {};
    const refs = Array.isArray(f.references) ? f.references : [];
    let parent = null;
    const links = [];
    for (const r of refs) {
      if (r && r.type() === opentracing.REFERENCE_CHILD_OF && !parent) parent = contextOf(r.referencedContext());
    }
    for (const r of refs) {
      if (!r || r.type() !== opentracing.REFERENCE_FOLLOWS_FROM) continue;
      const c = contextOf(r.referencedContext());
      if (!c) continue;
      if (!parent) parent = c;
      else links.push(c);
    }
    const inner = this._emitter.startSpan(name, {
      childOf: parent,
      followsFrom: links,
      startTime: f.startTime,
      tags: f.tags,
    });
    const own = inner.context();
    const ctx = new SpanlineSpanContext(own.traceId, own.spanId, parent ? parent.sampled : true, parent ? parent.baggage : {});
    const span = new SpanlineSpan(this, inner, ctx);
    if (f.announce) span.announce();
    return span;
  }

  _inject(spanContext, format, carrier) {
    if (!FORMATS.has(format) || !carrier || typeof carrier !== 'object') return;
    const c = contextOf(spanContext);
    if (!c) return;
    carrier.traceparent = `00-${c.traceId}-${c.spanId}-${c.sampled ? '01' : '00'}`;
    carrier['ot-tracer-traceid'] = c.traceId;
    carrier['ot-tracer-spanid'] = c.spanId;
    carrier['ot-tracer-sampled'] = c.sampled ? 'true' : 'false';
    for (const k of Object.keys(c.baggage)) {
      carrier[BAGGAGE_PREFIX + k] = format === opentracing.FORMAT_HTTP_HEADERS ? encodeURIComponent(c.baggage[k]) : c.baggage[k];
    }
  }

  _extract(format, carrier) {
    if (!FORMATS.has(format) || !carrier || typeof carrier !== 'object') return null;
    const h = new Map();
    for (const k of Object.keys(carrier)) {
      let v = carrier[k];
      if (Array.isArray(v)) v = v[0];
      if (v === undefined || v === null) continue;
      h.set(k.toLowerCase(), String(v).trim());
    }
    const baggage = {};
    for (const [k, v] of h) {
      if (!k.startsWith(BAGGAGE_PREFIX) || k.length === BAGGAGE_PREFIX.length) continue;
      let value = v;
      if (format === opentracing.FORMAT_HTTP_HEADERS) {
        try {
          value = decodeURIComponent(v);
        } catch (_) {
          value = v;
        }
      }
      baggage[k.slice(BAGGAGE_PREFIX.length)] = value;
    }
    const tp = TRACEPARENT_RE.exec((h.get('traceparent') || '').toLowerCase());
    if (tp && tp[1] !== 'ff' && !ZERO_RE.test(tp[2]) && !ZERO_RE.test(tp[3]) && (tp[1] !== '00' || tp[5] === undefined)) {
      return new SpanlineSpanContext(tp[2], tp[3], (parseInt(tp[4], 16) & 1) === 1, baggage);
    }
    const t = normalizeTraceId(h.get('ot-tracer-traceid'));
    const s = normalizeSpanId(h.get('ot-tracer-spanid'));
    if (t && s) {
      const sampled = (h.get('ot-tracer-sampled') || 'true').toLowerCase();
      return new SpanlineSpanContext(t, s, !(sampled === 'false' || sampled === '0'), baggage);
    }
    return null;
  }
}

module.exports = { SpanlineTracer, SpanlineSpan, SpanlineSpanContext };
