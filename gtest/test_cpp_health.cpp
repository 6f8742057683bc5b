// The C++ face of HealthMonitor: rootstream::database::HealthMonitor (RAII, std::function alert
// handler, status as nlohmann::json, exceptions by kind) against the stack's PostgreSQL. The
// behaviour itself is specified by the cargo tests (tests/ha_health.rs).
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::database::DatabaseManager;
using rootstream::database::HealthAlert;
using rootstream::database::HealthMonitor;
using rsdb_test::cppapi::ThrowsCode;

namespace {

struct Seen {
    std::mutex m;
    std::vector<HealthAlert> alerts;
    std::vector<std::string> threads;

    HealthMonitor::AlertHandler handler() {
        return [this](const HealthAlert& a) {
            char name[32] = {0};
            pthread_getname_np(pthread_self(), name, sizeof name);
            std::lock_guard<std::mutex> g(m);
            alerts.push_back(a);
            threads.emplace_back(name);
        };
    }
    bool has(const std::string& check, const std::string& severity, bool resolved) {
        std::lock_guard<std::mutex> g(m);
        for (const auto& a : alerts) {
            if (a.check == check && a.severity == severity && a.resolved == resolved) return true;
        }
        return false;
    }
};

template <class F>
bool wait_until(F&& f, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

class CppHealth : public rsdb_test::StackTest {
protected:
    Config config(const std::string& pool_size = "") const {
        Config c;
        c.set("database_url", db_url());
        if (!pool_size.empty()) c.set("pool_size", pool_size);
        return c;
    }
};

TEST_F(CppHealth, CheckNowReturnsTheStatusAsJson) {
    DatabaseManager db(config());
    // Disk limits low enough that the machine's own fill level does not matter here.
    HealthMonitor m(db, {{"disk_path", "/tmp"}, {"disk_free_warning_pct", 0.01}, {"disk_free_critical_pct", 0}});
    EXPECT_EQ(m.status()["overall"], "unknown");
    const json st = m.check_now();
    EXPECT_EQ(st["overall"], "ok") << st.dump(2);
    EXPECT_EQ(st["checks"]["connectivity"]["state"], "ok");
    EXPECT_GT(st["checks"]["latency"]["value"].get<double>(), 0.0);
    EXPECT_EQ(st["checks"]["disk"]["details"]["path"], "/tmp");
    EXPECT_EQ(m.status()["rounds"], 1);
    EXPECT_FALSE(m.running());
}

TEST_F(CppHealth, ALongQueryReachesTheHandlerAsAHealthAlert) {
    DatabaseManager db(config());
    HealthMonitor m(db, {{"long_query_warning_s", 1},
                         {"long_query_critical_s", 2},
                         {"checks", {"connectivity", "long_queries"}}});
    Seen seen;
    m.on_alert(seen.handler());
    std::thread sleeper([&] { db.execute("SELECT pg_sleep(3)"); });
    json st;
    EXPECT_TRUE(wait_until(
        [&] {
            st = m.check_now();
            return st["checks"]["long_queries"]["state"] == "critical";
        },
        15s))
        << st.dump(2);
    sleeper.join();
    EXPECT_TRUE(wait_until([&] { return m.check_now()["checks"]["long_queries"]["state"] == "ok"; }, 15s));
    ASSERT_TRUE(seen.has("long_queries", "critical", false));
    ASSERT_TRUE(seen.has("long_queries", "critical", true));
    std::lock_guard<std::mutex> g(seen.m);
    for (const auto& a : seen.alerts) {
        if (a.check == "long_queries" && a.severity == "critical" && !a.resolved) {
            EXPECT_EQ(a.state, "critical");
            ASSERT_TRUE(a.threshold.has_value());
            EXPECT_EQ(*a.threshold, 2.0);
            ASSERT_TRUE(a.value.has_value());
            EXPECT_GE(*a.value, 2.0);
            EXPECT_NE(a.message.find("pg_sleep(3)"), std::string::npos) << a.message;
            EXPECT_FALSE(a.at.empty());
            EXPECT_EQ(a.json["check"], "long_queries");
        }
        if (a.resolved) {
            EXPECT_EQ(a.state, "ok");
        }
    }
    // check_now delivers on the calling thread, not on rsdb-health.
    for (const auto& t : seen.threads) EXPECT_NE(t, "rsdb-health");
}

TEST_F(CppHealth, PeriodicRoundsRunOnRsdbHealthAndTheDestructorStopsThem) {
    DatabaseManager db(config("2"));
    Seen seen;
    {
        HealthMonitor m(db, {{"interval_ms", 50}, {"pool_warning_pct", 50}, {"checks", {"connectivity", "pool"}}});
        m.on_alert(seen.handler());
        m.on_alert([](const HealthAlert&) { throw std::runtime_error("a handler that throws"); });
        m.start();
        EXPECT_TRUE(m.running());
        {
            auto tx = db.begin();
            EXPECT_TRUE(wait_until([&] { return seen.has("pool", "warning", false); }, 10s));
        }
        EXPECT_TRUE(wait_until([&] { return seen.has("pool", "warning", true); }, 10s));
        m.stop();
        EXPECT_FALSE(m.running());
        m.start();
        EXPECT_TRUE(m.running());
    }  // destroyed while running
    std::lock_guard<std::mutex> g(seen.m);
    ASSERT_FALSE(seen.threads.empty());
    for (const auto& t : seen.threads) EXPECT_EQ(t, "rsdb-health");
}

TEST_F(CppHealth, BadOptionsAndUseAfterCloseThrowByKind) {
    DatabaseManager db(config());
    EXPECT_TRUE(ThrowsCode([&] { HealthMonitor m(db, json::array()); }, RSDB_ERR_JSON, "object"));
    EXPECT_TRUE(ThrowsCode([&] { HealthMonitor m(db, {{"no_such_key", 1}}); }, RSDB_ERR_INVALID_ARGUMENT,
                           "no_such_key"));
    EXPECT_TRUE(ThrowsCode([&] { HealthMonitor m(db, {{"interval_ms", "soon"}}); }, RSDB_ERR_INVALID_ARGUMENT,
                           "interval_ms"));
    HealthMonitor m(db, nullptr);
    EXPECT_TRUE(ThrowsCode([&] { m.on_alert(nullptr); }, RSDB_ERR_NULL, "handler"));
    m.close();
    EXPECT_TRUE(ThrowsCode([&] { m.check_now(); }, RSDB_ERR_STATE, "closed"));
    EXPECT_TRUE(ThrowsCode([&] { m.start(); }, RSDB_ERR_STATE, "closed"));
    HealthMonitor moved(std::move(m));
    EXPECT_TRUE(ThrowsCode([&] { m.check_now(); }, RSDB_ERR_STATE, "moved-from"));
}

TEST_F(CppHealth, WithTheHaStackTheNodesAreChecked) {
    const char* nodes = std::getenv("ROOTSTREAM_HA_PG_NODES");
    if (nodes == nullptr || *nodes == '\0') GTEST_SKIP() << "needs a stack started with --pg-ha";
    DatabaseManager db(config());
    HealthMonitor m(db, {{"nodes", nodes}, {"checks", {"nodes"}}});
    const json st = m.check_now();
    EXPECT_EQ(st["checks"]["nodes"]["state"], "ok") << st["checks"]["nodes"].dump(2);
    EXPECT_EQ(st["checks"]["nodes"]["details"]["nodes"].size(), 3u);
}

}  // namespace
