// rootstream::database::models::StreamModel and StreamSessionModel.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rootstream {
namespace sync {
class StateSyncManager;
}  // namespace sync

namespace database {
namespace models {

/// Encoder statistics; unset values are left as they are.
struct StreamStats {
    std::optional<int> bitrate_kbps;
    std::optional<int> fps;
    std::optional<std::string> resolution;
    std::optional<std::string> codec;
};

/// A stream as stored. Timestamps are RFC 3339 UTC; unset values are nullopt.
struct Stream {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    std::string name;
    std::optional<std::string> description;
    /// The credential a broadcaster's encoder sends; show it to its owner only.
    std::string stream_key;
    bool is_live = false;
    int viewer_count = 0;
    std::optional<int> bitrate_kbps;
    std::optional<int> fps;
    std::optional<std::string> resolution;
    std::optional<std::string> codec;
    std::optional<std::string> started_at;
    std::optional<std::string> ended_at;
    std::string created_at;
    std::string updated_at;
    /// The same keys as the C API's stream record; unset values are null.
    nlohmann::json to_json() const;
};

/// One broadcast of a stream. duration_seconds is set once the session ended.
struct StreamSession {
    std::int64_t id = 0;
    std::int64_t stream_id = 0;
    std::string started_at;
    std::optional<std::string> ended_at;
    std::optional<std::int64_t> duration_seconds;
    /// Viewers who joined, counted once per join.
    int total_viewers = 0;
    /// The most viewers at the same time.
    int peak_viewers = 0;
    std::int64_t bytes_transferred = 0;
    /// The same keys as the C API's stream session record; unset values are null.
    nlohmann::json to_json() const;
};

/// Streams: creation with a 256-bit stream key, start/stop (row, session, event log, Redis live
/// cache, pub/sub event), viewer counts in Redis. Keeps references to
/// db and redis, which must outlive it.
class StreamModel {
public:
    StreamModel(DatabaseManager& db, cache::RedisClient& redis) : db_(db), redis_(redis) {}

    Stream create(std::int64_t user_id, const std::string& name,
                  const std::optional<std::string>& description = std::nullopt);
    Stream get(std::int64_t stream_id);
    Stream get_by_key(const std::string& stream_key);
    Stream regenerate_key(std::int64_t stream_id);
    /// Goes live; returns the new session. Throws RSDB_ERR_STATE when already live.
    StreamSession start(std::int64_t stream_id);
    /// Goes offline; returns the ended session with duration and viewer statistics.
    StreamSession stop(std::int64_t stream_id);
    /// A viewer joined / left; return the current count.
    std::int64_t viewer_joined(std::int64_t stream_id);
    std::int64_t viewer_left(std::int64_t stream_id);
    std::int64_t viewer_count(std::int64_t stream_id);
    Stream update_stats(std::int64_t stream_id, const StreamStats& stats);
    std::vector<Stream> list_live();
    /// From now on start, stop and viewer changes are also announced through `sync` (events
    /// stream.started, stream.stopped, viewer.joined, viewer.left and the shared "stream"
    /// entity); nullptr stops it. `sync` must outlive this model or be detached first.
    void set_sync(sync::StateSyncManager* sync);

private:
    DatabaseManager& db_;
    cache::RedisClient& redis_;
    sync::StateSyncManager* sync_ = nullptr;
};

/// Stream sessions: viewer statistics, bytes transferred, end with computed duration.
class StreamSessionModel {
public:
    explicit StreamSessionModel(DatabaseManager& db) : db_(db) {}

    StreamSession create(std::int64_t stream_id);
    StreamSession get(std::int64_t session_id);
    /// Counts one viewer joining while current_viewers are watching.
    StreamSession record_viewer(std::int64_t session_id, int current_viewers);
    StreamSession add_bytes(std::int64_t session_id, std::int64_t bytes);
    /// Ends the session; throws RSDB_ERR_STATE when already ended.
    StreamSession end(std::int64_t session_id);
    std::vector<StreamSession> list(std::int64_t stream_id);

private:
    DatabaseManager& db_;
};

}  // namespace models
}  // namespace database
}  // namespace rootstream
