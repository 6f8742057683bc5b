// rootstream::database::models::SessionModel — login sessions bound to a device.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail
namespace sync {
class StateSyncManager;
}  // namespace sync

namespace database {
namespace models {

/// Where a login comes from. fingerprint is required.
struct DeviceInfo {
    std::string fingerprint;
    std::optional<std::string> ip_address;
    std::optional<std::string> user_agent;
    std::optional<std::string> geo_location;
};

/// A session as stored (never its token). Timestamps are RFC 3339 text in UTC.
struct Session {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    std::string device_fingerprint;
    std::optional<std::string> ip_address;
    std::optional<std::string> user_agent;
    std::optional<std::string> geo_location;
    bool remember_me = false;
    /// The login needs a second factor before the session grants access.
    bool mfa_required = false;
    std::optional<std::string> mfa_verified_at;
    std::string created_at;
    std::string expires_at;
    std::string last_activity_at;
    std::int32_t idle_timeout_seconds = 0;
    bool is_active = false;
    std::optional<std::string> revoked_at;
    std::optional<std::string> revoke_reason;

    /// The record under the same keys as the C API's session JSON, with null for what is unset.
    nlohmann::json to_json() const;
};

/// A new session: its token (shown once, never stored) and the session record.
struct CreatedSession {
    std::string token;
    Session session;
};

/// What cleanup_expired did.
struct SessionCleanup {
    /// Sessions past their absolute or idle lifetime, ended now.
    std::uint64_t ended = 0;
    /// Sessions ended longer ago than the retention, deleted.
    std::uint64_t deleted = 0;

    /// {"ended": n, "deleted": m}
    nlohmann::json to_json() const;
};

/// Counters of the session layer.
struct SessionStats {
    /// Validations answered from Redis.
    std::uint64_t cache_hits = 0;
    /// Validations answered from PostgreSQL (cache miss or Redis down).
    std::uint64_t cache_misses = 0;
    /// Redis operations that failed (the database answered instead).
    std::uint64_t cache_errors = 0;

    /// {"cache_hits":..,"cache_misses":..,"cache_errors":..}
    nlohmann::json to_json() const;
};

/// Sessions: 256-bit tokens stored only as SHA-256, cached in Redis, validated against the
/// device fingerprint (a mismatch revokes the session), absolute and idle timeouts, per-user
/// limits, refresh with optional rotation, revocation, cleanup. Thread-safe.
class SessionModel {
public:
    /// Lifetimes and limits come from config (session_* keys).
    SessionModel(const Config& config, DatabaseManager& db, cache::RedisClient& redis);
    SessionModel(SessionModel&&) noexcept;
    SessionModel& operator=(SessionModel&&) noexcept;
    SessionModel(const SessionModel&) = delete;
    SessionModel& operator=(const SessionModel&) = delete;
    ~SessionModel();

    /// Creates a session; with mfa_required it grants access only after the second factor.
    CreatedSession create(std::int64_t user_id, const DeviceInfo& device, bool remember_me = false,
                          bool mfa_required = false);
    /// Returns the session, or throws Error: RSDB_ERR_AUTH (unknown, revoked, expired, other
    /// device — which revokes it), RSDB_ERR_MFA_REQUIRED (require_mfa and the factor is pending).
    Session validate(const std::string& token, const std::string& fingerprint, bool require_mfa = true);
    /// True when validate would succeed (never throws for an invalid session).
    bool is_valid(const std::string& token, const std::string& fingerprint, bool require_mfa = true);
    /// Extends the session; with rotate the returned token replaces the old one.
    CreatedSession refresh(const std::string& token, const std::string& fingerprint, bool rotate = false);
    /// An empty reason records the library's default reason.
    void revoke(std::int64_t session_id, const std::string& reason = "");
    void revoke_token(const std::string& token);
    /// Revokes all of a user's sessions except keep_session_id (0 keeps none); returns how many.
    /// An empty reason records the library's default reason.
    std::uint64_t revoke_all(std::int64_t user_id, std::int64_t keep_session_id = 0, const std::string& reason = "");
    /// Active sessions, newest first.
    std::vector<Session> list(std::int64_t user_id);
    /// Ends expired and idle sessions and deletes those ended longer ago than
    /// session_retention_days (default 30).
    SessionCleanup cleanup_expired();
    SessionStats stats() const;
    /// From now on created and revoked sessions are also announced through `sync` (events
    /// session.created and session.revoked and the shared "session" entity; never a token);
    /// nullptr stops it. The manager's state is shared, so it need not outlive this model.
    void set_sync(sync::StateSyncManager* sync);

private:
    friend struct detail::Access;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace models
}  // namespace database
}  // namespace rootstream
