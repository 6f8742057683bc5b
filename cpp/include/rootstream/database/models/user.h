// rootstream::database::models::User — accounts with Argon2id passwords.
#pragma once

#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace rootstream {
namespace database {
namespace models {

/// A user account as loaded from the database (never with its password hash). The static
/// functions find or create users; the member functions change this user and refresh it.
class User {
public:
    /// Registers a user. Throws Error with RSDB_ERR_CONFLICT ("username already exists" /
    /// "email already exists") or RSDB_ERR_INVALID_ARGUMENT (bad email, password under 8 characters).
    static User create(DatabaseManager& db, const std::string& username, const std::string& email,
                       const std::string& password, const std::optional<std::string>& display_name = std::nullopt);
    /// Logs in with username or email; throws RSDB_ERR_AUTH for a wrong password, an unknown
    /// user or an inactive account. Records the login.
    static User authenticate(DatabaseManager& db, const std::string& login, const std::string& password);
    /// Loads a user; throws RSDB_ERR_NOT_FOUND.
    static User load_by_id(DatabaseManager& db, std::int64_t id);
    static User load_by_username(DatabaseManager& db, const std::string& username);
    static User load_by_email(DatabaseManager& db, const std::string& email);

    /// True when password is this user's password (constant-time check).
    bool verify_password(DatabaseManager& db, const std::string& password) const;
    /// Changes display name and/or avatar URL; nullopt leaves a field as it is.
    void update_profile(DatabaseManager& db, const std::optional<std::string>& display_name,
                        const std::optional<std::string>& avatar_url);
    /// Marks the email as verified.
    void verify(DatabaseManager& db);
    void activate(DatabaseManager& db);
    void deactivate(DatabaseManager& db);
    void record_login(DatabaseManager& db);
    void change_password(DatabaseManager& db, const std::string& new_password);

    std::int64_t id() const { return data_.at("id").get<std::int64_t>(); }
    std::string username() const { return data_.at("username").get<std::string>(); }
    std::string email() const { return data_.at("email").get<std::string>(); }
    std::optional<std::string> display_name() const { return text("display_name"); }
    std::optional<std::string> avatar_url() const { return text("avatar_url"); }
    bool is_verified() const { return data_.at("is_verified").get<bool>(); }
    bool is_active() const { return data_.at("is_active").get<bool>(); }
    /// RFC 3339, or nullopt before the first login.
    std::optional<std::string> last_login_at() const { return text("last_login_at"); }
    /// All fields as JSON.
    const nlohmann::json& to_json() const { return data_; }

private:
    explicit User(nlohmann::json data) : data_(std::move(data)) {}
    std::optional<std::string> text(const char* key) const;
    nlohmann::json data_;
};

}  // namespace models
}  // namespace database
}  // namespace rootstream
