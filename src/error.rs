//! One error type for the whole library, with stable numeric codes shared by the C and C++ APIs.

use std::fmt;

/// Stable numeric codes. The C header exposes them as `RSDB_*`; they never change meaning.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A required pointer or handle was NULL.
    Null = -1,
    /// A string was not valid UTF-8.
    InvalidUtf8 = -2,
    /// An argument was malformed or out of range.
    InvalidArgument = -3,
    /// The configuration is incomplete or invalid.
    Config = -4,
    /// A server could not be reached or the connection broke.
    Connection = -5,
    /// An operation did not finish within its time limit (including pool acquire).
    Timeout = -6,
    /// The database rejected a statement (syntax, constraint, permission, ...).
    Query = -7,
    /// A concurrent writer won: optimistic concurrency conflict, or a unique key already taken.
    Conflict = -8,
    /// The requested object does not exist.
    NotFound = -9,
    /// Schema migrations failed or the applied schema does not match this library.
    Migration = -10,
    /// Redis answered with an error.
    Redis = -11,
    /// A JSON document could not be parsed or had the wrong shape.
    Json = -12,
    /// The operation is not valid in the object's current state (e.g. a finished transaction).
    State = -13,
    /// A panic was caught at the API boundary: a defect in the library.
    Panic = -14,
    /// An I/O error (files, processes).
    Io = -15,
    /// Authentication failed: wrong password, unknown user, inactive account, bad session.
    Auth = -16,
    /// The session is valid but its second factor has not been passed yet.
    MfaRequired = -17,
    /// Too many failed attempts: locked out for a while.
    Locked = -18,
    /// Stored data failed its integrity check (a changed byte, a missing or truncated file).
    Integrity = -19,
    /// The Redis master changed (Sentinel failover) while the command was in flight: it may or
    /// may not have been applied. Retryable; the client already talks to the new master.
    Failover = -20,
    /// The PostgreSQL node was fenced (it must not act as a primary until it is rejoined), or
    /// this instance lost the failover leader lease and may no longer act on the cluster.
    Fenced = -21,
    /// No replica is safe to promote (all unreachable, too far behind the last known primary
    /// position, or the primary still answers as a primary); nothing was promoted.
    NoCandidate = -22,
    /// Anything else.
    Internal = -99,
}

impl ErrorCode {
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// The library's error. Messages never contain secrets (tokens, passwords, keys).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} must not be NULL")]
    Null(&'static str),
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("connection error: {0}")]
    Connection(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("migration error: {0}")]
    Migration(String),
    #[error("redis error: {0}")]
    Redis(String),
    #[error("json error: {0}")]
    Json(String),
    #[error("invalid state: {0}")]
    State(String),
    #[error("internal panic: {0}")]
    Panic(String),
    #[error("i/o error: {0}")]
    Io(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("second factor required: {0}")]
    MfaRequired(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("redis failover: {0}")]
    Failover(String),
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("no failover candidate: {0}")]
    NoCandidate(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Null(_) => ErrorCode::Null,
            Error::InvalidUtf8(_) => ErrorCode::InvalidUtf8,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Config(_) => ErrorCode::Config,
            Error::Connection(_) => ErrorCode::Connection,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Query(_) => ErrorCode::Query,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Migration(_) => ErrorCode::Migration,
            Error::Redis(_) => ErrorCode::Redis,
            Error::Json(_) => ErrorCode::Json,
            Error::State(_) => ErrorCode::State,
            Error::Panic(_) => ErrorCode::Panic,
            Error::Io(_) => ErrorCode::Io,
            Error::Auth(_) => ErrorCode::Auth,
            Error::MfaRequired(_) => ErrorCode::MfaRequired,
            Error::Locked(_) => ErrorCode::Locked,
            Error::Integrity(_) => ErrorCode::Integrity,
            Error::Failover(_) => ErrorCode::Failover,
            Error::Fenced(_) => ErrorCode::Fenced,
            Error::NoCandidate(_) => ErrorCode::NoCandidate,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidArgument(msg.to_string())
    }
}

/// Formats a PostgreSQL error with its SQLSTATE, detail and hint, which the default Display hides.
fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(c) = db.constraint() {
                s.push_str("; constraint: ");
                s.push_str(c);
            }
            if let Some(d) = db.detail() {
                s.push_str("; detail: ");
                s.push_str(d);
            }
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::T_R_SERIALIZATION_FAILURE {
                return Error::Conflict(describe_pg(&e));
            }
            if *code == SqlState::QUERY_CANCELED {
                return Error::Timeout(describe_pg(&e));
            }
            if code.code().starts_with("08") || *code == SqlState::ADMIN_SHUTDOWN {
                return Error::Connection(describe_pg(&e));
            }
            return Error::Query(describe_pg(&e));
        }
        if e.is_closed() {
            return Error::Connection(describe_pg(&e));
        }
        let text = describe_pg(&e);
        // Errors without a server response are transport failures, except client-side
        // conversion errors (wrong parameter count or type), which are the caller's.
        if text.contains("error serializing") || text.contains("error deserializing") || text.contains("parameters but")
        {
            Error::Query(text)
        } else {
            Error::Connection(text)
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            Error::Timeout(format!("redis: {e}"))
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            Error::Connection(format!("redis: {e}"))
        } else {
            Error::Redis(e.to_string())
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
