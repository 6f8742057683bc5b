#!/usr/bin/env bash
# Private, throw-away PostgreSQL 15 + Redis 7 + InfluxDB 1.6 + VictoriaMetrics +
# S3 (moto) stack for tests.
#
# Every stack lives in its own directory, listens on 127.0.0.1 only and uses
# random free ports, so any number of stacks (one per test binary) can run at
# the same time without interfering with each other or with the machine's own
# services on the standard ports, which this script never touches.
#
# Usage:
#   scripts/stack.sh start DIR [--owner-pid PID] [--no-influx] [--no-vm] [--no-s3] [--sentinel] [--pg-ha]
#       Start a stack in DIR (must not exist, or be empty). On success prints
#       `export NAME=value` lines on stdout (also written to DIR/env); all
#       progress goes to stderr. With --owner-pid, a detached watchdog stops
#       the stack once PID has exited (even after SIGKILL).
#   scripts/stack.sh stop DIR
#       Stop everything started for DIR and remove DIR. Idempotent.
#   scripts/stack.sh run [--no-influx] [--no-vm] [--no-s3] [--sentinel] [--pg-ha] -- CMD [ARGS...]
#       Start a stack in a fresh temporary directory, run CMD with the
#       variables exported, stop the stack, exit with CMD's status.
#   scripts/stack.sh env DIR
#       Print DIR/env.
#   scripts/stack.sh redis-stop DIR | redis-start DIR
#       Stop the stack's Redis / start it again on the same port (failure tests).
#   scripts/stack.sh influx-stop DIR | influx-start DIR
#       The same for the stack's InfluxDB.
#   scripts/stack.sh start|run ... --sentinel
#       Also start a Redis Sentinel setup (separate from the plain Redis
#       above): a password-protected master (node r1) and one replica (r2),
#       and three sentinels (s1 s2 s3, quorum 2, down-after 1000 ms) that
#       also require a password. Exports ROOTSTREAM_REDIS_SENTINELS (comma
#       list of host:port), ROOTSTREAM_REDIS_MASTER_NAME,
#       ROOTSTREAM_REDIS_SENTINEL_PASSWORD, ROOTSTREAM_REDIS_MASTER_PASSWORD
#       and ROOTSTREAM_HA_R1_PORT, ROOTSTREAM_HA_R2_PORT.
#   scripts/stack.sh ha-kill DIR master|replica|r1|r2|s1|s2|s3
#       kill -9 the node in that role (the sentinels are asked who is master).
#       Prints the node name killed.
#   scripts/stack.sh ha-start DIR r1|r2|s1|s2|s3
#       Start a killed node again on its port with its (possibly rewritten)
#       configuration.
#   scripts/stack.sh ha-wait DIR [SECONDS]
#       Wait until every running sentinel names the same master, that master
#       has a replica with its link up, and the sentinels know each other.
#   scripts/stack.sh start|run ... --pg-ha
#       Also start a PostgreSQL HA setup (separate from the plain PostgreSQL
#       above) in DIR/pgha: nodes p1 (primary), p2 and p3 (streaming
#       replicas cloned with pg_basebackup, physical slots named after the
#       node, application_name = node name), data checksums and
#       wal_log_hints on, synchronous_standby_names 'ANY 1 (<other nodes>)'
#       with synchronous_commit on, trust auth on 127.0.0.1 (replication
#       too), superuser postgres, database rootstream, TCP only; and a
#       three-member etcd cluster in DIR/etcd (e1 e2 e3, heartbeat 100 ms,
#       election timeout 1000 ms). Ready once p2 and p3 stream from p1 (one
#       of them synchronous) and etcd has a leader and a quorum. Exports
#       ROOTSTREAM_HA_PG_NODES (p1=postgres://postgres@127.0.0.1:P1/rootstream,
#       p2=...,p3=...), ROOTSTREAM_HA_PG_DATA (p1=DIR/pgha/p1,...: the data
#       directories), ROOTSTREAM_HA_DATABASE_URL (one multi-host URL with
#       target_session_attrs=read-write) and ROOTSTREAM_ETCD_ENDPOINTS
#       (http://127.0.0.1:C1,...).
#   In the commands below NODE is p1|p2|p3|primary|replica (the first node
#   in that role) and ETCD is e1|e2|e3|leader; p1..p3 and e1..e3 only where
#   a node is not running.
#   scripts/stack.sh pg-kill DIR NODE
#       kill -9 the node's postmaster (its children then exit by themselves).
#       Prints the node name.
#   scripts/stack.sh pg-stop DIR NODE | pg-start DIR p1|p2|p3
#       Fast shutdown / start with whatever the data directory says (a
#       promoted or rewound node keeps its new role), on the node's port.
#       The node's own settings live in DATA/rootstream.conf, which pg-start
#       writes again first: pg_rewind and pg_basebackup copy the source's
#       (with the source's port), and its postgresql.auto.conf too, so a
#       node rejoined that way and started with a plain `pg_ctl start` would
#       try the source's port. (Log: DIR/pgha/NODE.log.)
#   scripts/stack.sh pg-freeze DIR NODE | pg-thaw DIR p1|p2|p3
#       SIGSTOP / SIGCONT every process of the node: a hung server, whose
#       connections hang (pg-role reports it as down).
#   scripts/stack.sh pg-role DIR p1|p2|p3
#       Prints primary, replica or down.
#   scripts/stack.sh pg-wait DIR [SECONDS]
#       Wait until exactly one node is primary and every running replica
#       streams from it (one of them synchronous).
#   scripts/stack.sh etcd-kill DIR ETCD | etcd-start DIR e1|e2|e3
#       kill -9 a member (prints its name) / start it again with its data.
#   scripts/stack.sh etcd-freeze DIR ETCD | etcd-thaw DIR e1|e2|e3
#       SIGSTOP / SIGCONT a member.
#   scripts/stack.sh etcd-wait DIR [SECONDS]
#       Wait until etcd has a leader that a quorum of healthy members agrees on.
#   scripts/stack.sh etcd-leader DIR
#       Prints the leader's name (e1, e2 or e3).
#   scripts/stack.sh patroni-start DIR
#       (a stack with --pg-ha) Start a Patroni 3 cluster of its own on the
#       stack's etcd, as a baseline: members pt1 pt2 pt3 in DIR/patroni,
#       bootstrapped by Patroni (initdb with data checksums, replicas by
#       pg_basebackup), synchronous_mode on, ttl 20 s, loop_wait 2 s,
#       retry_timeout 5 s. Ready once there is a leader and both other
#       members run, one as sync standby; database rootstream is then
#       created. Prints (and appends to DIR/env) ROOTSTREAM_PATRONI_URL (a
#       multi-host URL with target_session_attrs=read-write) and
#       ROOTSTREAM_PATRONI_API (the members' REST API base URLs, comma list).
#   scripts/stack.sh patroni-stop DIR
#       Stop the Patroni cluster and remove DIR/patroni (`stop` does it too).
#   scripts/stack.sh patroni-kill-primary DIR
#       kill -9 the Patroni leader's patroni process and its postmaster (a
#       crashed host); prints the member's name.
#
# Variables: ROOTSTREAM_STACK_DIR, ROOTSTREAM_PG_HOST, ROOTSTREAM_PG_PORT,
# ROOTSTREAM_PG_USER, ROOTSTREAM_DATABASE_URL, ROOTSTREAM_PG_BIN,
# ROOTSTREAM_TEST_ARCHIVE_CONF (the WAL archive's rsdb configuration; see
# setup_archiving),
# ROOTSTREAM_REDIS_PORT, ROOTSTREAM_REDIS_URL, ROOTSTREAM_INFLUX_PORT,
# ROOTSTREAM_INFLUX_URL (the last two are omitted with --no-influx),
# ROOTSTREAM_VM_PORT, ROOTSTREAM_VM_URL (VictoriaMetrics, which takes line
# protocol on InfluxDB's v2 write path; omitted with --no-vm; it is on by
# default because it starts in well under a second),
# ROOTSTREAM_S3_PORT, ROOTSTREAM_S3_ENDPOINT (http://127.0.0.1:PORT),
# ROOTSTREAM_S3_REGION, ROOTSTREAM_S3_ACCESS_KEY_ID and
# ROOTSTREAM_S3_SECRET_ACCESS_KEY (omitted with --no-s3).
#
# The S3 server is moto's standalone server from the virtualenv that
# scripts/install-deps.sh creates in ROOTSTREAM_TOOLS_DIR/venv (default
# ~/.cache/rootstream-db/venv). It checks request signatures: the stack
# creates one IAM user allowed s3:* and exports its access key; requests
# signed with any other key or secret are refused. It starts with no buckets.
set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"

PG_BIN=/usr/lib/postgresql/15/bin
REDIS_SERVER=/usr/bin/redis-server
REDIS_SENTINEL=/usr/bin/redis-sentinel
INFLUXD=/usr/bin/influxd
VICTORIA=/usr/bin/victoria-metrics
TOOLS_DIR=${ROOTSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/rootstream-db}
MOTO_VENV=$TOOLS_DIR/venv
MOTO_SERVER=$MOTO_VENV/bin/moto_server
S3_REGION=us-east-1
# The requests moto serves before it starts checking signatures: exactly the
# ones that create the test user (see start_s3).
S3_BOOTSTRAP_REQUESTS=3
HOST=127.0.0.1
PORT_MIN=20000
PORT_MAX=59999
BIND_ATTEMPTS=5
# Marks a directory as created by this script: `stop` refuses to delete a
# directory without it, so a mistyped path can never be wiped.
MARKER=.rootstream-stack
INSTALL_HINT="run scripts/install-deps.sh (or: apt-get install -y postgresql-15 postgresql-client-15 redis-server redis-tools influxdb victoria-metrics)"

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '/^# Usage:/,/^# Variables:/p' "$SELF" | sed -e 's/^# \{0,1\}//' -e '/^Variables:/d' >&2
    exit 2
}

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# ---------------------------------------------------------------- processes

# Fields of /proc/PID/stat after the command name (which may contain spaces):
# index 0 is the state, 2 the process group, 19 the start time.
proc_stat_field() {
    local stat rest fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    read -r -a fields <<<"$rest"
    printf '%s' "${fields[$2]}"
}

# A zombie counts as dead: a killed process whose parent has not reaped it yet
# must not keep the watchdog (or stop) waiting.
proc_alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    if [[ -d /proc/$pid ]]; then
        state=$(proc_stat_field "$pid" 0) || return 1
        [[ $state != Z && $state != X ]]
    else
        kill -0 "$pid" 2>/dev/null
    fi
}

# Guards every kill: the pid must still be the process we started (its command
# line contains NEEDLE), so a recycled pid is never signalled.
proc_matches() {
    local pid=$1 needle=$2 cmdline
    proc_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$needle"* ]]
}

wait_gone() { # PID SECONDS
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        proc_alive "$pid" || return 0
        sleep 0.1
    done
    ! proc_alive "$pid"
}

# TERM (or the given signal), wait, then KILL. Only touches PID if its command
# line still contains NEEDLE.
terminate() { # PID NEEDLE NAME [SIGNAL]
    local pid=$1 needle=$2 name=$3 sig=${4:-TERM}
    proc_matches "$pid" "$needle" || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 && return 0
    log "$name (pid $pid) did not exit after SIG$sig; sending SIGKILL"
    kill -s KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || { log "$name (pid $pid) is still running"; return 1; }
}

read_pid() { [[ -f $1 ]] && head -n 1 "$1" | tr -dc '0-9'; }

# Run CMD fully detached: own session, stdin from /dev/null, stdout/stderr to
# LOG, and without fd 9 (the stack lock, see lock_dir), so `$(stack.sh start)`
# returns immediately and the lock dies with this script. The pid is written
# by the process itself before it execs CMD, so it is the pid of CMD.
spawn_detached() { # PIDFILE LOG CMD...
    local pidfile=$1 logfile=$2 i
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016  # $$ and $0 expand in the inner sh.
    (cd / && exec setsid nohup sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' \
        "$pidfile" "$@") </dev/null >>"$logfile" 2>&1 9>&- &
    for ((i = 0; i < 100; i++)); do
        [[ -s $pidfile ]] && { read_pid "$pidfile"; return 0; }
        sleep 0.05
    done
    return 1
}

# Close every fd above 2 inherited from the caller (for example a CI
# runner's or a make jobserver's pipe), so that none of the long-lived
# daemons keeps such a pipe open and makes the caller wait for EOF. Bash's
# own descriptor for this script (normally 255) stays open.
close_inherited_fds() {
    local fd target self_real
    [[ -d /proc/$$/fd ]] || return 0
    self_real=$(readlink -f "$SELF")
    for fd in "/proc/$$/fd"/*; do
        fd=${fd##*/}
        [[ $fd =~ ^[0-9]+$ ]] || continue
        ((fd > 2 && fd != 255)) || continue
        target=$(readlink "/proc/$$/fd/$fd" 2>/dev/null) || continue
        [[ $target == "$self_real" ]] && continue
        eval "exec $fd>&-"
    done
}

# ---------------------------------------------------------------- ports

port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        # Any TCP socket using the port counts, not only listeners: the range
        # overlaps the kernel's ephemeral ports used by outgoing connections.
        [[ -n $(ss -Htan "sport = :$port" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null
    fi
}

USED_PORTS=" "
# Picks a random unused port. A race with another process grabbing it before
# our server binds is still possible; callers retry on "address in use".
random_port() { # [MIN MAX]
    local port i min=${1:-$PORT_MIN} max=${2:-$PORT_MAX}
    for ((i = 0; i < 200; i++)); do
        port=$(((RANDOM << 15 | RANDOM) % (max - min + 1) + min))
        [[ $USED_PORTS == *" $port "* ]] && continue
        port_in_use "$port" && continue
        printf '%s' "$port"
        return 0
    done
    die "could not find a free port in $min-$max"
}

# Every server's port: tests stop and start servers again on the same port
# (redis-stop/start, influx-stop/start, ha-kill/start, the --pg-ha nodes and
# etcd members), so ports come from below the kernel's ephemeral range, which
# no outgoing connection can occupy while the server is down. Falls back to
# the whole range if the ephemeral range leaves too little below it.
restart_port() {
    local lo _hi max=$PORT_MAX
    if read -r lo _hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && [[ $lo =~ ^[0-9]+$ ]]; then
        ((lo - 1 < max)) && max=$((lo - 1))
    fi
    if ((max - PORT_MIN < 1000)); then random_port; else random_port "$PORT_MIN" "$max"; fi
}


file_size() { if [[ -f $1 ]]; then stat -c %s "$1"; else echo 0; fi; }

# ---------------------------------------------------------------- probes

# HTTP status code of GET http://127.0.0.1:PORT/PATH, or 000.
http_status() { # PORT PATH
    local port=$1 path=$2 line
    if command -v curl >/dev/null 2>&1; then
        # --noproxy: an http_proxy in the environment must not catch 127.0.0.1.
        curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://$HOST:$port$path" 2>/dev/null || true
    elif (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
        line=$( (exec 3<>"/dev/tcp/$HOST/$port" &&
            printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$HOST" >&3 &&
            IFS= read -r -t 2 l <&3 && printf '%s' "$l") 2>/dev/null) || true
        line=${line#HTTP/* }
        printf '%s' "${line:0:3}"
    else
        python3 - "$port" "$path" <<'EOF' 2>/dev/null || printf '000'
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", sys.argv[2])
print(c.getresponse().status, end="")
EOF
    fi
}

http_body() { # PORT PATH (curl or python3; only used for an extra check)
    if command -v curl >/dev/null 2>&1; then
        curl --noproxy '*' -s --max-time 2 "http://$HOST:$1$2" 2>/dev/null || true
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys,urllib.request as u
print(u.build_opener(u.ProxyHandler({})).open("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]), timeout=2).read().decode())' \
            "$1" "$2" 2>/dev/null || true
    fi
}

redis_cmd() { # PORT ARGS...
    local port=$1
    shift
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null
    else
        # Inline command over /dev/tcp; enough for PING (one-line reply).
        (exec 3<>"/dev/tcp/$HOST/$port" && printf '%s\r\n' "$*" >&3 &&
            IFS= read -r -t 2 l <&3 && printf '%s\n' "${l#+}" | tr -d '\r') 2>/dev/null
    fi
}

pg_query() { # PORT SQL
    PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -X -q -A -t -w \
        "host=$HOST port=$1 user=postgres dbname=postgres sslmode=disable" \
        -c "$2" 2>/dev/null
}

# ---------------------------------------------------------------- locking

# Serialises start/stop/watchdog on one DIR. The lock file lives inside DIR;
# a stopper that waited for the lock re-checks the marker afterwards, because
# the holder may have removed DIR in the meantime. Daemons are started with
# fd 9 closed so they never inherit (and hold) the lock.
lock_dir() {
    exec 9>>"$1/.lock" || return 1
    flock 9
}

# ---------------------------------------------------------------- services
#
# Every server of the stack is a service NAME, and start_service does what all
# of them share: pick free ports, spawn, poll until ready, and retry with other
# ports when the attempt's log says a port was taken. A service supplies:
#
#   NAME_spawn DIR PORT...  start one attempt. Sets SVC_PID to the process to
#                           watch ('' while unknown; NAME_ready may set it
#                           later) and SVC_MATCH to a string its command line
#                           contains (stop signals nothing else). Non-zero
#                           status: the attempt failed.
#   NAME_ready DIR PORT...  status 0 once the server answers and is ours; it
#                           dies if a stranger answers on the port.
#   NAME_up DIR PORT...     (optional) runs once ready: record the ports and
#                           export variables with export_var.
#   NAME_stop DIR           (optional) how to stop it; by default DIR/NAME.pid
#                           is terminated if it still matches DIR/NAME.match.
#
# and a start function that prepares its files and calls
#   start_service NAME DIR LOG BIND_REGEX NPORTS TIMEOUT_S [PORT...]
# LOG is the file (in DIR) where a bind failure shows as a line matching
# BIND_REGEX (grep -Ei). Given PORTs are used as they are, with one attempt.
# Services are stopped in the reverse order of their start (DIR/services).

STACK_DIR=
START_OK=0
FAIL_LOGS=()
PG_RUN=() # prefix that runs a command as the PostgreSQL OS user
EXPORTS=()
SVC_PID='' SVC_MATCH=''
S3_KEY_ID='' S3_SECRET=''

export_var() { EXPORTS+=("$(printf 'export %s=%q' "$1" "$2")"); }

# True if the part of LOG after byte OFFSET matches REGEX.
log_matches() { # LOG OFFSET REGEX
    tail -c "+$(($2 + 1))" "$1" 2>/dev/null | grep -Eqi -- "$3"
}

start_service() { # NAME DIR LOG BIND_REGEX NPORTS TIMEOUT_S [PORT...]
    local name=$1 dir=$2 logf=$2/$3 bind_re=$4 nports=$5 timeout=$6 attempts=$BIND_ATTEMPTS
    local attempt off t0 i p ports=() why
    shift 6
    (($#)) && attempts=1
    t0=$(now)
    FAIL_LOGS+=("$logf")
    grep -qx -- "$name" "$dir/services" 2>/dev/null || printf '%s\n' "$name" >>"$dir/services"
    for ((attempt = 1; attempt <= attempts; attempt++)); do
        if (($#)); then
            ports=("$@")
        else
            ports=()
            for ((p = 0; p < nports; p++)); do
                ports+=("$(restart_port)")
                USED_PORTS+="${ports[p]} "
            done
        fi
        off=$(file_size "$logf")
        SVC_PID='' SVC_MATCH=''
        why="did not become ready on $HOST:${ports[0]} within ${timeout}s"
        if "${name}_spawn" "$dir" "${ports[@]}"; then
            printf '%s\n' "$SVC_MATCH" >"$dir/$name.match"
            for ((i = 0; i < timeout * 10; i++)); do
                if "${name}_ready" "$dir" "${ports[@]}"; then
                    if declare -F "${name}_up" >/dev/null; then "${name}_up" "$dir" "${ports[@]}"; fi
                    log "$name ready on $HOST:${ports[0]} ($(elapsed "$t0"))"
                    FAIL_LOGS=()
                    return 0
                fi
                log_matches "$logf" "$off" "$bind_re" && break
                if [[ -n $SVC_PID ]] && ! proc_alive "$SVC_PID"; then
                    why="exited during startup"
                    break
                fi
                sleep 0.1
            done
        else
            why="failed to start"
        fi
        if log_matches "$logf" "$off" "$bind_re"; then
            # A server that logged the conflict but kept running must not
            # outlive its attempt.
            [[ -n $SVC_PID ]] && terminate "$SVC_PID" "$SVC_MATCH" "$name"
            log "$name: port ${ports[*]} taken"
            continue
        fi
        die "$name $why"
    done
    die "$name: no usable port after $attempts attempt(s)"
}

stop_service() { # DIR NAME
    local dir=$1 name=$2 pid match
    if declare -F "${name}_stop" >/dev/null; then
        # An explicit status: a bare `return` in the EXIT trap (a failed
        # start) would return the status the script was exiting with.
        "${name}_stop" "$dir" || return 1
        return 0
    fi
    pid=$(read_pid "$dir/$name.pid" || true)
    match=$(cat "$dir/$name.match" 2>/dev/null || true)
    [[ -n $pid && -n $match ]] || return 0
    terminate "$pid" "$match" "$name"
}

show_logs() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        log "---- last lines of $f ----"
        tail -n 25 "$f" >&2
    done
}

on_start_exit() {
    local rc=$?
    ((START_OK)) && return 0
    ((rc == 0)) && rc=1
    trap - INT TERM
    log "start failed; stopping whatever was started in $STACK_DIR"
    show_logs "${FAIL_LOGS[@]}"
    stop_locked "$STACK_DIR" || true
    exit "$rc"
}

# runuser lives in /usr/sbin, which is not always on PATH (e.g. `su` without -l).
find_runuser() {
    local c
    for c in "$(command -v runuser 2>/dev/null || true)" /usr/sbin/runuser /sbin/runuser; do
        [[ -n $c && -x $c ]] && { printf '%s' "$c"; return 0; }
    done
    die "runuser not found (package util-linux); it is needed to run PostgreSQL as 'postgres' when root"
}

need_bin() {
    [[ -x $1 ]] || die "$1 not found; $INSTALL_HINT"
}

# ---------------------------------------------------------------- postgres

# Continuous archiving for backup tests: PostgreSQL's archive_command is
# DIR/archive-wal, which runs `DIR/rsdb --config DIR/archive.conf wal-push %p`
# once a test has linked DIR/rsdb to its rsdb binary (until then WAL is not
# kept). archive.conf names the repository DIR/archive-repo and a master key
# made for this stack.
setup_archiving() {
    local dir=$1 key
    key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    mkdir -m 700 "$dir/archive-repo" "$dir/archive-repo/wal"
    (
        umask 077
        printf '%s\n' "# WAL archive of this test stack (see scripts/stack.sh)" \
            "backup_dir = $dir/archive-repo" "master_key = $key" "master_key_id = stack" \
            "pg_bin_dir = $PG_BIN" >"$dir/archive.conf"
    )
    printf '%s\n' '#!/bin/sh' "d=${dir@Q}" \
        '[ -x "$d/rsdb" ] && [ -f "$d/archive.conf" ] || exit 0' \
        'exec "$d/rsdb" --config "$d/archive.conf" wal-push "$1"' >"$dir/archive-wal"
    chmod 755 "$dir/archive-wal"
    if ((EUID == 0)); then chown postgres: "$dir/archive-repo" "$dir/archive-repo/wal" "$dir/archive.conf"; fi
}

# Unix socket directory ('' for TCP only), set by start_postgres.
PG_SOCKDIR=

start_postgres() {
    local dir=$1 blocker='' p
    FAIL_LOGS=("$dir/initdb.log" "$dir/pg_ctl.log")
    mkdir -m 700 "$dir/pg"
    mkdir -m 700 "$dir/sock"
    : >"$dir/pg.log"
    if ((EUID == 0)); then
        # PostgreSQL refuses to run as root: its files belong to `postgres`,
        # and that user must be able to reach them through DIR's parents.
        chown postgres: "$dir/pg" "$dir/sock" "$dir/pg.log"
        if ! "${PG_RUN[@]}" test -w "$dir/pg"; then
            p=$dir
            while [[ $p != / ]] && ! "${PG_RUN[@]}" test -x "$p"; do
                blocker=$p
                p=$(dirname "$p")
            done
            die "user 'postgres' cannot reach $dir/pg (${blocker:-$dir} is not traversable by it); use a directory under /tmp or chmod o+x the parents"
        fi
        printf 'postgres\n' >"$dir/pg.user"
    else
        id -un >"$dir/pg.user"
    fi

    # --no-sync only skips initdb's final flush of the fresh cluster (a
    # throw-away directory); the server itself runs with fsync on.
    if ! (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$dir/pg" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 --no-sync) >"$dir/initdb.log" 2>&1 9>&-; then
        log "initdb with locale C.UTF-8 failed; retrying with locale C"
        (cd "$dir" && "${PG_RUN[@]}" find "$dir/pg" -mindepth 1 -delete) 9>&-
        (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$dir/pg" -U postgres --auth=trust \
            -E UTF8 --locale=C --no-sync) >>"$dir/initdb.log" 2>&1 9>&- ||
            die "initdb failed"
    fi

    # Unix socket paths are limited to 107 bytes; with a very long DIR use TCP
    # only (nothing here needs the socket) instead of failing.
    PG_SOCKDIR="$dir/sock"
    if ((${#PG_SOCKDIR} + 18 > 107)); then
        log "DIR path too long for a Unix socket; PostgreSQL will listen on TCP only"
        PG_SOCKDIR=
    fi
    echo "include 'rootstream.conf'" >>"$dir/pg/postgresql.conf"
    setup_archiving "$dir"
    # pg_ctl -w waits up to 60s itself; the rest is for the first query.
    start_service pg "$dir" pg.log 'address already in use' 1 30
}

pg_spawn() { # DIR PORT
    local dir=$1 port=$2 conf=$1/pg/rootstream.conf
    # Settings live in an included file rather than `pg_ctl -o` so paths
    # need no extra quoting layer. fsync stays on (the default) on purpose:
    # durability tests need real behaviour. WAL settings allow
    # replication/backup tests.
    cat >"$conf" <<EOF
listen_addresses = '$HOST'
port = $port
unix_socket_directories = '${PG_SOCKDIR//\'/\'\'}'
max_connections = 200
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
fsync = on
archive_mode = on
archive_command = '${dir//\'/\'\'}/archive-wal %p'
EOF
    if ((EUID == 0)); then chown postgres: "$conf"; fi
    SVC_MATCH="$dir/pg"
    (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -t 60 start) \
        </dev/null >>"$dir/pg_ctl.log" 2>&1 9>&- || return 1
    SVC_PID=$(read_pid "$dir/pg/postmaster.pid")
    printf '%s\n' "$SVC_PID" >"$dir/pg.pid"
}

# Ready means a real query over TCP answered by *our* server (data_directory
# check), not just a started process.
pg_ready() { # DIR PORT
    [[ $(pg_query "$2" 'SHOW data_directory') == "$1/pg" ]] || return 1
    [[ $(pg_query "$2" 'SELECT 1') == 1 ]] || die "PostgreSQL: SELECT 1 failed"
}

pg_up() { # DIR PORT
    export_var ROOTSTREAM_PG_PORT "$2"
    export_var ROOTSTREAM_PG_HOST "$HOST"
    export_var ROOTSTREAM_PG_USER postgres
    export_var ROOTSTREAM_DATABASE_URL "postgresql://postgres@$HOST:$2/postgres"
    export_var ROOTSTREAM_PG_BIN "$PG_BIN"
    export_var ROOTSTREAM_TEST_ARCHIVE_CONF "$1/archive.conf"
}

pg_stop() { # DIR
    local dir=$1 pid pg_user run=() runuser_bin
    [[ -d $dir/pg ]] || return 0
    pid=$(read_pid "$dir/pg.pid" || read_pid "$dir/pg/postmaster.pid" || true)
    pg_user=$(cat "$dir/pg.user" 2>/dev/null || true)
    if ((EUID == 0)) && [[ $pg_user == postgres ]]; then
        runuser_bin=$(find_runuser)
        run=("$runuser_bin" -u postgres --)
    fi
    if [[ -f $dir/pg/postmaster.pid ]]; then
        (cd "$dir" && "${run[@]}" "$PG_BIN/pg_ctl" -D "$dir/pg" -m fast -w -t 30 stop) \
            </dev/null >>"$dir/pg_ctl.log" 2>&1 9>&- || log "pg_ctl stop failed; falling back to signals"
    fi
    # SIGINT is PostgreSQL's "fast shutdown"; terminate escalates to SIGKILL.
    [[ -n $pid ]] && terminate "$pid" "$dir/pg" postgres INT
    pid=$(read_pid "$dir/pg.pid" || true)
    ! { [[ -n $pid ]] && proc_matches "$pid" "$dir/pg"; }
}

# ---------------------------------------------------------------- redis

start_redis() {
    mkdir "$1/redis"
    start_service redis "$1" redis.log 'address already in use' 1 15
}

redis_spawn() { # DIR PORT
    local dir=$1 port=$2
    rm -f "$dir/redis.pid"
    SVC_MATCH=redis-server
    # The redirect only catches output from before --logfile takes effect.
    # shellcheck disable=SC2094
    (cd / && "$REDIS_SERVER" --bind "$HOST" --port "$port" --dir "$dir/redis" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save '' --appendonly no) </dev/null >>"$dir/redis.log" 2>&1 9>&-
}

# The daemonized server writes its pidfile only after it has bound the port;
# on a bind failure it exits without one.
redis_ready() { # DIR PORT
    local pid
    pid=$(read_pid "$1/redis.pid" || true)
    [[ -n $pid ]] || return 1
    SVC_PID=$pid
    proc_alive "$pid" && [[ $(redis_cmd "$2" PING) == PONG ]] || return 1
    # Make sure the answer came from our server.
    if command -v redis-cli >/dev/null 2>&1 &&
        ! redis_cmd "$2" INFO server | tr -d '\r' | grep -qx "process_id:$pid"; then
        die "Redis on port $2 is not the server we started"
    fi
}

redis_up() { # DIR PORT
    export_var ROOTSTREAM_REDIS_PORT "$2"
    export_var ROOTSTREAM_REDIS_URL "redis://$HOST:$2/"
}

# ---------------------------------------------------------------- redis sentinel (ha)

HA_MASTER_NAME=rsdbmaster
HA_NODES="r1 r2 s1 s2 s3"

ha_port() { sed -n "s/^port //p" "$1/ha/$2.conf" | head -n 1; }

# redis-cli against a node of the HA setup, with the right password.
ha_cli() { # DIR NODE ARGS...
    local dir=$1 node=$2 pw
    shift 2
    if [[ $node == s* ]]; then pw=$(cat "$dir/ha/sentinel.pw"); else pw=$(cat "$dir/ha/master.pw"); fi
    REDISCLI_AUTH=$pw timeout 3 redis-cli -h "$HOST" -p "$(ha_port "$dir" "$node")" "$@" 2>/dev/null | tr -d '\r'
}

ha_node_alive() { # DIR NODE
    local pid
    pid=$(read_pid "$1/ha/$2.pid" || true)
    # Redis sets its process title to "redis-server HOST:PORT".
    [[ -n $pid ]] && proc_matches "$pid" "$HOST:$(ha_port "$1" "$2")"
}

ha_spawn_node() { # DIR NODE
    local dir=$1 node=$2 bin=$REDIS_SERVER
    [[ $node == s* ]] && bin=$REDIS_SENTINEL
    rm -f "$dir/ha/$node.pid"
    # The server daemonizes itself and writes its pid file once it has bound its port.
    (cd / && "$bin" "$dir/ha/$node.conf") </dev/null >>"$dir/ha/$node.log" 2>&1 9>&-
    local i
    for ((i = 0; i < 150; i++)); do
        if ha_node_alive "$dir" "$node" && [[ $(ha_cli "$dir" "$node" PING) == PONG ]]; then return 0; fi
        sleep 0.1
    done
    show_logs "$dir/ha/$node.log"
    die "ha node $node did not start on port $(ha_port "$dir" "$node")"
}

start_ha() { # DIR
    local dir=$1 node p r1 mpw spw i
    need_bin "$REDIS_SENTINEL"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found; $INSTALL_HINT"
    mkdir -p "$dir/ha/r1" "$dir/ha/r2"
    printf 'ha\n' >>"$dir/services"
    mpw=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    spw=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    printf '%s' "$mpw" >"$dir/ha/master.pw"
    printf '%s' "$spw" >"$dir/ha/sentinel.pw"
    chmod 600 "$dir/ha/master.pw" "$dir/ha/sentinel.pw"
    for node in $HA_NODES; do
        p=$(restart_port)
        USED_PORTS+="$p "
        eval "local port_$node=$p"
    done
    r1=$port_r1
    for node in r1 r2; do
        eval "p=\$port_$node"
        {
            printf 'bind %s\nport %s\ndir %s\ndaemonize yes\n' "$HOST" "$p" "$dir/ha/$node"
            printf 'pidfile %s\nlogfile %s\n' "$dir/ha/$node.pid" "$dir/ha/$node.log"
            printf 'save ""\nappendonly no\nrequirepass %s\nmasterauth %s\n' "$mpw" "$mpw"
            printf 'repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n'
            [[ $node == r2 ]] && printf 'replicaof %s %s\n' "$HOST" "$r1"
        } >"$dir/ha/$node.conf"
    done
    for node in s1 s2 s3; do
        eval "p=\$port_$node"
        {
            printf 'bind %s\nport %s\ndir %s\ndaemonize yes\n' "$HOST" "$p" "$dir/ha"
            printf 'pidfile %s\nlogfile %s\n' "$dir/ha/$node.pid" "$dir/ha/$node.log"
            printf 'requirepass %s\nsentinel sentinel-pass %s\n' "$spw" "$spw"
            printf 'sentinel monitor %s %s %s 2\n' "$HA_MASTER_NAME" "$HOST" "$r1"
            printf 'sentinel auth-pass %s %s\n' "$HA_MASTER_NAME" "$mpw"
            printf 'sentinel down-after-milliseconds %s 1000\n' "$HA_MASTER_NAME"
            printf 'sentinel failover-timeout %s 3000\n' "$HA_MASTER_NAME"
            printf 'sentinel parallel-syncs %s 1\n' "$HA_MASTER_NAME"
        } >"$dir/ha/$node.conf"
    done
    for node in $HA_NODES; do ha_spawn_node "$dir" "$node"; done
    wait_ha "$dir" 30
    export_var ROOTSTREAM_REDIS_SENTINELS "$HOST:$port_s1,$HOST:$port_s2,$HOST:$port_s3"
    export_var ROOTSTREAM_REDIS_MASTER_NAME "$HA_MASTER_NAME"
    export_var ROOTSTREAM_REDIS_SENTINEL_PASSWORD "$spw"
    export_var ROOTSTREAM_REDIS_MASTER_PASSWORD "$mpw"
    export_var ROOTSTREAM_HA_R1_PORT "$port_r1"
    export_var ROOTSTREAM_HA_R2_PORT "$port_r2"
    log "redis sentinel setup ready (master r1 on $HOST:$r1, replica r2, sentinels s1-s3)"
}

# Only `stop` uses this: the ha "service" is stopped node by node.
ha_spawn() { return 1; }

ha_stop() { # DIR
    local dir=$1 node pid ok=0
    [[ -d $dir/ha ]] || return 0
    for node in s3 s2 s1 r2 r1; do
        pid=$(read_pid "$dir/ha/$node.pid" || true)
        [[ -n $pid ]] || continue
        terminate "$pid" "$HOST:$(ha_port "$dir" "$node")" "ha $node" || ok=1
    done
    return "$ok"
}

# The node currently master according to the first sentinel that answers.
ha_master_node() { # DIR
    local dir=$1 s addr port node
    for s in s1 s2 s3; do
        ha_node_alive "$dir" "$s" || continue
        addr=$(ha_cli "$dir" "$s" SENTINEL get-master-addr-by-name "$HA_MASTER_NAME" | tail -n 1 || true)
        [[ -n $addr ]] || continue
        for node in r1 r2; do
            port=$(ha_port "$dir" "$node")
            [[ $addr == "$port" ]] && { printf '%s' "$node"; return 0; }
        done
    done
    return 1
}

wait_ha() { # DIR SECONDS
    local dir=$1 secs=${2:-30} i s m addrs running other link replica ok
    for ((i = 0; i < secs * 10; i++)); do
        ok=1 addrs='' running=0
        for s in s1 s2 s3; do ha_node_alive "$dir" "$s" && running=$((running + 1)); done
        ((running > 0)) || die "no sentinel is running"
        for s in s1 s2 s3; do
            ha_node_alive "$dir" "$s" || continue
            m=$(ha_cli "$dir" "$s" SENTINEL get-master-addr-by-name "$HA_MASTER_NAME" | tr '\n' ':' || true)
            addrs+="$m "
            other=$(ha_cli "$dir" "$s" SENTINEL master "$HA_MASTER_NAME" |
                awk 'p { print; exit } $0 == "num-other-sentinels" { p = 1 }' || true)
            [[ -n $other ]] && ((other >= running - 1)) || ok=0
        done
        # Every running sentinel names the same master.
        [[ $(printf '%s\n' $addrs | sort -u | wc -l) == 1 ]] || ok=0
        m=$(ha_master_node "$dir" || true)
        if ((ok)) && [[ -n $m ]] && ha_node_alive "$dir" "$m" &&
            [[ $(ha_cli "$dir" "$m" ROLE | head -n 1) == master ]]; then
            replica=r1
            [[ $m == r1 ]] && replica=r2
            link=$(ha_cli "$dir" "$replica" INFO replication | sed -n 's/^master_link_status://p' || true)
            if [[ $link == up ]] && ha_cli "$dir" s1 SENTINEL replicas "$HA_MASTER_NAME" >/dev/null &&
                [[ $(ha_cli "$dir" "$replica" ROLE | head -n 1) == slave ]]; then
                # The sentinels must see the replica as healthy too.
                local flags_ok=1
                for s in s1 s2 s3; do
                    ha_node_alive "$dir" "$s" || continue
                    ha_cli "$dir" "$s" SENTINEL replicas "$HA_MASTER_NAME" |
                        awk 'p { print; p = 0 } $0 == "flags" { p = 1 }' | grep -qx slave || flags_ok=0
                done
                if ((flags_ok)); then
                    log "ha: master is $m, replica $replica connected"
                    return 0
                fi
            fi
        fi
        sleep 0.1
    done
    die "ha: the sentinels did not agree on a master with a connected replica within ${secs}s"
}

ha_dir_check() { [[ -n ${1:-} && -f $1/$MARKER && -d $1/ha ]] || die "${1:-?} is not a stack directory with --sentinel"; }

cmd_ha_kill() { # DIR ROLE
    local dir=${1:-} role=${2:-} node pid
    ha_dir_check "$dir"
    case $role in
    master) node=$(ha_master_node "$dir") || die "no sentinel names a master" ;;
    replica)
        node=$(ha_master_node "$dir") || die "no sentinel names a master"
        if [[ $node == r1 ]]; then node=r2; else node=r1; fi
        ;;
    r1 | r2 | s1 | s2 | s3) node=$role ;;
    sentinel[123]) node=s${role#sentinel} ;;
    *) usage ;;
    esac
    pid=$(read_pid "$dir/ha/$node.pid" || true)
    [[ -n $pid ]] && ha_node_alive "$dir" "$node" || die "ha node $node is not running"
    kill -s KILL "$pid"
    wait_gone "$pid" 5 || die "ha node $node (pid $pid) survived SIGKILL"
    rm -f "$dir/ha/$node.pid"
    log "ha: killed $node ($role, pid $pid)"
    printf '%s\n' "$node"
}

cmd_ha_start() { # DIR NODE
    local dir=${1:-} node=${2:-}
    ha_dir_check "$dir"
    case $node in
    r1 | r2 | s1 | s2 | s3) ;;
    sentinel[123]) node=s${node#sentinel} ;;
    *) usage ;;
    esac
    ha_node_alive "$dir" "$node" && die "ha node $node is still running"
    close_inherited_fds
    ha_spawn_node "$dir" "$node"
    log "ha: started $node"
}

cmd_ha_wait() { # DIR [SECONDS]
    ha_dir_check "${1:-}"
    wait_ha "$1" "${2:-30}"
}

# ---------------------------------------------------------------- postgresql ha (pg-ha)
#
# Three PostgreSQL nodes in DIR/pgha (p1 starts as primary, p2 and p3 are
# streaming replicas cloned with pg_basebackup, each on its own physical slot)
# and a three-member etcd cluster in DIR/etcd. Separate from the plain
# PostgreSQL above. The nodes listen on TCP only and run as the OS user in
# DIR/pgha/user (postgres when the stack was started as root).

PGHA_NODES="p1 p2 p3"
ETCD_MEMBERS="e1 e2 e3"
ETCD=/usr/bin/etcd
ETCDCTL=/usr/bin/etcdctl

pgha_port() { cat "$1/pgha/$2.port" 2>/dev/null; }

# PG_RUN for the commands after `start` (pg-start, stop): from DIR/pgha/user.
pgha_runner() { # DIR
    PG_RUN=()
    if ((EUID == 0)) && [[ $(cat "$1/pgha/user" 2>/dev/null) == postgres ]]; then
        PG_RUN=("$(find_runuser)" -u postgres --)
    fi
}

pgha_query() { # DIR NODE SQL (connect_timeout covers the whole startup, so a frozen server counts as down)
    PGCONNECT_TIMEOUT=2 timeout 5 "$PG_BIN/psql" -X -q -A -t -w \
        "host=$HOST port=$(pgha_port "$1" "$2") user=postgres dbname=postgres sslmode=disable application_name=stack.sh" \
        -c "$3" 2>/dev/null
}

# The postmaster's pid, if it is running and is the server of DIR/pgha/NODE.
pgha_pid() { # DIR NODE
    local pid
    pid=$(read_pid "$1/pgha/$2/postmaster.pid" 2>/dev/null || true)
    [[ -n $pid ]] && proc_matches "$pid" "-D $1/pgha/$2 " && printf '%s' "$pid"
}

# Every process of NODE: the postmaster and the children that carry the
# node's cluster_name in their title (they keep it after the postmaster died).
pgha_procs() { # DIR NODE
    local dir=$1 node=$2 token
    token=$(cat "$dir/pgha/token")
    pgha_pid "$dir" "$node" && printf '\n'
    pgrep -f -- "^postgres: $token-$node: " || true
}

# A killed postmaster can stay a zombie for a moment (until its parent, often
# init, reaps it). PostgreSQL takes a pid in postmaster.pid that still exists
# for a running server and refuses to start, so wait until it is gone.
pgha_wait_reaped() { # DIR NODE
    local pid i
    pid=$(read_pid "$1/pgha/$2/postmaster.pid" 2>/dev/null || true)
    [[ -n $pid ]] || return 0
    for ((i = 0; i < 100; i++)); do
        [[ -e /proc/$pid ]] || return 0
        proc_alive "$pid" && return 0 # a live process: pg_ctl decides
        sleep 0.1
    done
}

# A stopped (SIGSTOP) process: no need to wait for its time-out.
proc_frozen() { [[ $(proc_stat_field "$1" 0 2>/dev/null) == T ]]; }

pgha_role() { # DIR NODE -> primary|replica|down
    local pid
    pid=$(pgha_pid "$1" "$2") && ! proc_frozen "$pid" || { printf down; return 0; }
    case $(pgha_query "$1" "$2" 'SELECT pg_is_in_recovery()') in
    f) printf primary ;;
    t) printf replica ;;
    *) printf down ;;
    esac
}

# The node's settings: DIR/pgha/NODE/rootstream.conf (included from
# postgresql.conf, and copied along by pg_basebackup, then rewritten).
# SYNC 0 (p1 until its replicas run): no synchronous standbys, or every
# commit would wait for one.
pgha_write_conf() { # DIR NODE [SYNC]
    local dir=$1 node=$2 n others='' conf=$1/pgha/$2/rootstream.conf sync
    for n in $PGHA_NODES; do [[ $n == "$node" ]] || others+="${others:+,}$n"; done
    if ((${3:-1})); then sync="'ANY 1 ($others)'"; else sync="''"; fi
    cat >"$conf" <<EOF
# Written by scripts/stack.sh (--pg-ha): node $node.
listen_addresses = '$HOST'
port = $(pgha_port "$dir" "$node")
unix_socket_directories = ''
cluster_name = '$(cat "$dir/pgha/token")-$node'
max_connections = 100
shared_buffers = 32MB
fsync = on
wal_level = replica
wal_log_hints = on
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 256MB
max_slot_wal_keep_size = 1GB
hot_standby = on
hot_standby_feedback = on
wal_sender_timeout = 10s
wal_receiver_timeout = 10s
synchronous_commit = on
# Quorum of the other nodes; only used while this node is primary.
synchronous_standby_names = $sync
EOF
    cat >"$dir/pgha/$node/pg_hba.conf" <<EOF
# Written by scripts/stack.sh (--pg-ha): trust on loopback only.
host all all $HOST/32 trust
host replication all $HOST/32 trust
EOF
    if ((EUID == 0)); then chown postgres: "$conf" "$dir/pgha/$node/pg_hba.conf"; fi
}

# Starts NODE with pg_ctl; on "address already in use" (another process won
# the race for the port) retries with other ports when REPICK is 1.
pgha_start_node() { # DIR NODE REPICK
    local dir=$1 node=$2 repick=$3 attempt off logf=$1/pgha/$2.log port
    pgha_wait_reaped "$dir" "$node"
    for ((attempt = 1; attempt <= BIND_ATTEMPTS; attempt++)); do
        off=$(file_size "$logf")
        if (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$dir/pgha/$node" -l "$logf" -w -t 60 start) \
            </dev/null >>"$dir/pgha/pg_ctl.log" 2>&1 9>&-; then
            return 0
        fi
        if ((repick)) && log_matches "$logf" "$off" 'address already in use'; then
            port=$(restart_port)
            USED_PORTS+="$port "
            log "pg-ha $node: port $(pgha_port "$dir" "$node") taken; trying $port"
            printf '%s\n' "$port" >"$dir/pgha/$node.port"
            pgha_write_conf "$dir" "$node"
            continue
        fi
        show_logs "$logf" "$dir/pgha/pg_ctl.log"
        die "pg-ha $node did not start"
    done
    die "pg-ha $node: no usable port after $BIND_ATTEMPTS attempts"
}

# p1 streams to every running replica named after its node, and one of them
# is synchronous (ANY 1: sync_state 'quorum').
pgha_replication_ok() { # DIR PRIMARY
    local dir=$1 primary=$2 rows n
    rows=$(pgha_query "$dir" "$primary" "SELECT application_name || ':' || state || ':' || sync_state FROM pg_stat_replication") || return 1
    for n in $PGHA_NODES; do
        [[ $n == "$primary" ]] && continue
        [[ $(pgha_role "$dir" "$n") == replica ]] || continue
        grep -q "^$n:streaming:" <<<"$rows" || return 1
    done
    grep -Eq ':streaming:(sync|quorum)$' <<<"$rows"
}

start_pgha_nodes() { # DIR
    local dir=$1 node n t0 p1 pids=() i slot
    t0=$(now)
    mkdir -m 755 "$dir/pgha"
    od -An -tx1 -N3 /dev/urandom | tr -d ' \n' | sed 's/^/rsdb-/' >"$dir/pgha/token"
    if ((EUID == 0)); then
        chown postgres: "$dir/pgha"
        printf 'postgres\n' >"$dir/pgha/user"
    else
        id -un >"$dir/pgha/user"
    fi
    for node in $PGHA_NODES; do
        p1=$(restart_port)
        USED_PORTS+="$p1 "
        printf '%s\n' "$p1" >"$dir/pgha/$node.port"
        : >"$dir/pgha/$node.log"
        if ((EUID == 0)); then chown postgres: "$dir/pgha/$node.log"; fi
    done
    FAIL_LOGS=("$dir/pgha/initdb.log" "$dir/pgha/pg_ctl.log" "$dir/pgha/basebackup.log" "$dir/pgha/p1.log")
    printf 'pgha\n' >>"$dir/services"
    # Data checksums (pg_rewind needs them or wal_log_hints; both are on).
    # --no-sync: see start_postgres.
    if ! (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$dir/pgha/p1" -U postgres --auth=trust \
        -E UTF8 --locale=C.UTF-8 --data-checksums --no-sync) >"$dir/pgha/initdb.log" 2>&1 9>&-; then
        log "pg-ha: initdb with locale C.UTF-8 failed; retrying with locale C"
        (cd "$dir" && "${PG_RUN[@]}" rm -rf "$dir/pgha/p1") 9>&-
        (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$dir/pgha/p1" -U postgres --auth=trust \
            -E UTF8 --locale=C --data-checksums --no-sync) >>"$dir/pgha/initdb.log" 2>&1 9>&- ||
            die "pg-ha: initdb failed"
    fi
    echo "include 'rootstream.conf'" >>"$dir/pgha/p1/postgresql.conf"
    pgha_write_conf "$dir" p1 0
    pgha_start_node "$dir" p1 1
    for ((i = 0; i < 100; i++)); do
        [[ $(pgha_role "$dir" p1) == primary ]] && break
        sleep 0.1
    done
    [[ $(pgha_query "$dir" p1 'SHOW data_directory') == "$dir/pgha/p1" ]] ||
        die "pg-ha p1 on port $(pgha_port "$dir" p1) is not the server we started"
    pgha_query "$dir" p1 'CREATE DATABASE rootstream' >/dev/null || die "pg-ha: CREATE DATABASE failed"
    # The replicas are cloned at the same time, each on its own slot (WAL is
    # kept for it from the start) with a fast checkpoint and no final fsync.
    for node in p2 p3; do
        slot=$(pgha_query "$dir" p1 "SELECT slot_name FROM pg_create_physical_replication_slot('$node')") ||
            die "pg-ha: could not create slot $node"
        [[ $slot == "$node" ]] || die "pg-ha: could not create slot $node"
        (cd "$dir" && exec "${PG_RUN[@]}" "$PG_BIN/pg_basebackup" -h "$HOST" -p "$(pgha_port "$dir" p1)" \
            -U postgres -D "$dir/pgha/$node" -X stream -S "$node" -c fast --no-sync) \
            </dev/null >>"$dir/pgha/basebackup.log" 2>&1 9>&- &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "pg-ha: pg_basebackup failed"; done
    for node in p2 p3; do
        pgha_write_conf "$dir" "$node"
        # Where ALTER SYSTEM (and pg_basebackup -R) put them, so tools that
        # re-point a replica change these very lines.
        {
            printf "primary_conninfo = 'host=%s port=%s user=postgres application_name=%s connect_timeout=2'\n" \
                "$HOST" "$(pgha_port "$dir" p1)" "$node"
            printf "primary_slot_name = '%s'\n" "$node"
        } >>"$dir/pgha/$node/postgresql.auto.conf"
        "${PG_RUN[@]}" touch "$dir/pgha/$node/standby.signal"
        rm -f "$dir/pgha/$node/postmaster.pid" "$dir/pgha/$node/postmaster.opts"
    done
    for node in p2 p3; do pgha_start_node "$dir" "$node" 1; done
    pgha_write_conf "$dir" p1 1
    [[ $(pgha_query "$dir" p1 'SELECT pg_reload_conf()') == t ]] || die "pg-ha: could not reload p1"
    for ((i = 0; i < 300; i++)); do
        pgha_replication_ok "$dir" p1 &&
            [[ $(pgha_role "$dir" p2) == replica && $(pgha_role "$dir" p3) == replica ]] && break
        sleep 0.1
    done
    ((i < 300)) || die "pg-ha: p2 and p3 did not stream from p1 (one of them synchronous) within 30s"
    log "pg-ha: p1 primary, p2 and p3 streaming ($(elapsed "$t0"))"
}

# Only `stop` uses this: the pgha "service" is stopped node by node.
pgha_spawn() { return 1; }

pgha_thaw_node() { # DIR NODE
    local pid
    for pid in $(cat "$1/pgha/$2.frozen" 2>/dev/null) $(pgha_procs "$1" "$2"); do
        kill -s CONT "$pid" 2>/dev/null || true
    done
    rm -f "$1/pgha/$2.frozen"
}

pgha_stop_node() { # DIR NODE
    local dir=$1 node=$2 pid i
    pgha_thaw_node "$dir" "$node"
    pid=$(pgha_pid "$dir" "$node" || true)
    if [[ -n $pid ]]; then
        (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$dir/pgha/$node" -m fast -w -t 30 stop) \
            </dev/null >>"$dir/pgha/pg_ctl.log" 2>&1 9>&- || log "pg-ha $node: pg_ctl stop failed; falling back to signals"
        terminate "$pid" "-D $dir/pgha/$node " "pg-ha $node" INT || return 1
    fi
    # Children left behind by a killed postmaster exit by themselves.
    for ((i = 0; i < 100; i++)); do
        [[ -z $(pgha_procs "$dir" "$node") ]] && return 0
        sleep 0.1
    done
    for pid in $(pgha_procs "$dir" "$node"); do terminate "$pid" "postgres: " "pg-ha $node child" KILL; done
    [[ -z $(pgha_procs "$dir" "$node") ]]
}

pgha_stop() { # DIR
    local dir=$1 node ok=0
    [[ -d $dir/pgha && -f $dir/pgha/token ]] || return 0
    pgha_runner "$dir"
    # Replicas first, so the primary's shutdown does not wait on them.
    for node in p3 p2 p1; do pgha_stop_node "$dir" "$node" || ok=1; done
    return "$ok"
}

# ---- etcd

etcd_port() { cat "$1/etcd/$2.port" 2>/dev/null; } # client port
etcd_endpoint() { printf 'http://%s:%s' "$HOST" "$(etcd_port "$1" "$2")"; }
etcd_endpoints() { # DIR
    local m out=''
    for m in $ETCD_MEMBERS; do out+="${out:+,}$(etcd_endpoint "$1" "$m")"; done
    printf '%s' "$out"
}
etcdctl_() { # ENDPOINTS ARGS...
    local eps=$1
    shift
    ETCDCTL_API=3 timeout 5 "$ETCDCTL" --endpoints="$eps" --dial-timeout=1s --command-timeout=2s "$@"
}

etcd_pid() { # DIR MEMBER
    local pid
    pid=$(read_pid "$1/etcd/$2.pid" || true)
    [[ -n $pid ]] && proc_matches "$pid" "--data-dir=$1/etcd/$2 " && printf '%s' "$pid"
}

etcd_spawn_member() { # DIR MEMBER
    local dir=$1 m=$2 args
    mapfile -t args <"$dir/etcd/$m.args"
    spawn_detached "$dir/etcd/$m.pid" "$dir/etcd/$m.log" "$ETCD" "${args[@]}" >/dev/null ||
        die "etcd $m did not start"
}

etcd_healthy() { etcdctl_ "$(etcd_endpoint "$1" "$2")" endpoint health >/dev/null 2>&1; }

# `endpoint status` of every member that answers: "MEMBER ID LEADER_ID".
etcd_status() { # DIR
    local m line pid
    for m in $ETCD_MEMBERS; do
        pid=$(etcd_pid "$1" "$m") && ! proc_frozen "$pid" || continue
        line=$(etcdctl_ "$(etcd_endpoint "$1" "$m")" endpoint status -w fields 2>/dev/null) || continue
        # (-w fields: the ids as exact integers, where JSON tools may round them.)
        awk -v m="$m" '$1 == "\"MemberID\"" { id = $3 } $1 == "\"Leader\"" { l = $3 }
            END { if (id != "" && l != "") print m, id, l }' <<<"$line"
    done
}

etcd_leader() { # DIR -> member name
    local m id leader
    while read -r m id leader; do
        [[ $id == "$leader" && $leader != 0 ]] && { printf '%s' "$m"; return 0; }
    done < <(etcd_status "$1")
    return 1
}

# A leader, and a quorum (2 of 3) of members that are healthy and agree on it.
etcd_quorum_ok() { # DIR
    local dir=$1 m id leader leaders='' healthy=0
    while read -r m id leader; do
        etcd_healthy "$dir" "$m" || continue
        healthy=$((healthy + 1))
        leaders+="$leader "
    done < <(etcd_status "$dir")
    ((healthy >= 2)) || return 1
    [[ $(printf '%s\n' $leaders | sort -u | wc -l) == 1 && $leaders != "0 "* ]]
}

wait_etcd() { # DIR SECONDS
    local deadline=$((SECONDS + ${2:-30}))
    while :; do
        etcd_quorum_ok "$1" && return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# Spawns the three members (bootstrap). A member that lost the race for a
# port shows "address already in use"; then all three start over with new
# ports (the initial cluster names every member's peer port).
spawn_etcd() { # DIR
    local dir=$1 m attempt cluster token p
    mkdir -m 700 "$dir/etcd"
    printf 'etcd\n' >>"$dir/services"
    FAIL_LOGS+=("$dir/etcd/e1.log" "$dir/etcd/e2.log" "$dir/etcd/e3.log")
    for ((attempt = 1; attempt <= BIND_ATTEMPTS; attempt++)); do
        cluster=''
        token=rsdb-$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
        for m in $ETCD_MEMBERS; do
            for p in port peer; do
                eval "local ${p}_$m=$(restart_port)"
                eval "USED_PORTS+=\"\$${p}_$m \""
            done
            eval "cluster+=\"\${cluster:+,}$m=http://$HOST:\$peer_$m\""
        done
        for m in $ETCD_MEMBERS; do
            eval "printf '%s\n' \"\$port_$m\" >\"$dir/etcd/$m.port\""
            eval "p=\$peer_$m"
            printf '%s\n' "--name=$m" "--data-dir=$dir/etcd/$m" \
                "--listen-client-urls=$(etcd_endpoint "$dir" "$m")" \
                "--advertise-client-urls=$(etcd_endpoint "$dir" "$m")" \
                "--listen-peer-urls=http://$HOST:$p" "--initial-advertise-peer-urls=http://$HOST:$p" \
                "--initial-cluster=$cluster" "--initial-cluster-token=$token" \
                "--initial-cluster-state=new" "--heartbeat-interval=100" "--election-timeout=1000" \
                "--logger=zap" "--log-outputs=stderr" "--log-level=warn" >"$dir/etcd/$m.args"
            : >"$dir/etcd/$m.log"
            etcd_spawn_member "$dir" "$m"
        done
        # A bind failure shows within a moment; the cluster's health is
        # checked later (wait_etcd), while PostgreSQL starts.
        sleep 0.3
        if ! grep -qi 'address already in use' "$dir"/etcd/e[123].log; then return 0; fi
        log "etcd: a port was taken; starting over with other ports"
        etcd_stop "$dir"
        for m in $ETCD_MEMBERS; do rm -rf "${dir:?}/etcd/$m" "$dir/etcd/$m.pid"; done
    done
    die "etcd: no usable ports after $BIND_ATTEMPTS attempts"
}

etcd_spawn() { return 1; } # only `stop` uses it, see pgha_spawn

etcd_stop() { # DIR
    local dir=$1 m pid ok=0
    [[ -d $dir/etcd ]] || return 0
    for m in e3 e2 e1; do
        pid=$(etcd_pid "$dir" "$m" || true)
        [[ -n $pid ]] || continue
        kill -s CONT "$pid" 2>/dev/null || true
        terminate "$pid" "--data-dir=$dir/etcd/$m " "etcd $m" || ok=1
    done
    return "$ok"
}

start_pgha() { # DIR
    local dir=$1 t0 m b
    t0=$(now)
    for b in initdb pg_ctl postgres psql pg_basebackup; do need_bin "$PG_BIN/$b"; done
    need_bin "$ETCD"
    need_bin "$ETCDCTL"
    command -v pgrep >/dev/null 2>&1 || die "pgrep not found (package procps)"
    spawn_etcd "$dir"
    start_pgha_nodes "$dir"
    wait_etcd "$dir" 30 || die "etcd: no leader with a quorum within 30s"
    log "etcd: e1-e3 healthy, leader $(etcd_leader "$dir" || echo '?')"
    local nodes='' data='' hosts=''
    for m in $PGHA_NODES; do
        nodes+="${nodes:+,}$m=postgres://postgres@$HOST:$(pgha_port "$dir" "$m")/rootstream"
        data+="${data:+,}$m=$dir/pgha/$m"
        hosts+="${hosts:+,}$HOST:$(pgha_port "$dir" "$m")"
    done
    export_var ROOTSTREAM_HA_PG_NODES "$nodes"
    export_var ROOTSTREAM_HA_PG_DATA "$data"
    export_var ROOTSTREAM_HA_DATABASE_URL "postgres://postgres@$hosts/rootstream?target_session_attrs=read-write"
    export_var ROOTSTREAM_ETCD_ENDPOINTS "$(etcd_endpoints "$dir")"
    log "pg-ha setup ready in $(elapsed "$t0") (p1 on $HOST:$(pgha_port "$dir" p1), etcd $(etcd_endpoints "$dir"))"
}

# ---- pg-* and etcd-* commands

pgha_dir_check() { [[ -n ${1:-} && -f $1/$MARKER && -f $1/pgha/token ]] || die "${1:-?} is not a stack directory with --pg-ha"; }

# NODE argument: p1|p2|p3, or the (first) node in that role.
pgha_resolve() { # DIR NODE
    local dir=$1 want=$2 n
    case $want in
    p1 | p2 | p3) printf '%s' "$want" ;;
    primary | replica)
        for n in $PGHA_NODES; do
            [[ $(pgha_role "$dir" "$n") == "$want" ]] && { printf '%s' "$n"; return 0; }
        done
        die "no node is $want"
        ;;
    *) usage ;;
    esac
}

cmd_pg_kill() { # DIR NODE
    local dir=${1:-} node pid procs p i
    pgha_dir_check "$dir"
    node=$(pgha_resolve "$dir" "${2:-}")
    pid=$(pgha_pid "$dir" "$node") || die "pg-ha $node is not running"
    procs=$(pgha_procs "$dir" "$node")
    kill -s KILL "$pid"
    wait_gone "$pid" 5 || die "pg-ha $node (pid $pid) survived SIGKILL"
    # Frozen children must run to notice that their postmaster is gone.
    for p in $procs; do kill -s CONT "$p" 2>/dev/null || true; done
    rm -f "$dir/pgha/$node.frozen"
    for ((i = 0; i < 100; i++)); do
        [[ -z $(pgha_procs "$dir" "$node") ]] && break
        sleep 0.1
    done
    pgha_wait_reaped "$dir" "$node"
    log "pg-ha: killed $node (postmaster pid $pid)"
    printf '%s\n' "$node"
}

cmd_pg_stop() { # DIR NODE
    local dir=${1:-} node
    pgha_dir_check "$dir"
    node=$(pgha_resolve "$dir" "${2:-}")
    pgha_runner "$dir"
    pgha_pid "$dir" "$node" >/dev/null || die "pg-ha $node is not running"
    pgha_stop_node "$dir" "$node" || die "pg-ha $node did not stop"
    log "pg-ha: stopped $node"
    printf '%s\n' "$node"
}

cmd_pg_start() { # DIR NODE
    local dir=${1:-} node=${2:-} i
    pgha_dir_check "$dir"
    case $node in p1 | p2 | p3) ;; *) usage ;; esac
    pgha_runner "$dir"
    pgha_pid "$dir" "$node" >/dev/null && die "pg-ha $node is still running"
    [[ -z $(pgha_procs "$dir" "$node") ]] || die "pg-ha $node: processes of its last run are still there"
    close_inherited_fds
    # pg_rewind and pg_basebackup copy the source's configuration files:
    # the node's own settings (port, cluster_name, ...) are written again.
    # The role stays what standby.signal and postgresql.auto.conf say.
    pgha_write_conf "$dir" "$node"
    pgha_start_node "$dir" "$node" 0
    for ((i = 0; i < 100; i++)); do
        [[ $(pgha_role "$dir" "$node") != down ]] && break
        sleep 0.1
    done
    log "pg-ha: started $node ($(pgha_role "$dir" "$node"))"
}

cmd_pg_freeze() { # DIR NODE
    local dir=${1:-} node procs p
    pgha_dir_check "$dir"
    node=$(pgha_resolve "$dir" "${2:-}")
    pgha_pid "$dir" "$node" >/dev/null || die "pg-ha $node is not running"
    # The postmaster first, so it starts no new child meanwhile.
    procs=$(pgha_procs "$dir" "$node")
    for p in $procs; do kill -s STOP "$p" 2>/dev/null || true; done
    printf '%s\n' $procs >>"$dir/pgha/$node.frozen"
    log "pg-ha: froze $node ($(wc -w <<<"$procs") processes)"
    printf '%s\n' "$node"
}

cmd_pg_thaw() { # DIR NODE
    local dir=${1:-} node=${2:-}
    pgha_dir_check "$dir"
    case $node in p1 | p2 | p3) ;; *) usage ;; esac
    pgha_thaw_node "$dir" "$node"
    log "pg-ha: thawed $node"
}

cmd_pg_role() { # DIR NODE
    pgha_dir_check "${1:-}"
    case ${2:-} in p1 | p2 | p3) ;; *) usage ;; esac
    pgha_role "$1" "$2"
    printf '\n'
}

# Exactly one primary, and every running replica streaming to it.
cmd_pg_wait() { # DIR [SECONDS]
    local dir=${1:-} secs=${2:-30} n r primaries roles deadline
    pgha_dir_check "$dir"
    [[ $secs =~ ^[0-9]+$ ]] || usage
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        primaries=() roles=''
        for n in $PGHA_NODES; do
            r=$(pgha_role "$dir" "$n")
            roles+="$n=$r "
            [[ $r == primary ]] && primaries+=("$n")
        done
        if ((${#primaries[@]} == 1)) && pgha_replication_ok "$dir" "${primaries[0]}"; then
            log "pg-ha: ${roles% }"
            return 0
        fi
        sleep 0.1
    done
    die "pg-ha: not exactly one primary with every running replica streaming within ${secs}s (${roles% })"
}

etcd_resolve() { # DIR ETCD
    case $2 in
    e1 | e2 | e3) printf '%s' "$2" ;;
    leader) etcd_leader "$1" || die "etcd has no leader" ;;
    *) usage ;;
    esac
}

etcd_dir_check() { [[ -n ${1:-} && -f $1/$MARKER && -d $1/etcd ]] || die "${1:-?} is not a stack directory with --pg-ha"; }

cmd_etcd_kill() { # DIR ETCD
    local dir=${1:-} m pid
    etcd_dir_check "$dir"
    m=$(etcd_resolve "$dir" "${2:-}")
    pid=$(etcd_pid "$dir" "$m") || die "etcd $m is not running"
    kill -s KILL "$pid"
    wait_gone "$pid" 5 || die "etcd $m (pid $pid) survived SIGKILL"
    rm -f "$dir/etcd/$m.pid"
    log "etcd: killed $m (pid $pid)"
    printf '%s\n' "$m"
}

cmd_etcd_start() { # DIR ETCD
    local dir=${1:-} m=${2:-} i
    etcd_dir_check "$dir"
    case $m in e1 | e2 | e3) ;; *) usage ;; esac
    etcd_pid "$dir" "$m" >/dev/null && die "etcd $m is still running"
    close_inherited_fds
    etcd_spawn_member "$dir" "$m"
    for ((i = 0; i < 100; i++)); do
        etcd_healthy "$dir" "$m" && { log "etcd: started $m"; return 0; }
        etcd_pid "$dir" "$m" >/dev/null || break
        sleep 0.1
    done
    # Alone (no quorum) it runs but cannot answer a health check.
    etcd_pid "$dir" "$m" >/dev/null || { show_logs "$dir/etcd/$m.log"; die "etcd $m exited"; }
    log "etcd: started $m (not healthy yet: no quorum?)"
}

cmd_etcd_freeze() { # DIR ETCD
    local dir=${1:-} m pid
    etcd_dir_check "$dir"
    m=$(etcd_resolve "$dir" "${2:-}")
    pid=$(etcd_pid "$dir" "$m") || die "etcd $m is not running"
    kill -s STOP "$pid"
    log "etcd: froze $m (pid $pid)"
    printf '%s\n' "$m"
}

cmd_etcd_thaw() { # DIR ETCD
    local dir=${1:-} m=${2:-} pid
    etcd_dir_check "$dir"
    case $m in e1 | e2 | e3) ;; *) usage ;; esac
    pid=$(etcd_pid "$dir" "$m") || die "etcd $m is not running"
    kill -s CONT "$pid"
    log "etcd: thawed $m"
}

cmd_etcd_wait() { # DIR [SECONDS]
    etcd_dir_check "${1:-}"
    [[ ${2:-30} =~ ^[0-9]+$ ]] || usage
    wait_etcd "$1" "${2:-30}" || die "etcd: no leader with a quorum within ${2:-30}s"
    log "etcd: leader $(etcd_leader "$1" || echo '?')"
}

cmd_etcd_leader() { # DIR
    etcd_dir_check "${1:-}"
    etcd_leader "$1" || die "etcd has no leader"
    printf '\n'
}

# ---------------------------------------------------------------- patroni (baseline)
#
# `patroni-start DIR`: a Patroni cluster of its own (members pt1 pt2 pt3,
# data in DIR/patroni/ptN, bootstrapped by Patroni itself) on the stack's
# etcd (--pg-ha), for comparisons with our own failover. Stopped by
# `patroni-stop DIR` and by `stop`.

PATRONI=/usr/bin/patroni
PATRONI_MEMBERS="pt1 pt2 pt3"
# Patroni's documented minimums are ttl 20, loop_wait 1, retry_timeout 3,
# with the rule loop_wait + 2 * retry_timeout <= ttl; on a busy machine a
# little slack on the last two avoids spurious demotions.
PATRONI_TTL=20
PATRONI_LOOP_WAIT=2
PATRONI_RETRY_TIMEOUT=5

patroni_port() { sed -n "${3:-1}p" "$1/patroni/$2.ports" 2>/dev/null; } # DIR MEMBER [1=pg 2=rest]

patroni_pid() { # DIR MEMBER
    local pid
    pid=$(read_pid "$1/patroni/$2.pid" || true)
    [[ -n $pid ]] && proc_matches "$pid" "$1/patroni/$2.yml" && printf '%s' "$pid"
}

# GET on a member's REST API: the HTTP status.
patroni_status() { http_status "$(patroni_port "$1" "$2" 2)" "$3"; }

# The member whose REST API says it is the running primary.
patroni_leader() { # DIR
    local m
    for m in $PATRONI_MEMBERS; do
        [[ $(patroni_status "$1" "$m" /primary) == 200 ]] && { printf '%s' "$m"; return 0; }
    done
    return 1
}

# A leader, and every other member running and streaming, one of them the
# synchronous standby (from the leader's /cluster).
patroni_ready() { # DIR
    local dir=$1 leader body
    leader=$(patroni_leader "$dir") || return 1
    body=$(http_body "$(patroni_port "$dir" "$leader" 2)" /cluster)
    [[ -n $body ]] || return 1
    python3 - "$body" <<'EOF' 2>/dev/null
import json, sys
members = json.loads(sys.argv[1]).get("members", [])
roles = [m.get("role") for m in members]
ok = (len(members) == 3 and roles.count("leader") == 1 and "sync_standby" in roles
      and all(m.get("state") in ("running", "streaming") for m in members))
sys.exit(0 if ok else 1)
EOF
}

patroni_write_config() { # DIR MEMBER SCOPE
    local dir=$1 m=$2 scope=$3 hosts='' e
    for e in $ETCD_MEMBERS; do hosts+="${hosts:+,}$HOST:$(etcd_port "$dir" "$e")"; done
    cat >"$dir/patroni/$m.yml" <<EOF
# Written by scripts/stack.sh (patroni-start).
scope: $scope
namespace: /rootstream-patroni/
name: $m
log:
  level: INFO
restapi:
  listen: $HOST:$(patroni_port "$dir" "$m" 2)
  connect_address: $HOST:$(patroni_port "$dir" "$m" 2)
etcd3:
  protocol: http
  hosts: $hosts
bootstrap:
  dcs:
    ttl: $PATRONI_TTL
    loop_wait: $PATRONI_LOOP_WAIT
    retry_timeout: $PATRONI_RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        wal_log_hints: 'on'
        hot_standby: 'on'
        hot_standby_feedback: 'on'
        max_connections: 100
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        max_slot_wal_keep_size: 1GB
        synchronous_commit: 'on'
  initdb:
  - data-checksums
  - no-sync
  - encoding: UTF8
  - locale: C.UTF-8
  pg_hba:
  - host all all $HOST/32 trust
  - host replication all $HOST/32 trust
postgresql:
  listen: $HOST:$(patroni_port "$dir" "$m")
  connect_address: $HOST:$(patroni_port "$dir" "$m")
  data_dir: $dir/patroni/$m
  bin_dir: $PG_BIN
  pgpass: $dir/patroni/$m.pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: ''
    shared_buffers: 32MB
  basebackup:
  - checkpoint: fast
  - no-sync
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
EOF
    if ((EUID == 0)); then chown postgres: "$dir/patroni/$m.yml"; fi
}

patroni_spawn_member() { # DIR MEMBER
    local dir=$1 m=$2 run=()
    # setpriv execs patroni as postgres (runuser would stay its parent), so
    # the recorded pid is Patroni's own.
    if ((EUID == 0)); then run=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
    spawn_detached "$dir/patroni/$m.pid" "$dir/patroni/$m.log" \
        "${run[@]}" env HOME="$dir/patroni" "$PATRONI" "$dir/patroni/$m.yml" >/dev/null ||
        die "patroni $m did not start"
}

cmd_patroni_start() { # DIR
    local dir=${1:-} m p scope t0 i urls='' hosts='' apis=''
    pgha_dir_check "$dir"
    [[ -d $dir/etcd ]] || die "$dir has no etcd (start the stack with --pg-ha)"
    [[ -e $dir/patroni ]] && die "$dir/patroni exists (patroni-stop first)"
    need_bin "$PATRONI"
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    if ((EUID == 0)); then command -v setpriv >/dev/null 2>&1 || die "setpriv not found (package util-linux)"; fi
    t0=$(now)
    close_inherited_fds
    mkdir -m 755 "$dir/patroni"
    if ((EUID == 0)); then chown postgres: "$dir/patroni"; fi
    printf 'patroni\n' >>"$dir/services"
    scope=$(cat "$dir/pgha/token")-patroni
    for m in $PATRONI_MEMBERS; do
        # USED_PORTS is per run: check every port against the env file's too.
        for i in 1 2; do
            p=$(restart_port)
            while grep -q ":$p\b" "$dir/env" "$dir"/patroni/*.ports 2>/dev/null; do p=$(restart_port); done
            printf '%s\n' "$p" >>"$dir/patroni/$m.ports"
        done
        : >"$dir/patroni/$m.log"
        patroni_write_config "$dir" "$m" "$scope"
    done
    # The first one bootstraps (initdb) and takes the leader key; the others
    # clone it with pg_basebackup once they see a leader.
    for m in $PATRONI_MEMBERS; do patroni_spawn_member "$dir" "$m"; done
    for ((i = 0; i < 900; i++)); do
        patroni_ready "$dir" && break
        for m in $PATRONI_MEMBERS; do
            patroni_pid "$dir" "$m" >/dev/null || {
                show_logs "$dir/patroni/$m.log"
                die "patroni $m exited during startup"
            }
        done
        sleep 0.1
    done
    if ! patroni_ready "$dir"; then
        show_logs "$dir"/patroni/pt[123].log
        die "patroni: no leader with a streaming synchronous standby within 90s"
    fi
    m=$(patroni_leader "$dir")
    PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -q -w \
        "host=$HOST port=$(patroni_port "$dir" "$m") user=postgres dbname=postgres" \
        -c 'CREATE DATABASE rootstream' >/dev/null 2>&1 || die "patroni: CREATE DATABASE on $m failed"
    for m in $PATRONI_MEMBERS; do
        hosts+="${hosts:+,}$HOST:$(patroni_port "$dir" "$m")"
        apis+="${apis:+,}http://$HOST:$(patroni_port "$dir" "$m" 2)"
    done
    urls="postgres://postgres@$hosts/rootstream?target_session_attrs=read-write"
    EXPORTS=()
    export_var ROOTSTREAM_PATRONI_URL "$urls"
    export_var ROOTSTREAM_PATRONI_API "$apis"
    printf '%s\n' "${EXPORTS[@]}" >>"$dir/env"
    log "patroni: leader $(patroni_leader "$dir"), ready in $(elapsed "$t0")"
    printf '%s\n' "${EXPORTS[@]}"
}

patroni_spawn() { return 1; } # only `stop` uses it, see pgha_spawn

patroni_stop() { # DIR
    local dir=$1 m pid ok=0 scope i
    [[ -d $dir/patroni ]] || return 0
    # Patroni stops its PostgreSQL (fast shutdown) when it gets SIGTERM.
    for m in $PATRONI_MEMBERS; do
        pid=$(patroni_pid "$dir" "$m" || true)
        [[ -n $pid ]] && kill -s TERM "$pid" 2>/dev/null
    done
    for m in $PATRONI_MEMBERS; do
        pid=$(patroni_pid "$dir" "$m" || true)
        [[ -n $pid ]] || continue
        terminate "$pid" "$dir/patroni/$m.yml" "patroni $m" || ok=1
    done
    # Whatever PostgreSQL a killed Patroni left behind.
    pgha_runner "$dir"
    for m in $PATRONI_MEMBERS; do
        pid=$(read_pid "$dir/patroni/$m/postmaster.pid" 2>/dev/null || true)
        [[ -n $pid ]] && proc_matches "$pid" "$dir/patroni/$m" || continue
        (cd "$dir" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$dir/patroni/$m" -m fast -w -t 30 stop) \
            </dev/null >>"$dir/patroni/pg_ctl.log" 2>&1 9>&- || true
        terminate "$pid" "$dir/patroni/$m" "patroni $m postgres" INT || ok=1
    done
    scope=$(cat "$dir/pgha/token" 2>/dev/null)-patroni
    for ((i = 0; i < 100; i++)); do
        [[ -z $(pgrep -f -- "^postgres: $scope: ") ]] && break
        sleep 0.1
    done
    for pid in $(pgrep -f -- "^postgres: $scope: "); do terminate "$pid" "postgres: " "patroni child" KILL || ok=1; done
    return "$ok"
}

cmd_patroni_stop() { # DIR
    local dir=${1:-}
    pgha_dir_check "$dir"
    [[ -d $dir/patroni ]] || die "no Patroni cluster in $dir"
    patroni_stop "$dir" || die "some Patroni processes of $dir are still running"
    rm -rf "${dir:?}/patroni"
    sed -i '/^export ROOTSTREAM_PATRONI_/d' "$dir/env"
    sed -i '/^patroni$/d' "$dir/services"
    log "patroni stopped"
}

# kill -9 the leader's Patroni and its postmaster (a crashed host). Prints
# the member's name.
cmd_patroni_kill_primary() { # DIR
    local dir=${1:-} m pid pgpid kids p
    pgha_dir_check "$dir"
    m=$(patroni_leader "$dir") || die "no Patroni member is primary"
    pid=$(patroni_pid "$dir" "$m") || die "patroni $m is not running"
    pgpid=$(read_pid "$dir/patroni/$m/postmaster.pid" 2>/dev/null || true)
    kill -s KILL "$pid"
    if [[ -n $pgpid ]] && proc_matches "$pgpid" "$dir/patroni/$m"; then
        kids=$(pgrep -P "$pgpid" || true)
        kill -s KILL "$pgpid"
        # Without a postmaster the children exit at once; make sure.
        for p in $kids; do kill -s KILL "$p" 2>/dev/null || true; done
        wait_gone "$pgpid" 5 || die "postgres of $m (pid $pgpid) survived SIGKILL"
    fi
    wait_gone "$pid" 5 || die "patroni $m (pid $pid) survived SIGKILL"
    log "patroni: killed $m (patroni pid $pid, postgres pid ${pgpid:-?})"
    printf '%s\n' "$m"
}

# ---------------------------------------------------------------- influxdb

start_influx() {
    mkdir -p "$1/influx/meta" "$1/influx/data" "$1/influx/wal"
    # Two ports: HTTP, and the backup/restore RPC (its default 8088 would
    # collide between stacks).
    start_service influx "$1" influx.log 'address already in use' 2 60
}

influx_spawn() { # DIR HTTP_PORT RPC_PORT
    local dir=$1 conf=$1/influxdb.conf
    # Everything not listed keeps its default; graphite, collectd, opentsdb
    # and udp listeners are disabled by default.
    cat >"$conf" <<EOF
reporting-disabled = true
bind-address = "$HOST:$3"

[meta]
  dir = "$dir/influx/meta"
  logging-enabled = false

[data]
  dir = "$dir/influx/data"
  wal-dir = "$dir/influx/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "$HOST:$2"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
EOF
    SVC_MATCH=$conf
    SVC_PID=$(spawn_detached "$dir/influx.pid" "$dir/influx.log" "$INFLUXD" run -config "$conf")
}

influx_ready() { # DIR HTTP_PORT RPC_PORT
    local body
    [[ $(http_status "$2" /ping) == 204 ]] || return 1
    # /debug/vars shows the server's command line: make sure the 204 came
    # from our influxd, not one of a parallel stack. (Without curl or python3
    # the body is empty; trust the ping.)
    body=$(http_body "$2" /debug/vars)
    [[ -z $body || $body == *"$1/influxdb.conf"* ]]
}

influx_up() { # DIR HTTP_PORT RPC_PORT
    export_var ROOTSTREAM_INFLUX_PORT "$2"
    export_var ROOTSTREAM_INFLUX_URL "http://$HOST:$2"
}

# ---------------------------------------------------------------- victoriametrics

start_vm() {
    mkdir -p "$1/vm"
    start_service vm "$1" vm.log 'address already in use' 1 30
}

vm_spawn() { # DIR PORT
    local dir=$1
    # A small latency offset: the default 30 s hides fresh points from queries.
    SVC_MATCH="-storageDataPath=$dir/vm"
    SVC_PID=$(spawn_detached "$dir/vm.pid" "$dir/vm.log" "$VICTORIA" \
        "-storageDataPath=$dir/vm" "-httpListenAddr=$HOST:$2" \
        -search.latencyOffset=1s -retentionPeriod=1 -loggerLevel=WARN)
}

vm_ready() { # DIR PORT
    [[ $(http_status "$2" /health) == 200 ]] || return 1
    # Make sure the answer came from our server (ss shows the owner only to root).
    local listeners
    listeners=$(ss -Htlnp "sport = :$2" 2>/dev/null || true)
    if [[ $listeners == *pid=* && $listeners != *"pid=$SVC_PID,"* ]]; then
        die "the VictoriaMetrics server on port $2 is not the one we started"
    fi
}

vm_up() { # DIR PORT
    export_var ROOTSTREAM_VM_PORT "$2"
    export_var ROOTSTREAM_VM_URL "http://$HOST:$2"
}

# ---------------------------------------------------------------- s3 (moto)

# Creates the IAM user the tests sign with, through moto's IAM API (boto3
# comes with moto). These are the server's only unauthenticated requests.
s3_bootstrap() { # PORT
    # No AWS configuration of the caller's may leak in, and no proxy may
    # catch 127.0.0.1.
    env AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
        NO_PROXY='*' no_proxy='*' "$MOTO_VENV/bin/python" - "http://$HOST:$1" "$S3_REGION" <<'EOF'
import json, sys
import boto3
from botocore.config import Config

iam = boto3.client(
    "iam",
    endpoint_url=sys.argv[1],
    region_name=sys.argv[2],
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
    config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
)
user = "rootstream-test"
iam.create_user(UserName=user)
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName=user)["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
EOF
}

start_s3() {
    start_service s3 "$1" s3.log 'address already in use' 1 60
}

s3_spawn() { # DIR PORT
    SVC_MATCH="moto_server -H $HOST -p $2"
    SVC_PID=$(spawn_detached "$1/s3.pid" "$1/s3.log" \
        env INITIAL_NO_AUTH_ACTION_COUNT=$S3_BOOTSTRAP_REQUESTS \
        "$MOTO_VENV/bin/python" "$MOTO_SERVER" -H "$HOST" -p "$2")
}

s3_ready() { # DIR PORT
    local listeners
    [[ $(http_status "$2" /moto-api/) == 200 ]] || return 1
    # Make sure the answer came from our server, not one of a parallel stack
    # (ss shows the owner only to root).
    listeners=$(ss -Htlnp "sport = :$2" 2>/dev/null || true)
    if [[ $listeners == *pid=* && $listeners != *"pid=$SVC_PID,"* ]]; then
        die "the S3 server on port $2 is not the one we started"
    fi
}

s3_up() { # DIR PORT
    local keys
    keys=$(s3_bootstrap "$2" 2>>"$1/s3.log") ||
        die "could not create the S3 test user (see $1/s3.log)"
    read -r S3_KEY_ID S3_SECRET <<<"$keys"
    [[ -n $S3_KEY_ID && -n $S3_SECRET ]] || die "the S3 test user has no access key"
    export_var ROOTSTREAM_S3_PORT "$2"
    export_var ROOTSTREAM_S3_ENDPOINT "http://$HOST:$2"
    export_var ROOTSTREAM_S3_REGION "$S3_REGION"
    export_var ROOTSTREAM_S3_ACCESS_KEY_ID "$S3_KEY_ID"
    export_var ROOTSTREAM_S3_SECRET_ACCESS_KEY "$S3_SECRET"
}

# ---------------------------------------------------------------- start

write_env() {
    local dir=$1 tmp=$1/env.tmp
    {
        printf 'export ROOTSTREAM_STACK_DIR=%q\n' "$dir"
        printf '%s\n' "${EXPORTS[@]}"
    } >"$tmp"
    mv "$tmp" "$dir/env"
}

cmd_start() {
    local dir='' owner='' influx=1 vm=1 s3=1 ha=0 pgha=0 owner_start t0 wpid b runuser_bin
    while (($#)); do
        case $1 in
        --owner-pid) owner=${2:-}; shift 2 || usage ;;
        --no-influx) influx=0; shift ;;
        --no-vm) vm=0; shift ;;
        --no-s3) s3=0; shift ;;
        --sentinel) ha=1; shift ;;
        --pg-ha) pgha=1; shift ;;
        -*) usage ;;
        *) [[ -z $dir ]] || usage; dir=$1; shift ;;
        esac
    done
    [[ -n $dir ]] || usage
    t0=$(now)

    for b in initdb pg_ctl postgres psql; do need_bin "$PG_BIN/$b"; done
    need_bin "$REDIS_SERVER"
    ((influx)) && need_bin "$INFLUXD"
    ((vm)) && need_bin "$VICTORIA"
    if ((s3)) && [[ ! -x $MOTO_SERVER ]]; then
        die "$MOTO_SERVER not found; run scripts/install-deps.sh (it installs moto into $MOTO_VENV)"
    fi
    for b in flock setsid nohup; do
        command -v "$b" >/dev/null 2>&1 || die "$b not found (package util-linux/coreutils)"
    done
    if ((EUID == 0)); then
        getent passwd postgres >/dev/null || die "user 'postgres' does not exist; $INSTALL_HINT"
        runuser_bin=$(find_runuser)
        PG_RUN=("$runuser_bin" -u postgres --)
    fi
    if [[ -n $owner ]]; then
        if ! [[ $owner =~ ^[0-9]+$ ]] || ! proc_alive "$owner"; then
            die "--owner-pid $owner: no such process"
        fi
        owner_start=$(proc_stat_field "$owner" 19 2>/dev/null || echo unknown)
    fi

    close_inherited_fds
    mkdir -p "$dir"
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
    dir=$(cd "$dir" && pwd -P)
    STACK_DIR=$dir
    chmod 755 "$dir" # postgres (when we are root) must traverse it
    : >"$dir/$MARKER"
    lock_dir "$dir" || die "cannot lock $dir"
    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "starting stack in $dir"

    start_postgres "$dir"
    start_redis "$dir"
    ((influx)) && start_influx "$dir"
    ((vm)) && start_vm "$dir"
    ((s3)) && start_s3 "$dir"
    ((ha)) && start_ha "$dir"
    ((pgha)) && start_pgha "$dir"
    FAIL_LOGS=()
    write_env "$dir"

    if [[ -n $owner ]]; then
        wpid=$(spawn_detached "$dir/watchdog.pid" "$dir/watchdog.log" \
            bash "$SELF" _watchdog "$dir" "$owner" "$owner_start") ||
            die "could not start the watchdog"
        log "watchdog (pid $wpid) will stop the stack when pid $owner exits"
    fi

    START_OK=1
    log "stack ready in $(elapsed "$t0")"
    cat "$dir/env"
}

# ---------------------------------------------------------------- watchdog

cmd_watchdog() { # DIR OWNER OWNER_START
    local dir=$1 owner=$2 owner_start=$3
    log "watching pid $owner for $dir"
    while :; do
        [[ -f $dir/$MARKER ]] || exit 0 # stopped by someone else
        # Owner gone (or its pid reused by a different process).
        if ! proc_alive "$owner" ||
            [[ $owner_start != unknown && $(proc_stat_field "$owner" 19 2>/dev/null) != "$owner_start" ]]; then
            log "owner pid $owner is gone; stopping $dir"
            exec bash "$SELF" stop "$dir"
        fi
        sleep 1
    done
}

# ---------------------------------------------------------------- stop

stop_locked() { # DIR (lock held)
    local dir=$1 pid ok=1 pgid name names=() i
    pid=$(read_pid "$dir/watchdog.pid" || true)
    if [[ -n $pid && $pid != "$$" && $pid != "$PPID" ]] && proc_matches "$pid" _watchdog; then
        # The watchdog leads its own process group; kill the group so its
        # `sleep 1` goes too.
        pgid=$(proc_stat_field "$pid" 2 || true)
        if [[ $pgid == "$pid" ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
        wait_gone "$pid" 5 || ok=0
    fi
    if [[ -f $dir/services ]]; then mapfile -t names <"$dir/services"; fi
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do
        name=${names[i]}
        [[ $name =~ ^[a-z0-9_]+$ ]] && declare -F "${name}_spawn" >/dev/null || continue
        stop_service "$dir" "$name" || ok=0
    done
    if ((!ok)); then
        log "some processes of $dir are still running; leaving $dir in place"
        return 1
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

cmd_stop() {
    local dir=${1:-}
    [[ -n $dir && $# -eq 1 ]] || usage
    if [[ ! -e $dir ]]; then
        log "$dir does not exist; nothing to stop"
        return 0
    fi
    dir=$(cd "$dir" 2>/dev/null && pwd -P) || return 0
    [[ -f $dir/$MARKER ]] || die "$dir is not a stack directory (no $MARKER); refusing to touch it"
    lock_dir "$dir" 2>/dev/null || return 0
    # Whoever held the lock before us may have stopped and removed it.
    if [[ ! -f $dir/$MARKER ]]; then
        log "$dir already stopped"
        return 0
    fi
    stop_locked "$dir"
}

# ---------------------------------------------------------------- failure tests

# Tests that check reconnects stop the stack's Redis and start it again on the
# same port, the way start_redis did.
cmd_redis_stop() { # DIR
    local dir=${1:-}
    [[ -n $dir && -f $dir/$MARKER ]] || die "$dir is not a stack directory"
    stop_service "$dir" redis
    rm -f "$dir/redis.pid"
    log "redis stopped"
}

cmd_redis_start() { # DIR
    local dir=${1:-} port pid
    [[ -n $dir && -f $dir/$MARKER ]] || die "$dir is not a stack directory"
    port=$(sed -n 's/^export ROOTSTREAM_REDIS_PORT=//p' "$dir/env")
    [[ -n $port ]] || die "no Redis port recorded in $dir/env"
    pid=$(read_pid "$dir/redis.pid" || true)
    if [[ -n $pid ]] && proc_matches "$pid" redis-server; then
        die "the stack's Redis (pid $pid) is still running"
    fi
    close_inherited_fds
    start_service redis "$dir" redis.log 'address already in use' 1 15 "$port"
}

cmd_influx_stop() { # DIR
    local dir=${1:-}
    [[ -n $dir && -f $dir/$MARKER ]] || die "$dir is not a stack directory"
    stop_service "$dir" influx
    rm -f "$dir/influx.pid"
    log "influx stopped"
}

cmd_influx_start() { # DIR
    local dir=${1:-} port rpc pid
    [[ -n $dir && -f $dir/$MARKER ]] || die "$dir is not a stack directory"
    port=$(sed -n 's/^export ROOTSTREAM_INFLUX_PORT=//p' "$dir/env")
    [[ -n $port ]] || die "no InfluxDB port recorded in $dir/env"
    rpc=$(sed -n 's/^bind-address = "[^:]*:\([0-9]*\)"$/\1/p' "$dir/influxdb.conf")
    [[ -n $rpc ]] || die "no InfluxDB RPC port recorded in $dir/influxdb.conf"
    pid=$(read_pid "$dir/influx.pid" || true)
    if [[ -n $pid ]] && proc_matches "$pid" "$dir/influxdb.conf"; then
        die "the stack's InfluxDB (pid $pid) is still running"
    fi
    close_inherited_fds
    start_service influx "$dir" influx.log 'address already in use' 2 60 "$port" "$rpc"
}

# ---------------------------------------------------------------- run

RUN_DIR=
RUN_CHILD=

on_run_exit() {
    local rc=$?
    if [[ -n $RUN_DIR && -e $RUN_DIR ]]; then
        if [[ -f $RUN_DIR/$MARKER ]]; then
            bash "$SELF" stop "$RUN_DIR" || rc=1
        else
            rmdir "$RUN_DIR" 2>/dev/null || true
        fi
    fi
    exit "$rc"
}

on_run_signal() { # SIGNAL NUMBER
    trap - INT TERM
    if [[ -n $RUN_CHILD ]]; then
        kill -s "$1" "$RUN_CHILD" 2>/dev/null || true
        wait "$RUN_CHILD" 2>/dev/null || true
    fi
    exit $((128 + $2))
}

cmd_run() {
    local opts=() rc=0
    while (($#)); do
        case $1 in
        --no-influx) opts+=(--no-influx); shift ;;
        --no-vm) opts+=(--no-vm); shift ;;
        --no-s3) opts+=(--no-s3); shift ;;
        --sentinel) opts+=(--sentinel); shift ;;
        --pg-ha) opts+=(--pg-ha); shift ;;
        --) shift; break ;;
        *) usage ;;
        esac
    done
    (($#)) || usage
    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rootstream-stack.XXXXXX")
    trap on_run_exit EXIT
    trap 'on_run_signal INT 2' INT
    trap 'on_run_signal TERM 15' TERM
    # --owner-pid $$: if this script is SIGKILLed, the watchdog cleans up.
    bash "$SELF" start "$RUN_DIR" --owner-pid "$$" "${opts[@]}" >/dev/null
    # shellcheck source=/dev/null
    source "$RUN_DIR/env"
    # CMD runs in the background so that a TERM to this script is handled
    # (forwarded, then the stack stopped) at once rather than after CMD
    # exits. `<&0` keeps stdin, which bash would otherwise replace with
    # /dev/null for a background job.
    "$@" <&0 &
    RUN_CHILD=$!
    wait "$RUN_CHILD" || rc=$?
    RUN_CHILD=
    exit "$rc"
}

# ---------------------------------------------------------------- main

cmd=${1:-}
(($#)) && shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
run) cmd_run "$@" ;;
env)
    [[ $# -eq 1 ]] || usage
    [[ -f $1/env ]] || die "$1/env not found (is a stack running in $1?)"
    cat "$1/env"
    ;;
redis-stop) cmd_redis_stop "$@" ;;
redis-start) cmd_redis_start "$@" ;;
influx-stop) cmd_influx_stop "$@" ;;
influx-start) cmd_influx_start "$@" ;;
ha-kill) cmd_ha_kill "$@" ;;
ha-start) cmd_ha_start "$@" ;;
ha-wait) cmd_ha_wait "$@" ;;
pg-kill) cmd_pg_kill "$@" ;;
pg-stop) cmd_pg_stop "$@" ;;
pg-start) cmd_pg_start "$@" ;;
pg-freeze) cmd_pg_freeze "$@" ;;
pg-thaw) cmd_pg_thaw "$@" ;;
pg-wait) cmd_pg_wait "$@" ;;
pg-role) cmd_pg_role "$@" ;;
etcd-kill) cmd_etcd_kill "$@" ;;
etcd-start) cmd_etcd_start "$@" ;;
etcd-freeze) cmd_etcd_freeze "$@" ;;
etcd-thaw) cmd_etcd_thaw "$@" ;;
etcd-wait) cmd_etcd_wait "$@" ;;
etcd-leader) cmd_etcd_leader "$@" ;;
patroni-start) cmd_patroni_start "$@" ;;
patroni-stop) cmd_patroni_stop "$@" ;;
patroni-kill-primary) cmd_patroni_kill_primary "$@" ;;
_watchdog) cmd_watchdog "$@" ;;
*) usage ;;
esac
