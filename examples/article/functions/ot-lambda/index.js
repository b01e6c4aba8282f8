'use strict';
// The article's Lambda handler, traced with span lines: it extracts the caller's context from
// the request headers, records `lambda-execution` (announced when it starts, so that a timed-out
// invocation still joins the caller's trace), and on failure sets error=true and logs an event.
//
// Demo knobs (environment): DOWNSTREAM_URL, when set, is POSTed in a `lambda-egress` client span
// with the context injected (the harness points it at the Python function); a non-2xx answer
// fails the invocation. FAIL_CALLS and HANG_CALLS are comma-separated call numbers (the `call`
// of the request body) that fail, or hang until the function times out.

const opentracing = require('opentracing');
const { SpanlineTracer } = require('../../../../emitters/node/opentracing.js');

const spanlineTracer = new SpanlineTracer(); // service: OTEL_SERVICE_NAME, else the log group's
opentracing.initGlobalTracer(spanlineTracer);
const tracer = opentracing.globalTracer();

const numbers = (s) => new Set(String(s || '').split(',').filter(Boolean).map(Number));
const FAIL_CALLS = numbers(process.env.FAIL_CALLS);
const HANG_CALLS = numbers(process.env.HANG_CALLS);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function callDownstream(parent, call) {
  const url = process.env.DOWNSTREAM_URL;
  const span = tracer.startSpan('lambda-egress', {
    childOf: parent,
    tags: { 'span.kind': 'client', 'http.method': 'POST', 'http.url': url },
  });
  const headers = { 'content-type': 'application/json' };
  tracer.inject(span.context(), opentracing.FORMAT_HTTP_HEADERS, headers);
  try {
    const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ call }) });
    span.setTag('http.status_code', res.status);
    const body = await res.text();
    if (!res.ok) {
      span.setTag('error', true);
      span.log({ event: 'error', message: `upstream returned ${res.status}` });
      throw new Error(`upstream returned ${res.status}`);
    }
    return JSON.parse(body || '{}');
  } finally {
    span.finish();
  }
}

exports.handler = async (event, context) => {
  spanlineTracer.setRequestId(context.awsRequestId);
  const parent = tracer.extract(opentracing.FORMAT_HTTP_HEADERS, event.headers || {});
  const span = tracer.startSpan('lambda-execution', {
    childOf: parent || undefined,
    announce: true,
    tags: { 'span.kind': 'server', 'faas.trigger': 'http' },
  });
  console.log(`received event with ${Object.keys(event.headers || {}).length} headers`);
  try {
    const body = JSON.parse(event.body || '{}');
    const call = Number(body.call);
    span.setTag('call', call);
    let item = null;
    if (process.env.DOWNSTREAM_URL) item = await callDownstream(span, call);
    if (FAIL_CALLS.has(call)) throw new Error(`call ${call} failed`);
    if (HANG_CALLS.has(call)) {
      console.log('calling slow dependency');
      await sleep(Number(process.env.HANG_MS || 60000));
    }
    span.logEvent('done', { call });
    return { statusCode: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ call, item }) };
  } catch (err) {
    span.setTag('error', true);
    span.log({ event: 'error', 'error.kind': err.name, message: err.message });
    throw err; // the invocation fails: the runtime logs it and the gateway answers 502
  } finally {
    span.finish();
  }
};
