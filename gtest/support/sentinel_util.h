// Helpers for the Redis Sentinel suites: the stack's Sentinel variables (`stack.sh --sentinel`)
// and a configuration that goes through them.
#pragma once

#include "c_api_util.h"

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

namespace rsdb_test {
namespace capi {

struct SentinelClose {
    void operator()(rsdb_sentinel* s) const { rsdb_sentinel_close(s); }
};
using SentinelPtr = std::unique_ptr<rsdb_sentinel, SentinelClose>;

/// The Sentinel variables of a `--sentinel` stack.
struct SentinelEnv {
    std::string sentinels;
    std::string master_name;
    std::string sentinel_password;
    std::string master_password;
};

inline std::optional<SentinelEnv> sentinel_env() {
    auto get = [](const char* n) -> std::string {
        const char* v = std::getenv(n);
        return v != nullptr ? v : "";
    };
    SentinelEnv e{get("ROOTSTREAM_REDIS_SENTINELS"), get("ROOTSTREAM_REDIS_MASTER_NAME"),
                  get("ROOTSTREAM_REDIS_SENTINEL_PASSWORD"), get("ROOTSTREAM_REDIS_MASTER_PASSWORD")};
    if (e.sentinels.empty() || e.master_name.empty()) return std::nullopt;
    return e;
}

/// Sets the Sentinel keys of `cfg` from `e`; returns the first failing status.
inline int set_sentinel_config(rsdb_config* cfg, const SentinelEnv& e) {
    const std::pair<const char*, const std::string*> kv[] = {{"redis_sentinels", &e.sentinels},
                                                             {"redis_master_name", &e.master_name},
                                                             {"redis_sentinel_password", &e.sentinel_password},
                                                             {"redis_master_password", &e.master_password}};
    for (const auto& [k, v] : kv) {
        int rc = rsdb_config_set(cfg, k, v->c_str());
        if (rc != RSDB_OK) return rc;
    }
    return rsdb_config_set(cfg, "redis_timeout_ms", "1000");
}

}  // namespace capi
}  // namespace rsdb_test
