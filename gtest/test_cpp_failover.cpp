// The C++ face of the FailoverManager: rootstream::database::FailoverManager (RAII, JSON status,
// exceptions by subclass) on the --pg-ha stack, and an unreachable etcd. The behaviour itself is
// specified by the cargo tests (tests/ha_failover.rs, tests/ha_lease.rs).
#include "rootstream/rootstream_db.hpp"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <string>

using json = nlohmann::json;
using rootstream::Config;
using rootstream::database::DatabaseManager;
using rootstream::database::FailoverManager;

namespace {

std::string env(const char* n) {
    const char* v = std::getenv(n);
    return v != nullptr ? v : "";
}

// The --pg-ha stack's nodes, data directories, etcd and Redis, with `cluster` as the cluster name.
Config ha_config(const std::string& cluster) {
    Config c;
    c.set("ha_nodes", env("ROOTSTREAM_HA_PG_NODES"));
    c.set("ha_data_dirs", env("ROOTSTREAM_HA_PG_DATA"));
    c.set("etcd_endpoints", env("ROOTSTREAM_ETCD_ENDPOINTS"));
    c.set("redis_url", env("ROOTSTREAM_REDIS_URL"));
    c.set("ha_cluster", cluster);
    return c;
}

Config unreachable_config() {
    Config c;
    c.set("ha_nodes", "p1=postgres://postgres@127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port()) +
                          "/x,p2=postgres://postgres@127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port()) + "/x");
    c.set("etcd_endpoints", "http://127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port()));
    return c;
}

TEST(CppFailover, AnUnreachableEtcdShowsInTheStatusAndThrowsOnASwitchover) {
    FailoverManager m(unreachable_config(), json{{"etcd_timeout_ms", 200}});
    m.tick();
    const json st = m.status();
    EXPECT_FALSE(m.is_leader());
    EXPECT_NE(st.at("last_error").get<std::string>().find("etcd"), std::string::npos) << st.dump();
    EXPECT_THROW(m.switchover("p2"), rootstream::ConnectionError);
    EXPECT_THROW(m.switchover("nope"), rootstream::NotFound);
    EXPECT_THROW(m.on_role_change(nullptr), rootstream::InvalidArgument);
}

TEST(CppFailover, BadOptionsThrowConfigOrArgumentErrors) {
    EXPECT_THROW(FailoverManager(unreachable_config(), json{{"lease_ttl_ms", 100}}), rootstream::ConfigError);
    EXPECT_THROW(FailoverManager(unreachable_config(), json{{"nope", 1}}), rootstream::InvalidArgument);
    Config c;
    EXPECT_THROW(FailoverManager m(c), rootstream::ConfigError);
}

TEST(CppFailover, ALeaseRoundFindsThePrimaryAndAFailoverIsRefusedWhileItAnswers) {
    if (env("ROOTSTREAM_HA_PG_NODES").empty()) GTEST_SKIP() << "needs a stack started with --pg-ha";
    Config c = ha_config("gtest-cpp");
    FailoverManager m(c, json{{"member", "gtest-cpp"}, {"auto_failover", false}});
    int changes = 0;
    m.on_role_change([&](const json&) { ++changes; });
    m.tick();
    EXPECT_TRUE(m.is_leader());
    const json st = m.status();
    EXPECT_EQ(st.at("leader"), "gtest-cpp");
    EXPECT_FALSE(st.at("primary").get<std::string>().empty()) << st.dump();
    EXPECT_THROW(m.failover(), rootstream::NoCandidateError);
    EXPECT_EQ(changes, 0);
    m.stop();
    EXPECT_FALSE(m.is_leader());
}

TEST(CppFailover, TheStartedLoopTakesTheLeaseAndMovesAnAttachedPoolToThePrimary) {
    if (env("ROOTSTREAM_HA_PG_NODES").empty()) GTEST_SKIP() << "needs a stack started with --pg-ha";
    Config c = ha_config("gtest-cpp-loop");
    FailoverManager m(c, json{{"member", "gtest-cpp-loop"}, {"auto_failover", false}, {"loop_interval_ms", 200}});
    m.tick();
    const std::string primary = m.status().at("primary").get<std::string>();
    m.stop();
    // A pool on a standby, read-only until the manager moves it.
    const std::string standby = rsdb_test::ha_node_url_other_than(env("ROOTSTREAM_HA_PG_NODES"), primary);
    ASSERT_FALSE(standby.empty());
    c.set("database_url", standby);
    DatabaseManager db(c);
    auto in_recovery = [&] { return db.query("SELECT pg_is_in_recovery() AS r").at(0).at("r").get<bool>(); };
    EXPECT_TRUE(in_recovery());
    rootstream::cache::RedisClient redis(c);
    rootstream::sync::StateSyncManager sync(c, redis, json{{"namespace", "gtcpp_failover"}, {"instance", "cpp"}});
    m.attach(db);
    m.attach(sync);
    m.start();
    EXPECT_THROW(m.start(), rootstream::StateError);
    EXPECT_TRUE(rsdb_test::wait_for([&] { return m.is_leader(); }, std::chrono::seconds(15))) << m.status().dump();
    EXPECT_TRUE(rsdb_test::wait_for([&] { return !in_recovery(); }, std::chrono::seconds(15)))
        << "the attached pool still reaches a standby";
    m.stop();
    EXPECT_FALSE(m.is_leader());
}

}  // namespace
