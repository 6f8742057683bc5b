// Encrypted logical backups (rsdb_backup_*) through the C API, against the stack's real
// PostgreSQL server and its pg_dump/pg_restore. Every test migrates its own fresh database, fills
// it with distinctive data (users carrying a unique marker string, and a table of md5 text large
// enough for several 1 MiB chunks) and backs it up into a fresh temporary directory. Checksums
// are recomputed with OpenSSL's SHA-256, independently of the library.
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

/// Number of tables outside the system schemas: 0 for a database nothing was restored into.
int64_t user_tables(rsdb_db* db) {
    return std::stoll(query(db,
                            "SELECT count(*)::text AS n FROM pg_tables "
                            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
                          .at(0)
                          .at("n")
                          .get<std::string>());
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

// ---------------------------------------------------------------- full backup and restore

TEST_F(CBackupTest, AFullBackupRestoresIntoAFreshDatabaseWithTheSameRows) {
    const json m = create_full();
    ASSERT_TRUE(m.contains("backup_id") && m["backup_id"].is_string()) << m.dump();
    const std::string id = m["backup_id"].get<std::string>();
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(m.at("files").is_array() && !m["files"].empty()) << m.dump();
    const json& f = m["files"][0];
    EXPECT_EQ(f.at("name"), "dump.zst.enc");
    EXPECT_TRUE(is_hex64(f.at("sha256").get<std::string>())) << f.dump();
    EXPECT_GE(f.at("chunks").get<int64_t>(), 2) << "the dump spans several 1 MiB chunks: " << f.dump();
    EXPECT_LT(f.at("stored_bytes").get<int64_t>(), f.at("plain_bytes").get<int64_t>()) << "compressed: " << f.dump();

    // The stored file is the one the manifest describes (SHA-256 recomputed with OpenSSL).
    const std::string stored = read_file(backup_path(id, "dump.zst.enc"));
    EXPECT_EQ(static_cast<int64_t>(stored.size()), f.at("stored_bytes").get<int64_t>());
    EXPECT_EQ(sha256_hex(stored), f.at("sha256").get<std::string>());
    EXPECT_TRUE(std::filesystem::exists(backup_path(id, "manifest.json")));
    EXPECT_TRUE(std::filesystem::exists(backup_path(id, "manifest.mac")));

    const json& counts = m.at("row_counts");
    ASSERT_TRUE(counts.is_object()) << m.dump();
    EXPECT_EQ(counts.at("public.users").get<int64_t>(), kMarkedUsers);
    EXPECT_EQ(counts.at("public.big").get<int64_t>(), kBigRows);
    int64_t manifest_rows = 0;
    for (const auto& [table, n] : counts.items()) manifest_rows += n.get<int64_t>();

    const json listed = list();
    ASSERT_TRUE(listed.is_array() && !listed.empty()) << listed.dump();
    EXPECT_EQ(listed[0].at("backup_id"), id);
    EXPECT_EQ(listed[0].at("status"), "completed");
    EXPECT_EQ(listed[0].at("compressed_size_bytes"), f.at("stored_bytes"));

    OutString verified;
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), verified.out()));
    EXPECT_EQ(verified.parse(), m) << "verify returns the manifest create_full returned";

    const json before = aggregates(db_.get());
    ASSERT_EQ(before[0].at("n"), std::to_string(kBigRows)) << "the comparison covers the data";
    ASSERT_EQ(before[4].at("marked"), std::to_string(kMarkedUsers)) << "the comparison covers the data";

    const std::string target_url = scratch_->create();
    OutString report;
    ASSERT_RSDB_OK(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), report.out()));
    const json r = report.parse();
    EXPECT_EQ(r.at("backup_id"), id);
    EXPECT_EQ(r.at("rows_restored").get<int64_t>(), manifest_rows) << r.dump();
    EXPECT_EQ(r.at("tables_checked").get<size_t>(), counts.size()) << r.dump();
    ASSERT_TRUE(r.contains("target")) << r.dump();

    DbPtr target = open_db(target_url);
    const json after = aggregates(target.get());
    for (size_t i = 0; i < before.size(); ++i) {
        EXPECT_EQ(after[i], before[i]) << aggregate_queries()[i];
    }
    // Every table has the manifest's row count.
    for (const auto& [table, n] : counts.items()) {
        EXPECT_EQ(query(target.get(), "SELECT count(*)::text AS n FROM " + table).at(0).at("n"),
                  std::to_string(n.get<int64_t>()))
            << table;
    }
    // The backup's own history row was taken while it ran: the restored copy has it in_progress.
    const json history = query(target.get(), "SELECT backup_id, status FROM backup_history");
    ASSERT_EQ(history.size(), 1u) << history.dump();
    EXPECT_EQ(history[0].at("backup_id"), id);
    EXPECT_EQ(history[0].at("status"), "in_progress");
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

// ---------------------------------------------------------------- confidentiality

TEST_F(CBackupTest, TheStoredDumpHoldsNoPlaintext) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    // The marker is really in the database, hence in what pg_dump produced.
    const json marked = query(db_.get(), "SELECT count(*)::text AS n FROM users WHERE display_name LIKE '" + marker_ + " %'");
    ASSERT_EQ(marked.at(0).at("n"), std::to_string(kMarkedUsers));

    const std::string bytes = read_file(backup_path(id, "dump.zst.enc"));
    ASSERT_GT(bytes.size(), 1000000u) << "the dump is stored";
    EXPECT_EQ(bytes.find(marker_), std::string::npos) << "the marker occurs in plaintext in dump.zst.enc";
    EXPECT_EQ(bytes.find("user2999@example.com"), std::string::npos) << "an e-mail address occurs in plaintext";
    EXPECT_EQ(bytes.find("CREATE TABLE"), std::string::npos) << "DDL occurs in plaintext";
    // Nor is it in the manifest, which carries only metadata and the sealed data key.
    EXPECT_EQ(read_file(backup_path(id, "manifest.json")).find(marker_), std::string::npos);
}

// ---------------------------------------------------------------- integrity

TEST_F(CBackupTest, AFlippedByteAnywhereInTheDumpFailsVerificationAndRestoreUntilRepaired) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const int64_t chunks = m.at("files").at(0).at("chunks").get<int64_t>();
    ASSERT_GE(chunks, 2);
    const std::string file = backup_path(id, "dump.zst.enc");
    const std::string original = read_file(file);
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr));

    struct Flip {
        size_t pos;
        std::string where;
        std::string chunk;  // the chunk the error must name, or empty when any chunk will do
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

        EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr), RSDB_ERR_INTEGRITY,
                          "dump.zst.enc: chunk"));
        if (!flip.chunk.empty()) {
            EXPECT_NE(last_error().find(flip.chunk), std::string::npos) << last_error();
        }

        const std::string target_url = scratch_->create();
        OutString report;
        EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), report.out()),
                          RSDB_ERR_INTEGRITY, "dump.zst.enc: chunk"));
        EXPECT_TRUE(report.is_null());
        DbPtr target = open_db(target_url);
        EXPECT_EQ(user_tables(target.get()), 0) << "restore wrote into the target before refusing";
    }

    write_file(file, original);
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr)) << "the repaired backup verifies";
}

TEST_F(CBackupTest, AnEditedManifestIsAnIntegrityErrorAboutTheManifest) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const std::string path = backup_path(id, "manifest.json");
    const std::string text = read_file(path);
    const std::string from = "\"public.users\": " + std::to_string(kMarkedUsers);
    const size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos) << text;
    std::string edited = text;
    edited.replace(at, from.size(), "\"public.users\": " + std::to_string(kMarkedUsers + 1));
    write_file(path, edited);

    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr), RSDB_ERR_INTEGRITY, "manifest"));
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), nullptr), RSDB_ERR_INTEGRITY,
                      "manifest"));

    write_file(path, text);
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr));
}

TEST_F(CBackupTest, ADeletedDumpIsAnIntegrityErrorSayingItIsMissing) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    ASSERT_TRUE(std::filesystem::remove(backup_path(id, "dump.zst.enc")));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr), RSDB_ERR_INTEGRITY, "missing"));
    EXPECT_NE(last_error().find("dump.zst.enc"), std::string::npos) << last_error();
    const std::string target_url = scratch_->create();
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), id.c_str(), target_url.c_str(), nullptr), RSDB_ERR_INTEGRITY,
                      "missing"));
}

TEST_F(CBackupTest, AnUnknownBackupIdIsNotFoundAndAPathInTheIdIsRefused) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    const std::string target_url = scratch_->create();

    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), "full-20000101T000000Z-000000", nullptr), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), "full-20000101T000000Z-000000", target_url.c_str(), nullptr),
                      RSDB_ERR_NOT_FOUND));

    // `<backup_dir>/../<dir name>/<id>` is this very backup: only the id check can refuse it.
    const std::string dir_name = std::filesystem::path(dir_->path()).filename().string();
    const std::string traversal = "../" + dir_name + "/" + id;
    ASSERT_TRUE(std::filesystem::exists(dir_->path() + "/" + traversal + "/manifest.json"));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), traversal.c_str(), nullptr), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_backup_restore(backup_.get(), traversal.c_str(), target_url.c_str(), nullptr),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), "../etc", nullptr), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_backup_verify(backup_.get(), "", nullptr), RSDB_ERR_INVALID_ARGUMENT));
    DbPtr target = open_db(target_url);
    EXPECT_EQ(user_tables(target.get()), 0);
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr)) << "the real id still verifies";
}

// ---------------------------------------------------------------- keys

TEST_F(CBackupTest, AnotherMasterKeyCannotVerifyOrRestoreAndSaysSo) {
    const json m = create_full();
    const std::string id = m.at("backup_id").get<std::string>();
    std::string other_key = random_master_key();
    ASSERT_NE(other_key, master_key_);

    for (const std::string& key_id : {key_id_, std::string("gt-other-key")}) {
        SCOPED_TRACE("master_key_id " + key_id);
        BackupPtr wrong;
        ASSERT_NO_FATAL_FAILURE(make_backup({{"master_key", other_key}, {"master_key_id", key_id}}, &wrong));
        OutString manifest;
        EXPECT_TRUE(Fails(rsdb_backup_verify(wrong.get(), id.c_str(), manifest.out()), RSDB_ERR_INTEGRITY, "master key"));
        EXPECT_TRUE(manifest.is_null());
        const std::string target_url = scratch_->create();
        EXPECT_TRUE(Fails(rsdb_backup_restore(wrong.get(), id.c_str(), target_url.c_str(), nullptr),
                          RSDB_ERR_INTEGRITY, "master key"));
        DbPtr target = open_db(target_url);
        EXPECT_EQ(user_tables(target.get()), 0) << "nothing was restored with the wrong key";
    }
    EXPECT_RSDB_OK(rsdb_backup_verify(backup_.get(), id.c_str(), nullptr)) << "the right key still verifies";
}

// ---------------------------------------------------------------- failures

TEST_F(CBackupTest, AnUnwritableBackupDirFailsWithIoIsRecordedAsFailedAndLeavesTheDatabaseAlone) {
    const json before = aggregates(db_.get());
    BackupPtr bad;
    ASSERT_NO_FATAL_FAILURE(make_backup({{"backup_dir", "/proc/rsdb-nope"}}, &bad));
    OutString manifest;
    EXPECT_TRUE(Fails(rsdb_backup_create_full(bad.get(), manifest.out()), RSDB_ERR_IO, "/proc/rsdb-nope"));
    EXPECT_TRUE(manifest.is_null());

    const json listed = list(bad.get());
    ASSERT_EQ(listed.size(), 1u) << listed.dump();
    EXPECT_EQ(listed[0].at("status"), "failed");
    ASSERT_TRUE(listed[0].at("error_message").is_string()) << listed.dump();
    EXPECT_NE(listed[0]["error_message"].get<std::string>().find("/proc/rsdb-nope"), std::string::npos)
        << listed.dump();
    EXPECT_FALSE(listed[0].at("backup_id").get<std::string>().empty());
    EXPECT_EQ(list(), listed) << "both handles read the same history";

    EXPECT_EQ(aggregates(db_.get()), before) << "the database is unharmed";
    EXPECT_FALSE(std::filesystem::exists("/proc/rsdb-nope"));
    // The next backup into a good directory works.
    const json m = create_full();
    EXPECT_EQ(list().at(0).at("backup_id"), m.at("backup_id"));
    EXPECT_EQ(list().at(0).at("status"), "completed");
}

// ---------------------------------------------------------------- configuration and arguments

TEST_F(CBackupBase, AMissingBackupDirOrMasterKeyIsAConfigError) {
    for (const char* key : {"backup_dir", "master_key"}) {
        SCOPED_TRACE(key);
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config({{key, ""}}, &cfg));
        rsdb_backup* b = nullptr;
        EXPECT_TRUE(Fails(rsdb_backup_new(cfg.get(), db_.get(), &b), RSDB_ERR_CONFIG, key));
        EXPECT_EQ(b, nullptr);
        rsdb_backup_free(b);
    }
    // A config that never had them.
    rsdb_config* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&raw));
    ConfigPtr bare(raw);
    ASSERT_RSDB_OK(rsdb_config_set(bare.get(), "database_url", db_url().c_str()));
    rsdb_backup* b = nullptr;
    EXPECT_TRUE(Fails(rsdb_backup_new(bare.get(), db_.get(), &b), RSDB_ERR_CONFIG));
    EXPECT_EQ(b, nullptr);
    rsdb_backup_free(b);
}

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

TEST_F(CBackupBase, RetentionDeletesOldBackupsButKeepsTheNewestFullOne) {
    const std::string a = create_full().at("backup_id").get<std::string>();
    const std::string b = create_full().at("backup_id").get<std::string>();
    // Both are older than the 30-day period; b is the newer of the two.
    ASSERT_RSDB_OK(rsdb_db_execute(db_.get(),
                                   "UPDATE backup_history SET finished_at = now() - interval '40 days' + id * interval '1 minute'",
                                   nullptr, nullptr));
    OutString report;
    ASSERT_RSDB_OK(rsdb_backup_cleanup(backup_.get(), 0, 0, 0, 1, report.out()));
    const json r = report.parse();
    ASSERT_EQ(r.at("deleted"), json::array({a})) << r.dump();
    EXPECT_GT(r.at("bytes_freed").get<std::uint64_t>(), 0u);
    EXPECT_FALSE(std::filesystem::exists(dir_->path() + "/" + a));
    EXPECT_TRUE(std::filesystem::exists(dir_->path() + "/" + b));
    ASSERT_RSDB_OK(rsdb_backup_verify(backup_.get(), b.c_str(), nullptr));
    EXPECT_EQ(rsdb_backup_cleanup(nullptr, 0, 0, 0, 1, nullptr), RSDB_ERR_NULL);
}

namespace {
struct ScheduleInbox {
    std::mutex m;
    std::condition_variable cv;
    std::vector<json> events;
};

void on_schedule_event(void* user_data, const char* event_json) {
    auto* in = static_cast<ScheduleInbox*>(user_data);
    std::lock_guard<std::mutex> lock(in->m);
    in->events.push_back(json::parse(event_json));
    in->cv.notify_all();
}
}  // namespace

TEST_F(CBackupBase, AScheduleReportsAMissedRunAndRefusesABadCronExpression) {
    create_full();
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
    }
    rsdb_backup_schedule_stop(sched);
    rsdb_backup_schedule_stop(nullptr);

    rsdb_backup_schedule* bad = nullptr;
    EXPECT_EQ(rsdb_backup_schedule_start(backup_.get(), "61 * * * *", on_schedule_event, &inbox, &bad),
              RSDB_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(bad, nullptr);
    EXPECT_EQ(rsdb_backup_schedule_start(backup_.get(), "* * * * *", nullptr, &inbox, &bad), RSDB_ERR_NULL);
}
