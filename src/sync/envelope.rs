//! The one JSON envelope every state-sync message travels in, the event types of RootStream,
//! and the glob patterns subscribers choose them with.
//!
//! ```json
//! {"v":1,"type":"stream.started","entity":"stream","id":"42",
//!  "origin":"edge-1/6f1c2a9e0b4d7713","seq":17,
//!  "hlc":{"wall_ms":1764633600123,"logical":0,"instance":"edge-1/6f1c2a9e0b4d7713"},
//!  "payload":{"id":42,"title":"speedrun"}}
//! ```
//! `origin` is the sending instance (its configured id plus a per-run suffix, so a restarted
//! instance never reuses a sequence number); `seq` counts that origin's messages from 1 with no
//! gaps, which is how a receiver notices a lost message; `hlc` is the origin's hybrid logical
//! clock when it sent. A state change has type `<entity>.delta` and carries the change
//! (strategy, changed fields or state and version vector) as its payload.

use super::hlc::Timestamp;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;
/// Largest accepted payload, as JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest accepted event type (channel) name, in bytes.
pub const MAX_TYPE_BYTES: usize = 256;
/// The suffix of a state change's type: `stream.delta`.
pub const DELTA_SUFFIX: &str = ".delta";

/// The event types RootStream's models publish.
pub mod events {
    pub const STREAM_STARTED: &str = "stream.started";
    pub const STREAM_STOPPED: &str = "stream.stopped";
    pub const VIEWER_JOINED: &str = "viewer.joined";
    pub const VIEWER_LEFT: &str = "viewer.left";
    pub const USER_UPDATED: &str = "user.updated";
    pub const SESSION_CREATED: &str = "session.created";
    pub const SESSION_REVOKED: &str = "session.revoked";
    /// Every type above, in that order.
    pub const ALL: [&str; 7] =
        [STREAM_STARTED, STREAM_STOPPED, VIEWER_JOINED, VIEWER_LEFT, USER_UPDATED, SESSION_CREATED, SESSION_REVOKED];
}

/// One message between instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub v: u32,
    /// The event type (the channel it was published on), e.g. `stream.started`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity type it concerns: the part of `type` before the first dot.
    pub entity: String,
    /// The entity's id, or empty when the event names none.
    pub id: String,
    /// The sending instance.
    pub origin: String,
    /// The origin's message number, from 1, without gaps.
    pub seq: u64,
    /// The origin's clock when it sent.
    pub hlc: Timestamp,
    /// The event's JSON value, or for a `.delta` the change.
    pub payload: Value,
}

impl Envelope {
    /// True for a state change (`<entity>.delta`).
    pub fn is_delta(&self) -> bool {
        self.kind.ends_with(DELTA_SUFFIX)
    }

    /// Parses and checks an envelope received from another instance.
    pub fn parse(text: &str) -> Result<Self> {
        let env: Envelope = serde_json::from_str(text).map_err(|e| Error::Json(format!("sync envelope: {e}")))?;
        if env.v != ENVELOPE_VERSION {
            return Err(Error::Json(format!("sync envelope version {} is not supported", env.v)));
        }
        if env.seq == 0 || env.origin.is_empty() {
            return Err(Error::Json("sync envelope without origin or sequence number".into()));
        }
        Ok(env)
    }
}

// An envelope borrowed from its parts, so it is written in one pass.
#[derive(Serialize)]
struct EnvelopeRef<'a, P: Serialize> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    entity: &'a str,
    id: &'a str,
    origin: &'a str,
    seq: u64,
    hlc: &'a Timestamp,
    payload: &'a P,
}

/// The JSON text of an envelope with these fields (what [`Envelope::parse`] reads back).
pub(crate) fn to_text<P: Serialize>(
    kind: &str,
    entity: &str,
    id: &str,
    origin: &str,
    seq: u64,
    hlc: &Timestamp,
    payload: &P,
) -> Result<String> {
    let env = EnvelopeRef { v: ENVELOPE_VERSION, kind, entity, id, origin, seq, hlc, payload };
    Ok(serde_json::to_string(&env)?)
}

/// The length of a value's JSON text, without building it.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, value)?;
    Ok(c.0)
}

/// Checks an event type: 1–256 bytes, no whitespace or control characters, not a `.delta`.
pub fn check_event_type(kind: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(Error::InvalidArgument(format!("an event type must be 1 to {MAX_TYPE_BYTES} bytes")));
    }
    if kind.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!("event type {kind:?} contains whitespace")));
    }
    if kind.ends_with(DELTA_SUFFIX) {
        return Err(Error::InvalidArgument(format!(
            "event types ending in {DELTA_SUFFIX:?} are reserved for state changes; use apply_delta"
        )));
    }
    Ok(())
}

/// The entity type an event type names: `stream` for `stream.started`.
pub fn entity_of(kind: &str) -> &str {
    kind.split('.').next().unwrap_or(kind)
}

/// The id an event payload names: its `id` field (text or number), else empty.
pub fn id_of(payload: &Value) -> String {
    match payload.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Matches `text` against a Redis-style glob: `*` any run, `?` one character, `[abc]`,
/// `[a-z]`, `[^a]` sets, and `\` to take the next character literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // The common patterns (`stream.*`, `*.delta`, `*`, exact names) hold no `?`, set or
    // escape: those are matched on the bytes, without allocating. UTF-8 makes that the same
    // as matching characters, since a literal run of bytes can only match at a character
    // boundary.
    if !pattern.bytes().any(|b| matches!(b, b'?' | b'[' | b'\\')) {
        return glob_at(pattern.as_bytes(), text.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

// The glob patterns' characters: `char`s, or bytes for patterns of literals and `*` only.
trait GlobChar: Copy + PartialEq {
    const STAR: Self;
    const ANY: Self;
    const OPEN: Self;
    const ESCAPE: Self;
    fn set_match(p: &[Self], c: Self) -> Option<usize>;
}

impl GlobChar for char {
    const STAR: char = '*';
    const ANY: char = '?';
    const OPEN: char = '[';
    const ESCAPE: char = '\\';
    fn set_match(p: &[char], c: char) -> Option<usize> {
        set_match(p, c)
    }
}

impl GlobChar for u8 {
    const STAR: u8 = b'*';
    // Never reached: byte patterns hold no `?`, `[` or `\\`.
    const ANY: u8 = b'?';
    const OPEN: u8 = b'[';
    const ESCAPE: u8 = b'\\';
    fn set_match(_: &[u8], _: u8) -> Option<usize> {
        None
    }
}

fn glob_at<C: GlobChar>(p: &[C], t: &[C]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it has eaten to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(&c) if c == C::STAR => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(&c) if c == C::ANY => Some(1),
            Some(&c) if c == C::OPEN => C::set_match(&p[pi..], t[ti]),
            Some(&c) if c == C::ESCAPE && pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(2),
            Some(&c) => (c == t[ti]).then_some(1),
            None => None,
        };
        match step {
            Some(n) => {
                pi += n;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == C::STAR)
}

// Matches one character against the set that opens `p` (`p[0] == '['`); returns the set's
// length in the pattern when it matches. An unclosed set matches a literal `[`.
fn set_match(p: &[char], c: char) -> Option<usize> {
    let Some(close) = p.iter().skip(1).position(|&x| x == ']').map(|i| i + 1) else {
        return (c == '[').then_some(1);
    };
    let body = &p[1..close];
    let (negate, body) = match body.first() {
        Some('^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            let (lo, hi) = if body[i] <= body[i + 2] { (body[i], body[i + 2]) } else { (body[i + 2], body[i]) };
            hit |= lo <= c && c <= hi;
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    (hit != negate).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis_patterns() {
        assert!(glob_match("stream.*", "stream.started"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("stream.*", "viewer.joined"));
        assert!(glob_match("*.delta", "stream.delta"));
        assert!(glob_match("s?ream.*", "stream.x"));
        assert!(glob_match("[sv]*", "viewer.left"));
        assert!(!glob_match("[^sv]*", "viewer.left"));
        assert!(glob_match("user.[a-z]pdated", "user.updated"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(glob_match("*a*b*c", "xxaybbzc"));
        assert!(!glob_match("*a*b*c", "xxaybbz"));
        assert!(glob_match("[abc", "[abc"));
        assert!(glob_match("é*", "é.started"));
        assert!(glob_match("*.é", "x.é"));
        assert!(!glob_match("*.é", "x.e"));
        assert!(glob_match("?.x", "é.x"), "? is one character, not one byte");
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("**", "a"));
    }

    #[test]
    fn event_types_are_checked_and_name_their_entity() {
        for t in events::ALL {
            check_event_type(t).unwrap();
        }
        assert_eq!(entity_of("stream.started"), "stream");
        assert_eq!(entity_of("plain"), "plain");
        assert!(check_event_type("").is_err());
        assert!(check_event_type("has space").is_err());
        assert!(check_event_type("stream.delta").is_err());
        assert!(check_event_type(&"x".repeat(MAX_TYPE_BYTES + 1)).is_err());
        assert_eq!(id_of(&serde_json::json!({"id": 42})), "42");
        assert_eq!(id_of(&serde_json::json!({"id": "a"})), "a");
        assert_eq!(id_of(&serde_json::json!([1])), "");
    }

    #[test]
    fn an_envelope_without_origin_or_of_another_version_is_refused() {
        let ok = r#"{"v":1,"type":"a.b","entity":"a","id":"","origin":"o","seq":1,
            "hlc":{"wall_ms":1,"logical":0,"instance":"o"},"payload":null}"#;
        assert_eq!(Envelope::parse(ok).unwrap().seq, 1);
        assert!(Envelope::parse(&ok.replace("\"v\":1", "\"v\":2")).is_err());
        assert!(Envelope::parse(&ok.replace("\"seq\":1", "\"seq\":0")).is_err());
        assert!(Envelope::parse("{").is_err());
    }
}
