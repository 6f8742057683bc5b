// The complete workflow through the C++ API: configure from the environment, migrate, register
// and log in a user, protect the account with TOTP MFA and log in through it, run a stream (start, viewers, stop) while a subscriber watches, read its
// event history, append to the event store with optimistic concurrency, an RAII transaction,
// cache with a TTL, two instances sharing state (a change made on one shows on the other),
// a stream's metrics written through the background writer and read back from InfluxDB, and,
// when ROOTSTREAM_REDIS_SENTINELS is set, the Redis Sentinel setup as the sentinels report it.
//
// Needs ROOTSTREAM_DATABASE_URL and ROOTSTREAM_REDIS_URL (scripts/demo.sh sets them); the
// metrics step also needs ROOTSTREAM_INFLUX_URL and is skipped, with a line saying so, without it.
#include "rootstream/rootstream_db.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <optional>
#include <vector>
#include <thread>

using namespace std::chrono_literals;
using nlohmann::json;

int main() {
    try {
        auto config = rootstream::Config::from_env();
        rootstream::database::DatabaseManager db(config);
        std::cout << "schema version " << db.migrate() << "\n";

        namespace models = rootstream::database::models;
        std::optional<models::User> user;
        try {
            user = models::User::create(db, "cpp_player", "cpp_player@example.com", "correct horse battery", "C++ Player");
            std::cout << "registered: " << user->to_json().dump() << "\n";
        } catch (const rootstream::Conflict&) {
            std::cout << "user cpp_player already exists\n";
        }
        try {
            models::User::authenticate(db, "cpp_player", "wrong password");
        } catch (const rootstream::AuthError& e) {
            std::cout << "a wrong password is refused (code " << e.code() << ")\n";
        }
        user = models::User::authenticate(db, "cpp_player@example.com", "correct horse battery");
        user->update_profile(db, "C++ Player", "https://cdn.example.com/avatars/cpp.png");
        std::cout << "logged in as " << user->username() << ", last login " << user->last_login_at().value_or("-") << "\n";

        rootstream::cache::RedisClient redis(config);

        // Second factor: enroll, confirm with a first code, then log in through it.
        rootstream::auth::MFAManager mfa(config, db, &redis);
        models::SessionModel sessions(config, db, redis);
        if (mfa.status(user->id()).enabled) mfa.unenroll(user->id());
        auto enrollment = mfa.begin_enrollment(user->id(), user->email());
        std::cout << "scan this with an authenticator app: " << enrollment.qr_png.size() << "-byte PNG / "
                  << enrollment.qr_svg.size() << "-byte SVG QR code\n";
        auto now = static_cast<std::uint64_t>(std::time(nullptr));
        auto backup_codes =
            mfa.confirm_enrollment(user->id(), rootstream::auth::totp_code(enrollment.secret_base32, now - 30), "203.0.113.9");
        std::cout << "MFA on; " << backup_codes.size() << " backup codes issued\n";
        auto login = sessions.create(user->id(), {"desktop-91c2", "203.0.113.9", "RootStream/1.0 (Windows)", "Lyon, FR"},
                                     /*remember_me=*/true, /*mfa_required=*/true);
        std::cout << "password accepted; session usable now? " << std::boolalpha
                  << sessions.is_valid(login.token, "desktop-91c2") << "\n";
        mfa.complete_login(sessions, login.token, "desktop-91c2", rootstream::auth::totp_code(enrollment.secret_base32));
        std::cout << "after the second factor? " << sessions.is_valid(login.token, "desktop-91c2") << "\n";
        std::cout << "your devices: " << sessions.list(user->id()).size() << " active session(s)\n";

        std::mutex m;
        std::condition_variable cv;
        std::vector<std::string> seen;
        auto sub = redis.subscribe("stream.*", [&](const std::string& channel, const std::string& payload) {
            std::cout << "  event on " << channel << ": " << payload << "\n";
            std::lock_guard<std::mutex> lock(m);
            seen.push_back(channel);
            cv.notify_all();
        });

        models::StreamModel streams(db, redis);
        auto stream = streams.create(user->id(), "C++ speedrun", std::string("glitchless"));
        std::int64_t stream_id = stream.id;
        auto session = streams.start(stream_id);
        streams.viewer_joined(stream_id);
        streams.viewer_joined(stream_id);
        streams.viewer_joined(stream_id);
        std::cout << "viewers now: " << streams.viewer_left(stream_id) << "\n";
        streams.update_stats(stream_id, models::StreamStats{8000, 60, std::string("2560x1440"), std::string("av1")});
        auto ended = streams.stop(stream_id);
        std::cout << "ended session " << session.id << ": peak " << ended.peak_viewers << ", "
                  << ended.duration_seconds.value_or(0) << " s\n";
        {
            std::unique_lock<std::mutex> lock(m);
            if (!cv.wait_for(lock, 2s, [&] { return seen.size() >= 2; })) {
                std::cerr << "complete_workflow_cpp: the stream events never arrived\n";
                return 1;
            }
        }
        redis.unsubscribe(sub);

        rootstream::events::EventStore events(db);
        std::cout << "event history: " << events.load("stream", std::to_string(stream_id)).dump() << "\n";
        // Optimistic concurrency: a writer that read version 0 after someone else appended loses.
        std::string wallet = "wallet-" + std::to_string(user->id());
        auto v = events.version("wallet", wallet);
        events.append("wallet", wallet, v, json::array({{{"event_type", "deposited"}, {"payload", {{"amount", 10}}}}}));
        try {
            events.append("wallet", wallet, v, json::array({{{"event_type", "withdrew"}, {"payload", {{"amount", 10}}}}}));
        } catch (const rootstream::Conflict& e) {
            std::cout << "stale append refused: " << e.what() << "\n";
        }

        // The transaction commits only if the lambda returns; an exception rolls it back.
        db.transaction([](rootstream::database::Transaction& tx) {
            tx.execute("UPDATE users SET display_name = $1 WHERE username = $2", {"C++ Player (renamed)", "cpp_player"});
        });
        try {
            auto tx = db.begin();
            tx.execute("UPDATE users SET display_name = 'never' WHERE username = $1", {"cpp_player"});
            throw std::runtime_error("something went wrong mid-transaction");
        } catch (const std::runtime_error&) {
            // The Transaction destructor rolled the update back.
        }
        std::cout << "after rollback: " << db.query("SELECT display_name FROM users WHERE username = $1", {"cpp_player"}).dump()
                  << "\n";

        auto stats = db.pool_stats();
        std::cout << "pool: " << stats.size << " open, " << stats.available << " idle, max " << stats.max_size << "\n";

        redis.set("demo:cpp:greeting", "hello from C++", 60s);
        std::cout << "cached: " << redis.get("demo:cpp:greeting").value_or("(missing)") << " (expires in "
                  << redis.ttl_ms("demo:cpp:greeting") << " ms)\n";

        auto replies = redis.exec_atomic(json::array({json::array({"INCR", "demo:cpp:counter"}),
                                                      json::array({"EXPIRE", "demo:cpp:counter", "60"})}));
        std::cout << "MULTI/EXEC replies: " << replies.dump() << "\n";
        std::cout << "health: " << db.health_check().to_json().dump() << "\n";

        // Two instances sharing state: A changes a stream, B's handler sees it already applied.
        const std::string ns = "demo_cpp_" + std::to_string(std::time(nullptr));
        rootstream::sync::StateSyncManager a(config, redis, db, {{"namespace", ns}, {"instance", "A"}});
        rootstream::sync::StateSyncManager b(config, redis, db, {{"namespace", ns}, {"instance", "B"}});
        std::atomic<int> crossed{0};
        b.subscribe("stream.*", [&](const json& envelope) {
            std::cout << "  instance B got " << envelope.at("type").get<std::string>() << " from "
                      << envelope.at("origin").get<std::string>() << "\n";
            ++crossed;
        });
        std::cout << "A applied: " << a.apply_delta("stream", "demo", {{"title", "C++ speedrun"}, {"viewers", 3}}).dump()
                  << "\n";
        a.publish(rootstream::sync::events::kStreamStarted, {{"id", "demo"}});
        a.flush();
        for (int i = 0; i < 500 && crossed < 2; ++i) std::this_thread::sleep_for(10ms);
        auto on_b = b.get_snapshot("stream", "demo");
        std::cout << "B sees: " << (on_b ? on_b->dump() : "(nothing)") << "\n";
        if (!on_b || on_b->value("title", "") != "C++ speedrun" || crossed < 2) {
            std::cerr << "complete_workflow_cpp: the change did not reach instance B\n";
            return 1;
        }
        // Stream metrics: through the background writer, read back, and the library's counters.
        std::optional<rootstream::metrics::InfluxDBClient> influx;
        try {
            influx = rootstream::metrics::InfluxDBClient::from_config(config);
        } catch (const rootstream::ConfigError&) {
            std::cout << "metrics: skipped (no InfluxDB configured; set ROOTSTREAM_INFLUX_URL)\n";
        }
        if (influx) {
            namespace metrics = rootstream::metrics;
            influx->create_database();
            metrics::MetricsWriter writer(*influx, {{"flush_interval_ms", 200}});
            writer.on_drop([](const metrics::DropEvent& e) {
                std::cerr << "  dropped " << e.points << " point(s) (" << e.reason << "): " << e.message << "\n";
            });
            const std::string stream_id = "demo-cpp-" + std::to_string(std::time(nullptr));
            const std::int64_t now_ns = static_cast<std::int64_t>(std::time(nullptr)) * 1'000'000'000;
            for (int i = 0; i < 10; ++i) {
                writer.write_point(metrics::Point("stream")
                                       .tag("stream_id", stream_id)
                                       .field("viewers", 100 + i)
                                       .field("fps", 59.5 + i % 2)
                                       .field("bitrate_kbps", 4500.0)
                                       .timestamp(now_ns - (10 - i) * 1'000'000'000LL));
            }
            writer.flush(10s);
            auto ws = writer.stats();
            std::cout << "metrics: " << ws.delivered << " point(s) delivered, " << ws.dropped() << " dropped\n";
            auto back = influx->query("SELECT count(fps), mean(viewers) FROM stream WHERE stream_id = '" + stream_id + "'",
                                      "ns");
            std::cout << "metrics read back: " << back.dump() << "\n";
            const auto& row = back["results"][0]["series"][0]["values"][0];
            if (row.size() != 3 || row[1] != 10 || row[2] != 104.5) {
                std::cerr << "complete_workflow_cpp: the stream metrics did not read back as written\n";
                return 1;
            }
            metrics::MetricsReporter reporter(*influx);
            reporter.attach(&writer, &db, nullptr);
            auto exported = reporter.json_export();
            std::cout << "metrics export: points delivered "
                      << exported["rootstream_metrics_points_delivered_total"]["samples"][0]["value"] << "\n";
        }
        // Redis high availability: what the sentinels report (docs/redis-ha.md).
        const char* sentinels = std::getenv("ROOTSTREAM_REDIS_SENTINELS");
        if (sentinels != nullptr && *sentinels != '\0') {
            rootstream::cache::RedisSentinelManager sentinel(config);
            std::cout << "sentinel master: " << sentinel.master_address() << "\n";
            std::cout << "sentinel replicas: " << sentinel.replicas().dump() << "\n";
            std::cout << "sentinels: " << sentinel.sentinels().dump() << "\n";
        } else {
            std::cout << "sentinel: skipped (ROOTSTREAM_REDIS_SENTINELS is not set)\n";
        }
        // PostgreSQL health: one round of checks and its status (docs/ha-health.md).
        {
            rootstream::database::HealthMonitor health(db, {{"check_timeout_ms", 2000}});
            const auto status = health.check_now();
            std::cout << "health: " << status["overall"] << " " << status["checks"]["latency"]["value"]
                      << " ms\n";
        }
        std::cout << "complete_workflow_cpp: ok\n";
        return 0;
    } catch (const rootstream::Error& e) {
        std::cerr << "complete_workflow_cpp: error " << e.code() << ": " << e.what() << "\n";
        return 1;
    }
}
