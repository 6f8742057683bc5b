// The C face of the time-series metrics: rsdb_metrics_* against the stack's InfluxDB 1.6 (v1
// API) and VictoriaMetrics (v2 write path), read back exactly (escaping cases included), the
// writer's drop accounting with a too-small buffer, InfluxDB stopped and started again with no
// point lost, bad input through every entry point that takes a point, the reporter's exports
// (checked by promtool when it is on PATH), the /metrics endpoint, collectors and alerts. The
// behaviour itself is specified by the cargo tests (tests/metrics*.rs).
#include "c_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
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

using namespace rsdb_test::capi;
using json = nlohmann::json;

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

rsdb_metrics_field float_field(const char* key, double v) { return {key, RSDB_METRICS_FLOAT, v, 0, 0, 0, nullptr}; }
rsdb_metrics_field int_field(const char* key, int64_t v) { return {key, RSDB_METRICS_INTEGER, 0, v, 0, 0, nullptr}; }

struct DropLog {
    std::mutex m;
    std::vector<std::pair<std::string, uint64_t>> events;
    std::atomic<int> calls{0};
    uint64_t total(const std::string& reason) {
        std::lock_guard<std::mutex> g(m);
        uint64_t n = 0;
        for (auto& e : events)
            if (e.first == reason) n += e.second;
        return n;
    }
};

void on_drop(void* user_data, const char* reason, uint64_t points, const char* message) {
    auto* log = static_cast<DropLog*>(user_data);
    EXPECT_NE(message, nullptr);
    std::lock_guard<std::mutex> g(log->m);
    log->events.emplace_back(reason, points);
    log->calls.fetch_add(1);
}

class CMetrics : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure()) return;
        influx_url_ = rsdb_test::env_value("ROOTSTREAM_INFLUX_URL");
        ASSERT_FALSE(influx_url_.empty()) << "ROOTSTREAM_INFLUX_URL is not set: run inside scripts/stack.sh run";
        database_ = "cm_" + rsdb_test::unique_suffix();
        rsdb_metrics_client* c = nullptr;
        ASSERT_RSDB_OK(rsdb_metrics_client_new_v1(influx_url_.c_str(), database_.c_str(), nullptr, &c));
        client_.reset(c);
        ASSERT_RSDB_OK(rsdb_metrics_client_create_database(c));
    }

    void TearDown() override {
        if (client_) {
            OutString out;
            rsdb_metrics_client_query(client_.get(), ("DROP DATABASE \"" + database_ + "\"").c_str(), nullptr,
                                      out.out());
        }
        client_.reset();
        StackTest::TearDown();
    }

    json rows(const std::string& q) {
        OutString out;
        json v = RSDB_JSON(rsdb_metrics_client_query(client_.get(), q.c_str(), "ns", out.out()), out);
        const json& series = v["results"][0]["series"];
        json out_rows = json::array();
        if (!series.is_array()) return out_rows;
        for (const auto& s : series) {
            // A series without rows (SHOW CONTINUOUS QUERIES lists every database, also those
            // without any) has no "values": const operator[] on a missing key is undefined.
            if (!s.contains("values")) continue;
            for (const auto& vals : s["values"]) {
                json r;
                for (size_t i = 0; i < s["columns"].size(); ++i) r[s["columns"][i].get<std::string>()] = vals[i];
                out_rows.push_back(r);
            }
        }
        return out_rows;
    }

    int64_t count_of(const std::string& measurement, const std::string& field) {
        json r = rows("SELECT count(\"" + field + "\") FROM \"" + measurement + "\"");
        return r.empty() ? 0 : r[0]["count"].get<int64_t>();
    }

    MetricsWriterPtr writer(const std::string& options, rsdb_metrics_client* c = nullptr) {
        rsdb_metrics_writer* w = nullptr;
        check(rsdb_metrics_writer_new(c != nullptr ? c : client_.get(), options.c_str(), &w), "rsdb_metrics_writer_new");
        return MetricsWriterPtr(w);
    }

    std::string influx_url_;
    std::string database_;
    MetricsClientPtr client_;
};

TEST_F(CMetrics, points_with_every_escaping_case_and_field_type_read_back_unchanged) {
    const char* measurement = "cpu load,zone=eu \"x\"";
    rsdb_metrics_tag tags[] = {{"host name", "a=b,c d"}, {"tag\"q", "v\\al"}};
    rsdb_metrics_field fields[] = {
        float_field("f=1 2", 0.25),
        int_field("count,all", -42),
        {"unsigned", RSDB_METRICS_UNSIGNED, 0, 0, 7, 0, nullptr},
        {"ok", RSDB_METRICS_BOOL, 0, 0, 0, 1, nullptr},
        {"text", RSDB_METRICS_STRING, 0, 0, 0, 0, "say \"hi\" \\ there, a=b"},
    };
    const int64_t ts = now_ns() - 60'000'000'000;
    rsdb_metrics_point p{measurement, tags, 2, fields, 5, 1, ts};
    ASSERT_RSDB_OK(rsdb_metrics_client_write_point(client_.get(), &p));

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

    // The prepared-line path: the encoded line through the writer arrives the same way.
    rsdb_metrics_field f2[] = {int_field("n", 1)};
    rsdb_metrics_point p2{"prepared", tags, 1, f2, 1, 1, ts};
    OutString line;
    ASSERT_RSDB_OK(rsdb_metrics_client_encode(client_.get(), &p2, line.out()));
    EXPECT_EQ(line.str(), "prepared,host\\ name=a\\=b\\,c\\ d n=1i " + std::to_string(ts));
    auto w = writer("{\"flush_interval_ms\": 100, \"log_drops\": false}");
    ASSERT_RSDB_OK(rsdb_metrics_writer_write_line(w.get(), line.str().c_str()));
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 10000));
    EXPECT_EQ(count_of("prepared", "n"), 1);
    // Raw lines straight through the client.
    ASSERT_RSDB_OK(rsdb_metrics_client_write_lines(client_.get(), "raw v=1i 1000000000\nraw v=2i 2000000000"));
    EXPECT_EQ(count_of("raw", "v"), 2);
    // A line the server refuses is a query error (nothing half-written).
    EXPECT_TRUE(FailsCleanly(rsdb_metrics_client_write_lines(client_.get(), "bad line without fields"),
                             {RSDB_ERR_QUERY}));
}

TEST_F(CMetrics, writer_batches_and_accounts_for_every_point) {
    auto w = writer("{\"batch_size\": 100, \"flush_interval_ms\": 200, \"senders\": 2, \"log_drops\": false}");
    const int64_t t0 = now_ns() - 3'600'000'000'000;
    std::vector<rsdb_metrics_field> fields(1000);
    std::vector<rsdb_metrics_point> batch(1000);
    rsdb_metrics_tag tag{"run", "c"};
    for (int i = 0; i < 1000; ++i) {
        fields[i] = int_field("seq", i);
        batch[i] = {"batch", &tag, 1, &fields[i], 1, 1, t0 + i};
    }
    ASSERT_RSDB_OK(rsdb_metrics_writer_write_points(w.get(), batch.data(), batch.size()));
    for (int i = 1000; i < 1500; ++i) {
        rsdb_metrics_field f = int_field("seq", i);
        rsdb_metrics_point p{"batch", &tag, 1, &f, 1, 1, t0 + i};
        ASSERT_RSDB_OK(rsdb_metrics_writer_write_point(w.get(), &p));
    }
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 30000));
    rsdb_metrics_writer_stats s{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_get_stats(w.get(), &s));
    EXPECT_EQ(s.accepted, 1500u);
    EXPECT_EQ(s.delivered, 1500u);
    EXPECT_EQ(s.dropped_buffer_full + s.dropped_rejected + s.dropped_retries_exhausted + s.dropped_shutdown, 0u);
    EXPECT_GE(s.batches, 15u);
    EXPECT_EQ(s.buffered_points, 0u);
    OutString sj;
    json j = RSDB_JSON(rsdb_metrics_writer_stats_json(w.get(), sj.out()), sj);
    EXPECT_EQ(j["delivered"], 1500);
    EXPECT_EQ(j["dropped_total"], 0);
    EXPECT_EQ(count_of("batch", "seq"), 1500);
    rsdb_metrics_writer_stats fin{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_shutdown(w.get(), 1000, &fin));
    EXPECT_EQ(fin.delivered, 1500u);
    // After shutdown nothing more is accepted.
    rsdb_metrics_field f = int_field("seq", 0);
    rsdb_metrics_point p{"batch", nullptr, 0, &f, 1, 0, 0};
    EXPECT_TRUE(Fails(rsdb_metrics_writer_write_point(w.get(), &p), RSDB_ERR_STATE, "shut down"));
}

TEST_F(CMetrics, a_too_small_buffer_drops_exactly_the_oldest_and_reports_every_drop) {
    // A server that is not there: every request fails, the writer keeps retrying slowly.
    const std::string dead = "http://127.0.0.1:" + std::to_string(rsdb_test::unused_tcp_port());
    rsdb_metrics_client* c = nullptr;
    ASSERT_RSDB_OK(rsdb_metrics_client_new_v1(dead.c_str(), "nowhere", "{\"timeout_ms\": 500}", &c));
    MetricsClientPtr dead_client(c);
    auto w = writer(
        "{\"batch_size\": 10, \"max_buffer_points\": 100, \"retry_initial_ms\": 60000, \"retry_max_interval_ms\": 60000,"
        " \"log_drops\": false}",
        c);
    DropLog log;
    ASSERT_RSDB_OK(rsdb_metrics_writer_set_drop_callback(w.get(), on_drop, &log));
    for (int i = 0; i < 1000; ++i) {
        rsdb_metrics_field f = int_field("seq", i);
        rsdb_metrics_point p{"small", nullptr, 0, &f, 1, 1, 1000 + i};
        ASSERT_RSDB_OK(rsdb_metrics_writer_write_point(w.get(), &p));
    }
    rsdb_metrics_writer_stats s{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_get_stats(w.get(), &s));
    EXPECT_EQ(s.accepted, 1000u);
    EXPECT_EQ(s.dropped_buffer_full, 900u);
    EXPECT_EQ(s.buffered_points, 100u);
    EXPECT_EQ(s.delivered, 0u);
    // The flush cannot finish (the server is down) and says so within its limit.
    const auto t = std::chrono::steady_clock::now();
    EXPECT_TRUE(Fails(rsdb_metrics_writer_flush(w.get(), 300), RSDB_ERR_TIMEOUT, "still buffered"));
    EXPECT_LT(std::chrono::steady_clock::now() - t, std::chrono::seconds(3));
    EXPECT_EQ(log.total("buffer_full"), 900u);
    rsdb_metrics_writer_stats fin{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_shutdown(w.get(), 200, &fin));
    EXPECT_EQ(fin.dropped_shutdown, 100u);
    EXPECT_EQ(fin.dropped_buffer_full + fin.dropped_shutdown, 1000u);
    EXPECT_EQ(log.total("shutdown"), 100u);
    // Never called after the shutdown returned.
    const int calls = log.calls.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    w.reset();
    EXPECT_EQ(log.calls.load(), calls);
}

TEST_F(CMetrics, influxdb_stopped_and_started_again_loses_no_point) {
    auto w = writer(
        "{\"batch_size\": 500, \"flush_interval_ms\": 100, \"retry_initial_ms\": 200, \"retry_max_interval_ms\": 1000,"
        " \"log_drops\": false}");
    DropLog log;
    ASSERT_RSDB_OK(rsdb_metrics_writer_set_drop_callback(w.get(), on_drop, &log));
    const int64_t t0 = now_ns() - 7'200'000'000'000;
    ASSERT_TRUE(rsdb_test::stop_influx(stack()));
    bool restarted = false;
    try {
        for (int i = 0; i < 5000; ++i) {
            rsdb_metrics_field f = int_field("seq", i);
            rsdb_metrics_point p{"outage", nullptr, 0, &f, 1, 1, t0 + i};
            ASSERT_RSDB_OK(rsdb_metrics_writer_write_point(w.get(), &p));
        }
        ASSERT_TRUE(rsdb_test::wait_for(
            [&] {
                rsdb_metrics_writer_stats s{};
                rsdb_metrics_writer_get_stats(w.get(), &s);
                return s.retries >= 2;
            },
            std::chrono::seconds(20)))
            << "the writer never retried";
        ASSERT_TRUE(rsdb_test::start_influx(stack()));
        restarted = true;
    } catch (...) {
        if (!restarted) rsdb_test::start_influx(stack());
        throw;
    }
    if (!restarted) {
        rsdb_test::start_influx(stack());
        return;
    }
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 60000));
    rsdb_metrics_writer_stats s{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_get_stats(w.get(), &s));
    EXPECT_EQ(s.delivered, 5000u);
    EXPECT_EQ(s.dropped_buffer_full + s.dropped_rejected + s.dropped_retries_exhausted + s.dropped_shutdown, 0u);
    EXPECT_GE(s.retries, 2u);
    EXPECT_EQ(log.calls.load(), 0);
    EXPECT_EQ(count_of("outage", "seq"), 5000);
}

TEST_F(CMetrics, v2_writes_reach_victoriametrics) {
    const std::string vm = rsdb_test::env_value("ROOTSTREAM_VM_URL");
    ASSERT_FALSE(vm.empty()) << "ROOTSTREAM_VM_URL is not set (run the stack with VictoriaMetrics)";
    rsdb_metrics_client* c = nullptr;
    ASSERT_RSDB_OK(rsdb_metrics_client_new_v2(vm.c_str(), "org", "bucket", nullptr, "{\"precision\": \"ms\"}", &c));
    MetricsClientPtr v2(c);
    const std::string m = "cm_v2_" + rsdb_test::unique_suffix();
    const int64_t ts_ms = now_ns() / 1'000'000 - 60'000;
    rsdb_metrics_tag tag{"host", "a b,c=d"};
    rsdb_metrics_field fields[] = {float_field("load", 1.5), {"big", RSDB_METRICS_UNSIGNED, 0, 0, 123456, 0, nullptr}};
    rsdb_metrics_point p{m.c_str(), &tag, 1, fields, 2, 1, ts_ms * 1'000'000};
    ASSERT_RSDB_OK(rsdb_metrics_client_write_point(v2.get(), &p));
    auto w = writer("{\"flush_interval_ms\": 100, \"log_drops\": false}", c);
    rsdb_metrics_field f2 = float_field("load", 2.5);
    rsdb_metrics_point p2{m.c_str(), &tag, 1, &f2, 1, 1, (ts_ms + 1000) * 1'000'000};
    ASSERT_RSDB_OK(rsdb_metrics_writer_write_point(w.get(), &p2));
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 10000));

    const int port = rsdb_test::url_port(vm);
    std::string body;
    const std::string path = "/api/v1/export?match[]=%7B__name__%3D~%22" + m + "_.*%22%7D";
    ASSERT_TRUE(rsdb_test::wait_for(
        [&] {
            rsdb_test::http_get(port, "/internal/force_flush");
            auto r = rsdb_test::http_get(port, path);
            body = r.second;
            return r.first == 200 && body.find(m + "_big") != std::string::npos &&
                   body.find("2.5") != std::string::npos;
        },
        std::chrono::seconds(20)))
        << body;
    std::map<std::string, json> series;
    std::stringstream ss(body);
    std::string line;
    while (std::getline(ss, line)) {
        if (line.empty()) continue;
        json j = json::parse(line);
        series[j["metric"]["__name__"].get<std::string>()] = j;
    }
    ASSERT_EQ(series.count(m + "_load"), 1u) << body;
    EXPECT_EQ(series[m + "_load"]["metric"]["host"], "a b,c=d");
    EXPECT_EQ(series[m + "_load"]["values"], json::array({1.5, 2.5}));
    EXPECT_EQ(series[m + "_load"]["timestamps"], json::array({ts_ms, ts_ms + 1000}));
    EXPECT_EQ(series[m + "_big"]["values"], json::array({123456}));
}

TEST_F(CMetrics, bad_points_are_refused_by_every_entry_point_and_nothing_is_sent) {
    auto w = writer("{\"flush_interval_ms\": 100, \"log_drops\": false}");
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    const char bad_utf8[] = "\xff\xfe";
    rsdb_metrics_field good = float_field("v", 1.0);
    rsdb_metrics_field f_nan = float_field("v", nan);
    rsdb_metrics_field f_inf = float_field("v", -inf);
    rsdb_metrics_field f_empty_key = float_field("", 1.0);
    rsdb_metrics_field f_bad_key = float_field(bad_utf8, 1.0);
    rsdb_metrics_field f_null_key = float_field(nullptr, 1.0);
    rsdb_metrics_field f_kind{"v", 99, 0, 0, 0, 0, nullptr};
    rsdb_metrics_field f_str_null{"v", RSDB_METRICS_STRING, 0, 0, 0, 0, nullptr};
    rsdb_metrics_field f_str_bad{"v", RSDB_METRICS_STRING, 0, 0, 0, 0, bad_utf8};
    rsdb_metrics_tag t_bad{"k", bad_utf8};
    rsdb_metrics_tag t_newline{"k", "a\nb"};
    rsdb_metrics_tag t_empty{"", "v"};
    struct Case {
        const char* what;
        rsdb_metrics_point p;
        int code;
    };
    const std::vector<Case> cases = {
        {"empty measurement", {"", nullptr, 0, &good, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"newline in measurement", {"a\nb", nullptr, 0, &good, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"invalid UTF-8 measurement", {bad_utf8, nullptr, 0, &good, 1, 0, 0}, RSDB_ERR_INVALID_UTF8},
        {"NULL measurement", {nullptr, nullptr, 0, &good, 1, 0, 0}, RSDB_ERR_NULL},
        {"NaN", {"badin", nullptr, 0, &f_nan, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"infinity", {"badin", nullptr, 0, &f_inf, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"empty field set", {"badin", nullptr, 0, nullptr, 0, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"NULL fields", {"badin", nullptr, 0, nullptr, 1, 0, 0}, RSDB_ERR_NULL},
        {"empty field name", {"badin", nullptr, 0, &f_empty_key, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"invalid UTF-8 field name", {"badin", nullptr, 0, &f_bad_key, 1, 0, 0}, RSDB_ERR_INVALID_UTF8},
        {"NULL field name", {"badin", nullptr, 0, &f_null_key, 1, 0, 0}, RSDB_ERR_NULL},
        {"unknown kind", {"badin", nullptr, 0, &f_kind, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"NULL string value", {"badin", nullptr, 0, &f_str_null, 1, 0, 0}, RSDB_ERR_NULL},
        {"invalid UTF-8 string value", {"badin", nullptr, 0, &f_str_bad, 1, 0, 0}, RSDB_ERR_INVALID_UTF8},
        {"invalid UTF-8 tag value", {"badin", &t_bad, 1, &good, 1, 0, 0}, RSDB_ERR_INVALID_UTF8},
        {"newline in tag value", {"badin", &t_newline, 1, &good, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"empty tag key", {"badin", &t_empty, 1, &good, 1, 0, 0}, RSDB_ERR_INVALID_ARGUMENT},
        {"NULL tags", {"badin", nullptr, 2, &good, 1, 0, 0}, RSDB_ERR_NULL},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        EXPECT_TRUE(Fails(rsdb_metrics_client_write_point(client_.get(), &c.p), c.code));
        EXPECT_TRUE(Fails(rsdb_metrics_writer_write_point(w.get(), &c.p), c.code));
        OutString line;
        EXPECT_TRUE(Fails(rsdb_metrics_client_encode(client_.get(), &c.p, line.out()), c.code));
        EXPECT_TRUE(line.is_null());
        // In a batch with good points: nothing of the batch goes out.
        rsdb_metrics_point pair[] = {{"badin", nullptr, 0, &good, 1, 0, 0}, c.p};
        EXPECT_TRUE(Fails(rsdb_metrics_client_write_points(client_.get(), pair, 2), c.code));
        EXPECT_TRUE(Fails(rsdb_metrics_writer_write_points(w.get(), pair, 2), c.code));
    }
    EXPECT_TRUE(Fails(rsdb_metrics_client_write_point(client_.get(), nullptr), RSDB_ERR_NULL, "point"));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_write_points(w.get(), nullptr, 1), RSDB_ERR_NULL, "points"));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_write_line(w.get(), ""), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_write_line(w.get(), "a v=1\nb v=2"), RSDB_ERR_INVALID_ARGUMENT, "newline"));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_write_line(w.get(), bad_utf8), RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(Fails(rsdb_metrics_client_write_lines(client_.get(), "  "), RSDB_ERR_INVALID_ARGUMENT));
    // Bad options and constructors.
    rsdb_metrics_writer* wout = nullptr;
    EXPECT_TRUE(Fails(rsdb_metrics_writer_new(client_.get(), "{\"batchsize\": 1}", &wout), RSDB_ERR_INVALID_ARGUMENT,
                      "unknown"));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_new(client_.get(), "{\"senders\": 0}", &wout), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_metrics_writer_new(client_.get(), "not json", &wout), RSDB_ERR_JSON));
    EXPECT_EQ(wout, nullptr);
    rsdb_metrics_client* cout = nullptr;
    EXPECT_TRUE(Fails(rsdb_metrics_client_new_v1("ftp://x", "db", nullptr, &cout), RSDB_ERR_CONFIG));
    EXPECT_TRUE(Fails(rsdb_metrics_client_new_v1(influx_url_.c_str(), "", nullptr, &cout), RSDB_ERR_CONFIG));
    EXPECT_TRUE(Fails(rsdb_metrics_client_new_v1(influx_url_.c_str(), "d", "{\"precision\": \"h\"}", &cout),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(cout, nullptr);
    EXPECT_TRUE(Fails(rsdb_metrics_client_setup_retention(client_.get(), "{\"raw_duration\": \"1d; DROP\"}"),
                      RSDB_ERR_INVALID_ARGUMENT));
    // The writer accepted nothing, and the server holds no point of the bad measurement.
    rsdb_metrics_writer_stats s{};
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 5000));
    ASSERT_RSDB_OK(rsdb_metrics_writer_get_stats(w.get(), &s));
    EXPECT_EQ(s.accepted, 0u);
    EXPECT_EQ(count_of("badin", "v"), 0);
}

TEST_F(CMetrics, retention_setup_and_queries) {
    ASSERT_RSDB_OK(rsdb_metrics_client_ping(client_.get()));
    ASSERT_RSDB_OK(rsdb_metrics_client_setup_retention(client_.get(), nullptr));
    json r = rows("SHOW RETENTION POLICIES ON \"" + database_ + "\"");
    bool raw = false, down = false;
    for (const auto& p : r) {
        if (p["name"] == "raw_1d") raw = p["default"] == true && p["duration"] == "24h0m0s";
        if (p["name"] == "downsampled_30d") down = p["duration"] == "720h0m0s";
    }
    EXPECT_TRUE(raw && down) << r.dump();
    json cq = rows("SHOW CONTINUOUS QUERIES");
    EXPECT_NE(cq.dump().find("downsample_5m"), std::string::npos) << cq.dump();
    OutString out;
    EXPECT_TRUE(FailsCleanly(rsdb_metrics_client_query(client_.get(), "SELEKT nothing", nullptr, out.out()),
                             {RSDB_ERR_QUERY}));
    EXPECT_TRUE(out.is_null());
}

TEST_F(CMetrics, reporter_dashboard_percentiles_exports_endpoint_and_alerts) {
    // Stream points through the collector into the writer.
    rsdb_metrics_collector* col = nullptr;
    ASSERT_RSDB_OK(rsdb_metrics_collector_new(&col));
    MetricsCollectorPtr collector(col);
    rsdb_config* cfg = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&cfg));
    ConfigPtr config(cfg);
    ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
    ASSERT_RSDB_OK(rsdb_config_set(cfg, "redis_url", redis_url().c_str()));
    rsdb_db* db = nullptr;
    ASSERT_RSDB_OK(rsdb_db_open(cfg, &db));
    DbPtr dbp(db);
    rsdb_redis* redis = nullptr;
    ASSERT_RSDB_OK(rsdb_redis_open(cfg, &redis));
    RedisPtr redisp(redis);
    ASSERT_RSDB_OK(rsdb_metrics_collector_add_system(col, nullptr));
    ASSERT_RSDB_OK(rsdb_metrics_collector_add_database(col, db));
    ASSERT_RSDB_OK(rsdb_metrics_collector_add_cache(col, redis, "main"));
    const std::string stream = "s-" + rsdb_test::unique_suffix();
    rsdb_stream_metrics sm{stream.c_str(), 12, 4500.0, 60.0, 1920, 1080, 30.0, 1'000'000};
    ASSERT_RSDB_OK(rsdb_metrics_collector_update_stream(col, &sm));
    OutString once;
    json round = RSDB_JSON(rsdb_metrics_collector_collect_once(col, once.out()), once);
    std::set<std::string> measurements;
    for (const auto& p : round["points"]) measurements.insert(p["measurement"].get<std::string>());
    EXPECT_TRUE(measurements.count("stream") && measurements.count("system") && measurements.count("cache"))
        << round.dump();
    EXPECT_TRUE(round["failures"].empty()) << round.dump();

    auto w = writer("{\"flush_interval_ms\": 100, \"log_drops\": false}");
    // Explicit points for the dashboard: fps 1..100 over 100 seconds.
    const int64_t t0 = (now_ns() / 1'000'000'000 - 3600) * 1'000'000'000;
    for (int i = 1; i <= 100; ++i) {
        rsdb_metrics_tag tag{"stream_id", stream.c_str()};
        rsdb_metrics_field f[] = {float_field("fps", i), int_field("viewers", i), float_field("bitrate_kbps", 1000),
                                  int_field("bytes_sent", i * 10)};
        rsdb_metrics_point p{"stream", &tag, 1, f, 4, 1, t0 + int64_t(i) * 1'000'000'000};
        ASSERT_RSDB_OK(rsdb_metrics_writer_write_point(w.get(), &p));
    }
    ASSERT_RSDB_OK(rsdb_metrics_collector_start(col, w.get(), 100));
    EXPECT_TRUE(Fails(rsdb_metrics_collector_start(col, w.get(), 100), RSDB_ERR_STATE));
    std::this_thread::sleep_for(std::chrono::milliseconds(350));
    ASSERT_RSDB_OK(rsdb_metrics_collector_stop(col));
    ASSERT_RSDB_OK(rsdb_metrics_writer_flush(w.get(), 10000));
    OutString cs;
    json cstats = RSDB_JSON(rsdb_metrics_collector_stats(col, cs.out()), cs);
    ASSERT_EQ(cstats.size(), 4u) << cstats.dump();
    for (const auto& s : cstats) EXPECT_GE(s["runs_ok"].get<int>(), 2) << s.dump();
    int removed = -1;
    ASSERT_RSDB_OK(rsdb_metrics_collector_remove_stream(col, stream.c_str(), &removed));
    EXPECT_EQ(removed, 1);

    rsdb_metrics_reporter* rep = nullptr;
    ASSERT_RSDB_OK(rsdb_metrics_reporter_new(client_.get(), &rep));
    MetricsReporterPtr reporter(rep);
    OutString dash;
    json d = RSDB_JSON(rsdb_metrics_reporter_stream_dashboard(rep, stream.c_str(), t0, t0 + 101'000'000'000LL, "50s",
                                                              dash.out()),
                       dash);
    ASSERT_GE(d.size(), 2u) << d.dump();
    EXPECT_DOUBLE_EQ(d[0]["bitrate_kbps"].get<double>(), 1000.0);
    OutString pct;
    json pc = RSDB_JSON(rsdb_metrics_reporter_percentiles(rep, "stream", "fps", ("{\"stream_id\": \"" + stream + "\"}").c_str(),
                                                          t0, t0 + 101'000'000'000LL, pct.out()),
                        pct);
    EXPECT_EQ(pc["count"], 100);
    EXPECT_EQ(pc["p50"], 50.0);
    EXPECT_EQ(pc["p95"], 95.0);
    EXPECT_EQ(pc["p99"], 99.0);
    std::vector<double> values;
    for (int i = 100; i >= 1; --i) values.push_back(i);
    OutString local;
    json lp = RSDB_JSON(rsdb_metrics_percentiles_of(values.data(), values.size(), local.out()), local);
    EXPECT_EQ(lp["p95"], 95.0);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    EXPECT_TRUE(Fails(rsdb_metrics_percentiles_of(&nan, 1, local.out()), RSDB_ERR_INVALID_ARGUMENT, "NaN"));
    EXPECT_TRUE(Fails(rsdb_metrics_percentiles_of(nullptr, 0, local.out()), RSDB_ERR_NOT_FOUND));

    // Exports with the writer, the pool and the collectors.
    ASSERT_RSDB_OK(rsdb_metrics_reporter_attach(rep, w.get(), db, col));
    OutString prom;
    ASSERT_RSDB_OK(rsdb_metrics_reporter_prometheus(rep, prom.out()));
    const std::string text = prom.str();
    for (const char* name : {"rootstream_metrics_points_delivered_total", "rootstream_metrics_points_dropped_total",
                             "rootstream_metrics_buffered_points", "rootstream_db_pool_connections",
                             "rootstream_collector_runs_total", "rootstream_sessions_total",
                             "rootstream_mfa_failures_total", "rootstream_backups_total",
                             "rootstream_backup_last_success_timestamp_seconds", "rootstream_cache_gets_total"}) {
        EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name << "\n" << text;
    }
    if (rsdb_test::on_path("promtool")) {
        const std::string file = "/tmp/rsdb-gt-prom-" + rsdb_test::unique_suffix() + ".txt";
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
    OutString js;
    json exported = RSDB_JSON(rsdb_metrics_reporter_json(rep, js.out()), js);
    EXPECT_EQ(exported["rootstream_metrics_points_delivered_total"]["type"], "counter");
    EXPECT_GE(exported["rootstream_metrics_points_delivered_total"]["samples"][0]["value"].get<double>(), 100.0);

    // The /metrics endpoint on a free loopback port.
    OutString bound;
    ASSERT_RSDB_OK(rsdb_metrics_reporter_serve(rep, "127.0.0.1:0", bound.out()));
    EXPECT_TRUE(Fails(rsdb_metrics_reporter_serve(rep, "127.0.0.1:0", nullptr), RSDB_ERR_STATE));
    const int port = rsdb_test::url_port("http://" + bound.str());
    auto got = rsdb_test::http_get(port, "/metrics");
    EXPECT_EQ(got.first, 200);
    EXPECT_NE(got.second.find("rootstream_sessions_total"), std::string::npos) << got.second;
    EXPECT_EQ(rsdb_test::http_get(port, "/other").first, 404);
    ASSERT_RSDB_OK(rsdb_metrics_reporter_serve_stop(rep));
    EXPECT_EQ(rsdb_test::http_get(port, "/metrics").first, 0);

    // Threshold alerts with severity, to a C callback on this thread.
    ASSERT_RSDB_OK(rsdb_metrics_reporter_add_rule(
        rep, "{\"name\":\"low fps\",\"metric\":\"stream.fps\",\"comparison\":\"below\",\"threshold\":30,"
             "\"severity\":\"warning\"}"));
    EXPECT_TRUE(Fails(rsdb_metrics_reporter_add_rule(rep, "{\"name\":\"x\"}"), RSDB_ERR_INVALID_ARGUMENT));
    struct Alerts {
        std::vector<json> got;
        std::thread::id thread;
    } alerts;
    ASSERT_RSDB_OK(rsdb_metrics_reporter_on_alert(
        rep,
        [](void* ud, const char* alert_json) {
            auto* a = static_cast<Alerts*>(ud);
            a->got.push_back(json::parse(alert_json));
            a->thread = std::this_thread::get_id();
        },
        &alerts));
    OutString fired;
    json f = RSDB_JSON(rsdb_metrics_reporter_check(rep, "{\"stream.fps\": 24, \"other\": 1}", fired.out()), fired);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0]["severity"], "warning");
    ASSERT_EQ(alerts.got.size(), 1u);
    EXPECT_EQ(alerts.got[0]["rule"], "low fps");
    EXPECT_EQ(alerts.thread, std::this_thread::get_id());
    ASSERT_RSDB_OK(rsdb_metrics_reporter_check(rep, "{\"stream.fps\": 60}", nullptr));
    EXPECT_EQ(alerts.got.size(), 1u);
    EXPECT_TRUE(Fails(rsdb_metrics_reporter_check(rep, "{\"stream.fps\": \"x\"}", nullptr), RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(CMetrics, from_config_needs_an_influx_url) {
    rsdb_config* cfg = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&cfg));
    ConfigPtr config(cfg);
    rsdb_metrics_client* c = nullptr;
    EXPECT_TRUE(Fails(rsdb_metrics_client_from_config(cfg, &c), RSDB_ERR_CONFIG, "influx_url"));
    EXPECT_EQ(c, nullptr);
    ASSERT_RSDB_OK(rsdb_config_set(cfg, "influx_url", influx_url_.c_str()));
    ASSERT_RSDB_OK(rsdb_config_set(cfg, "influx_database", database_.c_str()));
    ASSERT_RSDB_OK(rsdb_metrics_client_from_config(cfg, &c));
    MetricsClientPtr from_cfg(c);
    rsdb_metrics_field f = int_field("n", 5);
    rsdb_metrics_point p{"fromcfg", nullptr, 0, &f, 1, 1, now_ns() - 1'000'000'000};
    ASSERT_RSDB_OK(rsdb_metrics_client_write_point(c, &p));
    EXPECT_EQ(count_of("fromcfg", "n"), 1);
}

}  // namespace
