"""spanline emitter for Python: one span line (FORMAT.md, format v1) per finished span.

Standard library only, Python >= 3.9. Two layers:

* ``encode_span(span)`` / ``encode_batch(spans)`` / ``encode_batches(spans)``: pure encoders from
  the span model of the conformance vectors (``fixtures/conformance/valid.json``) to record text.
* ``Tracer`` / ``Span`` / ``SpanContext``: a tiny emitter with an OpenTracing-shaped surface
  (``start_span``, ``set_tag``, ``log_kv``, ``log_event``, ``context``, ``finish``) that an
  OpenTracing wrapper can build on.

The contract is ``src/span_line/FORMAT.md``; an emitter is correct when it reproduces every
canonical vector byte for byte (see ``tests/test_conformance.py``).
"""

# Only modules that cost nothing to import (builtins or already loaded by the interpreter): the
# import is part of a Lambda's cold start. `re`, `base64`, `decimal`, `threading` are not.
import binascii
import math
import os
import sys
import time
from _thread import allocate_lock

__all__ = [
    "encode_span", "encode_open", "encode_batch", "encode_batches", "format_float", "escape_string",
    "parse_resource_attributes", "Tracer", "Span", "SpanContext",
]

VERSION = 1
PREFIX = "SPLN1 "
MAX_LINE = 8192
RESERVE = 64
MAX_NAME = 128
MAX_KEY = 128
MAX_VALUE = 512
MAX_ATTRIBUTES = 64
MAX_EVENTS = 32
MAX_LINKS = 8
MAX_BATCH_SPANS = 64

I64_MIN = -(2 ** 63)
I64_MAX = 2 ** 63 - 1

# ----------------------------------------------------------------------------------- strings

CLASS_NAME = 0   # span name position: also a leading `"` or `|`
CLASS_KEY = 1    # keys: also `= # ~ !` and a leading ASCII punctuation byte except `_` `.`
CLASS_VALUE = 2  # values, event names, specials

_BASE_BYTES = bytes(range(0x21)) + b"\x7f%;"
_BASE = frozenset(_BASE_BYTES)
_KEY_BYTES = _BASE_BYTES + b"=#~!"
_KEY = frozenset(_KEY_BYTES)
# the first byte of a key: also ASCII punctuation except _ and .
_KEY_FIRST = _KEY | frozenset(b"!\"#$%&'()*+,-/:;<=>?@[\\]^`{|}~")
_NAME_FIRST = _BASE | frozenset(b'"|')


def _esc_bytes(data, first, rest):
    out = bytearray()
    bad = first
    for b in data:
        if b in bad:
            out += b"%%%02X" % b
        else:
            out.append(b)
        bad = rest
    return bytes(out)


def _parts(s):
    """A model string is a str or {"text": ..., "truncated": bool}: (text, already_truncated)."""
    if isinstance(s, dict):
        return str(s.get("text", "")), bool(s.get("truncated"))
    return ("" if s is None else str(s)), False


def escape_string(s, cls=CLASS_VALUE, limit=MAX_VALUE):
    """Escapes ``s`` for ``cls``, cut to ``limit`` UTF-8 bytes at a character boundary (``%*``)."""
    if type(s) is str:  # fast path: nothing to escape or cut
        try:
            data = s.encode("utf-8")
        except UnicodeEncodeError:
            data = None
        if data is not None and len(data) <= limit:
            if not data:
                return s
            if cls == CLASS_VALUE:
                if len(data.translate(None, _BASE_BYTES)) == len(data):
                    return s
            elif cls == CLASS_KEY:
                if data[0] not in _KEY_FIRST and len(data.translate(None, _KEY_BYTES)) == len(data):
                    return s
            elif data[0] not in _NAME_FIRST and len(data.translate(None, _BASE_BYTES)) == len(data):
                return s
    text, cut = _parts(s)
    data = text.encode("utf-8", "replace")  # lone surrogates become "?"
    if len(data) > limit:
        end = limit
        while end > 0 and (data[end] & 0xC0) == 0x80:
            end -= 1
        data = data[:end]
        cut = True
    if data:
        if cls == CLASS_KEY:
            data = _esc_bytes(data, _KEY_FIRST, _KEY)
        elif cls == CLASS_NAME:
            data = _esc_bytes(data, _NAME_FIRST, _BASE)
        else:
            data = _esc_bytes(data, _BASE, _BASE)
    out = data.decode("utf-8")
    return out + "%*" if cut else out


# ----------------------------------------------------------------------------------- numbers

_INF = float("inf")

def format_float(x):
    """ECMAScript Number.prototype.toString text of ``x``; nan, inf, -inf for the others."""
    if type(x) is float and x == x and x not in (_INF, -_INF):
        if x == 0:
            return "0"
        r = repr(x)  # shortest round trip; plain decimal between 1e-4 and 1e16, as ECMAScript's
        if "e" not in r:
            return r[:-2] if r.endswith(".0") else r
    return _format_float_exact(x)


def _format_float_exact(x):
    """format_float without the fast path (the tests compare both)."""
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return x
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    # repr gives the shortest round-trip digits, as ECMAScript requires
    from decimal import Decimal  # only here: importing it costs a cold start milliseconds

    sign, digits, exp = Decimal(repr(abs(x))).as_tuple()
    ds = "".join(map(str, digits)).lstrip("0")
    stripped = ds.rstrip("0")
    exp += len(ds) - len(stripped)
    ds = stripped
    k = len(ds)
    n = exp + k  # value = 0.ds × 10^n
    if k <= n <= 21:
        body = ds + "0" * (n - k)
    elif 0 < n <= 21:
        body = ds[:n] + "." + ds[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + ds
    else:
        e = n - 1
        body = ds[0] + ("." + ds[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return ("-" if x < 0 else "") + body


def _int_text(v):
    n = int(v)
    return str(min(max(n, I64_MIN), I64_MAX))


def _uint_text(v):
    return str(max(int(v), 0))


# ----------------------------------------------------------------------------------- ids

_B64URL = bytes.maketrans(b"+/", b"-_")


def _b64(raw):
    """Unpadded base64url of bytes."""
    return binascii.b2a_base64(raw, newline=False).translate(_B64URL).rstrip(b"=").decode("ascii")


def _hex_bytes(h, nbytes):
    """bytes of ``nbytes * 2`` hex digits (either case), else None."""
    if len(h) != nbytes * 2:
        return None
    try:
        raw = bytes.fromhex(h)
    except ValueError:
        return None
    return raw if len(raw) == nbytes else None  # fromhex skips spaces


def _id_b64(hexid, nbytes):
    h = str(hexid)
    raw = _hex_bytes(h, nbytes)
    if raw is None:
        raise ValueError("spanline: expected %d hex digits, got %r" % (nbytes * 2, h))
    return _b64(raw)


def _random_bytes(nbytes):
    while True:
        b = os.urandom(nbytes)
        if any(b):
            return b


# ----------------------------------------------------------------------------------- fields

_KIND_LETTER = {"internal": "", "server": "s", "client": "c", "producer": "p", "consumer": "o"}
_STATUS_LETTER = {"unset": "", "ok": "k", "error": "e"}


def _flags(kind, status):
    return _KIND_LETTER.get(kind, "") + _STATUS_LETTER.get(status, "")


def _attr_field(prefix, a):
    key = a.get("key")
    text, cut = _parts(key)
    if text == "" and not cut:
        key = "_"  # keys are never empty
    out = " " + prefix + escape_string(key, CLASS_KEY, MAX_KEY)
    t, v = a.get("type"), a.get("value")
    if t == "int":
        return out + "#" + _int_text(v)
    if t == "float":
        return out + "~" + format_float(v)
    if t == "bool":
        return out + ("!t" if v is True or v in ("t", "true") else "!f")
    return out + "=" + escape_string(v, CLASS_VALUE, MAX_VALUE)


def _special(letter, value):
    return " *" + letter + "=" + escape_string(value, CLASS_VALUE, MAX_VALUE)


class _FieldWriter:
    """Attribute, link and event fields of one span within a byte budget and the count limits;
    whatever does not fit is dropped and counted."""

    def __init__(self, budget, dropped=None):
        self.budget = budget
        self.used = 0
        self.parts = []
        self.n_attrs = self.n_links = self.n_events = 0
        self.target = None  # attributes on the current event/link; None when it was dropped
        d = dropped or {}
        self.da = int(d.get("attributes") or 0)
        self.de = int(d.get("events") or 0)
        self.dl = int(d.get("links") or 0)

    def _add(self, field):
        n = len(field.encode("utf-8"))
        if self.used + n > self.budget:
            return False
        self.used += n
        self.parts.append(field)
        return True

    def attr(self, a):
        if self.n_attrs >= MAX_ATTRIBUTES or not self._add(_attr_field("", a)):
            self.da += 1
        else:
            self.n_attrs += 1

    def link(self, l):
        field = " ^" + _id_b64(l["trace_id"], 16) + _id_b64(l["span_id"], 8)
        if self.n_links >= MAX_LINKS or not self._add(field):
            self.dl += 1
            self.target = None
            return False
        self.n_links += 1
        self.target = 0
        return True

    def event(self, e):
        field = " @" + _int_text(e.get("offset_us") or 0) + "=" + escape_string(e.get("name"), CLASS_VALUE, MAX_NAME)
        if self.n_events >= MAX_EVENTS or not self._add(field):
            self.de += 1
            self.target = None
            return False
        self.n_events += 1
        self.target = 0
        return True

    def target_attr(self, a):
        if self.target is None:
            return  # the event or link was dropped, and its attributes with it
        if self.target >= MAX_ATTRIBUTES or not self._add(_attr_field("", a)):
            self.da += 1
        else:
            self.target += 1

    def add_span(self, span):
        for a in span.get("attributes") or ():
            self.attr(a)
        for l in span.get("links") or ():
            if self.link(l):
                for a in l.get("attributes") or ():
                    self.target_attr(a)
        for e in span.get("events") or ():
            if self.event(e):
                for a in e.get("attributes") or ():
                    self.target_attr(a)
        return self

    def text(self):
        return "".join(self.parts)

    def counters(self):
        out = ""
        if self.da > 0:
            out += " *a#%d" % self.da
        if self.de > 0:
            out += " *e#%d" % self.de
        if self.dl > 0:
            out += " *l#%d" % self.dl
        return out


# ----------------------------------------------------------------------------------- records

def encode_span(span):
    """One span record (FORMAT.md §3) from the conformance span model, without newline."""
    parent = span.get("parent_span_id")
    head = (PREFIX + _id_b64(span["trace_id"], 16) + _id_b64(span["span_id"], 8)
            + (_id_b64(parent, 8) if parent else "")
            + " " + _uint_text(span.get("start_us", 0)) + " " + _uint_text(span.get("duration_us", 0))
            + _flags(span.get("kind"), span.get("status"))
            + " " + escape_string(span.get("name"), CLASS_NAME, MAX_NAME))
    tail = ""
    if span.get("status_message") is not None:
        tail += _special("m", span["status_message"])
    if span.get("request_id") is not None:
        tail += _special("r", span["request_id"])
    if span.get("service") is not None:
        tail += _special("s", span["service"])
    for a in span.get("resource") or ():
        tail += _attr_field("+", a)
    budget = MAX_LINE - RESERVE - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    f = _FieldWriter(budget, span.get("dropped")).add_span(span)
    return head + f.text() + tail + f.counters() + ";"


def encode_open(span):
    """The open record (FORMAT.md §3, "Open records") announcing a span when it starts: flag ``u``,
    duration 0, the kind letter, and no fields besides ``*r=``, ``*s=`` and ``+…``."""
    parent = span.get("parent_span_id")
    line = (PREFIX + _id_b64(span["trace_id"], 16) + _id_b64(span["span_id"], 8)
            + (_id_b64(parent, 8) if parent else "")
            + " " + _uint_text(span.get("start_us", 0)) + " 0" + _KIND_LETTER.get(span.get("kind"), "") + "u"
            + " " + escape_string(span.get("name"), CLASS_NAME, MAX_NAME))
    if span.get("request_id") is not None:
        line += _special("r", span["request_id"])
    if span.get("service") is not None:
        line += _special("s", span["service"])
    for a in span.get("resource") or ():
        line += _attr_field("+", a)
    return line + ";"


class _BatchBuilder:
    """Batch record (FORMAT.md §4): header, then entries with `"` dittos."""

    def __init__(self, first):
        self.trace_id = str(first["trace_id"]).lower()
        self.base = int(first.get("start_us", 0))
        h = PREFIX + "+" + _id_b64(first["trace_id"], 16) + " " + _uint_text(self.base)
        if first.get("request_id") is not None:
            h += _special("r", first["request_id"])
        if first.get("service") is not None:
            h += _special("s", first["service"])
        for a in first.get("resource") or ():
            h += _attr_field("+", a)
        self.parts = [h]
        self.nbytes = self.header_bytes = len(h.encode("utf-8"))
        self.count = 0
        self.prev_parent = self.prev_name = self.prev_fields = None

    def push(self, span):
        """Adds a span; False (batch unchanged) when full or the line would pass MAX_LINE."""
        if self.count >= MAX_BATCH_SPANS:
            return False
        if str(span["trace_id"]).lower() != self.trace_id:
            raise ValueError("spanline: batch spans must share one trace id")
        parent = _id_b64(span["parent_span_id"], 8) if span.get("parent_span_id") else None
        if self.count > 0 and parent == self.prev_parent:
            ptok = '"'
        else:
            ptok = "-" if parent is None else parent
        e = (" |" + _id_b64(span["span_id"], 8) + " " + ptok + " " + str(int(span.get("start_us", 0)) - self.base)
             + " " + _uint_text(span.get("duration_us", 0)) + _flags(span.get("kind"), span.get("status")) + " ")
        name = escape_string(span.get("name"), CLASS_NAME, MAX_NAME)
        e += '"' if self.count > 0 and name == self.prev_name else name
        m = _special("m", span["status_message"]) if span.get("status_message") is not None else ""
        # The budget is that of an empty batch, so a span never loses fields to its position in
        # the batch: when it does not fit here it starts the next batch.
        budget = MAX_LINE - RESERVE - self.header_bytes - len(e.encode("utf-8")) - len(m.encode("utf-8"))
        f = _FieldWriter(budget, span.get("dropped")).add_span(span)
        fields = f.text() + m + f.counters()
        entry = e + (' "' if self.count > 0 and fields and fields == self.prev_fields else fields)
        n = len(entry.encode("utf-8"))
        if self.count > 0 and self.nbytes + n + 1 > MAX_LINE:
            return False
        self.parts.append(entry)
        self.nbytes += n
        self.count += 1
        self.prev_parent, self.prev_name, self.prev_fields = parent, name, fields
        return True

    def line(self):
        return "".join(self.parts) + ";"


def encode_batches(spans):
    """Spans of one trace as batch records (at most 64 spans and 8192 bytes each), no newlines."""
    lines, b = [], None
    for s in spans:
        if b is None:
            b = _BatchBuilder(s)
        if not b.push(s):
            lines.append(b.line())
            b = _BatchBuilder(s)
            b.push(s)
    if b is not None and b.count:
        lines.append(b.line())
    return lines


def encode_batch(spans):
    """Spans of one trace as one batch record; ValueError when they need more than one."""
    if not spans:
        raise ValueError("spanline: empty batch")
    lines = encode_batches(spans)
    if len(lines) != 1:
        raise ValueError("spanline: spans need %d batch records" % len(lines))
    return lines[0]


# ----------------------------------------------------------------------------------- emitter

_KIND_NAMES = {
    "internal": "internal", "server": "server", "client": "client", "producer": "producer",
    "consumer": "consumer", "rpc.server": "server", "rpc.client": "client",
}


def _kind_name(k):
    n = _KIND_NAMES.get(k) if type(k) is str else None
    return n if n is not None else (_KIND_NAMES.get(str(k).lower()) if k is not None else None)


def _plain(value):
    """An attribute value as str, int (64-bit), float or bool: what _typed_attr makes of it."""
    t = type(value)
    if t is str or t is bool or t is float:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        n = int(value)
        return n if I64_MIN <= n <= I64_MAX else str(n)
    if isinstance(value, float):
        return float(value)
    return _typed_attr("", value)["value"]


_KEYS = {}  # key -> escaped text; keys repeat (bounded)
_NAMES = {}  # span name -> escaped text (bounded)


def _key_text(k):
    t = _KEYS.get(k)
    if t is None:
        t = escape_string(k, CLASS_KEY, MAX_KEY) if k else "_"
        if len(_KEYS) < 4096 and type(k) is str:
            _KEYS[k] = t
    return t


def _name_text(n):
    t = _NAMES.get(n)
    if t is None:
        t = escape_string(n, CLASS_NAME, MAX_NAME)
        if len(_NAMES) < 4096 and type(n) is str:
            _NAMES[n] = t
    return t


def _field(k, v):
    """One attribute field (with its leading space), as _attr_field(_typed_attr(k, v)) writes it."""
    t = type(v)
    if t is str:
        return " " + _key_text(k) + "=" + escape_string(v)
    if t is bool:
        return " " + _key_text(k) + ("!t" if v else "!f")
    if t is int and I64_MIN <= v <= I64_MAX:
        return " " + _key_text(k) + "#" + str(v)
    if t is float:
        return " " + _key_text(k) + "~" + format_float(v)
    return _attr_field("", _typed_attr(k, v))


def _typed_attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        if I64_MIN <= value <= I64_MAX:
            return {"key": key, "type": "int", "value": str(value)}
        return {"key": key, "type": "string", "value": str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if isinstance(value, (bytes, bytearray)):
        return {"key": key, "type": "string", "value": bytes(value).decode("utf-8", "replace")}
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a tag must never break the caller
        text = object.__repr__(value)
    return {"key": key, "type": "string", "value": text}


class SpanContext:
    """Trace id and span id as lowercase hex."""

    __slots__ = ("trace_id", "span_id", "_b64")

    def __init__(self, trace_id, span_id):
        self.trace_id = trace_id
        self.span_id = span_id
        self._b64 = None  # (trace, span) base64url once checked canonical; False when not

    @property
    def baggage(self):  # OpenTracing SpanContext surface
        return {}

    def __repr__(self):
        return "SpanContext(%s, %s)" % (self.trace_id, self.span_id)


def _canonical_b64(c):
    """(trace, span) base64url of a SpanContext whose ids are lowercase hex of the right length
    and not zero (cached on it), else False."""
    b = c._b64
    if b is None:
        t, s = c.trace_id, c.span_id
        b = False
        if type(t) is str and type(s) is str and t == t.lower() and s == s.lower():
            tb, sb = _hex_bytes(t, 16), _hex_bytes(s, 8)
            if tb and sb and any(tb) and any(sb):
                b = (_b64(tb), _b64(sb))
        c._b64 = b
    return b


def _to_context(x):
    """A Span, a SpanContext, or anything with trace_id/span_id (hex str or int)."""
    if x is None:
        return None
    if type(x) is SpanContext and _canonical_b64(x):
        return x
    if isinstance(x, Span):
        return x.context
    ctx = getattr(x, "context", None)
    if ctx is not None and not hasattr(x, "trace_id"):
        x = ctx
    t, s = getattr(x, "trace_id", None), getattr(x, "span_id", None)
    if isinstance(x, dict):
        t, s = x.get("trace_id"), x.get("span_id")
    if isinstance(t, int):
        t = "%032x" % t
    if isinstance(s, int):
        s = "%016x" % s
    t, s = str(t or "").lower(), str(s or "").lower()
    if len(t) == 16:
        t = t.rjust(32, "0")  # 64-bit trace ids (B3, Jaeger)
    c = SpanContext(t, s)
    return c if _canonical_b64(c) else None


class Span:
    def __init__(self, tracer, name, child_of=None, kind="internal", follows_from=None, tags=None,
                 start_time=None, request_id=None, announce=False):
        self._tracer = tracer
        self._name = "" if name is None else str(name)
        parent = _to_context(child_of)
        sid = _random_bytes(8)
        self._span_id = sid.hex()
        if parent:
            self._trace_id = parent.trace_id
            self._parent_id = parent.span_id
            tb64, pb64 = parent._b64
        else:
            tid = _random_bytes(16)
            self._trace_id = tid.hex()
            self._parent_id = None
            tb64, pb64 = _b64(tid), ""
        sb64 = _b64(sid)
        self._ids = tb64 + sb64 + pb64  # the ids token of the line
        self._context = SpanContext(self._trace_id, self._span_id)
        self._context._b64 = (tb64, sb64)
        self._kind = _kind_name(kind) or "internal"
        self._status = "unset"
        self._status_message = None
        self._attrs = {}
        self._dropped_attrs = 0
        self._events = []
        self._dropped_events = 0
        self._links = []
        self._dropped_links = 0
        self._request_id = request_id if request_id is not None else tracer.request_id
        self._finished = False
        if start_time is not None:  # OpenTracing: seconds since the epoch
            self._start_us = int(round(float(start_time) * 1e6))
            self._start_perf = None
        else:
            self._start_us = time.time_ns() // 1000
            self._start_perf = time.perf_counter_ns()
        if follows_from is not None:
            for f in follows_from if isinstance(follows_from, (list, tuple)) else (follows_from,):
                self.add_link(f)
        for k, v in (tags or {}).items():
            self.set_tag(k, v)
        self._announced = False
        if announce:
            self.announce()

    def announce(self):
        """Writes an open record for this span now (also in buffered mode), so that a process that
        dies before finish() (a Lambda timeout, a crash) still leaves the span in the trace, as an
        error ending with the invocation. Once per span; nothing after finish(). Never raises."""
        if self._finished or self._announced:
            return self
        self._announced = True
        try:
            self._tracer._write(encode_open(self.to_model(0)) + "\n")
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)
        return self

    @property
    def context(self):
        return self._context

    @property
    def tracer(self):
        return self._tracer

    def set_operation_name(self, name):
        self._name = str(name)
        return self

    def set_tag(self, key, value):
        """str → string, int → int, float → float, bool → bool; ``error`` and ``span.kind`` are
        taken as the status and kind."""
        try:
            k = str(key)
            if k == "error":
                if value is True or value == "true":
                    self._status = "error"
                elif self._status == "error":
                    self._status = "unset"
                return self
            if k == "span.kind":
                kind = _kind_name(value)
                if kind:
                    self._kind = kind
                return self
            if k not in self._attrs and len(self._attrs) >= MAX_ATTRIBUTES:
                self._dropped_attrs += 1
            else:
                self._attrs[k] = _plain(value)
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)
        return self

    def _offset_us(self, timestamp):
        if timestamp is not None:
            return int(round(float(timestamp) * 1e6)) - self._start_us
        if self._start_perf is not None:
            return (time.perf_counter_ns() - self._start_perf) // 1000
        return time.time_ns() // 1000 - self._start_us

    def _add_event(self, name, fields, timestamp=None):
        if len(self._events) >= MAX_EVENTS:
            self._dropped_events += 1
            return
        attrs = [_typed_attr(str(k), v) for k, v in (fields or {}).items()]
        self._events.append({"offset_us": self._offset_us(timestamp), "name": str(name), "attributes": attrs})

    def log_kv(self, key_values, timestamp=None):
        """OpenTracing log_kv: the ``event`` field (a str) names the event, default "log"."""
        try:
            fields = dict(key_values or {})
            name = "log"
            if isinstance(fields.get("event"), str):
                name = fields.pop("event")
            self._add_event(name, fields, timestamp)
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)
        return self

    log = log_kv

    def log_event(self, name, payload=None):
        try:
            if payload is None:
                fields = {}
            elif isinstance(payload, dict):
                fields = payload
            else:
                fields = {"payload": payload}
            self._add_event(name, fields)
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)
        return self

    def add_link(self, ctx, attributes=None):
        """A link (OpenTracing follows_from) to another span's context."""
        try:
            c = _to_context(ctx)
            if c is None:
                return self
            if len(self._links) >= MAX_LINKS:
                self._dropped_links += 1
                return self
            attrs = [_typed_attr(str(k), v) for k, v in (attributes or {}).items()]
            self._links.append({"trace_id": c.trace_id, "span_id": c.span_id, "attributes": attrs})
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)
        return self

    def set_error(self, message=None):
        """Error status, with a message (str or exception) when given."""
        self._status = "error"
        if message is not None:
            try:
                self._status_message = str(message)
            except Exception:  # noqa: BLE001
                self._status_message = type(message).__name__
        return self

    def set_ok(self):
        self._status = "ok"
        return self

    def to_model(self, duration_us):
        """The span in the conformance model (what finish() encodes)."""
        return {
            "trace_id": self._trace_id, "span_id": self._span_id, "parent_span_id": self._parent_id,
            "start_us": self._start_us, "duration_us": duration_us, "name": self._name,
            "kind": self._kind, "status": self._status, "status_message": self._status_message,
            "service": self._tracer.service,
            "request_id": None if self._request_id is None else str(self._request_id),
            "attributes": [_typed_attr(k, v) for k, v in self._attrs.items()], "events": self._events, "links": self._links,
            "resource": self._tracer.resource,
            "dropped": {"attributes": self._dropped_attrs, "events": self._dropped_events,
                        "links": self._dropped_links},
        }

    def _fast_line(self, dur):
        """The line (with newline) that ``encode_span(self.to_model(dur))`` makes, built directly;
        None when the span has events, links, drops or is long enough for the limits to matter."""
        if self._events or self._links or self._dropped_attrs:
            return None
        start = self._start_us
        parts = [PREFIX, self._ids, " ", str(start) if start >= 0 else "0", " ", str(dur),
                 _KIND_LETTER.get(self._kind, "") + _STATUS_LETTER.get(self._status, ""), " ",
                 _name_text(self._name)]
        for k, v in self._attrs.items():
            parts.append(_field(k, v))
        if self._status_message is not None:
            parts.append(_special("m", self._status_message))
        parts.append(self._tracer._tail(self._request_id))
        line = "".join(parts)
        if len(line) * 4 > MAX_LINE - RESERVE and len(line.encode("utf-8")) > MAX_LINE - RESERVE:
            return None
        return line + ";\n"

    def finish(self, finish_time=None):
        """Writes the span line once. finish_time: seconds since the epoch. Never raises."""
        if self._finished:
            return
        self._finished = True
        try:
            if finish_time is not None:
                dur = int(round(float(finish_time) * 1e6)) - self._start_us
            elif self._start_perf is not None:
                dur = (time.perf_counter_ns() - self._start_perf) // 1000
            else:
                dur = time.time_ns() // 1000 - self._start_us
            dur = max(0, dur)
            line = None if self._tracer.buffered else self._fast_line(dur)
            if line is not None:
                self._tracer._write(line)
            else:
                self._tracer._emit(self.to_model(dur))
        except Exception as e:  # noqa: BLE001
            self._tracer._fail(e)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            self.set_error("%s: %s" % (exc_type.__name__, exc))
        self.finish()
        return False


_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def unquote(text):
    """Percent-decoding as urllib.parse.unquote (UTF-8, invalid sequences replaced), without
    importing urllib (milliseconds of a cold start)."""
    if "%" not in text:
        return text
    data = text.encode("utf-8")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x25 and i + 2 < n and data[i + 1] in _HEXDIGITS and data[i + 2] in _HEXDIGITS:
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "replace")


def parse_resource_attributes(text):
    """OTEL_RESOURCE_ATTRIBUTES (``k1=v1,k2=v2``, percent-encoded) as string attributes."""
    out = []
    if not text:
        return out
    for item in (text or "").split(","):
        key, eq, value = item.partition("=")
        key = unquote(key.strip())
        if eq and key:
            out.append({"key": key, "type": "string", "value": unquote(value.strip())})
    return out


class Tracer:
    """Writes one span line per finished span to ``sys.stdout``.

    service: defaults to ``OTEL_SERVICE_NAME``, else none (the converter derives it from the log
    group). resource: dict or attribute list, default parsed from ``OTEL_RESOURCE_ATTRIBUTES``.
    request_id: the Lambda request id stamped on spans (``*r=``; see ``set_request_id``).
    buffered: collect spans per trace and write batch records on ``flush()``.
    """

    def __init__(self, service=None, resource=None, request_id=None, buffered=False):
        self.service = service if service is not None else (os.environ.get("OTEL_SERVICE_NAME") or None)
        if resource is None:
            self.resource = parse_resource_attributes(os.environ.get("OTEL_RESOURCE_ATTRIBUTES"))
        elif isinstance(resource, dict):
            self.resource = [_typed_attr(str(k), v) for k, v in resource.items()]
        else:
            self.resource = list(resource)
        self.request_id = request_id
        self.buffered = buffered
        self.failures = 0
        self._warned = False
        self._lock = allocate_lock()
        self._tail_cache = None
        self._buffer = {}

    def start_span(self, operation_name, child_of=None, kind="internal", follows_from=None, tags=None,
                   start_time=None, request_id=None, announce=False):
        return Span(self, operation_name, child_of=child_of, kind=kind, follows_from=follows_from,
                    tags=tags, start_time=start_time, request_id=request_id, announce=announce)

    def set_request_id(self, request_id):
        """The Lambda request id (``context.aws_request_id``) for spans started from now on."""
        self.request_id = None if request_id is None else str(request_id)

    def _tail(self, request_id):
        """`` *r=… *s=… +…`` of a span record, cached while the request id, service and resource
        stay the same."""
        rid = None if request_id is None else str(request_id)
        key = (rid, self.service, id(self.resource), len(self.resource))
        c = self._tail_cache
        if c is not None and c[0] == key:
            return c[1]
        t = ""
        if rid is not None:
            t += _special("r", rid)
        if self.service is not None:
            t += _special("s", self.service)
        for a in self.resource:
            t += _attr_field("+", a)
        self._tail_cache = (key, t)
        return t

    def _emit(self, model):
        if not self.buffered:
            self._write(encode_span(model) + "\n")
            return
        with self._lock:
            spans = self._buffer.setdefault(model["trace_id"], [])
            spans.append(model)
            full = len(spans) >= MAX_BATCH_SPANS
        if full:
            self._flush_trace(model["trace_id"])

    def _flush_trace(self, trace_id):
        with self._lock:
            spans = self._buffer.pop(trace_id, None)
        if not spans:
            return
        try:
            for line in encode_batches(spans):
                self._write(line + "\n")
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def flush(self):
        """Writes the buffered spans as batch records (buffered mode). Never raises."""
        with self._lock:
            traces = list(self._buffer)
        for t in traces:
            self._flush_trace(t)

    def _write(self, text):
        try:
            out = sys.stdout
            out.write(text)
            out.flush()
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _fail(self, err):
        self.failures += 1
        if self._warned:
            return
        self._warned = True
        try:
            sys.stderr.write("spanline: dropping span output (%s); further failures are only counted\n" % (err,))
        except Exception:  # noqa: BLE001
            pass
