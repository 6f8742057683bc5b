// Helpers for the physical-backup and recovery suites (test_c_recovery, test_cpp_recovery): the
// stack's WAL archive configuration (ROOTSTREAM_TEST_ARCHIVE_CONF, see scripts/stack.sh
// setup_archiving) and the rsdb link its archive_command runs, data directories for restored
// clusters that are stopped and removed whatever happens, the ledger table whose ids tell which
// commits a restore brought back, progress collection, and WAL file names far from anything the
// cluster writes. Header-only; the including target defines RSDB_CLI_PATH (the rsdb executable)
// and links OpenSSL::Crypto (through backup_util.h).
#pragma once

#include "backup_util.h"
#include "rootstream_db.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#ifndef RSDB_CLI_PATH
#error "RSDB_CLI_PATH (the path of the rsdb executable) must be defined by the build"
#endif

namespace rsdb_test {
namespace recovery {

using json = nlohmann::json;

/// The table every test writes its numbered rows into.
inline const char* const kLedgerDdl = "CREATE TABLE ledger (id INT PRIMARY KEY, note TEXT NOT NULL)";
inline const char* const kLedgerInsert = "INSERT INTO ledger (id, note) VALUES ($1, $2)";
inline const char* const kLedgerIds = "SELECT id FROM ledger ORDER BY id";

/// The server's clock, as RFC 3339 in UTC with a `Z`, in column `t`.
inline const char* const kClockUtcSql =
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t";
/// The server's clock, as RFC 3339 with the offset +05:30 (the same instant), in column `t`.
inline const char* const kClockOffsetSql =
    "SELECT to_char((clock_timestamp() AT TIME ZONE 'UTC') + interval '5 hours 30 minutes', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+05:30' AS t";

/// How many scratch databases of test restores exist (each must be dropped again).
inline const char* const kScratchDatabases =
    "SELECT count(*)::text AS n FROM pg_database WHERE datname LIKE 'rsdb\\_check\\_%'";

inline json ledger_params(int id) { return json::array({id, "row " + std::to_string(id)}); }

/// The `id` column of query rows, in order.
inline std::vector<int64_t> ids_of(const json& rows) {
    std::vector<int64_t> ids;
    for (const auto& row : rows) ids.push_back(row.at("id").get<int64_t>());
    return ids;
}

/// URL of database `db` on a restored server (127.0.0.1, user postgres).
inline std::string restored_url(int port, const std::string& db) {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/" + db;
}

inline std::string trim(const std::string& s) {
    const char* ws = " \t\r\n";
    const auto b = s.find_first_not_of(ws);
    if (b == std::string::npos) return std::string();
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

/// The `key = value` lines of an rsdb configuration file; blank lines and `#` comments skipped.
inline std::vector<std::pair<std::string, std::string>> read_conf_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::vector<std::pair<std::string, std::string>> out;
    std::string line;
    while (std::getline(in, line)) {
        const std::string t = trim(line);
        if (t.empty() || t[0] == '#') continue;
        const auto eq = t.find('=');
        if (eq == std::string::npos) throw std::runtime_error(path + ": not a key = value line: " + t);
        out.emplace_back(trim(t.substr(0, eq)), trim(t.substr(eq + 1)));
    }
    return out;
}

/// The stack's WAL archive: the settings of its configuration file (repository, master key,
/// PostgreSQL tools) followed by rsdb_path, to apply with the config setter.
struct Archive {
    std::string conf_path;
    std::vector<std::pair<std::string, std::string>> settings;
    std::string backup_dir;

    std::string value(const std::string& key) const {
        for (const auto& [k, v] : settings) {
            if (k == key) return v;
        }
        return std::string();
    }
    /// Where the repository keeps archived WAL file `name`.
    std::string wal_object(const std::string& name) const { return backup_dir + "/wal/" + name; }
    /// A stored file of a backup.
    std::string backup_file(const std::string& backup_id, const std::string& file) const {
        return backup_dir + "/" + backup_id + "/" + file;
    }
};

/// Links `<stack dir>/rsdb` to the built rsdb, which switches the stack's archive_command on.
/// A link that is already there is kept.
inline ::testing::AssertionResult link_rsdb(const std::string& stack_dir) {
    if (stack_dir.empty()) return ::testing::AssertionFailure() << "ROOTSTREAM_STACK_DIR is not set";
    const std::string link = stack_dir + "/rsdb";
    if (symlink(RSDB_CLI_PATH, link.c_str()) != 0 && errno != EEXIST) {
        return ::testing::AssertionFailure() << "cannot link " << link << " to " << RSDB_CLI_PATH << ": "
                                             << std::strerror(errno);
    }
    return ::testing::AssertionSuccess();
}

/// Runs statements on the stack's admin database through the C API; throws on failure.
inline void admin_statements(const Stack& stack, const std::vector<std::string>& sqls) {
    rsdb_config* cfg = nullptr;
    rsdb_db* db = nullptr;
    int rc = rsdb_config_new(&cfg);
    if (rc == RSDB_OK) rc = rsdb_config_set(cfg, "database_url", stack.database_url.c_str());
    if (rc == RSDB_OK) rc = rsdb_config_set(cfg, "pool_size", "1");
    if (rc == RSDB_OK) rc = rsdb_db_open(cfg, &db);
    std::string failed;
    for (size_t i = 0; rc == RSDB_OK && i < sqls.size(); ++i) {
        char* rows = nullptr;
        rc = rsdb_db_query(db, sqls[i].c_str(), nullptr, &rows);
        rsdb_string_free(rows);
        if (rc != RSDB_OK) failed = sqls[i];
    }
    const std::string error = rc == RSDB_OK ? std::string() : last_error();
    rsdb_db_close(db);
    rsdb_config_free(cfg);
    if (rc != RSDB_OK) throw std::runtime_error("admin statement " + failed + ": " + error);
}

/// Waits until the cluster's archiver has stored WAL through the linked rsdb, so that the
/// repository's `wal/` directory was made by the server's own user before a test (running as
/// another user) writes into it. Finishes WAL segments to get the archiver going.
inline ::testing::AssertionResult wait_for_archiver(const Stack& stack, const std::string& backup_dir) {
    const std::filesystem::path wal = std::filesystem::path(backup_dir) / "wal";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    auto next_switch = std::chrono::steady_clock::now();
    while (!std::filesystem::exists(wal)) {
        const auto now = std::chrono::steady_clock::now();
        if (now > deadline) {
            return ::testing::AssertionFailure() << "the stack's archiver stored nothing in " << wal.string()
                                                 << " within 90 s (see " << stack.stack_dir << "/pg.log)";
        }
        if (now >= next_switch) {
            try {
                admin_statements(stack, {"SELECT txid_current()::text AS x", "SELECT pg_switch_wal()::text AS lsn"});
            } catch (const std::exception& e) {
                return ::testing::AssertionFailure() << e.what();
            }
            next_switch = now + std::chrono::seconds(5);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return ::testing::AssertionSuccess();
}

/// Reads the stack's archive configuration, adds rsdb_path, links the rsdb the archive_command
/// runs, and waits until archiving works.
inline ::testing::AssertionResult prepare_archive(const Stack& stack, Archive* out) {
    const char* conf = std::getenv("ROOTSTREAM_TEST_ARCHIVE_CONF");
    if (conf == nullptr || *conf == '\0') {
        return ::testing::AssertionFailure() << "ROOTSTREAM_TEST_ARCHIVE_CONF is not set; run the suite inside "
                                                "`scripts/stack.sh run -- ctest ...`";
    }
    Archive a;
    a.conf_path = conf;
    try {
        a.settings = read_conf_file(a.conf_path);
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << e.what();
    }
    a.backup_dir = a.value("backup_dir");
    for (const char* key : {"backup_dir", "master_key", "pg_bin_dir"}) {
        if (a.value(key).empty()) return ::testing::AssertionFailure() << a.conf_path << " sets no " << key;
    }
    a.settings.emplace_back("rsdb_path", RSDB_CLI_PATH);
    auto linked = link_rsdb(stack.stack_dir);
    if (!linked) return linked;
    auto archiving = wait_for_archiver(stack, a.backup_dir);
    if (!archiving) return archiving;
    *out = std::move(a);
    return ::testing::AssertionSuccess();
}

/// A path for a restored cluster's data directory (not created). The destructor stops a server
/// still running there (with `stop`, the API's stop_cluster) and removes the directory.
class DataDir {
public:
    using Stopper = std::function<void(const std::string&)>;

    DataDir(const std::string& tag, Stopper stop)
        : path_((std::filesystem::temp_directory_path() / ("rsdb-gt-" + tag + "-" + unique_suffix())).string()),
          stop_(std::move(stop)) {}
    ~DataDir() { remove(); }
    DataDir(const DataDir&) = delete;
    DataDir& operator=(const DataDir&) = delete;

    const std::string& path() const { return path_; }
    bool exists() const { return std::filesystem::exists(path_); }
    /// A server's pid file is in the directory.
    bool server_running() const { return std::filesystem::exists(path_ + "/postmaster.pid"); }

    /// Stops a server left running and removes the directory; true when nothing is left.
    bool remove() {
        if (server_running() && stop_) {
            try {
                stop_(path_);
            } catch (const std::exception& e) {
                ADD_FAILURE() << "stopping the server in " << path_ << ": " << e.what();
            }
        }
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
        return !exists();
    }

private:
    std::string path_;
    Stopper stop_;
};

/// Puts a file's original bytes back when destroyed (after a test damaged it on purpose).
class RestoreFileOnExit {
public:
    explicit RestoreFileOnExit(std::string path) : path_(std::move(path)), bytes_(backup::read_file(path_)) {}
    ~RestoreFileOnExit() {
        try {
            backup::write_file(path_, bytes_);
        } catch (const std::exception& e) {
            ADD_FAILURE() << e.what();
        }
    }
    RestoreFileOnExit(const RestoreFileOnExit&) = delete;
    RestoreFileOnExit& operator=(const RestoreFileOnExit&) = delete;

    const std::string& original() const { return bytes_; }

private:
    std::string path_;
    std::string bytes_;
};

/// JSON reports (progress, schedule events) collected from any thread.
class EventLog {
public:
    void add(const json& event) {
        std::lock_guard<std::mutex> lock(m_);
        events_.push_back(event);
        cv_.notify_all();
    }
    std::vector<json> events() const {
        std::lock_guard<std::mutex> lock(m_);
        return events_;
    }
    void clear() {
        std::lock_guard<std::mutex> lock(m_);
        events_.clear();
    }
    /// Some report has `key` equal to `value`.
    bool has(const std::string& key, const std::string& value) const {
        for (const auto& e : events()) {
            if (e.contains(key) && e[key].is_string() && e[key].get<std::string>() == value) return true;
        }
        return false;
    }
    bool has_phase(const std::string& phase) const { return has("phase", phase); }
    /// The `phase` (or `event`) of every report in the order they came, for failure messages.
    std::string summary() const {
        std::string out;
        for (const auto& e : events()) {
            out += (out.empty() ? "" : ",") + (e.contains("phase") ? e.value("phase", "?") : e.value("event", "?"));
        }
        return out;
    }
    /// Waits until at least `n` reports came.
    bool wait_for(size_t n, std::chrono::milliseconds timeout) const {
        std::unique_lock<std::mutex> lock(m_);
        return cv_.wait_for(lock, timeout, [&] { return events_.size() >= n; });
    }

private:
    mutable std::mutex m_;
    mutable std::condition_variable cv_;
    std::vector<json> events_;
};

/// An rsdb_progress_cb or rsdb_schedule_cb collecting into the EventLog passed as user_data.
inline void json_to_log(void* user_data, const char* event_json) {
    static_cast<EventLog*>(user_data)->add(json::parse(event_json));
}

/// Every progress report has the documented fields.
inline ::testing::AssertionResult WellFormedProgress(const std::vector<json>& events) {
    for (const auto& e : events) {
        for (const char* key : {"backup_id", "phase", "bytes_done", "bytes_total", "message"}) {
            if (!e.contains(key)) return ::testing::AssertionFailure() << "no " << key << " in " << e.dump();
        }
        if (!e["backup_id"].is_string() || e["backup_id"].get<std::string>().empty()) {
            return ::testing::AssertionFailure() << "no backup named in " << e.dump();
        }
        if (!e["bytes_done"].is_number_unsigned()) return ::testing::AssertionFailure() << "bytes_done: " << e.dump();
    }
    return ::testing::AssertionSuccess();
}

/// A WAL segment name (`00000001000000FF000000XX`, upper-case hex as PostgreSQL writes it) far
/// beyond anything the cluster writes, and not yet in the repository.
inline std::string unused_wal_name(const Archive& archive) {
    std::random_device rd;
    static const char digits[] = "0123456789ABCDEF";
    for (int attempt = 0; attempt < 256; ++attempt) {
        const unsigned v = rd() & 0xffu;
        std::string name = "00000001000000FF000000";
        name.push_back(digits[v >> 4]);
        name.push_back(digits[v & 0xf]);
        if (!std::filesystem::exists(archive.wal_object(name))) return name;
    }
    throw std::runtime_error("no free WAL name 00000001000000FF000000XX in " + archive.backup_dir + "/wal");
}

/// 1 MiB of segment-like bytes (not constant, so compression does not hide a mix-up).
inline std::string wal_segment_bytes() {
    std::string data(1u << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 31 + i / 4096) % 251);
    return data;
}

/// A `pg_wal` directory as PostgreSQL leaves it for its archive_command: small segment files
/// (4 KiB each) with a `.ready` status each, in a temporary directory of its own, for the
/// bounded-queue and push-ahead tests (the files need only WAL names, not WAL contents).
class FakePgWal {
public:
    static constexpr std::uint64_t kSegment = 4096;

    FakePgWal() { std::filesystem::create_directories(dir_.path() + "/pg_wal/archive_status"); }
    std::string root() const { return dir_.path(); }
    static std::string name(int n) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "00000001000000000000%04X", n);
        return buf;
    }
    std::string path(int n) const { return dir_.path() + "/pg_wal/" + name(n); }
    /// Writes segment `n` and marks it ready, as PostgreSQL does when it switches.
    std::string ready(int n) const {
        rsdb_test::backup::write_file(path(n), std::string(kSegment, static_cast<char>('a' + n % 26)));
        rsdb_test::backup::write_file(status(n, ".ready"), "");
        return path(n);
    }
    /// What PostgreSQL does once a push succeeded.
    void done(int n) const { std::filesystem::rename(status(n, ".ready"), status(n, ".done")); }

private:
    std::string status(int n, const char* suffix) const {
        return dir_.path() + "/pg_wal/archive_status/" + name(n) + suffix;
    }
    rsdb_test::backup::TempDir dir_;
};

}  // namespace recovery
}  // namespace rsdb_test
