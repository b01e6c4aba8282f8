'use strict';
// The native tracer writes the common span line by concatenation (fastLine in spanline.js) and
// everything else through encodeSpan(toModel()); encodeSpan has a fast path of its own for common
// models (fastEncode, what the OpenTelemetry bridge uses). Random spans and models must come out
// byte for byte as the general encoder (encodeSpanGeneral) writes them, on every path.
const test = require('node:test');
const assert = require('node:assert/strict');
const spanline = require('../spanline.js');
const { captureChunks } = require('./decode.js');

// Deterministic PRNG (mulberry32), so a failure reproduces.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PLAIN = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:';
const ODD = [' ', '%', ';', '=', '#', '~', '!', '"', '|', '*', '+', '@', '^', '\n', '\t', '\x7f', 'é', '€', '😀', '\u0000'];

function randString(r, maxLen) {
  const mode = r();
  let n = Math.floor(r() * (maxLen + 1));
  if (mode < 0.05) n = 0;
  else if (mode < 0.08) n = 100 + Math.floor(r() * 700); // near and past the limits
  let s = '';
  for (let i = 0; i < n; i++) {
    s += mode > 0.93 && r() < 0.2 ? ODD[Math.floor(r() * ODD.length)] : PLAIN[Math.floor(r() * PLAIN.length)];
  }
  return s;
}

function randValue(r) {
  const k = r();
  if (k < 0.5) return randString(r, 20);
  if (k < 0.6) return Math.floor((r() - 0.5) * 1e6);
  if (k < 0.65) return (r() - 0.5) * 1e3;
  if (k < 0.67) return [NaN, Infinity, -Infinity, -0, 2 ** 60, 1e25][Math.floor(r() * 6)];
  if (k < 0.75) return r() < 0.5;
  if (k < 0.8) return BigInt(Math.floor(r() * 1e9)) * 1000000000000n;
  if (k < 0.85) return { a: randString(r, 5) };
  return randString(r, 10);
}

test('random spans: the tracer writes what encodeSpan writes for the same span', () => {
  const r = rng(14);
  let general = 0;
  const origEmit = spanline.Tracer.prototype._emit;
  spanline.Tracer.prototype._emit = function (model) {
    general++;
    return origEmit.call(this, model);
  };
  try {
    const N = 3000;
    for (let i = 0; i < N; i++) {
      const opts = {};
      if (r() < 0.5) opts.service = r() < 0.8 ? randString(r, 12) : null;
      if (r() < 0.5) {
        const res = {};
        const n = Math.floor(r() * 4);
        for (let j = 0; j < n; j++) res[randString(r, 10) || 'k'] = randValue(r);
        opts.resource = res;
      }
      if (r() < 0.3) opts.requestId = r() < 0.8 ? randString(r, 36) : 12345;
      const tracer = new spanline.Tracer(opts);
      const spanOpts = { kind: ['internal', 'server', 'client', 'producer', 'consumer', undefined][Math.floor(r() * 6)] };
      if (r() < 0.6) spanOpts.childOf = { traceId: Buffer.from([...Array(16)].map(() => Math.floor(r() * 256))).toString('hex'), spanId: Buffer.from([...Array(8)].map(() => Math.floor(r() * 256))).toString('hex') };
      if (r() < 0.3) spanOpts.startTime = 1.7e12 + Math.floor(r() * 1e9) / 1000; // ms, µs precision
      if (r() < 0.05) spanOpts.startTime = r() * 1000; // start below one second
      if (r() < 0.05) spanOpts.followsFrom = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' };
      if (r() < 0.2) spanOpts.requestId = randString(r, 20);
      const span = tracer.startSpan(randString(r, 30), spanOpts);
      const nTags = r() < 0.05 ? 65 + Math.floor(r() * 10) : Math.floor(r() * 6);
      const many = nTags > 64; // past the attribute limit: plain tags, so the fast path counts the drops
      for (let j = 0; j < nTags; j++) {
        if (many) span.setTag('k' + j, r() < 0.5 ? 'v' + j : j);
        else span.setTag(r() < 0.9 ? randString(r, 16) : 'k' + j, randValue(r));
      }
      if (r() < 0.1) { // near the line's byte budget, on either side of it
        const n = 19 + Math.floor(r() * 2);
        const len = 380 + Math.floor(r() * 40);
        for (let j = 0; j < n; j++) span.setTag('long' + j, 'x'.repeat(len));
      }
      if (r() < 0.1) span.log({ event: randString(r, 8), n: 1 });
      const st = r();
      if (st < 0.2) span.setError(r() < 0.7 ? randString(r, 40) : undefined);
      else if (st < 0.3) span.setOk();
      let lines;
      let finishTime;
      if (spanOpts.startTime !== undefined && r() < 0.8) {
        finishTime = spanOpts.startTime + (r() < 0.1 ? -1 : r() * 5000);
        lines = captureChunks(() => span.finish(finishTime));
      } else {
        lines = captureChunks(() => span.finish());
      }
      assert.equal(lines.length, 1);
      // the duration the tracer measured, read back from the line
      const dur = Number(/^SPLN1 \S+ \d+ (\d+)/.exec(lines[0])[1]);
      if (finishTime !== undefined) {
        assert.equal(dur, Math.max(0, Math.round(finishTime * 1000) - span._startUs));
      }
      assert.equal(lines[0], spanline.encodeSpanGeneral(span.toModel(dur)) + '\n', `span ${i}`);
    }
    // both paths ran, the fast one most of the time
    assert.ok(general > N / 10, `general path ${general}`);
    assert.ok(N - general > N / 4, `fast path ${N - general}`);
    console.error(`fast path ${N - general}, general ${general}`);
  } finally {
    spanline.Tracer.prototype._emit = origEmit;
  }
});

test('random ids: base64url from the pool matches the hex ids', () => {
  const tracer = new spanline.Tracer({});
  for (let i = 0; i < 2000; i++) { // past a pool refill
    const s = tracer.startSpan('x');
    assert.equal(s._traceB64, Buffer.from(s._traceId, 'hex').toString('base64url'));
    assert.equal(s._spanB64, Buffer.from(s._spanId, 'hex').toString('base64url'));
    assert.match(s._traceId, /^[0-9a-f]{32}$/);
    assert.match(s._spanId, /^[0-9a-f]{16}$/);
  }
});

test('start times: every width of the microseconds within the second, and below one second', () => {
  const tracer = new spanline.Tracer({ service: 's' });
  const fracs = [0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 99999, 100000, 999999, 123456, 54321];
  const starts = [];
  for (const f of fracs) starts.push(1700000000000000 + f, 1000000 + f, f);
  for (const us of starts) {
    const span = tracer.startSpan('t', { startTime: us / 1000 });
    assert.equal(span._startUs, us);
    const [line] = captureChunks(() => span.finish(us / 1000 + 0.002));
    assert.equal(line, spanline.encodeSpanGeneral(span.toModel(2)) + '\n');
    assert.ok(line.includes(` ${us} 2 t`), line);
  }
});

function randModelAttr(r, prefixed) {
  const k = r();
  const key = k < 0.05 ? { text: randString(r, 8), truncated: r() < 0.5 } : k < 0.08 ? undefined : randString(r, 16);
  const t = r();
  if (t < 0.4) return { key, type: 'string', value: r() < 0.95 ? randString(r, 20) : { text: 'x', truncated: true } };
  if (t < 0.6) {
    const iv = [0, -0, 7, -7, 2 ** 53, 2 ** 53 - 1, '0', '-0', '007', ' 12', '123', '-45', '99999999999999999999',
      '-9223372036854775808', '9223372036854775807', '123456789012345678', 5n, 1.5][Math.floor(r() * 18)];
    return { key, type: 'int', value: iv };
  }
  if (t < 0.75) return { key, type: 'float', value: [1.5, -0, NaN, Infinity, 'nan', '-inf', 3, '2.5'][Math.floor(r() * 8)] };
  if (t < 0.9) return { key, type: 'bool', value: [true, false, 't', 'f', 'true', 'false', 1][Math.floor(r() * 7)] };
  return { key, type: prefixed ? 'string' : ['bytes', undefined, 'string'][Math.floor(r() * 3)], value: randString(r, 10) };
}

test('random models: encodeSpan writes what encodeSpanGeneral writes', () => {
  const r = rng(15);
  const hex = (n) => Buffer.from([...Array(n)].map(() => Math.floor(r() * 256))).toString('hex');
  let fast = 0;
  for (let i = 0; i < 4000; i++) {
    const pick = (xs) => xs[Math.floor(r() * xs.length)];
    const m = {
      trace_id: hex(16),
      span_id: hex(8),
      parent_span_id: r() < 0.5 ? hex(8) : pick([null, undefined, '']),
      start_us: pick([1700000000123456, 1700000000000007, 0, 5, -3, 1e6, 2 ** 53 + 2, 17e14 + 0.5, '1700000000000001', 5n]),
      duration_us: pick([0, 1, 250, -1, 123456789, 2.5, '42', 7n]),
      name: r() < 0.95 ? randString(r, 30) : pick([undefined, null, { text: 'n', truncated: true }, 42]),
      kind: pick(['internal', 'server', 'client', 'producer', 'consumer', undefined, 'weird']),
      status: pick(['unset', 'ok', 'error', undefined]),
      status_message: r() < 0.3 ? (r() < 0.9 ? randString(r, 40) : pick([42, { text: 'm', truncated: true }])) : pick([null, undefined]),
      service: r() < 0.5 ? (r() < 0.9 ? randString(r, 12) : 7) : pick([null, undefined]),
      request_id: r() < 0.4 ? randString(r, 36) : pick([null, undefined]),
      attributes: [...Array(r() < 0.05 ? 66 : Math.floor(r() * 5))].map(() => randModelAttr(r, false)),
      events: r() < 0.1 ? [{ offset_us: 5, name: 'e', attributes: [] }] : pick([[], undefined]),
      links: r() < 0.05 ? [{ trace_id: hex(16), span_id: hex(8), attributes: [] }] : pick([[], undefined]),
      resource: r() < 0.5 ? [...Array(Math.floor(r() * 3))].map(() => randModelAttr(r, true)) : pick([[], undefined]),
      dropped: r() < 0.3 ? { attributes: pick([0, 2, '3']), events: pick([0, 1, 2]), links: pick([0, 1, 4, undefined]) } : undefined,
    };
    if (r() < 0.1) { // near the line's byte budget
      const n = 19 + Math.floor(r() * 2);
      const len = 380 + Math.floor(r() * 40);
      m.attributes = [...Array(n)].map((_, j) => ({ key: 'long' + j, type: 'string', value: 'x'.repeat(len) }));
    }
    let want;
    let wantErr = null;
    try {
      want = spanline.encodeSpanGeneral(m);
    } catch (e) {
      wantErr = e;
    }
    if (wantErr) {
      assert.throws(() => spanline.encodeSpan(m), wantErr.constructor, `model ${i}`);
      continue;
    }
    assert.equal(spanline.encodeSpan(m), want, `model ${i}: ${JSON.stringify(m, (k, v) => (typeof v === 'bigint' ? v + 'n' : v))}`);
    if (want.length < 8192 && !/%/.test(want)) fast++;
  }
  assert.ok(fast > 1000, `plain models ${fast}`);
});

test('plainAscii agrees with the escaping rules on every one-byte string and ASCII pair', () => {
  const classes = [spanline.CLASS_NAME, spanline.CLASS_KEY, spanline.CLASS_VALUE];
  for (const cls of classes) {
    for (let a = 0; a < 256; a++) {
      for (const s of [String.fromCharCode(a), 'a' + String.fromCharCode(a), String.fromCharCode(a) + 'a']) {
        const plain = spanline._plainAscii(s, cls);
        // a {text} model string skips escapeString's own plainAscii shortcut: byte by byte rules
        const escaped = spanline.escapeString({ text: s, truncated: false }, cls, 1000);
        assert.equal(plain, escaped === s && a < 0x80, `class ${cls}, ${JSON.stringify(s)}`);
      }
    }
  }
});
