//! TOTP (RFC 6238) over totp-rs, with the step-by-step window our replay protection needs.
//!
//! totp-rs generates the code for a given time; checking is ours: every step in the skew window
//! is compared in constant time, and the matching *step* is returned, so the caller can accept
//! each step at most once.

use crate::crypto::envelope::constant_time_eq;
use crate::error::{Error, Result};
use totp_rs::{Algorithm, Builder, Totp};

/// TOTP parameters (defaults: SHA-1, 6 digits, 30 s, ±1 step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u64,
    pub skew: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        TotpParams { algorithm: Algorithm::SHA1, digits: 6, period: 30, skew: 1 }
    }
}

/// Name of an algorithm as stored and as written in otpauth URIs.
pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::SHA1 => "SHA1",
        Algorithm::SHA256 => "SHA256",
        Algorithm::SHA512 => "SHA512",
        #[allow(unreachable_patterns)]
        _ => "SHA1",
    }
}

/// Parses a stored algorithm name.
pub fn parse_algorithm(name: &str) -> Result<Algorithm> {
    match name {
        "SHA1" => Ok(Algorithm::SHA1),
        "SHA256" => Ok(Algorithm::SHA256),
        "SHA512" => Ok(Algorithm::SHA512),
        other => Err(Error::invalid(format!("unknown TOTP algorithm {other:?}"))),
    }
}

fn build(secret: &[u8], p: &TotpParams, issuer: &str, account: &str, compliant: bool) -> Result<Totp> {
    let b = Builder::new()
        .with_algorithm(p.algorithm)
        .with_digits(p.digits)
        .with_step_duration(p.period)
        .with_skew(p.skew as u16)
        .with_secret(secret.to_vec())
        .with_account_name(account.to_string())
        .with_issuer(Some(issuer.to_string()));
    if compliant {
        b.build().map_err(|e| Error::invalid(format!("TOTP parameters rejected: {e:?}")))
    } else {
        Ok(b.build_noncompliant())
    }
}

/// The code for Unix time `t` (seconds). Also accepts RFC test secrets shorter than 128 bits.
pub fn code_at(secret: &[u8], p: &TotpParams, t: u64) -> Result<String> {
    Ok(build(secret, p, "x", "x", false)?.generate(t).to_string())
}

/// Checks `code` against the steps around `t`; returns the matching step, if any. Every step of
/// the window is computed and compared, so the time taken does not depend on which one matches.
pub fn matching_step(secret: &[u8], p: &TotpParams, code: &str, t: u64) -> Result<Option<u64>> {
    let code = code.trim();
    if code.len() != p.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = build(secret, p, "x", "x", false)?;
    let now_step = t / p.period;
    let mut found = None;
    for step in now_step.saturating_sub(p.skew)..=now_step + p.skew {
        let candidate = totp.generate(step * p.period).to_string();
        if constant_time_eq(candidate.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    Ok(found)
}

/// The default-parameter code of a base32 secret at `unix_time` (0 = now).
pub fn code_for_base32(secret_base32: &str, unix_time: u64) -> Result<String> {
    let secret = base32_decode(secret_base32).ok_or_else(|| Error::invalid("the secret is not valid base32"))?;
    let t = if unix_time == 0 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    } else {
        unix_time
    };
    code_at(&secret, &TotpParams::default(), t)
}

/// Decodes RFC 4648 base32 (padding, spaces and case ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            b'=' | b' ' | b'-' => continue,
            _ => return None,
        } as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            out.push((buf >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The otpauth:// URI that authenticator apps read (from the QR code).
pub fn otpauth_uri(secret: &[u8], p: &TotpParams, issuer: &str, account: &str) -> Result<String> {
    build(secret, p, issuer, account, true)?.to_url().map_err(|e| Error::Internal(format!("otpauth URI: {e:?}")))
}

/// The secret in base32 without padding, for typing into an app by hand.
pub fn base32(secret: &[u8]) -> String {
    base32_encode(secret)
}

fn base32_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 Appendix B: each hash has its own seed length.
    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let rows: &[(u64, &str, &str, &str)] = &[
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for &(t, sha1, sha256, sha512) in rows {
            for (alg, seed, want) in [
                (Algorithm::SHA1, SEED20, sha1),
                (Algorithm::SHA256, SEED32, sha256),
                (Algorithm::SHA512, SEED64, sha512),
            ] {
                let p = TotpParams { algorithm: alg, digits: 8, period: 30, skew: 1 };
                assert_eq!(code_at(seed, &p, t).unwrap(), want, "{alg:?} at {t}");
            }
        }
    }

    #[test]
    fn the_window_reports_which_step_matched() {
        let p = TotpParams::default();
        let secret = b"0123456789abcdef0123";
        let t = 1_700_000_000u64;
        let step = t / 30;
        for d in [-1i64, 0, 1] {
            let s = (step as i64 + d) as u64;
            let code = code_at(secret, &p, s * 30).unwrap();
            assert_eq!(matching_step(secret, &p, &code, t).unwrap(), Some(s));
        }
        let far = code_at(secret, &p, (step + 2) * 30).unwrap();
        let near: Vec<String> = (0..3).map(|i| code_at(secret, &p, (step - 1 + i) * 30).unwrap()).collect();
        if !near.contains(&far) {
            assert_eq!(matching_step(secret, &p, &far, t).unwrap(), None, "two steps away is outside ±1");
        }
        assert_eq!(matching_step(secret, &p, "12ab56", t).unwrap(), None);
        assert_eq!(matching_step(secret, &p, "1234567", t).unwrap(), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert!(base32_decode("not base32!").is_none());
    }
}
