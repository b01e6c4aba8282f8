#!/usr/bin/env bash
# What the emitter adds to a release binary: the same small program built with and without one
# span through spanline (emitter only, default features off), both stripped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --no-default-features --example size_baseline --example size_emitter
dir=target/release/examples
for b in size_baseline size_emitter; do strip -o "$dir/$b.stripped" "$dir/$b"; done
base=$(stat -c %s "$dir/size_baseline.stripped")
emit=$(stat -c %s "$dir/size_emitter.stripped")
echo "baseline: $base bytes, with emitter: $emit bytes, added: $((emit - base)) bytes"
