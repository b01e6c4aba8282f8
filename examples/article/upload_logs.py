"""Puts the story's captured log streams into CloudWatch Logs (moto server, or a real account).

    python upload_logs.py DIR [DIR_OR_FILE ...] [--endpoint-url URL] [--region REGION]
                          [--rename OLD=NEW ...]

Each input is a CloudWatch subscription payload as run-story.js writes them (``express-app.json``,
``ot-lambda.json``, ``ot-lambda-py.json``: ``logGroup``, ``logStream``, ``logEvents``), or a
directory of them. For each stream it creates the log group and the log stream (both may exist
already) and puts the events with PutLogEvents in valid batches: chronological (stable for events
of one millisecond), at most 10,000 events, at most 1,048,576 bytes counting 26 bytes per event
on top of the UTF-8 message, and spanning at most 24 hours.

``--rename /ecs/express-app=/ecs/demo-1/express-app`` puts a group's streams under another name
(tests use fresh names per run). Credentials and region come from the usual AWS variables and
files; against moto any static keys do (demo.sh sets them).

boto3 is needed only to upload (it is in the test services' virtualenv, since moto depends on
it); the batching is plain Python and tested by test_upload_logs.py.
"""

import argparse
import json
import os
import sys

MAX_EVENTS = 10_000
MAX_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_SPAN_MS = 24 * 3600 * 1000


def read_payloads(paths):
    """The payloads in `paths` (files, or directories of ``*.json``), sorted by file name."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".json")))
        else:
            files.append(p)
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            payload = json.load(fh)
        for key in ("logGroup", "logStream", "logEvents"):
            if key not in payload:
                raise ValueError("%s: not a subscription payload (no %s)" % (f, key))
        out.append(payload)
    return out


def batches(events):
    """Splits events ({timestamp, message}) into valid PutLogEvents batches, in time order."""
    ordered = sorted(
        ({"timestamp": int(e["timestamp"]), "message": str(e["message"])} for e in events),
        key=lambda e: e["timestamp"],
    )
    out, batch, size = [], [], 0
    for e in ordered:
        n = len(e["message"].encode("utf-8")) + EVENT_OVERHEAD
        if n > MAX_BYTES:
            raise ValueError("an event of %d bytes is larger than a PutLogEvents batch" % n)
        if batch and (
            len(batch) == MAX_EVENTS
            or size + n > MAX_BYTES
            or e["timestamp"] - batch[0]["timestamp"] > MAX_SPAN_MS
        ):
            out.append(batch)
            batch, size = [], 0
        batch.append(e)
        size += n
    if batch:
        out.append(batch)
    return out


def parse_renames(rules):
    out = {}
    for r in rules or []:
        old, sep, new = r.partition("=")
        if not sep or not old or not new:
            raise ValueError("--rename %r: expected OLD=NEW" % r)
        out[old] = new
    return out


def upload(client, payloads, renames=None):
    """Creates groups and streams and puts every event; returns [(group, stream, events, calls)]."""
    renames = renames or {}
    done = []
    groups = set()
    for p in payloads:
        group = renames.get(p["logGroup"], p["logGroup"])
        stream = p["logStream"]
        if group not in groups:
            try:
                client.create_log_group(logGroupName=group)
            except client.exceptions.ResourceAlreadyExistsException:
                pass
            groups.add(group)
        try:
            client.create_log_stream(logGroupName=group, logStreamName=stream)
        except client.exceptions.ResourceAlreadyExistsException:
            pass
        parts = batches(p["logEvents"])
        for b in parts:
            client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=b)
        done.append((group, stream, sum(len(b) for b in parts), len(parts)))
    return done


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="payload files or directories of them")
    ap.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    ap.add_argument("--region", default=os.environ.get("AWS_REGION") or "us-east-1")
    ap.add_argument("--rename", action="append", metavar="OLD=NEW", help="put a group under another name")
    args = ap.parse_args(argv)
    try:
        renames = parse_renames(args.rename)
        payloads = read_payloads(args.inputs)
    except (OSError, ValueError) as e:
        print("upload_logs: %s" % e, file=sys.stderr)
        return 1
    if not payloads:
        print("upload_logs: no payloads in %s" % " ".join(args.inputs), file=sys.stderr)
        return 1
    try:
        import boto3  # noqa: PLC0415 (only needed to upload)
    except ImportError:
        print("upload_logs: boto3 is missing (use the test services' python: "
              "target/test-services/venv/bin/python)", file=sys.stderr)
        return 1
    client = boto3.client("logs", endpoint_url=args.endpoint_url, region_name=args.region)
    for group, stream, n, calls in upload(client, payloads, renames):
        print("put %4d events in %d call%s: %s %s" % (n, calls, "" if calls == 1 else "s", group, stream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
