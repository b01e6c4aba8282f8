#!/usr/bin/env bash
# The whole test suite, as CI runs it: `bash tests/run.sh`.
# Installs what it needs from the project's own files (cargo-fuzz with cargo install); fails on the
# first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --all-features -- -D warnings

step "emitter-only build: no tokio, AWS SDK, clap or serde_json in its dependency tree"
deps=$(cargo tree --no-default-features -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
echo "$deps" | tr '\n' ' '; echo
for banned in tokio aws-config aws-sdk-cloudwatchlogs aws-sdk-s3 clap serde_json reqwest tonic; do
  if grep -qx "$banned" <<<"$deps"; then
    echo "FAIL: the emitter-only build depends on $banned"
    exit 1
  fi
done
cargo test --no-default-features --lib -q

step "deployment templates: cfn-lint (examples/deploy)"
bash tests/cfn-lint.sh

step "test services: moto, MLflow, Phoenix, rotel on 127.0.0.1 (tests/services.sh)"
# Stopped on any exit, also when a later step fails. The end-to-end tests (tests/e2e.rs) fail
# without the SPANLINE_TEST_* variables the env file exports.
trap 'bash tests/services.sh stop' EXIT
bash tests/services.sh start
# shellcheck source=/dev/null
source target/test-services/env

step "the article's Node dependencies (examples/article), used by tests/article.rs"
(cd examples/article && npm ci --no-audit --no-fund)

step "Rust: unit, property, conformance, end-to-end and doc tests"
cargo test --all-features
# cargo test built the converter binary: the Node package's round-trip test runs it.
export SPANLINE_BIN="$PWD/target/debug/spanline"

step "Node and Python emitter packages (emitters/): installed, conformance vectors, OpenTracing, OpenTelemetry bridge, round trip through the converter"
(cd emitters/node && npm ci --no-audit --no-fund && node --test test/)
python3 -m venv target/emitter-venv
target/emitter-venv/bin/pip install -q -r emitters/python/requirements-dev.txt ./emitters/python
target/emitter-venv/bin/python -m unittest discover -s emitters/python/tests -v

step "the article's story: OpenTracing tracer, Express app, Lambda harness (examples/article)"
(cd examples/article && node --test test/ && python3 -m unittest discover -s . -p 'test_*.py' -v)

step "examples run"
cargo run -q --example handler >/dev/null

step "bounded fuzz runs: every entry point that takes outside bytes (fuzz/fuzz_targets)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
# Each target starts from fuzz/seeds-<target> (realistic inputs, and the input of every crash
# found before) and runs FUZZ_SECONDS (default 25) seconds; a crash fails the suite and leaves
# its input in fuzz/artifacts/<target>/. Further arguments go to libFuzzer.
fuzz() {
  local target=$1 corpus
  shift
  corpus=$(mktemp -d)
  cp "fuzz/seeds-$target"/* "$corpus/"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="${FUZZ_SECONDS:-25}" -rss_limit_mb=2048 "$@"
  rm -rf "$corpus"
}
fuzz decode
# Inputs of up to 1 KiB hold a few invocations' lines: 2.3 times the executions of 4 KiB inputs,
# and as much coverage (the limits of the target are sized for them).
fuzz convert -max_len=1024
for target in payload platform checkpoint terminal otlp_response propagation; do
  fuzz "$target"
done

echo
echo "all tests passed"
