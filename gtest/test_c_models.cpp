// The models (users, streams, stream sessions) and the event store through the C API
// (rsdb_users_*, rsdb_streams_*, rsdb_stream_sessions_*, rsdb_events_*) against real
// PostgreSQL and Redis servers. Every test migrates its own fresh database first.
#include "rootstream_db.h"
#include "c_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rsdb_test::last_error;
using namespace rsdb_test::capi;

namespace {


// ---------------------------------------------------------------- fixture

class CModelsTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        rsdb_config* cfg = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&cfg));
        cfg_.reset(cfg);
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "redis_url", redis_url().c_str()));
        rsdb_db* db = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg, &db));
        db_.reset(db);
        int version = 0;
        ASSERT_RSDB_OK(rsdb_db_migrate(db, &version));
        ASSERT_GE(version, 1);
        rsdb_redis* redis = nullptr;
        ASSERT_RSDB_OK(rsdb_redis_open(cfg, &redis));
        redis_.reset(redis);
        rsdb_users* users = nullptr;
        ASSERT_RSDB_OK(rsdb_users_new(db, &users));
        users_.reset(users);
        rsdb_streams* streams = nullptr;
        ASSERT_RSDB_OK(rsdb_streams_new(db, redis, &streams));
        streams_.reset(streams);
        rsdb_stream_sessions* sessions = nullptr;
        ASSERT_RSDB_OK(rsdb_stream_sessions_new(db, &sessions));
        sessions_.reset(sessions);
        rsdb_events* events = nullptr;
        ASSERT_RSDB_OK(rsdb_events_new(db, &events));
        events_.reset(events);
        // Every test has its own database, so stream ids would start at 1 in each, while the
        // live cache (rsdb:stream:<id>:*) and the pub/sub channels are shared by all tests on
        // the stack. Random ids keep this test's keys and messages apart from other tests'.
        std::random_device rd;
        std::uniform_int_distribution<int64_t> dist(1'000'000'000LL, 4'000'000'000'000LL);
        ASSERT_EQ(query("SELECT setval('streams_id_seq', $1::bigint) AS v", json::array({dist(rd)})).size(), 1u);
    }

    void TearDown() override {
        events_.reset();
        sessions_.reset();
        streams_.reset();
        users_.reset();
        redis_.reset();
        db_.reset();
        cfg_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// A plain query on this test's database (throws on failure).
    json query(const std::string& sql, const json& params = json::array()) {
        OutString out;
        return RSDB_JSON(rsdb_db_query(db_.get(), sql.c_str(), params.dump().c_str(), out.out()), out);
    }

    int64_t count_rows(const std::string& table) { return query("SELECT count(*) AS n FROM " + table).at(0).at("n"); }

    /// The tables of the schema are all still there.
    ::testing::AssertionResult tables_exist() {
        json r = query(
            "SELECT to_regclass('public.users') IS NOT NULL AND to_regclass('public.streams') IS NOT NULL"
            " AND to_regclass('public.stream_sessions') IS NOT NULL AND to_regclass('public.event_log') IS NOT NULL"
            " AND to_regclass('public.snapshots') IS NOT NULL AS ok");
        if (r.at(0).at("ok") == true) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure() << "a table is missing";
    }

    /// A user row inserted directly (no password hashing), for tests that only need an owner.
    int64_t insert_user(const std::string& username) {
        return query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'not-a-hash') RETURNING id",
                     json::array({username, username + "@example.com"}))
            .at(0)
            .at("id");
    }

    json create_user(const std::string& username, const std::string& email, const std::string& password,
                     const char* display_name = nullptr) {
        OutString out;
        return RSDB_JSON(rsdb_users_create(users_.get(), username.c_str(), email.c_str(), password.c_str(),
                                           display_name, out.out()),
                         out);
    }

    json get_user(int64_t id) {
        OutString out;
        return RSDB_JSON(rsdb_users_get(users_.get(), id, out.out()), out);
    }

    json authenticate(const std::string& login, const std::string& password) {
        OutString out;
        return RSDB_JSON(rsdb_users_authenticate(users_.get(), login.c_str(), password.c_str(), out.out()), out);
    }

    /// Tries a login that must fail with RSDB_ERR_AUTH; returns the message (empty on success).
    std::string failed_login(const std::string& login, const std::string& password) {
        OutString out;
        int rc = rsdb_users_authenticate(users_.get(), login.c_str(), password.c_str(), out.out());
        auto r = Fails(rc, RSDB_ERR_AUTH);
        EXPECT_TRUE(r) << "login " << login;
        EXPECT_TRUE(out.is_null()) << out.str();
        return r ? last_error() : std::string();
    }

    bool verify_password(int64_t id, const std::string& password) {
        int matches = -1;
        int rc = rsdb_users_verify_password(users_.get(), id, password.c_str(), &matches);
        if (rc != RSDB_OK) throw std::runtime_error("rsdb_users_verify_password: " + last_error());
        if (matches != 0 && matches != 1) throw std::runtime_error("matches is " + std::to_string(matches));
        return matches == 1;
    }

    std::string stored_hash(int64_t id) {
        return query("SELECT password_hash FROM users WHERE id = $1", json::array({id})).at(0).at("password_hash");
    }

    json create_stream(int64_t user_id, const std::string& name, const char* description = nullptr) {
        OutString out;
        return RSDB_JSON(rsdb_streams_create(streams_.get(), user_id, name.c_str(), description, out.out()), out);
    }

    json get_stream(int64_t id) {
        OutString out;
        return RSDB_JSON(rsdb_streams_get(streams_.get(), id, out.out()), out);
    }

    json start_stream(int64_t id) {
        OutString out;
        return RSDB_JSON(rsdb_streams_start(streams_.get(), id, out.out()), out);
    }

    json stop_stream(int64_t id) {
        OutString out;
        return RSDB_JSON(rsdb_streams_stop(streams_.get(), id, out.out()), out);
    }

    json get_session(int64_t id) {
        OutString out;
        return RSDB_JSON(rsdb_stream_sessions_get(sessions_.get(), id, out.out()), out);
    }

    json load_events(const std::string& type, const std::string& id, int64_t after = 0) {
        OutString out;
        return RSDB_JSON(rsdb_events_load(events_.get(), type.c_str(), id.c_str(), after, out.out()), out);
    }

    int64_t version_of(const std::string& type, const std::string& id) {
        int64_t v = -1;
        if (rsdb_events_version(events_.get(), type.c_str(), id.c_str(), &v) != RSDB_OK) {
            throw std::runtime_error("rsdb_events_version: " + last_error());
        }
        return v;
    }

    /// Appends and returns the status; `*new_version` receives the new version.
    int append(const std::string& type, const std::string& id, int64_t expected, const json& events,
               int64_t* new_version = nullptr) {
        const std::string text = events.dump();
        return rsdb_events_append(events_.get(), type.c_str(), id.c_str(), expected, text.c_str(), new_version);
    }

    json redis_hgetall(const std::string& key) {
        OutString out;
        return RSDB_JSON(rsdb_redis_hgetall(redis_.get(), key.c_str(), out.out()), out);
    }

    ConfigPtr cfg_;
    DbPtr db_;
    RedisPtr redis_;
    UsersPtr users_;
    StreamsPtr streams_;
    StreamSessionsPtr sessions_;
    EventsPtr events_;
};

using Users = CModelsTest;
using CUsers = CModelsTest;
using Streams = CModelsTest;
using CStreams = CModelsTest;
using CStreamSessions = CModelsTest;
using Events = CModelsTest;
using CEvents = CModelsTest;
using BadInput = CModelsTest;

std::string live_key(int64_t stream_id) { return "rsdb:stream:" + std::to_string(stream_id) + ":live"; }

bool is_lower_hex(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

// ================================================================ users

// The C face of the users model: every function called, its JSON record's fields mapped, its
// status codes, and no output on failure. Behaviour is specified in tests/models.rs.
TEST_F(CUsers, EveryUserFunctionReturnsItsRecordAsJsonThroughTheCApi) {
    const std::string password = "correct horse battery staple";
    json created = create_user("Alice_Streams", "Alice@Example.com", password, "Alice");
    const int64_t id = created.at("id");
    EXPECT_GT(id, 0);
    EXPECT_EQ(created.at("username"), "Alice_Streams");
    EXPECT_EQ(created.at("email"), "Alice@Example.com");
    EXPECT_EQ(created.at("display_name"), "Alice");
    EXPECT_TRUE(created.at("avatar_url").is_null());
    EXPECT_EQ(created.at("is_verified"), false);
    EXPECT_EQ(created.at("is_active"), true);
    EXPECT_TRUE(created.at("last_login_at").is_null());
    EXPECT_TRUE(created.at("created_at").is_string());
    EXPECT_TRUE(created.at("updated_at").is_string());
    EXPECT_EQ(created.size(), 10u) << created.dump() << " (and never password_hash)";
    EXPECT_TRUE(create_user("bob", "bob@example.com", "bob's password").at("display_name").is_null())
        << "a NULL display name stays unset";

    json by_name = authenticate("alice_streams", password);
    EXPECT_EQ(by_name.at("id"), id);
    EXPECT_TRUE(by_name.at("last_login_at").is_string());
    EXPECT_EQ(authenticate("ALICE@EXAMPLE.COM", password).at("id"), id);
    EXPECT_EQ(get_user(id).at("username"), "Alice_Streams");
    OutString out;
    EXPECT_EQ(RSDB_JSON(rsdb_users_get_by_username(users_.get(), "ALICE_STREAMS", out.out()), out).at("id"), id);
    EXPECT_EQ(RSDB_JSON(rsdb_users_get_by_email(users_.get(), "alice@example.COM", out.out()), out).at("id"), id);

    json updated = RSDB_JSON(
        rsdb_users_update_profile(users_.get(), id, "Alice in Streamland", "https://cdn.example.com/a.png", out.out()), out);
    EXPECT_EQ(updated.at("display_name"), "Alice in Streamland");
    EXPECT_EQ(updated.at("avatar_url"), "https://cdn.example.com/a.png");
    updated = RSDB_JSON(rsdb_users_update_profile(users_.get(), id, nullptr, "https://cdn.example.com/b.png", out.out()), out);
    EXPECT_EQ(updated.at("display_name"), "Alice in Streamland") << "a NULL field crosses as unset";
    EXPECT_EQ(updated.at("avatar_url"), "https://cdn.example.com/b.png");

    EXPECT_TRUE(verify_password(id, password));
    EXPECT_FALSE(verify_password(id, "not the password"));
    ASSERT_RSDB_OK(rsdb_users_mark_verified(users_.get(), id));
    EXPECT_EQ(get_user(id).at("is_verified"), true);
    ASSERT_RSDB_OK(rsdb_users_set_active(users_.get(), id, 0));
    EXPECT_EQ(get_user(id).at("is_active"), false);
    failed_login("alice_streams", password);
    ASSERT_RSDB_OK(rsdb_users_set_active(users_.get(), id, 1));
    EXPECT_EQ(get_user(id).at("is_active"), true);
    const int64_t other = insert_user("fresh");
    EXPECT_TRUE(get_user(other).at("last_login_at").is_null());
    ASSERT_RSDB_OK(rsdb_users_record_login(users_.get(), other));
    EXPECT_TRUE(get_user(other).at("last_login_at").is_string());
    ASSERT_RSDB_OK(rsdb_users_change_password(users_.get(), id, "a brand new secret"));
    EXPECT_EQ(authenticate("alice_streams", "a brand new secret").at("id"), id);
    failed_login("alice_streams", password);

    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "ALICE_STREAMS", "x@example.com", "long enough 1", nullptr, out.out()),
                      RSDB_ERR_CONFLICT, "username already exists"));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "carol", "not-an-email", "long enough 1", nullptr, out.out()),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_users_change_password(users_.get(), id, "short"), RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(Users, UnknownIdsAreNotFound) {
    OutString out;
    EXPECT_TRUE(Fails(rsdb_users_get(users_.get(), 424242, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(users_.get(), "ghost", out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_get_by_email(users_.get(), "ghost@example.com", out.out()), RSDB_ERR_NOT_FOUND));
    int matches = -1;
    EXPECT_TRUE(Fails(rsdb_users_verify_password(users_.get(), 424242, "whatever1", &matches), RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(matches, -1);
    EXPECT_TRUE(Fails(rsdb_users_update_profile(users_.get(), 424242, "x", nullptr, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_mark_verified(users_.get(), 424242), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_set_active(users_.get(), 424242, 0), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_record_login(users_.get(), 424242), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_change_password(users_.get(), 424242, "long enough 1"), RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(count_rows("users"), 0);
}

// ================================================================ streams

// The C face of the stream model: every function called, its JSON record's fields, the
// "negative number or NULL string leaves a statistic unset" mapping, codes and no output on
// failure. Behaviour is specified in tests/models.rs.
TEST_F(CStreams, EveryStreamFunctionReturnsItsRecordAsJsonThroughTheCApi) {
    const int64_t owner = insert_user("streamer");
    json a = create_stream(owner, "Speedrun", "any% attempts");
    json b = create_stream(owner, "Chill", nullptr);
    const int64_t id = a.at("id");
    EXPECT_EQ(a.at("user_id"), owner);
    EXPECT_EQ(a.at("name"), "Speedrun");
    EXPECT_EQ(a.at("description"), "any% attempts");
    EXPECT_TRUE(b.at("description").is_null()) << "a NULL description stays unset";
    const std::string key = a.at("stream_key");
    EXPECT_EQ(key.rfind("live_", 0), 0u) << key;
    EXPECT_EQ(key.size(), 69u);
    EXPECT_TRUE(is_lower_hex(key.substr(5))) << key;
    EXPECT_EQ(a.at("is_live"), false);
    EXPECT_EQ(a.at("viewer_count"), 0);
    for (const char* unset : {"bitrate_kbps", "fps", "resolution", "codec", "started_at", "ended_at"}) {
        EXPECT_TRUE(a.at(unset).is_null()) << unset;
    }
    EXPECT_TRUE(a.at("created_at").is_string());
    EXPECT_TRUE(a.at("updated_at").is_string());
    EXPECT_EQ(a.size(), 15u) << a.dump();

    OutString out;
    EXPECT_EQ(RSDB_JSON(rsdb_streams_get_by_key(streams_.get(), key.c_str(), out.out()), out), get_stream(id));
    json rekeyed = RSDB_JSON(rsdb_streams_regenerate_key(streams_.get(), b.at("id"), out.out()), out);
    EXPECT_EQ(rekeyed.at("id"), b.at("id"));
    EXPECT_NE(rekeyed.at("stream_key"), b.at("stream_key"));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(streams_.get(), b.at("stream_key").get<std::string>().c_str(), out.out()),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_streams_get(streams_.get(), id + 1000, out.out()), RSDB_ERR_NOT_FOUND));
    int64_t viewers = -1;
    EXPECT_TRUE(Fails(rsdb_streams_viewer_joined(streams_.get(), id, &viewers), RSDB_ERR_STATE));
    EXPECT_EQ(viewers, -1) << "no output on failure";

    json session = start_stream(id);
    EXPECT_GT(session.at("id").get<int64_t>(), 0);
    EXPECT_EQ(session.at("stream_id"), id);
    EXPECT_TRUE(session.at("started_at").is_string());
    EXPECT_TRUE(session.at("ended_at").is_null());
    EXPECT_TRUE(session.at("duration_seconds").is_null());
    EXPECT_TRUE(Fails(rsdb_streams_start(streams_.get(), id, out.out()), RSDB_ERR_STATE));
    EXPECT_TRUE(out.is_null());
    EXPECT_EQ(get_stream(id).at("is_live"), true);
    json live_list = RSDB_JSON(rsdb_streams_list_live(streams_.get(), out.out()), out);
    ASSERT_TRUE(live_list.is_array());
    EXPECT_TRUE(std::any_of(live_list.begin(), live_list.end(), [&](const json& s) { return s.at("id") == id; }));

    ASSERT_RSDB_OK(rsdb_streams_viewer_joined(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 1);
    ASSERT_RSDB_OK(rsdb_streams_viewer_joined(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 2);
    ASSERT_RSDB_OK(rsdb_streams_viewer_left(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 1);
    ASSERT_RSDB_OK(rsdb_streams_viewer_count(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 1);

    ASSERT_RSDB_OK(rsdb_streams_update_stats(streams_.get(), id, 6000, 60, "1920x1080", "h264"));
    json stats = get_stream(id);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000);
    EXPECT_EQ(stats.at("fps"), 60);
    EXPECT_EQ(stats.at("resolution"), "1920x1080");
    EXPECT_EQ(stats.at("codec"), "h264");
    ASSERT_RSDB_OK(rsdb_streams_update_stats(streams_.get(), id, -1, 30, nullptr, "av1"));
    stats = get_stream(id);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000) << "a negative number is unset";
    EXPECT_EQ(stats.at("fps"), 30);
    EXPECT_EQ(stats.at("resolution"), "1920x1080") << "a NULL string is unset";
    EXPECT_EQ(stats.at("codec"), "av1");

    json ended = stop_stream(id);
    EXPECT_EQ(ended.at("id"), session.at("id"));
    EXPECT_EQ(ended.at("total_viewers"), 2);
    EXPECT_EQ(ended.at("peak_viewers"), 2);
    EXPECT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_EQ(get_session(session.at("id")), ended);
    EXPECT_EQ(get_stream(id).at("is_live"), false);
    EXPECT_TRUE(Fails(rsdb_streams_stop(streams_.get(), id, out.out()), RSDB_ERR_STATE));
    EXPECT_TRUE(Fails(rsdb_streams_start(streams_.get(), id + 1000, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_streams_create(streams_.get(), owner + 1000, "Orphan", nullptr, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
}

// Face-only: a C callback registered with rsdb_redis_subscribe runs on a library thread and
// receives each lifecycle message with its channel and its payload length.
TEST_F(CStreams, LifecycleMessagesReachACCallbackOnALibraryThread) {
    const int64_t id = create_stream(insert_user("observed"), "Observed").at("id");
    struct Seen {
        std::mutex m;
        std::condition_variable cv;
        int64_t stream_id = 0;
        std::vector<std::pair<std::string, std::thread::id>> got;
        static void on_message(void* user_data, const char* channel, const char* payload, size_t len) {
            auto* self = static_cast<Seen*>(user_data);
            const json j = json::parse(std::string(payload, len), nullptr, false);
            if (!j.is_object() || j.value("stream_id", int64_t{-1}) != self->stream_id) return;
            std::lock_guard<std::mutex> lock(self->m);
            self->got.emplace_back(channel, std::this_thread::get_id());
            self->cv.notify_all();
        }
    } seen;
    seen.stream_id = id;
    rsdb_redis* raw_observer = nullptr;
    ASSERT_RSDB_OK(rsdb_redis_open(cfg_.get(), &raw_observer));
    RedisPtr observer(raw_observer);
    uint64_t sub = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(observer.get(), "stream.*", &Seen::on_message, &seen, &sub));
    start_stream(id);
    stop_stream(id);
    {
        std::unique_lock<std::mutex> lock(seen.m);
        ASSERT_TRUE(seen.cv.wait_for(lock, 10s, [&] { return seen.got.size() >= 2; })) << seen.got.size();
        EXPECT_EQ(seen.got[0].first, "stream.started");
        EXPECT_EQ(seen.got[1].first, "stream.stopped");
        for (const auto& entry : seen.got) EXPECT_NE(entry.second, std::this_thread::get_id());
    }
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(observer.get(), sub));
}

TEST_F(Streams, CreatingAStreamForAMissingUserIsNotFound) {
    OutString out;
    EXPECT_TRUE(Fails(rsdb_streams_create(streams_.get(), 987654, "Orphan", nullptr, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(count_rows("streams"), 0);
}

TEST_F(Streams, AStreamCanGoLiveAgainWithANewSession) {
    const int64_t owner = insert_user("twice");
    const int64_t id = create_stream(owner, "Again").at("id");
    const int64_t first = start_stream(id).at("id");
    stop_stream(id);
    const int64_t second = start_stream(id).at("id");
    EXPECT_NE(first, second);
    OutString hash_out;
    json hash = RSDB_JSON(rsdb_redis_hgetall(redis_.get(), live_key(id).c_str(), hash_out.out()), hash_out);
    EXPECT_EQ(hash.value("session_id", std::string()), std::to_string(second));
    stop_stream(id);
    OutString out;
    json list = RSDB_JSON(rsdb_stream_sessions_list(sessions_.get(), id, out.out()), out);
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].at("id"), second) << "newest first";
    EXPECT_EQ(list[1].at("id"), first);
    json log = load_events("stream", std::to_string(id));
    ASSERT_EQ(log.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(log[i].at("version"), static_cast<int64_t>(i + 1));
        EXPECT_EQ(log[i].at("event_type"), i % 2 == 0 ? "stream.started" : "stream.stopped");
    }
}

// ================================================================ stream sessions

// The C face of the stream session model. Behaviour is specified in tests/models.rs.
TEST_F(CStreamSessions, EveryStreamSessionFunctionReturnsItsRecordAsJsonThroughTheCApi) {
    const int64_t stream_id = create_stream(insert_user("sessions"), "Sessions").at("id");
    OutString out;
    json s = RSDB_JSON(rsdb_stream_sessions_create(sessions_.get(), stream_id, out.out()), out);
    const int64_t id = s.at("id");
    EXPECT_EQ(s.at("stream_id"), stream_id);
    EXPECT_TRUE(s.at("started_at").is_string());
    EXPECT_TRUE(s.at("ended_at").is_null());
    EXPECT_TRUE(s.at("duration_seconds").is_null());
    EXPECT_EQ(s.at("total_viewers"), 0);
    EXPECT_EQ(s.at("peak_viewers"), 0);
    EXPECT_EQ(s.at("bytes_transferred"), 0);
    EXPECT_EQ(s.size(), 8u) << s.dump();

    ASSERT_RSDB_OK(rsdb_stream_sessions_record_viewer(sessions_.get(), id, 1));
    ASSERT_RSDB_OK(rsdb_stream_sessions_record_viewer(sessions_.get(), id, 4));
    ASSERT_RSDB_OK(rsdb_stream_sessions_add_bytes(sessions_.get(), id, 5'000'000'000LL));
    s = get_session(id);
    EXPECT_EQ(s.at("total_viewers"), 2);
    EXPECT_EQ(s.at("peak_viewers"), 4);
    EXPECT_EQ(s.at("bytes_transferred"), 5'000'000'000LL) << "64 bits cross";
    EXPECT_TRUE(Fails(rsdb_stream_sessions_add_bytes(sessions_.get(), id, -1), RSDB_ERR_INVALID_ARGUMENT));

    json ended = RSDB_JSON(rsdb_stream_sessions_end(sessions_.get(), id, out.out()), out);
    EXPECT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_TRUE(Fails(rsdb_stream_sessions_end(sessions_.get(), id, out.out()), RSDB_ERR_STATE));
    EXPECT_TRUE(out.is_null());
    json list = RSDB_JSON(rsdb_stream_sessions_list(sessions_.get(), stream_id, out.out()), out);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0], ended);
    EXPECT_EQ(RSDB_JSON(rsdb_stream_sessions_list(sessions_.get(), stream_id + 1000, out.out()), out), json::array());
    EXPECT_TRUE(Fails(rsdb_stream_sessions_get(sessions_.get(), id + 1000, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_stream_sessions_create(sessions_.get(), stream_id + 1000, out.out()), RSDB_ERR_NOT_FOUND));
}

// ================================================================ event store

// The C face of the event store: JSON text in and out, new_version optional and untouched on
// failure, a stale version as RSDB_ERR_CONFLICT. Behaviour is specified in tests/event_store.rs.
TEST_F(CEvents, EveryEventStoreFunctionRoundTripsJsonThroughTheCApi) {
    EXPECT_EQ(version_of("order", "o-1"), 0);
    EXPECT_EQ(load_events("order", "o-1"), json::array());
    const json placed = {{"event_type", "order.placed"},
                         {"payload", {{"total", 42}, {"items", {1, 2}}}},
                         {"metadata", {{"ip", "10.0.0.1"}}},
                         {"user_id", 7}};
    int64_t v = -1;
    ASSERT_RSDB_OK(append("order", "o-1", 0, json::array({placed, json{{"event_type", "order.paid"}}}), &v));
    EXPECT_EQ(v, 2);
    ASSERT_RSDB_OK(append("order", "o-1", 2, json::array({json{{"event_type", "order.shipped"}}}), nullptr))
        << "new_version may be NULL";
    v = -1;
    EXPECT_TRUE(Fails(append("order", "o-1", 1, json::array({json{{"event_type", "stale"}}}), &v), RSDB_ERR_CONFLICT));
    EXPECT_EQ(v, -1) << "new_version is not written on failure";

    const json all = load_events("order", "o-1");
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all[0].at("aggregate_type"), "order");
    EXPECT_EQ(all[0].at("aggregate_id"), "o-1");
    EXPECT_EQ(all[0].at("version"), 1);
    EXPECT_EQ(all[0].at("event_type"), "order.placed");
    EXPECT_EQ(all[0].at("payload"), placed.at("payload"));
    EXPECT_EQ(all[0].at("metadata"), placed.at("metadata"));
    EXPECT_EQ(all[0].at("user_id"), 7);
    EXPECT_TRUE(all[0].at("created_at").is_string());
    EXPECT_EQ(all[1].at("payload"), json::object()) << "payload defaults to {}";
    EXPECT_TRUE(all[1].at("user_id").is_null());
    EXPECT_EQ(load_events("order", "o-1", 2).size(), 1u);
    EXPECT_EQ(version_of("order", "o-1"), 3);

    OutString out;
    json trail = RSDB_JSON(rsdb_events_by_user(events_.get(), 7, 100, out.out()), out);
    ASSERT_EQ(trail.size(), 1u);
    EXPECT_EQ(trail[0].at("event_type"), "order.placed");

    const json state = {{"balance", 42}, {"tags", {"a", "b"}}};
    ASSERT_RSDB_OK(rsdb_events_save_snapshot(events_.get(), "order", "o-1", 2, state.dump().c_str()));
    json loaded = RSDB_JSON(rsdb_events_load_from_snapshot(events_.get(), "order", "o-1", out.out()), out);
    EXPECT_EQ(loaded.at("snapshot").at("aggregate_type"), "order");
    EXPECT_EQ(loaded.at("snapshot").at("aggregate_id"), "o-1");
    EXPECT_EQ(loaded.at("snapshot").at("version"), 2);
    EXPECT_EQ(loaded.at("snapshot").at("state"), state);
    ASSERT_EQ(loaded.at("events").size(), 1u);
    EXPECT_EQ(loaded.at("events")[0].at("version"), 3);
    EXPECT_NE(rsdb_events_save_snapshot(events_.get(), "order", "o-1", 9, state.dump().c_str()), RSDB_OK);
}

// Face-only: native threads share one rsdb_events handle, call into the library at the same
// time and see conflicts as RSDB_ERR_CONFLICT.
TEST_F(CEvents, NativeThreadsSharingOneHandleRetryConflictsAndLoseNothing) {
    constexpr int kThreads = 8;
    constexpr int kPerThread = 10;
    std::atomic<int> conflicts{0};
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::mutex errors_mutex;
    std::vector<std::string> errors;
    std::vector<std::thread> threads;
    rsdb_events* store = events_.get();
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            ready.fetch_add(1);
            while (!go.load()) std::this_thread::yield();
            for (int n = 0; n < kPerThread; ++n) {
                const std::string events =
                    json::array({json{{"event_type", "counter.incremented"}, {"payload", {{"thread", t}, {"n", n}}}}})
                        .dump();
                bool done = false;
                for (int attempt = 0; attempt < 1000 && !done; ++attempt) {
                    int64_t version = -1;
                    int rc = rsdb_events_version(store, "counter", "shared", &version);
                    if (rc == RSDB_OK) rc = rsdb_events_append(store, "counter", "shared", version, events.c_str(), nullptr);
                    if (rc == RSDB_OK) {
                        done = true;
                    } else if (rc == RSDB_ERR_CONFLICT) {
                        conflicts.fetch_add(1);
                    } else {
                        std::lock_guard<std::mutex> lock(errors_mutex);
                        errors.push_back("thread " + std::to_string(t) + ": status " + std::to_string(rc) + ": " +
                                         last_error());
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

    json all = load_events("counter", "shared");
    ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
    std::set<std::pair<int, int>> seen;
    std::map<int, int> next_n;  // each thread's events appear in its own order
    for (size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(all[i].at("version"), static_cast<int64_t>(i + 1));
        const int t = all[i].at("payload").at("thread");
        const int n = all[i].at("payload").at("n");
        EXPECT_TRUE(seen.insert({t, n}).second) << "(" << t << ", " << n << ") appended twice";
        EXPECT_EQ(n, next_n[t]) << "thread " << t;
        next_n[t] = n + 1;
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
    EXPECT_EQ(version_of("counter", "shared"), kThreads * kPerThread);
    RecordProperty("conflicts", conflicts.load());
    EXPECT_GE(conflicts.load(), 1) << "the writers never collided, so the conflict path was not exercised";
}

TEST_F(Events, MalformedEventsJsonIsAJsonErrorAndWritesNothing) {
    int64_t v = -1;
    for (const char* bad : {"[{", "{\"event_type\":\"x\"}", "42", "\"text\"", "[{\"payload\":{}}]",
                            "[{\"event_type\":5}]", "[1,2]", "[{\"event_type\":\"x\"}] trailing", ""}) {
        EXPECT_TRUE(Fails(rsdb_events_append(events_.get(), "bad", "b-1", 0, bad, &v), RSDB_ERR_JSON))
            << "events_json: " << bad;
    }
    EXPECT_EQ(v, -1);
    EXPECT_EQ(count_rows("event_log"), 0);
    ASSERT_RSDB_OK(append("bad", "b-1", 0, json::array({json{{"event_type", "ok"}}}), &v));
    EXPECT_TRUE(Fails(rsdb_events_save_snapshot(events_.get(), "bad", "b-1", 1, "{not json"), RSDB_ERR_JSON));
    EXPECT_EQ(count_rows("snapshots"), 0);
}

// ================================================================ bad input

TEST(ModelHandles, EveryReleaseFunctionAcceptsNull) {
    rsdb_users_free(nullptr);
    rsdb_streams_free(nullptr);
    rsdb_stream_sessions_free(nullptr);
    rsdb_events_free(nullptr);
    SUCCEED();
}

TEST_F(BadInput, NullModelHandlesAreRejected) {
    char* s = nullptr;
    int i = 0;
    int64_t n = 0;
    rsdb_users* u = nullptr;
    rsdb_streams* st = nullptr;
    rsdb_stream_sessions* ss = nullptr;
    rsdb_events* ev = nullptr;
    EXPECT_TRUE(Fails(rsdb_users_new(nullptr, &u), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_streams_new(nullptr, redis_.get(), &st), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_streams_new(db_.get(), nullptr, &st), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_new(nullptr, &ss), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_events_new(nullptr, &ev), RSDB_ERR_NULL, "db"));
    EXPECT_EQ(u, nullptr);
    EXPECT_EQ(st, nullptr);
    EXPECT_EQ(ss, nullptr);
    EXPECT_EQ(ev, nullptr);

    EXPECT_TRUE(Fails(rsdb_users_create(nullptr, "u", "u@example.com", "password1", nullptr, &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(nullptr, "u", "password1", &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_verify_password(nullptr, 1, "password1", &i), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_get(nullptr, 1, &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(nullptr, "u", &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_email(nullptr, "u@example.com", &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_update_profile(nullptr, 1, "d", "a", &s), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_mark_verified(nullptr, 1), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_set_active(nullptr, 1, 1), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_record_login(nullptr, 1), RSDB_ERR_NULL, "users"));
    EXPECT_TRUE(Fails(rsdb_users_change_password(nullptr, 1, "password2"), RSDB_ERR_NULL, "users"));

    EXPECT_TRUE(Fails(rsdb_streams_create(nullptr, 1, "n", nullptr, &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_get(nullptr, 1, &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(nullptr, "live_x", &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_regenerate_key(nullptr, 1, &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_start(nullptr, 1, &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_stop(nullptr, 1, &s), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_viewer_joined(nullptr, 1, &n), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_viewer_left(nullptr, 1, &n), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_viewer_count(nullptr, 1, &n), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_update_stats(nullptr, 1, 1, 1, nullptr, nullptr), RSDB_ERR_NULL, "streams"));
    EXPECT_TRUE(Fails(rsdb_streams_list_live(nullptr, &s), RSDB_ERR_NULL, "streams"));

    EXPECT_TRUE(Fails(rsdb_stream_sessions_create(nullptr, 1, &s), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_get(nullptr, 1, &s), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_record_viewer(nullptr, 1, 1), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_add_bytes(nullptr, 1, 1), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_end(nullptr, 1, &s), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_list(nullptr, 1, &s), RSDB_ERR_NULL, "sessions"));

    EXPECT_TRUE(Fails(rsdb_events_append(nullptr, "t", "i", 0, "[]", &n), RSDB_ERR_NULL, "events"));
    EXPECT_TRUE(Fails(rsdb_events_load(nullptr, "t", "i", 0, &s), RSDB_ERR_NULL, "events"));
    EXPECT_TRUE(Fails(rsdb_events_version(nullptr, "t", "i", &n), RSDB_ERR_NULL, "events"));
    EXPECT_TRUE(Fails(rsdb_events_by_user(nullptr, 1, 10, &s), RSDB_ERR_NULL, "events"));
    EXPECT_TRUE(Fails(rsdb_events_save_snapshot(nullptr, "t", "i", 1, "{}"), RSDB_ERR_NULL, "events"));
    EXPECT_TRUE(Fails(rsdb_events_load_from_snapshot(nullptr, "t", "i", &s), RSDB_ERR_NULL, "events"));
    EXPECT_EQ(s, nullptr);
}

TEST_F(BadInput, NullStringsAreRejectedAndNothingIsWritten) {
    OutString s;
    int i = 0;
    rsdb_users* u = users_.get();
    EXPECT_TRUE(Fails(rsdb_users_create(u, nullptr, "a@example.com", "password1", nullptr, s.out()), RSDB_ERR_NULL,
                      "username"));
    EXPECT_TRUE(Fails(rsdb_users_create(u, "a", nullptr, "password1", nullptr, s.out()), RSDB_ERR_NULL, "email"));
    EXPECT_TRUE(Fails(rsdb_users_create(u, "a", "a@example.com", nullptr, nullptr, s.out()), RSDB_ERR_NULL, "password"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(u, nullptr, "password1", s.out()), RSDB_ERR_NULL, "login"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(u, "a", nullptr, s.out()), RSDB_ERR_NULL, "password"));
    EXPECT_TRUE(Fails(rsdb_users_verify_password(u, 1, nullptr, &i), RSDB_ERR_NULL, "password"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(u, nullptr, s.out()), RSDB_ERR_NULL, "username"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_email(u, nullptr, s.out()), RSDB_ERR_NULL, "email"));
    EXPECT_TRUE(Fails(rsdb_users_change_password(u, 1, nullptr), RSDB_ERR_NULL, "new_password"));

    const int64_t owner = insert_user("nulls");
    EXPECT_TRUE(Fails(rsdb_streams_create(streams_.get(), owner, nullptr, "d", s.out()), RSDB_ERR_NULL, "name"));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(streams_.get(), nullptr, s.out()), RSDB_ERR_NULL, "stream_key"));

    rsdb_events* e = events_.get();
    EXPECT_TRUE(Fails(rsdb_events_append(e, nullptr, "i", 0, R"([{"event_type":"x"}])", nullptr), RSDB_ERR_NULL,
                      "aggregate_type"));
    EXPECT_TRUE(Fails(rsdb_events_append(e, "t", nullptr, 0, R"([{"event_type":"x"}])", nullptr), RSDB_ERR_NULL,
                      "aggregate_id"));
    EXPECT_TRUE(Fails(rsdb_events_append(e, "t", "i", 0, nullptr, nullptr), RSDB_ERR_NULL, "events_json"));
    EXPECT_TRUE(Fails(rsdb_events_load(e, nullptr, "i", 0, s.out()), RSDB_ERR_NULL, "aggregate_type"));
    EXPECT_TRUE(Fails(rsdb_events_load(e, "t", nullptr, 0, s.out()), RSDB_ERR_NULL, "aggregate_id"));
    int64_t n = 0;
    EXPECT_TRUE(Fails(rsdb_events_version(e, nullptr, "i", &n), RSDB_ERR_NULL, "aggregate_type"));
    EXPECT_TRUE(Fails(rsdb_events_save_snapshot(e, "t", "i", 1, nullptr), RSDB_ERR_NULL, "state_json"));
    EXPECT_TRUE(Fails(rsdb_events_save_snapshot(e, nullptr, "i", 1, "{}"), RSDB_ERR_NULL, "aggregate_type"));
    EXPECT_TRUE(Fails(rsdb_events_load_from_snapshot(e, "t", nullptr, s.out()), RSDB_ERR_NULL, "aggregate_id"));

    EXPECT_EQ(count_rows("users"), 1);  // the owner inserted above
    EXPECT_EQ(count_rows("streams"), 0);
    EXPECT_EQ(count_rows("event_log"), 0);
}

TEST_F(BadInput, NullModelOutPointersAreRejectedAndNothingIsWritten) {
    rsdb_db* db = db_.get();
    EXPECT_TRUE(Fails(rsdb_users_new(db, nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_streams_new(db, redis_.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_new(db, nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_events_new(db, nullptr), RSDB_ERR_NULL, "out"));

    rsdb_users* u = users_.get();
    EXPECT_TRUE(Fails(rsdb_users_create(u, "nouser", "nouser@example.com", "password1", nullptr, nullptr),
                      RSDB_ERR_NULL, "user_json"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(u, "nouser", "password1", nullptr), RSDB_ERR_NULL, "user_json"));
    EXPECT_TRUE(Fails(rsdb_users_verify_password(u, 1, "password1", nullptr), RSDB_ERR_NULL, "matches"));
    EXPECT_TRUE(Fails(rsdb_users_get(u, 1, nullptr), RSDB_ERR_NULL, "user_json"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(u, "nouser", nullptr), RSDB_ERR_NULL, "user_json"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_email(u, "nouser@example.com", nullptr), RSDB_ERR_NULL, "user_json"));
    EXPECT_TRUE(Fails(rsdb_users_update_profile(u, 1, "d", nullptr, nullptr), RSDB_ERR_NULL, "user_json"));

    const int64_t owner = insert_user("outs");
    rsdb_streams* st = streams_.get();
    EXPECT_TRUE(Fails(rsdb_streams_create(st, owner, "nostream", nullptr, nullptr), RSDB_ERR_NULL, "stream_json"));
    EXPECT_TRUE(Fails(rsdb_streams_get(st, 1, nullptr), RSDB_ERR_NULL, "stream_json"));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(st, "live_x", nullptr), RSDB_ERR_NULL, "stream_json"));
    EXPECT_TRUE(Fails(rsdb_streams_regenerate_key(st, 1, nullptr), RSDB_ERR_NULL, "stream_json"));
    EXPECT_TRUE(Fails(rsdb_streams_list_live(st, nullptr), RSDB_ERR_NULL, "streams_json"));
    EXPECT_TRUE(Fails(rsdb_streams_viewer_count(st, 1, nullptr), RSDB_ERR_NULL, "viewers"));

    const int64_t stream_id = create_stream(owner, "outs").at("id");
    EXPECT_TRUE(Fails(rsdb_streams_start(st, stream_id, nullptr), RSDB_ERR_NULL, "session_json"));
    EXPECT_EQ(get_stream(stream_id).at("is_live"), false) << "a refused start changes nothing";

    rsdb_stream_sessions* ss = sessions_.get();
    EXPECT_TRUE(Fails(rsdb_stream_sessions_create(ss, stream_id, nullptr), RSDB_ERR_NULL, "session_json"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_get(ss, 1, nullptr), RSDB_ERR_NULL, "session_json"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_end(ss, 1, nullptr), RSDB_ERR_NULL, "session_json"));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_list(ss, stream_id, nullptr), RSDB_ERR_NULL, "sessions_json"));

    rsdb_events* e = events_.get();
    EXPECT_TRUE(Fails(rsdb_events_load(e, "t", "i", 0, nullptr), RSDB_ERR_NULL, "events_json"));
    EXPECT_TRUE(Fails(rsdb_events_version(e, "t", "i", nullptr), RSDB_ERR_NULL, "version"));
    EXPECT_TRUE(Fails(rsdb_events_by_user(e, 1, 10, nullptr), RSDB_ERR_NULL, "events_json"));
    EXPECT_TRUE(Fails(rsdb_events_load_from_snapshot(e, "t", "i", nullptr), RSDB_ERR_NULL, "json"));

    EXPECT_EQ(count_rows("users"), 1);
    EXPECT_EQ(count_rows("streams"), 1);
    EXPECT_EQ(count_rows("stream_sessions"), 0);
    EXPECT_EQ(count_rows("event_log"), 0);
}

TEST_F(BadInput, InvalidUtf8InEveryModelStringIsRejectedByTheCApi) {
    const std::string bad = "caf\xC3";      // truncated two-byte sequence
    const std::string bad2 = "\xFF\xFEzz";  // bytes that never occur in UTF-8
    OutString s;
    int i = 0;
    rsdb_users* u = users_.get();
    EXPECT_TRUE(Fails(rsdb_users_create(u, bad.c_str(), "a@example.com", "password1", nullptr, s.out()),
                      RSDB_ERR_INVALID_UTF8, "username"));
    EXPECT_TRUE(Fails(rsdb_users_create(u, "a", (bad2 + "@example.com").c_str(), "password1", nullptr, s.out()),
                      RSDB_ERR_INVALID_UTF8, "email"));
    EXPECT_TRUE(Fails(rsdb_users_create(u, "a", "a@example.com", ("password" + bad).c_str(), nullptr, s.out()),
                      RSDB_ERR_INVALID_UTF8, "password"));
    EXPECT_TRUE(Fails(rsdb_users_create(u, "a", "a@example.com", "password1", bad2.c_str(), s.out()),
                      RSDB_ERR_INVALID_UTF8, "display_name"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(u, bad.c_str(), "password1", s.out()), RSDB_ERR_INVALID_UTF8, "login"));
    EXPECT_TRUE(Fails(rsdb_users_authenticate(u, "a", ("password" + bad2).c_str(), s.out()), RSDB_ERR_INVALID_UTF8,
                      "password"));
    EXPECT_TRUE(Fails(rsdb_users_verify_password(u, 1, bad.c_str(), &i), RSDB_ERR_INVALID_UTF8, "password"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(u, bad.c_str(), s.out()), RSDB_ERR_INVALID_UTF8, "username"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_email(u, bad2.c_str(), s.out()), RSDB_ERR_INVALID_UTF8, "email"));
    EXPECT_TRUE(Fails(rsdb_users_change_password(u, 1, ("password" + bad).c_str()), RSDB_ERR_INVALID_UTF8,
                      "new_password"));

    const int64_t owner = insert_user("utf8");
    EXPECT_TRUE(Fails(rsdb_users_update_profile(u, owner, bad.c_str(), nullptr, s.out()), RSDB_ERR_INVALID_UTF8,
                      "display_name"));
    EXPECT_TRUE(Fails(rsdb_users_update_profile(u, owner, nullptr, bad2.c_str(), s.out()), RSDB_ERR_INVALID_UTF8,
                      "avatar_url"));
    rsdb_streams* st = streams_.get();
    EXPECT_TRUE(Fails(rsdb_streams_create(st, owner, bad.c_str(), nullptr, s.out()), RSDB_ERR_INVALID_UTF8, "name"));
    EXPECT_TRUE(Fails(rsdb_streams_create(st, owner, "ok", bad2.c_str(), s.out()), RSDB_ERR_INVALID_UTF8,
                      "description"));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(st, ("live_" + bad).c_str(), s.out()), RSDB_ERR_INVALID_UTF8,
                      "stream_key"));

    rsdb_events* e = events_.get();
    const char* one = R"([{"event_type":"x"}])";
    EXPECT_TRUE(Fails(rsdb_events_append(e, bad.c_str(), "i", 0, one, nullptr), RSDB_ERR_INVALID_UTF8,
                      "aggregate_type"));
    EXPECT_TRUE(Fails(rsdb_events_append(e, "t", bad2.c_str(), 0, one, nullptr), RSDB_ERR_INVALID_UTF8,
                      "aggregate_id"));
    const std::string bad_events = "[{\"event_type\":\"x\",\"payload\":{\"s\":\"" + bad + "\"}}]";
    EXPECT_TRUE(Fails(rsdb_events_append(e, "t", "i", 0, bad_events.c_str(), nullptr), RSDB_ERR_INVALID_UTF8,
                      "events_json"));
    EXPECT_TRUE(Fails(rsdb_events_load(e, bad.c_str(), "i", 0, s.out()), RSDB_ERR_INVALID_UTF8, "aggregate_type"));
    int64_t n = 0;
    EXPECT_TRUE(Fails(rsdb_events_version(e, "t", bad.c_str(), &n), RSDB_ERR_INVALID_UTF8, "aggregate_id"));
    EXPECT_TRUE(Fails(rsdb_events_load_from_snapshot(e, bad2.c_str(), "i", s.out()), RSDB_ERR_INVALID_UTF8,
                      "aggregate_type"));

    EXPECT_EQ(count_rows("users"), 1);
    EXPECT_TRUE(get_user(owner).at("display_name").is_null());
    EXPECT_EQ(count_rows("streams"), 0);
    EXPECT_EQ(count_rows("event_log"), 0);
}
