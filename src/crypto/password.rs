//! Password hashing with Argon2id.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1 — the OWASP Password Storage Cheat Sheet's first
//! recommended Argon2id configuration. Hashes are PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) that carry their own parameters, so
//! raising the cost later keeps old hashes verifiable, and `needs_rehash` says which to upgrade.

use crate::error::{Error, Result};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;
/// Longest accepted password in bytes; longer input is refused rather than hashed.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest accepted password in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the password policy: length between the limits.
pub fn check_policy(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!("password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// Hashes a password with a fresh 16-byte salt. CPU-heavy (tens of milliseconds): call it from
/// a blocking context, as [`hash_async`] does.
pub fn hash(password: &str) -> Result<String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    let salt = super::random::bytes(16)?;
    let h = hasher()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(format!("hashing failed: {e}")))?;
    Ok(h.to_string())
}

/// Verifies a password against a PHC hash in constant time. A malformed hash is an error,
/// a wrong password is `Ok(false)`.
pub fn verify(password: &str, phc: &str) -> Result<bool> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(false);
    }
    match hasher().verify_password(password.as_bytes(), phc) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(Error::Internal(format!("stored password hash is unusable: {e}"))),
    }
}

/// True when a stored hash uses other parameters than the current ones.
pub fn needs_rehash(phc: &str) -> bool {
    let want = format!("$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={PARALLELISM}$");
    !phc.starts_with(&want)
}

/// [`hash`] on the blocking thread pool.
pub async fn hash_async(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash(&password)).await.map_err(|e| Error::Internal(e.to_string()))?
}

/// [`verify`] on the blocking thread pool.
pub async fn verify_async(password: String, phc: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || verify(&password, &phc)).await.map_err(|e| Error::Internal(e.to_string()))?
}

/// A hash of a random password, verified against when a login names an unknown user, so the
/// answer takes as long as for a known one and does not reveal which accounts exist.
pub fn decoy_hash() -> &'static str {
    static DECOY: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    DECOY.get_or_init(|| hash(&super::random::token_hex(16).unwrap_or_default()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h).unwrap());
        assert!(!verify("correct horse batterY", &h).unwrap());
        assert!(!needs_rehash(&h));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        assert_ne!(hash("same password").unwrap(), hash("same password").unwrap());
    }

    #[test]
    fn hashes_with_older_parameters_still_verify_and_ask_for_a_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap())
            .hash_password_with_salt(b"old password", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(verify("old password", &weak).unwrap());
        assert!(needs_rehash(&weak));
    }

    #[test]
    fn policy_rejects_short_and_huge_passwords() {
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_policy("long enough").is_ok());
        assert!(verify("x", "not a hash").is_err());
    }
}
