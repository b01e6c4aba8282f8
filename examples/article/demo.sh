#!/usr/bin/env bash
# The article's story on one machine, through CloudWatch Logs (moto) and into MLflow:
#
#   bash examples/article/demo.sh [--otlp] [--count N] [--timeout SECONDS]
#
# 1. services on 127.0.0.1: for the terminal, moto alone from a small virtualenv under
#    target/article-demo/ (stopped when the demo ends); with --otlp, moto and MLflow from
#    `bash tests/services.sh start` (installed once into target/test-services/, reused while they
#    run); when SPANLINE_TEST_MOTO (and, with --otlp, SPANLINE_TEST_MLFLOW) are set already,
#    those are used and nothing is started;
# 2. node run-story.js: the Express app and the functions ot-lambda (Node, text log format) and
#    ot-lambda-py (Python, JSON log format) under the local Lambda harness, output captured the
#    way the awslogs driver and Lambda capture it; call 1 is the cold start, call 2 fails,
#    call 3 times out;
# 3. upload_logs.py: the container's stdout into /ecs/express-app, the functions' into
#    /aws/lambda/ot-lambda and /aws/lambda/ot-lambda-py (PutLogEvents);
# 4. spanline read over the three groups, from the story's start: the waterfall in the terminal;
#    with --otlp also into MLflow (experiment 0), and the trace's address is printed.
#
# The spanline binary: SPANLINE_BIN if set, else target/debug/spanline (built with cargo).
# Services started here keep running for a look at MLflow; stop them with
# `bash tests/services.sh stop`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ARTICLE=$ROOT/examples/article
cd "$ROOT"

otlp=
count=3
timeout=3
while [[ $# -gt 0 ]]; do
  case $1 in
    --otlp) otlp=1 ;;
    --count) count=$2; shift ;;
    --timeout) timeout=$2; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "demo: $*" >&2; exit 1; }

command -v node >/dev/null || die "Node >= 20 is required"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || die "Node >= 20 is required"
command -v python3 >/dev/null || die "Python >= 3.9 is required"

# moto alone, for the terminal: a small virtualenv (about 30 s the first time) and a server on
# a free port, stopped when the demo ends.
moto_only() {
  local venv=$ROOT/target/article-demo/venv pin port
  pin=$(grep -o "'moto\[server\]==[^']*'" tests/services.sh | tr -d "'")
  [[ -n $pin ]] || die "no moto pin in tests/services.sh"
  if [[ ! -f $venv/.pin || $(cat "$venv/.pin") != "$pin" ]]; then
    say "installing $pin into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$pin"
    echo "$pin" >"$venv/.pin"
  fi
  port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$ROOT/target/article-demo"
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$ROOT/target/article-demo/moto.log" 2>&1 &
  MOTO_PID=$!
  trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/" && break
    kill -0 "$MOTO_PID" 2>/dev/null || die "moto did not start: see target/article-demo/moto.log"
    sleep 0.1
  done
  export SPANLINE_TEST_MOTO=http://127.0.0.1:$port
  PY=$venv/bin/python
}

say "services (moto${otlp:+, MLflow})"
PY=${SPANLINE_TEST_PYTHON:-$ROOT/target/test-services/venv/bin/python}
if [[ -n ${SPANLINE_TEST_MOTO:-} && ( -z $otlp || -n ${SPANLINE_TEST_MLFLOW:-} ) ]]; then
  echo "using the running services: moto $SPANLINE_TEST_MOTO${otlp:+, MLflow $SPANLINE_TEST_MLFLOW}" >&2
elif [[ -n $otlp ]]; then
  bash tests/services.sh start
  # shellcheck source=/dev/null
  source target/test-services/env
  PY=${SPANLINE_TEST_PYTHON:-$ROOT/target/test-services/venv/bin/python}
else
  moto_only
fi
"$PY" -c 'import boto3' 2>/dev/null || die "no boto3 in $PY (set SPANLINE_TEST_PYTHON to a python with boto3)"

if [[ -n ${SPANLINE_BIN:-} ]]; then
  BIN=$SPANLINE_BIN
else
  # A debug build of the converter alone (no Lambda handler): the quickest cold build, and
  # fast enough for one trace.
  say "spanline (cargo build --no-default-features --features convert)"
  cargo build --quiet --bin spanline --no-default-features --features convert
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/spanline
fi

if [[ ! -d $ARTICLE/node_modules/opentracing || ! -d $ARTICLE/node_modules/express ]]; then
  say "npm ci (examples/article)"
  (cd "$ARTICLE" && npm ci --no-audit --no-fund)
fi

# Static keys for moto; the real account's settings must not leak in.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

OUT=$ROOT/target/article-demo/$(date -u +%Y%m%dT%H%M%SZ)-$$
start_ms=$(node -e 'console.log(Date.now())')
say "the story: node run-story.js --count $count --timeout $timeout"
node "$ARTICLE/run-story.js" --out "$OUT" --count "$count" --timeout "$timeout"

say "into CloudWatch Logs (moto $SPANLINE_TEST_MOTO)"
"$PY" "$ARTICLE/upload_logs.py" "$OUT" --endpoint-url "$SPANLINE_TEST_MOTO"

groups=(--log-group-name /ecs/express-app --log-group-name /aws/lambda/ot-lambda --log-group-name /aws/lambda/ot-lambda-py)
args=(read "${groups[@]}" --start-time "$start_ms" --endpoint-url "$SPANLINE_TEST_MOTO")
if [[ -n $otlp ]]; then
  args+=(--otlp-endpoint "$SPANLINE_TEST_MLFLOW" --otlp-header x-mlflow-experiment-id=0
    --output "$OUT/spans.jsonl" --terminal)
fi
say "spanline ${args[*]}"
"$BIN" "${args[@]}"

if [[ -n $otlp ]]; then
  trace=$("$PY" -c '
import json, sys
ids = {s["traceId"] for line in open(sys.argv[1]) if line.strip()
       for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}
print(" ".join(sorted(ids)))' "$OUT/spans.jsonl")
  for t in $trace; do
    echo "MLflow: $SPANLINE_TEST_MLFLOW/#/experiments/0/traces (trace tr-$t)"
    echo "        $SPANLINE_TEST_MLFLOW/api/3.0/mlflow/traces/get?trace_id=tr-$t"
  done
fi
