// Helpers for the backup suites (test_c_backup, test_cpp_backup): a private temporary backup
// directory, whole-file reads and writes, SHA-256 of a file (OpenSSL, independent of the
// library), extra scratch databases created on the stack's admin URL through the C API, and the
// data every test inserts. Header-only; link OpenSSL::Crypto.
#pragma once

#include "auth_util.h"
#include "rootstream_db.h"
#include "stack_env.h"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace rsdb_test {
namespace backup {

/// Rows of `users` whose display name carries the marker, and rows of the `big` md5 table.
constexpr int kMarkedUsers = 3000;
constexpr int kBigRows = 50000;

/// The statements that fill a migrated database: `kMarkedUsers` users whose display name holds
/// `marker`, and a table `big` of `kBigRows` rows of 96 md5 hex digits each (about 5 MB, which
/// zstd brings to well over 2 MiB — several 1 MiB chunks).
inline std::vector<std::string> fill_statements(const std::string& marker) {
    return {
        "INSERT INTO users (username, email, password_hash, display_name) "
        "SELECT 'user' || g, 'user' || g || '@example.com', 'h', '" + marker + " ' || g "
        "FROM generate_series(1, " + std::to_string(kMarkedUsers) + ") g",
        "CREATE TABLE big (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
        "INSERT INTO big (body) SELECT md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
        "FROM generate_series(1, " + std::to_string(kBigRows) + ") g",
    };
}

/// Aggregates that tell two copies of the data apart; every value is cast to text so both
/// databases are compared exactly. Each query returns one row.
inline std::vector<std::string> aggregate_queries() {
    return {
        "SELECT count(*)::text AS n, coalesce(sum(length(body)), 0)::text AS len, "
        "md5(coalesce(string_agg(id::text || ':' || body, ',' ORDER BY id), '')) AS digest FROM big",
        "SELECT count(*)::text AS n, md5(coalesce(string_agg(id::text || ':' || username || ':' || email || ':' || "
        "coalesce(display_name, ''), ',' ORDER BY id), '')) AS digest FROM users",
        "SELECT string_agg(format('%I.%I', schemaname, tablename), ',' ORDER BY schemaname, tablename) AS tables FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        "SELECT string_agg(version::text || ':' || checksum, ',' ORDER BY version) AS migrations "
        "FROM rsdb_schema_migrations",
        "SELECT count(*)::text AS marked FROM users WHERE display_name LIKE 'gt-marker-%'",
    };
}

/// A fresh directory under the system's temporary directory, removed with everything in it.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "rsdb-gt-backup-XXXXXX").string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
        path_ = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }

private:
    std::string path_;
};

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + path);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

inline bool is_hex64(const std::string& s) {
    if (s.size() != 64) return false;
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

/// Extra empty databases (restore targets), created with a plain CREATE DATABASE through the C
/// API on the stack's admin URL and dropped WITH (FORCE) by drop_all(). Their names have the
/// form StackTest uses, so the fixture's sweep also removes those of a crashed process.
class ScratchDatabases {
public:
    explicit ScratchDatabases(std::string admin_url) : admin_url_(std::move(admin_url)) {}
    ~ScratchDatabases() { drop_all(); }
    ScratchDatabases(const ScratchDatabases&) = delete;
    ScratchDatabases& operator=(const ScratchDatabases&) = delete;

    /// Creates an empty database; returns its URL. Throws on failure.
    std::string create() {
        const std::string name = "gt_" + unique_suffix();
        admin_execute("CREATE DATABASE \"" + name + "\"");
        names_.push_back(name);
        return with_database(admin_url_, name);
    }

    /// Drops every database created here; returns false (and keeps going) on errors.
    bool drop_all() {
        bool ok = true;
        for (const auto& name : names_) {
            try {
                admin_execute("DROP DATABASE IF EXISTS \"" + name + "\" WITH (FORCE)");
            } catch (const std::exception& e) {
                ADD_FAILURE() << e.what();
                ok = false;
            }
        }
        names_.clear();
        return ok;
    }

private:
    void admin_execute(const std::string& sql) {
        rsdb_config* cfg = nullptr;
        rsdb_db* db = nullptr;
        int rc = rsdb_config_new(&cfg);
        if (rc == RSDB_OK) rc = rsdb_config_set(cfg, "database_url", admin_url_.c_str());
        if (rc == RSDB_OK) rc = rsdb_config_set(cfg, "pool_size", "1");
        if (rc == RSDB_OK) rc = rsdb_db_open(cfg, &db);
        if (rc == RSDB_OK) rc = rsdb_db_execute(db, sql.c_str(), nullptr, nullptr);
        const std::string error = rc == RSDB_OK ? std::string() : last_error();
        rsdb_db_close(db);
        rsdb_config_free(cfg);
        if (rc != RSDB_OK) throw std::runtime_error(sql + ": " + error);
    }

    std::string admin_url_;
    std::vector<std::string> names_;
};

}  // namespace backup
}  // namespace rsdb_test
