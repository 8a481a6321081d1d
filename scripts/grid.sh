# The benchmark grid's options and checks, shared by scripts/benchmark.sh and
# scripts/slurm/submit.sh (sourced; they define die()). Sets the defaults below.
# shellcheck shell=bash disable=SC2034  # the variables are read by the sourcing scripts

NETS="resnet,densenet"
DATASETS="cifar10,cifar100,svhn"
NUM_ITER=2000
VALIDATION="io,fgsm"
DATAROOT="data"
OUTF="output"
PRETRAINED="pre_trained"
BIN="${RF_BIN:-$ROOT/target/release}"

# The Python that writes the final table (stdlib only): the project's venv when set up.
PY="${RESFLOW_HOME:-$HOME/.cache/resflow}/venv/bin/python"
[ -x "$PY" ] || PY="python3"

# grid_option FLAG VALUE: sets a grid option; fails when FLAG is not one (all take a value).
grid_option() {
  case "$1" in
    --nets) NETS="$2" ;;
    --datasets) DATASETS="$2" ;;
    --num-iter|--num_iter) NUM_ITER="$2" ;;
    --validation) VALIDATION="$2" ;;
    --dataroot) DATAROOT="$2" ;;
    --outf) OUTF="$2" ;;
    --pretrained) PRETRAINED="$2" ;;
    --bin) BIN="$2" ;;
    *) return 1 ;;
  esac
}

# num_layers NET: the number of feature layers of a network, from `rf-data layers` ($RF_DATA,
# else the rf-data beside the other binaries, else target/release's).
num_layers() {
  local rf_data="${RF_DATA:-$BIN/rf-data}" layers list
  [ -x "$rf_data" ] || rf_data="$ROOT/target/release/rf-data"
  layers="$("$rf_data" layers --net-type "$1" 2>/dev/null)" \
    || die "unknown network '$1' (resnet or densenet), or no rf-data to ask (build with cargo build --release, or set RF_DATA)"
  read -r -a list <<<"$layers"
  echo "${#list[@]}"
}

# grid_check: splits the lists (NET_LIST, DATASET_LIST, VAL_LIST), checks them, sets REG_VALS
# (the rf-regress validations) and FGSM (1 when FGSM validation is asked for), and exits 1 naming
# every missing classifier checkpoint with the commands that make it.
grid_check() {
  IFS=',' read -r -a NET_LIST <<<"$NETS"
  IFS=',' read -r -a DATASET_LIST <<<"$DATASETS"
  IFS=',' read -r -a VAL_LIST <<<"$VALIDATION"
  [[ "$NUM_ITER" =~ ^[0-9]+$ ]] || die "--num-iter: '$NUM_ITER' is not a number"
  local net ds v ckpt missing=0
  for net in "${NET_LIST[@]}"; do num_layers "$net" >/dev/null; done
  FGSM=0
  REG_VALS=()
  for v in "${VAL_LIST[@]}"; do
    case "${v,,}" in
      io|ood) REG_VALS+=(ood) ;;
      fgsm) REG_VALS+=(fgsm); FGSM=1 ;;
      *) die "--validation: '$v' is not io or fgsm" ;;
    esac
  done
  for net in "${NET_LIST[@]}"; do
    for ds in "${DATASET_LIST[@]}"; do
      ckpt="$PRETRAINED/${net}_${ds}.safetensors"
      if [ ! -f "$ckpt" ]; then
        missing=1
        cat >&2 <<MSG
$(basename "$0"): missing classifier checkpoint $ckpt
  convert the published weights (${net}_${ds}.pth, links in the original README) with
    $PY scripts/convert_weights.py classifier --net-type $net --dataset $ds $PRETRAINED/${net}_${ds}.pth $ckpt
  or train one with
    rf-classifier train --net-type $net --dataset $ds --dataroot $DATAROOT --out $ckpt
  (paper size: --width 64 for ResNet, 12 for DenseNet, and more --epochs; see rf-classifier train --help)
MSG
      fi
    done
  done
  [ "$missing" = 0 ] || exit 1
}
