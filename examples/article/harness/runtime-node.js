'use strict';
// The Node "runtime" of the local Lambda harness (local-lambda.js): one child process is one
// execution environment. It loads the handler (the init phase), then runs invocations sent by the
// harness over the IPC channel, one at a time, and sends back everything the function prints:
//
// * console.* calls become one log record each, formatted like the Lambda Node.js runtime does
//   (text: `<ISO time>\t<requestId>\t<LEVEL>\t<message>`, a multi-line message stays one record;
//   JSON log format: {"timestamp","level","requestId","message"});
// * process.stdout / process.stderr writes are forwarded raw; the harness splits them into one
//   event per line, as Lambda does for output that bypasses the runtime's console;
// * the handler's result or error. A handler error is logged as the runtime logs it
//   (`Invoke Error` with errorType, errorMessage and stack).
//
// Everything goes through the one IPC channel, so the order of output and result is kept. The
// harness kills this process when an invocation times out, as Lambda resets the environment.

const path = require('node:path');
const util = require('node:util');

const send = (msg) => {
  try {
    process.send(msg);
  } catch (_) {
    // the harness is gone
  }
};
const now = () => Date.now();
const logFormat = (process.env.AWS_LAMBDA_LOG_FORMAT || 'Text').toUpperCase() === 'JSON' ? 'JSON' : 'Text';
let requestId = 'undefined';

function rawWriter(stream) {
  return function write(chunk, encoding, cb) {
    const text = Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk);
    send({ type: 'raw', stream, data: text, t: now() });
    const done = typeof encoding === 'function' ? encoding : cb;
    if (typeof done === 'function') process.nextTick(done);
    return true;
  };
}
process.stdout.write = rawWriter('stdout');
process.stderr.write = rawWriter('stderr');

function logRecord(level, args) {
  const t = now();
  if (logFormat === 'JSON') {
    const message = args.length === 1 && args[0] !== null && typeof args[0] === 'object' && !(args[0] instanceof Error)
      ? args[0] : util.format(...args);
    let text;
    try {
      text = JSON.stringify({ timestamp: new Date(t).toISOString(), level, requestId, message });
    } catch (_) {
      text = JSON.stringify({ timestamp: new Date(t).toISOString(), level, requestId, message: util.format(...args) });
    }
    send({ type: 'log', data: text + '\n', t });
  } else {
    send({ type: 'log', data: `${new Date(t).toISOString()}\t${requestId}\t${level}\t${util.format(...args)}\n`, t });
  }
}

for (const [method, level] of [['log', 'INFO'], ['info', 'INFO'], ['warn', 'WARN'], ['error', 'ERROR'], ['debug', 'DEBUG'], ['trace', 'TRACE']]) {
  console[method] = (...args) => logRecord(level, args);
}

function errorJson(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    errorType: e.name || 'Error',
    errorMessage: e.message || '',
    stackTrace: String(e.stack || '').split('\n'),
  };
}

function logInvokeError(err) {
  const j = errorJson(err);
  const t = now();
  if (logFormat === 'JSON') {
    send({ type: 'log', data: JSON.stringify({ timestamp: new Date(t).toISOString(), level: 'ERROR', requestId, message: 'Invoke Error', ...j }) + '\n', t });
  } else {
    send({ type: 'log', data: `${new Date(t).toISOString()}\t${requestId}\tERROR\tInvoke Error \t${JSON.stringify({ errorType: j.errorType, errorMessage: j.errorMessage, stack: j.stackTrace })}\n`, t });
  }
}

const maxRssMb = () => Math.ceil(process.resourceUsage().maxRSS / 1024);

// ---------------------------------------------------------------------------------- init
const [file, fn] = (() => {
  const h = process.env._HANDLER || 'index.handler';
  const dot = h.lastIndexOf('.');
  return [h.slice(0, dot), h.slice(dot + 1)];
})();
let handler;
try {
  const mod = require(path.resolve(process.env.LAMBDA_TASK_ROOT || '.', file));
  handler = mod[fn];
  if (typeof handler !== 'function') throw Object.assign(new Error(`${file}.${fn} is undefined or not exported`), { name: 'Runtime.HandlerNotFound' });
  send({ type: 'ready', maxRssMb: maxRssMb() });
} catch (e) {
  logInvokeError(e);
  send({ type: 'initError', error: errorJson(e) });
}

// ---------------------------------------------------------------------------------- invoke
function run(msg) {
  requestId = msg.requestId;
  const deadline = msg.deadlineMs;
  const context = {
    awsRequestId: msg.requestId,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: msg.invokedFunctionArn,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
  const invoke = () => {
    if (handler.length >= 3) {
      return new Promise((resolve, reject) => {
        const r = handler(msg.event, context, (err, value) => (err ? reject(err) : resolve(value)));
        if (r && typeof r.then === 'function') r.then(resolve, reject);
      });
    }
    return Promise.resolve().then(() => handler(msg.event, context));
  };
  invoke().then(
    (result) => send({ type: 'result', requestId: msg.requestId, result: result === undefined ? null : result, maxRssMb: maxRssMb() }),
    (err) => {
      logInvokeError(err);
      send({ type: 'error', requestId: msg.requestId, error: errorJson(err), maxRssMb: maxRssMb() });
    },
  );
}

process.on('message', (msg) => {
  if (msg && msg.type === 'invoke' && handler) run(msg);
});
process.on('disconnect', () => process.exit(0));
