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

nlohmann::json RecoveryManager::restore(const std::string& backup_id, const std::string& target_url) {
    return parse(detail::call([&] { return backups_.raw().restore(backup_id, target_url); }));
}

}  // namespace database
}  // namespace rootstream
