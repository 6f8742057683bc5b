#include "rootstream/database/replication_manager.h"

#include "access.h"
#include "internal.h"
#include "rootstream-db/src/ffi/cxx/ha_replication.rs.h"

namespace rootstream {
namespace database {

struct ReplicationManager::Impl {
    rust::Box<ffi::ReplicationBox> box;
};

namespace {
std::string options_text(const nlohmann::json& options) {
    if (options.is_null()) return "{}";
    if (!options.is_object()) Error::raise(RSDB_ERR_JSON, "replication options must be a JSON object");
    return detail::dump_json(options);
}
}  // namespace

ReplicationManager::ReplicationManager(const Config& config, const std::string& nodes, const std::string& data_dirs,
                                       const nlohmann::json& options)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          return ffi::replication_open(detail::Access::config(config), nodes, data_dirs, options_text(options));
      })})) {}
ReplicationManager::ReplicationManager(ReplicationManager&&) noexcept = default;
ReplicationManager& ReplicationManager::operator=(ReplicationManager&&) noexcept = default;
ReplicationManager::~ReplicationManager() = default;

nlohmann::json ReplicationManager::status() {
    return detail::parse_json(detail::call([&] { return impl_->box->status_json(); }));
}

std::uint64_t ReplicationManager::record_status(DatabaseManager& db) {
    return detail::call([&] { return impl_->box->record_status(detail::Access::db(db)); });
}

ReadResult ReplicationManager::query_read(const std::string& sql, const nlohmann::json& params) {
    if (!params.is_null() && !params.is_array()) Error::raise(RSDB_ERR_JSON, "parameters must be a JSON array");
    const std::string p = params.is_null() ? "[]" : detail::dump_json(params);
    const auto j = detail::parse_json(detail::call([&] { return impl_->box->query_read_json(sql, p); }));
    ReadResult r;
    r.node = j.value("node", "");
    r.primary = j.value("primary", false);
    r.rows = j.value("rows", nlohmann::json::array());
    return r;
}

void ReplicationManager::refresh() { impl_->box->refresh(); }

nlohmann::json ReplicationManager::add_replica(const std::string& name, const std::string& url,
                                               const std::string& data_dir, int port) {
    if (port <= 0 || port > 65535) Error::raise(RSDB_ERR_INVALID_ARGUMENT, "port must be 1-65535");
    return detail::parse_json(detail::call(
        [&] { return impl_->box->add_replica(name, url, data_dir, static_cast<std::uint16_t>(port)); }));
}

nlohmann::json ReplicationManager::remove_replica(const std::string& name) {
    return detail::parse_json(detail::call([&] { return impl_->box->remove_replica(name); }));
}

void ReplicationManager::promote(const std::string& name) {
    detail::call([&] { impl_->box->promote(name); });
}

nlohmann::json ReplicationManager::rejoin(const std::string& name, const std::string& new_primary) {
    return detail::parse_json(detail::call([&] { return impl_->box->rejoin(name, new_primary); }));
}

}  // namespace database
}  // namespace rootstream
