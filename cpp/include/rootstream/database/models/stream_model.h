// rootstream::database::models::StreamModel and StreamSessionModel.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace rootstream {
namespace database {
namespace models {

/// Encoder statistics; unset values are left as they are.
struct StreamStats {
    std::optional<int> bitrate_kbps;
    std::optional<int> fps;
    std::optional<std::string> resolution;
    std::optional<std::string> codec;
};

/// Streams: creation with a 256-bit stream key, start/stop (row, session, event log, Redis live
/// cache, pub/sub event), viewer counts in Redis. Records are JSON objects. Keeps references to
/// db and redis, which must outlive it.
class StreamModel {
public:
    StreamModel(DatabaseManager& db, cache::RedisClient& redis) : db_(db), redis_(redis) {}

    nlohmann::json create(std::int64_t user_id, const std::string& name,
                          const std::optional<std::string>& description = std::nullopt);
    nlohmann::json get(std::int64_t stream_id);
    nlohmann::json get_by_key(const std::string& stream_key);
    nlohmann::json regenerate_key(std::int64_t stream_id);
    /// Goes live; returns the new session. Throws RSDB_ERR_STATE when already live.
    nlohmann::json start(std::int64_t stream_id);
    /// Goes offline; returns the ended session with duration and viewer statistics.
    nlohmann::json stop(std::int64_t stream_id);
    /// A viewer joined / left; return the current count.
    std::int64_t viewer_joined(std::int64_t stream_id);
    std::int64_t viewer_left(std::int64_t stream_id);
    std::int64_t viewer_count(std::int64_t stream_id);
    nlohmann::json update_stats(std::int64_t stream_id, const StreamStats& stats);
    nlohmann::json list_live();

private:
    DatabaseManager& db_;
    cache::RedisClient& redis_;
};

/// Stream sessions: viewer statistics, bytes transferred, end with computed duration.
class StreamSessionModel {
public:
    explicit StreamSessionModel(DatabaseManager& db) : db_(db) {}

    nlohmann::json create(std::int64_t stream_id);
    nlohmann::json get(std::int64_t session_id);
    /// Counts one viewer joining while current_viewers are watching.
    nlohmann::json record_viewer(std::int64_t session_id, int current_viewers);
    nlohmann::json add_bytes(std::int64_t session_id, std::int64_t bytes);
    /// Ends the session; throws RSDB_ERR_STATE when already ended.
    nlohmann::json end(std::int64_t session_id);
    nlohmann::json list(std::int64_t stream_id);

private:
    DatabaseManager& db_;
};

}  // namespace models
}  // namespace database
}  // namespace rootstream
