// The one exception type of the rootstream-db C++ API.
#pragma once

#include "rootstream_db.h"

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <utility>

namespace rootstream {

/// Thrown by every failing call, as one of the subclasses below where the code has one, so a
/// caller can catch by kind (`catch (const rootstream::NotFound&)`) or catch Error for all.
/// code() is always one of the RSDB_ERR_* values of the C API.
class Error : public std::runtime_error {
public:
    Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}

    int code() const noexcept { return code_; }

    /// Throws the subclass that matches code: the one place codes map to kinds.
    [[noreturn]] static void raise(int code, const std::string& message);
    /// Throws for a bridge message of the form "rsdb:<code>:<message>" (anything else is
    /// RSDB_ERR_INTERNAL).
    [[noreturn]] static void raise_from_bridge(const char* what);

private:
    int code_;
};

/// A bad argument: RSDB_ERR_NULL, RSDB_ERR_INVALID_UTF8, RSDB_ERR_INVALID_ARGUMENT, RSDB_ERR_JSON.
class InvalidArgument : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_CONFIG: a missing or invalid configuration value.
class ConfigError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_CONNECTION: a server could not be reached or the connection broke.
class ConnectionError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_TIMEOUT: an operation or a wait for a pooled connection took too long.
class Timeout : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_QUERY: the database rejected a statement.
class QueryError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_CONFLICT: a duplicate, a stale version, a limit, or something still in use.
class Conflict : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_NOT_FOUND: no such record, backup or file.
class NotFound : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_STATE: the object is not in a state that allows the call.
class StateError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_AUTH: wrong credentials, or an unknown, revoked or expired session.
class AuthError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_MFA_REQUIRED: the session still waits for its second factor.
class MfaRequired : public AuthError {
public:
    using AuthError::AuthError;
};

/// RSDB_ERR_LOCKED: too many failed attempts; the user is locked out for a while.
class Locked : public AuthError {
public:
    using AuthError::AuthError;
};

/// RSDB_ERR_INTEGRITY: stored data failed verification (a checksum or authentication tag).
class IntegrityError : public Error {
public:
    using Error::Error;
};

/// RSDB_ERR_FAILOVER: the Redis master changed (Sentinel failover) while the command was in
/// flight; it may or may not have been applied. Retryable: the client already follows the new
/// master.
class FailoverError : public ConnectionError {
public:
    using ConnectionError::ConnectionError;
};

/// RSDB_ERR_FENCED: the PostgreSQL node was fenced (it may not act as a primary until it is
/// rejoined), or this instance lost the failover leader lease and may no longer act.
class FencedError : public StateError {
public:
    using StateError::StateError;
};

/// RSDB_ERR_NO_CANDIDATE: no replica was safe to promote; nothing was promoted.
class NoCandidateError : public StateError {
public:
    using StateError::StateError;
};

namespace detail {

/// Runs a bridge call and turns its exceptions into rootstream::Error.
template <class F>
auto call(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const Error&) {
        throw;
    } catch (const std::invalid_argument& e) {
        // The bridge throws this for strings that are not UTF-8.
        Error::raise(RSDB_ERR_INVALID_UTF8, e.what());
    } catch (const std::exception& e) {
        Error::raise_from_bridge(e.what());
    }
}

/// Serializes a JSON argument; strings that are not UTF-8 are the caller's error, reported
/// with the same code the C API uses.
std::string dump_json(const nlohmann::json& value);

}  // namespace detail
}  // namespace rootstream
