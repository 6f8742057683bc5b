// rootstream::cache::RedisSentinelManager — finds the Redis master through Sentinel and reports
// failovers. A RedisClient built from a Config with redis_sentinels and redis_master_name follows
// the master by itself; this class is for looking at the setup and being told of failovers.
#pragma once

#include "rootstream/config.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rootstream {
namespace cache {

/// One failover, as announced by Sentinel's +switch-master.
struct FailoverInfo {
    std::string master_name;
    std::string old_host;
    int old_port = 0;
    std::string new_host;
    int new_port = 0;
    /// From the first +sdown of the old master seen to +switch-master (0 when none was seen).
    std::uint64_t took_ms = 0;
    /// The sentinel whose announcement was delivered.
    std::string sentinel;
};

/// Thread-safe. Closing (or destroying) it ends its subscriptions and callbacks.
class RedisSentinelManager {
public:
    /// Runs on the library thread `rsdb-sentinel`, once per failover, one call at a time.
    /// Exceptions it throws are swallowed.
    using FailoverHandler = std::function<void(const FailoverInfo&)>;

    /// Opens a manager from config's redis_sentinels, redis_master_name,
    /// redis_sentinel_password, redis_master_password and redis_timeout_ms, resolving the
    /// master once: ConnectionError when no sentinel answers (bounded by about redis_timeout_ms
    /// per sentinel), NotFound for an unknown master name, AuthError for a wrong password.
    explicit RedisSentinelManager(const Config& config);
    RedisSentinelManager(RedisSentinelManager&&) noexcept;
    RedisSentinelManager& operator=(RedisSentinelManager&&) noexcept;
    RedisSentinelManager(const RedisSentinelManager&) = delete;
    RedisSentinelManager& operator=(const RedisSentinelManager&) = delete;
    ~RedisSentinelManager();

    /// Asks the sentinels now; "host:port" of the master (confirmed with ROLE).
    std::string master_address();
    /// The master's replicas: [{"host","port","flags","link_status"}].
    nlohmann::json replicas();
    /// Every configured sentinel: [{"address","answers","master","subscribed","error"}].
    nlohmann::json sentinels();
    /// Calls `handler` after every failover until close().
    void on_failover(FailoverHandler handler);
    /// Ends the subscriptions; no handler runs after this returns (unless called from one).
    void close();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cache
}  // namespace rootstream
