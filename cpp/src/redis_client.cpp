#include "rootstream/cache/redis_client.h"

#include "access.h"
#include "message_observer.h"

#include <memory>

namespace rootstream {
namespace cache {

namespace {
std::optional<std::string> maybe(bool found, rust::String value) {
    if (!found) return std::nullopt;
    return std::string(value);
}
}  // namespace

RedisClient::RedisClient(const Config& config)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] { return ffi::redis_open(detail::Access::config(config)); })})) {}
RedisClient::RedisClient(RedisClient&&) noexcept = default;
RedisClient& RedisClient::operator=(RedisClient&&) noexcept = default;
RedisClient::~RedisClient() = default;

std::chrono::microseconds RedisClient::ping() {
    double ms = detail::call([&] { return impl_->box->ping_ms(); });
    return std::chrono::microseconds(static_cast<std::int64_t>(ms * 1000.0));
}

void RedisClient::set(const std::string& key, const std::string& value, std::chrono::milliseconds ttl) {
    if (ttl.count() < 0) Error::raise(RSDB_ERR_INVALID_ARGUMENT, "ttl must not be negative");
    detail::call([&] { impl_->box->set(key, value, static_cast<std::uint64_t>(ttl.count())); });
}

std::optional<std::string> RedisClient::get(const std::string& key) {
    bool found = false;
    auto v = detail::call([&] { return impl_->box->get(key, found); });
    return maybe(found, std::move(v));
}

bool RedisClient::del(const std::string& key) {
    return detail::call([&] { return impl_->box->del(key); });
}

bool RedisClient::exists(const std::string& key) {
    return detail::call([&] { return impl_->box->exists(key); });
}

bool RedisClient::expire(const std::string& key, std::chrono::milliseconds ttl) {
    if (ttl.count() <= 0) Error::raise(RSDB_ERR_INVALID_ARGUMENT, "ttl must be greater than 0");
    return detail::call([&] { return impl_->box->expire(key, static_cast<std::uint64_t>(ttl.count())); });
}

std::int64_t RedisClient::ttl_ms(const std::string& key) {
    return detail::call([&] { return impl_->box->ttl_ms(key); });
}

std::int64_t RedisClient::incr(const std::string& key, std::int64_t by) {
    return detail::call([&] { return impl_->box->incr(key, by); });
}

bool RedisClient::hset(const std::string& key, const std::string& field, const std::string& value) {
    return detail::call([&] { return impl_->box->hset(key, field, value); });
}

std::optional<std::string> RedisClient::hget(const std::string& key, const std::string& field) {
    bool found = false;
    auto v = detail::call([&] { return impl_->box->hget(key, field, found); });
    return maybe(found, std::move(v));
}

std::map<std::string, std::string> RedisClient::hgetall(const std::string& key) {
    auto j = nlohmann::json::parse(std::string(detail::call([&] { return impl_->box->hgetall_json(key); })));
    return j.get<std::map<std::string, std::string>>();
}

bool RedisClient::hdel(const std::string& key, const std::string& field) {
    return detail::call([&] { return impl_->box->hdel(key, field); });
}

std::int64_t RedisClient::lpush(const std::string& key, const std::string& value) {
    return detail::call([&] { return impl_->box->push(key, value, true); });
}

std::int64_t RedisClient::rpush(const std::string& key, const std::string& value) {
    return detail::call([&] { return impl_->box->push(key, value, false); });
}

std::optional<std::string> RedisClient::lpop(const std::string& key) {
    bool found = false;
    auto v = detail::call([&] { return impl_->box->pop(key, true, found); });
    return maybe(found, std::move(v));
}

std::optional<std::string> RedisClient::rpop(const std::string& key) {
    bool found = false;
    auto v = detail::call([&] { return impl_->box->pop(key, false, found); });
    return maybe(found, std::move(v));
}

std::vector<std::string> RedisClient::lrange(const std::string& key, std::int64_t start, std::int64_t stop) {
    auto j = nlohmann::json::parse(std::string(detail::call([&] { return impl_->box->lrange_json(key, start, stop); })));
    return j.get<std::vector<std::string>>();
}

std::int64_t RedisClient::publish(const std::string& channel, const std::string& message) {
    return detail::call([&] { return impl_->box->publish(channel, message); });
}

std::uint64_t RedisClient::subscribe(const std::string& pattern, MessageHandler handler) {
    if (!handler) Error::raise(RSDB_ERR_NULL, "handler must not be empty");
    return detail::call([&] {
        return impl_->box->subscribe(pattern, std::make_unique<ffi::MessageObserver>(std::move(handler)));
    });
}

void RedisClient::unsubscribe(std::uint64_t id) {
    detail::call([&] { impl_->box->unsubscribe(id); });
}

nlohmann::json RedisClient::exec_atomic(const nlohmann::json& commands) {
    auto text = detail::call([&] { return impl_->box->exec_atomic(detail::dump_json(commands)); });
    return nlohmann::json::parse(std::string(text));
}

nlohmann::json RedisClient::command(const nlohmann::json& args) {
    auto text = detail::call([&] { return impl_->box->command(detail::dump_json(args)); });
    return nlohmann::json::parse(std::string(text));
}

nlohmann::json PubSubStats::to_json() const {
    return {{"connected", connected}, {"reconnects", reconnects}, {"received", received}, {"subscriptions", subscriptions}};
}

PubSubStats RedisClient::pubsub_stats() const {
    const auto s = impl_->box->pubsub_stats();
    return PubSubStats{s.connected, s.reconnects, s.received, static_cast<std::size_t>(s.subscriptions)};
}

}  // namespace cache
}  // namespace rootstream
