// The rootstream-db C++ API in one include.
#pragma once

#include "rootstream/auth/mfa_manager.h"
#include "rootstream/cache/redis_client.h"
#include "rootstream/cache/redis_sentinel_manager.h"
#include "rootstream/config.h"
#include "rootstream/database/backup_manager.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/database/models/session_model.h"
#include "rootstream/database/models/stream_model.h"
#include "rootstream/database/models/user.h"
#include "rootstream/events/event_store.h"
#include "rootstream/sync/snapshot_manager.h"
#include "rootstream/sync/state_sync_manager.h"
#include "rootstream/error.h"
