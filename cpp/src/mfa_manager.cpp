#include "rootstream/auth/mfa_manager.h"

#include "access.h"

#include "internal.h"

namespace rootstream {
namespace auth {

namespace {
std::vector<std::string> strings(const nlohmann::json& j) {
    return j.get<std::vector<std::string>>();
}
}  // namespace

MFAManager::MFAManager(const Config& config, database::DatabaseManager& db, cache::RedisClient* redis)
    : box_(detail::call([&] {
          return redis != nullptr ? ffi::mfa_new(detail::Access::config(config), detail::Access::db(db), detail::Access::redis(*redis))
                                  : ffi::mfa_new_without_redis(detail::Access::config(config), detail::Access::db(db));
      })) {}

Enrollment MFAManager::begin_enrollment(std::int64_t user_id, const std::string& account_name) {
    auto j = detail::parse_json(detail::call([&] { return box_->begin_enrollment(user_id, account_name); }));
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
    return strings(detail::parse_json(detail::call([&] { return box_->confirm_enrollment(user_id, code, ip_address); })));
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
    return detail::parse_json(detail::call(
        [&] { return box_->complete_login(sessions.raw(), token, fingerprint, code, ip_address); }));
}

std::vector<std::string> MFAManager::regenerate_backup_codes(std::int64_t user_id) {
    return strings(detail::parse_json(detail::call([&] { return box_->regenerate_backup_codes(user_id); })));
}

void MFAManager::unenroll(std::int64_t user_id) {
    detail::call([&] { box_->unenroll(user_id); });
}

std::uint64_t MFAManager::admin_reset(database::models::SessionModel& sessions, std::int64_t user_id,
                                      const std::string& reason) {
    return detail::call([&] { return box_->admin_reset(sessions.raw(), user_id, reason); });
}

nlohmann::json MFAManager::status(std::int64_t user_id) {
    return detail::parse_json(detail::call([&] { return box_->status(user_id); }));
}

std::uint64_t MFAManager::rotate_keys() {
    return detail::call([&] { return box_->rotate_keys(); });
}

std::string totp_code(const std::string& secret_base32, std::uint64_t unix_time) {
    return std::string(detail::call([&] { return ffi::totp_code(secret_base32, unix_time); }));
}

}  // namespace auth
}  // namespace rootstream
