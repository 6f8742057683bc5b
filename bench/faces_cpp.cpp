// The library through its C++ face, driven from std::threads the way RootStream calls it.
//
// Started by the faces benchmark (benches/faces.rs, `scripts/bench.sh --bench faces`) with the
// stack's ROOTSTREAM_* variables (ROOTSTREAM_MASTER_KEY among them, for MFA); prints one machine-readable line
// per operation and thread count, in the format of faces_c:
//   RESULT face=cpp op=validate threads=50 ops=10000 rate=... p50_us=... p99_us=...
// `--count OP N` runs N operations of one kind (validate, create) and nothing else, for
// callgrind.
#include "rootstream/rootstream_db.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace rs = rootstream;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kSessionTokens = 1000;
constexpr std::size_t kLoginUsers = 8;

struct Bench {
    rs::Config config;
    std::unique_ptr<rs::database::DatabaseManager> db;
    std::unique_ptr<rs::cache::RedisClient> redis;
    std::unique_ptr<rs::database::models::SessionModel> sessions;
    std::unique_ptr<rs::auth::MFAManager> mfa;
    std::unique_ptr<rs::events::EventStore> events;
    std::vector<std::string> tokens;
    std::vector<std::int64_t> login_users;
    std::int64_t query_user = 0;
    std::vector<std::int64_t> mfa_users;
    std::vector<std::string> mfa_codes;
    std::string run_id;
    std::atomic<std::size_t> append_seq{0};
};

Bench* B = nullptr;

std::int64_t insert_user(const std::string& name) {
    auto rows = B->db->query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'x') RETURNING id",
                             nlohmann::json::array({name, name + "@bench.io"}));
    return rows.at(0).at("id").get<std::int64_t>();
}

void measure(const char* name, const std::function<void(std::size_t)>& op, int threads, std::size_t ops) {
    std::atomic<std::size_t> next{0};
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::vector<double>> lat(static_cast<std::size_t>(threads));
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
            auto& mine = lat[static_cast<std::size_t>(t)];
            mine.reserve(ops);
            ready++;
            while (!go.load()) std::this_thread::yield();
            for (;;) {
                std::size_t i = next.fetch_add(1);
                if (i >= ops) break;
                auto t0 = Clock::now();
                op(i);
                mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
            }
        });
    }
    while (ready.load() < threads) std::this_thread::yield();
    auto t0 = Clock::now();
    go = true;
    for (auto& t : ts) t.join();
    double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> all;
    for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    std::printf("RESULT face=cpp op=%s threads=%d ops=%zu rate=%.1f p50_us=%.1f p99_us=%.1f\n", name, threads,
                all.size(), static_cast<double>(all.size()) / wall, all[all.size() / 2],
                all[static_cast<std::size_t>(static_cast<double>(all.size()) * 0.99)]);
    std::fflush(stdout);
}

void op_validate(std::size_t i) {
    auto s = B->sessions->validate(B->tokens[i % kSessionTokens], "fp-bench", true);
    if (s.id == 0) std::abort();
}

void op_create(std::size_t i) {
    rs::database::models::DeviceInfo device;
    device.fingerprint = "fp-bench";
    auto created = B->sessions->create(B->login_users[i % kLoginUsers], device);
    if (created.token.empty()) std::abort();
}

std::uint64_t fresh_totp_time() {
    for (;;) {
        auto t = static_cast<std::uint64_t>(std::time(nullptr));
        if (t % 30 < 20) return t;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
}

void prepare_mfa(std::size_t n, int level) {
    B->mfa_users.clear();
    B->mfa_codes.clear();
    std::vector<std::string> secrets;
    for (std::size_t i = 0; i < n; i++) {
        std::string name = "cpp-mfa-" + B->run_id + "-" + std::to_string(level) + "-" + std::to_string(i);
        auto id = insert_user(name);
        auto enrollment = B->mfa->begin_enrollment(id, name);
        // The previous step's code (the current one stays unused for the verification); once
        // more if a step boundary passed between computing and checking it.
        for (int attempt = 0;; attempt++) {
            auto first =
                rs::auth::totp_code(enrollment.secret_base32, static_cast<std::uint64_t>(std::time(nullptr)) - 30);
            try {
                B->mfa->confirm_enrollment(id, first);
                break;
            } catch (const rs::Error& e) {
                if (e.code() != RSDB_ERR_AUTH || attempt == 2) throw;
            }
        }
        B->mfa_users.push_back(id);
        secrets.push_back(enrollment.secret_base32);
    }
    auto t = fresh_totp_time();
    for (auto& s : secrets) B->mfa_codes.push_back(rs::auth::totp_code(s, t));
}

std::size_t env_size(const char* name, std::size_t dflt) {
    const char* v = std::getenv(name);
    return v != nullptr && *v ? static_cast<std::size_t>(std::strtoull(v, nullptr, 10)) : dflt;
}

}  // namespace

int main(int argc, char** argv) try {
    Bench bench;
    B = &bench;
    bench.config = rs::Config::from_env();
    bench.config.set("session_max_per_user", "0");
    bench.db = std::make_unique<rs::database::DatabaseManager>(bench.config);
    bench.db->migrate();
    bench.redis = std::make_unique<rs::cache::RedisClient>(bench.config);
    bench.sessions = std::make_unique<rs::database::models::SessionModel>(bench.config, *bench.db, *bench.redis);
    bench.mfa = std::make_unique<rs::auth::MFAManager>(bench.config, *bench.db, bench.redis.get());
    bench.events = std::make_unique<rs::events::EventStore>(*bench.db);
    bench.run_id = std::to_string(Clock::now().time_since_epoch().count());
    bench.query_user = insert_user("cpp-bench-" + bench.run_id);
    for (std::size_t i = 0; i < kLoginUsers; i++)
        bench.login_users.push_back(insert_user("cpp-login-" + bench.run_id + "-" + std::to_string(i)));
    rs::database::models::DeviceInfo device;
    device.fingerprint = "fp-bench";

    if (argc == 4 && std::strcmp(argv[1], "--count") == 0) {
        std::size_t n = std::strtoull(argv[3], nullptr, 10);
        if (std::strcmp(argv[2], "validate") == 0) {
            bench.tokens.push_back(bench.sessions->create(bench.query_user, device).token);
            for (std::size_t i = 0; i < n; i++) bench.sessions->validate(bench.tokens[0], "fp-bench", true);
        } else if (std::strcmp(argv[2], "create") == 0) {
            for (std::size_t i = 0; i < n; i++) op_create(i);
        } else {
            std::fprintf(stderr, "faces_cpp: --count validate|create N\n");
            return 2;
        }
        return 0;
    }

    std::size_t base = env_size("RSDB_BENCH_OPS", 2000);
    for (std::size_t i = 0; i < kSessionTokens; i++)
        bench.tokens.push_back(bench.sessions->create(bench.query_user, device).token);
    for (std::size_t i = 0; i < 1000; i++) bench.redis->set("bench:faces:" + std::to_string(i), "value-of-sixteen");
    for (int th : {1, 8, 50}) {
        std::size_t fast = th == 1 ? base : 4 * base, slow = fast / 5;
        measure("validate", op_validate, th, fast);
        measure("create", op_create, th, slow);
        std::size_t m = std::min<std::size_t>(slow, 300);
        prepare_mfa(m, th);
        measure("mfa_verify", [](std::size_t i) {
            if (!B->mfa->verify(B->mfa_users[i], B->mfa_codes[i], "127.0.0.1")) std::abort();
        }, th, m);
        measure("query", [](std::size_t) {
            auto rows = B->db->query("SELECT id, username FROM users WHERE id = $1", nlohmann::json::array({B->query_user}));
            if (rows.size() != 1) std::abort();
        }, th, fast);
        measure("redis_get", [](std::size_t i) {
            if (!B->redis->get("bench:faces:" + std::to_string(i % 1000))) std::abort();
        }, th, fast);
        measure("redis_set", [](std::size_t i) {
            B->redis->set("bench:faces:set:" + std::to_string(i % 1000), "value-of-sixteen");
        }, th, fast);
        measure("event_append", [](std::size_t) {
            auto id = "cpp-" + B->run_id + "-" + std::to_string(B->append_seq.fetch_add(1));
            B->events->append("bench", id, 0,
                              nlohmann::json::array({{{"event_type", "viewer.joined"}, {"payload", {{"n", 1}}}}}));
        }, th, slow);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "faces_cpp: %s\n", e.what());
    return 1;
}
