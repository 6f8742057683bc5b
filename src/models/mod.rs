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

/// Where a model announces its changes to other instances: nowhere until a
/// `StateSyncManager` is attached. Clones share the attachment.
#[derive(Clone, Default)]
pub(crate) struct Broadcaster {
    sync: std::sync::Arc<std::sync::RwLock<Option<crate::sync::StateSyncManager>>>,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcaster").field("attached", &self.current().is_some()).finish()
    }
}

impl Broadcaster {
    pub(crate) fn set(&self, sync: Option<crate::sync::StateSyncManager>) {
        *self.sync.write().unwrap_or_else(|e| e.into_inner()) = sync;
    }

    fn current(&self) -> Option<crate::sync::StateSyncManager> {
        self.sync.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `fields` to the entity's shared state and publishes `event` with `payload` (its
    /// `id` set to the entity's id). Runs after the change is committed; a manager that cannot
    /// take more (closed, outbox full) is skipped, since the database already holds the change
    /// and the manager counts nothing it did not send.
    pub(crate) fn announce(
        &self,
        event: &str,
        entity: &str,
        id: i64,
        payload: &serde_json::Value,
        fields: serde_json::Value,
    ) {
        let Some(sync) = self.current() else { return };
        let id_text = id.to_string();
        if let serde_json::Value::Object(fields) = fields {
            let _ = sync.apply_delta(entity, &id_text, &fields);
        }
        let mut payload = payload.clone();
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("id".into(), serde_json::Value::from(id));
        }
        let _ = sync.publish(event, payload);
    }
}
