// The C++ face of state sync: StateSyncManager and SnapshotManager with std::function handlers
// on library threads, a C++ merge function, typed snapshot descriptions, exceptions by
// subclass, and RAII (a destroyed manager calls nothing again). The behaviour itself is
// specified by the cargo tests (tests/sync*.rs).
#include "rootstream/rootstream_db.hpp"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::cache::RedisClient;
using rootstream::database::DatabaseManager;
using rootstream::sync::SnapshotManager;
using rootstream::sync::StateSyncManager;
using rootstream::sync::Strategy;

namespace {

bool eventually(const std::function<bool()>& f) {
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (!f()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

struct Collected {
    std::mutex m;
    std::vector<json> items;
    std::vector<std::thread::id> threads;
    void add(const json& j) {
        std::lock_guard<std::mutex> g(m);
        items.push_back(j);
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

class CppSync : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure() || IsSkipped()) return;
        config_ = std::make_unique<Config>();
        config_->set("database_url", db_url()).set("redis_url", redis_url());
        db_ = std::make_unique<DatabaseManager>(*config_);
        ASSERT_GE(db_->migrate(), 4);
        redis_ = std::make_unique<RedisClient>(*config_);
        ns_ = "gtcpp_";
        for (char c : prefix()) ns_ += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    }

    json options(const std::string& instance) const {
        return {{"namespace", ns_}, {"instance", instance}, {"check_interval_ms", 50}};
    }

    std::unique_ptr<StateSyncManager> open(const std::string& instance) {
        return std::make_unique<StateSyncManager>(*config_, *redis_, *db_, options(instance));
    }

    std::unique_ptr<Config> config_;
    std::unique_ptr<DatabaseManager> db_;
    std::unique_ptr<RedisClient> redis_;
    std::string ns_;
};

TEST_F(CppSync, EveryStateSyncManagerMethodCarriesJsonAndHandlersRunOnALibraryThread) {
    auto a = open("a");
    auto b = std::make_unique<StateSyncManager>(*config_, *redis_, options("b"));
    EXPECT_EQ(a->origin().rfind("a/", 0), 0u);
    Collected events;
    const auto sub = b->subscribe("stream.*", [&](const json& env) { events.add(env); });
    EXPECT_EQ(a->publish(rootstream::sync::events::kStreamStarted, {{"id", 7}, {"title", "speedrun"}}), 1u);
    a->publish(rootstream::sync::events::kViewerJoined, {{"id", 7}});
    const json out = a->apply_delta("stream", "7", {{"title", "live"}, {"viewers", 2}});
    EXPECT_EQ(out, (json{{"outcome", "applied"}, {"fields", {"title", "viewers"}}}));
    a->flush(5s);
    ASSERT_TRUE(eventually([&] { return events.size() == 2; }));
    EXPECT_EQ(events.at(0).at("type"), "stream.started");
    EXPECT_EQ(events.at(0).at("payload").at("title"), "speedrun");
    EXPECT_EQ(events.at(0).at("origin"), a->origin());
    EXPECT_EQ(events.at(1).at("type"), "stream.delta");
    EXPECT_NE(events.threads.at(0), std::this_thread::get_id());
    ASSERT_TRUE(eventually([&] { return b->get_snapshot("stream", "7") == json({{"title", "live"}, {"viewers", 2}}); }));
    EXPECT_FALSE(b->get_snapshot("stream", "8").has_value());
    b->catch_up();
    const json st = b->status();
    EXPECT_EQ(st.at("received"), 3);
    EXPECT_EQ(st.at("lag"), 0);
    b->unsubscribe(sub);
    EXPECT_THROW(b->unsubscribe(sub), rootstream::NotFound);
}

// A log whose numbers skip past the reader (as after a trim; here the log's counter is moved on)
// reaches the on_resync handler with where the reader stood and what it found.
TEST_F(CppSync, ALogThatSkipsPastTheReaderReachesTheResyncHandler) {
    auto a = open("a");
    auto b = std::make_unique<StateSyncManager>(*config_, *redis_, options("b"));
    Collected resyncs;
    b->on_resync([&](const json& r) { resyncs.add(r); });
    a->apply_delta("stream", "1", {{"n", 1}});
    a->flush(5s);
    ASSERT_TRUE(eventually([&] { return b->status().at("received") == 1; }));
    EXPECT_EQ(redis_->command({"HINCRBY", "{" + ns_ + ":sync}:counter", "n", "5"}), 6);
    a->apply_delta("stream", "1", {{"n", 2}});
    a->flush(5s);
    ASSERT_TRUE(eventually([&] { return resyncs.size() >= 1; })) << b->status().dump();
    EXPECT_EQ(resyncs.at(0).at("expected_seq"), 2) << resyncs.at(0).dump();
    EXPECT_EQ(resyncs.at(0).at("found_seq"), 7) << resyncs.at(0).dump();
    EXPECT_NE(resyncs.threads.at(0), std::this_thread::get_id());
    EXPECT_EQ(b->status().at("resyncs"), 1);
    EXPECT_TRUE(eventually([&] { return b->get_snapshot("stream", "1") == json({{"n", 2}}); }));
}

TEST_F(CppSync, AStdFunctionMergesConcurrentStatesAndAThrowingOneLeavesAConflict) {
    auto a = open("a");
    auto b = open("b");
    std::atomic<int> merges{0};
    auto merge = [&](const std::string& type, const std::string&, const json& older, const json& newer) {
        ++merges;
        EXPECT_EQ(type, "board");
        json out = newer;
        out["viewers"] = std::max(older.value("viewers", 0), newer.value("viewers", 0));
        return out;
    };
    auto refuse = [](const std::string&, const std::string&, const json&, const json&) -> json {
        throw std::runtime_error("no");
    };
    for (auto* m : {a.get(), b.get()}) {
        m->register_entity_type("board", Strategy::VersionVectors);
        m->register_entity_type("poll", Strategy::VersionVectors);
        m->set_merge("board", merge);
        m->set_merge("poll", refuse);
    }
    Collected conflicts;
    b->on_conflict([&](const json& c) { conflicts.add(c); });
    for (int i = 0; i < 20; ++i) {
        const std::string id = "e" + std::to_string(i);
        a->apply_delta("board", id, {{"viewers", 5}});
        b->apply_delta("board", id, {{"viewers", 3}});
        a->apply_delta("poll", id, {{"answer", "a"}});
        b->apply_delta("poll", id, {{"answer", "b"}});
    }
    a->flush(5s);
    b->flush(5s);
    ASSERT_TRUE(eventually([&] { return a->status().at("lag") == 0 && b->status().at("lag") == 0; }));
    EXPECT_GT(merges.load(), 0);
    ASSERT_GT(conflicts.size(), 0u) << "a throwing merge leaves the pair as a conflict";
    EXPECT_NE(conflicts.at(0).at("reason").get<std::string>().find("did not merge"), std::string::npos);
    for (int i = 0; i < 20; ++i) {
        const std::string id = "e" + std::to_string(i);
        EXPECT_EQ(a->get_snapshot("board", id), b->get_snapshot("board", id)) << id;
    }
    a->set_merge("board", nullptr);
    EXPECT_THROW(a->set_merge("stream", merge), rootstream::InvalidArgument);
}

TEST_F(CppSync, SnapshotManagerHandsBackTypedDescriptionsAndTheRebuiltState) {
    auto a = open("a");
    for (int i = 0; i < 30; ++i) a->apply_delta("stream", std::to_string(i % 6), {{"n", i}});
    a->flush(5s);
    ASSERT_TRUE(eventually([&] { return a->status().at("lag") == 0; }));
    SnapshotManager snaps(*db_, *a);
    const auto first = snaps.take();
    EXPECT_EQ(first.version, 1);
    EXPECT_EQ(first.entity_count, 6);
    EXPECT_EQ(first.taken_by, a->origin());
    EXPECT_FALSE(first.created_at.empty());
    EXPECT_EQ(first.to_json().at("stored_bytes"), first.stored_bytes);
    snaps.take();
    const auto all = snaps.list();
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all.at(0).version, 2);
    const json state = snaps.reconstruct();
    EXPECT_EQ(state.at("stream").at("5"), (json{{"n", 29}}));
    EXPECT_EQ(snaps.cleanup(1), 1u);
    snaps.start_periodic(100ms, 2);
    ASSERT_TRUE(eventually([&] { return snaps.list().at(0).version >= 4; }));
    snaps.stop_periodic();
    EXPECT_THROW(snaps.start_periodic(0ms, 1), rootstream::InvalidArgument);
}

TEST_F(CppSync, BadInputThrowsTheMatchingSubclassAndAfterCloseSendingIsAStateError) {
    auto a = open("a");
    EXPECT_THROW(a->apply_delta("planet", "1", {{"x", 1}}), rootstream::InvalidArgument);
    EXPECT_THROW(a->apply_delta("stream", "1", json::array({1, 2})), rootstream::Error);
    EXPECT_THROW(a->apply_delta("stream", "1", {{"x", std::string(70 * 1024, 'y')}}), rootstream::InvalidArgument);
    EXPECT_THROW(a->publish("stream.delta", json::object()), rootstream::InvalidArgument);
    EXPECT_THROW(a->publish("bad type", json::object()), rootstream::InvalidArgument);
    EXPECT_THROW(a->register_entity_type("stream", Strategy::VersionVectors), rootstream::StateError);
    EXPECT_THROW(a->subscribe("stream.*", nullptr), rootstream::Error);
    EXPECT_THROW(StateSyncManager(*config_, *redis_, json{{"colour", "red"}}), rootstream::InvalidArgument);
    try {
        a->apply_delta("planet", "1", {{"x", 1}});
        FAIL() << "no exception";
    } catch (const rootstream::Error& e) {
        EXPECT_EQ(e.code(), RSDB_ERR_INVALID_ARGUMENT);
    }
    EXPECT_FALSE(a->get_snapshot("stream", "1").has_value()) << "nothing was applied";
    a->close();
    EXPECT_THROW(a->publish("stream.started", json::object()), rootstream::StateError);
}

TEST_F(CppSync, ModelClassesGivenAManagerAnnounceTheirChangesToAnotherInstance) {
    namespace models = rootstream::database::models;
    auto a = open("a");
    auto b = open("b");
    std::atomic<int> events{0};
    b->subscribe("*", [&](const json& env) {
        const auto type = env.at("type").get<std::string>();
        if (type == "user.updated" || type == "stream.started" || type == "session.created") ++events;
    });
    auto user = models::User::create(*db_, "cpp_syncer", "cpp_syncer@example.com", "a long enough password");
    user.update_profile(*db_, std::string("C++ Speedrunner"), std::nullopt, a.get());
    models::StreamModel streams(*db_, *redis_);
    streams.set_sync(a.get());
    const auto stream = streams.create(user.id(), "run");
    streams.start(stream.id);
    streams.viewer_joined(stream.id);
    models::SessionModel sessions(*config_, *db_, *redis_);
    sessions.set_sync(a.get());
    const auto created = sessions.create(user.id(), models::DeviceInfo{"fp", std::nullopt, std::nullopt, std::nullopt});
    auto on_b = [&](const char* type, std::int64_t id) {
        return b->get_snapshot(type, std::to_string(id)).value_or(json::object());
    };
    ASSERT_TRUE(eventually([&] { return on_b("user", user.id()).value("display_name", "") == "C++ Speedrunner"; }));
    ASSERT_TRUE(eventually([&] { return on_b("stream", stream.id).value("viewers", 0) == 1; }));
    EXPECT_EQ(on_b("stream", stream.id).value("live", false), true);
    ASSERT_TRUE(eventually([&] { return on_b("session", created.session.id).value("active", false); }));
    ASSERT_TRUE(eventually([&] { return events.load() >= 3; }));
    streams.set_sync(nullptr);
    sessions.set_sync(nullptr);
}

TEST_F(CppSync, ADestroyedManagerCallsNoHandlerAgain) {
    auto a = open("a");
    auto b = open("b");
    std::atomic<int> calls{0};
    b->subscribe("*", [&](const json&) { ++calls; });
    std::atomic<bool> stop{false};
    std::thread publisher([&] {
        while (!stop) {
            a->publish("viewer.joined", {{"id", 1}});
            std::this_thread::sleep_for(1ms);
        }
    });
    ASSERT_TRUE(eventually([&] { return calls.load() > 20; }));
    b.reset();
    const int at_destruction = calls.load();
    std::this_thread::sleep_for(300ms);
    stop = true;
    publisher.join();
    EXPECT_EQ(calls.load(), at_destruction);
}

}  // namespace
