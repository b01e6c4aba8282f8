"""Shared by the tests: where the repository's fixtures and the converter binary are."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
FIXTURES = os.path.join(REPO, "fixtures", "conformance")


def spanline_bin():
    """The converter: $SPANLINE_BIN, else target/debug/spanline under the repository root.
    Raises AssertionError (a test failure, never a skip) when neither exists."""
    env = os.environ.get("SPANLINE_BIN")
    candidates = [env] if env else []
    candidates.append(os.path.join(REPO, "target", "debug", "spanline"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise AssertionError(
        "the spanline converter binary was not found (tried %s): build it with `cargo build` "
        "or set SPANLINE_BIN to its path" % ", ".join(repr(c) for c in candidates))


def unescape(text):
    """A string of a span line (FORMAT.md §2) back to text; a trailing ``%*`` is kept."""
    cut = text.endswith("%*")
    if cut:
        text = text[:-2]
    out, i, raw = bytearray(), 0, text.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x25:
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8") + ("%*" if cut else "")


def _b64hex(s):
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)).hex()


def _value(tok):
    """(key, value) of an attribute field; value typed (str, int, float, bool)."""
    import re

    m = re.match(r"([^=#~!]+)([=#~!])(.*)$", tok)
    key, sep, v = unescape(m.group(1)), m.group(2), m.group(3)
    if sep == "#":
        return key, int(v)
    if sep == "~":
        return key, float(v)
    if sep == "!":
        return key, v == "t"
    return key, unescape(v)


def decode_span_line(line):
    """A span record (FORMAT.md §3) as a dict: a small decoder for the tests."""
    line = line.rstrip("\r\n")
    assert line.startswith("SPLN1 ") and line.endswith(";"), line
    toks = line[6:-1].split(" ")
    ids, start, durflags, name = toks[0], int(toks[1]), toks[2], toks[3]
    digits = len(durflags) - len(durflags.lstrip("0123456789"))
    flags = durflags[digits:]
    kind = {"s": "server", "c": "client", "p": "producer", "o": "consumer"}
    status = {"e": "error", "k": "ok"}
    span = {
        "trace_id": _b64hex(ids[:22]), "span_id": _b64hex(ids[22:33]),
        "parent_span_id": _b64hex(ids[33:]) if len(ids) > 33 else None,
        "start_us": start, "duration_us": int(durflags[:digits]),
        "kind": next((kind[f] for f in reversed(flags) if f in kind), "internal"),
        "status": next((status[f] for f in reversed(flags) if f in status), "unset"),
        "open": "u" in flags, "name": unescape(name),
        "attributes": {}, "events": [], "links": [], "resource": {}, "specials": {},
    }
    target = span["attributes"]
    for tok in toks[4:]:
        if tok.startswith("@"):
            off, _, ename = tok[1:].partition("=")
            ev = {"offset_us": int(off), "name": unescape(ename), "attributes": {}}
            span["events"].append(ev)
            target = ev["attributes"]
        elif tok.startswith("^"):
            lk = {"trace_id": _b64hex(tok[1:23]), "span_id": _b64hex(tok[23:34]), "attributes": {}}
            span["links"].append(lk)
            target = lk["attributes"]
        elif tok.startswith("*"):
            k, v = _value(tok[1:])
            span["specials"][k] = v
        elif tok.startswith("+"):
            k, v = _value(tok[1:])
            span["resource"][k] = v
        else:
            k, v = _value(tok)
            target[k] = v
    return span


def convert(lines):
    """The OTLP JSON that ``spanline convert - --output -`` makes of ``lines`` (text)."""
    import json
    import subprocess

    p = subprocess.run([spanline_bin(), "convert", "-", "--output", "-"], input=lines.encode("utf-8"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, "spanline convert failed (%d): %s" % (p.returncode, p.stderr.decode())
    return json.loads(p.stdout.decode("utf-8"))


def otlp_spans(doc):
    """[(resource attributes dict, span dict)] of an OTLP JSON document; values unwrapped."""
    out = []
    for rs in doc.get("resourceSpans", []):
        res = attr_dict(rs.get("resource", {}).get("attributes", []))
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                out.append((res, s))
    return out


def attr_dict(kvs):
    out = {}
    for kv in kvs or []:
        v = kv["value"]
        if "stringValue" in v:
            out[kv["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[kv["key"]] = int(v["intValue"])
        elif "doubleValue" in v:
            out[kv["key"]] = float(v["doubleValue"])
        elif "boolValue" in v:
            out[kv["key"]] = v["boolValue"]
        else:
            out[kv["key"]] = v
    return out
