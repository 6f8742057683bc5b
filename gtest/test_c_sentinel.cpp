// The C face of Redis Sentinel: rsdb_sentinel_* against the stack's three sentinels
// (`stack.sh --sentinel`): discovery, listings as JSON, a failover reported through the
// callback on the rsdb-sentinel thread while an rsdb_redis client follows it, and the NULL /
// invalid UTF-8 contract of the new entry points and config keys. The behaviour itself is
// specified by the cargo tests (tests/sentinel*.rs).
#include "c_api_util.h"
#include "sentinel_util.h"

#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace {

using namespace rsdb_test::capi;
using rsdb_test::last_error;

struct Seen {
    std::mutex m;
    std::string json;
    std::string thread;
    std::atomic<int> calls{0};
};

void on_failover(void* user_data, const char* event_json) {
    auto* seen = static_cast<Seen*>(user_data);
    char name[32] = {0};
    pthread_getname_np(pthread_self(), name, sizeof name);
    std::lock_guard<std::mutex> g(seen->m);
    seen->json = event_json;
    seen->thread = name;
    seen->calls.fetch_add(1);
}

class CSentinel : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure()) return;
        auto env = sentinel_env();
        ASSERT_TRUE(env.has_value()) << "run inside `scripts/stack.sh run --sentinel -- ctest`";
        env_ = *env;
        rsdb_config* cfg = nullptr;
        check(rsdb_config_new(&cfg), "rsdb_config_new");
        cfg_.reset(cfg);
        check(set_sentinel_config(cfg, env_), "sentinel config");
        ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-wait", "30"));
    }
    SentinelEnv env_;
    ConfigPtr cfg_;
};

TEST_F(CSentinel, FindsTheMasterAndListsReplicasAndSentinelsAsJson) {
    rsdb_sentinel* s = nullptr;
    ASSERT_EQ(rsdb_sentinel_open(cfg_.get(), &s), RSDB_OK) << last_error();
    SentinelPtr owned(s);
    OutString master;
    ASSERT_EQ(rsdb_sentinel_master_addr(s, master.out()), RSDB_OK) << last_error();
    EXPECT_EQ(master.str().rfind("127.0.0.1:", 0), 0u) << master.str();
    OutString replicas;
    ASSERT_EQ(rsdb_sentinel_replicas(s, replicas.out()), RSDB_OK) << last_error();
    json r = replicas.parse();
    ASSERT_EQ(r.size(), 1u) << r.dump();
    EXPECT_NE(r[0]["flags"].get<std::string>().find("slave"), std::string::npos);
    OutString sentinels;
    ASSERT_EQ(rsdb_sentinel_sentinels(s, sentinels.out()), RSDB_OK) << last_error();
    json st = sentinels.parse();
    ASSERT_EQ(st.size(), 3u) << st.dump();
    for (const auto& one : st) {
        EXPECT_TRUE(one["answers"].get<bool>()) << st.dump();
        EXPECT_EQ(one["master"], master.str());
    }
}

TEST_F(CSentinel, UnknownNameWrongPasswordAndNoSentinelAreClearErrors) {
    rsdb_sentinel* s = nullptr;
    ASSERT_EQ(rsdb_config_set(cfg_.get(), "redis_master_name", "no-such-master"), RSDB_OK);
    EXPECT_TRUE(Fails(rsdb_sentinel_open(cfg_.get(), &s), RSDB_ERR_NOT_FOUND, "no-such-master"));
    EXPECT_EQ(s, nullptr);
    ASSERT_EQ(rsdb_config_set(cfg_.get(), "redis_master_name", env_.master_name.c_str()), RSDB_OK);
    ASSERT_EQ(rsdb_config_set(cfg_.get(), "redis_sentinel_password", "wrong"), RSDB_OK);
    EXPECT_TRUE(Fails(rsdb_sentinel_open(cfg_.get(), &s), RSDB_ERR_AUTH, "redis_sentinel_password"));
    const std::string dead = "127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port());
    ASSERT_EQ(rsdb_config_set(cfg_.get(), "redis_sentinels", dead.c_str()), RSDB_OK);
    EXPECT_TRUE(Fails(rsdb_sentinel_open(cfg_.get(), &s), RSDB_ERR_CONNECTION, "no sentinel"));
    EXPECT_EQ(s, nullptr);
}

TEST_F(CSentinel, AFailoverReachesTheCallbackAndTheClientFollowsIt) {
    rsdb_sentinel* s = nullptr;
    ASSERT_EQ(rsdb_sentinel_open(cfg_.get(), &s), RSDB_OK) << last_error();
    SentinelPtr owned(s);
    Seen seen;
    ASSERT_EQ(rsdb_sentinel_on_failover(s, on_failover, &seen), RSDB_OK);
    rsdb_redis* r = nullptr;
    ASSERT_EQ(rsdb_redis_open(cfg_.get(), &r), RSDB_OK) << last_error();
    RedisPtr redis(r);
    const std::string k = key("after");
    ASSERT_EQ(rsdb_redis_set(r, k.c_str(), "before", 0), RSDB_OK) << last_error();

    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-kill", "master"));
    // Writes fail with retryable codes for a moment, then succeed on the promoted replica.
    bool written = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!written && std::chrono::steady_clock::now() < deadline) {
        int rc = rsdb_redis_set(r, k.c_str(), "after", 0);
        if (rc == RSDB_OK && seen.calls.load() > 0) {
            written = true;
        } else if (rc != RSDB_OK) {
            EXPECT_TRUE(rc == RSDB_ERR_FAILOVER || rc == RSDB_ERR_CONNECTION || rc == RSDB_ERR_TIMEOUT)
                << rsdb_status_name(rc) << ": " << last_error();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(written) << "no write after the failover within 30 s";
    OutString value;
    ASSERT_EQ(rsdb_redis_get(r, k.c_str(), value.out()), RSDB_OK) << last_error();
    EXPECT_EQ(value.str(), "after");
    {
        std::lock_guard<std::mutex> g(seen.m);
        EXPECT_EQ(seen.calls.load(), 1);
        EXPECT_EQ(seen.thread, "rsdb-sentinel");
        json ev = json::parse(seen.json);
        EXPECT_EQ(ev["master_name"], env_.master_name);
        EXPECT_NE(ev["old"]["port"], ev["new"]["port"]);
        OutString master;
        ASSERT_EQ(rsdb_sentinel_master_addr(s, master.out()), RSDB_OK);
        EXPECT_EQ(master.str(), "127.0.0.1:" + std::to_string(ev["new"]["port"].get<int>()));
    }
    // Bring the old master back (it rejoins as a replica) for the next test.
    json ev = json::parse(seen.json);
    const bool r1_was_master = ev["old"]["port"].get<int>() == std::stoi(std::getenv("ROOTSTREAM_HA_R1_PORT"));
    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-start", r1_was_master ? "r1" : "r2"));
    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-wait", "30"));
}

TEST_F(CSentinel, NullAndInvalidUtf8AreRefused) {
    rsdb_sentinel* s = nullptr;
    EXPECT_TRUE(Fails(rsdb_sentinel_open(nullptr, &s), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_sentinel_open(cfg_.get(), nullptr), RSDB_ERR_NULL, "out"));
    OutString out;
    EXPECT_TRUE(Fails(rsdb_sentinel_master_addr(nullptr, out.out()), RSDB_ERR_NULL, "sentinel"));
    EXPECT_TRUE(Fails(rsdb_sentinel_replicas(nullptr, out.out()), RSDB_ERR_NULL, "sentinel"));
    EXPECT_TRUE(Fails(rsdb_sentinel_sentinels(nullptr, out.out()), RSDB_ERR_NULL, "sentinel"));
    EXPECT_TRUE(Fails(rsdb_sentinel_on_failover(nullptr, on_failover, nullptr), RSDB_ERR_NULL, "sentinel"));
    ASSERT_EQ(rsdb_sentinel_open(cfg_.get(), &s), RSDB_OK) << last_error();
    SentinelPtr owned(s);
    EXPECT_TRUE(Fails(rsdb_sentinel_on_failover(s, nullptr, nullptr), RSDB_ERR_NULL, "callback"));
    EXPECT_TRUE(Fails(rsdb_sentinel_master_addr(s, nullptr), RSDB_ERR_NULL, "out"));
    const char bad[] = "\xff\xfe";
    EXPECT_TRUE(Fails(rsdb_config_set(cfg_.get(), "redis_master_password", bad), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_config_set(cfg_.get(), "redis_sentinels", bad), RSDB_ERR_INVALID_UTF8));
    rsdb_sentinel_close(nullptr);
}

}  // namespace
