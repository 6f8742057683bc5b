// The C++ face of Redis Sentinel: rootstream::cache::RedisSentinelManager (RAII, std::function
// failover handler on the rsdb-sentinel thread, exceptions by subclass) beside a RedisClient that
// follows the failover. The behaviour itself is specified by the cargo tests (tests/sentinel*.rs).
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

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::cache::FailoverInfo;
using rootstream::cache::RedisClient;
using rootstream::cache::RedisSentinelManager;

namespace {

std::string env(const char* n) {
    const char* v = std::getenv(n);
    return v != nullptr ? v : "";
}

class CppSentinel : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure()) return;
        ASSERT_FALSE(env("ROOTSTREAM_REDIS_SENTINELS").empty())
            << "run inside `scripts/stack.sh run --sentinel -- ctest`";
        fill(config_);
        ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-wait", "30"));
    }
    static void fill(Config& c) {
        c.set("redis_sentinels", env("ROOTSTREAM_REDIS_SENTINELS"));
        c.set("redis_master_name", env("ROOTSTREAM_REDIS_MASTER_NAME"));
        c.set("redis_sentinel_password", env("ROOTSTREAM_REDIS_SENTINEL_PASSWORD"));
        c.set("redis_master_password", env("ROOTSTREAM_REDIS_MASTER_PASSWORD"));
        c.set("redis_timeout_ms", "1000");
    }
    Config config_;
};

TEST_F(CppSentinel, DiscoversTheMasterAndListsTheSetup) {
    RedisSentinelManager m(config_);
    const std::string master = m.master_address();
    EXPECT_EQ(master.rfind("127.0.0.1:", 0), 0u) << master;
    json r = m.replicas();
    ASSERT_EQ(r.size(), 1u) << r.dump();
    json s = m.sentinels();
    ASSERT_EQ(s.size(), 3u);
    for (const auto& one : s) EXPECT_EQ(one["master"], master);
    RedisSentinelManager moved(std::move(m));
    EXPECT_EQ(moved.master_address(), master);
}

TEST_F(CppSentinel, ErrorsComeAsTheirSubclasses) {
    Config bad;
    fill(bad);
    bad.set("redis_master_name", "no-such-master");
    EXPECT_TRUE(rsdb_test::cppapi::ThrowsCode([&] { RedisSentinelManager m(bad); }, {RSDB_ERR_NOT_FOUND}, "no-such-master"));
    fill(bad);
    bad.set("redis_master_password", "wrong");
    EXPECT_TRUE(rsdb_test::cppapi::ThrowsCode([&] { RedisSentinelManager m(bad); }, {RSDB_ERR_AUTH}, "redis_master_password"));
    fill(bad);
    bad.set("redis_sentinels", "127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port()));
    EXPECT_THROW(RedisSentinelManager m(bad), rootstream::ConnectionError);
    RedisSentinelManager m(config_);
    EXPECT_TRUE(rsdb_test::cppapi::ThrowsCode([&] { m.on_failover(nullptr); }, {RSDB_ERR_NULL}));
}

TEST_F(CppSentinel, AFailoverRunsTheHandlerOnTheSentinelThreadAndTheClientFollows) {
    RedisSentinelManager m(config_);
    std::mutex mu;
    std::vector<FailoverInfo> seen;
    std::string thread;
    m.on_failover([&](const FailoverInfo& f) {
        char name[32] = {0};
        pthread_getname_np(pthread_self(), name, sizeof name);
        std::lock_guard<std::mutex> g(mu);
        seen.push_back(f);
        thread = name;
    });
    RedisClient redis(config_);
    const std::string k = key("cpp-after");
    redis.set(k, "before");
    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-kill", "master"));
    bool written = false;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!written && std::chrono::steady_clock::now() < deadline) {
        try {
            redis.set(k, "after");
            std::lock_guard<std::mutex> g(mu);
            written = !seen.empty();
        } catch (const rootstream::FailoverError&) {
        } catch (const rootstream::ConnectionError&) {
        } catch (const rootstream::Timeout&) {
        }
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(written);
    EXPECT_EQ(redis.get(k).value_or(""), "after");
    FailoverInfo f;
    {
        std::lock_guard<std::mutex> g(mu);
        ASSERT_EQ(seen.size(), 1u);
        f = seen[0];
        EXPECT_EQ(thread, "rsdb-sentinel");
    }
    EXPECT_NE(f.old_port, f.new_port);
    EXPECT_EQ(m.master_address(), f.new_host + ":" + std::to_string(f.new_port));
    m.close();
    const bool r1_was_master = f.old_port == std::stoi(env("ROOTSTREAM_HA_R1_PORT"));
    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-start", r1_was_master ? "r1" : "r2"));
    ASSERT_TRUE(rsdb_test::ha_step(stack(), "ha-wait", "30"));
}

}  // namespace
