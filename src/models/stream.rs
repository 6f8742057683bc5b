//! Streams: a broadcaster's channel with an unguessable stream key. Starting and stopping a
//! stream updates its row, opens/ends a stream session, appends `stream.started` /
//! `stream.stopped` to the event store (one transaction), then caches the live state in Redis
//! and publishes the event on pub/sub. Viewer counts live in Redis.

use super::stream_session::StreamSession;
use super::user::{opt_ts, req_ts};
use super::{check_text, ts};
use crate::cache::RedisClient;
use crate::crypto::random;
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use crate::events::{EventStore, NewEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_postgres::Row;

/// How long the live-state hash and the viewer counter outlive their last update: a stream
/// whose process died without stopping it stops looking live after this.
pub const LIVE_TTL: Duration = Duration::from_secs(6 * 3600);

/// A stream as stored.
#[derive(Clone, PartialEq, Serialize)]
pub struct Stream {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub description: Option<String>,
    /// The credential a broadcaster's encoder sends. Shown to its owner only.
    pub stream_key: String,
    pub is_live: bool,
    pub viewer_count: i32,
    pub bitrate_kbps: Option<i32>,
    pub fps: Option<i32>,
    pub resolution: Option<String>,
    pub codec: Option<String>,
    #[serde(serialize_with = "opt_ts")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_ts")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "req_ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "req_ts")]
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("name", &self.name)
            .field("stream_key", &"<redacted>")
            .field("is_live", &self.is_live)
            .finish_non_exhaustive()
    }
}

/// Encoder statistics of a live stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamStats {
    pub bitrate_kbps: Option<i32>,
    pub fps: Option<i32>,
    pub resolution: Option<String>,
    pub codec: Option<String>,
}

const COLUMNS: &str = "id, user_id, name, description, stream_key, is_live, viewer_count, bitrate_kbps, fps, resolution, codec, started_at, ended_at, created_at, updated_at";

impl Stream {
    fn from_row(r: &Row) -> Self {
        Stream {
            id: r.get("id"),
            user_id: r.get("user_id"),
            name: r.get("name"),
            description: r.get("description"),
            stream_key: r.get("stream_key"),
            is_live: r.get("is_live"),
            viewer_count: r.get("viewer_count"),
            bitrate_kbps: r.get("bitrate_kbps"),
            fps: r.get("fps"),
            resolution: r.get("resolution"),
            codec: r.get("codec"),
            started_at: r.get("started_at"),
            ended_at: r.get("ended_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// A new stream key: `live_` and 32 random bytes (256 bits) in hex.
pub fn new_stream_key() -> Result<String> {
    Ok(format!("live_{}", random::token_hex(32)?))
}

/// Redis key of a stream's live-state hash.
pub fn live_key(stream_id: i64) -> String {
    format!("rsdb:stream:{stream_id}:live")
}

/// Redis key of a stream's viewer counter.
pub fn viewers_key(stream_id: i64) -> String {
    format!("rsdb:stream:{stream_id}:viewers")
}

/// Decrements without going below zero and refreshes the expiry.
const LEAVE_SCRIPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then n = redis.call('DECR', KEYS[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
";

/// Operations on streams. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamModel {
    db: DatabaseManager,
    redis: RedisClient,
    broadcast: super::Broadcaster,
}

impl StreamModel {
    pub fn new(db: DatabaseManager, redis: RedisClient) -> Self {
        StreamModel { db, redis, broadcast: super::Broadcaster::default() }
    }

    /// Announces start, stop and viewer changes through `sync` from now on (None stops it):
    /// the events `stream.started`, `stream.stopped`, `viewer.joined`, `viewer.left`, and the
    /// shared `stream` entity's `live`, `session_id`, `viewers` fields. Clones share this.
    pub fn set_sync(&self, sync: Option<crate::sync::StateSyncManager>) {
        self.broadcast.set(sync);
    }

    /// Creates a stream for a user with a fresh stream key.
    pub async fn create(&self, user_id: i64, name: &str, description: Option<&str>) -> Result<Stream> {
        if name.trim().is_empty() {
            return Err(Error::invalid("stream name must not be empty"));
        }
        check_text("name", name, 255, false)?;
        if let Some(d) = description {
            check_text("description", d, 10_000, true)?;
        }
        let key = new_stream_key()?;
        let sql = format!(
            "INSERT INTO streams (user_id, name, description, stream_key) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        );
        let rows = self.db.query(&sql, &[&user_id, &name, &description, &key]).await.map_err(|e| match e {
            Error::Query(m) if m.contains("23503") => Error::NotFound(format!("user {user_id}")),
            other => other,
        })?;
        Ok(Stream::from_row(&rows[0]))
    }

    async fn one(
        &self,
        where_sql: &str,
        p: &(dyn tokio_postgres::types::ToSql + Sync),
        what: String,
    ) -> Result<Stream> {
        match self.db.query_opt(&format!("SELECT {COLUMNS} FROM streams WHERE {where_sql}"), &[p]).await? {
            Some(r) => Ok(Stream::from_row(&r)),
            None => Err(Error::NotFound(what)),
        }
    }

    pub async fn find_by_id(&self, id: i64) -> Result<Stream> {
        self.one("id = $1", &id, format!("stream {id}")).await
    }

    /// Looks a stream up by its key (what an ingest server does when an encoder connects).
    pub async fn find_by_key(&self, stream_key: &str) -> Result<Stream> {
        self.one("stream_key = $1", &stream_key, "stream with that key".into()).await
    }

    /// A user's streams.
    pub async fn list_for_user(&self, user_id: i64) -> Result<Vec<Stream>> {
        let sql = format!("SELECT {COLUMNS} FROM streams WHERE user_id = $1 ORDER BY id");
        Ok(self.db.query(&sql, &[&user_id]).await?.iter().map(Stream::from_row).collect())
    }

    /// Streams that are live now.
    pub async fn list_live(&self) -> Result<Vec<Stream>> {
        let sql = format!("SELECT {COLUMNS} FROM streams WHERE is_live ORDER BY started_at DESC");
        Ok(self.db.query(&sql, &[]).await?.iter().map(Stream::from_row).collect())
    }

    /// Replaces the stream key; the old key stops working at once.
    pub async fn regenerate_key(&self, id: i64) -> Result<Stream> {
        let key = new_stream_key()?;
        let sql = format!("UPDATE streams SET stream_key = $2 WHERE id = $1 RETURNING {COLUMNS}");
        match self.db.query_opt(&sql, &[&id, &key]).await? {
            Some(r) => Ok(Stream::from_row(&r)),
            None => Err(Error::NotFound(format!("stream {id}"))),
        }
    }

    /// Records encoder statistics; `None` leaves a value as it is.
    pub async fn update_stats(&self, id: i64, stats: &StreamStats) -> Result<Stream> {
        if let Some(r) = &stats.resolution {
            check_text("resolution", r, 32, false)?;
        }
        if let Some(c) = &stats.codec {
            check_text("codec", c, 32, false)?;
        }
        let sql = format!(
            "UPDATE streams SET bitrate_kbps = COALESCE($2, bitrate_kbps), fps = COALESCE($3, fps),
                    resolution = COALESCE($4, resolution), codec = COALESCE($5, codec)
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        match self.db.query_opt(&sql, &[&id, &stats.bitrate_kbps, &stats.fps, &stats.resolution, &stats.codec]).await? {
            Some(r) => Ok(Stream::from_row(&r)),
            None => Err(Error::NotFound(format!("stream {id}"))),
        }
    }

    /// Goes live: marks the stream live, opens a session and records `stream.started` in one
    /// transaction, then caches the live state and publishes the event. Fails with `State`
    /// when the stream is already live.
    pub async fn start(&self, id: i64) -> Result<StreamSession> {
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "UPDATE streams SET is_live = TRUE, started_at = now(), ended_at = NULL, viewer_count = 0
             WHERE id = $1 AND NOT is_live RETURNING {COLUMNS}"
        );
        let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
            drop(tx);
            let s = self.find_by_id(id).await?;
            return Err(Error::State(format!("stream {} is already live", s.id)));
        };
        let stream = Stream::from_row(&row);
        let srow = tx
            .query(
                "INSERT INTO stream_sessions (stream_id) VALUES ($1) RETURNING id, stream_id, started_at, ended_at, duration_seconds, total_viewers, peak_viewers, bytes_transferred",
                &[&id],
            )
            .await?;
        let session = StreamSession::from_row(&srow[0]);
        let payload = json!({
            "type": "stream.started", "stream_id": id, "user_id": stream.user_id,
            "session_id": session.id, "name": stream.name, "at": ts(&session.started_at),
        });
        EventStore::append_in(
            &tx,
            "stream",
            &id.to_string(),
            None,
            &[NewEvent::new("stream.started", payload.clone()).by_user(stream.user_id)],
        )
        .await?;
        tx.commit().await?;

        let live = live_key(id);
        let fields = [
            ("stream_id", id.to_string()),
            ("user_id", stream.user_id.to_string()),
            ("session_id", session.id.to_string()),
            ("name", stream.name.clone()),
            ("started_at", ts(&session.started_at)),
        ];
        let mut pipe = redis::pipe();
        pipe.atomic().del(&live).hset_multiple(&live, &fields).pexpire(&live, LIVE_TTL.as_millis() as i64);
        pipe.set(viewers_key(id), 0).pexpire(viewers_key(id), LIVE_TTL.as_millis() as i64);
        self.after_commit(id, "started", self.run_pipe(pipe).await).await?;
        self.broadcast.announce(
            "stream.started",
            "stream",
            id,
            &payload,
            json!({"live": true, "session_id": session.id, "viewers": 0, "name": stream.name}),
        );
        self.after_commit(id, "started", self.redis.publish("stream.started", payload.to_string()).await.map(|_| ()))
            .await?;
        Ok(session)
    }

    async fn run_pipe(&self, pipe: redis::Pipeline) -> Result<()> {
        let mut c = self.redis.connection();
        tokio::time::timeout(self.redis.timeout(), pipe.query_async::<()>(&mut c))
            .await
            .map_err(|_| Error::Timeout("redis did not answer in time".into()))?
            .map_err(Error::from)
    }

    async fn after_commit(&self, id: i64, what: &str, r: Result<()>) -> Result<()> {
        r.map_err(|e| {
            Error::Connection(format!(
                "stream {id} {what} in the database, but the live cache or event could not be updated: {e}"
            ))
        })
    }

    /// Goes offline: ends the open session (with its duration), marks the stream offline and
    /// records `stream.stopped` in one transaction, then clears the live cache and publishes.
    pub async fn stop(&self, id: i64) -> Result<StreamSession> {
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "UPDATE streams SET is_live = FALSE, ended_at = now(), viewer_count = 0 WHERE id = $1 AND is_live RETURNING {COLUMNS}"
        );
        let Some(row) = tx.query_opt(&sql, &[&id]).await? else {
            drop(tx);
            let s = self.find_by_id(id).await?;
            return Err(Error::State(format!("stream {} is not live", s.id)));
        };
        let stream = Stream::from_row(&row);
        let srow = tx
            .query_opt(
                "UPDATE stream_sessions SET ended_at = now(), duration_seconds = floor(extract(epoch FROM now() - started_at))::bigint
                 WHERE id = (SELECT id FROM stream_sessions WHERE stream_id = $1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1)
                 RETURNING id, stream_id, started_at, ended_at, duration_seconds, total_viewers, peak_viewers, bytes_transferred",
                &[&id],
            )
            .await?
            .ok_or_else(|| Error::State(format!("stream {id} is live but has no open session")))?;
        let session = StreamSession::from_row(&srow);
        let payload = json!({
            "type": "stream.stopped", "stream_id": id, "user_id": stream.user_id, "session_id": session.id,
            "duration_seconds": session.duration_seconds, "peak_viewers": session.peak_viewers,
            "total_viewers": session.total_viewers, "at": session.ended_at.as_ref().map(ts),
        });
        EventStore::append_in(
            &tx,
            "stream",
            &id.to_string(),
            None,
            &[NewEvent::new("stream.stopped", payload.clone()).by_user(stream.user_id)],
        )
        .await?;
        tx.commit().await?;

        let mut pipe = redis::pipe();
        pipe.atomic().del(live_key(id)).del(viewers_key(id));
        self.after_commit(id, "stopped", self.run_pipe(pipe).await).await?;
        self.broadcast.announce(
            "stream.stopped",
            "stream",
            id,
            &payload,
            json!({"live": false, "session_id": null, "viewers": 0}),
        );
        self.after_commit(id, "stopped", self.redis.publish("stream.stopped", payload.to_string()).await.map(|_| ()))
            .await?;
        Ok(session)
    }

    /// The cached live state (`stream_id`, `user_id`, `session_id`, `name`, `started_at`), or
    /// `None` when the stream is not live.
    pub async fn live_state(&self, id: i64) -> Result<Option<Value>> {
        let h = self.redis.hgetall(&live_key(id)).await?;
        if h.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::to_value(h)?))
    }

    /// Current viewers of a stream (0 when none are counted).
    pub async fn viewer_count(&self, id: i64) -> Result<i64> {
        Ok(self.redis.get(&viewers_key(id)).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// A viewer joined: counts it in Redis, in the session's statistics, and publishes
    /// `viewer.joined`. Returns the current count. The stream must be live.
    pub async fn viewer_joined(&self, id: i64) -> Result<i64> {
        let session_id = self.open_session_id(id).await?;
        let key = viewers_key(id);
        let mut pipe = redis::pipe();
        pipe.atomic().incr(&key, 1).pexpire(&key, LIVE_TTL.as_millis() as i64).ignore();
        let mut c = self.redis.connection();
        let (count,): (i64,) = tokio::time::timeout(self.redis.timeout(), pipe.query_async(&mut c))
            .await
            .map_err(|_| Error::Timeout("redis did not answer in time".into()))??;
        let current = i32::try_from(count).unwrap_or(i32::MAX);
        self.db
            .execute(
                "UPDATE stream_sessions SET total_viewers = total_viewers + 1, peak_viewers = GREATEST(peak_viewers, $2) WHERE id = $1",
                &[&session_id, &current],
            )
            .await?;
        let payload = json!({"type": "viewer.joined", "stream_id": id, "session_id": session_id, "viewers": count});
        self.broadcast.announce("viewer.joined", "stream", id, &payload, json!({"viewers": count}));
        self.redis.publish("viewer.joined", payload.to_string()).await?;
        Ok(count)
    }

    /// A viewer left: decrements the count (never below zero) and publishes `viewer.left`.
    pub async fn viewer_left(&self, id: i64) -> Result<i64> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEAVE_SCRIPT).arg(1).arg(viewers_key(id)).arg(LIVE_TTL.as_millis() as i64);
        let count: i64 = self.redis.query(&cmd, false).await?;
        let payload = json!({"type": "viewer.left", "stream_id": id, "viewers": count});
        self.broadcast.announce("viewer.left", "stream", id, &payload, json!({"viewers": count}));
        self.redis.publish("viewer.left", payload.to_string()).await?;
        Ok(count)
    }

    async fn open_session_id(&self, id: i64) -> Result<i64> {
        if let Ok(Some(v)) = self.redis.hget(&live_key(id), "session_id").await {
            if let Ok(n) = v.parse() {
                return Ok(n);
            }
        }
        // Cache miss (or Redis trouble): the database is the source of truth.
        let row = self
            .db
            .query_opt(
                "SELECT id FROM stream_sessions WHERE stream_id = $1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
                &[&id],
            )
            .await?;
        row.map(|r| r.get(0)).ok_or_else(|| Error::State(format!("stream {id} is not live")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_long_random_and_distinct() {
        let a = new_stream_key().unwrap();
        let b = new_stream_key().unwrap();
        assert_eq!(a.len(), 5 + 64);
        assert!(a.starts_with("live_"));
        assert_ne!(a, b);
    }
}
