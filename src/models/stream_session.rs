//! Stream sessions: one broadcast of a stream, with viewer statistics, bytes transferred and,
//! once ended, its duration.

use super::user::{opt_ts, req_ts};
use crate::db::DatabaseManager;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;

/// One broadcast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSession {
    pub id: i64,
    pub stream_id: i64,
    #[serde(serialize_with = "req_ts")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_ts")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Whole seconds between start and end, once ended.
    pub duration_seconds: Option<i64>,
    /// Viewers who joined, counted once per join.
    pub total_viewers: i32,
    /// The most viewers at the same time.
    pub peak_viewers: i32,
    pub bytes_transferred: i64,
}

const COLUMNS: &str =
    "id, stream_id, started_at, ended_at, duration_seconds, total_viewers, peak_viewers, bytes_transferred";

impl StreamSession {
    pub(crate) fn from_row(r: &Row) -> Self {
        StreamSession {
            id: r.get("id"),
            stream_id: r.get("stream_id"),
            started_at: r.get("started_at"),
            ended_at: r.get("ended_at"),
            duration_seconds: r.get("duration_seconds"),
            total_viewers: r.get("total_viewers"),
            peak_viewers: r.get("peak_viewers"),
            bytes_transferred: r.get("bytes_transferred"),
        }
    }
}

/// Operations on stream sessions. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamSessionModel {
    db: DatabaseManager,
}

impl StreamSessionModel {
    pub fn new(db: DatabaseManager) -> Self {
        StreamSessionModel { db }
    }

    async fn returning(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: String,
    ) -> Result<StreamSession> {
        match self.db.query_opt(sql, params).await? {
            Some(r) => Ok(StreamSession::from_row(&r)),
            None => Err(Error::NotFound(what)),
        }
    }

    /// Starts a session for a stream.
    pub async fn create(&self, stream_id: i64) -> Result<StreamSession> {
        let sql = format!("INSERT INTO stream_sessions (stream_id) VALUES ($1) RETURNING {COLUMNS}");
        self.db
            .query(&sql, &[&stream_id])
            .await
            .and_then(|rows| {
                rows.first()
                    .map(StreamSession::from_row)
                    .ok_or_else(|| Error::Internal("insert returned no row".into()))
            })
            .map_err(|e| match e {
                Error::Query(m) if m.contains("23503") => Error::NotFound(format!("stream {stream_id}")),
                other => other,
            })
    }

    pub async fn get(&self, id: i64) -> Result<StreamSession> {
        self.returning(
            &format!("SELECT {COLUMNS} FROM stream_sessions WHERE id = $1"),
            &[&id],
            format!("stream session {id}"),
        )
        .await
    }

    /// Counts one viewer joining while `current_viewers` are watching (including this one).
    pub async fn record_viewer_join(&self, id: i64, current_viewers: i32) -> Result<StreamSession> {
        let sql = format!(
            "UPDATE stream_sessions SET total_viewers = total_viewers + 1, peak_viewers = GREATEST(peak_viewers, $2)
             WHERE id = $1 AND ended_at IS NULL RETURNING {COLUMNS}"
        );
        self.returning(&sql, &[&id, &current_viewers], format!("open stream session {id}")).await
    }

    /// Adds transferred bytes.
    pub async fn add_bytes(&self, id: i64, bytes: i64) -> Result<StreamSession> {
        if bytes < 0 {
            return Err(Error::invalid("bytes must not be negative"));
        }
        let sql = format!(
            "UPDATE stream_sessions SET bytes_transferred = bytes_transferred + $2 WHERE id = $1 RETURNING {COLUMNS}"
        );
        self.returning(&sql, &[&id, &bytes], format!("stream session {id}")).await
    }

    /// Ends the session and computes its duration. Ending it again is an error.
    pub async fn end(&self, id: i64) -> Result<StreamSession> {
        let sql = format!(
            "UPDATE stream_sessions SET ended_at = now(),
                    duration_seconds = floor(extract(epoch FROM now() - started_at))::bigint
             WHERE id = $1 AND ended_at IS NULL RETURNING {COLUMNS}"
        );
        match self.db.query_opt(&sql, &[&id]).await? {
            Some(r) => Ok(StreamSession::from_row(&r)),
            None => {
                let exists = self.get(id).await?;
                Err(Error::State(format!("stream session {} already ended at {:?}", exists.id, exists.ended_at)))
            }
        }
    }

    /// The sessions of a stream, newest first.
    pub async fn list_for_stream(&self, stream_id: i64) -> Result<Vec<StreamSession>> {
        let sql =
            format!("SELECT {COLUMNS} FROM stream_sessions WHERE stream_id = $1 ORDER BY started_at DESC, id DESC");
        Ok(self.db.query(&sql, &[&stream_id]).await?.iter().map(StreamSession::from_row).collect())
    }

    /// The open session of a stream, if any.
    pub async fn open_for_stream(&self, stream_id: i64) -> Result<Option<StreamSession>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM stream_sessions WHERE stream_id = $1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1"
        );
        Ok(self.db.query_opt(&sql, &[&stream_id]).await?.as_ref().map(StreamSession::from_row))
    }
}
