#include "rootstream/database/models/stream_model.h"

#include "access.h"

#include "internal.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"

namespace rootstream {
namespace database {
namespace models {

namespace {

std::optional<std::string> text(const rust::String& t, bool present) {
    return present ? std::optional<std::string>(std::string(t)) : std::nullopt;
}

std::optional<std::string> moment(const rust::String& t) { return text(t, !t.empty()); }

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json();
}

Stream to_stream(const ffi::StreamRecord& r) {
    const auto& st = r.stats;
    return Stream{r.id,
                  r.user_id,
                  std::string(r.name),
                  text(r.description, r.has_description),
                  std::string(r.stream_key),
                  r.is_live,
                  r.viewer_count,
                  st.has_bitrate_kbps ? std::optional<int>(st.bitrate_kbps) : std::nullopt,
                  st.has_fps ? std::optional<int>(st.fps) : std::nullopt,
                  text(st.resolution, st.has_resolution),
                  text(st.codec, st.has_codec),
                  moment(r.started_at),
                  moment(r.ended_at),
                  std::string(r.created_at),
                  std::string(r.updated_at)};
}

StreamSession to_session(const ffi::StreamSessionRecord& r) {
    return StreamSession{r.id,
                         r.stream_id,
                         std::string(r.started_at),
                         moment(r.ended_at),
                         r.has_duration_seconds ? std::optional<std::int64_t>(r.duration_seconds) : std::nullopt,
                         r.total_viewers,
                         r.peak_viewers,
                         r.bytes_transferred};
}

ffi::StreamStats to_ffi(const StreamStats& s) {
    return ffi::StreamStats{s.bitrate_kbps.value_or(0), s.bitrate_kbps.has_value(), s.fps.value_or(0), s.fps.has_value(),
                            s.resolution.value_or(""),  s.resolution.has_value(),   s.codec.value_or(""), s.codec.has_value()};
}

template <class T, class R, class F>
std::vector<T> all(const rust::Vec<R>& records, F convert) {
    std::vector<T> out;
    out.reserve(records.size());
    for (const auto& r : records) out.push_back(convert(r));
    return out;
}

}  // namespace

nlohmann::json Stream::to_json() const {
    return {{"id", id},
            {"user_id", user_id},
            {"name", name},
            {"description", or_null(description)},
            {"stream_key", stream_key},
            {"is_live", is_live},
            {"viewer_count", viewer_count},
            {"bitrate_kbps", or_null(bitrate_kbps)},
            {"fps", or_null(fps)},
            {"resolution", or_null(resolution)},
            {"codec", or_null(codec)},
            {"started_at", or_null(started_at)},
            {"ended_at", or_null(ended_at)},
            {"created_at", created_at},
            {"updated_at", updated_at}};
}

nlohmann::json StreamSession::to_json() const {
    return {{"id", id},
            {"stream_id", stream_id},
            {"started_at", started_at},
            {"ended_at", or_null(ended_at)},
            {"duration_seconds", or_null(duration_seconds)},
            {"total_viewers", total_viewers},
            {"peak_viewers", peak_viewers},
            {"bytes_transferred", bytes_transferred}};
}

Stream StreamModel::create(std::int64_t user_id, const std::string& name, const std::optional<std::string>& description) {
    return to_stream(detail::call([&] {
        return ffi::stream_create(detail::Access::db(db_), detail::Access::redis(redis_), user_id, name, description.value_or(""),
                                  description.has_value());
    }));
}

Stream StreamModel::get(std::int64_t stream_id) {
    return to_stream(detail::call([&] { return ffi::stream_get(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

Stream StreamModel::get_by_key(const std::string& stream_key) {
    return to_stream(
        detail::call([&] { return ffi::stream_get_by_key(detail::Access::db(db_), detail::Access::redis(redis_), stream_key); }));
}

Stream StreamModel::regenerate_key(std::int64_t stream_id) {
    return to_stream(
        detail::call([&] { return ffi::stream_regenerate_key(detail::Access::db(db_), detail::Access::redis(redis_), stream_id); }));
}

StreamSession StreamModel::start(std::int64_t stream_id) {
    return to_session(detail::call([&] { return ffi::stream_start(detail::Access::db(db_), detail::Access::redis(redis_), *detail::link_of(sync_), stream_id); }));
}

StreamSession StreamModel::stop(std::int64_t stream_id) {
    return to_session(detail::call([&] { return ffi::stream_stop(detail::Access::db(db_), detail::Access::redis(redis_), *detail::link_of(sync_), stream_id); }));
}

std::int64_t StreamModel::viewer_joined(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), *detail::link_of(sync_), stream_id, 1); });
}

std::int64_t StreamModel::viewer_left(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), *detail::link_of(sync_), stream_id, -1); });
}

std::int64_t StreamModel::viewer_count(std::int64_t stream_id) {
    return detail::call([&] { return ffi::stream_viewer(detail::Access::db(db_), detail::Access::redis(redis_), *detail::link_of(sync_), stream_id, 0); });
}

Stream StreamModel::update_stats(std::int64_t stream_id, const StreamStats& stats) {
    // Built inside call(): text that is not UTF-8 fails while becoming a rust::String.
    return to_stream(detail::call([&] {
        return ffi::stream_update_stats(detail::Access::db(db_), detail::Access::redis(redis_), stream_id, to_ffi(stats));
    }));
}

void StreamModel::set_sync(sync::StateSyncManager* sync) { sync_ = sync; }

std::vector<Stream> StreamModel::list_live() {
    return all<Stream>(detail::call([&] { return ffi::stream_list_live(detail::Access::db(db_), detail::Access::redis(redis_)); }),
                       to_stream);
}

StreamSession StreamSessionModel::create(std::int64_t stream_id) {
    return to_session(detail::call([&] { return ffi::session_create(detail::Access::db(db_), stream_id); }));
}

StreamSession StreamSessionModel::get(std::int64_t session_id) {
    return to_session(detail::call([&] { return ffi::session_get(detail::Access::db(db_), session_id); }));
}

StreamSession StreamSessionModel::record_viewer(std::int64_t session_id, int current_viewers) {
    return to_session(detail::call([&] { return ffi::session_record_viewer(detail::Access::db(db_), session_id, current_viewers); }));
}

StreamSession StreamSessionModel::add_bytes(std::int64_t session_id, std::int64_t bytes) {
    return to_session(detail::call([&] { return ffi::session_add_bytes(detail::Access::db(db_), session_id, bytes); }));
}

StreamSession StreamSessionModel::end(std::int64_t session_id) {
    return to_session(detail::call([&] { return ffi::session_end(detail::Access::db(db_), session_id); }));
}

std::vector<StreamSession> StreamSessionModel::list(std::int64_t stream_id) {
    return all<StreamSession>(detail::call([&] { return ffi::session_list(detail::Access::db(db_), stream_id); }), to_session);
}

}  // namespace models
}  // namespace database
}  // namespace rootstream
