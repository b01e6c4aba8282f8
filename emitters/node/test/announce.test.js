'use strict';
// Open records (FORMAT.md §3, flag `u`): run with node --test test/ (in emitters/node)
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const spanline = require('../spanline.js');
const { captureChunks } = require('./decode.js');

const valid = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'fixtures', 'conformance', 'valid.json'), 'utf8')).vectors;

test('encodeOpen reproduces the open-record vector', () => {
  const v = valid.find((x) => x.name.startsWith('open record'));
  assert.ok(v, 'the open-record vector exists');
  assert.equal(spanline.encodeOpen(v.spans[0]), v.line);
});

test('encodeOpen writes no attributes, events, links or status, only *r, *s and resource', () => {
  const line = spanline.encodeOpen({
    trace_id: '4bf92f3577b34da6a3ce929d0e0e4736', span_id: '00f067aa0ba902b7', parent_span_id: null,
    start_us: 1700000000000000, duration_us: 5, name: 'entry', kind: 'internal', status: 'error', status_message: 'x',
    service: 'svc', request_id: 'r1', attributes: [{ key: 'a', type: 'string', value: 'b' }],
    events: [{ offset_us: 1, name: 'e', attributes: [] }], links: [], resource: [{ key: 'cloud.region', type: 'string', value: 'eu-west-1' }],
  });
  assert.equal(line, 'SPLN1 S_kvNXezTaajzpKdDg5HNgAPBnqgupArc 1700000000000000 0u entry *r=r1 *s=svc +cloud.region=eu-west-1;');
});

test('announce writes one open record at start; finish supersedes it with the same ids', () => {
  const tracer = new spanline.Tracer({ service: null, resource: [] });
  tracer.setRequestId('req-1');
  const parent = new spanline.SpanContext('4bf92f3577b34da6a3ce929d0e0e4736', '53995c3f42cd8ad8');
  let span;
  const out = captureChunks(() => {
    span = tracer.startSpan('lambda-execution', { childOf: parent, kind: 'server', announce: true });
    span.announce(); // once only
    span.setTag('faas.trigger', 'http');
    span.finish();
    span.announce(); // nothing after finish
  });
  assert.equal(out.length, 2);
  const ids = out[0].split(' ')[1];
  assert.equal(ids.length, 44);
  assert.match(out[0], /^SPLN1 [A-Za-z0-9_-]{44} \d+ 0su lambda-execution \*r=req-1;\n$/);
  assert.equal(out[1].split(' ')[1], ids);
  assert.equal(out[1].split(' ')[2], out[0].split(' ')[2], 'same start time');
  assert.match(out[1], / \d+s lambda-execution faas\.trigger=http \*r=req-1;\n$/);
});

test('announce in buffered mode is written at once', () => {
  const tracer = new spanline.Tracer({ buffered: true, resource: [] });
  let span;
  const out = captureChunks(() => {
    span = tracer.startSpan('entry');
    span.announce();
  });
  assert.equal(out.length, 1);
  assert.match(out[0], / 0u entry;\n$/);
  const later = captureChunks(() => {
    span.finish();
    tracer.flush();
  });
  assert.equal(later.length, 1);
  assert.match(later[0], /^SPLN1 \+/);
});
