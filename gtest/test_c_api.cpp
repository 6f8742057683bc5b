// The C API (include/rootstream_db.h) against real PostgreSQL and Redis servers. Written with
// Google Test in C++, but every library call goes through the C functions.
#include "rootstream_db.h"
#include "c_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rsdb_test::last_error;
using namespace rsdb_test::capi;

namespace {


using Settings = std::vector<std::pair<std::string, std::string>>;


struct Rows {
    int rc = RSDB_OK;
    std::string error;
    json rows;
};

Rows query(const rsdb_db* db, const std::string& sql, const json& params = json::array()) {
    Rows r;
    OutString out;
    r.rc = rsdb_db_query(db, sql.c_str(), params.dump().c_str(), out.out());
    if (r.rc == RSDB_OK) {
        r.rows = out.parse();
    } else {
        r.error = last_error();
    }
    return r;
}

Rows tx_query(const rsdb_tx* tx, const std::string& sql, const json& params = json::array()) {
    Rows r;
    OutString out;
    r.rc = rsdb_tx_query(tx, sql.c_str(), params.dump().c_str(), out.out());
    if (r.rc == RSDB_OK) {
        r.rows = out.parse();
    } else {
        r.error = last_error();
    }
    return r;
}

int execute(const rsdb_db* db, const std::string& sql, const json& params = json::array(), uint64_t* affected = nullptr) {
    return rsdb_db_execute(db, sql.c_str(), params.dump().c_str(), affected);
}

int tx_execute(const rsdb_tx* tx, const std::string& sql, const json& params = json::array()) {
    return rsdb_tx_execute(tx, sql.c_str(), params.dump().c_str(), nullptr);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Collects pub/sub messages delivered to rsdb_message_cb.
struct Inbox {
    struct Message {
        std::string channel;
        std::string payload;
    };
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Message> messages;

    static void callback(void* user_data, const char* channel, const char* payload, size_t payload_len) {
        auto* self = static_cast<Inbox*>(user_data);
        {
            std::lock_guard<std::mutex> lock(self->mutex);
            self->messages.push_back({channel, std::string(payload, payload_len)});
        }
        self->cv.notify_all();
    }

    bool wait_until(const std::function<bool(const std::vector<Message>&)>& pred, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex);
        return cv.wait_for(lock, timeout, [&] { return pred(messages); });
    }

    bool wait_for_payload(const std::string& payload, std::chrono::milliseconds timeout) {
        return wait_until(
            [&](const std::vector<Message>& ms) {
                return std::any_of(ms.begin(), ms.end(), [&](const Message& m) { return m.payload == payload; });
            },
            timeout);
    }

    std::vector<Message> snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return messages;
    }
};

// ---------------------------------------------------------------- fixture

class CApiTest : public rsdb_test::StackTest {
protected:
    /// A configuration for this test's database and the stack's Redis, plus `extra`.
    void make_config(ConfigPtr* out, const Settings& extra = {}) {
        rsdb_config* raw = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&raw));
        out->reset(raw);
        ASSERT_RSDB_OK(rsdb_config_set(raw, "database_url", db_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(raw, "redis_url", redis_url().c_str()));
        for (const auto& [k, v] : extra) ASSERT_RSDB_OK(rsdb_config_set(raw, k.c_str(), v.c_str()));
    }

    void open_db(DbPtr* out, const Settings& extra = {}) {
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config(&cfg, extra));
        rsdb_db* raw = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg.get(), &raw));
        ASSERT_NE(raw, nullptr);
        out->reset(raw);
    }

    void open_migrated_db(DbPtr* out, const Settings& extra = {}) {
        ASSERT_NO_FATAL_FAILURE(open_db(out, extra));
        int version = 0;
        ASSERT_RSDB_OK(rsdb_db_migrate(out->get(), &version));
        ASSERT_GE(version, 1);
    }

    void open_redis(RedisPtr* out, const Settings& extra = {}) {
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config(&cfg, extra));
        rsdb_redis* raw = nullptr;
        ASSERT_RSDB_OK(rsdb_redis_open(cfg.get(), &raw));
        ASSERT_NE(raw, nullptr);
        out->reset(raw);
    }

    void begin(const DbPtr& db, TxPtr* out) {
        rsdb_tx* raw = nullptr;
        ASSERT_RSDB_OK(rsdb_db_begin(db.get(), &raw));
        ASSERT_NE(raw, nullptr);
        out->reset(raw);
    }

    void create_items_table(const DbPtr& db) {
        ASSERT_RSDB_OK(execute(db.get(), "CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty INT)"));
    }

    int64_t count_rows(const DbPtr& db, const std::string& table) {
        Rows r = query(db.get(), "SELECT count(*) AS n FROM " + table);
        EXPECT_EQ(r.rc, RSDB_OK) << r.error;
        return r.rc == RSDB_OK ? r.rows.at(0).at("n").get<int64_t>() : -1;
    }

    std::string redis_get(const RedisPtr& r, const std::string& key, int* rc = nullptr) {
        OutString out;
        int status = rsdb_redis_get(r.get(), key.c_str(), out.out());
        if (rc != nullptr) *rc = status;
        EXPECT_EQ(status, RSDB_OK) << last_error();
        return out.str();
    }
};

using Database = CApiTest;
using Pool = CApiTest;
using Transactions = CApiTest;
using Migrations = CApiTest;
using Redis = CApiTest;
using PubSub = CApiTest;
using RedisRestart = CApiTest;
using BadInput = CApiTest;
using ServerDown = CApiTest;
using ConfigFromEnv = CApiTest;
using SqlInjection = CApiTest;
using CDatabase = CApiTest;
using CRedis = CApiTest;

}  // namespace

// ================================================================ the environment itself

TEST(StackEnvironment, IsProvidedToTheCSuiteByTheStackScript) {
    std::string why;
    auto stack = rsdb_test::read_stack(&why);
    ASSERT_TRUE(stack.has_value()) << why;
    EXPECT_NE(stack->database_url.find("postgres"), std::string::npos);
    EXPECT_EQ(stack->redis_url.rfind("redis://", 0), 0u);
    EXPECT_GT(stack->redis_port, 0);
}

// ================================================================ the face contract

// The C face of the pool: every rsdb_pool_stats field filled, a transaction handle holding a
// connection until it is freed, counts and rows through the out parameters, RSDB_ERR_TIMEOUT
// with no handle for an exhausted pool. Behaviour is specified in tests/database.rs.
TEST_F(CDatabase, PoolStatsTransactionsAndAPoolTimeoutArriveThroughTheCApi) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db, {{"pool_size", "2"}, {"acquire_timeout_ms", "300"}}));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    rsdb_pool_stats idle{};
    ASSERT_RSDB_OK(rsdb_db_pool_stats(db.get(), &idle));
    EXPECT_EQ(idle.max_size, 2u);
    EXPECT_GE(idle.size, 1u);
    EXPECT_EQ(idle.available, idle.size);
    EXPECT_EQ(idle.in_use, 0u);
    EXPECT_EQ(idle.waiting, 0u);

    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    ASSERT_RSDB_OK(tx_execute(tx.get(), "INSERT INTO items (name, qty) VALUES ($1, $2)", json::array({"widget", 3})));
    Rows inside = tx_query(tx.get(), "SELECT qty FROM items WHERE name = $1", json::array({"widget"}));
    ASSERT_EQ(inside.rc, RSDB_OK) << inside.error;
    EXPECT_EQ(inside.rows, json::parse(R"([{"qty":3}])"));
    rsdb_pool_stats busy{};
    ASSERT_RSDB_OK(rsdb_db_pool_stats(db.get(), &busy));
    EXPECT_EQ(busy.in_use, 1u);
    EXPECT_EQ(busy.size, busy.available + busy.in_use);
    TxPtr second;
    ASSERT_NO_FATAL_FAILURE(begin(db, &second));
    rsdb_tx* third = nullptr;
    EXPECT_TRUE(Fails(rsdb_db_begin(db.get(), &third), RSDB_ERR_TIMEOUT, "pool"));
    EXPECT_EQ(third, nullptr);
    ASSERT_RSDB_OK(rsdb_tx_commit(tx.get()));
    tx.reset();
    second.reset();
    rsdb_pool_stats after{};
    ASSERT_RSDB_OK(rsdb_db_pool_stats(db.get(), &after));
    EXPECT_EQ(after.in_use, 0u) << "freed transactions give their connections back";
    EXPECT_EQ(count_rows(db, "items"), 1);
    uint64_t affected = 0;
    ASSERT_RSDB_OK(execute(db.get(), "UPDATE items SET qty = qty + 1", json::array(), &affected));
    EXPECT_EQ(affected, 1u);
    // A mebibyte of text crosses the C boundary both ways.
    const std::string mib(1 << 20, 'x');
    Rows echoed = query(db.get(), "SELECT $1::text AS v", json::array({mib}));
    ASSERT_EQ(echoed.rc, RSDB_OK) << echoed.error;
    EXPECT_EQ(echoed.rows.at(0).at("v"), mib);
}

// The C face of the Redis client: millisecond TTLs, JSON batches and replies as text, a NULL
// value for a missing key, unsubscribe codes. Behaviour is specified in tests/redis.rs.
TEST_F(CRedis, TtlsAtomicBatchesAndUnsubscribeArriveThroughTheCApi) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("session").c_str(), "token", 150));
    EXPECT_EQ(redis_get(r, key("session")), "token");
    int64_t ttl = 0;
    ASSERT_RSDB_OK(rsdb_redis_ttl(r.get(), key("session").c_str(), &ttl));
    EXPECT_GT(ttl, 0);
    EXPECT_LE(ttl, 150);
    ASSERT_RSDB_OK(rsdb_redis_ttl(r.get(), key("never-set").c_str(), &ttl));
    EXPECT_EQ(ttl, -2);
    OutString value;
    ASSERT_RSDB_OK(rsdb_redis_get(r.get(), key("never-set").c_str(), value.out()));
    EXPECT_TRUE(value.is_null()) << "a missing key is a NULL value";

    const json commands = {{"SET", key("a"), "1"}, {"INCRBY", key("a"), 41}, {"GET", key("a")}, {"RPUSH", key("l"), "x", "y"}};
    OutString replies;
    ASSERT_RSDB_OK(rsdb_redis_exec_atomic(r.get(), commands.dump().c_str(), replies.out()));
    EXPECT_EQ(replies.parse(), json({"OK", 42, "42", 2}));
    ASSERT_RSDB_OK(rsdb_redis_exec_atomic(r.get(), "[]", replies.out()));
    EXPECT_EQ(replies.parse(), json::array());
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), R"([["MULTI"]])", replies.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), R"({"SET":"x"})", replies.out()), RSDB_ERR_JSON));

    RedisPtr pub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&pub));
    Inbox inbox;
    uint64_t id = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(r.get(), key("stream.*").c_str(), &Inbox::callback, &inbox, &id));
    int64_t receivers = -1;
    ASSERT_RSDB_OK(rsdb_redis_publish(pub.get(), key("stream.one").c_str(), "one", &receivers));
    EXPECT_EQ(receivers, 1);
    ASSERT_TRUE(inbox.wait_for_payload("one", 5s));
    ASSERT_RSDB_OK(rsdb_redis_unsubscribe(r.get(), id));
    EXPECT_TRUE(Fails(rsdb_redis_unsubscribe(r.get(), id), RSDB_ERR_NOT_FOUND));
}

// ================================================================ library basics

TEST(Library, ReportsAVersionAndNamesEveryStatus) {
    ASSERT_NE(rsdb_version(), nullptr);
    EXPECT_GT(std::strlen(rsdb_version()), 0u);
    EXPECT_STREQ(rsdb_status_name(RSDB_OK), "ok");
    EXPECT_STREQ(rsdb_status_name(RSDB_ERR_TIMEOUT), "timeout");
    EXPECT_STREQ(rsdb_status_name(RSDB_ERR_NULL), "null argument");
    EXPECT_STREQ(rsdb_status_name(12345), "internal error");
}

TEST(Library, EveryReleaseFunctionAcceptsNull) {
    rsdb_config_free(nullptr);
    rsdb_db_close(nullptr);
    rsdb_tx_free(nullptr);
    rsdb_redis_close(nullptr);
    rsdb_string_free(nullptr);
    SUCCEED();
}

// ================================================================ configuration

TEST(Config, NewSetAndFreeSucceedAndClearTheLastError) {
    rsdb_config* cfg = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&cfg));
    ASSERT_NE(cfg, nullptr);
    // A failure first, so that the success below has something to clear.
    EXPECT_NE(rsdb_config_set(cfg, "pool_size", "not a number"), RSDB_OK);
    ASSERT_NE(rsdb_last_error(), nullptr);
    for (auto [k, v] : Settings{{"database_url", "postgresql://u@127.0.0.1:1/db"},
                                {"pool_size", "7"},
                                {"acquire_timeout_ms", "250"},
                                {"connect_timeout_ms", "1000"},
                                {"query_timeout_ms", "3000"},
                                {"redis_url", "redis://127.0.0.1:1/"},
                                {"redis_timeout_ms", "500"},
                                {"master_key", std::string(64, 'a')},
                                {"instance_id", "gtest"}}) {
        EXPECT_RSDB_OK(rsdb_config_set(cfg, k.c_str(), v.c_str()));
        EXPECT_EQ(rsdb_last_error(), nullptr) << "after setting " << k;
        EXPECT_EQ(rsdb_last_error_code(), RSDB_OK);
    }
    // An empty value clears an optional key.
    EXPECT_RSDB_OK(rsdb_config_set(cfg, "redis_url", ""));
    rsdb_config_free(cfg);
}

TEST(Config, UnknownKeyIsAConfigErrorNamingTheKey) {
    ConfigPtr cfg;
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    cfg.reset(raw);
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "no_such_key", "1"), RSDB_ERR_CONFIG, "no_such_key"));
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "no_such_key", "1"), RSDB_ERR_CONFIG, "known keys"));
}

TEST(Config, OutOfRangeOrMalformedValuesAreConfigErrors) {
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    ConfigPtr cfg(raw);
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "pool_size", "0"), RSDB_ERR_CONFIG, "pool_size"));
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "pool_size", "lots"), RSDB_ERR_CONFIG, "pool_size"));
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "acquire_timeout_ms", "-5"), RSDB_ERR_CONFIG, "acquire_timeout_ms"));
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "master_key", "abc"), RSDB_ERR_CONFIG, "master_key"));
    EXPECT_TRUE(Fails(rsdb_config_set(raw, "instance_id", ""), RSDB_ERR_CONFIG, "instance_id"));
}

namespace {
std::string write_config_file(const std::string& text) {
    const std::string path = ::testing::TempDir() + "rsdb-config-" + std::to_string(::getpid()) + "-" +
                             std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return path;
    std::fputs(text.c_str(), f);
    std::fclose(f);
    return path;
}
}  // namespace

TEST(Config, LoadFileAppliesKeyValueLinesAndNamesTheLineAtFault) {
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    ConfigPtr cfg(raw);
    const std::string good = write_config_file(
        "# comment\n\nROOTSTREAM_POOL_SIZE = 7\ndatabase_url = 'postgresql://u@host:notaport/db'\n");
    ASSERT_RSDB_OK(rsdb_config_load_file(raw, good.c_str()));
    // The URL from the file is the one opening sees.
    rsdb_db* db = nullptr;
    EXPECT_TRUE(Fails(rsdb_db_open(raw, &db), RSDB_ERR_CONFIG, "database_url"));
    const std::string bad = write_config_file("pool_size = 3\nthis line has no equals sign\n");
    EXPECT_TRUE(Fails(rsdb_config_load_file(raw, bad.c_str()), RSDB_ERR_CONFIG, bad + ":2"));
    const std::string unknown = write_config_file("colour = blue\n");
    EXPECT_TRUE(Fails(rsdb_config_load_file(raw, unknown.c_str()), RSDB_ERR_CONFIG, "colour"));
    EXPECT_TRUE(Fails(rsdb_config_load_file(raw, "/nonexistent/rsdb.conf"), RSDB_ERR_CONFIG, "/nonexistent/rsdb.conf"));
    EXPECT_TRUE(Fails(rsdb_config_load_file(nullptr, good.c_str()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_config_load_file(raw, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_config_load_file(raw, "\xff\xfe"), RSDB_ERR_INVALID_UTF8));
    for (const auto& p : {good, bad, unknown}) std::remove(p.c_str());
}

TEST(Config, OpeningWithoutAUrlIsAConfigErrorNamingTheKey) {
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    ConfigPtr cfg(raw);
    rsdb_db* db = nullptr;
    EXPECT_TRUE(Fails(rsdb_db_open(raw, &db), RSDB_ERR_CONFIG, "database_url"));
    EXPECT_EQ(db, nullptr);
    rsdb_redis* r = nullptr;
    EXPECT_TRUE(Fails(rsdb_redis_open(raw, &r), RSDB_ERR_CONFIG, "redis_url"));
    EXPECT_EQ(r, nullptr);
}

TEST(Config, MalformedUrlsAreConfigErrors) {
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    ConfigPtr cfg(raw);
    ASSERT_RSDB_OK(rsdb_config_set(raw, "database_url", "postgresql://u@host:notaport/db"));
    rsdb_db* db = nullptr;
    EXPECT_TRUE(Fails(rsdb_db_open(raw, &db), RSDB_ERR_CONFIG, "database_url"));
    EXPECT_EQ(db, nullptr);
    ASSERT_RSDB_OK(rsdb_config_set(raw, "redis_url", "notascheme://x"));
    rsdb_redis* r = nullptr;
    EXPECT_TRUE(Fails(rsdb_redis_open(raw, &r), RSDB_ERR_CONFIG, "redis_url"));
    EXPECT_EQ(r, nullptr);
}

TEST_F(ConfigFromEnv, RsdbConfigFromEnvFeedsTheCHandles) {
    // The stack exports ROOTSTREAM_DATABASE_URL and ROOTSTREAM_REDIS_URL; point the database
    // at this test's one and override the pool size so the effect is observable.
    rsdb_test::ScopedEnv url("ROOTSTREAM_DATABASE_URL", db_url());
    rsdb_test::ScopedEnv pool("ROOTSTREAM_POOL_SIZE", "7");
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_from_env(&raw));
    ConfigPtr cfg(raw);
    rsdb_db* db_raw = nullptr;
    ASSERT_RSDB_OK(rsdb_db_open(raw, &db_raw));
    DbPtr db(db_raw);
    rsdb_pool_stats stats{};
    ASSERT_RSDB_OK(rsdb_db_pool_stats(db.get(), &stats));
    EXPECT_EQ(stats.max_size, 7u);
    Rows r = query(db.get(), "SELECT current_database() AS name");
    ASSERT_EQ(r.rc, RSDB_OK) << r.error;
    EXPECT_EQ(r.rows.at(0).at("name"), db_name());
    rsdb_redis* redis = nullptr;
    ASSERT_RSDB_OK(rsdb_redis_open(raw, &redis));
    rsdb_redis_close(redis);
}

TEST_F(ConfigFromEnv, ABadVariableIsAConfigErrorNamingTheVariable) {
    rsdb_test::ScopedEnv pool("ROOTSTREAM_POOL_SIZE", "many");
    rsdb_config* raw = nullptr;
    EXPECT_TRUE(Fails(rsdb_config_from_env(&raw), RSDB_ERR_CONFIG, "ROOTSTREAM_POOL_SIZE"));
    EXPECT_EQ(raw, nullptr);
    rsdb_config_free(raw);
}

// ================================================================ database

TEST_F(Database, OpensAndReportsHealthOfItsOwnDatabase) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db, {{"pool_size", "4"}}));
    OutString health;
    ASSERT_RSDB_OK(rsdb_db_health(db.get(), health.out()));
    json h = health.parse();
    EXPECT_EQ(h.at("database"), db_name());
    EXPECT_EQ(h.at("in_recovery"), false);
    EXPECT_EQ(h.at("server_version").get<std::string>().rfind("15", 0), 0u) << h.dump();
    EXPECT_GE(h.at("latency_ms").get<double>(), 0.0);
    EXPECT_LT(h.at("latency_ms").get<double>(), 10000.0);
    EXPECT_EQ(h.at("pool").at("max_size"), 4);
}

TEST_F(Database, MigrateCreatesTheSchemaAndReportsItsVersion) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    int version = -1;
    ASSERT_RSDB_OK(rsdb_db_migrate(db.get(), &version));
    EXPECT_GE(version, 1);
    Rows tables = query(db.get(),
                        "SELECT to_regclass('public.users') IS NOT NULL AS users,"
                        " to_regclass('public.streams') IS NOT NULL AS streams,"
                        " to_regclass('public.event_log') IS NOT NULL AS event_log,"
                        " (SELECT max(version) FROM rsdb_schema_migrations) AS recorded");
    ASSERT_EQ(tables.rc, RSDB_OK) << tables.error;
    EXPECT_EQ(tables.rows.at(0).at("users"), true);
    EXPECT_EQ(tables.rows.at(0).at("streams"), true);
    EXPECT_EQ(tables.rows.at(0).at("event_log"), true);
    EXPECT_EQ(tables.rows.at(0).at("recorded"), version);
}

TEST_F(Database, MigratingTwiceChangesNothing) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    int first = 0;
    ASSERT_RSDB_OK(rsdb_db_migrate(db.get(), &first));
    Rows before = query(db.get(), "SELECT version, checksum, applied_at FROM rsdb_schema_migrations ORDER BY version");
    ASSERT_EQ(before.rc, RSDB_OK) << before.error;
    int second = 0;
    ASSERT_RSDB_OK(rsdb_db_migrate(db.get(), &second));
    EXPECT_EQ(second, first);
    // A NULL version pointer is allowed.
    ASSERT_RSDB_OK(rsdb_db_migrate(db.get(), nullptr));
    Rows after = query(db.get(), "SELECT version, checksum, applied_at FROM rsdb_schema_migrations ORDER BY version");
    ASSERT_EQ(after.rc, RSDB_OK) << after.error;
    EXPECT_EQ(after.rows, before.rows);
    EXPECT_EQ(after.rows.size(), static_cast<size_t>(first));
}

TEST_F(Database, ExecuteReportsTheNumberOfAffectedRows) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    uint64_t affected = 999;
    ASSERT_RSDB_OK(execute(db.get(), "INSERT INTO items (name, qty) VALUES ($1, $2), ($3, $4), ($5, $6)",
                           json::array({"a", 1, "b", 2, "c", 3}), &affected));
    EXPECT_EQ(affected, 3u);
    ASSERT_RSDB_OK(execute(db.get(), "UPDATE items SET qty = qty + 10 WHERE qty >= $1", json::array({2}), &affected));
    EXPECT_EQ(affected, 2u);
    ASSERT_RSDB_OK(execute(db.get(), "DELETE FROM items WHERE name = $1", json::array({"nobody"}), &affected));
    EXPECT_EQ(affected, 0u);
    // NULL `affected` is allowed.
    ASSERT_RSDB_OK(rsdb_db_execute(db.get(), "DELETE FROM items WHERE name = 'a'", nullptr, nullptr));
    EXPECT_EQ(count_rows(db, "items"), 2);
}

TEST_F(Database, NullOrEmptyParamsMeanNoParameters) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    for (const char* params : {static_cast<const char*>(nullptr), "", "  ", "[]"}) {
        OutString out;
        ASSERT_RSDB_OK(rsdb_db_query(db.get(), "SELECT 41 + 1 AS answer", params, out.out()));
        EXPECT_EQ(out.parse(), json::parse(R"([{"answer":42}])")) << "params: " << (params ? params : "NULL");
    }
}

TEST_F(Database, QueryBindsJsonParametersOfEveryCommonType) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    const json doc = {{"name", "ünïcødé"}, {"tags", {1, 2, 3}}, {"nested", {{"ok", true}, {"none", nullptr}}}};
    // 2^53 + 1 cannot be represented by a double: it must survive as an integer.
    const int64_t big = 9007199254740993LL;
    Rows r = query(db.get(),
                   "SELECT $1::int4 AS i, $2::int8 AS big, $3::text AS t, $4::bool AS b, $5::text AS n,"
                   " $6::jsonb AS j, $7::timestamptz AS ts, $8::float8 AS f, $9::int4 IS NULL AS n_is_null",
                   json::array({-17, big, "hello", true, nullptr, doc, "2024-01-31T12:34:56.5+02:00", 2.5, nullptr}));
    ASSERT_EQ(r.rc, RSDB_OK) << r.error;
    ASSERT_EQ(r.rows.size(), 1u);
    const json& row = r.rows[0];
    EXPECT_EQ(row.at("i"), -17);
    EXPECT_EQ(row.at("big").get<int64_t>(), big);
    EXPECT_EQ(row.at("t"), "hello");
    EXPECT_EQ(row.at("b"), true);
    EXPECT_TRUE(row.at("n").is_null());
    EXPECT_EQ(row.at("j"), doc);
    EXPECT_EQ(row.at("ts"), "2024-01-31T10:34:56.500000Z");
    EXPECT_DOUBLE_EQ(row.at("f").get<double>(), 2.5);
    EXPECT_EQ(row.at("n_is_null"), true);
}

TEST_F(Database, RowsComeBackAsObjectsKeyedByColumnName) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    ASSERT_RSDB_OK(execute(db.get(), "INSERT INTO items (name, qty) VALUES ('x', 1), ('y', NULL)"));
    Rows r = query(db.get(), "SELECT name, qty FROM items ORDER BY name");
    ASSERT_EQ(r.rc, RSDB_OK) << r.error;
    EXPECT_EQ(r.rows, json::parse(R"([{"name":"x","qty":1},{"name":"y","qty":null}])"));
    Rows none = query(db.get(), "SELECT name FROM items WHERE qty > 100");
    ASSERT_EQ(none.rc, RSDB_OK) << none.error;
    EXPECT_EQ(none.rows, json::array());
}

TEST_F(Database, AParameterOfTheWrongTypeOrCountIsAQueryError) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    OutString out;
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::int4 AS i", R"(["twelve"])", out.out()), RSDB_ERR_QUERY));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::int4 AS i", R"([1, 2])", out.out()), RSDB_ERR_QUERY));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::int4 + $2::int4 AS i", R"([1])", out.out()), RSDB_ERR_QUERY));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::int2 AS i", R"([70000])", out.out()), RSDB_ERR_QUERY));
}

TEST_F(Database, ADuplicateUniqueValueIsAConflict) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    ASSERT_RSDB_OK(execute(db.get(), "INSERT INTO items (name) VALUES ($1)", json::array({"only"})));
    EXPECT_TRUE(Fails(execute(db.get(), "INSERT INTO items (name) VALUES ($1)", json::array({"only"})),
                      RSDB_ERR_CONFLICT, "23505"));
    EXPECT_EQ(count_rows(db, "items"), 1);
}

TEST_F(Database, AClosedHandleLeavesOtherHandlesWorking) {
    DbPtr first;
    DbPtr second;
    ASSERT_NO_FATAL_FAILURE(open_db(&first));
    ASSERT_NO_FATAL_FAILURE(open_db(&second));
    first.reset();
    Rows r = query(second.get(), "SELECT 1 AS one");
    ASSERT_EQ(r.rc, RSDB_OK) << r.error;
    EXPECT_EQ(r.rows.at(0).at("one"), 1);
}

// ================================================================ pool

TEST_F(Pool, AWaitingTransactionGetsTheConnectionReleasedByAnother) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db, {{"pool_size", "1"}, {"acquire_timeout_ms", "3000"}}));
    TxPtr holder;
    ASSERT_NO_FATAL_FAILURE(begin(db, &holder));
    int rc = RSDB_ERR_INTERNAL;
    std::string error;
    rsdb_tx* got = nullptr;
    std::thread waiter([&] {
        rc = rsdb_db_begin(db.get(), &got);
        if (rc != RSDB_OK) error = last_error();
    });
    // Let the waiter queue up before the connection is released.
    EXPECT_TRUE(rsdb_test::wait_for(
        [&] {
            rsdb_pool_stats s{};
            return rsdb_db_pool_stats(db.get(), &s) == RSDB_OK && s.waiting == 1;
        },
        2000ms));
    holder.reset();
    waiter.join();
    TxPtr got_ptr(got);
    ASSERT_EQ(rc, RSDB_OK) << error;
    EXPECT_NE(got, nullptr);
}

// ================================================================ transactions

TEST_F(Transactions, FreeingWithoutCommitRollsBack) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    uint64_t affected = 0;
    ASSERT_RSDB_OK(rsdb_tx_execute(tx.get(), "INSERT INTO items (name) VALUES ('ghost')", nullptr, &affected));
    EXPECT_EQ(affected, 1u);
    tx.reset();
    EXPECT_EQ(count_rows(db, "items"), 0);
}

TEST_F(Transactions, ExplicitRollbackDiscardsAndFinishesTheTransaction) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    ASSERT_RSDB_OK(tx_execute(tx.get(), "INSERT INTO items (name) VALUES ('gone')"));
    ASSERT_RSDB_OK(rsdb_tx_rollback(tx.get()));
    EXPECT_RSDB_OK(rsdb_tx_rollback(tx.get()));  // a no-op once finished
    EXPECT_TRUE(Fails(rsdb_tx_commit(tx.get()), RSDB_ERR_STATE));
    EXPECT_EQ(count_rows(db, "items"), 0);
}

TEST_F(Transactions, AFailedStatementMakesCommitFailAndKeepsNothing) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    ASSERT_RSDB_OK(tx_execute(tx.get(), "INSERT INTO items (name) VALUES ('first')"));
    EXPECT_TRUE(Fails(tx_execute(tx.get(), "INSERT INTO no_such_table VALUES (1)"), RSDB_ERR_QUERY, "42P01"));
    EXPECT_TRUE(Fails(rsdb_tx_commit(tx.get()), RSDB_ERR_STATE));
    EXPECT_EQ(count_rows(db, "items"), 0);
    // The transaction is over: committing again is still a state error.
    EXPECT_TRUE(Fails(rsdb_tx_commit(tx.get()), RSDB_ERR_STATE));
}

TEST_F(Transactions, AFinishedTransactionRefusesFurtherStatements) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    ASSERT_RSDB_OK(rsdb_tx_commit(tx.get()));
    EXPECT_TRUE(Fails(tx_execute(tx.get(), "INSERT INTO items (name) VALUES ('late')"), RSDB_ERR_STATE));
    OutString out;
    EXPECT_TRUE(Fails(rsdb_tx_query(tx.get(), "SELECT 1", nullptr, out.out()), RSDB_ERR_STATE));
    EXPECT_EQ(count_rows(db, "items"), 0);
}

TEST_F(Transactions, ATransactionOutlivesTheClosedPoolHandle) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    ASSERT_NO_FATAL_FAILURE(create_items_table(db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    db.reset();
    ASSERT_RSDB_OK(tx_execute(tx.get(), "INSERT INTO items (name) VALUES ('kept')"));
    ASSERT_RSDB_OK(rsdb_tx_commit(tx.get()));
    tx.reset();
    DbPtr again;
    ASSERT_NO_FATAL_FAILURE(open_db(&again));
    EXPECT_EQ(count_rows(again, "items"), 1);
}

// ================================================================ migrations

TEST_F(Migrations, TwoHandlesMigratingAtOnceBothSucceedAndApplyEachVersionOnce) {
    struct Outcome {
        int open_rc = RSDB_ERR_INTERNAL;
        int rc = RSDB_ERR_INTERNAL;
        int version = -1;
        std::string error;
    };
    Outcome outcomes[2];
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    const std::string url = db_url();
    for (auto& outcome : outcomes) {
        threads.emplace_back([&outcome, &ready, url] {
            rsdb_config* cfg = nullptr;
            rsdb_config_new(&cfg);
            rsdb_config_set(cfg, "database_url", url.c_str());
            rsdb_db* db = nullptr;
            outcome.open_rc = rsdb_db_open(cfg, &db);
            rsdb_config_free(cfg);
            ready.fetch_add(1);
            // Start both migrations together so they really race for the schema.
            while (ready.load() < 2) std::this_thread::yield();
            if (outcome.open_rc != RSDB_OK) {
                outcome.error = last_error();
                return;
            }
            outcome.rc = rsdb_db_migrate(db, &outcome.version);
            if (outcome.rc != RSDB_OK) outcome.error = last_error();
            rsdb_db_close(db);
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& o : outcomes) {
        ASSERT_EQ(o.open_rc, RSDB_OK) << o.error;
        EXPECT_EQ(o.rc, RSDB_OK) << o.error;
        EXPECT_GE(o.version, 1);
    }
    EXPECT_EQ(outcomes[0].version, outcomes[1].version);

    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    Rows m = query(db.get(), "SELECT count(*) AS n, count(DISTINCT version) AS distinct_versions,"
                             " min(version) AS lowest, max(version) AS highest FROM rsdb_schema_migrations");
    ASSERT_EQ(m.rc, RSDB_OK) << m.error;
    EXPECT_EQ(m.rows.at(0).at("n"), outcomes[0].version);
    EXPECT_EQ(m.rows.at(0).at("distinct_versions"), outcomes[0].version);
    EXPECT_EQ(m.rows.at(0).at("lowest"), 1);
    EXPECT_EQ(m.rows.at(0).at("highest"), outcomes[0].version);
    Rows t = query(db.get(),
                   "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'"
                   " AND table_name IN ('users', 'streams', 'event_log')");
    ASSERT_EQ(t.rc, RSDB_OK) << t.error;
    EXPECT_EQ(t.rows.at(0).at("n"), 3);
    // The schema is usable, not just present.
    ASSERT_RSDB_OK(execute(db.get(), "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)",
                           json::array({"racer", "racer@example.com", "x"})));
}

// ================================================================ redis

TEST_F(Redis, SetThenGetReturnsTheValueAndAMissingKeyGivesNull) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    double latency = -1;
    ASSERT_RSDB_OK(rsdb_redis_ping(r.get(), &latency));
    EXPECT_GE(latency, 0.0);
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("greeting").c_str(), "hello, world", 0));
    EXPECT_EQ(redis_get(r, key("greeting")), "hello, world");
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("greeting").c_str(), "replaced", 0));
    EXPECT_EQ(redis_get(r, key("greeting")), "replaced");

    char sentinel = 0;
    char* value = &sentinel;
    ASSERT_RSDB_OK(rsdb_redis_get(r.get(), key("missing").c_str(), &value));
    EXPECT_EQ(value, nullptr);
    if (value != &sentinel) rsdb_string_free(value);
}

TEST_F(Redis, DelReportsWhetherTheKeyExisted) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("k").c_str(), "v", 0));
    int existed = -1;
    ASSERT_RSDB_OK(rsdb_redis_del(r.get(), key("k").c_str(), &existed));
    EXPECT_EQ(existed, 1);
    ASSERT_RSDB_OK(rsdb_redis_del(r.get(), key("k").c_str(), &existed));
    EXPECT_EQ(existed, 0);
    ASSERT_RSDB_OK(rsdb_redis_del(r.get(), key("k").c_str(), nullptr));
}

TEST_F(Redis, TtlIsMinusOneWithoutExpiryAndMinusTwoForAMissingKey) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("forever").c_str(), "v", 0));
    int64_t ttl = 0;
    ASSERT_RSDB_OK(rsdb_redis_ttl(r.get(), key("forever").c_str(), &ttl));
    EXPECT_EQ(ttl, -1);
    ASSERT_RSDB_OK(rsdb_redis_ttl(r.get(), key("nothing").c_str(), &ttl));
    EXPECT_EQ(ttl, -2);

    int applied = -1;
    ASSERT_RSDB_OK(rsdb_redis_expire(r.get(), key("forever").c_str(), 60000, &applied));
    EXPECT_EQ(applied, 1);
    ASSERT_RSDB_OK(rsdb_redis_ttl(r.get(), key("forever").c_str(), &ttl));
    EXPECT_GT(ttl, 50000);
    EXPECT_LE(ttl, 60000);
    ASSERT_RSDB_OK(rsdb_redis_expire(r.get(), key("nothing").c_str(), 60000, &applied));
    EXPECT_EQ(applied, 0);
    EXPECT_TRUE(Fails(rsdb_redis_expire(r.get(), key("forever").c_str(), 0, &applied), RSDB_ERR_INVALID_ARGUMENT));

    ASSERT_RSDB_OK(rsdb_redis_expire(r.get(), key("forever").c_str(), 100, nullptr));
    EXPECT_TRUE(rsdb_test::wait_for(
        [&] {
            int64_t t = 0;
            return rsdb_redis_ttl(r.get(), key("forever").c_str(), &t) == RSDB_OK && t == -2;
        },
        2000ms));
}

TEST_F(Redis, HashesStoreFieldsIndividually) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    const std::string h = key("user:1");
    ASSERT_RSDB_OK(rsdb_redis_hset(r.get(), h.c_str(), "name", "ada"));
    ASSERT_RSDB_OK(rsdb_redis_hset(r.get(), h.c_str(), "role", "admin"));
    ASSERT_RSDB_OK(rsdb_redis_hset(r.get(), h.c_str(), "role", "owner"));
    OutString v;
    ASSERT_RSDB_OK(rsdb_redis_hget(r.get(), h.c_str(), "role", v.out()));
    EXPECT_EQ(v.str(), "owner");
    ASSERT_RSDB_OK(rsdb_redis_hget(r.get(), h.c_str(), "missing", v.out()));
    EXPECT_TRUE(v.is_null());
    ASSERT_RSDB_OK(rsdb_redis_hgetall(r.get(), h.c_str(), v.out()));
    EXPECT_EQ(v.parse(), json({{"name", "ada"}, {"role", "owner"}}));
    int existed = -1;
    ASSERT_RSDB_OK(rsdb_redis_hdel(r.get(), h.c_str(), "role", &existed));
    EXPECT_EQ(existed, 1);
    ASSERT_RSDB_OK(rsdb_redis_hdel(r.get(), h.c_str(), "role", &existed));
    EXPECT_EQ(existed, 0);
    ASSERT_RSDB_OK(rsdb_redis_hgetall(r.get(), h.c_str(), v.out()));
    EXPECT_EQ(v.parse(), json({{"name", "ada"}}));
    ASSERT_RSDB_OK(rsdb_redis_hgetall(r.get(), key("no-hash").c_str(), v.out()));
    EXPECT_EQ(v.parse(), json::object());
}

TEST_F(Redis, ListsPushAndPopAtBothEnds) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    const std::string l = key("queue");
    int64_t len = 0;
    ASSERT_RSDB_OK(rsdb_redis_push(r.get(), l.c_str(), "b", 0, &len));
    EXPECT_EQ(len, 1);
    ASSERT_RSDB_OK(rsdb_redis_push(r.get(), l.c_str(), "c", 0, &len));
    EXPECT_EQ(len, 2);
    ASSERT_RSDB_OK(rsdb_redis_push(r.get(), l.c_str(), "a", 1, &len));
    EXPECT_EQ(len, 3);
    OutString out;
    ASSERT_RSDB_OK(rsdb_redis_lrange(r.get(), l.c_str(), 0, -1, out.out()));
    EXPECT_EQ(out.parse(), json({"a", "b", "c"}));
    ASSERT_RSDB_OK(rsdb_redis_lrange(r.get(), l.c_str(), -2, -1, out.out()));
    EXPECT_EQ(out.parse(), json({"b", "c"}));
    ASSERT_RSDB_OK(rsdb_redis_pop(r.get(), l.c_str(), 1, out.out()));
    EXPECT_EQ(out.str(), "a");
    ASSERT_RSDB_OK(rsdb_redis_pop(r.get(), l.c_str(), 0, out.out()));
    EXPECT_EQ(out.str(), "c");
    ASSERT_RSDB_OK(rsdb_redis_pop(r.get(), l.c_str(), 0, out.out()));
    EXPECT_EQ(out.str(), "b");
    ASSERT_RSDB_OK(rsdb_redis_pop(r.get(), l.c_str(), 0, out.out()));
    EXPECT_TRUE(out.is_null());
    ASSERT_RSDB_OK(rsdb_redis_lrange(r.get(), l.c_str(), 0, -1, out.out()));
    EXPECT_EQ(out.parse(), json::array());
}

TEST_F(Redis, IncrAddsToACounterAndRejectsNonNumbers) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    int64_t v = 0;
    ASSERT_RSDB_OK(rsdb_redis_incr(r.get(), key("viewers").c_str(), 5, &v));
    EXPECT_EQ(v, 5);
    ASSERT_RSDB_OK(rsdb_redis_incr(r.get(), key("viewers").c_str(), -2, &v));
    EXPECT_EQ(v, 3);
    ASSERT_RSDB_OK(rsdb_redis_incr(r.get(), key("viewers").c_str(), 1, nullptr));
    EXPECT_EQ(redis_get(r, key("viewers")), "4");
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("word").c_str(), "abc", 0));
    EXPECT_TRUE(Fails(rsdb_redis_incr(r.get(), key("word").c_str(), 1, &v), RSDB_ERR_REDIS));
}

TEST_F(Redis, ExecAtomicRefusesMalformedOrConnectionChangingCommands) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    OutString replies;
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), R"({"SET":"x"})", replies.out()), RSDB_ERR_JSON));
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), R"([["SET","k",{"x":1}]])", replies.out()), RSDB_ERR_JSON));
    const json sneaky = {{"SET", key("never"), "1"}, {"SELECT", "2"}};
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), sneaky.dump().c_str(), replies.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "SELECT"));
    // Nothing of a refused batch runs.
    OutString v;
    ASSERT_RSDB_OK(rsdb_redis_get(r.get(), key("never").c_str(), v.out()));
    EXPECT_TRUE(v.is_null());
}

TEST_F(Redis, CommandRunsAnyRegularCommandAndReturnsItsReplyAsJson) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    const std::string board = key("board");
    OutString reply;
    ASSERT_RSDB_OK(rsdb_redis_command(r.get(), json({"ZADD", board, "10", "alice", "20", "bob"}).dump().c_str(), reply.out()));
    EXPECT_EQ(reply.parse(), 2);
    ASSERT_RSDB_OK(rsdb_redis_command(r.get(), json({"ZREVRANGE", board, 0, -1}).dump().c_str(), reply.out()));
    EXPECT_EQ(reply.parse(), json({"bob", "alice"}));
    ASSERT_RSDB_OK(rsdb_redis_command(r.get(), json({"GET", key("none")}).dump().c_str(), reply.out()));
    EXPECT_TRUE(reply.parse().is_null());
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), R"(["NOSUCHCOMMAND"])", reply.out()), RSDB_ERR_REDIS));
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), R"(["SUBSCRIBE","x"])", reply.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), R"([])", reply.out()), RSDB_ERR_INVALID_ARGUMENT));
}

// ================================================================ pub/sub

TEST_F(PubSub, APatternReceivesMatchingChannelsOnly) {
    RedisPtr sub;
    RedisPtr pub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&sub));
    ASSERT_NO_FATAL_FAILURE(open_redis(&pub));
    Inbox inbox;
    uint64_t id = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(sub.get(), key("stream.*").c_str(), &Inbox::callback, &inbox, &id));
    EXPECT_GT(id, 0u);

    int64_t receivers = -1;
    ASSERT_RSDB_OK(rsdb_redis_publish(pub.get(), key("user.updated").c_str(), R"({"id":1})", &receivers));
    EXPECT_EQ(receivers, 0);
    ASSERT_RSDB_OK(rsdb_redis_publish(pub.get(), key("stream.started").c_str(), R"({"id":2})", &receivers));
    EXPECT_EQ(receivers, 1);
    ASSERT_TRUE(inbox.wait_for_payload(R"({"id":2})", 5s));
    // The non-matching message was published first; messages arrive in order, so had it been
    // delivered it would already be here.
    auto got = inbox.snapshot();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].channel, key("stream.started"));
    EXPECT_EQ(got[0].payload, R"({"id":2})");
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(sub.get(), id));
}

TEST_F(PubSub, PayloadLengthCountsEmbeddedNulBytes) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    Inbox inbox;
    uint64_t id = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(r.get(), key("bin.*").c_str(), &Inbox::callback, &inbox, &id));
    // PUBLISH through the generic command path, which can carry a NUL inside a JSON string.
    OutString reply;
    ASSERT_RSDB_OK(rsdb_redis_command(r.get(), json({"PUBLISH", key("bin.x"), std::string("a\0b", 3)}).dump().c_str(),
                                      reply.out()));
    EXPECT_EQ(reply.parse(), 1);
    ASSERT_TRUE(inbox.wait_for_payload(std::string("a\0b", 3), 5s));
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(r.get(), id));
}

namespace {
// Observes callbacks around rsdb_redis_close. Heap-allocated so that it can be deliberately
// leaked when the library still calls it after close, instead of corrupting the stack.
struct CloseProbe {
    std::atomic<int> calls{0};
    std::atomic<int> running{0};
    std::atomic<bool> closed{false};
    std::atomic<int> calls_after_close{0};

    static void callback(void* user_data, const char*, const char*, size_t) {
        auto* self = static_cast<CloseProbe*>(user_data);
        self->running.fetch_add(1);
        if (self->closed.load()) self->calls_after_close.fetch_add(1);
        self->calls.fetch_add(1);
        // Slow on purpose: more messages queue up behind this one.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        self->running.fetch_sub(1);
    }
};
}  // namespace

TEST_F(PubSub, NoCallbackRunsAfterCloseReturns) {
    RedisPtr pub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&pub));
    RedisPtr sub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&sub));
    auto* probe = new CloseProbe;
    uint64_t id = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(sub.get(), key("close.*").c_str(), &CloseProbe::callback, probe, &id));
    for (int i = 0; i < 5; ++i) {
        ASSERT_RSDB_OK(rsdb_redis_publish(pub.get(), key("close.x").c_str(), std::to_string(i).c_str(), nullptr));
    }
    ASSERT_TRUE(rsdb_test::wait_for([&] { return probe->running.load() > 0; }, 5000ms));
    sub.reset();  // rsdb_redis_close while a callback runs and others are queued
    probe->closed.store(true);
    const int running_at_return = probe->running.load();
    std::this_thread::sleep_for(1000ms);
    const int late = probe->calls_after_close.load();
    EXPECT_EQ(running_at_return, 0) << "a callback was still running when rsdb_redis_close returned";
    EXPECT_EQ(late, 0) << late << " callback(s) started after rsdb_redis_close returned (of " << probe->calls.load()
                       << " in all)";
    if (running_at_return == 0 && late == 0 && probe->running.load() == 0) delete probe;
}

// ================================================================ redis restarts

TEST_F(RedisRestart, SetAndGetWorkAgainAfterTheServerRestarts) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key("before").c_str(), "old", 0));
    ASSERT_TRUE(rsdb_test::restart_redis(stack()));

    auto t0 = std::chrono::steady_clock::now();
    bool recovered = rsdb_test::wait_for(
        [&] {
            if (rsdb_redis_set(r.get(), key("after").c_str(), "new", 0) != RSDB_OK) return false;
            OutString v;
            return rsdb_redis_get(r.get(), key("after").c_str(), v.out()) == RSDB_OK && v.str() == "new";
        },
        5000ms, 100ms);
    ASSERT_TRUE(recovered) << "no successful SET/GET within 5 s of the restart; last error: " << last_error();
    EXPECT_LT(ms_since(t0), 6000.0);
    // The server really restarted: it was started without persistence.
    OutString old;
    ASSERT_RSDB_OK(rsdb_redis_get(r.get(), key("before").c_str(), old.out()));
    EXPECT_TRUE(old.is_null());
}

TEST_F(RedisRestart, ASubscriptionMadeBeforeARestartReceivesMessagesAfterIt) {
    RedisPtr sub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&sub));
    Inbox inbox;
    uint64_t id = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(sub.get(), key("stream.*").c_str(), &Inbox::callback, &inbox, &id));
    {
        RedisPtr pub;
        ASSERT_NO_FATAL_FAILURE(open_redis(&pub));
        ASSERT_RSDB_OK(rsdb_redis_publish(pub.get(), key("stream.started").c_str(), "before", nullptr));
        ASSERT_TRUE(inbox.wait_for_payload("before", 5s));
    }
    ASSERT_TRUE(rsdb_test::restart_redis(stack()));

    // Messages published before the subscriber has reconnected are lost (Redis pub/sub has no
    // backlog), so keep publishing until one arrives.
    RedisPtr pub;
    ASSERT_NO_FATAL_FAILURE(open_redis(&pub));
    bool delivered = false;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (int i = 0; !delivered && std::chrono::steady_clock::now() < deadline; ++i) {
        const std::string payload = "after-" + std::to_string(i);
        rsdb_redis_publish(pub.get(), key("stream.started").c_str(), payload.c_str(), nullptr);
        delivered = inbox.wait_for_payload(payload, 200ms);
    }
    EXPECT_TRUE(delivered) << "the subscription was not renewed within 10 s of the restart";
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(sub.get(), id));
}

// ================================================================ bad input

TEST_F(BadInput, NullHandlesAreRejectedWithAMessage) {
    char* s = nullptr;
    uint64_t u = 0;
    int i = 0;
    int64_t n = 0;
    double d = 0;
    rsdb_pool_stats stats{};
    rsdb_db* db = nullptr;
    rsdb_tx* tx = nullptr;
    rsdb_redis* r = nullptr;
    EXPECT_TRUE(Fails(rsdb_config_set(nullptr, "pool_size", "1"), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_db_open(nullptr, &db), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_redis_open(nullptr, &r), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_db_migrate(nullptr, &i), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_db_execute(nullptr, "SELECT 1", nullptr, &u), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_db_query(nullptr, "SELECT 1", nullptr, &s), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_db_pool_stats(nullptr, &stats), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_db_health(nullptr, &s), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_db_begin(nullptr, &tx), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_tx_execute(nullptr, "SELECT 1", nullptr, &u), RSDB_ERR_NULL, "tx"));
    EXPECT_TRUE(Fails(rsdb_tx_query(nullptr, "SELECT 1", nullptr, &s), RSDB_ERR_NULL, "tx"));
    EXPECT_TRUE(Fails(rsdb_tx_commit(nullptr), RSDB_ERR_NULL, "tx"));
    EXPECT_TRUE(Fails(rsdb_tx_rollback(nullptr), RSDB_ERR_NULL, "tx"));
    EXPECT_TRUE(Fails(rsdb_redis_ping(nullptr, &d), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_set(nullptr, "k", "v", 0), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_get(nullptr, "k", &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_del(nullptr, "k", &i), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_expire(nullptr, "k", 10, &i), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_ttl(nullptr, "k", &n), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_incr(nullptr, "k", 1, &n), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_hset(nullptr, "k", "f", "v"), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_hget(nullptr, "k", "f", &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_hgetall(nullptr, "k", &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_hdel(nullptr, "k", "f", &i), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_push(nullptr, "k", "v", 1, &n), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_pop(nullptr, "k", 1, &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_lrange(nullptr, "k", 0, -1, &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_publish(nullptr, "c", "m", &n), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_subscribe(nullptr, "c.*", &Inbox::callback, nullptr, &u), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_unsubscribe(nullptr, 1), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(nullptr, "[]", &s), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_redis_command(nullptr, R"(["PING"])", &s), RSDB_ERR_NULL, "redis"));
    EXPECT_EQ(s, nullptr);
    EXPECT_EQ(db, nullptr);
    EXPECT_EQ(tx, nullptr);
    EXPECT_EQ(r, nullptr);
}

TEST_F(BadInput, NullStringsAndCallbacksAreRejectedWithAMessage) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(&cfg));
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    OutString s;
    uint64_t id = 0;
    EXPECT_TRUE(Fails(rsdb_config_set(cfg.get(), nullptr, "1"), RSDB_ERR_NULL, "key"));
    EXPECT_TRUE(Fails(rsdb_config_set(cfg.get(), "pool_size", nullptr), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_db_execute(db.get(), nullptr, nullptr, nullptr), RSDB_ERR_NULL, "sql"));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), nullptr, nullptr, s.out()), RSDB_ERR_NULL, "sql"));
    EXPECT_TRUE(Fails(rsdb_tx_execute(tx.get(), nullptr, nullptr, nullptr), RSDB_ERR_NULL, "sql"));
    EXPECT_TRUE(Fails(rsdb_tx_query(tx.get(), nullptr, nullptr, s.out()), RSDB_ERR_NULL, "sql"));
    EXPECT_TRUE(Fails(rsdb_redis_set(r.get(), nullptr, "v", 0), RSDB_ERR_NULL, "key"));
    EXPECT_TRUE(Fails(rsdb_redis_set(r.get(), key("k").c_str(), nullptr, 0), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_get(r.get(), nullptr, s.out()), RSDB_ERR_NULL, "key"));
    EXPECT_TRUE(Fails(rsdb_redis_hset(r.get(), key("h").c_str(), nullptr, "v"), RSDB_ERR_NULL, "field"));
    EXPECT_TRUE(Fails(rsdb_redis_push(r.get(), key("l").c_str(), nullptr, 1, nullptr), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_publish(r.get(), nullptr, "m", nullptr), RSDB_ERR_NULL, "channel"));
    EXPECT_TRUE(Fails(rsdb_redis_publish(r.get(), key("c").c_str(), nullptr, nullptr), RSDB_ERR_NULL, "message"));
    EXPECT_TRUE(Fails(rsdb_redis_subscribe(r.get(), nullptr, &Inbox::callback, nullptr, &id), RSDB_ERR_NULL, "pattern"));
    EXPECT_TRUE(Fails(rsdb_redis_subscribe(r.get(), key("c.*").c_str(), nullptr, nullptr, &id), RSDB_ERR_NULL, "callback"));
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), nullptr, s.out()), RSDB_ERR_NULL, "commands_json"));
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), nullptr, s.out()), RSDB_ERR_NULL, "args_json"));
    // Nothing was stored by the refused calls.
    EXPECT_EQ(redis_get(r, key("k")), "");
    ASSERT_RSDB_OK(rsdb_tx_commit(tx.get()));
}

TEST_F(BadInput, NullOutPointersAreRejectedWithAMessage) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(&cfg));
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    EXPECT_TRUE(Fails(rsdb_config_new(nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_config_from_env(nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_db_open(cfg.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_redis_open(cfg.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT 1", nullptr, nullptr), RSDB_ERR_NULL, "rows_json"));
    EXPECT_TRUE(Fails(rsdb_db_pool_stats(db.get(), nullptr), RSDB_ERR_NULL, "stats"));
    EXPECT_TRUE(Fails(rsdb_db_health(db.get(), nullptr), RSDB_ERR_NULL, "health_json"));
    EXPECT_TRUE(Fails(rsdb_db_begin(db.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_tx_query(tx.get(), "SELECT 1", nullptr, nullptr), RSDB_ERR_NULL, "rows_json"));
    EXPECT_TRUE(Fails(rsdb_redis_get(r.get(), key("k").c_str(), nullptr), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_ttl(r.get(), key("k").c_str(), nullptr), RSDB_ERR_NULL, "ttl_ms"));
    EXPECT_TRUE(Fails(rsdb_redis_hget(r.get(), key("k").c_str(), "f", nullptr), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_hgetall(r.get(), key("k").c_str(), nullptr), RSDB_ERR_NULL, "json"));
    EXPECT_TRUE(Fails(rsdb_redis_pop(r.get(), key("k").c_str(), 1, nullptr), RSDB_ERR_NULL, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_lrange(r.get(), key("k").c_str(), 0, -1, nullptr), RSDB_ERR_NULL, "json"));
    EXPECT_TRUE(Fails(rsdb_redis_subscribe(r.get(), key("c.*").c_str(), &Inbox::callback, nullptr, nullptr),
                      RSDB_ERR_NULL, "subscription_id"));
    EXPECT_TRUE(Fails(rsdb_redis_exec_atomic(r.get(), "[]", nullptr), RSDB_ERR_NULL, "replies_json"));
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), R"(["PING"])", nullptr), RSDB_ERR_NULL, "reply_json"));
    // The handles still work after all that.
    EXPECT_EQ(query(db.get(), "SELECT 1 AS one").rows, json::parse(R"([{"one":1}])"));
    EXPECT_RSDB_OK(rsdb_redis_ping(r.get(), nullptr));
}

TEST_F(BadInput, InvalidUtf8IsRejectedInEveryPoolAndRedisStringArgument) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(&cfg));
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    const std::string bad = "caf\xC3";            // truncated two-byte sequence
    const std::string bad2 = "\xFF\xFEzz";        // bytes that never occur in UTF-8
    const std::string bad_sql = "SELECT '" + bad2 + "' AS v";
    const std::string bad_params = "[\"" + bad + "\"]";
    OutString s;
    EXPECT_TRUE(Fails(rsdb_config_set(cfg.get(), bad.c_str(), "1"), RSDB_ERR_INVALID_UTF8, "key"));
    EXPECT_TRUE(Fails(rsdb_config_set(cfg.get(), "instance_id", bad2.c_str()), RSDB_ERR_INVALID_UTF8, "value"));
    EXPECT_TRUE(Fails(rsdb_db_execute(db.get(), bad_sql.c_str(), nullptr, nullptr), RSDB_ERR_INVALID_UTF8, "sql"));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), bad_sql.c_str(), nullptr, s.out()), RSDB_ERR_INVALID_UTF8, "sql"));
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::text AS v", bad_params.c_str(), s.out()),
                      RSDB_ERR_INVALID_UTF8, "params"));
    EXPECT_TRUE(Fails(rsdb_tx_execute(tx.get(), bad_sql.c_str(), nullptr, nullptr), RSDB_ERR_INVALID_UTF8, "sql"));
    EXPECT_TRUE(Fails(rsdb_tx_query(tx.get(), "SELECT $1::text AS v", bad_params.c_str(), s.out()),
                      RSDB_ERR_INVALID_UTF8, "params"));
    EXPECT_TRUE(Fails(rsdb_redis_set(r.get(), (key("k") + bad).c_str(), "v", 0), RSDB_ERR_INVALID_UTF8, "key"));
    EXPECT_TRUE(Fails(rsdb_redis_set(r.get(), key("k").c_str(), bad.c_str(), 0), RSDB_ERR_INVALID_UTF8, "value"));
    EXPECT_TRUE(Fails(rsdb_redis_get(r.get(), (key("k") + bad2).c_str(), s.out()), RSDB_ERR_INVALID_UTF8, "key"));
    EXPECT_TRUE(Fails(rsdb_redis_hset(r.get(), key("h").c_str(), bad.c_str(), "v"), RSDB_ERR_INVALID_UTF8, "field"));
    EXPECT_TRUE(Fails(rsdb_redis_publish(r.get(), key("c").c_str(), bad.c_str(), nullptr), RSDB_ERR_INVALID_UTF8,
                      "message"));
    EXPECT_TRUE(Fails(rsdb_redis_command(r.get(), ("[\"SET\",\"" + key("k") + "\",\"" + bad + "\"]").c_str(), s.out()),
                      RSDB_ERR_INVALID_UTF8, "args_json"));
    // The transaction saw no statement fail on the server, so it can still commit.
    EXPECT_RSDB_OK(rsdb_tx_commit(tx.get()));
    EXPECT_EQ(redis_get(r, key("k")), "");
}

TEST_F(BadInput, ASyntaxErrorIsAQueryErrorWithTheSqlstate) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    EXPECT_TRUE(Fails(rsdb_db_execute(db.get(), "SELEC 1", nullptr, nullptr), RSDB_ERR_QUERY, "SQLSTATE 42601"));
    OutString s;
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT FROM WHERE", nullptr, s.out()), RSDB_ERR_QUERY, "42601"));
    EXPECT_TRUE(s.is_null());
    EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT * FROM missing_table", nullptr, s.out()), RSDB_ERR_QUERY, "42P01"));
}

TEST_F(BadInput, MalformedParamsJsonIsAJsonError) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_db(&db));
    OutString s;
    for (const char* params : {"[1,", "{\"a\":1}", "42", "\"text\"", "[1] trailing", "nul"}) {
        EXPECT_TRUE(Fails(rsdb_db_query(db.get(), "SELECT $1::int4 AS v", params, s.out()), RSDB_ERR_JSON))
            << "params: " << params;
        EXPECT_TRUE(Fails(rsdb_db_execute(db.get(), "SELECT $1::int4", params, nullptr), RSDB_ERR_JSON))
            << "params: " << params;
    }
}

// ================================================================ SQL injection

namespace {
const std::vector<std::string> kHostileStrings = {
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE students;--",
    "' OR '1'='1",
    "$1",
    "$1; DELETE FROM users WHERE $2 = $2",
    "back\\slash \\' \\\\ \\x41 \\n",
    "quotes ' '' \" \"\" ` ´",
    "E'\\x27; DROP TABLE users; --'",
    "\"]}, {\"injected\": true}, [\"",
    "percent % underscore _ star *",
    "ünïcødé Grüße 日本語 🎮 \u202e",
    "line1\nline2\r\n\ttab",
    "-- just a comment",
    "/* comment */ SELECT pg_sleep(10)",
};
}  // namespace

TEST_F(SqlInjection, HostileStringsInsideATransactionAreStoredVerbatim) {
    DbPtr db;
    ASSERT_NO_FATAL_FAILURE(open_migrated_db(&db));
    TxPtr tx;
    ASSERT_NO_FATAL_FAILURE(begin(db, &tx));
    for (size_t i = 0; i < kHostileStrings.size(); ++i) {
        ASSERT_RSDB_OK(tx_execute(tx.get(),
                                  "INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload)"
                                  " VALUES ('test', $1, $2, $3, $4)",
                                  json::array({kHostileStrings[i], static_cast<int64_t>(i), kHostileStrings[i],
                                               json{{"text", kHostileStrings[i]}}})));
    }
    ASSERT_RSDB_OK(rsdb_tx_commit(tx.get()));
    Rows back = query(db.get(), "SELECT aggregate_id, event_type, payload FROM event_log ORDER BY version");
    ASSERT_EQ(back.rc, RSDB_OK) << back.error;
    ASSERT_EQ(back.rows.size(), kHostileStrings.size());
    for (size_t i = 0; i < kHostileStrings.size(); ++i) {
        EXPECT_EQ(back.rows[i].at("aggregate_id"), kHostileStrings[i]);
        EXPECT_EQ(back.rows[i].at("event_type"), kHostileStrings[i]);
        EXPECT_EQ(back.rows[i].at("payload").at("text"), kHostileStrings[i]);
    }
}

TEST_F(SqlInjection, HostileStringsAreOrdinaryRedisKeysAndValues) {
    RedisPtr r;
    ASSERT_NO_FATAL_FAILURE(open_redis(&r));
    for (size_t i = 0; i < kHostileStrings.size(); ++i) {
        const std::string& s = kHostileStrings[i];
        ASSERT_RSDB_OK(rsdb_redis_set(r.get(), key(s).c_str(), s.c_str(), 0));
        EXPECT_EQ(redis_get(r, key(s)), s);
        ASSERT_RSDB_OK(rsdb_redis_hset(r.get(), key("h").c_str(), s.c_str(), s.c_str()));
    }
    OutString all;
    ASSERT_RSDB_OK(rsdb_redis_hgetall(r.get(), key("h").c_str(), all.out()));
    json h = all.parse();
    EXPECT_EQ(h.size(), kHostileStrings.size());
    for (const auto& s : kHostileStrings) EXPECT_EQ(h.value(s, std::string("<missing>")), s);
}

// ================================================================ servers down

TEST_F(ServerDown, OpeningADatabaseOnAClosedPortFailsQuickly) {
    const int port = rsdb_test::unused_tcp_port();
    ASSERT_GT(port, 0);
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(&cfg, {{"connect_timeout_ms", "1000"},
                                               {"database_url", "postgresql://postgres@127.0.0.1:" +
                                                                    std::to_string(port) + "/postgres"}}));
    rsdb_db* db = nullptr;
    auto t0 = std::chrono::steady_clock::now();
    int rc = rsdb_db_open(cfg.get(), &db);
    double took = ms_since(t0);
    const std::string msg = last_error();
    EXPECT_TRUE(rc == RSDB_ERR_CONNECTION || rc == RSDB_ERR_TIMEOUT) << rc << ": " << msg;
    EXPECT_NE(msg, "<no error>");
    EXPECT_EQ(db, nullptr);
    rsdb_db_close(db);
    EXPECT_LT(took, 10000.0);
}

TEST_F(ServerDown, OpeningRedisOnAClosedPortFailsQuickly) {
    const int port = rsdb_test::unused_tcp_port();
    ASSERT_GT(port, 0);
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(
        &cfg, {{"redis_timeout_ms", "1000"}, {"redis_url", "redis://127.0.0.1:" + std::to_string(port) + "/"}}));
    rsdb_redis* r = nullptr;
    auto t0 = std::chrono::steady_clock::now();
    int rc = rsdb_redis_open(cfg.get(), &r);
    double took = ms_since(t0);
    const std::string msg = last_error();
    EXPECT_TRUE(rc == RSDB_ERR_CONNECTION || rc == RSDB_ERR_TIMEOUT) << rc << ": " << msg;
    EXPECT_NE(msg, "<no error>");
    EXPECT_EQ(r, nullptr);
    rsdb_redis_close(r);
    EXPECT_LT(took, 10000.0);
}
