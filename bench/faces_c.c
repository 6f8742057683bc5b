/* The library through its C face, driven from native threads the way RootStream calls it.
 *
 * Started by the faces benchmark (benches/faces.rs, `scripts/bench.sh --bench faces`) with the
 * stack's ROOTSTREAM_* variables (ROOTSTREAM_MASTER_KEY among them, for MFA); prints one machine-readable line
 * per operation and thread count:
 *   RESULT face=c op=validate threads=50 ops=10000 rate=... p50_us=... p99_us=...
 * With `--count OP N` it runs N operations of one kind on one thread and nothing else, so
 * that callgrind's instruction count of a run with N minus a run with 0 is the cost of N
 * operations (OP: validate, create).
 */
#define _POSIX_C_SOURCE 200809L
#include "rootstream_db.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SESSION_TOKENS 1000
#define LOGIN_USERS 8

static void check(int rc, const char *what) {
    if (rc != RSDB_OK) {
        fprintf(stderr, "faces_c: %s failed: %s (%s)\n", what, rsdb_status_name(rc), rsdb_last_error());
        exit(1);
    }
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

struct bench {
    struct rsdb_db *db;
    struct rsdb_redis *redis;
    struct rsdb_sessions *sessions;
    struct rsdb_mfa *mfa;
    struct rsdb_events *events;
    char *tokens[SESSION_TOKENS];
    int64_t login_users[LOGIN_USERS];
    int64_t query_user;
    /* MFA: one enrolled user per verification, each with its code for the current step. */
    int64_t *mfa_users;
    char **mfa_codes;
    long run_id;
};

static struct bench B;

/* One operation, number i of the run. */
typedef void (*op_fn)(size_t i);

static void op_validate(size_t i) {
    char *json = NULL;
    check(rsdb_sessions_validate(B.sessions, B.tokens[i % SESSION_TOKENS], "fp-bench", 1, &json), "validate");
    rsdb_string_free(json);
}

static void op_create(size_t i) {
    char *token = NULL;
    check(rsdb_sessions_create(B.sessions, B.login_users[i % LOGIN_USERS], "fp-bench", NULL, NULL, NULL, 0, 0,
                               &token, NULL),
          "create");
    rsdb_string_free(token);
}

static void op_mfa(size_t i) {
    int accepted = 0;
    check(rsdb_mfa_verify(B.mfa, B.mfa_users[i], B.mfa_codes[i], "127.0.0.1", &accepted), "mfa verify");
    if (!accepted) {
        fprintf(stderr, "faces_c: a fresh TOTP code was refused\n");
        exit(1);
    }
}

static void op_query(size_t i) {
    (void)i;
    char params[32], *rows = NULL;
    snprintf(params, sizeof params, "[%lld]", (long long)B.query_user);
    check(rsdb_db_query(B.db, "SELECT id, username FROM users WHERE id = $1", params, &rows), "query");
    rsdb_string_free(rows);
}

static void op_get(size_t i) {
    char key[48], *value = NULL;
    snprintf(key, sizeof key, "bench:faces:%zu", i % 1000);
    check(rsdb_redis_get(B.redis, key, &value), "redis get");
    if (value == NULL) {
        fprintf(stderr, "faces_c: %s is missing\n", key);
        exit(1);
    }
    rsdb_string_free(value);
}

static void op_set(size_t i) {
    char key[48];
    snprintf(key, sizeof key, "bench:faces:set:%zu", i % 1000);
    check(rsdb_redis_set(B.redis, key, "value-of-sixteen", 0), "redis set");
}

/* Every append starts a new aggregate: ids unique over the whole run. */
static atomic_size_t append_seq;

static void op_append(size_t i) {
    (void)i;
    char id[64];
    snprintf(id, sizeof id, "c-%ld-%zu", B.run_id, atomic_fetch_add(&append_seq, 1));
    int64_t v = 0;
    check(rsdb_events_append(B.events, "bench", id, 0, "[{\"event_type\":\"viewer.joined\",\"payload\":{\"n\":1}}]", &v),
          "events append");
}

struct run {
    op_fn op;
    size_t ops;
    atomic_size_t next;
    pthread_barrier_t start;
};

struct worker {
    struct run *run;
    double *lat;
    size_t n;
};

static void *work(void *arg) {
    struct worker *w = arg;
    struct run *r = w->run;
    pthread_barrier_wait(&r->start);
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->ops) break;
        double t = now_us();
        r->op(i);
        w->lat[w->n++] = now_us() - t;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void measure(const char *name, op_fn op, int threads, size_t ops) {
    struct run r = {.op = op, .ops = ops};
    atomic_init(&r.next, 0);
    pthread_barrier_init(&r.start, NULL, (unsigned)threads + 1);
    pthread_t *ts = calloc((size_t)threads, sizeof *ts);
    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    for (int t = 0; t < threads; t++) {
        ws[t].run = &r;
        ws[t].lat = calloc(ops, sizeof(double));
        pthread_create(&ts[t], NULL, work, &ws[t]);
    }
    pthread_barrier_wait(&r.start);
    double t0 = now_us();
    for (int t = 0; t < threads; t++) pthread_join(ts[t], NULL);
    double wall = now_us() - t0;
    double *all = calloc(ops, sizeof(double));
    size_t n = 0;
    for (int t = 0; t < threads; t++) {
        memcpy(all + n, ws[t].lat, ws[t].n * sizeof(double));
        n += ws[t].n;
        free(ws[t].lat);
    }
    qsort(all, n, sizeof(double), cmp_double);
    printf("RESULT face=c op=%s threads=%d ops=%zu rate=%.1f p50_us=%.1f p99_us=%.1f\n", name, threads, n,
           (double)n / (wall / 1e6), all[n / 2], all[(size_t)((double)n * 0.99)]);
    fflush(stdout);
    free(all);
    free(ws);
    free(ts);
    pthread_barrier_destroy(&r.start);
}

static int64_t insert_user(const char *name) {
    char params[256], *rows = NULL;
    snprintf(params, sizeof params, "[\"%s\", \"%s@bench.io\"]", name, name);
    check(rsdb_db_query(B.db, "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') RETURNING id",
                        params, &rows),
          "insert user");
    const char *id = strstr(rows, "\"id\":");
    if (id == NULL) {
        fprintf(stderr, "faces_c: no id in %s\n", rows);
        exit(1);
    }
    int64_t v = strtoll(id + 5, NULL, 10);
    rsdb_string_free(rows);
    return v;
}

/* Unix time after waiting out the last seconds of a 30-second step. */
static uint64_t fresh_totp_time(void) {
    for (;;) {
        uint64_t t = (uint64_t)time(NULL);
        if (t % 30 < 20) return t;
        struct timespec d = {0, 250000000};
        nanosleep(&d, NULL);
    }
}

/* Enrolls n users (confirmed with a code of the previous step) and prepares, for each, the
 * code of the step now. */
static void prepare_mfa(size_t n, int level) {
    B.mfa_users = calloc(n, sizeof(int64_t));
    B.mfa_codes = calloc(n, sizeof(char *));
    char **secrets = calloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "c-mfa-%ld-%d-%zu", B.run_id, level, i);
        B.mfa_users[i] = insert_user(name);
        char *enrollment = NULL, *codes = NULL, *first = NULL;
        check(rsdb_mfa_begin_enrollment(B.mfa, B.mfa_users[i], name, &enrollment), "begin enrollment");
        const char *s = strstr(enrollment, "\"secret_base32\":\"");
        if (s == NULL) exit(1);
        s += strlen("\"secret_base32\":\"");
        secrets[i] = strndup(s, (size_t)(strchr(s, '"') - s));
        rsdb_string_free(enrollment);
        /* The previous step's code, so the current step's stays unused for the verification;
         * once more if a step boundary passed between computing and checking it. */
        int rc = RSDB_ERR_AUTH;
        for (int attempt = 0; attempt < 3 && rc == RSDB_ERR_AUTH; attempt++) {
            check(rsdb_totp_code(secrets[i], (uint64_t)time(NULL) - 30, &first), "totp code");
            rc = rsdb_mfa_confirm_enrollment(B.mfa, B.mfa_users[i], first, NULL, &codes);
            rsdb_string_free(first);
        }
        check(rc, "confirm enrollment");
        rsdb_string_free(codes);
    }
    uint64_t t = fresh_totp_time();
    for (size_t i = 0; i < n; i++) {
        check(rsdb_totp_code(secrets[i], t, &B.mfa_codes[i]), "totp code");
        free(secrets[i]);
    }
    free(secrets);
}

static void release_mfa(size_t n) {
    for (size_t i = 0; i < n; i++) rsdb_string_free(B.mfa_codes[i]);
    free(B.mfa_codes);
    free(B.mfa_users);
}

static void open_all(void) {
    struct rsdb_config *cfg = NULL;
    check(rsdb_config_from_env(&cfg), "config");
    check(rsdb_config_set(cfg, "session_max_per_user", "0"), "session_max_per_user");
    check(rsdb_db_open(cfg, &B.db), "db open");
    check(rsdb_db_migrate(B.db, NULL), "migrate");
    check(rsdb_redis_open(cfg, &B.redis), "redis open");
    check(rsdb_sessions_new(cfg, B.db, B.redis, &B.sessions), "sessions");
    check(rsdb_mfa_new(cfg, B.db, B.redis, &B.mfa), "mfa");
    check(rsdb_events_new(B.db, &B.events), "events");
    rsdb_config_free(cfg);
    B.run_id = (long)now_us();
    char name[64];
    snprintf(name, sizeof name, "c-bench-%ld", B.run_id);
    B.query_user = insert_user(name);
    for (int i = 0; i < LOGIN_USERS; i++) {
        snprintf(name, sizeof name, "c-login-%ld-%d", B.run_id, i);
        B.login_users[i] = insert_user(name);
    }
}

static void make_tokens(size_t n) {
    for (size_t i = 0; i < n; i++) {
        check(rsdb_sessions_create(B.sessions, B.query_user, "fp-bench", NULL, NULL, NULL, 0, 0, &B.tokens[i], NULL),
              "create");
    }
}

static size_t env_size(const char *name, size_t dflt) {
    const char *v = getenv(name);
    return v != NULL && *v ? (size_t)strtoull(v, NULL, 10) : dflt;
}

int main(int argc, char **argv) {
    open_all();
    if (argc == 4 && strcmp(argv[1], "--count") == 0) {
        size_t n = (size_t)strtoull(argv[3], NULL, 10);
        if (strcmp(argv[2], "validate") == 0) {
            make_tokens(1);
            for (size_t i = 0; i < n; i++) {
                char *json = NULL;
                check(rsdb_sessions_validate(B.sessions, B.tokens[0], "fp-bench", 1, &json), "validate");
                rsdb_string_free(json);
            }
        } else if (strcmp(argv[2], "create") == 0) {
            for (size_t i = 0; i < n; i++) op_create(i);
        } else {
            fprintf(stderr, "faces_c: --count validate|create N\n");
            return 2;
        }
        return 0;
    }
    /* Operations per thread count: RSDB_BENCH_OPS (default 2000) at 1 thread, 4x that at 8
     * and 50 threads; MFA and creation a fifth of it (each is one or more round trips to
     * PostgreSQL, not to Redis). */
    size_t base = env_size("RSDB_BENCH_OPS", 2000);
    static const int levels[] = {1, 8, 50};
    make_tokens(SESSION_TOKENS);
    for (size_t i = 0; i < 1000; i++) {
        char key[48];
        snprintf(key, sizeof key, "bench:faces:%zu", i);
        check(rsdb_redis_set(B.redis, key, "value-of-sixteen", 0), "redis set");
    }
    for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
        int th = levels[l];
        size_t fast = th == 1 ? base : 4 * base, slow = fast / 5;
        measure("validate", op_validate, th, fast);
        measure("create", op_create, th, slow);
        size_t m = slow < 300 ? slow : 300;
        prepare_mfa(m, th);
        measure("mfa_verify", op_mfa, th, m);
        release_mfa(m);
        measure("query", op_query, th, fast);
        measure("redis_get", op_get, th, fast);
        measure("redis_set", op_set, th, fast);
        measure("event_append", op_append, th, slow);
    }
    for (size_t i = 0; i < SESSION_TOKENS; i++) rsdb_string_free(B.tokens[i]);
    rsdb_events_free(B.events);
    rsdb_mfa_free(B.mfa);
    rsdb_sessions_free(B.sessions);
    rsdb_redis_close(B.redis);
    rsdb_db_close(B.db);
    return 0;
}
