//! The sending side of a manager: the outbox drained into the log, in order, in batches of one
//! script call each, several calls in flight on one connection, retried with backoff while
//! Redis is away.
//!
//! Calls are handed to the connection in sequence order and their replies are taken in that
//! order; messages leave the outbox only when every call before theirs succeeded too. The
//! script checks each batch against the origin's mark in the log, so a batch can never land
//! before an earlier one that failed: it is refused, and after a failure the sender waits for
//! the calls still in flight and writes again from its oldest unconfirmed message.

use super::log::{Batch, SEND_SCRIPT};
use super::manager::Inner;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Messages written per script call (one round trip, one log entry, one bus message), and the
/// bytes a call carries at most (beyond its first message).
const SEND_BATCH: usize = 2048;
const SEND_BATCH_BYTES: usize = 2 << 20;
/// Script calls sent before the oldest one has answered.
const IN_FLIGHT: usize = 4;
/// The smallest batch the sender shrinks to while calls keep failing: a connection that drops
/// more often than a full batch takes to land still carries small ones, so the queue drains.
const MIN_BATCH: usize = 16;
/// Retries in a row, 10 ms apart, after the server closed the connection under a call, before
/// the backoff applies again (a server that accepts and closes every connection is not hammered).
const QUICK_RETRIES: u32 = 5;

/// One numbered message waiting for the log: its event type and envelope, written as a
/// record ([`Batch::push_record`]) when its batch is made.
pub(crate) struct Outgoing {
    pub seq: u64,
    pub kind: String,
    pub json: String,
}

impl Outgoing {
    fn record_len(&self) -> usize {
        self.kind.len() + self.json.len() + 12
    }
}

type Reply = Result<String, redis::RedisError>;

// One script call on its way: the sequence numbers it carries and its reply (taken as soon as
// the call was handed to the connection, when it was already there).
struct Call {
    last: u64,
    count: u64,
    reply: Pin<Box<dyn Future<Output = Reply> + Send>>,
    early: Option<Reply>,
}

pub(crate) async fn sender(inner: Arc<Inner>) {
    let hash = redis::Script::new(SEND_SCRIPT).get_hash().to_string();
    let mark = inner.keys.origin_mark(&inner.origin);
    let mut loaded = false;
    let mut backoff = Duration::from_millis(20);
    let mut in_flight: VecDeque<Call> = VecDeque::new();
    // The next sequence number to send, and whether the log is known to hold every message
    // before it (so the script may accept it without the origin's mark).
    let mut next = 1u64;
    let mut resume = true;
    // The first error among the calls in flight: later replies confirm nothing.
    let mut failure: Option<redis::RedisError> = None;
    // Retries in a row after a closed connection without the backoff.
    let mut quick_retries = 0;
    // Messages per call now: halved after each failed call, doubled after each that landed.
    let mut batch = SEND_BATCH;
    while !inner.closed.load(Ordering::SeqCst) {
        if in_flight.is_empty() {
            if let Some(e) = failure.take() {
                // Everything sent after the failed call goes again, from the oldest message
                // still queued.
                next = inner.outbox_lock().1.front().map_or(next, |o| o.seq);
                resume = true;
                if e.code() != Some("ORDER") {
                    batch = (batch / 2).max(MIN_BATCH);
                }
                if e.code() == Some("NOSCRIPT") {
                    // A restarted server has lost its scripts.
                    loaded = false;
                } else if dropped_under_call(&e) && quick_retries < QUICK_RETRIES {
                    // The server was there and closed this connection (killed, restarted): the
                    // connection is replaced at once, and waiting longer would only give the
                    // new one time to be closed too before it carries anything.
                    quick_retries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else if e.code() != Some("ORDER") {
                    quick_retries = 0;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                continue;
            }
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
        }
        // Hand out calls while there is room and something new to send.
        while failure.is_none() && in_flight.len() < IN_FLIGHT {
            let Some(mut call) = start_call(&inner, &hash, &mark, next, resume, batch) else { break };
            next = call.last + 1;
            resume = false;
            // Polled once right away, so the call reaches the connection before the next.
            call.early = std::future::poll_fn(|cx| {
                Poll::Ready(match call.reply.as_mut().poll(cx) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await;
            in_flight.push_back(call);
        }
        let Some(mut call) = in_flight.pop_front() else {
            let notified = inner.outbox_notify.notified();
            if inner.outbox_lock().1.back().is_none_or(|o| o.seq < next) {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
            continue;
        };
        let reply = match call.early.take() {
            Some(r) => r,
            None => tokio::time::timeout(inner.redis.timeout(), &mut call.reply)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out").into())),
        };
        match reply {
            Ok(_) if failure.is_none() => {
                backoff = Duration::from_millis(20);
                batch = (batch * 2).min(SEND_BATCH);
                quick_retries = 0;
                confirm(&inner, call.last, call.count);
            }
            Ok(_) => {}
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
}

// A connection the server closed while a call was on it or before it was written, as opposed
// to a server that refuses connections or does not answer (those get the backoff).
fn dropped_under_call(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_connection_refusal() && !e.is_timeout()
}

// Builds the script call for the queued messages from sequence number `from` on (up to `batch`
// of them), or None when there are none.
fn start_call(inner: &Inner, hash: &str, mark: &str, from: u64, resume: bool, batch: usize) -> Option<Call> {
    let (first, count, body) = {
        let outbox = inner.outbox_lock();
        let front = outbox.1.front()?.seq;
        // Messages before `from` are in flight (or confirmed and about to leave the queue).
        let skip = usize::try_from(from.saturating_sub(front)).ok()?;
        let mut count = 0;
        let mut bytes = 0;
        for o in outbox.1.range(skip.min(outbox.1.len())..).take(batch) {
            bytes += o.record_len();
            if count > 0 && bytes > SEND_BATCH_BYTES {
                break;
            }
            count += 1;
        }
        if count == 0 {
            return None;
        }
        let first = outbox.1[skip].seq;
        let mut body = Batch::header(&inner.origin, first, count);
        body.reserve(bytes);
        for o in outbox.1.range(skip..skip + count) {
            Batch::push_record(&mut body, &o.kind, &o.json);
        }
        (first, count as u64, body)
    };
    let mut call = redis::cmd("EVALSHA");
    call.arg(hash)
        .arg(4)
        .arg(&inner.keys.stream)
        .arg(&inner.keys.counter)
        .arg(&inner.keys.index)
        .arg(mark)
        .arg(inner.opts.log_max_len)
        .arg(&inner.keys.bus)
        .arg(count)
        .arg(body)
        .arg(first)
        .arg(if resume { "1" } else { "0" });
    let mut conn = inner.redis.connection();
    let reply = Box::pin(async move { call.query_async::<String>(&mut conn).await });
    Some(Call { last: first + count - 1, count, reply, early: None })
}

// The log has every message up to `last`: they leave the outbox.
fn confirm(inner: &Inner, last: u64, count: u64) {
    {
        let mut outbox = inner.outbox_lock();
        while outbox.1.front().is_some_and(|o| o.seq <= last) {
            outbox.1.pop_front();
        }
    }
    inner.counters.sent.fetch_add(count, Ordering::Relaxed);
    inner.logged.send_replace(last);
}
