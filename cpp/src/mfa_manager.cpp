#include "rootstream/auth/mfa_manager.h"

#include "access.h"
#include "internal.h"

namespace rootstream {
namespace auth {

namespace {
std::vector<std::string> strings(const rust::Vec<rust::String>& codes) {
    std::vector<std::string> out;
    out.reserve(codes.size());
    for (const auto& c : codes) out.emplace_back(c);
    return out;
}
}  // namespace

struct MFAManager::Impl {
    rust::Box<ffi::MfaBox> box;
};

MFAManager::MFAManager(const Config& config, database::DatabaseManager& db, cache::RedisClient* redis)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          using detail::Access;
          return redis != nullptr ? ffi::mfa_new(Access::config(config), Access::db(db), Access::redis(*redis))
                                  : ffi::mfa_new_without_redis(Access::config(config), Access::db(db));
      })})) {}
MFAManager::MFAManager(MFAManager&&) noexcept = default;
MFAManager& MFAManager::operator=(MFAManager&&) noexcept = default;
MFAManager::~MFAManager() = default;

Enrollment MFAManager::begin_enrollment(std::int64_t user_id, const std::string& account_name) {
    auto b = detail::call([&] { return impl_->box->begin_enrollment(user_id, account_name); });
    Enrollment e;
    e.secret_base32 = std::string(b.secret_base32);
    e.otpauth_uri = std::string(b.otpauth_uri);
    e.qr_svg = std::string(b.qr_svg);
    e.qr_png.assign(b.qr_png.begin(), b.qr_png.end());
    return e;
}

std::vector<std::string> MFAManager::confirm_enrollment(std::int64_t user_id, const std::string& code,
                                                        const std::string& ip_address) {
    return strings(detail::call([&] { return impl_->box->confirm_enrollment(user_id, code, ip_address); }));
}

bool MFAManager::verify(std::int64_t user_id, const std::string& code, const std::string& ip_address) {
    return detail::call([&] { return impl_->box->verify(user_id, code, ip_address); });
}

bool MFAManager::verify_backup_code(std::int64_t user_id, const std::string& code, const std::string& ip_address) {
    return detail::call([&] { return impl_->box->verify_backup_code(user_id, code, ip_address); });
}

database::models::Session MFAManager::complete_login(database::models::SessionModel& sessions,
                                                     const std::string& token, const std::string& fingerprint,
                                                     const std::string& code, const std::string& ip_address) {
    return database::models::from_bridge(detail::call(
        [&] { return impl_->box->complete_login(detail::Access::sessions(sessions), token, fingerprint, code, ip_address); }));
}

std::vector<std::string> MFAManager::regenerate_backup_codes(std::int64_t user_id) {
    return strings(detail::call([&] { return impl_->box->regenerate_backup_codes(user_id); }));
}

void MFAManager::unenroll(std::int64_t user_id) {
    detail::call([&] { impl_->box->unenroll(user_id); });
}

std::uint64_t MFAManager::admin_reset(database::models::SessionModel& sessions, std::int64_t user_id,
                                      const std::string& reason) {
    return detail::call([&] { return impl_->box->admin_reset(detail::Access::sessions(sessions), user_id, reason); });
}

MfaStatus MFAManager::status(std::int64_t user_id) {
    auto b = detail::call([&] { return impl_->box->status(user_id); });
    MfaStatus st;
    st.enrolled = b.enrolled;
    st.enabled = b.enabled;
    st.confirmed_at = std::string(b.confirmed_at);
    st.backup_codes_remaining = b.backup_codes_remaining;
    st.locked_until = std::string(b.locked_until);
    if (b.has_key_id) st.key_id = std::string(b.key_id);
    return st;
}

nlohmann::json MfaStatus::to_json() const {
    auto text_or_null = [](const std::string& t) { return t.empty() ? nlohmann::json() : nlohmann::json(t); };
    return {{"enrolled", enrolled},
            {"enabled", enabled},
            {"confirmed_at", text_or_null(confirmed_at)},
            {"backup_codes_remaining", backup_codes_remaining},
            {"locked_until", text_or_null(locked_until)},
            {"key_id", key_id ? nlohmann::json(*key_id) : nlohmann::json()}};
}

std::uint64_t MFAManager::rotate_keys() {
    return detail::call([&] { return impl_->box->rotate_keys(); });
}

std::string totp_code(const std::string& secret_base32, std::uint64_t unix_time) {
    return std::string(detail::call([&] { return ffi::totp_code(secret_base32, unix_time); }));
}

}  // namespace auth
}  // namespace rootstream
