// The C++ face of physical backups, WAL archiving and point-in-time recovery: every method of
// BackupManager::create/delete_backup/init_repository/set_progress, BackupScheduler by kind,
// RecoveryManager and wal_push/wal_fetch is called, its typed record or value arrives with the
// core's values, and core errors arrive as the rootstream::Error subclass of their code. What
// recovery does (chains, stop points, retention, WAL idempotence, option checks) is specified
// once, in tests/backup_physical.rs. Runs against the stack's PostgreSQL cluster, whose
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
using rootstream::database::BackupManifest;
using rootstream::database::BackupScheduler;
using rootstream::database::ClusterReport;
using rootstream::database::ClusterRestoreOptions;
using rootstream::database::DatabaseManager;
using rootstream::database::RecoveryManager;
using rsdb_test::backup::read_file;
using rsdb_test::backup::ScratchDatabases;
using rsdb_test::backup::TempDir;
using rsdb_test::backup::write_file;
using rsdb_test::recovery::Archive;
using rsdb_test::recovery::DataDir;
using rsdb_test::recovery::EventLog;
using rsdb_test::recovery::FakePgWal;
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
    ClusterReport report;
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
    BackupManifest create(const std::string& kind) {
        BackupManifest m = backups_->create(kind);
        taken_.push_back(m.backup_id);
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
    Restored restore_and_read(RecoveryManager& recovery, ClusterRestoreOptions options) {
        DataDir dir("restore", stopper(recovery));
        options.data_dir = dir.path();
        options.keep_running = true;
        Restored r;
        r.report = recovery.restore_cluster(options);
        EXPECT_EQ(r.report.data_dir, dir.path());
        EXPECT_TRUE(r.report.running);
        EXPECT_TRUE(dir.server_running());
        {
            Config c;
            c.set("database_url", restored_url(r.report.port, db_name())).set("pool_size", "1");
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

ClusterRestoreOptions from_backup(const std::string& id) {
    ClusterRestoreOptions o;
    o.backup_id = id;
    return o;
}

// ---------------------------------------------------------------- physical backups and restores

TEST_F(CppRecoveryTest, PhysicalBackupsRestoresAndProgressRoundTripTheirTypedRecordsThroughTheCppApi) {
    insert(1);
    EventLog backup_progress;
    backups_->set_progress([&backup_progress](const json& p) { backup_progress.add(p); });
    const BackupManifest full = create("full");
    const std::string full_id = full.backup_id;
    EXPECT_EQ(full.backup_type, "full");
    EXPECT_EQ(full.method.rfind("pg_basebackup", 0), 0u) << full.method;
    ASSERT_TRUE(full.physical.has_value());
    EXPECT_FALSE(full.physical->parent_backup_id.has_value());
    EXPECT_EQ(full.physical->base_backup_id, full_id);
    EXPECT_GE(full.physical->timeline, 1u);
    EXPECT_FALSE(full.physical->start_lsn.empty());
    EXPECT_FALSE(full.physical->stop_lsn.empty());
    EXPECT_EQ(full.physical->start_wal.size(), 24u) << full.physical->start_wal;
    EXPECT_GT(full.physical->wal_segment_size, 0u);
    EXPECT_FALSE(full.physical->system_identifier.empty());
    EXPECT_TRUE(full.physical->to_json().at("parent_backup_id").is_null());
    EXPECT_TRUE(backup_progress.has_phase("done")) << backup_progress.summary();
    EXPECT_TRUE(WellFormedProgress(backup_progress.events()));
    for (const auto& e : backup_progress.events()) EXPECT_EQ(e.at("backup_id"), full_id) << e.dump();
    backups_->set_progress(nullptr);
    backup_progress.clear();

    insert(2);
    const BackupManifest incr = create("incremental");
    const std::string incr_id = incr.backup_id;
    EXPECT_EQ(incr.backup_type, "incremental");
    ASSERT_TRUE(incr.physical.has_value());
    EXPECT_EQ(incr.physical->parent_backup_id, std::optional<std::string>(full_id));
    EXPECT_FALSE(incr.physical->wal_segments.empty());
    EXPECT_TRUE(backup_progress.events().empty()) << "an empty handler stops the reports: " << backup_progress.summary();
    insert(3);
    // A moment between two commits, written with an offset: 3 is in, 4 is not.
    const std::string between = db_->query(kClockOffsetSql).at(0).at("t").get<std::string>();
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    insert(4);
    const std::string diff_id = create("differential").backup_id;

    // list_repository: the signed manifests, from the repository alone.
    RecoveryManager bare(config(false));
    const std::vector<BackupManifest> listed = bare.list_repository();
    int at_full = -1;
    int at_incr = -1;
    for (size_t i = 0; i < listed.size(); ++i) {
        if (listed[i].backup_id == full_id) at_full = static_cast<int>(i);
        if (listed[i].backup_id == incr_id) at_incr = static_cast<int>(i);
    }
    ASSERT_GE(at_full, 0);
    ASSERT_GE(at_incr, 0);
    EXPECT_EQ(listed[at_full].to_json(), full.to_json());
    EXPECT_EQ(listed[at_incr].to_json(), incr.to_json());
    EXPECT_EQ(backups_->verify(incr_id).to_json(), incr.to_json());

    // restore_cluster: every option arrives (backup_id, target_time, keep_running, port, timeout_s).
    RecoveryManager recovery(*backups_);
    EventLog progress;
    recovery.set_progress([&progress](const json& p) { progress.add(p); });
    ClusterRestoreOptions options = from_backup(incr_id);
    options.target_time = between;
    options.timeout_s = 600;
    const Restored r = restore_and_read(recovery, options);
    EXPECT_EQ(r.ids, (Ids{1, 2, 3})) << "target_time arrived";
    EXPECT_EQ(r.report.backup_id, incr_id);
    EXPECT_EQ(r.report.chain, (std::vector<std::string>{full_id, incr_id}));
    EXPECT_GT(r.report.port, 0);
    EXPECT_NE(r.report.target.find("time"), std::string::npos) << r.report.target;
    EXPECT_FALSE(r.report.recovery_log.empty());
    EXPECT_GT(r.report.seconds, 0.0);
    EXPECT_EQ(r.report.databases.at(db_name()).at("public.ledger"), 3);
    const json rj = r.report.to_json();
    EXPECT_EQ(rj.at("databases").at(db_name()).at("public.ledger"), 3);
    EXPECT_EQ(rj.at("chain"), json::array({full_id, incr_id}));
    EXPECT_EQ(rj.at("running"), true);
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }
    EXPECT_TRUE(WellFormedProgress(progress.events()));
    recovery.set_progress(nullptr);
    progress.clear();

    // Options the core refuses arrive as InvalidArgument, and nothing is created.
    DataDir dir("options", stopper(recovery));
    ClusterRestoreOptions both = from_backup(incr_id);
    both.data_dir = dir.path();
    both.latest = true;
    both.target_time = between;
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(both); }, RSDB_ERR_INVALID_ARGUMENT, "exclude"));
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(from_backup(incr_id)); }, RSDB_ERR_INVALID_ARGUMENT,
                           "data_dir"));
    ClusterRestoreOptions slow = from_backup(incr_id);
    slow.data_dir = dir.path();
    slow.timeout_s = 8 * 86400;
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(slow); }, RSDB_ERR_INVALID_ARGUMENT, "timeout_s"));
    ClusterRestoreOptions not_utf8 = from_backup(incr_id);
    not_utf8.data_dir = dir.path() + "\xff";
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(not_utf8); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_FALSE(dir.exists());
    EXPECT_TRUE(progress.events().empty()) << progress.summary();

    // test_restore of a physical backup.
    const auto t = recovery.test_restore(full_id);
    EXPECT_EQ(t.backup_id, full_id);
    EXPECT_EQ(t.kind, "physical");
    EXPECT_GT(t.tables_checked, 0u);
    EXPECT_GE(t.rows, 1);
    EXPECT_EQ(t.to_json().at("kind"), "physical");

    // delete_backup: Conflict while another backup builds on it, else the bytes freed.
    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup(full_id); }, RSDB_ERR_CONFLICT, incr_id));
    EXPECT_GT(backups_->delete_backup(incr_id), 0u);
    EXPECT_GT(backups_->delete_backup(diff_id), 0u);
    EXPECT_GT(backups_->delete_backup(full_id), 0u);
    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup(full_id); }, RSDB_ERR_NOT_FOUND));
}

// ---------------------------------------------------------------- repository, WAL, schedules

TEST_F(CppRecoveryTest, RepositoryAloneRecoveryTheWalArchiveAndSchedulesByKindWorkThroughTheCppApi) {
    EXPECT_TRUE(ThrowsCode([&] { backups_->create("incremental"); }, RSDB_ERR_STATE, "full physical backup"));
    EXPECT_TRUE(ThrowsCode([&] { backups_->create("weekly"); }, RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_TRUE(ThrowsCode([&] { backups_->create("full\xff"); }, RSDB_ERR_INVALID_UTF8));

    insert(1);
    insert(2);
    const BackupManifest logical = create("logical");
    EXPECT_FALSE(logical.physical.has_value());

    // A logical restore with RecoveryManager(config): no database connection of its own.
    RecoveryManager recovery(config(false));
    ScratchDatabases scratch(stack().database_url);
    const std::string target = scratch.create();
    const auto r = recovery.restore(logical.backup_id, target);
    EXPECT_EQ(r.backup_id, logical.backup_id);
    EXPECT_EQ(r.tables_checked, logical.row_counts.size());
    {
        Config c;
        c.set("database_url", target).set("pool_size", "1");
        DatabaseManager restored(c);
        EXPECT_EQ(ids_of(restored.query(kLedgerIds)), (Ids{1, 2}));
    }
    EXPECT_TRUE(ThrowsCode([&] { recovery.test_restore(logical.backup_id); }, RSDB_ERR_CONFIG, "database"));
    const auto t = RecoveryManager(*backups_).test_restore(logical.backup_id);
    EXPECT_EQ(t.kind, "logical");
    EXPECT_EQ(t.tables_checked, logical.row_counts.size());

    // init_repository.
    TempDir parent;
    const std::string fresh = parent.path() + "/repo";
    Config cfg = config(true);
    cfg.set("backup_dir", fresh);
    BackupManager b(cfg, *db_);
    b.init_repository();
    EXPECT_TRUE(std::filesystem::is_directory(fresh));
    cfg.set("backup_dir", "/proc/rsdb-nope/repo");
    BackupManager bad(cfg, *db_);
    EXPECT_TRUE(ThrowsCode([&] { bad.init_repository(); }, RSDB_ERR_IO, "/proc/rsdb-nope"));

    // wal_push / wal_fetch.
    using rootstream::database::wal_fetch;
    using rootstream::database::wal_push;
    const Config repo = config(false);
    TempDir wal_dir;
    const std::string name = unused_wal_name(archive_);
    struct RemoveObject {
        std::string path;
        ~RemoveObject() {
            std::error_code ec;
            std::filesystem::remove(path, ec);
        }
    } remove_object{archive_.wal_object(name)};
    const std::string segment = wal_dir.path() + "/" + name;
    const std::string data = rsdb_test::recovery::wal_segment_bytes();
    write_file(segment, data);
    EXPECT_TRUE(wal_push(repo, segment)) << "stored";
    EXPECT_FALSE(wal_push(repo, segment)) << "already archived";
    write_file(segment, "something else");
    EXPECT_TRUE(ThrowsCode([&] { wal_push(repo, segment); }, RSDB_ERR_CONFLICT, name));
    const std::string fetched = wal_dir.path() + "/fetched";
    EXPECT_EQ(wal_fetch(repo, name, fetched), data.size());
    EXPECT_TRUE(read_file(fetched) == data) << "wal_fetch returned other bytes than were pushed";
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(repo, unused_wal_name(archive_), wal_dir.path() + "/n"); },
                           RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(repo, "../x", wal_dir.path() + "/n"); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { wal_fetch(repo, name, wal_dir.path() + "/\xff"); }, RSDB_ERR_INVALID_UTF8));

    // Schedules by kind: the handler gets the core's event on a library thread.
    EventLog events;
    auto handler = [&events](const json& e) { events.add(e); };
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 3 * * *", "weekly", handler); },
                           RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 25 * * *", "differential", handler); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { BackupScheduler s(*backups_, "0 3 * * *", "full", nullptr); }, RSDB_ERR_NULL));
    db_->execute("UPDATE backup_history SET finished_at = now() - interval '2 days'");
    {
        BackupScheduler scheduled(*backups_, "0 3 * * *", "logical", handler);
        ASSERT_TRUE(events.wait_for(1, std::chrono::seconds(10))) << "no missed-run report";
    }
    const auto got = events.events();
    ASSERT_GE(got.size(), 1u) << events.summary();
    EXPECT_EQ(got[0].at("event"), "missed") << got[0].dump();
    EXPECT_EQ(got[0].at("kind"), "logical") << got[0].dump();
}

// ---------------------------------------------------------------- delta restore

TEST_F(CppRecoveryTest, ADeltaRestoreRewritesAnExistingDataDirectoryThroughTheCppApi) {
    insert(1);
    const BackupManifest full = create("full");
    RecoveryManager recovery(config(false));
    DataDir dir("delta", stopper(recovery));
    ClusterRestoreOptions o = from_backup(full.backup_id);
    o.data_dir = dir.path();
    o.timeout_s = 600;
    const ClusterReport first = recovery.restore_cluster(o);
    EXPECT_FALSE(first.delta.has_value());
    EXPECT_TRUE(first.to_json().at("delta").is_null());
    EXPECT_TRUE(ThrowsCode([&] { recovery.restore_cluster(o); }, RSDB_ERR_INVALID_ARGUMENT, "delta"));
    write_file(dir.path() + "/stray.txt", "not in the backup");
    o.delta = true;
    const ClusterReport again = recovery.restore_cluster(o);
    ASSERT_TRUE(again.delta.has_value());
    EXPECT_GE(again.delta->paths_removed, 1u);
    EXPECT_GT(again.delta->files_unchanged, 100u);
    EXPECT_LT(again.delta->bytes_written, again.delta->bytes_compared);
    EXPECT_EQ(again.to_json().at("delta").at("paths_removed"), again.delta->paths_removed);
    EXPECT_EQ(again.databases, first.databases);
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/stray.txt"));
}

// ---------------------------------------------------------------- bounded WAL queue

TEST_F(CppRecoveryTest, WalQueueLimitPushAheadGapsAndTheGapWatchWorkThroughTheCppApi) {
    using rootstream::database::wal_push;
    using rootstream::database::wal_push_report;
    using rootstream::database::WalGapWatch;
    // A repository of this test's own: the gap it records must not reach the stack's archive.
    FakePgWal wal;
    Config cfg = config(true);
    const std::string repo = wal.root() + "/repo";
    cfg.set("backup_dir", repo).set("wal_push_parallel", "2");
    wal.ready(1);
    wal.ready(2);
    json r = wal_push_report(cfg, wal.path(1));
    EXPECT_EQ(r.at("outcome"), "stored") << r.dump();
    EXPECT_EQ(r.at("pushed_ahead"), json::array({FakePgWal::name(2)})) << r.dump();
    wal.done(1);
    EXPECT_FALSE(wal_push(cfg, wal.path(2))) << "stored ahead, not by this call";
    EXPECT_EQ(wal_push_report(cfg, wal.path(2)).at("outcome"), "already_archived") << "the note is used once";
    wal.done(2);

    cfg.set("wal_queue_max", std::to_string(2 * FakePgWal::kSegment));
    for (int n = 3; n <= 5; n++) wal.ready(n);
    r = wal_push_report(cfg, wal.path(3));
    EXPECT_EQ(r.at("outcome"), "dropped") << r.dump();
    EXPECT_EQ(r.at("gap").at("first_segment"), FakePgWal::name(3)) << r.dump();
    EXPECT_EQ(r.at("gap").at("limit_bytes"), 2 * FakePgWal::kSegment) << r.dump();
    wal.done(3);
    EXPECT_TRUE(wal_push(cfg, wal.path(4)));

    BackupManager own(cfg, *db_);
    const json gaps = own.wal_gaps();
    ASSERT_EQ(gaps.size(), 1u) << gaps.dump();
    EXPECT_EQ(gaps[0].at("first_segment"), FakePgWal::name(3));
    EXPECT_TRUE(gaps[0].at("closed_by").is_null());
    EXPECT_EQ(db_->query("SELECT count(*)::int AS n FROM wal_gaps").at(0).at("n"), 1);

    EventLog seen;
    {
        WalGapWatch watch(own, std::chrono::milliseconds(100), [&](const json& gap) { seen.add(gap); });
        ASSERT_TRUE(seen.wait_for(1, std::chrono::seconds(10))) << "the gap was not reported";
    }
    EXPECT_EQ(seen.events().at(0).at("segments"), 1);
    EXPECT_TRUE(ThrowsCode([&] { WalGapWatch w(own, std::chrono::milliseconds(100), nullptr); }, RSDB_ERR_NULL));
    EXPECT_TRUE(ThrowsCode([&] { wal_push_report(cfg, wal.root() + "/pg_wal/notes.txt"); }, RSDB_ERR_INVALID_ARGUMENT));
}

}  // namespace
