#!/usr/bin/env bash
# Validates the deployment templates in examples/deploy/ with cfn-lint (pinned, installed once
# into target/cfn-lint/venv). Fails on any error or warning, and first proves that it can fail:
# a copy of a template with a deliberate mistake must be rejected.
#
#   bash tests/cfn-lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PIN='cfn-lint==1.58.0 dockerfile==3.4.0'
PY=${SPANLINE_SERVICES_PYTHON:-python3}
DIR=$PWD/target/cfn-lint
VENV=$DIR/venv

if [[ ! -x $VENV/bin/cfn-lint || $(cat "$VENV/.spanline-pin" 2>/dev/null) != "$PIN" ]]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  # shellcheck disable=SC2086 # two pins
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q $PIN
  echo "$PIN" >"$VENV/.spanline-pin"
fi

templates=(examples/deploy/*.yaml)
((${#templates[@]} > 0)) || { echo "cfn-lint: no templates in examples/deploy"; exit 1; }

# The check must be able to fail: a copy of each template with an invalid enum value must be
# rejected.
mkdir -p "$DIR/broken"
broken() { # template sed-expression
  local out
  out=$DIR/broken/$(basename "$1")
  sed "$2" "$1" >"$out"
  cmp -s "$1" "$out" && { echo "FAIL: the mistake ($2) was not introduced into $1"; exit 1; }
  if "$VENV/bin/cfn-lint" "$out" >"$out.log" 2>&1; then
    echo "FAIL: cfn-lint accepted $out ($2)"
    exit 1
  fi
}
broken examples/deploy/subscription.yaml 's/StreamMode: ON_DEMAND/StreamMode: SOMETIMES/'
broken examples/deploy/scheduled.yaml 's/LaunchType: FARGATE/LaunchType: FARGATO/'

"$VENV/bin/cfn-lint" --version
"$VENV/bin/cfn-lint" "${templates[@]}"
echo "cfn-lint: ${templates[*]}: valid"

# The image the scheduled template runs: parsed, multi-stage, minimal, non-root; and the check
# must be able to fail (a copy running as root is rejected).
sed 's/^USER nonroot:nonroot$/USER root/' examples/deploy/Dockerfile >"$DIR/broken/Dockerfile"
cmp -s examples/deploy/Dockerfile "$DIR/broken/Dockerfile" && { echo "FAIL: the Dockerfile mistake was not introduced"; exit 1; }
if "$VENV/bin/python" tests/dockerfile_check.py "$DIR/broken/Dockerfile"; then
  echo "FAIL: the Dockerfile check accepted a root user"
  exit 1
fi
"$VENV/bin/python" tests/dockerfile_check.py examples/deploy/Dockerfile
echo "Dockerfile: examples/deploy/Dockerfile: multi-stage, distroless, non-root"
