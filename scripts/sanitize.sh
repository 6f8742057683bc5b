#!/usr/bin/env bash
# Builds the C/C++ side of rootstream-db (the C++ wrappers, every Google Test suite, the examples)
# with AddressSanitizer + UndefinedBehaviorSanitizer (-DRSDB_SANITIZE=address,undefined; gcc's
# runtimes), runs them in a private stack (scripts/stack.sh run --sentinel --pg-ha) with
# LeakSanitizer on, prints a summary and exits non-zero on any failed test or any sanitizer
# report. The Rust static library is not instrumented, but ASan's malloc interception and
# LeakSanitizer see every allocation it makes for C callers: a library-returned string or handle
# that is never freed is reported as a leak.
#
# Third-party findings are suppressed narrowly in scripts/sanitize/*.supp (each entry says why).
#
# Environment: RSDB_SANITIZE_BUILD_DIR (default: build-sanitize), RSDB_SANITIZE (default:
# address,undefined), RSDB_CARGO_TARGET_DIR (default: build/cargo, the tree scripts/test.sh
# uses: the Rust library is built the same way for both, so they share it),
# RSDB_SANITIZE_TESTS (a ctest -R regex to run only some tests).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${RSDB_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
CARGO_DIR=${RSDB_CARGO_TARGET_DIR:-$ROOT/build/cargo}
case $CARGO_DIR in /*) ;; *) CARGO_DIR=$ROOT/$CARGO_DIR ;; esac
SANITIZERS=${RSDB_SANITIZE:-address,undefined}
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR=$CARGO_DIR
SUPP=$ROOT/scripts/sanitize

say() { printf '\n==> %s\n' "$*"; }

if [[ -z ${RSDB_SANITIZE_INNER:-} ]]; then
    start=$SECONDS
    bash "$ROOT/scripts/install-deps.sh"
    mkdir -p "$BUILD"
    say "CMake configure + build with -fsanitize=$SANITIZERS (warnings are errors)"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
        -DRSDB_BUILD_TESTS=ON -DRSDB_BUILD_EXAMPLES=ON -DRSDB_WARNINGS_AS_ERRORS=ON \
        -DRSDB_SANITIZE="$SANITIZERS" -DRSDB_CARGO_TARGET_DIR="$CARGO_DIR" >/dev/null
    cmake --build "$BUILD" -j2
    built=$SECONDS
    status=0
    RSDB_SANITIZE_INNER=1 bash "$ROOT/scripts/stack.sh" run --sentinel --pg-ha -- \
        bash "$ROOT/scripts/sanitize.sh" || status=$?
    echo "build: $((built - start)) s, run: $((SECONDS - built)) s"
    exit "$status"
fi

# ---- inside the stack -----------------------------------------------------------------------
cd "$ROOT"
export ROOTSTREAM_MASTER_KEY=${ROOTSTREAM_MASTER_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
# Every finding is fatal (halt_on_error; the build uses -fno-sanitize-recover) and printed with
# a stack trace; LeakSanitizer runs at exit of every instrumented program. Programs the suites
# start (the rsdb CLI, PostgreSQL tools, shells) are not instrumented and ignore these.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:strict_string_checks=1:print_summary=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:print_summary=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

LOG=$BUILD/sanitize-log.txt
status=0
say "ctest under $SANITIZERS + leak checks (C header check, Google Test suites, examples)"
ctest_args=(--test-dir "$BUILD" -V)
[[ -n ${RSDB_SANITIZE_TESTS:-} ]] && ctest_args+=(-R "$RSDB_SANITIZE_TESTS")
if ctest "${ctest_args[@]}" >"$LOG" 2>&1; then
    grep -E '^ *[0-9]+/[0-9]+ Test|% tests passed' "$LOG" || true
else
    status=1
    grep -E '^ *[0-9]+/[0-9]+ Test|% tests passed' "$LOG" || true
fi

# The replication example needs the --pg-ha nodes and is not a ctest test: run it here.
if [[ -n ${ROOTSTREAM_HA_PG_NODES:-} ]] &&
    { [[ -z ${RSDB_SANITIZE_TESTS:-} ]] || [[ ha_replication_c =~ $RSDB_SANITIZE_TESTS ]]; }; then
    say "example ha_replication_c"
    if "$BUILD/examples/ha_replication_c" >>"$LOG" 2>&1; then
        echo "example ha_replication_c: Passed"
    else
        echo "example ha_replication_c: FAILED"
        status=1
    fi
fi

# Sanitizer reports, whatever the exit status of the program that printed them.
asan=$(grep -c 'ERROR: AddressSanitizer' "$LOG" || true)
lsan=$(grep -c 'ERROR: LeakSanitizer' "$LOG" || true)
ubsan=$(grep -c 'runtime error:' "$LOG" || true)
suppressed=$(grep -c 'Suppressions used:' "$LOG" || true)
gtest_passed=$({ grep -Eo '\[  PASSED  \] [0-9]+ test' "$LOG" || true; } | awk '{s += $4} END {print s + 0}')
gtest_failed=$({ grep -Eo '\[  FAILED  \] [0-9]+ test' "$LOG" || true; } | awk '{s += $4} END {print s + 0}')
findings=$((asan + lsan + ubsan))
say "summary"
echo "Google Test cases: $gtest_passed passed, $gtest_failed failed"
echo "sanitizer reports: $asan AddressSanitizer, $lsan LeakSanitizer, $ubsan UndefinedBehaviorSanitizer" \
    "($suppressed runs used a suppression)"
if ((findings > 0)); then
    status=1
    say "reports"
    grep -E -A 30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$LOG" | head -n 400
fi
((status == 0)) || echo "full output: $LOG"
exit "$status"
