'use strict';
// A small local Lambda harness: runs Node and Python handlers as child processes (one per
// execution environment) behind an HTTP gateway on 127.0.0.1, and records their output the way
// Lambda and CloudWatch Logs would, so that `spanline convert <dir>` reads it like real logs.
//
// Why not an emulator from the registry: lambda-local 2.2.0 runs handlers in-process and prints
// its own `info: START RequestId` / `End - Result` lines (coloured), with no console prefix, no
// END/REPORT, no Init Duration, no JSON log format, and leaves a timed-out handler running;
// aws-lambda-ric needs Node >= 22 and a native build plus the Runtime Interface Emulator binary;
// others need Docker or download runtimes. None produces Lambda's log lines with plain Node 20.
//
// What it reproduces (see /work/shared/reference/cloudwatch.md for the formats):
// * log group `/aws/lambda/<name>`, one stream `YYYY/MM/DD/[$LATEST]<32 hex>` per environment;
// * cold start: an environment is created for an invocation when none is idle (INIT_START or
//   platform.initStart, then `Init Duration` / initDurationMs on that invocation's REPORT);
//   at most `concurrency` environments per function (default 1), further invocations wait
//   (on Lambda they would get another environment, or be throttled at reserved concurrency);
// * text format: START / END / REPORT (Duration, Billed Duration, Memory Size, Max Memory Used,
//   Init Duration) lines, Node console lines `<ts>\t<requestId>\t<LEVEL>\t<msg>`, Python logging
//   lines `[LEVEL]\t<ts>\t<requestId>\t<msg>`, raw stdout split into one event per line;
// * JSON format (logFormat 'JSON'): platform.initStart / platform.start / platform.runtimeDone /
//   platform.report records and {"timestamp","level","requestId","message"} records; raw stdout
//   (Python print, process.stdout.write) stays plain text;
// * a handler error: the runtime's error record, 502 from the gateway, status `error` in JSON;
// * a timeout: `<ts> <requestId> Task timed out after N.NN seconds`, END, REPORT with
//   `Status: timeout` (status `timeout` in JSON), 504 from the gateway; the environment is killed
//   (SIGKILL) so the function never finishes its span, and the next invocation is a cold start.
//
// Gateway: POST /<function>[/path] → a Lambda function URL event (payload 2.0: lowercased
// headers, body, requestContext.http); the handler's {statusCode, headers, body} is the response.
// POST /2015-03-31/functions/<function>/invocations → the body is the event, the result the body.

const http = require('node:http');
const path = require('node:path');
const fs = require('node:fs');
const crypto = require('node:crypto');
const { spawn } = require('node:child_process');

const RUNTIMES = {
  nodejs20: { version: 'nodejs:20.v13', command: () => [process.execPath, [path.join(__dirname, 'runtime-node.js')]] },
  python3: { version: 'python:3.11.v40', command: () => [process.env.PYTHON || 'python3', ['-u', path.join(__dirname, 'runtime_python.py')]] },
};

const iso = (ms) => new Date(ms).toISOString();
const hex = (n) => crypto.randomBytes(n).toString('hex');
const uuid = () => crypto.randomUUID();

/** One log stream: events {timestamp (ms), message}, in the order they were captured. */
class LogStream {
  constructor(group, name) {
    this.group = group;
    this.name = name;
    this.events = [];
    this._partial = { stdout: null, stderr: null }; // raw text not yet ended by \n
  }

  add(t, message) {
    this.events.push({ timestamp: t, message });
  }

  /** Raw output: every \n ends an event (the newline stays, as Lambda keeps it). */
  raw(stream, t, data) {
    let text = data;
    let p = this._partial[stream];
    for (;;) {
      const nl = text.indexOf('\n');
      if (nl < 0) break;
      const piece = text.slice(0, nl + 1);
      text = text.slice(nl + 1);
      this.add(p ? p.t : t, (p ? p.text : '') + piece);
      p = null;
    }
    this._partial[stream] = text ? { t: p ? p.t : t, text: (p ? p.text : '') + text } : p;
  }

  flushPartial() {
    for (const s of ['stdout', 'stderr']) {
      const p = this._partial[s];
      if (p) this.add(p.t, p.text);
      this._partial[s] = null;
    }
  }
}

/** One execution environment: a child process and its log stream. */
class Environment {
  constructor(fn, stream) {
    this.fn = fn;
    this.stream = stream;
    this.busy = false;
    this.dead = false;
    this.pending = null; // {resolve} of the running invocation
    this.maxRssMb = 0;
    this.initDurationMs = null;
  }

  /** Starts the process and waits for the init phase; resolves with the init duration (ms). */
  init() {
    const fn = this.fn;
    const rt = RUNTIMES[fn.runtime];
    const t0 = process.hrtime.bigint();
    const start = Date.now();
    if (fn.logFormat === 'JSON') {
      this.stream.add(start, JSON.stringify({ time: iso(start), type: 'platform.initStart', record: { initializationType: 'on-demand', phase: 'init', runtimeVersion: rt.version, runtimeVersionArn: `arn:aws:lambda:${fn.region}::runtime:${fn.runtimeArnHash}`, functionName: fn.name, functionVersion: '$LATEST' } }));
    } else {
      this.stream.add(start, `INIT_START Runtime Version: ${rt.version}\tRuntime Version ARN: arn:aws:lambda:${fn.region}::runtime:${fn.runtimeArnHash}\n`);
    }
    const [cmd, args] = rt.command();
    const env = {
      PATH: process.env.PATH,
      LANG: 'en_US.UTF-8',
      TZ: ':UTC',
      AWS_REGION: fn.region,
      AWS_DEFAULT_REGION: fn.region,
      AWS_EXECUTION_ENV: `AWS_Lambda_${fn.runtime}`,
      AWS_LAMBDA_FUNCTION_NAME: fn.name,
      AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(fn.memorySizeMB),
      AWS_LAMBDA_LOG_GROUP_NAME: this.stream.group,
      AWS_LAMBDA_LOG_STREAM_NAME: this.stream.name,
      AWS_LAMBDA_LOG_FORMAT: fn.logFormat,
      LAMBDA_TASK_ROOT: fn.taskRoot,
      _HANDLER: fn.handler,
      ...fn.env,
    };
    this.child = spawn(cmd, args, { cwd: fn.taskRoot, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    // Output that bypasses the runtime (native code, a crash message) still reaches the stream.
    this.child.stdout.setEncoding('utf8').on('data', (d) => this.stream.raw('stdout', Date.now(), d));
    this.child.stderr.setEncoding('utf8').on('data', (d) => this.stream.raw('stderr', Date.now(), d));
    this.exited = new Promise((resolve) => this.child.on('close', resolve));
    return new Promise((resolve, reject) => {
      this.child.on('message', (msg) => {
        if (!msg || typeof msg !== 'object') return;
        if (msg.maxRssMb) this.maxRssMb = Math.max(this.maxRssMb, msg.maxRssMb);
        switch (msg.type) {
          case 'raw':
            this.stream.raw(msg.stream === 'stderr' ? 'stderr' : 'stdout', msg.t, String(msg.data));
            break;
          case 'log':
            this.stream.add(msg.t, String(msg.data));
            break;
          case 'ready':
            this.initDurationMs = Number(process.hrtime.bigint() - t0) / 1e6;
            resolve(this.initDurationMs);
            break;
          case 'initError':
            reject(Object.assign(new Error(msg.error.errorMessage), { lambdaError: msg.error }));
            break;
          case 'result':
          case 'error':
            if (this.pending && this.pending.requestId === msg.requestId) this.pending.resolve(msg);
            break;
          default:
        }
      });
      this.child.on('error', reject);
      this.child.on('exit', (code, signal) => {
        this.dead = true;
        reject(new Error(`runtime exited during init (${signal || code})`));
        if (this.pending) this.pending.resolve({ type: 'exit', code, signal });
      });
    });
  }

  kill() {
    this.dead = true;
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return this.exited || Promise.resolve();
  }
}

class LambdaFunction {
  constructor(spec) {
    if (!RUNTIMES[spec.runtime]) throw new Error(`unknown runtime ${spec.runtime} (${Object.keys(RUNTIMES).join(', ')})`);
    this.name = spec.name;
    this.runtime = spec.runtime;
    this.handler = spec.handler;
    this.taskRoot = path.resolve(spec.taskRoot);
    this.timeoutSeconds = spec.timeoutSeconds || 3;
    this.memorySizeMB = spec.memorySizeMB || 128;
    this.logFormat = spec.logFormat === 'JSON' ? 'JSON' : 'Text';
    this.concurrency = spec.concurrency || 1;
    this.region = spec.region || 'us-east-1';
    this.env = Object.assign({}, spec.env || {});
    this.group = `/aws/lambda/${this.name}`;
    this.runtimeArnHash = crypto.createHash('sha256').update(this.runtime).digest('hex');
    this.environments = [];
    this.streams = [];
    this.queue = [];
  }
}

class LocalLambda {
  constructor(options) {
    const opts = options || {};
    this.region = opts.region || 'us-east-1';
    this.accountId = opts.accountId || '123456789012';
    this.functions = new Map();
    this.inFlight = new Set();
    this.invocations = []; // {function, requestId, status, coldStart}
  }

  addFunction(spec) {
    const fn = new LambdaFunction({ region: this.region, ...spec });
    this.functions.set(fn.name, fn);
    return fn;
  }

  /** Invokes a function with an event; resolves with {status: success|error|timeout, result, error}. */
  invoke(name, event) {
    const fn = this.functions.get(name);
    if (!fn) return Promise.reject(new Error(`no function ${name}`));
    const p = this._invoke(fn, event);
    this.inFlight.add(p);
    p.finally(() => this.inFlight.delete(p)).catch(() => {});
    return p;
  }

  async _acquire(fn) {
    for (;;) {
      const idle = fn.environments.find((e) => !e.busy && !e.dead);
      if (idle) {
        idle.busy = true;
        return { env: idle, cold: false };
      }
      fn.environments = fn.environments.filter((e) => !e.dead);
      if (fn.environments.length < fn.concurrency) {
        const date = new Date().toISOString().slice(0, 10).replace(/-/g, '/');
        const stream = new LogStream(fn.group, `${date}/[$LATEST]${hex(16)}`);
        fn.streams.push(stream);
        const env = new Environment(fn, stream);
        env.busy = true;
        fn.environments.push(env);
        return { env, cold: true };
      }
      await new Promise((resolve) => fn.queue.push(resolve));
    }
  }

  _release(fn, env) {
    env.busy = false;
    const next = fn.queue.shift();
    if (next) next();
  }

  async _invoke(fn, event) {
    const { env, cold } = await this._acquire(fn);
    const requestId = uuid();
    const s = env.stream;
    const json = fn.logFormat === 'JSON';
    let initMs = null;
    try {
      if (cold) {
        try {
          initMs = await env.init();
        } catch (e) {
          env.kill();
          s.flushPartial();
          this.invocations.push({ function: fn.name, requestId, status: 'error', coldStart: true });
          return { status: 'error', requestId, error: e.lambdaError || { errorType: 'Runtime.InitError', errorMessage: e.message } };
        }
      }
      const start = Date.now();
      if (json) s.add(start, JSON.stringify({ time: iso(start), type: 'platform.start', record: { requestId, version: '$LATEST' } }));
      else s.add(start, `START RequestId: ${requestId} Version: $LATEST\n`);
      const t0 = process.hrtime.bigint();
      const timeoutMs = Math.round(fn.timeoutSeconds * 1000);
      const outcome = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ type: 'timeout' }), timeoutMs);
        env.pending = {
          requestId,
          resolve: (msg) => {
            clearTimeout(timer);
            resolve(msg);
          },
        };
        env.child.send({
          type: 'invoke',
          requestId,
          event,
          deadlineMs: start + timeoutMs,
          invokedFunctionArn: `arn:aws:lambda:${fn.region}:${this.accountId}:function:${fn.name}`,
        });
      });
      env.pending = null;
      let durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
      let status = outcome.type === 'result' ? 'success' : outcome.type === 'error' ? 'error' : outcome.type === 'timeout' ? 'timeout' : 'failure';
      if (status === 'timeout' || status === 'failure') {
        await env.kill(); // what it wrote before the kill is still delivered
        s.flushPartial();
        const t = start + (status === 'timeout' ? timeoutMs : Math.round(durationMs));
        if (status === 'timeout') {
          durationMs = timeoutMs;
          const text = `${iso(t)} ${requestId} Task timed out after ${fn.timeoutSeconds.toFixed(2)} seconds`;
          s.add(t, json ? JSON.stringify({ timestamp: iso(t), level: 'ERROR', requestId, message: text }) : text + '\n');
        } else {
          const text = `RequestId: ${requestId} Error: Runtime exited with error: ${outcome.signal ? 'signal: ' + outcome.signal : 'exit status ' + outcome.code}`;
          s.add(t, json ? JSON.stringify({ timestamp: iso(t), level: 'ERROR', requestId, message: text }) : text + '\n');
        }
      } else {
        s.flushPartial();
      }
      const end = Math.max(Date.now(), ...s.events.map((e) => e.timestamp));
      const billed = Math.ceil(durationMs);
      const mem = Math.max(env.maxRssMb, 1);
      const errorType = status === 'timeout' ? 'Sandbox.Timedout' : status === 'failure' ? 'Runtime.ExitError' : status === 'error' ? outcome.error.errorType : null;
      if (json) {
        s.add(end, JSON.stringify({ time: iso(end), type: 'platform.runtimeDone', record: { requestId, status, ...(errorType ? { errorType } : {}), metrics: { durationMs: round2(durationMs) } } }));
        const metrics = { durationMs: round2(durationMs), billedDurationMs: billed, memorySizeMB: fn.memorySizeMB, maxMemoryUsedMB: mem };
        if (initMs !== null) metrics.initDurationMs = round2(initMs);
        s.add(end, JSON.stringify({ time: iso(end), type: 'platform.report', record: { requestId, metrics, status, ...(errorType ? { errorType } : {}) } }));
      } else {
        s.add(end, `END RequestId: ${requestId}\n`);
        let report = `REPORT RequestId: ${requestId}\tDuration: ${durationMs.toFixed(2)} ms\tBilled Duration: ${billed} ms\tMemory Size: ${fn.memorySizeMB} MB\tMax Memory Used: ${mem} MB\t`;
        if (initMs !== null) report += `Init Duration: ${initMs.toFixed(2)} ms\t`;
        if (status === 'timeout') report += 'Status: timeout\n';
        else if (status === 'failure') report += 'Status: error\tError Type: Runtime.ExitError\n';
        else report += '\n';
        s.add(end, report);
      }
      this.invocations.push({ function: fn.name, requestId, status, coldStart: cold });
      return { status, requestId, result: outcome.result, error: outcome.error };
    } finally {
      this._release(fn, env);
    }
  }

  /** Starts the gateway on 127.0.0.1 (port 0: any free port); resolves with its base URL. */
  listen(port) {
    this.server = http.createServer((req, res) => this._serve(req, res));
    return new Promise((resolve) => {
      this.server.listen(port || 0, '127.0.0.1', () => {
        this.url = `http://127.0.0.1:${this.server.address().port}`;
        resolve(this.url);
      });
    });
  }

  _serve(req, res) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url, 'http://127.0.0.1');
      const direct = /^\/2015-03-31\/functions\/([^/]+)\/invocations$/.exec(url.pathname);
      const name = direct ? decodeURIComponent(direct[1]) : decodeURIComponent(url.pathname.split('/')[1] || '');
      if (!this.functions.has(name)) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `Function not found: ${name}` }));
        return;
      }
      let event;
      if (direct) {
        try {
          event = body ? JSON.parse(body) : {};
        } catch (_) {
          res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'Could not parse request body into json' }));
          return;
        }
      } else {
        event = functionUrlEvent(req, url, body);
      }
      const out = await this.invoke(name, event);
      if (out.status === 'timeout') {
        res.writeHead(504, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'Endpoint request timed out' }));
      } else if (out.status !== 'success') {
        res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'Internal Server Error' }));
      } else if (direct) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out.result));
      } else {
        const r = out.result;
        if (r && typeof r === 'object' && 'statusCode' in r) {
          res.writeHead(Number(r.statusCode) || 200, Object.assign({ 'content-type': 'application/json' }, r.headers || {}));
          res.end(typeof r.body === 'string' ? r.body : r.body === undefined ? '' : JSON.stringify(r.body));
        } else {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(r));
        }
      }
    });
  }

  /** Resolves when no invocation is running or queued. */
  async settle() {
    while (this.inFlight.size > 0) await Promise.allSettled(Array.from(this.inFlight));
  }

  /** Stops the gateway and every environment. */
  async close() {
    if (this.server) await new Promise((resolve) => this.server.close(resolve));
    const kills = [];
    for (const fn of this.functions.values()) for (const e of fn.environments) kills.push(e.kill());
    await Promise.all(kills);
    for (const fn of this.functions.values()) for (const s of fn.streams) s.flushPartial();
  }

  /** Every log stream captured so far, of every function. */
  streams() {
    return Array.from(this.functions.values()).flatMap((fn) => fn.streams);
  }
}

function round2(x) {
  return Math.round(x * 100) / 100;
}

function functionUrlEvent(req, url, body) {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(',') : v;
  const now = Date.now();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: url.pathname,
    rawQueryString: url.search.replace(/^\?/, ''),
    headers,
    queryStringParameters: url.search ? Object.fromEntries(url.searchParams) : undefined,
    requestContext: {
      accountId: 'anonymous',
      apiId: 'local',
      domainName: headers.host || '127.0.0.1',
      domainPrefix: 'local',
      http: { method: req.method, path: url.pathname, protocol: `HTTP/${req.httpVersion}`, sourceIp: '127.0.0.1', userAgent: headers['user-agent'] || '' },
      requestId: uuid(),
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    body,
    isBase64Encoded: false,
  };
}

// ------------------------------------------------------------------------------ CloudWatch output

/**
 * Writes each stream as a CloudWatch Logs subscription payload (the JSON inside the
 * `{"awslogs":{"data":…}}` event, as in fixtures/sample/*.json): `<last segment of the group>.json`,
 * `-2.json` and so on when a group has several streams. Events are sorted by timestamp (stable), ids are increasing
 * decimal strings. Returns the paths written.
 */
function writeSubscriptionPayloads(dir, streams, options) {
  const opts = options || {};
  fs.mkdirSync(dir, { recursive: true });
  const written = [];
  const used = new Set();
  let nextId = 1;
  for (const s of streams) {
    const events = s.events
      .map((e, i) => ({ e, i }))
      .sort((a, b) => a.e.timestamp - b.e.timestamp || a.i - b.i)
      .map(({ e }) => ({ id: String(nextId++), timestamp: e.timestamp, message: e.message }));
    // `/aws/lambda/ot-lambda` → ot-lambda.json, `/ecs/express-app` → express-app.json
    const base = (s.group.split('/').filter(Boolean).pop() || 'logs').replace(/[^A-Za-z0-9._-]+/g, '-');
    let name = `${base}.json`;
    for (let n = 2; used.has(name); n++) name = `${base}-${n}.json`;
    used.add(name);
    const file = path.join(dir, name);
    const payload = {
      messageType: 'DATA_MESSAGE',
      owner: opts.owner || '123456789012',
      logGroup: s.group,
      logStream: s.name,
      subscriptionFilters: [opts.filterName || 'spanline'],
      logEvents: events,
    };
    fs.writeFileSync(file, JSON.stringify(payload, null, 1) + '\n');
    written.push(file);
  }
  return written;
}

module.exports = { LocalLambda, LogStream, writeSubscriptionPayloads, functionUrlEvent };
