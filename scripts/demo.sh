#!/usr/bin/env bash
# The main job on a fresh machine: set-up, the offline default data (Fashion-MNIST in-distribution;
# MNIST, digits, photo crops, uniform and Gaussian noise as OOD sets), a classifier, then every
# stage of the pipeline (validated on the OOD sets and, without OOD data, on FGSM samples), the
# comparison table of every detector, and the detector bundle scoring a few images of each set.
#
#   scripts/demo.sh [--full] [--force] [--dataroot DIR] [--outf DIR] [--gpu N] [--seed N]
#                   [--baselines LIST]
#
#   --full      the full-size run (all images, 2000 flow iterations); the default is sized to finish
#               in about 15 minutes on a 2-core CPU after set-up
#   --force     redo every stage (by default a stage is skipped when its outputs exist and were made
#               from the same inputs and options)
#   --seed N    the classifier's seed (default 0; N > 0 trains pre_trained/resnet_fashion-mnist_seedN)
#   --baselines LIST   the post-hoc detectors to run, comma-separated (default: all thirteen)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATAROOT="$ROOT/data"
OUTF="$ROOT/output"
FULL=0
FORCE=0
GPU=()
SEED=0
BASELINES=""
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1; shift ;;
    --force) FORCE=1; shift ;;
    --dataroot) DATAROOT="$2"; shift 2 ;;
    --outf) OUTF="$2"; shift 2 ;;
    --gpu) GPU=(--gpu "$2"); shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --baselines) BASELINES="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/fetch_data.sh" "$DATAROOT"
SETUP_DONE=$(date +%s)
cd "$ROOT"
BIN="$ROOT/target/release"
NET=resnet
DATASET=fashion-mnist
CLASSIFIER="$ROOT/pre_trained/${NET}_${DATASET}.safetensors"
[ "$SEED" = 0 ] || CLASSIFIER="$ROOT/pre_trained/${NET}_${DATASET}_seed$SEED.safetensors"
RUN="$OUTF/${NET}_${DATASET}"
STAMPS="$RUN/.stamps"
if [ "$FULL" = 1 ]; then
  LIMITS=()
  TRAIN_OPTS=(--num-iter 2000)
else
  LIMITS=(--max-train 20000 --max-test 1500 --max-ood 1500)
  TRAIN_OPTS=(--num-iter 1000 --validation-total 2000 --monitor-every 50 --checkpoint-every 250)
fi
# Flow training runs one layer per core at a time, each job with its share of the threads (the
# demo's layers are small: k = 4..32, and one thread per job keeps the cores busy where one job
# with every thread would wait on tiny kernels); on a GPU, one layer at a time.
CORES="$(nproc)"
TRAIN_JOBS="$CORES"
[ "${#GPU[@]}" = 0 ] || TRAIN_JOBS=1
TRAIN_THREADS=$((CORES / TRAIN_JOBS))
[ "$TRAIN_THREADS" -ge 1 ] || TRAIN_THREADS=1
COMMON=(--dataset "$DATASET" --net-type "$NET" --dataroot "$DATAROOT" --outf "$OUTF" "${GPU[@]}")

# stage NAME UPSTREAM -- COMMAND...: runs COMMAND unless the stamp of NAME records the same command
# and the same upstream stamp; then records them. A changed upstream stage reruns everything after it.
# With FRESH=DIR, DIR (a resumable checkpoint) is removed first unless it belongs to an interrupted
# run of this very stage (same command and upstream, no --force).
stage() {
  local name="$1" upstream="$2"; shift 3
  local key
  key="$(printf '%s\n' "$*" "$(cat "$STAMPS/$upstream" 2>/dev/null || true)" | sha256sum | cut -d' ' -f1)"
  if [ "$FORCE" = 0 ] && [ "$(cat "$STAMPS/$name" 2>/dev/null || true)" = "$key" ]; then
    echo "== $name: up to date (--force to redo)"
    return
  fi
  echo "== $name"
  if [ -n "${FRESH:-}" ] && { [ "$FORCE" = 1 ] || [ "$(cat "$STAMPS/$name.running" 2>/dev/null || true)" != "$key" ]; }; then
    rm -rf "$FRESH"
  fi
  mkdir -p "$STAMPS"
  rm -f "$STAMPS/$name"
  echo "$key" > "$STAMPS/$name.running"
  local began
  began=$(date +%s)
  "$@"
  mv "$STAMPS/$name.running" "$STAMPS/$name"
  echo "== $name: done in $(($(date +%s) - began)) s"
}

mkdir -p "$STAMPS"
# The classifier is trained once and then reused (a converted or earlier one too); its stamp is
# the checksum of the weights, so a new classifier reruns every later stage.
if [ "$FORCE" = 1 ] || [ ! -f "$CLASSIFIER" ]; then
  echo "== classifier"
  began=$(date +%s)
  "$BIN/rf-classifier" train "${COMMON[@]}" --seed "$SEED" --out "$CLASSIFIER"
  echo "== classifier: done in $(($(date +%s) - began)) s"
else
  echo "== classifier: reusing $CLASSIFIER"
fi
sha256sum "$CLASSIFIER" | cut -d' ' -f1 > "$STAMPS/classifier"
# FGSM samples: validation without OOD data (the detector bundle is tuned on them).
FGSM_LIMIT=()
[ "$FULL" = 1 ] || FGSM_LIMIT=(--max-test 1500)
stage fgsm classifier -- "$BIN/rf-fgsm" "${COMMON[@]}" --classifier "$CLASSIFIER" "${FGSM_LIMIT[@]}"
stage prepare fgsm -- "$BIN/rf-prepare" "${COMMON[@]}" --classifier "$CLASSIFIER" "${LIMITS[@]}" --validation-src fgsm
stage mahalanobis prepare -- "$BIN/rf-mahalanobis" "${COMMON[@]}" --batch-size 200 --validation-src fgsm
# Each lane takes the next untrained layer, deepest (largest) first, until none is left.
LAYERS="$("$BIN/rf-data" layers --net-type "$NET")"
CLAIMS="$(mktemp -d)"
trap 'rm -rf "$CLAIMS"' EXIT
echo "== flow training: $TRAIN_JOBS layer(s) at a time, $TRAIN_THREADS thread(s) each"
train_lane() {
  local layer
  for layer in $(tr ' ' '\n' <<<"$LAYERS" | sort -rn); do
    mkdir "$CLAIMS/$layer" 2>/dev/null || continue
    FRESH="$RUN/flow/layer_$layer" \
      stage "train_layer$layer" prepare -- "$BIN/rf-train" "${COMMON[@]}" --layer "$layer" --resume \
      --threads "$TRAIN_THREADS" "${TRAIN_OPTS[@]}"
  done
}
LANES=()
for ((lane = 0; lane < TRAIN_JOBS; lane++)); do
  train_lane &
  LANES+=($!)
done
TRAIN_FAILED=0
for pid in "${LANES[@]}"; do wait "$pid" || TRAIN_FAILED=1; done
[ "$TRAIN_FAILED" = 0 ] || { echo "demo.sh: flow training failed (see above)" >&2; exit 1; }
LAST_LAYER="$(tr ' ' '\n' <<<"$LAYERS" | sort -n | tail -1)"
stage score "train_layer$LAST_LAYER" -- "$BIN/rf-score" "${COMMON[@]}" --batch-size 200 --validation-src fgsm
# regress NAME UPSTREAM DETECTOR: the detector validated on the OOD sets, then on FGSM samples.
regress() {
  stage "$1" "$2" -- "$BIN/rf-regress" --detector "$3" --net-type "$NET" --dataset "$DATASET" --outf "$OUTF"
  stage "$1_fgsm" "$1" -- "$BIN/rf-regress" --detector "$3" --net-type "$NET" --dataset "$DATASET" --outf "$OUTF" --validation-src fgsm --no-plots
}
regress regress_mahalanobis mahalanobis mahalanobis
regress regress_resflow score resflow
# The post-hoc detectors (MSP, ODIN, Energy, MaxLogit, KNN, ViM and OpenOOD v1.5's leaderboard:
# RMDS, ReAct, ASH, SCALE, GEN, fDBD, NNGuide) on the same classifier and splits.
[ -n "$BASELINES" ] || BASELINES="$("$BIN/rf-data" baselines | tr ' ' ',')"
stage baselines prepare -- "$BIN/rf-baselines" "${COMMON[@]}" --batch-size 200 --detectors "$BASELINES" --validation-src fgsm
for detector in ${BASELINES//,/ }; do
  regress "regress_$detector" baselines "$detector"
done

# Use the detector: the bundle (tuned on FGSM samples, no OOD data), then a few images of each set
# scored as a user would score new ones.
BUNDLE="$RUN/bundle"
echo "== bundle"
"$BIN/rf-detect" fit "${COMMON[@]}" --out "$BUNDLE"
SAMPLES="$RUN/samples"
rm -rf "$SAMPLES"
for set in "$DATASET" mnist digits photos uniform gaussian; do
  "$BIN/rf-data" export --dataset "$set" --dataroot "$DATAROOT" --count 3 --out "$SAMPLES" >/dev/null
done
echo
echo "== rf-detect score --bundle $BUNDLE (residual flow; threshold: 95% of in-distribution test images pass)"
"$BIN/rf-detect" score --bundle "$BUNDLE" "${GPU[@]}" "$SAMPLES" 2>/dev/null \
  | awk -F, 'NR > 1 { n = split($1, p, "/"); printf "  %-24s %-4s in-distribution percentile %6.2f\n", p[n], $6, $5 }'

END=$(date +%s)
echo
echo "== every detector on every OOD set (validation on OOD samples; the FGSM-validated comparison,"
echo "   every metric and each detector's own table: $RUN/results.md, plots in $RUN/plots/)"
"$BIN/rf-regress" --summary --net-type "$NET" --dataset "$DATASET" --outf "$OUTF"
echo
echo "set-up $((SETUP_DONE - START)) s, pipeline $((END - SETUP_DONE)) s"
