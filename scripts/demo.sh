#!/usr/bin/env bash
# The demo: builds rootstream-db, starts a private local stack (PostgreSQL with WAL archiving,
# Redis, a Redis Sentinel setup (master, replica, three sentinels), InfluxDB and an S3 server on
# free loopback ports), runs the complete workflow and the backup-and-recovery workflow in C and in
# C++ against it, shows the operator CLI, and stops the stack.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${RSDB_BUILD_DIR:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [[ -z ${RSDB_DEMO_INNER:-} ]]; then
    bash "$ROOT/scripts/install-deps.sh"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRSDB_BUILD_EXAMPLES=ON >/dev/null
    cmake --build "$BUILD" -j2 --target complete_workflow_c complete_workflow_cpp backup_recovery_c backup_recovery_cpp \
        rootstream_db_cargo
    RSDB_DEMO_INNER=1 exec bash "$ROOT/scripts/stack.sh" run --sentinel -- bash "$ROOT/scripts/demo.sh"
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
# The stack's PostgreSQL archives its WAL with `rsdb wal-push` into the repository named by its
# archive configuration file, once the stack directory links an rsdb (scripts/stack.sh).
ln -s "$rsdb" "$ROOTSTREAM_STACK_DIR/rsdb" 2>/dev/null || true
export ROOTSTREAM_RSDB_PATH=$rsdb
printf '\n== backup and point-in-time recovery in C\n'
"$BUILD/examples/backup_recovery_c" "$ROOTSTREAM_TEST_ARCHIVE_CONF"
printf '\n== backup and point-in-time recovery in C++\n'
"$BUILD/examples/backup_recovery_cpp" "$ROOTSTREAM_TEST_ARCHIVE_CONF"
printf '\n== rsdb backup list / verify / test-restore / cleanup\n'
rsdb_archive() { "$rsdb" --config "$ROOTSTREAM_TEST_ARCHIVE_CONF" "$@"; }
rsdb_archive backup list
rsdb_archive backup list --repository
newest=$(rsdb_archive backup list | awk '$2 == "completed" { print $1; exit }')
rsdb_archive backup verify "$newest"
rsdb_archive backup test-restore "$newest"
rsdb_archive backup cleanup --full-days 30 --keep-last 2
printf '\n== rsdb health\n'
"$rsdb" health
printf '\ndemo finished: every step succeeded\n'
