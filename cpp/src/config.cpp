#include "rootstream/config.h"

#include "access.h"

namespace rootstream {

Config::Config() : impl_(std::make_unique<Impl>(Impl{ffi::config_new()})) {}
Config::Config(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;
Config::~Config() = default;

Config Config::from_env() {
    return detail::call([] { return detail::Access::make_config(ffi::config_from_env()); });
}

Config& Config::set(const std::string& key, const std::string& value) {
    detail::call([&] { impl_->box->set(key, value); });
    return *this;
}

Config& Config::load_file(const std::string& path) {
    detail::call([&] { impl_->box->load_file(path); });
    return *this;
}

std::string Config::describe() const {
    return std::string(impl_->box->debug_string());
}

}  // namespace rootstream
