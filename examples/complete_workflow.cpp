// The complete workflow through the C++ API: configure from the environment, migrate, write
// and read with parameters, an RAII transaction, cache with a TTL, publish and subscribe.
//
// Needs ROOTSTREAM_DATABASE_URL and ROOTSTREAM_REDIS_URL (scripts/demo.sh sets them).
#include "rootstream/rootstream_db.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using nlohmann::json;

int main() {
    try {
        auto config = rootstream::Config::from_env();
        rootstream::database::DatabaseManager db(config);
        std::cout << "schema version " << db.migrate() << "\n";

        db.execute(
            "INSERT INTO users (username, email, password_hash, display_name) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            {"cpp_player", "cpp_player@example.com", "(set by the user model)", "C++ Player"});
        std::cout << "user row: " << db.query("SELECT id, username FROM users WHERE username = $1", {"cpp_player"}).dump()
                  << "\n";

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

        rootstream::cache::RedisClient redis(config);
        redis.set("demo:cpp:greeting", "hello from C++", 60s);
        std::cout << "cached: " << redis.get("demo:cpp:greeting").value_or("(missing)") << " (expires in "
                  << redis.ttl_ms("demo:cpp:greeting") << " ms)\n";

        std::mutex m;
        std::condition_variable cv;
        bool received = false;
        auto id = redis.subscribe("demo.stream.*", [&](const std::string& channel, const std::string& payload) {
            std::cout << "  event on " << channel << ": " << payload << "\n";
            std::lock_guard<std::mutex> lock(m);
            received = true;
            cv.notify_all();
        });
        redis.publish("demo.stream.started", json{{"stream_id", 1}, {"by", "c++"}}.dump());
        {
            std::unique_lock<std::mutex> lock(m);
            if (!cv.wait_for(lock, 2s, [&] { return received; })) {
                std::cerr << "complete_workflow_cpp: the published event never arrived\n";
                return 1;
            }
        }
        redis.unsubscribe(id);

        auto replies = redis.exec_atomic(json::array({json::array({"INCR", "demo:cpp:counter"}),
                                                      json::array({"EXPIRE", "demo:cpp:counter", "60"})}));
        std::cout << "MULTI/EXEC replies: " << replies.dump() << "\n";
        std::cout << "health: " << db.health_check().dump() << "\n";
        std::cout << "complete_workflow_cpp: ok\n";
        return 0;
    } catch (const rootstream::Error& e) {
        std::cerr << "complete_workflow_cpp: error " << e.code() << ": " << e.what() << "\n";
        return 1;
    }
}
