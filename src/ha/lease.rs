//! The leader lease: one key in etcd, created atomically and tied to an etcd lease, that says
//! which failover manager may act on the cluster.
//!
//! The rules, and why:
//! - The key is created only if it does not exist (txn compare create revision == 0), so two
//!   managers can never both believe they created it; etcd's consensus decides.
//! - [`LeaderLease::holds`] is a local clock check: true only until the moment the last
//!   successful keepalive *request was sent* plus the TTL minus a safety margin. etcd starts the
//!   lease's new TTL when it handles the request, which is after we sent it, so our deadline
//!   ends before etcd's. The margin covers a stale etcd leader that still answers keepalives
//!   for up to one election timeout after a new leader was elected (etcd 3.4 serves renewals on
//!   the leader without a quorum round), plus a process stall between the check and the action.
//! - It stops acting the moment a renewal fails: `holds` is false from then until a renewal
//!   succeeds again, even if the TTL has not run out. Acting is only ever safe while etcd still
//!   guarantees that nobody else can take the key.
//!
//! All calls block (they are HTTP requests); run them off the async workers.

use super::etcd::{EtcdClient, Keepalive, LeaseId};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The smallest TTL etcd grants with our timings (1.5 × a 1 s election timeout, rounded up).
pub const MIN_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    lease: Option<LeaseId>,
    /// When our claim ends (send time of the last good keepalive + TTL − margin).
    valid_until: Option<Instant>,
    /// A renewal failed after the last success: do not act until one succeeds.
    suspended: bool,
    last_error: Option<String>,
}

/// A leader key held through an etcd lease.
#[derive(Debug)]
pub struct LeaderLease {
    client: Arc<EtcdClient>,
    key: String,
    holder: String,
    ttl: Duration,
    margin: Duration,
    state: Mutex<State>,
}

impl LeaderLease {
    /// A lease on `key` for the member `holder`, `ttl` long (at least [`MIN_TTL`]), that stops
    /// counting as held `margin` before etcd would expire it (`margin` < `ttl`).
    pub fn new(client: Arc<EtcdClient>, key: &str, holder: &str, ttl: Duration, margin: Duration) -> Result<Self> {
        if ttl < MIN_TTL {
            return Err(Error::InvalidArgument(format!("the lease TTL must be at least {MIN_TTL:?}, got {ttl:?}")));
        }
        if margin >= ttl {
            return Err(Error::InvalidArgument(format!(
                "the lease safety margin ({margin:?}) must be shorter than the TTL ({ttl:?})"
            )));
        }
        if holder.is_empty() {
            return Err(Error::InvalidArgument("the lease holder name must not be empty".into()));
        }
        Ok(LeaderLease {
            client,
            key: key.to_string(),
            holder: holder.to_string(),
            ttl,
            margin,
            state: Mutex::new(State::default()),
        })
    }

    /// The default margin for a TTL: 2 s, or half the TTL when that is shorter.
    pub fn default_margin(ttl: Duration) -> Duration {
        Duration::from_secs(2).min(ttl / 2)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn client(&self) -> &Arc<EtcdClient> {
        &self.client
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True only while this member may act as the leader (see the module documentation).
    pub fn holds(&self) -> bool {
        let s = self.state();
        !s.suspended && s.lease.is_some() && s.valid_until.is_some_and(|t| Instant::now() < t)
    }

    /// True while this member has an etcd lease that it keeps renewing (it may still not
    /// [`holds`](Self::holds) the claim, e.g. right after a failed renewal).
    pub fn has_lease(&self) -> bool {
        self.state().lease.is_some()
    }

    /// How long the claim lasts from now without another renewal (zero when not held).
    pub fn remaining(&self) -> Duration {
        if !self.holds() {
            return Duration::ZERO;
        }
        self.state().valid_until.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// The last etcd error seen by acquire or renew, if the last call failed.
    pub fn last_error(&self) -> Option<String> {
        self.state().last_error.clone()
    }

    fn fail(&self, e: Error) -> Error {
        let mut s = self.state();
        s.suspended = true;
        s.last_error = Some(e.to_string());
        e
    }

    /// Tries to become the leader. Returns true when this member holds the key (already held:
    /// renews it), false when another member does; an error when etcd cannot decide (no quorum,
    /// unreachable), which also means this member does not hold it.
    pub fn acquire(&self) -> Result<bool> {
        if self.state().lease.is_some() {
            match self.renew() {
                Ok(()) => return Ok(true),
                Err(Error::Fenced(_)) => {} // our lease is gone: start over
                Err(e) => return Err(e),
            }
        }
        let sent = Instant::now();
        let ttl_s = self.ttl.as_secs().max(1) as i64;
        let (lease, granted) = self
            .client
            .lease_grant(ttl_s)
            .map_err(|e| self.fail(context("cannot take the leader lease: etcd did not grant a lease", e)))?;
        let granted = Duration::from_secs(granted.max(0) as u64).min(self.ttl);
        let created = match self.client.create_if_absent(&self.key, &self.holder, lease) {
            Ok(c) => c,
            Err(e) => {
                // The txn may or may not have been applied; a read tells.
                match self.client.get(&self.key) {
                    Ok(Some(kv)) if kv.value == self.holder && kv.lease == lease => true,
                    _ => {
                        let _ = self.client.lease_revoke(lease);
                        return Err(self.fail(context("cannot take the leader lease", e)));
                    }
                }
            }
        };
        let created = created
            || matches!(self.client.get(&self.key), Ok(Some(kv)) if kv.value == self.holder && kv.lease == lease);
        if !created {
            let _ = self.client.lease_revoke(lease);
            let mut s = self.state();
            s.last_error = None;
            return Ok(false);
        }
        let mut s = self.state();
        s.lease = Some(lease);
        s.valid_until = Some(sent + granted.saturating_sub(self.margin));
        s.suspended = false;
        s.last_error = None;
        Ok(true)
    }

    /// Renews the lease once. On failure the member stops counting as the holder at once;
    /// `Error::Fenced` means the lease is gone for good (expired or revoked).
    pub fn renew(&self) -> Result<()> {
        let lease =
            self.state().lease.ok_or_else(|| Error::Fenced("this member does not hold the leader lease".into()))?;
        let sent = Instant::now();
        match self.client.lease_keepalive(lease) {
            Ok(Keepalive::Alive { ttl_s }) => {
                let ttl = Duration::from_secs(ttl_s.max(0) as u64).min(self.ttl);
                let mut s = self.state();
                if s.lease == Some(lease) {
                    s.valid_until = Some(sent + ttl.saturating_sub(self.margin));
                    s.suspended = false;
                    s.last_error = None;
                }
                Ok(())
            }
            Ok(Keepalive::Expired) => {
                let mut s = self.state();
                s.lease = None;
                s.valid_until = None;
                s.suspended = true;
                let msg = format!("the leader lease on {} expired before it was renewed", self.key);
                s.last_error = Some(msg.clone());
                Err(Error::Fenced(msg))
            }
            Err(e) => Err(self.fail(context("cannot renew the leader lease", e))),
        }
    }

    /// Checks that the key still names this member under our lease (an operator may have
    /// deleted it). On a mismatch the member stops holding.
    pub fn verify(&self) -> Result<bool> {
        let lease = match self.state().lease {
            Some(l) => l,
            None => return Ok(false),
        };
        let kv = self.client.get(&self.key).map_err(|e| self.fail(context("cannot read the leader key", e)))?;
        let ok = matches!(kv, Some(kv) if kv.value == self.holder && kv.lease == lease);
        if !ok {
            let mut s = self.state();
            s.lease = None;
            s.valid_until = None;
            s.suspended = true;
            s.last_error = Some(format!("the leader key {} no longer names this member", self.key));
            drop(s);
            let _ = self.client.lease_revoke(lease);
        }
        Ok(ok)
    }

    /// Gives the key up: deletes it if it is still ours and revokes the lease. Safe to call when
    /// not holding.
    pub fn release(&self) -> Result<()> {
        let lease = {
            let mut s = self.state();
            s.valid_until = None;
            s.suspended = false;
            s.lease.take()
        };
        if let Some(lease) = lease {
            let _ = self.client.delete_if_equal(&self.key, &self.holder);
            self.client.lease_revoke(lease)?;
        }
        Ok(())
    }

    /// The member named by the leader key right now, if any.
    pub fn current_leader(&self) -> Result<Option<String>> {
        Ok(self.client.get(&self.key)?.map(|kv| kv.value))
    }
}

fn context(what: &str, e: Error) -> Error {
    match e {
        Error::Timeout(m) => Error::Timeout(format!("{what}: {m}")),
        Error::Connection(m) => Error::Connection(format!("{what}: {m}")),
        Error::NotFound(m) => Error::Fenced(format!("{what}: {m}")),
        other => other,
    }
}
