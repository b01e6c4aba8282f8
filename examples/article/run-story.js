'use strict';
// The article's story on one machine, no Docker, no network beyond 127.0.0.1:
//
//   node run-story.js [--out DIR] [--count N] [--timeout SECONDS]
//
// 1. starts the local Lambda harness (harness/local-lambda.js) with two functions:
//    ot-lambda (Node, text log format, functions/ot-lambda) and ot-lambda-py (Python, JSON log
//    format, functions/ot-lambda-py), one execution environment each;
// 2. starts the Express app (express-app.js) as a child process, its stdout captured line by
//    line like the ECS awslogs driver does (log group /ecs/express-app);
// 3. GET /ot-gen?count=N: N service-egress calls to ot-lambda, each of which calls ot-lambda-py.
//    Call 1 is the cold start, call 2 fails (the Python function answers 500, the Node function
//    throws), call 3 times out in the Node function after its downstream call (N >= 3);
// 4. writes what was captured as CloudWatch subscription payloads, one file per log stream
//    (express-app.json, ot-lambda.json, ot-lambda-py.json), into DIR (default target/story).
//
// Then: cargo run -- convert DIR  (from the repository root) draws the whole trace.

const path = require('node:path');
const crypto = require('node:crypto');
const { spawn } = require('node:child_process');
const { LocalLambda, LogStream, writeSubscriptionPayloads } = require('./harness/local-lambda');

const ROOT = path.resolve(__dirname, '..', '..');

function startExpress(lambdaUrl) {
  const stream = new LogStream('/ecs/express-app', `ecs/express-app/${crypto.randomBytes(6).toString('hex')}`);
  const child = spawn(process.execPath, [path.join(__dirname, 'express-app.js')], {
    cwd: __dirname,
    env: { PATH: process.env.PATH, PORT: '0', LAMBDA_URL: lambdaUrl, SERVICE_NAME: 'express-app' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // The awslogs driver sends one event per line, without the newline.
  let buf = '';
  const lines = [];
  let onLine = null;
  const take = (d, t) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      stream.add(t, line);
      lines.push(line);
      if (onLine) onLine(line);
    }
  };
  child.stdout.setEncoding('utf8').on('data', (d) => take(d, Date.now()));
  child.stderr.setEncoding('utf8').on('data', (d) => take(d, Date.now()));
  const exited = new Promise((resolve) => child.on('close', resolve));
  const listening = new Promise((resolve, reject) => {
    onLine = (line) => {
      const m = /listening on :(\d+)/.exec(line);
      if (m) resolve(`http://127.0.0.1:${m[1]}`);
    };
    child.on('close', (code) => reject(new Error(`express-app exited (${code}): ${lines.join('\n')}`)));
  });
  return {
    stream,
    listening,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      if (buf) stream.add(Date.now(), buf);
      buf = '';
    },
  };
}

/**
 * Runs the story; resolves with {files, response, invocations, streams}.
 * options: out (directory), count (default 3), timeoutSeconds (Node function, default 3),
 * failCall (default 2), hangCall (default 3).
 */
async function runStory(options) {
  const opts = options || {};
  const out = path.resolve(opts.out || path.join(ROOT, 'target', 'story'));
  const count = opts.count || 3;
  const lambda = new LocalLambda();
  const gateway = await lambda.listen(0);
  lambda.addFunction({
    name: 'ot-lambda',
    runtime: 'nodejs20',
    handler: 'index.handler',
    taskRoot: path.join(__dirname, 'functions', 'ot-lambda'),
    timeoutSeconds: opts.timeoutSeconds || 3,
    logFormat: 'Text',
    env: { DOWNSTREAM_URL: `${gateway}/ot-lambda-py`, HANG_CALLS: String(opts.hangCall || 3) },
  });
  lambda.addFunction({
    name: 'ot-lambda-py',
    runtime: 'python3',
    handler: 'handler.handler',
    taskRoot: path.join(__dirname, 'functions', 'ot-lambda-py'),
    timeoutSeconds: 3,
    logFormat: 'JSON',
    env: { FAIL_CALLS: String(opts.failCall || 2) },
  });
  const app = startExpress(`${gateway}/ot-lambda`);
  let response;
  try {
    const base = await app.listening;
    const res = await fetch(`${base}/ot-gen?count=${count}`);
    response = { status: res.status, body: await res.json() };
    await lambda.settle();
  } finally {
    await app.stop();
    await lambda.close();
  }
  const streams = [app.stream, ...lambda.streams()];
  const files = writeSubscriptionPayloads(out, streams);
  return { files, response, invocations: lambda.invocations, streams, out };
}

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--out') o.out = v();
    else if (a === '--count') o.count = Number(v());
    else if (a === '--timeout') o.timeoutSeconds = Number(v());
    else if (a === '-h' || a === '--help') {
      console.log('usage: node run-story.js [--out DIR] [--count N] [--timeout SECONDS]');
      process.exit(0);
    } else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  return o;
}

if (require.main === module) {
  runStory(parseArgs(process.argv.slice(2))).then(
    (r) => {
      console.log(`GET /ot-gen -> ${r.response.status} ${JSON.stringify(r.response.body)}`);
      for (const inv of r.invocations) console.log(`${inv.function} ${inv.requestId} ${inv.status}${inv.coldStart ? ' (cold start)' : ''}`);
      for (const f of r.files) console.log(`wrote ${path.relative(process.cwd(), f)}`);
      console.log(`next: cargo run -- convert ${path.relative(ROOT, r.out)}   (from ${ROOT})`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}

module.exports = { runStory, startExpress };
