#include "rootstream/events/event_store.h"

#include "access.h"

#include "internal.h"
#include "rootstream-db/src/ffi/cxx/events.rs.h"

namespace rootstream {
namespace events {

std::int64_t EventStore::append(const std::string& aggregate_type, const std::string& aggregate_id,
                                std::int64_t expected_version, const nlohmann::json& events) {
    if (!events.is_array()) Error::raise(RSDB_ERR_JSON, "events must be a JSON array");
    return detail::call([&] {
        return ffi::events_append(detail::Access::db(db_), aggregate_type, aggregate_id, expected_version,
                                  detail::dump_json(events));
    });
}

nlohmann::json EventStore::load(const std::string& aggregate_type, const std::string& aggregate_id,
                                std::int64_t after_version) {
    return detail::parse_json(detail::call([&] { return ffi::events_load(detail::Access::db(db_), aggregate_type, aggregate_id, after_version); }));
}

std::int64_t EventStore::version(const std::string& aggregate_type, const std::string& aggregate_id) {
    return detail::call([&] { return ffi::events_version(detail::Access::db(db_), aggregate_type, aggregate_id); });
}

nlohmann::json EventStore::by_user(std::int64_t user_id, std::int64_t limit) {
    return detail::parse_json(detail::call([&] { return ffi::events_by_user(detail::Access::db(db_), user_id, limit); }));
}

void EventStore::save_snapshot(const std::string& aggregate_type, const std::string& aggregate_id,
                               std::int64_t version, const nlohmann::json& state) {
    detail::call([&] {
        ffi::events_save_snapshot(detail::Access::db(db_), aggregate_type, aggregate_id, version, detail::dump_json(state));
    });
}

nlohmann::json EventStore::load_from_snapshot(const std::string& aggregate_type, const std::string& aggregate_id) {
    return detail::parse_json(detail::call([&] { return ffi::events_load_from_snapshot(detail::Access::db(db_), aggregate_type, aggregate_id); }));
}

}  // namespace events
}  // namespace rootstream
