#include "rootstream/database/models/stream_model.h"

#include "access.h"

#include "internal.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"

namespace rootstream {
namespace database {
namespace models {

nlohmann::json StreamModel::create(std::int64_t user_id, const std::string& name,
                                   const std::optional<std::string>& description) {
    return detail::parse_json(detail::call([&] {
        return ffi::stream_create(detail::Access::db(db_), detail::Access::redis(redis_), user_id, name, description.value_or(""),
                                  description.has_value());
    }));
}

nlohmann::json StreamModel::get(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::stream_get(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

nlohmann::json StreamModel::get_by_key(const std::string& stream_key) {
    return detail::parse_json(detail::call([&] { return ffi::stream_get_by_key(detail::Access::db(db_), detail::Access::redis(redis_), stream_key); }));
}

nlohmann::json StreamModel::regenerate_key(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::stream_regenerate_key(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

nlohmann::json StreamModel::start(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::stream_start(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

nlohmann::json StreamModel::stop(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::stream_stop(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

std::int64_t StreamModel::viewer_joined(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), stream_id, 1); });
}

std::int64_t StreamModel::viewer_left(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), stream_id, -1); });
}

std::int64_t StreamModel::viewer_count(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), stream_id, 0); });
}

nlohmann::json StreamModel::update_stats(std::int64_t stream_id, const StreamStats& stats) {
    nlohmann::json j = nlohmann::json::object();
    if (stats.bitrate_kbps) j["bitrate_kbps"] = *stats.bitrate_kbps;
    if (stats.fps) j["fps"] = *stats.fps;
    if (stats.resolution) j["resolution"] = *stats.resolution;
    if (stats.codec) j["codec"] = *stats.codec;
    return detail::parse_json(detail::call(
        [&] { return ffi::stream_update_stats(detail::Access::db(db_), detail::Access::redis(redis_), stream_id, detail::dump_json(j)); }));
}

nlohmann::json StreamModel::list_live() {
    return detail::parse_json(detail::call([&] { return ffi::stream_list_live(detail::Access::db(db_), detail::Access::redis(redis_)); }));
}

nlohmann::json StreamSessionModel::create(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::session_create(detail::Access::db(db_), stream_id); }));
}

nlohmann::json StreamSessionModel::get(std::int64_t session_id) {
    return detail::parse_json(detail::call([&] { return ffi::session_get(detail::Access::db(db_), session_id); }));
}

nlohmann::json StreamSessionModel::record_viewer(std::int64_t session_id, int current_viewers) {
    return detail::parse_json(detail::call([&] { return ffi::session_record_viewer(detail::Access::db(db_), session_id, current_viewers); }));
}

nlohmann::json StreamSessionModel::add_bytes(std::int64_t session_id, std::int64_t bytes) {
    return detail::parse_json(detail::call([&] { return ffi::session_add_bytes(detail::Access::db(db_), session_id, bytes); }));
}

nlohmann::json StreamSessionModel::end(std::int64_t session_id) {
    return detail::parse_json(detail::call([&] { return ffi::session_end(detail::Access::db(db_), session_id); }));
}

nlohmann::json StreamSessionModel::list(std::int64_t stream_id) {
    return detail::parse_json(detail::call([&] { return ffi::session_list(detail::Access::db(db_), stream_id); }));
}

}  // namespace models
}  // namespace database
}  // namespace rootstream
