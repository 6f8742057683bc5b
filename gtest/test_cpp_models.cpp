// The C++ model classes (rootstream::database::models::User, StreamModel, StreamSessionModel)
// and rootstream::events::EventStore against real PostgreSQL and Redis servers. Every test
// migrates its own fresh database first.
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::Error;
using rootstream::cache::RedisClient;
using rootstream::database::DatabaseManager;
using rootstream::database::models::Stream;
using rootstream::database::models::StreamModel;
using rootstream::database::models::StreamSession;
using rootstream::database::models::StreamSessionModel;
using rootstream::database::models::StreamStats;
using rootstream::database::models::User;
using rootstream::events::EventStore;

using namespace rsdb_test::cppapi;

namespace {


class CppModelsTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        config_ = std::make_unique<Config>();
        config_->set("database_url", db_url()).set("redis_url", redis_url());
        db_ = std::make_unique<DatabaseManager>(*config_);
        ASSERT_GE(db_->migrate(), 1);
        redis_ = std::make_unique<RedisClient>(*config_);
        streams_ = std::make_unique<StreamModel>(*db_, *redis_);
        sessions_ = std::make_unique<StreamSessionModel>(*db_);
        events_ = std::make_unique<EventStore>(*db_);
        // Every test has its own database, so stream ids would start at 1 in each, while the
        // live cache (rsdb:stream:<id>:*) and the pub/sub channels are shared by all tests on
        // the stack. Random ids keep this test's keys and messages apart from other tests'.
        std::random_device rd;
        std::uniform_int_distribution<std::int64_t> dist(1'000'000'000LL, 4'000'000'000'000LL);
        db_->query("SELECT setval('streams_id_seq', $1::bigint)", json::array({dist(rd)}));
    }

    void TearDown() override {
        events_.reset();
        sessions_.reset();
        streams_.reset();
        redis_.reset();
        db_.reset();
        config_.reset();
        rsdb_test::StackTest::TearDown();
    }

    DatabaseManager& db() { return *db_; }

    std::int64_t count_rows(const std::string& table) {
        return db_->query("SELECT count(*) AS n FROM " + table).at(0).at("n").get<std::int64_t>();
    }

    bool tables_exist() {
        return db_
            ->query("SELECT to_regclass('public.users') IS NOT NULL AND to_regclass('public.streams') IS NOT NULL"
                    " AND to_regclass('public.stream_sessions') IS NOT NULL"
                    " AND to_regclass('public.event_log') IS NOT NULL"
                    " AND to_regclass('public.snapshots') IS NOT NULL AS ok")
            .at(0)
            .at("ok")
            .get<bool>();
    }

    /// A user row inserted directly (no password hashing), for tests that only need an owner.
    std::int64_t insert_user(const std::string& username) {
        return db_
            ->query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'not-a-hash') RETURNING id",
                    json::array({username, username + "@example.com"}))
            .at(0)
            .at("id")
            .get<std::int64_t>();
    }

    std::string stored_hash(std::int64_t id) {
        return db_->query("SELECT password_hash FROM users WHERE id = $1", json::array({id}))
            .at(0)
            .at("password_hash")
            .get<std::string>();
    }

    static json event(const std::string& type, const json& payload = json::object()) {
        return json{{"event_type", type}, {"payload", payload}};
    }

    std::unique_ptr<Config> config_;
    std::unique_ptr<DatabaseManager> db_;
    std::unique_ptr<RedisClient> redis_;
    std::unique_ptr<StreamModel> streams_;
    std::unique_ptr<StreamSessionModel> sessions_;
    std::unique_ptr<EventStore> events_;
};

using Users = CppModelsTest;
using CppUsers = CppModelsTest;
using CppStreams = CppModelsTest;
using CppStreamSessions = CppModelsTest;
using Events = CppModelsTest;
using CppEvents = CppModelsTest;
using BadInput = CppModelsTest;


bool is_lower_hex(const std::string& s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool has_stream(const std::vector<Stream>& list, std::int64_t id) {
    return std::any_of(list.begin(), list.end(), [&](const Stream& s) { return s.id == id; });
}

}  // namespace

// ================================================================ users

// The C++ face of the users model: every function called once, every typed field checked, and
// each failure thrown as the subclass of its kind. Behaviour is specified in tests/models.rs.
TEST_F(CppUsers, EveryUserFunctionFillsTheTypedUserAndThrowsBySubclass) {
    const std::string password = "correct horse battery staple";
    User created = User::create(db(), "Alice_Streams", "Alice@Example.com", password, std::string("Alice"));
    EXPECT_GT(created.id(), 0);
    EXPECT_EQ(created.username(), "Alice_Streams");
    EXPECT_EQ(created.email(), "Alice@Example.com");
    EXPECT_EQ(created.display_name(), std::optional<std::string>("Alice"));
    EXPECT_EQ(created.avatar_url(), std::nullopt);
    EXPECT_FALSE(created.is_verified());
    EXPECT_TRUE(created.is_active());
    EXPECT_EQ(created.last_login_at(), std::nullopt);
    EXPECT_FALSE(created.created_at().empty());
    EXPECT_EQ(created.created_at().back(), 'Z') << "RFC 3339 in UTC: " << created.created_at();
    EXPECT_FALSE(created.updated_at().empty());
    User plain = User::create(db(), "bob", "bob@example.com", "bob's password");
    EXPECT_EQ(plain.display_name(), std::nullopt) << "no display name given";

    // to_json() keeps the C API's keys, with null for unset values, and never the hash.
    const json j = created.to_json();
    EXPECT_EQ(j.at("id"), created.id());
    EXPECT_EQ(j.at("username"), "Alice_Streams");
    EXPECT_EQ(j.at("email"), "Alice@Example.com");
    EXPECT_EQ(j.at("display_name"), "Alice");
    EXPECT_TRUE(j.at("avatar_url").is_null());
    EXPECT_EQ(j.at("is_verified"), false);
    EXPECT_EQ(j.at("is_active"), true);
    EXPECT_TRUE(j.at("last_login_at").is_null());
    EXPECT_EQ(j.at("created_at"), created.created_at());
    EXPECT_EQ(j.at("updated_at"), created.updated_at());
    EXPECT_EQ(j.size(), 10u) << j.dump();

    User by_name = User::authenticate(db(), "alice_streams", password);
    EXPECT_EQ(by_name.id(), created.id());
    ASSERT_TRUE(by_name.last_login_at().has_value());
    EXPECT_EQ(by_name.to_json().at("last_login_at"), *by_name.last_login_at());
    EXPECT_EQ(User::authenticate(db(), "ALICE@EXAMPLE.COM", password).id(), created.id());
    EXPECT_EQ(User::load_by_id(db(), created.id()).username(), "Alice_Streams");
    EXPECT_EQ(User::load_by_username(db(), "ALICE_STREAMS").id(), created.id());
    EXPECT_EQ(User::load_by_email(db(), "alice@example.COM").id(), created.id());

    User user = created;
    user.update_profile(db(), std::string("Alice in Streamland"), std::string("https://cdn.example.com/a.png"));
    EXPECT_EQ(user.display_name(), std::optional<std::string>("Alice in Streamland"));
    EXPECT_EQ(user.avatar_url(), std::optional<std::string>("https://cdn.example.com/a.png"));
    user.update_profile(db(), std::nullopt, std::string("https://cdn.example.com/b.png"));
    EXPECT_EQ(user.display_name(), std::optional<std::string>("Alice in Streamland")) << "nullopt crosses as unset";
    EXPECT_EQ(user.avatar_url(), std::optional<std::string>("https://cdn.example.com/b.png"));

    EXPECT_TRUE(user.verify_password(db(), password));
    EXPECT_FALSE(user.verify_password(db(), "not the password"));
    user.verify(db());
    EXPECT_TRUE(user.is_verified());
    user.deactivate(db());
    EXPECT_FALSE(user.is_active());
    EXPECT_THROW(User::authenticate(db(), "alice_streams", password), rootstream::AuthError);
    user.activate(db());
    EXPECT_TRUE(user.is_active());
    User fresh = User::load_by_id(db(), plain.id());
    EXPECT_EQ(fresh.last_login_at(), std::nullopt);
    fresh.record_login(db());
    EXPECT_TRUE(fresh.last_login_at().has_value());
    user.change_password(db(), "a brand new secret");
    EXPECT_EQ(User::authenticate(db(), "alice_streams", "a brand new secret").id(), user.id());

    EXPECT_THROW(User::authenticate(db(), "alice_streams", password), rootstream::AuthError);
    EXPECT_THROW(User::create(db(), "ALICE_STREAMS", "x@example.com", "long enough 1"), rootstream::Conflict);
    EXPECT_THROW(User::create(db(), "carol", "not-an-email", "long enough 1"), rootstream::InvalidArgument);
    EXPECT_THROW(user.change_password(db(), "short"), rootstream::InvalidArgument);
    EXPECT_THROW(User::load_by_id(db(), created.id() + 1000), rootstream::NotFound);
    EXPECT_TRUE(ThrowsCode([&] { User::authenticate(db(), "nobody", password); }, RSDB_ERR_AUTH));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "Bob", "b2@example.com", "long enough 1"); }, RSDB_ERR_CONFLICT,
                           "username already exists"));
}

TEST_F(Users, StoredPasswordIsAnArgon2idHashNotThePassword) {
    const std::string password = "s3cret-Passw0rd";
    User u = User::create(db(), "bob", "bob@example.com", password);
    const std::string hash = stored_hash(u.id());
    EXPECT_EQ(hash.rfind("$argon2id$", 0), 0u) << hash;
    EXPECT_EQ(hash.find(password), std::string::npos) << hash;
    EXPECT_EQ(count_rows("users"), 1);
}

TEST_F(Users, UnknownUsersAreNotFound) {
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_id(db(), 424242); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_username(db(), "ghost"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_email(db(), "ghost@example.com"); }, RSDB_ERR_NOT_FOUND));
    // A loaded user whose row is deleted afterwards.
    User gone = User::load_by_id(db(), insert_user("gone"));
    ASSERT_EQ(db().execute("DELETE FROM users WHERE id = $1", json::array({gone.id()})), 1u);
    EXPECT_TRUE(ThrowsCode([&] { gone.update_profile(db(), std::string("x"), std::nullopt); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { gone.verify(db()); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { gone.deactivate(db()); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { gone.record_login(db()); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { gone.verify_password(db(), "whatever1"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { gone.change_password(db(), "long enough 1"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(count_rows("users"), 0);
}

// ================================================================ streams

// The C++ face of the stream model: typed Stream and StreamSession values, std::vector lists,
// StreamStats with unset values, errors by subclass. Behaviour is specified in tests/models.rs.
TEST_F(CppStreams, EveryStreamFunctionFillsTheTypedStreamAndSession) {
    const std::int64_t owner = insert_user("streamer");
    Stream a = streams_->create(owner, "Speedrun", std::string("any% attempts"));
    Stream b = streams_->create(owner, "Chill");
    EXPECT_GT(a.id, 0);
    EXPECT_EQ(a.user_id, owner);
    EXPECT_EQ(a.name, "Speedrun");
    EXPECT_EQ(a.description, std::optional<std::string>("any% attempts"));
    EXPECT_EQ(b.description, std::nullopt);
    EXPECT_EQ(a.stream_key.rfind("live_", 0), 0u) << a.stream_key;
    EXPECT_EQ(a.stream_key.size(), 69u);
    EXPECT_TRUE(is_lower_hex(a.stream_key.substr(5))) << a.stream_key;
    EXPECT_FALSE(a.is_live);
    EXPECT_EQ(a.viewer_count, 0);
    EXPECT_EQ(a.bitrate_kbps, std::nullopt);
    EXPECT_EQ(a.fps, std::nullopt);
    EXPECT_EQ(a.resolution, std::nullopt);
    EXPECT_EQ(a.codec, std::nullopt);
    EXPECT_EQ(a.started_at, std::nullopt);
    EXPECT_EQ(a.ended_at, std::nullopt);
    EXPECT_EQ(a.created_at.back(), 'Z') << a.created_at;
    EXPECT_FALSE(a.updated_at.empty());

    const json j = a.to_json();
    EXPECT_EQ(j.at("id"), a.id);
    EXPECT_EQ(j.at("user_id"), owner);
    EXPECT_EQ(j.at("name"), "Speedrun");
    EXPECT_EQ(j.at("description"), "any% attempts");
    EXPECT_EQ(j.at("stream_key"), a.stream_key);
    EXPECT_EQ(j.at("is_live"), false);
    EXPECT_EQ(j.at("viewer_count"), 0);
    for (const char* unset : {"bitrate_kbps", "fps", "resolution", "codec", "started_at", "ended_at"}) {
        EXPECT_TRUE(j.at(unset).is_null()) << unset;
    }
    EXPECT_EQ(j.at("created_at"), a.created_at);
    EXPECT_EQ(j.at("updated_at"), a.updated_at);
    EXPECT_EQ(j.size(), 15u) << j.dump();

    EXPECT_EQ(streams_->get(a.id).to_json(), j);
    EXPECT_EQ(streams_->get_by_key(a.stream_key).to_json(), j);
    Stream rekeyed = streams_->regenerate_key(b.id);
    EXPECT_EQ(rekeyed.id, b.id);
    EXPECT_NE(rekeyed.stream_key, b.stream_key);
    EXPECT_THROW(streams_->get_by_key(b.stream_key), rootstream::NotFound);
    EXPECT_THROW(streams_->get(a.id + 1000), rootstream::NotFound);
    EXPECT_THROW(streams_->viewer_joined(a.id), rootstream::StateError) << "not live yet";

    StreamSession session = streams_->start(a.id);
    EXPECT_GT(session.id, 0);
    EXPECT_EQ(session.stream_id, a.id);
    EXPECT_EQ(session.started_at.back(), 'Z') << session.started_at;
    EXPECT_EQ(session.ended_at, std::nullopt);
    EXPECT_EQ(session.duration_seconds, std::nullopt);
    EXPECT_THROW(streams_->start(a.id), rootstream::StateError);
    Stream live = streams_->get(a.id);
    EXPECT_TRUE(live.is_live);
    EXPECT_TRUE(live.started_at.has_value());
    const std::vector<Stream> live_list = streams_->list_live();
    EXPECT_TRUE(has_stream(live_list, a.id));
    EXPECT_FALSE(has_stream(live_list, b.id));

    EXPECT_EQ(streams_->viewer_joined(a.id), 1);
    EXPECT_EQ(streams_->viewer_joined(a.id), 2);
    EXPECT_EQ(streams_->viewer_left(a.id), 1);
    EXPECT_EQ(streams_->viewer_count(a.id), 1);

    // Every StreamStats member crosses, and an unset one crosses as unset.
    StreamStats full;
    full.bitrate_kbps = 6000;
    full.fps = 60;
    full.resolution = "1920x1080";
    full.codec = "h264";
    Stream with_stats = streams_->update_stats(a.id, full);
    EXPECT_EQ(with_stats.bitrate_kbps, std::optional<int>(6000));
    EXPECT_EQ(with_stats.fps, std::optional<int>(60));
    EXPECT_EQ(with_stats.resolution, std::optional<std::string>("1920x1080"));
    EXPECT_EQ(with_stats.codec, std::optional<std::string>("h264"));
    StreamStats only_fps;
    only_fps.fps = 30;
    Stream partial = streams_->update_stats(a.id, only_fps);
    EXPECT_EQ(partial.fps, std::optional<int>(30));
    EXPECT_EQ(partial.bitrate_kbps, std::optional<int>(6000));
    EXPECT_EQ(partial.resolution, std::optional<std::string>("1920x1080"));
    EXPECT_EQ(partial.codec, std::optional<std::string>("h264"));
    EXPECT_EQ(partial.to_json().at("bitrate_kbps"), 6000);
    EXPECT_EQ(partial.to_json().at("codec"), "h264");

    StreamSession ended = streams_->stop(a.id);
    EXPECT_EQ(ended.id, session.id);
    EXPECT_EQ(ended.total_viewers, 2);
    EXPECT_EQ(ended.peak_viewers, 2);
    ASSERT_TRUE(ended.duration_seconds.has_value());
    EXPECT_GE(*ended.duration_seconds, 0);
    ASSERT_TRUE(ended.ended_at.has_value());
    EXPECT_EQ(ended.to_json(), sessions_->get(session.id).to_json());
    Stream offline = streams_->get(a.id);
    EXPECT_FALSE(offline.is_live);
    EXPECT_TRUE(offline.ended_at.has_value());
    EXPECT_FALSE(has_stream(streams_->list_live(), a.id));
    EXPECT_THROW(streams_->stop(a.id), rootstream::StateError);
    EXPECT_THROW(streams_->start(a.id + 1000), rootstream::NotFound);
    EXPECT_THROW(streams_->create(owner + 1000, "Orphan"), rootstream::NotFound);
}

// Face-only: the pub/sub handler of a C++ RedisClient runs on a library thread, not on the
// thread that started or stopped the stream.
TEST_F(CppStreams, LifecycleMessagesReachACppHandlerOnALibraryThread) {
    const std::int64_t id = streams_->create(insert_user("observed"), "Observed").id;
    const std::thread::id test_thread = std::this_thread::get_id();
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::pair<std::string, std::thread::id>> got;
    RedisClient observer(*config_);
    const auto sub = observer.subscribe("stream.*", [&](const std::string& channel, const std::string& payload) {
        const json j = json::parse(payload, nullptr, false);
        if (!j.is_object() || j.value("stream_id", std::int64_t{-1}) != id) return;
        std::lock_guard<std::mutex> lock(m);
        got.emplace_back(channel, std::this_thread::get_id());
        cv.notify_all();
    });
    streams_->start(id);
    streams_->stop(id);
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return got.size() >= 2; })) << "got " << got.size() << " messages";
    EXPECT_EQ(got[0].first, "stream.started");
    EXPECT_EQ(got[1].first, "stream.stopped");
    for (const auto& entry : got) EXPECT_NE(entry.second, test_thread);
    lock.unlock();
    observer.unsubscribe(sub);
}

// ================================================================ stream sessions

// The C++ face of the stream session model. Behaviour is specified in tests/models.rs.
TEST_F(CppStreamSessions, EveryStreamSessionFunctionFillsTheTypedSession) {
    const std::int64_t stream_id = streams_->create(insert_user("sessions"), "Sessions").id;
    StreamSession s = sessions_->create(stream_id);
    EXPECT_GT(s.id, 0);
    EXPECT_EQ(s.stream_id, stream_id);
    EXPECT_EQ(s.total_viewers, 0);
    EXPECT_EQ(s.peak_viewers, 0);
    EXPECT_EQ(s.bytes_transferred, 0);
    EXPECT_EQ(s.ended_at, std::nullopt);
    EXPECT_EQ(s.duration_seconds, std::nullopt);
    const json j = s.to_json();
    EXPECT_EQ(j.at("id"), s.id);
    EXPECT_EQ(j.at("stream_id"), stream_id);
    EXPECT_EQ(j.at("started_at"), s.started_at);
    EXPECT_TRUE(j.at("ended_at").is_null());
    EXPECT_TRUE(j.at("duration_seconds").is_null());
    EXPECT_EQ(j.at("total_viewers"), 0);
    EXPECT_EQ(j.at("peak_viewers"), 0);
    EXPECT_EQ(j.at("bytes_transferred"), 0);
    EXPECT_EQ(j.size(), 8u) << j.dump();

    s = sessions_->record_viewer(s.id, 1);
    s = sessions_->record_viewer(s.id, 4);
    EXPECT_EQ(s.total_viewers, 2);
    EXPECT_EQ(s.peak_viewers, 4);
    EXPECT_EQ(sessions_->add_bytes(s.id, 5'000'000'000LL).bytes_transferred, 5'000'000'000LL) << "64 bits cross";
    EXPECT_EQ(sessions_->get(s.id).peak_viewers, 4);
    StreamSession ended = sessions_->end(s.id);
    ASSERT_TRUE(ended.duration_seconds.has_value());
    EXPECT_GE(*ended.duration_seconds, 0);
    ASSERT_TRUE(ended.ended_at.has_value());
    EXPECT_EQ(ended.to_json().at("duration_seconds"), *ended.duration_seconds);
    EXPECT_EQ(ended.to_json().at("ended_at"), *ended.ended_at);
    const std::vector<StreamSession> list = sessions_->list(stream_id);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].to_json(), ended.to_json());
    EXPECT_TRUE(sessions_->list(stream_id + 1000).empty());

    EXPECT_THROW(sessions_->end(s.id), rootstream::StateError);
    EXPECT_THROW(sessions_->add_bytes(s.id, -1), rootstream::InvalidArgument);
    EXPECT_THROW(sessions_->get(s.id + 1000), rootstream::NotFound);
    EXPECT_THROW(sessions_->create(stream_id + 1000), rootstream::NotFound);
}

// ================================================================ event store

// Face-only: native threads, each with its own EventStore on one shared DatabaseManager, call
// into the library at the same time and see conflicts as exceptions.
TEST_F(CppEvents, NativeThreadsAppendingAtOnceRetryConflictsAndLoseNothing) {
    constexpr int kThreads = 8;
    constexpr int kPerThread = 10;
    std::atomic<int> conflicts{0};
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::mutex errors_mutex;
    std::vector<std::string> errors;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            EventStore store(db());  // one store per thread, all on the same pool
            ready.fetch_add(1);
            while (!go.load()) std::this_thread::yield();
            for (int n = 0; n < kPerThread; ++n) {
                const json events = json::array({event("counter.incremented", {{"thread", t}, {"n", n}})});
                bool done = false;
                for (int attempt = 0; attempt < 1000 && !done; ++attempt) {
                    try {
                        const std::int64_t v = store.version("counter", "shared");
                        store.append("counter", "shared", v, events);
                        done = true;
                    } catch (const Error& e) {
                        if (e.code() == RSDB_ERR_CONFLICT) {
                            conflicts.fetch_add(1);
                            continue;
                        }
                        std::lock_guard<std::mutex> lock(errors_mutex);
                        errors.push_back("thread " + std::to_string(t) + ": code " + std::to_string(e.code()) + ": " +
                                         e.what());
                        return;
                    }
                }
                if (!done) {
                    std::lock_guard<std::mutex> lock(errors_mutex);
                    errors.push_back("thread " + std::to_string(t) + " gave up on n=" + std::to_string(n));
                    return;
                }
            }
        });
    }
    while (ready.load() < kThreads) std::this_thread::yield();
    go.store(true);
    for (auto& th : threads) th.join();
    EXPECT_TRUE(errors.empty()) << errors.front();

    json all = events_->load("counter", "shared");
    ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
    std::set<std::pair<int, int>> seen;
    std::map<int, int> next_n;
    for (size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(all[i].at("version"), static_cast<std::int64_t>(i + 1));
        const int t = all[i].at("payload").at("thread");
        const int n = all[i].at("payload").at("n");
        EXPECT_TRUE(seen.insert({t, n}).second) << "(" << t << ", " << n << ") appended twice";
        EXPECT_EQ(n, next_n[t]) << "thread " << t;
        next_n[t] = n + 1;
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
    EXPECT_EQ(events_->version("counter", "shared"), kThreads * kPerThread);
    RecordProperty("conflicts", conflicts.load());
    EXPECT_GE(conflicts.load(), 1) << "the writers never collided, so the conflict path was not exercised";
}

// The C++ face of the event store: JSON events and snapshots in and out, a stale version
// thrown as Conflict. Behaviour is specified in tests/event_store.rs.
TEST_F(CppEvents, EveryEventStoreFunctionRoundTripsJsonThroughTheCppApi) {
    EXPECT_EQ(events_->version("order", "o-1"), 0);
    EXPECT_EQ(events_->load("order", "o-1"), json::array());
    const json placed = {{"event_type", "order.placed"},
                         {"payload", {{"total", 42}, {"items", {1, 2}}}},
                         {"metadata", {{"ip", "10.0.0.1"}}},
                         {"user_id", 7}};
    EXPECT_EQ(events_->append("order", "o-1", 0, json::array({placed, event("order.paid")})), 2);
    EXPECT_THROW(events_->append("order", "o-1", 1, json::array({event("stale")})), rootstream::Conflict);
    const json all = events_->load("order", "o-1");
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].at("aggregate_type"), "order");
    EXPECT_EQ(all[0].at("aggregate_id"), "o-1");
    EXPECT_EQ(all[0].at("version"), 1);
    EXPECT_EQ(all[0].at("event_type"), "order.placed");
    EXPECT_EQ(all[0].at("payload"), placed.at("payload"));
    EXPECT_EQ(all[0].at("metadata"), placed.at("metadata"));
    EXPECT_EQ(all[0].at("user_id"), 7);
    EXPECT_TRUE(all[0].at("created_at").is_string());
    EXPECT_EQ(events_->load("order", "o-1", 1).size(), 1u);
    EXPECT_EQ(events_->version("order", "o-1"), 2);
    const json trail = events_->by_user(7);
    ASSERT_EQ(trail.size(), 1u);
    EXPECT_EQ(trail[0].at("event_type"), "order.placed");
    EXPECT_EQ(events_->by_user(7, 1).size(), 1u);

    const json state = {{"balance", 42}, {"tags", {"a", "b"}}};
    events_->save_snapshot("order", "o-1", 1, state);
    const json loaded = events_->load_from_snapshot("order", "o-1");
    EXPECT_EQ(loaded.at("snapshot").at("version"), 1);
    EXPECT_EQ(loaded.at("snapshot").at("state"), state);
    ASSERT_EQ(loaded.at("events").size(), 1u);
    EXPECT_EQ(loaded.at("events")[0].at("version"), 2);
    EXPECT_THROW(events_->save_snapshot("order", "o-1", 9, state), rootstream::Error);
}

TEST_F(Events, MalformedEventsAreAJsonErrorAndWriteNothing) {
    const std::vector<json> bad = {
        json::object({{"event_type", "x"}}),            // not an array
        json(42),                                       //
        json::array({json{{"payload", json::object()}}}),  // no event_type
        json::array({json{{"event_type", 5}}}),         // wrong type
        json::array({1, 2}),                            // not objects
    };
    for (const auto& events : bad) {
        EXPECT_TRUE(ThrowsCode([&] { events_->append("bad", "b-1", 0, events); }, RSDB_ERR_JSON)) << events.dump();
    }
    EXPECT_EQ(count_rows("event_log"), 0);
}

// ================================================================ bad input

TEST_F(BadInput, InvalidUtf8StringsThrowInvalidUtf8AndWriteNothing) {
    const std::string bad = "caf\xC3";
    const std::string bad2 = "\xFF\xFEzz";
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), bad, "a@example.com", "password1"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "a", bad2 + "@example.com", "password1"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "a", "a@example.com", "password" + bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "a", "a@example.com", "password1", bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::authenticate(db(), bad, "password1"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::authenticate(db(), "a", "password" + bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_username(db(), bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_email(db(), bad2); }, RSDB_ERR_INVALID_UTF8));

    const std::int64_t owner = insert_user("utf8");
    User u = User::load_by_id(db(), owner);
    EXPECT_TRUE(ThrowsCode([&] { u.update_profile(db(), bad, std::nullopt); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { u.update_profile(db(), std::nullopt, bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { u.verify_password(db(), bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { u.change_password(db(), "password" + bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(User::load_by_id(db(), owner).display_name(), std::nullopt);

    EXPECT_TRUE(ThrowsCode([&] { streams_->create(owner, bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { streams_->create(owner, "ok", bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { streams_->get_by_key("live_" + bad); }, RSDB_ERR_INVALID_UTF8));
    const std::int64_t stream_id = streams_->create(owner, "valid").id;
    StreamStats stats;
    stats.resolution = bad;
    EXPECT_TRUE(ThrowsCode([&] { streams_->update_stats(stream_id, stats); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(streams_->get(stream_id).resolution, std::nullopt);

    const json one = json::array({event("x")});
    EXPECT_TRUE(ThrowsCode([&] { events_->append(bad, "i", 0, one); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->append("t", bad2, 0, one); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->append("t", "i", 0, json::array({event("x", {{"s", bad}})})); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->append("t", "i", 0, json::array({event(bad2)})); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->load(bad, "i"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->version("t", bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { events_->load_from_snapshot(bad2, "i"); }, RSDB_ERR_INVALID_UTF8));
    events_->append("t", "i", 0, one);
    EXPECT_TRUE(ThrowsCode([&] { events_->save_snapshot("t", "i", 1, json{{"s", bad}}); }, RSDB_ERR_INVALID_UTF8));

    EXPECT_EQ(count_rows("users"), 1);
    EXPECT_EQ(count_rows("streams"), 1);
    EXPECT_EQ(count_rows("event_log"), 1);
    EXPECT_EQ(count_rows("snapshots"), 0);
}
