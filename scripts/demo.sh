#!/usr/bin/env bash
# The demo: builds rootstream-db, starts a private local stack (PostgreSQL, Redis, InfluxDB on
# free loopback ports), runs the complete workflow in C and in C++ against it, shows the
# operator CLI, and stops the stack.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${RSDB_BUILD_DIR:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [[ -z ${RSDB_DEMO_INNER:-} ]]; then
    bash "$ROOT/scripts/install-deps.sh"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRSDB_BUILD_EXAMPLES=ON >/dev/null
    cmake --build "$BUILD" -j2 --target complete_workflow_c complete_workflow_cpp rootstream_db_cargo
    RSDB_DEMO_INNER=1 exec bash "$ROOT/scripts/stack.sh" run -- bash "$ROOT/scripts/demo.sh"
fi

# MFA secrets are encrypted at rest: the examples need a master key; a throw-away one will do.
export ROOTSTREAM_MASTER_KEY=${ROOTSTREAM_MASTER_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
rsdb=$BUILD/cargo/debug/rsdb
printf '\n== rsdb migrate\n'
"$rsdb" migrate
printf '\n== the complete workflow in C\n'
"$BUILD/examples/complete_workflow_c"
printf '\n== the complete workflow in C++\n'
"$BUILD/examples/complete_workflow_cpp"
printf '\n== rsdb health\n'
"$rsdb" health
printf '\ndemo finished: every step succeeded\n'
