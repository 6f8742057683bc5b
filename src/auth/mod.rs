//! Authentication building blocks: password hashing and secure random values.

pub mod password;
pub mod random;
