#include "rootstream/database/models/stream_model.h"
#include "rootstream/database/models/user.h"
#include "rootstream/events/event_store.h"
#include "rootstream-db/src/ffi/cxx/events.rs.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"

namespace rootstream {

namespace {
nlohmann::json parse(const rust::String& text) {
    return nlohmann::json::parse(std::string(text));
}
}  // namespace

namespace database {
namespace models {

User User::create(DatabaseManager& db, const std::string& username, const std::string& email,
                  const std::string& password, const std::optional<std::string>& display_name) {
    return User(parse(detail::call([&] {
        return ffi::user_create(db.raw(), username, email, password, display_name.value_or(""),
                                display_name.has_value());
    })));
}

User User::authenticate(DatabaseManager& db, const std::string& login, const std::string& password) {
    return User(parse(detail::call([&] { return ffi::user_authenticate(db.raw(), login, password); })));
}

User User::load_by_id(DatabaseManager& db, std::int64_t id) {
    return User(parse(detail::call([&] { return ffi::user_get(db.raw(), "id", std::to_string(id)); })));
}

User User::load_by_username(DatabaseManager& db, const std::string& username) {
    return User(parse(detail::call([&] { return ffi::user_get(db.raw(), "username", username); })));
}

User User::load_by_email(DatabaseManager& db, const std::string& email) {
    return User(parse(detail::call([&] { return ffi::user_get(db.raw(), "email", email); })));
}

bool User::verify_password(DatabaseManager& db, const std::string& password) const {
    return detail::call([&] { return ffi::user_verify_password(db.raw(), id(), password); });
}

void User::update_profile(DatabaseManager& db, const std::optional<std::string>& display_name,
                          const std::optional<std::string>& avatar_url) {
    data_ = parse(detail::call([&] {
        return ffi::user_update_profile(db.raw(), id(), display_name.value_or(""), display_name.has_value(),
                                        avatar_url.value_or(""), avatar_url.has_value());
    }));
}

void User::verify(DatabaseManager& db) {
    data_ = parse(detail::call([&] { return ffi::user_set_flag(db.raw(), id(), "verified", true); }));
}

void User::activate(DatabaseManager& db) {
    data_ = parse(detail::call([&] { return ffi::user_set_flag(db.raw(), id(), "active", true); }));
}

void User::deactivate(DatabaseManager& db) {
    data_ = parse(detail::call([&] { return ffi::user_set_flag(db.raw(), id(), "active", false); }));
}

void User::record_login(DatabaseManager& db) {
    data_ = parse(detail::call([&] { return ffi::user_set_flag(db.raw(), id(), "login", true); }));
}

void User::change_password(DatabaseManager& db, const std::string& new_password) {
    detail::call([&] { ffi::user_change_password(db.raw(), id(), new_password); });
}

std::optional<std::string> User::text(const char* key) const {
    auto it = data_.find(key);
    if (it == data_.end() || it->is_null()) return std::nullopt;
    return it->get<std::string>();
}

nlohmann::json StreamModel::create(std::int64_t user_id, const std::string& name,
                                   const std::optional<std::string>& description) {
    return parse(detail::call([&] {
        return ffi::stream_create(db_.raw(), redis_.raw(), user_id, name, description.value_or(""),
                                  description.has_value());
    }));
}

nlohmann::json StreamModel::get(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::stream_get(db_.raw(), redis_.raw(), stream_id); }));
}

nlohmann::json StreamModel::get_by_key(const std::string& stream_key) {
    return parse(detail::call([&] { return ffi::stream_get_by_key(db_.raw(), redis_.raw(), stream_key); }));
}

nlohmann::json StreamModel::regenerate_key(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::stream_regenerate_key(db_.raw(), redis_.raw(), stream_id); }));
}

nlohmann::json StreamModel::start(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::stream_start(db_.raw(), redis_.raw(), stream_id); }));
}

nlohmann::json StreamModel::stop(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::stream_stop(db_.raw(), redis_.raw(), stream_id); }));
}

std::int64_t StreamModel::viewer_joined(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(db_.raw(), redis_.raw(), stream_id, 1); });
}

std::int64_t StreamModel::viewer_left(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(db_.raw(), redis_.raw(), stream_id, -1); });
}

std::int64_t StreamModel::viewer_count(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(db_.raw(), redis_.raw(), stream_id, 0); });
}

nlohmann::json StreamModel::update_stats(std::int64_t stream_id, const StreamStats& stats) {
    nlohmann::json j = nlohmann::json::object();
    if (stats.bitrate_kbps) j["bitrate_kbps"] = *stats.bitrate_kbps;
    if (stats.fps) j["fps"] = *stats.fps;
    if (stats.resolution) j["resolution"] = *stats.resolution;
    if (stats.codec) j["codec"] = *stats.codec;
    return parse(detail::call(
        [&] { return ffi::stream_update_stats(db_.raw(), redis_.raw(), stream_id, detail::dump_json(j)); }));
}

nlohmann::json StreamModel::list_live() {
    return parse(detail::call([&] { return ffi::stream_list_live(db_.raw(), redis_.raw()); }));
}

nlohmann::json StreamSessionModel::create(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::session_create(db_.raw(), stream_id); }));
}

nlohmann::json StreamSessionModel::get(std::int64_t session_id) {
    return parse(detail::call([&] { return ffi::session_get(db_.raw(), session_id); }));
}

nlohmann::json StreamSessionModel::record_viewer(std::int64_t session_id, int current_viewers) {
    return parse(detail::call([&] { return ffi::session_record_viewer(db_.raw(), session_id, current_viewers); }));
}

nlohmann::json StreamSessionModel::add_bytes(std::int64_t session_id, std::int64_t bytes) {
    return parse(detail::call([&] { return ffi::session_add_bytes(db_.raw(), session_id, bytes); }));
}

nlohmann::json StreamSessionModel::end(std::int64_t session_id) {
    return parse(detail::call([&] { return ffi::session_end(db_.raw(), session_id); }));
}

nlohmann::json StreamSessionModel::list(std::int64_t stream_id) {
    return parse(detail::call([&] { return ffi::session_list(db_.raw(), stream_id); }));
}

}  // namespace models
}  // namespace database

namespace events {

std::int64_t EventStore::append(const std::string& aggregate_type, const std::string& aggregate_id,
                                std::int64_t expected_version, const nlohmann::json& events) {
    if (!events.is_array()) Error::raise(RSDB_ERR_JSON, "events must be a JSON array");
    return detail::call([&] {
        return ffi::events_append(db_.raw(), aggregate_type, aggregate_id, expected_version,
                                  detail::dump_json(events));
    });
}

nlohmann::json EventStore::load(const std::string& aggregate_type, const std::string& aggregate_id,
                                std::int64_t after_version) {
    return parse(detail::call([&] { return ffi::events_load(db_.raw(), aggregate_type, aggregate_id, after_version); }));
}

std::int64_t EventStore::version(const std::string& aggregate_type, const std::string& aggregate_id) {
    return detail::call([&] { return ffi::events_version(db_.raw(), aggregate_type, aggregate_id); });
}

nlohmann::json EventStore::by_user(std::int64_t user_id, std::int64_t limit) {
    return parse(detail::call([&] { return ffi::events_by_user(db_.raw(), user_id, limit); }));
}

void EventStore::save_snapshot(const std::string& aggregate_type, const std::string& aggregate_id,
                               std::int64_t version, const nlohmann::json& state) {
    detail::call([&] {
        ffi::events_save_snapshot(db_.raw(), aggregate_type, aggregate_id, version, detail::dump_json(state));
    });
}

nlohmann::json EventStore::load_from_snapshot(const std::string& aggregate_type, const std::string& aggregate_id) {
    return parse(detail::call([&] { return ffi::events_load_from_snapshot(db_.raw(), aggregate_type, aggregate_id); }));
}

}  // namespace events
}  // namespace rootstream
