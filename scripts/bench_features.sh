#!/usr/bin/env bash
# Rust vs Python torch feature-extraction throughput (ResNet-34 full width, eval, no grad),
# run alternately so that both see the same machine load. Usage: scripts/bench_features.sh [THREADS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-0}
rounds=${2:-2}
python=$(sed -n 's/^RESFLOW_PYTHON = "\(.*\)"$/\1/p' .cargo/config.toml)
cargo build --release --quiet --example feature_throughput
bin=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/feature_throughput
for batch in 64 256; do
  n=$(( batch == 64 ? 8 : 2 ))
  for _ in $(seq "$rounds"); do
    "$bin" "$batch" "$n" "$threads"
    "$python" scripts/bench_features.py "$batch" "$n" "$threads"
  done
done
