// rootstream::events::EventStore — append-only events per aggregate with optimistic concurrency.
#pragma once

#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace rootstream {
namespace events {

/// Keeps a reference to db, which must outlive it.
class EventStore {
public:
    explicit EventStore(database::DatabaseManager& db) : db_(db) {}

    /// Appends events ([{"event_type":..,"payload":{..},"metadata":{..},"user_id":..}]) to an
    /// aggregate that must be at expected_version (0 for a new one); returns the new version.
    /// Throws Error with RSDB_ERR_CONFLICT — having written nothing — when another writer won.
    std::int64_t append(const std::string& aggregate_type, const std::string& aggregate_id,
                        std::int64_t expected_version, const nlohmann::json& events);
    /// Events after after_version, in version order.
    nlohmann::json load(const std::string& aggregate_type, const std::string& aggregate_id,
                        std::int64_t after_version = 0);
    std::int64_t version(const std::string& aggregate_type, const std::string& aggregate_id);
    /// A user's events, newest first.
    nlohmann::json by_user(std::int64_t user_id, std::int64_t limit = 100);
    void save_snapshot(const std::string& aggregate_type, const std::string& aggregate_id, std::int64_t version,
                       const nlohmann::json& state);
    /// {"snapshot": {...} or null, "events": [...]}: the latest snapshot and the events after it.
    nlohmann::json load_from_snapshot(const std::string& aggregate_type, const std::string& aggregate_id);

private:
    database::DatabaseManager& db_;
};

}  // namespace events
}  // namespace rootstream
