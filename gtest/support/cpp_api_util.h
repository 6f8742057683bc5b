// Helpers shared by the C++ API suites: assertions on the rootstream::Error a call throws.
#pragma once

#include "rootstream/error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <initializer_list>
#include <string>
#include <typeinfo>
#include <utility>

namespace rsdb_test {
namespace cppapi {

inline std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

/// Whether `e` is the rootstream::Error subclass its code maps to (Error::raise), so that every
/// ThrowsCode assertion also checks that the error can be caught by kind.
inline bool is_kind_of_code(const rootstream::Error& e) {
    using namespace rootstream;
    switch (e.code()) {
        case RSDB_ERR_NULL:
        case RSDB_ERR_INVALID_UTF8:
        case RSDB_ERR_INVALID_ARGUMENT:
        case RSDB_ERR_JSON:
            return dynamic_cast<const InvalidArgument*>(&e) != nullptr;
        case RSDB_ERR_CONFIG:
            return dynamic_cast<const ConfigError*>(&e) != nullptr;
        case RSDB_ERR_CONNECTION:
            return dynamic_cast<const ConnectionError*>(&e) != nullptr;
        case RSDB_ERR_TIMEOUT:
            return dynamic_cast<const Timeout*>(&e) != nullptr;
        case RSDB_ERR_QUERY:
            return dynamic_cast<const QueryError*>(&e) != nullptr;
        case RSDB_ERR_CONFLICT:
            return dynamic_cast<const Conflict*>(&e) != nullptr;
        case RSDB_ERR_NOT_FOUND:
            return dynamic_cast<const NotFound*>(&e) != nullptr;
        case RSDB_ERR_STATE:
            return dynamic_cast<const StateError*>(&e) != nullptr;
        case RSDB_ERR_AUTH:
            return dynamic_cast<const AuthError*>(&e) != nullptr && dynamic_cast<const MfaRequired*>(&e) == nullptr &&
                   dynamic_cast<const Locked*>(&e) == nullptr;
        case RSDB_ERR_MFA_REQUIRED:
            return dynamic_cast<const MfaRequired*>(&e) != nullptr;
        case RSDB_ERR_LOCKED:
            return dynamic_cast<const Locked*>(&e) != nullptr;
        case RSDB_ERR_INTEGRITY:
            return dynamic_cast<const IntegrityError*>(&e) != nullptr;
        case RSDB_ERR_FAILOVER:
            return dynamic_cast<const FailoverError*>(&e) != nullptr;
        default:
            return typeid(e) == typeid(Error);
    }
}

/// `f` throws rootstream::Error with one of `codes`, as the subclass of its code, and a message
/// mentioning `needle`.
template <class F>
::testing::AssertionResult ThrowsCode(F&& f, std::initializer_list<int> codes, const std::string& needle = std::string()) {
    try {
        f();
    } catch (const rootstream::Error& e) {
        const std::string msg = e.what();
        if (std::find(codes.begin(), codes.end(), e.code()) == codes.end()) {
            return ::testing::AssertionFailure() << "code " << e.code() << " (" << rsdb_status_name(e.code())
                                                 << ") is not the expected one; message: " << msg;
        }
        if (!is_kind_of_code(e)) {
            return ::testing::AssertionFailure() << "code " << e.code() << " arrived as a " << typeid(e).name()
                                                 << ", not as the subclass of its code; message: " << msg;
        }
        if (msg.empty()) return ::testing::AssertionFailure() << "the error has no message";
        if (!needle.empty() && lower(msg).find(lower(needle)) == std::string::npos) {
            return ::testing::AssertionFailure() << "message \"" << msg << "\" does not mention \"" << needle << "\"";
        }
        return ::testing::AssertionSuccess() << msg;
    } catch (const std::exception& e) {
        return ::testing::AssertionFailure() << "threw a " << typeid(e).name() << " instead of rootstream::Error: "
                                             << e.what();
    } catch (...) {
        return ::testing::AssertionFailure() << "threw something that is not a std::exception";
    }
    return ::testing::AssertionFailure() << "did not throw";
}

/// `f` throws rootstream::Error with `code` and a message mentioning `needle`.
template <class F>
::testing::AssertionResult ThrowsCode(F&& f, int code, const std::string& needle = std::string()) {
    return ThrowsCode(std::forward<F>(f), {code}, needle);
}

/// The message of the rootstream::Error that `f` throws with `code`, or "" (and a failure).
template <class F>
std::string error_message(F&& f, int code) {
    try {
        f();
    } catch (const rootstream::Error& e) {
        EXPECT_EQ(e.code(), code) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "did not throw";
    return std::string();
}

}  // namespace cppapi
}  // namespace rsdb_test
