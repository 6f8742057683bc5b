#include "rootstream/metrics/influxdb_client.h"
#include "rootstream/metrics/metrics_collector.h"
#include "rootstream/metrics/metrics_reporter.h"
#include "rootstream/metrics/metrics_writer.h"

#include "access.h"
#include "internal.h"
#include "message_observer.h"
#include "rootstream-db/src/ffi/cxx/metrics.rs.h"

#include <type_traits>
#include <vector>

namespace rootstream {
namespace metrics {

struct InfluxDBClient::Impl {
    rust::Box<ffi::MetricsClientBox> box;
};
struct MetricsWriter::Impl {
    rust::Box<ffi::MetricsWriterBox> box;
};
struct MetricsCollector::Impl {
    rust::Box<ffi::MetricsCollectorBox> box;
};
struct MetricsReporter::Impl {
    rust::Box<ffi::MetricsReporterBox> box;
};

namespace {

std::string options_text(const nlohmann::json& options) {
    if (options.is_null() || (options.is_object() && options.empty())) return std::string();
    if (!options.is_object()) Error::raise(RSDB_ERR_JSON, "options must be a JSON object");
    return detail::dump_json(options);
}

// Converts inside detail::call: a string that is not UTF-8 makes rust::String throw
// std::invalid_argument, which becomes the C API's RSDB_ERR_INVALID_UTF8.
ffi::MetricsPoint to_bridge(const Point& p) {
    ffi::MetricsPoint out;
    out.measurement = rust::String(p.measurement);
    for (const auto& [k, v] : p.tags) out.tags.push_back(ffi::MetricsTag{rust::String(k), rust::String(v)});
    for (const auto& [k, v] : p.fields) {
        ffi::MetricsField f{rust::String(k), 0, 0.0, 0, 0, false, rust::String()};
        std::visit(
            [&f](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, double>) {
                    f.kind = 0;
                    f.float_value = x;
                } else if constexpr (std::is_same_v<T, std::int64_t>) {
                    f.kind = 1;
                    f.int_value = x;
                } else if constexpr (std::is_same_v<T, std::uint64_t>) {
                    f.kind = 2;
                    f.uint_value = x;
                } else if constexpr (std::is_same_v<T, bool>) {
                    f.kind = 3;
                    f.bool_value = x;
                } else {
                    f.kind = 4;
                    f.string_value = rust::String(x);
                }
            },
            v);
        out.fields.push_back(std::move(f));
    }
    out.has_timestamp = p.timestamp_ns.has_value();
    out.timestamp_ns = p.timestamp_ns.value_or(0);
    return out;
}

std::vector<ffi::MetricsPoint> to_bridge(const std::vector<Point>& points) {
    std::vector<ffi::MetricsPoint> out;
    out.reserve(points.size());
    for (const auto& p : points) out.push_back(to_bridge(p));
    return out;
}

rust::Slice<const ffi::MetricsPoint> slice(const std::vector<ffi::MetricsPoint>& v) {
    return rust::Slice<const ffi::MetricsPoint>(v.data(), v.size());
}

WriterStats stats_of(const rust::String& text) {
    const nlohmann::json j = detail::parse_json(text);
    WriterStats s;
    s.accepted = j.at("accepted").get<std::uint64_t>();
    s.delivered = j.at("delivered").get<std::uint64_t>();
    s.dropped_buffer_full = j.at("dropped").at("buffer_full").get<std::uint64_t>();
    s.dropped_rejected = j.at("dropped").at("rejected").get<std::uint64_t>();
    s.dropped_retries_exhausted = j.at("dropped").at("retries_exhausted").get<std::uint64_t>();
    s.dropped_shutdown = j.at("dropped").at("shutdown").get<std::uint64_t>();
    s.batches = j.at("batches").get<std::uint64_t>();
    s.retries = j.at("retries").get<std::uint64_t>();
    s.buffered_points = j.at("buffered_points").get<std::uint64_t>();
    s.buffered_bytes = j.at("buffered_bytes").get<std::uint64_t>();
    if (j.at("last_error").is_string()) s.last_error = j.at("last_error").get<std::string>();
    return s;
}

std::uint64_t millis(std::chrono::milliseconds d) { return d.count() < 0 ? 0 : static_cast<std::uint64_t>(d.count()); }

}  // namespace

// ---------------------------------------------------------------------------- InfluxDBClient

InfluxDBClient::InfluxDBClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

InfluxDBClient InfluxDBClient::v1(const std::string& url, const std::string& database, const nlohmann::json& options) {
    const std::string opts = options_text(options);
    return InfluxDBClient(
        std::make_unique<Impl>(Impl{detail::call([&] { return ffi::metrics_client_v1(url, database, opts); })}));
}

InfluxDBClient InfluxDBClient::v2(const std::string& url, const std::string& org, const std::string& bucket,
                                  const std::optional<std::string>& token, const nlohmann::json& options) {
    const std::string opts = options_text(options);
    return InfluxDBClient(std::make_unique<Impl>(Impl{detail::call([&] {
        return ffi::metrics_client_v2(url, org, bucket, token.value_or(std::string()), token.has_value(), opts);
    })}));
}

InfluxDBClient InfluxDBClient::from_config(const Config& config) {
    return InfluxDBClient(std::make_unique<Impl>(
        Impl{detail::call([&] { return ffi::metrics_client_from_config(detail::Access::config(config)); })}));
}

InfluxDBClient::InfluxDBClient(const InfluxDBClient& other)
    : impl_(std::make_unique<Impl>(Impl{other.impl_->box->clone_box()})) {}

InfluxDBClient& InfluxDBClient::operator=(const InfluxDBClient& other) {
    if (this != &other) impl_ = std::make_unique<Impl>(Impl{other.impl_->box->clone_box()});
    return *this;
}

InfluxDBClient::InfluxDBClient(InfluxDBClient&&) noexcept = default;
InfluxDBClient& InfluxDBClient::operator=(InfluxDBClient&&) noexcept = default;
InfluxDBClient::~InfluxDBClient() = default;

void InfluxDBClient::ping() const {
    detail::call([&] { impl_->box->ping(); });
}

void InfluxDBClient::write_point(const Point& point) const {
    detail::call([&] { impl_->box->write_point(to_bridge(point)); });
}

void InfluxDBClient::write_points(const std::vector<Point>& points) const {
    detail::call([&] {
        auto v = to_bridge(points);
        impl_->box->write_points(slice(v));
    });
}

void InfluxDBClient::write_lines(const std::string& lines) const {
    detail::call([&] { impl_->box->write_lines(lines); });
}

std::string InfluxDBClient::encode(const Point& point) const {
    return std::string(detail::call([&] { return impl_->box->encode(to_bridge(point)); }));
}

nlohmann::json InfluxDBClient::query(const std::string& influxql, const std::string& epoch) const {
    return detail::parse_json(detail::call([&] { return impl_->box->query(influxql, epoch); }));
}

std::string InfluxDBClient::query_flux(const std::string& flux) const {
    return std::string(detail::call([&] { return impl_->box->query_flux(flux); }));
}

void InfluxDBClient::create_database() const {
    detail::call([&] { impl_->box->create_database(); });
}

void InfluxDBClient::create_bucket(std::uint64_t retention_seconds) const {
    detail::call([&] { impl_->box->create_bucket(retention_seconds); });
}

void InfluxDBClient::setup_retention(const nlohmann::json& options) const {
    const std::string opts = options_text(options);
    detail::call([&] { impl_->box->setup_retention(opts); });
}

// ---------------------------------------------------------------------------- MetricsWriter

MetricsWriter::MetricsWriter(const InfluxDBClient& client, const nlohmann::json& options) {
    const std::string opts = options_text(options);
    impl_ = std::make_unique<Impl>(
        Impl{detail::call([&] { return ffi::metrics_writer_new(*client.impl_->box, opts); })});
}

MetricsWriter::MetricsWriter(MetricsWriter&&) noexcept = default;
MetricsWriter& MetricsWriter::operator=(MetricsWriter&&) noexcept = default;
MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::write_point(const Point& point) {
    detail::call([&] { impl_->box->write_point(to_bridge(point)); });
}

void MetricsWriter::write_points(const std::vector<Point>& points) {
    detail::call([&] {
        auto v = to_bridge(points);
        impl_->box->write_points(slice(v));
    });
}

void MetricsWriter::write_line(const std::string& line) {
    detail::call([&] { impl_->box->write_line(line); });
}

void MetricsWriter::flush(std::chrono::milliseconds timeout) {
    detail::call([&] { impl_->box->flush(millis(timeout)); });
}

WriterStats MetricsWriter::shutdown(std::chrono::milliseconds timeout) {
    return stats_of(impl_->box->shutdown(millis(timeout)));
}

WriterStats MetricsWriter::stats() const { return stats_of(impl_->box->stats_json()); }

void MetricsWriter::on_drop(DropHandler handler) {
    std::unique_ptr<ffi::MessageObserver> observer;
    if (handler) {
        observer = std::make_unique<ffi::MessageObserver>(
            [handler = std::move(handler)](const std::string& reason, const std::string& payload) {
                const nlohmann::json j = nlohmann::json::parse(payload);
                handler(DropEvent{reason, j.at("points").get<std::uint64_t>(), j.at("message").get<std::string>()});
            });
    }
    impl_->box->set_drop_observer(std::move(observer));
}

// ---------------------------------------------------------------------------- MetricsCollector

MetricsCollector::MetricsCollector() : impl_(std::make_unique<Impl>(Impl{ffi::metrics_collector_new()})) {}
MetricsCollector::MetricsCollector(MetricsCollector&&) noexcept = default;
MetricsCollector& MetricsCollector::operator=(MetricsCollector&&) noexcept = default;
MetricsCollector::~MetricsCollector() = default;

void MetricsCollector::add_system(const std::string& disk_path) {
    detail::call([&] { impl_->box->add_system(disk_path); });
}

void MetricsCollector::add_database(database::DatabaseManager& db) {
    impl_->box->add_database(detail::Access::db(db));
}

void MetricsCollector::add_cache(cache::RedisClient& redis, const std::string& server) {
    detail::call([&] { impl_->box->add_cache(detail::Access::redis(redis), server); });
}

void MetricsCollector::update_stream(const StreamMetrics& m) {
    detail::call([&] {
        impl_->box->update_stream(ffi::MetricsStreamState{rust::String(m.stream_id), m.viewers, m.bitrate_kbps, m.fps,
                                                          m.width, m.height, m.duration_seconds, m.bytes_sent});
    });
}

bool MetricsCollector::remove_stream(const std::string& stream_id) {
    return detail::call([&] { return impl_->box->remove_stream(stream_id); });
}

void MetricsCollector::on_failure(FailureHandler handler) {
    std::unique_ptr<ffi::MessageObserver> observer;
    if (handler) {
        observer = std::make_unique<ffi::MessageObserver>(
            [handler = std::move(handler)](const std::string& collector, const std::string& message) {
                handler(collector, message);
            });
    }
    impl_->box->set_failure_observer(std::move(observer));
}

nlohmann::json MetricsCollector::collect_once() { return detail::parse_json(impl_->box->collect_once_json()); }

void MetricsCollector::start(MetricsWriter& writer, std::chrono::milliseconds interval) {
    detail::call([&] { impl_->box->start(*writer.impl_->box, millis(interval)); });
}

void MetricsCollector::stop() { impl_->box->stop(); }

nlohmann::json MetricsCollector::stats() const { return detail::parse_json(impl_->box->stats_json()); }

// ---------------------------------------------------------------------------- MetricsReporter

MetricsReporter::MetricsReporter() : impl_(std::make_unique<Impl>(Impl{ffi::metrics_reporter_without_client()})) {}
MetricsReporter::MetricsReporter(const InfluxDBClient& client)
    : impl_(std::make_unique<Impl>(Impl{ffi::metrics_reporter_new(*client.impl_->box)})) {}
MetricsReporter::MetricsReporter(MetricsReporter&&) noexcept = default;
MetricsReporter& MetricsReporter::operator=(MetricsReporter&&) noexcept = default;
MetricsReporter::~MetricsReporter() = default;

void MetricsReporter::attach(const MetricsWriter* writer, database::DatabaseManager* db,
                             const MetricsCollector* collector) {
    impl_->box->detach_all();
    if (writer != nullptr) impl_->box->attach_writer(*writer->impl_->box);
    if (db != nullptr) impl_->box->attach_db(detail::Access::db(*db));
    if (collector != nullptr) impl_->box->attach_collector(*collector->impl_->box);
}

std::string MetricsReporter::prometheus_text() const {
    return std::string(detail::call([&] { return impl_->box->prometheus_text(); }));
}

nlohmann::json MetricsReporter::json_export() const { return detail::parse_json(impl_->box->json_export()); }

std::string MetricsReporter::serve(const std::string& addr) {
    return std::string(detail::call([&] { return impl_->box->serve(addr); }));
}

void MetricsReporter::stop_serving() { impl_->box->stop_serving(); }

nlohmann::json MetricsReporter::stream_dashboard(const std::string& stream_id, std::int64_t start_ns,
                                                 std::int64_t end_ns, const std::string& interval) const {
    return detail::parse_json(
        detail::call([&] { return impl_->box->stream_dashboard(stream_id, start_ns, end_ns, interval); }));
}

nlohmann::json MetricsReporter::percentiles(const std::string& measurement, const std::string& field,
                                            const nlohmann::json& tags, std::int64_t start_ns,
                                            std::int64_t end_ns) const {
    const std::string t = options_text(tags);
    return detail::parse_json(
        detail::call([&] { return impl_->box->percentiles(measurement, field, t, start_ns, end_ns); }));
}

nlohmann::json MetricsReporter::percentiles_of(const std::vector<double>& values) {
    return detail::parse_json(detail::call([&] {
        return ffi::metrics_percentiles_of(rust::Slice<const double>(values.data(), values.size()));
    }));
}

void MetricsReporter::add_rule(const nlohmann::json& rule) {
    if (!rule.is_object()) Error::raise(RSDB_ERR_JSON, "an alert rule must be a JSON object");
    const std::string text = detail::dump_json(rule);
    detail::call([&] { impl_->box->add_rule(text); });
}

void MetricsReporter::on_alert(AlertHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
    impl_->box->on_alert(std::make_unique<ffi::MessageObserver>(
        [handler = std::move(handler)](const std::string&, const std::string& payload) {
            handler(nlohmann::json::parse(payload));
        }));
}

nlohmann::json MetricsReporter::check(const nlohmann::json& values) {
    if (!values.is_object()) Error::raise(RSDB_ERR_JSON, "values must be a JSON object of numbers");
    const std::string text = detail::dump_json(values);
    return detail::parse_json(detail::call([&] { return impl_->box->check(text); }));
}

}  // namespace metrics
}  // namespace rootstream
