// rootstream::metrics::InfluxDBClient — writes points to InfluxDB over the v1 API (InfluxDB
// 1.x, and the v1-compatible endpoints of 2.x/3.x) or the v2 API (org/bucket/token), runs
// InfluxQL queries (JSON answers) and Flux queries, creates databases and buckets, and sets up
// retention. See docs/metrics.md.
#pragma once

#include "rootstream/config.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace rootstream {
namespace metrics {

class MetricsWriter;
class MetricsReporter;

/// A field value: float, signed or unsigned integer, bool or string. Unsigned values are
/// written as integers over the v1 API (InfluxDB 1.x has no unsigned type).
using FieldValue = std::variant<double, std::int64_t, std::uint64_t, bool, std::string>;

/// A point in structured form; the library writes its line protocol (escaping, sorted tags,
/// the client's precision) and refuses what line protocol cannot carry: empty or control
/// characters in names, NaN and infinities, an empty field set, invalid UTF-8.
struct Point {
    std::string measurement;
    std::vector<std::pair<std::string, std::string>> tags;
    std::vector<std::pair<std::string, FieldValue>> fields;
    /// Nanoseconds since the epoch; without one the server stamps the point on arrival.
    std::optional<std::int64_t> timestamp_ns;

    Point() = default;
    explicit Point(std::string m) : measurement(std::move(m)) {}
    Point& tag(std::string key, std::string value) {
        tags.emplace_back(std::move(key), std::move(value));
        return *this;
    }
    Point& field(std::string key, double v) { return add(std::move(key), FieldValue(v)); }
    Point& field(std::string key, std::int64_t v) { return add(std::move(key), FieldValue(v)); }
    Point& field(std::string key, int v) { return add(std::move(key), FieldValue(static_cast<std::int64_t>(v))); }
    Point& field(std::string key, std::uint64_t v) { return add(std::move(key), FieldValue(v)); }
    Point& field(std::string key, bool v) { return add(std::move(key), FieldValue(v)); }
    Point& field(std::string key, std::string v) { return add(std::move(key), FieldValue(std::move(v))); }
    Point& field(std::string key, const char* v) { return add(std::move(key), FieldValue(std::string(v))); }
    Point& timestamp(std::int64_t ns) {
        timestamp_ns = ns;
        return *this;
    }

private:
    Point& add(std::string key, FieldValue v) {
        fields.emplace_back(std::move(key), std::move(v));
        return *this;
    }
};

/// Thread-safe and cheap to copy (copies share the connection pool). Requests are blocking and
/// bounded by the client's `timeout_ms`.
class InfluxDBClient {
public:
    /// v1 API for `url` (e.g. "http://127.0.0.1:8086") and `database`. Options may hold
    /// `precision` ("ns", "us", "ms", "s"), `timeout_ms`, `retention_policy`, `username`,
    /// `password`. Nothing is sent yet.
    static InfluxDBClient v1(const std::string& url, const std::string& database,
                             const nlohmann::json& options = nlohmann::json::object());
    /// v2 API (`/api/v2/write` with org and bucket; the token, when given, as
    /// `Authorization: Token ...`). Options may hold `precision` and `timeout_ms`.
    static InfluxDBClient v2(const std::string& url, const std::string& org, const std::string& bucket,
                             const std::optional<std::string>& token = std::nullopt,
                             const nlohmann::json& options = nlohmann::json::object());
    /// From the configuration: v2 when influx_org and influx_bucket are set, otherwise v1 with
    /// influx_database (default "rootstream"). ConfigError without influx_url.
    static InfluxDBClient from_config(const Config& config);

    InfluxDBClient(const InfluxDBClient& other);
    InfluxDBClient& operator=(const InfluxDBClient& other);
    InfluxDBClient(InfluxDBClient&&) noexcept;
    InfluxDBClient& operator=(InfluxDBClient&&) noexcept;
    ~InfluxDBClient();

    /// Checks that the server answers.
    void ping() const;
    /// Writes one point now, in one request (no buffering, no retry).
    void write_point(const Point& point) const;
    /// Writes the points in one request; when any is invalid nothing is sent.
    void write_points(const std::vector<Point>& points) const;
    /// Sends newline-separated line protocol in the client's precision as is.
    void write_lines(const std::string& lines) const;
    /// The line this client writes for `point`.
    std::string encode(const Point& point) const;
    /// An InfluxQL query (v1 API); InfluxDB's JSON answer. `epoch` ("ns", "ms", ...) or "" for
    /// RFC 3339 times.
    nlohmann::json query(const std::string& influxql, const std::string& epoch = "") const;
    /// A Flux query (v2 API); the annotated CSV answer.
    std::string query_flux(const std::string& flux) const;
    /// Creates the database (v1).
    void create_database() const;
    /// Creates the bucket (v2) keeping points `retention_seconds` (0: forever).
    void create_bucket(std::uint64_t retention_seconds) const;
    /// 1 day raw (default policy), 30 days downsampled by a continuous query (v1). Options may
    /// change `raw_policy`, `raw_duration`, `downsampled_policy`, `downsampled_duration`,
    /// `interval`, `continuous_query`.
    void setup_retention(const nlohmann::json& options = nlohmann::json::object()) const;

private:
    friend class MetricsWriter;
    friend class MetricsReporter;
    struct Impl;
    explicit InfluxDBClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace metrics
}  // namespace rootstream
