"""An OpenTracing tracer (the ``opentracing`` package, 2.x) whose spans finish as span lines.

::

    import opentracing
    from spanline.opentracing import Tracer

    opentracing.set_global_tracer(Tracer())  # service: OTEL_SERVICE_NAME, else the log group

    with opentracing.global_tracer().start_active_span("handler", tags={"span.kind": "server"}) as scope:
        scope.span.set_tag("call", 1)

References: the first ``child_of`` is the parent; ``follows_from`` references become links.
``inject``/``extract`` for ``Format.TEXT_MAP`` and ``Format.HTTP_HEADERS`` carry the W3C
``traceparent`` header (sampled flag set); ``extract`` also reads the ``ot-tracer-*`` headers of
the OpenTracing basic tracers (64- or 128-bit trace ids), any header-name case. Baggage is not
carried. ``Format.BINARY`` raises ``UnsupportedFormatException``.
"""

import re

import opentracing
from opentracing import Format, ReferenceType, UnsupportedFormatException
from opentracing import InvalidCarrierException, SpanContextCorruptedException

from . import Tracer as _NativeTracer
from . import _to_context

__all__ = ["Tracer", "Span", "SpanContext"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


class SpanContext(opentracing.SpanContext):
    """Trace id (32) and span id (16) as lowercase hex; no baggage."""

    __slots__ = ("trace_id", "span_id")

    def __init__(self, trace_id, span_id):
        self.trace_id = trace_id
        self.span_id = span_id

    @property
    def baggage(self):
        return {}

    def __repr__(self):
        return "SpanContext(%s, %s)" % (self.trace_id, self.span_id)


class Span(opentracing.Span):
    """An OpenTracing span around a native ``spanline.Span``; ``finish`` writes its line."""

    def __init__(self, tracer, native):
        self._native = native
        c = native.context
        super().__init__(tracer, SpanContext(c.trace_id, c.span_id))

    @property
    def native(self):
        """The underlying ``spanline.Span`` (``set_error``, ``add_link``, ``announce``)."""
        return self._native

    def set_operation_name(self, operation_name):
        self._native.set_operation_name(operation_name)
        return self

    def set_tag(self, key, value):
        self._native.set_tag(key, value)
        return self

    def log_kv(self, key_values, timestamp=None):
        self._native.log_kv(key_values, timestamp)
        return self

    def set_baggage_item(self, key, value):
        return self  # baggage is not carried in span lines

    def get_baggage_item(self, key):
        return None

    def finish(self, finish_time=None):
        self._native.finish(finish_time)


class Tracer(opentracing.Tracer):
    """OpenTracing tracer writing span lines to stdout.

    service, resource, request_id, buffered: as ``spanline.Tracer`` (``set_request_id`` sets the
    Lambda request id for spans started from then on; ``flush`` writes buffered spans).
    scope_manager: default ``ThreadLocalScopeManager``.
    """

    def __init__(self, service=None, resource=None, request_id=None, buffered=False, scope_manager=None):
        if scope_manager is None:
            from opentracing.scope_managers import ThreadLocalScopeManager

            scope_manager = ThreadLocalScopeManager()
        super().__init__(scope_manager=scope_manager)
        self.native = _NativeTracer(service=service, resource=resource, request_id=request_id, buffered=buffered)

    def set_request_id(self, request_id):
        self.native.set_request_id(request_id)

    def flush(self):
        self.native.flush()

    def start_active_span(self, operation_name, child_of=None, references=None, tags=None, start_time=None,
                          ignore_active_span=False, finish_on_close=True):
        span = self.start_span(operation_name, child_of=child_of, references=references, tags=tags,
                               start_time=start_time, ignore_active_span=ignore_active_span)
        return self.scope_manager.activate(span, finish_on_close)

    def start_span(self, operation_name=None, child_of=None, references=None, tags=None, start_time=None,
                   ignore_active_span=False):
        parent = child_of
        links = []
        for ref in references or ():
            ctx = ref.referenced_context
            if ref.type == ReferenceType.CHILD_OF and parent is None:
                parent = ctx
            else:
                links.append(ctx)
        if parent is None and not ignore_active_span:
            active = self.active_span
            if active is not None:
                parent = active
        if isinstance(parent, opentracing.Span):
            parent = parent.context
        native = self.native.start_span(operation_name, child_of=parent, follows_from=links, tags=tags,
                                        start_time=start_time)
        return Span(self, native)

    def inject(self, span_context, format, carrier):
        if format not in (Format.TEXT_MAP, Format.HTTP_HEADERS):
            raise UnsupportedFormatException(format)
        if not hasattr(carrier, "__setitem__"):
            raise InvalidCarrierException("carrier is not a dict-like object")
        ctx = _to_context(span_context)
        if ctx is None:
            raise SpanContextCorruptedException("not a span context")
        carrier["traceparent"] = "00-%s-%s-01" % (ctx.trace_id, ctx.span_id)

    def extract(self, format, carrier):
        if format not in (Format.TEXT_MAP, Format.HTTP_HEADERS):
            raise UnsupportedFormatException(format)
        if not hasattr(carrier, "items"):
            raise InvalidCarrierException("carrier is not a dict-like object")
        h = {str(k).lower(): str(v).strip() for k, v in carrier.items() if v is not None}
        m = _TRACEPARENT.match(h.get("traceparent", "").lower())
        if m and m.group(1) != "ff" and m.group(2).strip("0") and m.group(3).strip("0"):
            return SpanContext(m.group(2), m.group(3))
        t, s = h.get("ot-tracer-traceid", "").lower(), h.get("ot-tracer-spanid", "").lower()
        if len(t) == 16:
            t = t.rjust(32, "0")
        if _HEX32.fullmatch(t) and _HEX16.fullmatch(s) and t.strip("0") and s.strip("0"):
            return SpanContext(t, s)
        return None
