// Helpers for the replication suites: the variables of a `stack.sh --pg-ha` stack.
#pragma once

#include "rootstream_db.h"

#include <cstdlib>
#include <memory>
#include <string>

namespace rsdb_test {

struct ReplicationClose {
    void operator()(rsdb_replication* r) const { rsdb_replication_close(r); }
};
using ReplicationPtr = std::unique_ptr<rsdb_replication, ReplicationClose>;

inline std::string env_or_empty(const char* n) {
    const char* v = std::getenv(n);
    return v != nullptr ? v : "";
}

/// True inside a `--pg-ha` stack (ROOTSTREAM_HA_PG_NODES set).
inline bool have_pg_ha() { return !env_or_empty("ROOTSTREAM_HA_PG_NODES").empty(); }

}  // namespace rsdb_test
