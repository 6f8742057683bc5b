//! The sending side of a manager: the outbox drained into the log, in order, in pipelined
//! batches, retried with backoff while Redis is away.

use super::log::SEND_SCRIPT;
use super::manager::Inner;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Messages sent per pipelined round trip.
const SEND_BATCH: usize = 512;

/// One numbered message waiting for the log.
pub(crate) struct Outgoing {
    pub seq: u64,
    pub text: String,
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

// Writes the oldest queued messages; they leave the outbox only once Redis has answered for
// all of them. A batch cut short is sent again whole: receivers skip the repeats by sequence
// number.
async fn send_batch(inner: &Inner, hash: &str) -> Result<(), redis::RedisError> {
    let batch: Vec<(u64, String)> =
        inner.outbox_lock().1.iter().take(SEND_BATCH).map(|o| (o.seq, o.text.clone())).collect();
    let Some(&(last, _)) = batch.last() else { return Ok(()) };
    let mut pipe = redis::pipe();
    for (_, text) in &batch {
        pipe.cmd("EVALSHA")
            .arg(hash)
            .arg(2)
            .arg(&inner.keys.stream)
            .arg(&inner.keys.counter)
            .arg(inner.opts.log_max_len)
            .arg(&inner.keys.bus)
            .arg(text)
            .ignore();
    }
    let mut conn = inner.redis.connection();
    tokio::time::timeout(inner.redis.timeout(), pipe.query_async::<()>(&mut conn))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))??;
    {
        let mut outbox = inner.outbox_lock();
        while outbox.1.front().is_some_and(|o| o.seq <= last) {
            outbox.1.pop_front();
        }
    }
    inner.counters.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
    inner.logged.send_replace(last);
    Ok(())
}
