//! The sending side of a manager: the outbox drained into the log, in order, in batches of one
//! script call each, retried with backoff while Redis is away.

use super::log::{Batch, SEND_SCRIPT};
use super::manager::Inner;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Messages written per script call (one round trip, one log entry, one bus message), and the
/// bytes a call carries at most (beyond its first message).
const SEND_BATCH: usize = 2048;
const SEND_BATCH_BYTES: usize = 2 << 20;

/// One numbered message waiting for the log, as its record in a batch.
pub(crate) struct Outgoing {
    pub seq: u64,
    pub record: String,
}

pub(crate) async fn sender(inner: Arc<Inner>) {
    let hash = redis::Script::new(SEND_SCRIPT).get_hash().to_string();
    let mut loaded = false;
    let mut backoff = Duration::from_millis(20);
    while !inner.closed.load(Ordering::SeqCst) {
        if !loaded {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(SEND_SCRIPT);
            if inner.redis.query::<String>(&cmd, true).await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            loaded = true;
        }
        if inner.outbox_lock().1.is_empty() {
            let notified = inner.outbox_notify.notified();
            if inner.outbox_lock().1.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
            continue;
        }
        match send_batch(&inner, &hash).await {
            Ok(()) => backoff = Duration::from_millis(20),
            // A restarted server has lost its scripts.
            Err(e) if e.code() == Some("NOSCRIPT") => loaded = false,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

// Writes the oldest queued messages as one batch in one script call; they leave the outbox
// only once Redis has answered. A batch cut short is sent again whole: receivers skip the
// repeats by sequence number.
async fn send_batch(inner: &Inner, hash: &str) -> Result<(), redis::RedisError> {
    let (first, last, body) = {
        let outbox = inner.outbox_lock();
        let Some(first) = outbox.1.front().map(|o| o.seq) else { return Ok(()) };
        let mut count = 0;
        let mut bytes = 0;
        for o in outbox.1.iter().take(SEND_BATCH) {
            bytes += o.record.len();
            if count > 0 && bytes > SEND_BATCH_BYTES {
                break;
            }
            count += 1;
        }
        let mut body = Batch::header(&inner.origin, first, count);
        body.reserve(bytes);
        for o in outbox.1.iter().take(count) {
            body.push_str(&o.record);
        }
        (first, first + count as u64 - 1, body)
    };
    let mut call = redis::cmd("EVALSHA");
    call.arg(hash)
        .arg(3)
        .arg(&inner.keys.stream)
        .arg(&inner.keys.counter)
        .arg(&inner.keys.index)
        .arg(inner.opts.log_max_len)
        .arg(&inner.keys.bus)
        .arg(last - first + 1)
        .arg(body);
    let mut conn = inner.redis.connection();
    tokio::time::timeout(inner.redis.timeout(), call.query_async::<String>(&mut conn))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))??;
    {
        let mut outbox = inner.outbox_lock();
        while outbox.1.front().is_some_and(|o| o.seq <= last) {
            outbox.1.pop_front();
        }
    }
    inner.counters.sent.fetch_add(last - first + 1, Ordering::Relaxed);
    inner.logged.send_replace(last);
    Ok(())
}
