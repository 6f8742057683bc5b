#include "rootstream/auth/mfa_manager.h"
#include "rootstream/database/models/session_model.h"

namespace rootstream {

namespace {
nlohmann::json parse(const rust::String& text) {
    return nlohmann::json::parse(std::string(text));
}

nlohmann::json device_json(const database::models::DeviceInfo& d) {
    nlohmann::json j{{"fingerprint", d.fingerprint}};
    if (d.ip_address) j["ip_address"] = *d.ip_address;
    if (d.user_agent) j["user_agent"] = *d.user_agent;
    if (d.geo_location) j["geo_location"] = *d.geo_location;
    return j;
}

std::vector<std::string> strings(const nlohmann::json& j) {
    return j.get<std::vector<std::string>>();
}
}  // namespace

namespace database {
namespace models {

SessionModel::SessionModel(const Config& config, DatabaseManager& db, cache::RedisClient& redis)
    : box_(ffi::sessions_new(config.raw(), db.raw(), redis.raw())) {}

CreatedSession SessionModel::create(std::int64_t user_id, const DeviceInfo& device, bool remember_me,
                                    bool mfa_required) {
    auto j = parse(detail::call(
        [&] { return box_->create(user_id, detail::dump_json(device_json(device)), remember_me, mfa_required); }));
    return CreatedSession{j.at("token").get<std::string>(), j.at("session")};
}

nlohmann::json SessionModel::validate(const std::string& token, const std::string& fingerprint, bool require_mfa) {
    return parse(detail::call([&] { return box_->validate(token, fingerprint, require_mfa); }));
}

bool SessionModel::is_valid(const std::string& token, const std::string& fingerprint, bool require_mfa) {
    try {
        validate(token, fingerprint, require_mfa);
        return true;
    } catch (const Error& e) {
        if (e.code() == RSDB_ERR_AUTH || e.code() == RSDB_ERR_MFA_REQUIRED) return false;
        throw;
    }
}

CreatedSession SessionModel::refresh(const std::string& token, const std::string& fingerprint, bool rotate) {
    auto j = parse(detail::call([&] { return box_->refresh(token, fingerprint, rotate); }));
    return CreatedSession{j.at("token").is_null() ? token : j.at("token").get<std::string>(), j.at("session")};
}

void SessionModel::revoke(std::int64_t session_id, const std::string& reason) {
    detail::call([&] { box_->revoke(session_id, reason); });
}

void SessionModel::revoke_token(const std::string& token) {
    detail::call([&] { box_->revoke_token(token); });
}

std::uint64_t SessionModel::revoke_all(std::int64_t user_id, std::int64_t keep_session_id, const std::string& reason) {
    return detail::call([&] { return box_->revoke_all(user_id, keep_session_id, reason); });
}

nlohmann::json SessionModel::list(std::int64_t user_id) {
    return parse(detail::call([&] { return box_->list(user_id); }));
}

nlohmann::json SessionModel::cleanup_expired() {
    return parse(detail::call([&] { return box_->cleanup(); }));
}

nlohmann::json SessionModel::stats() const {
    return parse(box_->stats_json());
}

}  // namespace models
}  // namespace database

namespace auth {

MFAManager::MFAManager(const Config& config, database::DatabaseManager& db, cache::RedisClient* redis)
    : box_(detail::call([&] {
          return redis != nullptr ? ffi::mfa_new(config.raw(), db.raw(), redis->raw())
                                  : ffi::mfa_new_without_redis(config.raw(), db.raw());
      })) {}

Enrollment MFAManager::begin_enrollment(std::int64_t user_id, const std::string& account_name) {
    auto j = parse(detail::call([&] { return box_->begin_enrollment(user_id, account_name); }));
    Enrollment e;
    e.secret_base32 = j.at("secret_base32").get<std::string>();
    e.otpauth_uri = j.at("otpauth_uri").get<std::string>();
    e.qr_svg = j.at("qr_svg").get<std::string>();
    auto png = detail::call([&] { return ffi::base64_decode(j.at("qr_png").get<std::string>()); });
    e.qr_png.assign(png.begin(), png.end());
    return e;
}

std::vector<std::string> MFAManager::confirm_enrollment(std::int64_t user_id, const std::string& code,
                                                        const std::string& ip_address) {
    return strings(parse(detail::call([&] { return box_->confirm_enrollment(user_id, code, ip_address); })));
}

bool MFAManager::verify(std::int64_t user_id, const std::string& code, const std::string& ip_address) {
    return detail::call([&] { return box_->verify(user_id, code, ip_address); });
}

bool MFAManager::verify_backup_code(std::int64_t user_id, const std::string& code, const std::string& ip_address) {
    return detail::call([&] { return box_->verify_backup_code(user_id, code, ip_address); });
}

nlohmann::json MFAManager::complete_login(database::models::SessionModel& sessions, const std::string& token,
                                          const std::string& fingerprint, const std::string& code,
                                          const std::string& ip_address) {
    return parse(detail::call(
        [&] { return box_->complete_login(sessions.raw(), token, fingerprint, code, ip_address); }));
}

std::vector<std::string> MFAManager::regenerate_backup_codes(std::int64_t user_id) {
    return strings(parse(detail::call([&] { return box_->regenerate_backup_codes(user_id); })));
}

void MFAManager::unenroll(std::int64_t user_id) {
    detail::call([&] { box_->unenroll(user_id); });
}

std::uint64_t MFAManager::admin_reset(database::models::SessionModel& sessions, std::int64_t user_id,
                                      const std::string& reason) {
    return detail::call([&] { return box_->admin_reset(sessions.raw(), user_id, reason); });
}

nlohmann::json MFAManager::status(std::int64_t user_id) {
    return parse(detail::call([&] { return box_->status(user_id); }));
}

std::uint64_t MFAManager::rotate_keys() {
    return detail::call([&] { return box_->rotate_keys(); });
}

std::string totp_code(const std::string& secret_base32, std::uint64_t unix_time) {
    return std::string(detail::call([&] { return ffi::totp_code(secret_base32, unix_time); }));
}

}  // namespace auth
}  // namespace rootstream
