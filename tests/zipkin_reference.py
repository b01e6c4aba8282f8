#!/usr/bin/env python3
"""The reference Zipkin v2 JSON for spanline's Zipkin encoder.

Reads a spans file (fixtures/zipkin/spans.json: the fields of spanline's assembled `Span`, see
its "about" entry), builds OpenTelemetry Python SDK `ReadableSpan`s from it and prints, on
stdout, the JSON array that the `opentelemetry-exporter-zipkin-json` exporter would POST for
them: each span goes through the exporter's own `JsonV2Encoder`, configured exactly as
`ZipkinExporter(version=Protocol.V2)` configures it.

    python tests/zipkin_reference.py fixtures/zipkin/spans.json --scope spanline 0.1.0

The Rust test `convert::sink::zipkin::tests::matches_the_opentelemetry_python_zipkin_encoder`
runs this with the interpreter named by SPANLINE_TEST_PYTHON (tests/services.sh installs the
pins below into target/test-services/venv) and compares the output field by field.

One deliberate change from `ZipkinExporter.export`: the exporter sets `localEndpoint` once per
batch from the first span's `service.name` (it assumes one TracerProvider per batch), whereas a
spanline batch mixes services. Each span is therefore serialized as a batch of its own, with
the local endpoint the exporter would have used for it.

Exit codes: 0 success, 2 bad input or usage, 3 the packages are missing or not the pinned
versions (pass --any-version to compare against whatever is installed).
"""

import argparse
import json
import sys

# The versions the Rust comparison and its comments were written against. tests/services.sh
# installs the same pins.
PINS = {
    "opentelemetry-exporter-zipkin-json": "1.45.1",
    "opentelemetry-sdk": "1.45.1",
}


def fail(code, message):
    print(f"zipkin_reference.py: {message}", file=sys.stderr)
    sys.exit(code)


def check_versions(any_version):
    from importlib import metadata

    install = "pip install " + " ".join(f"'{name}=={v}'" for name, v in PINS.items())
    for name, pinned in PINS.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            fail(3, f"{name} is not installed for {sys.executable}; run: {install}")
        if found != pinned and not any_version:
            fail(
                3,
                f"{name} {found} is installed for {sys.executable}, the comparison is pinned "
                f"to {pinned}; run: {install} (or pass --any-version)",
            )


def value_of(attr):
    """A typed fixture attribute as the Python value the SDK would hold."""
    kind, value = attr["type"], attr["value"]
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, str):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    raise ValueError(f"attribute {attr.get('key')!r}: bad type/value {kind!r}/{value!r}")


def attributes(items):
    # A dict, as in the SDK: a repeated key keeps its last value.
    return {a["key"]: value_of(a) for a in items}


def build_spans(doc, scope):
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    kinds = {
        "internal": SpanKind.INTERNAL,
        "server": SpanKind.SERVER,
        "client": SpanKind.CLIENT,
        "producer": SpanKind.PRODUCER,
        "consumer": SpanKind.CONSUMER,
    }
    codes = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}
    # spanline prints sampled spans only.
    sampled = TraceFlags(TraceFlags.SAMPLED)

    def context(trace_hex, span_hex):
        return SpanContext(int(trace_hex, 16), int(span_hex, 16), is_remote=False,
                           trace_flags=sampled)

    out = []
    for s in doc["spans"]:
        dropped_attributes, dropped_events, dropped_links = s.get("dropped", [0, 0, 0])
        # The exporter reads the dropped counts from the SDK's bounded containers.
        attrs = BoundedAttributes(attributes=attributes(s.get("attributes", [])))
        attrs.dropped = dropped_attributes
        events = BoundedList.from_seq(None, [
            Event(e["name"], attributes(e.get("attributes", [])), e["time_unix_nano"])
            for e in s.get("events", [])
        ])
        events.dropped = dropped_events
        links = BoundedList.from_seq(None, [
            Link(context(l["trace_id"], l["span_id"]), attributes(l.get("attributes", [])))
            for l in s.get("links", [])
        ])
        links.dropped = dropped_links
        # spanline keeps service.name apart from the other resource attributes.
        resource = {"service.name": s["service"]}
        resource.update(attributes(s.get("resource", [])))
        status = codes[s["status"]]
        parent = s.get("parent_span_id")
        out.append(ReadableSpan(
            name=s["name"],
            context=context(s["trace_id"], s["span_id"]),
            parent=context(s["trace_id"], parent) if parent else None,
            resource=Resource(resource),
            attributes=attrs,
            events=events,
            links=links,
            kind=kinds[s["kind"]],
            # The SDK keeps a description for ERROR only (and warns about others): same result.
            status=Status(status, (s.get("status_message") or None)
                          if status is StatusCode.ERROR else None),
            start_time=s["start_unix_nano"],
            end_time=s["end_unix_nano"],
            instrumentation_scope=scope,
        ))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spans", help="the spans file (fixtures/zipkin/spans.json)")
    parser.add_argument("--scope", nargs=2, metavar=("NAME", "VERSION"),
                        help="the instrumentation scope of every span (default: none)")
    parser.add_argument("--any-version", action="store_true",
                        help="do not insist on the pinned package versions")
    args = parser.parse_args()

    check_versions(args.any_version)
    from opentelemetry.exporter.zipkin.encoder import Protocol
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import SERVICE_NAME
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    try:
        with open(args.spans, encoding="utf-8") as f:
            doc = json.load(f)
        scope = InstrumentationScope(*args.scope) if args.scope else None
        spans = build_spans(doc, scope)
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(2, f"{args.spans}: {e}")

    # No request is made: only the exporter's encoder and local endpoint are used.
    exporter = ZipkinExporter(version=Protocol.V2)
    encoded = []
    for span in spans:
        # What `ZipkinExporter.export` does for a batch whose first span is this one.
        exporter.local_node.service_name = span.resource.attributes.get(SERVICE_NAME)
        encoded.extend(json.loads(exporter.encoder.serialize([span], exporter.local_node)))
    exporter.shutdown()
    json.dump(encoded, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
