//! Cryptographic primitives shared by every area: the AES-256-GCM envelope and master-key
//! keyring (`envelope`), HMAC and constant-time comparison, Argon2id password hashing
//! (`password`) and random values from the OS (`random`). Nothing here knows about users,
//! sessions or backups; models, `auth` and `backup` build on it.

pub mod envelope;
pub mod password;
pub mod random;
