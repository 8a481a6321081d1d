#!/usr/bin/env bash
# Concurrent layer jobs against the same jobs one after another, on one CPU machine: trains every
# layer's flow of a prepared run twice, (a) one layer at a time with every core (--threads P) and
# (b) J layers at a time with P / J cores each (as scripts/benchmark.sh --jobs J runs them), and
# prints both wall times and their ratio.
#
#   scripts/concurrency_bench.sh [--run DIR] [--jobs J] [--num-iter N] [--bin DIR]
#
#   --run DIR     a prepared run folder ({outf}/{net}_{dataset}, with features/; default
#                 output/resnet_fashion-mnist, which scripts/demo.sh makes)
#   --jobs J      concurrent jobs in (b) (default: the number of cores)
#   --num-iter N  flow iterations per layer (default 20)
#   --bin DIR     the binaries (default target/release)
# The flows are written to a temporary folder (the run's features are linked, not copied) that is
# removed at the end; the run itself is not changed. Same seed and options in (a) and (b).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/output/resnet_fashion-mnist"
CORES="$(nproc)"
JOBS="$CORES"
NUM_ITER=20
BIN="$ROOT/target/release"
die() { echo "concurrency_bench.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --run) RUN="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --num-iter) NUM_ITER="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs: '$JOBS' is not a positive number"
[[ "$NUM_ITER" =~ ^[1-9][0-9]*$ ]] || die "--num-iter: '$NUM_ITER' is not a positive number"
[ -f "$RUN/features/manifest.json" ] || die "$RUN/features/manifest.json not found: pass a prepared run with --run (scripts/demo.sh makes output/resnet_fashion-mnist)"
[ -x "$BIN/rf-train" ] || die "$BIN/rf-train not found: cargo build --release, or pass --bin DIR"
RUN="$(cd "$RUN" && pwd)"

# The run folder is {outf}/{net}_{dataset}; the manifest names both.
read -r NET DATASET < <(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(m["net_type"], m["dataset"])' "$RUN/features/manifest.json")
NAME="$(basename "$RUN")"
LAYERS="$("$BIN/rf-data" layers --net-type "$NET")"
THREADS=$((CORES / JOBS))
[ "$THREADS" -ge 1 ] || THREADS=1

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# train_all OUTF LANES THREADS: every layer, LANES at a time, THREADS threads each; sets SECONDS_TAKEN.
train_all() {
  local outf="$1" lanes="$2" threads="$3" i l start
  mkdir -p "$outf/$NAME"
  ln -s "$RUN/features" "$outf/$NAME/features"
  local -a lane_layers=() pids=()
  local n=0
  for l in $LAYERS; do lane_layers[n % lanes]+=" $l"; n=$((n + 1)); done
  start=$(date +%s%N)
  for ((i = 0; i < lanes; i++)); do
    [ -n "${lane_layers[i]:-}" ] || continue
    (
      for l in ${lane_layers[i]}; do
        "$BIN/rf-train" --net-type "$NET" --dataset "$DATASET" --outf "$outf" --layer "$l" \
          --num-iter "$NUM_ITER" --threads "$threads" --checkpoint-every "$NUM_ITER" \
          >"$outf/train_layer$l.log" 2>&1 || { echo "layer $l failed:" >&2; cat "$outf/train_layer$l.log" >&2; exit 1; }
      done
    ) &
    pids+=($!)
  done
  local failed=0
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  [ "$failed" = 0 ] || die "training failed (logs above)"
  SECONDS_TAKEN="$(python3 -c 'import sys; print(f"{(int(sys.argv[1]) - int(sys.argv[2])) / 1e9:.1f}")' "$(date +%s%N)" "$start")"
}

echo "run $RUN: layers $LAYERS, $NUM_ITER iterations each, $CORES cores"
train_all "$TMP/sequential" 1 "$CORES"
seq_s="$SECONDS_TAKEN"
echo "  one layer at a time, $CORES thread(s):       ${seq_s} s"
train_all "$TMP/concurrent" "$JOBS" "$THREADS"
con_s="$SECONDS_TAKEN"
echo "  $JOBS layers at a time, $THREADS thread(s) each:  ${con_s} s"
echo "  speed-up of the concurrent jobs: $(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$seq_s" "$con_s")x"
