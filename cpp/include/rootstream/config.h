// Library configuration for the C++ API.
#pragma once

#include "rootstream/error.h"
#include <memory>
#include <string>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail

/// Configuration shared by every component. Keys and environment variables are listed in
/// the README; ROOTSTREAM_<KEY> in the environment overrides the default of <key>.
class Config {
public:
    /// Defaults only.
    Config();
    Config(Config&&) noexcept;
    Config& operator=(Config&&) noexcept;
    ~Config();
    /// Defaults overridden by the ROOTSTREAM_* environment variables.
    static Config from_env();

    /// Sets one key (e.g. "database_url", "pool_size"); throws rootstream::Error for an
    /// unknown key or a bad value.
    Config& set(const std::string& key, const std::string& value);

    /// Applies a file of `key = value` lines (the file `rsdb --config` reads); throws
    /// rootstream::Error (RSDB_ERR_CONFIG) naming the file and line at fault.
    Config& load_file(const std::string& path);

    /// A description with secrets and passwords masked.
    std::string describe() const;

private:
    friend struct detail::Access;
    struct Impl;
    explicit Config(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace rootstream
