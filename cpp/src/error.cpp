#include "rootstream/error.h"

#include <cstdlib>
#include <cstring>

namespace rootstream {

void Error::raise(int code, const std::string& message) {
    switch (code) {
        case RSDB_ERR_NULL:
        case RSDB_ERR_INVALID_UTF8:
        case RSDB_ERR_INVALID_ARGUMENT:
        case RSDB_ERR_JSON:
            throw InvalidArgument(code, message);
        case RSDB_ERR_CONFIG:
            throw ConfigError(code, message);
        case RSDB_ERR_CONNECTION:
            throw ConnectionError(code, message);
        case RSDB_ERR_TIMEOUT:
            throw Timeout(code, message);
        case RSDB_ERR_QUERY:
            throw QueryError(code, message);
        case RSDB_ERR_CONFLICT:
            throw Conflict(code, message);
        case RSDB_ERR_NOT_FOUND:
            throw NotFound(code, message);
        case RSDB_ERR_STATE:
            throw StateError(code, message);
        case RSDB_ERR_AUTH:
            throw AuthError(code, message);
        case RSDB_ERR_MFA_REQUIRED:
            throw MfaRequired(code, message);
        case RSDB_ERR_LOCKED:
            throw Locked(code, message);
        case RSDB_ERR_INTEGRITY:
            throw IntegrityError(code, message);
        case RSDB_ERR_FAILOVER:
            throw FailoverError(code, message);
        case RSDB_ERR_FENCED:
            throw FencedError(code, message);
        case RSDB_ERR_NO_CANDIDATE:
            throw NoCandidateError(code, message);
        default:
            throw Error(code, message);
    }
}

void Error::raise_from_bridge(const char* what) {
    // "rsdb:<code>:<message>"; anything else is reported as an internal error.
    const char* prefix = "rsdb:";
    if (what != nullptr && std::strncmp(what, prefix, 5) == 0) {
        char* end = nullptr;
        long code = std::strtol(what + 5, &end, 10);
        if (end != nullptr && *end == ':') {
            raise(static_cast<int>(code), std::string(end + 1));
        }
    }
    raise(RSDB_ERR_INTERNAL, what != nullptr ? what : "unknown error");
}

namespace detail {

std::string dump_json(const nlohmann::json& value) {
    try {
        return value.dump();
    } catch (const nlohmann::json::type_error& e) {
        Error::raise(RSDB_ERR_INVALID_UTF8, std::string("a JSON argument holds a string that is not UTF-8: ") + e.what());
    }
}

}  // namespace detail
}  // namespace rootstream
