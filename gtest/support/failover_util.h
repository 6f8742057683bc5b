// Helpers for the FailoverManager C suites: the HA stack's variables and a configuration for it.
#pragma once

#include "c_api_util.h"

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

struct FailoverClose {
    void operator()(rsdb_failover* f) const { rsdb_failover_close(f); }
};
using FailoverPtr = std::unique_ptr<rsdb_failover, FailoverClose>;

struct HaEnv {
    std::string nodes;
    std::string data_dirs;
    std::string etcd;
    std::string url;
};

// The --pg-ha stack's variables, when the suite runs inside one.
inline std::optional<HaEnv> ha_env() {
    const char* nodes = std::getenv("ROOTSTREAM_HA_PG_NODES");
    const char* etcd = std::getenv("ROOTSTREAM_ETCD_ENDPOINTS");
    if (nodes == nullptr || etcd == nullptr || *nodes == '\0' || *etcd == '\0') return std::nullopt;
    const char* dirs = std::getenv("ROOTSTREAM_HA_PG_DATA");
    const char* url = std::getenv("ROOTSTREAM_HA_DATABASE_URL");
    return HaEnv{nodes, dirs != nullptr ? dirs : "", etcd, url != nullptr ? url : ""};
}

// A configuration naming two nodes and an etcd that do not exist: a manager opens (nothing is
// contacted until it runs) and every call fails fast with a connection error.
inline int set_unreachable_ha_config(rsdb_config* cfg) {
    const std::string a = std::to_string(rsdb_test::unused_tcp_port());
    const std::string b = std::to_string(rsdb_test::unused_tcp_port());
    const std::string e = std::to_string(rsdb_test::unused_tcp_port());
    int rc = rsdb_config_set(cfg, "ha_nodes",
                             ("p1=postgres://postgres@127.0.0.1:" + a + "/x,p2=postgres://postgres@127.0.0.1:" + b + "/x").c_str());
    if (rc != RSDB_OK) return rc;
    return rsdb_config_set(cfg, "etcd_endpoints", ("http://127.0.0.1:" + e).c_str());
}
