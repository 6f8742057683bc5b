#include "rootstream/database/backup_manager.h"

#include "access.h"
#include "internal.h"

#include "message_observer.h"

namespace rootstream {
namespace database {

using detail::Access;

struct BackupManager::Impl {
    rust::Box<ffi::BackupBox> box;
};

struct BackupScheduler::Impl {
    rust::Box<ffi::ScheduleBox> box;
};

struct WalGapWatch::Impl {
    rust::Box<ffi::GapWatchBox> box;
};

struct RecoveryManager::Impl {
    rust::Box<ffi::RecoveryBox> box;
};

namespace {

std::string text(const rust::String& s) { return std::string(s); }

std::vector<std::string> texts(const rust::Vec<rust::String>& v) { return {v.begin(), v.end()}; }

template <class T>
std::optional<T> optional(bool present, T value) {
    return present ? std::optional<T>(std::move(value)) : std::nullopt;
}

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::map<std::string, std::int64_t> table_rows(const rust::Vec<ffi::TableRows>& v) {
    std::map<std::string, std::int64_t> out;
    for (const auto& t : v) out.emplace(text(t.table), t.rows);
    return out;
}

BackupManifest from_bridge(const ffi::Manifest& m) {
    BackupManifest out;
    out.format = m.format;
    out.backup_id = text(m.backup_id);
    out.backup_type = text(m.backup_type);
    out.method = text(m.method);
    out.database = text(m.database);
    out.server_version = text(m.server_version);
    out.started_at = text(m.started_at);
    out.finished_at = text(m.finished_at);
    out.compression = text(m.compression);
    out.encryption = text(m.encryption);
    out.key_id = text(m.key_id);
    out.wrapped_key = text(m.wrapped_key);
    for (const auto& f : m.files) {
        out.files.push_back(BackupFile{text(f.name), f.chunks, f.plain_bytes, f.stored_bytes, text(f.sha256)});
    }
    out.row_counts = table_rows(m.row_counts);
    if (m.has_physical) {
        const auto& p = m.physical;
        out.physical = PhysicalRange{optional(p.has_parent_backup_id, text(p.parent_backup_id)),
                                     text(p.base_backup_id),
                                     p.timeline,
                                     text(p.start_lsn),
                                     text(p.stop_lsn),
                                     text(p.start_wal),
                                     text(p.stop_wal),
                                     p.wal_segment_size,
                                     text(p.system_identifier),
                                     texts(p.wal_segments)};
    }
    return out;
}

std::vector<BackupManifest> from_bridge(const rust::Vec<ffi::Manifest>& v) {
    std::vector<BackupManifest> out;
    for (const auto& m : v) out.push_back(from_bridge(m));
    return out;
}

BackupInfo from_bridge(const ffi::BackupInfo& b) {
    return BackupInfo{text(b.backup_id),
                      text(b.backup_type),
                      optional(b.has_method, text(b.method)),
                      optional(b.has_kind, text(b.kind)),
                      text(b.status),
                      text(b.path),
                      optional(b.has_database, text(b.database)),
                      optional(b.has_size_bytes, b.size_bytes),
                      optional(b.has_compressed_size_bytes, b.compressed_size_bytes),
                      text(b.started_at),
                      optional(!b.finished_at.empty(), text(b.finished_at)),
                      optional(b.has_error_message, text(b.error_message))};
}

ClusterReport from_bridge(const ffi::ClusterReport& r) {
    ClusterReport out{text(r.backup_id), texts(r.chain), text(r.data_dir), r.port, text(r.target),
                      texts(r.recovery_log), {}, r.running, r.seconds, std::nullopt};
    for (const auto& d : r.databases) out.databases.emplace(text(d.database), table_rows(d.tables));
    if (r.delta) {
        out.delta = ClusterReport::Delta{r.delta_files_unchanged, r.delta_files_changed, r.delta_files_created,
                                         r.delta_paths_removed,   r.delta_bytes_written, r.delta_bytes_compared};
    }
    return out;
}

ffi::ClusterRestoreOptions to_bridge(const ClusterRestoreOptions& o) {
    ffi::ClusterRestoreOptions out;
    out.data_dir = o.data_dir;
    out.has_backup_id = o.backup_id.has_value();
    out.backup_id = o.backup_id.value_or("");
    out.port = o.port;
    out.has_target_time = o.target_time.has_value();
    out.target_time = o.target_time.value_or("");
    out.latest = o.latest;
    out.keep_running = o.keep_running;
    out.delta = o.delta;
    out.has_timeout_s = o.timeout_s.has_value();
    out.timeout_s = o.timeout_s.value_or(0);
    return out;
}

}  // namespace

nlohmann::json BackupFile::to_json() const {
    return {{"name", name}, {"chunks", chunks}, {"plain_bytes", plain_bytes}, {"stored_bytes", stored_bytes},
            {"sha256", sha256}};
}

nlohmann::json PhysicalRange::to_json() const {
    return {{"parent_backup_id", or_null(parent_backup_id)},
            {"base_backup_id", base_backup_id},
            {"timeline", timeline},
            {"start_lsn", start_lsn},
            {"stop_lsn", stop_lsn},
            {"start_wal", start_wal},
            {"stop_wal", stop_wal},
            {"wal_segment_size", wal_segment_size},
            {"system_identifier", system_identifier},
            {"wal_segments", wal_segments}};
}

nlohmann::json BackupManifest::to_json() const {
    nlohmann::json j = {{"format", format},
                        {"backup_id", backup_id},
                        {"backup_type", backup_type},
                        {"method", method},
                        {"database", database},
                        {"server_version", server_version},
                        {"started_at", started_at},
                        {"finished_at", finished_at},
                        {"compression", compression},
                        {"encryption", encryption},
                        {"key_id", key_id},
                        {"wrapped_key", wrapped_key},
                        {"files", nlohmann::json::array()},
                        {"row_counts", row_counts}};
    for (const auto& f : files) j["files"].push_back(f.to_json());
    if (physical) j["physical"] = physical->to_json();
    return j;
}

nlohmann::json BackupInfo::to_json() const {
    return {{"backup_id", backup_id},
            {"backup_type", backup_type},
            {"method", or_null(method)},
            {"kind", or_null(kind)},
            {"status", status},
            {"path", path},
            {"database", or_null(database)},
            {"size_bytes", or_null(size_bytes)},
            {"compressed_size_bytes", or_null(compressed_size_bytes)},
            {"started_at", started_at},
            {"finished_at", or_null(finished_at)},
            {"error_message", or_null(error_message)}};
}

nlohmann::json CleanupReport::to_json() const {
    return {{"deleted", deleted}, {"kept", kept}, {"wal_deleted", wal_deleted}, {"bytes_freed", bytes_freed}};
}

nlohmann::json RestoreReport::to_json() const {
    return {{"backup_id", backup_id}, {"target", target}, {"tables_checked", tables_checked},
            {"rows_restored", rows_restored}};
}

nlohmann::json ClusterReport::to_json() const {
    nlohmann::json d = nullptr;
    if (delta) {
        d = {{"files_unchanged", delta->files_unchanged}, {"files_changed", delta->files_changed},
             {"files_created", delta->files_created},     {"paths_removed", delta->paths_removed},
             {"bytes_written", delta->bytes_written},     {"bytes_compared", delta->bytes_compared}};
    }
    return {{"backup_id", backup_id}, {"chain", chain},     {"data_dir", data_dir}, {"port", port},
            {"target", target},       {"recovery_log", recovery_log}, {"databases", databases},
            {"running", running},     {"seconds", seconds}, {"delta", d}};
}

nlohmann::json TestRestoreReport::to_json() const {
    return {{"backup_id", backup_id}, {"kind", kind}, {"tables_checked", tables_checked}, {"rows", rows},
            {"seconds", seconds}};
}

BackupManager::BackupManager(const Config& config, DatabaseManager& db)
    : impl_(std::make_unique<Impl>(
          Impl{detail::call([&] { return ffi::backup_new(Access::config(config), Access::db(db)); })})) {}
BackupManager::BackupManager(BackupManager&&) noexcept = default;
BackupManager& BackupManager::operator=(BackupManager&&) noexcept = default;
BackupManager::~BackupManager() = default;

BackupManifest BackupManager::create_full() {
    return from_bridge(detail::call([&] { return impl_->box->create_full(); }));
}

BackupManifest BackupManager::create(const std::string& kind) {
    return from_bridge(detail::call([&] { return impl_->box->create(kind); }));
}

void BackupManager::init_repository() {
    detail::call([&] { impl_->box->init_repository(); });
}

std::uint64_t BackupManager::delete_backup(const std::string& backup_id) {
    return detail::call([&] { return impl_->box->delete_backup(backup_id); });
}

namespace {
std::unique_ptr<ffi::MessageObserver> progress_observer(ProgressHandler handler) {
    if (!handler) return nullptr;
    return std::make_unique<ffi::MessageObserver>(
        [h = std::move(handler)](const std::string&, const std::string& payload) {
            h(nlohmann::json::parse(payload));
        });
}
}  // namespace

void BackupManager::set_progress(ProgressHandler handler) {
    detail::call([&] { impl_->box->set_progress(progress_observer(std::move(handler))); });
}

BackupManifest BackupManager::verify(const std::string& backup_id) {
    return from_bridge(detail::call([&] { return impl_->box->verify(backup_id); }));
}

std::vector<BackupInfo> BackupManager::list() {
    std::vector<BackupInfo> out;
    for (const auto& b : detail::call([&] { return impl_->box->list(); })) out.push_back(from_bridge(b));
    return out;
}

CleanupReport BackupManager::cleanup(std::uint32_t full_days, std::uint32_t incremental_days,
                                     std::uint32_t differential_days, std::uint32_t keep_last) {
    const auto r = detail::call(
        [&] { return impl_->box->cleanup(full_days, incremental_days, differential_days, keep_last); });
    return CleanupReport{texts(r.deleted), r.kept, r.wal_deleted, r.bytes_freed};
}

BackupScheduler::BackupScheduler(BackupManager& backups, const std::string& cron, Handler handler)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          return Access::backups(backups).schedule(cron, std::move(observer));
      })})) {}

BackupScheduler::BackupScheduler(BackupManager& backups, const std::string& cron, const std::string& kind,
                                 Handler handler)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          return Access::backups(backups).schedule_kind(cron, kind, std::move(observer));
      })})) {}
BackupScheduler::BackupScheduler(BackupScheduler&&) noexcept = default;

nlohmann::json BackupManager::wal_gaps() {
    return nlohmann::json::parse(text(detail::call([&] { return impl_->box->wal_gaps_json(); })));
}

WalGapWatch::WalGapWatch(BackupManager& backups, std::chrono::milliseconds interval, Handler handler)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          const auto ms = interval.count() < 0 ? 0 : static_cast<std::uint64_t>(interval.count());
          return Access::backups(backups).watch_wal_gaps(ms, std::move(observer));
      })})) {}
WalGapWatch::WalGapWatch(WalGapWatch&&) noexcept = default;
WalGapWatch& WalGapWatch::operator=(WalGapWatch&&) noexcept = default;
WalGapWatch::~WalGapWatch() = default;
BackupScheduler& BackupScheduler::operator=(BackupScheduler&&) noexcept = default;
BackupScheduler::~BackupScheduler() = default;

RecoveryManager::RecoveryManager(BackupManager& backups)
    : impl_(std::make_unique<Impl>(
          Impl{detail::call([&] { return ffi::recovery_from_backups(Access::backups(backups)); })})) {}

RecoveryManager::RecoveryManager(const Config& config)
    : impl_(std::make_unique<Impl>(
          Impl{detail::call([&] { return ffi::recovery_from_config(Access::config(config)); })})) {}
RecoveryManager::RecoveryManager(RecoveryManager&&) noexcept = default;
RecoveryManager& RecoveryManager::operator=(RecoveryManager&&) noexcept = default;
RecoveryManager::~RecoveryManager() = default;

RestoreReport RecoveryManager::restore(const std::string& backup_id, const std::string& target_url) {
    const auto r = detail::call([&] { return impl_->box->restore_database(backup_id, target_url); });
    return RestoreReport{text(r.backup_id), text(r.target), r.tables_checked, r.rows_restored};
}

ClusterReport RecoveryManager::restore_cluster(const ClusterRestoreOptions& options) {
    return from_bridge(detail::call([&] { return impl_->box->restore_cluster(to_bridge(options)); }));
}

TestRestoreReport RecoveryManager::test_restore(const std::string& backup_id) {
    const auto r = detail::call([&] { return impl_->box->test_restore(backup_id); });
    return TestRestoreReport{text(r.backup_id), text(r.kind), r.tables_checked, r.rows, r.seconds};
}

std::vector<BackupManifest> RecoveryManager::list_repository() {
    return from_bridge(detail::call([&] { return impl_->box->list_repository(); }));
}

void RecoveryManager::stop_cluster(const std::string& data_dir) {
    detail::call([&] { impl_->box->stop_cluster(data_dir); });
}

void RecoveryManager::set_progress(ProgressHandler handler) {
    detail::call([&] { impl_->box->set_progress(progress_observer(std::move(handler))); });
}

bool wal_push(const Config& config, const std::string& path) {
    return detail::call([&] { return ffi::wal_push(Access::config(config), path); });
}

nlohmann::json wal_push_report(const Config& config, const std::string& path) {
    return nlohmann::json::parse(
        text(detail::call([&] { return ffi::wal_push_report_json(Access::config(config), path); })));
}

std::uint64_t wal_fetch(const Config& config, const std::string& name, const std::string& path) {
    return detail::call([&] { return ffi::wal_fetch(Access::config(config), name, path); });
}

}  // namespace database

const ffi::BackupBox& detail::Access::backups(const database::BackupManager& backups) {
    return *backups.impl_->box;
}

}  // namespace rootstream
