#include "rootstream/cache/redis_sentinel_manager.h"

#include "access.h"
#include "internal.h"
#include "message_observer.h"

namespace rootstream {
namespace cache {

struct RedisSentinelManager::Impl {
    rust::Box<ffi::SentinelBox> box;
};

RedisSentinelManager::RedisSentinelManager(const Config& config)
    : impl_(std::make_unique<Impl>(
          Impl{detail::call([&] { return ffi::sentinel_open(detail::Access::config(config)); })})) {}
RedisSentinelManager::RedisSentinelManager(RedisSentinelManager&&) noexcept = default;
RedisSentinelManager& RedisSentinelManager::operator=(RedisSentinelManager&&) noexcept = default;
RedisSentinelManager::~RedisSentinelManager() = default;

std::string RedisSentinelManager::master_address() {
    return std::string(detail::call([&] { return impl_->box->sentinel_master_addr(); }));
}

nlohmann::json RedisSentinelManager::replicas() {
    return detail::parse_json(detail::call([&] { return impl_->box->sentinel_replicas_json(); }));
}

nlohmann::json RedisSentinelManager::sentinels() {
    return detail::parse_json(detail::call([&] { return impl_->box->sentinel_status_json(); }));
}

void RedisSentinelManager::on_failover(FailoverHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "the failover handler must not be empty");
    auto observer = std::make_unique<ffi::MessageObserver>(
        [handler = std::move(handler)](const std::string&, const std::string& payload) {
            const auto j = nlohmann::json::parse(payload);
            FailoverInfo info;
            info.master_name = j.value("master_name", "");
            info.old_host = j["old"].value("host", "");
            info.old_port = j["old"].value("port", 0);
            info.new_host = j["new"].value("host", "");
            info.new_port = j["new"].value("port", 0);
            info.took_ms = j.value("took_ms", std::uint64_t{0});
            info.sentinel = j.value("sentinel", "");
            handler(info);
        });
    detail::call([&] { impl_->box->sentinel_on_failover(std::move(observer)); });
}

void RedisSentinelManager::close() { impl_->box->sentinel_close(); }

}  // namespace cache
}  // namespace rootstream
