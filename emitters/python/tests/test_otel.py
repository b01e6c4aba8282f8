"""The OpenTelemetry bridge (spanline.otel): spans made with the OpenTelemetry API print span
lines that decode back to the same fields, and the converter turns them back into the same OTLP.

Run (with the package installed with the otel extra): python -m unittest discover -s emitters/python/tests -v
"""

import io
import sys
import time
import unittest
from contextlib import redirect_stderr, redirect_stdout

from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import spanline
from spanline.otel import SpanlineSpanExporter, SpanlineSpanProcessor
from support import REPO, attr_dict, convert, decode_span_line, otlp_spans

REMOTE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"}
LINKED = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))
RESOURCE = Resource({"service.name": "checkout", "cloud.region": "eu-west-1", "deployment.count": 3,
                     "telemetry.sdk.name": "opentelemetry"})
OTLP_KIND = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


def run_story(processor, resource=RESOURCE):
    """An invocation as the AWS Lambda instrumentation records it, with a client span that uses
    every field; returns (stdout text, finished ReadableSpans in end order)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-bridge")
    out = io.StringIO()
    with redirect_stdout(out):
        with tracer.start_as_current_span("handler", context=extract(REMOTE), kind=SpanKind.SERVER) as entry:
            entry.set_attribute("faas.invocation_id", "8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07")
            entry.set_attribute("faas.trigger", "http")
            with tracer.start_as_current_span("GET /orders; 100%", kind=SpanKind.CLIENT,
                                              links=[Link(LINKED, {"link.reason": "batch"})]) as child:
                child.set_attribute("http.status_code", 503)
                child.set_attribute("ratio", 0.25)
                child.set_attribute("retry", True)
                child.set_attribute("note", "two words\nand a line")
                child.set_attribute("tags", ["a", "b c"])
                child.set_attribute("aws.request_id", "c793869b-ee49-115b-a5b6-4fd21e8dedac")
                child.add_event("retry", {"attempt": 2, "backoff": 0.5})
                child.add_event("gave up", timestamp=time.time_ns() + 1_500_000)
                child.set_status(Status(StatusCode.ERROR, "upstream; 503"))
            with tracer.start_as_current_span("ok-step") as ok:
                ok.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return out.getvalue(), list(memory.get_finished_spans())


class Bridge(unittest.TestCase):
    def setUp(self):
        self.text, self.spans = run_story(SpanlineSpanProcessor())
        self.lines = self.text.splitlines()

    def test_installed_package_is_tested(self):
        self.assertNotIn(REPO + "/emitters/python/src", spanline.__file__)
        self.assertIn("site-packages", spanline.__file__)

    def test_one_line_per_span_written_on_end(self):
        self.assertEqual(len(self.lines), 3)
        for line in self.lines:
            self.assertRegex(line, r"^SPLN1 [A-Za-z0-9_-]{44} \d+ \d+[a-z]* [^ ]+( [^ ]+)*;$")
        self.assertEqual([decode_span_line(l)["name"] for l in self.lines],
                         ["GET /orders; 100%", "ok-step", "handler"])

    def test_lines_decode_to_the_spans_fields(self):
        for line, span in zip(self.lines, self.spans):
            d = decode_span_line(line)
            with self.subTest(span.name):
                self.assertEqual(d["trace_id"], "%032x" % span.context.trace_id)
                self.assertEqual(d["span_id"], "%016x" % span.context.span_id)
                self.assertEqual(d["parent_span_id"], "%016x" % span.parent.span_id)
                self.assertEqual(d["start_us"], span.start_time // 1000)
                self.assertEqual(d["start_us"] + d["duration_us"], span.end_time // 1000)
                self.assertEqual(d["kind"], span.kind.name.lower())
                self.assertEqual(d["status"], {"UNSET": "unset", "OK": "ok", "ERROR": "error"}[span.status.status_code.name])
                self.assertEqual(d["specials"].get("s"), "checkout")
                self.assertEqual(d["resource"], {"cloud.region": "eu-west-1", "deployment.count": 3})
                # the request id of the invocation: from the entry span's faas.invocation_id
                self.assertEqual(d["specials"].get("r"), "8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07")
                want = {k: (v if not isinstance(v, tuple) else '["a","b c"]') for k, v in span.attributes.items()
                        if not (span.kind == SpanKind.SERVER and k == "faas.invocation_id")}
                self.assertEqual(d["attributes"], want)
                self.assertEqual(len(d["events"]), len(span.events))
                for de, se in zip(d["events"], span.events):
                    self.assertEqual(de["name"], se.name)
                    self.assertEqual(d["start_us"] + de["offset_us"], se.timestamp // 1000)
                    self.assertEqual(de["attributes"], dict(se.attributes))
                self.assertEqual([(l["trace_id"], l["span_id"], l["attributes"]) for l in d["links"]],
                                 [("%032x" % l.context.trace_id, "%016x" % l.context.span_id, dict(l.attributes))
                                  for l in span.links])
        child = decode_span_line(self.lines[0])
        self.assertEqual(child["specials"]["m"], "upstream; 503")
        self.assertEqual(child["status"], "error")
        self.assertEqual(child["kind"], "client")
        self.assertEqual(child["parent_span_id"], decode_span_line(self.lines[2])["span_id"])
        self.assertEqual(decode_span_line(self.lines[2])["parent_span_id"], "53995c3f42cd8ad8")

    def test_round_trip_through_the_converter(self):
        got = {s["spanId"]: (res, s) for res, s in otlp_spans(convert(self.text))}
        self.assertEqual(len(got), 3)
        for span in self.spans:
            with self.subTest(span.name):
                res, o = got["%016x" % span.context.span_id]
                self.assertEqual(o["traceId"], "%032x" % span.context.trace_id)
                self.assertEqual(o["parentSpanId"], "%016x" % span.parent.span_id)
                self.assertEqual(o["name"], span.name)
                self.assertEqual(o["kind"], OTLP_KIND[span.kind.name.lower()])
                self.assertEqual(int(o["startTimeUnixNano"]), span.start_time // 1000 * 1000)
                self.assertEqual(int(o["endTimeUnixNano"]), span.end_time // 1000 * 1000)
                code = {"UNSET": 0, "OK": 1, "ERROR": 2}[span.status.status_code.name]
                self.assertEqual(o.get("status", {}).get("code", 0), code)
                if code == 2:
                    self.assertEqual(o["status"]["message"], span.status.description)
                self.assertEqual(res.get("service.name"), "checkout")
                self.assertEqual(res.get("cloud.region"), "eu-west-1")
                self.assertEqual(res.get("deployment.count"), 3)
                self.assertNotIn("telemetry.sdk.name", res)
                want = {k: (v if not isinstance(v, tuple) else '["a","b c"]') for k, v in span.attributes.items()
                        if not (span.kind == SpanKind.SERVER and k == "faas.invocation_id")}
                self.assertEqual(attr_dict(o.get("attributes")), want)
                events = o.get("events", [])
                self.assertEqual([(e["name"], int(e["timeUnixNano"]), attr_dict(e.get("attributes")))
                                  for e in events],
                                 [(e.name, e.timestamp // 1000 * 1000, dict(e.attributes)) for e in span.events])
                self.assertEqual([(l["traceId"], l["spanId"], attr_dict(l.get("attributes"))) for l in o.get("links", [])],
                                 [("%032x" % l.context.trace_id, "%016x" % l.context.span_id, dict(l.attributes))
                                  for l in span.links])

    def test_exporter_writes_the_same_lines(self):
        exporter = SpanlineSpanExporter(request_id="8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07")
        text, spans = run_story(SimpleSpanProcessor(exporter))
        lines = text.splitlines()
        self.assertEqual(len(lines), 3)
        for line, span in zip(lines, spans):
            d = decode_span_line(line)
            self.assertEqual(d["span_id"], "%016x" % span.context.span_id)
            self.assertEqual(d["specials"].get("r"), "8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07")
        self.assertEqual(len(otlp_spans(convert(text))), 3)

    def test_sdk_defaults_stay_out_of_the_line(self):
        text, _ = run_story(SpanlineSpanProcessor(), resource=Resource.create({}))
        for line in text.splitlines():
            self.assertNotIn("telemetry.sdk", line)
            self.assertNotIn("*s=unknown_service", line)

    def test_request_id_by_hand(self):
        processor = SpanlineSpanProcessor()
        processor.set_request_id("req-7")
        provider = TracerProvider(resource=Resource({}))
        provider.add_span_processor(processor)
        out = io.StringIO()
        with redirect_stdout(out):
            provider.get_tracer("t").start_span("work").end()
        self.assertTrue(out.getvalue().endswith(" *r=req-7;\n"), out.getvalue())

    def test_direct_line_is_the_encoders_line(self):
        import random

        from spanline import encode_span
        from spanline.otel import span_to_model

        rnd = random.Random(5)
        texts = ["", "a", "x;y", "100%", "é", "=k", "_k", "|p", "x" * 130, "y" * 600, "tab\t"]
        values = texts + [0, -3, 2 ** 70, 1.5, 1e21, True, False, ("a", "b"), [1, 2]]
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("t")
        for i in range(300):
            kind = rnd.choice(list(SpanKind))
            span = tracer.start_span(rnd.choice(texts), context=extract(REMOTE) if rnd.random() < 0.5 else None,
                                     kind=kind)
            for _ in range(rnd.randint(0, 6)):
                span.set_attribute(rnd.choice(texts + ["k%d" % rnd.randint(0, 9)]) or "e", rnd.choice(values))
            if rnd.random() < 0.3:
                span.set_attribute("faas.invocation_id", "req-%d" % i)
            if rnd.random() < 0.3:
                span.set_status(Status(StatusCode.ERROR, rnd.choice(texts) or None) if rnd.random() < 0.7 else Status(StatusCode.OK))
            span.end()
        processor = SpanlineSpanProcessor()
        n = 0
        for span in memory.get_finished_spans():
            for rid in (None, "req-0"):
                direct = processor._direct(span, rid)
                model = span_to_model(span, rid)
                self.assertEqual(direct, encode_span(model) + "\n")
                n += 1
        self.assertEqual(n, 600)

    def test_threads(self):
        import threading

        processor = SpanlineSpanProcessor()
        providers = [TracerProvider(resource=Resource({"service.name": "svc%d" % i})) for i in range(4)]
        for p in providers:
            p.add_span_processor(processor)  # one processor, four resources, four threads
        out = io.StringIO()

        def work(i):
            tracer = providers[i].get_tracer("t")
            for n in range(200):
                with tracer.start_as_current_span("entry", kind=SpanKind.SERVER) as entry:
                    entry.set_attribute("faas.invocation_id", "req-%d-%d" % (i, n))
                    tracer.start_span("child-%d" % i).end()

        with redirect_stdout(out):
            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        lines = [decode_span_line(l) for l in out.getvalue().splitlines()]
        self.assertEqual(len(lines), 1600)
        for d in lines:
            i = d["name"][-1] if d["name"] != "entry" else None
            if i is not None:
                self.assertEqual(d["specials"]["s"], "svc" + i)
                self.assertTrue(d["specials"]["r"].startswith("req-%s-" % i), d)

    def test_on_end_never_raises(self):
        class Broken:
            def write(self, _):
                raise OSError("EPIPE")

            def flush(self):
                pass

        processor = SpanlineSpanProcessor()
        provider = TracerProvider(resource=Resource({}))
        provider.add_span_processor(processor)
        err = io.StringIO()
        old = sys.stdout
        sys.stdout = Broken()
        try:
            with redirect_stderr(err):
                for name in ("a", "b"):
                    provider.get_tracer("t").start_span(name).end()
        finally:
            sys.stdout = old
        self.assertEqual(processor.failures, 2)
        self.assertEqual(err.getvalue().count("\n"), 1)


if __name__ == "__main__":
    unittest.main()
