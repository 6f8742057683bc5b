// rootstream::detail::Access — the one way the C++ API's sources reach another class's bridge
// object. Not installed: the public headers only declare it and name it as a friend.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/backup_manager.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/database/models/session_model.h"

#include "rootstream-db/src/ffi/cxx/auth.rs.h"
#include "rootstream-db/src/ffi/cxx/backup.rs.h"
#include "rootstream-db/src/ffi/cxx/cache.rs.h"
#include "rootstream-db/src/ffi/cxx/config.rs.h"
#include "rootstream-db/src/ffi/cxx/db.rs.h"

namespace rootstream {
namespace detail {

struct Access {
    // Config, DatabaseManager and RedisClient: on their raw() accessors until those classes
    // hold their bridge objects behind a pimpl; the pimpl-based versions replace these three.
    static const ffi::ConfigBox& config(const Config& config) { return config.raw(); }
    static const ffi::DbBox& db(const database::DatabaseManager& db) { return db.raw(); }
    static const ffi::RedisBox& redis(const cache::RedisClient& redis) { return redis.raw(); }

    // Defined next to the classes' Impl (session_model.cpp, backup_manager.cpp).
    static const ffi::SessionsBox& sessions(const database::models::SessionModel& sessions);
    static const ffi::BackupBox& backups(const database::BackupManager& backups);
};

}  // namespace detail
}  // namespace rootstream
