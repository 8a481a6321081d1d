#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (idempotent, cached in $RESFLOW_HOME), then `cargo test`
# with every test binary run even when one fails (--no-fail-fast), and a closing summary line:
# the totals over all binaries and the name of every failed test.
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --no-build
cd "$ROOT"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# "test result: ok. 3 passed; 0 failed; ..." per binary.
read -r passed failed < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$LOG" \
  | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
mapfile -t names < <(sed -nE 's/^test (.*) \.\.\. FAILED$/\1/p' "$LOG")
if [ "$status" != 0 ] && [ "${#names[@]}" = 0 ]; then
  echo "test.sh: cargo test failed before running every test (build error?); see above" >&2
elif [ "${#names[@]}" != 0 ]; then
  echo "test.sh: failed: ${names[*]}" >&2
fi
echo "summary: $passed passed, $failed failed"
exit "$status"
