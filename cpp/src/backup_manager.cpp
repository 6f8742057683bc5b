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

struct RecoveryManager::Impl {
    rust::Box<ffi::RecoveryBox> box;
};

BackupManager::BackupManager(const Config& config, DatabaseManager& db)
    : impl_(std::make_unique<Impl>(
          Impl{detail::call([&] { return ffi::backup_new(Access::config(config), Access::db(db)); })})) {}
BackupManager::BackupManager(BackupManager&&) noexcept = default;
BackupManager& BackupManager::operator=(BackupManager&&) noexcept = default;
BackupManager::~BackupManager() = default;

nlohmann::json BackupManager::create_full() {
    return detail::parse_json(detail::call([&] { return impl_->box->create_full(); }));
}

nlohmann::json BackupManager::create(const std::string& kind) {
    return detail::parse_json(detail::call([&] { return impl_->box->create(kind); }));
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

nlohmann::json BackupManager::verify(const std::string& backup_id) {
    return detail::parse_json(detail::call([&] { return impl_->box->verify(backup_id); }));
}

nlohmann::json BackupManager::list() {
    return detail::parse_json(detail::call([&] { return impl_->box->list(); }));
}

nlohmann::json BackupManager::cleanup(std::uint32_t full_days, std::uint32_t incremental_days,
                                      std::uint32_t differential_days, std::uint32_t keep_last) {
    return detail::parse_json(detail::call([&] { return impl_->box->cleanup(full_days, incremental_days, differential_days, keep_last); }));
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

nlohmann::json RecoveryManager::restore(const std::string& backup_id, const std::string& target_url) {
    return detail::parse_json(detail::call([&] { return impl_->box->restore_database(backup_id, target_url); }));
}

nlohmann::json RecoveryManager::restore_cluster(const nlohmann::json& options) {
    const std::string text = detail::dump_json(options);
    return detail::parse_json(detail::call([&] { return impl_->box->restore_cluster(text); }));
}

nlohmann::json RecoveryManager::test_restore(const std::string& backup_id) {
    return detail::parse_json(detail::call([&] { return impl_->box->test_restore(backup_id); }));
}

nlohmann::json RecoveryManager::list_repository() {
    return detail::parse_json(detail::call([&] { return impl_->box->list_repository(); }));
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

std::uint64_t wal_fetch(const Config& config, const std::string& name, const std::string& path) {
    return detail::call([&] { return ffi::wal_fetch(Access::config(config), name, path); });
}

}  // namespace database

const ffi::BackupBox& detail::Access::backups(const database::BackupManager& backups) {
    return *backups.impl_->box;
}

}  // namespace rootstream
