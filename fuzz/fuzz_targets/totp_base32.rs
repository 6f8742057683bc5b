//! The base32 TOTP secret decoder (otpauth `secret=`, `rsdb`/C API `code_for_base32`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rootstream_db::auth::totp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match totp::base32_decode(text) {
        Some(secret) => {
            assert_eq!(totp::base32_decode(&totp::base32(&secret)).as_deref(), Some(&secret[..]));
            let code = totp::code_for_base32(text, 1_111_111_111).expect("a decodable secret gives a code");
            assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
        }
        None => assert!(totp::code_for_base32(text, 1_111_111_111).is_err()),
    }
});
