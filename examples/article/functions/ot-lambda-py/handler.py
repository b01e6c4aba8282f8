"""A Python Lambda handler that continues the article's trace with the spanline package (emitters/python).

It extracts the caller's context from the request headers (W3C ``traceparent``, else the
``ot-tracer-*`` headers of the OpenTracing tracers; any header-name case), records
``python-execution`` (announced when it starts, so a timeout still joins the trace), and answers
500 with an error span for the call numbers listed in FAIL_CALLS (comma-separated).
"""

import json
import logging
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Deployed, the spanline package sits next to this file (`pip install --target <function dir>
# ./emitters/python`, or a copy of emitters/python/src/spanline/); in the repository it is in
# emitters/python/src/.
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "emitters", "python", "src"))
sys.path.insert(0, HERE)
import spanline  # noqa: E402

tracer = spanline.Tracer()  # service: OTEL_SERVICE_NAME, else the converter uses the log group
logger = logging.getLogger()
logger.setLevel(logging.INFO)
FAIL_CALLS = {int(x) for x in os.environ.get("FAIL_CALLS", "").split(",") if x.strip()}

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def extract(headers):
    """The caller's SpanContext from HTTP headers, or None. Unsampled contexts are ignored."""
    h = {str(k).lower(): str(v).strip() for k, v in (headers or {}).items() if v is not None}
    m = _TRACEPARENT.match(h.get("traceparent", "").lower())
    if m and m.group(1) != "ff" and m.group(2).strip("0") and m.group(3).strip("0"):
        return spanline.SpanContext(m.group(2), m.group(3)) if int(m.group(4), 16) & 1 else None
    t, s = h.get("ot-tracer-traceid", "").lower(), h.get("ot-tracer-spanid", "").lower()
    if len(t) == 16:
        t = t.rjust(32, "0")
    if re.fullmatch(r"[0-9a-f]{32}", t) and re.fullmatch(r"[0-9a-f]{16}", s) and t.strip("0") and s.strip("0"):
        if h.get("ot-tracer-sampled", "true").lower() in ("false", "0"):
            return None
        return spanline.SpanContext(t, s)
    return None


def handler(event, context):
    tracer.set_request_id(context.aws_request_id)
    span = tracer.start_span("python-execution", child_of=extract(event.get("headers")), kind="server",
                             tags={"faas.trigger": "http"}, announce=True)
    try:
        body = json.loads(event.get("body") or "{}")
        call = int(body.get("call", 0))
        span.set_tag("call", call)
        logger.info("looking up the item for call %d", call)
        time.sleep(0.005)
        if call in FAIL_CALLS:
            span.set_error("item not found")
            span.log_kv({"event": "error", "message": "item not found", "call": call})
            return {"statusCode": 500, "body": json.dumps({"error": "item not found"})}
        span.log_event("fetched item", {"item.id": 42})
        return {"statusCode": 200, "body": json.dumps({"item": 42})}
    except Exception as e:
        span.set_error("%s: %s" % (type(e).__name__, e))
        span.log_kv({"event": "error", "error.kind": type(e).__name__, "message": str(e)})
        raise
    finally:
        span.finish()
