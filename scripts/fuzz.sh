#!/usr/bin/env bash
# Fuzzes every parser of outside input (targets in fuzz/fuzz_targets, see docs/fuzzing.md) with
# libFuzzer through cargo-fuzz, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 60 s for each of all targets
#
# Each target starts from its seed corpus in fuzz/corpus/<target>/ (read only); what it finds is
# kept in build/fuzz-corpus/<target>/ and reused by the next run. A crash, panic, timeout
# (10 s per input) or allocation above 512 MiB fails the target; its input is saved under
# fuzz/artifacts/<target>/. Prints executions and coverage per target; exits non-zero when any
# target failed. RSDB_FUZZ_TARGET_DIR overrides the build directory (default build/fuzz).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
SECS=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    SECS=$1
    shift
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version '^0.13'
fi
TARGET_DIR=${RSDB_FUZZ_TARGET_DIR:-$ROOT/build/fuzz}
cd "$ROOT"
mapfile -t ALL < <(cargo fuzz list)
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")
# No sanitizer: the stable toolchain has none, and the code under test is safe Rust; libFuzzer
# still catches panics, aborts, timeouts and oversized allocations. Debug assertions and
# overflow checks are on (cargo-fuzz's default).
FUZZ_OPTS=(-s none --codegen-units 16 --target-dir "$TARGET_DIR")
echo "== building ${#TARGETS[@]} fuzz targets"
cargo fuzz build "${FUZZ_OPTS[@]}"
LOGS="$ROOT/build/fuzz-logs"
mkdir -p "$LOGS"
declare -a SUMMARY
failed=0
for t in "${TARGETS[@]}"; do
    seeds="$ROOT/fuzz/corpus/$t"
    work="$ROOT/build/fuzz-corpus/$t"
    mkdir -p "$work" "$seeds" "$ROOT/fuzz/artifacts/$t"
    echo "== $t: ${SECS} s"
    status=ok
    if ! cargo fuzz run "${FUZZ_OPTS[@]}" "$t" "$work" "$seeds" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=8192 \
        -print_final_stats=1 >"$LOGS/$t.log" 2>&1; then
        status=FAILED
        failed=1
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written|==[0-9]+== ERROR" "$LOGS/$t.log" | head -8 || true
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/$t.log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -oE '(#[0-9]+).*cov: [0-9]+' "$LOGS/$t.log" | tail -1 | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+')
    SUMMARY+=("$(printf '%-20s %-7s %12s execs  %6s edges  (log %s)' "$t" "$status" "${execs:-?}" "${cov:-?}" "build/fuzz-logs/$t.log")")
done
echo "== summary (${SECS} s per target)"
printf '%s\n' "${SUMMARY[@]}"
exit "$failed"
