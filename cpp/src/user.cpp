#include "rootstream/database/models/user.h"

#include "access.h"

#include "internal.h"
#include "rootstream-db/src/ffi/cxx/models.rs.h"

namespace rootstream {
namespace detail {

database::models::User Access::user(const ffi::UserRecord& r) {
    auto text = [](const rust::String& t, bool present) {
        return present ? std::optional<std::string>(std::string(t)) : std::nullopt;
    };
    return database::models::User(database::models::User::Fields{
        r.id, std::string(r.username), std::string(r.email), text(r.display_name, r.has_display_name),
        text(r.avatar_url, r.has_avatar_url), r.is_verified, r.is_active, text(r.last_login_at, !r.last_login_at.empty()),
        std::string(r.created_at), std::string(r.updated_at)});
}

}  // namespace detail

namespace database {
namespace models {

User User::create(DatabaseManager& db, const std::string& username, const std::string& email,
                  const std::string& password, const std::optional<std::string>& display_name) {
    return detail::Access::user(detail::call([&] {
        return ffi::user_create(detail::Access::db(db), username, email, password, display_name.value_or(""),
                                display_name.has_value());
    }));
}

User User::authenticate(DatabaseManager& db, const std::string& login, const std::string& password) {
    return detail::Access::user(detail::call([&] { return ffi::user_authenticate(detail::Access::db(db), login, password); }));
}

User User::load_by_id(DatabaseManager& db, std::int64_t id) {
    return detail::Access::user(detail::call([&] { return ffi::user_get(detail::Access::db(db), "id", std::to_string(id)); }));
}

User User::load_by_username(DatabaseManager& db, const std::string& username) {
    return detail::Access::user(detail::call([&] { return ffi::user_get(detail::Access::db(db), "username", username); }));
}

User User::load_by_email(DatabaseManager& db, const std::string& email) {
    return detail::Access::user(detail::call([&] { return ffi::user_get(detail::Access::db(db), "email", email); }));
}

bool User::verify_password(DatabaseManager& db, const std::string& password) const {
    return detail::call([&] { return ffi::user_verify_password(detail::Access::db(db), id(), password); });
}

void User::update_profile(DatabaseManager& db, const std::optional<std::string>& display_name,
                          const std::optional<std::string>& avatar_url, sync::StateSyncManager* announce_through) {
    *this = detail::Access::user(detail::call([&] {
        return ffi::user_update_profile(detail::Access::db(db), *detail::link_of(announce_through), id(),
                                        display_name.value_or(""), display_name.has_value(), avatar_url.value_or(""),
                                        avatar_url.has_value());
    }));
}

void User::set_flag(DatabaseManager& db, const char* flag, bool value, sync::StateSyncManager* announce_through) {
    *this = detail::Access::user(detail::call([&] {
        return ffi::user_set_flag(detail::Access::db(db), *detail::link_of(announce_through), id(), flag, value);
    }));
}

void User::verify(DatabaseManager& db, sync::StateSyncManager* announce_through) {
    set_flag(db, "verified", true, announce_through);
}

void User::activate(DatabaseManager& db, sync::StateSyncManager* announce_through) {
    set_flag(db, "active", true, announce_through);
}

void User::deactivate(DatabaseManager& db, sync::StateSyncManager* announce_through) {
    set_flag(db, "active", false, announce_through);
}

void User::record_login(DatabaseManager& db) { set_flag(db, "login", true, nullptr); }

void User::change_password(DatabaseManager& db, const std::string& new_password) {
    detail::call([&] { ffi::user_change_password(detail::Access::db(db), id(), new_password); });
}

nlohmann::json User::to_json() const {
    auto or_null = [](const std::optional<std::string>& t) { return t ? nlohmann::json(*t) : nlohmann::json(); };
    return {{"id", f_.id},
            {"username", f_.username},
            {"email", f_.email},
            {"display_name", or_null(f_.display_name)},
            {"avatar_url", or_null(f_.avatar_url)},
            {"is_verified", f_.is_verified},
            {"is_active", f_.is_active},
            {"last_login_at", or_null(f_.last_login_at)},
            {"created_at", f_.created_at},
            {"updated_at", f_.updated_at}};
}

}  // namespace models
}  // namespace database
}  // namespace rootstream
