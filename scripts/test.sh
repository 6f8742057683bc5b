#!/usr/bin/env bash
# Runs every check and every test of rootstream-db on this machine:
#   format + lint, the CMake build (crate, C header, cxx glue, C++ wrappers, gtest, examples)
#   with -Wall -Wextra -Werror, cargo tests, Google Test suites, the examples, and two consumer
#   projects (C11 and C++17) built against the installed package (CMake and pkg-config) and
#   against the source tree.
# Integration tests talk to real servers in private stacks (scripts/stack.sh) that this script
# starts on free loopback ports and stops afterwards: the cargo tests and the native tests run at
# the same time, each part in its own stack. Missing Debian packages are installed.
#
# Environment: RSDB_BUILD_DIR (default: build), RSDB_SKIP_LINT=1 to skip fmt/clippy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${RSDB_BUILD_DIR:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR=$BUILD/cargo

say() { printf '\n==> %s\n' "$*"; }

if [[ -z ${RSDB_TEST_INNER:-} ]]; then
    bash "$ROOT/scripts/install-deps.sh"
    mkdir -p "$BUILD"
    cd "$ROOT"
    if [[ -z ${RSDB_SKIP_LINT:-} ]]; then
        say "cargo fmt --check"
        cargo fmt --check
        say "cargo clippy --all-targets -- -D warnings"
        cargo clippy --all-targets --features c-header -- -D warnings
        # The fuzz targets are their own workspace (scripts/fuzz.sh runs them); checking them
        # here keeps them compiling as the core changes.
        say "cargo check of the fuzz targets"
        cargo check --manifest-path "$ROOT/fuzz/Cargo.toml" --bins
    fi
    say "CMake configure + build (warnings are errors)"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
        -DRSDB_BUILD_TESTS=ON -DRSDB_BUILD_EXAMPLES=ON -DRSDB_WARNINGS_AS_ERRORS=ON >/dev/null
    cmake --build "$BUILD" -j2
    say "building the cargo tests"
    cargo test --features c-header --no-run
    # Everything that needs servers runs in two parts at once, each inside its own private stack
    # (some tests stop or restart their stack's Redis, so the parts must not share one): the
    # cargo tests, and the native side (ctest: gtest suites and examples, then the consumer
    # projects). Most of the time of both is spent waiting on servers, so on two cores they
    # overlap well. Each part's output is printed once it ends; the summary adds both up.
    pids=()
    for part in cargo native; do
        RSDB_TEST_INNER=$part bash "$ROOT/scripts/stack.sh" run --sentinel --pg-ha -- bash "$ROOT/scripts/test.sh" \
            >"$BUILD/part-$part.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for i in 0 1; do
        wait "${pids[$i]}" || status=1
    done
    passed=0 failed=0
    for part in cargo native; do
        say "part: $part"
        cat "$BUILD/part-$part.log"
        read -r p f <"$BUILD/part-$part.counts" 2>/dev/null || { p=0 f=1; echo "part $part printed no counts"; }
        passed=$((passed + p)) failed=$((failed + f))
    done
    if ((status != 0 && failed == 0)); then failed=1; fi
    echo
    echo "summary: $passed passed, $failed failed"
    exit "$status"
fi

# ---- inside the stack -----------------------------------------------------------------------
cd "$ROOT"
# MFA secrets are encrypted at rest: the examples need a master key; a throw-away one will do.
export ROOTSTREAM_MASTER_KEY=${ROOTSTREAM_MASTER_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}

PART=$RSDB_TEST_INNER
LOG=$BUILD/test-log-$PART.txt
: >"$LOG"
COUNTS=$BUILD/part-$PART.counts
rm -f "$COUNTS"
status=0

if [[ $PART == cargo ]]; then
    say "cargo test"
    cargo test --features c-header 2>&1 | tee -a "$LOG" || status=1
    passed=$({ grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$LOG" || true; } | awk '{s += $4} END {print s + 0}')
    failed=$({ grep -Eo '; [0-9]+ failed' "$LOG" || true; } | awk '{s += $2} END {print s + 0}')
    if ((status != 0 && failed == 0)); then failed=1; fi
    echo "cargo tests: $passed passed, $failed failed"
    echo "$passed $failed" >"$COUNTS"
    exit "$status"
fi

say "ctest (C header check, Google Test suites, examples)"
# Verbose output goes to a file (it carries every gtest case); the console shows ctest's lines.
CTEST_LOG=$BUILD/ctest-log.txt
if ctest --test-dir "$BUILD" -V >"$CTEST_LOG" 2>&1; then
    grep -E '^ *[0-9]+/[0-9]+ Test|tests passed' "$CTEST_LOG" | tee -a "$LOG"
else
    status=1
    grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|\[  FAILED  \]|Failure|error' "$CTEST_LOG" | tail -n 200 | tee -a "$LOG"
    echo "full ctest output: $CTEST_LOG"
fi
# (grep finds nothing when nothing failed: `|| true` keeps errexit and pipefail from stopping here.)
gtest_passed=$({ grep -Eo '\[  PASSED  \] [0-9]+ test' "$CTEST_LOG" || true; } | awk '{s += $4} END {print s + 0}')
gtest_failed=$({ grep -Eo '\[  FAILED  \] [0-9]+ test' "$CTEST_LOG" || true; } | awk '{s += $4} END {print s + 0}')
echo "Google Test cases: $gtest_passed passed, $gtest_failed failed"

say "consumer projects: installed package (CMake, pkg-config) and source tree"
PREFIX=$BUILD/install
rm -rf "$PREFIX"
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
consumers=0 consumers_failed=0
for lang in c cpp; do
    for mode in installed subdirectory; do
        dir=$BUILD/consumer-$lang-$mode
        if [[ $mode == installed ]]; then
            args=(-DCMAKE_PREFIX_PATH="$PREFIX")
        else
            args=(-DRSDB_SOURCE_DIR="$ROOT" -DRSDB_CARGO_TARGET_DIR="$CARGO_TARGET_DIR")
        fi
        consumers=$((consumers + 1))
        if cmake -S "$ROOT/tests/consumers/$lang" -B "$dir" -G Ninja "${args[@]}" >"$dir.log" 2>&1 &&
            cmake --build "$dir" -j2 >>"$dir.log" 2>&1 &&
            "$dir/${lang}_consumer" >>"$dir.log" 2>&1; then
            echo "consumer $lang ($mode): ok — $(tail -n 1 "$dir.log")"
        else
            echo "consumer $lang ($mode): FAILED"
            cat "$dir.log"
            consumers_failed=$((consumers_failed + 1))
            status=1
        fi
    done
done

# Without CMake: plain compiler calls with the flags the installed pkg-config files give.
export PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
for lang in c cpp; do
    dir=$BUILD/consumer-$lang-pkgconfig
    mkdir -p "$dir"
    if [[ $lang == c ]]; then
        build=(cc -std=c11 -Wall -Wextra -Werror "$ROOT/tests/consumers/c/main.c" -o "$dir/c_consumer"
            $(pkg-config --cflags --libs --static rootstream-db))
    else
        build=(c++ -std=c++17 -Wall -Wextra -Werror "$ROOT/tests/consumers/cpp/main.cpp" -o "$dir/cpp_consumer"
            $(pkg-config --cflags --libs --static rootstream-db-cxx))
    fi
    consumers=$((consumers + 1))
    if echo "${build[*]}" >"$dir.log" && "${build[@]}" >>"$dir.log" 2>&1 &&
        "$dir/${lang}_consumer" >>"$dir.log" 2>&1; then
        echo "consumer $lang (pkg-config): ok — $(tail -n 1 "$dir.log")"
    else
        echo "consumer $lang (pkg-config): FAILED"
        cat "$dir.log"
        consumers_failed=$((consumers_failed + 1))
        status=1
    fi
done

# The native part's counts: ctest's and the consumers'.
ctest_line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$LOG" | tail -n 1 || true)
[[ -n $ctest_line ]] || { echo "ctest printed no summary"; status=1; }
# Each gtest binary is one ctest test: count its cases instead; other ctest tests count as one.
ctest_results=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$CTEST_LOG" || true)
other_passed=$(grep -v ': test_' <<<"$ctest_results" | grep -c ' Passed' || true)
other_failed=$(grep -v ': test_' <<<"$ctest_results" | grep -vc ' Passed' || true)
binaries_failed=$(grep ': test_' <<<"$ctest_results" | grep -vc ' Passed' || true)
[[ -n $ctest_results ]] || other_failed=0
# A suite that crashed reports no failed cases of its own: count the suite.
if ((binaries_failed > 0 && gtest_failed == 0)); then gtest_failed=$binaries_failed; fi
passed=$((gtest_passed + other_passed + consumers - consumers_failed))
failed=$((gtest_failed + other_failed + consumers_failed))
if ((status != 0 && failed == 0)); then failed=1; fi
echo "native tests: $passed passed, $failed failed"
echo "$passed $failed" >"$COUNTS"
exit "$status"
