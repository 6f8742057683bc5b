// The one exception type of the rootstream-db C++ API.
#pragma once

#include "rootstream_db.h"

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <utility>

namespace rootstream {

/// Thrown by every failing call. code() is one of the RSDB_ERR_* values of the C API.
class Error : public std::runtime_error {
public:
    Error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}

    int code() const noexcept { return code_; }

    /// Builds an Error from a bridge message of the form "rsdb:<code>:<message>".
    static Error from_bridge(const char* what);

private:
    int code_;
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
        // rust::Str throws this for strings that are not UTF-8.
        throw Error(RSDB_ERR_INVALID_UTF8, e.what());
    } catch (const std::exception& e) {
        throw Error::from_bridge(e.what());
    }
}

/// Serializes a JSON argument; strings that are not UTF-8 are the caller's error, reported
/// with the same code the C API uses.
std::string dump_json(const nlohmann::json& value);

}  // namespace detail
}  // namespace rootstream
