#include "rootstream/database/backup_manager.h"

namespace rootstream {
namespace database {

namespace {
nlohmann::json parse(const rust::String& text) {
    return nlohmann::json::parse(std::string(text));
}
}  // namespace

BackupManager::BackupManager(const Config& config, DatabaseManager& db)
    : box_(detail::call([&] { return ffi::backup_new(config.raw(), db.raw()); })) {}

nlohmann::json BackupManager::create_full() {
    return parse(detail::call([&] { return box_->create_full(); }));
}

nlohmann::json BackupManager::verify(const std::string& backup_id) {
    return parse(detail::call([&] { return box_->verify(backup_id); }));
}

nlohmann::json BackupManager::list() {
    return parse(detail::call([&] { return box_->list(); }));
}

nlohmann::json BackupManager::cleanup(std::uint32_t full_days, std::uint32_t incremental_days,
                                      std::uint32_t differential_days, std::uint32_t keep_last) {
    return parse(detail::call([&] { return box_->cleanup(full_days, incremental_days, differential_days, keep_last); }));
}

BackupScheduler::BackupScheduler(BackupManager& backups, const std::string& cron, Handler handler)
    : box_(detail::call([&] {
          if (!handler) throw Error(RSDB_ERR_NULL, "handler must not be empty");
          auto observer = std::make_unique<ffi::MessageObserver>(
              [h = std::move(handler)](const std::string&, const std::string& payload) {
                  h(nlohmann::json::parse(payload));
              });
          return backups.raw().schedule(cron, std::move(observer));
      })) {}

nlohmann::json RecoveryManager::restore(const std::string& backup_id, const std::string& target_url) {
    return parse(detail::call([&] { return backups_.raw().restore(backup_id, target_url); }));
}

}  // namespace database
}  // namespace rootstream
