#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (idempotent, cached in $RESFLOW_HOME), then `cargo test`.
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --no-build
cd "$ROOT"
cargo test "$@"
