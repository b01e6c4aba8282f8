"""The OpenTracing tracer (spanline.opentracing) on the ``opentracing`` package.

Run (with the package installed with the opentracing extra): python -m unittest discover -s emitters/python/tests -v
"""

import io
import unittest
from contextlib import redirect_stdout

import opentracing
from opentracing import Format, UnsupportedFormatException, follows_from

from spanline.opentracing import Span, SpanContext, Tracer
from support import attr_dict, convert, decode_span_line, otlp_spans


class OpenTracingTracer(unittest.TestCase):
    def setUp(self):
        self.tracer = Tracer(service="orders", resource={"cloud.region": "eu-west-1"}, request_id="req-1")

    def run_story(self):
        t = self.tracer
        parent = t.extract(Format.HTTP_HEADERS, {"TraceParent": "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"})
        out = io.StringIO()
        with redirect_stdout(out):
            with t.start_active_span("handler", child_of=parent, tags={"span.kind": "server"}) as scope:
                self.assertIsInstance(scope.span, Span)
                self.assertIs(t.active_span, scope.span)
                earlier = t.start_span("earlier", ignore_active_span=True)
                earlier.finish()
                try:
                    with t.start_active_span("lookup", references=[follows_from(earlier.context)]) as inner:
                        inner.span.set_tag("db.rows", 3).set_tag("cache.hit", False)
                        inner.span.log_kv({"event": "query", "sql.len": 42})
                        raise KeyError("item")
                except KeyError:
                    pass
                headers = {}
                t.inject(scope.span.context, Format.TEXT_MAP, headers)
        return out.getvalue(), headers, scope.span, earlier

    def test_spans_finish_as_span_lines(self):
        text, headers, entry, earlier = self.run_story()
        lines = [decode_span_line(l) for l in text.splitlines()]
        self.assertEqual([l["name"] for l in lines], ["earlier", "lookup", "handler"])
        earlier_l, lookup, handler = lines
        self.assertEqual(handler["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
        self.assertEqual(handler["parent_span_id"], "53995c3f42cd8ad8")
        self.assertEqual(handler["kind"], "server")
        self.assertEqual(handler["span_id"], entry.context.span_id)
        self.assertIsNone(earlier_l["parent_span_id"])  # ignore_active_span
        self.assertEqual(lookup["parent_span_id"], handler["span_id"])  # the active span
        self.assertEqual(lookup["status"], "error")  # the exception through the scope
        self.assertEqual(lookup["attributes"], {"db.rows": 3, "cache.hit": False})
        self.assertEqual(lookup["events"][0]["name"], "query")
        self.assertEqual(lookup["events"][0]["attributes"], {"sql.len": 42})
        self.assertEqual(lookup["events"][1]["name"], "error")
        self.assertEqual([(k["trace_id"], k["span_id"]) for k in lookup["links"]],
                         [(earlier.context.trace_id, earlier.context.span_id)])
        for l in lines:
            self.assertEqual(l["specials"]["s"], "orders")
            self.assertEqual(l["specials"]["r"], "req-1")
            self.assertEqual(l["resource"], {"cloud.region": "eu-west-1"})
        self.assertEqual(headers, {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-%s-01" % handler["span_id"]})
        got = {s["spanId"]: s for _, s in otlp_spans(convert(text))}
        self.assertEqual(got[lookup["span_id"]]["status"]["code"], 2)
        self.assertEqual(attr_dict(got[lookup["span_id"]]["attributes"]), {"db.rows": 3, "cache.hit": False})
        self.assertEqual(got[lookup["span_id"]]["links"][0]["spanId"], earlier.context.span_id)

    def test_extract(self):
        t = self.tracer
        ctx = t.extract(Format.TEXT_MAP, {"ot-tracer-traceid": "00f067aa0ba902b7", "OT-Tracer-SpanId": "53995c3f42cd8ad8"})
        self.assertEqual((ctx.trace_id, ctx.span_id), ("0000000000000000" + "00f067aa0ba902b7", "53995c3f42cd8ad8"))
        self.assertIsInstance(ctx, opentracing.SpanContext)
        self.assertEqual(ctx.baggage, {})
        self.assertIsNone(t.extract(Format.HTTP_HEADERS, {"traceparent": "00-" + "0" * 32 + "-53995c3f42cd8ad8-01"}))
        self.assertIsNone(t.extract(Format.HTTP_HEADERS, {}))
        with self.assertRaises(UnsupportedFormatException):
            t.extract(Format.BINARY, bytearray())
        with self.assertRaises(UnsupportedFormatException):
            t.inject(SpanContext("4bf92f3577b34da6a3ce929d0e0e4736", "53995c3f42cd8ad8"), Format.BINARY, bytearray())

    def test_global_tracer_and_request_id(self):
        opentracing.set_global_tracer(self.tracer)
        try:
            self.tracer.set_request_id("req-2")
            out = io.StringIO()
            with redirect_stdout(out):
                span = opentracing.global_tracer().start_span("work", start_time=1700000000.0)
                span.set_baggage_item("k", "v")
                self.assertIsNone(span.get_baggage_item("k"))
                span.finish(finish_time=1700000000.25)
            line = decode_span_line(out.getvalue())
            self.assertEqual((line["start_us"], line["duration_us"]), (1700000000000000, 250000))
            self.assertEqual(line["specials"]["r"], "req-2")
        finally:
            opentracing.set_global_tracer(opentracing.Tracer())


if __name__ == "__main__":
    unittest.main()
