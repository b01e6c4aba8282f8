"""The native tracer's fast paths (direct line building, plain-text escaping, repr floats) write
exactly what the general encoder writes.

Run (with the package installed): python -m unittest discover -s emitters/python/tests -v
"""

import random
import struct
import unittest

import spanline

TEXTS = ["", "a", "GET /orders", "x;y", "100%", "é", "日本", "\ud800", "_k", ".k", "=k", "#", "\"q", "|p",
         "tab\there", "new\nline", "a=b#c~d!e", "x" * 127, "x" * 128, "x" * 129, "é" * 70, "y" * 600,
         "%*", "\x7f", "k ey"]


class FastPaths(unittest.TestCase):
    def test_floats(self):
        rnd = random.Random(7)
        values = [0.1, -0.5, 1e-4, 9.999e-5, 1e-6, 1e15, 1e16, 123456789012345.6, 1e21, -2.5e-9, -0.0,
                  float("nan"), float("inf"), float("-inf")]
        values += [rnd.uniform(-1e6, 1e6) for _ in range(2000)]
        values += [struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0] for _ in range(2000)]
        values += [rnd.random() * 10 ** rnd.randint(-12, 25) for _ in range(2000)]
        for x in values:
            self.assertEqual(spanline.format_float(x), spanline._format_float_exact(x), repr(x))

    def test_unquote_is_urllibs(self):
        from urllib.parse import unquote

        for t in ["", "plain", "a%20b", "%", "%2", "%zz", "x%", "%C3%A9", "%C3", "%e2%82%ac%", "é%41", "%%41"]:
            self.assertEqual(spanline.unquote(t), unquote(t), t)
        self.assertEqual(spanline.parse_resource_attributes("a=1, b%3Dc=d%2Ce ,bad,=x"),
                         [{"key": "a", "type": "string", "value": "1"},
                          {"key": "b=c", "type": "string", "value": "d,e"}])

    def test_escaping(self):
        for t in TEXTS:
            for cls, limit in ((spanline.CLASS_VALUE, 512), (spanline.CLASS_KEY, 128), (spanline.CLASS_NAME, 128)):
                self.assertEqual(spanline.escape_string(t, cls, limit),
                                 spanline.escape_string({"text": t}, cls, limit), (t, cls))

    def test_direct_line_is_the_encoders_line(self):
        rnd = random.Random(11)
        values = TEXTS + [0, -1, 2 ** 63, -(2 ** 63) - 1, 1.5, 1e21, True, False, None, b"by\xfftes", ["l"]]
        for i in range(400):
            tracer = spanline.Tracer(service=rnd.choice([None, "svc", "s v c;"]),
                                     resource=rnd.choice([[], {"cloud.region": "eu-west-1", "n": 3}]),
                                     request_id=rnd.choice([None, "req-1", "r;1"]))
            parent = rnd.choice([None, spanline.SpanContext("4bf92f3577b34da6a3ce929d0e0e4736", "53995c3f42cd8ad8")])
            span = tracer.start_span(rnd.choice(TEXTS), child_of=parent,
                                     kind=rnd.choice(["internal", "server", "client", "producer", "consumer"]))
            for _ in range(rnd.randint(0, 70 if i % 10 == 0 else 6)):
                span.set_tag(rnd.choice(TEXTS + ["k%d" % rnd.randint(0, 80)]), rnd.choice(values))
            if rnd.random() < 0.2:
                span.set_error(rnd.choice(TEXTS))
            elif rnd.random() < 0.2:
                span.set_ok()
            dur = rnd.choice([0, 5, 123456])
            fast = span._fast_line(dur)
            want = spanline.encode_span(span.to_model(dur)) + "\n"
            if fast is not None:
                self.assertEqual(fast, want)
        big = spanline.Tracer(resource=[]).start_span("big")
        for k in range(40):
            big.set_tag("k%d" % k, "v" * 300)
        self.assertIsNone(big._fast_line(1))  # near the line limit: the general encoder decides


if __name__ == "__main__":
    unittest.main()
