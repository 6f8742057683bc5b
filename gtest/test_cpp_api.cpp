// The C++ API (rootstream::Config, database::DatabaseManager / Transaction,
// cache::RedisClient, rootstream::Error) against real PostgreSQL and Redis servers.
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::Error;
using rootstream::cache::RedisClient;
using rootstream::database::DatabaseManager;
using rootstream::database::Transaction;

using namespace rsdb_test::cppapi;

namespace {

using Settings = std::vector<std::pair<std::string, std::string>>;


double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// Collects messages from a RedisClient::MessageHandler.
class Inbox {
public:
    struct Message {
        std::string channel;
        std::string payload;
    };

    RedisClient::MessageHandler handler() {
        return [this](const std::string& channel, const std::string& payload) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                messages_.push_back({channel, payload});
            }
            cv_.notify_all();
        };
    }

    bool wait_for_payload(const std::string& payload, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] {
            return std::any_of(messages_.begin(), messages_.end(), [&](const Message& m) { return m.payload == payload; });
        });
    }

    std::vector<Message> snapshot() {
        std::lock_guard<std::mutex> lock(mutex_);
        return messages_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<Message> messages_;
};

class CppApiTest : public rsdb_test::StackTest {
protected:
    /// This test's database and the stack's Redis, plus `extra`.
    Config config(const Settings& extra = {}) const {
        Config c;
        c.set("database_url", db_url()).set("redis_url", redis_url());
        for (const auto& [k, v] : extra) c.set(k, v);
        return c;
    }

    std::unique_ptr<DatabaseManager> open_db(const Settings& extra = {}) const {
        return std::make_unique<DatabaseManager>(config(extra));
    }

    std::unique_ptr<DatabaseManager> open_migrated_db(const Settings& extra = {}) const {
        auto db = open_db(extra);
        db->migrate();
        return db;
    }

    std::unique_ptr<RedisClient> open_redis(const Settings& extra = {}) const {
        return std::make_unique<RedisClient>(config(extra));
    }

    static void create_items_table(DatabaseManager& db) {
        db.execute("CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty INT)");
    }

    static std::int64_t count_rows(DatabaseManager& db, const std::string& table) {
        return db.query("SELECT count(*) AS n FROM " + table).at(0).at("n").get<std::int64_t>();
    }
};

using Database = CppApiTest;
using Transactions = CppApiTest;
using Migrations = CppApiTest;
using Redis = CppApiTest;
using PubSub = CppApiTest;
using RedisRestart = CppApiTest;
using BadInput = CppApiTest;
using ServerDown = CppApiTest;
using ConfigFromEnv = CppApiTest;
using CppDatabase = CppApiTest;
using CppRedis = CppApiTest;

}  // namespace

// ================================================================ the environment itself

TEST(StackEnvironment, IsProvidedToTheCppSuiteByTheStackScript) {
    std::string why;
    auto stack = rsdb_test::read_stack(&why);
    ASSERT_TRUE(stack.has_value()) << why;
    EXPECT_GT(stack->pg_port, 0);
    EXPECT_GT(stack->redis_port, 0);
}

// ================================================================ the face contract

// The C++ face of the pool: every PoolStats member arrives typed, a Transaction holds a
// connection until it is destroyed, a statement's counts and rows come back, and an exhausted
// pool is thrown as rootstream::Timeout. Behaviour is specified in tests/database.rs.
TEST_F(CppDatabase, PoolStatsTransactionsAndAPoolTimeoutArriveThroughTheCppApi) {
    auto db = open_db({{"pool_size", "2"}, {"acquire_timeout_ms", "300"}});
    create_items_table(*db);
    const auto idle = db->pool_stats();
    EXPECT_EQ(idle.max_size, 2u);
    EXPECT_GE(idle.size, 1u);
    EXPECT_EQ(idle.available, idle.size);
    EXPECT_EQ(idle.in_use, 0u);
    EXPECT_EQ(idle.waiting, 0u);
    {
        Transaction tx = db->begin();
        EXPECT_TRUE(tx.is_open());
        EXPECT_EQ(tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", json::array({"w", 2})), 1u);
        EXPECT_EQ(tx.query("SELECT qty FROM items").at(0).at("qty"), 2);
        const auto busy = db->pool_stats();
        EXPECT_EQ(busy.in_use, 1u);
        EXPECT_EQ(busy.size, busy.available + busy.in_use);
        Transaction second = db->begin();
        EXPECT_EQ(db->pool_stats().in_use, 2u);
        EXPECT_THROW(db->begin(), rootstream::Timeout);
        EXPECT_TRUE(ThrowsCode([&] { db->begin(); }, RSDB_ERR_TIMEOUT, "pool"));
        tx.commit();
        EXPECT_FALSE(tx.is_open());
    }
    EXPECT_EQ(db->pool_stats().in_use, 0u) << "destroyed transactions give their connections back";
    EXPECT_EQ(count_rows(*db, "items"), 1);
    // A mebibyte of text crosses the bridge both ways.
    const std::string mib(1 << 20, 'y');
    EXPECT_EQ(db->query("SELECT $1::text AS v", json::array({mib})).at(0).at("v"), mib);
}

// The C++ face of the Redis client: std::chrono TTLs, JSON batches and replies, unsubscribe,
// PubSubStats typed, errors by subclass. Behaviour is specified in tests/redis.rs.
TEST_F(CppRedis, TtlsAtomicBatchesAndUnsubscribeArriveThroughTheCppApi) {
    auto r = open_redis();
    r->set(key("session"), "token", 150ms);
    EXPECT_EQ(r->get(key("session")), std::optional<std::string>("token"));
    const auto ttl = r->ttl_ms(key("session"));
    EXPECT_GT(ttl, 0);
    EXPECT_LE(ttl, 150);
    EXPECT_EQ(r->ttl_ms(key("never-set")), -2);

    json replies = r->exec_atomic(json::array({json::array({"SET", key("a"), "5"}), json::array({"INCRBY", key("a"), 10}),
                                                json::array({"GET", key("a")})}));
    EXPECT_EQ(replies, json({"OK", 15, "15"}));
    EXPECT_EQ(r->exec_atomic(json::array()), json::array());
    EXPECT_THROW(r->exec_atomic(json::array({json::array({"MULTI"})})), rootstream::InvalidArgument);
    EXPECT_TRUE(ThrowsCode([&] { r->exec_atomic(json::object({{"SET", "x"}})); }, RSDB_ERR_JSON));

    auto pub = open_redis();
    Inbox inbox;
    const auto id = r->subscribe(key("stream.*"), inbox.handler());
    EXPECT_EQ(r->pubsub_stats().subscriptions, 1u);
    pub->publish(key("stream.a"), "one");
    ASSERT_TRUE(inbox.wait_for_payload("one", 5s));
    const auto stats = r->pubsub_stats();
    EXPECT_TRUE(stats.connected);
    EXPECT_GE(stats.received, 1u);
    EXPECT_EQ(stats.to_json().at("subscriptions"), 1);
    EXPECT_EQ(stats.to_json().at("received"), stats.received);
    r->unsubscribe(id);
    EXPECT_EQ(r->pubsub_stats().subscriptions, 0u);
    EXPECT_THROW(r->unsubscribe(id), rootstream::NotFound);
}

// ================================================================ configuration

TEST(Config, SetChainsAndAnUnknownKeyThrowsAConfigError) {
    Config c;
    c.set("pool_size", "3").set("acquire_timeout_ms", "250").set("redis_timeout_ms", "900");
    EXPECT_NE(c.describe().find("pool_size: 3"), std::string::npos) << c.describe();
    EXPECT_TRUE(ThrowsCode([&] { c.set("no_such_key", "1"); }, RSDB_ERR_CONFIG, "no_such_key"));
}

TEST(Config, LoadFileAppliesKeyValueLinesAndThrowsNamingTheLineAtFault) {
    const std::string path = ::testing::TempDir() + "rsdb-cpp-config-" + std::to_string(::getpid());
    {
        FILE* f = std::fopen(path.c_str(), "w");
        ASSERT_NE(f, nullptr);
        std::fputs("# repository settings\npool_size = 11\nROOTSTREAM_MFA_ISSUER = \"Example Co\"\n", f);
        std::fclose(f);
    }
    Config c;
    c.load_file(path);
    EXPECT_NE(c.describe().find("pool_size: 11"), std::string::npos) << c.describe();
    EXPECT_NE(c.describe().find("Example Co"), std::string::npos) << c.describe();
    {
        FILE* f = std::fopen(path.c_str(), "w");
        ASSERT_NE(f, nullptr);
        std::fputs("pool_size = 0\n", f);
        std::fclose(f);
    }
    EXPECT_TRUE(ThrowsCode([&] { c.load_file(path); }, RSDB_ERR_CONFIG, path + ":1"));
    EXPECT_TRUE(ThrowsCode([&] { c.load_file("/nonexistent/rsdb.conf"); }, RSDB_ERR_CONFIG, "/nonexistent"));
    std::remove(path.c_str());
}

TEST(Config, MalformedValuesThrowConfigErrorsNamingTheKey) {
    Config c;
    EXPECT_TRUE(ThrowsCode([&] { c.set("pool_size", "0"); }, RSDB_ERR_CONFIG, "pool_size"));
    EXPECT_TRUE(ThrowsCode([&] { c.set("query_timeout_ms", "soon"); }, RSDB_ERR_CONFIG, "query_timeout_ms"));
    EXPECT_TRUE(ThrowsCode([&] { c.set("master_key", "xyz"); }, RSDB_ERR_CONFIG, "master_key"));
    // A failed set leaves the previous value in place.
    c.set("pool_size", "9");
    EXPECT_THROW(c.set("pool_size", "-1"), Error);
    EXPECT_NE(c.describe().find("pool_size: 9"), std::string::npos) << c.describe();
}

TEST(Config, DescribeMasksPasswordsAndSecrets) {
    Config c;
    c.set("database_url", "postgresql://app:hunter2@db.example:5432/rootstream")
        .set("redis_url", "redis://:s3cret@cache.example:6379/0")
        .set("influx_token", "tok-very-secret")
        .set("master_key", std::string(64, 'c'));
    const std::string d = c.describe();
    EXPECT_EQ(d.find("hunter2"), std::string::npos) << d;
    EXPECT_EQ(d.find("s3cret"), std::string::npos) << d;
    EXPECT_EQ(d.find("tok-very-secret"), std::string::npos) << d;
    EXPECT_EQ(d.find(std::string(64, 'c')), std::string::npos) << d;
    EXPECT_NE(d.find("db.example"), std::string::npos) << d;
}

TEST(Config, AManagerWithoutADatabaseUrlThrowsAConfigError) {
    Config c;
    EXPECT_TRUE(ThrowsCode([&] { DatabaseManager db(c); }, RSDB_ERR_CONFIG, "database_url"));
    EXPECT_TRUE(ThrowsCode([&] { RedisClient r(c); }, RSDB_ERR_CONFIG, "redis_url"));
}

TEST_F(ConfigFromEnv, ConfigFromEnvFeedsTheCppManagerAndClient) {
    rsdb_test::ScopedEnv url("ROOTSTREAM_DATABASE_URL", db_url());
    rsdb_test::ScopedEnv pool("ROOTSTREAM_POOL_SIZE", "6");
    Config c = Config::from_env();
    DatabaseManager db(c);
    EXPECT_EQ(db.pool_stats().max_size, 6u);
    EXPECT_EQ(db.query("SELECT current_database() AS name").at(0).at("name"), db_name());
    RedisClient r(c);
    EXPECT_GE(r.ping().count(), 0);
}

TEST_F(ConfigFromEnv, ABadVariableThrowsAConfigErrorNamingTheVariable) {
    rsdb_test::ScopedEnv timeout("ROOTSTREAM_ACQUIRE_TIMEOUT_MS", "a while");
    EXPECT_TRUE(ThrowsCode([] { Config::from_env(); }, RSDB_ERR_CONFIG, "ROOTSTREAM_ACQUIRE_TIMEOUT_MS"));
}

// ================================================================ database

TEST_F(Database, ConnectsToItsOwnDatabaseAndReportsHealth) {
    auto db = open_db({{"pool_size", "4"}});
    const auto h = db->health_check();
    EXPECT_EQ(h.database, db_name());
    EXPECT_FALSE(h.in_recovery);
    EXPECT_EQ(h.server_version.rfind("15", 0), 0u) << h.server_version;
    EXPECT_GE(h.latency_ms, 0.0);
    EXPECT_EQ(h.pool.max_size, 4u);
    const json j = h.to_json();
    EXPECT_EQ(j.at("database"), db_name());
    EXPECT_EQ(j.at("in_recovery"), false);
    EXPECT_EQ(j.at("server_version"), h.server_version);
    EXPECT_EQ(j.at("latency_ms"), h.latency_ms);
    EXPECT_EQ(j.at("pool").at("max_size"), 4);
    EXPECT_EQ(j.at("pool").size(), 5u);
}

TEST_F(Database, MigrateReturnsTheVersionAndIsIdempotent) {
    auto db = open_db();
    const int v = db->migrate();
    EXPECT_GE(v, 1);
    const json before = db->query("SELECT version, checksum, applied_at FROM rsdb_schema_migrations ORDER BY version");
    EXPECT_EQ(db->migrate(), v);
    EXPECT_EQ(db->query("SELECT version, checksum, applied_at FROM rsdb_schema_migrations ORDER BY version"), before);
    EXPECT_EQ(before.size(), static_cast<size_t>(v));
    json t = db->query("SELECT to_regclass('public.users') IS NOT NULL AS users,"
                       " to_regclass('public.streams') IS NOT NULL AS streams,"
                       " to_regclass('public.event_log') IS NOT NULL AS event_log");
    EXPECT_EQ(t.at(0), json({{"users", true}, {"streams", true}, {"event_log", true}}));
}

TEST_F(Database, ExecuteAndQueryBindJsonParameters) {
    auto db = open_db();
    create_items_table(*db);
    EXPECT_EQ(db->execute("INSERT INTO items (name, qty) VALUES ($1, $2), ($3, $4)", json::array({"a", 1, "b", nullptr})), 2u);
    EXPECT_EQ(db->execute("UPDATE items SET qty = $1 WHERE qty IS NULL", json::array({7})), 1u);
    EXPECT_EQ(db->query("SELECT name, qty FROM items ORDER BY name"),
              json::parse(R"([{"name":"a","qty":1},{"name":"b","qty":7}])"));
    const json doc = {{"k", {1, "two", nullptr}}};
    json row = db->query("SELECT $1::int8 AS big, $2::bool AS b, $3::jsonb AS j, $4::timestamptz AS ts, $5::text AS n",
                         json::array({INT64_C(-9007199254740993), false, doc, "2030-06-01T00:00:00Z", nullptr}))
                   .at(0);
    EXPECT_EQ(row.at("big").get<std::int64_t>(), INT64_C(-9007199254740993));
    EXPECT_EQ(row.at("b"), false);
    EXPECT_EQ(row.at("j"), doc);
    EXPECT_EQ(row.at("ts"), "2030-06-01T00:00:00.000000Z");
    EXPECT_TRUE(row.at("n").is_null());
    EXPECT_EQ(db->query("SELECT name FROM items WHERE qty > 100"), json::array());
}

TEST_F(Database, NullParamsMeanNoParametersAndOtherNonArraysAreJsonErrors) {
    auto db = open_db();
    EXPECT_EQ(db->query("SELECT 2 AS two", json(nullptr)), json::parse(R"([{"two":2}])"));
    EXPECT_TRUE(ThrowsCode([&] { db->query("SELECT $1::int4 AS v", json({{"v", 1}})); }, RSDB_ERR_JSON));
    EXPECT_TRUE(ThrowsCode([&] { db->execute("SELECT $1::int4", json(5)); }, RSDB_ERR_JSON));
}

TEST_F(Database, AClosedManagerRefusesNewWorkWithAStateError) {
    auto db = open_db();
    db->close();
    EXPECT_TRUE(ThrowsCode([&] { db->query("SELECT 1 AS one"); }, RSDB_ERR_STATE, "closed"));
    EXPECT_TRUE(ThrowsCode([&] { db->begin(); }, RSDB_ERR_STATE, "closed"));
}

TEST_F(Database, ASyntaxErrorThrowsAQueryErrorWithTheSqlstate) {
    auto db = open_db();
    EXPECT_TRUE(ThrowsCode([&] { db->execute("SELEC 1"); }, RSDB_ERR_QUERY, "SQLSTATE 42601"));
    EXPECT_TRUE(ThrowsCode([&] { db->query("SELECT * FROM nowhere"); }, RSDB_ERR_QUERY, "42P01"));
}

TEST_F(Database, ADuplicateUniqueValueThrowsAConflict) {
    auto db = open_db();
    create_items_table(*db);
    db->execute("INSERT INTO items (name) VALUES ($1)", json::array({"one"}));
    EXPECT_TRUE(ThrowsCode([&] { db->execute("INSERT INTO items (name) VALUES ($1)", json::array({"one"})); },
                           RSDB_ERR_CONFLICT, "23505"));
    EXPECT_EQ(count_rows(*db, "items"), 1);
}

// ================================================================ errors by kind

TEST(Errors, EveryCodeIsThrownAsTheSubclassOfItsKindAndKeepsItsCode) {
    using namespace rootstream;
    auto kind_of = [](int code) -> std::string {
        try {
            Error::raise(code, "boom");
        } catch (const MfaRequired& e) {
            EXPECT_EQ(e.code(), code);
            return "MfaRequired";
        } catch (const Locked& e) {
            EXPECT_EQ(e.code(), code);
            return "Locked";
        } catch (const AuthError& e) {
            EXPECT_EQ(e.code(), code);
            return "AuthError";
        } catch (const InvalidArgument& e) {
            EXPECT_EQ(e.code(), code);
            return "InvalidArgument";
        } catch (const ConfigError& e) {
            EXPECT_EQ(e.code(), code);
            return "ConfigError";
        } catch (const FailoverError& e) {
            EXPECT_EQ(e.code(), code);
            return "FailoverError";
        } catch (const ConnectionError& e) {
            EXPECT_EQ(e.code(), code);
            return "ConnectionError";
        } catch (const Timeout& e) {
            EXPECT_EQ(e.code(), code);
            return "Timeout";
        } catch (const QueryError& e) {
            EXPECT_EQ(e.code(), code);
            return "QueryError";
        } catch (const Conflict& e) {
            EXPECT_EQ(e.code(), code);
            return "Conflict";
        } catch (const NotFound& e) {
            EXPECT_EQ(e.code(), code);
            return "NotFound";
        } catch (const FencedError& e) {
            EXPECT_EQ(e.code(), code);
            return "FencedError";
        } catch (const NoCandidateError& e) {
            EXPECT_EQ(e.code(), code);
            return "NoCandidateError";
        } catch (const StateError& e) {
            EXPECT_EQ(e.code(), code);
            return "StateError";
        } catch (const IntegrityError& e) {
            EXPECT_EQ(e.code(), code);
            return "IntegrityError";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), code);
            EXPECT_STREQ(e.what(), "boom");
            return "Error";
        }
        return "nothing";
    };
    EXPECT_EQ(kind_of(RSDB_ERR_NULL), "InvalidArgument");
    EXPECT_EQ(kind_of(RSDB_ERR_INVALID_UTF8), "InvalidArgument");
    EXPECT_EQ(kind_of(RSDB_ERR_INVALID_ARGUMENT), "InvalidArgument");
    EXPECT_EQ(kind_of(RSDB_ERR_JSON), "InvalidArgument");
    EXPECT_EQ(kind_of(RSDB_ERR_CONFIG), "ConfigError");
    EXPECT_EQ(kind_of(RSDB_ERR_CONNECTION), "ConnectionError");
    EXPECT_EQ(kind_of(RSDB_ERR_TIMEOUT), "Timeout");
    EXPECT_EQ(kind_of(RSDB_ERR_QUERY), "QueryError");
    EXPECT_EQ(kind_of(RSDB_ERR_CONFLICT), "Conflict");
    EXPECT_EQ(kind_of(RSDB_ERR_NOT_FOUND), "NotFound");
    EXPECT_EQ(kind_of(RSDB_ERR_STATE), "StateError");
    EXPECT_EQ(kind_of(RSDB_ERR_AUTH), "AuthError");
    EXPECT_EQ(kind_of(RSDB_ERR_MFA_REQUIRED), "MfaRequired");
    EXPECT_EQ(kind_of(RSDB_ERR_LOCKED), "Locked");
    EXPECT_EQ(kind_of(RSDB_ERR_INTEGRITY), "IntegrityError");
    EXPECT_EQ(kind_of(RSDB_ERR_FAILOVER), "FailoverError");
    EXPECT_EQ(kind_of(RSDB_ERR_FENCED), "FencedError");
    EXPECT_EQ(kind_of(RSDB_ERR_NO_CANDIDATE), "NoCandidateError");
    EXPECT_EQ(kind_of(RSDB_ERR_MIGRATION), "Error");
    EXPECT_EQ(kind_of(RSDB_ERR_REDIS), "Error");
    EXPECT_EQ(kind_of(RSDB_ERR_IO), "Error");
    EXPECT_EQ(kind_of(RSDB_ERR_INTERNAL), "Error");
}

TEST(Errors, ABridgeMessageWithoutTheCodePrefixIsAnInternalError) {
    try {
        rootstream::Error::raise_from_bridge("something else");
        ADD_FAILURE() << "did not throw";
    } catch (const rootstream::Error& e) {
        EXPECT_EQ(e.code(), RSDB_ERR_INTERNAL);
        EXPECT_STREQ(e.what(), "something else");
    }
    EXPECT_THROW(rootstream::Error::raise_from_bridge("rsdb:-9:no such row"), rootstream::NotFound);
}

TEST_F(Database, CallersCatchErrorsFromTheCoreByKind) {
    auto db = open_migrated_db();
    create_items_table(*db);
    db->execute("INSERT INTO items (name) VALUES ($1)", json::array({"one"}));
    EXPECT_THROW(db->execute("INSERT INTO items (name) VALUES ($1)", json::array({"one"})), rootstream::Conflict);
    EXPECT_THROW(db->execute("SELEC 1"), rootstream::QueryError);
    EXPECT_THROW(rootstream::database::models::User::load_by_id(*db, 987654321), rootstream::NotFound);
    rootstream::database::models::User::create(*db, "kind_user", "kind@example.com", "correct horse battery");
    EXPECT_THROW(rootstream::database::models::User::authenticate(*db, "kind_user", "wrong password"),
                 rootstream::AuthError);
    EXPECT_THROW(db->execute(std::string("SELECT 1 -- \xff\xfe")), rootstream::InvalidArgument);
    Config bad;
    EXPECT_THROW(bad.set("pool_size", "many"), rootstream::ConfigError);
    db->close();
    EXPECT_THROW(db->execute("SELECT 1"), rootstream::StateError);
}

// ================================================================ transactions

TEST_F(Transactions, ATransactionRollsBackWhenItGoesOutOfScopeUncommitted) {
    auto db = open_db();
    create_items_table(*db);
    {
        Transaction tx = db->begin();
        tx.execute("INSERT INTO items (name) VALUES ('ghost')");
    }
    EXPECT_EQ(count_rows(*db, "items"), 0);
    EXPECT_EQ(db->pool_stats().in_use, 0u) << "the connection went back to the pool";
}

TEST_F(Transactions, ATransactionRollsBackWhenTheScopeExitsByException) {
    auto db = open_db();
    create_items_table(*db);
    bool caught = false;
    try {
        Transaction tx = db->begin();
        tx.execute("INSERT INTO items (name) VALUES ('doomed')");
        EXPECT_EQ(tx.query("SELECT count(*) AS n FROM items").at(0).at("n"), 1);
        throw std::runtime_error("the caller gave up");
    } catch (const std::runtime_error& e) {
        caught = std::string(e.what()) == "the caller gave up";
    }
    EXPECT_TRUE(caught);
    EXPECT_EQ(count_rows(*db, "items"), 0);
}

TEST_F(Transactions, TheTransactionHelperCommitsAndReturnsTheResult) {
    auto db = open_db();
    create_items_table(*db);
    std::int64_t id = db->transaction([](Transaction& tx) {
        tx.execute("INSERT INTO items (name, qty) VALUES ('a', 1)");
        return tx.query("INSERT INTO items (name, qty) VALUES ('b', 2) RETURNING id").at(0).at("id").get<std::int64_t>();
    });
    EXPECT_GT(id, 0);
    EXPECT_EQ(count_rows(*db, "items"), 2);
    db->transaction([](Transaction& tx) { tx.execute("UPDATE items SET qty = qty * 10"); });
    EXPECT_EQ(db->query("SELECT sum(qty)::int8 AS s FROM items").at(0).at("s"), 30);
}

TEST_F(Transactions, TheTransactionHelperRollsBackAndRethrowsWhenTheLambdaThrows) {
    auto db = open_db();
    create_items_table(*db);
    struct Abort {};
    EXPECT_THROW(db->transaction([](Transaction& tx) {
        tx.execute("INSERT INTO items (name) VALUES ('x')");
        throw Abort{};
    }),
                 Abort);
    EXPECT_EQ(count_rows(*db, "items"), 0);
    // A library error inside the lambda propagates with its code, and also rolls back.
    EXPECT_TRUE(ThrowsCode(
        [&] {
            db->transaction([](Transaction& tx) {
                tx.execute("INSERT INTO items (name) VALUES ('y')");
                tx.execute("INSERT INTO items (name) VALUES ('y')");
            });
        },
        RSDB_ERR_CONFLICT));
    EXPECT_EQ(count_rows(*db, "items"), 0);
}

TEST_F(Transactions, AFailedStatementMakesCommitThrowAStateErrorAndKeepsNothing) {
    auto db = open_db();
    create_items_table(*db);
    Transaction tx = db->begin();
    tx.execute("INSERT INTO items (name) VALUES ('first')");
    EXPECT_TRUE(ThrowsCode([&] { tx.execute("INSERT INTO missing VALUES (1)"); }, RSDB_ERR_QUERY, "42P01"));
    EXPECT_TRUE(ThrowsCode([&] { tx.commit(); }, RSDB_ERR_STATE));
    EXPECT_FALSE(tx.is_open());
    EXPECT_EQ(count_rows(*db, "items"), 0);
}

TEST_F(Transactions, RollbackFinishesTheTransactionAndIsRepeatable) {
    auto db = open_db();
    create_items_table(*db);
    Transaction tx = db->begin();
    tx.execute("INSERT INTO items (name) VALUES ('x')");
    tx.rollback();
    EXPECT_FALSE(tx.is_open());
    EXPECT_NO_THROW(tx.rollback());
    EXPECT_TRUE(ThrowsCode([&] { tx.commit(); }, RSDB_ERR_STATE));
    EXPECT_TRUE(ThrowsCode([&] { tx.execute("SELECT 1"); }, RSDB_ERR_STATE));
    EXPECT_EQ(count_rows(*db, "items"), 0);
}

TEST_F(Transactions, AMovedFromTransactionIsClosedAndSafeToDestroy) {
    // Runs in a child process (re-executed, as the library has threads): a defect here kills
    // the process, and that must fail this test only, not end the whole suite.
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            int status = 0;
            {
                auto db = open_db();
                create_items_table(*db);
                {
                    Transaction first = db->begin();
                    first.execute("INSERT INTO items (name) VALUES ('moved')");
                    Transaction second = std::move(first);
                    if (first.is_open()) {  // NOLINT(bugprone-use-after-move): the moved-from state is specified
                        std::fprintf(stderr, "the moved-from transaction is still open\n");
                        status = 2;
                    }
                    try {
                        first.execute("SELECT 1");
                        std::fprintf(stderr, "the moved-from transaction accepted a statement\n");
                        status = 3;
                    } catch (const Error& e) {
                        if (e.code() != RSDB_ERR_STATE) status = 4;
                    }
                    second.commit();
                }  // both destroyed here, the moved-from one first
                if (count_rows(*db, "items") != 1) {
                    std::fprintf(stderr, "the moved transaction's work was not committed\n");
                    status = 5;
                }
            }
            TearDown();
            std::fflush(stderr);
            std::exit(status);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(Transactions, ATransactionMovedIntoAContainerStillCommits) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");  // see AMovedFromTransactionIsClosedAndSafeToDestroy
    EXPECT_EXIT(
        {
            int status = 0;
            {
                auto db = open_db();
                create_items_table(*db);
                std::vector<Transaction> txs;
                txs.push_back(db->begin());
                txs.push_back(db->begin());  // may reallocate, moving the first one again
                txs[0].execute("INSERT INTO items (name) VALUES ('a')");
                txs[1].execute("INSERT INTO items (name) VALUES ('b')");
                for (auto& tx : txs) tx.commit();
                txs.clear();
                if (count_rows(*db, "items") != 2) {
                    std::fprintf(stderr, "not every transaction committed\n");
                    status = 2;
                }
            }
            TearDown();
            std::fflush(stderr);
            std::exit(status);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST_F(Transactions, AssigningOverAnOpenTransactionRollsItBack) {
    auto db = open_db();
    create_items_table(*db);
    Transaction target = db->begin();
    target.execute("INSERT INTO items (name) VALUES ('overwritten')");
    Transaction source = db->begin();
    source.execute("INSERT INTO items (name) VALUES ('kept')");
    target = std::move(source);
    target.commit();
    EXPECT_EQ(db->query("SELECT name FROM items"), json::parse(R"([{"name":"kept"}])"));
    EXPECT_EQ(db->pool_stats().in_use, 0u);
}

// ================================================================ pool

// ================================================================ migrations

TEST_F(Migrations, TwoManagersMigratingAtOnceBothSucceedAndApplyEachVersionOnce) {
    struct Outcome {
        int version = -1;
        int code = RSDB_OK;
        std::string error;
    };
    Outcome outcomes[2];
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (auto& outcome : outcomes) {
        threads.emplace_back([&, c = config()]() mutable {
            std::unique_ptr<DatabaseManager> db;
            try {
                db = std::make_unique<DatabaseManager>(c);
            } catch (const Error& e) {
                outcome.code = e.code();
                outcome.error = e.what();
            }
            ready.fetch_add(1);
            // Start both migrations together so they really race for the schema.
            while (ready.load() < 2) std::this_thread::yield();
            if (!db) return;
            try {
                outcome.version = db->migrate();
            } catch (const Error& e) {
                outcome.code = e.code();
                outcome.error = e.what();
            }
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& o : outcomes) {
        EXPECT_EQ(o.code, RSDB_OK) << o.error;
        EXPECT_GE(o.version, 1);
    }
    EXPECT_EQ(outcomes[0].version, outcomes[1].version);
    auto db = open_db();
    json m = db->query("SELECT count(*) AS n, count(DISTINCT version) AS d, max(version) AS top FROM rsdb_schema_migrations");
    EXPECT_EQ(m.at(0).at("n"), outcomes[0].version);
    EXPECT_EQ(m.at(0).at("d"), outcomes[0].version);
    EXPECT_EQ(m.at(0).at("top"), outcomes[0].version);
    json t = db->query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'"
                       " AND table_name IN ('users', 'streams', 'event_log')");
    EXPECT_EQ(t.at(0).at("n"), 3);
}

// ================================================================ redis

TEST_F(Redis, SetGetExistsAndDel) {
    auto r = open_redis();
    EXPECT_GE(r->ping().count(), 0);
    r->set(key("name"), "rootstream");
    EXPECT_EQ(r->get(key("name")), std::optional<std::string>("rootstream"));
    EXPECT_TRUE(r->exists(key("name")));
    EXPECT_TRUE(r->del(key("name")));
    EXPECT_FALSE(r->del(key("name")));
    EXPECT_FALSE(r->exists(key("name")));
    EXPECT_EQ(r->get(key("name")), std::nullopt);
    // std::string carries embedded NUL bytes through.
    const std::string binary("a\0b\0c", 5);
    r->set(key("binary"), binary);
    EXPECT_EQ(r->get(key("binary")), std::optional<std::string>(binary));
}

TEST_F(Redis, ExpireAndTtlFollowRedisSemantics) {
    auto r = open_redis();
    r->set(key("k"), "v");
    EXPECT_EQ(r->ttl_ms(key("k")), -1);
    EXPECT_EQ(r->ttl_ms(key("absent")), -2);
    EXPECT_TRUE(r->expire(key("k"), 30s));
    const auto ttl = r->ttl_ms(key("k"));
    EXPECT_GT(ttl, 25000);
    EXPECT_LE(ttl, 30000);
    EXPECT_FALSE(r->expire(key("absent"), 30s));
    EXPECT_TRUE(ThrowsCode([&] { r->expire(key("k"), 0ms); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { r->set(key("k"), "v", -5ms); }, RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(Redis, HashesListsAndCounters) {
    auto r = open_redis();
    EXPECT_TRUE(r->hset(key("h"), "a", "1"));
    EXPECT_FALSE(r->hset(key("h"), "a", "2")) << "an existing field is not new";
    EXPECT_TRUE(r->hset(key("h"), "b", "3"));
    EXPECT_EQ(r->hget(key("h"), "a"), std::optional<std::string>("2"));
    EXPECT_EQ(r->hget(key("h"), "zzz"), std::nullopt);
    EXPECT_EQ(r->hgetall(key("h")), (std::map<std::string, std::string>{{"a", "2"}, {"b", "3"}}));
    EXPECT_TRUE(r->hdel(key("h"), "a"));
    EXPECT_FALSE(r->hdel(key("h"), "a"));
    EXPECT_TRUE(r->hgetall(key("nohash")).empty());

    EXPECT_EQ(r->rpush(key("l"), "b"), 1);
    EXPECT_EQ(r->rpush(key("l"), "c"), 2);
    EXPECT_EQ(r->lpush(key("l"), "a"), 3);
    EXPECT_EQ(r->lrange(key("l"), 0, -1), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(r->lpop(key("l")), std::optional<std::string>("a"));
    EXPECT_EQ(r->rpop(key("l")), std::optional<std::string>("c"));
    EXPECT_EQ(r->rpop(key("l")), std::optional<std::string>("b"));
    EXPECT_EQ(r->lpop(key("l")), std::nullopt);

    EXPECT_EQ(r->incr(key("n")), 1);
    EXPECT_EQ(r->incr(key("n"), 10), 11);
    EXPECT_EQ(r->incr(key("n"), -12), -1);
    r->set(key("word"), "abc");
    EXPECT_TRUE(ThrowsCode([&] { r->incr(key("word")); }, RSDB_ERR_REDIS));
}

TEST_F(Redis, CommandRunsARegularCommandAndReturnsItsReply) {
    auto r = open_redis();
    EXPECT_EQ(r->command(json::array({"ZADD", key("z"), "1", "low", "9", "high"})), 2);
    EXPECT_EQ(r->command(json::array({"ZREVRANGE", key("z"), "0", "-1"})), json({"high", "low"}));
    EXPECT_EQ(r->command(json::array({"ZSCORE", key("z"), "high"})), "9");
    EXPECT_TRUE(ThrowsCode([&] { r->command(json::array({"NOSUCHCOMMAND"})); }, RSDB_ERR_REDIS));
    EXPECT_TRUE(ThrowsCode([&] { r->command(json::array({"PSUBSCRIBE", "*"})); }, RSDB_ERR_INVALID_ARGUMENT));
}

// ================================================================ pub/sub

TEST_F(PubSub, APatternHandlerReceivesMatchingChannelsOnly) {
    auto sub = open_redis();
    auto pub = open_redis();
    Inbox inbox;
    const auto id = sub->subscribe(key("stream.*"), inbox.handler());
    EXPECT_EQ(pub->publish(key("user.updated"), "u"), 0);
    EXPECT_EQ(pub->publish(key("stream.started"), R"({"stream":42})"), 1);
    ASSERT_TRUE(inbox.wait_for_payload(R"({"stream":42})", 5s));
    // Messages arrive in order, so the earlier non-matching one would be here by now.
    auto got = inbox.snapshot();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].channel, key("stream.started"));
    EXPECT_EQ(sub->pubsub_stats().subscriptions, 1u);
    sub->unsubscribe(id);
    EXPECT_EQ(sub->pubsub_stats().subscriptions, 0u);
}

TEST_F(PubSub, PayloadsKeepEmbeddedNulBytes) {
    auto r = open_redis();
    Inbox inbox;
    const auto id = r->subscribe(key("bin.*"), inbox.handler());
    const std::string payload("\0head\0tail\0", 11);
    EXPECT_EQ(r->publish(key("bin.x"), payload), 1);
    ASSERT_TRUE(inbox.wait_for_payload(payload, 5s));
    r->unsubscribe(id);
}

TEST_F(PubSub, AThrowingHandlerDoesNotStopLaterDeliveries) {
    auto r = open_redis();
    Inbox inbox;
    auto record = inbox.handler();
    const auto id = r->subscribe(key("ev.*"), [record](const std::string& channel, const std::string& payload) {
        record(channel, payload);
        if (payload == "first") throw std::runtime_error("handler failure");
    });
    r->publish(key("ev.x"), "first");
    r->publish(key("ev.x"), "second");
    EXPECT_TRUE(inbox.wait_for_payload("second", 5s));
    r->unsubscribe(id);
}

TEST_F(PubSub, AnEmptyHandlerIsRejected) {
    auto r = open_redis();
    EXPECT_TRUE(ThrowsCode([&] { r->subscribe(key("x.*"), RedisClient::MessageHandler()); }, RSDB_ERR_NULL));
    EXPECT_TRUE(ThrowsCode([&] { r->subscribe("", [](const std::string&, const std::string&) {}); },
                           RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(PubSub, NoHandlerRunsAfterTheClientIsDestroyed) {
    // Shared with the handler, so that a handler the library still calls after destruction
    // touches live memory and the test can report it instead of crashing.
    struct Probe {
        std::atomic<int> running{0};
        std::atomic<bool> destroyed{false};
        std::atomic<int> calls_after{0};
    };
    auto probe = std::make_shared<Probe>();
    auto pub = open_redis();
    auto sub = open_redis();
    sub->subscribe(key("close.*"), [probe](const std::string&, const std::string&) {
        probe->running.fetch_add(1);
        if (probe->destroyed.load()) probe->calls_after.fetch_add(1);
        std::this_thread::sleep_for(100ms);  // slow, so that more messages queue up
        probe->running.fetch_sub(1);
    });
    for (int i = 0; i < 5; ++i) pub->publish(key("close.x"), std::to_string(i));
    ASSERT_TRUE(rsdb_test::wait_for([&] { return probe->running.load() > 0; }, 5000ms));
    sub.reset();
    probe->destroyed.store(true);
    const int running_at_return = probe->running.load();
    std::this_thread::sleep_for(1000ms);
    EXPECT_EQ(running_at_return, 0) << "a handler was still running when ~RedisClient returned";
    EXPECT_EQ(probe->calls_after.load(), 0) << "handlers started after ~RedisClient returned";
}

// ================================================================ redis restarts

TEST_F(RedisRestart, CommandsWorkAgainAfterTheServerRestarts) {
    auto r = open_redis();
    r->set(key("before"), "old");
    ASSERT_TRUE(rsdb_test::restart_redis(stack()));
    std::string last;
    bool recovered = rsdb_test::wait_for(
        [&] {
            try {
                r->set(key("after"), "new");
                return r->get(key("after")) == std::optional<std::string>("new");
            } catch (const Error& e) {
                last = e.what();
                return false;
            }
        },
        5000ms, 100ms);
    ASSERT_TRUE(recovered) << "no successful SET/GET within 5 s; last error: " << last;
    EXPECT_EQ(r->get(key("before")), std::nullopt) << "the server restarted without persistence";
}

TEST_F(RedisRestart, ASubscriptionSurvivesTheRestart) {
    auto sub = open_redis();
    Inbox inbox;
    const auto id = sub->subscribe(key("stream.*"), inbox.handler());
    open_redis()->publish(key("stream.started"), "before");
    ASSERT_TRUE(inbox.wait_for_payload("before", 5s));
    const std::uint64_t reconnects_before = sub->pubsub_stats().reconnects;
    ASSERT_TRUE(rsdb_test::restart_redis(stack()));

    // Redis pub/sub has no backlog: publish until the renewed subscription picks one up.
    auto pub = open_redis();
    bool delivered = false;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (int i = 0; !delivered && std::chrono::steady_clock::now() < deadline; ++i) {
        const std::string payload = "after-" + std::to_string(i);
        try {
            pub->publish(key("stream.started"), payload);
        } catch (const Error&) {
        }
        delivered = inbox.wait_for_payload(payload, 200ms);
    }
    EXPECT_TRUE(delivered) << "the subscription was not renewed within 10 s of the restart";
    const auto stats = sub->pubsub_stats();
    EXPECT_TRUE(stats.connected);
    EXPECT_GT(stats.reconnects, reconnects_before);
    EXPECT_EQ(stats.to_json().at("reconnects"), stats.reconnects);
    sub->unsubscribe(id);
}

// ================================================================ bad input

TEST_F(BadInput, InvalidUtf8StringsThrowInvalidUtf8) {
    const std::string bad("\xC3\x28 broken", 9);
    auto db = open_db();
    auto r = open_redis();
    Config c;
    EXPECT_TRUE(ThrowsCode([&] { c.set("instance_id", bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { c.set(bad, "x"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { db->execute("SELECT '" + bad + "'"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { db->query("SELECT '" + bad + "' AS v"); }, RSDB_ERR_INVALID_UTF8));
    Transaction tx = db->begin();
    EXPECT_TRUE(ThrowsCode([&] { tx.execute("SELECT '" + bad + "'"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->set(key(bad), "v"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->set(key("k"), bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->hset(key("h"), bad, "v"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->publish(key("c"), bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->subscribe(key(bad), [](const std::string&, const std::string&) {}); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(r->get(key("k")), std::nullopt);
    tx.commit();
}

TEST_F(BadInput, InvalidUtf8InsideJsonArgumentsThrowsInvalidUtf8) {
    const std::string bad("\xC3\x28 broken", 9);
    auto db = open_db();
    auto r = open_redis();
    EXPECT_TRUE(ThrowsCode([&] { db->query("SELECT $1::text AS v", json::array({bad})); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { db->execute("SELECT $1::text", json::array({bad})); }, RSDB_ERR_INVALID_UTF8));
    Transaction tx = db->begin();
    EXPECT_TRUE(ThrowsCode([&] { tx.query("SELECT $1::text AS v", json::array({bad})); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->command(json::array({"SET", key("k"), bad})); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { r->exec_atomic(json::array({json::array({"SET", key("k"), bad})})); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(r->get(key("k")), std::nullopt);
}

// ================================================================ SQL injection

// ================================================================ servers down

TEST_F(ServerDown, AManagerForAClosedPortThrowsQuickly) {
    const int port = rsdb_test::unused_tcp_port();
    ASSERT_GT(port, 0);
    Config c = config({{"connect_timeout_ms", "1000"},
                       {"database_url", "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/postgres"}});
    auto t0 = std::chrono::steady_clock::now();
    int code = RSDB_OK;
    try {
        DatabaseManager db(c);
    } catch (const rootstream::ConnectionError& e) {
        code = e.code();
    } catch (const rootstream::Timeout& e) {
        code = e.code();
    }
    EXPECT_TRUE(code == RSDB_ERR_CONNECTION || code == RSDB_ERR_TIMEOUT) << "code " << code;
    EXPECT_LT(ms_since(t0), 10000.0);
}

TEST_F(ServerDown, ARedisClientForAClosedPortThrowsQuickly) {
    const int port = rsdb_test::unused_tcp_port();
    ASSERT_GT(port, 0);
    Config c = config({{"redis_timeout_ms", "1000"}, {"redis_url", "redis://127.0.0.1:" + std::to_string(port) + "/"}});
    auto t0 = std::chrono::steady_clock::now();
    int code = RSDB_OK;
    try {
        RedisClient r(c);
    } catch (const rootstream::ConnectionError& e) {
        code = e.code();
    } catch (const rootstream::Timeout& e) {
        code = e.code();
    }
    EXPECT_TRUE(code == RSDB_ERR_CONNECTION || code == RSDB_ERR_TIMEOUT) << "code " << code;
    EXPECT_LT(ms_since(t0), 10000.0);
}
