#!/usr/bin/env bash
# Regenerates include/rootstream_db.h from the Rust sources (the build compares the two and
# the c_header_is_current test fails while they differ).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
target=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --manifest-path "$ROOT/Cargo.toml" --lib --features c-header
cp "$target/debug/generated/rootstream_db.h" "$ROOT/include/rootstream_db.h"
echo "include/rootstream_db.h updated"
