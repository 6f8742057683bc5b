#include "rootstream/config.h"

namespace rootstream {

Config::Config() : box_(ffi::config_new()) {}

Config Config::from_env() {
    return detail::call([] { return Config(ffi::config_from_env()); });
}

Config& Config::set(const std::string& key, const std::string& value) {
    detail::call([&] { box_->set(key, value); });
    return *this;
}

Config& Config::load_file(const std::string& path) {
    detail::call([&] { box_->load_file(path); });
    return *this;
}

std::string Config::describe() const {
    return std::string(box_->debug_string());
}

}  // namespace rootstream
