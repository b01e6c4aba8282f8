"""OpenTelemetry bridge: spans made with the OpenTelemetry API (and auto-instrumentation) print
span lines, with no other change to the code.

* ``SpanlineSpanProcessor``: a synchronous ``SpanProcessor`` that encodes and writes the line in
  ``on_end``. Nothing is buffered, so nothing waits for a flush that a frozen or timed-out Lambda
  sandbox never runs. This is the one to use::

      from opentelemetry import trace
      from opentelemetry.sdk.trace import TracerProvider
      from spanline.otel import SpanlineSpanProcessor

      provider = TracerProvider()
      provider.add_span_processor(SpanlineSpanProcessor())
      trace.set_tracer_provider(provider)

* ``SpanlineSpanExporter``: a ``SpanExporter`` for pipelines that want an exporter (under a
  ``SimpleSpanProcessor`` it behaves like the processor; under a ``BatchSpanProcessor`` lines wait
  for the batch).

Mapping (the converter maps each back to the same OTLP field): trace, span and parent ids; start
and end (ns, written in µs); kind; status code and, for errors, its description (``*m=``);
attributes (str, int, float, bool; a sequence is written as a string holding its JSON array,
because the format has no arrays; ints beyond 64 bits as strings); events (name, time as an
offset from the start, attributes); links (context and attributes); the Resource: ``service.name``
as the service (``*s=``; the SDK's ``unknown_service…`` default is left out so that the converter
names the service after the log group) and the other resource attributes as ``+`` fields
(``telemetry.sdk.*`` left out by default: the same bytes on every line, for nothing); the counts
the SDK dropped (``*a#``, ``*e#``, ``*l#``).

The Lambda request id (``*r=``): ``faas.invocation_id`` on a server or consumer span (the
function's entry span, as the AWS Lambda instrumentation records ``context.aws_request_id``) is
the span's own request id; it is written as ``*r=`` instead of an attribute, and the spans
started under that entry span in this process carry it too. ``set_request_id()`` sets it by hand,
like ``spanline.Tracer.set_request_id``. ``aws.request_id`` stays an attribute: in the AWS SDK
conventions it names the request a client span *called*, which is how the converter reads it.
"""

import json
import sys

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from . import (I64_MAX, I64_MIN, MAX_ATTRIBUTES, MAX_LINE, PREFIX, RESERVE, _attr_field, _b64, _field, _name_text,
               _special, encode_span)

__all__ = ["SpanlineSpanProcessor", "SpanlineSpanExporter", "span_to_model", "encode_otel_span"]

_KIND = {
    SpanKind.INTERNAL: "internal", SpanKind.SERVER: "server", SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer", SpanKind.CONSUMER: "consumer",
}
_STATUS = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
_ENTRY_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_KIND_LETTER = {SpanKind.INTERNAL: "", SpanKind.SERVER: "s", SpanKind.CLIENT: "c", SpanKind.PRODUCER: "p",
                SpanKind.CONSUMER: "o"}
_STATUS_LETTER = {StatusCode.UNSET: "", StatusCode.OK: "k", StatusCode.ERROR: "e"}
REQUEST_ID_KEY = "faas.invocation_id"
DEFAULT_SKIP_RESOURCE_PREFIXES = ("telemetry.sdk.",)


def _attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        if I64_MIN <= value <= I64_MAX:
            return {"key": key, "type": "int", "value": value}
        return {"key": key, "type": "string", "value": str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if isinstance(value, (list, tuple)):
        try:
            text = json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(list(value))
        return {"key": key, "type": "string", "value": text}
    if isinstance(value, (bytes, bytearray)):
        return {"key": key, "type": "string", "value": bytes(value).decode("utf-8", "replace")}
    return {"key": key, "type": "string", "value": str(value)}


def _attrs(mapping, skip=None):
    if not mapping:
        return []
    return [_attr(k, v) for k, v in mapping.items() if k != skip]


class _ResourceCache:
    """The service and resource fields of the last Resource seen (Resources are immutable and a
    provider has one)."""

    __slots__ = ("last", "skip")

    def __init__(self, skip_prefixes):
        self.last = (None, None, [])  # (resource, service, attributes): one tuple, swapped whole
        self.skip = tuple(skip_prefixes or ())

    def get(self, resource):
        last = self.last
        if resource is not last[0]:
            attrs = dict(getattr(resource, "attributes", None) or {})
            service = attrs.pop("service.name", None)
            if service is not None and str(service).startswith("unknown_service"):
                service = None
            last = self.last = (resource, None if service is None else str(service),
                                [_attr(k, v) for k, v in attrs.items()
                                 if not (self.skip and str(k).startswith(self.skip))])
        return last[1], last[2]


def span_to_model(span, request_id=None, service=None, resource=None):
    """The conformance span model of a ReadableSpan. ``request_id``: the invocation's request id
    when the span does not carry its own (``faas.invocation_id`` on a server or consumer span).
    ``service``/``resource``: from the span's Resource when None."""
    ctx = span.context
    parent = span.parent
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    start_us = start_ns // 1000
    kind = span.kind
    attributes = span.attributes
    skip = None
    if kind in _ENTRY_KINDS and attributes:
        own = attributes.get(REQUEST_ID_KEY)
        if isinstance(own, str) and own:
            request_id, skip = own, REQUEST_ID_KEY
    if service is None and resource is None:
        service, resource = _ResourceCache(DEFAULT_SKIP_RESOURCE_PREFIXES).get(span.resource)
    status = span.status
    code = _STATUS.get(status.status_code, "unset")
    events = []
    for e in span.events or ():
        events.append({"offset_us": e.timestamp // 1000 - start_us, "name": e.name,
                       "attributes": _attrs(e.attributes)})
    links = []
    for l in span.links or ():
        lc = l.context
        links.append({"trace_id": "%032x" % lc.trace_id, "span_id": "%016x" % lc.span_id,
                      "attributes": _attrs(l.attributes)})
    return {
        "trace_id": "%032x" % ctx.trace_id,
        "span_id": "%016x" % ctx.span_id,
        "parent_span_id": None if parent is None else "%016x" % parent.span_id,
        "start_us": start_us,
        "duration_us": max(0, end_ns // 1000 - start_us),
        "name": span.name,
        "kind": _KIND.get(kind, "internal"),
        "status": code,
        "status_message": status.description if code == "error" and status.description else None,
        "service": service,
        "request_id": request_id,
        "attributes": _attrs(attributes, skip),
        "events": events,
        "links": links,
        "resource": resource or [],
        "dropped": {"attributes": getattr(span, "dropped_attributes", 0) or 0,
                    "events": getattr(span, "dropped_events", 0) or 0,
                    "links": getattr(span, "dropped_links", 0) or 0},
    }


def encode_otel_span(span, request_id=None):
    """The span line (without newline) of a ReadableSpan."""
    return encode_span(span_to_model(span, request_id))


class _Writer:
    def __init__(self, skip_resource_prefixes, request_id):
        self.request_id = request_id
        self.failures = 0
        self._warned = False
        self._resources = _ResourceCache(skip_resource_prefixes)
        self._tail = (None, "")  # ((resource, request id), text): one tuple, swapped whole
        self._trace = (None, "")

    def _direct(self, span, request_id):
        """The line (with newline) that encoding span_to_model(span) makes, built directly; None
        when the span has events, links, drops or many attributes, or is near the line limit."""
        if span.events or span.links:
            return None
        attributes = span.attributes
        if attributes and len(attributes) > MAX_ATTRIBUTES:
            return None
        if getattr(span, "dropped_attributes", 0) or getattr(span, "dropped_events", 0) or \
                getattr(span, "dropped_links", 0):
            return None
        kind = span.kind
        skip = None
        if kind in _ENTRY_KINDS and attributes:
            own = attributes.get(REQUEST_ID_KEY)
            if isinstance(own, str) and own:
                request_id, skip = own, REQUEST_ID_KEY
        ctx = span.context
        tid = ctx.trace_id
        tr = self._trace
        if tr[0] != tid:
            tr = self._trace = (tid, _b64(tid.to_bytes(16, "big")))
        parent = span.parent
        start_ns = span.start_time or 0
        end_ns = span.end_time or start_ns
        start_us = start_ns // 1000
        dur = end_ns // 1000 - start_us
        status = span.status
        code = status.status_code
        parts = [PREFIX, tr[1], _b64(ctx.span_id.to_bytes(8, "big")),
                 "" if parent is None else _b64(parent.span_id.to_bytes(8, "big")),
                 " ", str(start_us), " ", str(dur) if dur > 0 else "0",
                 _KIND_LETTER.get(kind, ""), _STATUS_LETTER.get(code, ""), " ",
                 _name_text(span.name)]
        if attributes:
            for k, v in attributes.items():
                if k != skip:
                    parts.append(_attr_field("", _attr(k, v)) if type(v) is tuple or type(v) is list
                                 else _field(k, v))
        if code == StatusCode.ERROR and status.description:
            parts.append(_special("m", status.description))
        resource = span.resource
        key = (resource, request_id)
        tail = self._tail
        if tail[0] != key:
            service, res = self._resources.get(resource)
            t = "" if request_id is None else _special("r", request_id)
            if service is not None:
                t += _special("s", service)
            for a in res:
                t += _attr_field("+", a)
            tail = self._tail = (key, t)
        parts.append(tail[1])
        line = "".join(parts)
        if len(line) * 4 > MAX_LINE - RESERVE and len(line.encode("utf-8")) > MAX_LINE - RESERVE:
            return None
        return line + ";\n"

    def set_request_id(self, request_id):
        """The Lambda request id (``context.aws_request_id``) for spans that do not carry one."""
        self.request_id = None if request_id is None else str(request_id)

    def _line(self, span, request_id):
        line = self._direct(span, request_id)
        if line is not None:
            return line
        service, resource = self._resources.get(span.resource)
        return encode_span(span_to_model(span, request_id, service, resource)) + "\n"

    def _write(self, text):
        out = sys.stdout
        out.write(text)
        out.flush()

    def _fail(self, err):
        self.failures += 1
        if self._warned:
            return
        self._warned = True
        try:
            sys.stderr.write("spanline: dropping span output (%s); further failures are only counted\n" % (err,))
        except Exception:  # noqa: BLE001
            pass


class SpanlineSpanProcessor(_Writer, SpanProcessor):
    """Writes one span line to ``sys.stdout`` when each span ends, synchronously. Never raises.

    skip_resource_prefixes: resource attribute keys left out of the lines (default
    ``telemetry.sdk.``). request_id: the Lambda request id for spans outside an entry span that
    carries ``faas.invocation_id`` (see ``set_request_id``).
    """

    def __init__(self, skip_resource_prefixes=DEFAULT_SKIP_RESOURCE_PREFIXES, request_id=None):
        _Writer.__init__(self, skip_resource_prefixes, request_id)
        self._live = {}  # span id -> (parent span id, span): local spans not ended yet

    def on_start(self, span, parent_context=None):
        try:
            parent = span.parent
            live = self._live
            if len(live) > 10000:  # spans that never end must not grow this forever
                live.clear()
            # one dict store, atomic under the GIL (and in free-threaded builds' dicts)
            live[span.context.span_id] = (None if parent is None else parent.span_id, span)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _entry_request_id(self, span):
        """``faas.invocation_id`` of the nearest local entry ancestor that has one."""
        parent = span.parent
        pid = None if parent is None else parent.span_id
        live = self._live
        for _ in range(64):
            item = live.get(pid) if pid is not None else None
            if item is None:
                return None
            pid, anc = item
            if anc.kind in _ENTRY_KINDS:
                attrs = anc.attributes
                own = attrs.get(REQUEST_ID_KEY) if attrs else None
                if isinstance(own, str) and own:
                    return own
        return None

    def on_end(self, span):
        try:
            live = self._live
            live.pop(span.context.span_id, None)
            rid = self._entry_request_id(span) if live else None
            self._write(self._line(span, rid or self.request_id))
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def shutdown(self):
        self._live.clear()

    def force_flush(self, timeout_millis=30000):
        return True


class SpanlineSpanExporter(_Writer, SpanExporter):
    """Writes one span line per exported span to ``sys.stdout``. The request id of a span is its
    own ``faas.invocation_id`` (server or consumer span), else the one given to
    ``set_request_id``."""

    def __init__(self, skip_resource_prefixes=DEFAULT_SKIP_RESOURCE_PREFIXES, request_id=None):
        _Writer.__init__(self, skip_resource_prefixes, request_id)
        self._shutdown = False

    def export(self, spans):
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            text = "".join(self._line(s, self.request_id) for s in spans)
            if text:
                self._write(text)
            return SpanExportResult.SUCCESS
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return SpanExportResult.FAILURE

    def shutdown(self):
        self._shutdown = True

    def force_flush(self, timeout_millis=30000):
        return True
