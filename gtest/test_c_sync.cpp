// The C face of state sync: every rsdb_sync_* and rsdb_snapshots_* function called with real
// values between two managers on the stack's Redis, callbacks on library threads from C
// function pointers (events, conflicts, resyncs and a C merge function), what stops them, and
// the status codes of bad input. The behaviour itself is specified by the cargo tests
// (tests/sync*.rs).
#include "c_api_util.h"
#include "stack_env.h"
#include "sync_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rsdb_test::capi;
using json = nlohmann::json;

struct Inbox {
    std::mutex m;
    std::vector<json> items;
    std::vector<std::thread::id> threads;

    void add(const char* text) {
        std::lock_guard<std::mutex> g(m);
        items.push_back(json::parse(text));
        threads.push_back(std::this_thread::get_id());
    }
    size_t size() {
        std::lock_guard<std::mutex> g(m);
        return items.size();
    }
    json at(size_t i) {
        std::lock_guard<std::mutex> g(m);
        return items.at(i);
    }
};

void on_event(void* user_data, const char* event_type, const char* envelope_json) {
    auto* inbox = static_cast<Inbox*>(user_data);
    json env = json::parse(envelope_json);
    EXPECT_EQ(env.at("type"), event_type);
    inbox->add(envelope_json);
}

void on_report(void* user_data, const char* report_json) { static_cast<Inbox*>(user_data)->add(report_json); }

// A C merge function: the larger "viewers" of the two states, other fields from the newer.
char* merge_max_viewers(void* user_data, const char* entity_type, const char* id, const char* older_json,
                        const char* newer_json) {
    static_cast<std::atomic<int>*>(user_data)->fetch_add(1);
    EXPECT_STREQ(entity_type, "board");
    EXPECT_NE(id, nullptr);
    json older = json::parse(older_json), newer = json::parse(newer_json);
    json out = newer;
    out["viewers"] = std::max(older.value("viewers", 0), newer.value("viewers", 0));
    const std::string text = out.dump();
    char* p = static_cast<char*>(std::malloc(text.size() + 1));
    std::memcpy(p, text.c_str(), text.size() + 1);
    return p;
}

char* merge_refuses(void*, const char*, const char*, const char*, const char*) { return nullptr; }

bool eventually(const std::function<bool()>& f) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!f()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
}

class CSync : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        StackTest::SetUp();
        if (HasFatalFailure() || IsSkipped()) return;
        rsdb_config* cfg = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&cfg));
        cfg_.reset(cfg);
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "redis_url", redis_url().c_str()));
        rsdb_db* db = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg, &db));
        db_.reset(db);
        ASSERT_RSDB_OK(rsdb_db_migrate(db, nullptr));
        rsdb_redis* redis = nullptr;
        ASSERT_RSDB_OK(rsdb_redis_open(cfg, &redis));
        redis_.reset(redis);
        ns_ = sync_namespace(prefix());
    }

    void open(const std::string& instance, SyncPtr* out, bool with_db = true) {
        rsdb_sync* s = nullptr;
        ASSERT_RSDB_OK(rsdb_sync_open(cfg_.get(), redis_.get(), with_db ? db_.get() : nullptr,
                                      sync_options(ns_, instance).c_str(), &s));
        ASSERT_NE(s, nullptr);
        out->reset(s);
    }

    json status(const SyncPtr& s) {
        OutString out;
        return RSDB_JSON(rsdb_sync_status(s.get(), out.out()), out);
    }

    ConfigPtr cfg_;
    DbPtr db_;
    RedisPtr redis_;
    std::string ns_;
};

TEST_F(CSync, EverySyncFunctionCarriesItsValuesThroughTheCApi) {
    SyncPtr a, b;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    ASSERT_NO_FATAL_FAILURE(open("b", &b));
    OutString origin;
    ASSERT_RSDB_OK(rsdb_sync_origin(a.get(), origin.out()));
    EXPECT_EQ(origin.str().rfind("a/", 0), 0u) << origin.str();

    Inbox events;
    uint64_t sub = 0;
    ASSERT_RSDB_OK(rsdb_sync_subscribe(b.get(), "stream.*", on_event, &events, &sub));
    EXPECT_GT(sub, 0u);
    uint64_t seq = 0;
    ASSERT_RSDB_OK(rsdb_sync_publish(a.get(), "stream.started", R"({"id": 42, "title": "speedrun"})", &seq));
    EXPECT_EQ(seq, 1u);
    ASSERT_RSDB_OK(rsdb_sync_publish(a.get(), "viewer.joined", R"({"id": 42})", nullptr));

    OutString outcome;
    ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", "42", R"({"title": "live", "viewers": 3})", outcome.out()));
    EXPECT_EQ(outcome.parse(), (json{{"outcome", "applied"}, {"fields", {"title", "viewers"}}}));
    ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", "42", R"({"viewers": null})", nullptr));
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));

    ASSERT_TRUE(eventually([&] { return events.size() == 3; })) << events.size();
    json started = events.at(0);
    EXPECT_EQ(started.at("type"), "stream.started");
    EXPECT_EQ(started.at("entity"), "stream");
    EXPECT_EQ(started.at("id"), "42");
    EXPECT_EQ(started.at("origin"), origin.str());
    EXPECT_EQ(started.at("seq"), 1);
    EXPECT_EQ(started.at("payload").at("title"), "speedrun");
    EXPECT_GT(started.at("hlc").at("wall_ms").get<uint64_t>(), 0u);
    EXPECT_EQ(events.at(1).at("type"), "stream.delta") << "viewer.joined does not match stream.*";
    EXPECT_NE(events.threads.at(0), std::this_thread::get_id()) << "callbacks run on a library thread";

    ASSERT_TRUE(eventually([&] {
        OutString state;
        return rsdb_sync_get_snapshot(b.get(), "stream", "42", state.out()) == RSDB_OK && !state.is_null() &&
               state.parse() == json{{"title", "live"}};
    }));
    OutString unseen;
    ASSERT_RSDB_OK(rsdb_sync_get_snapshot(b.get(), "stream", "nope", unseen.out()));
    EXPECT_TRUE(unseen.is_null()) << "an entity never seen is NULL";

    ASSERT_RSDB_OK(rsdb_sync_catch_up(b.get()));
    json st = status(b);
    EXPECT_EQ(st.at("received"), 4);
    EXPECT_EQ(st.at("subscriptions"), 1);
    EXPECT_EQ(st.at("lag"), 0);
    EXPECT_EQ(st.at("namespace"), ns_);
    EXPECT_TRUE(st.at("recent_conflicts").empty());

    ASSERT_RSDB_OK(rsdb_sync_unsubscribe(b.get(), sub));
    EXPECT_TRUE(Fails(rsdb_sync_unsubscribe(b.get(), sub), RSDB_ERR_NOT_FOUND));
    ASSERT_RSDB_OK(rsdb_sync_publish(a.get(), "stream.stopped", R"({"id": 42})", nullptr));
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(events.size(), 3u) << "no delivery after unsubscribe";
}

TEST_F(CSync, AMergeFunctionInCResolvesConcurrentChangesAndWithoutOneAConflictIsReported) {
    SyncPtr a, b;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    ASSERT_NO_FATAL_FAILURE(open("b", &b));
    for (auto* s : {a.get(), b.get()}) {
        ASSERT_RSDB_OK(rsdb_sync_register_type(s, "board", "version_vectors"));
        ASSERT_RSDB_OK(rsdb_sync_register_type(s, "poll", "vv"));
    }
    std::atomic<int> merges{0};
    ASSERT_RSDB_OK(rsdb_sync_set_merge(a.get(), "board", merge_max_viewers, &merges));
    ASSERT_RSDB_OK(rsdb_sync_set_merge(b.get(), "board", merge_max_viewers, &merges));
    Inbox conflicts;
    ASSERT_RSDB_OK(rsdb_sync_on_conflict(b.get(), on_report, &conflicts));
    // Changes made on both sides at once are concurrent unless one arrives in between; a few
    // entities make at least one concurrent pair certain.
    for (int i = 0; i < 20; ++i) {
        const std::string id = "e" + std::to_string(i);
        ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "board", id.c_str(), R"({"viewers": 5})", nullptr));
        ASSERT_RSDB_OK(rsdb_sync_apply_delta(b.get(), "board", id.c_str(), R"({"viewers": 3, "by": "b"})", nullptr));
        ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "poll", id.c_str(), R"({"answer": "a"})", nullptr));
        ASSERT_RSDB_OK(rsdb_sync_apply_delta(b.get(), "poll", id.c_str(), R"({"answer": "b"})", nullptr));
    }
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    ASSERT_RSDB_OK(rsdb_sync_flush(b.get(), 5000));
    ASSERT_TRUE(eventually([&] { return status(a).at("lag") == 0 && status(b).at("lag") == 0; }));
    EXPECT_GT(merges.load(), 0) << "the C merge function was called";
    ASSERT_GT(conflicts.size(), 0u) << "poll has no merge function: its concurrent pairs are conflicts";
    json c = conflicts.at(0);
    EXPECT_EQ(c.at("entity_type"), "poll");
    EXPECT_EQ(c.at("lost").size(), 1u);
    EXPECT_NE(c.at("reason").get<std::string>().find("no merge function"), std::string::npos);
    for (int i = 0; i < 20; ++i) {
        const std::string id = "e" + std::to_string(i);
        OutString sa, sb;
        ASSERT_RSDB_OK(rsdb_sync_get_snapshot(a.get(), "board", id.c_str(), sa.out()));
        ASSERT_RSDB_OK(rsdb_sync_get_snapshot(b.get(), "board", id.c_str(), sb.out()));
        EXPECT_EQ(sa.parse(), sb.parse()) << id;
    }
    EXPECT_FALSE(status(b).at("recent_conflicts").empty());

    // A merge function that returns NULL turns the pair into a conflict; NULL removes it.
    ASSERT_RSDB_OK(rsdb_sync_set_merge(a.get(), "board", merge_refuses, nullptr));
    ASSERT_RSDB_OK(rsdb_sync_set_merge(a.get(), "board", nullptr, nullptr));
    EXPECT_TRUE(Fails(rsdb_sync_set_merge(a.get(), "stream", merge_refuses, nullptr), RSDB_ERR_INVALID_ARGUMENT,
                      "last writer wins"));
}

// Numbers missing from the log (as after a trim past the reader, here made by moving the log's
// counter on) reach the resync callback with where the reader stood and what it found.
TEST_F(CSync, ALogThatSkipsPastTheReaderIsReportedToTheResyncCallback) {
    SyncPtr a, b;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    ASSERT_NO_FATAL_FAILURE(open("b", &b, false));
    Inbox resyncs;
    ASSERT_RSDB_OK(rsdb_sync_on_resync(b.get(), on_report, &resyncs));
    EXPECT_TRUE(Fails(rsdb_sync_on_resync(nullptr, on_report, &resyncs), RSDB_ERR_NULL));
    ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", "1", R"({"n": 1})", nullptr));
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    ASSERT_TRUE(eventually([&] { return status(b).at("received") == 1; })) << status(b).dump();
    EXPECT_EQ(resyncs.size(), 0u);

    const std::string counter = "{" + ns_ + ":sync}:counter";
    OutString reply;
    ASSERT_RSDB_OK(rsdb_redis_command(redis_.get(), json::array({"HINCRBY", counter, "n", "5"}).dump().c_str(),
                                      reply.out()));
    EXPECT_EQ(reply.parse(), 6);
    ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", "1", R"({"n": 2})", nullptr));
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    ASSERT_TRUE(eventually([&] { return resyncs.size() >= 1; })) << status(b).dump();
    const json r = resyncs.at(0);
    EXPECT_EQ(r.at("expected_seq"), 2) << r.dump();
    EXPECT_EQ(r.at("found_seq"), 7) << r.dump();
    EXPECT_FALSE(r.at("reason").get<std::string>().empty());
    EXPECT_EQ(status(b).at("resyncs"), 1);
    // The message after the hole is applied all the same.
    ASSERT_TRUE(eventually([&] {
        OutString snap;
        return rsdb_sync_get_snapshot(b.get(), "stream", "1", snap.out()) == RSDB_OK && snap.parse() == json{{"n", 2}};
    }));
}

TEST_F(CSync, SnapshotsAreTakenListedReconstructedPrunedAndTakenPeriodically) {
    SyncPtr a;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    for (int i = 0; i < 50; ++i) {
        const std::string delta = json{{"n", i}}.dump();
        ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", std::to_string(i % 10).c_str(), delta.c_str(), nullptr));
    }
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    ASSERT_TRUE(eventually([&] { return status(a).at("lag") == 0; }));
    rsdb_snapshots* raw = nullptr;
    ASSERT_RSDB_OK(rsdb_snapshots_new(db_.get(), a.get(), &raw));
    SnapshotsPtr snaps(raw);
    OutString info;
    json first = RSDB_JSON(rsdb_snapshots_take(snaps.get(), info.out()), info);
    EXPECT_EQ(first.at("version"), 1);
    EXPECT_EQ(first.at("entity_count"), 10);
    EXPECT_LT(first.at("stored_bytes").get<int64_t>(), first.at("raw_bytes").get<int64_t>());
    ASSERT_RSDB_OK(rsdb_snapshots_take(snaps.get(), nullptr));
    OutString list;
    json all = RSDB_JSON(rsdb_snapshots_list(snaps.get(), list.out()), list);
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all.at(0).at("version"), 2);
    ASSERT_RSDB_OK(rsdb_sync_apply_delta(a.get(), "stream", "3", R"({"after": true})", nullptr));
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    OutString rebuilt;
    json state = RSDB_JSON(rsdb_snapshots_reconstruct(snaps.get(), rebuilt.out()), rebuilt);
    EXPECT_EQ(state.at("stream").at("3"), (json{{"n", 43}, {"after", true}}));
    EXPECT_EQ(state.at("stream").size(), 10u);
    uint64_t deleted = 0;
    ASSERT_RSDB_OK(rsdb_snapshots_cleanup(snaps.get(), 1, &deleted));
    EXPECT_EQ(deleted, 1u);
    ASSERT_RSDB_OK(rsdb_snapshots_start_periodic(snaps.get(), 100, 2));
    ASSERT_TRUE(eventually([&] {
        OutString l;
        return rsdb_snapshots_list(snaps.get(), l.out()) == RSDB_OK && l.parse().at(0).at("version") >= 4;
    }));
    ASSERT_RSDB_OK(rsdb_snapshots_stop_periodic(snaps.get()));
    OutString after;
    EXPECT_LE(RSDB_JSON(rsdb_snapshots_list(snaps.get(), after.out()), after).size(), 3u) << "keep 2 (+1 in flight)";
    EXPECT_TRUE(Fails(rsdb_snapshots_start_periodic(snaps.get(), 0, 1), RSDB_ERR_INVALID_ARGUMENT));
}

TEST_F(CSync, BadInputGivesItsStatusAndAppliesNothing) {
    SyncPtr a;
    ASSERT_NO_FATAL_FAILURE(open("a", &a, false));
    EXPECT_TRUE(Fails(rsdb_sync_apply_delta(a.get(), "planet", "1", R"({"x": 1})", nullptr), RSDB_ERR_INVALID_ARGUMENT,
                      "unknown entity type"));
    EXPECT_TRUE(Fails(rsdb_sync_apply_delta(a.get(), "stream", "1", "{nope", nullptr), RSDB_ERR_JSON));
    EXPECT_TRUE(Fails(rsdb_sync_apply_delta(a.get(), "stream", "1", "[1, 2]", nullptr), RSDB_ERR_JSON, "object"));
    const std::string big = json{{"x", std::string(70 * 1024, 'y')}}.dump();
    EXPECT_TRUE(Fails(rsdb_sync_apply_delta(a.get(), "stream", "1", big.c_str(), nullptr), RSDB_ERR_INVALID_ARGUMENT,
                      "limit"));
    EXPECT_TRUE(Fails(rsdb_sync_publish(a.get(), "stream.started", big.c_str(), nullptr), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(Fails(rsdb_sync_publish(a.get(), "stream.delta", "{}", nullptr), RSDB_ERR_INVALID_ARGUMENT, "reserved"));
    EXPECT_TRUE(Fails(rsdb_sync_publish(a.get(), "stream.started", "{nope", nullptr), RSDB_ERR_JSON));
    EXPECT_TRUE(Fails(rsdb_sync_register_type(a.get(), "board", "best"), RSDB_ERR_INVALID_ARGUMENT, "strategy"));
    EXPECT_TRUE(Fails(rsdb_sync_register_type(a.get(), "stream", "vv"), RSDB_ERR_STATE));
    EXPECT_TRUE(Fails(rsdb_sync_subscribe(a.get(), "", on_event, nullptr, nullptr), RSDB_ERR_NULL));
    uint64_t id = 0;
    EXPECT_TRUE(Fails(rsdb_sync_subscribe(a.get(), "", on_event, nullptr, &id), RSDB_ERR_INVALID_ARGUMENT));
    rsdb_sync* other = nullptr;
    EXPECT_TRUE(Fails(rsdb_sync_open(cfg_.get(), redis_.get(), nullptr, R"({"colour": "red"})", &other),
                      RSDB_ERR_INVALID_ARGUMENT, "unknown sync option"));
    EXPECT_TRUE(Fails(rsdb_sync_open(cfg_.get(), redis_.get(), nullptr, R"({"namespace": "a*b"})", &other),
                      RSDB_ERR_INVALID_ARGUMENT, "namespace"));
    EXPECT_EQ(other, nullptr);
    ASSERT_RSDB_OK(rsdb_sync_flush(a.get(), 5000));
    json st = status(a);
    EXPECT_EQ(st.at("sent"), 0) << "nothing was sent";
    OutString state;
    ASSERT_RSDB_OK(rsdb_sync_get_snapshot(a.get(), "stream", "1", state.out()));
    EXPECT_TRUE(state.is_null()) << "nothing was applied";
}

TEST_F(CSync, ModelHandlesWithASyncManagerAnnounceTheirChangesToAnotherInstance) {
    SyncPtr a, b;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    ASSERT_NO_FATAL_FAILURE(open("b", &b));
    Inbox events;
    uint64_t sub = 0;
    ASSERT_RSDB_OK(rsdb_sync_subscribe(b.get(), "*", on_event, &events, &sub));
    rsdb_users* users_raw = nullptr;
    ASSERT_RSDB_OK(rsdb_users_new(db_.get(), &users_raw));
    UsersPtr users(users_raw);
    rsdb_streams* streams_raw = nullptr;
    ASSERT_RSDB_OK(rsdb_streams_new(db_.get(), redis_.get(), &streams_raw));
    StreamsPtr streams(streams_raw);
    rsdb_sessions* sessions_raw = nullptr;
    ASSERT_RSDB_OK(rsdb_sessions_new(cfg_.get(), db_.get(), redis_.get(), &sessions_raw));
    SessionsPtr sessions(sessions_raw);
    ASSERT_RSDB_OK(rsdb_users_set_sync(users.get(), a.get()));
    ASSERT_RSDB_OK(rsdb_streams_set_sync(streams.get(), a.get()));
    ASSERT_RSDB_OK(rsdb_sessions_set_sync(sessions.get(), a.get()));

    OutString user;
    const int64_t user_id =
        RSDB_JSON(rsdb_users_create(users.get(), "c_syncer", "c_syncer@example.com", "a long enough password", nullptr,
                                    user.out()),
                  user)
            .at("id")
            .get<int64_t>();
    OutString updated;
    ASSERT_RSDB_OK(rsdb_users_update_profile(users.get(), user_id, "C Speedrunner", nullptr, updated.out()));
    OutString stream;
    const int64_t stream_id =
        RSDB_JSON(rsdb_streams_create(streams.get(), user_id, "run", nullptr, stream.out()), stream).at("id").get<int64_t>();
    OutString started;
    ASSERT_RSDB_OK(rsdb_streams_start(streams.get(), stream_id, started.out()));
    OutString token, issued;
    ASSERT_RSDB_OK(
        rsdb_sessions_create(sessions.get(), user_id, "fp", nullptr, nullptr, nullptr, 0, 0, token.out(), issued.out()));

    auto state_on_b = [&](const char* type, int64_t id) {
        OutString s;
        const std::string key = std::to_string(id);
        if (rsdb_sync_get_snapshot(b.get(), type, key.c_str(), s.out()) != RSDB_OK || s.is_null()) return json::object();
        return s.parse();
    };
    ASSERT_TRUE(eventually([&] { return state_on_b("user", user_id).value("display_name", "") == "C Speedrunner"; }));
    ASSERT_TRUE(eventually([&] { return state_on_b("stream", stream_id).value("live", false); }));
    const int64_t session_id = issued.parse().at("id").get<int64_t>();
    ASSERT_TRUE(eventually([&] { return state_on_b("session", session_id).value("active", false); }));
    ASSERT_TRUE(eventually([&] {
        std::lock_guard<std::mutex> g(events.m);
        bool user_ev = false, stream_ev = false, session_ev = false;
        for (const auto& e : events.items) {
            user_ev |= e.at("type") == "user.updated";
            stream_ev |= e.at("type") == "stream.started";
            session_ev |= e.at("type") == "session.created";
        }
        return user_ev && stream_ev && session_ev;
    }));
    // NULL detaches.
    ASSERT_RSDB_OK(rsdb_streams_set_sync(streams.get(), nullptr));
    ASSERT_RSDB_OK(rsdb_users_set_sync(users.get(), nullptr));
    ASSERT_RSDB_OK(rsdb_sessions_set_sync(sessions.get(), nullptr));
}

TEST_F(CSync, AfterCloseReturnsNoCallbackRunsAgain) {
    SyncPtr a, b;
    ASSERT_NO_FATAL_FAILURE(open("a", &a));
    ASSERT_NO_FATAL_FAILURE(open("b", &b));
    Inbox events;
    uint64_t sub = 0;
    ASSERT_RSDB_OK(rsdb_sync_subscribe(b.get(), "*", on_event, &events, &sub));
    std::atomic<bool> stop{false};
    std::thread publisher([&] {
        while (!stop.load()) {
            rsdb_sync_publish(a.get(), "viewer.joined", R"({"id": 1})", nullptr);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    ASSERT_TRUE(eventually([&] { return events.size() > 20; }));
    b.reset();  // rsdb_sync_close while messages keep arriving
    const size_t at_close = events.size();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
    publisher.join();
    EXPECT_EQ(events.size(), at_close);
}

}  // namespace
