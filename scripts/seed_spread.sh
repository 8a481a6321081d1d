#!/usr/bin/env bash
# How much the quick demo's figures move with the classifier: the demo once per classifier seed
# (each its own classifier and output folder), then one table of mean, standard deviation and range
# of every detector's metrics per OOD set (scripts/seed_spread.py).
#
#   scripts/seed_spread.sh [--seeds 0,1,2,3,4] [--outf output/seeds] [--baselines LIST] [--gpu N]
#
# Writes OUTF/seed_N/ per seed and OUTF/seed_spread.md. Each seed costs a demo run (about 8
# minutes on a 2-core CPU with the classifier training, plus the baselines: ODIN alone adds 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SEEDS=0,1,2,3,4
OUTF="$ROOT/output/seeds"
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) SEEDS="$2"; shift 2 ;;
    --outf) OUTF="$2"; shift 2 ;;
    --baselines) EXTRA+=(--baselines "$2"); shift 2 ;;
    --gpu) EXTRA+=(--gpu "$2"); shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "seed_spread.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUTF"
RESULTS=()
for seed in ${SEEDS//,/ }; do
  echo "=== classifier seed $seed"
  LOG="$OUTF/seed_$seed.log"
  "$ROOT/scripts/demo.sh" --seed "$seed" --outf "$OUTF/seed_$seed" "${EXTRA[@]}" > "$LOG" 2>&1 \
    || { echo "seed_spread.sh: the demo failed for seed $seed; see $LOG" >&2; exit 1; }
  tail -1 "$LOG"
  RESULTS+=("$OUTF/seed_$seed/resnet_fashion-mnist/results.json")
done
"${RESFLOW_HOME:-$HOME/.cache/resflow}/venv/bin/python" "$ROOT/scripts/seed_spread.py" "${RESULTS[@]}" > "$OUTF/seed_spread.md.partial"
mv "$OUTF/seed_spread.md.partial" "$OUTF/seed_spread.md"
cat "$OUTF/seed_spread.md"
