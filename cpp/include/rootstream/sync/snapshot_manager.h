// rootstream::sync::SnapshotManager — versioned, compressed snapshots of a StateSyncManager's
// state in PostgreSQL.
#pragma once

#include "rootstream/database/database_manager.h"
#include "rootstream/sync/state_sync_manager.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rootstream {
namespace sync {

/// One stored snapshot.
struct SnapshotInfo {
    std::int64_t version = 0;
    /// The last log entry the state includes ("" when the log was empty).
    std::string log_id;
    std::int64_t entity_count = 0;
    std::int64_t raw_bytes = 0;
    std::int64_t stored_bytes = 0;
    std::string taken_by;
    /// RFC 3339, UTC.
    std::string created_at;
    /// The C API's keys.
    nlohmann::json to_json() const;
};

/// Thread-safe. The sync manager also repairs a trimmed log from these snapshots from now on.
class SnapshotManager {
public:
    SnapshotManager(database::DatabaseManager& db, StateSyncManager& sync);
    SnapshotManager(SnapshotManager&&) noexcept;
    SnapshotManager& operator=(SnapshotManager&&) noexcept;
    SnapshotManager(const SnapshotManager&) = delete;
    SnapshotManager& operator=(const SnapshotManager&) = delete;
    /// Stops the periodic snapshots.
    ~SnapshotManager();

    /// Stores the current state as the next version.
    SnapshotInfo take();
    /// Newest first.
    std::vector<SnapshotInfo> list();
    /// Deletes all but the newest `keep` (at least one stays); returns how many went.
    std::uint64_t cleanup(unsigned keep);
    /// The state rebuilt from the latest snapshot plus the later log: {"<type>": {"<id>": {...}}}.
    nlohmann::json reconstruct();
    void start_periodic(std::chrono::milliseconds interval, unsigned keep = 10);
    void stop_periodic();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sync
}  // namespace rootstream
