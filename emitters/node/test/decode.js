'use strict';
// A test-only decoder of span records (FORMAT.md §3) back into the span model of spanline.js, to
// check that what an emitter wrote reads back to the same fields.

const hex = (s) => Buffer.from(s, 'base64url').toString('hex');

function unescape(s) {
  const bytes = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '%' && s[i + 1] === '*' && i + 2 === s.length) break; // truncation marker
    if (s[i] === '%') {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      for (const b of Buffer.from(s[i], 'utf8')) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function attr(tok) {
  const m = /^([^=#~!]+)([=#~!])(.*)$/.exec(tok);
  if (!m) throw new Error(`bad field ${tok}`);
  const key = unescape(m[1]);
  switch (m[2]) {
    case '#':
      return { key, type: 'int', value: m[3] };
    case '~':
      return { key, type: 'float', value: m[3] === 'nan' ? NaN : m[3] === 'inf' ? Infinity : m[3] === '-inf' ? -Infinity : Number(m[3]) };
    case '!':
      return { key, type: 'bool', value: m[3] === 't' };
    default:
      return { key, type: 'string', value: unescape(m[3]) };
  }
}

const KINDS = { s: 'server', c: 'client', p: 'producer', o: 'consumer' };

/** One span record (a line with or without its newline) → the span model. */
function decodeSpan(line) {
  const text = line.replace(/\r?\n$/, '');
  if (!text.startsWith('SPLN1 ') || !text.endsWith(';')) throw new Error(`not a span record: ${text}`);
  const tokens = text.slice(6, -1).split(' ');
  const ids = tokens[0];
  const m = /^(\d+)([a-z]*)$/.exec(tokens[2]);
  let kind = 'internal';
  let status = 'unset';
  for (const f of m[2]) {
    if (KINDS[f]) kind = KINDS[f];
    if (f === 'e') status = 'error';
    if (f === 'k') status = 'ok';
  }
  const span = {
    trace_id: hex(ids.slice(0, 22)),
    span_id: hex(ids.slice(22, 33)),
    parent_span_id: ids.length === 44 ? hex(ids.slice(33)) : null,
    start_us: Number(tokens[1]),
    duration_us: Number(m[1]),
    open: m[2].includes('u'),
    name: unescape(tokens[3]),
    kind,
    status,
    status_message: null,
    service: null,
    request_id: null,
    attributes: [],
    events: [],
    links: [],
    resource: [],
    dropped: { attributes: 0, events: 0, links: 0 },
  };
  let target = span.attributes;
  for (const tok of tokens.slice(4)) {
    if (tok.startsWith('@')) {
      const e = /^@(-?\d+)=(.*)$/.exec(tok);
      const ev = { offset_us: Number(e[1]), name: unescape(e[2]), attributes: [] };
      span.events.push(ev);
      target = ev.attributes;
    } else if (tok.startsWith('^')) {
      const l = { trace_id: hex(tok.slice(1, 23)), span_id: hex(tok.slice(23, 34)), attributes: [] };
      span.links.push(l);
      target = l.attributes;
    } else if (tok.startsWith('*')) {
      const v = tok.slice(3);
      if (tok.startsWith('*s=')) span.service = unescape(v);
      else if (tok.startsWith('*r=')) span.request_id = unescape(v);
      else if (tok.startsWith('*m=')) span.status_message = unescape(v);
      else if (tok.startsWith('*a#')) span.dropped.attributes = Number(v);
      else if (tok.startsWith('*e#')) span.dropped.events = Number(v);
      else if (tok.startsWith('*l#')) span.dropped.links = Number(v);
    } else if (tok.startsWith('+')) {
      span.resource.push(attr(tok.slice(1)));
    } else {
      target.push(attr(tok));
    }
  }
  return span;
}

/** Replaces process.stdout.write with a recorder; returns the chunks and the restore function. */
function interceptStdout() {
  const chunks = [];
  const orig = process.stdout.write;
  process.stdout.write = (chunk, enc, cb) => {
    chunks.push(String(chunk));
    const done = typeof enc === 'function' ? enc : cb;
    if (typeof done === 'function') done();
    return true;
  };
  return { chunks, restore: () => { process.stdout.write = orig; } };
}

/** The chunks process.stdout.write receives while the synchronous fn runs. */
function captureChunks(fn) {
  const { chunks, restore } = interceptStdout();
  try {
    fn();
  } finally {
    restore();
  }
  return chunks;
}

/** Captures process.stdout.write while fn (sync or async) runs; resolves with the text. */
async function captureStdout(fn) {
  const { chunks, restore } = interceptStdout();
  try {
    await fn();
  } finally {
    restore();
  }
  return chunks.join('');
}

module.exports = { decodeSpan, captureStdout, captureChunks };
