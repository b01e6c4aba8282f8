'use strict';
// End to end: the Express app, the Node function (text log format) and the Python function
// (JSON log format) run through the local Lambda harness; the captured CloudWatch subscription
// payloads must tell the whole story: one trace, a cold start, a failure and a timeout.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { runStory } = require('../run-story');
const { parseSpanLine } = require('./helpers');

const N = 3;
const REQ = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

test('the article story, captured as CloudWatch subscription payloads', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'spanline-story-'));
  const r = await runStory({ out, count: N, timeoutSeconds: 1 });
  assert.equal(r.response.status, 200);
  assert.deepEqual(r.response.body.results.map((x) => x.status), [200, 502, 504]);
  assert.deepEqual(fs.readdirSync(out).sort(), ['express-app.json', 'ot-lambda-py.json', 'ot-lambda.json']);
  const load = (f) => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8'));
  const ex = load('express-app.json');
  const node = load('ot-lambda.json');
  const py = load('ot-lambda-py.json');

  // payload shape (as fixtures/sample/*.json)
  for (const [p, group] of [[ex, '/ecs/express-app'], [node, '/aws/lambda/ot-lambda'], [py, '/aws/lambda/ot-lambda-py']]) {
    assert.equal(p.messageType, 'DATA_MESSAGE');
    assert.equal(p.logGroup, group);
    assert.equal(typeof p.owner, 'string');
    assert.deepEqual(p.subscriptionFilters, ['spanline']);
    assert.ok(p.logEvents.length > 0);
    for (const e of p.logEvents) {
      assert.equal(typeof e.id, 'string');
      assert.ok(Number.isInteger(e.timestamp));
      assert.equal(typeof e.message, 'string');
    }
    const ts = p.logEvents.map((e) => e.timestamp);
    assert.deepEqual(ts, [...ts].sort((a, b) => a - b), 'events in time order');
  }
  assert.match(node.logStream, /^\d{4}\/\d{2}\/\d{2}\/\[\$LATEST\][0-9a-f]{32}$/);

  const spansOf = (p) => p.logEvents.map((e) => e.message).filter((m) => m.includes('SPLN1 ')).map(parseSpanLine);

  // Express: a router span and N service-egress children, one trace
  const exSpans = spansOf(ex);
  const router = exSpans.find((s) => s.name === 'router');
  const egress = exSpans.filter((s) => s.name === 'service-egress');
  assert.ok(router);
  assert.equal(egress.length, N);
  const trace = router.traceId;
  for (const e of egress) {
    assert.equal(e.parentId, router.spanId);
    assert.equal(e.traceId, trace);
  }
  assert.equal(egress.filter((e) => e.error).length, 2);

  // Node function, text format: START / END / REPORT per invocation, one cold start
  const msgs = node.logEvents.map((e) => e.message);
  const starts = msgs.filter((m) => new RegExp(`^START RequestId: ${REQ} Version: \\$LATEST\\n$`).test(m));
  const ends = msgs.filter((m) => new RegExp(`^END RequestId: ${REQ}\\n$`).test(m));
  const reports = msgs.filter((m) => m.startsWith('REPORT RequestId: '));
  assert.equal(starts.length, N);
  assert.equal(ends.length, N);
  assert.equal(reports.length, N);
  for (const rep of reports) {
    assert.match(rep, new RegExp(`^REPORT RequestId: ${REQ}\\tDuration: \\d+\\.\\d{2} ms\\tBilled Duration: \\d+ ms\\tMemory Size: 128 MB\\tMax Memory Used: \\d+ MB\\t`));
  }
  assert.equal(msgs.filter((m) => m.startsWith('INIT_START Runtime Version: nodejs:')).length, 1);
  const cold = reports.filter((m) => /\tInit Duration: \d+\.\d{2} ms\t/.test(m));
  assert.equal(cold.length, 1);
  assert.equal(reports.indexOf(cold[0]), 0, 'the first invocation is the cold start');
  // console.log carries the Node runtime's prefix
  assert.ok(msgs.some((m) => new RegExp(`^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z\\t${REQ}\\tINFO\\treceived event with \\d+ headers\\n$`).test(m)));
  // the failure: the runtime's Invoke Error record
  assert.equal(msgs.filter((m) => /\tERROR\tInvoke Error \t\{"errorType":"Error","errorMessage":"upstream returned 500"/.test(m)).length, 1);
  // the timeout
  const timedOut = reports.filter((m) => m.endsWith('\tStatus: timeout\n'));
  assert.equal(timedOut.length, 1);
  assert.match(timedOut[0], /\tDuration: 1000\.00 ms\tBilled Duration: 1000 ms\t/);
  const toReq = /RequestId: (\S+)/.exec(timedOut[0])[1];
  assert.equal(msgs.filter((m) => new RegExp(`^\\S+Z ${toReq} Task timed out after 1\\.00 seconds\\n$`).test(m)).length, 1);

  // Node function spans: each lambda-execution is a child of a service-egress span
  const nodeSpans = spansOf(node);
  const execs = nodeSpans.filter((s) => s.name === 'lambda-execution');
  const opens = execs.filter((s) => s.open);
  const finished = execs.filter((s) => !s.open);
  assert.equal(opens.length, N, 'every invocation announced its entry span');
  assert.equal(finished.length, N - 1);
  for (const s of execs) {
    assert.equal(s.traceId, trace);
    assert.ok(egress.some((e) => e.spanId === s.parentId), 'lambda-execution is a child of a service-egress span');
    assert.equal(s.kind, 'server');
  }
  assert.equal(new Set(execs.map((s) => s.parentId)).size, N, 'one per service-egress call');
  assert.equal(finished.filter((s) => s.error).length, 1, 'one failed');
  assert.ok(finished.find((s) => s.error).fields.includes('*m=upstream%20returned%20500'));
  const unfinished = opens.filter((o) => !finished.some((f) => f.spanId === o.spanId));
  assert.equal(unfinished.length, 1, 'the timed-out invocation left an open record and no finished record');
  assert.ok(unfinished[0].fields.includes(`*r=${toReq}`));

  // Python function, JSON format: platform.start / platform.report per invocation, its spans
  // children of the Node function's lambda-egress spans
  const recs = py.logEvents.map((e) => e.message).filter((m) => m.startsWith('{')).map((m) => JSON.parse(m));
  const pyStarts = recs.filter((x) => x.type === 'platform.start');
  const pyReports = recs.filter((x) => x.type === 'platform.report');
  assert.equal(pyStarts.length, N);
  assert.equal(pyReports.length, N);
  assert.equal(recs.filter((x) => x.type === 'platform.initStart').length, 1);
  assert.equal(pyReports.filter((x) => typeof x.record.metrics.initDurationMs === 'number').length, 1);
  for (const rep of pyReports) {
    assert.equal(rep.record.status, 'success');
    assert.equal(rep.record.metrics.memorySizeMB, 128);
  }
  assert.ok(recs.some((x) => x.level === 'INFO' && /^looking up the item for call \d$/.test(x.message) && x.requestId));
  const egress2 = nodeSpans.filter((s) => s.name === 'lambda-egress');
  assert.equal(egress2.length, N);
  const pySpans = spansOf(py);
  const pyExecs = pySpans.filter((s) => s.name === 'python-execution' && !s.open);
  assert.equal(pyExecs.length, N);
  assert.equal(pySpans.filter((s) => s.open).length, N);
  for (const s of pyExecs) {
    assert.equal(s.traceId, trace);
    assert.ok(egress2.some((e) => e.spanId === s.parentId), 'python-execution is a child of a lambda-egress span');
  }
  assert.equal(pyExecs.filter((s) => s.error).length, 1);

  // the harness's own account of the invocations
  const byFn = (name) => r.invocations.filter((i) => i.function === name);
  assert.deepEqual(byFn('ot-lambda').map((i) => i.status).sort(), ['error', 'success', 'timeout']);
  assert.equal(byFn('ot-lambda').filter((i) => i.coldStart).length, 1);
  fs.rmSync(out, { recursive: true, force: true });
});
