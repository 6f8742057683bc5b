// The C face of sessions (rsdb_sessions_*) and the MFA second factor (rsdb_mfa_*), against real
// PostgreSQL and Redis servers. What sessions and MFA do is specified in tests/sessions.rs and
// tests/mfa.rs; these cases call every C function and check that its values, JSON documents,
// out-parameters and status codes come through, plus the flows only this face has (native
// threads, thread-local error messages, NULL and malformed C strings). Every test migrates its own fresh database and creates its
// user there. TOTP codes come from oathtool, an implementation independent of the library's;
// token hashes are checked with OpenSSL's SHA-256.
#include "auth_util.h"
#include "rootstream_db.h"
#include "c_api_util.h"
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
using rsdb_test::auth::base32_decode;
using rsdb_test::auth::base64_decode;
using rsdb_test::auth::fresh_totp_time;
using rsdb_test::auth::oathtool_code;
using rsdb_test::auth::random_master_key;
using rsdb_test::auth::sha256_hex;
using rsdb_test::auth::to_hex;
using rsdb_test::auth::wrong_code;

namespace {

const char* const kLaptop = "fp-laptop-1";
const char* const kPhone = "fp-phone-7";

struct Created {
    std::string token;
    json session;
    int64_t id() const { return session.at("id").get<int64_t>(); }
};

struct Enrolled {
    std::string secret;
    std::vector<std::string> backup_codes;
    int64_t t = 0;  // a time with at least 10 s left in its TOTP step; its previous step confirmed
};

// ---------------------------------------------------------------- fixture

class CAuthTest : public rsdb_test::StackTest {
protected:
    void SetUp() override {
        rsdb_test::StackTest::SetUp();
        if (HasFatalFailure()) return;
        master_key_ = random_master_key();
        key_id_ = "gt-key-" + master_key_.substr(0, 8);
        ASSERT_NO_FATAL_FAILURE(make_config({}, &cfg_));
        rsdb_db* db = nullptr;
        ASSERT_RSDB_OK(rsdb_db_open(cfg_.get(), &db));
        db_.reset(db);
        int version = 0;
        ASSERT_RSDB_OK(rsdb_db_migrate(db, &version));
        ASSERT_GE(version, 2);
        rsdb_redis* redis = nullptr;
        ASSERT_RSDB_OK(rsdb_redis_open(cfg_.get(), &redis));
        redis_.reset(redis);
        rsdb_users* users = nullptr;
        ASSERT_RSDB_OK(rsdb_users_new(db, &users));
        users_.reset(users);
        ASSERT_NO_FATAL_FAILURE(make_sessions({}, &sessions_));
        ASSERT_NO_FATAL_FAILURE(make_mfa(cfg_.get(), &mfa_));
        user_id_ = insert_user("player_one");
    }

    void TearDown() override {
        mfa_.reset();
        sessions_.reset();
        users_.reset();
        redis_.reset();
        db_.reset();
        cfg_.reset();
        rsdb_test::StackTest::TearDown();
    }

    /// This test's database, the stack's Redis, the test's master key and `extra` keys.
    void make_config(std::initializer_list<std::pair<const char*, std::string>> extra, ConfigPtr* out) {
        rsdb_config* cfg = nullptr;
        ASSERT_RSDB_OK(rsdb_config_new(&cfg));
        out->reset(cfg);
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "database_url", db_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "redis_url", redis_url().c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "master_key", master_key_.c_str()));
        ASSERT_RSDB_OK(rsdb_config_set(cfg, "master_key_id", key_id_.c_str()));
        for (const auto& [k, v] : extra) {
            ASSERT_RSDB_OK(rsdb_config_set(cfg, k, v.c_str())) << k << "=" << v;
        }
    }

    /// A session handle with the session_* keys in `extra`, on this test's db and Redis.
    void make_sessions(std::initializer_list<std::pair<const char*, std::string>> extra, SessionsPtr* out,
                       rsdb_redis* redis = nullptr) {
        ConfigPtr cfg;
        ASSERT_NO_FATAL_FAILURE(make_config(extra, &cfg));
        rsdb_sessions* s = nullptr;
        ASSERT_RSDB_OK(rsdb_sessions_new(cfg.get(), db_.get(), redis != nullptr ? redis : redis_.get(), &s));
        out->reset(s);
    }

    void make_mfa(const rsdb_config* cfg, MfaPtr* out) {
        rsdb_mfa* m = nullptr;
        ASSERT_RSDB_OK(rsdb_mfa_new(cfg, db_.get(), redis_.get(), &m));
        ASSERT_NE(m, nullptr);
        out->reset(m);
    }

    /// A plain query on this test's database (throws on failure).
    json query(const std::string& sql, const json& params = json::array()) {
        OutString out;
        return RSDB_JSON(rsdb_db_query(db_.get(), sql.c_str(), params.dump().c_str(), out.out()), out);
    }

    void execute(const std::string& sql, const json& params = json::array()) {
        check(rsdb_db_execute(db_.get(), sql.c_str(), params.dump().c_str(), nullptr), sql.c_str());
    }

    int64_t count(const std::string& sql, const json& params = json::array()) {
        return query(sql, params).at(0).at("n").get<int64_t>();
    }

    /// A user row inserted directly (no password hashing).
    int64_t insert_user(const std::string& username) {
        return query("INSERT INTO users (username, email, password_hash) VALUES ($1, $2, 'not-a-hash') RETURNING id",
                     json::array({username, username + "@example.com"}))
            .at(0)
            .at("id")
            .get<int64_t>();
    }

    /// The stored row of a session (token_hash included), or null.
    json session_row(int64_t id) {
        json rows = query(
            "SELECT id, user_id, token_hash, session_token, device_fingerprint, ip_address, user_agent, geo_location,"
            " remember_me, mfa_required, mfa_verified_at, is_active, revoke_reason, revoked_at,"
            " extract(epoch FROM expires_at - now())::float8 AS expires_in_s,"
            " extract(epoch FROM expires_at - created_at)::float8 AS lifetime_s"
            " FROM sessions WHERE id = $1",
            json::array({id}));
        return rows.empty() ? json() : rows.at(0);
    }

    Created create(rsdb_sessions* s, int64_t user_id, const char* fingerprint, const char* ip = nullptr,
                   const char* user_agent = nullptr, const char* geo = nullptr, int remember_me = 0,
                   int mfa_required = 0) {
        OutString token;
        OutString session;
        check(rsdb_sessions_create(s, user_id, fingerprint, ip, user_agent, geo, remember_me, mfa_required,
                                   token.out(), session.out()),
              "rsdb_sessions_create");
        if (token.is_null() || session.is_null()) throw std::runtime_error("rsdb_sessions_create gave no token/session");
        return Created{token.str(), session.parse()};
    }
    Created create(int64_t user_id, const char* fingerprint = kLaptop) {
        return create(sessions_.get(), user_id, fingerprint, "203.0.113.7", "RootStream/1.0 (Linux)", "Berlin, DE");
    }

    /// rsdb_sessions_validate's status; `*session` receives the session on success.
    int validate(rsdb_sessions* s, const std::string& token, const std::string& fingerprint, int require_mfa = 0,
                 json* session = nullptr) {
        OutString out;
        int rc = rsdb_sessions_validate(s, token.c_str(), fingerprint.c_str(), require_mfa, out.out());
        if (rc == RSDB_OK && session != nullptr) *session = out.parse();
        if (rc != RSDB_OK && !out.is_null()) ADD_FAILURE() << "a failed validate returned a session: " << out.str();
        return rc;
    }
    int validate(const std::string& token, const std::string& fingerprint = kLaptop, int require_mfa = 0,
                 json* session = nullptr) {
        return validate(sessions_.get(), token, fingerprint, require_mfa, session);
    }

    json list(rsdb_sessions* s, int64_t user_id) {
        OutString out;
        return RSDB_JSON(rsdb_sessions_list(s, user_id, out.out()), out);
    }

    json stats(rsdb_sessions* s) {
        OutString out;
        return RSDB_JSON(rsdb_sessions_stats(s, out.out()), out);
    }



    // ---- MFA

    json begin_enrollment(rsdb_mfa* m, int64_t user_id, const std::string& account = "player@example.com") {
        OutString out;
        return RSDB_JSON(rsdb_mfa_begin_enrollment(m, user_id, account.c_str(), out.out()), out);
    }

    json status(rsdb_mfa* m, int64_t user_id) {
        OutString out;
        return RSDB_JSON(rsdb_mfa_status(m, user_id, out.out()), out);
    }

    /// Begins enrollment and confirms it with oathtool's code of the step before a fresh time t
    /// (one step of skew), so the steps of t and t+30 are still unused.
    Enrolled enroll(rsdb_mfa* m, int64_t user_id, const char* ip = "198.51.100.1") {
        json en = begin_enrollment(m, user_id);
        Enrolled e;
        e.secret = en.at("secret_base32").get<std::string>();
        e.t = fresh_totp_time();
        OutString out;
        json codes = RSDB_JSON(
            rsdb_mfa_confirm_enrollment(m, user_id, oathtool_code(e.secret, e.t - 30).c_str(), ip, out.out()), out);
        e.backup_codes = codes.get<std::vector<std::string>>();
        return e;
    }
    Enrolled enroll() { return enroll(mfa_.get(), user_id_); }

    /// rsdb_mfa_verify's verdict (throws on an error status).
    bool verify(rsdb_mfa* m, int64_t user_id, const std::string& code, const char* ip = nullptr) {
        int accepted = -1;
        check(rsdb_mfa_verify(m, user_id, code.c_str(), ip, &accepted), "rsdb_mfa_verify");
        if (accepted != 0 && accepted != 1) throw std::runtime_error("accepted is " + std::to_string(accepted));
        return accepted == 1;
    }
    bool verify(const std::string& code, const char* ip = nullptr) { return verify(mfa_.get(), user_id_, code, ip); }

    bool verify_backup(const std::string& code, const char* ip = nullptr) {
        int accepted = -1;
        check(rsdb_mfa_verify_backup_code(mfa_.get(), user_id_, code.c_str(), ip, &accepted),
              "rsdb_mfa_verify_backup_code");
        if (accepted != 0 && accepted != 1) throw std::runtime_error("accepted is " + std::to_string(accepted));
        return accepted == 1;
    }

    json attempts(int64_t user_id) {
        return query("SELECT method, success, reason, ip_address, session_id FROM mfa_attempts WHERE user_id = $1"
                     " ORDER BY id",
                     json::array({user_id}));
    }

    std::string master_key_;
    std::string key_id_;
    ConfigPtr cfg_;
    DbPtr db_;
    RedisPtr redis_;
    UsersPtr users_;
    SessionsPtr sessions_;
    MfaPtr mfa_;
    int64_t user_id_ = 0;
};

using Sessions = CAuthTest;
using SessionLimit = CAuthTest;
using Mfa = CAuthTest;
using BadInput = CAuthTest;

}  // namespace

// ================================================================ sessions

TEST_F(Sessions, EverySessionFunctionRoundTripsItsFieldsThroughTheCApi) {
    Created c = create(sessions_.get(), user_id_, kLaptop, "203.0.113.7", "RootStream/1.0 (Linux)", "Berlin, DE",
                       /*remember_me=*/1, /*mfa_required=*/0);
    ASSERT_EQ(c.token.size(), 43u);
    EXPECT_TRUE(rsdb_test::auth::is_base64url(c.token)) << c.token;
    EXPECT_EQ(session_row(c.id()).at("token_hash"), sha256_hex(c.token));
    std::set<std::string> keys;
    for (const auto& item : c.session.items()) keys.insert(item.key());
    EXPECT_EQ(keys, (std::set<std::string>{"id", "user_id", "device_fingerprint", "ip_address", "user_agent",
                                            "geo_location", "remember_me", "mfa_required", "mfa_verified_at",
                                            "created_at", "expires_at", "last_activity_at", "idle_timeout_seconds",
                                            "is_active", "revoked_at", "revoke_reason"}))
        << c.session.dump();
    EXPECT_EQ(c.session.at("user_id"), user_id_);
    EXPECT_EQ(c.session.at("device_fingerprint"), kLaptop);
    EXPECT_EQ(c.session.at("ip_address"), "203.0.113.7");
    EXPECT_EQ(c.session.at("user_agent"), "RootStream/1.0 (Linux)");
    EXPECT_EQ(c.session.at("geo_location"), "Berlin, DE");
    EXPECT_EQ(c.session.at("remember_me"), true);
    EXPECT_EQ(c.session.at("mfa_required"), false);
    EXPECT_TRUE(c.session.at("mfa_verified_at").is_null());
    EXPECT_TRUE(c.session.at("created_at").is_string());
    EXPECT_TRUE(c.session.at("revoked_at").is_null());
    EXPECT_TRUE(c.session.at("revoke_reason").is_null());
    EXPECT_EQ(c.session.at("is_active"), true);
    EXPECT_EQ(c.session.dump().find(c.token), std::string::npos);

    json s;
    ASSERT_RSDB_OK(validate(c.token, kLaptop, 1, &s));
    EXPECT_EQ(s.at("id"), c.id());
    EXPECT_EQ(s.at("geo_location"), "Berlin, DE");
    EXPECT_RSDB_OK(rsdb_sessions_validate(sessions_.get(), c.token.c_str(), kLaptop, 1, nullptr))
        << "the session out-parameter may be NULL";
    EXPECT_TRUE(Fails(validate("not-a-token", kLaptop), RSDB_ERR_AUTH));

    OutString new_token;
    OutString session;
    ASSERT_RSDB_OK(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 0, new_token.out(), session.out()));
    EXPECT_TRUE(new_token.is_null()) << "no rotation, no new token: " << new_token.str();
    EXPECT_EQ(session.parse().at("id"), c.id());
    ASSERT_RSDB_OK(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 1, new_token.out(), session.out()));
    ASSERT_FALSE(new_token.is_null());
    const std::string fresh = new_token.str();
    EXPECT_EQ(fresh.size(), 43u);
    EXPECT_EQ(session.parse().at("id"), c.id());
    EXPECT_TRUE(Fails(validate(c.token), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 1, new_token.out(), nullptr),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(new_token.is_null()) << "a failed refresh hands out no token";

    Created phone = create(sessions_.get(), user_id_, kPhone);
    Created tv = create(sessions_.get(), user_id_, "fp-tv", "198.51.100.23");
    json listed = list(sessions_.get(), user_id_);
    ASSERT_EQ(listed.size(), 3u) << listed.dump();
    EXPECT_EQ(listed[0].at("id"), tv.id());
    EXPECT_EQ(listed[0].at("ip_address"), "198.51.100.23");
    EXPECT_TRUE(listed[1].at("ip_address").is_null()) << "a NULL device field is null";
    EXPECT_EQ(listed[2].at("id"), c.id());
    EXPECT_EQ(list(sessions_.get(), user_id_ + 1000), json::array());

    ASSERT_RSDB_OK(rsdb_sessions_revoke_token(sessions_.get(), tv.token.c_str()));
    EXPECT_TRUE(Fails(validate(tv.token, "fp-tv"), RSDB_ERR_AUTH, "revoked"));
    ASSERT_RSDB_OK(rsdb_sessions_revoke(sessions_.get(), phone.id(), "admin action"));
    EXPECT_EQ(session_row(phone.id()).at("revoke_reason"), "admin action");
    EXPECT_TRUE(Fails(rsdb_sessions_revoke(sessions_.get(), c.id() + 1000, nullptr), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_token(sessions_.get(), "no-such-token"), RSDB_ERR_NOT_FOUND));
    Created d = create(user_id_);
    uint64_t revoked = 99;
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, c.id(), "password changed", &revoked));
    EXPECT_EQ(revoked, 1u);
    EXPECT_EQ(session_row(d.id()).at("revoke_reason"), "password changed");
    EXPECT_RSDB_OK(validate(fresh)) << "the kept session";
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, 0, nullptr, nullptr)) << "the count may be NULL";
    EXPECT_EQ(session_row(c.id()).at("revoke_reason"), "revoked");

    // A pending second factor has its own status code.
    Created pending = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 1);
    EXPECT_EQ(pending.session.at("mfa_required"), true);
    EXPECT_TRUE(Fails(validate(pending.token, kLaptop, 1), RSDB_ERR_MFA_REQUIRED));
    EXPECT_RSDB_OK(validate(pending.token, kLaptop, 0));

    Created expired = create(user_id_);
    execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", json::array({expired.id()}));
    execute("UPDATE sessions SET revoked_at = now() - interval '40 days' WHERE id = $1", json::array({d.id()}));
    uint64_t ended = 99;
    uint64_t deleted = 99;
    ASSERT_RSDB_OK(rsdb_sessions_cleanup(sessions_.get(), &ended, &deleted));
    EXPECT_EQ(ended, 1u);
    EXPECT_EQ(deleted, 1u);
    EXPECT_RSDB_OK(rsdb_sessions_cleanup(sessions_.get(), nullptr, nullptr)) << "the counters may be NULL";

    json st = stats(sessions_.get());
    std::set<std::string> counters;
    for (const auto& item : st.items()) counters.insert(item.key());
    EXPECT_EQ(counters, (std::set<std::string>{"cache_hits", "cache_misses", "cache_errors"})) << st.dump();
    EXPECT_GT(st.at("cache_hits").get<int64_t>(), 0) << st.dump();
    EXPECT_GT(st.at("cache_misses").get<int64_t>(), 0) << st.dump();
    EXPECT_EQ(st.at("cache_errors"), 0) << st.dump();
}

TEST_F(Sessions, TheScheduledCleanupRunsInTheBackgroundUntilItIsStopped) {
    Created keep = create(user_id_);
    execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", json::array({keep.id()}));
    ASSERT_RSDB_OK(rsdb_sessions_schedule_cleanup(sessions_.get(), 100));
    EXPECT_TRUE(rsdb_test::wait_for([&] { return session_row(keep.id()).at("is_active") == false; }, 5000ms));
    ASSERT_RSDB_OK(rsdb_sessions_schedule_cleanup(sessions_.get(), 0));
    EXPECT_EQ(session_row(keep.id()).at("revoke_reason"), "expired");
    Created later = create(user_id_);
    execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", json::array({later.id()}));
    std::this_thread::sleep_for(400ms);
    EXPECT_EQ(session_row(later.id()).at("is_active"), true) << "stopped: no more background runs";
}

// ================================================================ sessions: per-user limit

namespace {

struct LoginOutcome {
    int rc = 1;
    std::string message;
    std::string token;
};

/// `n` threads log `user_id` in at the same moment, each from its own device fp-<i>.
std::vector<LoginOutcome> concurrent_logins(rsdb_sessions* s, int64_t user_id, int n) {
    std::vector<LoginOutcome> out(static_cast<size_t>(n));
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            const std::string fp = "fp-" + std::to_string(i);
            ready.fetch_add(1);
            while (!go.load()) std::this_thread::yield();
            char* token = nullptr;
            LoginOutcome& o = out[static_cast<size_t>(i)];
            o.rc = rsdb_sessions_create(s, user_id, fp.c_str(), nullptr, nullptr, nullptr, 0, 0, &token, nullptr);
            if (o.rc != RSDB_OK) o.message = last_error();
            if (token != nullptr) o.token = token;
            rsdb_string_free(token);
        });
    }
    while (ready.load() < n) std::this_thread::yield();
    go.store(true);
    for (auto& t : threads) t.join();
    return out;
}

}  // namespace

TEST_F(SessionLimit, EvictOldestHoldsForTenCThreadsLoggingInAtOnce) {
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(
        make_sessions({{"session_max_per_user", "3"}, {"session_limit_policy", "evict_oldest"}}, &s));
    auto outcomes = concurrent_logins(s.get(), user_id_, 10);
    int ok = 0;
    for (const auto& o : outcomes) {
        EXPECT_EQ(o.rc, RSDB_OK) << o.message;
        if (o.rc == RSDB_OK) ++ok;
    }
    EXPECT_EQ(ok, 10) << "evict_oldest never refuses a login";
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND is_active", json::array({user_id_})), 3);
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND NOT is_active AND"
                    " revoke_reason = 'evicted'",
                    json::array({user_id_})),
              7);
    EXPECT_EQ(list(s.get(), user_id_).size(), 3u);
    int valid = 0;
    for (size_t i = 0; i < outcomes.size(); ++i) {
        if (outcomes[i].token.empty()) continue;
        const int rc = validate(s.get(), outcomes[i].token, "fp-" + std::to_string(i));
        EXPECT_TRUE(rc == RSDB_OK || rc == RSDB_ERR_AUTH) << rc << ": " << last_error();
        if (rc == RSDB_OK) ++valid;
    }
    EXPECT_EQ(valid, 3) << "exactly the three surviving tokens still work";
}

TEST_F(SessionLimit, RefuseHoldsForTenCThreadsLoggingInAtOnce) {
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(make_sessions({{"session_max_per_user", "3"}, {"session_limit_policy", "refuse"}}, &s));
    auto outcomes = concurrent_logins(s.get(), user_id_, 10);
    int ok = 0;
    int refused = 0;
    for (const auto& o : outcomes) {
        if (o.rc == RSDB_OK) {
            ++ok;
            EXPECT_EQ(o.token.size(), 43u);
        } else if (o.rc == RSDB_ERR_CONFLICT) {
            ++refused;
            EXPECT_NE(lower(o.message).find("limit"), std::string::npos) << o.message;
            EXPECT_TRUE(o.token.empty());
        } else {
            ADD_FAILURE() << "unexpected status " << o.rc << ": " << o.message;
        }
    }
    EXPECT_EQ(ok, 3);
    EXPECT_EQ(refused, 7);
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1", json::array({user_id_})), 3)
        << "refused logins write nothing";
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE user_id = $1 AND is_active", json::array({user_id_})), 3);
    for (size_t i = 0; i < outcomes.size(); ++i) {
        if (!outcomes[i].token.empty()) {
            EXPECT_RSDB_OK(validate(s.get(), outcomes[i].token, "fp-" + std::to_string(i)));
        }
    }
}

// ================================================================ MFA

TEST_F(Mfa, EveryMfaFunctionRoundTripsItsValuesThroughTheCApi) {
    json en = begin_enrollment(mfa_.get(), user_id_, "player@example.com");
    const std::string secret = en.at("secret_base32");
    EXPECT_EQ(secret.size(), 32u);
    const std::string uri = en.at("otpauth_uri");
    EXPECT_EQ(uri.rfind("otpauth://totp/", 0), 0u) << uri;
    EXPECT_NE(uri.find("secret=" + secret), std::string::npos) << uri;
    EXPECT_NE(en.at("qr_svg").get<std::string>().find("<svg"), std::string::npos);
    const std::vector<uint8_t> png = base64_decode(en.at("qr_png").get<std::string>());
    const std::vector<uint8_t> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ASSERT_GT(png.size(), 8u);
    EXPECT_TRUE(std::equal(signature.begin(), signature.end(), png.begin())) << "qr_png is base64 of a PNG file";
    OutString out;
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_ + 1000, "ghost", out.out()), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(out.is_null()) << "a failed call hands out no document";
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_, "player:one", out.out()),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(out.is_null());

    json st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enrolled"), true);
    EXPECT_EQ(st.at("enabled"), false);
    EXPECT_TRUE(st.at("confirmed_at").is_null());
    EXPECT_TRUE(st.at("locked_until").is_null());
    EXPECT_EQ(st.at("backup_codes_remaining"), 0);
    EXPECT_EQ(st.at("key_id"), key_id_);
    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(mfa_.get(), user_id_, oathtool_code(secret, rsdb_test::auth::unix_now()).c_str(),
                                      nullptr, &accepted),
                      RSDB_ERR_STATE));
    EXPECT_EQ(accepted, -1) << "no verdict on an error";

    const int64_t t = fresh_totp_time();
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(mfa_.get(), user_id_, wrong_code(secret, t).c_str(), nullptr,
                                                  out.out()),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(out.is_null());
    json codes = RSDB_JSON(rsdb_mfa_confirm_enrollment(mfa_.get(), user_id_, oathtool_code(secret, t - 30).c_str(),
                                                       "198.51.100.1", out.out()),
                           out);
    ASSERT_TRUE(codes.is_array());
    ASSERT_EQ(codes.size(), 10u);
    EXPECT_EQ(codes[0].get<std::string>().size(), 11u);
    st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enabled"), true);
    EXPECT_TRUE(st.at("confirmed_at").is_string());
    EXPECT_EQ(st.at("backup_codes_remaining"), 10);

    EXPECT_TRUE(verify(oathtool_code(secret, t), "203.0.113.1")) << "accepted is 1";
    EXPECT_FALSE(verify(oathtool_code(secret, t))) << "a replay: accepted is 0, the status OK";
    EXPECT_TRUE(verify_backup(codes[0].get<std::string>(), "203.0.113.2"));
    EXPECT_FALSE(verify_backup(codes[0].get<std::string>()));
    json log = attempts(user_id_);
    ASSERT_EQ(log.size(), 6u) << "the wrong and the right enrollment code, two codes, two backup codes: " << log.dump();
    EXPECT_EQ(log[1].at("ip_address"), "198.51.100.1") << "the address arrives";
    EXPECT_EQ(log[2].at("ip_address"), "203.0.113.1");
    EXPECT_TRUE(log[3].at("ip_address").is_null()) << "a NULL address is none";

    json fresh = RSDB_JSON(rsdb_mfa_regenerate_backup_codes(mfa_.get(), user_id_, out.out()), out);
    ASSERT_EQ(fresh.size(), 10u);
    EXPECT_NE(fresh[0], codes[0]);

    Created login = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), login.token.c_str(), kLaptop, "ZZZZZ-ZZZZZ",
                                              nullptr, out.out()),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(out.is_null());
    json done = RSDB_JSON(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), login.token.c_str(), kLaptop,
                                                  fresh[0].get<std::string>().c_str(), "203.0.113.3", out.out()),
                          out);
    EXPECT_EQ(done.at("id"), login.id());
    EXPECT_EQ(done.at("mfa_required"), true);
    EXPECT_TRUE(done.at("mfa_verified_at").is_string());
    EXPECT_RSDB_OK(validate(login.token, kLaptop, 1));
    Created second = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 1);
    ASSERT_RSDB_OK(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), second.token.c_str(), kLaptop,
                                           fresh[1].get<std::string>().c_str(), nullptr, nullptr))
        << "the session out-parameter may be NULL";

    uint64_t rotated = 99;
    ASSERT_RSDB_OK(rsdb_mfa_rotate_keys(mfa_.get(), &rotated));
    EXPECT_EQ(rotated, 0u) << "everything is under the current key";
    OutString code;
    ASSERT_RSDB_OK(rsdb_totp_code(secret.c_str(), 59, code.out()));
    EXPECT_EQ(code.str(), oathtool_code(secret, 59));
    EXPECT_TRUE(Fails(rsdb_totp_code("not base32!", 59, code.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(code.is_null());

    ASSERT_RSDB_OK(rsdb_mfa_unenroll(mfa_.get(), user_id_));
    st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enrolled"), false);
    EXPECT_TRUE(st.at("key_id").is_null());
    EXPECT_TRUE(Fails(rsdb_mfa_unenroll(mfa_.get(), user_id_), RSDB_ERR_NOT_FOUND));
}

TEST_F(Mfa, ALockedOutUserGetsRsdbErrLockedAndNoVerdict) {
    Enrolled e = enroll();
    const std::string wrong = wrong_code(e.secret, e.t);
    for (int i = 0; i < 5; ++i) EXPECT_FALSE(verify(wrong, "192.0.2.9")) << "attempt " << i;
    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(mfa_.get(), user_id_, oathtool_code(e.secret, e.t).c_str(), "192.0.2.9", &accepted),
                      RSDB_ERR_LOCKED, "try again"));
    EXPECT_EQ(accepted, -1);
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(mfa_.get(), user_id_, e.backup_codes[0].c_str(), nullptr, &accepted),
                      RSDB_ERR_LOCKED));
    EXPECT_EQ(accepted, -1);
    EXPECT_TRUE(status(mfa_.get(), user_id_).at("locked_until").is_string());
}

TEST_F(Mfa, AHandleWithAnotherMasterKeyFailsWithAConfigErrorNamingTheKeyIdButNotTheSecret) {
    Enrolled e = enroll();
    const std::string other_key = random_master_key();
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config({{"master_key", other_key}}, &cfg));
    MfaPtr wrong;
    ASSERT_NO_FATAL_FAILURE(make_mfa(cfg.get(), &wrong));
    int accepted = -1;
    const int rc = rsdb_mfa_verify(wrong.get(), user_id_, oathtool_code(e.secret, e.t).c_str(), nullptr, &accepted);
    ASSERT_TRUE(Fails(rc, RSDB_ERR_CONFIG, key_id_));
    const std::string msg = last_error();
    EXPECT_EQ(msg.find(e.secret), std::string::npos) << msg;
    EXPECT_EQ(msg.find(to_hex(base32_decode(e.secret))), std::string::npos) << msg;
    EXPECT_EQ(msg.find(master_key_), std::string::npos) << msg;
    EXPECT_EQ(msg.find(other_key), std::string::npos) << msg;
    EXPECT_EQ(accepted, -1);
    // Nothing was spent or broken: the right key still accepts that very code.
    EXPECT_TRUE(verify(oathtool_code(e.secret, e.t)));
}

TEST_F(Mfa, ANewHandleWithoutAMasterKeyIsAConfigError) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config({{"master_key", ""}}, &cfg));
    rsdb_mfa* m = reinterpret_cast<rsdb_mfa*>(0x1);
    EXPECT_TRUE(Fails(rsdb_mfa_new(cfg.get(), db_.get(), redis_.get(), &m), RSDB_ERR_CONFIG, "master_key"));
    EXPECT_EQ(m, reinterpret_cast<rsdb_mfa*>(0x1)) << "*out is not written on failure";
    rsdb_config* bad = nullptr;
    ASSERT_RSDB_OK(rsdb_config_new(&bad));
    ConfigPtr bad_cfg(bad);
    EXPECT_TRUE(Fails(rsdb_config_set(bad, "master_key", "abcd"), RSDB_ERR_CONFIG, "64 hex"));
    EXPECT_TRUE(Fails(rsdb_config_set(bad, "master_key", std::string(64, 'g').c_str()), RSDB_ERR_CONFIG));

    // Without Redis (allowed: no mfa.* events are published) the manager works.
    rsdb_mfa* no_redis = nullptr;
    ASSERT_RSDB_OK(rsdb_mfa_new(cfg_.get(), db_.get(), nullptr, &no_redis));
    MfaPtr holder(no_redis);
    EXPECT_EQ(begin_enrollment(no_redis, user_id_).at("secret_base32").get<std::string>().size(), 32u);
}

TEST_F(Mfa, AdminResetThroughTheCApiRevokesEverySessionAndCountsThem) {
    Enrolled e = enroll();
    Created full = create(user_id_);
    Created half = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 1);
    uint64_t revoked = 99;
    ASSERT_RSDB_OK(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, nullptr, &revoked));
    EXPECT_EQ(revoked, 2u);
    EXPECT_EQ(status(mfa_.get(), user_id_).at("enrolled"), false);
    EXPECT_EQ(session_row(full.id()).at("revoke_reason"), "mfa reset") << "NULL reason: the library's default";
    EXPECT_TRUE(Fails(validate(full.token), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(half.token), RSDB_ERR_AUTH));
    Created later = create(user_id_);
    EXPECT_TRUE(Fails(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, "again", &revoked),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_RSDB_OK(validate(later.token));
    enroll();
    ASSERT_RSDB_OK(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, "phone stolen", nullptr))
        << "the count may be NULL";
    EXPECT_EQ(session_row(later.id()).at("revoke_reason"), "phone stolen");
}

// ================================================================ bad input

TEST(AuthHandles, EveryReleaseFunctionAcceptsNull) {
    rsdb_sessions_free(nullptr);
    rsdb_mfa_free(nullptr);
    rsdb_string_free(nullptr);
    SUCCEED();
}

TEST_F(BadInput, NullHandlesAreRejected) {
    rsdb_sessions* sp = nullptr;
    rsdb_mfa* mp = nullptr;
    EXPECT_TRUE(Fails(rsdb_sessions_new(nullptr, db_.get(), redis_.get(), &sp), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_sessions_new(cfg_.get(), nullptr, redis_.get(), &sp), RSDB_ERR_NULL, "db"));
    EXPECT_TRUE(Fails(rsdb_sessions_new(cfg_.get(), db_.get(), nullptr, &sp), RSDB_ERR_NULL, "redis"));
    EXPECT_TRUE(Fails(rsdb_mfa_new(nullptr, db_.get(), redis_.get(), &mp), RSDB_ERR_NULL, "cfg"));
    EXPECT_TRUE(Fails(rsdb_mfa_new(cfg_.get(), nullptr, redis_.get(), &mp), RSDB_ERR_NULL, "db"));
    EXPECT_EQ(sp, nullptr);
    EXPECT_EQ(mp, nullptr);

    char* s = nullptr;
    int i = -1;
    uint64_t n = 0;
    EXPECT_TRUE(Fails(rsdb_sessions_create(nullptr, user_id_, "fp", nullptr, nullptr, nullptr, 0, 0, &s, nullptr),
                      RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_validate(nullptr, "t", "fp", 0, &s), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(nullptr, "t", "fp", 1, &s, nullptr), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke(nullptr, 1, "r"), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_token(nullptr, "t"), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_all(nullptr, 1, 0, "r", &n), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_list(nullptr, 1, &s), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_cleanup(nullptr, &n, &n), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_schedule_cleanup(nullptr, 100), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_sessions_stats(nullptr, &s), RSDB_ERR_NULL, "sessions"));

    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(nullptr, 1, "a", &s), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(nullptr, 1, "123456", nullptr, &s), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify(nullptr, 1, "123456", nullptr, &i), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(nullptr, 1, "AAAAA-AAAAA", nullptr, &i), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(nullptr, sessions_.get(), "t", "fp", "123456", nullptr, &s),
                      RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(mfa_.get(), nullptr, "t", "fp", "123456", nullptr, &s), RSDB_ERR_NULL,
                      "sessions"));
    EXPECT_TRUE(Fails(rsdb_mfa_regenerate_backup_codes(nullptr, 1, &s), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_unenroll(nullptr, 1), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_admin_reset(nullptr, sessions_.get(), 1, nullptr, &n), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_admin_reset(mfa_.get(), nullptr, 1, nullptr, &n), RSDB_ERR_NULL, "sessions"));
    EXPECT_TRUE(Fails(rsdb_mfa_status(nullptr, 1, &s), RSDB_ERR_NULL, "mfa"));
    EXPECT_TRUE(Fails(rsdb_mfa_rotate_keys(nullptr, &n), RSDB_ERR_NULL, "mfa"));
    EXPECT_EQ(s, nullptr);
    EXPECT_EQ(i, -1);
}

TEST_F(BadInput, NullStringsAreRejectedAndOptionalOnesAreAccepted) {
    OutString s;
    int i = -1;
    rsdb_sessions* ss = sessions_.get();
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, nullptr, "1.2.3.4", "ua", "geo", 0, 0, s.out(), nullptr),
                      RSDB_ERR_NULL, "fingerprint"));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 0);
    Created c = create(ss, user_id_, kLaptop);  // NULL ip, user agent and geo location are fine
    EXPECT_TRUE(c.session.at("ip_address").is_null());
    EXPECT_TRUE(c.session.at("user_agent").is_null());
    EXPECT_TRUE(c.session.at("geo_location").is_null());
    EXPECT_TRUE(Fails(rsdb_sessions_validate(ss, nullptr, kLaptop, 0, s.out()), RSDB_ERR_NULL, "token"));
    EXPECT_TRUE(Fails(rsdb_sessions_validate(ss, c.token.c_str(), nullptr, 0, s.out()), RSDB_ERR_NULL, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(ss, nullptr, kLaptop, 1, s.out(), nullptr), RSDB_ERR_NULL, "token"));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(ss, c.token.c_str(), nullptr, 1, s.out(), nullptr), RSDB_ERR_NULL,
                      "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_token(ss, nullptr), RSDB_ERR_NULL, "token"));
    EXPECT_RSDB_OK(validate(c.token)) << "a NULL fingerprint did not count as another device";

    Enrolled e = enroll();
    rsdb_mfa* m = mfa_.get();
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(m, user_id_, nullptr, s.out()), RSDB_ERR_NULL, "account_name"));
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(m, user_id_, nullptr, nullptr, s.out()), RSDB_ERR_NULL, "code"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify(m, user_id_, nullptr, nullptr, &i), RSDB_ERR_NULL, "code"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(m, user_id_, nullptr, nullptr, &i), RSDB_ERR_NULL, "code"));
    Created pending = create(ss, user_id_, "fp-mfa", nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, nullptr, "fp-mfa", "123456", nullptr, s.out()), RSDB_ERR_NULL,
                      "token"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), nullptr, "123456", nullptr, s.out()),
                      RSDB_ERR_NULL, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), "fp-mfa", nullptr, nullptr, s.out()),
                      RSDB_ERR_NULL, "code"));
    EXPECT_EQ(i, -1);
    EXPECT_EQ(attempts(user_id_).size(), 1u) << "only the enrollment code was checked";
    EXPECT_EQ(status(m, user_id_).at("enabled"), true);

    // NULL ip address and NULL reasons are optional.
    EXPECT_TRUE(verify(m, user_id_, oathtool_code(e.secret, e.t), nullptr));
    ASSERT_RSDB_OK(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), "fp-mfa", e.backup_codes[0].c_str(), nullptr,
                                           nullptr));
    EXPECT_RSDB_OK(validate(pending.token, "fp-mfa", 1));
    ASSERT_RSDB_OK(rsdb_sessions_revoke(ss, c.id(), nullptr));
    EXPECT_EQ(session_row(c.id()).at("revoke_reason"), "revoked");
}

TEST_F(BadInput, NullOutPointersAreRejectedAndNothingIsWritten) {
    rsdb_sessions* ss = sessions_.get();
    EXPECT_TRUE(Fails(rsdb_sessions_new(cfg_.get(), db_.get(), redis_.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_mfa_new(cfg_.get(), db_.get(), redis_.get(), nullptr), RSDB_ERR_NULL, "out"));
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 0, nullptr, nullptr),
                      RSDB_ERR_NULL, "token"));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 0) << "no session whose token nobody received";

    Created c = create(user_id_);
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(ss, c.token.c_str(), kLaptop, 1, nullptr, nullptr), RSDB_ERR_NULL,
                      "new_token"));
    EXPECT_RSDB_OK(validate(c.token)) << "a refused rotation keeps the old token";
    EXPECT_EQ(session_row(c.id()).at("token_hash"), sha256_hex(c.token));
    EXPECT_TRUE(Fails(rsdb_sessions_list(ss, user_id_, nullptr), RSDB_ERR_NULL, "sessions_json"));
    EXPECT_TRUE(Fails(rsdb_sessions_stats(ss, nullptr), RSDB_ERR_NULL, "stats_json"));
    EXPECT_RSDB_OK(rsdb_sessions_validate(ss, c.token.c_str(), kLaptop, 0, nullptr));
    EXPECT_RSDB_OK(rsdb_sessions_revoke_all(ss, user_id_, c.id(), nullptr, nullptr));

    rsdb_mfa* m = mfa_.get();
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(m, user_id_, "player", nullptr), RSDB_ERR_NULL, "enrollment_json"));
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0) << "no secret that nobody was shown";
    json en = begin_enrollment(m, user_id_);
    const std::string secret = en.at("secret_base32");
    const int64_t t = fresh_totp_time();
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(m, user_id_, oathtool_code(secret, t - 30).c_str(), nullptr, nullptr),
                      RSDB_ERR_NULL, "backup_codes_json"));
    EXPECT_EQ(status(m, user_id_).at("enabled"), false) << "not enabled without handing out the backup codes";
    OutString out;
    json codes = RSDB_JSON(
        rsdb_mfa_confirm_enrollment(m, user_id_, oathtool_code(secret, t - 30).c_str(), nullptr, out.out()), out);
    ASSERT_EQ(codes.size(), 10u);
    const size_t logged = attempts(user_id_).size();
    EXPECT_TRUE(Fails(rsdb_mfa_verify(m, user_id_, oathtool_code(secret, t).c_str(), nullptr, nullptr), RSDB_ERR_NULL,
                      "accepted"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(m, user_id_, codes[0].get<std::string>().c_str(), nullptr, nullptr),
                      RSDB_ERR_NULL, "accepted"));
    EXPECT_EQ(attempts(user_id_).size(), logged) << "no attempt was made";
    EXPECT_TRUE(Fails(rsdb_mfa_regenerate_backup_codes(m, user_id_, nullptr), RSDB_ERR_NULL, "backup_codes_json"));
    EXPECT_TRUE(Fails(rsdb_mfa_status(m, user_id_, nullptr), RSDB_ERR_NULL, "status_json"));
    // The refused calls spent nothing: that code and that backup code still work.
    EXPECT_TRUE(verify(m, user_id_, oathtool_code(secret, t)));
    EXPECT_TRUE(verify_backup(codes[0].get<std::string>()));
    EXPECT_EQ(status(m, user_id_).at("backup_codes_remaining"), 9);
    EXPECT_RSDB_OK(rsdb_mfa_rotate_keys(m, nullptr));
}

TEST_F(BadInput, InvalidUtf8IsRejectedInEveryStringArgument) {
    const std::string bad = "fp-\xC3";      // truncated two-byte sequence
    const std::string bad2 = "\xFF\xFEzz";  // bytes that never occur in UTF-8
    rsdb_sessions* ss = sessions_.get();
    OutString s;
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, bad.c_str(), nullptr, nullptr, nullptr, 0, 0, s.out(), nullptr),
                      RSDB_ERR_INVALID_UTF8, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, "fp", bad2.c_str(), nullptr, nullptr, 0, 0, s.out(), nullptr),
                      RSDB_ERR_INVALID_UTF8, "ip_address"));
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, "fp", nullptr, bad.c_str(), nullptr, 0, 0, s.out(), nullptr),
                      RSDB_ERR_INVALID_UTF8, "user_agent"));
    EXPECT_TRUE(Fails(rsdb_sessions_create(ss, user_id_, "fp", nullptr, nullptr, bad2.c_str(), 0, 0, s.out(), nullptr),
                      RSDB_ERR_INVALID_UTF8, "geo_location"));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 0);

    Created c = create(user_id_);
    const std::string bad_token = c.token.substr(0, 40) + "\xC3";
    EXPECT_TRUE(Fails(validate(bad_token, kLaptop), RSDB_ERR_INVALID_UTF8, "token"));
    EXPECT_TRUE(Fails(validate(c.token, std::string(kLaptop) + "\xC3"), RSDB_ERR_INVALID_UTF8, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(ss, bad2.c_str(), kLaptop, 1, s.out(), nullptr), RSDB_ERR_INVALID_UTF8,
                      "token"));
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(ss, c.token.c_str(), bad.c_str(), 1, s.out(), nullptr),
                      RSDB_ERR_INVALID_UTF8, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke(ss, c.id(), bad.c_str()), RSDB_ERR_INVALID_UTF8, "reason"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_token(ss, bad2.c_str()), RSDB_ERR_INVALID_UTF8, "token"));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_all(ss, user_id_, 0, bad.c_str(), nullptr), RSDB_ERR_INVALID_UTF8,
                      "reason"));
    EXPECT_RSDB_OK(validate(c.token)) << "a malformed fingerprint is refused, not taken for another device";
    EXPECT_EQ(session_row(c.id()).at("is_active"), true);

    rsdb_mfa* m = mfa_.get();
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(m, user_id_, bad.c_str(), s.out()), RSDB_ERR_INVALID_UTF8,
                      "account_name"));
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0);
    Enrolled e = enroll();
    int i = -1;
    const std::string code = oathtool_code(e.secret, e.t);
    EXPECT_TRUE(Fails(rsdb_mfa_verify(m, user_id_, (code + "\xC3").c_str(), nullptr, &i), RSDB_ERR_INVALID_UTF8, "code"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify(m, user_id_, code.c_str(), bad2.c_str(), &i), RSDB_ERR_INVALID_UTF8,
                      "ip_address"));
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(m, user_id_, (e.backup_codes[0] + "\xFF").c_str(), nullptr, &i),
                      RSDB_ERR_INVALID_UTF8, "code"));
    Created pending = create(ss, user_id_, "fp-mfa", nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, bad_token.c_str(), "fp-mfa", code.c_str(), nullptr, s.out()),
                      RSDB_ERR_INVALID_UTF8, "token"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), bad.c_str(), code.c_str(), nullptr, s.out()),
                      RSDB_ERR_INVALID_UTF8, "fingerprint"));
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), "fp-mfa", (code + "\xC3").c_str(), nullptr,
                                              s.out()),
                      RSDB_ERR_INVALID_UTF8, "code"));
    EXPECT_EQ(i, -1);
    EXPECT_EQ(attempts(user_id_).size(), 1u) << "none of these was an attempt";
    // The code was not spent by the refused calls.
    EXPECT_TRUE(verify(code));
    EXPECT_RSDB_OK(validate(pending.token, "fp-mfa", 0));
}

TEST_F(BadInput, OneMebibyteCStringsFailCleanlyThroughTheCApi) {
    const std::string mib(1 << 20, 'A');
    rsdb_sessions* ss = sessions_.get();
    OutString s;
    Created c = create(user_id_);
    EXPECT_TRUE(FailsCleanly(validate(mib, kLaptop), {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(
        rsdb_sessions_create(ss, user_id_, "fp", nullptr, mib.c_str(), nullptr, 0, 0, s.out(), nullptr),
        {RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(s.is_null());
    EXPECT_TRUE(FailsCleanly(rsdb_sessions_revoke_token(ss, mib.c_str()),
                             {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT, RSDB_ERR_NOT_FOUND}));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 1);
    Enrolled e = enroll();
    int accepted = -1;
    const int rc = rsdb_mfa_verify(mfa_.get(), user_id_, mib.c_str(), nullptr, &accepted);
    if (rc == RSDB_OK) {
        EXPECT_EQ(accepted, 0) << "a 1 MiB code is never right";
    } else {
        EXPECT_TRUE(FailsCleanly(rc, {RSDB_ERR_INVALID_ARGUMENT}));
    }
    EXPECT_TRUE(verify(oathtool_code(e.secret, e.t)));
    EXPECT_RSDB_OK(validate(c.token));
}
