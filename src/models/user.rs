//! Users: registration with Argon2id password hashes, login, profile, verification and
//! activation. Duplicate usernames or emails are refused with an error naming the field.

use super::{check_text, ts};
use crate::crypto::password;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;

/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub is_verified: bool,
    pub is_active: bool,
    #[serde(serialize_with = "opt_ts")]
    pub last_login_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "req_ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "req_ts")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn opt_ts<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&ts(t)),
        None => s.serialize_none(),
    }
}

pub(crate) fn req_ts<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&ts(t))
}

/// What registration needs. The password is hashed and then dropped; it is never stored.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub password: &'a str,
    pub display_name: Option<&'a str>,
}

impl std::fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .field("display_name", &self.display_name)
            .finish()
    }
}

const COLUMNS: &str =
    "id, username, email, display_name, avatar_url, is_verified, is_active, last_login_at, created_at, updated_at";

impl User {
    fn from_row(r: &Row) -> Self {
        User {
            id: r.get("id"),
            username: r.get("username"),
            email: r.get("email"),
            display_name: r.get("display_name"),
            avatar_url: r.get("avatar_url"),
            is_verified: r.get("is_verified"),
            is_active: r.get("is_active"),
            last_login_at: r.get("last_login_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// Checks an email address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn validate_email(email: &str) -> Result<()> {
    let bad = || Error::invalid(format!("{email:?} is not a valid email address"));
    if email.len() > 320 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-')) {
        return Err(bad());
    }
    Ok(())
}

/// Checks a username: 1 to 64 characters, not blank, no control characters.
pub fn validate_username(username: &str) -> Result<()> {
    if username.trim().is_empty() {
        return Err(Error::invalid("username must not be empty"));
    }
    check_text("username", username, 64, false)
}

fn map_unique(e: Error) -> Error {
    match e {
        Error::Conflict(m) if m.contains("users_username_key") => Error::Conflict("username already exists".into()),
        Error::Conflict(m) if m.contains("users_email_key") => Error::Conflict("email already exists".into()),
        other => other,
    }
}

/// Operations on users. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UserModel {
    db: DatabaseManager,
    broadcast: super::Broadcaster,
}

impl UserModel {
    pub fn new(db: DatabaseManager) -> Self {
        UserModel { db, broadcast: super::Broadcaster::default() }
    }

    /// Announces profile, verification and activation changes through `sync` from now on (None
    /// stops it): the event `user.updated` and the shared `user` entity's `username`,
    /// `display_name`, `avatar_url`, `is_active`, `is_verified` fields. Clones share this.
    pub fn set_sync(&self, sync: Option<crate::sync::StateSyncManager>) {
        self.broadcast.set(sync);
    }

    fn announce(&self, user: &User, changed: &[&str]) {
        let fields = serde_json::json!({
            "username": user.username, "display_name": user.display_name, "avatar_url": user.avatar_url,
            "is_active": user.is_active, "is_verified": user.is_verified,
        });
        let payload = serde_json::json!({"type": "user.updated", "user_id": user.id, "changed": changed});
        self.broadcast.announce("user.updated", "user", user.id, &payload, fields);
    }

    /// Registers a user. Username and email are unique without regard to case.
    pub async fn create(&self, new: NewUser<'_>) -> Result<User> {
        validate_username(new.username)?;
        validate_email(new.email)?;
        password::check_policy(new.password)?;
        if let Some(d) = new.display_name {
            check_text("display_name", d, 128, false)?;
        }
        let hash = password::hash_async(new.password.to_string()).await?;
        let sql = format!(
            "INSERT INTO users (username, email, password_hash, display_name) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        );
        let row =
            self.db.query(&sql, &[&new.username, &new.email, &hash, &new.display_name]).await.map_err(map_unique)?;
        Ok(User::from_row(&row[0]))
    }

    async fn one(
        &self,
        where_sql: &str,
        param: &(dyn tokio_postgres::types::ToSql + Sync),
        what: String,
    ) -> Result<User> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE {where_sql}");
        match self.db.query_opt(&sql, &[param]).await? {
            Some(r) => Ok(User::from_row(&r)),
            None => Err(Error::NotFound(what)),
        }
    }

    pub async fn find_by_id(&self, id: i64) -> Result<User> {
        self.one("id = $1", &id, format!("user {id}")).await
    }

    pub async fn find_by_username(&self, username: &str) -> Result<User> {
        self.one("lower(username) = lower($1)", &username, format!("user {username:?}")).await
    }

    pub async fn find_by_email(&self, email: &str) -> Result<User> {
        self.one("lower(email) = lower($1)", &email, format!("user with email {email:?}")).await
    }

    /// Checks a password for a user id. Unknown users are an error; a wrong password is `false`.
    pub async fn verify_password(&self, id: i64, candidate: &str) -> Result<bool> {
        let row = self
            .db
            .query_opt("SELECT password_hash FROM users WHERE id = $1", &[&id])
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
        password::verify_async(candidate.to_string(), row.get(0)).await
    }

    /// Logs in with a username or email and a password. Unknown users, wrong passwords and
    /// deactivated accounts all fail with the same `Auth` error, after the same amount of work.
    /// Success records the login time and upgrades an outdated hash.
    pub async fn authenticate(&self, login: &str, candidate: &str) -> Result<User> {
        let row = self
            .db
            .query_opt(
                "SELECT id, password_hash, is_active FROM users WHERE lower(username) = lower($1) OR lower(email) = lower($1) ORDER BY (lower(username) = lower($1)) DESC, id LIMIT 1",
                &[&login],
            )
            .await?;
        let (id, hash, active): (i64, String, bool) = match row {
            Some(r) => (r.get(0), r.get(1), r.get(2)),
            None => (0, password::decoy_hash().to_string(), false),
        };
        let hash_for_check = hash.clone();
        let ok = password::verify_async(candidate.to_string(), hash_for_check).await.unwrap_or(false);
        if !ok || !active || id == 0 {
            return Err(Error::Auth("invalid login or password".into()));
        }
        if password::needs_rehash(&hash) {
            let new_hash = password::hash_async(candidate.to_string()).await?;
            self.db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&id, &new_hash]).await?;
        }
        self.record_login(id).await
    }

    /// Changes display name and/or avatar URL; `None` leaves a field as it is.
    pub async fn update_profile(&self, id: i64, display_name: Option<&str>, avatar_url: Option<&str>) -> Result<User> {
        if let Some(d) = display_name {
            check_text("display_name", d, 128, false)?;
        }
        if let Some(a) = avatar_url {
            check_text("avatar_url", a, 2048, false)?;
        }
        let sql = format!(
            "UPDATE users SET display_name = COALESCE($2, display_name), avatar_url = COALESCE($3, avatar_url) WHERE id = $1 RETURNING {COLUMNS}"
        );
        let user = self.returning(&sql, id, &[&display_name, &avatar_url]).await?;
        self.announce(&user, &["display_name", "avatar_url"]);
        Ok(user)
    }

    async fn returning(
        &self,
        sql: &str,
        id: i64,
        extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<User> {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&id];
        params.extend_from_slice(extra);
        match self.db.query_opt(sql, &params).await? {
            Some(r) => Ok(User::from_row(&r)),
            None => Err(Error::NotFound(format!("user {id}"))),
        }
    }

    /// Marks the account's email as verified.
    pub async fn mark_verified(&self, id: i64) -> Result<User> {
        let user = self
            .returning(&format!("UPDATE users SET is_verified = TRUE WHERE id = $1 RETURNING {COLUMNS}"), id, &[])
            .await?;
        self.announce(&user, &["is_verified"]);
        Ok(user)
    }

    /// Activates or deactivates the account; a deactivated account cannot log in.
    pub async fn set_active(&self, id: i64, active: bool) -> Result<User> {
        let user = self
            .returning(&format!("UPDATE users SET is_active = $2 WHERE id = $1 RETURNING {COLUMNS}"), id, &[&active])
            .await?;
        self.announce(&user, &["is_active"]);
        Ok(user)
    }

    /// Records a login now.
    pub async fn record_login(&self, id: i64) -> Result<User> {
        self.returning(&format!("UPDATE users SET last_login_at = now() WHERE id = $1 RETURNING {COLUMNS}"), id, &[])
            .await
    }

    /// Replaces the password (policy-checked, hashed).
    pub async fn change_password(&self, id: i64, new_password: &str) -> Result<()> {
        password::check_policy(new_password)?;
        let hash = password::hash_async(new_password.to_string()).await?;
        let n = self.db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", &[&id, &hash]).await?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {id}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_validation_accepts_ordinary_and_odd_but_valid_addresses() {
        for ok in ["a@b.co", "o'brien+tag@example.com", "x;--@sub.example.org"] {
            validate_email(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "plain", "@x.io", "a@", "a@b", "a b@c.io", "a@b..io", "a@-b.io"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_user_debug_hides_the_password() {
        let n = NewUser { username: "u", email: "e@x.io", password: "s3cret-pass", display_name: None };
        assert!(!format!("{n:?}").contains("s3cret"));
    }
}
