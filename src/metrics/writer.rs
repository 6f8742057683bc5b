//! The background batching writer.
//!
//! Callers hand points to [`MetricsWriter::write_point`], which encodes them (an invalid point
//! is an error at once and nothing of it is buffered) and appends the line to a bounded buffer.
//! `senders` threads (default 4) send the buffer in batches: as soon as `batch_size` lines are
//! waiting, or after `flush_interval` when fewer are. Each sender has at most one request in
//! flight, so up to `senders` batches travel at once.
//!
//! **Ordering.** With one sender, batches arrive in the order points were written. With more,
//! batches may arrive out of order (points inside a batch keep their order). Every point
//! carries its own timestamp (the writer stamps none of its own), so the stored series is the
//! same either way; only points written with *no* timestamp get the server's arrival time.
//!
//! **Callers never wait on the network.** `write_point` takes the buffer lock, which the writer
//! thread holds only to move at most `batch_size` lines (microseconds); it never sleeps, retries
//! or does I/O. `flush` and `shutdown` wait, but only up to the deadline they are given.
//!
//! **Nothing is dropped silently.** Every point that is accepted ends either delivered or
//! dropped with a [`DropReason`], and every drop is counted ([`WriterStats`]), passed to the
//! drop callback (aggregated, from the writer thread) and logged to stderr (at most once a second
//! per reason, unless `log_drops` is off):
//! - [`DropReason::BufferFull`]: the buffer (points or bytes) is full; the **oldest** queued
//!   points go first. The batch of a request in progress is not queued (it is counted against
//!   the bound); between attempts a failed batch goes back into the queue at its place in write
//!   order (before every later point), so it is among the first to be dropped.
//! - [`DropReason::Rejected`]: the server answered a 4xx other than 408/429 (bad line, unknown
//!   database, not allowed); retrying cannot help, the batch is dropped with the server's reason.
//!   When InfluxDB reports a partial write with `dropped=N`, only N points count as dropped.
//! - [`DropReason::RetriesExhausted`]: the server stayed unreachable/5xx/429 for longer than
//!   `retry_max_elapsed` while retrying one batch.
//! - [`DropReason::Shutdown`]: still buffered when the shutdown deadline passed.
//!
//! Retries: while the server is down, times out or answers 5xx/408/429, the batch is retried
//! (the backoff is shared: no sender starts a request before it has passed) after a delay drawn at random from `[initial·base^(n-1), initial·base^n]` (capped at
//! `retry_max_interval`), or after the server's `Retry-After` when it sends one (also capped).

use super::client::{InfluxDBClient, WriteFailure};
use super::line::Point;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes charged per buffered line on top of its text: the string's heap block (allocator
/// header and rounding) and its queue slot, measured at about 60 bytes on x86_64 glibc.
pub const LINE_OVERHEAD: usize = 72;

/// Writer settings. The defaults follow the InfluxDB client libraries (batch 5,000, flush 1 s)
/// with a buffer of 100,000 points / 64 MiB.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Lines per request (1..=max_buffer_points).
    pub batch_size: usize,
    /// Longest time a point waits before a smaller batch is sent.
    pub flush_interval: Duration,
    /// Most points kept (queued + in flight).
    pub max_buffer_points: usize,
    /// Most bytes kept (queued + in flight): each line counts its text plus [`LINE_OVERHEAD`]
    /// for its allocation and queue slot, so the process's memory stays within this bound.
    pub max_buffer_bytes: usize,
    /// First retry delay (`initial`).
    pub retry_initial: Duration,
    /// Growth of the retry delay (`base`, at least 1).
    pub retry_base: u32,
    /// Longest retry delay (also caps `Retry-After`).
    pub retry_max_interval: Duration,
    /// A batch that has failed for this long is dropped ([`DropReason::RetriesExhausted`]).
    pub retry_max_elapsed: Duration,
    /// Used by `Drop` (the deadline of the implicit shutdown).
    pub shutdown_timeout: Duration,
    /// Log drops to stderr (at most once a second per reason).
    pub log_drops: bool,
    /// Sender threads, each with at most one request in flight (1..=16). With more than one,
    /// batches may arrive out of order (see the module docs).
    pub senders: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch_size: 5_000,
            flush_interval: Duration::from_secs(1),
            max_buffer_points: 100_000,
            max_buffer_bytes: 64 << 20,
            retry_initial: Duration::from_secs(1),
            retry_base: 2,
            retry_max_interval: Duration::from_secs(30),
            retry_max_elapsed: Duration::from_secs(180),
            shutdown_timeout: Duration::from_secs(5),
            log_drops: true,
            senders: 4,
        }
    }
}

impl WriterOptions {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > self.max_buffer_points {
            return Err(Error::InvalidArgument(format!(
                "batch_size {} must be between 1 and max_buffer_points ({})",
                self.batch_size, self.max_buffer_points
            )));
        }
        if self.max_buffer_bytes == 0 {
            return Err(Error::InvalidArgument("max_buffer_bytes must be above zero".into()));
        }
        if self.flush_interval.is_zero() {
            return Err(Error::InvalidArgument("flush_interval must be above zero".into()));
        }
        if self.senders == 0 || self.senders > 16 {
            return Err(Error::InvalidArgument(format!("senders {} must be between 1 and 16", self.senders)));
        }
        if self.retry_base == 0 {
            return Err(Error::InvalidArgument("retry_base must be at least 1".into()));
        }
        Ok(())
    }
}

/// Why points were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    BufferFull,
    Rejected,
    RetriesExhausted,
    Shutdown,
}

impl DropReason {
    pub const ALL: [DropReason; 4] =
        [DropReason::BufferFull, DropReason::Rejected, DropReason::RetriesExhausted, DropReason::Shutdown];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::Rejected => "rejected",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the drop callback receives: `points` dropped for `reason` since the last event of that
/// reason, and the last message (the server's answer, or what was full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropEvent {
    pub reason: DropReason,
    pub points: u64,
    pub message: String,
}

/// The drop callback. Called on a sender thread (or on the thread calling `flush`/`shutdown`),
/// one call at a time; a panic in it is caught.
pub type DropCallback = Arc<dyn Fn(&DropEvent) + Send + Sync>;

/// Counters and gauges of a writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Points accepted by `write_point`/`write_points`.
    pub accepted: u64,
    /// Points the server took.
    pub delivered: u64,
    /// Dropped points by reason (`buffer_full`, `rejected`, `retries_exhausted`, `shutdown`).
    pub dropped_buffer_full: u64,
    pub dropped_rejected: u64,
    pub dropped_retries_exhausted: u64,
    pub dropped_shutdown: u64,
    /// Requests that succeeded, and failed attempts that were retried.
    pub batches: u64,
    pub retries: u64,
    /// Points held now (queued + in flight), and the bytes charged for them (text plus
    /// [`LINE_OVERHEAD`] per line).
    pub buffered_points: u64,
    pub buffered_bytes: u64,
    /// The last failure's message, if any.
    pub last_error: Option<String>,
}

impl WriterStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_buffer_full + self.dropped_rejected + self.dropped_retries_exhausted + self.dropped_shutdown
    }

    pub fn dropped_by(&self, r: DropReason) -> u64 {
        match r {
            DropReason::BufferFull => self.dropped_buffer_full,
            DropReason::Rejected => self.dropped_rejected,
            DropReason::RetriesExhausted => self.dropped_retries_exhausted,
            DropReason::Shutdown => self.dropped_shutdown,
        }
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    dropped: [AtomicU64; 4],
    batches: AtomicU64,
    retries: AtomicU64,
}

#[derive(Default)]
struct PendingDrop {
    points: u64,
    message: String,
}

/// Retry state shared by the senders (the server's health, not one batch's).
#[derive(Default)]
struct Backoff {
    attempt: u32,
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
}

struct State {
    /// Lines with their write sequence number, in write order.
    queue: VecDeque<(u64, String)>,
    queued_bytes: usize,
    inflight_points: usize,
    inflight_bytes: usize,
    /// Bumped by `flush`: send now whatever is queued.
    flush_wanted: bool,
    shutdown_deadline: Option<Instant>,
    pending: [PendingDrop; 4],
    last_error: Option<String>,
    /// Points dropped so far (with the delivered counter: what `flush` waits for).
    settled: u64,
    accepted: u64,
    /// Sender threads still running.
    running: usize,
    /// Every sender has ended (or shutdown gave up waiting for them).
    exited: bool,
    backoff: Backoff,
    /// When the latest request ended (the flush interval counts from it).
    last_send: Instant,
    /// Shutdown gave up on a request still in progress at its deadline: its points were counted
    /// as dropped, and the thread must not count them again when the request returns.
    abandoned: bool,
    /// Drop events taken from `pending` by some thread and not yet reported: `flush` waits for
    /// them so that its promise (events reported before it returns) holds whichever thread took
    /// them.
    reporting: usize,
}

struct Shared {
    opts: WriterOptions,
    state: Mutex<State>,
    wake: Condvar,
    progress: Condvar,
    counters: Counters,
    callback: Mutex<Option<DropCallback>>,
    /// Held while the callback runs, so calls never overlap.
    reporting: Mutex<()>,
    last_log: Mutex<[Option<Instant>; 4]>,
    log_suppressed: [AtomicU64; 4],
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a drop now; reported later by `report` (outside the lock).
    fn note_drop(&self, st: &mut State, reason: DropReason, points: u64, message: &str) {
        if points == 0 {
            return;
        }
        self.counters.dropped[reason.index()].fetch_add(points, Ordering::Relaxed);
        st.settled += points;
        let p = &mut st.pending[reason.index()];
        p.points += points;
        if p.message != message {
            p.message = message.to_owned();
        }
    }

    fn take_pending(st: &mut State) -> Vec<DropEvent> {
        let mut out = Vec::new();
        for r in DropReason::ALL {
            let p = &mut st.pending[r.index()];
            if p.points > 0 {
                out.push(DropEvent { reason: r, points: p.points, message: std::mem::take(&mut p.message) });
                p.points = 0;
            }
        }
        if !out.is_empty() {
            st.reporting += 1;
        }
        out
    }

    /// Calls the callback and logs; never holds the buffer lock.
    fn report(&self, events: Vec<DropEvent>) {
        if events.is_empty() {
            return;
        }
        let _one_at_a_time = self.reporting.lock().unwrap_or_else(|p| p.into_inner());
        let cb = self.callback.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for ev in &events {
            if let Some(cb) = &cb {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(ev)));
            }
            if self.opts.log_drops {
                let i = ev.reason.index();
                let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                if last[i].is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    last[i] = Some(now);
                    let earlier = self.log_suppressed[i].swap(0, Ordering::Relaxed);
                    eprintln!(
                        "rootstream-db metrics: dropped {} point(s) ({}): {}",
                        ev.points + earlier,
                        ev.reason.as_str(),
                        ev.message
                    );
                } else {
                    self.log_suppressed[i].fetch_add(ev.points, Ordering::Relaxed);
                }
            }
        }
        drop(_one_at_a_time);
        let mut st = self.lock();
        st.reporting = st.reporting.saturating_sub(1);
        drop(st);
        self.progress.notify_all();
    }
}

/// A background batching writer for one [`InfluxDBClient`].
pub struct MetricsWriter {
    shared: Arc<Shared>,
    client: InfluxDBClient,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for MetricsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsWriter").field("opts", &self.shared.opts).finish_non_exhaustive()
    }
}

impl MetricsWriter {
    /// Starts the sender threads.
    pub fn new(client: InfluxDBClient, opts: WriterOptions) -> Result<MetricsWriter> {
        opts.validate()?;
        let senders = opts.senders;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                inflight_points: 0,
                inflight_bytes: 0,
                flush_wanted: false,
                shutdown_deadline: None,
                pending: Default::default(),
                last_error: None,
                settled: 0,
                accepted: 0,
                running: opts.senders,
                exited: false,
                backoff: Backoff::default(),
                last_send: Instant::now(),
                abandoned: false,
                reporting: 0,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            counters: Counters::default(),
            callback: Mutex::new(None),
            reporting: Mutex::new(()),
            last_log: Mutex::new([None; 4]),
            log_suppressed: Default::default(),
            opts,
        });
        let w = MetricsWriter { shared: shared.clone(), client: client.clone(), threads: Mutex::new(Vec::new()) };
        for i in 0..senders {
            let (s2, c2) = (shared.clone(), client.clone());
            match std::thread::Builder::new().name(format!("rsdb-metrics-{i}")).spawn(move || run(s2, c2)) {
                Ok(h) => w.threads.lock().unwrap_or_else(|p| p.into_inner()).push(h),
                Err(e) => {
                    // The senders already started see the shutdown and end.
                    let mut st = shared.lock();
                    st.running -= senders - i;
                    if st.running == 0 {
                        st.exited = true;
                    }
                    drop(st);
                    w.shutdown(Duration::ZERO);
                    return Err(Error::Internal(format!("could not start a metrics sender thread: {e}")));
                }
            }
        }
        Ok(w)
    }

    pub fn client(&self) -> &InfluxDBClient {
        &self.client
    }

    pub fn options(&self) -> &WriterOptions {
        &self.shared.opts
    }

    /// Sets (or clears) the drop callback.
    pub fn set_drop_callback(&self, cb: Option<DropCallback>) {
        *self.shared.callback.lock().unwrap_or_else(|p| p.into_inner()) = cb;
    }

    /// Encodes and buffers one point. Errors: the point is invalid (nothing buffered), or the
    /// writer is shut down. Never waits on the network (see the module docs).
    pub fn write_point(&self, p: &Point) -> Result<()> {
        let line = self.client.encode(p)?;
        self.write_line(line)
    }

    /// Encodes all points first; buffers none of them when any is invalid.
    pub fn write_points(&self, points: &[Point]) -> Result<()> {
        let lines = points
            .iter()
            .enumerate()
            .map(|(i, p)| self.client.encode(p).map_err(|e| Error::InvalidArgument(format!("point {i}: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        for l in lines {
            self.write_line(l)?;
        }
        Ok(())
    }

    /// Buffers one line that is already valid line protocol in the client's precision (no
    /// newline). Only [`MetricsWriter::write_point`] checks points; this checks for newlines.
    pub fn write_line(&self, line: String) -> Result<()> {
        if line.is_empty() || line.contains('\n') {
            return Err(Error::InvalidArgument("a line must be non-empty and hold no newline".into()));
        }
        let opts = &self.shared.opts;
        if held(&line) > opts.max_buffer_bytes {
            return Err(Error::InvalidArgument(format!(
                "the point's line holds {} bytes, more than the whole buffer ({} bytes)",
                held(&line),
                opts.max_buffer_bytes
            )));
        }
        let mut st = self.shared.lock();
        if st.shutdown_deadline.is_some() || st.exited {
            return Err(Error::State("the metrics writer is shut down".into()));
        }
        st.accepted += 1;
        self.shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let mut dropped = 0u64;
        while st.queue.len() + st.inflight_points + 1 > opts.max_buffer_points
            || st.queued_bytes + st.inflight_bytes + held(&line) > opts.max_buffer_bytes
        {
            match st.queue.pop_front() {
                Some((_, old)) => {
                    st.queued_bytes -= held(&old);
                    dropped += 1;
                }
                None => break,
            }
        }
        let fits = st.queue.len() + st.inflight_points < opts.max_buffer_points
            && st.queued_bytes + st.inflight_bytes + held(&line) <= opts.max_buffer_bytes;
        if !fits {
            // Only the batch in flight is held: this point cannot be kept.
            dropped += 1;
        }
        if dropped > 0 {
            let msg = format!(
                "buffer full ({} points / {} bytes); oldest points dropped",
                opts.max_buffer_points, opts.max_buffer_bytes
            );
            self.shared.note_drop(&mut st, DropReason::BufferFull, dropped, &msg);
        }
        if fits {
            st.queued_bytes += held(&line);
            let seq = st.accepted;
            st.queue.push_back((seq, line));
            if st.queue.len() % opts.batch_size == 0 {
                self.shared.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Sends what is buffered now and waits until all points accepted before this call are
    /// delivered or dropped, or until `timeout` passes (then `Error::Timeout`; the points stay
    /// buffered). Drop events pending are reported before it returns.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        let target = st.accepted;
        st.flush_wanted = true;
        self.shared.wake.notify_all();
        while st.settled + self.shared.counters.delivered.load(Ordering::Relaxed) < target && !st.exited {
            let now = Instant::now();
            if now >= deadline {
                let held = st.queue.len() + st.inflight_points;
                return Err(Error::Timeout(format!("metrics flush: {held} point(s) still buffered")));
            }
            st = self.shared.progress.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        let events = Shared::take_pending(&mut st);
        drop(st);
        self.shared.report(events);
        // A sender may have taken events before this call looked: wait until it has reported them.
        let mut st = self.shared.lock();
        while st.reporting > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self.shared.progress.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }

    /// Stops accepting points, delivers what is buffered until `timeout` passes, drops the rest
    /// ([`DropReason::Shutdown`], counted and reported) and stops the thread. Idempotent; returns
    /// the final statistics.
    pub fn shutdown(&self, timeout: Duration) -> WriterStats {
        let mut st = self.shared.lock();
        let deadline = *st.shutdown_deadline.get_or_insert(Instant::now() + timeout);
        self.shared.wake.notify_all();
        // The thread bounds its requests by the deadline, but one started before the shutdown
        // keeps its own time limit: do not wait for it past the deadline (plus a little slack).
        let give_up = deadline + Duration::from_millis(100);
        while !st.exited {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            st = self.shared.progress.wait_timeout(st, give_up - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        let joined = st.exited && !st.abandoned;
        if !st.exited {
            let n = (st.queue.len() + st.inflight_points) as u64;
            st.queue.clear();
            st.queued_bytes = 0;
            st.inflight_points = 0;
            st.inflight_bytes = 0;
            let msg = "still buffered when the shutdown deadline passed (a request was still unanswered; \
                       its points are counted as dropped although the server may have taken them)";
            self.shared.note_drop(&mut st, DropReason::Shutdown, n, msg);
            st.abandoned = true;
            st.exited = true;
        }
        let events = Shared::take_pending(&mut st);
        drop(st);
        self.shared.progress.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        if joined {
            for h in handles {
                let _ = h.join();
            }
        }
        // Otherwise the senders end by themselves when their requests return.
        self.shared.report(events);
        self.stats()
    }

    pub fn stats(&self) -> WriterStats {
        let st = self.shared.lock();
        let c = &self.shared.counters;
        WriterStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_buffer_full: c.dropped[0].load(Ordering::Relaxed),
            dropped_rejected: c.dropped[1].load(Ordering::Relaxed),
            dropped_retries_exhausted: c.dropped[2].load(Ordering::Relaxed),
            dropped_shutdown: c.dropped[3].load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            buffered_points: (st.queue.len() + st.inflight_points) as u64,
            buffered_bytes: (st.queued_bytes + st.inflight_bytes) as u64,
            last_error: st.last_error.clone(),
        }
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        let t = self.shared.opts.shutdown_timeout;
        self.shutdown(t);
    }
}

/// A small xorshift generator for retry jitter (seeded from the OS).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Jitter(u64::from_le_bytes(b) | 1)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The delay before retry `attempt` (1-based): random in [initial·base^(n-1), initial·base^n],
/// capped at `max`.
pub fn backoff_delay(opts: &WriterOptions, attempt: u32, unit_random: f64) -> Duration {
    let base = opts.retry_base as f64;
    let lo = opts.retry_initial.as_secs_f64() * base.powi(attempt.saturating_sub(1).min(60) as i32);
    let hi = lo * base;
    let d = lo + (hi - lo) * unit_random.clamp(0.0, 1.0);
    let max = opts.retry_max_interval.as_secs_f64();
    Duration::from_secs_f64(if d.is_finite() { d.min(max) } else { max })
}

/// Ends one sender; the last one marks the writer exited and reports what is pending.
fn sender_exit(shared: &Shared, mut st: MutexGuard<'_, State>) {
    st.running = st.running.saturating_sub(1);
    if st.running > 0 {
        drop(st);
        shared.wake.notify_all();
        return;
    }
    st.exited = true;
    let events = Shared::take_pending(&mut st);
    drop(st);
    shared.progress.notify_all();
    shared.report(events);
}

/// Bytes the buffer charges for one line: its text plus [`LINE_OVERHEAD`].
fn held(line: &str) -> usize {
    line.len() + LINE_OVERHEAD
}

/// Puts a failed batch back at its place in write order (the queue is sorted by sequence).
fn requeue(st: &mut State, batch: Vec<(u64, String)>) {
    let Some(first) = batch.first().map(|(s, _)| *s) else { return };
    let at = st.queue.partition_point(|(s, _)| *s < first);
    let tail = st.queue.split_off(at);
    for (s, l) in batch {
        st.queued_bytes += held(&l);
        st.queue.push_back((s, l));
    }
    st.queue.extend(tail);
}

fn run(shared: Arc<Shared>, client: InfluxDBClient) {
    let opts = shared.opts.clone();
    let mut jitter = Jitter::new();
    let tick = Duration::from_millis(100);
    loop {
        let mut st = shared.lock();
        // Wait for something to do.
        loop {
            if st.abandoned {
                return;
            }
            let now = Instant::now();
            if let Some(dl) = st.shutdown_deadline {
                if st.queue.is_empty() {
                    break;
                }
                if now >= dl {
                    let n = st.queue.len() as u64;
                    st.queue.clear();
                    st.queued_bytes = 0;
                    let msg = "still buffered when the shutdown deadline passed".to_owned();
                    shared.note_drop(&mut st, DropReason::Shutdown, n, &msg);
                    break;
                }
            }
            let retry_at = st.backoff.retry_at;
            let retry_wait = retry_at.map(|t| t.saturating_duration_since(now));
            let in_backoff = retry_wait.is_some_and(|w| !w.is_zero());
            if !in_backoff && !st.queue.is_empty() {
                let due = st.queue.len() >= opts.batch_size
                    || st.flush_wanted
                    || st.shutdown_deadline.is_some()
                    || retry_at.is_some()
                    || now.duration_since(st.last_send) >= opts.flush_interval;
                if due {
                    break;
                }
            }
            if st.queue.is_empty() && st.inflight_points == 0 {
                st.flush_wanted = false;
            }
            let mut wait = tick;
            if let Some(w) = retry_wait.filter(|w| !w.is_zero()) {
                wait = wait.min(w);
            } else if !st.queue.is_empty() {
                wait = wait.min(opts.flush_interval.saturating_sub(now.duration_since(st.last_send)));
            }
            if let Some(dl) = st.shutdown_deadline {
                wait = wait.min(dl.saturating_duration_since(now));
            }
            let events = Shared::take_pending(&mut st);
            if !events.is_empty() {
                drop(st);
                shared.report(events);
                st = shared.lock();
                continue;
            }
            st = shared.wake.wait_timeout(st, wait.max(Duration::from_millis(1))).unwrap_or_else(|p| p.into_inner()).0;
        }
        if st.queue.is_empty() {
            // Only reached on shutdown.
            sender_exit(&shared, st);
            return;
        }
        // Take one batch.
        let n = st.queue.len().min(opts.batch_size);
        let batch: Vec<(u64, String)> = st.queue.drain(..n).collect();
        let bytes: usize = batch.iter().map(|(_, l)| held(l)).sum();
        let text: usize = batch.iter().map(|(_, l)| l.len()).sum();
        st.queued_bytes -= bytes;
        st.inflight_points += n;
        st.inflight_bytes += bytes;
        // A batch sent after the backoff is the retry; the others wait for its answer.
        if st.backoff.retry_at.is_some() {
            st.backoff.retry_at = Some(Instant::now() + opts.retry_max_interval);
        }
        let deadline = st.shutdown_deadline;
        let events = Shared::take_pending(&mut st);
        let more = !st.queue.is_empty();
        drop(st);
        if more {
            shared.wake.notify_one();
        }
        shared.report(events);

        let mut body = Vec::with_capacity(text + n);
        for (i, (_, l)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b'\n');
            }
            body.extend_from_slice(l.as_bytes());
        }
        let mut timeout = client.options().timeout;
        if let Some(dl) = deadline {
            timeout = timeout.min(dl.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        }
        let result = client.send(&body, timeout);
        drop(body);
        let ended = Instant::now();

        let mut st = shared.lock();
        if st.abandoned {
            return;
        }
        st.last_send = ended;
        st.inflight_points -= n;
        st.inflight_bytes -= bytes;
        match result {
            Ok(()) => {
                shared.counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
                shared.counters.batches.fetch_add(1, Ordering::Relaxed);
                st.backoff = Backoff::default();
            }
            Err(WriteFailure::Rejected { message, dropped, .. }) => {
                let lost = dropped.map_or(n as u64, |d| d.min(n as u64));
                shared.counters.delivered.fetch_add(n as u64 - lost, Ordering::Relaxed);
                shared.note_drop(&mut st, DropReason::Rejected, lost, &message);
                st.last_error = Some(message);
                // The server answered: it is up.
                st.backoff = Backoff::default();
            }
            Err(WriteFailure::Retryable { message, retry_after }) => {
                st.backoff.attempt += 1;
                let attempt = st.backoff.attempt;
                let since = *st.backoff.failing_since.get_or_insert(ended);
                if ended.duration_since(since) >= opts.retry_max_elapsed {
                    let msg = format!("gave up after {attempt} attempt(s): {message}");
                    shared.note_drop(&mut st, DropReason::RetriesExhausted, n as u64, &msg);
                    st.backoff = Backoff::default();
                } else {
                    shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = match retry_after {
                        Some(ra) => ra.min(opts.retry_max_interval),
                        None => backoff_delay(&opts, attempt, jitter.next_f64()),
                    };
                    st.backoff.retry_at = Some(Instant::now() + delay);
                    // Back into the queue at its place, so drop-oldest applies to it first.
                    requeue(&mut st, batch);
                }
                st.last_error = Some(message);
            }
        }
        drop(st);
        shared.wake.notify_all();
        shared.progress.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_band_and_is_capped() {
        let o = WriterOptions {
            retry_initial: Duration::from_millis(100),
            retry_max_interval: Duration::from_secs(1),
            ..WriterOptions::default()
        };
        assert_eq!(backoff_delay(&o, 1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&o, 1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(&o, 3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(&o, 3, 0.5), Duration::from_millis(600));
        assert_eq!(backoff_delay(&o, 10, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&o, u32::MAX, 1.0), Duration::from_secs(1));
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let x = j.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn options_are_checked() {
        let bad = [
            WriterOptions { batch_size: 0, ..WriterOptions::default() },
            WriterOptions { batch_size: 10, max_buffer_points: 5, ..WriterOptions::default() },
            WriterOptions { max_buffer_bytes: 0, ..WriterOptions::default() },
            WriterOptions { flush_interval: Duration::ZERO, ..WriterOptions::default() },
            WriterOptions { retry_base: 0, ..WriterOptions::default() },
        ];
        for o in bad {
            assert!(o.validate().is_err(), "{o:?}");
        }
        assert!(WriterOptions::default().validate().is_ok());
    }
}
