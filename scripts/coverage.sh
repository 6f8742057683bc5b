#!/usr/bin/env bash
# Line coverage of rootstream-db, measured over the whole test suite:
#   (a) the Rust core (src/), counted over the cargo tests AND the Google Test suites and examples,
#       which link an instrumented build of the static library;
#   (b) the C++ wrappers (cpp/src), compiled with --coverage and read with gcov/lcov.
# Prints a per-module and a per-file table for each, the totals, and the paths of the HTML reports.
#
# How: our crate (and only our crate: dependencies are built as usual) is compiled with rustc's
# `-C instrument-coverage` through a RUSTC_WORKSPACE_WRAPPER. Every instrumented process (test
# binaries, the rsdb CLI they start, children that tests kill, gtest suites, examples) writes its
# own raw profile ($BUILD/profraw/%p-%m.profraw). A process killed by a test leaves an incomplete
# file: each file is checked and those that cannot be read are dropped (and counted). The rest are
# merged with Debian's llvm-profdata-19 and reported with llvm-cov-19 over every instrumented
# binary. Generated code (cxx's C++ glue, build-script output) is outside src/ and not counted;
# neither are the tests, examples and benches themselves.
#
# The tests run as scripts/test.sh runs them: the cargo tests in one private stack and ctest (gtest
# suites and examples) in another (scripts/stack.sh run --sentinel --pg-ha), both at once.
#
# Environment: RSDB_COVERAGE_DIR (default: build-coverage) is the build directory, kept between
# runs so that a second run rebuilds only what changed. RSDB_COVERAGE_SKIP_TESTS=1 reports on the
# profiles already collected (no build, no test run).
# Exit status: non-zero when the build fails or a test fails (the report is printed all the same).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${RSDB_COVERAGE_DIR:-$ROOT/build-coverage}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR=$BUILD/cargo
CMAKE_BUILD=$BUILD/cmake
PROFRAW=$BUILD/profraw
REPORT=$BUILD/report
LLVM_BIN=/usr/lib/llvm-19/bin

say() { printf '\n==> %s\n' "$*"; }

# ---- inside a stack: one part of the test run ---------------------------------------------------
if [[ -n ${RSDB_COVERAGE_INNER:-} ]]; then
    cd "$ROOT"
    export ROOTSTREAM_MASTER_KEY=${ROOTSTREAM_MASTER_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
    export LLVM_PROFILE_FILE=$PROFRAW/%p-%m.profraw
    if [[ $RSDB_COVERAGE_INNER == cargo ]]; then
        cargo test --features c-header
    else
        ctest --test-dir "$CMAKE_BUILD" --output-on-failure
    fi
    exit
fi

# ---- build and run ------------------------------------------------------------------------------
status=0
if [[ -z ${RSDB_COVERAGE_SKIP_TESTS:-} ]]; then
    bash "$ROOT/scripts/install-deps.sh"
    for tool in llvm-profdata llvm-cov; do
        [[ -x $LLVM_BIN/$tool ]] || { echo "coverage: $LLVM_BIN/$tool missing (Debian package llvm-19)" >&2; exit 1; }
    done
    mkdir -p "$BUILD"
    started=$(date +%s)

    # Instrument the crates of this package only; its build script stays uninstrumented (it would
    # only write profiles of its own).
    WRAPPER=$BUILD/rustc-coverage-wrapper
    cat >"$WRAPPER" <<'EOF'
#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of scripts/coverage.sh: `$0 RUSTC ARGS...`.
rustc=$1
shift
for arg in "$@"; do
    [ "$arg" = build_script_build ] && exec "$rustc" "$@"
done
exec "$rustc" "$@" -C instrument-coverage
EOF
    chmod +x "$WRAPPER"
    export RUSTC_WORKSPACE_WRAPPER=$WRAPPER

    say "instrumented build (CMake: crate, C++ wrappers with --coverage, gtest suites, examples)"
    # rustc links the profiler runtime into Rust binaries with -u__llvm_profile_runtime; C and C++
    # executables that link the static library need the same, or the runtime is left out.
    cmake -S "$ROOT" -B "$CMAKE_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
        -DRSDB_BUILD_TESTS=ON -DRSDB_BUILD_EXAMPLES=ON -DRSDB_WARNINGS_AS_ERRORS=ON \
        -DRSDB_CARGO_TARGET_DIR="$CARGO_TARGET_DIR" \
        -DCMAKE_C_FLAGS=--coverage -DCMAKE_CXX_FLAGS=--coverage \
        "-DCMAKE_EXE_LINKER_FLAGS=--coverage -Wl,-u,__llvm_profile_runtime" >/dev/null
    cmake --build "$CMAKE_BUILD" -j2
    say "instrumented build (cargo tests)"
    cargo test --features c-header --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | sort -u >"$BUILD/cargo-test-binaries.txt"
    [[ -s $BUILD/cargo-test-binaries.txt ]] || { echo "coverage: no cargo test binaries built" >&2; exit 1; }

    rm -rf "$PROFRAW"
    mkdir -p "$PROFRAW"
    find "$CMAKE_BUILD" -name '*.gcda' -delete

    say "running the cargo tests and ctest, each in its own private stack"
    pids=()
    for part in cargo native; do
        RSDB_COVERAGE_INNER=$part bash "$ROOT/scripts/stack.sh" run --sentinel --pg-ha -- \
            bash "$ROOT/scripts/coverage.sh" >"$BUILD/part-$part.log" 2>&1 &
        pids+=($!)
    done
    for i in 0 1; do
        wait "${pids[$i]}" || status=1
    done
    for part in cargo native; do
        say "part $part (full log: $BUILD/part-$part.log)"
        grep -E '^test result:|tests passed|tests failed|^FAILED|\*\*\*Failed|panicked' "$BUILD/part-$part.log" | tail -n 60 || true
    done
    echo "test run: $(($(date +%s) - started)) s (build included)"
fi

# ---- (a) Rust core --------------------------------------------------------------------------------
say "Rust core (src/): merging raw profiles"
mkdir -p "$REPORT"
good=$REPORT/profraw-good.txt
: >"$good"
dropped=0 total=0
for f in "$PROFRAW"/*.profraw; do
    [[ -e $f ]] || continue
    total=$((total + 1))
    if "$LLVM_BIN/llvm-profdata" show "$f" >/dev/null 2>&1; then
        echo "$f" >>"$good"
    else
        dropped=$((dropped + 1))
    fi
done
echo "raw profiles: $total, dropped as incomplete (process killed): $dropped"
[[ -s $good ]] || { echo "coverage: no usable raw profile" >&2; exit 1; }
"$LLVM_BIN/llvm-profdata" merge -sparse -f "$good" -o "$REPORT/rust.profdata"

# Every instrumented binary: the CMake executables that link the instrumented library (those with
# a coverage map), then the cargo test binaries and rsdb. The order matters: a function compiled
# into two binaries with different structural hashes (the C functions are `#[no_mangle]`, so the
# library's own unit-test build has functions of the same names) is counted from the first binary
# listed that has it, and only the C and C++ programs call the C functions.
objects=()
while read -r bin; do
    if "$LLVM_BIN/llvm-readelf" -S "$bin" 2>/dev/null | grep -q __llvm_covmap; then
        objects+=(-object "$bin")
    fi
done < <(find "$CMAKE_BUILD" -type f -executable ! -name '*.so*' ! -path '*/CMakeFiles/*' | sort)
if [[ -f $BUILD/cargo-test-binaries.txt ]]; then
    while read -r bin; do [[ -x $bin ]] && objects+=(-object "$bin"); done <"$BUILD/cargo-test-binaries.txt"
fi
[[ -x $CARGO_TARGET_DIR/debug/rsdb ]] && objects+=(-object "$CARGO_TARGET_DIR/debug/rsdb")
first=${objects[1]}
rest=("${objects[@]:2}")
# Only src/ of this tree counts.
ignore="^/rustc/|^/usr/|/\.cargo/|/\.rustup/|^$BUILD/|^$ROOT/(tests|examples|benches|gtest)/"
cov_args=(-instr-profile="$REPORT/rust.profdata" -ignore-filename-regex="$ignore" "$first" "${rest[@]}")
"$LLVM_BIN/llvm-cov" report "${cov_args[@]}" 2>"$REPORT/llvm-cov.stderr" >"$REPORT/rust-files.txt"
mismatched=$(grep -om1 '[0-9]* functions have mismatched data' "$REPORT/llvm-cov.stderr" || true)
[[ -z $mismatched ]] || echo "llvm-cov: $mismatched (each counted from the first binary listed that has it)"
"$LLVM_BIN/llvm-cov" show -format=html -output-dir="$REPORT/rust-html" -show-line-counts-or-regions \
    "${cov_args[@]}" 2>>"$REPORT/llvm-cov.stderr"

"$LLVM_BIN/llvm-cov" export -format=text -summary-only "${cov_args[@]}" 2>>"$REPORT/llvm-cov.stderr" >"$REPORT/rust.json"

# Per-file and per-module tables (module: src/ffi/c, src/ffi/cxx, else src/<dir> or src/<file>).
python3 - "$ROOT" "$REPORT/rust.json" <<'EOF' | tee "$REPORT/rust-summary.txt"
import json, os, sys
root, path = sys.argv[1], sys.argv[2]
files, modules = {}, {}
for data in json.load(open(path))["data"]:
    for f in data["files"]:
        name = os.path.relpath(os.path.join(root, f["filename"]), root)
        if not name.startswith("src/"):
            continue
        lines = f["summary"]["lines"]
        files[name] = (lines["count"], lines["count"] - lines["covered"])
for name, (count, missed) in files.items():
    parts = name.split("/")
    module = "/".join(parts[:3]) if parts[1] == "ffi" and len(parts) > 3 else "/".join(parts[:2])
    c, m = modules.get(module, (0, 0))
    modules[module] = (c + count, m + missed)
def table(title, rows):
    print(f"{title:<44} {'lines':>8} {'missed':>8} {'cover':>7}")
    for name in sorted(rows):
        count, missed = rows[name]
        cover = f"{100 * (count - missed) / count:.1f}%" if count else "-"
        print(f"{name:<44} {count:>8} {missed:>8} {cover:>7}")
table("Rust file", files)
print()
table("Rust module", modules)
count = sum(c for c, _ in files.values())
missed = sum(m for _, m in files.values())
print(f"{'TOTAL (a) Rust core src/':<44} {count:>8} {missed:>8} {100 * (count - missed) / max(count, 1):>6.1f}%")
EOF

# ---- (b) C++ wrappers -----------------------------------------------------------------------------
say "C++ wrappers (cpp/src): gcov/lcov"
# Only the wrappers' objects are read (the gtest objects, full of template code from headers,
# would make lcov take many minutes for nothing).
CXX_OBJECTS=$CMAKE_BUILD/CMakeFiles/rootstream_db_cxx.dir
# The zero baseline (--initial, from the .gcno files) keeps files that no test ran in the table.
lcov --quiet --capture --initial --directory "$CXX_OBJECTS" --output-file "$REPORT/cpp-base.info" >/dev/null 2>&1 || true
lcov --quiet --capture --directory "$CXX_OBJECTS" --output-file "$REPORT/cpp-run.info" >/dev/null 2>&1 || true
lcov --quiet --add-tracefile "$REPORT/cpp-base.info" --add-tracefile "$REPORT/cpp-run.info" \
    --output-file "$REPORT/cpp-all.info" >/dev/null 2>&1 || true
lcov --quiet --extract "$REPORT/cpp-all.info" "$ROOT/cpp/src/*" --output-file "$REPORT/cpp.info" >/dev/null 2>&1 || true
if [[ -s $REPORT/cpp.info ]]; then
    genhtml --quiet --output-directory "$REPORT/cpp-html" "$REPORT/cpp.info" >/dev/null 2>&1 || true
    awk -v root="$ROOT/" '
        /^SF:/ { f = substr($0, 4); sub("^" root, "", f) }
        /^LF:/ { lf[f] += substr($0, 4); tl += substr($0, 4) }
        /^LH:/ { lh[f] += substr($0, 4); th += substr($0, 4) }
        function pct(l, h) { return l ? sprintf("%.1f", 100 * h / l) : "-" }
        END {
            printf "%-44s %8s %8s %7s\n", "C++ file", "lines", "missed", "cover"
            for (f in lf) printf "%-44s %8d %8d %6s%%\n", f, lf[f], lf[f] - lh[f], pct(lf[f], lh[f]) | "sort"
            close("sort")
            printf "%-44s %8d %8d %6s%%\n", "TOTAL (b) C++ wrappers cpp/src", tl, tl - th, pct(tl, th)
        }' "$REPORT/cpp.info" | tee "$REPORT/cpp-summary.txt"
else
    echo "coverage: no gcov data for cpp/src" >&2
    status=1
fi

say "summary"
grep -h TOTAL "$REPORT/rust-summary.txt" "$REPORT/cpp-summary.txt" 2>/dev/null || true
echo "HTML reports: $REPORT/rust-html/index.html and $REPORT/cpp-html/index.html"
echo "tools: $("$LLVM_BIN/llvm-cov" --version | grep -o 'LLVM version [0-9.]*'), $(lcov --version | head -n 1), $(gcov --version | head -n 1)"
exit "$status"
