/*
 * The complete workflow through the C API: configure from the environment, migrate, register
 * and log in a user, protect the account with TOTP MFA (enroll, confirm, log in with password ->
 * session -> second factor -> access, catch a stolen token used from another device), create a stream and run it (start, viewers, stop) while a subscriber
 * watches its events, read its event history, write and read with parameters, use a
 * transaction, cache with a TTL, and share state between two instances (a change made on one
 * shows on the other, with its event), write a stream's metrics through the background writer
 * and read them back from InfluxDB, and, when ROOTSTREAM_REDIS_SENTINELS is set, look at the
 * Redis Sentinel setup (master, replicas, which sentinels answer).
 *
 * Needs ROOTSTREAM_DATABASE_URL and ROOTSTREAM_REDIS_URL (scripts/demo.sh sets them); the
 * metrics step also needs ROOTSTREAM_INFLUX_URL and is skipped, with a line saying so, without it.
 */
#include "rootstream_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(const char *what) {
    fprintf(stderr, "complete_workflow_c: %s failed: %s (%s)\n", what,
            rsdb_last_error() ? rsdb_last_error() : "?", rsdb_status_name(rsdb_last_error_code()));
    return 1;
}

#define CHECK(call, what)      \
    do {                       \
        if ((call) != RSDB_OK) \
            return fail(what); \
    } while (0)

/* Counts deliveries; the callback runs on the library's pub/sub thread. */
struct inbox {
    volatile int received;
    char last_channel[128];
};

static void on_event(void *user_data, const char *channel, const char *payload, size_t len) {
    struct inbox *in = (struct inbox *)user_data;
    snprintf(in->last_channel, sizeof in->last_channel, "%s", channel);
    printf("  event on %s: %.*s\n", channel, (int)len, payload);
    in->received++;
}

/* Counts state changes seen by the second instance; runs on a library thread. */
static void on_change(void *user_data, const char *event_type, const char *envelope_json) {
    printf("  instance B got %s: %s\n", event_type, envelope_json);
    (*(volatile int *)user_data)++;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Stream metrics: ten points through the background writer, read back with InfluxQL, and the
 * library's own counters as Prometheus text. */
static int metrics_step(rsdb_config *cfg) {
    rsdb_metrics_client *client = NULL;
    int rc = rsdb_metrics_client_from_config(cfg, &client);
    if (rc == RSDB_ERR_CONFIG) {
        printf("metrics: skipped (no InfluxDB configured; set ROOTSTREAM_INFLUX_URL)\n");
        return 0;
    }
    if (rc != RSDB_OK) return fail("making the metrics client");
    CHECK(rsdb_metrics_client_create_database(client), "creating the metrics database");
    rsdb_metrics_writer *writer = NULL;
    CHECK(rsdb_metrics_writer_new(client, "{\"flush_interval_ms\": 200}", &writer), "starting the metrics writer");
    char stream_id[64];
    snprintf(stream_id, sizeof stream_id, "demo-c-%ld", (long)time(NULL));
    const int64_t now_ns = (int64_t)time(NULL) * 1000000000LL;
    for (int i = 0; i < 10; i++) {
        rsdb_metrics_tag tag = {"stream_id", stream_id};
        rsdb_metrics_field fields[] = {
            {"viewers", RSDB_METRICS_INTEGER, 0, 100 + i, 0, 0, NULL},
            {"fps", RSDB_METRICS_FLOAT, 59.5 + i % 2, 0, 0, 0, NULL},
            {"bitrate_kbps", RSDB_METRICS_FLOAT, 4500.0, 0, 0, 0, NULL},
        };
        rsdb_metrics_point p = {"stream", &tag, 1, fields, 3, 1, now_ns - (10 - i) * 1000000000LL};
        CHECK(rsdb_metrics_writer_write_point(writer, &p), "writing a stream metric");
    }
    CHECK(rsdb_metrics_writer_flush(writer, 10000), "flushing the metrics writer");
    rsdb_metrics_writer_stats stats;
    CHECK(rsdb_metrics_writer_get_stats(writer, &stats), "reading the writer statistics");
    printf("metrics: %llu point(s) delivered, %llu dropped\n", (unsigned long long)stats.delivered,
           (unsigned long long)(stats.dropped_buffer_full + stats.dropped_rejected + stats.dropped_retries_exhausted +
                                stats.dropped_shutdown));
    char query[160];
    snprintf(query, sizeof query, "SELECT count(fps), mean(viewers) FROM stream WHERE stream_id = '%s'", stream_id);
    char *json = NULL;
    CHECK(rsdb_metrics_client_query(client, query, "ns", &json), "reading the stream metrics back");
    printf("metrics read back: %s\n", json);
    int found = strstr(json, ",10,104.5]") != NULL;
    rsdb_string_free(json);
    rsdb_metrics_reporter *reporter = NULL;
    CHECK(rsdb_metrics_reporter_new(client, &reporter), "making the metrics reporter");
    CHECK(rsdb_metrics_reporter_attach(reporter, writer, NULL, NULL), "attaching the writer to the reporter");
    CHECK(rsdb_metrics_reporter_prometheus(reporter, &json), "exporting the library counters");
    const char *line = strstr(json, "\nrootstream_metrics_points_delivered_total ");
    if (line) line++;
    printf("metrics export: %.*s\n", line ? (int)strcspn(line, "\n") : 0, line ? line : "");
    rsdb_string_free(json);
    rsdb_metrics_reporter_free(reporter);
    rsdb_metrics_writer_free(writer);
    rsdb_metrics_client_free(client);
    if (!found) {
        fprintf(stderr, "complete_workflow_c: the stream metrics did not read back as written\n");
        return 1;
    }
    return 0;
}

static int run(rsdb_config *cfg) {
    rsdb_db *db = NULL;
    rsdb_redis *redis = NULL;
    rsdb_tx *tx = NULL;
    char *json = NULL;
    int version = 0;
    uint64_t sub = 0;
    struct inbox in = {0, ""};

    CHECK(rsdb_db_open(cfg, &db), "opening the database");
    CHECK(rsdb_db_migrate(db, &version), "migrating");
    printf("schema version %d\n", version);

    /* Register (Argon2id hash, never the password) and log in. */
    rsdb_users *users = NULL;
    CHECK(rsdb_users_new(db, &users), "opening the user model");
    int rc = rsdb_users_create(users, "c_player", "c_player@example.com", "correct horse battery", "C Player", &json);
    if (rc == RSDB_ERR_CONFLICT) {
        printf("user c_player already exists\n");
    } else if (rc != RSDB_OK) {
        return fail("registering a user");
    } else {
        printf("registered: %s\n", json);
        rsdb_string_free(json);
    }
    if (rsdb_users_authenticate(users, "c_player", "wrong password", &json) == RSDB_ERR_AUTH)
        printf("a wrong password is refused: %s\n", rsdb_last_error());
    CHECK(rsdb_users_authenticate(users, "C_PLAYER", "correct horse battery", &json), "logging in");
    printf("logged in: %s\n", json);
    /* The user's id, read back with a parameterized query instead of a JSON parser. */
    rsdb_string_free(json);
    CHECK(rsdb_db_query(db, "SELECT id FROM users WHERE username = $1", "[\"c_player\"]", &json), "reading the id");
    long long user_id = 0;
    const char *idp = strstr(json, "\"id\":");
    if (idp) user_id = atoll(idp + 5);
    rsdb_string_free(json);

    /* Second factor: enroll (the secret is encrypted at rest under the master key). */
    CHECK(rsdb_redis_open(cfg, &redis), "connecting to redis");
    rsdb_mfa *mfa = NULL;
    rsdb_sessions *sessions = NULL;
    CHECK(rsdb_mfa_new(cfg, db, redis, &mfa), "opening the MFA manager (needs ROOTSTREAM_MASTER_KEY)");
    CHECK(rsdb_sessions_new(cfg, db, redis, &sessions), "opening the session model");
    char *status = NULL;
    CHECK(rsdb_mfa_status(mfa, user_id, &status), "reading the MFA status");
    if (strstr(status, "\"enabled\":true")) CHECK(rsdb_mfa_unenroll(mfa, user_id), "resetting MFA from an earlier run");
    rsdb_string_free(status);
    CHECK(rsdb_mfa_begin_enrollment(mfa, user_id, "c_player@example.com", &json), "starting MFA enrollment");
    /* A real client shows the QR code; here the secret is taken from the JSON to play the app. */
    char secret[64] = "";
    const char *sp = strstr(json, "\"secret_base32\":\"");
    if (sp) sscanf(sp + 17, "%63[A-Z2-7]", secret);
    rsdb_string_free(json);
    char *code = NULL;
    CHECK(rsdb_totp_code(secret, (uint64_t)time(NULL) - 30, &code), "computing a code");
    CHECK(rsdb_mfa_confirm_enrollment(mfa, user_id, code, "203.0.113.5", &json), "confirming MFA with a first code");
    printf("MFA enabled; backup codes (shown once): %s\n", json);
    rsdb_string_free(json);
    rsdb_string_free(code);

    /* Login: password -> session that still needs the second factor -> code -> access. */
    char *token = NULL;
    CHECK(rsdb_users_authenticate(users, "c_player", "correct horse battery", &json), "password");
    rsdb_string_free(json);
    CHECK(rsdb_sessions_create(sessions, user_id, "laptop-7f3a", "203.0.113.5", "RootStream/1.0 (Linux)", "Berlin, DE", 0, 1,
                               &token, NULL),
          "creating the session");
    if (rsdb_sessions_validate(sessions, token, "laptop-7f3a", 1, NULL) == RSDB_ERR_MFA_REQUIRED)
        printf("session created; access waits for the second factor\n");
    CHECK(rsdb_totp_code(secret, 0, &code), "computing the current code");
    CHECK(rsdb_mfa_complete_login(mfa, sessions, token, "laptop-7f3a", code, "203.0.113.5", NULL), "second factor");
    rsdb_string_free(code);
    CHECK(rsdb_sessions_validate(sessions, token, "laptop-7f3a", 1, &json), "validating the session");
    printf("access granted: %s\n", json);
    rsdb_string_free(json);
    if (rsdb_sessions_validate(sessions, token, "unknown-device", 1, NULL) == RSDB_ERR_AUTH)
        printf("the token used from another device was refused and the session revoked: %s\n", rsdb_last_error());
    rsdb_string_free(token);
    rsdb_sessions_free(sessions);
    rsdb_mfa_free(mfa);

    /* A subscriber sees the stream's life as it happens. */
    CHECK(rsdb_redis_subscribe(redis, "stream.*", on_event, &in, &sub), "subscribing");

    rsdb_streams *streams = NULL;
    CHECK(rsdb_streams_new(db, redis, &streams), "opening the stream model");
    CHECK(rsdb_streams_create(streams, user_id, "C speedrun", "any% practice", &json), "creating a stream");
    long long stream_id = 0;
    idp = strstr(json, "\"id\":");
    if (idp) stream_id = atoll(idp + 5);
    printf("stream %lld created (its key stays with its owner)\n", stream_id);
    rsdb_string_free(json);
    CHECK(rsdb_streams_start(streams, stream_id, &json), "starting the stream");
    printf("live, session: %s\n", json);
    rsdb_string_free(json);
    int64_t viewers = 0;
    CHECK(rsdb_streams_viewer_joined(streams, stream_id, &viewers), "a viewer joins");
    CHECK(rsdb_streams_viewer_joined(streams, stream_id, &viewers), "a viewer joins");
    CHECK(rsdb_streams_viewer_left(streams, stream_id, &viewers), "a viewer leaves");
    printf("viewers now: %lld\n", (long long)viewers);
    CHECK(rsdb_streams_update_stats(streams, stream_id, 6000, 60, "1920x1080", "h264"), "recording stats");
    CHECK(rsdb_streams_stop(streams, stream_id, &json), "stopping the stream");
    printf("ended session: %s\n", json);
    rsdb_string_free(json);
    for (int i = 0; i < 200 && in.received < 2; i++) sleep_ms(10);
    CHECK(rsdb_redis_unsubscribe(redis, sub), "unsubscribing");
    if (in.received < 2) {
        fprintf(stderr, "complete_workflow_c: the stream events never arrived\n");
        return 1;
    }

    /* The same history, durable, from the event store. */
    rsdb_events *events = NULL;
    char aggregate_id[32];
    snprintf(aggregate_id, sizeof aggregate_id, "%lld", stream_id);
    CHECK(rsdb_events_new(db, &events), "opening the event store");
    CHECK(rsdb_events_load(events, "stream", aggregate_id, 0, &json), "loading the stream's events");
    printf("event history: %s\n", json);
    rsdb_string_free(json);
    rsdb_events_free(events);
    rsdb_streams_free(streams);
    rsdb_users_free(users);

    CHECK(rsdb_db_begin(db, &tx), "beginning a transaction");
    CHECK(rsdb_tx_execute(tx, "UPDATE users SET display_name = $1 WHERE username = $2",
                          "[\"C Player (renamed)\", \"c_player\"]", NULL),
          "updating in the transaction");
    CHECK(rsdb_tx_commit(tx), "committing");
    rsdb_tx_free(tx);

    rsdb_pool_stats stats;
    CHECK(rsdb_db_pool_stats(db, &stats), "reading pool stats");
    printf("pool: %zu open, %zu idle, max %zu\n", stats.size, stats.available, stats.max_size);

    CHECK(rsdb_redis_set(redis, "demo:c:greeting", "hello from C", 60000), "caching a value");
    CHECK(rsdb_redis_get(redis, "demo:c:greeting", &json), "reading the cache");
    int64_t ttl = 0;
    CHECK(rsdb_redis_ttl(redis, "demo:c:greeting", &ttl), "reading the ttl");
    printf("cached: %s (expires in %lld ms)\n", json ? json : "(missing)", (long long)ttl);
    rsdb_string_free(json);

    CHECK(rsdb_db_health(db, &json), "health check");
    printf("health: %s\n", json);
    rsdb_string_free(json);

    /* Two instances sharing state: A changes a stream, B sees the change and the event. */
    char a_opts[96], b_opts[96];
    const long run_id = (long)time(NULL);
    snprintf(a_opts, sizeof a_opts, "{\"namespace\":\"demo_c_%ld\",\"instance\":\"A\"}", run_id);
    snprintf(b_opts, sizeof b_opts, "{\"namespace\":\"demo_c_%ld\",\"instance\":\"B\"}", run_id);
    rsdb_sync *a = NULL, *b = NULL;
    CHECK(rsdb_sync_open(cfg, redis, db, a_opts, &a), "starting sync instance A");
    CHECK(rsdb_sync_open(cfg, redis, db, b_opts, &b), "starting sync instance B");
    volatile int changes = 0;
    uint64_t sync_sub = 0;
    CHECK(rsdb_sync_subscribe(b, "stream.*", on_change, (void *)&changes, &sync_sub), "subscribing on B");
    CHECK(rsdb_sync_apply_delta(a, "stream", "demo", "{\"title\":\"C speedrun\",\"viewers\":3}", &json),
          "changing the stream on A");
    printf("A applied: %s\n", json);
    rsdb_string_free(json);
    CHECK(rsdb_sync_publish(a, "stream.started", "{\"id\":\"demo\"}", NULL), "publishing on A");
    CHECK(rsdb_sync_flush(a, 5000), "flushing A");
    for (int i = 0; i < 500 && changes < 2; i++) sleep_ms(10);
    json = NULL;
    CHECK(rsdb_sync_get_snapshot(b, "stream", "demo", &json), "reading the state on B");
    printf("B sees: %s\n", json ? json : "(nothing)");
    int crossed = json != NULL && strstr(json, "C speedrun") != NULL && changes >= 2;
    rsdb_string_free(json);
    rsdb_sync_close(b);
    rsdb_sync_close(a);
    if (!crossed) {
        fprintf(stderr, "complete_workflow_c: the change did not reach instance B\n");
        return 1;
    }

    if (metrics_step(cfg) != 0) return 1;
    /* Redis high availability: what the sentinels report (docs/redis-ha.md). */
    const char *sentinels = getenv("ROOTSTREAM_REDIS_SENTINELS");
    if (sentinels != NULL && *sentinels != '\0') {
        rsdb_sentinel *sentinel = NULL;
        CHECK(rsdb_sentinel_open(cfg, &sentinel), "opening the sentinel manager");
        CHECK(rsdb_sentinel_master_addr(sentinel, &json), "asking the sentinels for the master");
        printf("sentinel master: %s\n", json);
        rsdb_string_free(json);
        CHECK(rsdb_sentinel_replicas(sentinel, &json), "listing the replicas");
        printf("sentinel replicas: %s\n", json);
        rsdb_string_free(json);
        CHECK(rsdb_sentinel_sentinels(sentinel, &json), "asking every sentinel");
        printf("sentinels: %s\n", json);
        rsdb_string_free(json);
        rsdb_sentinel_close(sentinel);
    } else {
        printf("sentinel: skipped (ROOTSTREAM_REDIS_SENTINELS is not set)\n");
    }

    /* PostgreSQL health: one round of checks and its status (docs/ha-health.md). */
    rsdb_health *health = NULL;
    CHECK(rsdb_health_open(db, "{\"check_timeout_ms\": 2000}", &health), "opening the health monitor");
    CHECK(rsdb_health_check_now(health, &json), "running the health checks");
    printf("health: %s\n", json);
    rsdb_string_free(json);
    rsdb_health_close(health);

    rsdb_redis_close(redis);
    rsdb_db_close(db);
    printf("complete_workflow_c: ok\n");
    return 0;
}

int main(void) {
    rsdb_config *cfg = NULL;
    if (rsdb_config_from_env(&cfg) != RSDB_OK) return fail("reading the configuration");
    int rc = run(cfg);
    rsdb_config_free(cfg);
    return rc;
}
