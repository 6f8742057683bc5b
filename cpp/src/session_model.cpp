#include "rootstream/database/models/session_model.h"

#include "access.h"

#include "internal.h"

namespace rootstream {
namespace database {
namespace models {

namespace {
ffi::Device to_bridge(const DeviceInfo& d) {
    ffi::Device out;
    out.fingerprint = d.fingerprint;
    out.has_ip_address = d.ip_address.has_value();
    out.ip_address = d.ip_address.value_or("");
    out.has_user_agent = d.user_agent.has_value();
    out.user_agent = d.user_agent.value_or("");
    out.has_geo_location = d.geo_location.has_value();
    out.geo_location = d.geo_location.value_or("");
    return out;
}
}  // namespace

SessionModel::SessionModel(const Config& config, DatabaseManager& db, cache::RedisClient& redis)
    : box_(ffi::sessions_new(detail::Access::config(config), detail::Access::db(db), detail::Access::redis(redis))) {}

CreatedSession SessionModel::create(std::int64_t user_id, const DeviceInfo& device, bool remember_me,
                                    bool mfa_required) {
    // The conversion runs inside call(): a std::string that is not UTF-8 is an InvalidArgument.
    auto issued = detail::call([&] { return box_->create(user_id, to_bridge(device), remember_me, mfa_required); });
    return CreatedSession{std::string(issued.token), detail::parse_json(issued.session_json)};
}

nlohmann::json SessionModel::validate(const std::string& token, const std::string& fingerprint, bool require_mfa) {
    return detail::parse_json(detail::call([&] { return box_->validate(token, fingerprint, require_mfa); }));
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
    auto issued = detail::call([&] { return box_->refresh(token, fingerprint, rotate); });
    // An empty token means the old one stays valid.
    return CreatedSession{issued.token.empty() ? token : std::string(issued.token),
                          detail::parse_json(issued.session_json)};
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
    return detail::parse_json(detail::call([&] { return box_->list(user_id); }));
}

nlohmann::json SessionModel::cleanup_expired() {
    return detail::parse_json(detail::call([&] { return box_->cleanup(); }));
}

nlohmann::json SessionModel::stats() const {
    return detail::parse_json(box_->stats_json());
}

}  // namespace models
}  // namespace database
}  // namespace rootstream
