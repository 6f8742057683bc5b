// Helpers the C++ API's sources share; not installed and not part of the public headers.
#pragma once

#include "rust/cxx.h"

#include <nlohmann/json.hpp>

#include <string>

namespace rootstream {
namespace detail {

/// Parses JSON text the bridge returned (free-form values: rows, records, payloads, stats).
inline nlohmann::json parse_json(const rust::String& text) {
    return nlohmann::json::parse(std::string(text));
}

}  // namespace detail
}  // namespace rootstream
