#!/usr/bin/env bash
# One-time (idempotent) set-up: a Python venv with torch==2.13.0 outside the clone, cargo wired
# to its libtorch (no activated venv or LD_LIBRARY_PATH needed afterwards), release binaries built.
#
#   scripts/setup.sh [--cuda | --cpu-only] [--no-build]
#
#   --cuda      build with the `cuda` feature (libtorch_cuda.so kept linked); the default when
#               `nvidia-smi` is found.
#   --cpu-only  minimal libtorch install (1.2 GB instead of 4.7 GB); Python `import torch` then
#               does not work, so weight conversion and the PyTorch parity tests are unavailable.
#   --no-build  stop after the venv and cargo configuration.
#
# Environment: RESFLOW_HOME (default ~/.cache/resflow) holds the venv and the cargo target folder
# (linked as ./target), so that fresh clones reuse earlier builds.
set -euo pipefail

TORCH_VERSION=2.13.0
# The torchvision release built against that torch (scripts/export_torchscript.py, the tests of
# TorchScript models and image folders); full set-up only.
TORCHVISION_VERSION=0.28.0
CPU_ONLY=0
CUDA=0
command -v nvidia-smi >/dev/null 2>&1 && CUDA=1
BUILD=1
for arg in "$@"; do
  case "$arg" in
    --cpu-only) CPU_ONLY=1; CUDA=0 ;;
    --cuda) CUDA=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESFLOW_HOME="${RESFLOW_HOME:-$HOME/.cache/resflow}"
VENV="$RESFLOW_HOME/venv"
say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found; install Python 3.9+ (Debian: apt-get install python3 python3-venv)."
command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) first."
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 cannot create venvs with pip (Debian: apt-get install python3-venv)."

mkdir -p "$RESFLOW_HOME"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv in $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip is not usable in $VENV; remove that folder and rerun."

installed() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if [ "$CPU_ONLY" = 1 ]; then
  if [ "$(installed torch)" != "$TORCH_VERSION" ] || [ -z "$(installed nvidia-cuda-runtime)" ]; then
    say "installing the minimal torch==$TORCH_VERSION (libtorch only)"
    "$PY" -m pip install -q --no-deps "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
else
  if ! "$PY" -c "import torch, torchvision, numpy, safetensors, sklearn, scipy; assert torch.__version__.startswith('$TORCH_VERSION'); assert torchvision.__version__.startswith('$TORCHVISION_VERSION')" 2>/dev/null; then
    say "installing torch==$TORCH_VERSION, torchvision==$TORCHVISION_VERSION with numpy, safetensors, scikit-learn, scipy (about 5 GB)"
    "$PY" -m pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy safetensors scikit-learn==1.9.1 scipy
  fi
fi
TORCH_DIR="$("$PY" - <<'PYEOF'
import importlib.util, os
spec = importlib.util.find_spec("torch")
print(os.path.dirname(spec.origin))
PYEOF
)"
[ -f "$TORCH_DIR/lib/libtorch_cpu.so" ] || die "no libtorch in $TORCH_DIR/lib; remove $VENV and rerun."

# A TrueType font for the text of rf-regress's PNG plots (plotters renders it with ab_glyph; no
# font libraries needed). Debian's fonts-dejavu-core when no usable font is there; RESFLOW_FONT
# may point at any .ttf instead.
have_font() {
  [ -n "${RESFLOW_FONT:-}" ] && return 0
  for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/dejavu/DejaVuSans.ttf \
      /usr/share/fonts/TTF/DejaVuSans.ttf /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf \
      /usr/share/fonts/liberation/LiberationSans-Regular.ttf; do
    [ -f "$f" ] && return 0
  done
  return 1
}
if ! have_font; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing fonts-dejavu-core (text of the report plots)"
    (apt-get install -y -q fonts-dejavu-core >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fonts-dejavu-core >/dev/null 2>&1; }) \
      || say "warning: could not install fonts-dejavu-core; plots will be skipped (set RESFLOW_FONT to a .ttf)"
  else
    say "warning: no DejaVu/Liberation font found; install fonts-dejavu-core or set RESFLOW_FONT to a .ttf for the plots"
  fi
fi

# Cargo configuration (git-ignored, absolute paths so that torch-sys never rebuilds needlessly).
mkdir -p "$ROOT/.cargo"
CONFIG="$ROOT/.cargo/config.toml"
TARGET_DIR="$RESFLOW_HOME/target"
mkdir -p "$TARGET_DIR"
NEW_CONFIG="# Written by scripts/setup.sh; rerun it to regenerate.
[build]
target-dir = \"$TARGET_DIR\"

[env]
LIBTORCH = \"$TORCH_DIR\"
RESFLOW_PYTHON = \"$PY\"
"
if [ ! -f "$CONFIG" ] || [ "$(cat "$CONFIG")" != "$(printf '%s' "$NEW_CONFIG")" ]; then
  printf '%s' "$NEW_CONFIG" > "$CONFIG.tmp" && mv "$CONFIG.tmp" "$CONFIG"
  say "wrote $CONFIG (LIBTORCH=$TORCH_DIR)"
fi
if [ ! -e "$ROOT/target" ] || [ -L "$ROOT/target" ]; then
  ln -sfn "$TARGET_DIR" "$ROOT/target"
fi

if [ "$BUILD" = 1 ]; then
  FEATURES=()
  [ "$CUDA" = 1 ] && FEATURES=(--features cuda)
  say "building release binaries ${FEATURES[*]}"
  (cd "$ROOT" && cargo build --release "${FEATURES[@]}")
fi
say "done. Python: $PY"
