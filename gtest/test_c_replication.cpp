// The C face of ReplicationManager: rsdb_replication_* against a `stack.sh --pg-ha` cluster
// (status as JSON, read routing, replication_status rows, the refusals) and the NULL / invalid
// UTF-8 contract of every entry point. The behaviour itself is specified by the cargo tests
// (tests/ha_replication.rs).
#include "c_api_util.h"
#include "replication_util.h"

#include <string>

namespace {

using namespace rsdb_test::capi;
using rsdb_test::last_error;
using rsdb_test::ReplicationPtr;

const char kBad[] = {'p', static_cast<char>(0xC3), static_cast<char>(0x28), 0};

class CReplication : public ::testing::Test {
protected:
    void SetUp() override {
        rsdb_config* cfg = nullptr;
        check(rsdb_config_new(&cfg), "rsdb_config_new");
        cfg_.reset(cfg);
    }
    ConfigPtr cfg_;
};

TEST_F(CReplication, OpensWithoutContactingAnythingAndRejectsBadArguments) {
    rsdb_replication* r = nullptr;
    // A node list that names nothing reachable: open succeeds (nothing is contacted yet).
    ASSERT_RSDB_OK(rsdb_replication_open(cfg_.get(), "p1=postgres://postgres@127.0.0.1:1/x", nullptr,
                                         "{\"probe_timeout_ms\": 300}", &r));
    ReplicationPtr owned(r);
    OutString s;
    auto st = RSDB_JSON(rsdb_replication_status_json(r, s.out()), s);
    EXPECT_TRUE(st["primary"].is_null());
    EXPECT_FALSE(st["split_brain"].get<bool>());
    EXPECT_FALSE(st["nodes"][0]["reachable"].get<bool>());
    // No primary and no standby: a read has nowhere to go.
    OutString q;
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r, "SELECT 1", nullptr, q.out()), RSDB_ERR_CONNECTION,
                      "no node can serve a read"));

    rsdb_replication* r2 = nullptr;
    EXPECT_TRUE(Fails(rsdb_replication_open(nullptr, "p1=postgres://h/x", nullptr, nullptr, &r2), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), "p1=postgres://h/x", nullptr, nullptr, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), kBad, nullptr, nullptr, &r2), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), "p1=postgres://h/x", kBad, nullptr, &r2), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), "p1=postgres://h/x", nullptr, kBad, &r2), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), "p1=postgres://h/x", nullptr, "{\"nope\":1}", &r2), RSDB_ERR_JSON));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), "nonsense", nullptr, nullptr, &r2), RSDB_ERR_CONFIG));
    EXPECT_TRUE(Fails(rsdb_replication_open(cfg_.get(), nullptr, "p1=/x", nullptr, &r2), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(r2, nullptr);

    EXPECT_TRUE(Fails(rsdb_replication_status_json(nullptr, s.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_status_json(r, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_record_status(r, nullptr, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r, nullptr, nullptr, q.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r, kBad, nullptr, q.out()), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r, "SELECT 1", kBad, q.out()), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r, "SELECT 1", nullptr, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_add_replica(r, nullptr, "postgres://h:5/x", "/tmp/x", 5, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_add_replica(r, "p4", kBad, "/tmp/x", 5, nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_add_replica(r, "p4", "postgres://h:5/x", kBad, 5, nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_add_replica(r, "p4", "postgres://h:5/x", "/tmp/x", 70000, nullptr),
                      RSDB_ERR_INVALID_ARGUMENT, "port"));
    EXPECT_TRUE(Fails(rsdb_replication_remove_replica(r, kBad, nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_remove_replica(r, "p9", nullptr), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_replication_promote(r, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_replication_promote(r, kBad), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_promote(r, "p1"), RSDB_ERR_CONNECTION));
    EXPECT_TRUE(Fails(rsdb_replication_rejoin(r, "p1", kBad, nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_replication_rejoin(r, "p1", nullptr, nullptr), RSDB_ERR_CONFIG, "data directory"));
    rsdb_replication_close(nullptr);
}

class CReplicationHa : public CReplication {
protected:
    void SetUp() override {
        if (!rsdb_test::have_pg_ha()) GTEST_SKIP() << "needs a `scripts/stack.sh run --pg-ha` stack";
        CReplication::SetUp();
        rsdb_replication* r = nullptr;
        check(rsdb_replication_open(cfg_.get(), nullptr, nullptr, "{\"probe_timeout_ms\": 1500, \"refresh_interval_ms\": 0}",
                                    &r),
              "rsdb_replication_open");
        r_.reset(r);
    }
    ReplicationPtr r_;
};

TEST_F(CReplicationHa, StatusShowsThePrimaryAndStreamingStandbys) {
    OutString s;
    auto st = RSDB_JSON(rsdb_replication_status_json(r_.get(), s.out()), s);
    EXPECT_EQ(st["primary"], "p1");
    EXPECT_FALSE(st["split_brain"].get<bool>());
    ASSERT_EQ(st["replicas"].size(), 2u);
    for (const auto& rep : st["replicas"]) {
        EXPECT_EQ(rep["state"], "streaming") << rep.dump();
        EXPECT_TRUE(rep["lag_bytes"].is_number()) << rep.dump();
        EXPECT_TRUE(rep["lag_seconds"].is_number()) << rep.dump();
        EXPECT_TRUE(rep["slot"]["active"].get<bool>()) << rep.dump();
    }
}

TEST_F(CReplicationHa, ReadsGoToAStandbyAndWritesAreRefused) {
    OutString q;
    auto res = RSDB_JSON(rsdb_replication_query_read_json(r_.get(), "SELECT pg_is_in_recovery() AS standby, $1::text AS v",
                                                          "[\"x\"]", q.out()),
                         q);
    EXPECT_FALSE(res["primary"].get<bool>());
    EXPECT_TRUE(res["node"] == "p2" || res["node"] == "p3") << res.dump();
    EXPECT_TRUE(res["rows"][0]["standby"].get<bool>());
    EXPECT_EQ(res["rows"][0]["v"], "x");
    EXPECT_TRUE(Fails(rsdb_replication_query_read_json(r_.get(), "CREATE TABLE c_repl_nope (i int)", nullptr, q.out()),
                      RSDB_ERR_QUERY));
    // Refusals: promoting the primary, a replica URL that is a primary.
    EXPECT_TRUE(Fails(rsdb_replication_promote(r_.get(), "p1"), RSDB_ERR_STATE, "already a primary"));
    std::string p1_url;
    const std::string nodes = rsdb_test::env_or_empty("ROOTSTREAM_HA_PG_NODES");
    const auto start = nodes.find("p1=") + 3;
    p1_url = nodes.substr(start, nodes.find(',', start) - start);
    const auto port = std::stoi(p1_url.substr(p1_url.rfind(':') + 1));
    EXPECT_TRUE(Fails(rsdb_replication_add_replica(r_.get(), "p9", p1_url.c_str(), "/tmp/rsdb-c-repl-never", port, nullptr),
                      RSDB_ERR_STATE, "primary"));
}

TEST_F(CReplicationHa, RecordStatusWritesARowPerStandby) {
    rsdb_config* cfg = nullptr;
    check(rsdb_config_new(&cfg), "rsdb_config_new");
    ConfigPtr owned(cfg);
    check(rsdb_config_set(cfg, "database_url", rsdb_test::env_or_empty("ROOTSTREAM_HA_DATABASE_URL").c_str()),
          "database_url");
    rsdb_db* db = nullptr;
    check(rsdb_db_open(cfg, &db), "rsdb_db_open");
    DbPtr dbp(db);
    int version = 0;
    check(rsdb_db_migrate(db, &version), "rsdb_db_migrate");
    uint64_t rows = 0;
    ASSERT_RSDB_OK(rsdb_replication_record_status(r_.get(), db, &rows));
    EXPECT_EQ(rows, 2u);
    ASSERT_RSDB_OK(rsdb_replication_record_status(r_.get(), db, nullptr));
}

}  // namespace
