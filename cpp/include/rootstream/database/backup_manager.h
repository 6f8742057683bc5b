// rootstream::database::BackupManager, BackupScheduler and RecoveryManager — encrypted,
// verifiable logical and physical backups, WAL archiving and point-in-time recovery.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"

#include "rootstream-db/src/ffi/cxx/backup.rs.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace rootstream {
namespace database {

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

    /// Takes a full logical backup; returns its manifest (backup_id, sizes, sha256, row_counts, ...).
    nlohmann::json create_full();
    /// Takes a backup of kind "logical", or the physical "full", "incremental" (the WAL since
    /// the last physical backup) or "differential" (the WAL since the last physical full).
    /// Incremental and differential need archive_command = 'rsdb --config FILE wal-push %p'
    /// into the same repository, and throw RSDB_ERR_STATE without a full physical backup.
    nlohmann::json create(const std::string& kind);
    /// Prepares the repository (creates backup_dir, or the S3 bucket when missing). Idempotent.
    void init_repository();
    /// Deletes one backup; throws RSDB_ERR_CONFLICT while another backup builds on it. Returns
    /// the bytes freed.
    std::uint64_t delete_backup(const std::string& backup_id);
    /// Reports progress of backups, verifies and restores (an empty handler stops reporting).
    void set_progress(ProgressHandler handler);
    /// Reads a backup back completely; throws Error with RSDB_ERR_INTEGRITY naming the file and
    /// chunk at fault. Returns the manifest.
    nlohmann::json verify(const std::string& backup_id);
    /// The backup history, newest first.
    nlohmann::json list();
    /// Deletes backups past their retention (days per type, 0 = defaults 30/7/3), keeping the
    /// newest keep_last of each type; the newest full backup is always kept.
    nlohmann::json cleanup(std::uint32_t full_days = 0, std::uint32_t incremental_days = 0,
                           std::uint32_t differential_days = 0, std::uint32_t keep_last = 1);

    const ffi::BackupBox& raw() const { return *box_; }

private:
    rust::Box<ffi::BackupBox> box_;
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

private:
    rust::Box<ffi::ScheduleBox> box_;
};

/// Restores backups: logical ones into a database, physical ones (with the backups they build
/// on and archived WAL) into a new data directory, up to a point in time.
class RecoveryManager {
public:
    /// With the database (needed by test restores of logical backups).
    explicit RecoveryManager(BackupManager& backups);
    /// From the repository and keys alone, for disaster recovery when the database is gone.
    explicit RecoveryManager(const Config& config);

    /// Verifies a logical backup, restores it into the database at target_url (created when missing)
    /// and checks every table's row count. Returns {"backup_id","target","tables_checked","rows_restored"}.
    nlohmann::json restore(const std::string& backup_id, const std::string& target_url);
    /// Restores a physical backup into a new data directory, replays WAL to the target, starts
    /// the server on 127.0.0.1, waits for recovery to finish and counts every table's rows.
    /// options: {"data_dir" (required), "backup_id", "port", "target_time" (RFC 3339),
    /// "latest", "keep_running", "timeout_s"}. Returns {"backup_id","chain","data_dir","port",
    /// "target","recovery_log","databases","running","seconds"}. Throws RSDB_ERR_INTEGRITY
    /// (nothing left behind) when a backup file fails authentication.
    nlohmann::json restore_cluster(const nlohmann::json& options);
    /// Restores into scratch space (a new database, or a temporary cluster), checks it, drops it.
    nlohmann::json test_restore(const std::string& backup_id);
    /// Every backup in the repository, from the signed manifests, oldest first.
    nlohmann::json list_repository();
    /// Stops a server that restore_cluster left running.
    void stop_cluster(const std::string& data_dir);
    /// Reports restore progress (an empty handler stops reporting).
    void set_progress(ProgressHandler handler);

private:
    rust::Box<ffi::RecoveryBox> box_;
};

/// PostgreSQL's archive_command in-process: archives one WAL file into config's repository.
/// Returns true when stored, false when an identical copy was already there; throws
/// RSDB_ERR_CONFLICT when a different file of that name is.
bool wal_push(const Config& config, const std::string& path);
/// PostgreSQL's restore_command in-process: writes archived WAL file `name` to `path`; throws
/// RSDB_ERR_NOT_FOUND when it was never archived. Returns its size.
std::uint64_t wal_fetch(const Config& config, const std::string& name, const std::string& path);

}  // namespace database
}  // namespace rootstream
