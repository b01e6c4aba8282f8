"""The Python "runtime" of the local Lambda harness (local-lambda.js).

One child process is one execution environment. It talks to the harness over the IPC channel
Node opens for it (the file descriptor in NODE_CHANNEL_FD, one JSON message per line), loads the
handler (the init phase), then runs invocations one at a time and sends back what the function
prints, as the Lambda Python runtime would have it:

* ``print`` and other sys.stdout / sys.stderr writes are forwarded raw (the harness splits them
  into one event per line; in the JSON log format they stay plain text, as on Lambda);
* ``logging`` records: text format ``[LEVEL]\\t<ISO time>\\t<requestId>\\t<message>``, JSON format
  ``{"timestamp","level","message","logger","requestId"}``;
* an unhandled exception is logged as ``[ERROR] Type: message`` plus the traceback (one event), or
  a JSON record with errorType, errorMessage and stackTrace.
"""

import datetime
import importlib
import json
import logging
import os
import resource
import sys
import time
import traceback

FD = int(os.environ["NODE_CHANNEL_FD"])
JSON_FORMAT = os.environ.get("AWS_LAMBDA_LOG_FORMAT", "Text").upper() == "JSON"
request_id = None


def send(msg):
    data = (json.dumps(msg) + "\n").encode("utf-8")
    while data:
        n = os.write(FD, data)
        data = data[n:]


def now_ms():
    return time.time_ns() // 1_000_000


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def max_rss_mb():
    return -(-resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


class RawStream:
    """sys.stdout / sys.stderr replacement that forwards every write to the harness."""

    def __init__(self, name):
        self.name = name
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, s):
        if s:
            send({"type": "raw", "stream": self.name, "data": str(s), "t": now_ms()})
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("not a file")


class LambdaLogHandler(logging.Handler):
    def emit(self, record):
        try:
            t = int(record.created * 1000)
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if JSON_FORMAT:
                data = json.dumps({"timestamp": iso(t), "level": record.levelname, "message": msg,
                                   "logger": record.name, "requestId": request_id}) + "\n"
            else:
                data = "[%s]\t%s\t%s\t%s\n" % (record.levelname, iso(t), request_id, msg)
            send({"type": "log", "data": data, "t": t})
        except Exception:  # noqa: BLE001
            self.handleError(record)


def error_json(exc):
    return {"errorType": type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_tb(exc.__traceback__)}


def log_error(exc):
    t = now_ms()
    j = error_json(exc)
    if JSON_FORMAT:
        data = json.dumps({"timestamp": iso(t), "level": "ERROR", "message": j["errorMessage"], "logger": "root",
                           "requestId": request_id, **j}) + "\n"
    else:
        data = "[ERROR] %s: %s\nTraceback (most recent call last):\n%s" % (
            j["errorType"], j["errorMessage"], "".join(j["stackTrace"]))
    send({"type": "log", "data": data, "t": t})


class Context:
    def __init__(self, msg):
        self.aws_request_id = msg["requestId"]
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = msg.get("invokedFunctionArn")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline = msg["deadlineMs"]

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline - now_ms())


def main():
    global request_id
    sys.stdout = RawStream("stdout")
    sys.stderr = RawStream("stderr")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(LambdaLogHandler())
    root.setLevel(logging.WARNING)

    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "."))
    module_name, _, fn = os.environ.get("_HANDLER", "handler.handler").rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), fn)
        send({"type": "ready", "maxRssMb": max_rss_mb()})
    except Exception as e:  # noqa: BLE001
        log_error(e)
        send({"type": "initError", "error": error_json(e)})
        handler = None

    buf = b""
    while True:
        chunk = os.read(FD, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("type") != "invoke" or handler is None:
                continue
            request_id = msg["requestId"]
            try:
                result = handler(msg["event"], Context(msg))
                send({"type": "result", "requestId": request_id, "result": result, "maxRssMb": max_rss_mb()})
            except Exception as e:  # noqa: BLE001
                log_error(e)
                send({"type": "error", "requestId": request_id, "error": error_json(e), "maxRssMb": max_rss_mb()})


if __name__ == "__main__":
    main()
