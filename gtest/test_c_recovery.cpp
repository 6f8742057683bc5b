// Physical backups, WAL archiving and point-in-time recovery (rsdb_backup_create/delete,
// rsdb_recovery_*, rsdb_wal_push/fetch) through the C API, against the stack's PostgreSQL cluster,
// whose archive_command stores WAL into the stack's repository with the rsdb of this build (see
// scripts/stack.sh, setup_archiving). Every test has its own database for the backup history and
// a `ledger` table whose ids show which commits a restore brought back; it takes its own full
// physical backup and deletes every backup it took afterwards. Restored clusters run in data
// directories of their own on free ports and are stopped and removed by the test.
#include "backup_util.h"
#include "c_api_util.h"
#include "recovery_util.h"
#include "rootstream_db.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using json = nlohmann::json;
using rsdb_test::last_error;
using namespace rsdb_test::capi;
using rsdb_test::backup::read_file;
using rsdb_test::backup::ScratchDatabases;
using rsdb_test::backup::TempDir;
using rsdb_test::backup::write_file;
using rsdb_test::recovery::Archive;
using rsdb_test::recovery::DataDir;
using rsdb_test::recovery::EventLog;
using rsdb_test::recovery::ids_of;
using rsdb_test::recovery::json_to_log;
using rsdb_test::recovery::kClockUtcSql;
using rsdb_test::recovery::kLedgerDdl;
using rsdb_test::recovery::kLedgerIds;
using rsdb_test::recovery::kLedgerInsert;
using rsdb_test::recovery::kScratchDatabases;
using rsdb_test::recovery::ledger_params;
using rsdb_test::recovery::RestoreFileOnExit;
using rsdb_test::recovery::restored_url;
using rsdb_test::recovery::unused_wal_name;
using rsdb_test::recovery::WellFormedProgress;

namespace {

using Ids = std::vector<int64_t>;

/// A one-connection pool on `url`.
DbPtr open_db(const std::string& url) {
    rsdb_config* raw = nullptr;
    check(rsdb_config_new(&raw), "rsdb_config_new");
    ConfigPtr cfg(raw);
    check(rsdb_config_set(cfg.get(), "database_url", url.c_str()), "rsdb_config_set(database_url)");
    check(rsdb_config_set(cfg.get(), "pool_size", "1"), "rsdb_config_set(pool_size)");
    rsdb_db* db = nullptr;
    check(rsdb_db_open(cfg.get(), &db), "rsdb_db_open(" + url + ")");
    return DbPtr(db);
}

json query(rsdb_db* db, const std::string& sql, const json& params = json::array()) {
    OutString out;
    check(rsdb_db_query(db, sql.c_str(), params.dump().c_str(), out.out()), sql);
    return out.parse();
}

/// Stops a restored server through the API (DataDir's safety net).
DataDir::Stopper stopper(const rsdb_recovery* recovery) {
    return [recovery](const std::string& dir) {
        check(rsdb_recovery_stop_cluster(recovery, dir.c_str()), "stop " + dir);
    };
}

/// A restore to look at: the report and the ledger ids the restored database holds.
struct Restored {
    json report;
    Ids ids;
};

class CRecoveryTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        ASSERT_TRUE(rsdb_test::recovery::prepare_archive(stack(), &archive_));
        ASSERT_NO_FATAL_FAILURE(make_config(true, &cfg_));
        rsdb_db* db = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg_.get(), &db));
        db_.reset(db);
        ASSERT_RSDB_OK(rsdb_db_migrate(db, nullptr));
        ASSERT_RSDB_OK(rsdb_db_execute(db, kLedgerDdl, nullptr, nullptr));
        rsdb_backup* b = nullptr;
        ASSERT_RSDB_OK(rsdb_backup_new(cfg_.get(), db, &b));
        backup_.reset(b);
    }

    void TearDown() override {
        // Newest first: an incremental goes before the backup it builds on.
        if (backup_) {
            for (auto it = taken_.rbegin(); it != taken_.rend(); ++it) {
                const int rc = rsdb_backup_delete(backup_.get(), it->c_str(), nullptr);
                EXPECT_TRUE(rc == RSDB_OK || rc == RSDB_ERR_NOT_FOUND) << "deleting " << *it << ": " << last_error();
            }
        }
        backup_.reset();
        db_.reset();
        cfg_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// The archive's settings (repository, master key, tools, rsdb_path), and this test's
    /// database when `with_database`.
    void make_config(bool with_database, ConfigPtr* out) {
        rsdb_config* cfg = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&cfg));
        out->reset(cfg);
        if (with_database) {
            ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
            ASSERT_RSDB_OK(rsdb_config_set(cfg, "pool_size", "4"));
        }
        for (const auto& [k, v] : archive_.settings) {
            ASSERT_RSDB_OK(rsdb_config_set(cfg, k.c_str(), v.c_str())) << k << " = " << v;
        }
    }

    /// A recovery handle: on this test's database, or from the repository alone.
    RecoveryPtr make_recovery(bool with_database) {
        rsdb_recovery* r = nullptr;
        if (with_database) {
            check(rsdb_recovery_new(cfg_.get(), db_.get(), &r), "rsdb_recovery_new(cfg, db)");
            return RecoveryPtr(r);
        }
        rsdb_config* raw = nullptr;
        check(rsdb_config_new(&raw), "rsdb_config_new");
        ConfigPtr cfg(raw);
        for (const auto& [k, v] : archive_.settings) check(rsdb_config_set(raw, k.c_str(), v.c_str()), k);
        check(rsdb_recovery_new(raw, nullptr, &r), "rsdb_recovery_new(cfg, NULL)");
        return RecoveryPtr(r);
    }

    void insert(int id) {
        check(rsdb_db_execute(db_.get(), kLedgerInsert, ledger_params(id).dump().c_str(), nullptr), "insert");
    }

    /// Takes a backup of `kind`; it is deleted again in TearDown.
    json create(const char* kind) {
        OutString out;
        check(rsdb_backup_create(backup_.get(), kind, out.out()), std::string("rsdb_backup_create(") + kind + ")");
        json m = out.parse();
        taken_.push_back(m.at("backup_id").get<std::string>());
        return m;
    }

    std::string server_clock() { return query(db_.get(), kClockUtcSql).at(0).at("t").get<std::string>(); }

    /// This test's history row of a backup (status, backup_type, method, parent_backup_id).
    json history(const std::string& id) {
        const json rows = query(db_.get(),
                                "SELECT status, backup_type, method, parent_backup_id FROM backup_history "
                                "WHERE backup_id = $1",
                                json::array({id}));
        return rows.empty() ? json::object() : rows.at(0);
    }

    std::string history_status(const std::string& id) { return history(id).value("status", "<none>"); }

    /// Restores with `options` into a new data directory, keeping the server running, reads the
    /// ledger ids of this test's database there, stops the server and removes the directory.
    Restored restore_and_read(const rsdb_recovery* recovery, json options) {
        DataDir dir("restore", stopper(recovery));
        options["data_dir"] = dir.path();
        options["keep_running"] = true;
        OutString out;
        check(rsdb_recovery_restore_cluster(recovery, options.dump().c_str(), out.out()),
              "rsdb_recovery_restore_cluster(" + options.dump() + ")");
        Restored r;
        r.report = out.parse();
        EXPECT_EQ(r.report.at("data_dir"), dir.path());
        EXPECT_EQ(r.report.at("running"), true) << r.report.dump();
        EXPECT_TRUE(dir.server_running());
        {
            DbPtr restored = open_db(restored_url(r.report.at("port").get<int>(), db_name()));
            r.ids = ids_of(query(restored.get(), kLedgerIds));
        }
        EXPECT_RSDB_OK(rsdb_recovery_stop_cluster(recovery, dir.path().c_str()));
        EXPECT_FALSE(dir.server_running()) << "stop_cluster left the server of " << dir.path() << " running";
        EXPECT_TRUE(dir.remove());
        return r;
    }

    Archive archive_;
    ConfigPtr cfg_;
    DbPtr db_;
    BackupPtr backup_;
    std::vector<std::string> taken_;
};

int64_t ledger_rows(const json& report, const std::string& db) {
    return report.at("databases").at(db).at("public.ledger").get<int64_t>();
}

// ---------------------------------------------------------------- chains and point in time

TEST_F(CRecoveryTest, FullIncrementalAndDifferentialRestoreToTheirOwnEndsAndPitrStopsBetweenTwoCommits) {
    insert(1);
    const json full = create("full");
    const std::string full_id = full.at("backup_id").get<std::string>();
    EXPECT_EQ(full_id.rfind("base-", 0), 0u) << full_id;
    EXPECT_EQ(full.at("backup_type"), "full");
    ASSERT_TRUE(full.contains("physical")) << full.dump();
    EXPECT_TRUE(full["physical"].at("parent_backup_id").is_null()) << full.dump();
    EXPECT_EQ(full["physical"].at("base_backup_id"), full_id);

    insert(2);
    const json incr = create("incremental");
    const std::string incr_id = incr.at("backup_id").get<std::string>();
    EXPECT_EQ(incr.at("backup_type"), "incremental");
    EXPECT_EQ(incr.at("physical").at("parent_backup_id"), full_id);

    insert(3);
    // A moment between two commits: 3 is in, 4 is not.
    const std::string between = server_clock();
    ASSERT_EQ(between.back(), 'Z') << between;
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    insert(4);
    const json diff = create("differential");
    const std::string diff_id = diff.at("backup_id").get<std::string>();
    EXPECT_EQ(diff.at("backup_type"), "differential");
    EXPECT_EQ(diff.at("physical").at("parent_backup_id"), full_id) << "a differential builds on the full backup";
    // After every backup: no restore to a backup's end may bring it back.
    insert(5);

    for (const auto& id : {full_id, incr_id, diff_id}) {
        EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr)) << id;
    }
    // The history rows carry the method and the chain.
    EXPECT_EQ(history(full_id), (json{{"status", "completed"}, {"backup_type", "full"}, {"method", "pg_basebackup"},
                                      {"parent_backup_id", nullptr}}));
    EXPECT_EQ(history(incr_id), (json{{"status", "completed"}, {"backup_type", "incremental"}, {"method", "wal"},
                                      {"parent_backup_id", full_id}}));
    EXPECT_EQ(history(diff_id), (json{{"status", "completed"}, {"backup_type", "differential"}, {"method", "wal"},
                                      {"parent_backup_id", full_id}}));

    // Recovery from the repository and keys alone.
    RecoveryPtr recovery = make_recovery(false);
    EventLog progress;
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), json_to_log, &progress));

    Restored r = restore_and_read(recovery.get(), {{"backup_id", full_id}});
    EXPECT_EQ(r.ids, (Ids{1}));
    EXPECT_EQ(r.report.at("backup_id"), full_id);
    EXPECT_EQ(r.report.at("chain"), json::array({full_id}));
    EXPECT_EQ(ledger_rows(r.report, db_name()), 1) << r.report.dump();
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }
    EXPECT_TRUE(WellFormedProgress(progress.events()));
    for (const auto& e : progress.events()) {
        if (e.at("phase") == "done") {
            EXPECT_EQ(e.at("backup_id"), full_id) << e.dump();
        }
        if (e.at("phase") == "restore") {
            ASSERT_TRUE(e.at("bytes_total").is_number_unsigned()) << "a restore knows its total: " << e.dump();
            EXPECT_LE(e.at("bytes_done").get<uint64_t>(), e.at("bytes_total").get<uint64_t>()) << e.dump();
        }
    }

    // NULL stops the reports; a fixed port and no report.
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), nullptr, nullptr));
    progress.clear();
    {
        DataDir dir("fixed-port", stopper(recovery.get()));
        const int port = rsdb_test::unused_tcp_port();
        ASSERT_GT(port, 0);
        const json options = {{"data_dir", dir.path()}, {"backup_id", incr_id}, {"port", port}, {"keep_running", true}};
        ASSERT_RSDB_OK(rsdb_recovery_restore_cluster(recovery.get(), options.dump().c_str(), nullptr));
        ASSERT_TRUE(dir.server_running());
        {
            DbPtr restored = open_db(restored_url(port, db_name()));
            EXPECT_EQ(ids_of(query(restored.get(), kLedgerIds)), (Ids{1, 2}));
        }
        ASSERT_RSDB_OK(rsdb_recovery_stop_cluster(recovery.get(), dir.path().c_str()));
        EXPECT_FALSE(dir.server_running());
    }
    EXPECT_TRUE(progress.events().empty()) << progress.summary();

    r = restore_and_read(recovery.get(), {{"backup_id", diff_id}});
    EXPECT_EQ(r.ids, (Ids{1, 2, 3, 4}));
    EXPECT_EQ(r.report.at("chain"), json::array({full_id, diff_id})) << "a differential needs only the full";
    EXPECT_EQ(ledger_rows(r.report, db_name()), 4);

    // Point in time: from the full backup plus archived WAL, to the moment between 3 and 4.
    r = restore_and_read(recovery.get(), {{"backup_id", full_id}, {"target_time", between}});
    EXPECT_EQ(r.ids, (Ids{1, 2, 3})) << "kept the commit before the target, not the one after";
    EXPECT_EQ(r.report.at("chain"), json::array({full_id}));
    bool stopped_before_commit = false;
    for (const auto& line : r.report.at("recovery_log")) {
        stopped_before_commit |= line.get<std::string>().find("recovery stopping before commit") != std::string::npos;
    }
    EXPECT_TRUE(stopped_before_commit) << r.report.at("recovery_log").dump();

    // A target before the chosen backup ended is refused before anything is written.
    DataDir early("early", stopper(recovery.get()));
    const json options = {{"data_dir", early.path()}, {"backup_id", diff_id}, {"target_time", between}};
    OutString out;
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), options.dump().c_str(), out.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "before backup"));
    EXPECT_TRUE(out.is_null());
    EXPECT_FALSE(early.exists());
}

// ---------------------------------------------------------------- test restores

TEST_F(CRecoveryTest, TestRestoreChecksAPhysicalAndALogicalBackupInScratchSpace) {
    insert(1);
    EventLog backup_progress;
    ASSERT_RSDB_OK(rsdb_backup_set_progress(backup_.get(), json_to_log, &backup_progress));
    const json full = create("full");
    const std::string full_id = full.at("backup_id").get<std::string>();
    EXPECT_TRUE(backup_progress.has_phase("done")) << backup_progress.summary();
    EXPECT_TRUE(WellFormedProgress(backup_progress.events()));
    for (const auto& e : backup_progress.events()) EXPECT_EQ(e.at("backup_id"), full_id) << e.dump();
    ASSERT_RSDB_OK(rsdb_backup_set_progress(backup_.get(), nullptr, nullptr));
    backup_progress.clear();

    const json logical = create("logical");
    const std::string logical_id = logical.at("backup_id").get<std::string>();
    EXPECT_TRUE(backup_progress.events().empty()) << "reports after NULL: " << backup_progress.summary();
    EXPECT_EQ(history(logical_id).value("method", ""), "pg_dump");
    EXPECT_FALSE(logical.contains("physical")) << logical.dump();

    RecoveryPtr recovery = make_recovery(true);
    EventLog progress;
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), json_to_log, &progress));
    OutString out;
    ASSERT_RSDB_OK(rsdb_recovery_test_restore(recovery.get(), full_id.c_str(), out.out()));
    json r = out.parse();
    EXPECT_EQ(r.at("backup_id"), full_id);
    EXPECT_EQ(r.at("kind"), "physical");
    EXPECT_GT(r.at("tables_checked").get<int64_t>(), 0) << r.dump();
    EXPECT_GE(r.at("rows").get<int64_t>(), 1) << r.dump();
    EXPECT_GT(r.at("seconds").get<double>(), 0.0);
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }

    ASSERT_RSDB_OK(rsdb_recovery_test_restore(recovery.get(), logical_id.c_str(), out.out()));
    r = out.parse();
    EXPECT_EQ(r.at("backup_id"), logical_id);
    EXPECT_EQ(r.at("kind"), "logical");
    const json& counts = logical.at("row_counts");
    int64_t rows = 0;
    for (const auto& [table, n] : counts.items()) rows += n.get<int64_t>();
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), counts.size()) << r.dump();
    EXPECT_EQ(r.at("rows").get<int64_t>(), rows) << r.dump();
    EXPECT_EQ(counts.at("public.ledger").get<int64_t>(), 1) << logical.dump();
    EXPECT_RSDB_OK(rsdb_recovery_test_restore(recovery.get(), logical_id.c_str(), nullptr));
    EXPECT_EQ(query(db_.get(), kScratchDatabases).at(0).at("n"), "0") << "the scratch databases are dropped";

    // From the repository alone there is no server to restore a logical backup into.
    RecoveryPtr bare = make_recovery(false);
    EXPECT_TRUE(Fails(rsdb_recovery_test_restore(bare.get(), logical_id.c_str(), out.out()), RSDB_ERR_CONFIG,
                      "database"));
    EXPECT_TRUE(out.is_null());
}

// ---------------------------------------------------------------- repository

TEST_F(CRecoveryTest, ListRepositoryReadsTheSignedManifestsWithoutTheDatabase) {
    const json logical = create("logical");
    insert(1);
    const json full = create("full");

    RecoveryPtr recovery = make_recovery(false);
    OutString out;
    ASSERT_RSDB_OK(rsdb_recovery_list_repository(recovery.get(), out.out()));
    const json listed = out.parse();
    ASSERT_TRUE(listed.is_array()) << listed.dump();
    int at_logical = -1;
    int at_full = -1;
    for (size_t i = 0; i < listed.size(); ++i) {
        ASSERT_TRUE(listed[i].contains("backup_id") && listed[i].contains("backup_type")) << listed[i].dump();
        if (listed[i]["backup_id"] == logical["backup_id"]) at_logical = static_cast<int>(i);
        if (listed[i]["backup_id"] == full["backup_id"]) at_full = static_cast<int>(i);
    }
    ASSERT_GE(at_logical, 0) << "the logical backup is not listed";
    ASSERT_GE(at_full, 0) << "the physical backup is not listed";
    EXPECT_LT(at_logical, at_full) << "oldest first";
    EXPECT_EQ(listed[at_logical], logical) << "the listed manifest is the one create returned";
    EXPECT_EQ(listed[at_full], full);
    EXPECT_FALSE(listed[at_logical].contains("physical"));
    EXPECT_TRUE(listed[at_full].at("physical").is_object());
}

TEST_F(CRecoveryTest, ALogicalBackupRestoresIntoAnEmptyDatabaseFromTheRepositoryAlone) {
    insert(1);
    insert(2);
    const json logical = create("logical");
    const std::string logical_id = logical.at("backup_id").get<std::string>();
    const std::string full_id = create("full").at("backup_id").get<std::string>();
    ScratchDatabases scratch(stack().database_url);

    RecoveryPtr recovery = make_recovery(false);
    EventLog progress;
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), json_to_log, &progress));
    const std::string target = scratch.create();
    OutString report;
    ASSERT_RSDB_OK(rsdb_recovery_restore_database(recovery.get(), logical_id.c_str(), target.c_str(), report.out()));
    const json r = report.parse();
    EXPECT_EQ(r.at("backup_id"), logical_id);
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), logical.at("row_counts").size()) << r.dump();
    EXPECT_TRUE(progress.has_phase("done")) << progress.summary();
    EXPECT_TRUE(WellFormedProgress(progress.events()));
    {
        DbPtr restored = open_db(target);
        EXPECT_EQ(ids_of(query(restored.get(), kLedgerIds)), (Ids{1, 2}));
    }
    const std::string second = scratch.create();
    EXPECT_RSDB_OK(rsdb_recovery_restore_database(recovery.get(), logical_id.c_str(), second.c_str(), nullptr));
    {
        DbPtr restored = open_db(second);
        EXPECT_EQ(ids_of(query(restored.get(), kLedgerIds)), (Ids{1, 2}));
    }

    // Each kind goes its own way: a physical backup is no dump, a logical one no cluster.
    const std::string third = scratch.create();
    EXPECT_TRUE(Fails(rsdb_recovery_restore_database(recovery.get(), full_id.c_str(), third.c_str(), report.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "physical"));
    EXPECT_TRUE(report.is_null());
    DataDir dir("logical", stopper(recovery.get()));
    const json options = {{"data_dir", dir.path()}, {"backup_id", logical_id}};
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), options.dump().c_str(), report.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "logical"));
    EXPECT_TRUE(report.is_null());
    EXPECT_FALSE(dir.exists());
}

TEST_F(CRecoveryTest, InitRepositoryCreatesTheDirectoryAndIsIdempotent) {
    ASSERT_RSDB_OK(rsdb_backup_init_repository(backup_.get())) << "the stack's repository exists already";
    TempDir parent;
    const std::string fresh = parent.path() + "/repo/nested";
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(true, &cfg));
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "backup_dir", fresh.c_str()));
    rsdb_backup* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &raw));
    BackupPtr b(raw);
    EXPECT_FALSE(std::filesystem::exists(fresh));
    ASSERT_RSDB_OK(rsdb_backup_init_repository(b.get()));
    EXPECT_TRUE(std::filesystem::is_directory(fresh));
    ASSERT_RSDB_OK(rsdb_backup_init_repository(b.get()));
    OutString m;
    ASSERT_RSDB_OK(rsdb_backup_create(b.get(), "logical", m.out()));
    EXPECT_TRUE(std::filesystem::exists(fresh + "/" + m.parse().at("backup_id").get<std::string>() + "/manifest.json"));

    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "backup_dir", "/proc/rsdb-nope/repo"));
    ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &raw));
    BackupPtr bad(raw);
    EXPECT_TRUE(Fails(rsdb_backup_init_repository(bad.get()), RSDB_ERR_IO, "/proc/rsdb-nope"));
}

// ---------------------------------------------------------------- integrity

TEST_F(CRecoveryTest, AFlippedByteInABaseBackupFailsVerifyAndRestoreClusterLeavesNoDataDirectory) {
    insert(1);
    const std::string id = create("full").at("backup_id").get<std::string>();
    const std::string file = archive_.backup_file(id, "base.tar.zst.enc");
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr));
    {
        RestoreFileOnExit repair(file);
        std::string bad = repair.original();
        ASSERT_GT(bad.size(), 1000u);
        bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x01);
        write_file(file, bad);

        OutString manifest;
        EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), id.c_str(), manifest.out()), RSDB_ERR_INTEGRITY,
                          "base.tar.zst.enc: chunk"));
        EXPECT_TRUE(manifest.is_null());

        RecoveryPtr recovery = make_recovery(false);
        DataDir dir("flipped", stopper(recovery.get()));
        const json options = {{"data_dir", dir.path()}, {"backup_id", id}, {"keep_running", true}};
        OutString report;
        EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), options.dump().c_str(), report.out()),
                          RSDB_ERR_INTEGRITY, "chunk"));
        EXPECT_TRUE(report.is_null());
        EXPECT_FALSE(dir.exists()) << "a refused restore left " << dir.path() << " behind";
        EXPECT_TRUE(Fails(rsdb_recovery_test_restore(recovery.get(), id.c_str(), report.out()), RSDB_ERR_INTEGRITY));
    }
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr)) << "the repaired backup verifies";
}

// ---------------------------------------------------------------- delete and dependencies

TEST_F(CRecoveryTest, DeleteIsRefusedForABackupAnIncrementalBuildsOnAndWorksOtherwise) {
    insert(1);
    const std::string full_id = create("full").at("backup_id").get<std::string>();
    insert(2);
    const std::string incr_id = create("incremental").at("backup_id").get<std::string>();

    uint64_t freed = 12345;
    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), full_id.c_str(), &freed), RSDB_ERR_CONFLICT, incr_id));
    EXPECT_EQ(freed, 12345u) << "a refused delete reports nothing";
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), full_id.c_str(), nullptr)) << "the refused delete kept it whole";
    EXPECT_EQ(history_status(full_id), "completed");

    ASSERT_RSDB_OK(rsdb_backup_delete(backup_.get(), incr_id.c_str(), &freed));
    EXPECT_GT(freed, 0u);
    EXPECT_FALSE(std::filesystem::exists(archive_.backup_dir + "/" + incr_id));
    EXPECT_EQ(history_status(incr_id), "deleted");

    ASSERT_RSDB_OK(rsdb_backup_delete(backup_.get(), full_id.c_str(), nullptr)) << "nothing builds on it any more";
    EXPECT_FALSE(std::filesystem::exists(archive_.backup_dir + "/" + full_id));
    EXPECT_EQ(history_status(full_id), "deleted");
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), full_id.c_str(), nullptr), RSDB_ERR_NOT_FOUND));
    // With both gone there is nothing an incremental could build on.
    EXPECT_TRUE(Fails(rsdb_backup_create(backup_.get(), "incremental", nullptr), RSDB_ERR_STATE));

    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), "full-20000101T000000Z-000000", &freed), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), "../etc", &freed), RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(CRecoveryTest, AnIncrementalOrDifferentialWithNoPhysicalFullInThisHistoryIsAStateError) {
    // A logical backup is nothing WAL can be replayed onto.
    create("logical");
    for (const char* kind : {"incremental", "differential"}) {
        SCOPED_TRACE(kind);
        OutString manifest;
        EXPECT_TRUE(
            Fails(rsdb_backup_create(backup_.get(), kind, manifest.out()), RSDB_ERR_STATE, "full physical backup"));
        EXPECT_TRUE(manifest.is_null());
    }
    OutString manifest;
    EXPECT_TRUE(
        Fails(rsdb_backup_create(backup_.get(), "weekly", manifest.out()), RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_TRUE(Fails(rsdb_backup_create(backup_.get(), "", manifest.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(manifest.is_null());
}

// ---------------------------------------------------------------- WAL archive

TEST_F(CRecoveryTest, WalPushIsIdempotentRefusesOtherContentsAndWalFetchRoundTrips) {
    // Only the repository and key: no database.
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(false, &cfg));
    TempDir scratch;
    const std::string name = unused_wal_name(archive_);
    const std::string object = archive_.wal_object(name);
    struct RemoveObject {
        std::string path;
        ~RemoveObject() {
            std::error_code ec;
            std::filesystem::remove(path, ec);
        }
    } remove_object{object};
    const std::string segment = scratch.path() + "/" + name;
    const std::string data = rsdb_test::recovery::wal_segment_bytes();
    write_file(segment, data);

    int already = -1;
    ASSERT_RSDB_OK(rsdb_wal_push(cfg.get(), segment.c_str(), &already));
    EXPECT_EQ(already, 0) << "stored";
    ASSERT_TRUE(std::filesystem::exists(object));
    const std::string stored = read_file(object);
    EXPECT_EQ(stored.find(data.substr(4096, 256)), std::string::npos) << "the archived object holds the data in plain";
    // PostgreSQL retries a segment whose archiving it did not see succeed: same answer.
    already = -1;
    ASSERT_RSDB_OK(rsdb_wal_push(cfg.get(), segment.c_str(), &already));
    EXPECT_EQ(already, 1) << "already archived";
    EXPECT_RSDB_OK(rsdb_wal_push(cfg.get(), segment.c_str(), nullptr));

    // A different file of that name is refused and the archived one kept.
    write_file(segment, "something else");
    already = -1;
    EXPECT_TRUE(Fails(rsdb_wal_push(cfg.get(), segment.c_str(), &already), RSDB_ERR_CONFLICT, name));
    EXPECT_EQ(read_file(object), stored);

    const std::string fetched = scratch.path() + "/fetched";
    ASSERT_RSDB_OK(rsdb_wal_fetch(cfg.get(), name.c_str(), fetched.c_str()));
    const std::string back = read_file(fetched);
    EXPECT_EQ(back.size(), data.size());
    EXPECT_TRUE(back == data) << "wal_fetch returned other bytes than were pushed";

    // Never archived: not found, and nothing written.
    const std::string missing = unused_wal_name(archive_);
    const std::string nothing = scratch.path() + "/nothing";
    EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg.get(), missing.c_str(), nothing.c_str()), RSDB_ERR_NOT_FOUND));
    EXPECT_FALSE(std::filesystem::exists(nothing));

    // Names that are not WAL file names.
    for (const std::string& bad : {std::string("../x"), std::string("../../etc/passwd"), std::string("x"),
                                   std::string("00000001000000ff000000aa"), std::string("")}) {
        SCOPED_TRACE("name \"" + bad + "\"");
        EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg.get(), bad.c_str(), nothing.c_str()), RSDB_ERR_INVALID_ARGUMENT));
        EXPECT_FALSE(std::filesystem::exists(nothing));
    }
    const std::string not_wal = scratch.path() + "/notes.txt";
    write_file(not_wal, "hello");
    EXPECT_TRUE(Fails(rsdb_wal_push(cfg.get(), not_wal.c_str(), &already), RSDB_ERR_INVALID_ARGUMENT, "notes.txt"));
    const std::string absent = scratch.path() + "/" + missing;
    EXPECT_TRUE(Fails(rsdb_wal_push(cfg.get(), absent.c_str(), &already), RSDB_ERR_IO, missing));
    EXPECT_FALSE(std::filesystem::exists(archive_.wal_object(missing)));
}

// ---------------------------------------------------------------- restore options

TEST_F(CRecoveryTest, RestoreOptionsAreCheckedAndANonEmptyDataDirectoryIsRefused) {
    RecoveryPtr recovery = make_recovery(false);
    DataDir dir("options", stopper(recovery.get()));
    const std::string d = dir.path();
    struct Case {
        std::string options;
        int code;
        std::string needle;
    };
    const std::vector<Case> cases = {
        {json{{"backup_id", "base-x"}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "data_dir"},
        {json{{"data_dir", ""}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "data_dir"},
        {json{{"data_dir", 7}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "data_dir"},
        {json{{"data_dir", d}, {"colour", "blue"}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "colour"},
        {json{{"data_dir", d}, {"target_time", "yesterday"}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "target_time"},
        {json{{"data_dir", d}, {"target_time", "2026-11-25T10:00:00"}}.dump(), RSDB_ERR_INVALID_ARGUMENT,
         "target_time"},
        {json{{"data_dir", d}, {"target_time", "2026-11-25T10:00:00Z"}, {"latest", true}}.dump(),
         RSDB_ERR_INVALID_ARGUMENT, "exclude"},
        {json{{"data_dir", d}, {"port", 70000}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "port"},
        {json{{"data_dir", d}, {"keep_running", "yes"}}.dump(), RSDB_ERR_INVALID_ARGUMENT, "keep_running"},
        {"[]", RSDB_ERR_INVALID_ARGUMENT, "object"},
        {"{\"data_dir\": ", RSDB_ERR_JSON, ""},
        {json{{"data_dir", d}, {"backup_id", "base-20000101T000000Z-000000"}}.dump(), RSDB_ERR_NOT_FOUND, ""},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.options);
        OutString report;
        EXPECT_TRUE(
            Fails(rsdb_recovery_restore_cluster(recovery.get(), c.options.c_str(), report.out()), c.code, c.needle));
        EXPECT_TRUE(report.is_null());
        EXPECT_FALSE(dir.exists());
    }

    // A data directory that holds anything is refused and left as it was.
    insert(1);
    const std::string id = create("full").at("backup_id").get<std::string>();
    std::filesystem::create_directories(d);
    write_file(d + "/keep.txt", "mine");
    const json options = {{"data_dir", d}, {"backup_id", id}, {"keep_running", true}};
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), options.dump().c_str(), nullptr),
                      RSDB_ERR_INVALID_ARGUMENT, "not empty"));
    EXPECT_EQ(read_file(d + "/keep.txt"), "mine");
    size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(d)) {
        (void)e;
        ++entries;
    }
    EXPECT_EQ(entries, 1u);
    EXPECT_FALSE(dir.server_running());
}

// ---------------------------------------------------------------- schedules by kind

TEST_F(CRecoveryTest, SchedulesTakeAKindAndRefuseAnUnknownKindOrABadCron) {
    EventLog events;
    rsdb_backup_schedule* raw = nullptr;
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(backup_.get(), "0 3 * * *", "weekly", json_to_log, &events, &raw),
                      RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_EQ(raw, nullptr);
    for (const char* cron : {"61 * * * *", "* * * *", "every night"}) {
        SCOPED_TRACE(cron);
        EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(backup_.get(), cron, "full", json_to_log, &events, &raw),
                          RSDB_ERR_INVALID_ARGUMENT));
        EXPECT_EQ(raw, nullptr);
    }

    // A logical backup two days old: the logical schedule reports the run it missed; a schedule
    // of physical full backups has no backup of its kind, so nothing to report.
    create("logical");
    ASSERT_RSDB_OK(rsdb_db_execute(db_.get(), "UPDATE backup_history SET finished_at = now() - interval '2 days'",
                                   nullptr, nullptr));
    ASSERT_RSDB_OK(rsdb_backup_schedule_start_kind(backup_.get(), "0 3 * * *", "full", json_to_log, &events, &raw));
    SchedulePtr physical(raw);
    ASSERT_RSDB_OK(rsdb_backup_schedule_start_kind(backup_.get(), "0 3 * * *", "logical", json_to_log, &events, &raw));
    SchedulePtr logical(raw);
    ASSERT_TRUE(events.wait_for(1, std::chrono::seconds(10))) << "no missed-run report";
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    physical.reset();
    logical.reset();
    const auto got = events.events();
    ASSERT_EQ(got.size(), 1u) << events.summary();
    EXPECT_EQ(got[0].at("event"), "missed") << got[0].dump();
    EXPECT_EQ(got[0].at("kind"), "logical") << got[0].dump();
    EXPECT_EQ(got[0].at("schedule"), "0 3 * * *");
}

// ---------------------------------------------------------------- C API hygiene

TEST_F(CRecoveryTest, NullArgumentsAreRefusedWithErrNullAndOptionalOutputsMayBeNull) {
    RecoveryPtr recovery = make_recovery(false);
    rsdb_recovery* r = recovery.get();
    rsdb_backup* b = backup_.get();
    rsdb_config* cfg = cfg_.get();
    EventLog events;
    OutString out;
    uint64_t freed = 0;
    int already = 0;
    rsdb_backup_schedule* sched = nullptr;
    rsdb_recovery* made = nullptr;
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("rsdb-gt-never-" + rsdb_test::unique_suffix())).string();
    const std::string options = json{{"data_dir", dir}}.dump();
    const char* wal = "000000010000000000000001";
    const std::string wal_path = dir + "/" + wal;
    const std::string target_url = db_url();

    EXPECT_TRUE(Fails(rsdb_backup_create(nullptr, "full", out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_create(b, nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_delete(nullptr, "base-x", &freed), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_delete(b, nullptr, &freed), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_init_repository(nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_set_progress(nullptr, json_to_log, &events), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(nullptr, "0 3 * * *", "full", json_to_log, &events, &sched),
                      RSDB_ERR_NULL));
    EXPECT_TRUE(
        Fails(rsdb_backup_schedule_start_kind(b, nullptr, "full", json_to_log, &events, &sched), RSDB_ERR_NULL));
    EXPECT_TRUE(
        Fails(rsdb_backup_schedule_start_kind(b, "0 3 * * *", nullptr, json_to_log, &events, &sched), RSDB_ERR_NULL));
    EXPECT_TRUE(
        Fails(rsdb_backup_schedule_start_kind(b, "0 3 * * *", "full", nullptr, &events, &sched), RSDB_ERR_NULL));
    EXPECT_TRUE(
        Fails(rsdb_backup_schedule_start_kind(b, "0 3 * * *", "full", json_to_log, &events, nullptr), RSDB_ERR_NULL));
    EXPECT_EQ(sched, nullptr);

    EXPECT_TRUE(Fails(rsdb_recovery_new(nullptr, db_.get(), &made), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_new(nullptr, nullptr, &made), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_new(cfg, db_.get(), nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_new(cfg, nullptr, nullptr), RSDB_ERR_NULL));
    EXPECT_EQ(made, nullptr);
    EXPECT_TRUE(Fails(rsdb_recovery_set_progress(nullptr, json_to_log, &events), RSDB_ERR_NULL));
    EXPECT_TRUE(
        Fails(rsdb_recovery_restore_database(nullptr, "full-x", target_url.c_str(), out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_restore_database(r, nullptr, target_url.c_str(), out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_restore_database(r, "full-x", nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(nullptr, options.c_str(), out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(r, nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_test_restore(nullptr, "base-x", out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_test_restore(r, nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_list_repository(nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_list_repository(r, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_stop_cluster(nullptr, dir.c_str()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_recovery_stop_cluster(r, nullptr), RSDB_ERR_NULL));

    EXPECT_TRUE(Fails(rsdb_wal_push(nullptr, wal_path.c_str(), &already), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_wal_push(cfg, nullptr, &already), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(nullptr, wal, wal_path.c_str()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg, nullptr, wal_path.c_str()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg, wal, nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(out.is_null());
    EXPECT_FALSE(std::filesystem::exists(dir));

    rsdb_recovery_free(nullptr);
    rsdb_backup_schedule_stop(nullptr);
    rsdb_backup_free(nullptr);

    // NULL callbacks stop reporting; optional outputs may be NULL; stopping where no server runs
    // is not an error.
    EXPECT_RSDB_OK(rsdb_backup_set_progress(b, nullptr, nullptr));
    EXPECT_RSDB_OK(rsdb_recovery_set_progress(r, nullptr, nullptr));
    EXPECT_RSDB_OK(rsdb_recovery_stop_cluster(r, dir.c_str()));
    ASSERT_RSDB_OK(rsdb_backup_create(b, "logical", nullptr));
    const json history = query(db_.get(), "SELECT backup_id, status FROM backup_history");
    ASSERT_EQ(history.size(), 1u) << "only the last call took a backup: " << history.dump();
    EXPECT_EQ(history[0].at("status"), "completed");
    const std::string id = history[0].at("backup_id").get<std::string>();
    EXPECT_RSDB_OK(rsdb_backup_delete(b, id.c_str(), nullptr));
    EXPECT_EQ(history_status(id), "deleted");
}

TEST_F(CRecoveryTest, StringsThatAreNotUtf8AreRefusedWithErrInvalidUtf8) {
    RecoveryPtr recovery = make_recovery(false);
    rsdb_recovery* r = recovery.get();
    rsdb_backup* b = backup_.get();
    rsdb_config* cfg = cfg_.get();
    EventLog events;
    rsdb_backup_schedule* sched = nullptr;
    const std::string target_url = db_url();
    const std::string bad_url = target_url + "\xff";
    const std::string bad_dir = (std::filesystem::temp_directory_path() / "rsdb-gt-\xff\xfe").string();

    EXPECT_TRUE(Fails(rsdb_backup_create(b, "full\xff", nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_backup_delete(b, "base-\xff\xfe", nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(b, "0 3 * * *\xff", "full", json_to_log, &events, &sched),
                      RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(b, "0 3 * * *", "full\xc3", json_to_log, &events, &sched),
                      RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(sched, nullptr);
    EXPECT_TRUE(
        Fails(rsdb_recovery_restore_database(r, "full-\xff\xfe", target_url.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_recovery_restore_database(r, "full-x", bad_url.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
    const std::string options = "{\"data_dir\":\"" + bad_dir + "\"}";
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(r, options.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_recovery_test_restore(r, "base-\xff\xfe", nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_recovery_stop_cluster(r, bad_dir.c_str()), RSDB_ERR_INVALID_UTF8));
    const std::string bad_path = bad_dir + "/000000010000000000000001";
    EXPECT_TRUE(Fails(rsdb_wal_push(cfg, bad_path.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg, "0000000100000000000000\xff\xfe", "/tmp/x"), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(cfg, "000000010000000000000001", bad_path.c_str()), RSDB_ERR_INVALID_UTF8));
    EXPECT_FALSE(std::filesystem::exists(bad_dir));
    EXPECT_EQ(query(db_.get(), "SELECT count(*)::text AS n FROM backup_history").at(0).at("n"), "0");
}

}  // namespace
