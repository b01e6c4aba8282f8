'use strict';
// The OpenTracing tracer: run with `node --test test/` in examples/article (after npm ci).
const test = require('node:test');
const assert = require('node:assert/strict');
const opentracing = require('opentracing');
const { SpanlineTracer, SpanlineSpanContext } = require('../../../emitters/node/opentracing.js');
const { parseSpanLine, captureStdout } = require('./helpers');

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

test('is an opentracing Tracer usable as the global tracer', async () => {
  const t = new SpanlineTracer({ component_name: 'node-service' });
  assert.ok(t instanceof opentracing.Tracer);
  opentracing.initGlobalTracer(t);
  const out = await captureStdout(() => {
    const span = opentracing.globalTracer().startSpan('op');
    assert.ok(span instanceof opentracing.Span);
    assert.ok(span.context() instanceof opentracing.SpanContext);
    span.finish();
  });
  assert.equal(out.length, 1);
  assert.match(out[0], / op \*s=node-service;\n$/);
  opentracing.initGlobalTracer(new opentracing.Tracer());
});

test('inject / extract round trip with HTTP headers and text maps', () => {
  const tracer = new SpanlineTracer();
  for (const format of [opentracing.FORMAT_HTTP_HEADERS, opentracing.FORMAT_TEXT_MAP]) {
    const span = tracer.startSpan('a');
    span.setBaggageItem('user', 'ada lovelace');
    const carrier = {};
    tracer.inject(span.context(), format, carrier);
    const c = span.context();
    assert.equal(carrier.traceparent, `00-${c.toTraceId()}-${c.toSpanId()}-01`);
    assert.equal(carrier['ot-tracer-traceid'], c.toTraceId());
    assert.equal(carrier['ot-tracer-spanid'], c.toSpanId());
    assert.equal(carrier['ot-tracer-sampled'], 'true');
    const back = tracer.extract(format, carrier);
    assert.ok(back instanceof SpanlineSpanContext);
    assert.equal(back.toTraceId(), c.toTraceId());
    assert.equal(back.toSpanId(), c.toSpanId());
    assert.equal(back.baggage.user, 'ada lovelace');
    // inject accepts a span too
    const c2 = {};
    tracer.inject(span, format, c2);
    assert.equal(c2.traceparent, carrier.traceparent);
  }
});

test('extract is case-insensitive and reads W3C first, then Lightstep ot-tracer-*', () => {
  const tracer = new SpanlineTracer();
  const H = opentracing.FORMAT_HTTP_HEADERS;
  let c = tracer.extract(H, { TraceParent: `00-${TRACE}-${SPAN}-01`, 'OT-Tracer-TraceId': 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'OT-Tracer-SpanId': 'bbbbbbbbbbbbbbbb' });
  assert.equal(c.toTraceId(), TRACE);
  assert.equal(c.toSpanId(), SPAN);
  c = tracer.extract(H, { 'OT-TRACER-TRACEID': '0123456789ABCDEF', 'Ot-Tracer-Spanid': 'FEDCBA9876543210', 'OT-TRACER-SAMPLED': 'true' });
  assert.equal(c.toTraceId(), '00000000000000000123456789abcdef'); // 64-bit ids are padded
  assert.equal(c.toSpanId(), 'fedcba9876543210');
  assert.equal(c.sampled, true);
  c = tracer.extract(opentracing.FORMAT_TEXT_MAP, { 'ot-tracer-traceid': TRACE, 'ot-tracer-spanid': SPAN, 'ot-tracer-sampled': 'false' });
  assert.equal(c.sampled, false);
  // invalid or missing: null
  assert.equal(tracer.extract(H, {}), null);
  assert.equal(tracer.extract(H, { traceparent: `00-${'0'.repeat(32)}-${SPAN}-01` }), null);
  assert.equal(tracer.extract(H, { traceparent: 'garbage' }), null);
  assert.equal(tracer.extract(opentracing.FORMAT_BINARY, { traceparent: `00-${TRACE}-${SPAN}-01` }), null);
  // an invalid traceparent falls back to ot-tracer-*
  c = tracer.extract(H, { traceparent: 'garbage', 'ot-tracer-traceid': TRACE, 'ot-tracer-spanid': SPAN });
  assert.equal(c.toSpanId(), SPAN);
});

test('a child of an extracted context joins its trace; tags, kind, logs and error are written', async () => {
  const tracer = new SpanlineTracer({ component_name: 'svc' });
  tracer.setRequestId('req-1');
  const parent = tracer.extract(opentracing.FORMAT_HTTP_HEADERS, { traceparent: `00-${TRACE}-${SPAN}-01` });
  const out = await captureStdout(() => {
    const span = tracer.startSpan('lambda-execution', { childOf: parent, tags: { 'span.kind': 'server', 'http.method': 'POST' } });
    span.setTag('http.status_code', 500).setTag('ratio', 0.5).setTag('ok', false).setTag('obj', { a: 1 });
    span.log({ event: 'retry', attempt: 2 });
    span.logEvent('cache.miss', { key: 'user:42' });
    span.logEvent('plain', 'text payload');
    span.setTag('error', true);
    span.log({ event: 'error', 'error.object': new TypeError('bad input'), message: 'bad input' });
    span.finish();
    span.finish(); // once
  });
  assert.equal(out.length, 1);
  const s = parseSpanLine(out[0]);
  assert.equal(s.traceId, TRACE);
  assert.equal(s.parentId, SPAN);
  assert.equal(s.kind, 'server');
  assert.equal(s.error, true);
  assert.equal(s.name, 'lambda-execution');
  const f = s.fields.join(' ');
  assert.match(f, /^http\.method=POST http\.status_code#500 ratio~0\.5 ok!f obj=\{"a":1\} /);
  assert.match(f, / @\d+=retry attempt#2 @\d+=cache\.miss key=user:42 @\d+=plain payload=text%20payload @\d+=error error\.object=TypeError:%20bad%20input message=bad%20input error\.kind=TypeError stack=/);
  assert.match(f, / \*m=bad%20input \*r=req-1 \*s=svc$/);
  assert.ok(!/ error[=!]/.test(' ' + s.fields.slice(0, 4).join(' ')), 'error is a status, not an attribute');
});

test('span.kind client and error=false', async () => {
  const tracer = new SpanlineTracer();
  const out = await captureStdout(() => {
    const span = tracer.startSpan('service-egress');
    span.setTag('span.kind', 'client');
    span.setTag('error', true);
    span.setTag('error', false);
    span.finish();
  });
  const s = parseSpanLine(out[0]);
  assert.equal(s.kind, 'client');
  assert.equal(s.error, false);
  assert.equal(s.parentId, null);
});

test('childOf a span, followsFrom references, startTime and finishTime (ms)', async () => {
  const tracer = new SpanlineTracer();
  const out = await captureStdout(() => {
    const root = tracer.startSpan('root', { startTime: 1700000000000 });
    const other = tracer.startSpan('other');
    const child = tracer.startSpan('child', {
      childOf: root,
      references: [opentracing.followsFrom(other.context())],
      startTime: 1700000000100,
    });
    child.finish(1700000000350.5);
    root.finish(1700000001000);
    other.finish();
  });
  const [child, root] = out.map(parseSpanLine);
  assert.equal(child.parentId, root.spanId);
  assert.equal(child.traceId, root.traceId);
  assert.equal(child.start, 1700000000100000);
  assert.equal(child.dur, 250500);
  assert.ok(child.fields.some((x) => x.startsWith('^')), 'followsFrom becomes a link');
  assert.equal(root.dur, 1000000);
});

test('announce writes an open record first; finish supersedes it', async () => {
  const tracer = new SpanlineTracer();
  tracer.setRequestId('req-9');
  const parent = new SpanlineSpanContext(TRACE, SPAN);
  let span;
  const started = await captureStdout(() => {
    span = tracer.startSpan('lambda-execution', { childOf: parent, announce: true, tags: { 'span.kind': 'server' } });
  });
  assert.equal(started.length, 1);
  const open = parseSpanLine(started[0]);
  assert.equal(open.open, true);
  assert.equal(open.flags, 'su');
  assert.equal(open.dur, 0);
  assert.deepEqual(open.fields, ['*r=req-9']);
  const finished = await captureStdout(() => {
    span.announce(); // once only
    span.finish();
  });
  assert.equal(finished.length, 1);
  const done = parseSpanLine(finished[0]);
  assert.equal(done.open, false);
  assert.equal(done.spanId, open.spanId);
  assert.equal(done.start, open.start);
  // span.announce() on a span started without the option
  const viaMethod = await captureStdout(() => tracer.startSpan('x').announce());
  assert.match(viaMethod[0], / 0u x \*r=req-9;\n$/);
});

test('unsampled contexts print nothing but still propagate', async () => {
  const tracer = new SpanlineTracer();
  const parent = tracer.extract(opentracing.FORMAT_HTTP_HEADERS, { traceparent: `00-${TRACE}-${SPAN}-00` });
  assert.equal(parent.sampled, false);
  const carrier = {};
  const out = await captureStdout(() => {
    const span = tracer.startSpan('quiet', { childOf: parent, announce: true });
    tracer.inject(span.context(), opentracing.FORMAT_HTTP_HEADERS, carrier);
    span.finish();
  });
  assert.equal(out.length, 0);
  assert.match(carrier.traceparent, new RegExp(`^00-${TRACE}-[0-9a-f]{16}-00$`));
  assert.equal(carrier['ot-tracer-sampled'], 'false');
});

test('flush calls back at once; nothing goes over the network', async () => {
  const tracer = new SpanlineTracer({ access_token: 'ignored', collector_host: 'ignored' });
  let called = false;
  await tracer.flush(() => {
    called = true;
  });
  assert.equal(called, true);
});
