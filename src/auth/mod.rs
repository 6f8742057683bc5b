//! Authentication building blocks: password hashing and secure random values.

pub mod crypto;
pub mod mfa;
pub mod password;
pub mod qr;
pub mod random;
pub mod totp;
