// The C API's argument contract, for every function include/rootstream_db.h declares: NULL for a
// required pointer is RSDB_ERR_NULL with a message, invalid UTF-8 in a string is
// RSDB_ERR_INVALID_UTF8, release functions accept NULL. The cases are generated from the header
// at build time (gtest/contract/gen_c_contract.py), so a new function is covered as soon as it
// is declared; this file holds the handles the generated cases borrow.
#include "c_api_util.h"
#include "replication_util.h"
#include "failover_util.h"
#include "sentinel_util.h"
#include "sync_util.h"

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace rsdb_test::capi;

const char kInvalidUtf8[] = "\xff\xfe invalid";

void contract_rsdb_schedule_cb(void*, const char*) {}
void contract_rsdb_progress_cb(void*, const char*) {}
void contract_rsdb_message_cb(void*, const char*, const char*, size_t) {}
void contract_rsdb_sync_event_cb(void*, const char*, const char*) {}
void contract_rsdb_sync_report_cb(void*, const char*) {}
void contract_rsdb_sentinel_failover_cb(void*, const char*) {}
void contract_rsdb_failover_role_cb(void*, const char*) {}
char* contract_rsdb_sync_merge_cb(void*, const char*, const char*, const char*, const char*) { return nullptr; }
void contract_rsdb_metrics_drop_cb(void*, const char*, uint64_t, const char*) {}
void contract_rsdb_metrics_failure_cb(void*, const char*, const char*) {}
void contract_rsdb_metrics_alert_cb(void*, const char*) {}
void contract_rsdb_health_alert_cb(void*, const char*) {}
void contract_rsdb_wal_gap_cb(void*, const char*) {}

struct HealthClose {
    void operator()(rsdb_health* h) const { rsdb_health_close(h); }
};
using HealthPtr = std::unique_ptr<rsdb_health, HealthClose>;

// Valid values of the input structs the generated cases pass.
const rsdb_metrics_field kContractFields[] = {{"value", RSDB_METRICS_FLOAT, 1.0, 0, 0, 0, nullptr}};
const rsdb_metrics_point kContractPoint = {"contract", nullptr, 0, kContractFields, 1, 0, 0};
const rsdb_stream_metrics kContractStream = {"contract", 1, 1000.0, 30.0, 1280, 720, 1.0, 1};

// The functions without pointer parameters: each must work without any handle.
void contract_call_without_pointers_rsdb_version() {
    ASSERT_NE(rsdb_version(), nullptr);
    EXPECT_FALSE(std::string(rsdb_version()).empty());
}
void contract_call_without_pointers_rsdb_last_error() {
    EXPECT_EQ(rsdb_config_new(nullptr), RSDB_ERR_NULL);
    ASSERT_NE(rsdb_last_error(), nullptr);
    EXPECT_FALSE(std::string(rsdb_last_error()).empty());
}
void contract_call_without_pointers_rsdb_last_error_code() {
    EXPECT_EQ(rsdb_config_new(nullptr), RSDB_ERR_NULL);
    EXPECT_EQ(rsdb_last_error_code(), RSDB_ERR_NULL);
}
void contract_call_without_pointers_rsdb_status_name() {
    EXPECT_STREQ(rsdb_status_name(RSDB_OK), "ok");
    EXPECT_STREQ(rsdb_status_name(RSDB_ERR_NULL), "null argument");
    EXPECT_STREQ(rsdb_status_name(-12345), "internal error");
}

class CContract : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure()) return;
        std::string tmpl = (std::filesystem::temp_directory_path() / "rsdb-gt-contract-XXXXXX").string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        ASSERT_NE(mkdtemp(buf.data()), nullptr);
        dir_ = buf.data();
        const char* key = std::getenv("ROOTSTREAM_MASTER_KEY");
        const std::string master_key =
            key != nullptr && *key != '\0' ? key : std::string(64, 'a');

        rsdb_config* cfg = nullptr;
        check(rsdb_config_new(&cfg), "rsdb_config_new");
        cfg_.reset(cfg);
        check(rsdb_config_set(cfg, "database_url", db_url().c_str()), "database_url");
        check(rsdb_config_set(cfg, "redis_url", redis_url().c_str()), "redis_url");
        check(rsdb_config_set(cfg, "backup_dir", (dir_ + "/backups").c_str()), "backup_dir");
        check(rsdb_config_set(cfg, "master_key", master_key.c_str()), "master_key");

        rsdb_db* db = nullptr;
        check(rsdb_db_open(cfg, &db), "rsdb_db_open");
        db_.reset(db);
        check(rsdb_db_migrate(db, nullptr), "rsdb_db_migrate");
        rsdb_redis* redis = nullptr;
        check(rsdb_redis_open(cfg, &redis), "rsdb_redis_open");
        redis_.reset(redis);
        rsdb_tx* tx = nullptr;
        check(rsdb_db_begin(db, &tx), "rsdb_db_begin");
        tx_.reset(tx);
        rsdb_users* users = nullptr;
        check(rsdb_users_new(db, &users), "rsdb_users_new");
        users_.reset(users);
        rsdb_streams* streams = nullptr;
        check(rsdb_streams_new(db, redis, &streams), "rsdb_streams_new");
        streams_.reset(streams);
        rsdb_stream_sessions* stream_sessions = nullptr;
        check(rsdb_stream_sessions_new(db, &stream_sessions), "rsdb_stream_sessions_new");
        stream_sessions_.reset(stream_sessions);
        rsdb_events* events = nullptr;
        check(rsdb_events_new(db, &events), "rsdb_events_new");
        events_.reset(events);
        rsdb_sessions* sessions = nullptr;
        check(rsdb_sessions_new(cfg, db, redis, &sessions), "rsdb_sessions_new");
        sessions_.reset(sessions);
        rsdb_mfa* mfa = nullptr;
        check(rsdb_mfa_new(cfg, db, redis, &mfa), "rsdb_mfa_new");
        mfa_.reset(mfa);
        rsdb_backup* backup = nullptr;
        check(rsdb_backup_new(cfg, db, &backup), "rsdb_backup_new");
        backup_.reset(backup);
        rsdb_recovery* recovery = nullptr;
        check(rsdb_recovery_new(cfg, db, &recovery), "rsdb_recovery_new");
        recovery_.reset(recovery);
        rsdb_sync* sync = nullptr;
        const std::string ns = sync_namespace(prefix());
        check(rsdb_sync_open(cfg, redis, db, sync_options(ns, "contract").c_str(), &sync), "rsdb_sync_open");
        sync_.reset(sync);
        rsdb_snapshots* snapshots = nullptr;
        check(rsdb_snapshots_new(db, sync, &snapshots), "rsdb_snapshots_new");
        snapshots_.reset(snapshots);
        // With a --sentinel stack, a manager for the rsdb_sentinel_* cases (they skip without).
        if (auto env = sentinel_env()) {
            rsdb_config* scfg = nullptr;
            check(rsdb_config_new(&scfg), "rsdb_config_new");
            ConfigPtr owned(scfg);
            check(set_sentinel_config(scfg, *env), "sentinel config");
            rsdb_sentinel* sentinel = nullptr;
            check(rsdb_sentinel_open(scfg, &sentinel), "rsdb_sentinel_open");
            sentinel_.reset(sentinel);
        }
        // A replication manager over a node that does not exist: opening contacts nothing.
        rsdb_replication* replication = nullptr;
        check(rsdb_replication_open(cfg, "p1=postgres://postgres@127.0.0.1:1/x", nullptr, nullptr, &replication),
              "rsdb_replication_open");
        replication_.reset(replication);
        // A failover manager on nodes and an etcd that do not exist: it opens without contacting
        // anything, and every case fails fast before or at its first request.
        {
            rsdb_config* fcfg = nullptr;
            check(rsdb_config_new(&fcfg), "rsdb_config_new");
            ConfigPtr owned(fcfg);
            check(set_unreachable_ha_config(fcfg), "failover config");
            rsdb_failover* failover = nullptr;
            check(rsdb_failover_open(fcfg, "{\"etcd_timeout_ms\": 200, \"check_timeout_ms\": 200}", &failover),
                  "rsdb_failover_open");
            failover_.reset(failover);
        }
        // Metrics handles: nothing is sent while they are made; the client points at the
        // stack's InfluxDB, or a closed port without one (the cases fail before any request).
        const char* influx = std::getenv("ROOTSTREAM_INFLUX_URL");
        const std::string influx_url = influx != nullptr && *influx != '\0'
                                           ? influx
                                           : "http://127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port());
        rsdb_metrics_client* mc = nullptr;
        check(rsdb_metrics_client_new_v1(influx_url.c_str(), "rsdb_contract", nullptr, &mc), "rsdb_metrics_client_new_v1");
        metrics_client_.reset(mc);
        rsdb_metrics_writer* mw = nullptr;
        check(rsdb_metrics_writer_new(mc, "{\"log_drops\": false, \"shutdown_timeout_ms\": 100}", &mw),
              "rsdb_metrics_writer_new");
        metrics_writer_.reset(mw);
        rsdb_metrics_collector* mcol = nullptr;
        check(rsdb_metrics_collector_new(&mcol), "rsdb_metrics_collector_new");
        metrics_collector_.reset(mcol);
        rsdb_metrics_reporter* mr = nullptr;
        check(rsdb_metrics_reporter_new(mc, &mr), "rsdb_metrics_reporter_new");
        metrics_reporter_.reset(mr);
        // A health monitor of the fixture's pool (never started; the cases fail before a check).
        rsdb_health* health = nullptr;
        check(rsdb_health_open(db, "{}", &health), "rsdb_health_open");
        health_.reset(health);
    }

    void TearDown() override {
        health_.reset();
        replication_.reset();
        failover_.reset();
        sentinel_.reset();
        metrics_reporter_.reset();
        metrics_collector_.reset();
        metrics_writer_.reset();
        metrics_client_.reset();
        snapshots_.reset();
        sync_.reset();
        recovery_.reset();
        backup_.reset();
        mfa_.reset();
        sessions_.reset();
        events_.reset();
        stream_sessions_.reset();
        streams_.reset();
        users_.reset();
        tx_.reset();
        redis_.reset();
        db_.reset();
        cfg_.reset();
        if (!dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
        }
        StackTest::TearDown();
    }

    std::string dir_;
    ConfigPtr cfg_;
    DbPtr db_;
    RedisPtr redis_;
    TxPtr tx_;
    UsersPtr users_;
    StreamsPtr streams_;
    StreamSessionsPtr stream_sessions_;
    EventsPtr events_;
    SessionsPtr sessions_;
    MfaPtr mfa_;
    BackupPtr backup_;
    RecoveryPtr recovery_;
    SyncPtr sync_;
    SnapshotsPtr snapshots_;
    MetricsClientPtr metrics_client_;
    MetricsWriterPtr metrics_writer_;
    MetricsCollectorPtr metrics_collector_;
    MetricsReporterPtr metrics_reporter_;
    SentinelPtr sentinel_;
    HealthPtr health_;
    rsdb_test::ReplicationPtr replication_;
    FailoverPtr failover_;
};

#include "c_contract_cases.inc"

// The generated table is the header's list of functions; this pins that the generator saw them
// all (a parse that silently skipped declarations would shrink it).
TEST(CContractTable, lists_every_function_once_including_the_core_ones) {
    std::set<std::string> names(std::begin(kDeclaredFunctions), std::end(kDeclaredFunctions));
    EXPECT_EQ(names.size(), std::size(kDeclaredFunctions)) << "a function is listed twice";
    for (const char* expected : {"rsdb_version", "rsdb_string_free", "rsdb_config_new", "rsdb_db_open",
                                 "rsdb_redis_command", "rsdb_backup_create", "rsdb_wal_fetch"}) {
        EXPECT_EQ(names.count(expected), 1u) << expected;
    }
    EXPECT_GE(names.size(), 130u);
}

}  // namespace
