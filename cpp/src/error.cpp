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

}  // namespace rootstream
