// The C++ face of the time-series metrics: rootstream::metrics::InfluxDBClient, MetricsWriter,
// MetricsCollector and MetricsReporter against the stack's InfluxDB 1.6 and VictoriaMetrics:
// points read back exactly (escaping cases included), drop accounting with a too-small buffer,
// InfluxDB stopped and started again with no point lost, bad input as the matching exception,
// the exports (checked by promtool when it is on PATH), the /metrics endpoint, collectors and
// alerts through std::function handlers. The behaviour itself is specified by the cargo tests.
#include "cpp_api_util.h"
#include "stack_env.h"

#include "rootstream/rootstream_db.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::cache::RedisClient;
using rootstream::database::DatabaseManager;
using rootstream::metrics::DropEvent;
using rootstream::metrics::InfluxDBClient;
using rootstream::metrics::MetricsCollector;
using rootstream::metrics::MetricsReporter;
using rootstream::metrics::MetricsWriter;
using rootstream::metrics::Point;
using rootstream::metrics::StreamMetrics;
using rsdb_test::cppapi::ThrowsCode;

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class CppMetrics : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        influx_url_ = rsdb_test::env_value("ROOTSTREAM_INFLUX_URL");
        ASSERT_FALSE(influx_url_.empty()) << "ROOTSTREAM_INFLUX_URL is not set: run inside scripts/stack.sh run";
        database_ = "cppm_" + rsdb_test::unique_suffix();
        client_ = std::make_unique<InfluxDBClient>(InfluxDBClient::v1(influx_url_, database_));
        client_->create_database();
    }

    void TearDown() override {
        if (client_) {
            try {
                client_->query("DROP DATABASE \"" + database_ + "\"");
            } catch (...) {
            }
        }
        client_.reset();
        rsdb_test::StackTest::TearDown();
    }

    json rows(const std::string& q) {
        json v = client_->query(q, "ns");
        json out = json::array();
        const json& series = v["results"][0]["series"];
        if (!series.is_array()) return out;
        for (const auto& s : series) {
            // A series without rows (SHOW CONTINUOUS QUERIES lists every database, also those
            // without any) has no "values": const operator[] on a missing key is undefined.
            if (!s.contains("values")) continue;
            for (const auto& vals : s["values"]) {
                json r;
                for (size_t i = 0; i < s["columns"].size(); ++i) r[s["columns"][i].get<std::string>()] = vals[i];
                out.push_back(r);
            }
        }
        return out;
    }

    int64_t count_of(const std::string& measurement, const std::string& field) {
        json r = rows("SELECT count(\"" + field + "\") FROM \"" + measurement + "\"");
        return r.empty() ? 0 : r[0]["count"].get<int64_t>();
    }

    std::string influx_url_;
    std::string database_;
    std::unique_ptr<InfluxDBClient> client_;
};

TEST_F(CppMetrics, points_with_every_escaping_case_and_field_type_read_back_unchanged) {
    const int64_t ts = now_ns() - 60'000'000'000;
    client_->write_point(Point("cpu load,zone=eu \"x\"")
                             .tag("host name", "a=b,c d")
                             .tag("tag\"q", "v\\al")
                             .field("f=1 2", 0.25)
                             .field("count,all", int64_t{-42})
                             .field("unsigned", uint64_t{7})
                             .field("ok", true)
                             .field("text", "say \"hi\" \\ there, a=b")
                             .timestamp(ts));
    json r = rows("SELECT * FROM \"cpu load,zone=eu \\\"x\\\"\"");
    ASSERT_EQ(r.size(), 1u) << r.dump();
    EXPECT_EQ(r[0]["time"], ts);
    EXPECT_EQ(r[0]["host name"], "a=b,c d");
    EXPECT_EQ(r[0]["tag\"q"], "v\\al");
    EXPECT_EQ(r[0]["f=1 2"], 0.25);
    EXPECT_EQ(r[0]["count,all"], -42);
    EXPECT_EQ(r[0]["unsigned"], 7);
    EXPECT_EQ(r[0]["ok"], true);
    EXPECT_EQ(r[0]["text"], "say \"hi\" \\ there, a=b");

    // Prepared lines through the writer, raw lines through the client, a batch.
    MetricsWriter w(*client_, {{"flush_interval_ms", 100}, {"log_drops", false}});
    const std::string line = client_->encode(Point("prepared").tag("host name", "a=b").field("n", 1).timestamp(ts));
    EXPECT_EQ(line, "prepared,host\\ name=a\\=b n=1i " + std::to_string(ts));
    w.write_line(line);
    std::vector<Point> batch;
    for (int i = 0; i < 300; ++i) batch.push_back(Point("batch").field("seq", i).timestamp(ts + i));
    w.write_points(batch);
    w.flush(10s);
    EXPECT_EQ(count_of("prepared", "n"), 1);
    EXPECT_EQ(count_of("batch", "seq"), 300);
    client_->write_lines("raw v=1i 1000000000\nraw v=2i 2000000000");
    EXPECT_EQ(count_of("raw", "v"), 2);
    EXPECT_TRUE(ThrowsCode([&] { client_->write_lines("bad line without fields"); }, RSDB_ERR_QUERY));
    const auto s = w.shutdown(1s);
    EXPECT_EQ(s.delivered, 301u);
    EXPECT_EQ(s.dropped(), 0u);
    EXPECT_TRUE(ThrowsCode([&] { w.write_point(Point("batch").field("seq", 1)); }, RSDB_ERR_STATE, "shut down"));
}

TEST_F(CppMetrics, a_too_small_buffer_drops_exactly_the_oldest_and_reports_every_drop) {
    InfluxDBClient dead = InfluxDBClient::v1("http://127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port()),
                                             "nowhere", {{"timeout_ms", 500}});
    std::mutex m;
    std::map<std::string, uint64_t> dropped;
    std::atomic<int> calls{0};
    auto w = std::make_unique<MetricsWriter>(dead, json{{"batch_size", 10},
                                                        {"max_buffer_points", 100},
                                                        {"retry_initial_ms", 60000},
                                                        {"retry_max_interval_ms", 60000},
                                                        {"log_drops", false}});
    w->on_drop([&](const DropEvent& e) {
        std::lock_guard<std::mutex> g(m);
        dropped[e.reason] += e.points;
        calls.fetch_add(1);
    });
    for (int i = 0; i < 1000; ++i) w->write_point(Point("small").field("seq", i).timestamp(1000 + i));
    auto s = w->stats();
    EXPECT_EQ(s.accepted, 1000u);
    EXPECT_EQ(s.dropped_buffer_full, 900u);
    EXPECT_EQ(s.buffered_points, 100u);
    EXPECT_TRUE(ThrowsCode([&] { w->flush(300ms); }, RSDB_ERR_TIMEOUT, "still buffered"));
    {
        std::lock_guard<std::mutex> g(m);
        EXPECT_EQ(dropped["buffer_full"], 900u);
    }
    const auto fin = w->shutdown(200ms);
    EXPECT_EQ(fin.dropped_shutdown, 100u);
    EXPECT_EQ(fin.dropped(), 1000u);
    {
        std::lock_guard<std::mutex> g(m);
        EXPECT_EQ(dropped["shutdown"], 100u);
    }
    const int before = calls.load();
    std::this_thread::sleep_for(300ms);
    w.reset();
    EXPECT_EQ(calls.load(), before);
}

TEST_F(CppMetrics, influxdb_stopped_and_started_again_loses_no_point) {
    MetricsWriter w(*client_, {{"batch_size", 500},
                               {"flush_interval_ms", 100},
                               {"retry_initial_ms", 200},
                               {"retry_max_interval_ms", 1000},
                               {"log_drops", false}});
    std::atomic<uint64_t> dropped{0};
    w.on_drop([&](const DropEvent& e) { dropped += e.points; });
    const int64_t t0 = now_ns() - 7'200'000'000'000;
    ASSERT_TRUE(rsdb_test::stop_influx(stack()));
    for (int i = 0; i < 5000; ++i) w.write_point(Point("outage").field("seq", i).timestamp(t0 + i));
    const bool retried = rsdb_test::wait_for([&] { return w.stats().retries >= 2; }, 20s);
    ASSERT_TRUE(rsdb_test::start_influx(stack()));
    ASSERT_TRUE(retried) << "the writer never retried";
    w.flush(60s);
    const auto s = w.stats();
    EXPECT_EQ(s.delivered, 5000u);
    EXPECT_EQ(s.dropped(), 0u);
    EXPECT_EQ(dropped.load(), 0u);
    EXPECT_EQ(count_of("outage", "seq"), 5000);
}

TEST_F(CppMetrics, v2_writes_reach_victoriametrics) {
    const std::string vm = rsdb_test::env_value("ROOTSTREAM_VM_URL");
    ASSERT_FALSE(vm.empty()) << "ROOTSTREAM_VM_URL is not set (run the stack with VictoriaMetrics)";
    InfluxDBClient v2 = InfluxDBClient::v2(vm, "org", "bucket", std::nullopt, {{"precision", "ms"}});
    const std::string m = "cppm_v2_" + rsdb_test::unique_suffix();
    const int64_t ts_ms = now_ns() / 1'000'000 - 60'000;
    MetricsWriter w(v2, {{"flush_interval_ms", 100}, {"log_drops", false}});
    w.write_point(Point(m).tag("host", "a b,c=d").field("load", 1.5).timestamp(ts_ms * 1'000'000));
    w.write_point(Point(m).tag("host", "a b,c=d").field("load", 2.5).timestamp((ts_ms + 1000) * 1'000'000));
    w.flush(10s);
    const int port = rsdb_test::url_port(vm);
    const std::string path = "/api/v1/export?match[]=%7B__name__%3D%22" + m + "_load%22%7D";
    std::string body;
    ASSERT_TRUE(rsdb_test::wait_for(
        [&] {
            rsdb_test::http_get(port, "/internal/force_flush");
            auto r = rsdb_test::http_get(port, path);
            body = r.second;
            return r.first == 200 && body.find("2.5") != std::string::npos;
        },
        20s))
        << body;
    json j = json::parse(body.substr(0, body.find('\n')));
    EXPECT_EQ(j["metric"]["host"], "a b,c=d");
    EXPECT_EQ(j["values"], json::array({1.5, 2.5}));
    EXPECT_EQ(j["timestamps"], json::array({ts_ms, ts_ms + 1000}));
}

TEST_F(CppMetrics, bad_input_throws_the_matching_exception_and_nothing_is_sent) {
    MetricsWriter w(*client_, {{"flush_interval_ms", 100}, {"log_drops", false}});
    const std::string bad_utf8 = "\xff\xfe";
    struct Case {
        const char* what;
        Point p;
        int code;
    };
    const std::vector<Case> cases = {
        {"empty measurement", Point("").field("v", 1.0), RSDB_ERR_INVALID_ARGUMENT},
        {"newline in measurement", Point("a\nb").field("v", 1.0), RSDB_ERR_INVALID_ARGUMENT},
        {"invalid UTF-8 measurement", Point(bad_utf8).field("v", 1.0), RSDB_ERR_INVALID_UTF8},
        {"NaN", Point("badin").field("v", std::numeric_limits<double>::quiet_NaN()), RSDB_ERR_INVALID_ARGUMENT},
        {"infinity", Point("badin").field("v", std::numeric_limits<double>::infinity()), RSDB_ERR_INVALID_ARGUMENT},
        {"empty field set", Point("badin"), RSDB_ERR_INVALID_ARGUMENT},
        {"empty field name", Point("badin").field("", 1.0), RSDB_ERR_INVALID_ARGUMENT},
        {"invalid UTF-8 field name", Point("badin").field(bad_utf8, 1.0), RSDB_ERR_INVALID_UTF8},
        {"invalid UTF-8 string value", Point("badin").field("v", bad_utf8), RSDB_ERR_INVALID_UTF8},
        {"invalid UTF-8 tag", Point("badin").tag("k", bad_utf8).field("v", 1.0), RSDB_ERR_INVALID_UTF8},
        {"empty tag key", Point("badin").tag("", "v").field("v", 1.0), RSDB_ERR_INVALID_ARGUMENT},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        EXPECT_TRUE(ThrowsCode([&] { client_->write_point(c.p); }, c.code));
        EXPECT_TRUE(ThrowsCode([&] { w.write_point(c.p); }, c.code));
        EXPECT_TRUE(ThrowsCode([&] { (void)client_->encode(c.p); }, c.code));
        const std::vector<Point> pair = {Point("badin").field("v", 1.0), c.p};
        EXPECT_TRUE(ThrowsCode([&] { client_->write_points(pair); }, c.code));
        EXPECT_TRUE(ThrowsCode([&] { w.write_points(pair); }, c.code));
    }
    EXPECT_TRUE(ThrowsCode([&] { w.write_line(""); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { w.write_line("a v=1\nb v=2"); }, RSDB_ERR_INVALID_ARGUMENT, "newline"));
    EXPECT_TRUE(ThrowsCode([&] { w.write_line(bad_utf8); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { MetricsWriter x(*client_, {{"batchsize", 1}}); }, RSDB_ERR_INVALID_ARGUMENT, "unknown"));
    EXPECT_TRUE(ThrowsCode([&] { MetricsWriter x(*client_, {{"senders", 0}}); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { MetricsWriter x(*client_, json::array({1})); }, RSDB_ERR_JSON));
    EXPECT_TRUE(ThrowsCode([&] { InfluxDBClient::v1("ftp://x", "db"); }, RSDB_ERR_CONFIG));
    EXPECT_TRUE(ThrowsCode([&] { InfluxDBClient::v1(influx_url_, "d", {{"precision", "h"}}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { client_->setup_retention({{"raw_duration", "1d; DROP"}}); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { client_->query("SELEKT nothing"); }, RSDB_ERR_QUERY));
    EXPECT_TRUE(ThrowsCode([&] { InfluxDBClient::from_config(Config()); }, RSDB_ERR_CONFIG, "influx_url"));
    w.flush(5s);
    EXPECT_EQ(w.stats().accepted, 0u);
    EXPECT_EQ(count_of("badin", "v"), 0);
}

TEST_F(CppMetrics, collectors_reporter_exports_endpoint_and_alerts) {
    Config config;
    config.set("database_url", db_url()).set("redis_url", redis_url());
    DatabaseManager db(config);
    RedisClient redis(config);
    client_->setup_retention();
    MetricsCollector collector;
    collector.add_system();
    collector.add_database(db);
    collector.add_cache(redis, "main");
    const std::string stream = "s-" + rsdb_test::unique_suffix();
    collector.update_stream(StreamMetrics{stream, 12, 4500.0, 60.0, 1920, 1080, 30.0, 1'000'000});
    json round = collector.collect_once();
    std::set<std::string> measurements;
    for (const auto& p : round["points"]) measurements.insert(p["measurement"].get<std::string>());
    EXPECT_TRUE(measurements.count("stream") && measurements.count("system") && measurements.count("cache"))
        << round.dump();
    EXPECT_TRUE(round["failures"].empty()) << round.dump();

    MetricsWriter w(*client_, {{"flush_interval_ms", 100}, {"log_drops", false}});
    const int64_t t0 = (now_ns() / 1'000'000'000 - 3600) * 1'000'000'000;
    for (int i = 1; i <= 100; ++i) {
        w.write_point(Point("stream")
                          .tag("stream_id", stream)
                          .field("fps", double(i))
                          .field("viewers", i)
                          .field("bitrate_kbps", 1000.0)
                          .field("bytes_sent", i * 10)
                          .timestamp(t0 + int64_t(i) * 1'000'000'000));
    }
    collector.start(w, 100ms);
    EXPECT_TRUE(ThrowsCode([&] { collector.start(w, 100ms); }, RSDB_ERR_STATE));
    std::this_thread::sleep_for(350ms);
    collector.stop();
    w.flush(10s);
    for (const auto& s : collector.stats()) EXPECT_GE(s["runs_ok"].get<int>(), 2) << s.dump();
    EXPECT_TRUE(collector.remove_stream(stream));
    EXPECT_FALSE(collector.remove_stream(stream));

    MetricsReporter reporter(*client_);
    json d = reporter.stream_dashboard(stream, t0, t0 + 101'000'000'000LL, "50s");
    ASSERT_GE(d.size(), 2u) << d.dump();
    json pc = reporter.percentiles("stream", "fps", {{"stream_id", stream}}, t0, t0 + 101'000'000'000LL);
    EXPECT_EQ(pc["count"], 100);
    EXPECT_EQ(pc["p50"], 50.0);
    EXPECT_EQ(pc["p99"], 99.0);
    EXPECT_EQ(MetricsReporter::percentiles_of({3.0, 1.0, 2.0})["p50"], 2.0);
    EXPECT_TRUE(ThrowsCode([] { MetricsReporter::percentiles_of({}); }, RSDB_ERR_NOT_FOUND));

    reporter.attach(&w, &db, &collector);
    const std::string text = reporter.prometheus_text();
    for (const char* name : {"rootstream_metrics_points_dropped_total", "rootstream_db_pool_connections",
                             "rootstream_collector_runs_total", "rootstream_sessions_total",
                             "rootstream_mfa_failures_total", "rootstream_backups_total", "rootstream_cache_gets_total"}) {
        EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name << "\n" << text;
    }
    if (rsdb_test::on_path("promtool")) {
        const std::string file = "/tmp/rsdb-gt-cppprom-" + rsdb_test::unique_suffix() + ".txt";
        {
            std::ofstream f(file);
            f << text;
        }
        std::string output;
        const int rc = rsdb_test::run_with_stdin({"promtool", "check", "metrics"}, file, &output);
        std::remove(file.c_str());
        EXPECT_EQ(rc, 0) << output << "\n" << text;
    } else {
        std::printf("promtool is not on PATH: the Prometheus text was not checked by it\n");
    }
    json exported = reporter.json_export();
    EXPECT_GE(exported["rootstream_metrics_points_delivered_total"]["samples"][0]["value"].get<double>(), 100.0);

    const std::string bound = reporter.serve("127.0.0.1:0");
    EXPECT_TRUE(ThrowsCode([&] { reporter.serve("127.0.0.1:0"); }, RSDB_ERR_STATE));
    const int port = rsdb_test::url_port("http://" + bound);
    auto got = rsdb_test::http_get(port, "/metrics");
    EXPECT_EQ(got.first, 200);
    EXPECT_NE(got.second.find("rootstream_metrics_buffered_points"), std::string::npos);
    reporter.stop_serving();
    EXPECT_EQ(rsdb_test::http_get(port, "/metrics").first, 0);

    reporter.add_rule({{"name", "low fps"},
                       {"metric", "stream.fps"},
                       {"comparison", "below"},
                       {"threshold", 30},
                       {"severity", "critical"}});
    EXPECT_TRUE(ThrowsCode([&] { reporter.add_rule({{"name", "x"}}); }, RSDB_ERR_INVALID_ARGUMENT));
    std::vector<json> alerts;
    reporter.on_alert([&](const json& a) { alerts.push_back(a); });
    json fired = reporter.check({{"stream.fps", 24}, {"other", 1}});
    ASSERT_EQ(fired.size(), 1u);
    EXPECT_EQ(fired[0]["severity"], "critical");
    ASSERT_EQ(alerts.size(), 1u);
    EXPECT_EQ(alerts[0]["rule"], "low fps");
    EXPECT_TRUE(reporter.check({{"stream.fps", 60}}).empty());
    EXPECT_TRUE(ThrowsCode([&] { reporter.check({{"stream.fps", "x"}}); }, RSDB_ERR_INVALID_ARGUMENT));
    MetricsReporter bare;
    EXPECT_TRUE(ThrowsCode([&] { bare.stream_dashboard("s", 0, 1, "1m"); }, RSDB_ERR_CONFIG));
}

}  // namespace
