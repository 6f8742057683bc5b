// rootstream::database::ReplicationManager — the streaming replication of a PostgreSQL cluster:
// status and lag, read routing to fresh standbys, adding and removing standbys, promote, and
// rejoining a former primary with pg_rewind.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace rootstream {
namespace database {

/// Where a read went and what it returned.
struct ReadResult {
    /// The node that served the query.
    std::string node;
    /// True when the primary served it (no standby was within the lag limits).
    bool primary = false;
    /// The rows, an array of objects.
    nlohmann::json rows;
};

/// Thread-safe. Status and operations use short connections of their own; reads use one small
/// pool per node.
class ReplicationManager {
public:
    /// `nodes` is "name=postgres://...,..." (one host per URL) and `data_dirs` "name=/dir,..."
    /// for the nodes on this machine; an empty `nodes` takes both from ROOTSTREAM_HA_PG_NODES
    /// and ROOTSTREAM_HA_PG_DATA. `options` may hold probe_timeout_ms, max_lag_bytes,
    /// max_lag_seconds, read_pool_size, routing ("round_robin"|"least_lag"),
    /// fallback_to_primary, refresh_interval_ms, synchronous, stream_wait_s. `config` gives
    /// pg_bin_dir and the read pools' time limits. Nothing is contacted yet.
    explicit ReplicationManager(const Config& config, const std::string& nodes = "",
                                const std::string& data_dirs = "",
                                const nlohmann::json& options = nlohmann::json::object());
    ReplicationManager(ReplicationManager&&) noexcept;
    ReplicationManager& operator=(ReplicationManager&&) noexcept;
    ReplicationManager(const ReplicationManager&) = delete;
    ReplicationManager& operator=(const ReplicationManager&) = delete;
    ~ReplicationManager();

    /// Every node's probe and the primary's view: {"primary", "primaries", "split_brain",
    /// "synchronous_standby_names", "nodes", "replicas": [{"name", "state", "sync_state",
    /// "lag_bytes", "lag_seconds", "readable", "slot", ...}], "slots", "error"}.
    nlohmann::json status();
    /// Writes one replication_status row per standby through `db`; returns the rows written.
    std::uint64_t record_status(DatabaseManager& db);
    /// Runs a read-only query on a standby within the lag limits, else on the primary (or
    /// throws ConnectionError when fallback_to_primary is false). Writes throw QueryError.
    ReadResult query_read(const std::string& sql, const nlohmann::json& params = nlohmann::json::array());
    /// Forgets the cached view of the cluster so the next read probes again.
    void refresh();
    /// Sets up a standby on this machine (slot, pg_basebackup, start, wait for streaming,
    /// synchronous list); returns the report. StateError when `url` answers as a primary.
    nlohmann::json add_replica(const std::string& name, const std::string& url, const std::string& data_dir,
                               int port);
    /// Takes a standby out (synchronous list, stop when local, drop its slot); returns the report.
    nlohmann::json remove_replica(const std::string& name);
    /// Promotes a standby; StateError when it already is a primary.
    void promote(const std::string& name);
    /// Rewinds the former primary `name` and makes it a standby of `new_primary` (empty: the
    /// node that answers as primary); ConfigError without data checksums or wal_log_hints.
    nlohmann::json rejoin(const std::string& name, const std::string& new_primary = "");

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace database
}  // namespace rootstream
