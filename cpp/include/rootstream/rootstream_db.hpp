// The rootstream-db C++ API in one include.
#pragma once

#include "rootstream/cache/redis_client.h"
#include "rootstream/config.h"
#include "rootstream/database/database_manager.h"
#include "rootstream/error.h"
