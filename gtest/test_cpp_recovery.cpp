// Physical backups, WAL archiving and point-in-time recovery through the C++ API
// (BackupManager::create/delete_backup/init_repository/set_progress, BackupScheduler by kind,
// RecoveryManager, wal_push/wal_fetch), against the stack's PostgreSQL cluster, whose
// archive_command stores WAL into the stack's repository with the rsdb of this build (see
// scripts/stack.sh, setup_archiving). Every test has its own database for the backup history and
// a `ledger` table whose ids show which commits a restore brought back; it takes its own full
// physical backup and deletes every backup it took afterwards. Restored clusters run in data
// directories of their own on free ports and are stopped and removed by the test.
#include "backup_util.h"
#include "cpp_api_util.h"
#include "recovery_util.h"
#include "rootstream/rootstream_db.hpp"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using json = nlohmann::json;
using rootstream::Config;
using rootstream::Error;
using rootstream::database::BackupManager;
using rootstream::database::BackupScheduler;
using rootstream::database::DatabaseManager;
using rootstream::database::RecoveryManager;
using rsdb_test::backup::read_file;
using rsdb_test::backup::ScratchDatabases;
using rsdb_test::backup::TempDir;
using rsdb_test::backup::write_file;
using rsdb_test::recovery::Archive;
using rsdb_test::recovery::DataDir;
using rsdb_test::recovery::EventLog;
using rsdb_test::recovery::ids_of;
using rsdb_test::recovery::kClockOffsetSql;
using rsdb_test::recovery::kLedgerDdl;
using rsdb_test::recovery::kLedgerIds;
using rsdb_test::recovery::kLedgerInsert;
using rsdb_test::recovery::kScratchDatabases;
using rsdb_test::recovery::ledger_params;
using rsdb_test::recovery::RestoreFileOnExit;
using rsdb_test::recovery::restored_url;
using rsdb_test::recovery::unused_wal_name;
using rsdb_test::recovery::WellFormedProgress;

using namespace rsdb_test::cppapi;

namespace {

using Ids = std::vector<int64_t>;

DataDir::Stopper stopper(RecoveryManager& recovery) {
    return [&recovery](const std::string& dir) { recovery.stop_cluster(dir); };
}

/// A restore to look at: the report and the ledger ids the restored database holds.
struct Restored {
    json report;
    Ids ids;
};

class CppRecoveryTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        ASSERT_TRUE(rsdb_test::recovery::prepare_archive(stack(), &archive_));
        cfg_ = std::make_unique<Config>(config(true));
        db_ = std::make_unique<DatabaseManager>(*cfg_);
        db_->migrate();
        db_->execute(kLedgerDdl);
        backups_ = std::make_unique<BackupManager>(*cfg_, *db_);
    }

    void TearDown() override {
        // Newest first: an incremental goes before the backup it builds on.
        if (backups_) {
            for (auto it = taken_.rbegin(); it != taken_.rend(); ++it) {
                try {
                    backups_->delete_backup(*it);
                } catch (const Error& e) {
                    EXPECT_EQ(e.code(), RSDB_ERR_NOT_FOUND) << "deleting " << *it << ": " << e.what();
                }
            }
        }
        backups_.reset();
        db_.reset();
        cfg_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// The archive's settings (repository, master key, tools, rsdb_path), and this test's
    /// database when `with_database`.
    Config config(bool with_database) const {
        Config cfg;
        if (with_database) cfg.set("database_url", db_url()).set("pool_size", "4");
        for (const auto& [k, v] : archive_.settings) cfg.set(k, v);
        return cfg;
    }

    void insert(int id) { db_->execute(kLedgerInsert, ledger_params(id)); }

    /// Takes a backup of `kind`; it is deleted again in TearDown.
    json create(const std::string& kind) {
        json m = backups_->create(kind);
        taken_.push_back(m.at("backup_id").get<std::string>());
        return m;
    }

    /// This test's history row of a backup (status, backup_type, method, parent_backup_id).
    json history(const std::string& id) {
        const json rows = db_->query(
            "SELECT status, backup_type, method, parent_backup_id FROM backup_history WHERE backup_id = $1",
            json::array({id}));
        return rows.empty() ? json::object() : rows.at(0);
    }

    std::string history_status(const std::string& id) { return history(id).value("status", "<none>"); }

    /// Restores with `options` into a new data directory, keeping the server running, reads the
    /// ledger ids of this test's database there, stops the server and removes the directory.
    Restored restore_and_read(RecoveryManager& recovery, json options) {
        DataDir dir("restore", stopper(recovery));
        options["data_dir"] = dir.path();
        options["keep_running"] = true;
        Restored r;
        r.report = recovery.restore_cluster(options);
        EXPECT_EQ(r.report.at("data_dir"), dir.path());
        EXPECT_EQ(r.report.at("running"), true) << r.report.dump();
        EXPECT_TRUE(dir.server_running());
        {
            Config c;
            c.set("database_url", restored_url(r.report.at("port").get<int>(), db_name())).set("pool_size", "1");
            DatabaseManager restored(c);
            r.ids = ids_of(restored.query(kLedgerIds));
        }
        EXPECT_NO_THROW(recovery.stop_cluster(dir.path()));
        EXPECT_FALSE(dir.server_running()) << "stop_cluster left the server of " << dir.path() << " running";
        EXPECT_TRUE(dir.remove());
        return r;
    }

    Archive archive_;
    std::unique_ptr<Config> cfg_;
    std::unique_ptr<DatabaseManager> db_;
    std::unique_ptr<BackupManager> backups_;
    std::vector<std::string> taken_;
};

int64_t ledger_rows(const json& report, const std::string& db) {
    return report.at("databases").at(db).at("public.ledger").get<int64_t>();
}

// ---------------------------------------------------------------- chains and point in time

TEST_F(CppRecoveryTest, FullIncrementalAndDifferentialRestoreToTheirOwnEndsAndPitrStopsBetweenTwoCommits) {
    insert(1);
    const json full = create("full");
    const std::string full_id = full.at("backup_id").get<std::string>();
    EXPECT_EQ(full.at("backup_type"), "full");
    EXPECT_TRUE(full.at("physical").at("parent_backup_id").is_null()) << full.dump();

    insert(2);
    const json incr = create("incremental");
    const std::string incr_id = incr.at("backup_id").get<std::string>();
    EXPECT_EQ(incr.at("backup_type"), "incremental");
    EXPECT_EQ(incr.at("physical").at("parent_backup_id"), full_id);

    insert(3);
    // A moment between two commits, written with an offset: 3 is in, 4 is not.
    const std::string between = db_->query(kClockOffsetSql).at(0).at("t").get<std::string>();
    ASSERT_EQ(between.substr(between.size() - 6), "+05:30") << between;
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    insert(4);
    const json diff = create("differential");
    const std::string diff_id = diff.at("backup_id").get<std::string>();
    EXPECT_EQ(diff.at("backup_type"), "differential");
    EXPECT_EQ(diff.at("physical").at("parent_backup_id"), full_id) << "a differential builds on the full backup";
    insert(5);
    EXPECT_EQ(history(full_id).value("method", ""), "pg_basebackup");
    EXPECT_EQ(history(diff_id), (json{{"status", "completed"}, {"backup_type", "differential"}, {"method", "wal"},
                                      {"parent_backup_id", full_id}}));

    // Recovery through the backup manager (with the database).
    RecoveryManager recovery(*backups_);
    EventLog progress;
    recovery.set_progress([&progress](const json& p) { progress.add(p); });

    Restored r = restore_and_read(recovery, {{"backup_id", full_id}});
    EXPECT_EQ(r.ids, (Ids{1}));
    EXPECT_EQ(r.report.at("backup_id"), full_id);
    EXPECT_EQ(r.report.at("chain"), json::array({full_id}));
    EXPECT_EQ(ledger_rows(r.report, db_name()), 1) << r.report.dump();
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }
    EXPECT_TRUE(WellFormedProgress(progress.events()));

    // An empty handler stops the reports.
    recovery.set_progress(nullptr);
    progress.clear();

    r = restore_and_read(recovery, {{"backup_id", incr_id}});
    EXPECT_EQ(r.ids, (Ids{1, 2}));
    EXPECT_EQ(r.report.at("chain"), json::array({full_id, incr_id})) << "the full backup first";
    EXPECT_TRUE(progress.events().empty()) << progress.summary();

    r = restore_and_read(recovery, {{"backup_id", diff_id}});
    EXPECT_EQ(r.ids, (Ids{1, 2, 3, 4}));
    EXPECT_EQ(r.report.at("chain"), json::array({full_id, diff_id})) << "a differential needs only the full";
    EXPECT_EQ(ledger_rows(r.report, db_name()), 4);

    // Point in time: from the incremental plus archived WAL, to the moment between 3 and 4.
    r = restore_and_read(recovery, {{"backup_id", incr_id}, {"target_time", between}});
    EXPECT_EQ(r.ids, (Ids{1, 2, 3})) << "kept the commit before the target, not the one after";
    EXPECT_EQ(r.report.at("chain"), json::array({full_id, incr_id}));
    bool stopped_before_commit = false;
    for (const auto& line : r.report.at("recovery_log")) {
        stopped_before_commit |= line.get<std::string>().find("recovery stopping before commit") != std::string::npos;
    }
    EXPECT_TRUE(stopped_before_commit) << r.report.at("recovery_log").dump();

    DataDir early("early", stopper(recovery));
    const json too_early = {{"data_dir", early.path()}, {"backup_id", diff_id}, {"target_time", between}};
    EXPECT_TRUE(
        ThrowsCode([&] { recovery.restore_cluster(too_early); }, RSDB_ERR_INVALID_ARGUMENT, "before backup"));
    EXPECT_FALSE(early.exists());
}

// ---------------------------------------------------------------- test restores

TEST_F(CppRecoveryTest, TestRestoreChecksAPhysicalAndALogicalBackupInScratchSpace) {
    insert(1);
    EventLog backup_progress;
    backups_->set_progress([&backup_progress](const json& p) { backup_progress.add(p); });
    const json full = create("full");
    const std::string full_id = full.at("backup_id").get<std::string>();
    EXPECT_TRUE(backup_progress.has_phase("done")) << backup_progress.summary();
    EXPECT_TRUE(WellFormedProgress(backup_progress.events()));
    for (const auto& e : backup_progress.events()) EXPECT_EQ(e.at("backup_id"), full_id) << e.dump();
    backups_->set_progress(nullptr);
    backup_progress.clear();

    const json logical = create("logical");
    const std::string logical_id = logical.at("backup_id").get<std::string>();
    EXPECT_TRUE(backup_progress.events().empty()) << backup_progress.summary();

    RecoveryManager recovery(*backups_);
    EventLog progress;
    recovery.set_progress([&progress](const json& p) { progress.add(p); });
    json r = recovery.test_restore(full_id);
    EXPECT_EQ(r.at("backup_id"), full_id);
    EXPECT_EQ(r.at("kind"), "physical");
    EXPECT_GT(r.at("tables_checked").get<int64_t>(), 0) << r.dump();
    EXPECT_GE(r.at("rows").get<int64_t>(), 1) << r.dump();
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }

    r = recovery.test_restore(logical_id);
    EXPECT_EQ(r.at("kind"), "logical");
    const json& counts = logical.at("row_counts");
    int64_t rows = 0;
    for (const auto& [table, n] : counts.items()) rows += n.get<int64_t>();
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), counts.size()) << r.dump();
    EXPECT_EQ(r.at("rows").get<int64_t>(), rows) << r.dump();
    EXPECT_EQ(db_->query(kScratchDatabases).at(0).at("n"), "0") << "the scratch databases are dropped";

    RecoveryManager bare(config(false));
    EXPECT_TRUE(ThrowsCode([&] { bare.test_restore(logical_id); }, RSDB_ERR_CONFIG, "database"));
}

// ---------------------------------------------------------------- repository

TEST_F(CppRecoveryTest, ListRepositoryReadsTheSignedManifestsWithoutTheDatabase) {
    const json logical = create("logical");
    insert(1);
    const json full = create("full");

    RecoveryManager recovery(config(false));
    const json listed = recovery.list_repository();
    ASSERT_TRUE(listed.is_array()) << listed.dump();
    int at_logical = -1;
    int at_full = -1;
    for (size_t i = 0; i < listed.size(); ++i) {
        if (listed[i].at("backup_id") == logical.at("backup_id")) at_logical = static_cast<int>(i);
        if (listed[i].at("backup_id") == full.at("backup_id")) at_full = static_cast<int>(i);
    }
    ASSERT_GE(at_logical, 0) << "the logical backup is not listed";
    ASSERT_GE(at_full, 0) << "the physical backup is not listed";
    EXPECT_LT(at_logical, at_full) << "oldest first";
    EXPECT_EQ(listed[at_logical], logical);
    EXPECT_EQ(listed[at_full], full);
    EXPECT_TRUE(listed[at_full].at("physical").is_object());
}

TEST_F(CppRecoveryTest, ALogicalBackupRestoresIntoAnEmptyDatabaseFromTheRepositoryAlone) {
    insert(1);
    insert(2);
    const json logical = create("logical");
    const std::string logical_id = logical.at("backup_id").get<std::string>();
    const std::string full_id = create("full").at("backup_id").get<std::string>();
    ScratchDatabases scratch(stack().database_url);

    RecoveryManager recovery(config(false));
    const std::string target = scratch.create();
    const json r = recovery.restore(logical_id, target);
    EXPECT_EQ(r.at("backup_id"), logical_id);
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), logical.at("row_counts").size()) << r.dump();
    {
        Config c;
        c.set("database_url", target).set("pool_size", "1");
        DatabaseManager restored(c);
        EXPECT_EQ(ids_of(restored.query(kLedgerIds)), (Ids{1, 2}));
    }

    const std::string other = scratch.create();
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore(full_id, other); }, RSDB_ERR_INVALID_ARGUMENT, "physical"));
    DataDir dir("logical", stopper(recovery));
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster({{"data_dir", dir.path()}, {"backup_id", logical_id}}); },
                           RSDB_ERR_INVALID_ARGUMENT, "logical"));
    EXPECT_FALSE(dir.exists());
}

TEST_F(CppRecoveryTest, InitRepositoryCreatesTheDirectoryAndIsIdempotent) {
    EXPECT_NO_THROW(backups_->init_repository()) << "the stack's repository exists already";
    TempDir parent;
    const std::string fresh = parent.path() + "/repo";
    Config cfg = config(true);
    cfg.set("backup_dir", fresh);
    BackupManager b(cfg, *db_);
    EXPECT_FALSE(std::filesystem::exists(fresh));
    b.init_repository();
    EXPECT_TRUE(std::filesystem::is_directory(fresh));
    EXPECT_NO_THROW(b.init_repository());

    cfg.set("backup_dir", "/proc/rsdb-nope/repo");
    BackupManager bad(cfg, *db_);
    EXPECT_TRUE(ThrowsCode([&] { bad.init_repository(); }, RSDB_ERR_IO, "/proc/rsdb-nope"));
}

// ---------------------------------------------------------------- integrity

TEST_F(CppRecoveryTest, AFlippedByteInABaseBackupFailsVerifyAndRestoreClusterLeavesNoDataDirectory) {
    insert(1);
    const std::string id = create("full").at("backup_id").get<std::string>();
    const std::string file = archive_.backup_file(id, "base.tar.zst.enc");
    ASSERT_NO_THROW(backups_->verify(id));
    {
        RestoreFileOnExit repair(file);
        std::string bad = repair.original();
        ASSERT_GT(bad.size(), 1000u);
        bad[bad.size() / 3] = static_cast<char>(bad[bad.size() / 3] ^ 0x80);
        write_file(file, bad);
        EXPECT_TRUE(ThrowsCode([&] { backups_->verify(id); }, RSDB_ERR_INTEGRITY, "base.tar.zst.enc: chunk"));

        RecoveryManager recovery(config(false));
        DataDir dir("flipped", stopper(recovery));
        EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster({{"data_dir", dir.path()}, {"backup_id", id}}); },
                               RSDB_ERR_INTEGRITY, "chunk"));
        EXPECT_FALSE(dir.exists()) << "a refused restore left " << dir.path() << " behind";
    }
    EXPECT_NO_THROW(backups_->verify(id)) << "the repaired backup verifies";
}

// ---------------------------------------------------------------- delete and dependencies

TEST_F(CppRecoveryTest, DeleteIsRefusedForABackupAnIncrementalBuildsOnAndWorksOtherwise) {
    insert(1);
    const std::string full_id = create("full").at("backup_id").get<std::string>();
    insert(2);
    const std::string incr_id = create("incremental").at("backup_id").get<std::string>();
    insert(3);
    const std::string diff_id = create("differential").at("backup_id").get<std::string>();

    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup(full_id); }, RSDB_ERR_CONFLICT, incr_id));
    EXPECT_EQ(history_status(full_id), "completed");
    EXPECT_GT(backups_->delete_backup(incr_id), 0u);
    EXPECT_EQ(history_status(incr_id), "deleted");
    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup(full_id); }, RSDB_ERR_CONFLICT, diff_id))
        << "the differential builds on it too";
    EXPECT_GT(backups_->delete_backup(diff_id), 0u);
    EXPECT_GT(backups_->delete_backup(full_id), 0u);
    EXPECT_FALSE(std::filesystem::exists(archive_.backup_dir + "/" + full_id));
    EXPECT_EQ(history_status(full_id), "deleted");
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(full_id); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup("full-20000101T000000Z-000000"); }, RSDB_ERR_NOT_FOUND));
}

TEST_F(CppRecoveryTest, AnIncrementalOrDifferentialWithNoPhysicalFullInThisHistoryIsAStateError) {
    create("logical");
    for (const char* kind : {"incremental", "differential"}) {
        SCOPED_TRACE(kind);
        EXPECT_TRUE(ThrowsCode([&] { backups_->create(kind); }, RSDB_ERR_STATE, "full physical backup"));
    }
    EXPECT_TRUE(ThrowsCode([&] { backups_->create("weekly"); }, RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_TRUE(ThrowsCode([&] { backups_->create("full\xff"); }, RSDB_ERR_INVALID_UTF8));
}

// ---------------------------------------------------------------- WAL archive

TEST_F(CppRecoveryTest, WalPushIsIdempotentRefusesOtherContentsAndWalFetchRoundTrips) {
    using rootstream::database::wal_fetch;
    using rootstream::database::wal_push;
    const Config cfg = config(false);
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

    EXPECT_TRUE(wal_push(cfg, segment)) << "stored";
    ASSERT_TRUE(std::filesystem::exists(object));
    const std::string stored = read_file(object);
    EXPECT_FALSE(wal_push(cfg, segment)) << "already archived";

    write_file(segment, "something else");
    EXPECT_TRUE(ThrowsCode([&] { wal_push(cfg, segment); }, RSDB_ERR_CONFLICT, name));
    EXPECT_EQ(read_file(object), stored) << "the archived copy is kept";

    const std::string fetched = scratch.path() + "/fetched";
    EXPECT_EQ(wal_fetch(cfg, name, fetched), data.size());
    EXPECT_TRUE(read_file(fetched) == data) << "wal_fetch returned other bytes than were pushed";

    const std::string missing = unused_wal_name(archive_);
    const std::string nothing = scratch.path() + "/nothing";
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(cfg, missing, nothing); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(cfg, "../x", nothing); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_FALSE(std::filesystem::exists(nothing));
    EXPECT_TRUE(ThrowsCode([&] { wal_push(cfg, scratch.path() + "/../x"); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(cfg, name, scratch.path() + "/\xff"); }, RSDB_ERR_INVALID_UTF8));
}

// ---------------------------------------------------------------- restore options

TEST_F(CppRecoveryTest, RestoreOptionsAreCheckedAndANonEmptyDataDirectoryIsRefused) {
    RecoveryManager recovery(config(false));
    DataDir dir("options", stopper(recovery));
    const std::string d = dir.path();
    const std::vector<std::pair<json, std::string>> invalid = {
        {json::object(), "data_dir"},
        {{{"backup_id", "base-x"}}, "data_dir"},
        {{{"data_dir", d}, {"colour", "blue"}}, "colour"},
        {{{"data_dir", d}, {"target_time", "yesterday"}}, "target_time"},
        {{{"data_dir", d}, {"target_time", "2026-11-25 10:00"}}, "target_time"},
        {{{"data_dir", d}, {"latest", true}, {"target_time", "2026-11-25T10:00:00+01:00"}}, "exclude"},
        {{{"data_dir", d}, {"timeout_s", -1}}, "timeout_s"},
        {json::array({d}), "object"},
    };
    for (const auto& [options, needle] : invalid) {
        SCOPED_TRACE(options.dump());
        EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(options); }, RSDB_ERR_INVALID_ARGUMENT, needle));
        EXPECT_FALSE(dir.exists());
    }
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster({{"data_dir", d + "\xff"}}); }, RSDB_ERR_INVALID_UTF8));

    insert(1);
    const std::string id = create("full").at("backup_id").get<std::string>();
    std::filesystem::create_directories(d + "/sub");
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster({{"data_dir", d}, {"backup_id", id}}); },
                           RSDB_ERR_INVALID_ARGUMENT, "not empty"));
    EXPECT_TRUE(std::filesystem::is_directory(d + "/sub")) << "the refused directory was changed";
    EXPECT_FALSE(dir.server_running());
}

// ---------------------------------------------------------------- schedules by kind

TEST_F(CppRecoveryTest, SchedulesTakeAKindAndRefuseAnUnknownKindOrABadCron) {
    EventLog events;
    auto handler = [&events](const json& e) { events.add(e); };
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 3 * * *", "weekly", handler); },
                           RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 25 * * *", "differential", handler); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 3 * * *", "full", nullptr); }, RSDB_ERR_NULL));

    create("logical");
    db_->execute("UPDATE backup_history SET finished_at = now() - interval '2 days'");
    {
        BackupScheduler physical(*backups_, "0 3 * * *", "incremental", handler);
        BackupScheduler logical(*backups_, "0 3 * * *", "logical", handler);
        ASSERT_TRUE(events.wait_for(1, std::chrono::seconds(10))) << "no missed-run report";
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    const auto got = events.events();
    ASSERT_EQ(got.size(), 1u) << events.summary();
    EXPECT_EQ(got[0].at("event"), "missed") << got[0].dump();
    EXPECT_EQ(got[0].at("kind"), "logical") << got[0].dump();
}

}  // namespace
