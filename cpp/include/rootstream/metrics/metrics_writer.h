// rootstream::metrics::MetricsWriter — a background batching writer that never drops points
// silently: bounded buffer (drop-oldest when full), retries with backoff while the server is
// down, every drop counted by reason and reported. See docs/metrics.md.
#pragma once

#include "rootstream/error.h"
#include "rootstream/metrics/influxdb_client.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rootstream {
namespace metrics {

class MetricsCollector;

/// Counters and gauges of a writer: every accepted point ends delivered or dropped.
struct WriterStats {
    std::uint64_t accepted = 0;
    std::uint64_t delivered = 0;
    std::uint64_t dropped_buffer_full = 0;
    std::uint64_t dropped_rejected = 0;
    std::uint64_t dropped_retries_exhausted = 0;
    std::uint64_t dropped_shutdown = 0;
    std::uint64_t batches = 0;
    std::uint64_t retries = 0;
    std::uint64_t buffered_points = 0;
    std::uint64_t buffered_bytes = 0;
    /// The latest failure's message, or "".
    std::string last_error;

    std::uint64_t dropped() const {
        return dropped_buffer_full + dropped_rejected + dropped_retries_exhausted + dropped_shutdown;
    }
};

/// Points dropped for one reason ("buffer_full", "rejected", "retries_exhausted", "shutdown")
/// since the previous event of that reason, with the latest message.
struct DropEvent {
    std::string reason;
    std::uint64_t points = 0;
    std::string message;
};

/// Thread-safe. write_point() never waits on the network.
class MetricsWriter {
public:
    /// Runs on one of the writer's sender threads, or on the thread calling flush(),
    /// shutdown() or the destructor, one call at a time; must not call flush() or shutdown().
    /// Not called after shutdown() or the destructor returns. Exceptions are swallowed.
    using DropHandler = std::function<void(const DropEvent&)>;

    /// Starts the writer over a copy of `client`. Options may hold `batch_size` (5000),
    /// `flush_interval_ms` (1000), `max_buffer_points` (100000), `max_buffer_bytes` (64 MiB),
    /// `retry_initial_ms`, `retry_base`, `retry_max_interval_ms`, `retry_max_elapsed_ms`,
    /// `shutdown_timeout_ms` (5000, used by the destructor), `log_drops`, `senders` (4; with
    /// more than one, batches may arrive out of order).
    explicit MetricsWriter(const InfluxDBClient& client, const nlohmann::json& options = nlohmann::json::object());
    MetricsWriter(MetricsWriter&&) noexcept;
    MetricsWriter& operator=(MetricsWriter&&) noexcept;
    MetricsWriter(const MetricsWriter&) = delete;
    MetricsWriter& operator=(const MetricsWriter&) = delete;
    /// Shuts down with the `shutdown_timeout_ms` deadline.
    ~MetricsWriter();

    /// Buffers a point; InvalidArgument (nothing buffered) for a bad one, StateError after
    /// shutdown.
    void write_point(const Point& point);
    /// Buffers the points; none when any is invalid.
    void write_points(const std::vector<Point>& points);
    /// Buffers one prepared line (InfluxDBClient::encode, or your own) without a newline.
    void write_line(const std::string& line);
    /// Waits until every point accepted before the call is delivered or dropped; Timeout after
    /// `timeout` (the points stay buffered).
    void flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
    /// Delivers what it can until `timeout`, drops the rest (counted) and stops. Idempotent.
    WriterStats shutdown(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
    WriterStats stats() const;
    /// Sets the drop callback; an empty function removes it.
    void on_drop(DropHandler handler);

private:
    friend class MetricsCollector;
    friend class MetricsReporter;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace metrics
}  // namespace rootstream
