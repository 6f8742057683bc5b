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
pub mod failover;
pub mod health;
pub mod metrics;
pub mod models;
pub mod redis;
pub mod replication;
pub mod sentinel;
pub mod sync;

use crate::error::{Error, ErrorCode};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The status of a call. Fallible functions return it as an `int` (compare it with these
/// names): `RSDB_OK` or a negative `RSDB_ERR_*` code. A value never changes meaning, and the
/// same values are `rootstream::Error::code()` in the C++ API.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum rsdb_status {
    /// Success.
    RSDB_OK = 0,
    /// A required pointer or handle was NULL.
    RSDB_ERR_NULL = -1,
    /// A string argument was not valid UTF-8.
    RSDB_ERR_INVALID_UTF8 = -2,
    /// An argument was malformed or out of range.
    RSDB_ERR_INVALID_ARGUMENT = -3,
    /// The configuration is incomplete or invalid.
    RSDB_ERR_CONFIG = -4,
    /// A server could not be reached or the connection broke.
    RSDB_ERR_CONNECTION = -5,
    /// An operation did not finish in time (including waiting for a pooled connection).
    RSDB_ERR_TIMEOUT = -6,
    /// The database rejected a statement.
    RSDB_ERR_QUERY = -7,
    /// A concurrent writer won, or a unique value is already taken.
    RSDB_ERR_CONFLICT = -8,
    /// The requested object does not exist.
    RSDB_ERR_NOT_FOUND = -9,
    /// Schema migrations failed or do not match this library.
    RSDB_ERR_MIGRATION = -10,
    /// Redis answered with an error.
    RSDB_ERR_REDIS = -11,
    /// A JSON argument could not be parsed or had the wrong shape.
    RSDB_ERR_JSON = -12,
    /// The object is in the wrong state for this call (e.g. a finished transaction).
    RSDB_ERR_STATE = -13,
    /// A defect inside the library was caught at the boundary.
    RSDB_ERR_PANIC = -14,
    /// A file or process operation failed.
    RSDB_ERR_IO = -15,
    /// Authentication failed (wrong password, unknown or inactive user).
    RSDB_ERR_AUTH = -16,
    /// The session is valid but its second factor (MFA) has not been passed yet.
    RSDB_ERR_MFA_REQUIRED = -17,
    /// Too many failed attempts; locked out until the lockout window has passed.
    RSDB_ERR_LOCKED = -18,
    /// Stored data failed its integrity check (a changed byte, a missing or truncated file).
    RSDB_ERR_INTEGRITY = -19,
    /// The Redis master changed (Sentinel failover) while the command was in flight; it may or
    /// may not have been applied. Retry: the client already follows the new master.
    RSDB_ERR_FAILOVER = -20,
    /// The PostgreSQL node was fenced (never a primary again until rejoined), or this instance
    /// lost the failover leader lease and may no longer act on the cluster.
    RSDB_ERR_FENCED = -21,
    /// No replica is safe to promote (unreachable, too far behind, or the primary still
    /// answers); nothing was promoted.
    RSDB_ERR_NO_CANDIDATE = -22,
    /// Any other failure.
    RSDB_ERR_INTERNAL = -99,
}

impl rsdb_status {
    /// Every status, in header order.
    pub const ALL: [rsdb_status; 24] = [
        rsdb_status::RSDB_OK,
        rsdb_status::RSDB_ERR_NULL,
        rsdb_status::RSDB_ERR_INVALID_UTF8,
        rsdb_status::RSDB_ERR_INVALID_ARGUMENT,
        rsdb_status::RSDB_ERR_CONFIG,
        rsdb_status::RSDB_ERR_CONNECTION,
        rsdb_status::RSDB_ERR_TIMEOUT,
        rsdb_status::RSDB_ERR_QUERY,
        rsdb_status::RSDB_ERR_CONFLICT,
        rsdb_status::RSDB_ERR_NOT_FOUND,
        rsdb_status::RSDB_ERR_MIGRATION,
        rsdb_status::RSDB_ERR_REDIS,
        rsdb_status::RSDB_ERR_JSON,
        rsdb_status::RSDB_ERR_STATE,
        rsdb_status::RSDB_ERR_PANIC,
        rsdb_status::RSDB_ERR_IO,
        rsdb_status::RSDB_ERR_AUTH,
        rsdb_status::RSDB_ERR_MFA_REQUIRED,
        rsdb_status::RSDB_ERR_LOCKED,
        rsdb_status::RSDB_ERR_INTEGRITY,
        rsdb_status::RSDB_ERR_FAILOVER,
        rsdb_status::RSDB_ERR_FENCED,
        rsdb_status::RSDB_ERR_NO_CANDIDATE,
        rsdb_status::RSDB_ERR_INTERNAL,
    ];

    /// The status whose value is `code`, if there is one.
    pub fn from_int(code: c_int) -> Option<rsdb_status> {
        Self::ALL.into_iter().find(|s| *s as c_int == code)
    }
}

impl From<ErrorCode> for rsdb_status {
    // Exhaustive on purpose: a new `ErrorCode` does not compile until it has its status.
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Null => rsdb_status::RSDB_ERR_NULL,
            ErrorCode::InvalidUtf8 => rsdb_status::RSDB_ERR_INVALID_UTF8,
            ErrorCode::InvalidArgument => rsdb_status::RSDB_ERR_INVALID_ARGUMENT,
            ErrorCode::Config => rsdb_status::RSDB_ERR_CONFIG,
            ErrorCode::Connection => rsdb_status::RSDB_ERR_CONNECTION,
            ErrorCode::Timeout => rsdb_status::RSDB_ERR_TIMEOUT,
            ErrorCode::Query => rsdb_status::RSDB_ERR_QUERY,
            ErrorCode::Conflict => rsdb_status::RSDB_ERR_CONFLICT,
            ErrorCode::NotFound => rsdb_status::RSDB_ERR_NOT_FOUND,
            ErrorCode::Migration => rsdb_status::RSDB_ERR_MIGRATION,
            ErrorCode::Redis => rsdb_status::RSDB_ERR_REDIS,
            ErrorCode::Json => rsdb_status::RSDB_ERR_JSON,
            ErrorCode::State => rsdb_status::RSDB_ERR_STATE,
            ErrorCode::Panic => rsdb_status::RSDB_ERR_PANIC,
            ErrorCode::Io => rsdb_status::RSDB_ERR_IO,
            ErrorCode::Auth => rsdb_status::RSDB_ERR_AUTH,
            ErrorCode::MfaRequired => rsdb_status::RSDB_ERR_MFA_REQUIRED,
            ErrorCode::Locked => rsdb_status::RSDB_ERR_LOCKED,
            ErrorCode::Integrity => rsdb_status::RSDB_ERR_INTEGRITY,
            ErrorCode::Failover => rsdb_status::RSDB_ERR_FAILOVER,
            ErrorCode::Fenced => rsdb_status::RSDB_ERR_FENCED,
            ErrorCode::NoCandidate => rsdb_status::RSDB_ERR_NO_CANDIDATE,
            ErrorCode::Internal => rsdb_status::RSDB_ERR_INTERNAL,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<(c_int, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(e: &Error) -> c_int {
    let code = rsdb_status::from(e.code()) as c_int;
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
            rsdb_status::RSDB_OK as c_int
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

/// Moves `value` to the heap and stores the new handle in `*slot`. The handle is released with
/// `release` (or `release_with`) in the type's own `*_free` / `*_close` function.
pub(crate) fn hand_out<T>(slot: &mut *mut T, value: T) {
    *slot = Box::into_raw(Box::new(value));
}

/// Releases a handle made by `hand_out`. NULL is accepted; a panic while dropping is swallowed
/// (there is nothing to report it to).
pub(crate) unsafe fn release<T>(p: *mut T) {
    release_with(p, drop)
}

/// Releases a handle made by `hand_out`, letting `finish` shut it down first (close a pool,
/// roll back a transaction). NULL is accepted and `finish` is not called for it.
pub(crate) unsafe fn release_with<T>(p: *mut T, finish: impl FnOnce(Box<T>)) {
    guard_void(|| {
        if !p.is_null() {
            // SAFETY: `p` came from `hand_out` and the caller gives up its ownership here.
            finish(unsafe { Box::from_raw(p) })
        }
    })
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
    LAST_ERROR.with(|l| l.borrow().as_ref().map(|(c, _)| *c).unwrap_or(rsdb_status::RSDB_OK as c_int))
}

/// A short, static description of a status code (e.g. "timeout").
#[no_mangle]
pub extern "C" fn rsdb_status_name(status: c_int) -> *const c_char {
    use rsdb_status::*;
    let s: &'static [u8] = match rsdb_status::from_int(status) {
        Some(RSDB_OK) => b"ok\0",
        Some(RSDB_ERR_NULL) => b"null argument\0",
        Some(RSDB_ERR_INVALID_UTF8) => b"invalid utf-8\0",
        Some(RSDB_ERR_INVALID_ARGUMENT) => b"invalid argument\0",
        Some(RSDB_ERR_CONFIG) => b"configuration error\0",
        Some(RSDB_ERR_CONNECTION) => b"connection error\0",
        Some(RSDB_ERR_TIMEOUT) => b"timeout\0",
        Some(RSDB_ERR_QUERY) => b"query error\0",
        Some(RSDB_ERR_CONFLICT) => b"conflict\0",
        Some(RSDB_ERR_NOT_FOUND) => b"not found\0",
        Some(RSDB_ERR_MIGRATION) => b"migration error\0",
        Some(RSDB_ERR_REDIS) => b"redis error\0",
        Some(RSDB_ERR_JSON) => b"json error\0",
        Some(RSDB_ERR_STATE) => b"invalid state\0",
        Some(RSDB_ERR_PANIC) => b"internal panic\0",
        Some(RSDB_ERR_IO) => b"i/o error\0",
        Some(RSDB_ERR_AUTH) => b"authentication failed\0",
        Some(RSDB_ERR_MFA_REQUIRED) => b"second factor required\0",
        Some(RSDB_ERR_LOCKED) => b"locked\0",
        Some(RSDB_ERR_INTEGRITY) => b"integrity check failed\0",
        Some(RSDB_ERR_FAILOVER) => b"redis failover\0",
        Some(RSDB_ERR_FENCED) => b"fenced\0",
        Some(RSDB_ERR_NO_CANDIDATE) => b"no failover candidate\0",
        Some(RSDB_ERR_INTERNAL) | None => b"internal error\0",
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

    /// Every `ErrorCode`, listed by hand (the `From` impl's exhaustive match is the other half
    /// of the check: a new code does not compile until it has a status).
    const EVERY_CODE: [ErrorCode; 23] = [
        ErrorCode::Null,
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidArgument,
        ErrorCode::Config,
        ErrorCode::Connection,
        ErrorCode::Timeout,
        ErrorCode::Query,
        ErrorCode::Conflict,
        ErrorCode::NotFound,
        ErrorCode::Migration,
        ErrorCode::Redis,
        ErrorCode::Json,
        ErrorCode::State,
        ErrorCode::Panic,
        ErrorCode::Io,
        ErrorCode::Auth,
        ErrorCode::MfaRequired,
        ErrorCode::Locked,
        ErrorCode::Integrity,
        ErrorCode::Failover,
        ErrorCode::Fenced,
        ErrorCode::NoCandidate,
        ErrorCode::Internal,
    ];

    #[test]
    fn every_error_code_has_its_status_with_the_same_value() {
        for code in EVERY_CODE {
            let status = rsdb_status::from(code);
            assert_eq!(status as c_int, code.as_i32(), "{code:?}");
            assert_eq!(rsdb_status::from_int(code.as_i32()), Some(status));
        }
        // The enum holds exactly the error codes plus RSDB_OK, each value once.
        assert_eq!(rsdb_status::ALL.len(), EVERY_CODE.len() + 1);
        assert_eq!(rsdb_status::RSDB_OK as c_int, 0);
        for s in rsdb_status::ALL {
            assert_eq!(rsdb_status::ALL.iter().filter(|o| **o as c_int == s as c_int).count(), 1);
        }
    }

    #[test]
    fn header_constants_match_error_codes() {
        use rsdb_status::*;
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
            (RSDB_ERR_FAILOVER, ErrorCode::Failover),
            (RSDB_ERR_FENCED, ErrorCode::Fenced),
            (RSDB_ERR_NO_CANDIDATE, ErrorCode::NoCandidate),
            (RSDB_ERR_INTERNAL, ErrorCode::Internal),
        ];
        for (c, e) in pairs {
            assert_eq!(c as c_int, e.as_i32());
        }
    }

    #[test]
    fn status_names_cover_every_status() {
        let name = |c: c_int| unsafe { CStr::from_ptr(rsdb_status_name(c)) }.to_str().unwrap();
        assert_eq!(name(0), "ok");
        assert_eq!(name(rsdb_status::RSDB_ERR_TIMEOUT as c_int), "timeout");
        assert_eq!(name(-12345), "internal error");
        for s in rsdb_status::ALL {
            assert!(!name(s as c_int).is_empty());
        }
    }

    #[test]
    fn release_accepts_null_and_drops_a_handed_out_value() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut slot: *mut Counted = std::ptr::null_mut();
        hand_out(&mut slot, Counted);
        assert!(!slot.is_null());
        unsafe { release(slot) };
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
        unsafe { release::<Counted>(std::ptr::null_mut()) };
        let mut finished = false;
        unsafe { release_with::<Counted>(std::ptr::null_mut(), |_| finished = true) };
        assert!(!finished);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn panics_become_a_status_and_a_message() {
        let rc = guard(|| panic!("boom"));
        assert_eq!(rc, rsdb_status::RSDB_ERR_PANIC as c_int);
        let msg = unsafe { CStr::from_ptr(rsdb_last_error()) }.to_str().unwrap();
        assert!(msg.contains("boom"));
        assert_eq!(guard(|| Ok(())), rsdb_status::RSDB_OK as c_int);
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
