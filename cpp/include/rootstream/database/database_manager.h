// rootstream::database::DatabaseManager — pooled PostgreSQL access — and its RAII Transaction.
#pragma once

#include "rootstream/config.h"
#include "rootstream/error.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail

namespace database {

/// Pool counters at one moment.
struct PoolStats {
    std::size_t max_size = 0;
    std::size_t size = 0;
    std::size_t available = 0;
    std::size_t in_use = 0;
    std::size_t waiting = 0;
    /// {"max_size":..,"size":..,"available":..,"in_use":..,"waiting":..}
    nlohmann::json to_json() const;
};

/// The result of DatabaseManager::health_check().
struct Health {
    /// The round trip of a SELECT on a pooled connection, in milliseconds.
    double latency_ms = 0;
    /// server_version as the server reports it.
    std::string server_version;
    /// True when the server is a standby (in recovery) and refuses writes.
    bool in_recovery = false;
    /// The database the pool is connected to.
    std::string database;
    /// Pool counters at the time of the check.
    PoolStats pool;
    /// The same keys as the C API's health JSON, the pool as a nested object.
    nlohmann::json to_json() const;
};

/// A transaction on a pooled connection of its own. Rolls back in the destructor unless
/// commit() succeeded, so an exception leaving the scope undoes the work. Movable, not
/// copyable; use it from one thread at a time.
class Transaction {
public:
    Transaction(Transaction&& other) noexcept;
    Transaction& operator=(Transaction&& other) noexcept;
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();

    /// Executes a statement; params bind to $1, $2, ... Returns rows affected.
    std::uint64_t execute(const std::string& sql, const nlohmann::json& params = nlohmann::json::array());
    /// Runs a query; returns an array of row objects keyed by column name.
    nlohmann::json query(const std::string& sql, const nlohmann::json& params = nlohmann::json::array());
    /// Commits; throws (code RSDB_ERR_STATE) when an earlier statement failed.
    void commit();
    /// Rolls back; a no-op once finished.
    void rollback();
    /// True until commit or rollback.
    bool is_open() const;

private:
    friend struct detail::Access;
    struct Impl;
    explicit Transaction(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// A pool of PostgreSQL connections (default 20), shared safely by all threads.
class DatabaseManager {
public:
    /// Opens the pool for config's database_url and checks one round trip.
    explicit DatabaseManager(const Config& config);
    DatabaseManager(DatabaseManager&&) noexcept;
    DatabaseManager& operator=(DatabaseManager&&) noexcept;
    ~DatabaseManager();

    /// Applies the embedded migrations; returns the schema version.
    int migrate();
    /// Executes a statement; params bind to $1, $2, ... Returns rows affected.
    std::uint64_t execute(const std::string& sql, const nlohmann::json& params = nlohmann::json::array());
    /// Runs a query; returns an array of row objects keyed by column name.
    nlohmann::json query(const std::string& sql, const nlohmann::json& params = nlohmann::json::array());
    /// Begins a transaction (waits at most the acquire timeout for a connection).
    Transaction begin();

    /// Runs fn(Transaction&) and commits when it returns; rolls back when it throws.
    template <class F>
    auto transaction(F&& fn) -> decltype(fn(std::declval<Transaction&>())) {
        Transaction tx = begin();
        if constexpr (std::is_void_v<decltype(fn(tx))>) {
            fn(tx);
            tx.commit();
        } else {
            auto result = fn(tx);
            tx.commit();
            return result;
        }
    }

    /// Current pool counters.
    PoolStats pool_stats() const;
    /// Latency, server version, standby flag, database and pool counters.
    Health health_check() const;
    /// Closes idle connections and refuses new acquires.
    void close();

private:
    friend struct detail::Access;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace database
}  // namespace rootstream
