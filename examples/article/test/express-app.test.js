'use strict';
// The article's Express app, run as a child process (its stdout captured like the awslogs driver
// does) against a fake Lambda endpoint on 127.0.0.1.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { startExpress } = require('../run-story');
const { parseSpanLine } = require('./helpers');

function fakeLambda() {
  const seen = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ headers: req.headers, body: JSON.parse(body) });
      const call = JSON.parse(body).call;
      // call 2 answers late and with an error, so the router must wait for it
      setTimeout(() => {
        res.writeHead(call === 2 ? 502 : 200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(call === 2 ? { message: 'Internal Server Error' } : { call }));
      }, call === 2 ? 300 : 10);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, seen, url: `http://127.0.0.1:${server.address().port}/ot-lambda` })));
}

test('GET /ot-gen without count answers 400 and records no span', async () => {
  const lambda = await fakeLambda();
  const app = startExpress(lambda.url);
  try {
    const base = await app.listening;
    for (const q of ['', '?count=', '?count=abc', '?count=0', '?count=1.5']) {
      const res = await fetch(`${base}/ot-gen${q}`);
      assert.equal(res.status, 400, q);
      assert.match((await res.json()).error, /count/);
    }
  } finally {
    await app.stop();
    lambda.server.close();
  }
  assert.equal(lambda.seen.length, 0);
  assert.equal(app.stream.events.filter((e) => e.message.includes('SPLN1')).length, 0);
});

test('GET /ot-gen?count=3 fans out 3 traced POSTs and finishes the router span after they settle', async () => {
  const lambda = await fakeLambda();
  const app = startExpress(lambda.url);
  let body;
  try {
    const base = await app.listening;
    const res = await fetch(`${base}/ot-gen?count=3`);
    assert.equal(res.status, 200);
    body = await res.json();
  } finally {
    await app.stop();
    lambda.server.close();
  }
  assert.deepEqual(body.results.map((r) => r.status), [200, 502, 200]);
  assert.equal(body.failed, 1);
  const spans = app.stream.events.map((e) => e.message).filter((m) => m.startsWith('SPLN1 ')).map(parseSpanLine);
  assert.ok(app.stream.events.every((e) => !e.message.includes('\n')), 'one event per line, no newline');
  const router = spans.filter((s) => s.name === 'router');
  const egress = spans.filter((s) => s.name === 'service-egress');
  assert.equal(router.length, 1);
  assert.equal(egress.length, 3);
  assert.equal(router[0].kind, 'server');
  for (const e of egress) {
    assert.equal(e.parentId, router[0].spanId);
    assert.equal(e.traceId, router[0].traceId);
    assert.equal(e.kind, 'client');
    assert.ok(e.start + e.dur <= router[0].start + router[0].dur, 'the router span ends after its children');
  }
  assert.equal(egress.filter((e) => e.error).length, 1);
  assert.ok(egress.find((e) => e.error).fields.includes('http.status_code#502'));
  // the router line is the last span line: it is written only after every call settled
  assert.equal(spans[spans.length - 1].name, 'router');
  // each POST carried its own service-egress context, in both header styles
  assert.equal(lambda.seen.length, 3);
  for (const { headers, body: b } of lambda.seen) {
    const e = egress.find((s) => headers.traceparent === `00-${s.traceId}-${s.spanId}-01`);
    assert.ok(e, `traceparent ${headers.traceparent} names a service-egress span`);
    assert.equal(headers['ot-tracer-traceid'], e.traceId);
    assert.equal(headers['ot-tracer-spanid'], e.spanId);
    assert.equal(headers['ot-tracer-sampled'], 'true');
    assert.ok([1, 2, 3].includes(b.call));
  }
});
