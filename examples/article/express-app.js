'use strict';
// The article's Express app, traced with span lines: GET /ot-gen?count=N starts a `router`
// span, fans out N POSTs to the Lambda function, each in a `service-egress` child span whose
// context is injected into the request headers, and finishes the router span when every call
// has settled. Run: LAMBDA_URL=http://127.0.0.1:9000/ot-lambda PORT=3000 node express-app.js
//
// Spans are printed to stdout (one span line each); on ECS the awslogs driver ships stdout to
// the log group (here /ecs/express-app), where `spanline` finds them.

const express = require('express');
const opentracing = require('opentracing');
const { SpanlineTracer } = require('../../emitters/node/opentracing.js');

opentracing.initGlobalTracer(new SpanlineTracer({ component_name: process.env.SERVICE_NAME || 'express-app' }));
const tracer = opentracing.globalTracer();

async function callLambda(url, parent, call) {
  const span = tracer.startSpan('service-egress', {
    childOf: parent,
    tags: { 'span.kind': 'client', 'http.method': 'POST', 'peer.service': 'lambda', 'http.url': url },
  });
  const headers = { 'content-type': 'application/json' };
  tracer.inject(span.context(), opentracing.FORMAT_HTTP_HEADERS, headers);
  try {
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ call }) });
    const text = await res.text();
    span.setTag('http.status_code', res.status);
    if (!res.ok) {
      span.setTag('error', true);
      let message = text;
      try {
        message = JSON.parse(text).message || text;
      } catch (_) {
        // not JSON: keep the text
      }
      span.log({ event: 'error', message });
    }
    return { call, status: res.status };
  } catch (err) {
    span.setTag('error', true);
    span.log({ event: 'error', 'error.object': err, message: err.message });
    return { call, error: err.message };
  } finally {
    span.finish();
  }
}

function createApp(options) {
  const lambdaUrl = (options && options.lambdaUrl) || process.env.LAMBDA_URL;
  const app = express();
  app.get('/ot-gen', async (req, res) => {
    console.log(`GET ${req.originalUrl}`);
    const count = Number(req.query.count);
    if (req.query.count === undefined || !Number.isInteger(count) || count < 1 || count > 100) {
      res.status(400).json({ error: 'query parameter count (1..100) is required' });
      return;
    }
    const incoming = tracer.extract(opentracing.FORMAT_HTTP_HEADERS, req.headers);
    const router = tracer.startSpan('router', {
      childOf: incoming || undefined,
      tags: { 'span.kind': 'server', 'http.method': 'GET', 'http.route': '/ot-gen', 'http.target': req.originalUrl },
    });
    const calls = [];
    for (let i = 1; i <= count; i++) calls.push(callLambda(lambdaUrl, router, i));
    // The article finished the router span right after starting the requests, before their
    // promises settled, so the parent ended before its children and the waterfall showed a
    // router span shorter than the calls it made. Here it finishes once every call has settled.
    const results = await Promise.all(calls);
    const failed = results.filter((r) => r.error || r.status >= 400).length;
    router.setTag('http.status_code', 200);
    router.setTag('calls.failed', failed);
    router.finish();
    res.json({ count, failed, results });
  });
  return app;
}

if (require.main === module) {
  const app = createApp();
  const server = app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
    console.log(`Express listening on :${server.address().port}`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

module.exports = { createApp, callLambda };
