//! The shared log in Redis and the bus beside it.
//!
//! One Lua script writes every message: it numbers it in the log's counter (gapless, from 1,
//! per log *epoch* — a new epoch starts when the counter is gone, as after a Redis restart
//! without persistence), appends it to the capped stream and publishes it on the bus as
//! `"<stream id> <epoch> <number> <message>"`. The number is what shows a receiver that an
//! entry is missing — skipped on the bus or trimmed from the log. The stream, the counter and
//! the bus share a hash tag, so the script also runs on Redis Cluster.

use crate::cache::RedisClient;
use crate::error::Result;
use std::collections::HashMap;

/// KEYS[1] the stream, KEYS[2] the counter hash; ARGV[1] MAXLEN, ARGV[2] the bus, ARGV[3..]
/// the messages, in order. One call writes a whole batch: the counter is read and raised
/// once, and the per-call cost of a script is paid once per batch instead of per message.
pub(crate) const SEND_SCRIPT: &str = r#"
local count = #ARGV - 2
local last = redis.call('HINCRBY', KEYS[2], 'n', count)
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local id
for i = 1, count do
  local n = last - count + i
  local m = ARGV[i + 2]
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', epoch, 'n', n, 'm', m)
  redis.call('PUBLISH', ARGV[2], id .. ' ' .. epoch .. ' ' .. n .. ' ' .. m)
end
return id
"#;

/// Log entries read per round trip.
pub(crate) const READ_BATCH: usize = 1000;

/// A stream id: (milliseconds, sequence).
pub type LogId = (u64, u64);

/// Where a reader stands in the log: the last entry it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub epoch: String,
    /// The entry's number in its epoch.
    pub n: u64,
    pub id: LogId,
}

impl LogPosition {
    /// True when `entry` comes right after this position.
    pub(crate) fn is_followed_by(&self, entry: &LogEntry) -> bool {
        entry.epoch == self.epoch && entry.n == self.n + 1
    }

    /// True when this position already includes `entry` (the same epoch, not later).
    pub(crate) fn includes(&self, entry: &LogEntry) -> bool {
        entry.epoch == self.epoch && entry.n <= self.n
    }

    /// `"ms-seq"`.
    pub fn id_text(&self) -> String {
        format!("{}-{}", self.id.0, self.id.1)
    }
}

/// One entry of the log (or the same message as the bus carried it).
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub id: LogId,
    pub epoch: String,
    pub n: u64,
    pub body: String,
}

impl LogEntry {
    /// The position just before this entry, so that a read from there starts with it.
    pub(crate) fn position_before(&self) -> LogPosition {
        let id = match self.id {
            (ms, 0) => (ms.saturating_sub(1), u64::MAX),
            (ms, seq) => (ms, seq - 1),
        };
        LogPosition { epoch: self.epoch.clone(), n: self.n - 1, id }
    }

    pub(crate) fn position(&self) -> LogPosition {
        LogPosition { epoch: self.epoch.clone(), n: self.n, id: self.id }
    }

    /// Parses a bus message; None when it is not one of ours.
    pub(crate) fn from_bus(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, ' ');
        let id = parse_id(parts.next()?)?;
        let epoch = parts.next()?.to_string();
        let n = parts.next()?.parse().ok()?;
        Some(LogEntry { id, epoch, n, body: parts.next()?.to_string() })
    }

    fn from_stream(id: &str, mut fields: HashMap<String, String>) -> Option<Self> {
        Some(LogEntry {
            id: parse_id(id)?,
            epoch: fields.remove("e")?,
            n: fields.remove("n")?.parse().ok()?,
            body: fields.remove("m")?,
        })
    }
}

/// The keys and channel of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct LogKeys {
    pub stream: String,
    pub counter: String,
    pub bus: String,
}

impl LogKeys {
    pub(crate) fn new(namespace: &str) -> Self {
        let tag = format!("{{{namespace}:sync}}");
        LogKeys { stream: format!("{tag}:log"), counter: format!("{tag}:counter"), bus: format!("{tag}:bus") }
    }
}

/// Up to `count` entries after `after` (from the start when None), in order. Entries that are
/// not ours are skipped.
pub(crate) async fn read_after(
    redis: &RedisClient,
    keys: &LogKeys,
    after: Option<LogId>,
    count: usize,
) -> Result<Vec<LogEntry>> {
    let start = match after {
        Some((ms, n)) => format!("({ms}-{n}"),
        None => "-".to_string(),
    };
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(&keys.stream).arg(&start).arg("+").arg("COUNT").arg(count);
    let entries: Vec<(String, HashMap<String, String>)> = redis.query(&cmd, true).await?;
    Ok(entries.into_iter().filter_map(|(id, f)| LogEntry::from_stream(&id, f)).collect())
}

/// The last entry's id, if the log has any.
pub(crate) async fn last_id(redis: &RedisClient, keys: &LogKeys) -> Result<Option<LogId>> {
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(&keys.stream).arg("+").arg("-").arg("COUNT").arg(1);
    let last: Vec<(String, HashMap<String, String>)> = redis.query(&cmd, true).await?;
    Ok(last.first().and_then(|(id, _)| parse_id(id)))
}

pub(crate) fn parse_id(id: &str) -> Option<LogId> {
    let (ms, n) = id.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_message_carries_id_epoch_number_and_the_message_with_its_spaces() {
        let e = LogEntry::from_bus("17-3 1700.5 42 {\"a\": 1}").unwrap();
        assert_eq!((e.id, e.epoch.as_str(), e.n, e.body.as_str()), ((17, 3), "1700.5", 42, "{\"a\": 1}"));
        assert!(LogEntry::from_bus("nonsense").is_none());
        assert!(LogEntry::from_bus("1-1 e x {}").is_none());
    }

    #[test]
    fn the_position_before_an_entry_reads_from_that_entry() {
        let e = LogEntry { id: (5, 0), epoch: "x".into(), n: 9, body: String::new() };
        let p = e.position_before();
        assert_eq!((p.id, p.n), ((4, u64::MAX), 8));
        assert!(p.is_followed_by(&e));
        assert!(e.position().includes(&e));
        let e2 = LogEntry { id: (5, 2), ..e.clone() };
        assert_eq!(e2.position_before().id, (5, 1));
    }
}
