#include "rootstream/database/database_manager.h"

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

// A moved-from optional stays engaged with an empty Box; reset it so the source is closed.
Transaction::Transaction(Transaction&& other) noexcept : box_(std::move(other.box_)) {
    other.box_.reset();
}

Transaction& Transaction::operator=(Transaction&& other) noexcept {
    if (this != &other) {
        if (box_ && (*box_)->is_open()) {
            try {
                (*box_)->rollback();
            } catch (...) {
            }
        }
        box_ = std::move(other.box_);
        other.box_.reset();
    }
    return *this;
}

Transaction::~Transaction() {
    if (box_ && (*box_)->is_open()) {
        try {
            (*box_)->rollback();
        } catch (...) {
            // A destructor must not throw; the connection is discarded by the library.
        }
    }
}

std::uint64_t Transaction::execute(const std::string& sql, const nlohmann::json& params) {
    if (!box_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    return detail::call([&] { return (*box_)->execute(sql, params_text(params)); });
}

nlohmann::json Transaction::query(const std::string& sql, const nlohmann::json& params) {
    if (!box_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    auto text = detail::call([&] { return (*box_)->query(sql, params_text(params)); });
    return nlohmann::json::parse(std::string(text));
}

void Transaction::commit() {
    if (!box_) Error::raise(RSDB_ERR_STATE, "moved-from transaction");
    detail::call([&] { (*box_)->commit(); });
}

void Transaction::rollback() {
    if (!box_) return;
    detail::call([&] { (*box_)->rollback(); });
}

bool Transaction::is_open() const {
    return box_ && (*box_)->is_open();
}

DatabaseManager::DatabaseManager(const Config& config)
    : box_(detail::call([&] { return ffi::db_open(config.raw()); })) {}

int DatabaseManager::migrate() {
    return detail::call([&] { return box_->migrate(); });
}

std::uint64_t DatabaseManager::execute(const std::string& sql, const nlohmann::json& params) {
    return detail::call([&] { return box_->execute(sql, params_text(params)); });
}

nlohmann::json DatabaseManager::query(const std::string& sql, const nlohmann::json& params) {
    auto text = detail::call([&] { return box_->query(sql, params_text(params)); });
    return nlohmann::json::parse(std::string(text));
}

Transaction DatabaseManager::begin() {
    return Transaction(detail::call([&] { return box_->begin(); }));
}

PoolStats DatabaseManager::pool_stats() const {
    auto j = nlohmann::json::parse(std::string(box_->pool_stats_json()));
    PoolStats s;
    s.max_size = j.at("max_size").get<std::size_t>();
    s.size = j.at("size").get<std::size_t>();
    s.available = j.at("available").get<std::size_t>();
    s.in_use = j.at("in_use").get<std::size_t>();
    s.waiting = j.at("waiting").get<std::size_t>();
    return s;
}

nlohmann::json DatabaseManager::health_check() const {
    return nlohmann::json::parse(std::string(detail::call([&] { return box_->health_json(); })));
}

void DatabaseManager::close() {
    box_->close();
}

}  // namespace database
}  // namespace rootstream
