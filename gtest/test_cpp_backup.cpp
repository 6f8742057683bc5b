// rootstream::database::BackupManager and RecoveryManager against the stack's real PostgreSQL
// server and its pg_dump/pg_restore. Every test migrates its own fresh database, fills it with
// distinctive data (users carrying a unique marker string, and a table of md5 text large enough
// for several 1 MiB chunks) and backs it up into a fresh temporary directory. Checksums are
// recomputed with OpenSSL's SHA-256, independently of the library.
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
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

using json = nlohmann::json;
using rootstream::Config;
using rootstream::Error;
using rootstream::database::BackupManager;
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


/// The message of the Error `f` throws (empty when it throws nothing or something else).
template <class F>
std::string error_message(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (...) {
    }
    return std::string();
}

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

/// Number of tables outside the system schemas: 0 for a database nothing was restored into.
std::string user_tables(DatabaseManager& db) {
    return db
        .query("SELECT count(*)::text AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        .at(0)
        .at("n")
        .get<std::string>();
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

// ---------------------------------------------------------------- full backup and restore

TEST_F(CppBackupTest, AFullBackupRestoresIntoAFreshDatabaseWithTheSameRows) {
    const json m = backups_->create_full();
    ASSERT_TRUE(m.contains("backup_id") && m["backup_id"].is_string()) << m.dump();
    const std::string id = m["backup_id"].get<std::string>();
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(m.at("files").is_array() && !m["files"].empty()) << m.dump();
    const json& f = m["files"][0];
    EXPECT_EQ(f.at("name"), "dump.zst.enc");
    EXPECT_TRUE(is_hex64(f.at("sha256").get<std::string>())) << f.dump();
    EXPECT_GE(f.at("chunks").get<int64_t>(), 2) << "the dump spans several 1 MiB chunks: " << f.dump();
    EXPECT_LT(f.at("stored_bytes").get<int64_t>(), f.at("plain_bytes").get<int64_t>()) << "compressed: " << f.dump();

    const std::string stored = read_file(backup_path(id, "dump.zst.enc"));
    EXPECT_EQ(static_cast<int64_t>(stored.size()), f.at("stored_bytes").get<int64_t>());
    EXPECT_EQ(sha256_hex(stored), f.at("sha256").get<std::string>());

    const json& counts = m.at("row_counts");
    ASSERT_TRUE(counts.is_object()) << m.dump();
    EXPECT_EQ(counts.at("public.users").get<int64_t>(), kMarkedUsers);
    EXPECT_EQ(counts.at("public.big").get<int64_t>(), kBigRows);
    int64_t manifest_rows = 0;
    for (const auto& [table, n] : counts.items()) manifest_rows += n.get<int64_t>();

    const json listed = backups_->list();
    ASSERT_TRUE(listed.is_array() && !listed.empty()) << listed.dump();
    EXPECT_EQ(listed[0].at("backup_id"), id);
    EXPECT_EQ(listed[0].at("status"), "completed");
    EXPECT_EQ(listed[0].at("compressed_size_bytes"), f.at("stored_bytes"));

    EXPECT_EQ(backups_->verify(id), m) << "verify returns the manifest create_full returned";

    const json before = aggregates(*db_);
    ASSERT_EQ(before[0].at("n"), std::to_string(kBigRows)) << "the comparison covers the data";
    ASSERT_EQ(before[4].at("marked"), std::to_string(kMarkedUsers)) << "the comparison covers the data";

    const std::string target_url = scratch_->create();
    const json r = recovery_->restore(id, target_url);
    EXPECT_EQ(r.at("backup_id"), id);
    EXPECT_EQ(r.at("rows_restored").get<int64_t>(), manifest_rows) << r.dump();
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), counts.size()) << r.dump();
    ASSERT_TRUE(r.contains("target")) << r.dump();

    auto target = open_db(target_url);
    const json after = aggregates(*target);
    for (size_t i = 0; i < before.size(); ++i) {
        EXPECT_EQ(after[i], before[i]) << aggregate_queries()[i];
    }
    for (const auto& [table, n] : counts.items()) {
        EXPECT_EQ(target->query("SELECT count(*)::text AS n FROM " + table).at(0).at("n"),
                  std::to_string(n.get<int64_t>()))
            << table;
    }
    const json history = target->query("SELECT backup_id, status FROM backup_history");
    ASSERT_EQ(history.size(), 1u) << history.dump();
    EXPECT_EQ(history[0].at("backup_id"), id);
    EXPECT_EQ(history[0].at("status"), "in_progress");
}

// ---------------------------------------------------------------- confidentiality

TEST_F(CppBackupTest, TheStoredDumpHoldsNoPlaintext) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const json marked =
        db_->query("SELECT count(*)::text AS n FROM users WHERE display_name LIKE $1", json::array({marker_ + " %"}));
    ASSERT_EQ(marked.at(0).at("n"), std::to_string(kMarkedUsers));

    const std::string bytes = read_file(backup_path(id, "dump.zst.enc"));
    ASSERT_GT(bytes.size(), 1000000u) << "the dump is stored";
    EXPECT_EQ(bytes.find(marker_), std::string::npos) << "the marker occurs in plaintext in dump.zst.enc";
    EXPECT_EQ(bytes.find("user2999@example.com"), std::string::npos) << "an e-mail address occurs in plaintext";
    EXPECT_EQ(bytes.find("CREATE TABLE"), std::string::npos) << "DDL occurs in plaintext";
    EXPECT_EQ(read_file(backup_path(id, "manifest.json")).find(marker_), std::string::npos);
}

// ---------------------------------------------------------------- integrity

TEST_F(CppBackupTest, AFlippedByteAnywhereInTheDumpFailsVerificationAndRestoreUntilRepaired) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const int64_t chunks = m.at("files").at(0).at("chunks").get<int64_t>();
    ASSERT_GE(chunks, 2);
    const std::string file = backup_path(id, "dump.zst.enc");
    const std::string original = read_file(file);
    ASSERT_NO_THROW(backups_->verify(id));

    struct Flip {
        size_t pos;
        std::string where;
        std::string chunk;
    };
    const std::vector<Flip> flips = {
        {20, "beginning", "dump.zst.enc: chunk 0"},
        {original.size() / 2, "middle", ""},
        {original.size() - 3, "end", "dump.zst.enc: chunk " + std::to_string(chunks - 1)},
    };
    for (const auto& flip : flips) {
        SCOPED_TRACE("byte " + std::to_string(flip.pos) + " (" + flip.where + ") of " + std::to_string(original.size()));
        std::string bad = original;
        bad[flip.pos] = static_cast<char>(bad[flip.pos] ^ 0x01);
        write_file(file, bad);

        EXPECT_TRUE(ThrowsCode([&] { backups_->verify(id); }, RSDB_ERR_INTEGRITY, "dump.zst.enc: chunk"));
        if (!flip.chunk.empty()) {
            const std::string msg = error_message([&] { backups_->verify(id); });
            EXPECT_NE(msg.find(flip.chunk), std::string::npos) << msg;
        }
        const std::string target_url = scratch_->create();
        EXPECT_TRUE(
            ThrowsCode([&] { recovery_->restore(id, target_url); }, RSDB_ERR_INTEGRITY, "dump.zst.enc: chunk"));
        EXPECT_EQ(user_tables(*open_db(target_url)), "0") << "restore wrote into the target before refusing";
    }

    write_file(file, original);
    EXPECT_NO_THROW(backups_->verify(id)) << "the repaired backup verifies";
}

TEST_F(CppBackupTest, AnEditedManifestIsAnIntegrityErrorAboutTheManifest) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const std::string path = backup_path(id, "manifest.json");
    const std::string text = read_file(path);
    const std::string from = "\"public.big\": " + std::to_string(kBigRows);
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << text;
    std::string edited = text;
    edited.replace(at, from.size(), "\"public.big\": " + std::to_string(kBigRows - 1));
    write_file(path, edited);

    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(id); }, RSDB_ERR_INTEGRITY, "manifest"));
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(id, target_url); }, RSDB_ERR_INTEGRITY, "manifest"));

    write_file(path, text);
    EXPECT_NO_THROW(backups_->verify(id));
}

TEST_F(CppBackupTest, ADeletedDumpIsAnIntegrityErrorSayingItIsMissing) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    ASSERT_TRUE(std::filesystem::remove(backup_path(id, "dump.zst.enc")));
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(id); }, RSDB_ERR_INTEGRITY, "dump.zst.enc is missing"));
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(id, target_url); }, RSDB_ERR_INTEGRITY, "missing"));
}

TEST_F(CppBackupTest, AnUnknownBackupIdIsNotFoundAndAPathInTheIdIsRefused) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const std::string target_url = scratch_->create();

    EXPECT_TRUE(ThrowsCode([&] { backups_->verify("full-20000101T000000Z-000000"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(
        ThrowsCode([&] { recovery_->restore("full-20000101T000000Z-000000", target_url); }, RSDB_ERR_NOT_FOUND));

    const std::string dir_name = std::filesystem::path(dir_->path()).filename().string();
    const std::string traversal = "../" + dir_name + "/" + id;
    ASSERT_TRUE(std::filesystem::exists(dir_->path() + "/" + traversal + "/manifest.json"));
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(traversal); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(traversal, target_url); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify("../etc"); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(user_tables(*open_db(target_url)), "0");
    EXPECT_NO_THROW(backups_->verify(id)) << "the real id still verifies";
}

TEST_F(CppBackupTest, AnIdThatIsNotUtf8IsRefusedWithErrInvalidUtf8) {
    const std::string bad_id = "full-\xff\xfe-\xc3";
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(ThrowsCode([&] { backups_->verify(bad_id); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore(bad_id, target_url); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { recovery_->restore("full-x", target_url + "\xff"); }, RSDB_ERR_INVALID_UTF8));
}

// ---------------------------------------------------------------- keys

TEST_F(CppBackupTest, AnotherMasterKeyCannotVerifyOrRestoreAndSaysSo) {
    const json m = backups_->create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const std::string other_key = random_master_key();
    ASSERT_NE(other_key, master_key_);

    for (const std::string& key_id : {key_id_, std::string("gt-other-key")}) {
        SCOPED_TRACE("master_key_id " + key_id);
        BackupManager wrong(config({{"master_key", other_key}, {"master_key_id", key_id}}), *db_);
        RecoveryManager wrong_recovery(wrong);
        EXPECT_TRUE(ThrowsCode([&] { wrong.verify(id); }, RSDB_ERR_INTEGRITY, "master key"));
        const std::string target_url = scratch_->create();
        EXPECT_TRUE(ThrowsCode([&] { wrong_recovery.restore(id, target_url); }, RSDB_ERR_INTEGRITY, "master key"));
        EXPECT_EQ(user_tables(*open_db(target_url)), "0") << "nothing was restored with the wrong key";
    }
    EXPECT_NO_THROW(backups_->verify(id)) << "the right key still verifies";
}

// ---------------------------------------------------------------- failures

TEST_F(CppBackupTest, AnUnwritableBackupDirFailsWithIoIsRecordedAsFailedAndLeavesTheDatabaseAlone) {
    const json before = aggregates(*db_);
    BackupManager bad(config({{"backup_dir", "/proc/rsdb-nope"}}), *db_);
    EXPECT_TRUE(ThrowsCode([&] { bad.create_full(); }, RSDB_ERR_IO, "/proc/rsdb-nope"));

    const json listed = bad.list();
    ASSERT_EQ(listed.size(), 1u) << listed.dump();
    EXPECT_EQ(listed[0].at("status"), "failed");
    ASSERT_TRUE(listed[0].at("error_message").is_string()) << listed.dump();
    EXPECT_NE(listed[0]["error_message"].get<std::string>().find("/proc/rsdb-nope"), std::string::npos)
        << listed.dump();
    EXPECT_EQ(backups_->list(), listed) << "both managers read the same history";

    EXPECT_EQ(aggregates(*db_), before) << "the database is unharmed";
    EXPECT_FALSE(std::filesystem::exists("/proc/rsdb-nope"));
    const json m = backups_->create_full();
    EXPECT_EQ(backups_->list().at(0).at("backup_id"), m.at("backup_id"));
    EXPECT_EQ(backups_->list().at(0).at("status"), "completed");
}

// ---------------------------------------------------------------- configuration

TEST_F(CppBackupBase, AMissingBackupDirOrMasterKeyIsAConfigError) {
    for (const char* key : {"backup_dir", "master_key"}) {
        SCOPED_TRACE(key);
        const Config cfg = config({{key, ""}});
        EXPECT_TRUE(ThrowsCode([&] { BackupManager b(cfg, *db_); }, RSDB_ERR_CONFIG, key));
    }
    Config bare;
    bare.set("database_url", db_url());
    EXPECT_TRUE(ThrowsCode([&] { BackupManager b(bare, *db_); }, RSDB_ERR_CONFIG));
    EXPECT_EQ(backups_->list(), json::array()) << "no backup was attempted";
}

}  // namespace

// ---------------------------------------------------------------- retention and schedule

TEST_F(CppBackupBase, RetentionDeletesOldBackupsButKeepsTheNewestFullOne) {
    const std::string a = backups_->create_full().at("backup_id").get<std::string>();
    const std::string b = backups_->create_full().at("backup_id").get<std::string>();
    db_->execute("UPDATE backup_history SET finished_at = now() - interval '40 days' + id * interval '1 minute'");
    const json r = backups_->cleanup();
    ASSERT_EQ(r.at("deleted"), json::array({a})) << r.dump();
    EXPECT_FALSE(std::filesystem::exists(dir_->path() + "/" + a));
    EXPECT_NO_THROW(backups_->verify(b));
}

TEST_F(CppBackupBase, AScheduleReportsAMissedRunAndABadCronExpressionThrows) {
    backups_->create_full();
    db_->execute("UPDATE backup_history SET finished_at = now() - interval '2 days'");
    std::mutex m;
    std::condition_variable cv;
    std::vector<json> events;
    {
        rootstream::database::BackupScheduler nightly(*backups_, "0 3 * * *", [&](const json& e) {
            std::lock_guard<std::mutex> lock(m);
            events.push_back(e);
            cv.notify_all();
        });
        std::unique_lock<std::mutex> lock(m);
        ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return !events.empty(); })) << "no missed-run report";
        EXPECT_EQ(events[0].at("event"), "missed") << events[0].dump();
    }
    EXPECT_TRUE(ThrowsCode([&] { rootstream::database::BackupScheduler s(*backups_, "* * * *", [](const json&) {}); },
                           RSDB_ERR_INVALID_ARGUMENT));
}
