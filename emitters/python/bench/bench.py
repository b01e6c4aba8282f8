"""Per-span cost and cold start of spanline for Python against the OpenTelemetry SDK's exporters.

Run in a virtualenv with the package and the pinned dependencies installed:

    python3 -m venv target/emitter-venv
    target/emitter-venv/bin/pip install -r emitters/python/requirements-dev.txt ./emitters/python
    target/emitter-venv/bin/python emitters/python/bench/bench.py

The peer ``otlp-stdout-span-exporter`` needs Python >= 3.12; under an older Python its figures are
null. Every variant writes into the same discarding sink (``sys.stdout`` replaced by an object
whose ``write`` only counts), so the figures are the cost of making and encoding the span and
calling write, not of the pipe. The span: a client span with a remote parent and two string
attributes (the reference span of FORMAT.md). Per-span figures are medians over rounds that
alternate the variants; cold start is the median over fresh ``python`` processes of the time to
import and initialise each (the interpreter's own start-up is reported separately).

Prints a markdown table, then one JSON line of the figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PARENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_SPAN = 0x53995C3F42CD8AD8
ATTRS = {"http.method": "POST", "peer.service": "lambda"}


class Sink:
    """Discards what is written and counts it."""

    def __init__(self):
        self.bytes = 0

    def write(self, s):
        self.bytes += len(s.encode("utf-8")) if isinstance(s, str) else len(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def have_peer():
    try:
        import otlp_stdout_span_exporter  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------- variants

def make_native():
    import spanline

    tracer = spanline.Tracer(service="bench", resource=[])
    parent = spanline.SpanContext("%032x" % PARENT_TRACE, "%016x" % PARENT_SPAN)

    def one():
        tracer.start_span("service-egress", child_of=parent, kind="client", tags=ATTRS).finish()

    return one


def _otel(processor):
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    parent = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
        PARENT_TRACE, PARENT_SPAN, is_remote=True, trace_flags=trace.TraceFlags(1))))
    kind = trace.SpanKind.CLIENT

    def one():
        tracer.start_span("service-egress", context=parent, kind=kind, attributes=ATTRS).end()

    return one


def make_bridge():
    from spanline.otel import SpanlineSpanProcessor

    return _otel(SpanlineSpanProcessor())


def make_console(sink):
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    return _otel(SimpleSpanProcessor(ConsoleSpanExporter(out=sink)))


def make_peer():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from otlp_stdout_span_exporter import OTLPStdoutSpanExporter

    return _otel(SimpleSpanProcessor(OTLPStdoutSpanExporter()))


# ------------------------------------------------------------------------------------- per span

def per_span(rounds, seconds):
    sink = Sink()
    real = sys.stdout
    sys.stdout = sink
    try:
        variants = {"native": make_native(), "bridge": make_bridge(), "otel_console": make_console(sink)}
        if have_peer():
            variants["peer"] = make_peer()
        # calibrate: spans per round so that each round lasts about `seconds`
        sizes = {}
        for name, fn in variants.items():
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds / 4 or n < 20:
                fn()
                n += 1
            sizes[name] = max(20, int(n * 4 * seconds / max(time.perf_counter() - t, 1e-9) / 4))
        ns = {k: [] for k in variants}
        nbytes = {k: 0 for k in variants}
        spans = {k: 0 for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                n = sizes[name]
                b0 = sink.bytes
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    fn()
                ns[name].append((time.perf_counter_ns() - t0) / n)
                nbytes[name] += sink.bytes - b0
                spans[name] += n
    finally:
        sys.stdout = real
    return {k: (statistics.median(ns[k]), nbytes[k] / spans[k]) for k in variants}


# ------------------------------------------------------------------------------------- cold start

COLD = {
    "native": "import spanline\nt = spanline.Tracer()\n",
    "bridge": ("from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
               "from spanline.otel import SpanlineSpanProcessor\np = TracerProvider()\n"
               "p.add_span_processor(SpanlineSpanProcessor())\nt = p.get_tracer('x')\n"),
    "otel_console": ("from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
                     "from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor\n"
                     "p = TracerProvider()\np.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))\n"
                     "t = p.get_tracer('x')\n"),
    "peer": ("from opentelemetry import trace\nfrom opentelemetry.sdk.trace import TracerProvider\n"
             "from opentelemetry.sdk.trace.export import BatchSpanProcessor\n"
             "from otlp_stdout_span_exporter import OTLPStdoutSpanExporter\n"
             "p = TracerProvider()\np.add_span_processor(BatchSpanProcessor(OTLPStdoutSpanExporter()))\n"
             "t = p.get_tracer('x')\n"),
}


def cold(code, runs):
    wrapped = ("import time as _t\n_s = _t.perf_counter_ns()\n" + code
               + "import sys as _y\n_y.stderr.write('%d\\n' % (_t.perf_counter_ns() - _s))\n")
    env = dict(os.environ)
    env.pop("OTEL_SERVICE_NAME", None)
    out = []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-c", wrapped], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=env, check=True)
        out.append(int(p.stderr.decode().strip().splitlines()[-1]) / 1e6)
    return statistics.median(out)


def interpreter_start(runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append((time.perf_counter_ns() - t) / 1e6)
    return statistics.median(out)


# ------------------------------------------------------------------------------------- report

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="per-span rounds per variant (median)")
    ap.add_argument("--round-seconds", type=float, default=0.1, help="length of one round")
    ap.add_argument("--cold-runs", type=int, default=20, help="fresh processes per variant (median)")
    args = ap.parse_args()

    spans = per_span(args.rounds, args.round_seconds)
    names = [n for n in ("native", "bridge", "otel_console", "peer") if n in spans]
    imports = {n: cold(COLD[n], args.cold_runs) for n in names}
    start = interpreter_start(args.cold_runs)

    label = {
        "native": "spanline native (`spanline.Tracer`)",
        "bridge": "spanline OpenTelemetry bridge (SDK + `SpanlineSpanProcessor`)",
        "otel_console": "OpenTelemetry SDK + `ConsoleSpanExporter` (`SimpleSpanProcessor`)",
        "peer": "OpenTelemetry SDK + `otlp-stdout-span-exporter` (`SimpleSpanProcessor`)",
    }
    print("| emitter | ns/span | bytes/span | import + init, ms |")
    print("|---|---:|---:|---:|")
    for n in names:
        print("| %s | %.0f | %.0f | %.1f |" % (label[n], spans[n][0], spans[n][1], imports[n]))
    if "peer" not in spans:
        print("| OpenTelemetry SDK + `otlp-stdout-span-exporter` | not installed (needs Python >= 3.12) | | |")
    print()
    print("Python %s; interpreter start-up (`python -c pass`): %.1f ms, not included above." % (
        sys.version.split()[0], start))

    fig = {"python": sys.version.split()[0]}
    for n in ("native", "bridge", "otel_console", "peer"):
        fig[n + "_ns_per_span"] = round(spans[n][0]) if n in spans else None
        fig[n + "_bytes_per_span"] = round(spans[n][1], 1) if n in spans else None
        fig[n + "_import_ms"] = round(imports[n], 2) if n in imports else None
    fig["interpreter_start_ms"] = round(start, 2)
    fig["native_vs_console"] = round(spans["otel_console"][0] / spans["native"][0], 2)
    fig["bridge_vs_console"] = round(spans["otel_console"][0] / spans["bridge"][0], 2)
    fig["bridge_vs_peer"] = round(spans["peer"][0] / spans["bridge"][0], 2) if "peer" in spans else None
    fig["targets"] = {
        "native_vs_console_ge_10": fig["native_vs_console"] >= 10,
        "bridge_vs_peer_ge_3": None if fig["bridge_vs_peer"] is None else fig["bridge_vs_peer"] >= 3,
        "native_import_le_5ms": fig["native_import_ms"] <= 5,
    }
    print()
    print(json.dumps(fig, separators=(",", ":")))


if __name__ == "__main__":
    main()
