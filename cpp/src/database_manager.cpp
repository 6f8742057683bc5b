#include "rootstream/database/database_manager.h"

#include "access.h"

namespace rootstream {
namespace database {

namespace {
std::string params_text(const nlohmann::json& params) {
    if (params.is_null()) {
        return "[]";
    }
    if (!params.is_array()) {
        Error::raise(RSDB_ERR_JSON, "parameters must be a JSON array");
    }
    return detail::dump_json(params);
}
}  // namespace

Transaction::Transaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

// A moved-from transaction holds no Impl: it is closed.
Transaction::Transaction(Transaction&& other) noexcept = default;

Transaction& Transaction::operator=(Transaction&& other) noexcept {
    if (this != &other) {
        if (impl_ && impl_->box->is_open()) {
            try {
                impl_->box->rollback();
            } catch (...) {
            }
        }
        impl_ = std::move(other.impl_);
    }
    return *this;
}

Transaction::~Transaction() {
    if (impl_ && impl_->box->is_open()) {
        try {
            impl_->box->rollback();
        } catch (...) {
            // A destructor must not throw; the connection is discarded by the library.
        }
    }
}

std::uint64_t Transaction::execute(const std::string& sql, const nlohmann::json& params) {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    return detail::call([&] { return impl_->box->execute(sql, params_text(params)); });
}

nlohmann::json Transaction::query(const std::string& sql, const nlohmann::json& params) {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    auto text = detail::call([&] { return impl_->box->query(sql, params_text(params)); });
    return nlohmann::json::parse(std::string(text));
}

void Transaction::commit() {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    detail::call([&] { impl_->box->commit(); });
}

void Transaction::rollback() {
    if (!impl_) return;
    detail::call([&] { impl_->box->rollback(); });
}

bool Transaction::is_open() const {
    return impl_ && impl_->box->is_open();
}

DatabaseManager::DatabaseManager(const Config& config)
    : impl_(std::make_unique<Impl>(Impl{detail::call([&] { return ffi::db_open(detail::Access::config(config)); })})) {}
DatabaseManager::DatabaseManager(DatabaseManager&&) noexcept = default;
DatabaseManager& DatabaseManager::operator=(DatabaseManager&&) noexcept = default;
DatabaseManager::~DatabaseManager() = default;

int DatabaseManager::migrate() {
    return detail::call([&] { return impl_->box->migrate(); });
}

std::uint64_t DatabaseManager::execute(const std::string& sql, const nlohmann::json& params) {
    return detail::call([&] { return impl_->box->execute(sql, params_text(params)); });
}

nlohmann::json DatabaseManager::query(const std::string& sql, const nlohmann::json& params) {
    auto text = detail::call([&] { return impl_->box->query(sql, params_text(params)); });
    return nlohmann::json::parse(std::string(text));
}

Transaction DatabaseManager::begin() {
    return detail::Access::make_tx(detail::call([&] { return impl_->box->begin(); }));
}

PoolStats DatabaseManager::pool_stats() const {
    const auto s = impl_->box->pool_stats();
    auto n = [](std::uint64_t v) { return static_cast<std::size_t>(v); };
    return PoolStats{n(s.max_size), n(s.size), n(s.available), n(s.in_use), n(s.waiting)};
}

Health DatabaseManager::health_check() const {
    const auto h = detail::call([&] { return impl_->box->health(); });
    auto n = [](std::uint64_t v) { return static_cast<std::size_t>(v); };
    const PoolStats pool{n(h.pool.max_size), n(h.pool.size), n(h.pool.available), n(h.pool.in_use), n(h.pool.waiting)};
    return Health{h.latency_ms, std::string(h.server_version), h.in_recovery, std::string(h.database), pool};
}

nlohmann::json PoolStats::to_json() const {
    return {{"max_size", max_size}, {"size", size}, {"available", available}, {"in_use", in_use}, {"waiting", waiting}};
}

nlohmann::json Health::to_json() const {
    return {{"latency_ms", latency_ms},
            {"server_version", server_version},
            {"in_recovery", in_recovery},
            {"database", database},
            {"pool", pool.to_json()}};
}

void DatabaseManager::close() {
    impl_->box->close();
}

}  // namespace database
}  // namespace rootstream
