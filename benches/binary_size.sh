#!/usr/bin/env bash
# What the emitter adds to a release binary: the same small program built with and without one
# span through spanline (emitter only, default features off), both stripped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --no-default-features \
  --example size_baseline --example size_emitter --example size_propagation
dir=${CARGO_TARGET_DIR:-target}/release/examples
for b in size_baseline size_emitter size_propagation; do strip -o "$dir/$b.stripped" "$dir/$b"; done
base=$(stat -c %s "$dir/size_baseline.stripped")
for b in size_emitter size_propagation; do
  size=$(stat -c %s "$dir/$b.stripped")
  echo "$b: $size bytes, added to the $base-byte baseline: $((size - base)) bytes"
done
