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


/// Collects pub/sub messages delivered to rsdb_message_cb.
struct Inbox {
    struct Message {
        std::string channel;
        std::string payload;
    };
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Message> messages;

    static void callback(void* user_data, const char* channel, const char* payload, size_t payload_len) {
        auto* self = static_cast<Inbox*>(user_data);
        {
            std::lock_guard<std::mutex> lock(self->mutex);
            self->messages.push_back({channel, std::string(payload, payload_len)});
        }
        self->cv.notify_all();
    }

    /// The messages whose payload is a JSON object with this "stream_id", parsed, in order.
    std::vector<std::pair<std::string, json>> for_stream_locked(int64_t stream_id) const {
        std::vector<std::pair<std::string, json>> out;
        for (const auto& m : messages) {
            json j = json::parse(m.payload, nullptr, false);
            if (j.is_object() && j.contains("stream_id") && j["stream_id"].is_number_integer() &&
                j["stream_id"].get<int64_t>() == stream_id) {
                out.emplace_back(m.channel, j);
            }
        }
        return out;
    }

    bool wait_for_stream_messages(int64_t stream_id, size_t n, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex);
        return cv.wait_for(lock, timeout, [&] { return for_stream_locked(stream_id).size() >= n; });
    }

    std::vector<std::pair<std::string, json>> for_stream(int64_t stream_id) {
        std::lock_guard<std::mutex> lock(mutex);
        return for_stream_locked(stream_id);
    }
};

// Strings that break naive SQL splicing or escaping. None has control characters, which the
// models refuse in single-line fields.
const std::vector<std::string> kHostile = {
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE streams;--",
    "' OR '1'='1",
    "quotes ' '' \" \"\" ` \xC2\xB4",
    "back\\slash \\' \\\\ \\x41 \\n",
    "$1",
    "$1; DELETE FROM users WHERE $2 = $2",
    "\xC3\xBCn\xC3\xAF\x63\xC3\xB8\x64\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x8E\xAE \xE4\xB8\xAD\xE6\x96\x87",
};

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
using Streams = CModelsTest;
using StreamSessions = CModelsTest;
using Events = CModelsTest;
using HostileStrings = CModelsTest;
using BadInput = CModelsTest;

std::string live_key(int64_t stream_id) { return "rsdb:stream:" + std::to_string(stream_id) + ":live"; }
std::string viewers_key(int64_t stream_id) { return "rsdb:stream:" + std::to_string(stream_id) + ":viewers"; }

bool is_lower_hex(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

// ================================================================ users

TEST_F(Users, RegisterAuthenticateUpdateProfileAndReloadIt) {
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
    EXPECT_FALSE(created.contains("password_hash"));

    // By username and by email, both ignoring case; each login is recorded.
    json by_name = authenticate("alice_streams", password);
    EXPECT_EQ(by_name.at("id"), id);
    EXPECT_TRUE(by_name.at("last_login_at").is_string());
    EXPECT_FALSE(by_name.contains("password_hash"));
    json by_email = authenticate("ALICE@EXAMPLE.COM", password);
    EXPECT_EQ(by_email.at("id"), id);
    EXPECT_FALSE(by_email.contains("password_hash"));

    OutString out;
    json updated = RSDB_JSON(rsdb_users_update_profile(users_.get(), id, "Alice in Streamland",
                                                       "https://cdn.example.com/a.png", out.out()),
                             out);
    EXPECT_EQ(updated.at("display_name"), "Alice in Streamland");
    EXPECT_EQ(updated.at("avatar_url"), "https://cdn.example.com/a.png");
    // A NULL field stays as it is.
    updated = RSDB_JSON(rsdb_users_update_profile(users_.get(), id, nullptr, "https://cdn.example.com/b.png", out.out()),
                        out);
    EXPECT_EQ(updated.at("display_name"), "Alice in Streamland");
    EXPECT_EQ(updated.at("avatar_url"), "https://cdn.example.com/b.png");
    updated = RSDB_JSON(rsdb_users_update_profile(users_.get(), id, "Alice", nullptr, out.out()), out);
    EXPECT_EQ(updated.at("display_name"), "Alice");
    EXPECT_EQ(updated.at("avatar_url"), "https://cdn.example.com/b.png");

    json reloaded = get_user(id);
    EXPECT_EQ(reloaded.at("display_name"), "Alice");
    EXPECT_EQ(reloaded.at("avatar_url"), "https://cdn.example.com/b.png");
    EXPECT_TRUE(reloaded.at("last_login_at").is_string());
    EXPECT_FALSE(reloaded.contains("password_hash"));
    json by_username = RSDB_JSON(rsdb_users_get_by_username(users_.get(), "ALICE_STREAMS", out.out()), out);
    EXPECT_EQ(by_username.at("id"), id);
    EXPECT_FALSE(by_username.contains("password_hash"));
    json by_mail = RSDB_JSON(rsdb_users_get_by_email(users_.get(), "alice@example.COM", out.out()), out);
    EXPECT_EQ(by_mail.at("id"), id);
    EXPECT_FALSE(by_mail.contains("password_hash"));
    // The whole JSON text, not only the top-level keys, is free of the hash and the password.
    for (const std::string& text : {by_mail.dump(), reloaded.dump(), by_name.dump(), created.dump()}) {
        EXPECT_EQ(text.find("password_hash"), std::string::npos) << text;
        EXPECT_EQ(text.find("argon2"), std::string::npos) << text;
        EXPECT_EQ(text.find(password), std::string::npos) << text;
    }
}

TEST_F(Users, WrongPasswordUnknownUserAndDeactivatedUserAllFailWithAuth) {
    const std::string password = "right password 1";
    const int64_t id = create_user("carol", "carol@example.com", password).at("id");
    const std::string wrong = failed_login("carol", "wrong password 1");
    const std::string unknown = failed_login("nobody-here", password);
    const std::string unknown_email = failed_login("nobody@example.com", password);

    ASSERT_RSDB_OK(rsdb_users_set_active(users_.get(), id, 0));
    EXPECT_EQ(get_user(id).at("is_active"), false);
    const std::string inactive = failed_login("carol", password);
    // One answer for all three, so a login does not reveal which accounts exist.
    EXPECT_EQ(wrong, unknown);
    EXPECT_EQ(wrong, unknown_email);
    EXPECT_EQ(wrong, inactive);

    ASSERT_RSDB_OK(rsdb_users_set_active(users_.get(), id, 1));
    EXPECT_EQ(authenticate("carol", password).at("id"), id);
}

TEST_F(Users, VerifyPasswordMarkVerifiedAndChangePassword) {
    const std::string old_password = "first password";
    const std::string new_password = "second password";
    const int64_t id = create_user("dave", "dave@example.com", old_password).at("id");
    EXPECT_TRUE(verify_password(id, old_password));
    EXPECT_FALSE(verify_password(id, "First password"));
    EXPECT_FALSE(verify_password(id, ""));

    EXPECT_EQ(get_user(id).at("is_verified"), false);
    ASSERT_RSDB_OK(rsdb_users_mark_verified(users_.get(), id));
    EXPECT_EQ(get_user(id).at("is_verified"), true);

    ASSERT_RSDB_OK(rsdb_users_record_login(users_.get(), id));
    EXPECT_TRUE(get_user(id).at("last_login_at").is_string());

    const std::string old_hash = stored_hash(id);
    ASSERT_RSDB_OK(rsdb_users_change_password(users_.get(), id, new_password.c_str()));
    const std::string new_hash = stored_hash(id);
    EXPECT_NE(new_hash, old_hash);
    EXPECT_EQ(new_hash.rfind("$argon2id$", 0), 0u) << new_hash;
    EXPECT_EQ(new_hash.find(new_password), std::string::npos);
    EXPECT_EQ(authenticate("dave", new_password).at("id"), id);
    failed_login("dave", old_password);
    EXPECT_TRUE(verify_password(id, new_password));
    EXPECT_FALSE(verify_password(id, old_password));

    // The new password obeys the same policy; a refused change keeps the current password.
    EXPECT_TRUE(Fails(rsdb_users_change_password(users_.get(), id, "short"), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(stored_hash(id), new_hash);
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

TEST_F(Users, DuplicatesAndInvalidInputAreRefusedWithoutWritingAnything) {
    const int64_t id = create_user("Erin", "erin@example.com", "erin's password").at("id");
    OutString out;
    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "eRIN", "other@example.com", "another password", nullptr,
                                        out.out()),
                      RSDB_ERR_CONFLICT, "username already exists"));
    EXPECT_TRUE(out.is_null());
    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "frank", "ERIN@example.COM", "another password", nullptr,
                                        out.out()),
                      RSDB_ERR_CONFLICT, "email already exists"));
    for (const char* bad_email : {"not-an-email", "a@b", "@example.com", "a b@example.com", ""}) {
        EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "grace", bad_email, "long enough 1", nullptr, out.out()),
                          RSDB_ERR_INVALID_ARGUMENT))
            << "email \"" << bad_email << "\"";
    }
    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "grace", "grace@example.com", "1234567", nullptr, out.out()),
                      RSDB_ERR_INVALID_ARGUMENT, "8"));
    EXPECT_TRUE(Fails(rsdb_users_create(users_.get(), "grace", "grace@example.com", "", nullptr, out.out()),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(out.is_null());

    // Nothing half-written: only the first user exists, unchanged.
    EXPECT_EQ(count_rows("users"), 1);
    json erin = get_user(id);
    EXPECT_EQ(erin.at("username"), "Erin");
    EXPECT_EQ(erin.at("email"), "erin@example.com");
    EXPECT_TRUE(verify_password(id, "erin's password"));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(users_.get(), "grace", out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_users_get_by_username(users_.get(), "frank", out.out()), RSDB_ERR_NOT_FOUND));
}

// ================================================================ streams

TEST_F(Streams, CreateGivesDistinctLiveKeysThatFindTheStream) {
    const int64_t owner = insert_user("streamer");
    json a = create_stream(owner, "Speedrun", "any% attempts");
    json b = create_stream(owner, "Chill", nullptr);
    for (const json& s : {a, b}) {
        const std::string k = s.at("stream_key");
        EXPECT_EQ(k.rfind("live_", 0), 0u) << k;
        EXPECT_EQ(k.size(), 69u) << k;
        EXPECT_TRUE(is_lower_hex(k.substr(5))) << k;
        EXPECT_EQ(s.at("user_id"), owner);
        EXPECT_EQ(s.at("is_live"), false);
        EXPECT_EQ(s.at("viewer_count"), 0);
    }
    EXPECT_NE(a.at("stream_key"), b.at("stream_key"));
    EXPECT_NE(a.at("id"), b.at("id"));
    EXPECT_EQ(a.at("name"), "Speedrun");
    EXPECT_EQ(a.at("description"), "any% attempts");
    EXPECT_TRUE(b.at("description").is_null());

    OutString out;
    json found = RSDB_JSON(rsdb_streams_get_by_key(streams_.get(), a.at("stream_key").get<std::string>().c_str(),
                                                   out.out()),
                           out);
    EXPECT_EQ(found.at("id"), a.at("id"));
    EXPECT_EQ(found, get_stream(a.at("id")));
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(streams_.get(), ("live_" + std::string(64, '0')).c_str(), out.out()),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_streams_get(streams_.get(), a.at("id").get<int64_t>() + 1000, out.out()),
                      RSDB_ERR_NOT_FOUND));
}

TEST_F(Streams, CreatingAStreamForAMissingUserIsNotFound) {
    OutString out;
    EXPECT_TRUE(Fails(rsdb_streams_create(streams_.get(), 987654, "Orphan", nullptr, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(count_rows("streams"), 0);
}

TEST_F(Streams, RegenerateKeyRetiresTheOldKey) {
    const int64_t owner = insert_user("rotator");
    json s = create_stream(owner, "Keyed");
    const std::string old_key = s.at("stream_key");
    OutString out;
    json r = RSDB_JSON(rsdb_streams_regenerate_key(streams_.get(), s.at("id"), out.out()), out);
    const std::string new_key = r.at("stream_key");
    EXPECT_EQ(r.at("id"), s.at("id"));
    EXPECT_NE(new_key, old_key);
    EXPECT_EQ(new_key.rfind("live_", 0), 0u);
    EXPECT_EQ(new_key.size(), 69u);
    EXPECT_TRUE(Fails(rsdb_streams_get_by_key(streams_.get(), old_key.c_str(), out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
    json found = RSDB_JSON(rsdb_streams_get_by_key(streams_.get(), new_key.c_str(), out.out()), out);
    EXPECT_EQ(found.at("id"), s.at("id"));
    EXPECT_EQ(get_stream(s.at("id")).at("stream_key"), new_key);
}

TEST_F(Streams, LifecycleIsVisibleInTheDatabaseRedisPubSubAndTheEventLog) {
    const int64_t owner = insert_user("live_owner");
    json stream = create_stream(owner, "Main Stage", "the big one");
    const int64_t id = stream.at("id");

    // An independent observer: its own Redis client on the same configuration.
    Inbox inbox;
    rsdb_redis* raw_observer = nullptr;
    ASSERT_RSDB_OK(rsdb_redis_open(cfg_.get(), &raw_observer));
    RedisPtr observer(raw_observer);
    uint64_t sub_streams = 0;
    uint64_t sub_viewers = 0;
    ASSERT_RSDB_OK(rsdb_redis_subscribe(observer.get(), "stream.*", &Inbox::callback, &inbox, &sub_streams));
    ASSERT_RSDB_OK(rsdb_redis_subscribe(observer.get(), "viewer.*", &Inbox::callback, &inbox, &sub_viewers));

    // Not live yet: no viewer can join.
    int64_t viewers = -1;
    EXPECT_TRUE(Fails(rsdb_streams_viewer_joined(streams_.get(), id, &viewers), RSDB_ERR_STATE));

    json session = start_stream(id);
    const int64_t session_id = session.at("id");
    EXPECT_GT(session_id, 0);
    EXPECT_EQ(session.at("stream_id"), id);
    EXPECT_TRUE(session.at("ended_at").is_null());
    EXPECT_TRUE(session.at("started_at").is_string());
    EXPECT_EQ(session.at("total_viewers"), 0);
    EXPECT_EQ(session.at("peak_viewers"), 0);

    OutString out;
    EXPECT_TRUE(Fails(rsdb_streams_start(streams_.get(), id, out.out()), RSDB_ERR_STATE));
    EXPECT_TRUE(out.is_null());
    json live = get_stream(id);
    EXPECT_EQ(live.at("is_live"), true);
    EXPECT_TRUE(live.at("started_at").is_string());
    json live_list = RSDB_JSON(rsdb_streams_list_live(streams_.get(), out.out()), out);
    EXPECT_TRUE(std::any_of(live_list.begin(), live_list.end(), [&](const json& s) { return s.at("id") == id; }))
        << live_list.dump();

    // The live cache, read through the observer's own connection.
    OutString hash_out;
    json hash = RSDB_JSON(rsdb_redis_hgetall(observer.get(), live_key(id).c_str(), hash_out.out()), hash_out);
    EXPECT_EQ(hash.value("session_id", std::string("<missing>")), std::to_string(session_id)) << hash.dump();
    EXPECT_EQ(hash.value("stream_id", std::string("<missing>")), std::to_string(id)) << hash.dump();
    EXPECT_EQ(hash.value("user_id", std::string("<missing>")), std::to_string(owner)) << hash.dump();
    EXPECT_EQ(hash.value("name", std::string("<missing>")), "Main Stage") << hash.dump();
    int64_t ttl = 0;
    ASSERT_RSDB_OK(rsdb_redis_ttl(observer.get(), live_key(id).c_str(), &ttl));
    EXPECT_GT(ttl, 0) << "the live cache should expire by itself";

    // Three viewers join, four leave: the count never goes below zero.
    std::vector<int64_t> joined;
    for (int i = 0; i < 3; ++i) {
        ASSERT_RSDB_OK(rsdb_streams_viewer_joined(streams_.get(), id, &viewers));
        joined.push_back(viewers);
    }
    EXPECT_EQ(joined, (std::vector<int64_t>{1, 2, 3}));
    ASSERT_RSDB_OK(rsdb_streams_viewer_count(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 3);
    OutString counter;
    ASSERT_RSDB_OK(rsdb_redis_get(observer.get(), viewers_key(id).c_str(), counter.out()));
    EXPECT_EQ(counter.str(), "3");
    std::vector<int64_t> left;
    for (int i = 0; i < 4; ++i) {
        ASSERT_RSDB_OK(rsdb_streams_viewer_left(streams_.get(), id, &viewers));
        left.push_back(viewers);
    }
    EXPECT_EQ(left, (std::vector<int64_t>{2, 1, 0, 0}));
    ASSERT_RSDB_OK(rsdb_streams_viewer_count(streams_.get(), id, &viewers));
    EXPECT_EQ(viewers, 0);

    // Encoder statistics; a negative number or NULL string leaves a value as it is.
    ASSERT_RSDB_OK(rsdb_streams_update_stats(streams_.get(), id, 6000, 60, "1920x1080", "h264"));
    json stats = get_stream(id);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000);
    EXPECT_EQ(stats.at("fps"), 60);
    EXPECT_EQ(stats.at("resolution"), "1920x1080");
    EXPECT_EQ(stats.at("codec"), "h264");
    ASSERT_RSDB_OK(rsdb_streams_update_stats(streams_.get(), id, -1, 30, nullptr, "av1"));
    stats = get_stream(id);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000);
    EXPECT_EQ(stats.at("fps"), 30);
    EXPECT_EQ(stats.at("resolution"), "1920x1080");
    EXPECT_EQ(stats.at("codec"), "av1");

    json ended = stop_stream(id);
    EXPECT_EQ(ended.at("id"), session_id);
    EXPECT_EQ(ended.at("stream_id"), id);
    EXPECT_EQ(ended.at("total_viewers"), 3);
    EXPECT_EQ(ended.at("peak_viewers"), 3);
    ASSERT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    EXPECT_GE(ended.at("duration_seconds").get<int64_t>(), 0);
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_EQ(get_session(session_id), ended);

    json offline = get_stream(id);
    EXPECT_EQ(offline.at("is_live"), false);
    EXPECT_TRUE(offline.at("ended_at").is_string());
    live_list = RSDB_JSON(rsdb_streams_list_live(streams_.get(), out.out()), out);
    EXPECT_FALSE(std::any_of(live_list.begin(), live_list.end(), [&](const json& s) { return s.at("id") == id; }));
    hash = RSDB_JSON(rsdb_redis_hgetall(observer.get(), live_key(id).c_str(), hash_out.out()), hash_out);
    EXPECT_EQ(hash, json::object()) << "the live cache is gone";
    ASSERT_RSDB_OK(rsdb_redis_ttl(observer.get(), live_key(id).c_str(), &ttl));
    EXPECT_EQ(ttl, -2);
    EXPECT_TRUE(Fails(rsdb_streams_stop(streams_.get(), id, out.out()), RSDB_ERR_STATE));

    // Pub/sub, as the observer saw it, in order.
    const size_t expected_count = 1 + 3 + 4 + 1;
    ASSERT_TRUE(inbox.wait_for_stream_messages(id, expected_count, 10s))
        << "got " << inbox.for_stream(id).size() << " messages for stream " << id;
    std::this_thread::sleep_for(100ms);  // nothing else should follow
    auto got = inbox.for_stream(id);
    ASSERT_EQ(got.size(), expected_count);
    std::vector<std::string> types;
    for (const auto& [channel, payload] : got) {
        ASSERT_TRUE(payload.contains("type")) << payload.dump();
        EXPECT_EQ(payload.at("type"), channel) << payload.dump();
        types.push_back(payload.at("type"));
    }
    EXPECT_EQ(types, (std::vector<std::string>{"stream.started", "viewer.joined", "viewer.joined", "viewer.joined",
                                               "viewer.left", "viewer.left", "viewer.left", "viewer.left",
                                               "stream.stopped"}));
    EXPECT_EQ(got[0].second.value("session_id", int64_t{-1}), session_id);
    for (size_t i = 1; i <= 3; ++i) EXPECT_EQ(got[i].second.value("viewers", int64_t{-1}), static_cast<int64_t>(i));
    for (size_t i = 4; i <= 7; ++i) EXPECT_EQ(got[i].second.value("viewers", int64_t{-1}), left[i - 4]);
    EXPECT_EQ(got[8].second.value("session_id", int64_t{-1}), session_id);
    EXPECT_EQ(got[8].second.value("total_viewers", int64_t{-1}), 3);
    EXPECT_EQ(got[8].second.value("peak_viewers", int64_t{-1}), 3);
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(observer.get(), sub_streams));
    EXPECT_RSDB_OK(rsdb_redis_unsubscribe(observer.get(), sub_viewers));

    // The event log of the stream aggregate.
    json log = load_events("stream", std::to_string(id));
    ASSERT_EQ(log.size(), 2u) << log.dump();
    EXPECT_EQ(log[0].at("version"), 1);
    EXPECT_EQ(log[0].at("event_type"), "stream.started");
    EXPECT_EQ(log[0].at("aggregate_type"), "stream");
    EXPECT_EQ(log[0].at("aggregate_id"), std::to_string(id));
    EXPECT_EQ(log[0].at("user_id"), owner);
    EXPECT_EQ(log[0].at("payload").value("session_id", int64_t{-1}), session_id);
    EXPECT_EQ(log[1].at("version"), 2);
    EXPECT_EQ(log[1].at("event_type"), "stream.stopped");
    EXPECT_EQ(log[1].at("payload").value("total_viewers", int64_t{-1}), 3);
    EXPECT_EQ(version_of("stream", std::to_string(id)), 2);
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

TEST_F(Streams, StartingOrStoppingAMissingStreamIsNotFound) {
    OutString out;
    EXPECT_TRUE(Fails(rsdb_streams_start(streams_.get(), 123, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_streams_stop(streams_.get(), 123, out.out()), RSDB_ERR_NOT_FOUND));
    const int64_t owner = insert_user("idle");
    const int64_t id = create_stream(owner, "Idle").at("id");
    EXPECT_TRUE(Fails(rsdb_streams_stop(streams_.get(), id, out.out()), RSDB_ERR_STATE)) << "never started";
    EXPECT_EQ(count_rows("stream_sessions"), 0);
    EXPECT_EQ(count_rows("event_log"), 0);
}

// ================================================================ stream sessions

TEST_F(StreamSessions, ViewersBytesAndEndWithComputedDuration) {
    const int64_t owner = insert_user("sessions");
    const int64_t stream_id = create_stream(owner, "Sessions").at("id");
    OutString out;
    json s = RSDB_JSON(rsdb_stream_sessions_create(sessions_.get(), stream_id, out.out()), out);
    const int64_t id = s.at("id");
    EXPECT_EQ(s.at("stream_id"), stream_id);
    EXPECT_EQ(s.at("total_viewers"), 0);
    EXPECT_EQ(s.at("peak_viewers"), 0);
    EXPECT_EQ(s.at("bytes_transferred"), 0);
    EXPECT_TRUE(s.at("ended_at").is_null());
    EXPECT_TRUE(s.at("duration_seconds").is_null());

    // Four joins while 1, 4, 2 and 3 viewers watch: total counts joins, peak is the maximum.
    for (int current : {1, 4, 2, 3}) ASSERT_RSDB_OK(rsdb_stream_sessions_record_viewer(sessions_.get(), id, current));
    s = get_session(id);
    EXPECT_EQ(s.at("total_viewers"), 4);
    EXPECT_EQ(s.at("peak_viewers"), 4);

    ASSERT_RSDB_OK(rsdb_stream_sessions_add_bytes(sessions_.get(), id, 1000));
    ASSERT_RSDB_OK(rsdb_stream_sessions_add_bytes(sessions_.get(), id, 5'000'000'000LL));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_add_bytes(sessions_.get(), id, -1), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(get_session(id).at("bytes_transferred"), 5'000'001'000LL);

    // Started 90 s ago.
    ASSERT_EQ(query("UPDATE stream_sessions SET started_at = started_at - interval '90 seconds' WHERE id = $1"
                    " RETURNING id",
                    json::array({id}))
                  .size(),
              1u);
    json ended = RSDB_JSON(rsdb_stream_sessions_end(sessions_.get(), id, out.out()), out);
    ASSERT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    const int64_t duration = ended.at("duration_seconds");
    EXPECT_GE(duration, 90);
    EXPECT_LE(duration, 92);
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_EQ(ended.at("total_viewers"), 4);
    EXPECT_EQ(ended.at("peak_viewers"), 4);
    EXPECT_EQ(get_session(id), ended);

    EXPECT_TRUE(Fails(rsdb_stream_sessions_end(sessions_.get(), id, out.out()), RSDB_ERR_STATE));
    EXPECT_TRUE(out.is_null());
    EXPECT_EQ(get_session(id).at("duration_seconds"), duration) << "a refused end changes nothing";

    json list = RSDB_JSON(rsdb_stream_sessions_list(sessions_.get(), stream_id, out.out()), out);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0], ended);
}

TEST_F(StreamSessions, MissingStreamsAndSessionsAreNotFound) {
    const int64_t owner = insert_user("nosuch");
    const int64_t stream_id = create_stream(owner, "Exists").at("id");
    const int64_t missing = stream_id + 1000;
    ASSERT_EQ(query("SELECT count(*) AS n FROM streams WHERE id = $1", json::array({missing})).at(0).at("n"), 0);
    OutString out;
    EXPECT_TRUE(Fails(rsdb_stream_sessions_create(sessions_.get(), missing, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null());
    EXPECT_EQ(count_rows("stream_sessions"), 0);
    EXPECT_TRUE(Fails(rsdb_stream_sessions_get(sessions_.get(), 777, out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_stream_sessions_end(sessions_.get(), 777, out.out()), RSDB_ERR_NOT_FOUND));
    json none = RSDB_JSON(rsdb_stream_sessions_list(sessions_.get(), missing, out.out()), out);
    EXPECT_EQ(none, json::array());
}

// ================================================================ event store

TEST_F(Events, AppendWithExpectedVersionsAndLoadInOrder) {
    int64_t v = -1;
    EXPECT_EQ(version_of("order", "o-1"), 0);
    EXPECT_EQ(load_events("order", "o-1"), json::array());
    ASSERT_RSDB_OK(append("order", "o-1", 0,
                          json::array({json{{"event_type", "order.placed"}, {"payload", {{"total", 42}}},
                                            {"metadata", {{"ip", "10.0.0.1"}}}, {"user_id", 7}},
                                       json{{"event_type", "order.paid"}}}),
                          &v));
    EXPECT_EQ(v, 2);
    ASSERT_RSDB_OK(append("order", "o-1", 2, json::array({json{{"event_type", "order.shipped"}}}), &v));
    EXPECT_EQ(v, 3);
    // new_version may be NULL.
    ASSERT_RSDB_OK(append("order", "o-1", 3, json::array({json{{"event_type", "order.delivered"}}}), nullptr));
    EXPECT_EQ(version_of("order", "o-1"), 4);
    // Another aggregate id (and type) has its own versions.
    ASSERT_RSDB_OK(append("order", "o-2", 0, json::array({json{{"event_type", "order.placed"}}}), &v));
    EXPECT_EQ(v, 1);
    ASSERT_RSDB_OK(append("invoice", "o-1", 0, json::array({json{{"event_type", "invoice.issued"}}}), &v));
    EXPECT_EQ(v, 1);

    json all = load_events("order", "o-1");
    ASSERT_EQ(all.size(), 4u);
    const std::vector<std::string> types = {"order.placed", "order.paid", "order.shipped", "order.delivered"};
    for (size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(all[i].at("version"), static_cast<int64_t>(i + 1));
        EXPECT_EQ(all[i].at("event_type"), types[i]);
        EXPECT_EQ(all[i].at("aggregate_type"), "order");
        EXPECT_EQ(all[i].at("aggregate_id"), "o-1");
    }
    EXPECT_EQ(all[0].at("payload"), json({{"total", 42}}));
    EXPECT_EQ(all[0].at("metadata"), json({{"ip", "10.0.0.1"}}));
    EXPECT_EQ(all[0].at("user_id"), 7);
    EXPECT_EQ(all[1].at("payload"), json::object()) << "payload defaults to {}";
    EXPECT_TRUE(all[1].at("user_id").is_null());
    json tail = load_events("order", "o-1", 2);
    ASSERT_EQ(tail.size(), 2u);
    EXPECT_EQ(tail[0].at("version"), 3);
    EXPECT_EQ(tail[1].at("version"), 4);
    EXPECT_EQ(load_events("order", "o-1", 4), json::array());
}

TEST_F(Events, AStaleExpectedVersionIsAConflictAndWritesNothing) {
    ASSERT_RSDB_OK(append("cart", "c-1", 0,
                          json::array({json{{"event_type", "item.added"}}, json{{"event_type", "item.added"}},
                                       json{{"event_type", "item.removed"}}})));
    const json before = load_events("cart", "c-1");
    ASSERT_EQ(before.size(), 3u);
    const json batch = json::array({json{{"event_type", "stale.one"}}, json{{"event_type", "stale.two"}}});
    int64_t v = -1;
    for (int64_t stale : {0, 1, 2, 4, 100}) {
        EXPECT_TRUE(Fails(append("cart", "c-1", stale, batch, &v), RSDB_ERR_CONFLICT)) << "expected " << stale;
    }
    EXPECT_EQ(v, -1) << "new_version is not written on failure";
    EXPECT_EQ(load_events("cart", "c-1"), before);
    EXPECT_EQ(version_of("cart", "c-1"), 3);
    EXPECT_EQ(count_rows("event_log"), 3);
    // The right version still works afterwards.
    ASSERT_RSDB_OK(append("cart", "c-1", 3, batch, &v));
    EXPECT_EQ(v, 5);
}

TEST_F(Events, ConcurrentWritersWithRetryOnConflictLoseNothing) {
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

namespace {
// A small aggregate: a wallet whose state is folded from its events.
json fold(json state, const json& events) {
    for (const auto& e : events) {
        const int64_t amount = e.at("payload").at("amount");
        if (e.at("event_type") == "wallet.deposited") {
            state["balance"] = state["balance"].get<int64_t>() + amount;
            state["deposits"] = state["deposits"].get<int64_t>() + 1;
        } else if (e.at("event_type") == "wallet.withdrawn") {
            state["balance"] = state["balance"].get<int64_t>() - amount;
            state["withdrawals"] = state["withdrawals"].get<int64_t>() + 1;
        }
        state["version"] = e.at("version");
    }
    return state;
}

json empty_wallet() { return json{{"balance", 0}, {"deposits", 0}, {"withdrawals", 0}, {"version", 0}}; }

json wallet_event(int i) {
    return json{{"event_type", i % 3 == 0 ? "wallet.withdrawn" : "wallet.deposited"}, {"payload", {{"amount", i * 10}}}};
}
}  // namespace

TEST_F(Events, SnapshotPlusLaterEventsEqualsTheFullReplay) {
    // 25 events, appended in batches of five.
    for (int batch = 0; batch < 5; ++batch) {
        json events = json::array();
        for (int i = batch * 5 + 1; i <= batch * 5 + 5; ++i) events.push_back(wallet_event(i));
        int64_t v = -1;
        ASSERT_RSDB_OK(append("wallet", "w-1", batch * 5, events, &v));
        ASSERT_EQ(v, batch * 5 + 5);
    }
    const json all = load_events("wallet", "w-1");
    ASSERT_EQ(all.size(), 25u);
    const json full = fold(empty_wallet(), all);
    EXPECT_EQ(full.at("version"), 25);

    OutString out;
    json none = RSDB_JSON(rsdb_events_load_from_snapshot(events_.get(), "wallet", "w-1", out.out()), out);
    EXPECT_TRUE(none.at("snapshot").is_null());
    EXPECT_EQ(none.at("events"), all);

    const json at10 = fold(empty_wallet(), json(std::vector<json>(all.begin(), all.begin() + 10)));
    const json at20 = fold(empty_wallet(), json(std::vector<json>(all.begin(), all.begin() + 20)));
    ASSERT_EQ(at10.at("version"), 10);
    ASSERT_EQ(at20.at("version"), 20);
    ASSERT_NE(at20.at("balance"), full.at("balance")) << "the test needs events after the snapshot to matter";
    ASSERT_RSDB_OK(rsdb_events_save_snapshot(events_.get(), "wallet", "w-1", 10, at10.dump().c_str()));
    ASSERT_RSDB_OK(rsdb_events_save_snapshot(events_.get(), "wallet", "w-1", 20, at20.dump().c_str()));

    json loaded = RSDB_JSON(rsdb_events_load_from_snapshot(events_.get(), "wallet", "w-1", out.out()), out);
    ASSERT_TRUE(loaded.at("snapshot").is_object()) << loaded.dump();
    EXPECT_EQ(loaded.at("snapshot").at("version"), 20);
    EXPECT_EQ(loaded.at("snapshot").at("state"), at20);
    const json& rest = loaded.at("events");
    ASSERT_EQ(rest.size(), 5u);
    for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i].at("version"), static_cast<int64_t>(21 + i));
    EXPECT_EQ(fold(loaded.at("snapshot").at("state"), rest), full);
}

TEST_F(Events, AuditTrailByUserIsNewestFirstAndLimited) {
    ASSERT_RSDB_OK(append("session", "s-1", 0, json::array({json{{"event_type", "user.logged_in"}, {"user_id", 42}}})));
    ASSERT_RSDB_OK(append("stream", "st-9", 0, json::array({json{{"event_type", "stream.created"}, {"user_id", 42}}})));
    ASSERT_RSDB_OK(append("stream", "st-9", 1, json::array({json{{"event_type", "stream.renamed"}, {"user_id", 43}}})));
    ASSERT_RSDB_OK(append("session", "s-1", 1, json::array({json{{"event_type", "user.logged_out"}, {"user_id", 42}}})));
    OutString out;
    json trail = RSDB_JSON(rsdb_events_by_user(events_.get(), 42, 100, out.out()), out);
    std::vector<std::string> types;
    for (const auto& e : trail) {
        EXPECT_EQ(e.at("user_id"), 42);
        types.push_back(e.at("event_type"));
    }
    EXPECT_EQ(types, (std::vector<std::string>{"user.logged_out", "stream.created", "user.logged_in"}));
    json limited = RSDB_JSON(rsdb_events_by_user(events_.get(), 42, 2, out.out()), out);
    ASSERT_EQ(limited.size(), 2u);
    EXPECT_EQ(limited[0].at("event_type"), "user.logged_out");
    EXPECT_EQ(limited[1].at("event_type"), "stream.created");
    json other = RSDB_JSON(rsdb_events_by_user(events_.get(), 43, 100, out.out()), out);
    ASSERT_EQ(other.size(), 1u);
    EXPECT_EQ(other[0].at("event_type"), "stream.renamed");
    EXPECT_EQ(RSDB_JSON(rsdb_events_by_user(events_.get(), 44, 100, out.out()), out), json::array());
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

// ================================================================ hostile strings

TEST_F(HostileStrings, UserFieldsAreStoredAndFoundVerbatim) {
    // Each user costs an Argon2id hash, so three usernames carry all the hostile features.
    const std::vector<std::string> usernames = {kHostile[0], kHostile[1],
                                                "O'Brien \"q\" \\ $1 \xF0\x9F\x8E\xAE \xE6\x97\xA5\xE6\x9C\xAC"};
    const std::string password = kHostile[0];  // a hostile password, too
    std::vector<int64_t> ids;
    for (size_t i = 0; i < usernames.size(); ++i) {
        json u = create_user(usernames[i], "h" + std::to_string(i) + "+$1'@example.com", password,
                             kHostile[(i + 3) % kHostile.size()].c_str());
        EXPECT_EQ(u.at("username"), usernames[i]);
        EXPECT_EQ(u.at("email"), "h" + std::to_string(i) + "+$1'@example.com");
        EXPECT_EQ(u.at("display_name"), kHostile[(i + 3) % kHostile.size()]);
        ids.push_back(u.at("id"));
    }
    OutString out;
    for (size_t i = 0; i < usernames.size(); ++i) {
        json found = RSDB_JSON(rsdb_users_get_by_username(users_.get(), usernames[i].c_str(), out.out()), out);
        EXPECT_EQ(found.at("id"), ids[i]) << usernames[i];
    }
    EXPECT_EQ(authenticate(usernames[1], password).at("id"), ids[1]);

    // Every hostile string as display name and avatar URL of one user.
    for (const auto& s : kHostile) {
        json u = RSDB_JSON(rsdb_users_update_profile(users_.get(), ids[2], s.c_str(), (s + "/avatar.png").c_str(),
                                                     out.out()),
                           out);
        EXPECT_EQ(u.at("display_name"), s);
        json back = get_user(ids[2]);
        EXPECT_EQ(back.at("display_name"), s);
        EXPECT_EQ(back.at("avatar_url"), s + "/avatar.png");
        EXPECT_EQ(back.at("username"), usernames[2]);
    }
    EXPECT_EQ(count_rows("users"), 3);
    EXPECT_TRUE(tables_exist());
}

TEST_F(HostileStrings, StreamNamesDescriptionsAndEventsAreStoredVerbatim) {
    const int64_t owner = insert_user("hostile_owner");
    for (const auto& s : kHostile) {
        const std::string description = s + "\nsecond line\t" + s;
        json created = create_stream(owner, s, description.c_str());
        json back = get_stream(created.at("id"));
        EXPECT_EQ(back.at("name"), s);
        EXPECT_EQ(back.at("description"), description);
        OutString out;
        json by_key = RSDB_JSON(rsdb_streams_get_by_key(streams_.get(),
                                                        created.at("stream_key").get<std::string>().c_str(), out.out()),
                                out);
        EXPECT_EQ(by_key.at("name"), s);
    }
    EXPECT_EQ(count_rows("streams"), static_cast<int64_t>(kHostile.size()));

    // Hostile aggregate types and ids, event types, payload and metadata strings (keys too).
    for (const auto& s : kHostile) {
        const json payload = {{"text", s}, {s, s}, {"list", json::array({s, s + s})}};
        const json metadata = {{"note", s}};
        int64_t v = -1;
        ASSERT_RSDB_OK(append(s, s, 0,
                              json::array({json{{"event_type", s}, {"payload", payload}, {"metadata", metadata}}}), &v));
        EXPECT_EQ(v, 1);
        json loaded = load_events(s, s);
        ASSERT_EQ(loaded.size(), 1u) << s;
        EXPECT_EQ(loaded[0].at("aggregate_type"), s);
        EXPECT_EQ(loaded[0].at("aggregate_id"), s);
        EXPECT_EQ(loaded[0].at("event_type"), s);
        EXPECT_EQ(loaded[0].at("payload"), payload);
        EXPECT_EQ(loaded[0].at("metadata"), metadata);
        EXPECT_EQ(version_of(s, s), 1);
        ASSERT_RSDB_OK(rsdb_events_save_snapshot(events_.get(), s.c_str(), s.c_str(), 1, json({{"s", s}}).dump().c_str()));
        OutString out;
        json snap = RSDB_JSON(rsdb_events_load_from_snapshot(events_.get(), s.c_str(), s.c_str(), out.out()), out);
        EXPECT_EQ(snap.at("snapshot").at("state"), json({{"s", s}}));
        EXPECT_EQ(snap.at("snapshot").at("aggregate_id"), s);
    }
    EXPECT_EQ(count_rows("event_log"), static_cast<int64_t>(kHostile.size()));
    EXPECT_TRUE(tables_exist());
}

// ================================================================ bad input

TEST(ModelHandles, EveryReleaseFunctionAcceptsNull) {
    rsdb_users_free(nullptr);
    rsdb_streams_free(nullptr);
    rsdb_stream_sessions_free(nullptr);
    rsdb_events_free(nullptr);
    SUCCEED();
}

TEST_F(BadInput, NullHandlesAreRejected) {
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

TEST_F(BadInput, NullOutPointersAreRejectedAndNothingIsWritten) {
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

TEST_F(BadInput, InvalidUtf8IsRejectedAndNothingIsWritten) {
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
