//! Encryption at rest: AES-256-GCM (OpenSSL) under a master key identified by a key id.
//!
//! A sealed value is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, stored beside the id of
//! the key that sealed it. The caller's context string (e.g. `mfa:user:42`) is authenticated as
//! associated data, so a value copied to another row does not open there. Several keys can be
//! loaded at once: the current one seals, every loaded one opens — that is how keys rotate.

use crate::config::Config;
use crate::error::{Error, Result};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use std::collections::HashMap;
use std::fmt;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A 256-bit key. Its bytes never appear in Debug output.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// Parses 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Key> {
        let bytes =
            hex::decode(hex_key.trim()).map_err(|_| Error::Config("a master key must be 64 hex digits".into()))?;
        let arr: [u8; 32] =
            bytes.try_into().map_err(|_| Error::Config("a master key must be 32 bytes (64 hex digits)".into()))?;
        Ok(Key(arr))
    }

    /// A fresh random key (for data keys and tests).
    pub fn generate() -> Result<Key> {
        let b = super::random::bytes(32)?;
        Ok(Key(b.try_into().expect("32 bytes")))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Best effort: do not leave key bytes in freed memory.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// Seals `plaintext` under `key`, binding it to `context`.
pub fn seal(key: &Key, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce = super::random::bytes(NONCE_LEN)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(Cipher::aes_256_gcm(), &key.0, Some(&nonce), context, plaintext, &mut tag)
        .map_err(|e| Error::Internal(format!("encryption failed: {e}")))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a sealed value. A wrong key, a different context or any changed byte fails the
/// authentication check: the result is an error, never garbage.
pub fn open(key: &Key, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Auth("encrypted value is truncated".into()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), &key.0, Some(nonce), context, ct, tag)
        .map_err(|_| Error::Auth("decryption failed: wrong master key, or the encrypted value was altered".into()))
}

/// The master keys: one current key that seals, any number of older keys that still open.
#[derive(Clone)]
pub struct Keyring {
    current_id: String,
    keys: HashMap<String, Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring").field("current_id", &self.current_id).field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(id: &str, key: Key) -> Result<Keyring> {
        if id.is_empty() || id.len() > 64 {
            return Err(Error::Config("a key id must have 1 to 64 characters".into()));
        }
        Ok(Keyring { current_id: id.to_string(), keys: HashMap::from([(id.to_string(), key)]) })
    }

    /// Adds an older key that can still open values sealed under it.
    pub fn with_old_key(mut self, id: &str, key: Key) -> Keyring {
        self.keys.entry(id.to_string()).or_insert(key);
        self
    }

    /// The keyring from `master_key` / `master_key_id` (default id `k1`) and `master_keys_old`
    /// (`id:hex,id:hex`).
    pub fn from_config(cfg: &Config) -> Result<Keyring> {
        let hex_key = cfg.master_key.as_deref().ok_or_else(|| {
            Error::Config(
                "master_key is not set (ROOTSTREAM_MASTER_KEY, 64 hex digits); it is needed to encrypt secrets".into(),
            )
        })?;
        let id = cfg.master_key_id.as_deref().unwrap_or("k1");
        let mut ring = Keyring::new(id, Key::from_hex(hex_key)?)?;
        for entry in &cfg.master_keys_old {
            let (old_id, old_hex) = entry
                .split_once(':')
                .ok_or_else(|| Error::Config("master_keys_old entries look like id:64-hex-digits".into()))?;
            ring = ring.with_old_key(old_id.trim(), Key::from_hex(old_hex)?);
        }
        Ok(ring)
    }

    pub fn current_id(&self) -> &str {
        &self.current_id
    }

    pub fn current(&self) -> &Key {
        &self.keys[&self.current_id]
    }

    /// Seals with the current key; returns (key id, sealed bytes).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<(String, Vec<u8>)> {
        Ok((self.current_id.clone(), seal(self.current(), context, plaintext)?))
    }

    /// Opens a value sealed under `key_id`.
    pub fn open(&self, key_id: &str, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let key = self.keys.get(key_id).ok_or_else(|| {
            Error::Config(format!(
                "the value was encrypted with master key {key_id:?}, which is not loaded (load it with master_keys_old)"
            ))
        })?;
        open(key, context, sealed).map_err(|_| {
            Error::Config(format!(
                "decryption with master key {key_id:?} failed: the key is not the one that encrypted this value, or the value was altered"
            ))
        })
    }

    /// An HMAC-SHA-256 of `data` under a key derived from the current master key for `purpose`.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> Result<Vec<u8>> {
        hmac_sha256(&self.derive(purpose)?, data)
    }

    /// The HMAC of `data` under every loaded key (current first), to check values made before a
    /// key rotation.
    pub fn mac_all(&self, purpose: &str, data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort_by_key(|id| (*id != &self.current_id, (*id).clone()));
        ids.into_iter()
            .map(|id| {
                let k = hmac_sha256(self.keys[id].as_bytes(), format!("rootstream-db:{purpose}").as_bytes())?;
                Ok((id.clone(), hmac_sha256(&k, data)?))
            })
            .collect()
    }

    /// A sub-key for one purpose: HMAC-SHA-256(master, "rootstream-db:" + purpose).
    fn derive(&self, purpose: &str) -> Result<Vec<u8>> {
        hmac_sha256(self.current().as_bytes(), format!("rootstream-db:{purpose}").as_bytes())
    }
}

/// HMAC-SHA-256.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let pkey = PKey::hmac(key).map_err(|e| Error::Internal(e.to_string()))?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).map_err(|e| Error::Internal(e.to_string()))?;
    signer.update(data).map_err(|e| Error::Internal(e.to_string()))?;
    signer.sign_to_vec().map_err(|e| Error::Internal(e.to_string()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let k = Key::generate().unwrap();
        let s = seal(&k, b"ctx", b"secret").unwrap();
        assert_eq!(open(&k, b"ctx", &s).unwrap(), b"secret");
        assert!(open(&k, b"other", &s).is_err());
        assert!(open(&Key::generate().unwrap(), b"ctx", &s).is_err());
        for i in 0..s.len() {
            let mut bad = s.clone();
            bad[i] ^= 1;
            assert!(open(&k, b"ctx", &bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(!s.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn a_rotated_keyring_opens_old_values_and_seals_with_the_new_key() {
        let old = Key::generate().unwrap();
        let ring_old = Keyring::new("k1", old.clone()).unwrap();
        let (id, sealed) = ring_old.seal(b"c", b"v").unwrap();
        assert_eq!(id, "k1");
        let ring_new = Keyring::new("k2", Key::generate().unwrap()).unwrap().with_old_key("k1", old);
        assert_eq!(ring_new.open(&id, b"c", &sealed).unwrap(), b"v");
        assert_eq!(ring_new.seal(b"c", b"v").unwrap().0, "k2");
        let without_old = Keyring::new("k2", Key::generate().unwrap()).unwrap();
        assert!(matches!(without_old.open("k1", b"c", &sealed), Err(Error::Config(_))));
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let k = Key::from_hex(&"ab".repeat(32)).unwrap();
        let ring = Keyring::new("k1", k.clone()).unwrap();
        assert!(!format!("{k:?}{ring:?}").contains("ab"));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
