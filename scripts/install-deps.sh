#!/usr/bin/env bash
# Install the Debian packages that rootstream-db's build and test stack need.
#
# Idempotent: every package is checked with `dpkg -s` first, so a second run
# does no network access at all. `apt-get update` runs only when something is
# actually missing, because it is the slow and network-dependent step.
set -euo pipefail

PACKAGES=(
    postgresql-15 postgresql-client-15
    redis-server redis-sentinel
    influxdb
    cmake ninja-build g++
    googletest libgtest-dev nlohmann-json3-dev lcov
    libssl-dev pkg-config oathtool
    python3
)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    # `dpkg -s` also succeeds for removed-but-not-purged packages, so check the
    # status line explicitly.
    if dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        :
    else
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} Debian packages already installed"
else
    log "missing: ${missing[*]}"
    # Use sudo only when we need it and have it; as root (CI, containers)
    # plain apt-get works and sudo is often not even installed.
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "not root and sudo is not available; run this script as root"
        SUDO=(sudo)
    fi
    # apt's own output goes to a log file and is shown only if a step fails,
    # to keep this script at one line per action.
    apt_log=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX.log")
    run_apt() {
        if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$apt_log" 2>&1; then
            tail -n 30 "$apt_log" >&2
            die "apt-get $1 failed (full log: $apt_log)"
        fi
    }
    log "running apt-get update"
    run_apt update -q
    log "installing: ${missing[*]}"
    run_apt install -y -q "${missing[@]}"
    rm -f "$apt_log"
    log "installed ${#missing[@]} package(s)"
fi

# The Debian packages of postgresql/redis/influxdb start system-wide services
# on the standard ports. The test stack (scripts/stack.sh) never uses them, so
# they are left as they are; nothing here stops or reconfigures them.

# Rust comes from rustup rather than Debian, so only check for it.
if command -v cargo >/dev/null 2>&1; then
    log "cargo found: $(command -v cargo)"
elif [[ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]]; then
    log "cargo found: $HOME/.cargo/bin/cargo (not on PATH; add \$HOME/.cargo/bin to PATH)"
else
    die "cargo not found on PATH or in ~/.cargo/bin; install the Rust toolchain (rustup) first"
fi
