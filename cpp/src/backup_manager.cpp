#include "rootstream/database/backup_manager.h"

#include "access.h"

#include "internal.h"

namespace rootstream {
namespace database {

BackupManager::BackupManager(const Config& config, DatabaseManager& db)
    : box_(detail::call([&] { return ffi::backup_new(detail::Access::config(config), detail::Access::db(db)); })) {}

nlohmann::json BackupManager::create_full() {
    return detail::parse_json(detail::call([&] { return box_->create_full(); }));
}

nlohmann::json BackupManager::create(const std::string& kind) {
    return detail::parse_json(detail::call([&] { return box_->create(kind); }));
}

void BackupManager::init_repository() {
    detail::call([&] { box_->init_repository(); });
}

std::uint64_t BackupManager::delete_backup(const std::string& backup_id) {
    return detail::call([&] { return box_->delete_backup(backup_id); });
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
    detail::call([&] { box_->set_progress(progress_observer(std::move(handler))); });
}

nlohmann::json BackupManager::verify(const std::string& backup_id) {
    return detail::parse_json(detail::call([&] { return box_->verify(backup_id); }));
}

nlohmann::json BackupManager::list() {
    return detail::parse_json(detail::call([&] { return box_->list(); }));
}

nlohmann::json BackupManager::cleanup(std::uint32_t full_days, std::uint32_t incremental_days,
                                      std::uint32_t differential_days, std::uint32_t keep_last) {
    return detail::parse_json(detail::call([&] { return box_->cleanup(full_days, incremental_days, differential_days, keep_last); }));
}

BackupScheduler::BackupScheduler(BackupManager& backups, const std::string& cron, Handler handler)
    : box_(detail::call([&] {
          if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          return backups.raw().schedule(cron, std::move(observer));
      })) {}

BackupScheduler::BackupScheduler(BackupManager& backups, const std::string& cron, const std::string& kind,
                                 Handler handler)
    : box_(detail::call([&] {
          if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          return backups.raw().schedule_kind(cron, kind, std::move(observer));
      })) {}

RecoveryManager::RecoveryManager(BackupManager& backups)
    : box_(detail::call([&] { return ffi::recovery_from_backups(backups.raw()); })) {}

RecoveryManager::RecoveryManager(const Config& config)
    : box_(detail::call([&] { return ffi::recovery_from_config(detail::Access::config(config)); })) {}

nlohmann::json RecoveryManager::restore(const std::string& backup_id, const std::string& target_url) {
    return detail::parse_json(detail::call([&] { return box_->restore_database(backup_id, target_url); }));
}

nlohmann::json RecoveryManager::restore_cluster(const nlohmann::json& options) {
    const std::string text = detail::dump_json(options);
    return detail::parse_json(detail::call([&] { return box_->restore_cluster(text); }));
}

nlohmann::json RecoveryManager::test_restore(const std::string& backup_id) {
    return detail::parse_json(detail::call([&] { return box_->test_restore(backup_id); }));
}

nlohmann::json RecoveryManager::list_repository() {
    return detail::parse_json(detail::call([&] { return box_->list_repository(); }));
}

void RecoveryManager::stop_cluster(const std::string& data_dir) {
    detail::call([&] { box_->stop_cluster(data_dir); });
}

void RecoveryManager::set_progress(ProgressHandler handler) {
    detail::call([&] { box_->set_progress(progress_observer(std::move(handler))); });
}

bool wal_push(const Config& config, const std::string& path) {
    return detail::call([&] { return ffi::wal_push(detail::Access::config(config), path); });
}

std::uint64_t wal_fetch(const Config& config, const std::string& name, const std::string& path) {
    return detail::call([&] { return ffi::wal_fetch(detail::Access::config(config), name, path); });
}

}  // namespace database
}  // namespace rootstream
