// Carries a state-sync merge function from the Rust core to a std::function. Internal: the
// sync bridge names it; the public header takes a std::function instead.
#pragma once

#include "rust/cxx.h"

#include <functional>
#include <string>
#include <utility>

namespace rootstream {
namespace ffi {

/// Called on a library thread with two concurrent states as JSON text (older first); writes
/// the merged state to `merged_json` and returns true, or returns false when it cannot merge.
class MergeObserver {
public:
    using Handler = std::function<bool(const std::string& entity_type, const std::string& id,
                                       const std::string& older_json, const std::string& newer_json,
                                       std::string& merged_json)>;

    explicit MergeObserver(Handler handler) : handler_(std::move(handler)) {}

    bool merge(rust::Str entity_type, rust::Str id, rust::Str older_json, rust::Str newer_json,
               rust::String& merged_json) const {
        // An exception must not unwind into Rust: a throwing merge counts as "cannot merge".
        try {
            std::string out;
            if (!handler_(std::string(entity_type), std::string(id), std::string(older_json),
                          std::string(newer_json), out)) {
                return false;
            }
            merged_json = rust::String(out);
            return true;
        } catch (...) {
            return false;
        }
    }

private:
    Handler handler_;
};

}  // namespace ffi
}  // namespace rootstream
