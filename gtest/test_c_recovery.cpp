// The C face of physical backups, WAL archiving and point-in-time recovery
// (rsdb_backup_create/delete/init_repository/set_progress/schedule_start_kind, rsdb_recovery_*,
// rsdb_wal_push/fetch): every function is called, its JSON and out-values arrive with the core's
// values, core errors arrive as their status codes, restore options are JSON checked by the core,
// and the C-only contract holds (NULL, optional outputs, invalid UTF-8). What recovery does
// (chains, stop points, retention, WAL idempotence) is specified once, in tests/backup_physical.rs.
// Runs against the stack's PostgreSQL cluster,
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
using rsdb_test::recovery::FakePgWal;
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


// ---------------------------------------------------------------- physical backups and restores

TEST_F(CRecoveryTest, PhysicalBackupsRestoresAndProgressReturnTheirJsonThroughTheCApi) {
    insert(1);
    EventLog backup_progress;
    ASSERT_RSDB_OK(rsdb_backup_set_progress(backup_.get(), json_to_log, &backup_progress));
    const json full = create("full");
    const std::string full_id = full.at("backup_id").get<std::string>();
    EXPECT_EQ(full.at("backup_type"), "full");
    ASSERT_TRUE(full.contains("physical")) << full.dump();
    EXPECT_TRUE(full["physical"].at("parent_backup_id").is_null()) << full.dump();
    EXPECT_EQ(full["physical"].at("base_backup_id"), full_id);
    EXPECT_TRUE(backup_progress.has_phase("done")) << backup_progress.summary();
    EXPECT_TRUE(WellFormedProgress(backup_progress.events()));
    for (const auto& e : backup_progress.events()) EXPECT_EQ(e.at("backup_id"), full_id) << e.dump();
    ASSERT_RSDB_OK(rsdb_backup_set_progress(backup_.get(), nullptr, nullptr));
    backup_progress.clear();

    insert(2);
    const json incr = create("incremental");
    const std::string incr_id = incr.at("backup_id").get<std::string>();
    EXPECT_EQ(incr.at("physical").at("parent_backup_id"), full_id);
    EXPECT_TRUE(backup_progress.events().empty()) << "NULL stops the reports: " << backup_progress.summary();
    insert(3);
    const std::string between = server_clock();
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    insert(4);
    const std::string diff_id = create("differential").at("backup_id").get<std::string>();
    OutString verified;
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), incr_id.c_str(), verified.out()));
    EXPECT_EQ(verified.parse(), incr);

    // list_repository from the repository alone: the manifests create returned, oldest first.
    RecoveryPtr recovery = make_recovery(false);
    OutString listed_out;
    ASSERT_RSDB_OK(rsdb_recovery_list_repository(recovery.get(), listed_out.out()));
    const json listed = listed_out.parse();
    int at_full = -1;
    int at_incr = -1;
    for (size_t i = 0; i < listed.size(); ++i) {
        if (listed[i].at("backup_id") == full_id) at_full = static_cast<int>(i);
        if (listed[i].at("backup_id") == incr_id) at_incr = static_cast<int>(i);
    }
    ASSERT_GE(at_full, 0);
    ASSERT_GE(at_incr, 0);
    EXPECT_LT(at_full, at_incr);
    EXPECT_EQ(listed[at_full], full);
    EXPECT_EQ(listed[at_incr], incr);

    // restore_cluster: the options' JSON arrives (backup_id, target_time, port, timeout_s).
    EventLog progress;
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), json_to_log, &progress));
    const int port = rsdb_test::unused_tcp_port();
    ASSERT_GT(port, 0);
    const Restored r = restore_and_read(
        recovery.get(), {{"backup_id", incr_id}, {"target_time", between}, {"port", port}, {"timeout_s", 600}});
    EXPECT_EQ(r.ids, (Ids{1, 2, 3})) << "target_time arrived";
    EXPECT_EQ(r.report.at("backup_id"), incr_id);
    EXPECT_EQ(r.report.at("port"), port);
    EXPECT_EQ(r.report.at("chain"), json::array({full_id, incr_id}));
    EXPECT_EQ(r.report.at("databases").at(db_name()).at("public.ledger"), 3) << r.report.dump();
    EXPECT_TRUE(r.report.at("recovery_log").is_array() && !r.report["recovery_log"].empty()) << r.report.dump();
    EXPECT_TRUE(r.report.at("target").is_string() && r.report.at("seconds").is_number()) << r.report.dump();
    for (const char* phase : {"restore", "check", "done"}) {
        EXPECT_TRUE(progress.has_phase(phase)) << "no " << phase << " progress in " << progress.summary();
    }
    EXPECT_TRUE(WellFormedProgress(progress.events()));
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), nullptr, nullptr));
    progress.clear();

    // test_restore of a physical backup, and the report is optional.
    OutString tested;
    ASSERT_RSDB_OK(rsdb_recovery_test_restore(recovery.get(), full_id.c_str(), tested.out()));
    const json t = tested.parse();
    EXPECT_EQ(t.at("backup_id"), full_id);
    EXPECT_EQ(t.at("kind"), "physical");
    EXPECT_GT(t.at("tables_checked").get<int64_t>(), 0) << t.dump();
    EXPECT_TRUE(progress.events().empty()) << progress.summary();

    // delete: a conflict while another backup builds on it, else the bytes freed.
    uint64_t freed = 0;
    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), full_id.c_str(), &freed), RSDB_ERR_CONFLICT, incr_id));
    EXPECT_EQ(freed, 0u);
    ASSERT_RSDB_OK(rsdb_backup_delete(backup_.get(), incr_id.c_str(), &freed));
    EXPECT_GT(freed, 0u);
    ASSERT_RSDB_OK(rsdb_backup_delete(backup_.get(), diff_id.c_str(), nullptr));
    ASSERT_RSDB_OK(rsdb_backup_delete(backup_.get(), full_id.c_str(), nullptr));
    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), full_id.c_str(), &freed), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_backup_delete(backup_.get(), "../etc", &freed), RSDB_ERR_INVALID_ARGUMENT));
}

// ---------------------------------------------------------------- repository, WAL, schedules

TEST_F(CRecoveryTest, RepositoryAloneRecoveryTheWalArchiveAndSchedulesByKindWorkThroughTheCApi) {
    OutString manifest;
    EXPECT_TRUE(Fails(rsdb_backup_create(backup_.get(), "incremental", manifest.out()), RSDB_ERR_STATE,
                      "full physical backup"));
    EXPECT_TRUE(manifest.is_null());
    EXPECT_TRUE(Fails(rsdb_backup_create(backup_.get(), "weekly", manifest.out()), RSDB_ERR_INVALID_ARGUMENT, "weekly"));

    insert(1);
    insert(2);
    const json logical = create("logical");
    const std::string logical_id = logical.at("backup_id").get<std::string>();
    EXPECT_FALSE(logical.contains("physical"));

    // A logical restore with a handle from the repository alone.
    RecoveryPtr recovery = make_recovery(false);
    EventLog progress;
    ASSERT_RSDB_OK(rsdb_recovery_set_progress(recovery.get(), json_to_log, &progress));
    ScratchDatabases scratch(stack().database_url);
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
    EXPECT_RSDB_OK(rsdb_recovery_restore_database(recovery.get(), logical_id.c_str(), second.c_str(), nullptr))
        << "the report is optional";
    OutString tested;
    EXPECT_TRUE(Fails(rsdb_recovery_test_restore(recovery.get(), logical_id.c_str(), tested.out()), RSDB_ERR_CONFIG,
                      "database"));
    EXPECT_TRUE(tested.is_null());
    RecoveryPtr with_db = make_recovery(true);
    ASSERT_RSDB_OK(rsdb_recovery_test_restore(with_db.get(), logical_id.c_str(), tested.out()));
    EXPECT_EQ(tested.parse().at("kind"), "logical");
    EXPECT_RSDB_OK(rsdb_recovery_test_restore(with_db.get(), logical_id.c_str(), nullptr)) << "the report is optional";

    // init_repository.
    TempDir parent;
    const std::string fresh = parent.path() + "/repo";
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(true, &cfg));
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "backup_dir", fresh.c_str()));
    rsdb_backup* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &raw));
    BackupPtr b(raw);
    ASSERT_RSDB_OK(rsdb_backup_init_repository(b.get()));
    EXPECT_TRUE(std::filesystem::is_directory(fresh));
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "backup_dir", "/proc/rsdb-nope/repo"));
    ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &raw));
    BackupPtr bad(raw);
    EXPECT_TRUE(Fails(rsdb_backup_init_repository(bad.get()), RSDB_ERR_IO, "/proc/rsdb-nope"));

    // wal_push / wal_fetch with the repository and key alone.
    ConfigPtr repo;
    ASSERT_NO_FATAL_FAILURE(make_config(false, &repo));
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
    int already = -1;
    ASSERT_RSDB_OK(rsdb_wal_push(repo.get(), segment.c_str(), &already));
    EXPECT_EQ(already, 0) << "stored";
    ASSERT_RSDB_OK(rsdb_wal_push(repo.get(), segment.c_str(), &already));
    EXPECT_EQ(already, 1) << "already archived";
    EXPECT_RSDB_OK(rsdb_wal_push(repo.get(), segment.c_str(), nullptr));
    write_file(segment, "something else");
    EXPECT_TRUE(Fails(rsdb_wal_push(repo.get(), segment.c_str(), &already), RSDB_ERR_CONFLICT, name));
    const std::string fetched = wal_dir.path() + "/fetched";
    ASSERT_RSDB_OK(rsdb_wal_fetch(repo.get(), name.c_str(), fetched.c_str()));
    EXPECT_TRUE(read_file(fetched) == data) << "wal_fetch returned other bytes than were pushed";
    const std::string nothing = wal_dir.path() + "/nothing";
    EXPECT_TRUE(Fails(rsdb_wal_fetch(repo.get(), unused_wal_name(archive_).c_str(), nothing.c_str()),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_wal_fetch(repo.get(), "../x", nothing.c_str()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_FALSE(std::filesystem::exists(nothing));

    // Schedules by kind: the callback gets the core's event on a library thread.
    EventLog events;
    rsdb_backup_schedule* sched = nullptr;
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(backup_.get(), "0 3 * * *", "weekly", json_to_log, &events, &sched),
                      RSDB_ERR_INVALID_ARGUMENT, "weekly"));
    EXPECT_EQ(sched, nullptr);
    EXPECT_TRUE(Fails(rsdb_backup_schedule_start_kind(backup_.get(), "61 * * * *", "full", json_to_log, &events, &sched),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(sched, nullptr);
    ASSERT_RSDB_OK(rsdb_db_execute(db_.get(), "UPDATE backup_history SET finished_at = now() - interval '2 days'",
                                   nullptr, nullptr));
    ASSERT_RSDB_OK(rsdb_backup_schedule_start_kind(backup_.get(), "0 3 * * *", "logical", json_to_log, &events, &sched));
    SchedulePtr logical_schedule(sched);
    ASSERT_TRUE(events.wait_for(1, std::chrono::seconds(10))) << "no missed-run report";
    logical_schedule.reset();
    const auto got = events.events();
    ASSERT_GE(got.size(), 1u) << events.summary();
    EXPECT_EQ(got[0].at("event"), "missed") << got[0].dump();
    EXPECT_EQ(got[0].at("kind"), "logical") << got[0].dump();
    EXPECT_EQ(got[0].at("schedule"), "0 3 * * *");
}

// ---------------------------------------------------------------- delta restore

TEST_F(CRecoveryTest, ADeltaRestoreRewritesAnExistingDataDirectoryThroughTheCApi) {
    insert(1);
    const std::string full_id = create("full").at("backup_id").get<std::string>();
    RecoveryPtr recovery = make_recovery(false);
    DataDir dir("delta", stopper(recovery.get()));
    const json base = {{"backup_id", full_id}, {"data_dir", dir.path()}, {"timeout_s", 600}};
    OutString out;
    ASSERT_RSDB_OK(rsdb_recovery_restore_cluster(recovery.get(), base.dump().c_str(), out.out()));
    EXPECT_TRUE(out.parse().at("delta").is_null()) << out.str();
    // Without delta the existing directory is refused; with it the drift is undone.
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), base.dump().c_str(), out.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "delta"));
    write_file(dir.path() + "/stray.txt", "not in the backup");
    json opts = base;
    opts["delta"] = true;
    ASSERT_RSDB_OK(rsdb_recovery_restore_cluster(recovery.get(), opts.dump().c_str(), out.out()));
    const json d = out.parse().at("delta");
    EXPECT_GE(d.at("paths_removed").get<int64_t>(), 1) << d.dump();
    EXPECT_GT(d.at("files_unchanged").get<int64_t>(), 100) << d.dump();
    EXPECT_LT(d.at("bytes_written").get<int64_t>(), d.at("bytes_compared").get<int64_t>()) << d.dump();
    EXPECT_FALSE(std::filesystem::exists(dir.path() + "/stray.txt"));
    opts["delta"] = "yes";
    EXPECT_TRUE(Fails(rsdb_recovery_restore_cluster(recovery.get(), opts.dump().c_str(), out.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "delta"));
}

// ---------------------------------------------------------------- bounded WAL queue

TEST_F(CRecoveryTest, WalQueueLimitPushAheadGapsAndTheGapWatchWorkThroughTheCApi) {
    // A repository of this test's own: the gap it records must not reach the stack's archive.
    rsdb_test::recovery::FakePgWal wal;
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(true, &cfg));
    const std::string repo = wal.root() + "/repo";
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "backup_dir", repo.c_str()));
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "wal_push_parallel", "2"));
    OutString report;
    const std::string s1 = wal.ready(1);
    wal.ready(2);
    ASSERT_RSDB_OK(rsdb_wal_push_report(cfg.get(), s1.c_str(), report.out()));
    json r = report.parse();
    EXPECT_EQ(r.at("outcome"), "stored") << r.dump();
    EXPECT_EQ(r.at("pushed_ahead"), json::array({FakePgWal::name(2)})) << r.dump();
    EXPECT_EQ(r.at("queue_bytes"), 2 * FakePgWal::kSegment) << r.dump();
    wal.done(1);
    int already = -1;
    ASSERT_RSDB_OK(rsdb_wal_push(cfg.get(), wal.path(2).c_str(), &already));
    EXPECT_EQ(already, 1) << "stored ahead by the first push";
    wal.done(2);

    // Past the limit the segment is reported archived without being stored, and a gap recorded.
    ASSERT_RSDB_OK(rsdb_config_set(cfg.get(), "wal_queue_max", std::to_string(2 * FakePgWal::kSegment).c_str()));
    for (int n = 3; n <= 5; n++) wal.ready(n);
    ASSERT_RSDB_OK(rsdb_wal_push_report(cfg.get(), wal.path(3).c_str(), report.out()));
    r = report.parse();
    EXPECT_EQ(r.at("outcome"), "dropped") << r.dump();
    EXPECT_EQ(r.at("queue_bytes"), 3 * FakePgWal::kSegment) << r.dump();
    EXPECT_EQ(r.at("gap").at("first_segment"), FakePgWal::name(3)) << r.dump();
    EXPECT_FALSE(std::filesystem::exists(repo + "/wal/" + FakePgWal::name(3)));
    wal.done(3);
    // Back under it, the next push stores its segment, and the gap before it.
    ASSERT_RSDB_OK(rsdb_wal_push(cfg.get(), wal.path(4).c_str(), &already));
    EXPECT_EQ(already, 0);
    EXPECT_TRUE(std::filesystem::exists(repo + "/wal/" + FakePgWal::name(4)));

    rsdb_backup* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &raw));
    BackupPtr own(raw);
    OutString gaps;
    ASSERT_RSDB_OK(rsdb_backup_wal_gaps(own.get(), gaps.out()));
    const json g = gaps.parse();
    ASSERT_EQ(g.size(), 1u) << g.dump();
    EXPECT_EQ(g[0].at("first_segment"), FakePgWal::name(3));
    EXPECT_EQ(g[0].at("last_segment"), FakePgWal::name(3));
    EXPECT_EQ(g[0].at("segments"), 1);
    EXPECT_EQ(g[0].at("limit_bytes"), 2 * FakePgWal::kSegment);
    EXPECT_TRUE(g[0].at("closed_by").is_null()) << g.dump();
    // The push wrote the gap's history row into this test's database.
    const json rows = query(db_.get(), "SELECT first_segment, segments FROM wal_gaps");
    ASSERT_EQ(rows.size(), 1u) << rows.dump();
    EXPECT_EQ(rows[0].at("first_segment"), FakePgWal::name(3));

    // The watch reports the open gap on a library thread, and stops.
    EventLog seen;
    rsdb_wal_gap_watch* watch = nullptr;
    ASSERT_RSDB_OK(rsdb_backup_watch_wal_gaps(own.get(), 100, json_to_log, &seen, &watch));
    GapWatchPtr watching(watch);
    ASSERT_TRUE(seen.wait_for(1, std::chrono::seconds(10))) << "the gap was not reported";
    watching.reset();
    EXPECT_EQ(seen.events().at(0).at("first_segment"), FakePgWal::name(3)) << seen.events().at(0).dump();

    // NULL and text that is not UTF-8.
    EXPECT_TRUE(Fails(rsdb_wal_push_report(nullptr, s1.c_str(), report.out()), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_wal_push_report(cfg.get(), nullptr, report.out()), RSDB_ERR_NULL, "path"));
    EXPECT_TRUE(Fails(rsdb_wal_push_report(cfg.get(), "pg_wal/\xff\xfe", report.out()), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_backup_wal_gaps(nullptr, gaps.out()), RSDB_ERR_NULL, "backup"));
    EXPECT_TRUE(Fails(rsdb_backup_wal_gaps(own.get(), nullptr), RSDB_ERR_NULL, "gaps_json"));
    EXPECT_TRUE(Fails(rsdb_backup_watch_wal_gaps(own.get(), 100, nullptr, nullptr, &watch), RSDB_ERR_NULL, "callback"));
    EXPECT_TRUE(Fails(rsdb_backup_watch_wal_gaps(own.get(), 100, json_to_log, &seen, nullptr), RSDB_ERR_NULL, "out"));
    rsdb_wal_gap_watch_stop(nullptr);
    wal.done(4);
    ASSERT_RSDB_OK(rsdb_wal_push_report(cfg.get(), wal.path(5).c_str(), nullptr));
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
