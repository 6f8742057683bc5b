//! `EventStore`: events are appended to `event_log` per aggregate (type + id) with consecutive
//! versions 1, 2, 3, … An append names the version it expects the aggregate to be at; if another
//! writer got there first, the append fails with a conflict and writes nothing, so no update is
//! ever silently overwritten. Snapshots store an aggregate's state at a version, so loading it
//! is "latest snapshot + the events after it" instead of a full replay.

use crate::db::{DatabaseManager, Transaction};
use crate::error::{Error, Result};
use crate::models::user::req_ts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: i64,
    pub event_type: String,
    pub payload: Value,
    pub metadata: Value,
    pub user_id: Option<i64>,
    #[serde(serialize_with = "req_ts")]
    pub created_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NewEvent {
    pub event_type: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    #[serde(default = "empty_object")]
    pub metadata: Value,
    #[serde(default)]
    pub user_id: Option<i64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent { event_type: event_type.into(), payload, metadata: empty_object(), user_id: None }
    }

    pub fn by_user(mut self, user_id: i64) -> Self {
        self.user_id = Some(user_id);
        self
    }
}

/// An aggregate's state at a version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: i64,
    pub state: Value,
    #[serde(serialize_with = "req_ts")]
    pub created_at: DateTime<Utc>,
}

/// The latest snapshot (if any) and every event after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotAndEvents {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<Event>,
}

const COLUMNS: &str = "id, aggregate_type, aggregate_id, version, event_type, payload, metadata, user_id, created_at";

impl Event {
    fn from_row(r: &Row) -> Self {
        Event {
            id: r.get("id"),
            aggregate_type: r.get("aggregate_type"),
            aggregate_id: r.get("aggregate_id"),
            version: r.get("version"),
            event_type: r.get("event_type"),
            payload: r.get("payload"),
            metadata: r.get("metadata"),
            user_id: r.get("user_id"),
            created_at: r.get("created_at"),
        }
    }
}

fn check_key(aggregate_type: &str, aggregate_id: &str) -> Result<()> {
    if aggregate_type.is_empty() || aggregate_type.len() > 64 {
        return Err(Error::invalid("aggregate_type must have 1 to 64 bytes"));
    }
    if aggregate_id.is_empty() || aggregate_id.len() > 128 {
        return Err(Error::invalid("aggregate_id must have 1 to 128 bytes"));
    }
    Ok(())
}

fn validate(aggregate_type: &str, aggregate_id: &str, events: &[NewEvent]) -> Result<()> {
    check_key(aggregate_type, aggregate_id)?;
    if events.is_empty() {
        return Err(Error::invalid("append needs at least one event"));
    }
    for e in events {
        if e.event_type.is_empty() || e.event_type.len() > 128 {
            return Err(Error::invalid("event_type must have 1 to 128 bytes"));
        }
    }
    Ok(())
}

/// The event store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    db: DatabaseManager,
}

impl EventStore {
    pub fn new(db: DatabaseManager) -> Self {
        EventStore { db }
    }

    /// Appends `events` to an aggregate that must be at `expected_version` (0 for a new one).
    /// Returns the new version. Fails with `Conflict` — and writes nothing — when the aggregate
    /// is at any other version, including when a concurrent writer appended first.
    pub async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: i64,
        events: &[NewEvent],
    ) -> Result<i64> {
        validate(aggregate_type, aggregate_id, events)?;
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let payloads: Vec<&Value> = events.iter().map(|e| &e.payload).collect();
        let metadata: Vec<&Value> = events.iter().map(|e| &e.metadata).collect();
        let users: Vec<Option<i64>> = events.iter().map(|e| e.user_id).collect();
        // One statement, so one round trip and atomic by itself: the rows go in only if the
        // aggregate is at the expected version. Two writers that both pass that check collide
        // on the unique (type, id, version) key, and the loser gets a conflict.
        let rows = self
            .db
            .query(
                "INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload, metadata, user_id)
                 SELECT $1::varchar, $2::varchar, $3::bigint + e.ord, e.event_type, e.payload, e.metadata, e.user_id
                 FROM unnest($4::text[], $5::jsonb[], $6::jsonb[], $7::bigint[])
                      WITH ORDINALITY AS e(event_type, payload, metadata, user_id, ord)
                 WHERE (SELECT COALESCE(MAX(version), 0) FROM event_log
                        WHERE aggregate_type = $1::varchar AND aggregate_id = $2::varchar) = $3::bigint
                 RETURNING version",
                &[&aggregate_type, &aggregate_id, &expected_version, &types, &payloads, &metadata, &users],
            )
            .await
            .map_err(|err| match err {
                Error::Conflict(_) => Error::Conflict(format!(
                    "{aggregate_type}/{aggregate_id} was appended to concurrently after version {expected_version}"
                )),
                other => other,
            })?;
        if rows.is_empty() {
            let current = self.current_version(aggregate_type, aggregate_id).await?;
            return Err(Error::Conflict(format!(
                "{aggregate_type}/{aggregate_id} is at version {current}, not the expected {expected_version}"
            )));
        }
        Ok(expected_version + events.len() as i64)
    }

    /// Appends inside a caller's transaction. With `expected_version: None` the events go after
    /// whatever the current version is (for writers that already serialize on the aggregate,
    /// such as a locked row).
    pub async fn append_in(
        tx: &Transaction,
        aggregate_type: &str,
        aggregate_id: &str,
        expected_version: Option<i64>,
        events: &[NewEvent],
    ) -> Result<i64> {
        validate(aggregate_type, aggregate_id, events)?;
        let current: i64 = tx
            .query(
                "SELECT COALESCE(MAX(version), 0) FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2",
                &[&aggregate_type, &aggregate_id],
            )
            .await?[0]
            .get(0);
        if let Some(expected) = expected_version {
            if expected != current {
                return Err(Error::Conflict(format!(
                    "{aggregate_type}/{aggregate_id} is at version {current}, not the expected {expected}"
                )));
            }
        }
        let mut version = current;
        for e in events {
            version += 1;
            // Two writers that both read `current` collide on the unique (type, id, version)
            // key here; the loser gets a conflict.
            tx.execute(
                "INSERT INTO event_log (aggregate_type, aggregate_id, version, event_type, payload, metadata, user_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&aggregate_type, &aggregate_id, &version, &e.event_type, &e.payload, &e.metadata, &e.user_id],
            )
            .await
            .map_err(|err| match err {
                Error::Conflict(_) => Error::Conflict(format!(
                    "{aggregate_type}/{aggregate_id} was appended to concurrently at version {version}"
                )),
                other => other,
            })?;
        }
        Ok(version)
    }

    /// Appends one event after whatever the aggregate's current version is, for facts that do
    /// not depend on earlier events (a session was revoked, a login failed). Retries a few
    /// times when a concurrent writer takes the same version.
    pub async fn record(&self, aggregate_type: &str, aggregate_id: &str, event: NewEvent) -> Result<i64> {
        let mut last = None;
        for _ in 0..5 {
            let v = self.current_version(aggregate_type, aggregate_id).await?;
            match self.append(aggregate_type, aggregate_id, v, std::slice::from_ref(&event)).await {
                Ok(nv) => return Ok(nv),
                Err(Error::Conflict(m)) => last = Some(Error::Conflict(m)),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("record did not run".into())))
    }

    /// The aggregate's current version (0 when it has no events).
    pub async fn current_version(&self, aggregate_type: &str, aggregate_id: &str) -> Result<i64> {
        let rows = self
            .db
            .query(
                "SELECT COALESCE(MAX(version), 0) FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2",
                &[&aggregate_type, &aggregate_id],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    /// Events of an aggregate with a version above `after_version`, in version order.
    pub async fn load(&self, aggregate_type: &str, aggregate_id: &str, after_version: i64) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM event_log WHERE aggregate_type = $1 AND aggregate_id = $2 AND version > $3 ORDER BY version"
        );
        Ok(self
            .db
            .query(&sql, &[&aggregate_type, &aggregate_id, &after_version])
            .await?
            .iter()
            .map(Event::from_row)
            .collect())
    }

    /// The audit trail of one user: their events, newest first, at most `limit`.
    pub async fn by_user(&self, user_id: i64, limit: i64) -> Result<Vec<Event>> {
        let limit = limit.clamp(1, 10_000);
        let sql =
            format!("SELECT {COLUMNS} FROM event_log WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2");
        Ok(self.db.query(&sql, &[&user_id, &limit]).await?.iter().map(Event::from_row).collect())
    }

    /// Stores the aggregate's state at `version`, which must exist in the log.
    pub async fn save_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        version: i64,
        state: &Value,
    ) -> Result<()> {
        check_key(aggregate_type, aggregate_id)?;
        let current = self.current_version(aggregate_type, aggregate_id).await?;
        if version < 1 || version > current {
            return Err(Error::invalid(format!(
                "snapshot version {version} is outside 1..={current} for {aggregate_type}/{aggregate_id}"
            )));
        }
        self.db
            .execute(
                "INSERT INTO snapshots (aggregate_type, aggregate_id, version, state) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (aggregate_type, aggregate_id, version) DO UPDATE SET state = EXCLUDED.state, created_at = now()",
                &[&aggregate_type, &aggregate_id, &version, state],
            )
            .await?;
        Ok(())
    }

    /// The newest snapshot of an aggregate, if any.
    pub async fn latest_snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Option<Snapshot>> {
        let row = self
            .db
            .query_opt(
                "SELECT aggregate_type, aggregate_id, version, state, created_at FROM snapshots
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY version DESC LIMIT 1",
                &[&aggregate_type, &aggregate_id],
            )
            .await?;
        Ok(row.map(|r| Snapshot {
            aggregate_type: r.get(0),
            aggregate_id: r.get(1),
            version: r.get(2),
            state: r.get(3),
            created_at: r.get(4),
        }))
    }

    /// The latest snapshot and the events after it: everything needed to rebuild the state.
    pub async fn load_from_snapshot(&self, aggregate_type: &str, aggregate_id: &str) -> Result<SnapshotAndEvents> {
        let snapshot = self.latest_snapshot(aggregate_type, aggregate_id).await?;
        let after = snapshot.as_ref().map(|s| s.version).unwrap_or(0);
        let events = self.load(aggregate_type, aggregate_id, after).await?;
        Ok(SnapshotAndEvents { snapshot, events })
    }
}
