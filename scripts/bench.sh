#!/usr/bin/env bash
# Benchmarks in release mode against a private stack. Every figure is printed beside a raw
# baseline from the same run (ours / raw), never judged against a fixed time.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
bash "$ROOT/scripts/install-deps.sh"
cd "$ROOT"
cargo bench --no-run "$@"
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
