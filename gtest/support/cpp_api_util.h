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

/// `f` throws rootstream::Error with one of `codes` and a message mentioning `needle`.
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
