// rootstream::database::BackupManager, BackupScheduler and RecoveryManager — encrypted,
// verifiable logical and physical backups, WAL archiving and point-in-time recovery.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"


#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail

namespace database {

/// One stored file of a backup.
struct BackupFile {
    std::string name;
    std::uint64_t chunks = 0;
    /// Bytes before compression and encryption.
    std::uint64_t plain_bytes = 0;
    /// Bytes stored.
    std::uint64_t stored_bytes = 0;
    /// SHA-256 of the stored file (hex).
    std::string sha256;

    /// {"name","chunks","plain_bytes","stored_bytes","sha256"}.
    nlohmann::json to_json() const;
};

/// The WAL range of a physical backup.
struct PhysicalRange {
    /// The backup this one builds on (none for a full backup).
    std::optional<std::string> parent_backup_id;
    /// The full backup at the root of the chain (itself for a full backup).
    std::string base_backup_id;
    std::uint32_t timeline = 0;
    std::string start_lsn;
    /// A restore of this backup replays WAL up to here.
    std::string stop_lsn;
    std::string start_wal;
    std::string stop_wal;
    std::uint64_t wal_segment_size = 0;
    std::string system_identifier;
    /// Every WAL segment stored in this backup.
    std::vector<std::string> wal_segments;

    /// The manifest's "physical" object (parent_backup_id null when none).
    nlohmann::json to_json() const;
};

/// A backup's signed manifest: what it holds and how to open it.
struct BackupManifest {
    std::uint32_t format = 0;
    std::string backup_id;
    /// "full", "incremental" or "differential" (a logical backup is "full").
    std::string backup_type;
    /// The tool that wrote it ("pg_dump custom format", "pg_basebackup", ...).
    std::string method;
    std::string database;
    std::string server_version;
    /// RFC 3339 UTC.
    std::string started_at;
    std::string finished_at;
    std::string compression;
    std::string encryption;
    std::string key_id;
    /// The data key sealed under the master key key_id (hex).
    std::string wrapped_key;
    std::vector<BackupFile> files;
    /// Rows per table (logical backups).
    std::map<std::string, std::int64_t> row_counts;
    /// Set for physical backups.
    std::optional<PhysicalRange> physical;

    /// The manifest as manifest.json holds it (no "physical" key for a logical backup).
    nlohmann::json to_json() const;
};

/// A row of the backup history.
struct BackupInfo {
    std::string backup_id;
    /// As recorded: "full" for both a logical and a physical full backup.
    std::string backup_type;
    /// "logical" or "physical".
    std::optional<std::string> method;
    /// "logical", "full", "incremental" or "differential"; none for a row this version does not know.
    std::optional<std::string> kind;
    /// "in_progress", "completed" or "failed".
    std::string status;
    std::string path;
    std::optional<std::string> database;
    std::optional<std::int64_t> size_bytes;
    std::optional<std::int64_t> compressed_size_bytes;
    /// RFC 3339 UTC.
    std::string started_at;
    std::optional<std::string> finished_at;
    std::optional<std::string> error_message;

    /// {"backup_id","backup_type","method","kind","status","path","database","size_bytes",
    /// "compressed_size_bytes","started_at","finished_at","error_message"}, null for what is unset.
    nlohmann::json to_json() const;
};

/// What a retention cleanup removed.
struct CleanupReport {
    std::vector<std::string> deleted;
    std::uint64_t kept = 0;
    /// Archived WAL files removed.
    std::uint64_t wal_deleted = 0;
    std::uint64_t bytes_freed = 0;

    /// {"deleted","kept","wal_deleted","bytes_freed"}.
    nlohmann::json to_json() const;
};

/// The outcome of a logical restore.
struct RestoreReport {
    std::string backup_id;
    std::string target;
    /// Tables whose row count matches the backup's.
    std::uint64_t tables_checked = 0;
    std::int64_t rows_restored = 0;

    /// {"backup_id","target","tables_checked","rows_restored"}.
    nlohmann::json to_json() const;
};

/// What RecoveryManager::restore_cluster restores and where.
struct ClusterRestoreOptions {
    /// A new data directory (must not exist, or be empty). Required.
    std::string data_dir;
    /// The physical backup to start from; none picks the newest fitting one.
    std::optional<std::string> backup_id;
    /// The port the restored server listens on (127.0.0.1); 0 picks a free one.
    std::uint16_t port = 0;
    /// Recover to this moment (RFC 3339); excludes latest. Neither: the end of the backup.
    std::optional<std::string> target_time;
    /// Replay all archived WAL.
    bool latest = false;
    /// Leave the server running after the checks.
    bool keep_running = false;
    /// How long recovery may take (at most a week); none: an hour.
    std::optional<std::uint64_t> timeout_s;
    /// Restore over an existing data directory of a stopped server, writing only the blocks
    /// that differ from the backup and removing what the backup lacks.
    bool delta = false;
};

/// The outcome of a physical restore.
struct ClusterReport {
    std::string backup_id;
    /// The backups used, full backup first.
    std::vector<std::string> chain;
    std::string data_dir;
    std::uint16_t port = 0;
    std::string target;
    /// What the server said about where recovery stopped.
    std::vector<std::string> recovery_log;
    /// Rows per table, per database, counted after recovery.
    std::map<std::string, std::map<std::string, std::int64_t>> databases;
    bool running = false;
    double seconds = 0;

    /// What a delta restore changed in the existing data directory.
    struct Delta {
        std::uint64_t files_unchanged = 0;
        std::uint64_t files_changed = 0;
        std::uint64_t files_created = 0;
        std::uint64_t paths_removed = 0;
        std::uint64_t bytes_written = 0;
        std::uint64_t bytes_compared = 0;
    };
    /// Set by a delta restore only.
    std::optional<Delta> delta;

    /// {"backup_id","chain","data_dir","port","target","recovery_log","databases","running","seconds",
    /// "delta" (null, or {"files_unchanged","files_changed","files_created","paths_removed",
    /// "bytes_written","bytes_compared"})}.
    nlohmann::json to_json() const;
};

/// The outcome of a test restore.
struct TestRestoreReport {
    std::string backup_id;
    /// "logical" or "physical".
    std::string kind;
    std::uint64_t tables_checked = 0;
    std::int64_t rows = 0;
    double seconds = 0;

    /// {"backup_id","kind","tables_checked","rows","seconds"}.
    nlohmann::json to_json() const;
};

/// Receives progress: {"backup_id","phase","bytes_done","bytes_total","message"}, on the thread
/// doing the work; it must return quickly.
using ProgressHandler = std::function<void(const nlohmann::json& progress)>;

/// Backups into the configured repository (backup_dir, or backup_s3_url for S3-compatible
/// storage): zstd, AES-256-GCM in authenticated chunks under a per-backup data key, a signed
/// manifest. Logical backups are pg_dump of the database; physical ones are the whole cluster
/// (pg_basebackup) plus incremental and differential backups made of its archived WAL. Needs
/// database_url, a repository and master_key. Thread-safe (set_progress before sharing).
class BackupManager {
public:
    BackupManager(const Config& config, DatabaseManager& db);
    BackupManager(BackupManager&&) noexcept;
    BackupManager& operator=(BackupManager&&) noexcept;
    BackupManager(const BackupManager&) = delete;
    BackupManager& operator=(const BackupManager&) = delete;
    ~BackupManager();

    /// Takes a full logical backup; returns its manifest.
    BackupManifest create_full();
    /// Takes a backup of kind "logical", or the physical "full", "incremental" (the WAL since
    /// the last physical backup) or "differential" (the WAL since the last physical full).
    /// Incremental and differential need archive_command = 'rsdb --config FILE wal-push %p'
    /// into the same repository, and throw RSDB_ERR_STATE without a full physical backup.
    BackupManifest create(const std::string& kind);
    /// Prepares the repository (creates backup_dir, or the S3 bucket when missing). Idempotent.
    void init_repository();
    /// Deletes one backup; throws RSDB_ERR_CONFLICT while another backup builds on it. Returns
    /// the bytes freed.
    std::uint64_t delete_backup(const std::string& backup_id);
    /// Reports progress of backups, verifies and restores (an empty handler stops reporting).
    void set_progress(ProgressHandler handler);
    /// Reads a backup back completely; throws Error with RSDB_ERR_INTEGRITY naming the file and
    /// chunk at fault. Returns the manifest.
    BackupManifest verify(const std::string& backup_id);
    /// The backup history, newest first.
    std::vector<BackupInfo> list();
    /// Deletes backups past their retention (days per type, 0 = defaults 30/7/3), keeping the
    /// newest keep_last of each type; the newest full backup is always kept.
    CleanupReport cleanup(std::uint32_t full_days = 0, std::uint32_t incremental_days = 0,
                          std::uint32_t differential_days = 0, std::uint32_t keep_last = 1);
    /// Every known WAL gap (WAL that wal-push dropped past wal_queue_max), oldest first: an
    /// array of {"timeline","first_segment","last_segment","segments","bytes",
    /// "complete_before" (recovery reaches moments before it; null when unknown),
    /// "first_dropped_at","last_dropped_at","queue_bytes","limit_bytes","closed_by" (the full
    /// backup after which recovery works again, or null),"affected_backups"}.
    nlohmann::json wal_gaps();

private:
    friend struct detail::Access;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Full backups on a 5-field cron schedule (UTC) until destroyed. The handler receives
/// {"event":"completed"|"failed"|"missed", ...} on a library thread; the destructor waits for a
/// running handler.
class BackupScheduler {
public:
    using Handler = std::function<void(const nlohmann::json& event)>;

    /// Full logical backups.
    BackupScheduler(BackupManager& backups, const std::string& cron, Handler handler);
    /// Backups of kind "logical", "full", "incremental" or "differential".
    BackupScheduler(BackupManager& backups, const std::string& cron, const std::string& kind, Handler handler);
    BackupScheduler(BackupScheduler&&) noexcept;
    BackupScheduler& operator=(BackupScheduler&&) noexcept;
    BackupScheduler(const BackupScheduler&) = delete;
    BackupScheduler& operator=(const BackupScheduler&) = delete;
    ~BackupScheduler();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Watches for WAL gaps until destroyed: every interval, the handler receives each gap (as in
/// BackupManager::wal_gaps) that is new or has grown, on a library thread; the first look
/// reports every gap no full backup has closed. The destructor waits for a running handler.
class WalGapWatch {
public:
    using Handler = std::function<void(const nlohmann::json& gap)>;

    WalGapWatch(BackupManager& backups, std::chrono::milliseconds interval, Handler handler);
    WalGapWatch(WalGapWatch&&) noexcept;
    WalGapWatch& operator=(WalGapWatch&&) noexcept;
    WalGapWatch(const WalGapWatch&) = delete;
    WalGapWatch& operator=(const WalGapWatch&) = delete;
    ~WalGapWatch();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Restores backups: logical ones into a database, physical ones (with the backups they build
/// on and archived WAL) into a new data directory, up to a point in time.
class RecoveryManager {
public:
    /// With the database (needed by test restores of logical backups).
    explicit RecoveryManager(BackupManager& backups);
    /// From the repository and keys alone, for disaster recovery when the database is gone.
    explicit RecoveryManager(const Config& config);
    RecoveryManager(RecoveryManager&&) noexcept;
    RecoveryManager& operator=(RecoveryManager&&) noexcept;
    RecoveryManager(const RecoveryManager&) = delete;
    RecoveryManager& operator=(const RecoveryManager&) = delete;
    ~RecoveryManager();

    /// Verifies a logical backup, restores it into the database at target_url (created when missing)
    /// and checks every table's row count.
    RestoreReport restore(const std::string& backup_id, const std::string& target_url);
    /// Restores a physical backup into a new data directory, replays WAL to the target, starts
    /// the server on 127.0.0.1, waits for recovery to finish and counts every table's rows.
    /// Throws RSDB_ERR_INVALID_ARGUMENT for options the core refuses (no data_dir, both
    /// target_time and latest, a bad time) and RSDB_ERR_INTEGRITY (nothing left behind) when a
    /// backup file fails authentication.
    ClusterReport restore_cluster(const ClusterRestoreOptions& options);
    /// Restores into scratch space (a new database, or a temporary cluster), checks it, drops it.
    TestRestoreReport test_restore(const std::string& backup_id);
    /// Every backup in the repository, from the signed manifests, oldest first.
    std::vector<BackupManifest> list_repository();
    /// Stops a server that restore_cluster left running.
    void stop_cluster(const std::string& data_dir);
    /// Reports restore progress (an empty handler stops reporting).
    void set_progress(ProgressHandler handler);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// PostgreSQL's archive_command in-process: archives one WAL file into config's repository,
/// with its wal_push_parallel and wal_queue_max. Returns true when this call stored it, false
/// otherwise (an identical copy was there, an earlier push stored it ahead, or the queue limit
/// dropped it: wal_push_report tells which); throws RSDB_ERR_CONFLICT when a different file of
/// that name is archived.
bool wal_push(const Config& config, const std::string& path);
/// As wal_push, returning what happened: {"file","outcome":"stored"|"already_archived"|
/// "pushed_ahead"|"dropped","pushed_ahead":[...],"ahead_failed":[...],"queue_bytes","gap"}.
nlohmann::json wal_push_report(const Config& config, const std::string& path);
/// PostgreSQL's restore_command in-process: writes archived WAL file `name` to `path`; throws
/// RSDB_ERR_NOT_FOUND when it was never archived. Returns its size.
std::uint64_t wal_fetch(const Config& config, const std::string& name, const std::string& path);

}  // namespace database
}  // namespace rootstream
