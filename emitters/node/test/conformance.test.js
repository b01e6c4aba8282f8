'use strict';
// Run with: node --test test/ (in emitters/node)
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const spanline = require('../spanline.js');
const { captureChunks } = require('./decode.js');

const FIXTURES = path.join(__dirname, '..', '..', '..', 'fixtures', 'conformance');
const valid = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'valid.json'), 'utf8')).vectors;

test('there are canonical vectors', () => {
  assert.ok(valid.filter((v) => v.canonical).length >= 20);
});

for (const v of valid.filter((x) => x.canonical)) {
  test(`canonical vector: ${v.name}`, () => {
    const input = v.input || v.spans;
    const line = v.record === 'batch' ? spanline.encodeBatch(input) : spanline.encodeSpan(input[0]);
    assert.equal(line, v.line);
    // the general encoder too (encodeSpan takes a fast path for common spans)
    if (v.record !== 'batch') assert.equal(spanline.encodeSpanGeneral(input[0]), v.line);
  });
}

test('floats follow Number.prototype.toString with nan/inf', () => {
  const cases = [[1, '1'], [1.5, '1.5'], [-0.25, '-0.25'], [1e21, '1e+21'], [1.5e-7, '1.5e-7'],
    [NaN, 'nan'], [Infinity, 'inf'], [-Infinity, '-inf'], [-0, '0'], ['nan', 'nan'], ['-inf', '-inf']];
  for (const [x, want] of cases) assert.equal(spanline.formatFloat(x), want);
});

const LINE_RE = /^SPLN1 [A-Za-z0-9_-]{33}([A-Za-z0-9_-]{11})? \d+ \d+[a-z]* [^ ]*( [^ ]+)*;\n$/;

function assertSpanLine(chunk) {
  assert.ok(chunk.startsWith('SPLN1 '), chunk);
  assert.ok(chunk.endsWith(';\n'), chunk);
  const body = chunk.slice(0, -1);
  assert.ok(!/[\x00-\x1f\x7f]/.test(body), `control character in ${JSON.stringify(body)}`);
  assert.ok(Buffer.byteLength(body) <= spanline.MAX_LINE);
  assert.match(chunk, LINE_RE);
}

test('Tracer.finish prints exactly one well-formed span line', () => {
  const tracer = new spanline.Tracer({ service: 'checkout svc', resource: { 'cloud.region': 'eu-west-1' } });
  tracer.setRequestId('8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07');
  const out = captureChunks(() => {
    const root = tracer.startSpan('handler', { kind: 'server' });
    const child = tracer.startSpan('GET /orders\n{id};', { childOf: root, kind: 'client' });
    child.setTag('http.status_code', 200).setTag('ratio', 0.5).setTag('big', 2n ** 40n).setTag('ok', true)
      .setTag('msg', 'line1\nline2\ttab; 100%').setTag('span.kind', 'producer').setTag('error', true);
    child.log({ event: 'retry', attempt: 2 });
    child.logEvent('cache.miss', { key: 'user:42' });
    child.setError('boom; again');
    child.finish();
    child.finish(); // second finish writes nothing
    root.finish();
  });
  assert.equal(out.length, 2);
  for (const chunk of out) assertSpanLine(chunk);
  const [child, root] = out;
  assert.match(child, / \d+pe GET%20\/orders%0A\{id\}%3B /);
  assert.match(child, / http\.status_code#200 ratio~0\.5 big#1099511627776 ok!t msg=line1%0Aline2%09tab%3B%20100%25 /);
  assert.match(child, / @\d+=retry attempt#2 @\d+=cache\.miss key=user:42 \*m=boom%3B%20again /);
  assert.match(child, / \*r=8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07 \*s=checkout%20svc \+cloud\.region=eu-west-1;\n$/);
  // the child's trace id and parent come from the root
  const rootIds = root.split(' ')[1];
  const childIds = child.split(' ')[1];
  assert.equal(rootIds.length, 33);
  assert.equal(childIds.length, 44);
  assert.equal(childIds.slice(0, 22), rootIds.slice(0, 22));
  assert.equal(childIds.slice(33), rootIds.slice(22, 33));
  // microsecond start times close to the wall clock
  const start = Number(root.split(' ')[2]);
  assert.ok(Math.abs(start - Date.now() * 1000) < 60e6, String(start));
});

test('Tracer never throws into the caller and reports a failing stdout once', () => {
  const tracer = new spanline.Tracer({ service: null, resource: [] });
  const orig = process.stdout.write;
  const origErr = process.stderr.write;
  const errs = [];
  process.stdout.write = () => {
    throw new Error('EPIPE');
  };
  process.stderr.write = (c) => {
    errs.push(String(c));
    return true;
  };
  try {
    tracer.startSpan('a').finish();
    tracer.startSpan('b').finish();
    const bad = tracer.startSpan('c', { childOf: { traceId: 'nothex', spanId: 'x' } });
    bad.setTag('obj', { toJSON() { throw new Error('no'); } });
    bad.finish();
  } finally {
    process.stdout.write = orig;
    process.stderr.write = origErr;
  }
  assert.equal(tracer.failures, 3);
  assert.equal(errs.length, 1);
});

test('buffered Tracer writes batch records on flush', () => {
  const tracer = new spanline.Tracer({ service: 'svc', resource: [], buffered: true });
  const out = captureChunks(() => {
    const root = tracer.startSpan('root');
    for (let i = 0; i < 3; i++) tracer.startSpan('child', { childOf: root }).setTag('i', 1).finish();
    root.finish();
    tracer.flush();
  });
  assert.equal(out.length, 1);
  const line = out[0];
  assert.ok(line.startsWith('SPLN1 +') && line.endsWith(';\n'));
  assert.equal(line.split(' |').length, 5);
  assert.match(line, / \*s=svc \|/);
  assert.match(line, / \| *[A-Za-z0-9_-]{11} " \d+ \d+ " "/);
});

test('encodeBatches splits at 64 spans', () => {
  const spans = [];
  for (let i = 1; i <= 70; i++) {
    spans.push({
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', span_id: i.toString(16).padStart(16, '0'), parent_span_id: null,
      start_us: 1700000000000000 + i, duration_us: 1, name: 'n', kind: 'internal', status: 'unset',
      status_message: null, service: null, request_id: null, attributes: [], events: [], links: [], resource: [],
    });
  }
  const lines = spanline.encodeBatches(spans);
  assert.equal(lines.length, 2);
  assert.equal(lines[0].split(' |').length, 65);
  assert.ok(lines[1].startsWith('SPLN1 +S_kvNXezTaajzpKdDg5HNg 1700000000000065 |'));
  assert.throws(() => spanline.encodeBatch(spans), RangeError);
});
