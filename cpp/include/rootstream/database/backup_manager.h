// rootstream::database::BackupManager and RecoveryManager — encrypted, verifiable backups.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <string>

namespace rootstream {
namespace database {

/// Full logical backups of the configured database into backup_dir: pg_dump, zstd, AES-256-GCM
/// in authenticated chunks under a per-backup data key, a signed manifest. Needs database_url,
/// backup_dir and master_key. Thread-safe.
class BackupManager {
public:
    BackupManager(const Config& config, DatabaseManager& db);

    /// Takes a full backup; returns its manifest (backup_id, sizes, sha256, row_counts, ...).
    nlohmann::json create_full();
    /// Reads a backup back completely; throws Error with RSDB_ERR_INTEGRITY naming the file and
    /// chunk at fault. Returns the manifest.
    nlohmann::json verify(const std::string& backup_id);
    /// The backup history, newest first.
    nlohmann::json list();

    const ffi::BackupBox& raw() const { return *box_; }

private:
    rust::Box<ffi::BackupBox> box_;
};

/// Restores backups.
class RecoveryManager {
public:
    explicit RecoveryManager(BackupManager& backups) : backups_(backups) {}

    /// Verifies the backup, restores it into the existing (empty) database at target_url and
    /// checks every table's row count. Returns {"backup_id","target","tables_checked","rows_restored"}.
    nlohmann::json restore(const std::string& backup_id, const std::string& target_url);

private:
    BackupManager& backups_;
};

}  // namespace database
}  // namespace rootstream
