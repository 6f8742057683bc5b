// rootstream::sync::StateSyncManager — events and entity state shared between RootStream
// instances over Redis (pub/sub plus a capped stream as the ordered log).
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail

namespace sync {

/// The event types RootStream's models publish.
namespace events {
inline constexpr const char* kStreamStarted = "stream.started";
inline constexpr const char* kStreamStopped = "stream.stopped";
inline constexpr const char* kViewerJoined = "viewer.joined";
inline constexpr const char* kViewerLeft = "viewer.left";
inline constexpr const char* kUserUpdated = "user.updated";
inline constexpr const char* kSessionCreated = "session.created";
inline constexpr const char* kSessionRevoked = "session.revoked";
}  // namespace events

/// How concurrent changes to an entity type are resolved (docs/state-sync.md).
enum class Strategy {
    /// Per-field last writer wins on hybrid logical clock timestamps.
    LastWriterWins,
    /// Version vectors; concurrent changes go to the type's merge function, or are recorded
    /// as conflicts.
    VersionVectors,
};

/// Thread-safe. Callbacks run on library threads, one at a time; after unsubscribe() or
/// close() returns they are not called again. Keeps no reference to its constructor's
/// arguments beyond what the core shares (the Redis client's connection).
class StateSyncManager {
public:
    /// Receives an envelope (type, entity, id, origin, seq, hlc, payload).
    using EventHandler = std::function<void(const nlohmann::json& envelope)>;
    /// Receives a conflict or a resynchronization report.
    using ReportHandler = std::function<void(const nlohmann::json& report)>;
    /// Merges two concurrent states (older first) into one; throwing means "cannot merge"
    /// (the pair is then recorded as a conflict). Must give the same result for the same
    /// arguments on every instance.
    using MergeFunction = std::function<nlohmann::json(const std::string& entity_type, const std::string& id,
                                                       const nlohmann::json& older, const nlohmann::json& newer)>;

    /// Starts a manager; options may hold `instance` (default: config's instance_id),
    /// `namespace` (default "rootstream"), `log_max_len`, `max_outbox`, `max_skew_ms`,
    /// `check_interval_ms`, `clock_offset_ms`.
    StateSyncManager(const Config& config, cache::RedisClient& redis, const nlohmann::json& options = nlohmann::json::object());
    /// Also stores conflicts in `sync_conflicts` and repairs a trimmed log from the latest
    /// snapshot in db (migrated).
    StateSyncManager(const Config& config, cache::RedisClient& redis, database::DatabaseManager& db,
                     const nlohmann::json& options = nlohmann::json::object());
    StateSyncManager(StateSyncManager&&) noexcept;
    StateSyncManager& operator=(StateSyncManager&&) noexcept;
    StateSyncManager(const StateSyncManager&) = delete;
    StateSyncManager& operator=(const StateSyncManager&) = delete;
    /// Closes the manager (see close()).
    ~StateSyncManager();

    /// The origin id this instance stamps on its messages.
    std::string origin() const;
    void register_entity_type(const std::string& entity_type, Strategy strategy);
    /// Sets the merge function of a version-vector type; an empty function removes it.
    void set_merge(const std::string& entity_type, MergeFunction merge);
    /// Publishes an event to every instance (this one included); returns its sequence number.
    std::uint64_t publish(const std::string& event_type, const nlohmann::json& payload);
    /// Applies a change (an object of changed fields; null deletes) here and sends it to the
    /// others; returns what it did here, e.g. {"outcome":"applied","fields":["title"]}.
    nlohmann::json apply_delta(const std::string& entity_type, const std::string& id, const nlohmann::json& delta);
    /// The entity's state here; nullopt when no change to it has been seen.
    std::optional<nlohmann::json> get_snapshot(const std::string& entity_type, const std::string& id) const;
    /// Waits until everything queued so far is in the log; throws Timeout after `timeout`.
    void flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
    /// Subscribes to events whose type matches a glob pattern ("stream.*", "*.delta").
    std::uint64_t subscribe(const std::string& pattern, EventHandler handler);
    void unsubscribe(std::uint64_t id);
    void on_conflict(ReportHandler handler);
    void on_resync(ReportHandler handler);
    /// Counters, positions, recent conflicts and resyncs.
    nlohmann::json status() const;
    /// Reads the log now instead of waiting for the background check.
    void catch_up();
    /// Ends every callback and background task; messages still queued are dropped (flush
    /// first to keep them). Calls after close() that send throw StateError.
    void close();

private:
    friend struct detail::Access;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sync
}  // namespace rootstream
