//! The login use-case on top of sessions: the TOTP second factor (`mfa`, `totp`) with backup
//! codes, and the QR codes shown at enrollment (`qr`). Primitives live in [`crate::crypto`].

pub mod mfa;
pub mod qr;
pub mod totp;
