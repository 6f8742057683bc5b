// Helpers for the session and MFA suites (test_c_auth, test_cpp_auth): an independent SHA-256
// (OpenSSL), base32/base64 decoding, random master keys, and TOTP codes from oathtool — an
// implementation independent of the library's. Header-only; link OpenSSL::Crypto.
#pragma once

#include <openssl/sha.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rsdb_test {
namespace auth {

inline std::string to_hex(const unsigned char* data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        out.push_back(digits[data[i] >> 4]);
        out.push_back(digits[data[i] & 0x0f]);
    }
    return out;
}

inline std::string to_hex(const std::vector<uint8_t>& b) { return to_hex(b.data(), b.size()); }

/// Lower-case hex of SHA-256(text), computed by OpenSSL (not by the library under test).
inline std::string sha256_hex(const std::string& text) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
    return to_hex(digest, sizeof digest);
}

/// Decodes `\x<hex>` (how the library returns bytea) or plain hex; throws on anything else.
inline std::vector<uint8_t> from_hex(std::string text) {
    if (text.rfind("\\x", 0) == 0) text = text.substr(2);
    if (text.size() % 2 != 0) throw std::runtime_error("odd hex length");
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        throw std::runtime_error(std::string("not a hex digit: ") + c);
    };
    std::vector<uint8_t> out;
    for (size_t i = 0; i < text.size(); i += 2) out.push_back(static_cast<uint8_t>(nibble(text[i]) * 16 + nibble(text[i + 1])));
    return out;
}

/// RFC 4648 base32 (upper case, padding ignored); throws on other characters.
inline std::vector<uint8_t> base32_decode(const std::string& text) {
    std::vector<uint8_t> out;
    uint32_t buf = 0;
    int bits = 0;
    for (char c : text) {
        if (c == '=') break;
        uint32_t v;
        if (c >= 'A' && c <= 'Z') {
            v = static_cast<uint32_t>(c - 'A');
        } else if (c >= '2' && c <= '7') {
            v = static_cast<uint32_t>(c - '2' + 26);
        } else {
            throw std::runtime_error(std::string("not a base32 character: ") + c);
        }
        buf = (buf << 5) | v;
        bits += 5;
        if (bits >= 8) {
            out.push_back(static_cast<uint8_t>((buf >> (bits - 8)) & 0xff));
            bits -= 8;
        }
    }
    return out;
}

/// Standard base64 with padding; throws on other characters.
inline std::vector<uint8_t> base64_decode(const std::string& text) {
    std::vector<uint8_t> out;
    uint32_t buf = 0;
    int bits = 0;
    for (char c : text) {
        if (c == '=') break;
        uint32_t v;
        if (c >= 'A' && c <= 'Z') {
            v = static_cast<uint32_t>(c - 'A');
        } else if (c >= 'a' && c <= 'z') {
            v = static_cast<uint32_t>(c - 'a' + 26);
        } else if (c >= '0' && c <= '9') {
            v = static_cast<uint32_t>(c - '0' + 52);
        } else if (c == '+') {
            v = 62;
        } else if (c == '/') {
            v = 63;
        } else {
            throw std::runtime_error(std::string("not a base64 character: ") + c);
        }
        buf = (buf << 6) | v;
        bits += 6;
        if (bits >= 8) {
            out.push_back(static_cast<uint8_t>((buf >> (bits - 8)) & 0xff));
            bits -= 8;
        }
    }
    return out;
}

/// True when every character is in the URL-safe base64 alphabet (no padding).
inline bool is_base64url(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    });
}

/// True when `needle` occurs as a byte sequence inside `haystack`.
inline bool contains_bytes(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
    return !needle.empty() && std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

/// 64 random hex digits: a fresh master key.
inline std::string random_master_key() {
    std::random_device rd;
    std::vector<uint8_t> b(32);
    for (auto& x : b) x = static_cast<uint8_t>(rd() & 0xff);
    return to_hex(b);
}

inline int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Unix time now, after waiting out the last 10 seconds of a 30-second TOTP step, so a test
/// has at least 10 seconds before the step (and with it the accepted window) moves on.
inline int64_t fresh_totp_time() {
    while (true) {
        const int64_t t = unix_now();
        if (t % 30 < 20) return t;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

/// The TOTP code (SHA-1, 6 digits, 30 s) of a base32 secret at Unix time `t`, from oathtool.
/// Throws when oathtool is missing or fails.
inline std::string oathtool_code(const std::string& secret_base32, int64_t t) {
    for (char c : secret_base32) {
        if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'))) throw std::runtime_error("secret is not base32");
    }
    const std::string cmd = "oathtool --totp -b --now @" + std::to_string(t) + " " + secret_base32 + " 2>/dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) throw std::runtime_error("could not run oathtool");
    std::string out;
    char buf[128];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' ')) out.pop_back();
    if (status != 0 || out.size() != 6 || !std::all_of(out.begin(), out.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        throw std::runtime_error("oathtool failed (status " + std::to_string(status) + ", output \"" + out +
                                 "\"); it is needed for the MFA tests");
    }
    return out;
}

/// The codes of the steps around `t` (from `from` to `to` steps away).
inline std::set<std::string> codes_around(const std::string& secret_base32, int64_t t, int from, int to) {
    std::set<std::string> codes;
    for (int k = from; k <= to; ++k) codes.insert(oathtool_code(secret_base32, t + 30 * k));
    return codes;
}

/// A 6-digit code that is none of the codes of the steps from t-60 s to t+60 s, so the library
/// must refuse it (its window is ±1 step).
inline std::string wrong_code(const std::string& secret_base32, int64_t t) {
    const auto near = codes_around(secret_base32, t, -2, 2);
    for (int candidate = 123456;; candidate = (candidate + 111111) % 1000000) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%06d", candidate);
        if (near.count(buf) == 0) return buf;
    }
}

}  // namespace auth
}  // namespace rsdb_test
