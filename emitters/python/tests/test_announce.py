"""Open records (FORMAT.md §3, flag ``u``) of the Python emitter.

Run (with the package installed): python -m unittest discover -s emitters/python/tests -v
"""

import io
import json
import os
import unittest
from contextlib import redirect_stdout

import spanline
from support import FIXTURES


class OpenRecords(unittest.TestCase):
    def test_vector(self):
        with open(os.path.join(FIXTURES, "valid.json"), encoding="utf-8") as f:
            v = next(x for x in json.load(f)["vectors"] if x["name"].startswith("open record"))
        self.assertEqual(spanline.encode_open(v["spans"][0]), v["line"])

    def test_announce_then_finish(self):
        tracer = spanline.Tracer(resource=[], request_id="req-1")
        parent = spanline.SpanContext("4bf92f3577b34da6a3ce929d0e0e4736", "53995c3f42cd8ad8")
        out = io.StringIO()
        with redirect_stdout(out):
            span = tracer.start_span("python-execution", child_of=parent, kind="server", announce=True)
            span.announce()  # once only
            span.set_tag("faas.trigger", "http")
            span.finish()
            span.announce()  # nothing after finish
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertRegex(lines[0], r"^SPLN1 [A-Za-z0-9_-]{44} \d+ 0su python-execution \*r=req-1;$")
        self.assertEqual(lines[0].split(" ")[1:3], lines[1].split(" ")[1:3])
        self.assertRegex(lines[1], r" \d+s python-execution faas\.trigger=http \*r=req-1;$")


if __name__ == "__main__":
    unittest.main()
