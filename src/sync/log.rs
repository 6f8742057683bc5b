//! The shared log in Redis and the bus beside it.
//!
//! One Lua script writes each *batch* of an origin's messages (up to 2,048, in sequence order):
//! it numbers the messages in the log's counter (gapless, from 1, per log *epoch* — a new
//! epoch starts when the counter is gone, as after a Redis restart without persistence),
//! appends the batch to the capped stream as one entry (`e` epoch, `n` first number, `c`
//! count, `m` the batch) and publishes the same bytes once on the bus as
//! `"<stream id> <epoch> <first number> <count> <batch>"`. The numbers are what show a
//! receiver that messages are missing — skipped on the bus or trimmed from the log. The
//! stream, the counter, the trim index and the bus share a hash tag, so the script also runs
//! on Redis Cluster.
//!
//! A batch is `"<origin> <first seq> <count>\n"` followed by one record per message,
//! `"<type bytes> <envelope bytes> <type><envelope JSON>"`: a receiver knows each message's
//! origin, sequence number and event type without parsing its JSON.
//!
//! Trimming keeps at least `log_max_len` *messages*: the index list holds `"<last number>
//! <stream id>"` per entry, and once the log holds more than `log_max_len` plus an eighth, the
//! script drops (`XTRIM MINID`) the oldest entries whose messages are all older than the newest
//! `log_max_len`.

use crate::cache::RedisClient;
use crate::error::Result;
use std::collections::HashMap;

/// KEYS[1] the stream, KEYS[2] the counter hash, KEYS[3] the trim index, KEYS[4] the origin's
/// mark (the sequence number of its last message in the log); ARGV[1] the messages to keep,
/// ARGV[2] the bus, ARGV[3] the number of messages in the batch, ARGV[4] the batch, ARGV[5]
/// the batch's first sequence number, ARGV[6] `1` when the sender knows the log has every
/// earlier message of the origin (its first batch, or the first after a failed call), else `0`.
///
/// The origin's mark keeps its messages in sequence order in the log even with several calls
/// in flight: a batch that would leave a gap after the mark — or, for a batch sent behind
/// another one, when there is no mark (Redis lost it) — is refused with an `ORDER` error and
/// the sender writes again from its oldest unconfirmed message. A batch the log already has
/// entirely is answered `dup` and not written again. Returns the entry's id.
pub(crate) const SEND_SCRIPT: &str = r#"
local count = tonumber(ARGV[3])
local first_seq = tonumber(ARGV[5])
local last_seq = first_seq + count - 1
local mark = redis.call('GET', KEYS[4])
if mark then
  mark = tonumber(mark)
  if last_seq <= mark then return 'dup' end
  if first_seq > mark + 1 and ARGV[6] ~= '1' then
    return redis.error_reply('ORDER batch from ' .. first_seq .. ' after ' .. mark)
  end
elseif ARGV[6] ~= '1' then
  return redis.error_reply('ORDER batch from ' .. first_seq .. ' without a mark')
end
redis.call('SET', KEYS[4], last_seq, 'EX', 86400)
local last = redis.call('HINCRBY', KEYS[2], 'n', count)
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'first', last - count + 1)
  redis.call('DEL', KEYS[3])
end
local first = last - count + 1
local id = redis.call('XADD', KEYS[1], '*', 'e', epoch, 'n', first, 'c', count, 'm', ARGV[4])
redis.call('RPUSH', KEYS[3], last .. ' ' .. id)
redis.call('PUBLISH', ARGV[2], id .. ' ' .. epoch .. ' ' .. first .. ' ' .. count .. ' ' .. ARGV[4])
local keep = tonumber(ARGV[1])
local oldest = tonumber(redis.call('HGET', KEYS[2], 'first') or '1')
if last - oldest + 1 > keep + math.floor(keep / 8) then
  local marks = redis.call('LRANGE', KEYS[3], 0, 256)
  local cut, kept_from, kept_id = 0, nil, nil
  for i = 1, #marks - 1 do
    local sp = string.find(marks[i], ' ', 1, true)
    local entry_last = tonumber(string.sub(marks[i], 1, sp - 1))
    if entry_last > last - keep then break end
    cut = i
    kept_from = entry_last + 1
    kept_id = string.sub(marks[i + 1], string.find(marks[i + 1], ' ', 1, true) + 1)
  end
  if cut > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', kept_id)
    redis.call('LTRIM', KEYS[3], cut, -1)
    redis.call('HSET', KEYS[2], 'first', kept_from)
  end
end
return id
"#;

/// Log entries (batches of up to 2,048 messages) read per round trip.
pub(crate) const READ_BATCH: usize = 8;

/// A stream id: (milliseconds, sequence).
pub type LogId = (u64, u64);

/// Where a reader stands in the log: the last entry it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub epoch: String,
    /// The number, in its epoch, of the last message of that entry.
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

/// One entry of the log — one batch — or the same batch as the bus carried it.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub id: LogId,
    pub epoch: String,
    /// The number of the batch's first message; its messages are `n .. n + count`.
    pub n: u64,
    pub count: u64,
    pub body: String,
}

impl LogEntry {
    /// The number of the entry's last message.
    pub(crate) fn last(&self) -> u64 {
        self.n + self.count - 1
    }

    /// The position just before this entry, so that a read from there starts with it.
    pub(crate) fn position_before(&self) -> LogPosition {
        let id = match self.id {
            (ms, 0) => (ms.saturating_sub(1), u64::MAX),
            (ms, seq) => (ms, seq - 1),
        };
        LogPosition { epoch: self.epoch.clone(), n: self.n - 1, id }
    }

    pub(crate) fn position(&self) -> LogPosition {
        LogPosition { epoch: self.epoch.clone(), n: self.last(), id: self.id }
    }

    /// Parses a bus message; None when it is not one of ours.
    pub(crate) fn from_bus(text: &str) -> Option<Self> {
        let mut parts = text.splitn(5, ' ');
        let id = parse_id(parts.next()?)?;
        let epoch = parts.next()?.to_string();
        let n = parts.next()?.parse().ok().filter(|&n| n > 0)?;
        let count = parts.next()?.parse().ok().filter(|&c| c > 0)?;
        Some(LogEntry { id, epoch, n, count, body: parts.next()?.to_string() })
    }

    fn from_stream(id: &str, mut fields: HashMap<String, String>) -> Option<Self> {
        Some(LogEntry {
            id: parse_id(id)?,
            epoch: fields.remove("e")?,
            n: fields.remove("n")?.parse().ok().filter(|&n| n > 0)?,
            count: fields.remove("c")?.parse().ok().filter(|&c| c > 0)?,
            body: fields.remove("m")?,
        })
    }
}

/// One batch of an origin's messages, as the log and the bus carry it.
#[derive(Debug, PartialEq)]
pub(crate) struct Batch<'a> {
    pub origin: &'a str,
    /// The sequence number of the first message; the others follow without gaps.
    pub first_seq: u64,
    /// (event type, envelope JSON) per message, in order.
    pub records: Vec<(&'a str, &'a str)>,
}

impl<'a> Batch<'a> {
    /// The header of a batch of `count` messages from `origin` starting at `first_seq`.
    pub(crate) fn header(origin: &str, first_seq: u64, count: usize) -> String {
        format!("{origin} {first_seq} {count}\n")
    }

    /// One message's record: its event type and envelope, length-prefixed.
    #[cfg(test)]
    pub(crate) fn record(kind: &str, envelope: &str) -> String {
        let mut r = String::with_capacity(kind.len() + envelope.len() + 12);
        Self::push_record(&mut r, kind, envelope);
        r
    }

    /// Appends one message's record to a batch being written.
    pub(crate) fn push_record(body: &mut String, kind: &str, envelope: &str) {
        use std::fmt::Write;
        let _ = write!(body, "{} {} ", kind.len(), envelope.len());
        body.push_str(kind);
        body.push_str(envelope);
    }

    /// Splits a batch; None when it is malformed.
    pub(crate) fn parse(body: &'a str) -> Option<Self> {
        let (head, mut rest) = body.split_once('\n')?;
        let mut words = head.split(' ');
        let origin = words.next().filter(|o| !o.is_empty())?;
        let first_seq: u64 = words.next()?.parse().ok().filter(|&s| s > 0)?;
        let count: usize = words.next()?.parse().ok().filter(|&c| c > 0)?;
        if words.next().is_some() || count > rest.len() {
            return None;
        }
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let (klen, r) = rest.split_once(' ')?;
            let (jlen, r) = r.split_once(' ')?;
            let (klen, jlen): (usize, usize) = (klen.parse().ok()?, jlen.parse().ok()?);
            let kind = r.get(..klen)?;
            let json = r.get(klen..klen.checked_add(jlen)?)?;
            records.push((kind, json));
            rest = &r[klen + jlen..];
        }
        rest.is_empty().then_some(Batch { origin, first_seq, records })
    }
}

/// The keys and channel of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct LogKeys {
    pub stream: String,
    pub counter: String,
    /// The trim index: `"<last number> <stream id>"` per entry, oldest first.
    pub index: String,
    pub bus: String,
}

impl LogKeys {
    pub(crate) fn new(namespace: &str) -> Self {
        let tag = format!("{{{namespace}:sync}}");
        LogKeys {
            stream: format!("{tag}:log"),
            counter: format!("{tag}:counter"),
            index: format!("{tag}:index"),
            bus: format!("{tag}:bus"),
        }
    }

    /// The key holding the sequence number of `origin`'s last message in the log (it
    /// expires a day after the origin's last write).
    pub(crate) fn origin_mark(&self, origin: &str) -> String {
        // The stream key is "<tag>:log"; the mark shares the tag.
        let tag = self.stream.strip_suffix(":log").unwrap_or(&self.stream);
        format!("{tag}:origin:{origin}")
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

/// The log's epoch and the number of its last message, from the counter (no entry is read).
pub(crate) async fn end(redis: &RedisClient, keys: &LogKeys) -> Result<Option<(String, u64)>> {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(&keys.counter).arg("epoch").arg("n");
    let (epoch, n): (Option<String>, Option<u64>) = redis.query(&cmd, true).await?;
    Ok(epoch.zip(n))
}

pub(crate) fn parse_id(id: &str) -> Option<LogId> {
    let (ms, n) = id.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_message_carries_id_epoch_numbers_and_the_batch_with_its_spaces() {
        let e = LogEntry::from_bus("17-3 1700.5 42 2 o 1 2\n{\"a\": 1}").unwrap();
        assert_eq!((e.id, e.epoch.as_str(), e.n, e.count), ((17, 3), "1700.5", 42, 2));
        assert_eq!((e.body.as_str(), e.last()), ("o 1 2\n{\"a\": 1}", 43));
        assert!(LogEntry::from_bus("nonsense").is_none());
        assert!(LogEntry::from_bus("1-1 e x 1 {}").is_none());
        assert!(LogEntry::from_bus("1-1 e 1 0 {}").is_none(), "an empty batch");
    }

    #[test]
    fn a_batch_names_origin_sequence_numbers_and_types_without_parsing_json() {
        let mut body = Batch::header("edge-1/ab", 7, 2);
        body.push_str(&Batch::record("my type.delta", "{\"x\":\"a b\\n\"}"));
        body.push_str(&Batch::record("é.started", "{}"));
        let b = Batch::parse(&body).unwrap();
        assert_eq!((b.origin, b.first_seq), ("edge-1/ab", 7));
        assert_eq!(b.records, [("my type.delta", "{\"x\":\"a b\\n\"}"), ("é.started", "{}")]);
        assert!(Batch::parse(&body[..body.len() - 1]).is_none(), "cut short");
        assert!(Batch::parse(&format!("{body}x")).is_none(), "trailing bytes");
        assert!(Batch::parse(&body.replace(" 2\n", " 3\n")).is_none(), "a record missing");
        assert!(Batch::parse("o 1 1\n99999999999999999999 1 x").is_none());
        assert!(Batch::parse("o 1 1\n1 18446744073709551615 x").is_none());
        assert!(Batch::parse("o 1 1\n1 1 é").is_none(), "not on a character boundary");
        assert!(Batch::parse("o 0 1\n1 0 x").is_none(), "sequence numbers start at 1");
    }

    #[test]
    fn the_position_before_an_entry_reads_from_that_entry() {
        let e = LogEntry { id: (5, 0), epoch: "x".into(), n: 9, count: 3, body: String::new() };
        let p = e.position_before();
        assert_eq!((p.id, p.n), ((4, u64::MAX), 8));
        assert!(p.is_followed_by(&e));
        assert!(e.position().includes(&e));
        assert_eq!(e.position().n, 11);
        let e2 = LogEntry { id: (5, 2), ..e.clone() };
        assert_eq!(e2.position_before().id, (5, 1));
    }
}
