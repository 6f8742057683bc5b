// rootstream::cache::RedisClient — strings with TTL, hashes, lists, pub/sub, MULTI/EXEC.
#pragma once

#include "rootstream/config.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail

namespace cache {

/// Counters of a client's pub/sub side.
struct PubSubStats {
    /// True while the subscriber connection is up.
    bool connected = false;
    /// How often the subscriber connection was re-established; messages published while it
    /// was down were not delivered.
    std::uint64_t reconnects = 0;
    /// Messages received since the client was created.
    std::uint64_t received = 0;
    /// Registered subscriptions.
    std::size_t subscriptions = 0;
    /// {"connected":..,"reconnects":..,"received":..,"subscriptions":..}
    nlohmann::json to_json() const;
};

/// A Redis client over one multiplexed connection that reconnects by itself. Thread-safe.
class RedisClient {
public:
    /// Receives (channel, payload). Runs on the library's pub/sub thread, one call at a time.
    using MessageHandler = std::function<void(const std::string& channel, const std::string& payload)>;

    /// Connects to config's redis_url and checks that the server answers.
    explicit RedisClient(const Config& config);
    RedisClient(RedisClient&&) noexcept;
    RedisClient& operator=(RedisClient&&) noexcept;
    ~RedisClient();

    /// Round trip of a PING.
    std::chrono::microseconds ping();

    /// SET; a ttl greater than zero makes the key expire.
    void set(const std::string& key, const std::string& value,
             std::chrono::milliseconds ttl = std::chrono::milliseconds(0));
    /// GET; nullopt when the key does not exist.
    std::optional<std::string> get(const std::string& key);
    /// DEL; true when the key existed.
    bool del(const std::string& key);
    /// EXISTS.
    bool exists(const std::string& key);
    /// PEXPIRE; true when the key exists.
    bool expire(const std::string& key, std::chrono::milliseconds ttl);
    /// PTTL in milliseconds: -1 without expiry, -2 for a missing key.
    std::int64_t ttl_ms(const std::string& key);
    /// INCRBY; returns the new value.
    std::int64_t incr(const std::string& key, std::int64_t by = 1);

    /// HSET of one field; true when the field is new.
    bool hset(const std::string& key, const std::string& field, const std::string& value);
    /// HGET; nullopt when missing.
    std::optional<std::string> hget(const std::string& key, const std::string& field);
    /// HGETALL.
    std::map<std::string, std::string> hgetall(const std::string& key);
    /// HDEL; true when the field existed.
    bool hdel(const std::string& key, const std::string& field);

    /// LPUSH / RPUSH; return the new length.
    std::int64_t lpush(const std::string& key, const std::string& value);
    std::int64_t rpush(const std::string& key, const std::string& value);
    /// LPOP / RPOP; nullopt for an empty list.
    std::optional<std::string> lpop(const std::string& key);
    std::optional<std::string> rpop(const std::string& key);
    /// LRANGE with inclusive indices (negative counts from the end).
    std::vector<std::string> lrange(const std::string& key, std::int64_t start, std::int64_t stop);

    /// PUBLISH; returns how many subscribers received it.
    std::int64_t publish(const std::string& channel, const std::string& message);
    /// Subscribes handler to channels matching a glob pattern ("stream.*"); returns an id.
    /// The subscription is confirmed when this returns and is renewed after reconnects.
    std::uint64_t subscribe(const std::string& pattern, MessageHandler handler);
    /// Ends a subscription; the handler is not running when this returns (unless called
    /// from inside it).
    void unsubscribe(std::uint64_t id);

    /// MULTI/EXEC of commands given as arrays of arguments; returns each reply.
    nlohmann::json exec_atomic(const nlohmann::json& commands);
    /// One arbitrary command given as an array of arguments; returns its reply.
    nlohmann::json command(const nlohmann::json& args);
    /// Counters of the pub/sub side.
    PubSubStats pubsub_stats() const;

private:
    friend struct detail::Access;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cache
}  // namespace rootstream
