#!/usr/bin/env bash
# Benchmarks in release mode against a private stack. Every figure is printed beside a raw
# baseline from the same run (ours / raw), never judged against a fixed time.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
bash "$ROOT/scripts/install-deps.sh"
cd "$ROOT"
cargo bench --no-run "$@"
# The faces benchmark also runs the C and C++ programs in bench/, built in release by CMake
# into the same cargo target dir.
for a in "$@"; do
    if [[ $a == faces ]]; then
        bdir=${RSDB_BENCH_BUILD_DIR:-$ROOT/build/bench}
        cmake -S "$ROOT" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRSDB_BUILD_TESTS=OFF \
            -DRSDB_BUILD_EXAMPLES=OFF -DRSDB_BUILD_BENCHES=ON \
            -DRSDB_CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" >/dev/null
        cmake --build "$bdir" --target faces_c faces_cpp
        export RSDB_FACES_BIN_DIR="$bdir/bench"
    fi
done
# InfluxDB only for the benchmarks that write metrics.
stack_opts=(--no-influx)
# The Redis Sentinel setup and the PostgreSQL HA setup (three nodes and etcd) only for the
# benchmarks that fail them over.
for a in "$@"; do
    [[ $a == metrics ]] && stack_opts=()
    [[ $a == sentinel ]] && stack_opts+=(--sentinel)
    [[ $a == ha ]] && stack_opts+=(--pg-ha)
done
exec bash "$ROOT/scripts/stack.sh" run "${stack_opts[@]}" -- cargo bench "$@"
