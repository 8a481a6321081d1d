#!/usr/bin/env bash
# The main job on a fresh machine: set-up, the offline default data, then the pipeline.
#   scripts/demo.sh [--dataroot DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATAROOT="$ROOT/data"
while [ $# -gt 0 ]; do
  case "$1" in
    --dataroot) DATAROOT="$2"; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/fetch_data.sh" "$DATAROOT"
cd "$ROOT"
BIN="$ROOT/target/release"
echo "== datasets found under $DATAROOT"
"$BIN/rf-data" summary --dataroot "$DATAROOT"
