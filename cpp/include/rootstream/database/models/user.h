// rootstream::database::models::User — accounts with Argon2id passwords.
#pragma once

#include "rootstream/database/database_manager.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace rootstream {
namespace detail {
struct Access;
}  // namespace detail
namespace sync {
class StateSyncManager;
}  // namespace sync

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
    // With announce_through, profile, verification and activation changes are also announced
    // to other instances (event user.updated and the shared "user" entity).
    void update_profile(DatabaseManager& db, const std::optional<std::string>& display_name,
                        const std::optional<std::string>& avatar_url,
                        sync::StateSyncManager* announce_through = nullptr);
    /// Marks the email as verified.
    void verify(DatabaseManager& db, sync::StateSyncManager* announce_through = nullptr);
    void activate(DatabaseManager& db, sync::StateSyncManager* announce_through = nullptr);
    void deactivate(DatabaseManager& db, sync::StateSyncManager* announce_through = nullptr);
    void record_login(DatabaseManager& db);
    void change_password(DatabaseManager& db, const std::string& new_password);

    std::int64_t id() const { return f_.id; }
    std::string username() const { return f_.username; }
    std::string email() const { return f_.email; }
    std::optional<std::string> display_name() const { return f_.display_name; }
    std::optional<std::string> avatar_url() const { return f_.avatar_url; }
    bool is_verified() const { return f_.is_verified; }
    bool is_active() const { return f_.is_active; }
    /// RFC 3339, or nullopt before the first login.
    std::optional<std::string> last_login_at() const { return f_.last_login_at; }
    /// RFC 3339.
    std::string created_at() const { return f_.created_at; }
    std::string updated_at() const { return f_.updated_at; }
    /// All fields as JSON (unset values are null), with the keys of the C API's user record.
    nlohmann::json to_json() const;

private:
    void set_flag(DatabaseManager& db, const char* flag, bool value, sync::StateSyncManager* announce_through);
    friend struct detail::Access;
    struct Fields {
        std::int64_t id = 0;
        std::string username;
        std::string email;
        std::optional<std::string> display_name;
        std::optional<std::string> avatar_url;
        bool is_verified = false;
        bool is_active = false;
        std::optional<std::string> last_login_at;
        std::string created_at;
        std::string updated_at;
    };
    explicit User(Fields f) : f_(std::move(f)) {}
    Fields f_;
};

}  // namespace models
}  // namespace database
}  // namespace rootstream
