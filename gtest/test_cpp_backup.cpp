// The C++ face of logical backups: every BackupManager and RecoveryManager method of the logical
// path is called and its typed record arrives with the values the core produced (field mapping,
// optional fields, to_json with the keys the core serializes), and core errors arrive as the
// rootstream::Error subclass of their code. What backups do (integrity, confidentiality,
// retention, keys) is specified once, in tests/backup.rs. Every test migrates its own fresh
// database, fills it with distinctive data and backs it up into a fresh temporary directory;
// checksums are recomputed with OpenSSL's SHA-256, independently of the library.
#include "auth_util.h"
#include "backup_util.h"
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"
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
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

using json = nlohmann::json;
using rootstream::Config;
using rootstream::Error;
using rootstream::database::BackupInfo;
using rootstream::database::BackupManager;
using rootstream::database::BackupManifest;
using rootstream::database::DatabaseManager;
using rootstream::database::RecoveryManager;
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

using namespace rsdb_test::cppapi;

namespace {


/// A one-connection pool on `url`.
std::unique_ptr<DatabaseManager> open_db(const std::string& url) {
    Config cfg;
    cfg.set("database_url", url).set("pool_size", "1");
    return std::make_unique<DatabaseManager>(cfg);
}

json aggregates(DatabaseManager& db) {
    json all = json::array();
    for (const auto& sql : aggregate_queries()) all.push_back(db.query(sql).at(0));
    return all;
}

// ---------------------------------------------------------------- fixtures

/// A migrated database (no data) and a BackupManager into a fresh directory.
class CppBackupBase : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        dir_ = std::make_unique<TempDir>();
        scratch_ = std::make_unique<ScratchDatabases>(stack().database_url);
        master_key_ = random_master_key();
        key_id_ = "gt-backup-" + master_key_.substr(0, 8);
        cfg_ = std::make_unique<Config>(config({}));
        db_ = std::make_unique<DatabaseManager>(*cfg_);
        ASSERT_GE(db_->migrate(), 3) << "backup_history comes with migration 3";
        backups_ = std::make_unique<BackupManager>(*cfg_, *db_);
        recovery_ = std::make_unique<RecoveryManager>(*backups_);
    }

    void TearDown() override {
        recovery_.reset();
        backups_.reset();
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
    Config config(std::initializer_list<std::pair<const char*, std::string>> changes) {
        Config cfg;
        cfg.set("database_url", db_url())
            .set("backup_dir", dir_->path())
            .set("master_key", master_key_)
            .set("master_key_id", key_id_);
        for (const auto& [k, v] : changes) cfg.set(k, v);
        return cfg;
    }

    std::string backup_path(const std::string& id, const std::string& file) const {
        return dir_->path() + "/" + id + "/" + file;
    }

    std::unique_ptr<TempDir> dir_;
    std::unique_ptr<ScratchDatabases> scratch_;
    std::string master_key_;
    std::string key_id_;
    std::unique_ptr<Config> cfg_;
    std::unique_ptr<DatabaseManager> db_;
    std::unique_ptr<BackupManager> backups_;
    std::unique_ptr<RecoveryManager> recovery_;
};

/// CppBackupBase plus the distinctive data: marked users and the md5 table.
class CppBackupTest : public CppBackupBase {
protected:
    void SetUp() override {
        CppBackupBase::SetUp();
        if (HasFatalFailure()) return;
        marker_ = "gt-marker-" + master_key_.substr(8, 16);
        for (const auto& sql : fill_statements(marker_)) db_->execute(sql);
    }

    std::string marker_;
};

// ---------------------------------------------------------------- typed records

TEST_F(CppBackupTest, EveryLogicalBackupMethodRoundTripsItsTypedRecordThroughTheCppApi) {
    const BackupManifest m = backups_->create_full();
    const std::string id = m.backup_id;
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(m.format, 1u);
    EXPECT_EQ(m.backup_type, "full");
    EXPECT_FALSE(m.method.empty());
    EXPECT_FALSE(m.database.empty());
    EXPECT_FALSE(m.server_version.empty());
    EXPECT_EQ(m.compression.rfind("zstd", 0), 0u) << m.compression;
    EXPECT_EQ(m.key_id, key_id_);
    EXPECT_TRUE(is_hex64(m.wrapped_key.substr(0, 64))) << m.wrapped_key;
    EXPECT_EQ(m.started_at.back(), 'Z') << "RFC 3339 UTC: " << m.started_at;
    EXPECT_LE(m.started_at, m.finished_at);
    EXPECT_FALSE(m.physical.has_value()) << "a logical backup has no WAL range";

    ASSERT_EQ(m.files.size(), 1u);
    const auto& f = m.files[0];
    EXPECT_EQ(f.name, "dump.zst.enc");
    EXPECT_GE(f.chunks, 2u);
    EXPECT_LT(f.stored_bytes, f.plain_bytes);
    const std::string stored = read_file(backup_path(id, "dump.zst.enc"));
    EXPECT_EQ(stored.size(), f.stored_bytes) << "stored_bytes arrives unchanged";
    EXPECT_EQ(sha256_hex(stored), f.sha256) << "sha256 arrives unchanged";
    EXPECT_EQ(m.row_counts.at("public.users"), kMarkedUsers);
    EXPECT_EQ(m.row_counts.at("public.big"), kBigRows);
    int64_t manifest_rows = 0;
    for (const auto& [table, n] : m.row_counts) manifest_rows += n;

    // to_json keeps the keys the core writes into manifest.json.
    const json mj = m.to_json();
    const json on_disk = json::parse(read_file(backup_path(id, "manifest.json")));
    EXPECT_EQ(mj, on_disk) << "to_json differs from manifest.json";

    EXPECT_EQ(backups_->verify(id).to_json(), mj) << "verify returns the manifest create_full returned";

    const std::vector<BackupInfo> listed = backups_->list();
    ASSERT_EQ(listed.size(), 1u);
    const BackupInfo& b = listed[0];
    EXPECT_EQ(b.backup_id, id);
    EXPECT_EQ(b.backup_type, "full");
    EXPECT_EQ(b.method, std::optional<std::string>("logical"));
    EXPECT_EQ(b.kind, std::optional<std::string>("logical"));
    EXPECT_EQ(b.status, "completed");
    EXPECT_NE(b.path.find(id), std::string::npos) << b.path;
    EXPECT_TRUE(b.database.has_value());
    EXPECT_EQ(b.compressed_size_bytes, std::optional<int64_t>(static_cast<int64_t>(f.stored_bytes)));
    EXPECT_TRUE(b.size_bytes.has_value());
    EXPECT_TRUE(b.finished_at.has_value());
    EXPECT_EQ(b.started_at.back(), 'Z') << b.started_at;
    EXPECT_FALSE(b.error_message.has_value());
    const json bj = b.to_json();
    for (const char* key : {"backup_id", "backup_type", "method", "kind", "status", "path", "database", "size_bytes",
                            "compressed_size_bytes", "started_at", "finished_at", "error_message"}) {
        EXPECT_TRUE(bj.contains(key)) << key << " missing in " << bj.dump();
    }
    EXPECT_TRUE(bj.at("error_message").is_null());
    EXPECT_EQ(bj.at("compressed_size_bytes"), f.stored_bytes);

    const json before = aggregates(*db_);
    const std::string target_url = scratch_->create();
    const auto r = recovery_->restore(id, target_url);
    EXPECT_EQ(r.backup_id, id);
    EXPECT_EQ(r.rows_restored, manifest_rows);
    EXPECT_EQ(r.tables_checked, m.row_counts.size());
    EXPECT_FALSE(r.target.empty());
    EXPECT_EQ(r.to_json(), (json{{"backup_id", id}, {"target", r.target}, {"tables_checked", r.tables_checked},
                                 {"rows_restored", manifest_rows}}));
    EXPECT_EQ(aggregates(*open_db(target_url)), before) << "the restored database holds the same rows";
}

// ---------------------------------------------------------------- errors by kind

TEST_F(CppBackupTest, CoreErrorsArriveAsTheErrorSubclassOfTheirCode) {
    const std::string id = backups_->create_full().backup_id;
    const std::string target_url = scratch_->create();

    // Integrity: a flipped byte, for verify and restore.
    const std::string file = backup_path(id, "dump.zst.enc");
    const std::string original = read_file(file);
    std::string bad = original;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x01);
    write_file(file, bad);
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(id); }, RSDB_ERR_INTEGRITY, "dump.zst.enc: chunk"));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(id, target_url); }, RSDB_ERR_INTEGRITY, "dump.zst.enc"));
    write_file(file, original);
    EXPECT_NO_THROW(backups_->verify(id));

    // Not found and invalid argument.
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify("full-20000101T000000Z-000000"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(
        ThrowsCode([&] { recovery_->restore("full-20000101T000000Z-000000", target_url); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify("../etc"); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { backups_->delete_backup("../etc"); }, RSDB_ERR_INVALID_ARGUMENT));

    // Strings that are not UTF-8 are refused by the bridge before the core sees them.
    const std::string bad_id = "full-\xff\xfe-\xc3";
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(bad_id); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(bad_id, target_url); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(id, target_url + "\xff"); }, RSDB_ERR_INVALID_UTF8));

    // Another master key: integrity, naming the key.
    BackupManager wrong(config({{"master_key", random_master_key()}}), *db_);
    EXPECT_TRUE(ThrowsCode([&] { wrong.verify(id); }, RSDB_ERR_INTEGRITY, "master key"));

    // Configuration.
    for (const char* key : {"backup_dir", "master_key"}) {
        SCOPED_TRACE(key);
        EXPECT_TRUE(ThrowsCode([&] { BackupManager b(config({{key, ""}}), *db_); }, RSDB_ERR_CONFIG, key));
    }

    // I/O, recorded in the history with its message (the optional error_message arrives).
    BackupManager unwritable(config({{"backup_dir", "/proc/rsdb-nope"}}), *db_);
    EXPECT_TRUE(ThrowsCode([&] { unwritable.create_full(); }, RSDB_ERR_IO, "/proc/rsdb-nope"));
    const std::vector<BackupInfo> listed = unwritable.list();
    ASSERT_EQ(listed.size(), 2u);
    EXPECT_EQ(listed[0].status, "failed") << "newest first";
    ASSERT_TRUE(listed[0].error_message.has_value());
    EXPECT_NE(listed[0].error_message->find("/proc/rsdb-nope"), std::string::npos) << *listed[0].error_message;
    EXPECT_TRUE(listed[0].to_json().at("error_message").is_string());
    EXPECT_EQ(listed[1].backup_id, id);
}

}  // namespace

// ---------------------------------------------------------------- retention and schedule

TEST_F(CppBackupBase, CleanupReturnsItsTypedReportAndTheSchedulerCallsBackOnALibraryThread) {
    const std::string a = backups_->create_full().backup_id;
    const std::string b = backups_->create_full().backup_id;
    db_->execute("UPDATE backup_history SET finished_at = now() - interval '40 days' + id * interval '1 minute'");
    const auto r = backups_->cleanup();
    ASSERT_EQ(r.deleted, std::vector<std::string>({a}));
    EXPECT_EQ(r.kept, 1u);
    EXPECT_GT(r.bytes_freed, 0u);
    EXPECT_EQ(r.to_json(), (json{{"deleted", json::array({a})}, {"kept", r.kept}, {"wal_deleted", r.wal_deleted},
                                 {"bytes_freed", r.bytes_freed}}));
    EXPECT_NO_THROW(backups_->verify(b));
    EXPECT_TRUE(backups_->cleanup(0, 0, 0, 1).deleted.empty()) << "explicit arguments reach the core";

    db_->execute("UPDATE backup_history SET finished_at = now() - interval '2 days'");
    std::mutex m;
    std::condition_variable cv;
    std::vector<json> events;
    const auto caller = std::this_thread::get_id();
    std::thread::id handler_thread;
    {
        rootstream::database::BackupScheduler nightly(*backups_, "0 3 * * *", [&](const json& e) {
            std::lock_guard<std::mutex> lock(m);
            handler_thread = std::this_thread::get_id();
            events.push_back(e);
            cv.notify_all();
        });
        std::unique_lock<std::mutex> lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return !events.empty(); })) << "no missed-run report";
        EXPECT_EQ(events[0].at("event"), "missed") << events[0].dump();
        EXPECT_NE(handler_thread, caller) << "the handler runs on a library thread";
    }
    EXPECT_TRUE(ThrowsCode([&] { rootstream::database::BackupScheduler s(*backups_, "* * * *", [](const json&) {}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { rootstream::database::BackupScheduler s(*backups_, "0 3 * * *", nullptr); },
                           RSDB_ERR_NULL));
}
