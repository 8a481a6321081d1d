#!/usr/bin/env bash
# The benchmark grid as Slurm jobs, for when one machine is not enough.
#
#   scripts/slurm/submit.sh [--nets resnet,densenet] [--datasets cifar10,cifar100,svhn]
#                           [--num-iter 2000] [--validation io,fgsm] [--dataroot data]
#                           [--outf output] [--pretrained pre_trained] [--bin DIR]
#                           [--partition gpu] [--account ACCOUNT] [--gres gpu:1] [--cpus 8]
#                           [--mem 64G] [--time-prepare 04:00:00] [--time-train 12:00:00]
#                           [--time-score 06:00:00] [--max-parallel N] [--jobdir DIR] [--dry-run]
#
# Generates job scripts in --jobdir (default {outf}/slurm) and submits them with sbatch:
#   prepare_{net}_{dataset}.sh   per (net, dataset): rf-fgsm, rf-prepare [--validation-src fgsm]
#   train_array.sh               ONE job array, one task per (net, dataset, layer): rf-train --resume,
#                                --dependency=afterok:<every prepare job>
#   score_{net}_{dataset}.sh     per (net, dataset): rf-mahalanobis, rf-score, rf-regress for both
#                                detectors and validations, --dependency=afterok:<the array>
#   table.sh                     scripts/benchmark_table.py -> {outf}/benchmark.md (CPU),
#                                --dependency=afterok:<every score job>
# Paths are made absolute; jobs run in the current folder. Within a job the allocated GPU is
# device 0 (Slurm sets CUDA_VISIBLE_DEVICES). A job script run with RF_DRY_RUN=1 prints its
# commands instead of running them (for an array task, set SLURM_ARRAY_TASK_ID).
# --dry-run writes the job scripts, prints them and the sbatch commands (with placeholder job
# ids 1001, 1002, ...) and submits nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

NETS="resnet,densenet"
DATASETS="cifar10,cifar100,svhn"
NUM_ITER=2000
VALIDATION="io,fgsm"
DATAROOT="data"
OUTF="output"
PRETRAINED="pre_trained"
BIN="${RF_BIN:-$ROOT/target/release}"
PARTITION="gpu"
ACCOUNT=""
GRES="gpu:1"
CPUS=8
MEM="64G"
TIME_PREPARE="04:00:00"
TIME_TRAIN="12:00:00"
TIME_SCORE="06:00:00"
MAX_PARALLEL=""
JOBDIR=""
DRY=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "submit.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --nets) NETS="$2"; shift 2 ;;
    --datasets) DATASETS="$2"; shift 2 ;;
    --num-iter|--num_iter) NUM_ITER="$2"; shift 2 ;;
    --validation) VALIDATION="$2"; shift 2 ;;
    --dataroot) DATAROOT="$2"; shift 2 ;;
    --outf) OUTF="$2"; shift 2 ;;
    --pretrained) PRETRAINED="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --account) ACCOUNT="$2"; shift 2 ;;
    --gres) GRES="$2"; shift 2 ;;
    --cpus) CPUS="$2"; shift 2 ;;
    --mem) MEM="$2"; shift 2 ;;
    --time-prepare) TIME_PREPARE="$2"; shift 2 ;;
    --time-train) TIME_TRAIN="$2"; shift 2 ;;
    --time-score) TIME_SCORE="$2"; shift 2 ;;
    --max-parallel) MAX_PARALLEL="$2"; shift 2 ;;
    --jobdir) JOBDIR="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
DATAROOT="$(abs "$DATAROOT")"
OUTF="$(abs "$OUTF")"
PRETRAINED="$(abs "$PRETRAINED")"
BIN="$(abs "$BIN")"
JOBDIR="$(abs "${JOBDIR:-$OUTF/slurm}")"
WORKDIR="$PWD"

IFS=',' read -r -a NET_LIST <<<"$NETS"
IFS=',' read -r -a DATASET_LIST <<<"$DATASETS"
IFS=',' read -r -a VAL_LIST <<<"$VALIDATION"
[[ "$NUM_ITER" =~ ^[0-9]+$ ]] || die "--num-iter: '$NUM_ITER' is not a number"
[ -z "$MAX_PARALLEL" ] || [[ "$MAX_PARALLEL" =~ ^[0-9]+$ ]] || die "--max-parallel: '$MAX_PARALLEL' is not a number"
num_layers() {
  case "$1" in
    resnet) echo 5 ;;
    densenet) echo 4 ;;
    *) die "unknown network '$1' (resnet or densenet)" ;;
  esac
}
FGSM=0
REG_VALS=()
for v in "${VAL_LIST[@]}"; do
  case "${v,,}" in
    io|ood) REG_VALS+=(ood) ;;
    fgsm) REG_VALS+=(fgsm); FGSM=1 ;;
    *) die "--validation: '$v' is not io or fgsm" ;;
  esac
done
VSRC=""
[ "$FGSM" = 1 ] && VSRC=" --validation-src fgsm"

missing=0
for net in "${NET_LIST[@]}"; do
  num_layers "$net" >/dev/null
  for ds in "${DATASET_LIST[@]}"; do
    if [ ! -f "$PRETRAINED/${net}_${ds}.safetensors" ]; then
      missing=1
      echo "submit.sh: missing classifier checkpoint $PRETRAINED/${net}_${ds}.safetensors (convert the published weights with scripts/convert_weights.py classifier, or train one with rf-classifier train; see scripts/benchmark.sh)" >&2
    fi
  done
done
[ "$missing" = 0 ] || exit 1
if [ "$DRY" = 0 ]; then
  command -v sbatch >/dev/null || die "sbatch not found (use --dry-run to see the jobs)"
  for b in rf-prepare rf-mahalanobis rf-train rf-score rf-regress; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not found: build with 'cargo build --release --features cuda' or pass --bin DIR"
  done
fi

mkdir -p "$JOBDIR/logs"

PY="${RESFLOW_HOME:-$HOME/.cache/resflow}/venv/bin/python"
[ -x "$PY" ] || PY="python3"

# header NAME TIME GPU(0/1) [ARRAY]: the #SBATCH lines and the shared prologue of a job script.
header() {
  local name="$1" time="$2" gpu="$3" array="${4:-}" out="%j"
  [ -n "$array" ] && out="%A_%a"
  echo "#!/usr/bin/env bash"
  echo "#SBATCH --job-name=rf-$name"
  echo "#SBATCH --partition=$PARTITION"
  [ -n "$ACCOUNT" ] && echo "#SBATCH --account=$ACCOUNT"
  echo "#SBATCH --time=$time"
  echo "#SBATCH --cpus-per-task=$CPUS"
  echo "#SBATCH --mem=$MEM"
  [ "$gpu" = 1 ] && echo "#SBATCH --gres=$GRES"
  [ -n "$array" ] && echo "#SBATCH --array=$array"
  echo "#SBATCH --output=$JOBDIR/logs/$name-$out.out"
  cat <<EOF
# Generated by scripts/slurm/submit.sh; RF_DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd $(printf '%q' "$WORKDIR")
# shellcheck disable=SC2034
BIN=$(printf '%q' "$BIN")
run() { if [ "\${RF_DRY_RUN:-0}" = 1 ]; then echo "\$*"; else echo "+ \$*" >&2; "\$@"; fi; }
EOF
}

q() { printf '%q' "$1"; }

NEXT_FAKE=1001
JOB_ID=""
# submit SCRIPT [SBATCH OPTIONS...]: sbatch it (or print it), job id in JOB_ID.
submit() {
  local script="$1"
  shift
  local cmd=(sbatch --parsable "$@" "$script")
  [ $# -gt 0 ] && cmd=(sbatch --parsable --kill-on-invalid-dep=yes "$@" "$script")
  if [ "$DRY" = 1 ]; then
    JOB_ID="$NEXT_FAKE"
    NEXT_FAKE=$((NEXT_FAKE + 1))
    echo "### $script"
    cat "$script"
    echo "### submit (job $JOB_ID):"
    printf '%q ' "${cmd[@]}"
    printf '\n\n'
  else
    JOB_ID="$("${cmd[@]}")"
    JOB_ID="${JOB_ID%%;*}"
    echo "submitted $(basename "$script"): job $JOB_ID"
  fi
}

COMMON_OF() {  # NET DATASET: the common flags
  echo "--net-type $1 --dataset $2 --dataroot $(q "$DATAROOT") --outf $(q "$OUTF") --gpu 0"
}

# 1. prepare jobs
PREPARE_IDS=()
TASKS=()
for net in "${NET_LIST[@]}"; do
  for ds in "${DATASET_LIST[@]}"; do
    f="$JOBDIR/prepare_${net}_${ds}.sh"
    ckpt="$(q "$PRETRAINED/${net}_${ds}.safetensors")"
    {
      header "prepare_${net}_${ds}" "$TIME_PREPARE" 1
      [ "$FGSM" = 1 ] && echo "run \"\$BIN/rf-fgsm\" $(COMMON_OF "$net" "$ds") --classifier $ckpt"
      echo "run \"\$BIN/rf-prepare\" $(COMMON_OF "$net" "$ds") --classifier $ckpt$VSRC"
    } >"$f"
    chmod +x "$f"
    submit "$f"
    PREPARE_IDS+=("$JOB_ID")
    n="$(num_layers "$net")"
    for ((l = 0; l < n; l++)); do TASKS+=("$net $ds $l"); done
  done
done

# 2. one array job: one (net, dataset, layer) per task
f="$JOBDIR/train_array.sh"
array="0-$((${#TASKS[@]} - 1))"
[ -n "$MAX_PARALLEL" ] && array+="%$MAX_PARALLEL"
{
  header "train" "$TIME_TRAIN" 1 "$array"
  echo "# task id -> network, data set, layer"
  echo "TASKS=("
  for t in "${TASKS[@]}"; do echo "  \"$t\""; done
  echo ")"
  echo "read -r NET DATASET LAYER <<<\"\${TASKS[\$SLURM_ARRAY_TASK_ID]}\""
  echo "run \"\$BIN/rf-train\" --net-type \"\$NET\" --dataset \"\$DATASET\" --dataroot $(q "$DATAROOT") --outf $(q "$OUTF") --gpu 0 --layer \"\$LAYER\" --num-iter $NUM_ITER --resume"
} >"$f"
chmod +x "$f"
deps="$(IFS=:; echo "${PREPARE_IDS[*]}")"
submit "$f" "--dependency=afterok:$deps"
ARRAY_ID="$JOB_ID"

# 3. scoring and regression per (net, dataset), after the whole array
SCORE_IDS=()
for net in "${NET_LIST[@]}"; do
  for ds in "${DATASET_LIST[@]}"; do
    f="$JOBDIR/score_${net}_${ds}.sh"
    {
      header "score_${net}_${ds}" "$TIME_SCORE" 1
      echo "run \"\$BIN/rf-mahalanobis\" $(COMMON_OF "$net" "$ds")$VSRC"
      echo "run \"\$BIN/rf-score\" $(COMMON_OF "$net" "$ds")$VSRC"
      for v in "${REG_VALS[@]}"; do
        for det in mahalanobis resflow; do
          echo "run \"\$BIN/rf-regress\" --detector $det --net-type $net --dataset $ds --validation-src $v --outf $(q "$OUTF")"
        done
      done
    } >"$f"
    chmod +x "$f"
    submit "$f" "--dependency=afterok:$ARRAY_ID"
    SCORE_IDS+=("$JOB_ID")
  done
done

# 4. the final table
f="$JOBDIR/table.sh"
{
  header "table" "00:10:00" 0
  echo "run $(q "$PY") $(q "$ROOT/scripts/benchmark_table.py") --outf $(q "$OUTF") --nets $NETS --datasets $DATASETS"
} >"$f"
chmod +x "$f"
deps="$(IFS=:; echo "${SCORE_IDS[*]}")"
submit "$f" "--dependency=afterok:$deps"

echo "job scripts in $JOBDIR; logs in $JOBDIR/logs; the table will be $OUTF/benchmark.md"
