#include "rootstream/database/failover_manager.h"

#include "access.h"
#include "internal.h"
#include "message_observer.h"
#include "rootstream-db/src/ffi/cxx/failover.rs.h"

namespace rootstream {
namespace database {

struct FailoverManager::Impl {
    rust::Box<ffi::FailoverBox> box;
};

FailoverManager::FailoverManager(const Config& config, const nlohmann::json& options)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] {
          const std::string opts = options.is_null() ? std::string() : detail::dump_json(options);
          return ffi::failover_open(detail::Access::config(config), opts);
      })})) {}
FailoverManager::FailoverManager(FailoverManager&&) noexcept = default;
FailoverManager& FailoverManager::operator=(FailoverManager&&) noexcept = default;
FailoverManager::~FailoverManager() = default;

void FailoverManager::start() { detail::call([&] { impl_->box->start(); }); }
void FailoverManager::stop() { impl_->box->stop(); }
void FailoverManager::tick() { impl_->box->tick(); }

void FailoverManager::attach(const DatabaseManager& db) { impl_->box->attach_db(detail::Access::db(db)); }
void FailoverManager::attach(const sync::StateSyncManager& sync) {
    impl_->box->attach_sync(detail::Access::sync(sync));
}

nlohmann::json FailoverManager::switchover(const std::string& target) {
    return detail::parse_json(detail::call([&] { return impl_->box->switchover(target); }));
}

nlohmann::json FailoverManager::failover(const std::string& target) {
    return detail::parse_json(detail::call([&] { return impl_->box->failover(target); }));
}

void FailoverManager::rejoin(const std::string& node) {
    detail::call([&] { impl_->box->rejoin(node); });
}

nlohmann::json FailoverManager::status() const { return detail::parse_json(impl_->box->status_json()); }

bool FailoverManager::is_leader() const { return impl_->box->is_leader(); }

void FailoverManager::on_role_change(RoleChangeHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "the role change handler must not be empty");
    auto observer = std::make_unique<ffi::MessageObserver>(
        [handler = std::move(handler)](const std::string&, const std::string& payload) {
            handler(nlohmann::json::parse(payload));
        });
    detail::call([&] { impl_->box->on_role_change(std::move(observer)); });
}

}  // namespace database
}  // namespace rootstream
