'use strict';
// Test helpers: capture stdout, read span lines back (enough of FORMAT.md for assertions).

const b64hex = (s) => Buffer.from(s, 'base64url').toString('hex');

/** Parses a span record (not batch) into {traceId, spanId, parentId, start, dur, flags, name, fields}. */
function parseSpanLine(text) {
  const i = text.indexOf('SPLN1 ');
  if (i < 0) return null;
  const body = text.slice(i + 6).replace(/\r?\n$/, '');
  if (!body.endsWith(';')) throw new Error(`truncated span line ${JSON.stringify(text)}`);
  const tokens = body.slice(0, -1).split(' ');
  const ids = tokens[0];
  const m = /^(\d+)([a-z]*)$/.exec(tokens[2]);
  return {
    traceId: b64hex(ids.slice(0, 22)),
    spanId: b64hex(ids.slice(22, 33)),
    parentId: ids.length === 44 ? b64hex(ids.slice(33)) : null,
    start: Number(tokens[1]),
    dur: Number(m[1]),
    flags: m[2],
    open: m[2].includes('u'),
    error: m[2].includes('e'),
    kind: m[2].includes('s') ? 'server' : m[2].includes('c') ? 'client' : 'internal',
    name: decodeURIComponent(tokens[3]),
    fields: tokens.slice(4),
    line: text,
  };
}

/** Runs fn (sync or async) with process.stdout.write captured; resolves with the chunks. */
async function captureStdout(fn) {
  const chunks = [];
  const orig = process.stdout.write;
  process.stdout.write = (chunk, enc, cb) => {
    chunks.push(String(chunk));
    const done = typeof enc === 'function' ? enc : cb;
    if (typeof done === 'function') done();
    return true;
  };
  try {
    await fn();
  } finally {
    process.stdout.write = orig;
  }
  return chunks;
}

module.exports = { parseSpanLine, captureStdout };
