// Sessions (rsdb_sessions_*) and the MFA second factor (rsdb_mfa_*) through the C API, against
// real PostgreSQL and Redis servers. Every test migrates its own fresh database and creates its
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
using rsdb_test::auth::codes_around;
using rsdb_test::auth::contains_bytes;
using rsdb_test::auth::fresh_totp_time;
using rsdb_test::auth::from_hex;
using rsdb_test::auth::oathtool_code;
using rsdb_test::auth::random_master_key;
using rsdb_test::auth::sha256_hex;
using rsdb_test::auth::to_hex;
using rsdb_test::auth::wrong_code;

namespace {


// Strings that break naive SQL splicing or escaping. None has control characters (refused in
// single-line fields) and none is longer than the 64 characters of an IP address field.
const std::vector<std::string> kHostile = {
    "'; DROP TABLE sessions; --",
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "quotes ' '' \" \"\" ` \xC2\xB4",
    "back\\slash \\' \\\\ \\x41 \\n",
    "$1",
    "$1; DELETE FROM sessions WHERE $2 = $2",
    "/* c */ SELECT pg_sleep(10) --",
    "\xC3\xBCn\xC3\xAF\x63\xC3\xB8\x64\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x8E\xAE",
};

const char* const kLaptop = "fp-laptop-1";
const char* const kPhone = "fp-phone-7";

std::string cache_key_of(const std::string& token) { return "rsdb:session:" + sha256_hex(token); }

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

    /// PTTL of a Redis key in ms (-2 missing, -1 without expiry).
    int64_t redis_ttl_ms(const std::string& key) {
        int64_t ttl = 0;
        check(rsdb_redis_ttl(redis_.get(), key.c_str(), &ttl), "rsdb_redis_ttl");
        return ttl;
    }

    std::vector<std::string> session_events(int64_t session_id) {
        std::vector<std::string> types;
        for (const auto& r : query("SELECT event_type FROM event_log WHERE aggregate_type = 'session' AND"
                                   " aggregate_id = $1 ORDER BY version",
                                   json::array({std::to_string(session_id)}))) {
            types.push_back(r.at("event_type").get<std::string>());
        }
        return types;
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
using SessionsRedisDown = CAuthTest;
using Mfa = CAuthTest;
using MfaLogin = CAuthTest;
using BadInput = CAuthTest;
using HostileStrings = CAuthTest;

}  // namespace

// ================================================================ sessions: tokens

TEST_F(Sessions, ATokenHas256BitsInBase64UrlAndOnlyItsSha256IsStored) {
    Created c = create(user_id_);
    ASSERT_EQ(c.token.size(), 43u) << "32 random bytes are 43 characters of unpadded base64url: " << c.token;
    EXPECT_TRUE(rsdb_test::auth::is_base64url(c.token)) << c.token;
    EXPECT_GT(c.id(), 0);

    json row = session_row(c.id());
    ASSERT_FALSE(row.is_null());
    EXPECT_EQ(row.at("token_hash"), sha256_hex(c.token)) << "the row holds the hex SHA-256 of the token";
    EXPECT_TRUE(row.at("session_token").is_null());
    const std::string dump = query("SELECT row_to_json(s)::text AS j FROM sessions s").at(0).at("j");
    EXPECT_EQ(dump.find(c.token), std::string::npos) << "the token text is stored nowhere: " << dump;
    EXPECT_NE(dump.find(sha256_hex(c.token)), std::string::npos);

    // The session JSON handed back carries neither the token nor its hash.
    const std::string session_text = c.session.dump();
    EXPECT_EQ(session_text.find(c.token), std::string::npos) << session_text;
    EXPECT_EQ(session_text.find(sha256_hex(c.token)), std::string::npos) << session_text;
    EXPECT_EQ(c.session.at("user_id"), user_id_);

    // Every login gets its own token.
    Created d = create(user_id_);
    EXPECT_NE(d.token, c.token);
    EXPECT_EQ(d.token.size(), 43u);
    EXPECT_EQ(session_row(d.id()).at("token_hash"), sha256_hex(d.token));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE token_hash = $1", json::array({c.token})), 0);
}

TEST_F(Sessions, TheSessionIsCachedInRedisUnderItsHashForItsRemainingLifetime) {
    Created c = create(user_id_);
    const int64_t ttl = redis_ttl_ms(cache_key_of(c.token));
    EXPECT_GT(ttl, 23 * 3600 * 1000LL) << "cached with the session's lifetime (24 h by default)";
    EXPECT_LE(ttl, 24 * 3600 * 1000LL);
    OutString cached;
    ASSERT_RSDB_OK(rsdb_redis_get(redis_.get(), cache_key_of(c.token).c_str(), cached.out()));
    ASSERT_FALSE(cached.is_null());
    EXPECT_EQ(cached.str().find(c.token), std::string::npos) << "the cache holds no token either";
    EXPECT_EQ(json::parse(cached.str()).at("id"), c.id());

    // remember_me: 30 days, in the row and in the cache.
    Created r = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 1, 0);
    EXPECT_EQ(r.session.at("remember_me"), true);
    EXPECT_GT(session_row(r.id()).at("lifetime_s").get<double>(), 29.0 * 86400);
    EXPECT_GT(redis_ttl_ms(cache_key_of(r.token)), 29LL * 86400 * 1000);
    EXPECT_LT(session_row(c.id()).at("lifetime_s").get<double>(), 24.0 * 3600 + 1);
}

TEST_F(Sessions, ValidateWithTheRightFingerprintReturnsTheSession) {
    Created c = create(user_id_);
    json s;
    ASSERT_RSDB_OK(validate(c.token, kLaptop, 1, &s));
    EXPECT_EQ(s.at("id"), c.id());
    EXPECT_EQ(s.at("user_id"), user_id_);
    EXPECT_EQ(s.at("device_fingerprint"), kLaptop);
    EXPECT_EQ(s.at("ip_address"), "203.0.113.7");
    EXPECT_EQ(s.at("user_agent"), "RootStream/1.0 (Linux)");
    EXPECT_EQ(s.at("geo_location"), "Berlin, DE");
    EXPECT_EQ(s.at("is_active"), true);
    EXPECT_EQ(s.at("mfa_required"), false);
    // Validating again works (the session stays usable), a NULL session_json is fine.
    EXPECT_RSDB_OK(rsdb_sessions_validate(sessions_.get(), c.token.c_str(), kLaptop, 1, nullptr));

    EXPECT_TRUE(Fails(validate("not-a-token", kLaptop), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(c.token.substr(0, 42), kLaptop), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate("", kLaptop), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(sha256_hex(c.token), kLaptop), RSDB_ERR_AUTH)) << "the stored hash is no token";
    EXPECT_RSDB_OK(validate(c.token, kLaptop));
}

TEST_F(Sessions, AnotherFingerprintRevokesTheSessionAsHijackSuspectedAndRecordsIt) {
    Created c = create(user_id_);
    ASSERT_RSDB_OK(validate(c.token, kLaptop));
    EXPECT_TRUE(Fails(validate(c.token, "fp-stolen-elsewhere"), RSDB_ERR_AUTH, "another device"));
    EXPECT_TRUE(Fails(validate(c.token, kLaptop), RSDB_ERR_AUTH, "revoked"))
        << "after the mismatch even the real device is locked out";

    json row = session_row(c.id());
    EXPECT_EQ(row.at("is_active"), false);
    EXPECT_EQ(row.at("revoke_reason"), "hijack_suspected");
    EXPECT_TRUE(row.at("revoked_at").is_string());
    EXPECT_EQ(redis_ttl_ms(cache_key_of(c.token)), -2) << "the cached copy is gone";

    // The event log keeps revocations (creations are only published).
    EXPECT_EQ(session_events(c.id()), (std::vector<std::string>{"session.revoked", "session.hijack_suspected"}));
    json ev = query("SELECT payload, user_id FROM event_log WHERE aggregate_type = 'session' AND aggregate_id = $1"
                    " AND event_type = 'session.hijack_suspected'",
                    json::array({std::to_string(c.id())}));
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].at("user_id"), user_id_);
    const json& payload = ev[0].at("payload");
    EXPECT_EQ(payload.at("expected_fingerprint_sha256"), sha256_hex(kLaptop));
    EXPECT_EQ(payload.at("presented_fingerprint_sha256"), sha256_hex("fp-stolen-elsewhere"));
    EXPECT_EQ(payload.dump().find(c.token), std::string::npos);

    // Another session of the same user is not affected.
    Created other = create(user_id_, kPhone);
    EXPECT_RSDB_OK(validate(other.token, kPhone));
}

// ================================================================ sessions: lifetimes

TEST_F(Sessions, ASessionExpiresAfterItsAbsoluteLifetime) {
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(make_sessions({{"session_ttl_s", "1"}}, &s));
    Created c = create(s.get(), user_id_, kLaptop);
    ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop));
    std::this_thread::sleep_for(1300ms);
    EXPECT_TRUE(Fails(validate(s.get(), c.token, kLaptop), RSDB_ERR_AUTH, "expired"));
    json row = session_row(c.id());
    EXPECT_EQ(row.at("is_active"), false);
    EXPECT_EQ(row.at("revoke_reason"), "expired");
    EXPECT_EQ(redis_ttl_ms(cache_key_of(c.token)), -2);
    EXPECT_TRUE(Fails(validate(s.get(), c.token, kLaptop), RSDB_ERR_AUTH));
}

TEST_F(Sessions, ValidationsKeepASessionAliveAndSilenceLongerThanTheIdleTimeoutEndsIt) {
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(make_sessions({{"session_idle_timeout_s", "2"}}, &s));
    Created c = create(s.get(), user_id_, kLaptop);
    EXPECT_EQ(session_row(c.id()).at("is_active"), true);
    // 3.3 s of use in steps of 1.1 s: longer than the idle timeout in total, but never idle.
    for (int i = 0; i < 3; ++i) {
        std::this_thread::sleep_for(1100ms);
        ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop)) << "validation " << i;
    }
    std::this_thread::sleep_for(3200ms);
    EXPECT_TRUE(Fails(validate(s.get(), c.token, kLaptop), RSDB_ERR_AUTH, "inactivity"));
    json row = session_row(c.id());
    EXPECT_EQ(row.at("is_active"), false);
    EXPECT_EQ(row.at("revoke_reason"), "idle");
}

TEST_F(Sessions, RefreshExtendsTheSessionByItsFullLifetime) {
    Created c = create(user_id_);
    execute("UPDATE sessions SET expires_at = now() + interval '1 hour' WHERE id = $1", json::array({c.id()}));
    ASSERT_LT(session_row(c.id()).at("expires_in_s").get<double>(), 3601.0);
    OutString new_token;
    OutString session;
    ASSERT_RSDB_OK(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 0, new_token.out(), session.out()));
    EXPECT_TRUE(new_token.is_null()) << "no rotation, no new token: " << new_token.str();
    EXPECT_EQ(session.parse().at("id"), c.id());
    EXPECT_GT(session_row(c.id()).at("expires_in_s").get<double>(), 23.0 * 3600);
    EXPECT_EQ(session_row(c.id()).at("token_hash"), sha256_hex(c.token));
    EXPECT_RSDB_OK(validate(c.token));
    EXPECT_EQ(session_events(c.id()), (std::vector<std::string>{"session.refreshed"}));
}

TEST_F(Sessions, RefreshWithRotationRetiresTheOldTokenAndTheNewOneWorks) {
    Created c = create(user_id_);
    OutString new_token;
    OutString session;
    ASSERT_RSDB_OK(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 1, new_token.out(), session.out()));
    ASSERT_FALSE(new_token.is_null());
    const std::string fresh = new_token.str();
    EXPECT_EQ(fresh.size(), 43u);
    EXPECT_TRUE(rsdb_test::auth::is_base64url(fresh));
    EXPECT_NE(fresh, c.token);
    EXPECT_EQ(session.parse().at("id"), c.id());

    EXPECT_TRUE(Fails(validate(c.token), RSDB_ERR_AUTH)) << "the old token stopped working";
    json s;
    ASSERT_RSDB_OK(validate(fresh, kLaptop, 0, &s));
    EXPECT_EQ(s.at("id"), c.id()) << "same session, new token";
    EXPECT_EQ(session_row(c.id()).at("token_hash"), sha256_hex(fresh));
    EXPECT_EQ(redis_ttl_ms(cache_key_of(c.token)), -2);
    EXPECT_GT(redis_ttl_ms(cache_key_of(fresh)), 23 * 3600 * 1000LL);
    // Refreshing with the old token is refused too.
    EXPECT_TRUE(Fails(rsdb_sessions_refresh(sessions_.get(), c.token.c_str(), kLaptop, 1, new_token.out(), nullptr),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(new_token.is_null());
    EXPECT_RSDB_OK(validate(fresh));
}

// ================================================================ sessions: revocation and listing

TEST_F(Sessions, RevokeRevokeTokenAndRevokeAllKeepingOneSession) {
    Created a = create(user_id_, kLaptop);
    Created b = create(sessions_.get(), user_id_, kPhone, nullptr, "RootStream/1.0 (Android)");
    Created c = create(sessions_.get(), user_id_, kPhone);

    ASSERT_RSDB_OK(rsdb_sessions_revoke_token(sessions_.get(), b.token.c_str()));
    EXPECT_TRUE(Fails(validate(b.token, kPhone), RSDB_ERR_AUTH));
    EXPECT_EQ(session_row(b.id()).at("revoke_reason"), "logout");
    EXPECT_EQ(redis_ttl_ms(cache_key_of(b.token)), -2);

    uint64_t revoked = 99;
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, a.id(), "password changed", &revoked));
    EXPECT_EQ(revoked, 1u) << "only c was still active besides the kept session";
    EXPECT_RSDB_OK(validate(a.token, kLaptop)) << "the kept session still works";
    EXPECT_TRUE(Fails(validate(c.token, kPhone), RSDB_ERR_AUTH));
    EXPECT_EQ(session_row(c.id()).at("revoke_reason"), "password changed");

    ASSERT_RSDB_OK(rsdb_sessions_revoke(sessions_.get(), a.id(), "admin action"));
    EXPECT_TRUE(Fails(validate(a.token, kLaptop), RSDB_ERR_AUTH));
    EXPECT_EQ(session_row(a.id()).at("revoke_reason"), "admin action");
    // Revoking an ended session again changes nothing; an unknown one is not found.
    EXPECT_RSDB_OK(rsdb_sessions_revoke(sessions_.get(), a.id(), "again"));
    EXPECT_EQ(session_row(a.id()).at("revoke_reason"), "admin action");
    EXPECT_TRUE(Fails(rsdb_sessions_revoke(sessions_.get(), a.id() + 1000, nullptr), RSDB_ERR_NOT_FOUND));
    EXPECT_TRUE(Fails(rsdb_sessions_revoke_token(sessions_.get(), "no-such-token"), RSDB_ERR_NOT_FOUND));
    EXPECT_EQ(list(sessions_.get(), user_id_), json::array());

    // revoke_all without a kept session and with the default reason.
    Created d = create(user_id_);
    Created e = create(user_id_);
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, 0, nullptr, &revoked));
    EXPECT_EQ(revoked, 2u);
    EXPECT_TRUE(Fails(validate(d.token), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(e.token), RSDB_ERR_AUTH));
    EXPECT_EQ(session_row(d.id()).at("revoke_reason"), "revoked");
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, 0, "none left", nullptr));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions WHERE is_active"), 0);
}

TEST_F(Sessions, ListShowsTheActiveSessionsNewestFirstWithoutTokens) {
    const int64_t other_user = insert_user("player_two");
    Created a = create(user_id_, kLaptop);
    Created b = create(sessions_.get(), user_id_, kPhone, "198.51.100.23", "RootStream/1.0 (Android)", "Paris, FR");
    Created c = create(user_id_, "fp-tv");
    Created theirs = create(other_user, kLaptop);
    Created ended = create(user_id_, "fp-old");
    ASSERT_RSDB_OK(rsdb_sessions_revoke(sessions_.get(), ended.id(), nullptr));

    json listed = list(sessions_.get(), user_id_);
    ASSERT_EQ(listed.size(), 3u) << listed.dump();
    EXPECT_EQ(listed[0].at("id"), c.id());
    EXPECT_EQ(listed[1].at("id"), b.id());
    EXPECT_EQ(listed[2].at("id"), a.id());
    EXPECT_EQ(listed[1].at("device_fingerprint"), kPhone);
    EXPECT_EQ(listed[1].at("ip_address"), "198.51.100.23");
    EXPECT_EQ(listed[1].at("user_agent"), "RootStream/1.0 (Android)");
    EXPECT_EQ(listed[1].at("geo_location"), "Paris, FR");
    const std::string text = listed.dump();
    for (const Created* x : {&a, &b, &c, &theirs, &ended}) {
        EXPECT_EQ(text.find(x->token), std::string::npos);
        EXPECT_EQ(text.find(sha256_hex(x->token)), std::string::npos);
    }
    json mine = list(sessions_.get(), other_user);
    ASSERT_EQ(mine.size(), 1u);
    EXPECT_EQ(mine[0].at("id"), theirs.id());
    EXPECT_EQ(list(sessions_.get(), other_user + 1000), json::array());
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

TEST_F(SessionLimit, EvictOldestKeepsTheLimitUnderTenConcurrentLogins) {
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

TEST_F(SessionLimit, RefuseKeepsTheLimitUnderTenConcurrentLogins) {
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

// ================================================================ sessions: cleanup

TEST_F(Sessions, CleanupEndsExpiredAndIdleSessionsAndDeletesLongEndedOnes) {
    Created keep = create(user_id_);
    Created expired = create(user_id_);
    Created idle = create(user_id_);
    Created gone = create(user_id_);
    execute("UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id = $1", json::array({expired.id()}));
    execute("UPDATE sessions SET last_activity_at = now() - interval '2 hours' WHERE id = $1", json::array({idle.id()}));
    execute("UPDATE sessions SET is_active = FALSE, revoked_at = now() - interval '40 days', revoke_reason = 'logout'"
            " WHERE id = $1",
            json::array({gone.id()}));

    uint64_t ended = 99;
    uint64_t deleted = 99;
    ASSERT_RSDB_OK(rsdb_sessions_cleanup(sessions_.get(), &ended, &deleted));
    EXPECT_EQ(ended, 2u);
    EXPECT_EQ(deleted, 1u);
    EXPECT_TRUE(session_row(gone.id()).is_null()) << "ended more than 30 days ago: deleted";
    EXPECT_EQ(session_row(expired.id()).at("is_active"), false);
    EXPECT_EQ(session_row(expired.id()).at("revoke_reason"), "expired");
    EXPECT_EQ(session_row(idle.id()).at("revoke_reason"), "idle");
    // The cached copies went with them, so the tokens fail although Redis had them for 24 h.
    EXPECT_EQ(redis_ttl_ms(cache_key_of(expired.token)), -2);
    EXPECT_EQ(redis_ttl_ms(cache_key_of(idle.token)), -2);
    EXPECT_TRUE(Fails(validate(expired.token), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(idle.token), RSDB_ERR_AUTH));
    EXPECT_RSDB_OK(validate(keep.token));

    // A second run finds nothing; NULL counters are fine.
    ASSERT_RSDB_OK(rsdb_sessions_cleanup(sessions_.get(), &ended, &deleted));
    EXPECT_EQ(ended, 0u);
    EXPECT_EQ(deleted, 0u);
    EXPECT_RSDB_OK(rsdb_sessions_cleanup(sessions_.get(), nullptr, nullptr));

    // The scheduled cleanup does the same in the background, until it is stopped.
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

// ================================================================ sessions: cache and Redis outage

TEST_F(Sessions, StatsCountCacheHitsAndMisses) {
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(make_sessions({}, &s));
    EXPECT_EQ(stats(s.get()), json::parse(R"({"cache_hits":0,"cache_misses":0,"cache_errors":0})"));
    Created c = create(s.get(), user_id_, kLaptop);
    ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop));  // cached at creation: a hit
    ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop));  // a hit
    int existed = 0;
    ASSERT_RSDB_OK(rsdb_redis_del(redis_.get(), cache_key_of(c.token).c_str(), &existed));
    ASSERT_EQ(existed, 1);
    ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop));  // a miss, answered by PostgreSQL and cached again
    EXPECT_GT(redis_ttl_ms(cache_key_of(c.token)), 0);
    ASSERT_RSDB_OK(validate(s.get(), c.token, kLaptop));  // a hit
    EXPECT_TRUE(Fails(validate(s.get(), "unknown-token", kLaptop), RSDB_ERR_AUTH));  // a miss
    json st = stats(s.get());
    EXPECT_EQ(st.at("cache_hits"), 3) << st.dump();
    EXPECT_EQ(st.at("cache_misses"), 2) << st.dump();
    EXPECT_EQ(st.at("cache_errors"), 0) << st.dump();
}

TEST_F(SessionsRedisDown, ValidateCreateAndRevokeAnswerFromPostgresWhileRedisIsDown) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config({{"redis_timeout_ms", "300"}}, &cfg));
    rsdb_redis* r = nullptr;
    ASSERT_RSDB_OK(rsdb_redis_open(cfg.get(), &r));
    RedisPtr redis(r);
    SessionsPtr s;
    ASSERT_NO_FATAL_FAILURE(make_sessions({{"redis_timeout_ms", "300"}}, &s, redis.get()));
    Created good = create(s.get(), user_id_, "fp");
    Created revoked = create(s.get(), user_id_, "fp");
    Created hijacked = create(s.get(), user_id_, "fp");
    ASSERT_EQ(stats(s.get()).at("cache_errors"), 0);

    {
        rsdb_test::ScopedRedisOutage outage(stack());
        ASSERT_TRUE(outage.stopped());
        const auto start = std::chrono::steady_clock::now();

        Created made_while_down = create(s.get(), user_id_, "fp");
        EXPECT_EQ(made_while_down.token.size(), 43u);
        EXPECT_RSDB_OK(validate(s.get(), good.token, "fp"));
        EXPECT_RSDB_OK(validate(s.get(), made_while_down.token, "fp"));
        EXPECT_RSDB_OK(rsdb_sessions_revoke(s.get(), revoked.id(), "logout"));
        EXPECT_TRUE(Fails(validate(s.get(), revoked.token, "fp"), RSDB_ERR_AUTH));
        EXPECT_TRUE(Fails(validate(s.get(), hijacked.token, "other-fp"), RSDB_ERR_AUTH, "another device"));
        EXPECT_TRUE(Fails(validate(s.get(), hijacked.token, "fp"), RSDB_ERR_AUTH));
        EXPECT_TRUE(Fails(validate(s.get(), "garbage", "fp"), RSDB_ERR_AUTH));
        EXPECT_EQ(session_row(hijacked.id()).at("revoke_reason"), "hijack_suspected");
        EXPECT_EQ(session_row(revoked.id()).at("revoke_reason"), "logout");

        const auto elapsed = std::chrono::steady_clock::now() - start;
        EXPECT_LT(elapsed, 20s) << "each Redis failure costs about redis_timeout_ms, not more";
        json st = stats(s.get());
        EXPECT_GT(st.at("cache_errors").get<int64_t>(), 0) << "the Redis failures were counted: " << st.dump();
        EXPECT_GE(st.at("cache_misses").get<int64_t>(), 6) << st.dump();
        ASSERT_TRUE(outage.restart());
    }

    // Redis is back (empty after its restart): the answers stay right and caching resumes.
    EXPECT_TRUE(rsdb_test::wait_for([&] { return validate(s.get(), good.token, "fp") == RSDB_OK; }, 10000ms))
        << last_error();
    EXPECT_TRUE(Fails(validate(s.get(), revoked.token, "fp"), RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(s.get(), hijacked.token, "fp"), RSDB_ERR_AUTH));
    EXPECT_TRUE(rsdb_test::wait_for(
        [&] {
            if (validate(s.get(), good.token, "fp") != RSDB_OK) return false;
            int64_t ttl = 0;
            return rsdb_redis_ttl(redis_.get(), cache_key_of(good.token).c_str(), &ttl) == RSDB_OK && ttl > 0;
        },
        10000ms, 200ms))
        << "validations after the outage cache the session again";
}

// ================================================================ MFA: enrollment

TEST_F(Mfa, BeginEnrollmentGivesASecretAnOtpauthUriAndQrCodesButDoesNotEnableMfa) {
    json en = begin_enrollment(mfa_.get(), user_id_, "player@example.com");
    const std::string secret = en.at("secret_base32");
    EXPECT_EQ(secret.size(), 32u) << "160 bits in base32";
    EXPECT_EQ(base32_decode(secret).size(), 20u);
    const std::string uri = en.at("otpauth_uri");
    EXPECT_EQ(uri.rfind("otpauth://totp/", 0), 0u) << uri;
    EXPECT_NE(uri.find("secret=" + secret), std::string::npos) << uri;
    EXPECT_NE(uri.find("issuer=RootStream"), std::string::npos) << uri;
    EXPECT_NE(uri.find("player%40example.com"), std::string::npos) << uri;
    const std::vector<uint8_t> png = base64_decode(en.at("qr_png").get<std::string>());
    const std::vector<uint8_t> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    ASSERT_GT(png.size(), 8u);
    EXPECT_TRUE(std::equal(signature.begin(), signature.end(), png.begin())) << "a PNG file";
    const std::string svg = en.at("qr_svg");
    EXPECT_NE(svg.find("<svg"), std::string::npos);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);

    json st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enrolled"), true);
    EXPECT_EQ(st.at("enabled"), false) << "not enabled before the first code";
    EXPECT_TRUE(st.at("confirmed_at").is_null());
    EXPECT_EQ(st.at("key_id"), key_id_);
    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(mfa_.get(), user_id_, oathtool_code(secret, rsdb_test::auth::unix_now()).c_str(),
                                      nullptr, &accepted),
                      RSDB_ERR_STATE))
        << "codes are not checked before enrollment is confirmed";

    // Beginning again replaces the secret.
    json again = begin_enrollment(mfa_.get(), user_id_, "player@example.com");
    EXPECT_NE(again.at("secret_base32"), secret);
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_ + 1000, "ghost", nullptr), RSDB_ERR_NULL));
    OutString out;
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_ + 1000, "ghost", out.out()), RSDB_ERR_NOT_FOUND));
}

TEST_F(Mfa, ConfirmingWithAnOathtoolCodeEnablesMfaAndGivesTenBackupCodes) {
    json en = begin_enrollment(mfa_.get(), user_id_);
    const std::string secret = en.at("secret_base32");
    const int64_t t = fresh_totp_time();
    OutString out;
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(mfa_.get(), user_id_, wrong_code(secret, t).c_str(), nullptr,
                                                  out.out()),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(out.is_null());
    EXPECT_EQ(status(mfa_.get(), user_id_).at("enabled"), false);

    json codes = RSDB_JSON(
        rsdb_mfa_confirm_enrollment(mfa_.get(), user_id_, oathtool_code(secret, t).c_str(), "198.51.100.1", out.out()),
        out);
    ASSERT_TRUE(codes.is_array());
    ASSERT_EQ(codes.size(), 10u);
    std::set<std::string> distinct;
    for (const auto& c : codes) {
        const std::string code = c.get<std::string>();
        EXPECT_EQ(code.size(), 11u) << code;
        EXPECT_EQ(code[5], '-') << code;
        distinct.insert(code);
    }
    EXPECT_EQ(distinct.size(), 10u);
    json st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enrolled"), true);
    EXPECT_EQ(st.at("enabled"), true);
    EXPECT_TRUE(st.at("confirmed_at").is_string());
    EXPECT_EQ(st.at("backup_codes_remaining"), 10);
    EXPECT_TRUE(st.at("locked_until").is_null());
    EXPECT_EQ(st.at("key_id"), key_id_);
    EXPECT_TRUE(Fails(rsdb_mfa_confirm_enrollment(mfa_.get(), user_id_, oathtool_code(secret, t + 30).c_str(), nullptr,
                                                  out.out()),
                      RSDB_ERR_STATE))
        << "confirmed once";
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_, "again", out.out()), RSDB_ERR_STATE))
        << "re-enrolling needs unenroll first";
    EXPECT_EQ(count("SELECT count(*) AS n FROM event_log WHERE aggregate_type = 'mfa' AND aggregate_id = $1 AND"
                    " event_type = 'mfa.enrolled'",
                    json::array({std::to_string(user_id_)})),
              1);
}

// ================================================================ MFA: codes

TEST_F(Mfa, AnOathtoolCodeIsAcceptedOnceWithinOneStepOfSkewAndNotThreeStepsAway) {
    Enrolled e = enroll();  // confirmed with the code of t-30: one step behind is accepted
    const std::string now = oathtool_code(e.secret, e.t);
    EXPECT_TRUE(verify(now, "203.0.113.1")) << "the current step";
    EXPECT_FALSE(verify(now, "203.0.113.2")) << "the same code twice is a replay";
    EXPECT_FALSE(verify(oathtool_code(e.secret, e.t - 30), "203.0.113.3")) << "an older step after a newer one";
    const std::string next = oathtool_code(e.secret, e.t + 30);
    EXPECT_TRUE(verify(next, "203.0.113.4")) << "one step ahead (clock skew) is accepted";

    json log = attempts(user_id_);
    ASSERT_EQ(log.size(), 5u) << log.dump();
    EXPECT_EQ(log[0].at("method"), "enroll");
    EXPECT_EQ(log[0].at("success"), true);
    EXPECT_EQ(log[1].at("reason"), "ok");
    EXPECT_EQ(log[2].at("reason"), "code already used");
    EXPECT_EQ(log[3].at("reason"), "code already used");
    EXPECT_EQ(log[4].at("success"), true);

    // Three steps away, on either side, is outside the window: "wrong code", not "already used".
    const auto window = codes_around(e.secret, e.t, -1, 1);
    const std::string far_ahead = oathtool_code(e.secret, e.t + 90);
    if (window.count(far_ahead) == 0) {
        EXPECT_FALSE(verify(far_ahead, "203.0.113.5")) << "three steps ahead";
        EXPECT_EQ(attempts(user_id_).back().at("reason"), "wrong code");
    } else {
        std::cout << "[ note ] the code three steps ahead equals one inside the window; not checked\n";
    }
    const std::string far_behind = oathtool_code(e.secret, e.t - 90);
    if (window.count(far_behind) == 0) {
        EXPECT_FALSE(verify(far_behind, "203.0.113.6")) << "three steps behind";
        EXPECT_EQ(attempts(user_id_).back().at("reason"), "wrong code");
    } else {
        std::cout << "[ note ] the code three steps behind equals one inside the window; not checked\n";
    }
    EXPECT_FALSE(verify(wrong_code(e.secret, e.t), "203.0.113.7"));
    EXPECT_FALSE(verify("12345", "203.0.113.8")) << "too short";
    EXPECT_FALSE(verify("abcdef", "203.0.113.8")) << "not digits";
}

TEST_F(Mfa, EveryAttemptIsLoggedWithItsOutcomeReasonAndIpAddress) {
    Enrolled e = enroll(mfa_.get(), user_id_, "198.51.100.1");
    EXPECT_TRUE(verify(oathtool_code(e.secret, e.t), "203.0.113.10"));
    EXPECT_FALSE(verify(wrong_code(e.secret, e.t), "203.0.113.11"));
    EXPECT_FALSE(verify(oathtool_code(e.secret, e.t), nullptr));
    EXPECT_TRUE(verify_backup(e.backup_codes[0], "203.0.113.12"));
    EXPECT_FALSE(verify_backup("ZZZZZ-ZZZZZ", "203.0.113.13"));

    json log = attempts(user_id_);
    ASSERT_EQ(log.size(), 6u) << log.dump();
    const json expected = json::parse(R"([
        {"method":"enroll","success":true,"reason":"ok","ip_address":"198.51.100.1","session_id":null},
        {"method":"totp","success":true,"reason":"ok","ip_address":"203.0.113.10","session_id":null},
        {"method":"totp","success":false,"reason":"wrong code","ip_address":"203.0.113.11","session_id":null},
        {"method":"totp","success":false,"reason":"code already used","ip_address":null,"session_id":null},
        {"method":"backup_code","success":true,"reason":"ok","ip_address":"203.0.113.12","session_id":null},
        {"method":"backup_code","success":false,"reason":"wrong or used backup code","ip_address":"203.0.113.13","session_id":null}
    ])");
    EXPECT_EQ(log, expected);
    const std::string text = log.dump();
    EXPECT_EQ(text.find(e.backup_codes[0]), std::string::npos) << "codes are not logged";
}

TEST_F(Mfa, FiveWrongCodesLockTheUserOutEvenForTheRightCodeUntilTheWindowPasses) {
    ConfigPtr cfg;
    ASSERT_NO_FATAL_FAILURE(make_config({{"mfa_lockout_window_s", "3"}}, &cfg));
    MfaPtr m;
    ASSERT_NO_FATAL_FAILURE(make_mfa(cfg.get(), &m));
    Enrolled e = enroll(m.get(), user_id_);
    const std::string wrong = wrong_code(e.secret, e.t);
    for (int i = 0; i < 5; ++i) EXPECT_FALSE(verify(m.get(), user_id_, wrong, "192.0.2.9")) << "attempt " << i;

    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(m.get(), user_id_, oathtool_code(e.secret, e.t).c_str(), "192.0.2.9", &accepted),
                      RSDB_ERR_LOCKED))
        << "even the right code is refused while locked";
    EXPECT_EQ(accepted, -1);
    EXPECT_TRUE(Fails(rsdb_mfa_verify_backup_code(m.get(), user_id_, e.backup_codes[0].c_str(), nullptr, &accepted),
                      RSDB_ERR_LOCKED));
    EXPECT_TRUE(status(m.get(), user_id_).at("locked_until").is_string());
    EXPECT_EQ(count("SELECT count(*) AS n FROM mfa_attempts WHERE user_id = $1 AND NOT success AND"
                    " ip_address = '192.0.2.9' AND reason = 'wrong code'",
                    json::array({user_id_})),
              5);

    std::this_thread::sleep_for(3300ms);
    EXPECT_TRUE(status(m.get(), user_id_).at("locked_until").is_null());
    const int64_t t2 = fresh_totp_time();
    EXPECT_TRUE(verify(m.get(), user_id_, oathtool_code(e.secret, t2), "192.0.2.9")) << "the lock lifted";
    EXPECT_TRUE(verify_backup(e.backup_codes[0])) << "the refused backup code was not spent";
}

TEST_F(Mfa, BackupCodesWorkOnceIgnoreCaseAndSeparatorsAndRegeneratingRetiresTheOldSet) {
    Enrolled e = enroll();
    ASSERT_EQ(e.backup_codes.size(), 10u);
    EXPECT_TRUE(verify_backup(e.backup_codes[0]));
    EXPECT_FALSE(verify_backup(e.backup_codes[0])) << "single use";
    std::string spaced = lower(e.backup_codes[1]);
    std::replace(spaced.begin(), spaced.end(), '-', ' ');
    EXPECT_TRUE(verify_backup(spaced)) << "lower case with a space: " << spaced;
    std::string bare = e.backup_codes[2];
    bare.erase(std::remove(bare.begin(), bare.end(), '-'), bare.end());
    EXPECT_TRUE(verify_backup(" " + bare + " ")) << "no separator";
    EXPECT_FALSE(verify_backup(e.backup_codes[2])) << "the same code, written differently, is still used up";
    EXPECT_EQ(status(mfa_.get(), user_id_).at("backup_codes_remaining"), 7);

    OutString out;
    json fresh = RSDB_JSON(rsdb_mfa_regenerate_backup_codes(mfa_.get(), user_id_, out.out()), out);
    ASSERT_EQ(fresh.size(), 10u);
    EXPECT_EQ(status(mfa_.get(), user_id_).at("backup_codes_remaining"), 10);
    for (const auto& c : fresh) {
        EXPECT_EQ(std::count(e.backup_codes.begin(), e.backup_codes.end(), c.get<std::string>()), 0);
    }
    EXPECT_FALSE(verify_backup(e.backup_codes[3])) << "the old set is gone";
    EXPECT_TRUE(verify_backup(fresh[0].get<std::string>()));
    EXPECT_EQ(status(mfa_.get(), user_id_).at("backup_codes_remaining"), 9);

    // Stored as keyed hashes only.
    const std::string stored = query("SELECT string_agg(row_to_json(b)::text, ',') AS j FROM mfa_backup_codes b")
                                   .at(0)
                                   .at("j");
    for (const auto& c : fresh) {
        std::string code = c.get<std::string>();
        EXPECT_EQ(stored.find(code), std::string::npos);
        code.erase(std::remove(code.begin(), code.end(), '-'), code.end());
        EXPECT_EQ(stored.find(code), std::string::npos);
        EXPECT_EQ(stored.find(sha256_hex(code)), std::string::npos) << "not a plain SHA-256 either";
    }
}

// ================================================================ MFA: keys

TEST_F(Mfa, TheStoredSecretIsEncryptedAndContainsNeitherItsBytesNorItsBase32) {
    Enrolled e = enroll();
    json row = query("SELECT secret_encrypted, key_id FROM user_mfa WHERE user_id = $1", json::array({user_id_})).at(0);
    EXPECT_EQ(row.at("key_id"), key_id_);
    const std::vector<uint8_t> sealed = from_hex(row.at("secret_encrypted").get<std::string>());
    const std::vector<uint8_t> raw = base32_decode(e.secret);
    ASSERT_EQ(raw.size(), 20u);
    EXPECT_GT(sealed.size(), raw.size());
    EXPECT_FALSE(contains_bytes(sealed, raw)) << "no raw secret in the row";
    EXPECT_FALSE(contains_bytes(sealed, std::vector<uint8_t>(e.secret.begin(), e.secret.end())));
    EXPECT_FALSE(contains_bytes(sealed, std::vector<uint8_t>(e.secret.begin(), e.secret.begin() + 8)))
        << "not even a part of the base32 text";
    for (const char* sql : {"SELECT row_to_json(m)::text AS j FROM user_mfa m",
                            "SELECT coalesce(string_agg(row_to_json(e)::text, ','), '') AS j FROM event_log e",
                            "SELECT coalesce(string_agg(row_to_json(a)::text, ','), '') AS j FROM mfa_attempts a"}) {
        const std::string dump = query(sql).at(0).at("j");
        EXPECT_EQ(dump.find(e.secret), std::string::npos) << sql;
        EXPECT_EQ(dump.find(to_hex(raw)), std::string::npos) << sql;
        EXPECT_EQ(dump.find(master_key_), std::string::npos) << sql;
    }
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

TEST_F(Mfa, RotatingTheMasterKeyReencryptsSecretsSoTheNewKeyAloneVerifies) {
    Enrolled e = enroll();
    const std::string old_sealed =
        query("SELECT secret_encrypted FROM user_mfa WHERE user_id = $1", json::array({user_id_})).at(0).at(
            "secret_encrypted");
    const std::string new_key = random_master_key();
    const std::string new_id = key_id_ + "-next";
    ConfigPtr rotating_cfg;
    ASSERT_NO_FATAL_FAILURE(make_config(
        {{"master_key", new_key}, {"master_key_id", new_id}, {"master_keys_old", key_id_ + ":" + master_key_}},
        &rotating_cfg));
    MfaPtr rotating;
    ASSERT_NO_FATAL_FAILURE(make_mfa(rotating_cfg.get(), &rotating));
    uint64_t rotated = 99;
    ASSERT_RSDB_OK(rsdb_mfa_rotate_keys(rotating.get(), &rotated));
    EXPECT_EQ(rotated, 1u);
    EXPECT_EQ(status(rotating.get(), user_id_).at("key_id"), new_id);
    json row = query("SELECT secret_encrypted, key_id FROM user_mfa WHERE user_id = $1", json::array({user_id_})).at(0);
    EXPECT_EQ(row.at("key_id"), new_id);
    EXPECT_NE(row.at("secret_encrypted"), old_sealed);
    ASSERT_RSDB_OK(rsdb_mfa_rotate_keys(rotating.get(), &rotated));
    EXPECT_EQ(rotated, 0u) << "nothing left under an old key";

    ConfigPtr new_only_cfg;
    ASSERT_NO_FATAL_FAILURE(make_config({{"master_key", new_key}, {"master_key_id", new_id}}, &new_only_cfg));
    MfaPtr new_only;
    ASSERT_NO_FATAL_FAILURE(make_mfa(new_only_cfg.get(), &new_only));
    EXPECT_TRUE(verify(new_only.get(), user_id_, oathtool_code(e.secret, e.t))) << "the new key alone opens the secret";

    // The handle with only the old key can no longer open it, and says which key it lacks.
    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(mfa_.get(), user_id_, oathtool_code(e.secret, e.t + 30).c_str(), nullptr,
                                      &accepted),
                      RSDB_ERR_CONFIG, new_id));
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

TEST_F(Mfa, TotpCodeAgreesWithOathtool) {
    const std::string secret = begin_enrollment(mfa_.get(), user_id_).at("secret_base32");
    OutString code;
    for (uint64_t t : {59ULL, 1111111109ULL, 1700000000ULL, 2000000000ULL}) {
        ASSERT_RSDB_OK(rsdb_totp_code(secret.c_str(), t, code.out()));
        EXPECT_EQ(code.str(), oathtool_code(secret, static_cast<int64_t>(t))) << "t=" << t;
    }
    EXPECT_TRUE(Fails(rsdb_totp_code(nullptr, 59, code.out()), RSDB_ERR_NULL, "secret_base32"));
    EXPECT_TRUE(Fails(rsdb_totp_code(secret.c_str(), 59, nullptr), RSDB_ERR_NULL, "code"));
    EXPECT_TRUE(Fails(rsdb_totp_code("not base32!", 59, code.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(code.is_null());
}

// ================================================================ MFA: login and unenroll

TEST_F(MfaLogin, PasswordThenSessionThenSecondFactorThenAccessAndABackupCodeForTheNextLogin) {
    const std::string password = "correct horse battery";
    OutString out;
    json user = RSDB_JSON(rsdb_users_create(users_.get(), "ada", "ada@example.com", password.c_str(), nullptr, out.out()),
                          out);
    const int64_t uid = user.at("id");
    Enrolled e = enroll(mfa_.get(), uid);

    json who = RSDB_JSON(rsdb_users_authenticate(users_.get(), "ada", password.c_str(), out.out()), out);
    ASSERT_EQ(who.at("id"), uid);
    const bool needs_mfa = status(mfa_.get(), uid).at("enabled").get<bool>();
    ASSERT_TRUE(needs_mfa);
    Created login = create(sessions_.get(), uid, "fp-1", "203.0.113.5", "RootStream/1.0", nullptr, 0, needs_mfa ? 1 : 0);
    EXPECT_EQ(login.session.at("mfa_required"), true);
    EXPECT_TRUE(login.session.at("mfa_verified_at").is_null());

    EXPECT_TRUE(Fails(validate(login.token, "fp-1", 1), RSDB_ERR_MFA_REQUIRED));
    json pending;
    EXPECT_RSDB_OK(validate(login.token, "fp-1", 0, &pending)) << "the session itself exists";
    EXPECT_EQ(pending.at("id"), login.id());

    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), login.token.c_str(), "fp-1",
                                              wrong_code(e.secret, e.t).c_str(), "203.0.113.5", out.out()),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(login.token, "fp-1", 1), RSDB_ERR_MFA_REQUIRED)) << "a wrong code does not pass";

    json done = RSDB_JSON(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), login.token.c_str(), "fp-1",
                                                  oathtool_code(e.secret, e.t).c_str(), "203.0.113.5", out.out()),
                          out);
    EXPECT_EQ(done.at("id"), login.id());
    EXPECT_TRUE(done.at("mfa_verified_at").is_string());
    json s;
    ASSERT_RSDB_OK(validate(login.token, "fp-1", 1, &s));
    EXPECT_TRUE(s.at("mfa_verified_at").is_string());
    EXPECT_TRUE(session_row(login.id()).at("mfa_verified_at").is_string());

    // The next login (lost phone) completes with a backup code instead.
    Created second = create(sessions_.get(), uid, "fp-2", nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(Fails(validate(second.token, "fp-2", 1), RSDB_ERR_MFA_REQUIRED));
    ASSERT_RSDB_OK(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), second.token.c_str(), "fp-2",
                                           e.backup_codes[3].c_str(), nullptr, nullptr));
    EXPECT_RSDB_OK(validate(second.token, "fp-2", 1));
    EXPECT_EQ(status(mfa_.get(), uid).at("backup_codes_remaining"), 9);
    // The backup code is spent: a third login cannot use it.
    Created third = create(sessions_.get(), uid, "fp-3", nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), third.token.c_str(), "fp-3",
                                              e.backup_codes[3].c_str(), nullptr, nullptr),
                      RSDB_ERR_AUTH));
    EXPECT_TRUE(Fails(validate(third.token, "fp-3", 1), RSDB_ERR_MFA_REQUIRED));
    // complete_login checks the device too.
    EXPECT_TRUE(Fails(rsdb_mfa_complete_login(mfa_.get(), sessions_.get(), third.token.c_str(), "fp-elsewhere",
                                              e.backup_codes[4].c_str(), nullptr, nullptr),
                      RSDB_ERR_AUTH));
    EXPECT_EQ(status(mfa_.get(), uid).at("backup_codes_remaining"), 9) << "no code spent on a hijacked session";

    // The login attempts are logged with their session.
    EXPECT_EQ(count("SELECT count(*) AS n FROM mfa_attempts WHERE session_id = $1", json::array({login.id()})), 2);
    EXPECT_EQ(count("SELECT count(*) AS n FROM mfa_attempts WHERE session_id = $1 AND success AND ip_address ="
                    " '203.0.113.5' AND method = 'totp'",
                    json::array({login.id()})),
              1);
    EXPECT_EQ(count("SELECT count(*) AS n FROM mfa_attempts WHERE session_id = $1 AND success AND method ="
                    " 'backup_code'",
                    json::array({second.id()})),
              1);
}

TEST_F(Mfa, UnenrollTurnsTheSecondFactorOff) {
    Enrolled e = enroll();
    ASSERT_RSDB_OK(rsdb_mfa_unenroll(mfa_.get(), user_id_));
    json st = status(mfa_.get(), user_id_);
    EXPECT_EQ(st.at("enrolled"), false);
    EXPECT_EQ(st.at("enabled"), false);
    EXPECT_EQ(st.at("backup_codes_remaining"), 0);
    EXPECT_TRUE(st.at("key_id").is_null());
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0);
    EXPECT_EQ(count("SELECT count(*) AS n FROM mfa_backup_codes"), 0);
    int accepted = -1;
    EXPECT_TRUE(Fails(rsdb_mfa_verify(mfa_.get(), user_id_, oathtool_code(e.secret, e.t).c_str(), nullptr, &accepted),
                      RSDB_ERR_STATE));
    EXPECT_FALSE(verify_backup(e.backup_codes[0])) << "the backup codes went with it";
    EXPECT_TRUE(Fails(rsdb_mfa_unenroll(mfa_.get(), user_id_), RSDB_ERR_NOT_FOUND));
    // Enrolling again starts from a new secret.
    json en = begin_enrollment(mfa_.get(), user_id_);
    EXPECT_NE(en.at("secret_base32"), e.secret);
}

TEST_F(Mfa, AdminResetRemovesMfaAndRevokesEverySessionOfTheUser) {
    Enrolled e = enroll();
    Created full = create(user_id_);
    Created half = create(sessions_.get(), user_id_, kLaptop, nullptr, nullptr, nullptr, 0, 1);
    uint64_t revoked = 99;
    ASSERT_RSDB_OK(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, nullptr, &revoked));
    EXPECT_EQ(revoked, 2u);
    EXPECT_EQ(status(mfa_.get(), user_id_).at("enrolled"), false);
    EXPECT_EQ(session_row(full.id()).at("revoke_reason"), "mfa reset") << "NULL reason: the library's default";
    EXPECT_EQ(session_row(half.id()).at("is_active"), false);
    EXPECT_TRUE(Fails(validate(full.token), RSDB_ERR_AUTH));
    EXPECT_FALSE(verify_backup(e.backup_codes[0])) << "the backup codes went with it";
    // Nothing left to reset: NOT_FOUND, and a newer session is untouched.
    Created later = create(user_id_);
    EXPECT_TRUE(Fails(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, "again", &revoked),
                      RSDB_ERR_NOT_FOUND));
    EXPECT_RSDB_OK(validate(later.token));
    // A given reason is recorded; the count may be left out.
    enroll();
    ASSERT_RSDB_OK(rsdb_mfa_admin_reset(mfa_.get(), sessions_.get(), user_id_, "phone stolen", nullptr));
    EXPECT_EQ(session_row(later.id()).at("revoke_reason"), "phone stolen");
}

TEST_F(Mfa, UnenrollAloneLeavesTheSessionsAsTheyAre) {
    enroll();
    Created c = create(user_id_);
    ASSERT_RSDB_OK(rsdb_mfa_unenroll(mfa_.get(), user_id_));
    EXPECT_RSDB_OK(validate(c.token));
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

TEST_F(BadInput, OneMebibyteTokensFingerprintsAndCodesFailCleanly) {
    const std::string mib(1 << 20, 'A');
    rsdb_sessions* ss = sessions_.get();
    OutString s;
    Created c = create(user_id_);

    EXPECT_TRUE(FailsCleanly(validate(mib, kLaptop), {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(rsdb_sessions_refresh(ss, mib.c_str(), kLaptop, 1, s.out(), nullptr),
                             {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(rsdb_sessions_revoke_token(ss, mib.c_str()),
                             {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT, RSDB_ERR_NOT_FOUND}));
    EXPECT_TRUE(FailsCleanly(
        rsdb_sessions_create(ss, user_id_, mib.c_str(), nullptr, nullptr, nullptr, 0, 0, s.out(), nullptr),
        {RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(
        rsdb_sessions_create(ss, user_id_, "fp", nullptr, mib.c_str(), nullptr, 0, 0, s.out(), nullptr),
        {RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(
        rsdb_sessions_create(ss, user_id_, "fp", nullptr, nullptr, mib.c_str(), 0, 0, s.out(), nullptr),
        {RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), 1) << "no session was created from oversized input";
    EXPECT_RSDB_OK(validate(c.token));
    // A huge fingerprint with a real token is not this device: a clean refusal.
    EXPECT_TRUE(FailsCleanly(validate(c.token, mib), {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));

    Enrolled e = enroll();
    rsdb_mfa* m = mfa_.get();
    EXPECT_TRUE(FailsCleanly(rsdb_mfa_begin_enrollment(m, user_id_ + 1, mib.c_str(), s.out()),
                             {RSDB_ERR_INVALID_ARGUMENT}));
    int accepted = -1;
    int rc = rsdb_mfa_verify(m, user_id_, mib.c_str(), nullptr, &accepted);
    if (rc == RSDB_OK) {
        EXPECT_EQ(accepted, 0) << "a 1 MiB code is never right";
    } else {
        EXPECT_TRUE(FailsCleanly(rc, {RSDB_ERR_INVALID_ARGUMENT}));
    }
    accepted = -1;
    rc = rsdb_mfa_verify_backup_code(m, user_id_, mib.c_str(), nullptr, &accepted);
    if (rc == RSDB_OK) {
        EXPECT_EQ(accepted, 0);
    } else {
        EXPECT_TRUE(FailsCleanly(rc, {RSDB_ERR_INVALID_ARGUMENT}));
    }
    Created pending = create(ss, user_id_, "fp-mfa", nullptr, nullptr, nullptr, 0, 1);
    EXPECT_TRUE(FailsCleanly(rsdb_mfa_complete_login(m, ss, pending.token.c_str(), "fp-mfa", mib.c_str(), nullptr,
                                                     s.out()),
                             {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    EXPECT_TRUE(FailsCleanly(rsdb_mfa_complete_login(m, ss, mib.c_str(), "fp-mfa", "123456", nullptr, s.out()),
                             {RSDB_ERR_AUTH, RSDB_ERR_INVALID_ARGUMENT}));
    // Still healthy: the real code and the pending session work.
    EXPECT_TRUE(verify(oathtool_code(e.secret, e.t)));
    EXPECT_RSDB_OK(validate(pending.token, "fp-mfa", 0));
}

TEST_F(BadInput, ARefusedAccountNameStoresNoSecret) {
    // Authenticator URIs cannot carry a ':' in the account name; the library refuses it. A
    // refused enrollment must not leave a secret behind that nobody was shown.
    OutString out;
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_, "player:one", out.out()),
                      RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(out.is_null());
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0);
    EXPECT_EQ(status(mfa_.get(), user_id_).at("enrolled"), false);
    EXPECT_TRUE(Fails(rsdb_mfa_begin_enrollment(mfa_.get(), user_id_, "", out.out()), RSDB_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(count("SELECT count(*) AS n FROM user_mfa"), 0);
}

// ================================================================ hostile strings

TEST_F(HostileStrings, FingerprintsUserAgentsGeoLocationsAndReasonsAreStoredVerbatim) {
    for (const auto& h : kHostile) {
        Created c = create(sessions_.get(), user_id_, h.c_str(), h.c_str(), h.c_str(), h.c_str());
        json s;
        ASSERT_RSDB_OK(validate(c.token, h, 0, &s)) << h;
        EXPECT_EQ(s.at("device_fingerprint"), h);
        json row = session_row(c.id());
        EXPECT_EQ(row.at("device_fingerprint"), h);
        EXPECT_EQ(row.at("ip_address"), h);
        EXPECT_EQ(row.at("user_agent"), h);
        EXPECT_EQ(row.at("geo_location"), h);
        ASSERT_RSDB_OK(rsdb_sessions_revoke(sessions_.get(), c.id(), h.c_str()));
        EXPECT_EQ(session_row(c.id()).at("revoke_reason"), h);
        EXPECT_TRUE(Fails(validate(c.token, h), RSDB_ERR_AUTH));
    }
    Created a = create(user_id_);
    Created b = create(user_id_);
    uint64_t n = 0;
    ASSERT_RSDB_OK(rsdb_sessions_revoke_all(sessions_.get(), user_id_, a.id(), kHostile[0].c_str(), &n));
    EXPECT_EQ(n, 1u);
    EXPECT_EQ(session_row(b.id()).at("revoke_reason"), kHostile[0]);
    EXPECT_RSDB_OK(validate(a.token));
    // A hostile fingerprint presented against a real session is just another device.
    EXPECT_TRUE(Fails(validate(a.token, kHostile[2]), RSDB_ERR_AUTH, "another device"));

    // A hostile account name ends up percent-encoded in the otpauth URI.
    json en = begin_enrollment(mfa_.get(), user_id_, kHostile[0]);
    const std::string uri = en.at("otpauth_uri");
    EXPECT_EQ(uri.find(' '), std::string::npos) << uri;
    EXPECT_EQ(uri.find('"'), std::string::npos) << uri;

    EXPECT_EQ(count("SELECT count(*) AS n FROM users"), 1);
    EXPECT_EQ(count("SELECT count(*) AS n FROM sessions"), static_cast<int64_t>(kHostile.size()) + 2);
    EXPECT_EQ(query("SELECT to_regclass('public.sessions') IS NOT NULL AND to_regclass('public.users') IS NOT NULL"
                    " AND to_regclass('public.user_mfa') IS NOT NULL AS ok")
                  .at(0)
                  .at("ok"),
              true);
}
