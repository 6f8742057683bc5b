// Handles and helpers for the state sync suites (C API).
#pragma once

#include "c_api_util.h"

#include <cctype>
#include <string>

namespace rsdb_test {
namespace capi {

struct SyncClose {
    void operator()(rsdb_sync* s) const { rsdb_sync_close(s); }
};
struct SnapshotsFree {
    void operator()(rsdb_snapshots* s) const { rsdb_snapshots_free(s); }
};
using SyncPtr = std::unique_ptr<rsdb_sync, SyncClose>;
using SnapshotsPtr = std::unique_ptr<rsdb_snapshots, SnapshotsFree>;

/// A sync namespace made of `prefix` (letters, digits and `_` only, as namespaces allow).
inline std::string sync_namespace(const std::string& prefix) {
    std::string ns = "gt_";
    for (char c : prefix) ns += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
    return ns;
}

/// The JSON options of a test manager: its namespace and a short log check interval.
inline std::string sync_options(const std::string& ns, const std::string& instance) {
    return json{{"namespace", ns}, {"instance", instance}, {"check_interval_ms", 50}}.dump();
}

}  // namespace capi
}  // namespace rsdb_test
