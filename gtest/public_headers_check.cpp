// Compiled with only cpp/include, the C header's folder and nlohmann on the include path (see
// gtest/CMakeLists.txt): a public header that includes a bridge header or rust/cxx.h fails to
// build here. Every public header is listed.
#include "rootstream/auth/mfa_manager.h"
#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/backup_manager.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/database/models/session_model.h"
#include "rootstream/database/models/stream_model.h"
#include "rootstream/database/models/user.h"
#include "rootstream/error.h"
#include "rootstream/events/event_store.h"
#include "rootstream/rootstream_db.hpp"
#include "rootstream/sync/snapshot_manager.h"
#include "rootstream/sync/state_sync_manager.h"
