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

std::optional<std::string> text(const rust::String& value, bool present) {
    return present ? std::optional<std::string>(std::string(value)) : std::nullopt;
}

std::optional<std::string> timestamp(const rust::String& value) {
    return value.empty() ? std::nullopt : std::optional<std::string>(std::string(value));
}

nlohmann::json or_null(const std::optional<std::string>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json();
}
}  // namespace

Session from_bridge(const ffi::SessionRecord& r) {
    Session s;
    s.id = r.id;
    s.user_id = r.user_id;
    s.device_fingerprint = std::string(r.device_fingerprint);
    s.ip_address = text(r.ip_address, r.has_ip_address);
    s.user_agent = text(r.user_agent, r.has_user_agent);
    s.geo_location = text(r.geo_location, r.has_geo_location);
    s.remember_me = r.remember_me;
    s.mfa_required = r.mfa_required;
    s.mfa_verified_at = timestamp(r.mfa_verified_at);
    s.created_at = std::string(r.created_at);
    s.expires_at = std::string(r.expires_at);
    s.last_activity_at = std::string(r.last_activity_at);
    s.idle_timeout_seconds = r.idle_timeout_seconds;
    s.is_active = r.is_active;
    s.revoked_at = timestamp(r.revoked_at);
    s.revoke_reason = text(r.revoke_reason, r.has_revoke_reason);
    return s;
}

nlohmann::json Session::to_json() const {
    return {{"id", id},
            {"user_id", user_id},
            {"device_fingerprint", device_fingerprint},
            {"ip_address", or_null(ip_address)},
            {"user_agent", or_null(user_agent)},
            {"geo_location", or_null(geo_location)},
            {"remember_me", remember_me},
            {"mfa_required", mfa_required},
            {"mfa_verified_at", or_null(mfa_verified_at)},
            {"created_at", created_at},
            {"expires_at", expires_at},
            {"last_activity_at", last_activity_at},
            {"idle_timeout_seconds", idle_timeout_seconds},
            {"is_active", is_active},
            {"revoked_at", or_null(revoked_at)},
            {"revoke_reason", or_null(revoke_reason)}};
}

nlohmann::json SessionCleanup::to_json() const {
    return {{"ended", ended}, {"deleted", deleted}};
}

nlohmann::json SessionStats::to_json() const {
    return {{"cache_hits", cache_hits}, {"cache_misses", cache_misses}, {"cache_errors", cache_errors}};
}

struct SessionModel::Impl {
    rust::Box<ffi::SessionsBox> box;
};

SessionModel::SessionModel(const Config& config, DatabaseManager& db, cache::RedisClient& redis)
    : impl_(std::make_unique<Impl>(Impl{ffi::sessions_new(detail::Access::config(config), detail::Access::db(db),
                                                          detail::Access::redis(redis))})) {}
SessionModel::SessionModel(SessionModel&&) noexcept = default;
SessionModel& SessionModel::operator=(SessionModel&&) noexcept = default;
SessionModel::~SessionModel() = default;

CreatedSession SessionModel::create(std::int64_t user_id, const DeviceInfo& device, bool remember_me,
                                    bool mfa_required) {
    // The conversion runs inside call(): a std::string that is not UTF-8 is an InvalidArgument.
    auto issued = detail::call([&] { return impl_->box->create(user_id, to_bridge(device), remember_me, mfa_required); });
    return CreatedSession{std::string(issued.token), from_bridge(issued.session)};
}

Session SessionModel::validate(const std::string& token, const std::string& fingerprint, bool require_mfa) {
    return from_bridge(detail::call([&] { return impl_->box->validate(token, fingerprint, require_mfa); }));
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
    auto issued = detail::call([&] { return impl_->box->refresh(token, fingerprint, rotate); });
    // An empty token means the old one stays valid.
    return CreatedSession{issued.token.empty() ? token : std::string(issued.token),
                          from_bridge(issued.session)};
}

void SessionModel::revoke(std::int64_t session_id, const std::string& reason) {
    detail::call([&] { impl_->box->revoke(session_id, reason); });
}

void SessionModel::revoke_token(const std::string& token) {
    detail::call([&] { impl_->box->revoke_token(token); });
}

std::uint64_t SessionModel::revoke_all(std::int64_t user_id, std::int64_t keep_session_id, const std::string& reason) {
    return detail::call([&] { return impl_->box->revoke_all(user_id, keep_session_id, reason); });
}

std::vector<Session> SessionModel::list(std::int64_t user_id) {
    auto records = detail::call([&] { return impl_->box->list(user_id); });
    std::vector<Session> out;
    out.reserve(records.size());
    for (const auto& r : records) out.push_back(from_bridge(r));
    return out;
}

SessionCleanup SessionModel::cleanup_expired() {
    auto report = detail::call([&] { return impl_->box->cleanup(); });
    return SessionCleanup{report.ended, report.deleted};
}

SessionStats SessionModel::stats() const {
    auto counters = impl_->box->stats();
    return SessionStats{counters.cache_hits, counters.cache_misses, counters.cache_errors};
}

void SessionModel::set_sync(sync::StateSyncManager* sync) { impl_->box->set_sync(*detail::link_of(sync)); }

}  // namespace models
}  // namespace database

const ffi::SessionsBox& detail::Access::sessions(const database::models::SessionModel& sessions) {
    return *sessions.impl_->box;
}
}  // namespace rootstream
