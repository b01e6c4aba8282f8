#!/usr/bin/env bash
# Real backends for the end-to-end tests (tests/e2e.rs), all bound to 127.0.0.1:
#   moto server (CloudWatch Logs + S3), MLflow (OTLP/HTTP), Arize Phoenix (OTLP/gRPC) and rotel (a
#   collector: OTLP gRPC/HTTP in, OTLP/HTTP out to MLflow).
#
#   bash tests/services.sh start   # install (once, cached), start, wait for health, write the env file
#   bash tests/services.sh stop    # stop every process group this script started
#   source target/test-services/env
#
# Everything lives under target/test-services/: venv/ (pinned, re-installed only when the pin list
# or the Python version changes), state/ (MLflow sqlite, Phoenix working dir; wiped when a server
# is started afresh), logs/, pids/ (one file per service: the PID of its process group leader) and
# env. `start` reuses a service that this script started earlier and is still running, so a
# developer can start once and run `cargo test e2e` repeatedly (tests/run.sh stops them when it
# exits, whoever started them). Ports are fixed; a port held by
# another process is an error, never silently shared.
# The facts behind each command line are in shared/reference/test-services.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$PWD/target/test-services
VENV=$DIR/venv
STATE=$DIR/state
LOGS=$DIR/logs
PIDS=$DIR/pids
PY=${SPANLINE_SERVICES_PYTHON:-python3}   # the interpreter the virtualenv is made from (>= 3.10)
TIMEOUT=${SPANLINE_SERVICES_TIMEOUT:-120} # seconds each service gets to become healthy

# Pinned servers. The OpenTelemetry pair is the reference Zipkin v2 mapping the Zipkin encoder is
# checked against: 1.45.1 is the newest exporter release and its matching SDK.
PINS=(
  'moto[server]==5.2.5'
  'mlflow==3.17.2'
  'arize-phoenix==20.26.1'
  'rotel==0.0.1a15'
  'opentelemetry-exporter-zipkin-json==1.45.1'
  'opentelemetry-sdk==1.45.1'
)

# pip itself, pinned too: the resolver's choices of unpinned transitive packages depend on it.
PIP=pip==26.3

MOTO_PORT=5055
MLFLOW_PORT=5000
PHOENIX_PORT=6006
PHOENIX_GRPC_PORT=4317
ROTEL_GRPC_PORT=14317
ROTEL_HTTP_PORT=14318

say() { printf 'services: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

install() {
  local pyver stamp want
  pyver=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') ||
    die "no Python interpreter '$PY' (set SPANLINE_SERVICES_PYTHON)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "Python $pyver is too old for MLflow and Phoenix: need >= 3.10 (set SPANLINE_SERVICES_PYTHON)"
  want=$(printf '%s\n' "python $pyver" "$PIP" "${PINS[@]}" | sha256sum | cut -d' ' -f1)
  stamp=$VENV/.spanline-pins
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  local t0=$SECONDS
  if [[ ! -x $VENV/bin/python ]] ||
    [[ $("$VENV/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') != "$pyver" ]]; then
    say "creating $VENV (Python $pyver)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  say "installing ${PINS[*]} (a cold install takes about 2 minutes)"
  rm -f "$stamp"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$PIP"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PINS[@]}"
  echo "$want" >"$stamp"
  say "installed in $((SECONDS - t0)) s"
}

# Running services are tracked by pids/<name>: the PID of a session (and process group) leader.
alive() { # name: does any process of its group still run?
  local f=$PIDS/$1 pid
  [[ -s $f ]] || return 1
  pid=$(cat "$f")
  kill -0 -- "-$pid" 2>/dev/null
}

port_open() { # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

launch() { # name port... -- command...
  local name=$1 port
  shift
  while [[ $1 != -- ]]; do
    port=$1
    shift
    ! port_open "$port" || die "$name: port 127.0.0.1:$port is already in use by a process this script did not start; stop it first"
  done
  shift
  say "starting $name"
  rm -f "$PIDS/$name"
  # setsid makes the child a session and process group leader; `$$` of that shell is its PID,
  # which `exec` hands to the server, so the recorded PID is also the group to signal.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDS/$name" "$@" \
    >"$LOGS/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 50); do
    [[ -s $PIDS/$name ]] && return
    sleep 0.1
  done
  die "$name: did not start"
}

# Shows why, stops every service (no orphans), fails.
unhealthy() { # name reason
  say "$1 $2; last lines of $LOGS/$1.log:"
  tail -n 40 "$LOGS/$1.log" >&2
  stop
  exit 1
}

# Polls `check` until it succeeds, the service dies, or TIMEOUT passes.
wait_healthy() { # name check...
  local name=$1
  shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    if ! alive "$name"; then
      unhealthy "$name" "exited"
    fi
    if ((SECONDS >= deadline)); then
      unhealthy "$name" "not healthy after ${TIMEOUT} s"
    fi
    sleep 0.2
  done
}

http_ok() { # url: any HTTP answer when $2 == any, else a 2xx
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") || true
  if [[ ${2:-} == any ]]; then [[ $code != 000 ]]; else [[ $code == 2* ]]; fi
}

start_moto() {
  alive moto && return
  launch moto $MOTO_PORT -- "$VENV/bin/moto_server" -H 127.0.0.1 -p $MOTO_PORT
}

start_mlflow() {
  alive mlflow && return
  rm -rf "$STATE/mlflow"
  mkdir -p "$STATE/mlflow/artifacts"
  # Without MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false it starts 7 worker processes (2.3 GB).
  launch mlflow $MLFLOW_PORT -- env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    "$VENV/bin/mlflow" server --host 127.0.0.1 --port $MLFLOW_PORT --workers 1 \
    --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
    --default-artifact-root "$STATE/mlflow/artifacts"
}

start_phoenix() {
  alive phoenix && return
  rm -rf "$STATE/phoenix"
  mkdir -p "$STATE/phoenix"
  # Phoenix binds its gRPC server to [::]:PORT whatever PHOENIX_HOST says; the launcher rewrites
  # that address to loopback in grpc.aio's add_insecure_port (a private grpcio API: the versions
  # are pinned above) before handing over to Phoenix's own entry point.
  cat >"$STATE/phoenix-launcher.py" <<'EOF'
import sys

from grpc.aio import _server


def _loopback_only(add_insecure_port):
    def wrapper(self, address):
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return add_insecure_port(self, address)

    return wrapper


_server.Server.add_insecure_port = _loopback_only(_server.Server.add_insecure_port)

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve"]
sys.exit(main())
EOF
  launch phoenix $PHOENIX_PORT $PHOENIX_GRPC_PORT -- env \
    PHOENIX_WORKING_DIR="$STATE/phoenix" PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$PHOENIX_PORT \
    PHOENIX_GRPC_PORT=$PHOENIX_GRPC_PORT PHOENIX_TELEMETRY_ENABLED=false \
    PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
    "$VENV/bin/python" "$STATE/phoenix-launcher.py"
}

rotel_agent() {
  "$VENV/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))'
}

start_rotel() {
  alive rotel && return
  local agent
  agent=$(rotel_agent)
  [[ -x $agent ]] || die "rotel: no agent binary at $agent"
  launch rotel $ROTEL_GRPC_PORT $ROTEL_HTTP_PORT -- "$agent" start \
    --otlp-grpc-endpoint 127.0.0.1:$ROTEL_GRPC_PORT --otlp-http-endpoint 127.0.0.1:$ROTEL_HTTP_PORT \
    --exporter otlp --otlp-exporter-endpoint http://127.0.0.1:$MLFLOW_PORT \
    --otlp-exporter-protocol http --otlp-exporter-custom-headers "x-mlflow-experiment-id=0"
}

start() {
  command -v curl >/dev/null || die "curl is required"
  command -v setsid >/dev/null || die "setsid (util-linux) is required"
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  rm -f "$DIR/env"
  install
  local t0=$SECONDS
  # Start all four first, then wait: MLflow and Phoenix take 10-15 s each and start in parallel.
  start_moto
  start_mlflow
  start_phoenix
  start_rotel
  wait_healthy moto http_ok "http://127.0.0.1:$MOTO_PORT/" any
  wait_healthy rotel port_open $ROTEL_GRPC_PORT
  wait_healthy rotel port_open $ROTEL_HTTP_PORT
  wait_healthy mlflow http_ok "http://127.0.0.1:$MLFLOW_PORT/health"
  wait_healthy phoenix http_ok "http://127.0.0.1:$PHOENIX_PORT/healthz"
  wait_healthy phoenix port_open $PHOENIX_GRPC_PORT
  cat >"$DIR/env" <<EOF
# Written by tests/services.sh start; read by tests/e2e.rs.
export SPANLINE_TEST_MOTO=http://127.0.0.1:$MOTO_PORT
export SPANLINE_TEST_MLFLOW=http://127.0.0.1:$MLFLOW_PORT
export SPANLINE_TEST_PHOENIX=http://127.0.0.1:$PHOENIX_PORT
export SPANLINE_TEST_PHOENIX_GRPC=http://127.0.0.1:$PHOENIX_GRPC_PORT
export SPANLINE_TEST_ROTEL_HTTP=http://127.0.0.1:$ROTEL_HTTP_PORT
export SPANLINE_TEST_ROTEL_GRPC=http://127.0.0.1:$ROTEL_GRPC_PORT
export SPANLINE_TEST_PYTHON=$VENV/bin/python
export SPANLINE_TEST_ROTEL_AGENT=$(rotel_agent)
EOF
  say "all services healthy in $((SECONDS - t0)) s; source $DIR/env"
}

stop() {
  # SIGTERM to every group at once (each takes 2-3 s to shut down), SIGKILL to what is left
  # after 10 s.
  local name pid i left
  for name in rotel phoenix mlflow moto; do
    alive "$name" && kill -TERM -- "-$(cat "$PIDS/$name")" 2>/dev/null || true
  done
  for i in $(seq 100); do
    left=
    for name in rotel phoenix mlflow moto; do
      alive "$name" && left+=" $name"
    done
    [[ -z $left ]] && break
    sleep 0.1
  done
  for name in $left; do
    say "$name ignored SIGTERM for 10 s; killing it"
    pid=$(cat "$PIDS/$name")
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -f "$PIDS"/* "$DIR/env"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: bash tests/services.sh start|stop" >&2
    exit 2
    ;;
esac
