// Helpers shared by the C API suites: RAII for every handle type, strings returned through
// `char **`, and status assertions that also check rsdb_last_error().
#pragma once

#include "rootstream_db.h"
#include "stack_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>

namespace rsdb_test {
namespace capi {

using json = nlohmann::json;

#define RSDB_TEST_DELETER(Name, Type, fn) \
    struct Name {                         \
        void operator()(Type* h) const { fn(h); } \
    }
RSDB_TEST_DELETER(ConfigFree, rsdb_config, rsdb_config_free);
RSDB_TEST_DELETER(DbClose, rsdb_db, rsdb_db_close);
RSDB_TEST_DELETER(TxFree, rsdb_tx, rsdb_tx_free);
RSDB_TEST_DELETER(RedisClose, rsdb_redis, rsdb_redis_close);
RSDB_TEST_DELETER(UsersFree, rsdb_users, rsdb_users_free);
RSDB_TEST_DELETER(StreamsFree, rsdb_streams, rsdb_streams_free);
RSDB_TEST_DELETER(StreamSessionsFree, rsdb_stream_sessions, rsdb_stream_sessions_free);
RSDB_TEST_DELETER(EventsFree, rsdb_events, rsdb_events_free);
RSDB_TEST_DELETER(SessionsFree, rsdb_sessions, rsdb_sessions_free);
RSDB_TEST_DELETER(MfaFree, rsdb_mfa, rsdb_mfa_free);
RSDB_TEST_DELETER(BackupFree, rsdb_backup, rsdb_backup_free);
RSDB_TEST_DELETER(RecoveryFree, rsdb_recovery, rsdb_recovery_free);
RSDB_TEST_DELETER(ScheduleStop, rsdb_backup_schedule, rsdb_backup_schedule_stop);
RSDB_TEST_DELETER(GapWatchStop, rsdb_wal_gap_watch, rsdb_wal_gap_watch_stop);
RSDB_TEST_DELETER(MetricsClientFree, rsdb_metrics_client, rsdb_metrics_client_free);
RSDB_TEST_DELETER(MetricsWriterFree, rsdb_metrics_writer, rsdb_metrics_writer_free);
RSDB_TEST_DELETER(MetricsCollectorFree, rsdb_metrics_collector, rsdb_metrics_collector_free);
RSDB_TEST_DELETER(MetricsReporterFree, rsdb_metrics_reporter, rsdb_metrics_reporter_free);
#undef RSDB_TEST_DELETER

using ConfigPtr = std::unique_ptr<rsdb_config, ConfigFree>;
using DbPtr = std::unique_ptr<rsdb_db, DbClose>;
using TxPtr = std::unique_ptr<rsdb_tx, TxFree>;
using RedisPtr = std::unique_ptr<rsdb_redis, RedisClose>;
using UsersPtr = std::unique_ptr<rsdb_users, UsersFree>;
using StreamsPtr = std::unique_ptr<rsdb_streams, StreamsFree>;
using StreamSessionsPtr = std::unique_ptr<rsdb_stream_sessions, StreamSessionsFree>;
using EventsPtr = std::unique_ptr<rsdb_events, EventsFree>;
using SessionsPtr = std::unique_ptr<rsdb_sessions, SessionsFree>;
using MfaPtr = std::unique_ptr<rsdb_mfa, MfaFree>;
using BackupPtr = std::unique_ptr<rsdb_backup, BackupFree>;
using RecoveryPtr = std::unique_ptr<rsdb_recovery, RecoveryFree>;
using SchedulePtr = std::unique_ptr<rsdb_backup_schedule, ScheduleStop>;
using GapWatchPtr = std::unique_ptr<rsdb_wal_gap_watch, GapWatchStop>;
using MetricsClientPtr = std::unique_ptr<rsdb_metrics_client, MetricsClientFree>;
using MetricsWriterPtr = std::unique_ptr<rsdb_metrics_writer, MetricsWriterFree>;
using MetricsCollectorPtr = std::unique_ptr<rsdb_metrics_collector, MetricsCollectorFree>;
using MetricsReporterPtr = std::unique_ptr<rsdb_metrics_reporter, MetricsReporterFree>;

/// A string returned through `char **`, released with rsdb_string_free.
class OutString {
public:
    OutString() = default;
    OutString(const OutString&) = delete;
    OutString& operator=(const OutString&) = delete;
    ~OutString() { reset(); }
    char** out() {
        reset();
        return &p_;
    }
    bool is_null() const { return p_ == nullptr; }
    std::string str() const { return p_ != nullptr ? std::string(p_) : std::string(); }
    json parse() const { return json::parse(str()); }

private:
    void reset() {
        rsdb_string_free(p_);
        p_ = nullptr;
    }
    char* p_ = nullptr;
};

/// Throws (ending the test with the library's message) when a call the test depends on fails.
inline void check(int rc, const std::string& what) {
    if (rc != RSDB_OK) {
        throw std::runtime_error(what + " failed with " + std::to_string(rc) + " (" + rsdb_status_name(rc) +
                                 "): " + last_error());
    }
}

inline std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

/// Checks a status right after the call: the code, the same code from rsdb_last_error_code()
/// and a non-empty rsdb_last_error() that mentions `needle` (case-insensitive).
inline ::testing::AssertionResult Fails(int rc, int code, const std::string& needle = std::string()) {
    const char* raw = rsdb_last_error();
    const std::string msg = raw != nullptr ? raw : "";
    const int last_code = rsdb_last_error_code();
    if (rc != code) {
        return ::testing::AssertionFailure() << "status " << rc << " (" << rsdb_status_name(rc) << "), expected "
                                             << code << " (" << rsdb_status_name(code) << "); message: " << msg;
    }
    if (raw == nullptr || msg.empty()) return ::testing::AssertionFailure() << "rsdb_last_error() gave no message";
    if (last_code != code) {
        return ::testing::AssertionFailure() << "rsdb_last_error_code() is " << last_code << ", expected " << code;
    }
    if (!needle.empty() && lower(msg).find(lower(needle)) == std::string::npos) {
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not mention \"" << needle << "\"";
    }
    return ::testing::AssertionSuccess() << msg;
}

/// A failure with one of `codes` (never success, never a panic or an internal error) and a message.
inline ::testing::AssertionResult FailsCleanly(int rc, std::initializer_list<int> codes) {
    const std::string msg = last_error();
    if (std::find(codes.begin(), codes.end(), rc) == codes.end()) {
        return ::testing::AssertionFailure() << "status " << rc << " (" << rsdb_status_name(rc)
                                             << ") is not one of the expected errors; message: " << msg;
    }
    if (rsdb_last_error() == nullptr || msg.empty()) return ::testing::AssertionFailure() << "no error message";
    return ::testing::AssertionSuccess() << rsdb_status_name(rc) << ": " << msg;
}

}  // namespace capi
}  // namespace rsdb_test

// Both stream further context like any gtest assertion; the message is read only on failure.
#define ASSERT_RSDB_OK(expr) ASSERT_EQ((expr), RSDB_OK) << #expr << ": " << rsdb_test::last_error() << " "
#define EXPECT_RSDB_OK(expr) EXPECT_EQ((expr), RSDB_OK) << #expr << ": " << rsdb_test::last_error() << " "

/// Turns a failed call whose result the test needs into an exception; Google Test reports it
/// as a failure of the test (with the library's message) and ends the test.
#define RSDB_JSON(call, out)                                                                         \
    [&]() -> ::nlohmann::json {                                                                      \
        int rsdb_rc_ = (call);                                                                       \
        if (rsdb_rc_ != RSDB_OK) {                                                                   \
            throw std::runtime_error(std::string(#call) + " failed with " + std::to_string(rsdb_rc_) + \
                                     ": " + rsdb_test::last_error());                                \
        }                                                                                            \
        return (out).parse();                                                                        \
    }()
