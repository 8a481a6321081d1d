#!/usr/bin/env bash
# The reference's full benchmark grid on one GPU machine, resumable, ending in one table.
#
#   scripts/benchmark.sh [--nets resnet,densenet] [--datasets cifar10,cifar100,svhn]
#                        [--gpus 0,1,2,3] [--jobs J] [--num-iter 2000] [--validation io,fgsm]
#                        [--dataroot data] [--outf output] [--pretrained pre_trained]
#                        [--bin DIR] [--force] [--dry-run]
#
# Per (net, dataset), in order:
#   rf-fgsm                                   (FGSM validation only)
#   rf-prepare     [--validation-src fgsm]    features of train/test/OOD [and FGSM] sets
#   rf-mahalanobis [--validation-src fgsm]    Mahalanobis scores
#   rf-train --layer L --resume               every layer (ResNet 0..4, DenseNet 0..3), in parallel:
#                                             J jobs at a time (--jobs, default one per GPU in
#                                             --gpus); layer L runs in lane L mod J, on GPU
#                                             gpus[lane mod #gpus]; each job gets --threads
#                                             (cores / J), its share of the CPU cores
#   rf-score       [--validation-src fgsm]    residual flow scores
#   rf-regress                                both detectors x both validations
# then scripts/benchmark_table.py writes {outf}/benchmark.md next to the published numbers.
#
# Resumable: a step that succeeded writes {outf}/{net}_{dataset}/.bench/{step}.done holding its
# command (without --gpu/--outf); it is skipped when that marker matches the command it would run
# now and no step it depends on is run again. --force redoes every step. Logs go to
# {outf}/{net}_{dataset}/logs/{step}.log.
# --dry-run prints the commands in order (with their GPU) and the skipped steps, runs nothing.
# On a machine without a GPU the stages use the CPU (and say so); --jobs 2 then trains two layers
# at a time with half the cores each, which beats one layer at a time with every core where a
# job's kernels are too small to use all cores (scripts/concurrency_bench.sh measures both).
# Binaries: --bin, else $RF_BIN, else target/release (cargo build --release --features cuda).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=scripts/grid.sh
source "$ROOT/scripts/grid.sh"
GPUS="0"
JOBS=""
FORCE=0
DRY=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "benchmark.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --gpus) GPUS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) grid_option "$1" "${2:-}" || die "unknown option '$1' (see --help)"; shift 2 ;;
  esac
done

IFS=',' read -r -a GPU_LIST <<<"$GPUS"
[ "${#GPU_LIST[@]}" -gt 0 ] || die "--gpus needs at least one GPU index"
for g in "${GPU_LIST[@]}"; do [[ "$g" =~ ^[0-9]+$ ]] || die "--gpus: '$g' is not a GPU index"; done
JOBS="${JOBS:-${#GPU_LIST[@]}}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs: '$JOBS' is not a positive number of jobs"
# Each concurrent layer job gets an equal share of the cores: libtorch would otherwise start one
# thread per core in every job, and oversubscribed cores spin and thrash.
CORES="$(nproc)"
THREADS=$((CORES / JOBS))
[ "$THREADS" -ge 1 ] || THREADS=1
# --- checks before anything runs -------------------------------------------------------------
for ds in ${DATASETS//,/ }; do
  case "$ds" in
    cifar10|cifar100|svhn) ;;
    *) echo "benchmark.sh: note: '$ds' is not one of the paper's data sets (cifar10, cifar100, svhn)" >&2 ;;
  esac
done
grid_check

if [ "$DRY" = 0 ]; then
  need=(rf-prepare rf-mahalanobis rf-train rf-score rf-regress)
  [ "$FGSM" = 1 ] && need+=(rf-fgsm)
  for b in "${need[@]}"; do
    hint=""
    [ "$b" = rf-fgsm ] && hint=" (or pass --validation io to skip FGSM validation)"
    [ -x "$BIN/$b" ] || die "$BIN/$b not found: build with 'scripts/setup.sh --cuda && cargo build --release --features cuda' or pass --bin DIR$hint"
  done
  if [ "$FGSM" = 1 ]; then
    for b in rf-prepare rf-mahalanobis rf-score; do
      "$BIN/$b" --help 2>/dev/null | grep -q -- --validation-src \
        || die "$BIN/$b has no --validation-src (FGSM validation, issue 6); pass --validation io"
    done
  fi
fi

# --- steps -----------------------------------------------------------------------------------
declare -A RAN=()   # "{net}_{dataset}/{step}" -> 1 when run (or, in a dry run, to be run) now

# key CMD...: the marker text of a command: its arguments without the binary folder, --gpu, --outf.
key() {
  local out=("${1##*/}") skip=0 a
  shift
  for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in --gpu|--outf|--threads) skip=1; continue ;; esac
    out+=("$a")
  done
  printf '%s\n' "${out[*]}"
}

# needs_run RUN STEP "DEP..." CMD...: whether STEP must run (forced, no matching marker, or a
# dependency runs now); marks it in RAN, or prints the skip.
needs_run() {
  local run="$1" step="$2" deps="$3" d marker
  shift 3
  marker="$OUTF/$run/.bench/$step.done"
  local go=0
  [ "$FORCE" = 1 ] && go=1
  for d in $deps; do [ -n "${RAN[$run/$d]:-}" ] && go=1; done
  if [ "$go" = 0 ] && { [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$(key "$@")" ]; }; then go=1; fi
  if [ "$go" = 1 ]; then
    RAN[$run/$step]=1
    return 0
  fi
  echo "# skip $run/$step (done; --force redoes)"
  return 1
}

mark_done() {  # RUN STEP CMD...
  local run="$1" step="$2"
  shift 2
  mkdir -p "$OUTF/$run/.bench"
  key "$@" >"$OUTF/$run/.bench/$step.done.tmp"
  mv "$OUTF/$run/.bench/$step.done.tmp" "$OUTF/$run/.bench/$step.done"
}

show() {  # WHERE CMD...: one command line as the dry run prints it
  local where="$1"
  shift
  printf '[%s]' "$where"
  printf ' %q' "$@"
  printf '\n'
}

# step RUN STEP WHERE "DEPS" CMD...: one sequential step.
step() {
  local run="$1" s="$2" where="$3" deps="$4"
  shift 4
  needs_run "$run" "$s" "$deps" "$@" || return 0
  show "$where" "$@"
  [ "$DRY" = 1 ] && return 0
  mkdir -p "$OUTF/$run/logs"
  local log="$OUTF/$run/logs/$s.log"
  if ! "$@" 2>&1 | tee "$log"; then
    echo "benchmark.sh: $run/$s failed; log: $log" >&2
    exit 1
  fi
  mark_done "$run" "$s" "$@"
}

# fresh_unless_interrupted RUN LAYER CMD...: removes the layer's flow checkpoint before training,
# unless it belongs to an interrupted or failed run of this very command (no --force, features not
# re-prepared), which --resume then continues; records the attempt.
fresh_unless_interrupted() {
  local run="$1" l="$2" k
  shift 2
  k="$(key "$@")"
  local running="$OUTF/$run/.bench/train_layer$l.running"
  if [ "$FORCE" = 1 ] || [ -n "${RAN[$run/prepare]:-}" ] || [ "$(cat "$running" 2>/dev/null || true)" != "$k" ]; then
    rm -rf "$OUTF/$run/flow/layer_$l"
  fi
  mkdir -p "$OUTF/$run/.bench"
  printf '%s\n' "$k" >"$running"
}

# train_layers RUN NET DATASET: every layer, JOBS at a time: layer L in lane L mod JOBS, on GPU
# gpus[lane mod #gpus], with THREADS compute threads; one job per lane at a time; waits for all
# and fails if any failed.
train_layers() {
  local run="$1" net="$2" ds="$3" n l i g
  n="$(num_layers "$net")"
  local -a lanes=()
  for ((i = 0; i < JOBS; i++)); do lanes[i]=""; done
  for ((l = 0; l < n; l++)); do
    i=$((l % JOBS))
    g="${GPU_LIST[$((i % ${#GPU_LIST[@]}))]}"
    local cmd=("$BIN/rf-train" "${COMMON[@]}" --gpu "$g" --layer "$l" --num-iter "$NUM_ITER" --resume --threads "$THREADS")
    needs_run "$run" "train_layer$l" "prepare" "${cmd[@]}" || continue
    show "gpu $g" "${cmd[@]}"
    lanes[i]+=" $l"
  done
  [ "$DRY" = 1 ] && return 0
  mkdir -p "$OUTF/$run/logs"
  echo "  layer jobs: up to $JOBS at a time, $THREADS compute thread(s) each ($CORES cores)"
  local -a pids=()
  for ((i = 0; i < JOBS; i++)); do
    [ -n "${lanes[i]}" ] || continue
    g="${GPU_LIST[$((i % ${#GPU_LIST[@]}))]}"
    (
      for l in ${lanes[i]}; do
        cmd=("$BIN/rf-train" "${COMMON[@]}" --gpu "$g" --layer "$l" --num-iter "$NUM_ITER" --resume --threads "$THREADS")
        log="$OUTF/$run/logs/train_layer$l.log"
        fresh_unless_interrupted "$run" "$l" "${cmd[@]}"
        echo "  gpu $g: $run layer $l (log: $log)"
        if ! "${cmd[@]}" >"$log" 2>&1; then
          echo "benchmark.sh: $run/train_layer$l failed on gpu $g; log: $log" >&2
          exit 1
        fi
        mark_done "$run" "train_layer$l" "${cmd[@]}"
        rm -f "$OUTF/$run/.bench/train_layer$l.running"
        echo "  gpu $g: $run layer $l done"
      done
    ) &
    pids+=($!)
  done
  local failed=0 p
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ "$failed" = 0 ] || { echo "benchmark.sh: training of $run failed" >&2; exit 1; }
}

G0="${GPU_LIST[0]}"
VSRC=()
[ "$FGSM" = 1 ] && VSRC=(--validation-src fgsm)
for net in "${NET_LIST[@]}"; do
  for ds in "${DATASET_LIST[@]}"; do
    run="${net}_${ds}"
    echo "== $run"
    COMMON=(--net-type "$net" --dataset "$ds" --dataroot "$DATAROOT" --outf "$OUTF")
    ckpt="$PRETRAINED/${net}_${ds}.safetensors"
    n="$(num_layers "$net")"
    train_deps=""
    for ((l = 0; l < n; l++)); do train_deps+=" train_layer$l"; done
    if [ "$FGSM" = 1 ]; then
      step "$run" fgsm "gpu $G0" "" "$BIN/rf-fgsm" "${COMMON[@]}" --gpu "$G0" --classifier "$ckpt"
    fi
    step "$run" prepare "gpu $G0" "fgsm" \
      "$BIN/rf-prepare" "${COMMON[@]}" --gpu "$G0" --classifier "$ckpt" "${VSRC[@]}"
    step "$run" mahalanobis "gpu $G0" "prepare" \
      "$BIN/rf-mahalanobis" "${COMMON[@]}" --gpu "$G0" "${VSRC[@]}"
    train_layers "$run" "$net" "$ds"
    step "$run" score "gpu $G0" "prepare $train_deps" \
      "$BIN/rf-score" "${COMMON[@]}" --gpu "$G0" "${VSRC[@]}"
    for v in "${REG_VALS[@]}"; do
      step "$run" "regress_mahalanobis_$v" cpu "mahalanobis" \
        "$BIN/rf-regress" --detector mahalanobis --net-type "$net" --dataset "$ds" \
        --validation-src "$v" --outf "$OUTF"
      step "$run" "regress_resflow_$v" cpu "score" \
        "$BIN/rf-regress" --detector resflow --net-type "$net" --dataset "$ds" \
        --validation-src "$v" --outf "$OUTF"
    done
  done
done

echo "== table"
TABLE=("$PY" "$ROOT/scripts/benchmark_table.py" --outf "$OUTF" --nets "$NETS" --datasets "$DATASETS")
show cpu "${TABLE[@]}"
[ "$DRY" = 1 ] && exit 0
"${TABLE[@]}"
