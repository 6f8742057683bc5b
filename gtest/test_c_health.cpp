// The C face of HealthMonitor: rsdb_health_* against the stack's PostgreSQL: a round on demand
// and its status JSON, a long query crossing its thresholds reported through the callback on
// the rsdb-health thread and then resolved, pool saturation, stop within a bounded time, and
// the argument contract (NULL, invalid UTF-8, bad options). With the HA stack
// (ROOTSTREAM_HA_PG_NODES) the nodes and replication checks are checked too. The behaviour
// itself is specified by the cargo tests (tests/ha_health.rs).
#include "c_api_util.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rsdb_test::capi;
using namespace std::chrono_literals;
using rsdb_test::last_error;

struct HealthClose {
    void operator()(rsdb_health* h) const { rsdb_health_close(h); }
};
using HealthPtr = std::unique_ptr<rsdb_health, HealthClose>;

struct Seen {
    std::mutex m;
    std::vector<json> alerts;
    std::vector<std::string> threads;
};

void on_alert(void* user_data, const char* alert_json) {
    auto* seen = static_cast<Seen*>(user_data);
    char name[32] = {0};
    pthread_getname_np(pthread_self(), name, sizeof name);
    std::lock_guard<std::mutex> g(seen->m);
    seen->alerts.push_back(json::parse(alert_json));
    seen->threads.emplace_back(name);
}

bool has_alert(Seen& seen, const std::string& check, const std::string& severity, bool resolved) {
    std::lock_guard<std::mutex> g(seen.m);
    for (const auto& a : seen.alerts) {
        if (a["check"] == check && a["severity"] == severity && a["resolved"] == resolved) return true;
    }
    return false;
}

template <class F>
bool wait_until(F&& f, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

class CHealth : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure()) return;
        db_ = open_db({});
    }

    DbPtr open_db(std::initializer_list<std::pair<const char*, const char*>> extra, const std::string& url = "") {
        rsdb_config* cfg = nullptr;
        check(rsdb_config_new(&cfg), "rsdb_config_new");
        ConfigPtr owned(cfg);
        check(rsdb_config_set(cfg, "database_url", url.empty() ? db_url().c_str() : url.c_str()), "database_url");
        for (const auto& [k, v] : extra) check(rsdb_config_set(cfg, k, v), k);
        rsdb_db* db = nullptr;
        check(rsdb_db_open(cfg, &db), "rsdb_db_open");
        return DbPtr(db);
    }

    HealthPtr open(const std::string& options, rsdb_db* db = nullptr) {
        rsdb_health* h = nullptr;
        check(rsdb_health_open(db != nullptr ? db : db_.get(), options.c_str(), &h), "rsdb_health_open");
        return HealthPtr(h);
    }

    DbPtr db_;
};

TEST_F(CHealth, CheckNowRunsEveryCheckAndStatusKeepsTheResult) {
    // Disk limits low enough that the machine's own fill level does not matter here.
    auto h = open(R"({"disk_path": "/tmp", "disk_free_warning_pct": 0.01, "disk_free_critical_pct": 0})");
    OutString before;
    ASSERT_EQ(rsdb_health_status(h.get(), before.out()), RSDB_OK) << last_error();
    EXPECT_EQ(before.parse()["overall"], "unknown");
    EXPECT_EQ(before.parse()["rounds"], 0);

    OutString now;
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(rsdb_health_check_now(h.get(), now.out()), RSDB_OK) << last_error();
    const auto took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("one round through the C API: %.2f ms\n", took);
    json st = now.parse();
    for (const char* c : {"connectivity", "latency", "pool", "disk", "long_queries", "replication_bytes",
                          "replication_seconds"}) {
        EXPECT_EQ(st["checks"][c]["state"], "ok") << c << ": " << st["checks"][c].dump();
        EXPECT_TRUE(st["checks"][c]["checked_at"].is_string()) << c;
    }
    EXPECT_EQ(st["checks"]["nodes"]["state"], "disabled");
    EXPECT_GT(st["checks"]["latency"]["value"].get<double>(), 0.0);
    EXPECT_EQ(st["checks"]["disk"]["details"]["path"], "/tmp");
    EXPECT_EQ(st["overall"], "ok") << st.dump(2);

    OutString after;
    ASSERT_EQ(rsdb_health_status(h.get(), after.out()), RSDB_OK);
    EXPECT_EQ(after.parse()["rounds"], 1);
    EXPECT_EQ(after.parse()["running"], false);
}

TEST_F(CHealth, ALongQueryIsReportedOnTheMonitorThreadThenResolved) {
    auto h = open(R"({"interval_ms": 100, "long_query_warning_s": 1, "long_query_critical_s": 2,
                     "checks": ["connectivity", "long_queries"]})");
    Seen seen;
    ASSERT_EQ(rsdb_health_on_alert(h.get(), on_alert, &seen), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_health_start(h.get()), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_health_start(h.get()), RSDB_OK) << "start is idempotent";
    std::atomic<int> rc{-1000};
    std::thread sleeper([&] { rc = rsdb_db_execute(db_.get(), "SELECT pg_sleep(3)", nullptr, nullptr); });
    EXPECT_TRUE(wait_until([&] { return has_alert(seen, "long_queries", "critical", false); }, 15s));
    sleeper.join();
    EXPECT_EQ(rc.load(), RSDB_OK);
    EXPECT_TRUE(wait_until([&] { return has_alert(seen, "long_queries", "critical", true); }, 15s));
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(rsdb_health_stop(h.get()), RSDB_OK) << last_error();
    std::printf("stop: %.3f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    std::lock_guard<std::mutex> g(seen.m);
    for (const auto& t : seen.threads) EXPECT_EQ(t, "rsdb-health");
    bool listed = false;
    for (const auto& a : seen.alerts) {
        if (a["check"] == "long_queries" && a["severity"] == "critical" && !a["resolved"].get<bool>()) {
            listed = a["message"].get<std::string>().find("pg_sleep(3)") != std::string::npos;
            EXPECT_EQ(a["threshold"], 2.0);
            EXPECT_GE(a["value"].get<double>(), 2.0);
        }
    }
    EXPECT_TRUE(listed) << "the alert names the statement";
    EXPECT_EQ(rsdb_health_stop(h.get()), RSDB_OK) << "stop is idempotent";
}

TEST_F(CHealth, HeldConnectionsSaturateThePool) {
    auto db = open_db({{"pool_size", "2"}});
    auto h = open(R"({"pool_warning_pct": 50, "checks": ["connectivity", "pool"]})", db.get());
    Seen seen;
    ASSERT_EQ(rsdb_health_on_alert(h.get(), on_alert, &seen), RSDB_OK);
    rsdb_tx* a = nullptr;
    rsdb_tx* b = nullptr;
    ASSERT_EQ(rsdb_db_begin(db.get(), &a), RSDB_OK) << last_error();
    OutString st;
    ASSERT_EQ(rsdb_health_check_now(h.get(), st.out()), RSDB_OK);
    EXPECT_EQ(st.parse()["checks"]["pool"]["state"], "warning") << st.str();
    ASSERT_EQ(rsdb_db_begin(db.get(), &b), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_health_check_now(h.get(), st.out()), RSDB_OK);
    EXPECT_EQ(st.parse()["checks"]["pool"]["state"], "critical") << st.str();
    EXPECT_EQ(st.parse()["checks"]["connectivity"]["state"], "ok") << "the monitor has its own connection";
    rsdb_tx_free(a);
    rsdb_tx_free(b);
    ASSERT_EQ(rsdb_health_check_now(h.get(), st.out()), RSDB_OK);
    EXPECT_EQ(st.parse()["checks"]["pool"]["state"], "ok") << st.str();
    EXPECT_TRUE(has_alert(seen, "pool", "warning", false));
    EXPECT_TRUE(has_alert(seen, "pool", "critical", false));
    EXPECT_TRUE(has_alert(seen, "pool", "critical", true));
    std::lock_guard<std::mutex> g(seen.m);
    EXPECT_EQ(seen.alerts.size(), 3u) << "one alert per change";
}

TEST_F(CHealth, BadArgumentsAreErrorsNotCrashes) {
    rsdb_health* h = nullptr;
    EXPECT_TRUE(Fails(rsdb_health_open(nullptr, "{}", &h), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), nullptr, &h), RSDB_ERR_NULL, "options_json"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), "{}", nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), "\xff\xfe", &h), RSDB_ERR_INVALID_UTF8, "options_json"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), "{", &h), RSDB_ERR_JSON, "health options"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), "[1]", &h), RSDB_ERR_JSON, "object"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), R"({"no_such_key": 1})", &h), RSDB_ERR_INVALID_ARGUMENT,
                      "no_such_key"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), R"({"latency_warning_ms": 9, "latency_critical_ms": 1})", &h),
                      RSDB_ERR_INVALID_ARGUMENT, "latency"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), R"({"checks": ["bogus"]})", &h), RSDB_ERR_INVALID_ARGUMENT,
                      "bogus"));
    EXPECT_TRUE(Fails(rsdb_health_open(db_.get(), R"({"nodes": "p1"})", &h), RSDB_ERR_INVALID_ARGUMENT, "name=value"));
    EXPECT_EQ(h, nullptr);
    auto ok = open("{}");
    EXPECT_TRUE(Fails(rsdb_health_on_alert(ok.get(), nullptr, nullptr), RSDB_ERR_NULL, "callback"));
    EXPECT_TRUE(Fails(rsdb_health_check_now(ok.get(), nullptr), RSDB_ERR_NULL, "status_json"));
    EXPECT_TRUE(Fails(rsdb_health_start(nullptr), RSDB_ERR_NULL, "health"));
    EXPECT_TRUE(Fails(rsdb_health_stop(nullptr), RSDB_ERR_NULL, "health"));
    rsdb_health_close(nullptr);
}

TEST_F(CHealth, WithTheHaStackEveryNodeIsProbed) {
    const char* nodes = std::getenv("ROOTSTREAM_HA_PG_NODES");
    if (nodes == nullptr || *nodes == '\0') GTEST_SKIP() << "needs a stack started with --pg-ha";
    const json options = {{"nodes", nodes}, {"checks", {"nodes", "replication_bytes", "replication_seconds"}}};
    auto h = open(options.dump());
    OutString st;
    ASSERT_EQ(rsdb_health_check_now(h.get(), st.out()), RSDB_OK) << last_error();
    json s = st.parse();
    std::printf("%s\n", s["checks"]["nodes"].dump().c_str());
    EXPECT_EQ(s["checks"]["nodes"]["state"], "ok") << s["checks"]["nodes"].dump();
    EXPECT_EQ(s["checks"]["replication_seconds"]["details"]["nodes"].size(), 3u);
}

}  // namespace
