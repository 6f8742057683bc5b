#include "rootstream/database/models/user.h"

#include "access.h"

#include "internal.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"

namespace rootstream {
namespace database {
namespace models {

User User::create(DatabaseManager& db, const std::string& username, const std::string& email,
                  const std::string& password, const std::optional<std::string>& display_name) {
    return User(detail::parse_json(detail::call([&] {
        return ffi::user_create(detail::Access::db(db), username, email, password, display_name.value_or(""),
                                display_name.has_value());
    })));
}

User User::authenticate(DatabaseManager& db, const std::string& login, const std::string& password) {
    return User(detail::parse_json(detail::call([&] { return ffi::user_authenticate(detail::Access::db(db), login, password); })));
}

User User::load_by_id(DatabaseManager& db, std::int64_t id) {
    return User(detail::parse_json(detail::call([&] { return ffi::user_get(detail::Access::db(db), "id", std::to_string(id)); })));
}

User User::load_by_username(DatabaseManager& db, const std::string& username) {
    return User(detail::parse_json(detail::call([&] { return ffi::user_get(detail::Access::db(db), "username", username); })));
}

User User::load_by_email(DatabaseManager& db, const std::string& email) {
    return User(detail::parse_json(detail::call([&] { return ffi::user_get(detail::Access::db(db), "email", email); })));
}

bool User::verify_password(DatabaseManager& db, const std::string& password) const {
    return detail::call([&] { return ffi::user_verify_password(detail::Access::db(db), id(), password); });
}

void User::update_profile(DatabaseManager& db, const std::optional<std::string>& display_name,
                          const std::optional<std::string>& avatar_url) {
    data_ = detail::parse_json(detail::call([&] {
        return ffi::user_update_profile(detail::Access::db(db), id(), display_name.value_or(""), display_name.has_value(),
                                        avatar_url.value_or(""), avatar_url.has_value());
    }));
}

void User::verify(DatabaseManager& db) {
    data_ = detail::parse_json(detail::call([&] { return ffi::user_set_flag(detail::Access::db(db), id(), "verified", true); }));
}

void User::activate(DatabaseManager& db) {
    data_ = detail::parse_json(detail::call([&] { return ffi::user_set_flag(detail::Access::db(db), id(), "active", true); }));
}

void User::deactivate(DatabaseManager& db) {
    data_ = detail::parse_json(detail::call([&] { return ffi::user_set_flag(detail::Access::db(db), id(), "active", false); }));
}

void User::record_login(DatabaseManager& db) {
    data_ = detail::parse_json(detail::call([&] { return ffi::user_set_flag(detail::Access::db(db), id(), "login", true); }));
}

void User::change_password(DatabaseManager& db, const std::string& new_password) {
    detail::call([&] { ffi::user_change_password(detail::Access::db(db), id(), new_password); });
}

std::optional<std::string> User::text(const char* key) const {
    auto it = data_.find(key);
    if (it == data_.end() || it->is_null()) return std::nullopt;
    return it->get<std::string>();
}

}  // namespace models
}  // namespace database
}  // namespace rootstream
