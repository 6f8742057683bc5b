#include "rootstream/sync/state_sync_manager.h"

#include "access.h"
#include "internal.h"
#include "message_observer.h"
#include "sync_observer.h"

namespace rootstream {

rust::Box<ffi::SyncLink> detail::link_of(const sync::StateSyncManager* sync) {
    return sync != nullptr ? ffi::sync_link(Access::sync(*sync)) : ffi::sync_link_none();
}

namespace sync {

namespace {

std::string options_text(const nlohmann::json& options) {
    if (options.is_null() || (options.is_object() && options.empty())) return std::string();
    return detail::dump_json(options);
}

std::unique_ptr<ffi::MessageObserver> json_observer(std::function<void(const nlohmann::json&)> handler) {
    return std::make_unique<ffi::MessageObserver>(
        [handler = std::move(handler)](const std::string&, const std::string& payload) {
            handler(nlohmann::json::parse(payload));
        });
}

}  // namespace

StateSyncManager::StateSyncManager(const Config& config, cache::RedisClient& redis, const nlohmann::json& options)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          return ffi::sync_start(detail::Access::config(config), detail::Access::redis(redis), options_text(options));
      })})) {}

StateSyncManager::StateSyncManager(const Config& config, cache::RedisClient& redis, database::DatabaseManager& db,
                                   const nlohmann::json& options)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          return ffi::sync_start_with_db(detail::Access::config(config), detail::Access::redis(redis),
                                         detail::Access::db(db), options_text(options));
      })})) {}

StateSyncManager::StateSyncManager(StateSyncManager&&) noexcept = default;
StateSyncManager& StateSyncManager::operator=(StateSyncManager&&) noexcept = default;
StateSyncManager::~StateSyncManager() = default;

std::string StateSyncManager::origin() const { return std::string(impl_->box->origin()); }

void StateSyncManager::register_entity_type(const std::string& entity_type, Strategy strategy) {
    const char* name = strategy == Strategy::LastWriterWins ? "lww" : "version_vectors";
    detail::call([&] { impl_->box->register_type(entity_type, name); });
}

void StateSyncManager::set_merge(const std::string& entity_type, MergeFunction merge) {
    std::unique_ptr<ffi::MergeObserver> observer;
    if (merge) {
        observer = std::make_unique<ffi::MergeObserver>(
            [merge = std::move(merge)](const std::string& type, const std::string& id, const std::string& older,
                                       const std::string& newer, std::string& out) {
                out = merge(type, id, nlohmann::json::parse(older), nlohmann::json::parse(newer)).dump();
                return true;
            });
    }
    detail::call([&] { impl_->box->set_merge(entity_type, std::move(observer)); });
}

std::uint64_t StateSyncManager::publish(const std::string& event_type, const nlohmann::json& payload) {
    return detail::call([&] { return impl_->box->publish(event_type, detail::dump_json(payload)); });
}

nlohmann::json StateSyncManager::apply_delta(const std::string& entity_type, const std::string& id,
                                             const nlohmann::json& delta) {
    if (!delta.is_object()) Error::raise(RSDB_ERR_JSON, "a delta must be a JSON object");
    return detail::parse_json(
        detail::call([&] { return impl_->box->apply_delta(entity_type, id, detail::dump_json(delta)); }));
}

std::optional<nlohmann::json> StateSyncManager::get_snapshot(const std::string& entity_type,
                                                             const std::string& id) const {
    bool found = false;
    auto text = detail::call([&] { return impl_->box->get_snapshot(entity_type, id, found); });
    if (!found) return std::nullopt;
    return detail::parse_json(text);
}

void StateSyncManager::flush(std::chrono::milliseconds timeout) {
    detail::call([&] { impl_->box->flush(static_cast<std::uint64_t>(timeout.count())); });
}

std::uint64_t StateSyncManager::subscribe(const std::string& pattern, EventHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
    return detail::call([&] { return impl_->box->subscribe(pattern, json_observer(std::move(handler))); });
}

void StateSyncManager::unsubscribe(std::uint64_t id) {
    detail::call([&] { impl_->box->unsubscribe(id); });
}

void StateSyncManager::on_conflict(ReportHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
    impl_->box->on_conflict(json_observer(std::move(handler)));
}

void StateSyncManager::on_resync(ReportHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
    impl_->box->on_resync(json_observer(std::move(handler)));
}

nlohmann::json StateSyncManager::status() const {
    return detail::parse_json(detail::call([&] { return impl_->box->status_json(); }));
}

void StateSyncManager::catch_up() {
    detail::call([&] { impl_->box->catch_up(); });
}

void StateSyncManager::close() { impl_->box->close(); }

}  // namespace sync
}  // namespace rootstream
