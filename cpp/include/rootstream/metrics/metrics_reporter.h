// rootstream::metrics::MetricsReporter — a stream's dashboard series, p50/p95/p99 of a
// series, the Prometheus text and JSON exports of the library's own counters (pool, cache,
// sessions, MFA failures, backups, writer buffer and drops), an HTTP /metrics endpoint, and
// threshold alerts. See docs/metrics.md.
#pragma once

#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"
#include "rootstream/metrics/influxdb_client.h"
#include "rootstream/metrics/metrics_collector.h"
#include "rootstream/metrics/metrics_writer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rootstream {
namespace metrics {

/// Thread-safe.
class MetricsReporter {
public:
    /// Receives an alert ({"rule", "metric", "value", "threshold", "severity", "message"}) on
    /// the thread calling check(); never after the destructor returns.
    using AlertHandler = std::function<void(const nlohmann::json& alert)>;

    /// Without a client only the exports and alerts work.
    MetricsReporter();
    explicit MetricsReporter(const InfluxDBClient& client);
    MetricsReporter(MetricsReporter&&) noexcept;
    MetricsReporter& operator=(MetricsReporter&&) noexcept;
    MetricsReporter(const MetricsReporter&) = delete;
    MetricsReporter& operator=(const MetricsReporter&) = delete;
    /// Stops the /metrics endpoint.
    ~MetricsReporter();

    /// What the exports include besides the process-wide counters; each argument may be null
    /// (left out), and each call replaces all three. The reporter keeps its own references.
    void attach(const MetricsWriter* writer, database::DatabaseManager* db, const MetricsCollector* collector);
    /// Prometheus text exposition format 0.0.4.
    std::string prometheus_text() const;
    /// {"<name>": {"type", "help", "samples": [{"labels", "value"}]}}.
    nlohmann::json json_export() const;
    /// Serves GET /metrics on `addr` ("127.0.0.1:0" for a free loopback port); returns the
    /// address it listens on. StateError when serving already.
    std::string serve(const std::string& addr);
    void stop_serving();
    /// Mean viewers, bitrate, fps and the most bytes of a stream per `interval` (InfluxQL
    /// duration) between two times in nanoseconds: [{"time_ns", "viewers", ...}].
    nlohmann::json stream_dashboard(const std::string& stream_id, std::int64_t start_ns, std::int64_t end_ns,
                                    const std::string& interval) const;
    /// {"count", "p50", "p95", "p99"} (nearest rank) of a field where the tags match.
    nlohmann::json percentiles(const std::string& measurement, const std::string& field, const nlohmann::json& tags,
                               std::int64_t start_ns, std::int64_t end_ns) const;
    /// The same of values in memory (InvalidArgument for NaN, NotFound for none).
    static nlohmann::json percentiles_of(const std::vector<double>& values);
    /// {"name", "metric", "comparison": "above"|"below", "threshold", "severity":
    /// "info"|"warning"|"critical"}.
    void add_rule(const nlohmann::json& rule);
    void on_alert(AlertHandler handler);
    /// Checks {"metric": value, ...} against the rules; returns the alerts that fired (each
    /// also went to every handler).
    nlohmann::json check(const nlohmann::json& values);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace metrics
}  // namespace rootstream
