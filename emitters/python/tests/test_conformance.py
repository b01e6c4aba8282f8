"""Conformance of the Python emitter.

Run (with the package installed): python -m unittest discover -s emitters/python/tests -v
"""

import io
import json
import os
import re
import sys
import unittest
from contextlib import redirect_stderr, redirect_stdout

import spanline
from support import FIXTURES
LINE_RE = re.compile(r"SPLN1 [A-Za-z0-9_-]{33}([A-Za-z0-9_-]{11})? \d+ \d+[a-z]* [^ ]*( [^ ]+)*;\n")


def load(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)["vectors"]


class CanonicalVectors(unittest.TestCase):
    def test_canonical_vectors_encode_byte_for_byte(self):
        vectors = [v for v in load("valid.json") if v["canonical"]]
        self.assertGreaterEqual(len(vectors), 20)
        for v in vectors:
            with self.subTest(v["name"]):
                spans = v.get("input") or v["spans"]
                if v["record"] == "batch":
                    line = spanline.encode_batch(spans)
                else:
                    line = spanline.encode_span(spans[0])
                self.assertEqual(line, v["line"])

    def test_floats(self):
        cases = [(1.0, "1"), (1.5, "1.5"), (-0.25, "-0.25"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
                 (1.5e-7, "1.5e-7"), (1e-6, "0.000001"), (-0.0, "0"), (float("nan"), "nan"),
                 (float("inf"), "inf"), (float("-inf"), "-inf"), (5e-324, "5e-324"),
                 (0.1 + 0.2, "0.30000000000000004"), (1.7976931348623157e308, "1.7976931348623157e+308"),
                 (123456.789, "123456.789"), (2.0 ** 70, "1.1805916207174113e+21"), (1e-5, "0.00001")]
        for x, want in cases:
            self.assertEqual(spanline.format_float(x), want, repr(x))


class TracerOutput(unittest.TestCase):
    def assert_span_line(self, chunk):
        self.assertTrue(chunk.startswith("SPLN1 "), chunk)
        self.assertTrue(chunk.endswith(";\n"), chunk)
        body = chunk[:-1]
        self.assertIsNone(re.search(r"[\x00-\x1f\x7f]", body), body)
        self.assertLessEqual(len(body.encode("utf-8")), spanline.MAX_LINE)
        self.assertRegex(chunk, LINE_RE)

    def test_finish_prints_one_well_formed_line(self):
        tracer = spanline.Tracer(service="checkout svc", resource={"cloud.region": "eu-west-1"})
        tracer.set_request_id("8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07")
        out = io.StringIO()
        with redirect_stdout(out):
            root = tracer.start_span("handler", kind="server")
            child = tracer.start_span("GET /orders\n{id};", child_of=root, kind="client")
            (child.set_tag("http.status_code", 200).set_tag("ratio", 0.5).set_tag("big", 2 ** 40)
             .set_tag("ok", True).set_tag("msg", "line1\nline2\ttab; 100%").set_tag("span.kind", "producer")
             .set_tag("error", True))
            child.log_kv({"event": "retry", "attempt": 2})
            child.log_event("cache.miss", {"key": "user:42"})
            child.set_error("boom; again")
            child.finish()
            child.finish()  # a second finish writes nothing
            root.finish()
        lines = out.getvalue().splitlines(keepends=True)
        self.assertEqual(len(lines), 2)
        for chunk in lines:
            self.assert_span_line(chunk)
        child_line, root_line = lines
        self.assertRegex(child_line, r" \d+pe GET%20/orders%0A\{id\}%3B ")
        self.assertIn(" http.status_code#200 ratio~0.5 big#1099511627776 ok!t msg=line1%0Aline2%09tab%3B%20100%25 ",
                      child_line)
        self.assertRegex(child_line, r" @\d+=retry attempt#2 @\d+=cache\.miss key=user:42 \*m=boom%3B%20again ")
        self.assertTrue(child_line.endswith(
            " *r=8e2a1f4c-6b1d-4e0a-9c7b-2f5d3e1a9b07 *s=checkout%20svc +cloud.region=eu-west-1;\n"))
        root_ids, child_ids = root_line.split(" ")[1], child_line.split(" ")[1]
        self.assertEqual((len(root_ids), len(child_ids)), (33, 44))
        self.assertEqual(child_ids[:22], root_ids[:22])
        self.assertEqual(child_ids[33:], root_ids[22:33])

    def test_service_defaults_to_otel_service_name(self):
        old = os.environ.get("OTEL_SERVICE_NAME")
        os.environ["OTEL_SERVICE_NAME"] = "from-env"
        try:
            self.assertEqual(spanline.Tracer().service, "from-env")
            self.assertEqual(spanline.Tracer(service="explicit").service, "explicit")
            del os.environ["OTEL_SERVICE_NAME"]
            self.assertIsNone(spanline.Tracer().service)
        finally:
            if old is not None:
                os.environ["OTEL_SERVICE_NAME"] = old

    def test_finish_never_raises(self):
        class Broken:
            def write(self, _):
                raise OSError("EPIPE")

            def flush(self):
                pass

        class Unprintable:
            def __str__(self):
                raise RuntimeError("no")

        tracer = spanline.Tracer(service=None, resource=[])
        err = io.StringIO()
        old = sys.stdout
        sys.stdout = Broken()
        try:
            with redirect_stderr(err):
                tracer.start_span("a").finish()
                tracer.start_span("b").finish()
                s = tracer.start_span("c", child_of={"trace_id": "nothex", "span_id": "x"})
                s.set_tag("obj", Unprintable())
                s.finish()
        finally:
            sys.stdout = old
        self.assertEqual(tracer.failures, 3)
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_buffered_tracer_writes_batch_records(self):
        tracer = spanline.Tracer(service="svc", resource=[], buffered=True)
        out = io.StringIO()
        with redirect_stdout(out):
            root = tracer.start_span("root")
            for _ in range(3):
                tracer.start_span("child", child_of=root).set_tag("i", 1).finish()
            root.finish()
            tracer.flush()
        lines = out.getvalue().splitlines(keepends=True)
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("SPLN1 +") and lines[0].endswith(";\n"))
        self.assertEqual(len(lines[0].split(" |")), 5)
        self.assertRegex(lines[0], r' \|[A-Za-z0-9_-]{11} " \d+ \d+ " "')

    def test_encode_batches_splits_at_64_spans(self):
        spans = [{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "%016x" % i, "parent_span_id": None,
                  "start_us": 1700000000000000 + i, "duration_us": 1, "name": "n", "kind": "internal",
                  "status": "unset", "status_message": None, "service": None, "request_id": None,
                  "attributes": [], "events": [], "links": [], "resource": []} for i in range(1, 71)]
        lines = spanline.encode_batches(spans)
        self.assertEqual(len(lines), 2)
        self.assertEqual(len(lines[0].split(" |")), 65)
        self.assertTrue(lines[1].startswith("SPLN1 +S_kvNXezTaajzpKdDg5HNg 1700000000000065 |"))
        with self.assertRaises(ValueError):
            spanline.encode_batch(spans)


if __name__ == "__main__":
    unittest.main()
