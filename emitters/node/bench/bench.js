'use strict';
// Per-span cost and cold start of spanline for Node against the OpenTelemetry SDK's exporters.
// Run in emitters/node after `npm ci`: node bench/bench.js [--rounds N] [--spans N] [--cold N]
//
// Per span (the reference span of FORMAT.md: a client span with a remote parent and two string
// attributes, started and ended): spanline's native tracer; the OpenTelemetry SDK
// (BasicTracerProvider) with spanline's synchronous SpanlineSpanProcessor; the SDK with its
// ConsoleSpanExporter behind a SimpleSpanProcessor; the SDK with the peer
// @dev7a/otlp-stdout-span-exporter behind a SimpleSpanProcessor (one record per span, as the bridge)
// and, for reference, behind a BatchSpanProcessor flushed every 16 spans (an invocation's worth,
// as that exporter is meant to be used in Lambda). Every variant writes into the same sink:
// process.stdout.write replaced by a function that counts the bytes and discards them (console.dir
// goes through it too). Rounds alternate between the variants, so a busy machine slows them alike;
// figures are medians over rounds.
//
// Cold start: a fresh `node` process per sample requires and initialises one variant (the tracer
// or provider ready to make spans: `import`), then makes and writes its first span (`first span`,
// cumulative), timed inside the process from before the first require, median of --cold samples
// (default 21); node's own start-up is the same for every variant and left out.
//
// Prints a markdown table, then one JSON line with the figures.

const path = require('node:path');
const { execFileSync } = require('node:child_process');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const ROUNDS = opt('--rounds', 15);
const SPANS = opt('--spans', 2000);
const COLD = opt('--cold', 21);
const PKG = path.resolve(__dirname, '..');

const api = require('@opentelemetry/api');
const {
  BasicTracerProvider, SimpleSpanProcessor, BatchSpanProcessor, ConsoleSpanExporter,
} = require('@opentelemetry/sdk-trace-base');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { OTLPStdoutSpanExporter } = require('@dev7a/otlp-stdout-span-exporter');
const spanline = require('../spanline.js');
const { SpanlineSpanProcessor } = require('../otel.js');

// ------------------------------------------------------------------------------------ sink

const realWrite = process.stdout.write;
let sinkBytes = 0;
function sink(chunk, enc, cb) {
  sinkBytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
  const done = typeof enc === 'function' ? enc : cb;
  if (typeof done === 'function') done();
  return true;
}

// ------------------------------------------------------------------------------------ variants

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const RESOURCE = { 'service.name': 'bench', 'cloud.region': 'eu-west-1' };

function otelVariant(processor) {
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes(RESOURCE), spanProcessors: [processor] });
  const tracer = provider.getTracer('bench');
  const parent = api.trace.setSpanContext(api.ROOT_CONTEXT, { traceId: TRACE, spanId: PARENT, traceFlags: 1, isRemote: true });
  const opts = { kind: api.SpanKind.CLIENT, attributes: { 'http.method': 'POST', 'peer.service': 'lambda' } };
  return {
    span() {
      tracer.startSpan('service-egress', opts, parent).end();
    },
    flush: () => processor.forceFlush(),
  };
}

function nativeVariant() {
  const tracer = new spanline.Tracer({ service: 'bench', resource: { 'cloud.region': 'eu-west-1' } });
  const parent = { traceId: TRACE, spanId: PARENT };
  return {
    span() {
      const s = tracer.startSpan('service-egress', { childOf: parent, kind: 'client' });
      s.setTag('http.method', 'POST');
      s.setTag('peer.service', 'lambda');
      s.finish();
    },
    flush: () => Promise.resolve(),
  };
}

const VARIANTS = [
  { key: 'native', label: 'spanline native tracer', make: nativeVariant },
  { key: 'bridge', label: 'OTel SDK + spanline SpanlineSpanProcessor', make: () => otelVariant(new SpanlineSpanProcessor()) },
  { key: 'otel_console', label: 'OTel SDK + ConsoleSpanExporter (SimpleSpanProcessor)', make: () => otelVariant(new SimpleSpanProcessor(new ConsoleSpanExporter())) },
  { key: 'peer', label: 'OTel SDK + @dev7a/otlp-stdout-span-exporter (SimpleSpanProcessor)', make: () => otelVariant(new SimpleSpanProcessor(new OTLPStdoutSpanExporter())) },
  {
    key: 'peer_batched',
    label: 'OTel SDK + @dev7a/otlp-stdout-span-exporter (BatchSpanProcessor, flush / 16 spans)',
    make: () => otelVariant(new BatchSpanProcessor(new OTLPStdoutSpanExporter(), { maxExportBatchSize: 512, scheduledDelayMillis: 60000 })),
    flushEvery: 16,
  },
];

const median = (xs) => {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function round(v, inst, n) {
  const every = v.flushEvery || 0;
  const bytes0 = sinkBytes;
  const t0 = process.hrtime.bigint();
  for (let i = 1; i <= n; i++) {
    inst.span();
    if (every && i % every === 0) await inst.flush();
    else if (i % 1000 === 0) await new Promise(setImmediate); // let the SDK's promise callbacks run
  }
  await inst.flush();
  const t1 = process.hrtime.bigint();
  return { ns: Number(t1 - t0) / n, bytes: (sinkBytes - bytes0) / n };
}

async function perSpan() {
  const inst = VARIANTS.map((v) => v.make());
  const res = VARIANTS.map(() => ({ ns: [], bytes: [] }));
  process.stdout.write = sink;
  try {
    for (let i = 0; i < VARIANTS.length; i++) await round(VARIANTS[i], inst[i], SPANS); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < VARIANTS.length; i++) {
        const x = await round(VARIANTS[i], inst[i], SPANS);
        res[i].ns.push(x.ns);
        res[i].bytes.push(x.bytes);
      }
    }
  } finally {
    process.stdout.write = realWrite;
  }
  return res.map((r) => ({ ns: median(r.ns), bytes: median(r.bytes) }));
}

// ------------------------------------------------------------------------------------ cold start

// Each script requires and initialises one variant (`ready`), then makes its first span
// (`first`), written to a discarding sink.
const OTEL_SETUP = (processor) => `const api = require('@opentelemetry/api');
    const sdk = require('@opentelemetry/sdk-trace-base');
    const { resourceFromAttributes } = require('@opentelemetry/resources');
    ${processor}
    const tracer = new sdk.BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': 'bench' }), spanProcessors: [processor] }).getTracer('b');
    mark();
    tracer.startSpan('first').end();`;
const COLD_SCRIPTS = {
  native: `const { Tracer } = require('./spanline.js'); const tracer = new Tracer({ service: 'bench' });
    mark();
    tracer.startSpan('first').finish();`,
  bridge: OTEL_SETUP(`const { SpanlineSpanProcessor } = require('./otel.js'); const processor = new SpanlineSpanProcessor();`),
  otel_console: OTEL_SETUP('const processor = new sdk.SimpleSpanProcessor(new sdk.ConsoleSpanExporter());'),
  peer: OTEL_SETUP(`const { OTLPStdoutSpanExporter } = require('@dev7a/otlp-stdout-span-exporter');
    const processor = new sdk.SimpleSpanProcessor(new OTLPStdoutSpanExporter());`),
};

// process.stdout is created before the clock starts (every Lambda runtime has it already);
// node's own start-up is not timed.
function coldOnce(script) {
  const code = `const out = process.stdout; const write = out.write;
    out.write = (c, e, cb) => { const d = typeof e === 'function' ? e : cb; if (typeof d === 'function') d(); return true; };
    let ready = 0; const t0 = process.hrtime.bigint(); const mark = () => { ready = process.hrtime.bigint(); };
    ${script}
    const t1 = process.hrtime.bigint();
    out.write = write;
    out.write(JSON.stringify([Number(ready - t0) / 1e6, Number(t1 - t0) / 1e6]));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', code], { cwd: PKG, encoding: 'utf8' }));
}

function coldStart() {
  const keys = Object.keys(COLD_SCRIPTS);
  const samples = Object.fromEntries(keys.map((k) => [k, { ready: [], first: [] }]));
  for (let i = 0; i < COLD; i++) {
    for (const k of keys) {
      const [ready, first] = coldOnce(COLD_SCRIPTS[k]);
      samples[k].ready.push(ready);
      samples[k].first.push(first);
    }
  }
  return Object.fromEntries(keys.map((k) => [k, { ready: median(samples[k].ready), first: median(samples[k].first) }]));
}

// ------------------------------------------------------------------------------------ report

(async () => {
  const per = await perSpan();
  const cold = coldStart();
  const round2 = (x) => Math.round(x * 100) / 100;
  const lines = [
    `per span: median of ${ROUNDS} rounds of ${SPANS} spans; cold start: median of ${COLD} fresh processes (require + initialise, ms)`,
    '',
    '| variant | ns/span | bytes/span | import + init, ms | … + first span, ms |',
    '|---|---:|---:|---:|---:|',
  ];
  const out = {};
  VARIANTS.forEach((v, i) => {
    const c = cold[v.key];
    const cells = c === undefined ? '(as above) | (as above)' : `${round2(c.ready)} | ${round2(c.first)}`;
    lines.push(`| ${v.label} | ${Math.round(per[i].ns)} | ${Math.round(per[i].bytes)} | ${cells} |`);
    out[`${v.key}_ns_per_span`] = Math.round(per[i].ns);
    out[`${v.key}_bytes_per_span`] = Math.round(per[i].bytes);
  });
  for (const k of Object.keys(cold)) {
    out[`${k}_import_ms`] = round2(cold[k].ready);
    out[`${k}_first_span_ms`] = round2(cold[k].first);
  }
  out.native_vs_console = round2(out.otel_console_ns_per_span / out.native_ns_per_span);
  out.bridge_vs_peer = round2(out.peer_ns_per_span / out.bridge_ns_per_span);
  out.bridge_vs_peer_batched = round2(out.peer_batched_ns_per_span / out.bridge_ns_per_span);
  out.node = process.version;
  lines.push('');
  lines.push(`targets: native ≥ 10× faster than SDK + console (${out.native_vs_console}×), ` +
    `bridge ≥ 3× faster than SDK + peer (${out.bridge_vs_peer}×; batched ${out.bridge_vs_peer_batched}×), ` +
    `native import ≤ 5 ms (${out.native_import_ms} ms)`);
  lines.push(JSON.stringify(out));
  process.stdout.write(lines.join('\n') + '\n');
})().catch((e) => {
  process.stdout.write = realWrite;
  console.error(e);
  process.exit(1);
});
