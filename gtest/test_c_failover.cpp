// The C face of the FailoverManager: rsdb_failover_* on the --pg-ha stack (a lease round that
// finds the primary, status JSON, a manual failover refused while the primary answers, the
// role-change callback registration), an unreachable etcd reported in the status, and NULL /
// invalid UTF-8 on the new entry points. The behaviour itself (failover, switchover, rejoin,
// races, lost quorum) is specified by the cargo tests (tests/ha_failover.rs, tests/ha_lease.rs),
// which need private stacks because they change the topology.
#include "c_api_util.h"
#include "failover_util.h"
#include "stack_env.h"
#include "sync_util.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <string>
#include <utility>

namespace {

using namespace rsdb_test::capi;
using rsdb_test::last_error;
using json = nlohmann::json;

void on_role(void*, const char*) {}

// The --pg-ha stack's nodes, data directories and etcd, with `cluster` as the cluster name.
::testing::AssertionResult set_ha_config(rsdb_config* cfg, const HaEnv& env, const char* cluster) {
    const std::pair<const char*, std::string> items[] = {
        {"ha_nodes", env.nodes}, {"ha_data_dirs", env.data_dirs}, {"etcd_endpoints", env.etcd}, {"ha_cluster", cluster}};
    for (const auto& [key, value] : items) {
        if (rsdb_config_set(cfg, key, value.c_str()) != RSDB_OK) {
            return ::testing::AssertionFailure() << key << ": " << last_error();
        }
    }
    return ::testing::AssertionSuccess();
}

json status_of(rsdb_failover* f) {
    OutString out;
    EXPECT_EQ(rsdb_failover_status_json(f, out.out()), RSDB_OK) << last_error();
    return json::parse(out.str());
}

TEST(CFailover, AnUnreachableEtcdIsReportedInTheStatusAndRefusesOperations) {
    rsdb_config* cfg = nullptr;
    ASSERT_EQ(rsdb_config_new(&cfg), RSDB_OK);
    ConfigPtr owned(cfg);
    ASSERT_EQ(set_unreachable_ha_config(cfg), RSDB_OK) << last_error();
    rsdb_failover* f = nullptr;
    ASSERT_EQ(rsdb_failover_open(cfg, "{\"etcd_timeout_ms\": 200}", &f), RSDB_OK) << last_error();
    FailoverPtr fp(f);
    EXPECT_EQ(rsdb_failover_tick(f), RSDB_OK);
    const json st = status_of(f);
    EXPECT_EQ(st.at("is_leader"), false);
    EXPECT_NE(st.at("last_error").get<std::string>().find("etcd"), std::string::npos) << st.dump();
    OutString change;
    EXPECT_NE(rsdb_failover_switchover(f, "p2", change.out()), RSDB_OK);
    EXPECT_NE(std::string(rsdb_last_error()).find("etcd"), std::string::npos) << rsdb_last_error();
    EXPECT_EQ(rsdb_failover_switchover(f, "nope", change.out()), RSDB_ERR_NOT_FOUND);
}

TEST(CFailover, BadOptionsAndArgumentsAreErrorsNotCrashes) {
    rsdb_config* cfg = nullptr;
    ASSERT_EQ(rsdb_config_new(&cfg), RSDB_OK);
    ConfigPtr owned(cfg);
    ASSERT_EQ(set_unreachable_ha_config(cfg), RSDB_OK);
    rsdb_failover* f = nullptr;
    EXPECT_EQ(rsdb_failover_open(cfg, "{nope", &f), RSDB_ERR_JSON);
    EXPECT_EQ(rsdb_failover_open(cfg, "{\"lease_ttl_ms\": 100}", &f), RSDB_ERR_CONFIG);
    EXPECT_EQ(rsdb_failover_open(cfg, "\xff\xfe", &f), RSDB_ERR_INVALID_UTF8);
    EXPECT_EQ(rsdb_failover_open(nullptr, nullptr, &f), RSDB_ERR_NULL);
    EXPECT_EQ(f, nullptr);
    EXPECT_EQ(rsdb_config_set(cfg, "ha_mode", "sometimes"), RSDB_ERR_CONFIG);
    EXPECT_EQ(rsdb_config_set(cfg, "ha_nodes", "p1"), RSDB_ERR_CONFIG);
    ASSERT_EQ(rsdb_failover_open(cfg, nullptr, &f), RSDB_OK) << last_error();
    FailoverPtr fp(f);
    EXPECT_EQ(rsdb_failover_rejoin(f, "\xff"), RSDB_ERR_INVALID_UTF8);
    EXPECT_EQ(rsdb_failover_failover(f, "\xff", nullptr), RSDB_ERR_INVALID_UTF8);
    EXPECT_EQ(rsdb_failover_on_role_change(f, nullptr, nullptr), RSDB_ERR_NULL);
    EXPECT_EQ(rsdb_failover_on_role_change(f, on_role, nullptr), RSDB_OK);
    rsdb_failover_close(nullptr);
}

TEST(CFailover, ALeaseRoundFindsThePrimaryAndAManualFailoverIsRefusedWhileItAnswers) {
    auto env = ha_env();
    if (!env) GTEST_SKIP() << "needs a stack started with --pg-ha";
    rsdb_config* cfg = nullptr;
    ASSERT_EQ(rsdb_config_new(&cfg), RSDB_OK);
    ConfigPtr owned(cfg);
    ASSERT_TRUE(set_ha_config(cfg, *env, "gtest-c"));
    rsdb_failover* f = nullptr;
    ASSERT_EQ(rsdb_failover_open(cfg, "{\"member\": \"gtest-c\", \"auto_failover\": false}", &f), RSDB_OK)
        << last_error();
    FailoverPtr fp(f);
    ASSERT_EQ(rsdb_failover_on_role_change(f, on_role, nullptr), RSDB_OK);
    ASSERT_EQ(rsdb_failover_tick(f), RSDB_OK);
    const json st = status_of(f);
    EXPECT_EQ(st.at("is_leader"), true) << st.dump();
    EXPECT_EQ(st.at("leader"), "gtest-c");
    EXPECT_FALSE(st.at("primary").get<std::string>().empty()) << st.dump();
    EXPECT_EQ(st.at("nodes").size(), 3u);
    OutString change;
    EXPECT_EQ(rsdb_failover_failover(f, nullptr, change.out()), RSDB_ERR_NO_CANDIDATE);
    EXPECT_NE(std::string(rsdb_last_error()).find("still answers"), std::string::npos) << rsdb_last_error();
    EXPECT_EQ(rsdb_failover_stop(f), RSDB_OK);
    EXPECT_EQ(status_of(f).at("is_leader"), false);
}

TEST(CFailover, TheStartedLoopTakesTheLeaseAndMovesAnAttachedPoolFromAStandbyToThePrimary) {
    auto env = ha_env();
    if (!env) GTEST_SKIP() << "needs a stack started with --pg-ha";
    const char* redis_url = std::getenv("ROOTSTREAM_REDIS_URL");
    ASSERT_NE(redis_url, nullptr);
    rsdb_config* cfg = nullptr;
    ASSERT_EQ(rsdb_config_new(&cfg), RSDB_OK);
    ConfigPtr owned(cfg);
    ASSERT_TRUE(set_ha_config(cfg, *env, "gtest-c-loop"));
    ASSERT_EQ(rsdb_config_set(cfg, "redis_url", redis_url), RSDB_OK) << last_error();
    rsdb_failover* f = nullptr;
    ASSERT_EQ(rsdb_failover_open(cfg, R"({"member": "gtest-c-loop", "auto_failover": false, "loop_interval_ms": 200})",
                                 &f),
              RSDB_OK)
        << last_error();
    FailoverPtr fp(f);
    ASSERT_EQ(rsdb_failover_tick(f), RSDB_OK);
    const std::string primary = status_of(f).at("primary").get<std::string>();
    ASSERT_FALSE(primary.empty());
    ASSERT_EQ(rsdb_failover_stop(f), RSDB_OK);

    // A pool opened on a standby: read-only until the manager moves it.
    const std::string standby = rsdb_test::ha_node_url_other_than(env->nodes, primary);
    ASSERT_FALSE(standby.empty()) << env->nodes;
    ASSERT_EQ(rsdb_config_set(cfg, "database_url", standby.c_str()), RSDB_OK) << last_error();
    rsdb_db* db = nullptr;
    ASSERT_EQ(rsdb_db_open(cfg, &db), RSDB_OK) << last_error();
    DbPtr dbp(db);
    auto in_recovery = [&] {
        OutString rows;
        EXPECT_EQ(rsdb_db_query(db, "SELECT pg_is_in_recovery() AS r", nullptr, rows.out()), RSDB_OK) << last_error();
        return rows.parse().at(0).at("r").get<bool>();
    };
    EXPECT_TRUE(in_recovery());
    rsdb_redis* redis = nullptr;
    ASSERT_EQ(rsdb_redis_open(cfg, &redis), RSDB_OK) << last_error();
    RedisPtr rp(redis);
    rsdb_sync* sync = nullptr;
    ASSERT_EQ(rsdb_sync_open(cfg, redis, nullptr,
                             sync_options(sync_namespace("failover_" + rsdb_test::unique_suffix()), "c").c_str(), &sync),
              RSDB_OK)
        << last_error();
    SyncPtr sp(sync);

    EXPECT_EQ(rsdb_failover_attach_db(nullptr, db), RSDB_ERR_NULL);
    EXPECT_EQ(rsdb_failover_attach_db(f, nullptr), RSDB_ERR_NULL);
    EXPECT_EQ(rsdb_failover_attach_sync(f, nullptr), RSDB_ERR_NULL);
    EXPECT_EQ(rsdb_failover_start(nullptr), RSDB_ERR_NULL);
    ASSERT_EQ(rsdb_failover_attach_db(f, db), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_failover_attach_sync(f, sync), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_failover_start(f), RSDB_OK) << last_error();
    EXPECT_EQ(rsdb_failover_start(f), RSDB_ERR_STATE);
    EXPECT_TRUE(rsdb_test::wait_for([&] { return status_of(f).at("is_leader") == true; }, std::chrono::seconds(15)))
        << status_of(f).dump();
    EXPECT_TRUE(rsdb_test::wait_for([&] { return !in_recovery(); }, std::chrono::seconds(15)))
        << "the attached pool still reaches a standby";
    ASSERT_EQ(rsdb_failover_stop(f), RSDB_OK);
    EXPECT_EQ(status_of(f).at("is_leader"), false);
    // Started again after a stop.
    ASSERT_EQ(rsdb_failover_start(f), RSDB_OK) << last_error();
    ASSERT_EQ(rsdb_failover_stop(f), RSDB_OK);
}

}  // namespace
