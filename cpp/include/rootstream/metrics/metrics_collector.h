// rootstream::metrics::MetricsCollector — stream, system (/proc), database and cache (Redis
// INFO) metrics, collected once or periodically into a MetricsWriter. Each collector's failure
// is reported and never stops the others. Measurement and field names: docs/metrics.md.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"
#include "rootstream/metrics/metrics_writer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rootstream {
namespace metrics {

/// The state of one live stream, as the streaming code reports it.
struct StreamMetrics {
    std::string stream_id;
    std::int64_t viewers = 0;
    double bitrate_kbps = 0;
    double fps = 0;
    std::int64_t width = 0;
    std::int64_t height = 0;
    double duration_seconds = 0;
    std::int64_t bytes_sent = 0;
};

/// Thread-safe. Holds the stream collector from the start; add the others.
class MetricsCollector {
public:
    /// Receives a collector's name and its failure; runs on the collection thread (or the
    /// thread calling collect_once()), never after the destructor returns.
    using FailureHandler = std::function<void(const std::string& collector, const std::string& message)>;

    MetricsCollector();
    MetricsCollector(MetricsCollector&&) noexcept;
    MetricsCollector& operator=(MetricsCollector&&) noexcept;
    MetricsCollector(const MetricsCollector&) = delete;
    MetricsCollector& operator=(const MetricsCollector&) = delete;
    /// Stops periodic collection.
    ~MetricsCollector();

    /// cpu, memory, disk (of `disk_path`) and network from /proc.
    void add_system(const std::string& disk_path = "/");
    /// connections, query time, size and pool statistics of `db`.
    void add_database(database::DatabaseManager& db);
    /// hit rate, operations and memory from Redis INFO, tagged server=<server>.
    void add_cache(cache::RedisClient& redis, const std::string& server);
    /// The latest state of a stream (one `stream` point per stream and round).
    void update_stream(const StreamMetrics& metrics);
    /// Forgets a stream; false when it was not known.
    bool remove_stream(const std::string& stream_id);
    /// Sets the failure callback; an empty function removes it.
    void on_failure(FailureHandler handler);
    /// Runs every collector once: {"points": [...], "failures": [{"collector", "message"}]}.
    nlohmann::json collect_once();
    /// Collects every `interval` into `writer` until stop(); StateError when running already.
    void start(MetricsWriter& writer, std::chrono::milliseconds interval);
    void stop();
    /// [{"name", "runs_ok", "runs_failed", "last_error"}] per collector.
    nlohmann::json stats() const;

private:
    friend class MetricsReporter;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace metrics
}  // namespace rootstream
