#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (idempotent, cached in $RESFLOW_HOME), then `cargo test`
# with every test binary run even when one fails (--no-fail-fast), and a closing summary line:
# the totals over all binaries and the name of every failed test.
#   scripts/test.sh [extra cargo test arguments]
#   scripts/test.sh --portability [extra cargo test arguments]
# --portability runs the suite once per CPU kernel choice that libtorch makes by instruction set:
# oneDNN capped at SSE4.1, at AVX2 and uncapped (the machine's best), then ATen's vectorised
# kernels forced to `default` (no vector ISA), `avx2` and, where the CPU has it, `avx512`; it ends
# with one summary line per setting. Restrict it to the float-sensitive tests with a filter, e.g.
#   scripts/test.sh --portability -- models_ flow_ scoring gaussian prepare fgsm pipeline
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORTABILITY=0
if [ "${1:-}" = --portability ]; then
  PORTABILITY=1
  shift
fi
"$ROOT/scripts/setup.sh" --no-build
cd "$ROOT"
# One libtorch thread per test: `cargo test` already runs one test per core, and libtorch's
# OpenMP threads of concurrent tests (and of the binaries and Python scripts they start) would
# otherwise oversubscribe the cores, where OpenMP's spin-waiting multiplies the CPU time (the
# end-to-end pipeline test: 38 s alone, 197 s next to a compiler on 2 cores). Python inherits it.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# The `cuda` feature's link check (tests/it/cuda_link.rs) inspects a `--features cuda` build of
# rf-data: built here, in the shared target folder (dependencies reused, the crate built once more),
# and kept under another name because `cargo test` then rebuilds rf-data without the feature. The
# example target makes Cargo resolve the dev-dependencies' features as `cargo test` does, so that
# the dependencies built here are the ones the tests use (otherwise `image` and `png` are built
# twice, with and without `bitflags/std`).
CUDA_BUILD="$(cargo build --features cuda --bin rf-data --example feature_throughput \
  --message-format=json-render-diagnostics \
  | sed -n 's/.*"executable":"\([^"]*rf-data\)".*/\1/p')"
[ -n "$CUDA_BUILD" ] || { echo "test.sh: cargo build --features cuda failed" >&2; exit 1; }
cp "$CUDA_BUILD" "$CUDA_BUILD-cuda"
export RF_DATA_CUDA="$CUDA_BUILD-cuda"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

# Runs `cargo test --no-fail-fast "$@"` under the environment settings in SETTING (e.g.
# "ONEDNN_MAX_CPU_ISA=AVX2", or empty), prints the summary line, sets STATUS and SUMMARY.
run_suite() {
  local setting="$1"
  shift
  local start=$SECONDS
  set +e
  # shellcheck disable=SC2086 # SETTING is one NAME=VALUE word or empty.
  env $setting cargo test --no-fail-fast "$@" 2>&1 | tee "$LOG"
  STATUS=${PIPESTATUS[0]}
  set -e
  # "test result: ok. 3 passed; 0 failed; ..." per binary.
  local passed failed names
  read -r passed failed < <(sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$LOG" \
    | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
  mapfile -t names < <(sed -nE 's/^test (.*) \.\.\. FAILED$/\1/p' "$LOG")
  if [ "$STATUS" != 0 ] && [ "${#names[@]}" = 0 ]; then
    echo "test.sh: cargo test failed before running every test (build error?); see above" >&2
  elif [ "${#names[@]}" != 0 ]; then
    echo "test.sh: failed${setting:+ under $setting}: ${names[*]}" >&2
  fi
  SUMMARY="summary${setting:+ ($setting)}: $passed passed, $failed failed, $((SECONDS - start)) s"
  echo "$SUMMARY"
}

if [ "$PORTABILITY" = 0 ]; then
  run_suite "" "$@"
  exit "$STATUS"
fi

settings=(ONEDNN_MAX_CPU_ISA=SSE41 ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=ALL
  ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2)
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  settings+=(ATEN_CPU_CAPABILITY=avx512)
else
  echo "test.sh: no AVX-512 on this CPU; ATEN_CPU_CAPABILITY=avx512 skipped" >&2
fi
overall=0
summaries=()
for setting in "${settings[@]}"; do
  echo "=== $setting ==="
  run_suite "$setting" "$@"
  summaries+=("$SUMMARY")
  [ "$STATUS" = 0 ] || overall=1
done
printf '%s\n' "${summaries[@]}"
exit "$overall"
