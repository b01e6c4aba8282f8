'use strict';
// The OpenTelemetry bridge (otel.js): spans made through the OpenTelemetry API print span lines
// that read back to the same fields, and survive a round trip through the converter.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const api = require('@opentelemetry/api');
const { BasicTracerProvider, SimpleSpanProcessor, AlwaysOffSampler } = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { SpanlineSpanProcessor, SpanlineSpanExporter } = require('../otel.js');
const { decodeSpan, captureStdout } = require('./decode.js');

const T0 = [1700000000, 123456789]; // HrTime: 1700000000123456 µs
const T0_US = 1700000000123456;
const at = (us) => [Math.floor((T0_US + us) / 1e6), ((T0_US + us) % 1e6) * 1000];

const RESOURCE = {
  'service.name': 'orders',
  'cloud.region': 'eu-west-1',
  'faas.max_memory': 1024,
  'telemetry.sdk.language': 'nodejs',
};
const LINKED = { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 };
const REQUEST = 'c793869b-ee49-115b-a5b6-4fd21e8dedac';

// A server span (the handler, carrying faas.invocation_id) with a client child that has every
// kind of field; returns the ended spans.
function makeSpans(processor, extra) {
  const provider = new BasicTracerProvider(Object.assign({
    resource: resourceFromAttributes(RESOURCE),
    spanProcessors: [processor],
  }, extra || {}));
  const tracer = provider.getTracer('test', '1.0.0');
  const remote = api.trace.setSpanContext(api.ROOT_CONTEXT, {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true,
  });
  const root = tracer.startSpan('handler', {
    kind: api.SpanKind.SERVER, startTime: T0, attributes: { 'faas.invocation_id': REQUEST, 'faas.trigger': 'http' },
  }, remote);
  const child = tracer.startSpan('POST /charge', {
    kind: api.SpanKind.CLIENT,
    startTime: at(1000),
    attributes: {
      'http.request.method': 'POST',
      'http.response.status_code': 502,
      ratio: 0.25,
      retried: true,
      tags: ['a', 'b'],
      'name with space;%': 'x y;z%',
    },
    links: [{ context: LINKED, attributes: { 'link.kind': 'batch', n: 3 } }],
  }, api.trace.setSpan(remote, root));
  child.addEvent('retry', { attempt: 2, backoff: 0.5 }, at(11000));
  child.addEvent('gave up', {}, at(21000));
  child.setStatus({ code: api.SpanStatusCode.ERROR, message: 'upstream 502' });
  child.end(at(31000));
  root.setStatus({ code: api.SpanStatusCode.OK });
  root.end(at(40000));
  return { root, child };
}

const EXPECT_CHILD = {
  trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
  name: 'POST /charge',
  kind: 'client',
  status: 'error',
  status_message: 'upstream 502',
  start_us: T0_US + 1000,
  duration_us: 30000,
  service: 'orders',
  request_id: REQUEST,
  attributes: [
    { key: 'http.request.method', type: 'string', value: 'POST' },
    { key: 'http.response.status_code', type: 'int', value: '502' },
    { key: 'ratio', type: 'float', value: 0.25 },
    { key: 'retried', type: 'bool', value: true },
    { key: 'tags', type: 'string', value: '["a","b"]' },
    { key: 'name with space;%', type: 'string', value: 'x y;z%' },
  ],
  events: [
    { offset_us: 10000, name: 'retry', attributes: [{ key: 'attempt', type: 'int', value: '2' }, { key: 'backoff', type: 'float', value: 0.5 }] },
    { offset_us: 20000, name: 'gave up', attributes: [] },
  ],
  links: [{
    trace_id: LINKED.traceId, span_id: LINKED.spanId,
    attributes: [{ key: 'link.kind', type: 'string', value: 'batch' }, { key: 'n', type: 'int', value: '3' }],
  }],
  resource: [
    { key: 'cloud.region', type: 'string', value: 'eu-west-1' },
    { key: 'faas.max_memory', type: 'int', value: '1024' },
  ],
};

function checkLines(lines, spans, childRequest) {
  assert.equal(lines.length, 2, `two span lines, got ${JSON.stringify(lines)}`);
  const child = decodeSpan(lines[0]);
  const root = decodeSpan(lines[1]);
  const want = Object.assign({}, EXPECT_CHILD, { request_id: childRequest === undefined ? REQUEST : childRequest });
  for (const k of Object.keys(want)) assert.deepEqual(child[k], want[k], k);
  assert.equal(child.span_id, spans.child.spanContext().spanId);
  assert.equal(child.parent_span_id, spans.root.spanContext().spanId);
  assert.equal(root.span_id, spans.root.spanContext().spanId);
  assert.equal(root.parent_span_id, '00f067aa0ba902b7');
  assert.equal(root.kind, 'server');
  assert.equal(root.status, 'ok');
  assert.equal(root.status_message, null);
  assert.equal(root.start_us, T0_US);
  assert.equal(root.duration_us, 40000);
  assert.equal(root.request_id, REQUEST);
  assert.deepEqual(root.attributes, [
    { key: 'faas.invocation_id', type: 'string', value: REQUEST },
    { key: 'faas.trigger', type: 'string', value: 'http' },
  ]);
  assert.equal(child.open, false);
}

test('SpanlineSpanProcessor: spans made through the OpenTelemetry API print lines that read back to the same fields', async () => {
  let spans;
  const out = await captureStdout(() => {
    spans = makeSpans(new SpanlineSpanProcessor());
  });
  assert.ok(out.endsWith('\n'));
  checkLines(out.split('\n').filter(Boolean), spans);
});

test('the line is written in onEnd, synchronously: nothing waits for a flush', async () => {
  const lines = [];
  const provider = new BasicTracerProvider({ spanProcessors: [new SpanlineSpanProcessor({ write: (t) => lines.push(t) })] });
  const span = provider.getTracer('t').startSpan('work');
  assert.equal(lines.length, 0);
  span.end();
  assert.equal(lines.length, 1);
  const s = decodeSpan(lines[0]);
  assert.equal(s.name, 'work');
  assert.equal(s.service, null, "the SDK's unknown_service default is left out: the converter names the service after the log group");
  assert.deepEqual(s.resource, [], 'telemetry.sdk.* are left out by default');
});

test('SpanlineSpanExporter behind SimpleSpanProcessor writes the same lines (the request id only from the span itself)', async () => {
  const exporter = new SpanlineSpanExporter();
  let spans;
  const out = await captureStdout(() => {
    spans = makeSpans(new SimpleSpanProcessor(exporter));
  });
  // An exporter sees no span start: the child, which ends before the handler span, cannot
  // inherit the handler's faas.invocation_id (the processor can; or setRequestId()).
  checkLines(out.split('\n').filter(Boolean), spans, null);
  const results = [];
  exporter.export([], (r) => results.push(r));
  assert.deepEqual(results, [{ code: 0 }]);
  await exporter.forceFlush();
  await exporter.shutdown();
  exporter.export([spans.root], (r) => results.push(r));
  assert.equal(results[1].code, 1, 'export after shutdown fails');
});

test('unsampled spans print nothing', async () => {
  const lines = [];
  makeSpans(new SpanlineSpanProcessor({ write: (t) => lines.push(t) }), { sampler: new AlwaysOffSampler() });
  assert.deepEqual(lines, []);
});

test('options: service, resourceFilter, requestId / setRequestId', () => {
  const lines = [];
  const p = new SpanlineSpanProcessor({ write: (t) => lines.push(t), service: 'svc', resourceFilter: () => true, requestId: 'r-1' });
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes(RESOURCE), spanProcessors: [p] });
  const tracer = provider.getTracer('t');
  tracer.startSpan('a').end();
  p.setRequestId('r-2');
  tracer.startSpan('b').end();
  const [a, b] = lines.map(decodeSpan);
  assert.equal(a.service, 'svc');
  assert.equal(a.request_id, 'r-1');
  assert.equal(b.request_id, 'r-2');
  assert.deepEqual(a.resource.map((x) => x.key), ['cloud.region', 'faas.max_memory', 'telemetry.sdk.language']);
});

test('announce: the entry span writes an open record when it starts', () => {
  const lines = [];
  const p = new SpanlineSpanProcessor({ write: (t) => lines.push(t), announce: true });
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes(RESOURCE), spanProcessors: [p] });
  const tracer = provider.getTracer('t');
  const root = tracer.startSpan('handler', { kind: api.SpanKind.SERVER, attributes: { 'faas.invocation_id': REQUEST } });
  assert.equal(lines.length, 1);
  const open = decodeSpan(lines[0]);
  assert.equal(open.open, true);
  assert.equal(open.kind, 'server');
  assert.equal(open.request_id, REQUEST);
  assert.equal(open.service, 'orders');
  tracer.startSpan('inner', { kind: api.SpanKind.SERVER }, api.trace.setSpan(api.ROOT_CONTEXT, root)).end();
  root.end();
  assert.equal(lines.length, 3, 'a server span with a local parent is not announced');
  assert.equal(decodeSpan(lines[2]).open, false);
});

test('a failing write is counted, never thrown', () => {
  const p = new SpanlineSpanProcessor({ write: () => { throw new Error('EPIPE'); } });
  const provider = new BasicTracerProvider({ spanProcessors: [p] });
  const origErr = process.stderr.write;
  process.stderr.write = () => true;
  try {
    provider.getTracer('t').startSpan('x').end();
    provider.getTracer('t').startSpan('y').end();
  } finally {
    process.stderr.write = origErr;
  }
  assert.equal(p.failures, 2);
});

// ------------------------------------------------------------------- round trip, converter

function spanlineBin() {
  const fromEnv = process.env.SPANLINE_BIN;
  const bin = fromEnv || path.resolve(__dirname, '..', '..', '..', 'target', 'debug', 'spanline');
  if (!fs.existsSync(bin)) {
    assert.fail(`the spanline converter binary is needed for the round trip and was not found at ${bin} ` +
      `(${fromEnv ? 'SPANLINE_BIN' : 'SPANLINE_BIN is unset; the default ../../target/debug/spanline'}): ` +
      'run `cargo build` at the repository root or set SPANLINE_BIN');
  }
  return bin;
}

function anyValue(v) {
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return v.doubleValue;
  if ('boolValue' in v) return v.boolValue;
  throw new Error(`unexpected value ${JSON.stringify(v)}`);
}
const kv = (list) => Object.fromEntries((list || []).map((a) => [a.key, anyValue(a.value)]));
const ns = (hr) => BigInt(hr[0]) * 1000000000n + BigInt(hr[1]);

test('round trip through the converter: the OTLP JSON it writes has the OpenTelemetry spans', async () => {
  const bin = spanlineBin();
  let spans;
  const out = await captureStdout(() => {
    spans = makeSpans(new SpanlineSpanProcessor());
  });
  const r = spawnSync(bin, ['convert', '-', '--output', '-'], { input: out, encoding: 'utf8' });
  assert.equal(r.status, 0, `spanline convert failed: ${r.stderr}`);
  const doc = JSON.parse(r.stdout);
  const got = [];
  for (const rs of doc.resourceSpans) {
    for (const ss of rs.scopeSpans) for (const s of ss.spans) got.push({ s, resource: kv(rs.resource.attributes) });
  }
  assert.equal(got.length, 2);
  for (const otel of [spans.child, spans.root]) {
    const ctx = otel.spanContext();
    const hit = got.find((g) => g.s.spanId === ctx.spanId);
    assert.ok(hit, `span ${otel.name} in the converter's output`);
    const { s, resource } = hit;
    assert.equal(s.traceId, ctx.traceId);
    assert.equal(s.parentSpanId, otel.parentSpanContext.spanId);
    assert.equal(s.name, otel.name);
    assert.equal(s.kind, otel.kind + 1, 'OTLP kinds are the API kinds + 1');
    assert.equal(s.startTimeUnixNano, String((ns(otel.startTime) / 1000n) * 1000n));
    assert.equal(s.endTimeUnixNano, String((ns(otel.endTime) / 1000n) * 1000n));
    assert.equal((s.status || {}).code || 0, otel.status.code);
    if (otel.status.code === api.SpanStatusCode.ERROR) assert.equal(s.status.message, otel.status.message);
    const want = Object.fromEntries(Object.entries(otel.attributes).map(([k, v]) => [k, Array.isArray(v) ? JSON.stringify(v) : v]));
    assert.deepEqual(kv(s.attributes), want);
    assert.deepEqual((s.events || []).map((e) => [e.name, e.timeUnixNano, kv(e.attributes)]),
      otel.events.map((e) => [e.name, String((ns(e.time) / 1000n) * 1000n), e.attributes]));
    assert.deepEqual((s.links || []).map((l) => [l.traceId, l.spanId, kv(l.attributes)]),
      otel.links.map((l) => [l.context.traceId, l.context.spanId, l.attributes]));
    assert.equal(resource['service.name'], 'orders');
    assert.equal(resource['cloud.region'], 'eu-west-1');
    assert.equal(resource['faas.max_memory'], 1024);
  }
});
