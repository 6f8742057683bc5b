#include "rootstream/sync/snapshot_manager.h"

#include "access.h"
#include "internal.h"

namespace rootstream {
namespace sync {

struct SnapshotManager::Impl {
    rust::Box<ffi::SnapshotsBox> box;
};

namespace {

SnapshotInfo from_bridge(const ffi::SyncSnapshotInfo& i) {
    return SnapshotInfo{i.version,     std::string(i.log_id),   i.entity_count,          i.raw_bytes,
                        i.stored_bytes, std::string(i.taken_by), std::string(i.created_at)};
}

}  // namespace

nlohmann::json SnapshotInfo::to_json() const {
    return {{"version", version},         {"log_id", log_id},     {"entity_count", entity_count},
            {"raw_bytes", raw_bytes},     {"stored_bytes", stored_bytes}, {"taken_by", taken_by},
            {"created_at", created_at}};
}

SnapshotManager::SnapshotManager(database::DatabaseManager& db, StateSyncManager& sync)
    : impl_(std::make_unique<Impl>(Impl{ffi::snapshots_new(detail::Access::db(db), detail::Access::sync(sync))})) {}

SnapshotManager::SnapshotManager(SnapshotManager&&) noexcept = default;
SnapshotManager& SnapshotManager::operator=(SnapshotManager&&) noexcept = default;
SnapshotManager::~SnapshotManager() = default;

SnapshotInfo SnapshotManager::take() {
    return from_bridge(detail::call([&] { return impl_->box->take(); }));
}

std::vector<SnapshotInfo> SnapshotManager::list() {
    auto all = detail::call([&] { return impl_->box->list(); });
    std::vector<SnapshotInfo> out;
    out.reserve(all.size());
    for (const auto& i : all) out.push_back(from_bridge(i));
    return out;
}

std::uint64_t SnapshotManager::cleanup(unsigned keep) {
    return detail::call([&] { return impl_->box->cleanup(keep); });
}

nlohmann::json SnapshotManager::reconstruct() {
    return detail::parse_json(detail::call([&] { return impl_->box->reconstruct_json(); }));
}

void SnapshotManager::start_periodic(std::chrono::milliseconds interval, unsigned keep) {
    detail::call([&] { impl_->box->start_periodic(static_cast<std::uint64_t>(interval.count()), keep); });
}

void SnapshotManager::stop_periodic() { impl_->box->stop_periodic(); }

}  // namespace sync
}  // namespace rootstream
