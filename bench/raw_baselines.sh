#!/usr/bin/env bash
# Raw baselines with the servers' own tools, in the RESULT format of faces_c: redis-benchmark
# (GET and SET of 16-byte values, one connection per client, no pipelining) and pgbench
# (prepared statements, `-M prepared`: the SELECT of the faces benchmark's pooled query, an
# INSERT of a session row, an INSERT into event_log). PostgreSQL gets at most POOL connections
# (default 8), as many as the library's pool has, whatever the thread count.
# Needs ROOTSTREAM_DATABASE_URL (a migrated database), ROOTSTREAM_REDIS_URL, ROOTSTREAM_PG_BIN.
#   bench/raw_baselines.sh [THREADS...]     (default 1 8 50)
set -euo pipefail
pool=${POOL:-8}
base=${RSDB_BENCH_OPS:-2000}
url=$ROOTSTREAM_DATABASE_URL
hostport=${ROOTSTREAM_REDIS_URL#redis://}
hostport=${hostport%%/*}
rhost=${hostport%:*}
rport=${hostport##*:}
bin=${ROOTSTREAM_PG_BIN:-/usr/lib/postgresql/15/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
levels=("$@")
((${#levels[@]})) || levels=(1 8 50)

uid=$("$bin/psql" "$url" -qAtc "INSERT INTO users (username, email, password_hash) VALUES ('raw-$$', 'raw-$$@bench.io', 'x') RETURNING id" | head -1)
printf 'SELECT id, username FROM users WHERE id = %s;\n' "$uid" >"$tmp/query.sql"
printf "INSERT INTO sessions (user_id, token_hash, expires_at, device_fingerprint) VALUES (%s, 'raw-' || :client_id || '-' || md5(random()::text), now() + interval '1 day', 'fp');\n" "$uid" >"$tmp/create.sql"
printf "INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload) VALUES ('bench', 'raw-' || :client_id || '-' || md5(random()::text), 1, 'viewer.joined', '{\"n\":1}');\n" >"$tmp/event_append.sql"

# pgbench OP THREADS OPS: prints a RESULT line from the per-transaction latency log.
pg() {
    local op=$1 th=$2 ops=$3 c
    c=$((th < pool ? th : pool))
    rm -f "$tmp"/log*
    local out
    out=$(cd "$tmp" && "$bin/pgbench" -n -M prepared -f "$tmp/$op.sql" -c "$c" -j "$((c < 2 ? 1 : 2))" \
        -t "$((ops / c))" -l --log-prefix="$tmp/log" "$url" 2>&1)
    local tps
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    cat "$tmp"/log* | awk '{print $3}' | sort -n >"$tmp/lat"
    local n
    n=$(wc -l <"$tmp/lat")
    printf 'RESULT face=raw-tool op=%s threads=%s ops=%s rate=%s p50_us=%s p99_us=%s\n' "$op" "$th" "$n" "$tps" \
        "$(sed -n "$((n / 2 + 1))p" "$tmp/lat")" "$(sed -n "$((n * 99 / 100 + 1))p" "$tmp/lat")"
}

for th in "${levels[@]}"; do
    if ((th == 1)); then fast=$base; else fast=$((4 * base)); fi
    slow=$((fast / 5))
    pg create "$th" "$slow"
    pg query "$th" "$fast"
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    redis-benchmark -h "$rhost" -p "$rport" -c "$th" -n "$fast" -r 1000 -d 16 -t set,get --csv 2>/dev/null |
        tr -d '"' | awk -F, -v th="$th" -v n="$fast" '$1 == "SET" || $1 == "GET" {
            printf "RESULT face=raw-tool op=redis_%s threads=%s ops=%s rate=%s p50_us=%.1f p99_us=%.1f\n",
                tolower($1), th, n, $2, $5 * 1000, $7 * 1000 }'
    pg event_append "$th" "$slow"
done
