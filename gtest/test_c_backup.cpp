// The C face of encrypted logical backups (rsdb_backup_*): every function is called, its JSON
// arrives with the core's values, core errors arrive as their status codes with a last-error
// message, and the C-only contract holds (NULL and optional out-pointers, invalid UTF-8, a
// schedule callback on a library thread). What backups do (integrity, confidentiality,
// retention, keys) is specified once, in tests/backup.rs. Every test migrates its own fresh
// database, fills it with distinctive data and backs it up into a fresh temporary directory;
// checksums are recomputed with OpenSSL's SHA-256, independently of the library.
#include "auth_util.h"
#include "backup_util.h"
#include "rootstream_db.h"
#include "c_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using json = nlohmann::json;
using rsdb_test::last_error;
using namespace rsdb_test::capi;
using rsdb_test::auth::random_master_key;
using rsdb_test::auth::sha256_hex;
using rsdb_test::backup::aggregate_queries;
using rsdb_test::backup::fill_statements;
using rsdb_test::backup::is_hex64;
using rsdb_test::backup::kBigRows;
using rsdb_test::backup::kMarkedUsers;
using rsdb_test::backup::read_file;
using rsdb_test::backup::ScratchDatabases;
using rsdb_test::backup::TempDir;
using rsdb_test::backup::write_file;

namespace {

/// Opens `url` with a one-connection pool.
DbPtr open_db(const std::string& url) {
    rsdb_config* raw_cfg = nullptr;
    check(rsdb_config_new(&raw_cfg), "rsdb_config_new");
    ConfigPtr cfg(raw_cfg);
    check(rsdb_config_set(cfg.get(), "database_url", url.c_str()), "rsdb_config_set(database_url)");
    check(rsdb_config_set(cfg.get(), "pool_size", "1"), "rsdb_config_set(pool_size)");
    rsdb_db* db = nullptr;
    check(rsdb_db_open(cfg.get(), &db), "rsdb_db_open(" + url + ")");
    return DbPtr(db);
}

json query(rsdb_db* db, const std::string& sql) {
    OutString out;
    check(rsdb_db_query(db, sql.c_str(), nullptr, out.out()), sql);
    return out.parse();
}

/// The aggregate queries' results on `db`, one row object per query.
json aggregates(rsdb_db* db) {
    json all = json::array();
    for (const auto& sql : aggregate_queries()) all.push_back(query(db, sql).at(0));
    return all;
}

// ---------------------------------------------------------------- fixtures

/// A migrated database (no data) and a backup handle into a fresh directory.
class CBackupBase : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        dir_ = std::make_unique<TempDir>();
        scratch_ = std::make_unique<ScratchDatabases>(stack().database_url);
        master_key_ = random_master_key();
        key_id_ = "gt-backup-" + master_key_.substr(0, 8);
        ASSERT_NO_FATAL_FAILURE(make_config({}, &cfg_));
        rsdb_db* db = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg_.get(), &db));
        db_.reset(db);
        int version = 0;
        ASSERT_RSDB_OK(rsdb_db_migrate(db, &version));
        ASSERT_GE(version, 3) << "backup_history comes with migration 3";
        rsdb_backup* b = nullptr;
        ASSERT_RSDB_OK(rsdb_backup_new(cfg_.get(), db, &b));
        ASSERT_NE(b, nullptr);
        backup_.reset(b);
    }

    void TearDown() override {
        backup_.reset();
        db_.reset();
        cfg_.reset();
        if (scratch_) {
            EXPECT_TRUE(scratch_->drop_all());
        }
        scratch_.reset();
        dir_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// This test's database, backup_dir, master key and key id, then `changes` (an empty value
    /// clears a key).
    void make_config(std::initializer_list<std::pair<const char*, std::string>> changes, ConfigPtr* out) {
        rsdb_config* cfg = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&cfg));
        out->reset(cfg);
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "backup_dir", dir_->path().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "master_key", master_key_.c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "master_key_id", key_id_.c_str()));
        for (const auto& [k, v] : changes) {
            ASSERT_RSDB_OK(rsdb_config_set(cfg, k, v.c_str())) << k << "=" << v;
        }
    }

    /// A backup handle on this test's database for the config with `changes`.
    void make_backup(std::initializer_list<std::pair<const char*, std::string>> changes, BackupPtr* out) {
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config(changes, &cfg));
        rsdb_backup* b = nullptr;
        ASSERT_RSDB_OK(rsdb_backup_new(cfg.get(), db_.get(), &b));
        ASSERT_NE(b, nullptr);
        out->reset(b);
    }

    json create_full() {
        OutString out;
        check(rsdb_backup_create_full(backup_.get(), out.out()), "rsdb_backup_create_full");
        return out.parse();
    }

    json list(const rsdb_backup* b = nullptr) {
        OutString out;
        check(rsdb_backup_list(b != nullptr ? b : backup_.get(), out.out()), "rsdb_backup_list");
        return out.parse();
    }

    std::string backup_path(const std::string& id, const std::string& file) const {
        return dir_->path() + "/" + id + "/" + file;
    }

    std::unique_ptr<TempDir> dir_;
    std::unique_ptr<ScratchDatabases> scratch_;
    std::string master_key_;
    std::string key_id_;
    ConfigPtr cfg_;
    DbPtr db_;
    BackupPtr backup_;
};

/// CBackupBase plus the distinctive data: marked users and the md5 table.
class CBackupTest : public CBackupBase {
protected:
    void SetUp() override {
        CBackupBase::SetUp();
        if (HasFatalFailure()) return;
        marker_ = "gt-marker-" + master_key_.substr(8, 16);
        for (const auto& sql : fill_statements(marker_)) {
            ASSERT_RSDB_OK(rsdb_db_execute(db_.get(), sql.c_str(), nullptr, nullptr)) << sql;
        }
    }

    std::string marker_;
};

// ---------------------------------------------------------------- every function

TEST_F(CBackupTest, EveryLogicalBackupFunctionReturnsItsJsonThroughTheCApi) {
    const json m = create_full();
    ASSERT_TRUE(m.contains("backup_id") && m["backup_id"].is_string()) << m.dump();
    const std::string id = m["backup_id"].get<std::string>();
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(m.at("backup_type"), "full");
    EXPECT_EQ(m.at("key_id"), key_id_);
    EXPECT_FALSE(m.contains("physical")) << "a logical backup has no WAL range";
    ASSERT_TRUE(m.at("files").is_array() && m["files"].size() == 1u) << m.dump();
    const json& f = m["files"][0];
    EXPECT_EQ(f.at("name"), "dump.zst.enc");
    EXPECT_TRUE(is_hex64(f.at("sha256").get<std::string>())) << f.dump();
    const std::string stored = read_file(backup_path(id, "dump.zst.enc"));
    EXPECT_EQ(static_cast<int64_t>(stored.size()), f.at("stored_bytes").get<int64_t>());
    EXPECT_EQ(sha256_hex(stored), f.at("sha256").get<std::string>());
    EXPECT_EQ(json::parse(read_file(backup_path(id, "manifest.json"))), m) << "the JSON is the stored manifest";
    const json& counts = m.at("row_counts");
    EXPECT_EQ(counts.at("public.users").get<int64_t>(), kMarkedUsers);
    EXPECT_EQ(counts.at("public.big").get<int64_t>(), kBigRows);
    int64_t manifest_rows = 0;
    for (const auto& [table, n] : counts.items()) manifest_rows += n.get<int64_t>();

    const json listed = list();
    ASSERT_EQ(listed.size(), 1u) << listed.dump();
    EXPECT_EQ(listed[0].at("backup_id"), id);
    EXPECT_EQ(listed[0].at("status"), "completed");
    EXPECT_EQ(listed[0].at("kind"), "logical");
    EXPECT_EQ(listed[0].at("method"), "logical");
    EXPECT_EQ(listed[0].at("compressed_size_bytes"), f.at("stored_bytes"));
    EXPECT_TRUE(listed[0].at("error_message").is_null());

    OutString verified;
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), verified.out()));
    EXPECT_EQ(verified.parse(), m) << "verify returns the manifest create_full returned";

    const json before = aggregates(db_.get());
    const std::string target_url = scratch_->create();
    OutString report;
    ASSERT_RSDB_OK(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), report.out()));
    const json r = report.parse();
    EXPECT_EQ(r.at("backup_id"), id);
    EXPECT_EQ(r.at("rows_restored").get<int64_t>(), manifest_rows) << r.dump();
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), counts.size()) << r.dump();
    ASSERT_TRUE(r.contains("target")) << r.dump();
    DbPtr target = open_db(target_url);
    EXPECT_EQ(aggregates(target.get()), before) << "the restored database holds the same rows";
}

// ---------------------------------------------------------------- errors

TEST_F(CBackupTest, CoreErrorsArriveAsTheirStatusCodesWithALastErrorAndNoOutput) {
    const std::string id = create_full().at("backup_id").get<std::string>();
    const std::string target_url = scratch_->create();

    // Integrity: a flipped byte, for verify and restore; no output is written.
    const std::string file = backup_path(id, "dump.zst.enc");
    const std::string original = read_file(file);
    std::string bad = original;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x01);
    write_file(file, bad);
    OutString out;
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), id.c_str(), out.out()), RSDB_ERR_INTEGRITY,
                      "dump.zst.enc: chunk"));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), out.out()),
                      RSDB_ERR_INTEGRITY, "dump.zst.enc"));
    EXPECT_TRUE(out.is_null());
    write_file(file, original);
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr));

    // Not found and invalid argument.
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), "full-20000101T000000Z-000000", nullptr), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), "full-20000101T000000Z-000000", target_url.c_str(), nullptr),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), "../etc", nullptr), RSDB_ERR_INVALID_ARGUMENT));

    // Another master key.
    BackupPtr wrong;
    ASSERT_NO_FATAL_FAILURE(make_backup({{"master_key", random_master_key()}}, &wrong));
    EXPECT_TRUE(Fails(rsdb_backup_verify(wrong.get(), id.c_str(), out.out()), RSDB_ERR_INTEGRITY, "master key"));
    EXPECT_TRUE(out.is_null());

    // Configuration: no handle is returned.
    for (const char* key : {"backup_dir", "master_key"}) {
        SCOPED_TRACE(key);
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config({{key, ""}}, &cfg));
        rsdb_backup* b = nullptr;
        EXPECT_TRUE(Fails(rsdb_backup_new(cfg.get(), db_.get(), &b), RSDB_ERR_CONFIG, key));
        EXPECT_EQ(b, nullptr);
    }

    // I/O, recorded in the history with its message.
    BackupPtr unwritable;
    ASSERT_NO_FATAL_FAILURE(make_backup({{"backup_dir", "/proc/rsdb-nope"}}, &unwritable));
    EXPECT_TRUE(Fails(rsdb_backup_create_full(unwritable.get(), out.out()), RSDB_ERR_IO, "/proc/rsdb-nope"));
    EXPECT_TRUE(out.is_null());
    const json listed = list(unwritable.get());
    ASSERT_EQ(listed.size(), 2u) << listed.dump();
    EXPECT_EQ(listed[0].at("status"), "failed") << "newest first";
    ASSERT_TRUE(listed[0].at("error_message").is_string()) << listed.dump();
    EXPECT_NE(listed[0]["error_message"].get<std::string>().find("/proc/rsdb-nope"), std::string::npos);
}

TEST_F(CBackupTest, OptionalOutPointersMayBeNull) {
    ASSERT_RSDB_OK(rsdb_backup_create_full(backup_.get(), nullptr));
    const json listed = list();
    ASSERT_EQ(listed.size(), 1u) << listed.dump();
    EXPECT_EQ(listed[0].at("status"), "completed");
    const std::string id = listed[0].at("backup_id").get<std::string>();
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr));
    const std::string target_url = scratch_->create();
    EXPECT_RSDB_OK(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), nullptr));
    DbPtr target = open_db(target_url);
    EXPECT_EQ(query(target.get(), "SELECT count(*)::text AS n FROM big").at(0).at("n"), std::to_string(kBigRows));
}

// ---------------------------------------------------------------- configuration and arguments

TEST_F(CBackupBase, NullArgumentsAreRefusedWithErrNull) {
    rsdb_backup* b = nullptr;
    EXPECT_TRUE(Fails(rsdb_backup_new(nullptr, db_.get(), &b), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_new(cfg_.get(), nullptr, &b), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_new(cfg_.get(), db_.get(), nullptr), RSDB_ERR_NULL));
    EXPECT_EQ(b, nullptr);

    OutString out;
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(Fails(rsdb_backup_create_full(nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_verify(nullptr, "full-x", out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_restore(nullptr, "full-x", target_url.c_str(), out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), nullptr, target_url.c_str(), out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), "full-x", nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_list(nullptr, out.out()), RSDB_ERR_NULL));
    EXPECT_TRUE(Fails(rsdb_backup_list(backup_.get(), nullptr), RSDB_ERR_NULL));
    EXPECT_TRUE(out.is_null());
    rsdb_backup_free(nullptr);

    // Nothing was attempted: the history is empty.
    OutString listed;
    ASSERT_RSDB_OK(rsdb_backup_list(backup_.get(), listed.out()));
    EXPECT_EQ(listed.parse(), json::array());
}

TEST_F(CBackupBase, AnIdThatIsNotUtf8IsRefusedWithErrInvalidUtf8) {
    const char bad_id[] = "full-\xff\xfe-\xc3";
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), bad_id, nullptr), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), bad_id, target_url.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
    const std::string bad_url = target_url + "\xff";
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), "full-x", bad_url.c_str(), nullptr), RSDB_ERR_INVALID_UTF8));
}

}  // namespace

// ---------------------------------------------------------------- retention and schedule

namespace {
struct ScheduleInbox {
    std::mutex m;
    std::condition_variable cv;
    std::vector<json> events;
    std::thread::id thread;
};

void on_schedule_event(void* user_data, const char* event_json) {
    auto* in = static_cast<ScheduleInbox*>(user_data);
    std::lock_guard<std::mutex> lock(in->m);
    in->events.push_back(json::parse(event_json));
    in->thread = std::this_thread::get_id();
    in->cv.notify_all();
}
}  // namespace

TEST_F(CBackupBase, CleanupReturnsItsReportAndAScheduleCallsBackOnALibraryThread) {
    const std::string a = create_full().at("backup_id").get<std::string>();
    const std::string b = create_full().at("backup_id").get<std::string>();
    ASSERT_RSDB_OK(rsdb_db_execute(db_.get(),
                                   "UPDATE backup_history SET finished_at = now() - interval '40 days' + id * interval '1 minute'",
                                   nullptr, nullptr));
    OutString report;
    ASSERT_RSDB_OK(rsdb_backup_cleanup(backup_.get(), 0, 0, 0, 1, report.out()));
    const json r = report.parse();
    ASSERT_EQ(r.at("deleted"), json::array({a})) << r.dump();
    EXPECT_EQ(r.at("kept"), 1) << r.dump();
    EXPECT_GT(r.at("bytes_freed").get<std::uint64_t>(), 0u);
    EXPECT_TRUE(r.at("wal_deleted").is_number()) << r.dump();
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), b.c_str(), nullptr));
    EXPECT_RSDB_OK(rsdb_backup_cleanup(backup_.get(), 0, 0, 0, 1, nullptr)) << "the report is optional";
    EXPECT_EQ(rsdb_backup_cleanup(nullptr, 0, 0, 0, 1, nullptr), RSDB_ERR_NULL);

    ASSERT_RSDB_OK(rsdb_db_execute(db_.get(), "UPDATE backup_history SET finished_at = now() - interval '2 days'", nullptr,
                                   nullptr));
    ScheduleInbox inbox;
    rsdb_backup_schedule* sched = nullptr;
    ASSERT_RSDB_OK(rsdb_backup_schedule_start(backup_.get(), "0 3 * * *", on_schedule_event, &inbox, &sched));
    {
        std::unique_lock<std::mutex> lock(inbox.m);
        ASSERT_TRUE(inbox.cv.wait_for(lock, std::chrono::seconds(5), [&] { return !inbox.events.empty(); }))
            << "no missed-run report";
        EXPECT_EQ(inbox.events[0].at("event"), "missed") << inbox.events[0].dump();
        EXPECT_EQ(inbox.events[0].at("schedule"), "0 3 * * *");
        EXPECT_NE(inbox.thread, std::this_thread::get_id()) << "the callback runs on a library thread";
    }
    rsdb_backup_schedule_stop(sched);
    rsdb_backup_schedule_stop(nullptr);

    rsdb_backup_schedule* bad = nullptr;
    EXPECT_EQ(rsdb_backup_schedule_start(backup_.get(), "61 * * * *", on_schedule_event, &inbox, &bad),
              RSDB_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bad, nullptr);
    EXPECT_EQ(rsdb_backup_schedule_start(backup_.get(), "* * * * *", nullptr, &inbox, &bad), RSDB_ERR_NULL);
}
