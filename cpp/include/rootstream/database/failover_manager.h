// rootstream::database::FailoverManager — automatic failover, manual failover and planned
// switchover of the PostgreSQL cluster in ha_nodes, coordinated through a leader lease in etcd.
// Every instance may run one; only the lease holder acts. See docs/high-availability.md.
#pragma once

#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>

namespace rootstream {
namespace sync {
class StateSyncManager;
}
namespace database {

/// Thread-safe. Destroying it stops the loop and gives up the lease.
class FailoverManager {
public:
    /// Called on every change of primary with the change as JSON (cluster, kind = automatic |
    /// manual | switchover | observed, old_primary, new_primary, by, timeline, old_primary_lsn,
    /// new_primary_lsn, bytes_lost_estimate, mode, reason, detected_at, decided_at, promoted_at,
    /// detection_to_promotion_ms). Runs on the thread that made the change: the library thread
    /// `rsdb-failover` for automatic failovers and changes read from etcd, the caller's thread
    /// for switchover() and failover(). Exceptions it throws are swallowed.
    using RoleChangeHandler = std::function<void(const nlohmann::json&)>;

    /// A manager from config's ha_nodes, ha_data_dirs, etcd_endpoints, ha_cluster, ha_mode and
    /// instance_id, with options overrides (lease_ttl_ms, loop_interval_ms, failure_threshold,
    /// maximum_lag_on_failover, mode, fence, …; see rsdb_failover_open). Contacts nothing yet.
    explicit FailoverManager(const Config& config, const nlohmann::json& options = nlohmann::json::object());
    FailoverManager(FailoverManager&&) noexcept;
    FailoverManager& operator=(FailoverManager&&) noexcept;
    FailoverManager(const FailoverManager&) = delete;
    FailoverManager& operator=(const FailoverManager&) = delete;
    ~FailoverManager();

    /// Starts the loop (threads rsdb-failover and rsdb-failover-lease). StateError if running.
    void start();
    /// Stops the loop and releases the lease.
    void stop();
    /// Runs one loop on the calling thread.
    void tick();
    /// Moves db's pool to the primary the manager knows, at once, and to every new primary after
    /// it (old connections are closed, never reused).
    void attach(const DatabaseManager& db);
    /// Publishes a `cluster.failover` event through `sync` on every role change this instance
    /// makes, for as long as `sync` is open (a closed one announces nothing more).
    void attach(const sync::StateSyncManager& sync);
    /// Planned switchover with no data loss; returns the change. NoCandidateError when the target
    /// is not a streaming standby, Timeout when it did not catch up, FencedError on a lost lease.
    nlohmann::json switchover(const std::string& target);
    /// Manual failover to target (empty: the most advanced standby); NoCandidateError while the
    /// primary still answers or when no standby is safe.
    nlohmann::json failover(const std::string& target = "");
    /// Rejoins the fenced former primary `node` as a standby (pg_rewind).
    void rejoin(const std::string& node);
    /// The manager's view (leader, is_leader, primary, primary_lsn, failed_checks, nodes, fenced,
    /// last_change, alerts, …).
    nlohmann::json status() const;
    /// Whether this instance holds the leader lease right now.
    bool is_leader() const;
    /// Adds a handler for every change of primary.
    void on_role_change(RoleChangeHandler handler);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace database
}  // namespace rootstream
