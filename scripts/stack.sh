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
#   scripts/stack.sh start DIR [--owner-pid PID] [--no-influx] [--no-vm] [--no-s3] [--sentinel]
#       Start a stack in DIR (must not exist, or be empty). On success prints
#       `export NAME=value` lines on stdout (also written to DIR/env); all
#       progress goes to stderr. With --owner-pid, a detached watchdog stops
#       the stack once PID has exited (even after SIGKILL).
#   scripts/stack.sh stop DIR
#       Stop everything started for DIR and remove DIR. Idempotent.
#   scripts/stack.sh run [--no-influx] [--no-vm] [--no-s3] [--sentinel] -- CMD [ARGS...]
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
random_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$(((RANDOM << 15 | RANDOM) % (PORT_MAX - PORT_MIN + 1) + PORT_MIN))
        [[ $USED_PORTS == *" $port "* ]] && continue
        port_in_use "$port" && continue
        printf '%s' "$port"
        return 0
    done
    die "could not find a free port in $PORT_MIN-$PORT_MAX"
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
                ports+=("$(random_port)")
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
        p=$(random_port)
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
    local dir='' owner='' influx=1 vm=1 s3=1 ha=0 owner_start t0 wpid b runuser_bin
    while (($#)); do
        case $1 in
        --owner-pid) owner=${2:-}; shift 2 || usage ;;
        --no-influx) influx=0; shift ;;
        --no-vm) vm=0; shift ;;
        --no-s3) s3=0; shift ;;
        --sentinel) ha=1; shift ;;
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
_watchdog) cmd_watchdog "$@" ;;
*) usage ;;
esac
