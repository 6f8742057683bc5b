// rootstream::database::BackupManager and RecoveryManager — encrypted, verifiable backups.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"

#include "rootstream/cache/message_observer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
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

    BackupScheduler(BackupManager& backups, const std::string& cron, Handler handler);

private:
    rust::Box<ffi::ScheduleBox> box_;
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
