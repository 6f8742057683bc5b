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
using rootstream::database::models::StreamModel;
using rootstream::database::models::StreamSessionModel;
using rootstream::database::models::StreamStats;
using rootstream::database::models::User;
using rootstream::events::EventStore;

using namespace rsdb_test::cppapi;

namespace {


/// Collects messages from a RedisClient::MessageHandler; keeps those about one stream.
class Inbox {
public:
    RedisClient::MessageHandler handler() {
        return [this](const std::string& channel, const std::string& payload) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                messages_.emplace_back(channel, payload);
            }
            cv_.notify_all();
        };
    }

    bool wait_for_stream_messages(std::int64_t stream_id, size_t n, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return for_stream_locked(stream_id).size() >= n; });
    }

    std::vector<std::pair<std::string, json>> for_stream(std::int64_t stream_id) {
        std::lock_guard<std::mutex> lock(mutex_);
        return for_stream_locked(stream_id);
    }

private:
    std::vector<std::pair<std::string, json>> for_stream_locked(std::int64_t stream_id) const {
        std::vector<std::pair<std::string, json>> out;
        for (const auto& [channel, payload] : messages_) {
            json j = json::parse(payload, nullptr, false);
            if (j.is_object() && j.contains("stream_id") && j["stream_id"].is_number_integer() &&
                j["stream_id"].get<std::int64_t>() == stream_id) {
                out.emplace_back(channel, j);
            }
        }
        return out;
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::pair<std::string, std::string>> messages_;
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
using Streams = CppModelsTest;
using StreamSessions = CppModelsTest;
using Events = CppModelsTest;
using HostileStrings = CppModelsTest;
using BadInput = CppModelsTest;

std::string live_key(std::int64_t stream_id) { return "rsdb:stream:" + std::to_string(stream_id) + ":live"; }
std::string viewers_key(std::int64_t stream_id) { return "rsdb:stream:" + std::to_string(stream_id) + ":viewers"; }

bool is_lower_hex(const std::string& s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool has_stream(const json& list, std::int64_t id) {
    return std::any_of(list.begin(), list.end(), [&](const json& s) { return s.at("id") == id; });
}

}  // namespace

// ================================================================ users

TEST_F(Users, RegisterAuthenticateUpdateProfileAndReloadIt) {
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
    EXPECT_FALSE(created.to_json().contains("password_hash"));

    // By username and by email, both ignoring case; each login is recorded.
    User by_name = User::authenticate(db(), "alice_streams", password);
    EXPECT_EQ(by_name.id(), created.id());
    EXPECT_TRUE(by_name.last_login_at().has_value());
    User by_email = User::authenticate(db(), "ALICE@EXAMPLE.COM", password);
    EXPECT_EQ(by_email.id(), created.id());

    User user = created;
    user.update_profile(db(), std::string("Alice in Streamland"), std::string("https://cdn.example.com/a.png"));
    EXPECT_EQ(user.display_name(), std::optional<std::string>("Alice in Streamland"));
    EXPECT_EQ(user.avatar_url(), std::optional<std::string>("https://cdn.example.com/a.png"));
    // nullopt leaves a field as it is.
    user.update_profile(db(), std::nullopt, std::string("https://cdn.example.com/b.png"));
    EXPECT_EQ(user.display_name(), std::optional<std::string>("Alice in Streamland"));
    user.update_profile(db(), std::string("Alice"), std::nullopt);
    EXPECT_EQ(user.avatar_url(), std::optional<std::string>("https://cdn.example.com/b.png"));

    User reloaded = User::load_by_id(db(), created.id());
    EXPECT_EQ(reloaded.display_name(), std::optional<std::string>("Alice"));
    EXPECT_EQ(reloaded.avatar_url(), std::optional<std::string>("https://cdn.example.com/b.png"));
    EXPECT_TRUE(reloaded.last_login_at().has_value());
    EXPECT_EQ(User::load_by_username(db(), "ALICE_STREAMS").id(), created.id());
    EXPECT_EQ(User::load_by_email(db(), "alice@example.COM").id(), created.id());
    for (const User* u : {&created, &by_name, &by_email, &user, &reloaded}) {
        const std::string text = u->to_json().dump();
        EXPECT_FALSE(u->to_json().contains("password_hash")) << text;
        EXPECT_EQ(text.find("password_hash"), std::string::npos) << text;
        EXPECT_EQ(text.find("argon2"), std::string::npos) << text;
        EXPECT_EQ(text.find(password), std::string::npos) << text;
    }
}

TEST_F(Users, StoredPasswordIsAnArgon2idHashNotThePassword) {
    const std::string password = "s3cret-Passw0rd";
    User u = User::create(db(), "bob", "bob@example.com", password);
    const std::string hash = stored_hash(u.id());
    EXPECT_EQ(hash.rfind("$argon2id$", 0), 0u) << hash;
    EXPECT_EQ(hash.find(password), std::string::npos) << hash;
    EXPECT_EQ(count_rows("users"), 1);
}

TEST_F(Users, WrongPasswordUnknownUserAndDeactivatedUserAllFailWithAuth) {
    const std::string password = "right password 1";
    User carol = User::create(db(), "carol", "carol@example.com", password);
    const std::string wrong = error_message([&] { User::authenticate(db(), "carol", "wrong password 1"); }, RSDB_ERR_AUTH);
    const std::string unknown = error_message([&] { User::authenticate(db(), "nobody-here", password); }, RSDB_ERR_AUTH);
    carol.deactivate(db());
    EXPECT_FALSE(carol.is_active());
    EXPECT_FALSE(User::load_by_id(db(), carol.id()).is_active());
    const std::string inactive = error_message([&] { User::authenticate(db(), "carol", password); }, RSDB_ERR_AUTH);
    EXPECT_FALSE(wrong.empty());
    // One answer for all three, so a login does not reveal which accounts exist.
    EXPECT_EQ(wrong, unknown);
    EXPECT_EQ(wrong, inactive);
    carol.activate(db());
    EXPECT_TRUE(carol.is_active());
    EXPECT_EQ(User::authenticate(db(), "carol@example.com", password).id(), carol.id());
}

TEST_F(Users, VerifyPasswordMarkVerifiedAndChangePassword) {
    const std::string old_password = "first password";
    const std::string new_password = "second password";
    User dave = User::create(db(), "dave", "dave@example.com", old_password);
    EXPECT_TRUE(dave.verify_password(db(), old_password));
    EXPECT_FALSE(dave.verify_password(db(), "First password"));
    EXPECT_FALSE(dave.verify_password(db(), ""));

    EXPECT_FALSE(dave.is_verified());
    dave.verify(db());
    EXPECT_TRUE(dave.is_verified());
    EXPECT_TRUE(User::load_by_id(db(), dave.id()).is_verified());

    dave.record_login(db());
    EXPECT_TRUE(dave.last_login_at().has_value());

    const std::string old_hash = stored_hash(dave.id());
    dave.change_password(db(), new_password);
    const std::string new_hash = stored_hash(dave.id());
    EXPECT_NE(new_hash, old_hash);
    EXPECT_EQ(new_hash.rfind("$argon2id$", 0), 0u) << new_hash;
    EXPECT_EQ(new_hash.find(new_password), std::string::npos);
    EXPECT_EQ(User::authenticate(db(), "dave", new_password).id(), dave.id());
    EXPECT_TRUE(ThrowsCode([&] { User::authenticate(db(), "dave", old_password); }, RSDB_ERR_AUTH));
    EXPECT_TRUE(dave.verify_password(db(), new_password));
    EXPECT_FALSE(dave.verify_password(db(), old_password));

    EXPECT_TRUE(ThrowsCode([&] { dave.change_password(db(), "short"); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(stored_hash(dave.id()), new_hash);
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

TEST_F(Users, DuplicatesAndInvalidInputAreRefusedWithoutWritingAnything) {
    User erin = User::create(db(), "Erin", "erin@example.com", "erin's password");
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "eRIN", "other@example.com", "another password"); },
                           RSDB_ERR_CONFLICT, "username already exists"));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "frank", "ERIN@example.COM", "another password"); },
                           RSDB_ERR_CONFLICT, "email already exists"));
    for (const char* bad_email : {"not-an-email", "a@b", "@example.com", "a b@example.com", ""}) {
        EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "grace", bad_email, "long enough 1"); },
                               RSDB_ERR_INVALID_ARGUMENT))
            << "email \"" << bad_email << "\"";
    }
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "grace", "grace@example.com", "1234567"); },
                           RSDB_ERR_INVALID_ARGUMENT, "8"));
    EXPECT_TRUE(ThrowsCode([&] { User::create(db(), "grace", "grace@example.com", ""); }, RSDB_ERR_INVALID_ARGUMENT));

    EXPECT_EQ(count_rows("users"), 1);
    User again = User::load_by_id(db(), erin.id());
    EXPECT_EQ(again.username(), "Erin");
    EXPECT_EQ(again.email(), "erin@example.com");
    EXPECT_TRUE(again.verify_password(db(), "erin's password"));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_username(db(), "grace"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { User::load_by_username(db(), "frank"); }, RSDB_ERR_NOT_FOUND));
}

// ================================================================ streams

TEST_F(Streams, CreateGivesDistinctLiveKeysThatFindTheStream) {
    const std::int64_t owner = insert_user("streamer");
    json a = streams_->create(owner, "Speedrun", std::string("any% attempts"));
    json b = streams_->create(owner, "Chill");
    for (const json& s : {a, b}) {
        const std::string k = s.at("stream_key");
        EXPECT_EQ(k.rfind("live_", 0), 0u) << k;
        EXPECT_EQ(k.size(), 69u) << k;
        EXPECT_TRUE(is_lower_hex(k.substr(5))) << k;
        EXPECT_EQ(s.at("user_id"), owner);
        EXPECT_EQ(s.at("is_live"), false);
    }
    EXPECT_NE(a.at("stream_key"), b.at("stream_key"));
    EXPECT_NE(a.at("id"), b.at("id"));
    EXPECT_EQ(a.at("description"), "any% attempts");
    EXPECT_TRUE(b.at("description").is_null());
    json found = streams_->get_by_key(a.at("stream_key"));
    EXPECT_EQ(found.at("id"), a.at("id"));
    EXPECT_EQ(found, streams_->get(a.at("id")));
    EXPECT_TRUE(ThrowsCode([&] { streams_->get_by_key("live_" + std::string(64, '0')); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { streams_->get(a.at("id").get<std::int64_t>() + 1000); }, RSDB_ERR_NOT_FOUND));
}

TEST_F(Streams, RegenerateKeyRetiresTheOldKey) {
    const std::int64_t owner = insert_user("rotator");
    json s = streams_->create(owner, "Keyed");
    const std::string old_key = s.at("stream_key");
    json r = streams_->regenerate_key(s.at("id"));
    const std::string new_key = r.at("stream_key");
    EXPECT_EQ(r.at("id"), s.at("id"));
    EXPECT_NE(new_key, old_key);
    EXPECT_EQ(new_key.rfind("live_", 0), 0u);
    EXPECT_EQ(new_key.size(), 69u);
    EXPECT_TRUE(ThrowsCode([&] { streams_->get_by_key(old_key); }, RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(streams_->get_by_key(new_key).at("id"), s.at("id"));
}

TEST_F(Streams, LifecycleIsVisibleInTheDatabaseRedisPubSubAndTheEventLog) {
    const std::int64_t owner = insert_user("live_owner");
    const std::int64_t id = streams_->create(owner, "Main Stage", std::string("the big one")).at("id");

    // An independent observer: its own Redis client on the same configuration. Declared after
    // the inbox, so it is destroyed (and its handlers stopped) first.
    Inbox inbox;
    RedisClient observer(*config_);
    const auto sub_streams = observer.subscribe("stream.*", inbox.handler());
    const auto sub_viewers = observer.subscribe("viewer.*", inbox.handler());

    EXPECT_TRUE(ThrowsCode([&] { streams_->viewer_joined(id); }, RSDB_ERR_STATE)) << "not live yet";

    json session = streams_->start(id);
    const std::int64_t session_id = session.at("id");
    EXPECT_GT(session_id, 0);
    EXPECT_EQ(session.at("stream_id"), id);
    EXPECT_TRUE(session.at("ended_at").is_null());
    EXPECT_EQ(session.at("total_viewers"), 0);
    EXPECT_TRUE(ThrowsCode([&] { streams_->start(id); }, RSDB_ERR_STATE));
    EXPECT_EQ(streams_->get(id).at("is_live"), true);
    EXPECT_TRUE(has_stream(streams_->list_live(), id));

    auto hash = observer.hgetall(live_key(id));
    EXPECT_EQ(hash["session_id"], std::to_string(session_id));
    EXPECT_EQ(hash["stream_id"], std::to_string(id));
    EXPECT_EQ(hash["user_id"], std::to_string(owner));
    EXPECT_EQ(hash["name"], "Main Stage");
    EXPECT_GT(observer.ttl_ms(live_key(id)), 0) << "the live cache should expire by itself";

    std::vector<std::int64_t> joined;
    for (int i = 0; i < 3; ++i) joined.push_back(streams_->viewer_joined(id));
    EXPECT_EQ(joined, (std::vector<std::int64_t>{1, 2, 3}));
    EXPECT_EQ(streams_->viewer_count(id), 3);
    EXPECT_EQ(observer.get(viewers_key(id)), std::optional<std::string>("3"));
    std::vector<std::int64_t> left;
    for (int i = 0; i < 4; ++i) left.push_back(streams_->viewer_left(id));
    EXPECT_EQ(left, (std::vector<std::int64_t>{2, 1, 0, 0}));
    EXPECT_EQ(streams_->viewer_count(id), 0);

    StreamStats full;
    full.bitrate_kbps = 6000;
    full.fps = 60;
    full.resolution = "1920x1080";
    full.codec = "h264";
    json stats = streams_->update_stats(id, full);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000);
    EXPECT_EQ(stats.at("resolution"), "1920x1080");
    StreamStats partial;
    partial.fps = 30;
    partial.codec = "av1";
    streams_->update_stats(id, partial);
    stats = streams_->get(id);
    EXPECT_EQ(stats.at("bitrate_kbps"), 6000);
    EXPECT_EQ(stats.at("fps"), 30);
    EXPECT_EQ(stats.at("resolution"), "1920x1080");
    EXPECT_EQ(stats.at("codec"), "av1");

    json ended = streams_->stop(id);
    EXPECT_EQ(ended.at("id"), session_id);
    EXPECT_EQ(ended.at("total_viewers"), 3);
    EXPECT_EQ(ended.at("peak_viewers"), 3);
    ASSERT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    EXPECT_GE(ended.at("duration_seconds").get<std::int64_t>(), 0);
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_EQ(sessions_->get(session_id), ended);
    EXPECT_EQ(streams_->get(id).at("is_live"), false);
    EXPECT_FALSE(has_stream(streams_->list_live(), id));
    EXPECT_TRUE(observer.hgetall(live_key(id)).empty()) << "the live cache is gone";
    EXPECT_FALSE(observer.exists(live_key(id)));
    EXPECT_TRUE(ThrowsCode([&] { streams_->stop(id); }, RSDB_ERR_STATE));

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
    EXPECT_EQ(got[0].second.value("session_id", std::int64_t{-1}), session_id);
    for (size_t i = 1; i <= 3; ++i) {
        EXPECT_EQ(got[i].second.value("viewers", std::int64_t{-1}), static_cast<std::int64_t>(i));
    }
    for (size_t i = 4; i <= 7; ++i) EXPECT_EQ(got[i].second.value("viewers", std::int64_t{-1}), left[i - 4]);
    EXPECT_EQ(got[8].second.value("total_viewers", std::int64_t{-1}), 3);
    observer.unsubscribe(sub_streams);
    observer.unsubscribe(sub_viewers);

    json log = events_->load("stream", std::to_string(id));
    ASSERT_EQ(log.size(), 2u) << log.dump();
    EXPECT_EQ(log[0].at("version"), 1);
    EXPECT_EQ(log[0].at("event_type"), "stream.started");
    EXPECT_EQ(log[0].at("user_id"), owner);
    EXPECT_EQ(log[0].at("payload").value("session_id", std::int64_t{-1}), session_id);
    EXPECT_EQ(log[1].at("version"), 2);
    EXPECT_EQ(log[1].at("event_type"), "stream.stopped");
    EXPECT_EQ(events_->version("stream", std::to_string(id)), 2);
    // The owner's audit trail has both, newest first.
    json trail = events_->by_user(owner);
    ASSERT_EQ(trail.size(), 2u);
    EXPECT_EQ(trail[0].at("event_type"), "stream.stopped");
    EXPECT_EQ(trail[1].at("event_type"), "stream.started");
}

TEST_F(Streams, StartingOrStoppingAMissingStreamIsNotFound) {
    EXPECT_TRUE(ThrowsCode([&] { streams_->start(123); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { streams_->stop(123); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { streams_->create(987654, "Orphan"); }, RSDB_ERR_NOT_FOUND));
    const std::int64_t id = streams_->create(insert_user("idle"), "Idle").at("id");
    EXPECT_TRUE(ThrowsCode([&] { streams_->stop(id); }, RSDB_ERR_STATE)) << "never started";
    EXPECT_EQ(count_rows("stream_sessions"), 0);
    EXPECT_EQ(count_rows("event_log"), 0);
}

// ================================================================ stream sessions

TEST_F(StreamSessions, ViewersBytesAndEndWithComputedDuration) {
    const std::int64_t stream_id = streams_->create(insert_user("sessions"), "Sessions").at("id");
    json s = sessions_->create(stream_id);
    const std::int64_t id = s.at("id");
    EXPECT_EQ(s.at("stream_id"), stream_id);
    EXPECT_EQ(s.at("total_viewers"), 0);
    EXPECT_TRUE(s.at("ended_at").is_null());
    EXPECT_TRUE(s.at("duration_seconds").is_null());

    for (int current : {1, 4, 2, 3}) s = sessions_->record_viewer(id, current);
    EXPECT_EQ(s.at("total_viewers"), 4);
    EXPECT_EQ(s.at("peak_viewers"), 4);
    EXPECT_EQ(sessions_->get(id).at("peak_viewers"), 4);

    EXPECT_EQ(sessions_->add_bytes(id, 1000).at("bytes_transferred"), 1000);
    EXPECT_EQ(sessions_->add_bytes(id, 5'000'000'000LL).at("bytes_transferred"), 5'000'001'000LL);
    EXPECT_TRUE(ThrowsCode([&] { sessions_->add_bytes(id, -1); }, RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(sessions_->get(id).at("bytes_transferred"), 5'000'001'000LL);

    ASSERT_EQ(db().execute("UPDATE stream_sessions SET started_at = started_at - interval '90 seconds' WHERE id = $1",
                           json::array({id})),
              1u);
    json ended = sessions_->end(id);
    ASSERT_TRUE(ended.at("duration_seconds").is_number_integer()) << ended.dump();
    const std::int64_t duration = ended.at("duration_seconds");
    EXPECT_GE(duration, 90);
    EXPECT_LE(duration, 92);
    EXPECT_TRUE(ended.at("ended_at").is_string());
    EXPECT_EQ(sessions_->get(id), ended);
    EXPECT_TRUE(ThrowsCode([&] { sessions_->end(id); }, RSDB_ERR_STATE));
    EXPECT_EQ(sessions_->get(id).at("duration_seconds"), duration);
    json list = sessions_->list(stream_id);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0], ended);
}

TEST_F(StreamSessions, MissingStreamsAndSessionsAreNotFound) {
    const std::int64_t stream_id = streams_->create(insert_user("nosuch"), "Exists").at("id");
    const std::int64_t missing = stream_id + 1000;
    ASSERT_EQ(db().query("SELECT count(*) AS n FROM streams WHERE id = $1", json::array({missing})).at(0).at("n"), 0);
    EXPECT_TRUE(ThrowsCode([&] { sessions_->create(missing); }, RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(count_rows("stream_sessions"), 0);
    EXPECT_TRUE(ThrowsCode([&] { sessions_->get(777); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { sessions_->end(777); }, RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(sessions_->list(missing), json::array());
}

// ================================================================ event store

TEST_F(Events, AppendWithExpectedVersionsAndLoadInOrder) {
    EXPECT_EQ(events_->version("order", "o-1"), 0);
    EXPECT_EQ(events_->load("order", "o-1"), json::array());
    json first = json::array();
    first.push_back(json{{"event_type", "order.placed"},
                         {"payload", {{"total", 42}}},
                         {"metadata", {{"ip", "10.0.0.1"}}},
                         {"user_id", 7}});
    first.push_back(json{{"event_type", "order.paid"}});
    EXPECT_EQ(events_->append("order", "o-1", 0, first), 2);
    EXPECT_EQ(events_->append("order", "o-1", 2, json::array({event("order.shipped")})), 3);
    EXPECT_EQ(events_->append("order", "o-2", 0, json::array({event("order.placed")})), 1);
    json all = events_->load("order", "o-1");
    ASSERT_EQ(all.size(), 3u);
    const std::vector<std::string> types = {"order.placed", "order.paid", "order.shipped"};
    for (size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(all[i].at("version"), static_cast<std::int64_t>(i + 1));
        EXPECT_EQ(all[i].at("event_type"), types[i]);
        EXPECT_EQ(all[i].at("aggregate_id"), "o-1");
    }
    EXPECT_EQ(all[0].at("payload"), json({{"total", 42}}));
    EXPECT_EQ(all[0].at("metadata"), json({{"ip", "10.0.0.1"}}));
    EXPECT_EQ(all[0].at("user_id"), 7);
    json tail = events_->load("order", "o-1", 2);
    ASSERT_EQ(tail.size(), 1u);
    EXPECT_EQ(tail[0].at("version"), 3);
    EXPECT_EQ(events_->version("order", "o-1"), 3);
}

TEST_F(Events, AStaleExpectedVersionIsAConflictAndWritesNothing) {
    ASSERT_EQ(events_->append("cart", "c-1", 0,
                              json::array({event("item.added"), event("item.added"), event("item.removed")})),
              3);
    const json before = events_->load("cart", "c-1");
    const json batch = json::array({event("stale.one"), event("stale.two")});
    for (std::int64_t stale : {0, 1, 2, 4, 100}) {
        EXPECT_TRUE(ThrowsCode([&] { events_->append("cart", "c-1", stale, batch); }, RSDB_ERR_CONFLICT))
            << "expected " << stale;
    }
    EXPECT_EQ(events_->load("cart", "c-1"), before);
    EXPECT_EQ(events_->version("cart", "c-1"), 3);
    EXPECT_EQ(count_rows("event_log"), 3);
    EXPECT_EQ(events_->append("cart", "c-1", 3, batch), 5);
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

namespace {
json fold(json state, const json& events) {
    for (const auto& e : events) {
        const std::int64_t amount = e.at("payload").at("amount");
        if (e.at("event_type") == "wallet.deposited") {
            state["balance"] = state["balance"].get<std::int64_t>() + amount;
            state["deposits"] = state["deposits"].get<std::int64_t>() + 1;
        } else if (e.at("event_type") == "wallet.withdrawn") {
            state["balance"] = state["balance"].get<std::int64_t>() - amount;
            state["withdrawals"] = state["withdrawals"].get<std::int64_t>() + 1;
        }
        state["version"] = e.at("version");
    }
    return state;
}

json empty_wallet() { return json{{"balance", 0}, {"deposits", 0}, {"withdrawals", 0}, {"version", 0}}; }
}  // namespace

TEST_F(Events, SnapshotPlusLaterEventsEqualsTheFullReplay) {
    for (int batch = 0; batch < 5; ++batch) {
        json events = json::array();
        for (int i = batch * 5 + 1; i <= batch * 5 + 5; ++i) {
            events.push_back(
                json{{"event_type", i % 3 == 0 ? "wallet.withdrawn" : "wallet.deposited"}, {"payload", {{"amount", i * 10}}}});
        }
        ASSERT_EQ(events_->append("wallet", "w-1", batch * 5, events), batch * 5 + 5);
    }
    const json all = events_->load("wallet", "w-1");
    ASSERT_EQ(all.size(), 25u);
    const json full = fold(empty_wallet(), all);

    json none = events_->load_from_snapshot("wallet", "w-1");
    EXPECT_TRUE(none.at("snapshot").is_null());
    EXPECT_EQ(none.at("events"), all);

    const json at10 = fold(empty_wallet(), json(std::vector<json>(all.begin(), all.begin() + 10)));
    const json at20 = fold(empty_wallet(), json(std::vector<json>(all.begin(), all.begin() + 20)));
    ASSERT_EQ(at20.at("version"), 20);
    ASSERT_NE(at20.at("balance"), full.at("balance")) << "the test needs events after the snapshot to matter";
    events_->save_snapshot("wallet", "w-1", 10, at10);
    events_->save_snapshot("wallet", "w-1", 20, at20);

    json loaded = events_->load_from_snapshot("wallet", "w-1");
    ASSERT_TRUE(loaded.at("snapshot").is_object()) << loaded.dump();
    EXPECT_EQ(loaded.at("snapshot").at("version"), 20);
    EXPECT_EQ(loaded.at("snapshot").at("state"), at20);
    const json& rest = loaded.at("events");
    ASSERT_EQ(rest.size(), 5u);
    for (size_t i = 0; i < rest.size(); ++i) EXPECT_EQ(rest[i].at("version"), static_cast<std::int64_t>(21 + i));
    EXPECT_EQ(fold(loaded.at("snapshot").at("state"), rest), full);
}

TEST_F(Events, AuditTrailByUserIsNewestFirstAndLimited) {
    auto by = [](const std::string& type, std::int64_t user) { return json{{"event_type", type}, {"user_id", user}}; };
    events_->append("session", "s-1", 0, json::array({by("user.logged_in", 42)}));
    events_->append("stream", "st-9", 0, json::array({by("stream.created", 42)}));
    events_->append("stream", "st-9", 1, json::array({by("stream.renamed", 43)}));
    events_->append("session", "s-1", 1, json::array({by("user.logged_out", 42)}));
    json trail = events_->by_user(42);
    std::vector<std::string> types;
    for (const auto& e : trail) {
        EXPECT_EQ(e.at("user_id"), 42);
        types.push_back(e.at("event_type"));
    }
    EXPECT_EQ(types, (std::vector<std::string>{"user.logged_out", "stream.created", "user.logged_in"}));
    json limited = events_->by_user(42, 2);
    ASSERT_EQ(limited.size(), 2u);
    EXPECT_EQ(limited[0].at("event_type"), "user.logged_out");
    EXPECT_EQ(limited[1].at("event_type"), "stream.created");
    ASSERT_EQ(events_->by_user(43).size(), 1u);
    EXPECT_EQ(events_->by_user(44), json::array());
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

// ================================================================ hostile strings

TEST_F(HostileStrings, UserFieldsAreStoredAndFoundVerbatim) {
    const std::vector<std::string> usernames = {kHostile[0], kHostile[1],
                                                "O'Brien \"q\" \\ $1 \xF0\x9F\x8E\xAE \xE6\x97\xA5\xE6\x9C\xAC"};
    const std::string password = kHostile[0];
    std::vector<User> users;
    for (size_t i = 0; i < usernames.size(); ++i) {
        const std::string email = "h" + std::to_string(i) + "+$1'@example.com";
        users.push_back(User::create(db(), usernames[i], email, password, kHostile[(i + 3) % kHostile.size()]));
        EXPECT_EQ(users.back().username(), usernames[i]);
        EXPECT_EQ(users.back().email(), email);
        EXPECT_EQ(users.back().display_name(), std::optional<std::string>(kHostile[(i + 3) % kHostile.size()]));
    }
    for (size_t i = 0; i < usernames.size(); ++i) {
        EXPECT_EQ(User::load_by_username(db(), usernames[i]).id(), users[i].id()) << usernames[i];
    }
    EXPECT_EQ(User::authenticate(db(), usernames[1], password).id(), users[1].id());
    User& u = users[2];
    for (const auto& s : kHostile) {
        u.update_profile(db(), s, s + "/avatar.png");
        User back = User::load_by_id(db(), u.id());
        EXPECT_EQ(back.display_name(), std::optional<std::string>(s));
        EXPECT_EQ(back.avatar_url(), std::optional<std::string>(s + "/avatar.png"));
        EXPECT_EQ(back.username(), usernames[2]);
    }
    EXPECT_EQ(count_rows("users"), 3);
    EXPECT_TRUE(tables_exist());
}

TEST_F(HostileStrings, StreamNamesDescriptionsAndEventsAreStoredVerbatim) {
    const std::int64_t owner = insert_user("hostile_owner");
    for (const auto& s : kHostile) {
        const std::string description = s + "\nsecond line\t" + s;
        json created = streams_->create(owner, s, description);
        json back = streams_->get(created.at("id"));
        EXPECT_EQ(back.at("name"), s);
        EXPECT_EQ(back.at("description"), description);
        EXPECT_EQ(streams_->get_by_key(created.at("stream_key")).at("name"), s);
    }
    EXPECT_EQ(count_rows("streams"), static_cast<std::int64_t>(kHostile.size()));
    for (const auto& s : kHostile) {
        const json payload = {{"text", s}, {s, s}, {"list", json::array({s, s + s})}};
        json e = {{"event_type", s}, {"payload", payload}, {"metadata", {{"note", s}}}};
        EXPECT_EQ(events_->append(s, s, 0, json::array({e})), 1);
        json loaded = events_->load(s, s);
        ASSERT_EQ(loaded.size(), 1u) << s;
        EXPECT_EQ(loaded[0].at("aggregate_type"), s);
        EXPECT_EQ(loaded[0].at("aggregate_id"), s);
        EXPECT_EQ(loaded[0].at("event_type"), s);
        EXPECT_EQ(loaded[0].at("payload"), payload);
        EXPECT_EQ(loaded[0].at("metadata"), json({{"note", s}}));
        events_->save_snapshot(s, s, 1, json{{"s", s}});
        json snap = events_->load_from_snapshot(s, s);
        EXPECT_EQ(snap.at("snapshot").at("state"), json({{"s", s}}));
    }
    EXPECT_EQ(count_rows("event_log"), static_cast<std::int64_t>(kHostile.size()));
    EXPECT_TRUE(tables_exist());
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
    const std::int64_t stream_id = streams_->create(owner, "valid").at("id");
    StreamStats stats;
    stats.resolution = bad;
    EXPECT_TRUE(ThrowsCode([&] { streams_->update_stats(stream_id, stats); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(streams_->get(stream_id).at("resolution").is_null());

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
