#!/usr/bin/env bash
# Install the Debian packages that rootstream-db's build and test stack need,
# plus moto's standalone S3 server (from PyPI) in a private virtualenv.
#
# Idempotent: every package is checked with `dpkg -s` first, so a second run
# does no network access at all. `apt-get update` runs only when something is
# actually missing, because it is the slow and network-dependent step. The
# same holds for moto: pip runs only when the virtualenv lacks the pinned
# version.
#
# Environment: ROOTSTREAM_TOOLS_DIR (default: ~/.cache/rootstream-db) holds the
# virtualenv, in ROOTSTREAM_TOOLS_DIR/venv; scripts/stack.sh looks there too.
set -euo pipefail

PACKAGES=(
    postgresql-15 postgresql-client-15
    redis-server redis-sentinel
    influxdb
    # Line protocol on InfluxDB's v2 write path (tests/metrics*.rs), and promtool
    # (prometheus) to check the Prometheus text export.
    victoria-metrics prometheus
    cmake ninja-build g++
    googletest libgtest-dev nlohmann-json3-dev lcov
    libssl-dev pkg-config oathtool
    python3 python3-venv
    # Baselines of the backup benchmark (benches/backup.rs).
    zstd pgbackrest
    # The PostgreSQL HA profile (scripts/stack.sh --pg-ha): a private etcd
    # cluster, etcdctl, and Patroni for the failover baseline.
    etcd-server etcd-client patroni
    # Instruction counts of the faces benchmark (benches/faces.rs).
    valgrind
    # scripts/coverage.sh: llvm-profdata/llvm-cov that read rustc's coverage format.
    llvm-19
)

# Services of packages that this script installs but that the test stack
# never uses: their Debian packages would start (and enable) a system-wide
# instance on the standard ports (etcd: 2379/2380). Their start is refused
# during the installation (see deny_service_starts) and they are disabled
# afterwards (systemd, or the SysV links) -- only those whose package this
# run installed. QUIET_SERVICES[i] is the service of QUIET_PACKAGES[i].
QUIET_PACKAGES=(etcd-server patroni)
QUIET_SERVICES=(etcd patroni)

# moto's S3-compatible server for the S3 backup tests; pinned so that every
# machine tests against the same server.
MOTO_VERSION=5.2.5
TOOLS_DIR=${ROOTSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/rootstream-db}
VENV=$TOOLS_DIR/venv
# Debian's interpreter (installed above), not whichever python3 is first on
# PATH, so the virtualenv does not depend on a per-user Python installation.
PYTHON=/usr/bin/python3

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
    # invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d before a
    # package's maintainer script starts a service (exit 101: refused). A
    # policy of ours refuses only QUIET_SERVICES and defers everything else
    # to the machine's own policy, if it has one (moved aside meanwhile and
    # put back on exit), so every other package behaves as it always did.
    POLICY=/usr/sbin/policy-rc.d
    POLICY_SAVED=
    POLICY_OURS=0
    restore_policy() {
        ((POLICY_OURS)) || return 0
        if [[ -n $POLICY_SAVED ]]; then
            "${SUDO[@]}" mv -f "$POLICY_SAVED" "$POLICY"
        else
            "${SUDO[@]}" rm -f "$POLICY"
        fi
        POLICY_OURS=0
    }
    deny_service_starts() { # SERVICE...
        local tmp
        if [[ -e $POLICY ]]; then
            POLICY_SAVED=$POLICY.rootstream-saved
            [[ -e $POLICY_SAVED ]] && die "$POLICY_SAVED exists (left by an interrupted run?); put it back as $POLICY first"
            "${SUDO[@]}" mv "$POLICY" "$POLICY_SAVED"
        fi
        POLICY_OURS=1
        trap restore_policy EXIT
        tmp=$(mktemp "${TMPDIR:-/tmp}/policy-rc.d.XXXXXX")
        {
            printf '#!/bin/sh\n# Temporary, written by rootstream-db scripts/install-deps.sh.\n'
            printf 'for a in "$@"; do case $a in -*) continue ;; %s) exit 101 ;; *) break ;; esac; done\n' \
                "$(IFS='|'; printf '%s' "$*")"
            if [[ -n $POLICY_SAVED ]]; then printf 'exec %s "$@"\n' "$POLICY_SAVED"; else printf 'exit 0\n'; fi
        } >"$tmp"
        chmod 755 "$tmp"
        "${SUDO[@]}" install -m 755 "$tmp" "$POLICY"
        rm -f "$tmp"
    }
    quiet=() # the services of the QUIET_PACKAGES about to be installed
    for i in "${!QUIET_PACKAGES[@]}"; do
        [[ " ${missing[*]} " == *" ${QUIET_PACKAGES[i]} "* ]] && quiet+=("${QUIET_SERVICES[i]}")
    done
    log "running apt-get update"
    run_apt update -q
    ((${#quiet[@]})) && deny_service_starts "${quiet[@]}"
    log "installing: ${missing[*]}"
    run_apt install -y -q "${missing[@]}"
    restore_policy
    trap - EXIT
    # The start was refused; keep the services from starting at boot too
    # (systemd, else the SysV links that the package added).
    if ((${#quiet[@]})); then
        for svc in "${quiet[@]}"; do
            if [[ -d /run/systemd/system ]]; then
                systemctl is-enabled --quiet "$svc.service" 2>/dev/null || continue
                "${SUDO[@]}" systemctl disable --now "$svc.service" >>"$apt_log" 2>&1 || true
            elif [[ -x /etc/init.d/$svc ]] && compgen -G "/etc/rc[2-5].d/S*$svc" >/dev/null &&
                command -v update-rc.d >/dev/null 2>&1; then
                "${SUDO[@]}" update-rc.d "$svc" disable >>"$apt_log" 2>&1 || true
            else
                continue
            fi
            log "disabled the system $svc service that the package installed (this stack never uses it)"
        done
    fi
    rm -f "$apt_log"
    log "installed ${#missing[@]} package(s)"
fi

moto_installed() {
    [[ -x $VENV/bin/moto_server ]] &&
        "$VENV/bin/python" - "$MOTO_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
import flask, flask_cors  # the server's own requirements
sys.exit(0 if version("moto") == sys.argv[1] else 1)
EOF
}

if moto_installed; then
    log "moto $MOTO_VERSION already installed in $VENV"
else
    [[ -x $PYTHON ]] || die "$PYTHON not found"
    pip_log=$(mktemp "${TMPDIR:-/tmp}/install-deps-pip.XXXXXX.log")
    run_pip() {
        if ! "$@" >>"$pip_log" 2>&1; then
            tail -n 30 "$pip_log" >&2
            die "$1 failed (full log: $pip_log)"
        fi
    }
    mkdir -p "$TOOLS_DIR"
    if [[ ! -x $VENV/bin/python ]]; then
        log "creating virtualenv $VENV"
        run_pip "$PYTHON" -m venv "$VENV"
    fi
    log "installing moto[server]==$MOTO_VERSION into $VENV"
    run_pip "$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    moto_installed || die "moto $MOTO_VERSION is still not importable from $VENV (log: $pip_log)"
    rm -f "$pip_log"
    log "installed moto $MOTO_VERSION"
fi

# The Debian packages of postgresql/redis/influxdb start system-wide services
# on the standard ports. The test stack (scripts/stack.sh) never uses them, so
# they are left as they are; nothing here stops or reconfigures them. The
# exceptions are etcd and patroni above, whose start this script prevents
# when it installs them.

# Rust comes from rustup rather than Debian, so only check for it.
if command -v cargo >/dev/null 2>&1; then
    log "cargo found: $(command -v cargo)"
elif [[ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]]; then
    log "cargo found: $HOME/.cargo/bin/cargo (not on PATH; add \$HOME/.cargo/bin to PATH)"
else
    die "cargo not found on PATH or in ~/.cargo/bin; install the Rust toolchain (rustup) first"
fi
