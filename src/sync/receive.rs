//! The receiving side of a manager: messages from the bus and from the log, taken in log
//! order, each origin's at most once; gaps repaired from the log, a trimmed log from the latest
//! snapshot.

use super::envelope::Envelope;
use super::log::{self, Batch, LogEntry, LogPosition, READ_BATCH};
use super::manager::{lock, Inner, Resync};
use crate::cache::Message;
use crate::error::Result;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What a receiver has taken so far.
#[derive(Default)]
pub(crate) struct Receiver {
    /// Each origin's last sequence number taken.
    pub last_seq: HashMap<String, u64>,
    /// The last log entry taken.
    pub pos: Option<LogPosition>,
    /// True while the log is being read: the bus is then ignored, the read delivers in order.
    pub catching_up: bool,
}

// Where an entry comes from: the bus (a gap leaves it to the log read) or the log read (a gap
// means entries are gone, reported once per read).
enum Source<'a> {
    Bus,
    Log { reported: &'a mut bool },
}

impl Inner {
    pub(crate) fn on_bus_message(&self, m: &Message) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(entry) = LogEntry::from_bus(&m.payload_str()) else {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut rx = lock(&self.rx);
        if rx.catching_up {
            return;
        }
        if !self.take(&mut rx, &entry, Source::Bus) {
            rx.catching_up = true;
            drop(rx);
            self.check_now.notify_one();
        }
    }

    // Takes one entry (one batch) in log order. Returns false, doing nothing, when a bus entry
    // does not follow the position (something before it was missed).
    fn take(&self, rx: &mut Receiver, entry: &LogEntry, source: Source<'_>) -> bool {
        if rx.pos.as_ref().is_some_and(|p| p.includes(entry)) {
            self.counters.duplicates.fetch_add(entry.count, Ordering::Relaxed);
            return true;
        }
        let follows = match &rx.pos {
            Some(p) => p.is_followed_by(entry) || (entry.epoch != p.epoch && entry.n == 1),
            None => entry.n == 1,
        };
        let mut reported = match source {
            Source::Bus if !follows => return false,
            Source::Bus => None,
            Source::Log { reported } => Some(reported),
        };
        if !follows {
            let from = rx.pos.as_ref().filter(|p| p.epoch == entry.epoch).map(|p| p.n + 1).unwrap_or(1);
            self.report_once(
                &mut reported,
                Resync {
                    origin: String::new(),
                    expected_seq: from,
                    found_seq: entry.n,
                    reason: format!("log entries {from} to {} are no longer in the log", entry.n - 1),
                    snapshot_version: None,
                },
            );
        }
        rx.pos = Some(entry.position());
        let batch = match Batch::parse(&entry.body) {
            Some(b) if b.records.len() as u64 == entry.count => b,
            _ => {
                self.counters.rejected.fetch_add(entry.count, Ordering::Relaxed);
                return true;
            }
        };
        let count = entry.count;
        let batch_last = batch.first_seq + count - 1;
        let last_seq = rx.last_seq.get(batch.origin).copied().unwrap_or(0);
        if batch_last <= last_seq {
            // Messages the sender wrote twice (a retried batch).
            self.counters.duplicates.fetch_add(count, Ordering::Relaxed);
            return true;
        }
        // A batch re-sent after part of it was taken: skip that part.
        let skip = last_seq.saturating_sub(batch.first_seq - 1);
        if skip > 0 {
            self.counters.duplicates.fetch_add(skip, Ordering::Relaxed);
        }
        if batch.first_seq + skip != last_seq + 1 && last_seq > 0 {
            self.report_once(
                &mut reported,
                Resync {
                    origin: batch.origin.to_string(),
                    expected_seq: last_seq + 1,
                    found_seq: batch.first_seq + skip,
                    reason: "messages of this origin never reached the log".into(),
                    snapshot_version: None,
                },
            );
        }
        match rx.last_seq.get_mut(batch.origin) {
            Some(s) => *s = batch_last,
            None => {
                rx.last_seq.insert(batch.origin.to_string(), batch_last);
            }
        }
        let own = batch.origin == self.origin;
        for (i, (kind, json)) in batch.records.iter().enumerate().skip(skip as usize) {
            // This instance's own messages were applied when they were made; they are parsed
            // only for a subscriber of their type.
            if own && !self.has_subscriber(kind) {
                continue;
            }
            let seq = batch.first_seq + i as u64;
            let env = match Envelope::parse(json) {
                Ok(e) if e.seq == seq && e.origin == batch.origin && e.kind == *kind => e,
                _ => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            if !own {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                if self.clock.observe(&env.hlc).is_err() {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if env.is_delta() && !self.apply_remote(&env) {
                    continue;
                }
            }
            self.deliver(&env);
        }
        true
    }

    fn report_once(&self, reported: &mut Option<&mut bool>, r: Resync) {
        match reported {
            Some(done) if **done => {}
            Some(done) => {
                **done = true;
                self.report_resync(r);
            }
            None => self.report_resync(r),
        }
    }

    /// Reads the log from the last entry taken to its end.
    pub(crate) async fn catch_up(&self) -> Result<()> {
        lock(&self.rx).catching_up = true;
        let result = self.read_log().await;
        lock(&self.rx).catching_up = false;
        result
    }

    async fn read_log(&self) -> Result<()> {
        let mut reported = false;
        if let Some(first) = log::read_after(&self.redis, &self.keys, None, 1).await?.pop() {
            let pos = lock(&self.rx).pos.clone();
            let missing = match &pos {
                Some(p) if p.epoch == first.epoch => first.n > p.n + 1,
                _ => first.n > 1,
            };
            if missing {
                self.repair_from_snapshot(&first, pos).await;
                reported = true;
            }
        }
        let mut counted = false;
        loop {
            let from = lock(&self.rx).pos.as_ref().map(|p| p.id);
            let entries = log::read_after(&self.redis, &self.keys, from, READ_BATCH).await?;
            if entries.is_empty() {
                return Ok(());
            }
            if !counted {
                self.counters.catch_ups.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            let mut rx = lock(&self.rx);
            for entry in &entries {
                let before = rx.pos.clone();
                self.take(&mut rx, entry, Source::Log { reported: &mut reported });
                if rx.pos != before {
                    self.counters.caught_up_messages.fetch_add(entry.count, Ordering::Relaxed);
                }
            }
            if entries.len() < READ_BATCH {
                return Ok(());
            }
        }
    }

    // The log no longer holds the entries between `pos` and `first`: join the latest snapshot
    // if it reaches further than `pos`, report what happened, and read on from the snapshot or
    // from `first`.
    async fn repair_from_snapshot(&self, first: &LogEntry, pos: Option<LogPosition>) {
        let restored = self.restore_latest_snapshot(first, pos.as_ref()).await;
        let (version, tail) = match &restored {
            Ok(Some((v, true))) => (Some(*v), format!("; restored snapshot version {v}, which covers the gap")),
            Ok(Some((v, false))) => {
                (Some(*v), format!("; restored snapshot version {v}, but it is older than the gap's end"))
            }
            Ok(None) => (None, "; no snapshot covers it, so changes in the gap are missing here".to_string()),
            Err(e) => (None, format!("; the snapshot could not be restored: {e}")),
        };
        let from = pos.as_ref().filter(|p| p.epoch == first.epoch).map(|p| p.n + 1).unwrap_or(1);
        self.report_resync(Resync {
            origin: String::new(),
            expected_seq: from,
            found_seq: first.n,
            reason: format!("log entries {from} to {} were trimmed before this instance read them{tail}", first.n - 1),
            snapshot_version: version,
        });
        // Read on from the gap's end unless the snapshot reaches past it.
        let mut rx = lock(&self.rx);
        let beyond = rx.pos.as_ref().is_some_and(|p| p.epoch == first.epoch && p.n + 1 >= first.n);
        if !beyond {
            rx.pos = Some(first.position_before());
        }
    }

    // Joins the latest snapshot when it is in `first`'s epoch and past `pos`. Returns its
    // version and whether it reaches the gap's end.
    async fn restore_latest_snapshot(
        &self,
        first: &LogEntry,
        pos: Option<&LogPosition>,
    ) -> Result<Option<(i64, bool)>> {
        let Some(db) = lock(&self.db).clone() else { return Ok(None) };
        let Some(snap) = super::snapshot::load_latest(&db, &self.opts.namespace).await? else { return Ok(None) };
        let Some(at) = snap.position.clone() else { return Ok(None) };
        let ahead = at.epoch == first.epoch && pos.is_none_or(|p| p.epoch != at.epoch || at.n > p.n);
        if !ahead {
            return Ok(None);
        }
        let mut rx = lock(&self.rx);
        self.store().absorb(&snap.image)?;
        for (origin, seq) in &snap.origin_seqs {
            let e = rx.last_seq.entry(origin.clone()).or_insert(0);
            *e = (*e).max(*seq);
        }
        let covers = at.n + 1 >= first.n;
        rx.pos = Some(at);
        Ok(Some((snap.info.version, covers)))
    }

    async fn log_is_ahead(&self) -> Result<bool> {
        let end = log::end(&self.redis, &self.keys).await?;
        Ok(match (end, lock(&self.rx).pos.as_ref()) {
            (Some((epoch, n)), Some(p)) => epoch != p.epoch || n > p.n,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

/// Reads the log when a gap was seen, after the subscriber connection came back, or when the
/// log's end is past what was taken and nothing was taken for a check interval.
///
/// While the bus delivers, a message lost on it shows as a gap in the numbers of the next one;
/// the periodic check is for a loss with nothing after it. A receiver that is merely behind
/// (its bus messages still on their way, as under a burst) keeps taking them from the bus:
/// reading the log then would fetch the same entries twice and drop the bus meanwhile.
pub(crate) async fn checker(inner: Arc<Inner>) {
    let mut reconnects = inner.redis.pubsub_stats().reconnects;
    let mut last_run = Instant::now();
    let mut seen = lock(&inner.rx).pos.clone();
    while !inner.closed.load(Ordering::SeqCst) {
        let _ = tokio::time::timeout(inner.opts.check_interval, inner.check_now.notified()).await;
        let now_reconnects = inner.redis.pubsub_stats().reconnects;
        let gap = lock(&inner.rx).catching_up;
        let due = last_run.elapsed() >= inner.opts.check_interval;
        if !(gap || now_reconnects != reconnects || due) {
            continue;
        }
        last_run = Instant::now();
        let pos = lock(&inner.rx).pos.clone();
        let stalled = pos == seen;
        seen = pos;
        let needed = gap || now_reconnects != reconnects || (stalled && inner.log_is_ahead().await.unwrap_or(false));
        if needed && inner.catch_up().await.is_ok() {
            reconnects = now_reconnects;
        }
    }
}
