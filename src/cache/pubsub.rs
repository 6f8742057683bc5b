//! Pattern subscriptions that survive reconnects.
//!
//! One background task owns a dedicated pub/sub connection. When it breaks (server restart,
//! network), the task reconnects with backoff and subscribes to every registered pattern
//! again. Messages published while no connection was up are lost, as with any Redis pub/sub;
//! `reconnects()` lets callers notice such gaps. Callbacks run on one dispatcher thread per
//! client (named `rsdb-pubsub`), one at a time and in arrival order.

use crate::error::{Error, Result};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One message as delivered to a callback.
#[derive(Debug, Clone)]
pub struct Message {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern that matched it.
    pub pattern: String,
    /// The payload bytes (usually UTF-8 JSON).
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as text, with invalid UTF-8 replaced.
    pub fn payload_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

/// Where the pub/sub connection goes: one fixed server, or the current master of a
/// Sentinel-configured client (asked again before every connection attempt).
pub(crate) trait NodeSource: Send + Sync {
    /// The client to connect with now.
    fn client(&self) -> redis::Client;
    /// Called when connecting failed or an established connection ended.
    fn broken(&self) {}
}

impl NodeSource for redis::Client {
    fn client(&self) -> redis::Client {
        self.clone()
    }
}

/// A subscription callback. Runs on the dispatcher thread.
pub type Callback = Arc<dyn Fn(&Message) + Send + Sync>;

/// Identifies one subscription; pass it to `unsubscribe`.
pub type SubscriptionId = u64;

struct Sub {
    pattern: String,
    callback: Callback,
}

pub(crate) struct Shared {
    subs: Mutex<HashMap<SubscriptionId, Sub>>,
    next_id: AtomicU64,
    sink: tokio::sync::Mutex<Option<redis::aio::PubSubSink>>,
    connected: AtomicBool,
    connected_notify: Notify,
    reconnects: AtomicU64,
    received: AtomicU64,
    // Held while a callback runs, so unsubscribe can wait for an in-flight callback.
    dispatch_lock: Mutex<()>,
    dispatcher_thread: Mutex<Option<std::thread::ThreadId>>,
    closed: AtomicBool,
    // Wakes the connection loop to drop its connection and connect again (master switch).
    kick: Notify,
}

/// The pub/sub half of a `RedisClient`.
pub(crate) struct PubSubWorker {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Drop for PubSubWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PubSubWorker {
    /// Ends every subscription: no callback starts after this, and (unless called on the
    /// dispatcher thread itself) none is still running when it returns. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.task.abort();
        self.shared.closed.store(true, Ordering::Release);
        let callbacks: Vec<Sub> =
            self.shared.subs.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, s)| s).collect();
        let on_dispatcher = *self.shared.dispatcher_thread.lock().unwrap_or_else(|p| p.into_inner())
            == Some(std::thread::current().id());
        if !on_dispatcher {
            drop(self.shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
        }
        // Callbacks (and what they captured) are released here, after the last call ended.
        drop(callbacks);
    }
}

impl PubSubWorker {
    pub(crate) fn start(source: Arc<dyn NodeSource>, timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sink: tokio::sync::Mutex::new(None),
            connected: AtomicBool::new(false),
            connected_notify: Notify::new(),
            reconnects: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dispatch_lock: Mutex::new(()),
            dispatcher_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            kick: Notify::new(),
        });
        let (tx, rx) = std::sync::mpsc::channel::<Message>();
        let dispatch_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("rsdb-pubsub".into())
            .spawn(move || dispatch_loop(dispatch_shared, rx))
            .expect("could not start the pub/sub dispatcher thread");
        *shared.dispatcher_thread.lock().unwrap() = Some(handle.thread().id());
        let task = crate::runtime::runtime().spawn(connection_loop(source, shared.clone(), tx, timeout));
        PubSubWorker { shared, task, timeout }
    }

    /// Registers `callback` for channels matching the glob `pattern` and waits until the
    /// server has confirmed the subscription.
    pub(crate) async fn subscribe(&self, pattern: &str, callback: Callback) -> Result<SubscriptionId> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::State("the client's subscriptions were closed".into()));
        }
        self.wait_connected().await?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.subs.lock().unwrap().insert(id, Sub { pattern: pattern.to_string(), callback });
        let confirm = async {
            let mut guard = self.shared.sink.lock().await;
            match guard.as_mut() {
                Some(sink) => sink.psubscribe(pattern).await.map_err(Error::from),
                // The connection broke in between; the reconnect will subscribe it.
                None => Ok(()),
            }
        };
        let result = match tokio::time::timeout(self.timeout, confirm).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!(
                "redis did not confirm the subscription to {pattern:?} within {:?}",
                self.timeout
            ))),
        };
        if let Err(e) = result {
            self.shared.subs.lock().unwrap().remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Removes a subscription. When it returns, its callback is not running and will not run
    /// again (unless called from inside that callback, where it only prevents later calls).
    pub(crate) async fn unsubscribe(&self, id: SubscriptionId) -> Result<()> {
        let removed = self.shared.subs.lock().unwrap().remove(&id);
        let Some(sub) = removed else {
            return Err(Error::NotFound(format!("subscription {id}")));
        };
        let still_used = self.shared.subs.lock().unwrap().values().any(|s| s.pattern == sub.pattern);
        if !still_used {
            let mut guard = self.shared.sink.lock().await;
            if let Some(sink) = guard.as_mut() {
                // Best effort: if this fails the connection is gone and the pattern with it.
                let _ = tokio::time::timeout(self.timeout, sink.punsubscribe(&sub.pattern)).await;
            }
        }
        let on_dispatcher = *self.shared.dispatcher_thread.lock().unwrap() == Some(std::thread::current().id());
        if !on_dispatcher {
            drop(self.shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner()));
        }
        Ok(())
    }

    async fn wait_connected(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let notified = self.shared.connected_notify.notified();
            if self.shared.connected.load(Ordering::Acquire) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Connection(format!("redis pub/sub is not connected (waited {:?})", self.timeout)));
            }
        }
    }

    /// Drops the current connection (if any) and connects again to what the source names now;
    /// every pattern is subscribed again.
    pub(crate) fn reconnect_now(&self) {
        self.shared.kick.notify_one();
    }

    pub(crate) fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    pub(crate) fn subscription_count(&self) -> usize {
        self.shared.subs.lock().unwrap().len()
    }
}

async fn connection_loop(
    source: Arc<dyn NodeSource>,
    shared: Arc<Shared>,
    tx: std::sync::mpsc::Sender<Message>,
    timeout: Duration,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let client = source.client();
        let connected = tokio::time::timeout(timeout, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                source.broken();
                // A kick (new master) ends the wait at once.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shared.kick.notified() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let patterns: Vec<String> = {
            let subs = shared.subs.lock().unwrap();
            let mut p: Vec<String> = subs.values().map(|s| s.pattern.clone()).collect();
            p.sort();
            p.dedup();
            p
        };
        let mut ok = true;
        for p in &patterns {
            if !matches!(tokio::time::timeout(timeout, sink.psubscribe(p)).await, Ok(Ok(()))) {
                ok = false;
                break;
            }
        }
        if !ok {
            source.broken();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.kick.notified() => {}
            }
            continue;
        }
        backoff = Duration::from_millis(50);
        if !first {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        *shared.sink.lock().await = Some(sink);
        shared.connected.store(true, Ordering::Release);
        shared.connected_notify.notify_waiters();
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = shared.kick.notified() => None,
            };
            let Some(msg) = msg else { break };
            shared.received.fetch_add(1, Ordering::Relaxed);
            let pattern: String = msg.get_pattern().unwrap_or_default();
            let m = Message {
                channel: msg.get_channel_name().to_string(),
                pattern,
                payload: msg.get_payload_bytes().to_vec(),
            };
            if tx.send(m).is_err() {
                return;
            }
        }
        shared.connected.store(false, Ordering::Release);
        *shared.sink.lock().await = None;
        source.broken();
    }
}

fn dispatch_loop(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<Message>) {
    while let Ok(msg) = rx.recv() {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let callbacks: Vec<(SubscriptionId, Callback)> = {
            let subs = shared.subs.lock().unwrap();
            subs.iter().filter(|(_, s)| s.pattern == msg.pattern).map(|(id, s)| (*id, s.callback.clone())).collect()
        };
        for (id, cb) in callbacks {
            let _guard = shared.dispatch_lock.lock().unwrap_or_else(|p| p.into_inner());
            // Re-check under the lock: an unsubscribe that returned must not see another call.
            if !shared.subs.lock().unwrap().contains_key(&id) {
                continue;
            }
            // A panicking callback must not take the dispatcher down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&msg)));
        }
    }
}
