// The C++ face of sessions and MFA: rootstream::database::models::SessionModel and
// rootstream::auth::MFAManager against real PostgreSQL and Redis servers. What sessions and MFA do
// is specified in tests/sessions.rs and tests/mfa.rs; these cases show that every method's
// values arrive typed and intact, that errors arrive as their exception subclass, and the flows
// only this face has (std::thread callers, std::string arguments that are not UTF-8). Every test migrates its own fresh database and creates its user
// there. TOTP codes come from oathtool, an implementation independent of the library's; token
// hashes are checked with OpenSSL's SHA-256.
#include "auth_util.h"
#include "rootstream/rootstream_db.hpp"
#include "cpp_api_util.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

using json = nlohmann::json;
using namespace std::chrono_literals;
using rootstream::Config;
using rootstream::Error;
using rootstream::auth::Enrollment;
using rootstream::auth::MFAManager;
using rootstream::auth::MfaStatus;
using rootstream::cache::RedisClient;
using rootstream::database::DatabaseManager;
using rootstream::database::models::CreatedSession;
using rootstream::database::models::DeviceInfo;
using rootstream::database::models::Session;
using rootstream::database::models::SessionCleanup;
using rootstream::database::models::SessionStats;
using rootstream::database::models::SessionModel;
using rootstream::database::models::User;
using rsdb_test::auth::base32_decode;
using rsdb_test::auth::fresh_totp_time;
using rsdb_test::auth::oathtool_code;
using rsdb_test::auth::random_master_key;
using rsdb_test::auth::sha256_hex;
using rsdb_test::auth::to_hex;
using rsdb_test::auth::wrong_code;

using namespace rsdb_test::cppapi;

namespace {

const std::string kLaptop = "fp-laptop-1";
const std::string kPhone = "fp-phone-7";

DeviceInfo laptop() { return DeviceInfo{kLaptop, "203.0.113.7", "RootStream/1.0 (Linux)", "Berlin, DE"}; }
DeviceInfo device(const std::string& fingerprint) { return DeviceInfo{fingerprint, std::nullopt, std::nullopt, std::nullopt}; }

std::int64_t id_of(const CreatedSession& c) { return c.session.id; }

/// RFC 3339 in UTC as the bridge hands timestamps over: 2026-12-01T10:00:00.123456Z.
bool is_utc_timestamp(const std::string& t) {
    return t.size() >= 20 && t[4] == '-' && t[10] == 'T' && t.back() == 'Z';
}

struct Enrolled {
    std::string secret;
    std::vector<std::string> backup_codes;
    std::int64_t t = 0;  // a time with at least 10 s left in its TOTP step; its previous step confirmed
};

using Settings = std::initializer_list<std::pair<std::string, std::string>>;

class CppAuthTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        master_key_ = random_master_key();
        key_id_ = "gt-key-" + master_key_.substr(0, 8);
        config_ = make_config({});
        db_ = std::make_unique<DatabaseManager>(*config_);
        ASSERT_GE(db_->migrate(), 2);
        redis_ = std::make_unique<RedisClient>(*config_);
        sessions_ = std::make_unique<SessionModel>(*config_, *db_, *redis_);
        mfa_ = std::make_unique<MFAManager>(*config_, *db_, redis_.get());
        user_id_ = insert_user("player_one");
    }

    void TearDown() override {
        mfa_.reset();
        sessions_.reset();
        redis_.reset();
        db_.reset();
        config_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// This test's database, the stack's Redis, the test's master key and `extra` keys.
    std::unique_ptr<Config> make_config(Settings extra) {
        auto cfg = std::make_unique<Config>();
        cfg->set("database_url", db_url())
            .set("redis_url", redis_url())
            .set("master_key", master_key_)
            .set("master_key_id", key_id_);
        for (const auto& [k, v] : extra) cfg->set(k, v);
        return cfg;
    }

    std::unique_ptr<SessionModel> make_sessions(Settings extra, RedisClient* redis = nullptr) {
        auto cfg = make_config(extra);
        return std::make_unique<SessionModel>(*cfg, *db_, redis != nullptr ? *redis : *redis_);
    }

    std::unique_ptr<MFAManager> make_mfa(Settings extra) {
        auto cfg = make_config(extra);
        return std::make_unique<MFAManager>(*cfg, *db_, redis_.get());
    }

    DatabaseManager& db() { return *db_; }
    SessionModel& sessions() { return *sessions_; }
    MFAManager& mfa() { return *mfa_; }

    std::int64_t count(const std::string& sql, const json& params = json::array()) {
        return db_->query(sql, params).at(0).at("n").get<std::int64_t>();
    }

    std::int64_t insert_user(const std::string& username) {
        return db_
            ->query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'not-a-hash') RETURNING id",
                    json::array({username, username + "@example.com"}))
            .at(0)
            .at("id")
            .get<std::int64_t>();
    }

    /// The stored row of a session (token_hash included), or null.
    json session_row(std::int64_t id) {
        json rows = db_->query(
            "SELECT id, user_id, token_hash, session_token, device_fingerprint, ip_address, user_agent, geo_location,"
            " remember_me, mfa_required, mfa_verified_at, is_active, revoke_reason, revoked_at,"
            " extract(epoch FROM expires_at - now())::float8 AS expires_in_s,"
            " extract(epoch FROM expires_at - created_at)::float8 AS lifetime_s"
            " FROM sessions WHERE id = $1",
            json::array({id}));
        return rows.empty() ? json() : rows.at(0);
    }


    json attempts(std::int64_t user_id) {
        return db_->query("SELECT method, success, reason, ip_address, session_id FROM mfa_attempts WHERE user_id = $1"
                          " ORDER BY id",
                          json::array({user_id}));
    }

    /// Begins enrollment and confirms it with oathtool's code of the step before a fresh time t
    /// (one step of skew), so the steps of t and t+30 are still unused.
    Enrolled enroll(MFAManager& m, std::int64_t user_id, const std::string& ip = "198.51.100.1") {
        Enrollment en = m.begin_enrollment(user_id, "player@example.com");
        Enrolled e;
        e.secret = en.secret_base32;
        e.t = fresh_totp_time();
        e.backup_codes = m.confirm_enrollment(user_id, oathtool_code(e.secret, e.t - 30), ip);
        return e;
    }
    Enrolled enroll() { return enroll(*mfa_, user_id_); }

    std::string master_key_;
    std::string key_id_;
    std::unique_ptr<Config> config_;
    std::unique_ptr<DatabaseManager> db_;
    std::unique_ptr<RedisClient> redis_;
    std::unique_ptr<SessionModel> sessions_;
    std::unique_ptr<MFAManager> mfa_;
    std::int64_t user_id_ = 0;
};

using Sessions = CppAuthTest;
using SessionLimit = CppAuthTest;
using Mfa = CppAuthTest;
using BadInput = CppAuthTest;

}  // namespace

// ================================================================ sessions

TEST_F(Sessions, EverySessionModelMethodHandsBackTypedRecords) {
    const DeviceInfo dev{kLaptop, "203.0.113.7", "RootStream/1.0 (Linux)", "Berlin, DE"};
    CreatedSession c = sessions().create(user_id_, dev, /*remember_me=*/true);
    ASSERT_EQ(c.token.size(), 43u);
    EXPECT_TRUE(rsdb_test::auth::is_base64url(c.token)) << c.token;
    const Session& s = c.session;
    json row = session_row(s.id);
    ASSERT_FALSE(row.is_null());
    EXPECT_EQ(row.at("token_hash"), sha256_hex(c.token));
    EXPECT_EQ(s.user_id, user_id_);
    EXPECT_EQ(s.device_fingerprint, kLaptop);
    EXPECT_EQ(s.ip_address, std::optional<std::string>("203.0.113.7"));
    EXPECT_EQ(s.user_agent, std::optional<std::string>("RootStream/1.0 (Linux)"));
    EXPECT_EQ(s.geo_location, std::optional<std::string>("Berlin, DE"));
    EXPECT_TRUE(s.remember_me);
    EXPECT_FALSE(s.mfa_required);
    EXPECT_FALSE(s.mfa_verified_at.has_value());
    EXPECT_TRUE(is_utc_timestamp(s.created_at)) << s.created_at;
    EXPECT_TRUE(is_utc_timestamp(s.expires_at)) << s.expires_at;
    EXPECT_TRUE(is_utc_timestamp(s.last_activity_at)) << s.last_activity_at;
    EXPECT_GT(s.expires_at, s.created_at) << "RFC 3339 UTC text orders like the times";
    EXPECT_GT(s.idle_timeout_seconds, 0);
    EXPECT_TRUE(s.is_active);
    EXPECT_FALSE(s.revoked_at.has_value());
    EXPECT_FALSE(s.revoke_reason.has_value());

    // to_json() keeps the keys of the C API's session JSON, null for what is unset.
    const json j = s.to_json();
    std::set<std::string> keys;
    for (const auto& item : j.items()) keys.insert(item.key());
    EXPECT_EQ(keys, (std::set<std::string>{"id", "user_id", "device_fingerprint", "ip_address", "user_agent",
                                            "geo_location", "remember_me", "mfa_required", "mfa_verified_at",
                                            "created_at", "expires_at", "last_activity_at", "idle_timeout_seconds",
                                            "is_active", "revoked_at", "revoke_reason"}));
    EXPECT_EQ(j.at("id"), s.id);
    EXPECT_EQ(j.at("geo_location"), "Berlin, DE");
    EXPECT_EQ(j.at("created_at"), s.created_at);
    EXPECT_TRUE(j.at("mfa_verified_at").is_null());
    EXPECT_TRUE(j.at("revoke_reason").is_null());
    EXPECT_EQ(j.dump().find(c.token), std::string::npos);

    Session v = sessions().validate(c.token, kLaptop);
    EXPECT_EQ(v.id, s.id);
    EXPECT_EQ(v.to_json().at("user_agent"), "RootStream/1.0 (Linux)");
    EXPECT_EQ(v.created_at, s.created_at);
    EXPECT_TRUE(sessions().is_valid(c.token, kLaptop));
    EXPECT_FALSE(sessions().is_valid("not-a-token", kLaptop)) << "is_valid answers false instead of throwing";
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate("not-a-token", kLaptop); }, RSDB_ERR_AUTH));

    CreatedSession kept = sessions().refresh(c.token, kLaptop);
    EXPECT_EQ(kept.token, c.token) << "without rotation the token stays";
    EXPECT_EQ(kept.session.id, s.id);
    EXPECT_GE(kept.session.expires_at, s.created_at);
    CreatedSession rotated = sessions().refresh(c.token, kLaptop, /*rotate=*/true);
    EXPECT_NE(rotated.token, c.token);
    EXPECT_EQ(rotated.token.size(), 43u);
    EXPECT_EQ(rotated.session.id, s.id);
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(c.token, kLaptop); }, RSDB_ERR_AUTH));
    EXPECT_TRUE(ThrowsCode([&] { sessions().refresh(c.token, kLaptop, true); }, RSDB_ERR_AUTH));

    CreatedSession phone = sessions().create(user_id_, device(kPhone));
    CreatedSession tv = sessions().create(user_id_, device("fp-tv"));
    std::vector<Session> listed = sessions().list(user_id_);
    ASSERT_EQ(listed.size(), 3u);
    EXPECT_EQ(listed[0].id, tv.session.id);
    EXPECT_EQ(listed[1].id, phone.session.id);
    EXPECT_EQ(listed[2].id, s.id);
    EXPECT_EQ(listed[2].geo_location, std::optional<std::string>("Berlin, DE"));
    EXPECT_FALSE(listed[1].geo_location.has_value());

    sessions().revoke_token(tv.token);
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(tv.token, "fp-tv"); }, RSDB_ERR_AUTH, "revoked"));
    EXPECT_EQ(session_row(tv.session.id).at("revoke_reason"), "logout");
    sessions().revoke(phone.session.id, "admin action");
    EXPECT_EQ(session_row(phone.session.id).at("revoke_reason"), "admin action");
    sessions().revoke(phone.session.id);  // already ended: no change, no error
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke(s.id + 1000); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke_token("no-such-token"); }, RSDB_ERR_NOT_FOUND));
    CreatedSession d = sessions().create(user_id_, laptop());
    EXPECT_EQ(sessions().revoke_all(user_id_, s.id, "password changed"), 1u);
    EXPECT_EQ(session_row(d.session.id).at("revoke_reason"), "password changed");
    EXPECT_EQ(sessions().revoke_all(user_id_), 1u) << "the kept one, with the default reason";
    EXPECT_EQ(session_row(s.id).at("revoke_reason"), "revoked");
    EXPECT_TRUE(sessions().list(user_id_).empty());

    // A pending second factor arrives as MfaRequired, a subclass of AuthError.
    CreatedSession pending = sessions().create(user_id_, laptop(), false, /*mfa_required=*/true);
    EXPECT_TRUE(pending.session.mfa_required);
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(pending.token, kLaptop); }, RSDB_ERR_MFA_REQUIRED));
    EXPECT_THROW(sessions().validate(pending.token, kLaptop, true), rootstream::AuthError);
    EXPECT_FALSE(sessions().is_valid(pending.token, kLaptop));
    EXPECT_TRUE(sessions().is_valid(pending.token, kLaptop, false));

    CreatedSession expired = sessions().create(user_id_, laptop());
    db().execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1",
                 json::array({expired.session.id}));
    db().execute("UPDATE sessions SET revoked_at = now() - interval '40 days' WHERE id = $1", json::array({d.session.id}));
    SessionCleanup report = sessions().cleanup_expired();
    EXPECT_EQ(report.ended, 1u);
    EXPECT_EQ(report.deleted, 1u);
    EXPECT_EQ(report.to_json(), json::parse(R"({"ended":1,"deleted":1})"));
    EXPECT_EQ(sessions().cleanup_expired().to_json(), json::parse(R"({"ended":0,"deleted":0})"));
}

TEST_F(Sessions, StatsArriveAsTypedCountersAndAsJson) {
    auto s = make_sessions({});
    SessionStats zero = s->stats();
    EXPECT_EQ(zero.cache_hits, 0u);
    EXPECT_EQ(zero.cache_misses, 0u);
    EXPECT_EQ(zero.cache_errors, 0u);
    EXPECT_EQ(zero.to_json(), json::parse(R"({"cache_hits":0,"cache_misses":0,"cache_errors":0})"));
    CreatedSession c = s->create(user_id_, laptop());
    s->validate(c.token, kLaptop);  // a hit
    s->validate(c.token, kLaptop);  // a hit
    EXPECT_FALSE(s->is_valid("unknown-token", kLaptop));  // a miss
    SessionStats st = s->stats();
    EXPECT_EQ(st.cache_hits, 2u);
    EXPECT_EQ(st.cache_misses, 1u);
    EXPECT_EQ(st.cache_errors, 0u);
    EXPECT_EQ(st.to_json(), json::parse(R"({"cache_hits":2,"cache_misses":1,"cache_errors":0})"));
}

TEST_F(Sessions, ADeviceCrossesTypedAndItsAbsentFieldsStayNull) {
    CreatedSession c = sessions().create(user_id_, device("fp-bare"));
    Session s = sessions().validate(c.token, "fp-bare");
    EXPECT_EQ(s.device_fingerprint, "fp-bare");
    EXPECT_FALSE(s.ip_address.has_value());
    EXPECT_FALSE(s.user_agent.has_value());
    EXPECT_FALSE(s.geo_location.has_value());
    EXPECT_TRUE(s.to_json().at("ip_address").is_null()) << s.to_json().dump();
    EXPECT_TRUE(s.to_json().at("geo_location").is_null()) << s.to_json().dump();
    // A present but empty value is kept as given, not read as "none".
    CreatedSession e = sessions().create(user_id_, DeviceInfo{"fp-empty", std::string(), std::nullopt, std::nullopt});
    EXPECT_EQ(sessions().validate(e.token, "fp-empty").ip_address, std::optional<std::string>(""));
    // refresh without rotation hands back the same token; with rotation a new one.
    EXPECT_EQ(sessions().refresh(c.token, "fp-bare").token, c.token);
    CreatedSession r = sessions().refresh(c.token, "fp-bare", true);
    EXPECT_NE(r.token, c.token);
    EXPECT_EQ(r.token.size(), c.token.size());
}

// ================================================================ sessions: per-user limit

namespace {

struct LoginOutcome {
    int code = 1;  // RSDB_OK or the Error's code
    std::string message;
    std::string token;
};

std::vector<LoginOutcome> concurrent_logins(SessionModel& s, std::int64_t user_id, int n) {
    std::vector<LoginOutcome> out(static_cast<size_t>(n));
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            LoginOutcome& o = out[static_cast<size_t>(i)];
            ready.fetch_add(1);
            while (!go.load()) std::this_thread::yield();
            try {
                o.token = s.create(user_id, device("fp-" + std::to_string(i))).token;
                o.code = RSDB_OK;
            } catch (const Error& e) {
                o.code = e.code();
                o.message = e.what();
            } catch (const std::exception& e) {
                o.code = RSDB_ERR_INTERNAL;
                o.message = std::string("not a rootstream::Error: ") + e.what();
            }
        });
    }
    while (ready.load() < n) std::this_thread::yield();
    go.store(true);
    for (auto& t : threads) t.join();
    return out;
}

}  // namespace

TEST_F(SessionLimit, EvictOldestHoldsForTenStdThreadsCreatingSessionsAtOnce) {
    auto s = make_sessions({{"session_max_per_user", "3"}, {"session_limit_policy", "evict_oldest"}});
    auto outcomes = concurrent_logins(*s, user_id_, 10);
    int ok = 0;
    for (const auto& o : outcomes) {
        EXPECT_EQ(o.code, RSDB_OK) << o.message;
        if (o.code == RSDB_OK) ++ok;
    }
    EXPECT_EQ(ok, 10) << "evict_oldest never refuses a login";
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND is_active", json::array({user_id_})), 3);
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND NOT is_active AND"
                    " revoke_reason = 'evicted'",
                    json::array({user_id_})),
              7);
    EXPECT_EQ(s->list(user_id_).size(), 3u);
    int valid = 0;
    for (size_t i = 0; i < outcomes.size(); ++i) {
        if (!outcomes[i].token.empty() && s->is_valid(outcomes[i].token, "fp-" + std::to_string(i), false)) ++valid;
    }
    EXPECT_EQ(valid, 3) << "exactly the three surviving tokens still work";
}

TEST_F(SessionLimit, RefuseHoldsForTenStdThreadsCreatingSessionsAtOnce) {
    auto s = make_sessions({{"session_max_per_user", "3"}, {"session_limit_policy", "refuse"}});
    auto outcomes = concurrent_logins(*s, user_id_, 10);
    int ok = 0;
    int refused = 0;
    for (const auto& o : outcomes) {
        if (o.code == RSDB_OK) {
            ++ok;
        } else if (o.code == RSDB_ERR_CONFLICT) {
            ++refused;
            EXPECT_NE(lower(o.message).find("limit"), std::string::npos) << o.message;
        } else {
            ADD_FAILURE() << "unexpected code " << o.code << ": " << o.message;
        }
    }
    EXPECT_EQ(ok, 3);
    EXPECT_EQ(refused, 7);
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1", json::array({user_id_})), 3)
        << "refused logins write nothing";
    for (size_t i = 0; i < outcomes.size(); ++i) {
        if (!outcomes[i].token.empty()) {
            EXPECT_TRUE(s->is_valid(outcomes[i].token, "fp-" + std::to_string(i), false));
        }
    }
}

// ================================================================ MFA

TEST_F(Mfa, EveryMFAManagerMethodHandsBackTypedValues) {
    Enrollment en = mfa().begin_enrollment(user_id_, "player@example.com");
    EXPECT_EQ(en.secret_base32.size(), 32u);
    EXPECT_EQ(en.otpauth_uri.rfind("otpauth://totp/", 0), 0u) << en.otpauth_uri;
    EXPECT_NE(en.otpauth_uri.find("secret=" + en.secret_base32), std::string::npos) << en.otpauth_uri;
    EXPECT_NE(en.qr_svg.find("<svg"), std::string::npos);
    const std::vector<std::uint8_t> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ASSERT_GT(en.qr_png.size(), 8u);
    EXPECT_TRUE(std::equal(signature.begin(), signature.end(), en.qr_png.begin())) << "the PNG bytes arrive intact";

    MfaStatus before = mfa().status(user_id_);
    EXPECT_TRUE(before.enrolled);
    EXPECT_FALSE(before.enabled);
    EXPECT_TRUE(before.confirmed_at.empty());
    EXPECT_EQ(before.backup_codes_remaining, 0);
    EXPECT_EQ(before.key_id, key_id_);
    EXPECT_TRUE(before.to_json().at("confirmed_at").is_null()) << "an unset time is null in the JSON form";
    EXPECT_TRUE(ThrowsCode([&] { mfa().verify(user_id_, oathtool_code(en.secret_base32, rsdb_test::auth::unix_now())); },
                           RSDB_ERR_STATE));
    EXPECT_TRUE(ThrowsCode([&] { mfa().begin_enrollment(user_id_ + 1000, "ghost"); }, RSDB_ERR_NOT_FOUND));

    const std::int64_t t = fresh_totp_time();
    EXPECT_TRUE(ThrowsCode([&] { mfa().confirm_enrollment(user_id_, wrong_code(en.secret_base32, t)); }, RSDB_ERR_AUTH));
    std::vector<std::string> codes = mfa().confirm_enrollment(user_id_, oathtool_code(en.secret_base32, t - 30), "198.51.100.1");
    ASSERT_EQ(codes.size(), 10u);
    EXPECT_EQ(codes[0].size(), 11u) << codes[0];
    EXPECT_EQ(std::set<std::string>(codes.begin(), codes.end()).size(), 10u);

    MfaStatus st = mfa().status(user_id_);
    EXPECT_TRUE(st.enabled);
    EXPECT_TRUE(is_utc_timestamp(st.confirmed_at)) << st.confirmed_at;
    EXPECT_EQ(st.backup_codes_remaining, 10);
    EXPECT_TRUE(st.locked_until.empty());
    EXPECT_EQ(st.to_json().at("confirmed_at"), st.confirmed_at);
    EXPECT_EQ(st.to_json().at("key_id"), key_id_);
    EXPECT_TRUE(st.to_json().at("locked_until").is_null());

    EXPECT_TRUE(mfa().verify(user_id_, oathtool_code(en.secret_base32, t), "203.0.113.1"));
    EXPECT_FALSE(mfa().verify(user_id_, oathtool_code(en.secret_base32, t))) << "a replay is false, not an error";
    EXPECT_TRUE(mfa().verify_backup_code(user_id_, codes[0], "203.0.113.2"));
    EXPECT_FALSE(mfa().verify_backup_code(user_id_, codes[0]));
    json log = attempts(user_id_);
    ASSERT_EQ(log.size(), 6u) << "the wrong and the right enrollment code, two codes, two backup codes: " << log.dump();
    EXPECT_EQ(log[1].at("ip_address"), "198.51.100.1") << "the address arrives";
    EXPECT_EQ(log[2].at("ip_address"), "203.0.113.1");
    EXPECT_TRUE(log[3].at("ip_address").is_null()) << "an empty address is none";

    std::vector<std::string> fresh = mfa().regenerate_backup_codes(user_id_);
    ASSERT_EQ(fresh.size(), 10u);
    EXPECT_EQ(std::count(codes.begin(), codes.end(), fresh[0]), 0);

    // complete_login hands back the session, now with its second factor.
    CreatedSession login = sessions().create(user_id_, laptop(), false, /*mfa_required=*/true);
    EXPECT_TRUE(ThrowsCode([&] { mfa().complete_login(sessions(), login.token, kLaptop, "ZZZZZ-ZZZZZ"); }, RSDB_ERR_AUTH));
    Session done = mfa().complete_login(sessions(), login.token, kLaptop, fresh[0], "203.0.113.3");
    EXPECT_EQ(done.id, login.session.id);
    EXPECT_TRUE(done.mfa_required);
    ASSERT_TRUE(done.mfa_verified_at.has_value());
    EXPECT_TRUE(is_utc_timestamp(*done.mfa_verified_at)) << *done.mfa_verified_at;
    EXPECT_EQ(done.to_json().at("mfa_verified_at"), *done.mfa_verified_at);
    EXPECT_TRUE(sessions().is_valid(login.token, kLaptop));

    EXPECT_EQ(mfa().rotate_keys(), 0u) << "everything is under the current key";
    EXPECT_EQ(rootstream::auth::totp_code(en.secret_base32, 59), oathtool_code(en.secret_base32, 59));
    EXPECT_TRUE(ThrowsCode([&] { rootstream::auth::totp_code("not base32!", 59); }, RSDB_ERR_INVALID_ARGUMENT));

    mfa().unenroll(user_id_);
    EXPECT_FALSE(mfa().status(user_id_).enrolled);
    EXPECT_FALSE(mfa().status(user_id_).key_id.has_value());
    EXPECT_TRUE(mfa().status(user_id_).to_json().at("key_id").is_null());
    EXPECT_TRUE(ThrowsCode([&] { mfa().unenroll(user_id_); }, RSDB_ERR_NOT_FOUND));
}

TEST_F(Mfa, ALockedOutUserGetsTheLockedSubclassOfAuthError) {
    Enrolled e = enroll();
    const std::string wrong = wrong_code(e.secret, e.t);
    for (int i = 0; i < 5; ++i) EXPECT_FALSE(mfa().verify(user_id_, wrong)) << "attempt " << i;
    EXPECT_TRUE(ThrowsCode([&] { mfa().verify(user_id_, oathtool_code(e.secret, e.t)); }, RSDB_ERR_LOCKED, "try again"));
    EXPECT_THROW(mfa().verify_backup_code(user_id_, e.backup_codes[0]), rootstream::AuthError);
    EXPECT_TRUE(is_utc_timestamp(mfa().status(user_id_).locked_until)) << mfa().status(user_id_).locked_until;
}

TEST_F(Mfa, AManagerWithAnotherMasterKeyThrowsAConfigErrorNamingTheKeyIdButNotTheSecret) {
    Enrolled e = enroll();
    const std::string other_key = random_master_key();
    auto wrong = make_mfa({{"master_key", other_key}});
    const std::string msg = error_message([&] { wrong->verify(user_id_, oathtool_code(e.secret, e.t)); }, RSDB_ERR_CONFIG);
    EXPECT_NE(msg.find(key_id_), std::string::npos) << msg;
    EXPECT_EQ(msg.find(e.secret), std::string::npos) << msg;
    EXPECT_EQ(msg.find(to_hex(base32_decode(e.secret))), std::string::npos) << msg;
    EXPECT_EQ(msg.find(master_key_), std::string::npos) << msg;
    EXPECT_EQ(msg.find(other_key), std::string::npos) << msg;
    EXPECT_TRUE(mfa().verify(user_id_, oathtool_code(e.secret, e.t))) << "nothing was spent or broken";
}

TEST_F(Mfa, AManagerWithoutAMasterKeyIsAConfigError) {
    auto cfg = make_config({{"master_key", ""}});
    EXPECT_TRUE(ThrowsCode([&] { MFAManager m(*cfg, db(), redis_.get()); }, RSDB_ERR_CONFIG, "master_key"));
    EXPECT_TRUE(ThrowsCode([&] { MFAManager m(*cfg, db()); }, RSDB_ERR_CONFIG, "master_key"));
    EXPECT_TRUE(ThrowsCode([&] { Config().set("master_key", "abcd"); }, RSDB_ERR_CONFIG, "64 hex"));
    MFAManager no_redis(*config_, db());  // without Redis no mfa.* events are published; it still works
    EXPECT_EQ(no_redis.begin_enrollment(user_id_, "player").secret_base32.size(), 32u);
}

TEST_F(Mfa, AdminResetThroughMFAManagerReturnsHowManySessionsItRevoked) {
    enroll();
    CreatedSession full = sessions().create(user_id_, laptop());
    CreatedSession half = sessions().create(user_id_, laptop(), /*remember_me=*/false, /*mfa_required=*/true);
    EXPECT_EQ(mfa().admin_reset(sessions(), user_id_), 2u);
    EXPECT_FALSE(mfa().status(user_id_).enrolled);
    EXPECT_EQ(session_row(id_of(full)).at("revoke_reason"), "mfa reset") << "no reason: the library's default";
    EXPECT_FALSE(sessions().is_valid(full.token, kLaptop, false));
    EXPECT_FALSE(sessions().is_valid(half.token, kLaptop, false));
    CreatedSession later = sessions().create(user_id_, laptop());
    EXPECT_TRUE(ThrowsCode([&] { mfa().admin_reset(sessions(), user_id_, "again"); }, RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(sessions().is_valid(later.token, kLaptop, false));
    enroll();
    EXPECT_EQ(mfa().admin_reset(sessions(), user_id_, "phone stolen"), 1u);
    EXPECT_EQ(session_row(id_of(later)).at("revoke_reason"), "phone stolen") << "the given reason arrives";
}

// ================================================================ bad input

TEST_F(BadInput, InvalidUtf8IsRejectedAndNothingIsWritten) {
    const std::string bad = "fp-\xC3";
    const std::string bad2 = "\xFF\xFEzz";
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, device(bad)); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", bad2, std::nullopt, std::nullopt}); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", std::nullopt, bad, std::nullopt}); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", std::nullopt, std::nullopt, bad2}); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 0);

    CreatedSession c = sessions().create(user_id_, laptop());
    const std::string bad_token = c.token.substr(0, 40) + "\xC3";
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(bad_token, kLaptop); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(c.token, kLaptop + "\xC3"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().is_valid(c.token, kLaptop + "\xC3"); }, RSDB_ERR_INVALID_UTF8))
        << "is_valid hides only invalid sessions, not malformed arguments";
    EXPECT_TRUE(ThrowsCode([&] { sessions().refresh(bad2, kLaptop, true); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().refresh(c.token, bad, true); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke(id_of(c), bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke_token(bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke_all(user_id_, 0, bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_NO_THROW(sessions().validate(c.token, kLaptop)) << "a malformed fingerprint is not another device";

    EXPECT_TRUE(ThrowsCode([&] { mfa().begin_enrollment(user_id_, bad); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0);
    Enrolled e = enroll();
    const std::string code = oathtool_code(e.secret, e.t);
    EXPECT_TRUE(ThrowsCode([&] { mfa().verify(user_id_, code + "\xC3"); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { mfa().verify(user_id_, code, bad2); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { mfa().verify_backup_code(user_id_, e.backup_codes[0] + "\xFF"); },
                           RSDB_ERR_INVALID_UTF8));
    CreatedSession pending = sessions().create(user_id_, device("fp-mfa"), false, true);
    EXPECT_TRUE(ThrowsCode([&] { mfa().complete_login(sessions(), bad_token, "fp-mfa", code); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { mfa().complete_login(sessions(), pending.token, bad, code); }, RSDB_ERR_INVALID_UTF8));
    EXPECT_TRUE(ThrowsCode([&] { mfa().complete_login(sessions(), pending.token, "fp-mfa", code + "\xC3"); },
                           RSDB_ERR_INVALID_UTF8));
    EXPECT_EQ(attempts(user_id_).size(), 1u) << "none of these was an attempt";
    EXPECT_TRUE(mfa().verify(user_id_, code)) << "the code was not spent";
    EXPECT_TRUE(sessions().is_valid(pending.token, "fp-mfa", false));
}

TEST_F(BadInput, OneMebibyteStdStringsCrossTheBridgeAndThrowCleanly) {
    const std::string mib(1 << 20, 'A');
    CreatedSession c = sessions().create(user_id_, laptop());
    EXPECT_TRUE(ThrowsCode([&] { sessions().validate(mib, kLaptop); }, {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_FALSE(sessions().is_valid(mib, kLaptop));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", std::nullopt, mib, std::nullopt}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { sessions().revoke_token(mib); },
                           {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT, RSDB_ERR_NOT_FOUND}));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 1);
    Enrolled e = enroll();
    try {
        EXPECT_FALSE(mfa().verify(user_id_, mib)) << "a 1 MiB code is never right";
    } catch (const Error& err) {
        EXPECT_EQ(err.code(), RSDB_ERR_INVALID_ARGUMENT) << err.what();
    }
    EXPECT_TRUE(mfa().verify(user_id_, oathtool_code(e.secret, e.t)));
    EXPECT_TRUE(sessions().is_valid(c.token, kLaptop, false));
}

TEST_F(BadInput, NulBytesInDeviceFieldsAreInvalidArgumentsNotQueryErrors) {
    // std::string can carry NUL bytes, which the C API cannot express; PostgreSQL text cannot
    // store them. They are the caller's error, reported before anything is written.
    const std::string nul("fp\0tail", 7);
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", nul, std::nullopt, std::nullopt}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", std::nullopt, nul, std::nullopt}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, DeviceInfo{"fp", std::nullopt, std::nullopt, nul}); },
                           RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(ThrowsCode([&] { sessions().create(user_id_, device(nul)); }, RSDB_ERR_INVALID_ARGUMENT))
        << "the fingerprint is checked like the other device fields";
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 0);
}
