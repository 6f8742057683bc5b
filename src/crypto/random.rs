//! Random values from the operating system's CSPRNG.

use crate::error::{Error, Result};

/// `n` bytes from the OS random source.
pub fn bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("the OS random source failed: {e}")))?;
    Ok(buf)
}

/// `n` random bytes as URL-safe text (lowercase hex).
pub fn token_hex(n: usize) -> Result<String> {
    Ok(hex::encode(bytes(n)?))
}
