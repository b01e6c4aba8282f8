'use strict';
// spanline emitter for Node.js: writes one span line (FORMAT.md, format v1) per finished span.
//
// Dependency-free, CommonJS, Node >= 18 (uses Buffer 'base64url'). Two layers:
//
//   * encodeSpan(span) / encodeBatch(spans) / encodeBatches(spans): pure encoders from the span
//     model of the conformance vectors (fixtures/conformance/valid.json) to record text;
//     encodeOpen(span): the open record (flag `u`) that announces a span when it starts.
//   * Tracer / Span / SpanContext: a tiny emitter with an OpenTracing-shaped surface
//     (startSpan, setTag, log, logEvent, context, finish) that an OpenTracing wrapper can build on.
//
// The contract is src/span_line/FORMAT.md; an emitter is correct when it reproduces every canonical
// vector byte for byte (see conformance.test.js).

// crypto is required on the first random id, not at import: cold start counts in Lambda.
let crypto = null;

const VERSION = 1;
const PREFIX = 'SPLN1 ';
const MAX_LINE = 8192;
const RESERVE = 64;
const MAX_NAME = 128;
const MAX_KEY = 128;
const MAX_VALUE = 512;
const MAX_ATTRIBUTES = 64;
const MAX_EVENTS = 32;
const MAX_LINKS = 8;
const MAX_BATCH_SPANS = 64;

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

// ------------------------------------------------------------------------------------ strings

const CLASS_NAME = 0; // span name position: also a leading `"` or `|`
const CLASS_KEY = 1; // keys: also `= # ~ !` and a leading ASCII punctuation byte except `_` `.`
const CLASS_VALUE = 2; // values, event names, specials

const HEX = '0123456789ABCDEF';

function isAsciiPunct(b) {
  return (b >= 0x21 && b <= 0x2f) || (b >= 0x3a && b <= 0x40) || (b >= 0x5b && b <= 0x60) ||
    (b >= 0x7b && b <= 0x7e);
}

function needsEscape(b, cls, first) {
  if (b <= 0x20 || b === 0x7f || b === 0x25 /* % */ || b === 0x3b /* ; */) return true;
  if (cls === CLASS_KEY) {
    if (b === 0x3d || b === 0x23 || b === 0x7e || b === 0x21) return true; // = # ~ !
    return first && isAsciiPunct(b) && b !== 0x5f && b !== 0x2e;
  }
  if (cls === CLASS_NAME) return first && (b === 0x22 || b === 0x7c); // " |
  return false;
}

// A model string is either a plain string or {text, truncated}. Returns [text, alreadyTruncated].
function strParts(s) {
  if (s !== null && typeof s === 'object') return [String(s.text === undefined ? '' : s.text), !!s.truncated];
  return [s === undefined || s === null ? '' : String(s), false];
}

// ASCII bytes that a class writes as is, as bits: 1 << cls when allowed as a string's first byte,
// 8 << cls elsewhere; the rules of needsEscape (test/fastpath.test.js checks the two agree). Built
// without calling needsEscape 768 times: that took a quarter of a millisecond of cold start.
const PLAIN = new Uint8Array(128);
PLAIN.fill(0x3f, 0x21, 0x7f); // printable: every class, every position
for (const b of [0x25, 0x3b]) PLAIN[b] = 0; // % ;
for (const b of [0x3d, 0x23, 0x7e, 0x21]) PLAIN[b] &= ~((1 | 8) << CLASS_KEY); // = # ~ !
for (let b = 0x21; b < 0x7f; b++) if (isAsciiPunct(b) && b !== 0x5f && b !== 0x2e) PLAIN[b] &= ~(1 << CLASS_KEY);
PLAIN[0x22] &= ~(1 << CLASS_NAME); // " and | cannot start a name
PLAIN[0x7c] &= ~(1 << CLASS_NAME);

// True when `s` is printable ASCII that `cls` writes as is (the common case: no Buffer needed).
function plainAscii(s, cls) {
  const n = s.length;
  if (n === 0) return true;
  let c = s.charCodeAt(0);
  if (c >= 128 || (PLAIN[c] & (1 << cls)) === 0) return false;
  const mask = 8 << cls;
  for (let i = 1; i < n; i++) {
    c = s.charCodeAt(i);
    if (c >= 128 || (PLAIN[c] & mask) === 0) return false;
  }
  return true;
}

// Escapes `s` for `cls`, cut to `limit` UTF-8 bytes at a character boundary, with `%*` when cut.
function escapeString(s, cls, limit) {
  if (typeof s === 'string' && s.length <= limit && plainAscii(s, cls)) return s;
  const [text, wasCut] = strParts(s);
  let buf = Buffer.from(text, 'utf8');
  let cut = wasCut;
  if (buf.length > limit) {
    let end = limit;
    while (end > 0 && (buf[end] & 0xc0) === 0x80) end--;
    buf = buf.subarray(0, end);
    cut = true;
  }
  let out = '';
  let run = 0;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i];
    if (needsEscape(b, cls, i === 0)) {
      // escaped bytes are ASCII, so runs between them are whole characters
      if (i > run) out += buf.toString('utf8', run, i);
      out += '%' + HEX[b >> 4] + HEX[b & 15];
      run = i + 1;
    }
  }
  if (run < buf.length) out += buf.toString('utf8', run, buf.length);
  return cut ? out + '%*' : out;
}

// ------------------------------------------------------------------------------------ numbers

// ECMAScript Number.prototype.toString, with nan / inf / -inf.
function formatFloat(x) {
  if (typeof x === 'string') {
    if (x === 'nan') return 'nan';
    if (x === 'inf') return 'inf';
    if (x === '-inf') return '-inf';
  }
  const n = Number(x);
  if (Number.isNaN(n)) return 'nan';
  if (n === Infinity) return 'inf';
  if (n === -Infinity) return '-inf';
  return String(n); // String(-0) === '0'
}

function toBigInt(v) {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return BigInt(Math.trunc(v));
  return BigInt(String(v).trim());
}

function intText(v) {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v === 0 ? '0' : String(v);
  let n = toBigInt(v);
  if (n < I64_MIN) n = I64_MIN;
  if (n > I64_MAX) n = I64_MAX;
  return n.toString();
}

function uintText(v) {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v > 0 ? String(v) : '0';
  const n = toBigInt(v);
  return (n < 0n ? 0n : n).toString();
}

// ------------------------------------------------------------------------------------ ids

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE['0123456789abcdef'.charCodeAt(i)] = i;
  HEX_VALUE['0123456789ABCDEF'.charCodeAt(i)] = i;
}

function hexDigit(h, i) {
  const c = h.charCodeAt(i);
  const v = c < 128 ? HEX_VALUE[c] : -1;
  if (v < 0) throw new TypeError(`spanline: expected ${h.length} hex digits, got ${JSON.stringify(h)}`);
  return v;
}

// Encoded ids, by hex text: a process encodes the same trace and parent ids again and again.
const ID_CACHE_MAX = 2048;
let idCache = new Map();

// `bytes` bytes given as hex → unpadded base64url (what Buffer's 'base64url' writes).
function idB64(hex, bytes) {
  const h = typeof hex === 'string' ? hex : String(hex);
  const hit = idCache.get(h);
  if (hit !== undefined && hit.length === (bytes === 16 ? 22 : 11)) return hit;
  const b = idB64Compute(h, bytes);
  if (idCache.size >= ID_CACHE_MAX) idCache = new Map();
  idCache.set(h, b);
  return b;
}

function idB64Compute(h, bytes) {
  if (h.length !== bytes * 2) {
    throw new TypeError(`spanline: expected ${bytes * 2} hex digits, got ${JSON.stringify(h)}`);
  }
  let out = '';
  let i = 0;
  const n = bytes * 2;
  for (; i + 6 <= n; i += 6) { // 3 bytes → 4 characters
    const v = (hexDigit(h, i) << 20) | (hexDigit(h, i + 1) << 16) | (hexDigit(h, i + 2) << 12) |
      (hexDigit(h, i + 3) << 8) | (hexDigit(h, i + 4) << 4) | hexDigit(h, i + 5);
    out += B64URL[v >> 18] + B64URL[(v >> 12) & 63] + B64URL[(v >> 6) & 63] + B64URL[v & 63];
  }
  const rest = (n - i) / 2;
  if (rest === 1) {
    const v = (hexDigit(h, i) << 4) | hexDigit(h, i + 1);
    out += B64URL[v >> 2] + B64URL[(v & 3) << 4];
  } else if (rest === 2) {
    const v = (hexDigit(h, i) << 12) | (hexDigit(h, i + 1) << 8) | (hexDigit(h, i + 2) << 4) | hexDigit(h, i + 3);
    out += B64URL[v >> 10] + B64URL[(v >> 4) & 63] + B64URL[(v & 15) << 2];
  }
  return out;
}

// Random ids come from a pool filled 4 KiB at a time (one randomFillSync per 512 span ids), kept
// also as hex text: an id's hex is a slice of that text and its base64url is built from the pool's
// bytes by table, with no Buffer call per span.
const POOL_SIZE = 4096;
const pool = Buffer.allocUnsafe(POOL_SIZE);
let poolHex = '';
let poolOffset = POOL_SIZE;
const B64CODE = new Uint8Array(64);
for (let i = 0; i < 64; i++) B64CODE[i] = B64URL.charCodeAt(i);

// Offset in the pool of `bytes` fresh random bytes, not all zero.
function takeId(bytes) {
  for (;;) {
    if (poolOffset + bytes > POOL_SIZE) {
      if (crypto === null) crypto = require('crypto');
      crypto.randomFillSync(pool);
      poolHex = pool.toString('hex');
      poolOffset = 0;
    }
    const start = poolOffset;
    poolOffset += bytes;
    for (let i = start; i < start + bytes; i++) {
      if (pool[i] !== 0) return start;
    }
  }
}

function poolHexAt(start, bytes) {
  return poolHex.slice(start * 2, (start + bytes) * 2);
}

// base64url of 3 pool bytes at i, as 4 char codes appended by the callers below.
function b64Group(i) {
  const v = (pool[i] << 16) | (pool[i + 1] << 8) | pool[i + 2];
  return String.fromCharCode(B64CODE[v >> 18], B64CODE[(v >> 12) & 63], B64CODE[(v >> 6) & 63], B64CODE[v & 63]);
}

// 8 pool bytes → 11 base64url characters.
function poolB64Span(i) {
  const v = (pool[i] << 16) | (pool[i + 1] << 8) | pool[i + 2];
  const w = (pool[i + 3] << 16) | (pool[i + 4] << 8) | pool[i + 5];
  const x = (pool[i + 6] << 8) | pool[i + 7];
  return String.fromCharCode(B64CODE[v >> 18], B64CODE[(v >> 12) & 63], B64CODE[(v >> 6) & 63], B64CODE[v & 63],
    B64CODE[w >> 18], B64CODE[(w >> 12) & 63], B64CODE[(w >> 6) & 63], B64CODE[w & 63],
    B64CODE[x >> 10], B64CODE[(x >> 4) & 63], B64CODE[(x & 15) << 2]);
}

// 16 pool bytes → 22 base64url characters.
function poolB64Trace(i) {
  const last = pool[i + 15];
  return b64Group(i) + b64Group(i + 3) + b64Group(i + 6) + b64Group(i + 9) + b64Group(i + 12) +
    String.fromCharCode(B64CODE[last >> 2], B64CODE[(last & 3) << 4]);
}

function randomId(bytes) {
  return poolHexAt(takeId(bytes), bytes);
}

// ------------------------------------------------------------------------------------ fields

const KIND_LETTER = { internal: '', server: 's', client: 'c', producer: 'p', consumer: 'o' };
const STATUS_LETTER = { unset: '', ok: 'k', error: 'e' };

function flags(kind, status) {
  return (KIND_LETTER[kind] || '') + (STATUS_LETTER[status] || '');
}

// ` <prefix><key><sep><value>` for one attribute of the model ({key, type, value}).
function attrField(prefix, a) {
  let key = a.key;
  if (strParts(key)[0] === '' && !(key && key.truncated)) key = '_'; // keys are never empty
  let out = ' ' + prefix + escapeString(key, CLASS_KEY, MAX_KEY);
  switch (a.type) {
    case 'int':
      return out + '#' + intText(a.value);
    case 'float':
      return out + '~' + formatFloat(a.value);
    case 'bool':
      return out + (a.value === true || a.value === 't' || a.value === 'true' ? '!t' : '!f');
    default:
      return out + '=' + escapeString(a.value, CLASS_VALUE, MAX_VALUE);
  }
}

function special(letter, value) {
  return ' *' + letter + '=' + escapeString(value, CLASS_VALUE, MAX_VALUE);
}

// Collects the attribute, link and event fields of one span within a byte budget and the count
// limits; whatever does not fit is dropped and counted.
class FieldWriter {
  constructor(budget, dropped) {
    this.budget = budget;
    this.used = 0;
    this.text = '';
    this.nAttrs = 0;
    this.nLinks = 0;
    this.nEvents = 0;
    this.target = null; // attributes on the current event/link, null when it was dropped
    const d = dropped || {};
    this.da = Number(d.attributes) || 0;
    this.de = Number(d.events) || 0;
    this.dl = Number(d.links) || 0;
  }

  _add(field) {
    const n = Buffer.byteLength(field, 'utf8');
    if (this.used + n > this.budget) return false;
    this.used += n;
    this.text += field;
    return true;
  }

  attr(a) {
    if (this.nAttrs >= MAX_ATTRIBUTES || !this._add(attrField('', a))) this.da++;
    else this.nAttrs++;
  }

  link(l) {
    if (this.nLinks >= MAX_LINKS || !this._add(' ^' + idB64(l.trace_id, 16) + idB64(l.span_id, 8))) {
      this.dl++;
      this.target = null;
      return false;
    }
    this.nLinks++;
    this.target = 0;
    return true;
  }

  event(e) {
    const field = ' @' + intText(e.offset_us || 0) + '=' + escapeString(e.name, CLASS_VALUE, MAX_NAME);
    if (this.nEvents >= MAX_EVENTS || !this._add(field)) {
      this.de++;
      this.target = null;
      return false;
    }
    this.nEvents++;
    this.target = 0;
    return true;
  }

  // An attribute of the last link or event; ignored when that link or event was dropped.
  targetAttr(a) {
    if (this.target === null) return;
    if (this.target >= MAX_ATTRIBUTES || !this._add(attrField('', a))) this.da++;
    else this.target++;
  }

  addSpan(span) {
    for (const a of span.attributes || []) this.attr(a);
    for (const l of span.links || []) if (this.link(l)) for (const a of l.attributes || []) this.targetAttr(a);
    for (const e of span.events || []) if (this.event(e)) for (const a of e.attributes || []) this.targetAttr(a);
    return this;
  }

  counters() {
    let out = '';
    if (this.da > 0) out += ' *a#' + this.da;
    if (this.de > 0) out += ' *e#' + this.de;
    if (this.dl > 0) out += ' *l#' + this.dl;
    return out;
  }
}

// ------------------------------------------------------------------------------------ records

/** Encodes one span record (FORMAT.md §3) from the conformance span model; no newline. */
function encodeSpan(span) {
  const line = fastEncode(span);
  return line !== null ? line : encodeSpanGeneral(span);
}

// encodeSpan for any model (the reference the fast paths are tested against).
function encodeSpanGeneral(span) {
  const head = PREFIX + idB64(span.trace_id, 16) + idB64(span.span_id, 8) +
    (span.parent_span_id ? idB64(span.parent_span_id, 8) : '') +
    ' ' + uintText(span.start_us) + ' ' + uintText(span.duration_us) + flags(span.kind, span.status) +
    ' ' + escapeString(span.name, CLASS_NAME, MAX_NAME);
  let tail = '';
  if (span.status_message !== null && span.status_message !== undefined) tail += special('m', span.status_message);
  if (span.request_id !== null && span.request_id !== undefined) tail += special('r', span.request_id);
  if (span.service !== null && span.service !== undefined) tail += special('s', span.service);
  for (const a of span.resource || []) tail += attrField('+', a);
  const budget = MAX_LINE - RESERVE - Buffer.byteLength(head, 'utf8') - Buffer.byteLength(tail, 'utf8');
  const f = new FieldWriter(budget, span.dropped).addSpan(span);
  return head + f.text + tail + f.counters() + ';';
}

/**
 * Encodes the open record (FORMAT.md §3, "Open records") that announces `span` when it starts:
 * flag `u`, duration 0, the kind letter, and no fields besides `*r=`, `*s=` and `+…`. The record
 * the span writes when it finishes supersedes it; a converter that never sees that one reports
 * the span as an error ending with its invocation (a timeout or crash).
 */
function encodeOpen(span) {
  let line = PREFIX + idB64(span.trace_id, 16) + idB64(span.span_id, 8) +
    (span.parent_span_id ? idB64(span.parent_span_id, 8) : '') +
    ' ' + uintText(span.start_us) + ' 0' + (KIND_LETTER[span.kind] || '') + 'u' +
    ' ' + escapeString(span.name, CLASS_NAME, MAX_NAME);
  if (span.request_id !== null && span.request_id !== undefined) line += special('r', span.request_id);
  if (span.service !== null && span.service !== undefined) line += special('s', span.service);
  for (const a of span.resource || []) line += attrField('+', a);
  return line + ';';
}

function sameB64Parent(span) {
  return span.parent_span_id ? idB64(span.parent_span_id, 8) : null;
}

// Builds batch records (FORMAT.md §4): header, then entries with `"` dittos.
class BatchBuilder {
  constructor(first) {
    this.traceId = String(first.trace_id).toLowerCase();
    this.base = toBigInt(first.start_us);
    let h = PREFIX + '+' + idB64(first.trace_id, 16) + ' ' + uintText(first.start_us);
    if (first.request_id !== null && first.request_id !== undefined) h += special('r', first.request_id);
    if (first.service !== null && first.service !== undefined) h += special('s', first.service);
    for (const a of first.resource || []) h += attrField('+', a);
    this.text = h;
    this.bytes = Buffer.byteLength(h, 'utf8');
    this.headerBytes = this.bytes;
    this.count = 0;
    this.prevParent = undefined;
    this.prevName = null;
    this.prevFields = null;
  }

  // Adds a span; returns false (batch unchanged) when it is full or the line would pass MAX_LINE.
  push(span) {
    if (this.count >= MAX_BATCH_SPANS) return false;
    if (String(span.trace_id).toLowerCase() !== this.traceId) throw new RangeError('spanline: batch spans must share one trace id');
    const parent = sameB64Parent(span);
    let e = ' |' + idB64(span.span_id, 8) + ' ' +
      (this.count > 0 && parent === this.prevParent ? '"' : parent === null ? '-' : parent) +
      ' ' + (toBigInt(span.start_us) - this.base).toString() +
      ' ' + uintText(span.duration_us) + flags(span.kind, span.status) + ' ';
    const name = escapeString(span.name, CLASS_NAME, MAX_NAME);
    e += this.count > 0 && name === this.prevName ? '"' : name;
    const m = span.status_message !== null && span.status_message !== undefined ? special('m', span.status_message) : '';
    // The budget is that of an empty batch, so a span never loses fields to its position in the
    // batch: when it does not fit here it starts the next batch.
    const budget = MAX_LINE - RESERVE - this.headerBytes - Buffer.byteLength(e, 'utf8') - Buffer.byteLength(m, 'utf8');
    const f = new FieldWriter(budget, span.dropped).addSpan(span);
    const fields = f.text + m + f.counters();
    const entry = e + (this.count > 0 && fields !== '' && fields === this.prevFields ? ' "' : fields);
    const n = Buffer.byteLength(entry, 'utf8');
    if (this.count > 0 && this.bytes + n + 1 > MAX_LINE) return false;
    this.text += entry;
    this.bytes += n;
    this.count++;
    this.prevParent = parent;
    this.prevName = name;
    this.prevFields = fields;
    return true;
  }

  line() {
    return this.text + ';';
  }
}

/**
 * Encodes spans of one trace as batch records, as many as needed (at most 64 spans and 8192
 * bytes each). Returns the lines without newlines.
 */
function encodeBatches(spans) {
  const lines = [];
  let b = null;
  for (const s of spans) {
    if (b === null) b = new BatchBuilder(s);
    if (!b.push(s)) {
      lines.push(b.line());
      b = new BatchBuilder(s);
      b.push(s);
    }
  }
  if (b !== null && b.count > 0) lines.push(b.line());
  return lines;
}

/** Encodes spans of one trace as one batch record; throws RangeError when they need more. */
function encodeBatch(spans) {
  if (!spans || spans.length === 0) throw new RangeError('spanline: empty batch');
  const lines = encodeBatches(spans);
  if (lines.length !== 1) throw new RangeError(`spanline: spans need ${lines.length} batch records`);
  return lines[0];
}

// ------------------------------------------------------------------------------------ clock

// Wall clock in microseconds: Date.now() has millisecond resolution, so the microseconds come
// from monotonic process.hrtime() deltas against an anchor that is re-synchronised when it drifts
// from the wall clock by more than a millisecond (a frozen Lambda sandbox stops the monotonic
// clock, not the wall clock). Plain numbers: microseconds since the epoch stay far below 2^53.
// (process.hrtime() rather than performance.now(): the `performance` global loads a module on
// first use, most of a millisecond of cold start.)
/** Monotonic microseconds (fractional), for durations. */
function monoUs() {
  const t = process.hrtime();
  return t[0] * 1e6 + t[1] / 1e3;
}

let anchorWallUs = Date.now() * 1000;
let anchorMono = monoUs();

function nowUs() {
  return nowUsAt(monoUs());
}

// Wall-clock microseconds at the monotonic reading `mono` (taken just now).
function nowUsAt(mono) {
  const wallUs = Date.now() * 1000;
  let est = anchorWallUs + Math.floor(mono - anchorMono);
  const drift = est - wallUs;
  if (drift > 1000 || drift < -1000) {
    anchorWallUs = wallUs;
    anchorMono = mono;
    est = wallUs;
  }
  return est;
}

// ------------------------------------------------------------------------------------ emitter

const KIND_NAMES = {
  internal: 'internal', server: 'server', client: 'client', producer: 'producer', consumer: 'consumer',
  'rpc.server': 'server', 'rpc.client': 'client',
};

function kindName(k) {
  return KIND_NAMES[String(k).toLowerCase()] || null;
}

function typedAttr(key, value) {
  switch (typeof value) {
    case 'string':
      return { key, type: 'string', value };
    case 'boolean':
      return { key, type: 'bool', value };
    case 'number':
      if (Number.isSafeInteger(value)) return { key, type: 'int', value: value === 0 ? '0' : String(value) };
      if (Number.isInteger(value) && Math.abs(value) < 2 ** 63) return { key, type: 'int', value: BigInt(value).toString() };
      return { key, type: 'float', value };
    case 'bigint':
      if (value >= I64_MIN && value <= I64_MAX) return { key, type: 'int', value: value.toString() };
      return { key, type: 'string', value: value.toString() };
    default: {
      let text;
      try {
        text = value !== null && typeof value === 'object' && !(value instanceof Error) ? JSON.stringify(value) : String(value);
      } catch (_) {
        text = Object.prototype.toString.call(value);
      }
      return { key, type: 'string', value: text === undefined ? String(value) : text };
    }
  }
}

/** Trace id and span id (lowercase hex) of a span; OpenTracing-style accessors included. */
class SpanContext {
  constructor(traceId, spanId) {
    this.traceId = traceId;
    this.spanId = spanId;
  }

  toTraceId() {
    return this.traceId;
  }

  toSpanId() {
    return this.spanId;
  }
}

const TRACE_RE = /^[0-9a-f]{32}$/;
const SPAN_RE = /^[0-9a-f]{16}$/;

// Accepts a Span, a SpanContext, or anything with traceId/spanId (or toTraceId()/toSpanId()).
// The last context accepted, by the strings it came from: a process makes many spans under the
// same parent, and the check is then two string comparisons.
let lastCtxT = null;
let lastCtxS = null;
let lastCtx = null;

function toContext(x) {
  if (!x) return null;
  if (x instanceof Span) return x.context();
  let t = typeof x.toTraceId === 'function' ? x.toTraceId() : x.traceId;
  let s = typeof x.toSpanId === 'function' ? x.toSpanId() : x.spanId;
  if (typeof x.context === 'function' && (t === undefined || s === undefined)) return toContext(x.context());
  if (t === lastCtxT && s === lastCtxS && typeof t === 'string' && typeof s === 'string') return lastCtx;
  const rawT = t;
  const rawS = s;
  t = String(t === undefined ? '' : t).toLowerCase();
  s = String(s === undefined ? '' : s).toLowerCase();
  if (t.length === 16) t = t.padStart(32, '0'); // 64-bit trace ids (B3, Jaeger)
  if (!TRACE_RE.test(t) || !SPAN_RE.test(s) || /^0+$/.test(t) || /^0+$/.test(s)) return null;
  const ctx = new SpanContext(t, s);
  if (typeof rawT === 'string' && typeof rawS === 'string') {
    lastCtxT = rawT;
    lastCtxS = rawS;
    lastCtx = ctx;
  }
  return ctx;
}

// ------------------------------------------------------------------------------------ fast path

// The common span line, built by concatenation: ASCII name, keys and values that need no escaping
// and fit their limits, no events or links, fields within the line's budget. Returns null for
// anything else, which then goes through encodeSpan(toModel()); the output is the same either way
// (test/fastpath.test.js compares the two on random spans).
function fastLine(span, dur) {
  if (span._events !== null || span._links !== null) return null;
  const startUs = span._startUs;
  if (!Number.isSafeInteger(startUs) || !Number.isSafeInteger(dur)) return null;
  const name = span._name;
  if (name.length > MAX_NAME || !plainAscii(name, CLASS_NAME)) return null;
  let fields = '';
  const attrs = span._attrs;
  if (attrs !== null) {
    for (const a of attrs.values()) {
      const f = fastAttr(a, ' ');
      if (f === null) return null;
      fields += f;
    }
  }
  let tail = '';
  const msg = span._statusMessage;
  if (msg !== null) {
    if (typeof msg !== 'string' || msg.length > MAX_VALUE || !plainAscii(msg, CLASS_VALUE)) return null;
    tail = ' *m=' + msg;
  }
  const rid = span._requestId;
  if (rid !== undefined && rid !== null) {
    const r = typeof rid === 'string' ? rid : String(rid);
    if (r.length > MAX_VALUE || !plainAscii(r, CLASS_VALUE)) return null;
    tail += ' *r=' + r;
  }
  const tracer = span._tracer;
  const constTail = tracer._constTail();
  const head = PREFIX + span._traceB64 + span._spanB64 + span._parentB64 + ' ' + usText(startUs) +
    ' ' + dur + (KIND_LETTER[span._kind] || '') + (STATUS_LETTER[span._status] || '') + ' ' + name;
  // all ASCII so far: characters are bytes
  if (fields.length > MAX_LINE - RESERVE - head.length - tail.length - tracer._constTailBytes) return null;
  const da = span._droppedAttrs;
  return head + fields + tail + constTail + (da > 0 ? ' *a#' + da + ';\n' : ';\n');
}

// Decimal text of a safe integer of microseconds since the epoch (0 when not positive). V8 turns a
// 16-digit number into text slowly (it is no small integer); the seconds' text changes once a
// second and is kept, the microseconds are a small integer.
let lastSec = -1;
let lastSecText = '';
const PAD6 = ['00000', '0000', '000', '00', '0', ''];

function usText(us) {
  if (us < 1e6) return us > 0 ? String(us) : '0';
  const sec = Math.floor(us / 1e6);
  if (sec !== lastSec) {
    lastSec = sec;
    lastSecText = String(sec);
  }
  const frac = us - sec * 1e6;
  return lastSecText + PAD6[frac >= 100000 ? 5 : frac >= 10000 ? 4 : frac >= 1000 ? 3 : frac >= 100 ? 2 : frac >= 10 ? 1 : 0] + frac;
}

// True for the text of an integer as BigInt writes it, short enough to be within int64.
function canonicalInt(s) {
  const n = s.length;
  let i = s.charCodeAt(0) === 0x2d ? 1 : 0; // -
  if (n === i || n - i > 18) return false;
  const c0 = s.charCodeAt(i);
  if (c0 === 0x30) return n === 1; // 0, not -0 or 01
  for (; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

// One attribute field of the fast path (`prefix`: ' ' or ' +'), what attrField writes, or null
// when it needs the general encoder.
function fastAttr(a, prefix) {
  let key = a.key;
  if (typeof key !== 'string') return null;
  if (key === '') key = '_';
  else if (key.length > MAX_KEY || !plainAscii(key, CLASS_KEY)) return null;
  const v = a.value;
  switch (a.type) {
    case 'string':
      if (typeof v !== 'string' || v.length > MAX_VALUE || !plainAscii(v, CLASS_VALUE)) return null;
      return prefix + key + '=' + v;
    case 'int':
      if (typeof v === 'string') return canonicalInt(v) ? prefix + key + '#' + v : null;
      if (typeof v === 'number' && Number.isSafeInteger(v)) return prefix + key + '#' + (v === 0 ? '0' : v);
      return null;
    case 'float':
      return prefix + key + '~' + formatFloat(v);
    case 'bool':
      return prefix + key + (v === true || v === 't' || v === 'true' ? '!t' : '!f');
    default:
      return null;
  }
}

// A model's special field value (*m= *r= *s=) written as is, or null.
function fastValue(v) {
  return typeof v === 'string' && v.length <= MAX_VALUE && plainAscii(v, CLASS_VALUE) ? v : null;
}

// encodeSpan for the common model (what the OpenTelemetry bridge writes): the same conditions as
// fastLine, from the model's fields. Returns null for anything else.
function fastEncode(span) {
  const ev = span.events;
  const ln = span.links;
  if ((ev && ev.length !== 0) || (ln && ln.length !== 0)) return null;
  const st = span.start_us;
  const du = span.duration_us;
  if (!Number.isSafeInteger(st) || !Number.isSafeInteger(du)) return null;
  const name = span.name;
  if (typeof name !== 'string' || name.length > MAX_NAME || !plainAscii(name, CLASS_NAME)) return null;
  let fields = '';
  const attrs = span.attributes;
  if (attrs) {
    if (!Array.isArray(attrs) || attrs.length > MAX_ATTRIBUTES) return null;
    for (let i = 0; i < attrs.length; i++) {
      const f = fastAttr(attrs[i], ' ');
      if (f === null) return null;
      fields += f;
    }
  }
  let tail = '';
  if (span.status_message !== null && span.status_message !== undefined) {
    const m = fastValue(span.status_message);
    if (m === null) return null;
    tail = ' *m=' + m;
  }
  if (span.request_id !== null && span.request_id !== undefined) {
    const r = fastValue(span.request_id);
    if (r === null) return null;
    tail += ' *r=' + r;
  }
  if (span.service !== null && span.service !== undefined) {
    const sv = fastValue(span.service);
    if (sv === null) return null;
    tail += ' *s=' + sv;
  }
  const res = span.resource;
  if (res) {
    if (!Array.isArray(res)) return null;
    for (let i = 0; i < res.length; i++) {
      const f = fastAttr(res[i], ' +');
      if (f === null) return null;
      tail += f;
    }
  }
  const head = PREFIX + idB64(span.trace_id, 16) + idB64(span.span_id, 8) +
    (span.parent_span_id ? idB64(span.parent_span_id, 8) : '') +
    ' ' + usText(st) + ' ' + (du > 0 ? du : 0) + flags(span.kind, span.status) + ' ' + name;
  if (fields.length > MAX_LINE - RESERVE - head.length - tail.length) return null;
  const d = span.dropped || {};
  const da = Number(d.attributes) || 0;
  const de = Number(d.events) || 0;
  const dl = Number(d.links) || 0;
  let counters = '';
  if (da > 0) counters += ' *a#' + da;
  if (de > 0) counters += ' *e#' + de;
  if (dl > 0) counters += ' *l#' + dl;
  return head + fields + tail + counters + ';';
}

class Span {
  constructor(tracer, name, options) {
    const opts = options || {};
    this._tracer = tracer;
    this._name = name === undefined || name === null ? '' : String(name);
    const parent = toContext(opts.childOf);
    const sid = takeId(8);
    this._spanId = poolHexAt(sid, 8);
    this._spanB64 = poolB64Span(sid); // ids in the record's encoding, made once
    if (parent) {
      this._traceId = parent.traceId;
      this._parentId = parent.spanId;
      this._traceB64 = idB64(parent.traceId, 16);
      this._parentB64 = idB64(parent.spanId, 8);
    } else {
      const tid = takeId(16); // fields in the same order on both branches: one object shape
      this._traceId = poolHexAt(tid, 16);
      this._parentId = null;
      this._traceB64 = poolB64Trace(tid);
      this._parentB64 = '';
    }
    const kind = opts.kind;
    this._kind = kind === undefined || kind === null ? 'internal' : KIND_NAMES[kind] || kindName(kind) || 'internal';
    this._status = 'unset';
    this._statusMessage = null;
    this._attrs = null; // Map, made by the first setTag
    this._droppedAttrs = 0;
    this._events = null; // arrays, made by the first event or link
    this._droppedEvents = 0;
    this._links = null;
    this._droppedLinks = 0;
    this._requestId = opts.requestId !== undefined ? opts.requestId : tracer.requestId;
    this._finished = false;
    if (opts.startTime !== undefined && opts.startTime !== null) {
      this._startUs = Math.round(Number(opts.startTime) * 1000); // OpenTracing: ms since epoch
      this._startHr = null;
    } else {
      const mono = monoUs(); // one clock reading for both
      this._startUs = nowUsAt(mono);
      this._startHr = mono;
    }
    if (opts.followsFrom !== undefined) for (const f of [].concat(opts.followsFrom)) this.addLink(f);
    if (opts.tags) for (const k of Object.keys(opts.tags)) this.setTag(k, opts.tags[k]);
    this._announced = false;
    if (opts.announce) this.announce();
  }

  /**
   * Writes an open record for this span now (also in buffered mode), so that a process that
   * dies before finish() (a Lambda timeout, a crash) still leaves the span in the trace, as an
   * error ending with the invocation. Use it for the invocation's entry span. Once per span;
   * nothing after finish(). The option `announce: true` of startSpan calls it.
   */
  announce() {
    if (this._finished || this._announced) return this;
    this._announced = true;
    try {
      this._tracer._write(encodeOpen(this.toModel(0)) + '\n');
    } catch (e) {
      this._tracer._fail(e);
    }
    return this;
  }

  context() {
    return new SpanContext(this._traceId, this._spanId);
  }

  tracer() {
    return this._tracer;
  }

  setOperationName(name) {
    this._name = String(name);
    return this;
  }

  /** string, integer number / bigint → int, other number → float, boolean → bool. */
  setTag(key, value) {
    try {
      const k = String(key);
      if (k === 'error') {
        if (value === true || value === 'true') this._status = 'error';
        else if (this._status === 'error') this._status = 'unset';
        return this;
      }
      if (k === 'span.kind') {
        const kind = kindName(value);
        if (kind) this._kind = kind;
        return this;
      }
      if (this._attrs === null) this._attrs = new Map();
      if (!this._attrs.has(k) && this._attrs.size >= MAX_ATTRIBUTES) this._droppedAttrs++;
      else this._attrs.set(k, typedAttr(k, value));
    } catch (e) {
      this._tracer._fail(e);
    }
    return this;
  }

  addTags(tags) {
    if (tags) for (const k of Object.keys(tags)) this.setTag(k, tags[k]);
    return this;
  }

  _offsetUs(timestampMs) {
    if (timestampMs !== undefined && timestampMs !== null) return Math.round(Number(timestampMs) * 1000) - this._startUs;
    if (this._startHr !== null) return Math.floor(monoUs() - this._startHr);
    return nowUs() - this._startUs;
  }

  _addEvent(name, fields, timestampMs) {
    if (this._events === null) this._events = [];
    if (this._events.length >= MAX_EVENTS) {
      this._droppedEvents++;
      return;
    }
    const attributes = [];
    for (const k of Object.keys(fields || {})) attributes.push(typedAttr(k, fields[k]));
    this._events.push({ offset_us: this._offsetUs(timestampMs), name: String(name), attributes });
  }

  /** OpenTracing log(): the `event` field (when a string) names the event, default "log". */
  log(fields, timestamp) {
    try {
      const f = Object.assign({}, fields || {});
      let name = 'log';
      if (typeof f.event === 'string') {
        name = f.event;
        delete f.event;
      }
      this._addEvent(name, f, timestamp);
    } catch (e) {
      this._tracer._fail(e);
    }
    return this;
  }

  logEvent(name, payload) {
    try {
      const fields = payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? payload
        : payload === undefined ? {} : { payload };
      this._addEvent(name, fields);
    } catch (e) {
      this._tracer._fail(e);
    }
    return this;
  }

  /** A link (OpenTracing followsFrom) to another span's context. */
  addLink(ctx, attributes) {
    try {
      const c = toContext(ctx);
      if (!c) return this;
      if (this._links === null) this._links = [];
      if (this._links.length >= MAX_LINKS) {
        this._droppedLinks++;
        return this;
      }
      const attrs = [];
      for (const k of Object.keys(attributes || {})) attrs.push(typedAttr(k, attributes[k]));
      this._links.push({ trace_id: c.traceId, span_id: c.spanId, attributes: attrs });
    } catch (e) {
      this._tracer._fail(e);
    }
    return this;
  }

  /** Error status with a message (string or Error). */
  setError(message) {
    this._status = 'error';
    if (message !== undefined && message !== null) {
      this._statusMessage = message instanceof Error ? message.message : String(message);
    }
    return this;
  }

  setOk() {
    this._status = 'ok';
    return this;
  }

  /** The span in the conformance model (what finish() encodes). */
  toModel(durationUs) {
    return {
      trace_id: this._traceId,
      span_id: this._spanId,
      parent_span_id: this._parentId,
      start_us: this._startUs,
      duration_us: durationUs,
      name: this._name,
      kind: this._kind,
      status: this._status,
      status_message: this._statusMessage,
      service: this._tracer.service,
      request_id: this._requestId === undefined || this._requestId === null ? null : String(this._requestId),
      attributes: this._attrs === null ? [] : Array.from(this._attrs.values()),
      events: this._events === null ? [] : this._events,
      links: this._links === null ? [] : this._links,
      resource: this._tracer.resource,
      dropped: { attributes: this._droppedAttrs, events: this._droppedEvents, links: this._droppedLinks },
    };
  }

  /** Writes the span line (once). finishTime: ms since epoch (OpenTracing). Never throws. */
  finish(finishTime) {
    if (this._finished) return;
    this._finished = true;
    try {
      let dur;
      if (finishTime !== undefined && finishTime !== null) dur = Math.round(Number(finishTime) * 1000) - this._startUs;
      else if (this._startHr !== null) dur = Math.floor(monoUs() - this._startHr);
      else dur = nowUs() - this._startUs;
      if (dur < 0) dur = 0;
      const tracer = this._tracer;
      if (!tracer.buffered) {
        const line = fastLine(this, dur);
        if (line !== null) {
          tracer._write(line);
          return;
        }
      }
      tracer._emit(this.toModel(Math.max(0, dur)));
    } catch (e) {
      this._tracer._fail(e);
    }
  }
}

// OTEL_RESOURCE_ATTRIBUTES: key1=value1,key2=value2 (percent-encoded values).
function parseResourceAttributes(text) {
  const out = [];
  if (!text) return out;
  for (const item of String(text).split(',')) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const dec = (s) => {
      try {
        return decodeURIComponent(s.trim());
      } catch (_) {
        return s.trim();
      }
    };
    const key = dec(item.slice(0, eq));
    if (key) out.push({ key, type: 'string', value: dec(item.slice(eq + 1)) });
  }
  return out;
}

function resourceFrom(r) {
  if (Array.isArray(r)) return r;
  if (r && typeof r === 'object') return Object.keys(r).map((k) => typedAttr(k, r[k]));
  return [];
}

class Tracer {
  /**
   * options: service (default OTEL_SERVICE_NAME, else none), resource (object or attribute
   * list; default parsed from OTEL_RESOURCE_ATTRIBUTES), requestId, buffered (collect spans per
   * trace and write batch records on flush()).
   */
  constructor(options) {
    const opts = options || {};
    const env = process.env;
    this.service = opts.service !== undefined ? opts.service : env.OTEL_SERVICE_NAME || null;
    this.resource = opts.resource !== undefined ? resourceFrom(opts.resource)
      : parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES);
    this.requestId = opts.requestId !== undefined ? opts.requestId : null;
    this.buffered = !!opts.buffered;
    this.failures = 0;
    this._warned = false;
    this._buffer = new Map(); // trace id → span models
    this._tailService = undefined; // what _tail was made from
    this._tailResource = undefined;
    this._tailResourceLength = -1;
    this._tail = '';
    this._constTailBytes = 0;
    this._onWritten = (err) => {
      if (err) this._fail(err);
    };
  }

  // The fields every span of this tracer ends with (*s= and the resource's +…), encoded once and
  // again whenever service or resource are assigned anew.
  _constTail() {
    const svc = this.service;
    const res = this.resource;
    if (svc !== this._tailService || res !== this._tailResource || (res ? res.length : 0) !== this._tailResourceLength) {
      let t = '';
      if (svc !== null && svc !== undefined) t += special('s', svc);
      for (const a of res || []) t += attrField('+', a);
      this._tail = t;
      this._constTailBytes = Buffer.byteLength(t, 'utf8');
      this._tailService = svc;
      this._tailResource = res;
      this._tailResourceLength = res ? res.length : 0;
    }
    return this._tail;
  }

  startSpan(name, options) {
    return new Span(this, name, options);
  }

  /** The Lambda request id stamped on spans started from now on (*r=). */
  setRequestId(id) {
    this.requestId = id === undefined || id === null ? null : String(id);
  }

  _emit(model) {
    if (!this.buffered) {
      this._write(encodeSpan(model) + '\n');
      return;
    }
    const list = this._buffer.get(model.trace_id) || [];
    list.push(model);
    this._buffer.set(model.trace_id, list);
    if (list.length >= MAX_BATCH_SPANS) this._flushTrace(model.trace_id);
  }

  _flushTrace(traceId) {
    const list = this._buffer.get(traceId);
    this._buffer.delete(traceId);
    if (!list) return;
    try {
      for (const line of encodeBatches(list)) this._write(line + '\n');
    } catch (e) {
      this._fail(e);
    }
  }

  /** Writes buffered spans as batch records (buffered mode). Never throws. */
  flush() {
    for (const t of Array.from(this._buffer.keys())) this._flushTrace(t);
  }

  // One process.stdout.write per line. Not fs.writeSync(1, …): to a pipe (how Lambda collects
  // stdout) the stream is several times cheaper per line, and writing past the stream could
  // reorder lines against console.log or throw EAGAIN on a full non-blocking pipe (README, "Cost").
  _write(text) {
    try {
      process.stdout.write(text, this._onWritten);
    } catch (e) {
      this._fail(e);
    }
  }

  _fail(err) {
    this.failures++;
    if (this._warned) return;
    this._warned = true;
    try {
      process.stderr.write(`spanline: dropping span output (${err && err.message ? err.message : err}); further failures are only counted\n`);
    } catch (_) {
      // nothing left to report to
    }
  }
}

module.exports = {
  VERSION,
  MAX_LINE,
  RESERVE,
  MAX_NAME,
  MAX_KEY,
  MAX_VALUE,
  MAX_ATTRIBUTES,
  MAX_EVENTS,
  MAX_LINKS,
  MAX_BATCH_SPANS,
  encodeSpan,
  encodeSpanGeneral,
  encodeOpen,
  encodeBatch,
  encodeBatches,
  formatFloat,
  escapeString,
  parseResourceAttributes,
  nowUs,
  Tracer,
  Span,
  SpanContext,
  CLASS_NAME,
  CLASS_KEY,
  CLASS_VALUE,
  _plainAscii: plainAscii, // for tests
};
