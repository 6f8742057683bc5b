//! Process-wide counters of the library's own work (sessions, MFA, backups, cache), kept as
//! relaxed atomics so counting costs one uncontended add where the work happens. The reporter's
//! Prometheus and JSON exports carry them ([`super::prometheus::library_families`]).

use super::prometheus::Family;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The counters. Use [`counters`] to reach the process's single instance.
#[derive(Debug, Default)]
pub struct LibraryCounters {
    pub sessions_created: AtomicU64,
    pub sessions_validated: AtomicU64,
    pub sessions_revoked: AtomicU64,
    /// Wrong or reused TOTP codes and wrong or used backup codes.
    pub mfa_failures: AtomicU64,
    pub backups_taken: AtomicU64,
    pub backups_failed: AtomicU64,
    /// Unix time (seconds) of the latest successful backup; 0 before the first.
    pub backup_last_success_unix: AtomicI64,
    /// Redis GETs that found / did not find their key.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

static COUNTERS: LibraryCounters = LibraryCounters {
    sessions_created: AtomicU64::new(0),
    sessions_validated: AtomicU64::new(0),
    sessions_revoked: AtomicU64::new(0),
    mfa_failures: AtomicU64::new(0),
    backups_taken: AtomicU64::new(0),
    backups_failed: AtomicU64::new(0),
    backup_last_success_unix: AtomicI64::new(0),
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
};

/// The process's counters.
pub fn counters() -> &'static LibraryCounters {
    &COUNTERS
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Counts the outcome of a backup.
pub(crate) fn backup_outcome(ok: bool) {
    if ok {
        bump(&COUNTERS.backups_taken, 1);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        COUNTERS.backup_last_success_unix.store(now, Ordering::Relaxed);
    } else {
        bump(&COUNTERS.backups_failed, 1);
    }
}

/// The counters as Prometheus families, named `rootstream_*`.
pub fn counter_families() -> Vec<Family> {
    let c = counters();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    vec![
        Family::counter("rootstream_sessions_total", "Sessions by event (created, validated, revoked).")
            .sample(&[("event", "created")], get(&c.sessions_created))
            .sample(&[("event", "validated")], get(&c.sessions_validated))
            .sample(&[("event", "revoked")], get(&c.sessions_revoked)),
        Family::counter("rootstream_mfa_failures_total", "Second-factor checks that failed (wrong or reused codes).")
            .sample(&[], get(&c.mfa_failures)),
        Family::counter("rootstream_backups_total", "Backups by outcome.")
            .sample(&[("outcome", "taken")], get(&c.backups_taken))
            .sample(&[("outcome", "failed")], get(&c.backups_failed)),
        Family::gauge(
            "rootstream_backup_last_success_timestamp_seconds",
            "Unix time of the latest successful backup (0 before the first).",
        )
        .sample(&[], c.backup_last_success_unix.load(Ordering::Relaxed) as f64),
        Family::counter("rootstream_cache_gets_total", "Redis GETs by result.")
            .sample(&[("result", "hit")], get(&c.cache_hits))
            .sample(&[("result", "miss")], get(&c.cache_misses)),
    ]
}
