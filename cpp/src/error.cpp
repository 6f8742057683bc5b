#include "rootstream/error.h"

#include <cstdlib>
#include <cstring>

namespace rootstream {

Error Error::from_bridge(const char* what) {
    // "rsdb:<code>:<message>"; anything else is reported as an internal error.
    const char* prefix = "rsdb:";
    if (what != nullptr && std::strncmp(what, prefix, 5) == 0) {
        char* end = nullptr;
        long code = std::strtol(what + 5, &end, 10);
        if (end != nullptr && *end == ':') {
            return Error(static_cast<int>(code), std::string(end + 1));
        }
    }
    return Error(RSDB_ERR_INTERNAL, what != nullptr ? what : "unknown error");
}

namespace detail {

std::string dump_json(const nlohmann::json& value) {
    try {
        return value.dump();
    } catch (const nlohmann::json::type_error& e) {
        throw Error(RSDB_ERR_INVALID_UTF8, std::string("a JSON argument holds a string that is not UTF-8: ") + e.what());
    }
}

}  // namespace detail
}  // namespace rootstream
