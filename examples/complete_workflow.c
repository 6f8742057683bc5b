/*
 * The complete workflow through the C API: configure from the environment, migrate, write
 * and read with parameters, use a transaction, cache with a TTL, publish and subscribe.
 *
 * Needs ROOTSTREAM_DATABASE_URL and ROOTSTREAM_REDIS_URL (scripts/demo.sh sets them).
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

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

    /* Parameters travel as a JSON array and are bound as $1, $2: never spliced into SQL. */
    CHECK(rsdb_db_execute(db,
                          "INSERT INTO users (username, email, password_hash, display_name) "
                          "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                          "[\"c_player\", \"c_player@example.com\", \"(set by the user model)\", \"C Player\"]",
                          NULL),
          "inserting a user");
    CHECK(rsdb_db_query(db, "SELECT id, username, display_name FROM users WHERE username = $1",
                        "[\"c_player\"]", &json),
          "querying the user");
    printf("user row: %s\n", json);
    rsdb_string_free(json);

    CHECK(rsdb_db_begin(db, &tx), "beginning a transaction");
    CHECK(rsdb_tx_execute(tx, "UPDATE users SET display_name = $1 WHERE username = $2",
                          "[\"C Player (renamed)\", \"c_player\"]", NULL),
          "updating in the transaction");
    CHECK(rsdb_tx_commit(tx), "committing");
    rsdb_tx_free(tx);

    rsdb_pool_stats stats;
    CHECK(rsdb_db_pool_stats(db, &stats), "reading pool stats");
    printf("pool: %zu open, %zu idle, max %zu\n", stats.size, stats.available, stats.max_size);

    CHECK(rsdb_redis_open(cfg, &redis), "connecting to redis");
    CHECK(rsdb_redis_set(redis, "demo:c:greeting", "hello from C", 60000), "caching a value");
    CHECK(rsdb_redis_get(redis, "demo:c:greeting", &json), "reading the cache");
    int64_t ttl = 0;
    CHECK(rsdb_redis_ttl(redis, "demo:c:greeting", &ttl), "reading the ttl");
    printf("cached: %s (expires in %lld ms)\n", json ? json : "(missing)", (long long)ttl);
    rsdb_string_free(json);

    CHECK(rsdb_redis_subscribe(redis, "demo.stream.*", on_event, &in, &sub), "subscribing");
    CHECK(rsdb_redis_publish(redis, "demo.stream.started", "{\"stream_id\":1,\"by\":\"c\"}", NULL), "publishing");
    for (int i = 0; i < 200 && in.received == 0; i++) sleep_ms(10);
    CHECK(rsdb_redis_unsubscribe(redis, sub), "unsubscribing");
    if (in.received == 0) {
        fprintf(stderr, "complete_workflow_c: the published event never arrived\n");
        return 1;
    }

    CHECK(rsdb_db_health(db, &json), "health check");
    printf("health: %s\n", json);
    rsdb_string_free(json);

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
