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

/// Writes timestamps into JSON exactly as chrono's own `Serialize` does (RFC 3339 with `Z`, the
/// fraction in 0, 3, 6 or 9 digits, whichever is shortest without loss), digit by digit instead
/// of through the formatting machinery: a session crosses the C face as JSON on every
/// validation. Years outside 0..=9999 go to chrono.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::{Serialize, Serializer};

    /// The text into `buf`; its length, or None for a year chrono writes with a sign.
    fn write(t: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
        let (date, time) = (t.naive_utc().date(), t.naive_utc().time());
        let year = date.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let (mut sec, mut nano) = (time.second(), time.nanosecond());
        if nano >= 1_000_000_000 {
            // A leap second: chrono shows it as second 60.
            sec += 1;
            nano -= 1_000_000_000;
        }
        let two = |b: &mut [u8], v: u32| {
            b[0] = b'0' + (v / 10) as u8;
            b[1] = b'0' + (v % 10) as u8;
        };
        let year = year as u32;
        two(&mut buf[0..2], year / 100);
        two(&mut buf[2..4], year % 100);
        buf[4] = b'-';
        two(&mut buf[5..7], date.month());
        buf[7] = b'-';
        two(&mut buf[8..10], date.day());
        buf[10] = b'T';
        two(&mut buf[11..13], time.hour());
        buf[13] = b':';
        two(&mut buf[14..16], time.minute());
        buf[16] = b':';
        two(&mut buf[17..19], sec);
        let (mut frac, digits) = if nano == 0 {
            (0, 0)
        } else if nano % 1_000_000 == 0 {
            (nano / 1_000_000, 3)
        } else if nano % 1_000 == 0 {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        let mut n = 19;
        if digits > 0 {
            buf[19] = b'.';
            for k in (0..digits).rev() {
                buf[20 + k] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            n = 20 + digits;
        }
        buf[n] = b'Z';
        Some(n + 1)
    }

    /// Appends the timestamp as a JSON string, as `serialize` writes it.
    pub(crate) fn push_json(t: &DateTime<Utc>, out: &mut String) {
        let mut buf = [0u8; 30];
        match write(t, &mut buf) {
            Some(n) => {
                out.push('"');
                out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
                out.push('"');
            }
            None => out.push_str(&serde_json::to_string(t).unwrap_or_default()),
        }
    }

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match write(t, &mut buf) {
            // Only ASCII digits and separators were written.
            Some(n) => s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default()),
            None => t.serialize(s),
        }
    }

    /// For `Option<DateTime<Utc>>` fields.
    pub(crate) mod option {
        use chrono::{DateTime, Utc};
        use serde::{Serialize, Serializer};

        struct Fast<'a>(&'a DateTime<Utc>);

        impl Serialize for Fast<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }

        pub(crate) fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&Fast(t)),
                None => s.serialize_none(),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(Serialize)]
        struct Fast {
            #[serde(serialize_with = "serialize")]
            t: DateTime<Utc>,
            #[serde(serialize_with = "option::serialize")]
            o: Option<DateTime<Utc>>,
        }

        #[derive(Serialize)]
        struct Chrono {
            t: DateTime<Utc>,
            o: Option<DateTime<Utc>>,
        }

        #[test]
        fn timestamps_are_written_exactly_as_chrono_writes_them() {
            let mut cases: Vec<DateTime<Utc>> = Vec::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for i in 0..20_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Seconds from year 0 to 9999 and beyond, with fractions of each shape.
                let mut secs = (x % 330_000_000_000) as i64 - 62_200_000_000;
                if i % 5 == 4 {
                    // chrono keeps a leap second only on a minute's last second.
                    secs = secs - secs.rem_euclid(60) + 59;
                }
                let nanos = match i % 5 {
                    0 => 0,
                    1 => (x >> 40) as u32 % 1000 * 1_000_000,
                    2 => (x >> 30) as u32 % 1_000_000 * 1000,
                    3 => (x >> 20) as u32 % 1_000_000_000,
                    _ => 1_000_000_000 + (x >> 20) as u32 % 1000 * 1_000_000,
                };
                if let Some(t) = DateTime::from_timestamp(secs, nanos) {
                    cases.push(t);
                }
            }
            cases.extend(DateTime::from_timestamp(0, 0));
            cases.extend(DateTime::from_timestamp(-62_167_219_200, 0)); // 0000-01-01
            cases.extend(DateTime::from_timestamp(253_402_300_799, 999_999_999)); // 9999-12-31
            cases.extend(DateTime::from_timestamp(253_402_300_800, 0)); // 10000-01-01
            cases.extend(DateTime::from_timestamp(-62_167_219_201, 1)); // year -1
            cases.push(Utc::now());
            assert!(cases.len() > 19_000);
            for t in cases {
                for o in [None, Some(t)] {
                    let fast = serde_json::to_string(&Fast { t, o }).unwrap();
                    let chrono = serde_json::to_string(&Chrono { t, o }).unwrap();
                    assert_eq!(fast, chrono);
                }
            }
        }
    }
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

    /// True while a sync manager is attached (announcements can be skipped otherwise).
    pub(crate) fn attached(&self) -> bool {
        self.sync.read().unwrap_or_else(|e| e.into_inner()).is_some()
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
