// The one internal door from a public class to the bridge object it holds. Public headers
// only forward-declare rootstream::detail::Access and befriend it; this header (not installed)
// defines it, so the generated ffi:: types never appear in the installed API.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/backup_manager.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/database/models/session_model.h"
#include "rootstream/database/models/user.h"
#include "rootstream/sync/state_sync_manager.h"

#include "rust/cxx.h"
#include "rootstream-db/src/ffi/cxx/auth.rs.h"
#include "rootstream-db/src/ffi/cxx/backup.rs.h"
#include "rootstream-db/src/ffi/cxx/cache.rs.h"
#include "rootstream-db/src/ffi/cxx/config.rs.h"
#include "rootstream-db/src/ffi/cxx/db.rs.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"
#include "rootstream-db/src/ffi/cxx/sync.rs.h"

namespace rootstream {

struct Config::Impl {
    rust::Box<ffi::ConfigBox> box;
};

namespace database {
struct DatabaseManager::Impl {
    rust::Box<ffi::DbBox> box;
};
struct Transaction::Impl {
    rust::Box<ffi::TxBox> box;
};
}  // namespace database

namespace cache {
struct RedisClient::Impl {
    rust::Box<ffi::RedisBox> box;
};
}  // namespace cache

namespace sync {
struct StateSyncManager::Impl {
    rust::Box<ffi::SyncBox> box;
};
}  // namespace sync

namespace detail {

/// The link of `sync`, or one that announces nothing for nullptr.
rust::Box<ffi::SyncLink> link_of(const sync::StateSyncManager* sync);

struct Access {
    static const ffi::SyncBox& sync(const sync::StateSyncManager& s) { return *s.impl_->box; }
    static const ffi::ConfigBox& config(const Config& c) { return *c.impl_->box; }
    static const ffi::DbBox& db(const database::DatabaseManager& d) { return *d.impl_->box; }
    static const ffi::RedisBox& redis(const cache::RedisClient& r) { return *r.impl_->box; }
    static Config make_config(rust::Box<ffi::ConfigBox> box) {
        return Config(std::make_unique<Config::Impl>(Config::Impl{std::move(box)}));
    }
    static database::Transaction make_tx(rust::Box<ffi::TxBox> box) {
        return database::Transaction(
            std::make_unique<database::Transaction::Impl>(database::Transaction::Impl{std::move(box)}));
    }

    // Defined next to the classes' Impl (session_model.cpp, backup_manager.cpp).
    static const ffi::SessionsBox& sessions(const database::models::SessionModel& sessions);
    static const ffi::BackupBox& backups(const database::BackupManager& backups);
    // Defined in user.cpp: the one conversion of a bridged user record.
    static database::models::User user(const ffi::UserRecord& record);
};

}  // namespace detail

namespace database {
namespace models {
/// The public session record of a bridge record (session_model.cpp; also used by MFAManager).
Session from_bridge(const ffi::SessionRecord& record);
}  // namespace models
}  // namespace database

namespace detail {

}  // namespace detail
}  // namespace rootstream
