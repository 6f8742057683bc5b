//! `MfaManager`: TOTP second factor (RFC 6238) with enrollment confirmed by a first code,
//! ±1 step skew, single use of every code, lockout after repeated failures, an attempt log,
//! single-use backup codes, and secrets encrypted at rest under the master key.

use super::qr;
use super::totp::{self, TotpParams};
use crate::cache::RedisClient;
use crate::config::Config;
use crate::crypto::envelope::Keyring;
use crate::crypto::random;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use crate::events::{EventStore, NewEvent};
use crate::models::session::{Session, SessionModel};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The reason logged for an attempt refused during a lockout.
const LOCKED_REASON: &str = "locked out";

/// The reason recorded on the sessions an administrator's reset revokes, unless one is given.
pub const RESET_REVOKE_REASON: &str = "mfa reset";

/// What [`MfaManager::admin_reset`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdminReset {
    /// The user whose MFA enrollment was removed.
    pub user_id: i64,
    /// How many active sessions were revoked.
    pub sessions_revoked: u64,
}

/// Backup codes per user.
pub const BACKUP_CODES: usize = 10;
/// Crockford's base32 alphabet: no I, L, O or U, so codes survive being read aloud or written
/// down; 10 characters carry 50 bits.
const BACKUP_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What a user needs to add the account to an authenticator app. Shown once.
#[derive(Clone, Serialize)]
pub struct Enrollment {
    /// The secret in base32, for typing in by hand.
    pub secret_base32: String,
    /// `otpauth://totp/...` — what the QR code holds.
    pub otpauth_uri: String,
    /// The QR code as SVG.
    pub qr_svg: String,
    /// The QR code as PNG bytes (base64 in JSON).
    #[serde(serialize_with = "b64")]
    pub qr_png: Vec<u8>,
}

fn b64<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment { secret: <redacted>, otpauth_uri: <redacted>, .. }")
    }
}

/// A user's MFA state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MfaStatus {
    /// A secret exists (enrollment started).
    pub enrolled: bool,
    /// Enrollment was confirmed: logins need the second factor.
    pub enabled: bool,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub backup_codes_remaining: i64,
    /// Set while too many recent failures lock the user out.
    pub locked_until: Option<DateTime<Utc>>,
    /// Id of the master key that encrypts the secret.
    pub key_id: Option<String>,
}

/// The second factor.
#[derive(Clone)]
pub struct MfaManager {
    db: DatabaseManager,
    redis: Option<RedisClient>,
    events: EventStore,
    keyring: Keyring,
    params: TotpParams,
    issuer: String,
    max_failures: i64,
    window: Duration,
}

impl std::fmt::Debug for MfaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaManager").field("keyring", &self.keyring).field("issuer", &self.issuer).finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn context(user_id: i64) -> Vec<u8> {
    format!("mfa:user:{user_id}").into_bytes()
}

/// Upper-cases, drops separators and reads O as 0 and I/L as 1 (Crockford), so `abcde-fghjk`
/// and `ABCDEFGHJK` are the same code.
fn normalize_backup(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

impl MfaManager {
    /// Needs `master_key` in the configuration. `redis` (optional) receives `mfa.*` events.
    pub fn new(db: DatabaseManager, redis: Option<RedisClient>, cfg: &Config) -> Result<Self> {
        Ok(MfaManager {
            events: EventStore::new(db.clone()),
            db,
            redis,
            keyring: Keyring::from_config(cfg)?,
            params: TotpParams::default(),
            issuer: cfg.mfa_issuer.clone(),
            max_failures: cfg.mfa_max_failures as i64,
            window: cfg.mfa_lockout_window,
        })
    }

    /// Uses other TOTP parameters for new enrollments (default SHA-1, 6 digits, 30 s, ±1).
    pub fn with_params(mut self, params: TotpParams) -> Self {
        self.params = params;
        self
    }

    /// Starts (or restarts) enrollment: a new 160-bit secret, encrypted and stored, not yet
    /// enabled. Refused while MFA is enabled (unenroll first).
    pub async fn begin_enrollment(&self, user_id: i64, account_name: &str) -> Result<Enrollment> {
        crate::models::check_text("account_name", account_name, 256, false)?;
        if account_name.is_empty() {
            return Err(Error::invalid("account_name must not be empty"));
        }
        if self.status(user_id).await?.enabled {
            return Err(Error::State(format!("user {user_id} already has MFA enabled; unenroll first")));
        }
        let secret = random::bytes(20)?;
        // Everything that can refuse the request runs before anything is written.
        let uri = totp::otpauth_uri(&secret, &self.params, &self.issuer, account_name)?;
        let enrollment = Enrollment {
            secret_base32: totp::base32(&secret),
            qr_svg: qr::svg(&uri)?,
            qr_png: qr::png(&uri, 6)?,
            otpauth_uri: uri,
        };
        let (key_id, sealed) = self.keyring.seal(&context(user_id), &secret)?;
        let n = self
            .db
            .execute(
                "INSERT INTO user_mfa (user_id, secret_encrypted, key_id, algorithm, digits, period_seconds)
                 SELECT id, $2, $3, $4, $5, $6 FROM users WHERE id = $1
                 ON CONFLICT (user_id) DO UPDATE SET secret_encrypted = EXCLUDED.secret_encrypted, key_id = EXCLUDED.key_id,
                     algorithm = EXCLUDED.algorithm, digits = EXCLUDED.digits, period_seconds = EXCLUDED.period_seconds,
                     enabled = FALSE, confirmed_at = NULL, last_used_step = 0",
                &[
                    &user_id,
                    &sealed,
                    &key_id,
                    &totp::algorithm_name(self.params.algorithm),
                    &(self.params.digits as i16),
                    &(self.params.period as i16),
                ],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {user_id}")));
        }
        Ok(enrollment)
    }

    /// Confirms enrollment with a first valid code; returns the backup codes (shown once).
    pub async fn confirm_enrollment(&self, user_id: i64, code: &str, ip: Option<&str>) -> Result<Vec<String>> {
        let st = self.status(user_id).await?;
        if !st.enrolled {
            return Err(Error::State(format!("user {user_id} has not started MFA enrollment")));
        }
        if st.enabled {
            return Err(Error::State(format!("user {user_id} already confirmed MFA")));
        }
        if !self.check_totp(user_id, code, ip, None, "enroll").await? {
            return Err(Error::Auth("the code is not valid".into()));
        }
        self.db
            .execute("UPDATE user_mfa SET enabled = TRUE, confirmed_at = now() WHERE user_id = $1", &[&user_id])
            .await?;
        let codes = self.regenerate_backup_codes(user_id).await?;
        self.announce("mfa.enrolled", user_id, json!({})).await;
        Ok(codes)
    }

    /// Checks a TOTP code for an enabled user. `Ok(false)` for a wrong or already used code,
    /// `Err(Locked)` while locked out. Every attempt is logged.
    pub async fn verify(&self, user_id: i64, code: &str, ip: Option<&str>, session_id: Option<i64>) -> Result<bool> {
        let st = self.status(user_id).await?;
        if !st.enabled {
            return Err(Error::State(format!("user {user_id} has no confirmed MFA")));
        }
        self.check_totp(user_id, code, ip, session_id, "totp").await
    }

    async fn check_totp(
        &self,
        user_id: i64,
        code: &str,
        ip: Option<&str>,
        session_id: Option<i64>,
        method: &str,
    ) -> Result<bool> {
        self.ensure_not_locked(user_id, method, ip, session_id).await?;
        let row = self
            .db
            .query_opt(
                "SELECT secret_encrypted, key_id, algorithm, digits, period_seconds FROM user_mfa WHERE user_id = $1",
                &[&user_id],
            )
            .await?
            .ok_or_else(|| Error::State(format!("user {user_id} has no MFA secret")))?;
        let sealed: Vec<u8> = row.get(0);
        let key_id: String = row.get(1);
        let params = TotpParams {
            algorithm: totp::parse_algorithm(&row.get::<_, String>(2))?,
            digits: row.get::<_, i16>(3) as u8,
            period: row.get::<_, i16>(4) as u64,
            skew: self.params.skew,
        };
        let secret = self.keyring.open(&key_id, &context(user_id), &sealed)?;
        let step = totp::matching_step(&secret, &params, code, now_unix())?;
        let (ok, reason) = match step {
            None => (false, "wrong code"),
            Some(step) => {
                // Accept each time step once: the same code (or any earlier one) never again.
                let n = self
                    .db
                    .execute(
                        "UPDATE user_mfa SET last_used_step = $2 WHERE user_id = $1 AND last_used_step < $2",
                        &[&user_id, &(step as i64)],
                    )
                    .await?;
                if n == 1 {
                    (true, "ok")
                } else {
                    (false, "code already used")
                }
            }
        };
        if !ok {
            crate::metrics::library::bump(&crate::metrics::library::counters().mfa_failures, 1);
        }
        self.log_attempt(user_id, session_id, method, ok, reason, ip).await?;
        if !ok {
            self.announce("mfa.failed", user_id, json!({"method": method, "reason": reason, "ip_address": ip})).await;
            if self.locked_until(user_id).await?.is_some() {
                self.announce("mfa.locked", user_id, json!({"ip_address": ip})).await;
            }
        }
        Ok(ok)
    }

    /// Checks a backup code; each code works once. `Err(Locked)` while locked out.
    pub async fn verify_backup_code(
        &self,
        user_id: i64,
        code: &str,
        ip: Option<&str>,
        session_id: Option<i64>,
    ) -> Result<bool> {
        self.ensure_not_locked(user_id, "backup_code", ip, session_id).await?;
        let normalized = normalize_backup(code);
        let hashes: Vec<String> = self
            .keyring
            .mac_all("backup-code", format!("{user_id}:{normalized}").as_bytes())?
            .into_iter()
            .map(|(_, h)| hex::encode(h))
            .collect();
        let used = self
            .db
            .query_opt(
                "UPDATE mfa_backup_codes SET used_at = now()
                 WHERE id = (SELECT id FROM mfa_backup_codes WHERE user_id = $1 AND code_hash = ANY($2) AND used_at IS NULL LIMIT 1)
                   AND used_at IS NULL
                 RETURNING id",
                &[&user_id, &hashes],
            )
            .await?
            .is_some();
        let reason = if used { "ok" } else { "wrong or used backup code" };
        if !used {
            crate::metrics::library::bump(&crate::metrics::library::counters().mfa_failures, 1);
        }
        self.log_attempt(user_id, session_id, "backup_code", used, reason, ip).await?;
        if used {
            self.announce("mfa.backup_code_used", user_id, json!({"ip_address": ip})).await;
        } else {
            self.announce("mfa.failed", user_id, json!({"method": "backup_code", "reason": reason, "ip_address": ip}))
                .await;
        }
        Ok(used)
    }

    /// Replaces all backup codes with 10 new ones (the old set stops working). Shown once.
    pub async fn regenerate_backup_codes(&self, user_id: i64) -> Result<Vec<String>> {
        let mut codes = Vec::with_capacity(BACKUP_CODES);
        let mut rows: Vec<String> = Vec::with_capacity(BACKUP_CODES);
        while codes.len() < BACKUP_CODES {
            let raw = random::bytes(10)?;
            let chars: String = raw.iter().map(|b| BACKUP_ALPHABET[(*b as usize) % 32] as char).collect();
            let code = format!("{}-{}", &chars[..5], &chars[5..]);
            let h = hex::encode(
                self.keyring.mac("backup-code", format!("{user_id}:{}", normalize_backup(&code)).as_bytes())?,
            );
            if !rows.contains(&h) {
                rows.push(h);
                codes.push(code);
            }
        }
        let mut tx = self.db.begin().await?;
        tx.execute("DELETE FROM mfa_backup_codes WHERE user_id = $1", &[&user_id]).await?;
        tx.execute(
            "INSERT INTO mfa_backup_codes (user_id, code_hash, key_id) SELECT $1, h, $3 FROM unnest($2::text[]) AS h",
            &[&user_id, &rows, &self.keyring.current_id()],
        )
        .await?;
        tx.commit().await?;
        self.announce("mfa.backup_codes_regenerated", user_id, json!({})).await;
        Ok(codes)
    }

    /// Removes MFA (secret and backup codes) from a user. Sessions stay as they are; for a lost
    /// device use [`admin_reset`](Self::admin_reset). `NotFound` when the user has no enrollment.
    pub async fn unenroll(&self, user_id: i64) -> Result<()> {
        let mut tx = self.db.begin().await?;
        tx.execute("DELETE FROM mfa_backup_codes WHERE user_id = $1", &[&user_id]).await?;
        let n = tx.execute("DELETE FROM user_mfa WHERE user_id = $1", &[&user_id]).await?;
        tx.commit().await?;
        if n == 0 {
            return Err(Error::NotFound(format!("MFA enrollment of user {user_id}")));
        }
        self.announce("mfa.unenrolled", user_id, json!({})).await;
        Ok(())
    }

    /// The administrator's reset for a lost device without backup codes: removes the user's MFA
    /// and revokes every active session of the user (with `reason`, default
    /// [`RESET_REVOKE_REASON`]), so whoever holds the device or a half-finished login is out;
    /// the user logs in with the password and enrolls again. `NotFound` (and nothing revoked)
    /// when the user has no MFA enrollment.
    ///
    /// Sessions are revoked before the enrollment is removed, so a reset that fails half-way
    /// (say, the database goes away between the two steps) can simply be run again: the
    /// enrollment is still there to find, and no session outlives a reset that reported success.
    pub async fn admin_reset(&self, sessions: &SessionModel, user_id: i64, reason: Option<&str>) -> Result<AdminReset> {
        if !self.status(user_id).await?.enrolled {
            return Err(Error::NotFound(format!("MFA enrollment of user {user_id}")));
        }
        let revoked = sessions.revoke_all(user_id, None, Some(reason.unwrap_or(RESET_REVOKE_REASON))).await?;
        self.unenroll(user_id).await?;
        Ok(AdminReset { user_id, sessions_revoked: revoked })
    }

    /// The user's MFA state.
    pub async fn status(&self, user_id: i64) -> Result<MfaStatus> {
        let row = self
            .db
            .query_opt(
                "SELECT enabled, confirmed_at, key_id,
                        (SELECT count(*) FROM mfa_backup_codes WHERE user_id = $1 AND used_at IS NULL)
                 FROM user_mfa WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        let locked_until = self.locked_until(user_id).await?;
        Ok(match row {
            Some(r) => MfaStatus {
                enrolled: true,
                enabled: r.get(0),
                confirmed_at: r.get(1),
                key_id: Some(r.get(2)),
                backup_codes_remaining: r.get(3),
                locked_until,
            },
            None => MfaStatus {
                enrolled: false,
                enabled: false,
                confirmed_at: None,
                key_id: None,
                backup_codes_remaining: 0,
                locked_until,
            },
        })
    }

    /// When the lockout ends, if the user is locked out now: `max_failures` failures within the
    /// window since the last success lock the user until the oldest of them leaves the window.
    pub async fn locked_until(&self, user_id: i64) -> Result<Option<DateTime<Utc>>> {
        let row = self
            .db
            .query_opt(
                "WITH recent AS (
                     SELECT created_at FROM mfa_attempts
                     WHERE user_id = $1 AND NOT success AND reason <> $4
                       AND created_at > now() - make_interval(secs => $2)
                       AND created_at > COALESCE((SELECT max(created_at) FROM mfa_attempts WHERE user_id = $1 AND success), '-infinity')
                     ORDER BY created_at DESC LIMIT $3)
                 SELECT CASE WHEN count(*) >= $3 THEN min(created_at) + make_interval(secs => $2) END FROM recent",
                &[&user_id, &self.window.as_secs_f64(), &self.max_failures, &LOCKED_REASON],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Refuses (and logs) an attempt while the user is locked out. Refused attempts do not count
    /// toward the lockout, so hammering a locked account does not extend the lock.
    async fn ensure_not_locked(
        &self,
        user_id: i64,
        method: &str,
        ip: Option<&str>,
        session_id: Option<i64>,
    ) -> Result<()> {
        if let Some(until) = self.locked_until(user_id).await? {
            self.log_attempt(user_id, session_id, method, false, LOCKED_REASON, ip).await?;
            return Err(Error::Locked(format!(
                "too many failed MFA attempts; try again after {}",
                crate::models::ts(&until)
            )));
        }
        Ok(())
    }

    async fn log_attempt(
        &self,
        user_id: i64,
        session_id: Option<i64>,
        method: &str,
        ok: bool,
        reason: &str,
        ip: Option<&str>,
    ) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO mfa_attempts (user_id, session_id, method, success, reason, ip_address) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&user_id, &session_id, &method, &ok, &reason, &ip],
            )
            .await?;
        Ok(())
    }

    async fn announce(&self, event: &str, user_id: i64, extra: serde_json::Value) {
        let mut payload = json!({"type": event, "user_id": user_id, "at": crate::models::ts(&Utc::now())});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let _ = self
            .events
            .record("mfa", &user_id.to_string(), NewEvent::new(event, payload.clone()).by_user(user_id))
            .await;
        if let Some(r) = &self.redis {
            let _ = r.publish(event, payload.to_string()).await;
        }
    }

    /// The second step of a login: checks a TOTP code — or, when it looks like one, a backup
    /// code — for the session's user and marks the session MFA-verified.
    pub async fn complete_login(
        &self,
        sessions: &SessionModel,
        token: &str,
        fingerprint: &str,
        code: &str,
        ip: Option<&str>,
    ) -> Result<Session> {
        let s = sessions.validate(token, fingerprint, false).await?;
        if !s.mfa_required {
            return Ok(s);
        }
        let digits_only = code.trim().bytes().all(|b| b.is_ascii_digit());
        let ok = if digits_only {
            self.verify(s.user_id, code, ip, Some(s.id)).await?
        } else {
            self.verify_backup_code(s.user_id, code, ip, Some(s.id)).await?
        };
        if !ok {
            return Err(Error::Auth("the second factor was not accepted".into()));
        }
        let s = sessions.mark_mfa_verified(token).await?;
        self.announce("mfa.verified", s.user_id, json!({"session_id": s.id, "ip_address": ip})).await;
        Ok(s)
    }

    /// Re-encrypts every secret that is not under the current master key; returns how many.
    /// Run it after making a new key current (with the old one in `master_keys_old`).
    pub async fn rotate_keys(&self) -> Result<u64> {
        let rows = self
            .db
            .query(
                "SELECT user_id, secret_encrypted, key_id FROM user_mfa WHERE key_id <> $1",
                &[&self.keyring.current_id()],
            )
            .await?;
        let mut n = 0;
        for r in rows {
            let user_id: i64 = r.get(0);
            let secret = self.keyring.open(&r.get::<_, String>(2), &context(user_id), &r.get::<_, Vec<u8>>(1))?;
            let (key_id, sealed) = self.keyring.seal(&context(user_id), &secret)?;
            n += self
                .db
                .execute(
                    "UPDATE user_mfa SET secret_encrypted = $2, key_id = $3 WHERE user_id = $1 AND key_id = $4",
                    &[&user_id, &sealed, &key_id, &r.get::<_, String>(2)],
                )
                .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_normalize_like_crockford_base32() {
        assert_eq!(normalize_backup("abcde-fghjk"), "ABCDEFGHJK");
        assert_eq!(normalize_backup(" O1Il0 "), "01110");
    }

    #[test]
    fn enrollment_debug_hides_the_secret() {
        let e = Enrollment {
            secret_base32: "JBSWY3DPEHPK3PXP".into(),
            otpauth_uri: "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP".into(),
            qr_svg: String::new(),
            qr_png: Vec::new(),
        };
        assert!(!format!("{e:?}").contains("JBSWY3DP"));
    }
}
