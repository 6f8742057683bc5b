//! The C ABI. Every function here is a thin adapter: check and convert arguments, call the
//! core once, map the result to a status code. No panic crosses this boundary.
//!
//! Conventions (also in the header): `0` is success and negative values are the `RSDB_ERR_*`
//! codes; `rsdb_last_error()` describes the latest failure on the calling thread; strings are
//! UTF-8 and NUL-terminated; strings returned through `char **out` parameters are owned by the
//! caller and released with `rsdb_string_free`; handles are released with their own `*_free`
//! or `*_close` function, which accept NULL.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod auth;
pub mod backup;
pub mod config;
pub mod db;
pub mod events;
pub mod models;
pub mod redis;

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const RSDB_OK: c_int = 0;
/// A required pointer or handle was NULL.
pub const RSDB_ERR_NULL: c_int = -1;
/// A string argument was not valid UTF-8.
pub const RSDB_ERR_INVALID_UTF8: c_int = -2;
/// An argument was malformed or out of range.
pub const RSDB_ERR_INVALID_ARGUMENT: c_int = -3;
/// The configuration is incomplete or invalid.
pub const RSDB_ERR_CONFIG: c_int = -4;
/// A server could not be reached or the connection broke.
pub const RSDB_ERR_CONNECTION: c_int = -5;
/// An operation did not finish in time (including waiting for a pooled connection).
pub const RSDB_ERR_TIMEOUT: c_int = -6;
/// The database rejected a statement.
pub const RSDB_ERR_QUERY: c_int = -7;
/// A concurrent writer won, or a unique value is already taken.
pub const RSDB_ERR_CONFLICT: c_int = -8;
/// The requested object does not exist.
pub const RSDB_ERR_NOT_FOUND: c_int = -9;
/// Schema migrations failed or do not match this library.
pub const RSDB_ERR_MIGRATION: c_int = -10;
/// Redis answered with an error.
pub const RSDB_ERR_REDIS: c_int = -11;
/// A JSON argument could not be parsed or had the wrong shape.
pub const RSDB_ERR_JSON: c_int = -12;
/// The object is in the wrong state for this call (e.g. a finished transaction).
pub const RSDB_ERR_STATE: c_int = -13;
/// A defect inside the library was caught at the boundary.
pub const RSDB_ERR_PANIC: c_int = -14;
/// A file or process operation failed.
pub const RSDB_ERR_IO: c_int = -15;
/// Authentication failed (wrong password, unknown or inactive user).
pub const RSDB_ERR_AUTH: c_int = -16;
/// The session is valid but its second factor (MFA) has not been passed yet.
pub const RSDB_ERR_MFA_REQUIRED: c_int = -17;
/// Too many failed attempts; locked out until the lockout window has passed.
pub const RSDB_ERR_LOCKED: c_int = -18;
/// Stored data failed its integrity check (a changed byte, a missing or truncated file).
pub const RSDB_ERR_INTEGRITY: c_int = -19;
/// Any other failure.
pub const RSDB_ERR_INTERNAL: c_int = -99;

thread_local! {
    static LAST_ERROR: RefCell<Option<(c_int, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(e: &Error) -> c_int {
    let code = e.code().as_i32();
    let msg = CString::new(e.to_string().replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = Some((code, msg)));
    code
}

fn clear_last_error() {
    LAST_ERROR.with(|l| *l.borrow_mut() = None);
}

/// Runs an adapter body: maps its error to a status code and its panic to `RSDB_ERR_PANIC`.
pub(crate) fn guard<F: FnOnce() -> crate::Result<()>>(f: F) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            clear_last_error();
            RSDB_OK
        }
        Ok(Err(e)) => set_last_error(&e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&Error::Panic(what))
        }
    }
}

/// Runs a release function body, swallowing panics (there is nothing to report them to).
pub(crate) fn guard_void<F: FnOnce()>(f: F) {
    let _ = catch_unwind(AssertUnwindSafe(f));
}

/// Borrows a required C string.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &'static str) -> crate::Result<&'a str> {
    if p.is_null() {
        return Err(Error::Null(name));
    }
    CStr::from_ptr(p).to_str().map_err(|_| Error::InvalidUtf8(name))
}

/// Borrows an optional C string (NULL means absent).
pub(crate) unsafe fn opt_str<'a>(p: *const c_char, name: &'static str) -> crate::Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        arg_str(p, name).map(Some)
    }
}

/// Borrows a required handle.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &'static str) -> crate::Result<&'a T> {
    p.as_ref().ok_or(Error::Null(name))
}

/// Borrows a required handle for changing it (not while other threads use it).
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, name: &'static str) -> crate::Result<&'a mut T> {
    p.as_mut().ok_or(Error::Null(name))
}

/// Checks a required out-pointer.
pub(crate) fn out_ptr<'a, T>(p: *mut T, name: &'static str) -> crate::Result<&'a mut T> {
    // SAFETY: the caller promises `p` is valid for writes when non-NULL.
    unsafe { p.as_mut() }.ok_or(Error::Null(name))
}

/// Copies bytes into a malloc'ed, NUL-terminated buffer that `rsdb_string_free` releases.
pub(crate) fn alloc_bytes(b: &[u8]) -> crate::Result<*mut c_char> {
    // SAFETY: malloc of len+1 bytes, fully initialized below.
    unsafe {
        let p = libc::malloc(b.len() + 1) as *mut u8;
        if p.is_null() {
            return Err(Error::Internal("out of memory".into()));
        }
        std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
        *p.add(b.len()) = 0;
        Ok(p as *mut c_char)
    }
}

/// Stores an owned string in `*out`, or NULL for `None`.
pub(crate) fn set_out_string(out: *mut *mut c_char, s: Option<&str>) -> crate::Result<()> {
    let slot = out_ptr(out, "out")?;
    *slot = match s {
        Some(s) => alloc_bytes(s.as_bytes())?,
        None => std::ptr::null_mut(),
    };
    Ok(())
}

/// The library version, a static string.
#[no_mangle]
pub extern "C" fn rsdb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The message of the latest failed call on this thread, or NULL when the latest call
/// succeeded. Valid until the next `rsdb_*` call on the same thread; do not free it.
#[no_mangle]
pub extern "C" fn rsdb_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ref().map(|(_, m)| m.as_ptr()).unwrap_or(std::ptr::null()))
}

/// The status code of the latest failed call on this thread, or `RSDB_OK`.
#[no_mangle]
pub extern "C" fn rsdb_last_error_code() -> c_int {
    LAST_ERROR.with(|l| l.borrow().as_ref().map(|(c, _)| *c).unwrap_or(RSDB_OK))
}

/// A short, static description of a status code (e.g. "timeout").
#[no_mangle]
pub extern "C" fn rsdb_status_name(status: c_int) -> *const c_char {
    let s: &'static [u8] = match status {
        RSDB_OK => b"ok\0",
        RSDB_ERR_NULL => b"null argument\0",
        RSDB_ERR_INVALID_UTF8 => b"invalid utf-8\0",
        RSDB_ERR_INVALID_ARGUMENT => b"invalid argument\0",
        RSDB_ERR_CONFIG => b"configuration error\0",
        RSDB_ERR_CONNECTION => b"connection error\0",
        RSDB_ERR_TIMEOUT => b"timeout\0",
        RSDB_ERR_QUERY => b"query error\0",
        RSDB_ERR_CONFLICT => b"conflict\0",
        RSDB_ERR_NOT_FOUND => b"not found\0",
        RSDB_ERR_MIGRATION => b"migration error\0",
        RSDB_ERR_REDIS => b"redis error\0",
        RSDB_ERR_JSON => b"json error\0",
        RSDB_ERR_STATE => b"invalid state\0",
        RSDB_ERR_PANIC => b"internal panic\0",
        RSDB_ERR_IO => b"i/o error\0",
        RSDB_ERR_AUTH => b"authentication failed\0",
        RSDB_ERR_MFA_REQUIRED => b"second factor required\0",
        RSDB_ERR_LOCKED => b"locked\0",
        RSDB_ERR_INTEGRITY => b"integrity check failed\0",
        _ => b"internal error\0",
    };
    s.as_ptr() as *const c_char
}

/// Releases a string returned by this library. NULL is accepted.
#[no_mangle]
pub unsafe extern "C" fn rsdb_string_free(s: *mut c_char) {
    if !s.is_null() {
        libc::free(s as *mut libc::c_void);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn header_constants_match_error_codes() {
        let pairs = [
            (RSDB_ERR_NULL, ErrorCode::Null),
            (RSDB_ERR_INVALID_UTF8, ErrorCode::InvalidUtf8),
            (RSDB_ERR_INVALID_ARGUMENT, ErrorCode::InvalidArgument),
            (RSDB_ERR_CONFIG, ErrorCode::Config),
            (RSDB_ERR_CONNECTION, ErrorCode::Connection),
            (RSDB_ERR_TIMEOUT, ErrorCode::Timeout),
            (RSDB_ERR_QUERY, ErrorCode::Query),
            (RSDB_ERR_CONFLICT, ErrorCode::Conflict),
            (RSDB_ERR_NOT_FOUND, ErrorCode::NotFound),
            (RSDB_ERR_MIGRATION, ErrorCode::Migration),
            (RSDB_ERR_REDIS, ErrorCode::Redis),
            (RSDB_ERR_JSON, ErrorCode::Json),
            (RSDB_ERR_STATE, ErrorCode::State),
            (RSDB_ERR_PANIC, ErrorCode::Panic),
            (RSDB_ERR_IO, ErrorCode::Io),
            (RSDB_ERR_AUTH, ErrorCode::Auth),
            (RSDB_ERR_MFA_REQUIRED, ErrorCode::MfaRequired),
            (RSDB_ERR_LOCKED, ErrorCode::Locked),
            (RSDB_ERR_INTEGRITY, ErrorCode::Integrity),
            (RSDB_ERR_INTERNAL, ErrorCode::Internal),
        ];
        for (c, e) in pairs {
            assert_eq!(c, e.as_i32());
        }
    }

    #[test]
    fn panics_become_a_status_and_a_message() {
        let rc = guard(|| panic!("boom"));
        assert_eq!(rc, RSDB_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(rsdb_last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom"));
        assert_eq!(guard(|| Ok(())), RSDB_OK);
        assert!(rsdb_last_error().is_null());
    }

    #[test]
    fn invalid_utf8_and_null_are_reported() {
        let bad = [0xffu8, 0xfe, 0];
        let r = unsafe { arg_str(bad.as_ptr() as *const c_char, "key") };
        assert!(matches!(r, Err(Error::InvalidUtf8("key"))));
        let r = unsafe { arg_str(std::ptr::null(), "key") };
        assert!(matches!(r, Err(Error::Null("key"))));
    }
}
