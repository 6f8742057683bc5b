// The C++ face of ReplicationManager: rootstream::database::ReplicationManager (RAII, JSON as
// nlohmann::json, exceptions by subclass) against a `stack.sh --pg-ha` cluster. The behaviour
// itself is specified by the cargo tests (tests/ha_replication.rs).
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>

using json = nlohmann::json;
using rootstream::Config;
using rootstream::database::DatabaseManager;
using rootstream::database::ReplicationManager;
using rsdb_test::cppapi::ThrowsCode;

namespace {

std::string env(const char* n) {
    const char* v = std::getenv(n);
    return v != nullptr ? v : "";
}

const std::string kBad = std::string("p") + static_cast<char>(0xC3) + static_cast<char>(0x28);

TEST(CppReplication, OpensLazilyAndMapsErrorsToTheirSubclasses) {
    Config cfg;
    ReplicationManager m(cfg, "p1=postgres://postgres@127.0.0.1:1/x", "", json{{"probe_timeout_ms", 300}});
    auto st = m.status();
    EXPECT_TRUE(st["primary"].is_null());
    EXPECT_FALSE(st["nodes"][0]["reachable"].get<bool>());
    EXPECT_TRUE(ThrowsCode([&] { m.query_read("SELECT 1"); }, RSDB_ERR_CONNECTION, "no node can serve a read"));
    EXPECT_TRUE(ThrowsCode([&] { m.query_read("SELECT 1", json{{"a", 1}}); }, RSDB_ERR_JSON));
    EXPECT_TRUE(ThrowsCode([&] { m.query_read(kBad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { m.promote(kBad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { m.promote("p9"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { m.remove_replica("p9"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { m.rejoin("p1"); }, RSDB_ERR_CONFIG, "data directory"));
    EXPECT_TRUE(ThrowsCode([&] { m.add_replica("p4", "postgres://h:5/x", "/tmp/x", 0); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { ReplicationManager(cfg, "nonsense"); }, RSDB_ERR_CONFIG));
    EXPECT_TRUE(ThrowsCode([&] { ReplicationManager(cfg, "p1=postgres://h/x", "", json{{"nope", 1}}); }, RSDB_ERR_JSON));
    EXPECT_TRUE(ThrowsCode([&] { ReplicationManager(cfg, "p1=postgres://h/x", "", json::array()); }, RSDB_ERR_JSON));
    EXPECT_TRUE(ThrowsCode([&] { ReplicationManager(cfg, kBad); }, RSDB_ERR_INVALID_UTF8));
    ReplicationManager moved(std::move(m));
    EXPECT_TRUE(moved.status()["nodes"].is_array());
}

class CppReplicationHa : public ::testing::Test {
protected:
    void SetUp() override {
        if (env("ROOTSTREAM_HA_PG_NODES").empty()) GTEST_SKIP() << "needs a `scripts/stack.sh run --pg-ha` stack";
    }
    Config cfg_;
};

TEST_F(CppReplicationHa, StatusReadRoutingAndRecordStatus) {
    ReplicationManager m(cfg_, "", "", json{{"probe_timeout_ms", 1500}, {"refresh_interval_ms", 0}});
    auto st = m.status();
    EXPECT_EQ(st["primary"], "p1");
    EXPECT_FALSE(st["split_brain"].get<bool>());
    ASSERT_EQ(st["replicas"].size(), 2u);
    for (const auto& r : st["replicas"]) {
        EXPECT_EQ(r["state"], "streaming") << r.dump();
        EXPECT_TRUE(r["lag_bytes"].is_number() && r["lag_seconds"].is_number()) << r.dump();
    }
    auto res = m.query_read("SELECT pg_is_in_recovery() AS standby, $1::int AS n", json::array({41}));
    EXPECT_FALSE(res.primary);
    EXPECT_TRUE(res.node == "p2" || res.node == "p3") << res.node;
    EXPECT_TRUE(res.rows[0]["standby"].get<bool>());
    EXPECT_EQ(res.rows[0]["n"], 41);
    EXPECT_TRUE(ThrowsCode([&] { m.query_read("CREATE TABLE cpp_repl_nope (i int)"); }, RSDB_ERR_QUERY));
    EXPECT_TRUE(ThrowsCode([&] { m.promote("p1"); }, RSDB_ERR_STATE, "already a primary"));

    Config dbcfg;
    dbcfg.set("database_url", env("ROOTSTREAM_HA_DATABASE_URL"));
    DatabaseManager db(dbcfg);
    db.migrate();
    EXPECT_EQ(m.record_status(db), 2u);
}

}  // namespace
