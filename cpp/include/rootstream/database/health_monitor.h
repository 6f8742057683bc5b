// rootstream::database::HealthMonitor — periodic checks of a PostgreSQL setup (connectivity,
// latency, replication lag, disk space, pool saturation, long-running queries, and the nodes of
// an HA cluster) with alerts on changes of state. docs/ha-health.md has the checks, options and
// JSON shapes.
#pragma once

#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace rootstream {
namespace database {

/// One alert, as delivered to an AlertHandler.
struct HealthAlert {
    /// connectivity, latency, replication_bytes, replication_seconds, disk, pool,
    /// long_queries, nodes; or role / replicas for info notices.
    std::string check;
    /// info, warning or critical (for a resolved alert: the severity it had).
    std::string severity;
    /// The check's state now: ok, warning, critical.
    std::string state;
    /// True when the check is back to ok after alerting.
    bool resolved = false;
    /// True when the alert repeats an unchanged state (repeat_interval_ms).
    bool repeat = false;
    std::string message;
    std::optional<double> value;
    std::optional<double> threshold;
    /// RFC 3339 times: when it was raised, and since when the check is in this state.
    std::string at;
    std::string since;
    /// The whole alert as the C API gives it.
    nlohmann::json json;
};

/// Thread-safe. Destroying it stops the checks; no handler runs after the destructor returns.
class HealthMonitor {
public:
    /// Periodic rounds call it on the library thread `rsdb-health`; check_now() calls it on the
    /// calling thread. One call at a time, in order. Exceptions it throws are swallowed. It must
    /// not call check_now() (that throws StateError).
    using AlertHandler = std::function<void(const HealthAlert&)>;

    /// A monitor of `db`'s pool (shared with `db`). `options` is a JSON object of the keys in
    /// docs/ha-health.md (an empty object or null for the defaults); JsonError / InvalidArgument
    /// for bad options. No check runs until start() or check_now().
    explicit HealthMonitor(DatabaseManager& db, const nlohmann::json& options = nlohmann::json::object());
    HealthMonitor(HealthMonitor&&) noexcept;
    HealthMonitor& operator=(HealthMonitor&&) noexcept;
    HealthMonitor(const HealthMonitor&) = delete;
    HealthMonitor& operator=(const HealthMonitor&) = delete;
    ~HealthMonitor();

    /// Starts the periodic rounds on the thread rsdb-health (the first one right away).
    void start();
    /// Stops them, waiting up to the stop_timeout_ms option (rootstream::Timeout when a handler still
    /// runs then). Idempotent.
    void stop();
    /// True while the periodic rounds run.
    bool running() const;
    /// Runs one round now on this thread and returns the status (as status()).
    nlohmann::json check_now();
    /// {"overall","running","rounds","last_round_at","last_round_ms","callback_panics",
    ///  "checks":{name:{"state","value","unit","message","warning","critical","checked_at",
    ///  "since","alerting","alerts","details"}}} without running a check.
    nlohmann::json status() const;
    /// Calls `handler` for every alert until the monitor is closed.
    void on_alert(AlertHandler handler);
    /// Stops the checks and drops the handlers; start() and check_now() then throw StateError.
    void close();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace database
}  // namespace rootstream
