//! The records the platform keeps: users, streams and stream sessions (the 24.2 models), and
//! login sessions (`session`: tokens, device binding, lifetimes, per-user limits). Each model
//! works on the pool and, where it caches or announces, on Redis; none reaches up into `auth`.

pub mod session;
pub mod stream;
pub mod stream_session;
pub mod user;

pub use stream::{Stream, StreamModel, StreamStats};
pub use stream_session::{StreamSession, StreamSessionModel};
pub use user::{NewUser, User, UserModel};

use chrono::{DateTime, Utc};

/// Formats a timestamp the way every JSON face of the library does (RFC 3339, microseconds, Z).
pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Rejects text with control characters (other than tab/newline in free text) and overlong values.
pub(crate) fn check_text(field: &str, value: &str, max_chars: usize, allow_newlines: bool) -> crate::Result<()> {
    if value.chars().count() > max_chars {
        return Err(crate::Error::invalid(format!("{field} must be at most {max_chars} characters")));
    }
    let bad = value
        .chars()
        .any(|c| c == '\0' || (c.is_control() && !(allow_newlines && (c == '\n' || c == '\t' || c == '\r'))));
    if bad {
        return Err(crate::Error::invalid(format!("{field} must not contain control characters")));
    }
    Ok(())
}
