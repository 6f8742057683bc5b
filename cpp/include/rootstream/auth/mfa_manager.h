// rootstream::auth::MFAManager — TOTP second factor with backup codes.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/database/models/session_model.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rootstream {
namespace auth {

/// What the user needs to add the account to an authenticator app. Show once.
struct Enrollment {
    std::string secret_base32;
    std::string otpauth_uri;
    std::string qr_svg;
    std::vector<std::uint8_t> qr_png;
};

/// A user's MFA state. Timestamps are RFC 3339 text in UTC, empty when unset.
struct MfaStatus {
    /// A secret exists (enrollment started).
    bool enrolled = false;
    /// Enrollment was confirmed: logins need the second factor.
    bool enabled = false;
    std::string confirmed_at;
    std::int64_t backup_codes_remaining = 0;
    /// Set while too many recent failures lock the user out.
    std::string locked_until;
    /// Id of the master key that encrypts the secret.
    std::optional<std::string> key_id;

    /// {"enrolled","enabled","confirmed_at","backup_codes_remaining","locked_until","key_id"},
    /// with null for what is unset.
    nlohmann::json to_json() const;
};

/// TOTP (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step), each code accepted once, lockout after
/// repeated failures, every attempt logged, 10 single-use backup codes, secrets encrypted with
/// AES-256-GCM under the configured master key. Thread-safe.
class MFAManager {
public:
    /// Needs master_key in config. With redis, mfa.* events are published.
    MFAManager(const Config& config, database::DatabaseManager& db, cache::RedisClient* redis = nullptr);
    MFAManager(MFAManager&&) noexcept;
    MFAManager& operator=(MFAManager&&) noexcept;
    MFAManager(const MFAManager&) = delete;
    MFAManager& operator=(const MFAManager&) = delete;
    ~MFAManager();

    Enrollment begin_enrollment(std::int64_t user_id, const std::string& account_name);
    /// Confirms with a first code; returns the backup codes. Throws RSDB_ERR_AUTH for a bad code.
    std::vector<std::string> confirm_enrollment(std::int64_t user_id, const std::string& code,
                                                const std::string& ip_address = "");
    /// True when the code is accepted; false for a wrong or reused code. Throws RSDB_ERR_LOCKED
    /// while the user is locked out.
    bool verify(std::int64_t user_id, const std::string& code, const std::string& ip_address = "");
    bool verify_backup_code(std::int64_t user_id, const std::string& code, const std::string& ip_address = "");
    /// The second step of a login: the session becomes MFA-verified; returns it. Throws
    /// RSDB_ERR_AUTH.
    database::models::Session complete_login(database::models::SessionModel& sessions, const std::string& token,
                                  const std::string& fingerprint, const std::string& code,
                                  const std::string& ip_address = "");
    std::vector<std::string> regenerate_backup_codes(std::int64_t user_id);
    /// Removes MFA (secret and backup codes); the user's sessions stay. Throws RSDB_ERR_NOT_FOUND
    /// when the user has no enrollment.
    void unenroll(std::int64_t user_id);
    /// The administrator's reset for a lost device: removes MFA and revokes every session of the
    /// user with reason (empty: the library's default); returns how many sessions were revoked.
    /// Throws RSDB_ERR_NOT_FOUND, revoking nothing, when the user has no enrollment.
    std::uint64_t admin_reset(database::models::SessionModel& sessions, std::int64_t user_id,
                              const std::string& reason = "");
    MfaStatus status(std::int64_t user_id);
    /// Re-encrypts secrets under the current master key; returns how many.
    std::uint64_t rotate_keys();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// The TOTP code (SHA-1, 6 digits, 30 s) of a base32 secret at unix_time (0 = now) — what an
/// authenticator app shows. For tests, tools and demos.
std::string totp_code(const std::string& secret_base32, std::uint64_t unix_time = 0);

}  // namespace auth
}  // namespace rootstream
