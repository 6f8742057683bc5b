// Receives pub/sub messages from the Rust core and forwards them to a std::function. Internal:
// the cache and backup bridges name it; the public headers take a std::function instead.
#pragma once

#include "rust/cxx.h"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace rootstream {
namespace ffi {

/// Called on the library's pub/sub dispatcher thread, one message at a time. The observer is
/// also destroyed on a library thread when its subscription ends.
class MessageObserver {
public:
    using Handler = std::function<void(const std::string& channel, const std::string& payload)>;

    explicit MessageObserver(Handler handler) : handler_(std::move(handler)) {}

    void on_message(rust::Str channel, rust::Slice<const std::uint8_t> payload) const {
        // An exception must not unwind into Rust: it would abort the process.
        try {
            handler_(std::string(channel.data(), channel.size()),
                     std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
        } catch (...) {
        }
    }

private:
    Handler handler_;
};

}  // namespace ffi
}  // namespace rootstream
