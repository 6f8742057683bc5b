/*
 * rootstream-db C API.
 *
 * Conventions: every fallible function returns an int holding an rsdb_status: 0 (RSDB_OK) or a
 * negative RSDB_ERR_* code; rsdb_last_error() describes the latest failure on the calling
 * thread. Strings are UTF-8 and NUL-terminated. Strings returned through `char **` out
 * parameters belong to the caller and are released with rsdb_string_free(). Handles are
 * released with their own *_free / *_close function; those accept NULL. Passing NULL where a
 * value is required returns RSDB_ERR_NULL. All handles except rsdb_tx are thread-safe.
 *
 * Ownership: pointer parameters are borrowed for the duration of the call only, unless their
 * documentation says otherwise; the library keeps no pointer into caller memory after it
 * returns (callbacks' user_data excepted, which must stay valid until the subscription or
 * schedule ends). Handles a constructor stores in `**out` belong to the caller and are
 * released with the function its documentation names; strings passed to callbacks are valid
 * only during the call.
 *
 * Generated from the Rust sources; do not edit.
 */

#ifndef ROOTSTREAM_DB_H
#define ROOTSTREAM_DB_H



#include <stddef.h>
#include <stdint.h>

/*
 `rsdb_metrics_field.kind`: a float (`float_value`; NaN and infinities are refused).
 */
#define RSDB_METRICS_FLOAT 0

/*
 `rsdb_metrics_field.kind`: a signed integer (`int_value`).
 */
#define RSDB_METRICS_INTEGER 1

/*
 `rsdb_metrics_field.kind`: an unsigned integer (`uint_value`; written as an integer over
 the v1 API, which has no unsigned type, so it must fit in int64 there).
 */
#define RSDB_METRICS_UNSIGNED 2

/*
 `rsdb_metrics_field.kind`: a boolean (`bool_value`, zero or not).
 */
#define RSDB_METRICS_BOOL 3

/*
 `rsdb_metrics_field.kind`: a string (`string_value`, UTF-8).
 */
#define RSDB_METRICS_STRING 4

/*
 The status of a call. Fallible functions return it as an `int` (compare it with these
 names): `RSDB_OK` or a negative `RSDB_ERR_*` code. A value never changes meaning, and the
 same values are `rootstream::Error::code()` in the C++ API.
 */
typedef enum rsdb_status {
  /*
   Success.
   */
  RSDB_OK = 0,
  /*
   A required pointer or handle was NULL.
   */
  RSDB_ERR_NULL = -1,
  /*
   A string argument was not valid UTF-8.
   */
  RSDB_ERR_INVALID_UTF8 = -2,
  /*
   An argument was malformed or out of range.
   */
  RSDB_ERR_INVALID_ARGUMENT = -3,
  /*
   The configuration is incomplete or invalid.
   */
  RSDB_ERR_CONFIG = -4,
  /*
   A server could not be reached or the connection broke.
   */
  RSDB_ERR_CONNECTION = -5,
  /*
   An operation did not finish in time (including waiting for a pooled connection).
   */
  RSDB_ERR_TIMEOUT = -6,
  /*
   The database rejected a statement.
   */
  RSDB_ERR_QUERY = -7,
  /*
   A concurrent writer won, or a unique value is already taken.
   */
  RSDB_ERR_CONFLICT = -8,
  /*
   The requested object does not exist.
   */
  RSDB_ERR_NOT_FOUND = -9,
  /*
   Schema migrations failed or do not match this library.
   */
  RSDB_ERR_MIGRATION = -10,
  /*
   Redis answered with an error.
   */
  RSDB_ERR_REDIS = -11,
  /*
   A JSON argument could not be parsed or had the wrong shape.
   */
  RSDB_ERR_JSON = -12,
  /*
   The object is in the wrong state for this call (e.g. a finished transaction).
   */
  RSDB_ERR_STATE = -13,
  /*
   A defect inside the library was caught at the boundary.
   */
  RSDB_ERR_PANIC = -14,
  /*
   A file or process operation failed.
   */
  RSDB_ERR_IO = -15,
  /*
   Authentication failed (wrong password, unknown or inactive user).
   */
  RSDB_ERR_AUTH = -16,
  /*
   The session is valid but its second factor (MFA) has not been passed yet.
   */
  RSDB_ERR_MFA_REQUIRED = -17,
  /*
   Too many failed attempts; locked out until the lockout window has passed.
   */
  RSDB_ERR_LOCKED = -18,
  /*
   Stored data failed its integrity check (a changed byte, a missing or truncated file).
   */
  RSDB_ERR_INTEGRITY = -19,
  /*
   The Redis master changed (Sentinel failover) while the command was in flight; it may or
   may not have been applied. Retry: the client already follows the new master.
   */
  RSDB_ERR_FAILOVER = -20,
  /*
   The PostgreSQL node was fenced (never a primary again until rejoined), or this instance
   lost the failover leader lease and may no longer act on the cluster.
   */
  RSDB_ERR_FENCED = -21,
  /*
   No replica is safe to promote (unreachable, too far behind, or the primary still
   answers); nothing was promoted.
   */
  RSDB_ERR_NO_CANDIDATE = -22,
  /*
   Any other failure.
   */
  RSDB_ERR_INTERNAL = -99,
} rsdb_status;

/*
 Backups of `cfg`'s database into its `backup_dir`. Thread-safe.
 */
typedef struct rsdb_backup rsdb_backup;

/*
 A running backup schedule. Stop it with `rsdb_backup_schedule_stop`.
 */
typedef struct rsdb_backup_schedule rsdb_backup_schedule;

/*
 Library configuration. Create with `rsdb_config_new` or `rsdb_config_from_env`.
 */
typedef struct rsdb_config rsdb_config;

/*
 A pool of PostgreSQL connections. Thread-safe: one handle may be shared by all threads.
 */
typedef struct rsdb_db rsdb_db;

/*
 The event store. Thread-safe.
 */
typedef struct rsdb_events rsdb_events;

/*
 Automatic failover, manual failover and switchover of the PostgreSQL cluster in `ha_nodes`,
 coordinated through a leader lease in etcd. Thread-safe.
 */
typedef struct rsdb_failover rsdb_failover;

/*
 Periodic health checks of a database (and optionally the nodes of an HA cluster).
 Thread-safe: one handle may be used from any thread.
 */
typedef struct rsdb_health rsdb_health;

/*
 A client for one InfluxDB server and database (v1) or bucket (v2). Thread-safe.
 */
typedef struct rsdb_metrics_client rsdb_metrics_client;

/*
 Collectors (stream, system, database, cache) run once or periodically into a writer.
 Thread-safe.
 */
typedef struct rsdb_metrics_collector rsdb_metrics_collector;

/*
 Dashboards, percentiles, exports, the `/metrics` endpoint and threshold alerts. Thread-safe.
 */
typedef struct rsdb_metrics_reporter rsdb_metrics_reporter;

/*
 A background batching writer over a client. Thread-safe.
 */
typedef struct rsdb_metrics_writer rsdb_metrics_writer;

/*
 The MFA manager. Thread-safe.
 */
typedef struct rsdb_mfa rsdb_mfa;

/*
 Restores backups: logical ones into a database, physical ones into a new data directory up
 to a point in time. Thread-safe.
 */
typedef struct rsdb_recovery rsdb_recovery;

/*
 A Redis client. Thread-safe: one handle may be shared by all threads.
 */
typedef struct rsdb_redis rsdb_redis;

/*
 The streaming replication of one PostgreSQL cluster: status, read routing, replicas,
 promote and rejoin. Thread-safe.
 */
typedef struct rsdb_replication rsdb_replication;

/*
 Finds the Redis master through Sentinel and watches failovers. Thread-safe.
 */
typedef struct rsdb_sentinel rsdb_sentinel;

/*
 Sessions. Thread-safe.
 */
typedef struct rsdb_sessions rsdb_sessions;

/*
 Snapshots of an `rsdb_sync`'s state in PostgreSQL. Thread-safe.
 */
typedef struct rsdb_snapshots rsdb_snapshots;

/*
 Stream-session operations. Thread-safe.
 */
typedef struct rsdb_stream_sessions rsdb_stream_sessions;

/*
 Stream operations (database + Redis). Thread-safe.
 */
typedef struct rsdb_streams rsdb_streams;

/*
 State shared with other RootStream instances over Redis. Thread-safe.
 */
typedef struct rsdb_sync rsdb_sync;

/*
 A transaction holding one pooled connection. Use it from one thread at a time.
 */
typedef struct rsdb_tx rsdb_tx;

/*
 User operations. Thread-safe.
 */
typedef struct rsdb_users rsdb_users;

/*
 A running WAL gap watch. Stop it with `rsdb_wal_gap_watch_stop`.
 */
typedef struct rsdb_wal_gap_watch rsdb_wal_gap_watch;

/*
 Receives schedule events as JSON (`{"event":"completed"|"failed"|"missed", ...}`) on a
 library thread; `event_json` is valid only during the call.
 */
typedef void (*rsdb_schedule_cb)(void *user_data, const char *event_json);

/*
 Receives progress as JSON (`{"backup_id","phase","bytes_done","bytes_total","message"}`) on
 the thread doing the work; `progress_json` is valid only during the call. It must return
 quickly.
 */
typedef void (*rsdb_progress_cb)(void *user_data, const char *progress_json);

/*
 Receives each WAL gap that is new or has grown, as JSON (the objects of
 `rsdb_backup_wal_gaps`), on a library thread; `gap_json` is valid only during the call.
 */
typedef void (*rsdb_wal_gap_cb)(void *user_data, const char *gap_json);

/*
 Pool counters, filled by `rsdb_db_pool_stats`.
 */
typedef struct rsdb_pool_stats {
  /*
   Configured maximum number of connections.
   */
  size_t max_size;
  /*
   Open connections (idle and in use).
   */
  size_t size;
  /*
   Idle connections.
   */
  size_t available;
  /*
   Connections handed out.
   */
  size_t in_use;
  /*
   Callers waiting for a connection.
   */
  size_t waiting;
} rsdb_pool_stats;

/*
 Called on every change of primary with a JSON document (`cluster`, `kind` = `automatic`,
 `manual`, `switchover` or `observed`, `old_primary`, `new_primary`, `by`, `timeline`,
 `old_primary_lsn`, `new_primary_lsn`, `bytes_lost_estimate`, `mode`, `reason`,
 `detected_at`, `decided_at`, `promoted_at`, `detection_to_promotion_ms`), valid only during
 the call. Runs on the thread that made the change: the library thread `rsdb-failover` for
 automatic failovers and for changes read from etcd, the calling thread for
 `rsdb_failover_switchover` and `rsdb_failover_failover`. Do not call `rsdb_failover_stop` or
 `rsdb_failover_close` from inside it.
 */
typedef void (*rsdb_failover_role_cb)(void *user_data, const char *change_json);

/*
 Called for each alert with a JSON document (`check`, `severity` (`info`, `warning` or
 `critical`), `state`, `resolved`, `repeat`, `message`, `value`, `threshold`, `at`, `since`),
 valid only during the call. Alerts of the periodic checks run on the library thread
 `rsdb-health`; those of `rsdb_health_check_now` on the thread that called it. One call at a
 time, in order; after `rsdb_health_close` returns it is not called again. It must not call
 `rsdb_health_check_now` (that fails with `RSDB_ERR_STATE`).
 */
typedef void (*rsdb_health_alert_cb)(void *user_data, const char *alert_json);

/*
 One tag of a point. Both strings are required, UTF-8, non-empty.
 */
typedef struct rsdb_metrics_tag {
  const char *key;
  const char *value;
} rsdb_metrics_tag;

/*
 One field of a point: `key` (required) and the value member that `kind` (an
 `RSDB_METRICS_*` constant) names; the other members are ignored.
 */
typedef struct rsdb_metrics_field {
  const char *key;
  int kind;
  double float_value;
  int64_t int_value;
  uint64_t uint_value;
  int bool_value;
  const char *string_value;
} rsdb_metrics_field;

/*
 A point in structured form; the library writes its line protocol (escaping, sorted tags,
 the client's precision). `tags` may be NULL when `tag_count` is 0; at least one field is
 required. With `has_timestamp` zero the server stamps the point on arrival.
 */
typedef struct rsdb_metrics_point {
  const char *measurement;
  const struct rsdb_metrics_tag *tags;
  size_t tag_count;
  const struct rsdb_metrics_field *fields;
  size_t field_count;
  int has_timestamp;
  int64_t timestamp_ns;
} rsdb_metrics_point;

/*
 Called for points a writer dropped: `reason` (`buffer_full`, `rejected`,
 `retries_exhausted`, `shutdown`), how many points since the last call for that reason, and
 the latest message (the server's answer, or what was full). Strings are valid only during
 the call. It runs on one of the writer's sender threads, or on the thread calling
 `rsdb_metrics_writer_flush`/`_shutdown`/`_free`, one call at a time; it must not call
 `rsdb_metrics_writer_flush`, `_shutdown` or `_free` itself. Once `rsdb_metrics_writer_shutdown`
 or `rsdb_metrics_writer_free` has returned it is never called again.
 */
typedef void (*rsdb_metrics_drop_cb)(void *user_data,
                                     const char *reason,
                                     uint64_t points,
                                     const char *message);

/*
 A writer's counters and gauges. Every accepted point ends delivered or dropped, and every
 drop is counted by reason.
 */
typedef struct rsdb_metrics_writer_stats {
  /*
   Points accepted by the write functions.
   */
  uint64_t accepted;
  /*
   Points the server took.
   */
  uint64_t delivered;
  /*
   Dropped because the buffer (points or bytes) was full; the oldest go first.
   */
  uint64_t dropped_buffer_full;
  /*
   Dropped because the server refused the batch for good (a 4xx other than 408/429).
   */
  uint64_t dropped_rejected;
  /*
   Dropped after the server stayed down or failing for `retry_max_elapsed_ms`.
   */
  uint64_t dropped_retries_exhausted;
  /*
   Still buffered when the shutdown deadline passed.
   */
  uint64_t dropped_shutdown;
  /*
   Write requests that succeeded.
   */
  uint64_t batches;
  /*
   Failed attempts that were retried.
   */
  uint64_t retries;
  /*
   Points held now (queued and in flight).
   */
  uint64_t buffered_points;
  /*
   Line-protocol bytes held now.
   */
  uint64_t buffered_bytes;
} rsdb_metrics_writer_stats;

/*
 The state of one live stream, as the streaming code reports it (`stream_id` required).
 */
typedef struct rsdb_stream_metrics {
  const char *stream_id;
  int64_t viewers;
  double bitrate_kbps;
  double fps;
  int64_t width;
  int64_t height;
  double duration_seconds;
  int64_t bytes_sent;
} rsdb_stream_metrics;

/*
 Called with a collector's failure: the collector's name and the message. Runs on the
 collection thread (or the thread calling `rsdb_metrics_collector_collect_once`); never after
 `rsdb_metrics_collector_free` has returned.
 */
typedef void (*rsdb_metrics_failure_cb)(void *user_data, const char *collector, const char *message);

/*
 Called with an alert that fired, as JSON (`rule`, `metric`, `value`, `threshold`,
 `severity`, `message`), on the thread calling `rsdb_metrics_reporter_check`; never after
 `rsdb_metrics_reporter_free` has returned.
 */
typedef void (*rsdb_metrics_alert_cb)(void *user_data, const char *alert_json);

/*
 Called for each message on a subscribed pattern, on the client's dispatcher thread, one
 call at a time. `channel` and `payload` are valid only during the call; `payload` is
 NUL-terminated and `payload_len` bytes long (it may contain NUL bytes).
 */
typedef void (*rsdb_message_cb)(void *user_data,
                                const char *channel,
                                const char *payload,
                                size_t payload_len);

/*
 Called after a failover of the master with a JSON document (`master_name`, `old` and `new`
 as `{"host","port"}`, `took_ms` from the first `+sdown` seen to `+switch-master`, and
 `sentinel`), valid only during the call. Runs on the library thread `rsdb-sentinel`, one
 call at a time, once per failover; after `rsdb_sentinel_close` returns it is not called again.
 */
typedef void (*rsdb_sentinel_failover_cb)(void *user_data, const char *event_json);

/*
 Merges two concurrent states of a version-vector entity (JSON objects; `older_json` has
 the earlier timestamp). Returns the merged JSON object as a string allocated with
 `malloc` (the library frees it), or NULL when it cannot merge (the pair is then recorded
 as a conflict). Must give the same result for the same arguments on every instance. Runs
 on a library thread.
 */
typedef char *(*rsdb_sync_merge_cb)(void *user_data,
                                    const char *entity_type,
                                    const char *id,
                                    const char *older_json,
                                    const char *newer_json);

/*
 Called for each event whose type matches a subscription, after a state change it carries
 was applied here. `event_type` and `envelope_json` (the whole envelope, see
 docs/state-sync.md) are valid only during the call. Runs on a library thread, one call at
 a time; after `rsdb_sync_unsubscribe` or `rsdb_sync_close` returns it is not called again.
 */
typedef void (*rsdb_sync_event_cb)(void *user_data,
                                   const char *event_type,
                                   const char *envelope_json);

/*
 Called with a JSON document (a conflict or a resynchronization, see docs/state-sync.md),
 on a library thread, one call at a time, until `rsdb_sync_close` returns.
 */
typedef void (*rsdb_sync_report_cb)(void *user_data, const char *report_json);

/*
 Every status, in header order.
 */
#define rsdb_status_ALL { RSDB_OK, RSDB_ERR_NULL, RSDB_ERR_INVALID_UTF8, RSDB_ERR_INVALID_ARGUMENT, RSDB_ERR_CONFIG, RSDB_ERR_CONNECTION, RSDB_ERR_TIMEOUT, RSDB_ERR_QUERY, RSDB_ERR_CONFLICT, RSDB_ERR_NOT_FOUND, RSDB_ERR_MIGRATION, RSDB_ERR_REDIS, RSDB_ERR_JSON, RSDB_ERR_STATE, RSDB_ERR_PANIC, RSDB_ERR_IO, RSDB_ERR_AUTH, RSDB_ERR_MFA_REQUIRED, RSDB_ERR_LOCKED, RSDB_ERR_INTEGRITY, RSDB_ERR_FAILOVER, RSDB_ERR_FENCED, RSDB_ERR_NO_CANDIDATE, RSDB_ERR_INTERNAL, }

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 The library version, a static string.
 */
const char *rsdb_version(void);

/*
 The message of the latest failed call on this thread, or NULL when the latest call
 succeeded. Valid until the next `rsdb_*` call on the same thread; do not free it.
 */
const char *rsdb_last_error(void);

/*
 The status code of the latest failed call on this thread, or `RSDB_OK`.
 */
int rsdb_last_error_code(void);

/*
 A short, static description of a status code (e.g. "timeout").
 */
const char *rsdb_status_name(int status);

/*
 Releases a string returned by this library. NULL is accepted.
 */
void rsdb_string_free(char *s);

/*
 Creates a session handle with the lifetimes and limits of `cfg` (`session_*` keys) on `db`
 and `redis` (which it keeps alive). Release with `rsdb_sessions_free`.
 */
int rsdb_sessions_new(const struct rsdb_config *cfg,
                      const struct rsdb_db *db,
                      const struct rsdb_redis *redis,
                      struct rsdb_sessions **out);

/*
 Releases a session handle (and stops its background cleanup). NULL is accepted.
 */
void rsdb_sessions_free(struct rsdb_sessions *h);

/*
 Creates a session for a user logging in from a device. `fingerprint` is required;
 `ip_address`, `user_agent` and `geo_location` may be NULL. With `mfa_required` != 0 the
 session grants access only after `rsdb_mfa_complete_login`. `*token` receives the session
 token — shown this once, never stored — and `*session_json` (may be NULL) the session.
 Over the per-user limit with policy `refuse`: `RSDB_ERR_CONFLICT`.
 */
int rsdb_sessions_create(const struct rsdb_sessions *sessions,
                         int64_t user_id,
                         const char *fingerprint,
                         const char *ip_address,
                         const char *user_agent,
                         const char *geo_location,
                         int remember_me,
                         int mfa_required,
                         char **token,
                         char **session_json);

/*
 Validates a token presented from a device. `RSDB_ERR_AUTH` for an unknown, revoked or
 expired session — and for a different fingerprint, which also revokes the session and
 records `session.hijack_suspected`. With `require_mfa` != 0, `RSDB_ERR_MFA_REQUIRED` while
 the second factor is pending. `*session_json` (may be NULL) receives the session.
 */
int rsdb_sessions_validate(const struct rsdb_sessions *sessions,
                           const char *token,
                           const char *fingerprint,
                           int require_mfa,
                           char **session_json);

/*
 Extends a valid session by its full lifetime. With `rotate` != 0 the old token stops
 working and `*new_token` receives the new one (else NULL). `*session_json` may be NULL.
 */
int rsdb_sessions_refresh(const struct rsdb_sessions *sessions,
                          const char *token,
                          const char *fingerprint,
                          int rotate,
                          char **new_token,
                          char **session_json);

/*
 Revokes one session. `reason` may be NULL: the session then records the library's default
 reason (`revoked`).
 */
int rsdb_sessions_revoke(const struct rsdb_sessions *sessions,
                         int64_t session_id,
                         const char *reason);

/*
 Revokes the session of a token (logout).
 */
int rsdb_sessions_revoke_token(const struct rsdb_sessions *sessions, const char *token);

/*
 Revokes all of a user's sessions except `keep_session_id` (0 keeps none). `reason` may be
 NULL: the sessions then record the library's default reason (`revoked`). `revoked` (may be
 NULL) receives how many.
 */
int rsdb_sessions_revoke_all(const struct rsdb_sessions *sessions,
                             int64_t user_id,
                             int64_t keep_session_id,
                             const char *reason,
                             uint64_t *revoked);

/*
 A user's active sessions, newest first, as a JSON array (the "your devices" page).
 */
int rsdb_sessions_list(const struct rsdb_sessions *sessions, int64_t user_id, char **sessions_json);

/*
 Ends expired and idle sessions and deletes sessions ended longer ago than the configured
 retention (`session_retention_days`, default 30). `ended` and `deleted` may be NULL.
 */
int rsdb_sessions_cleanup(const struct rsdb_sessions *sessions, uint64_t *ended, uint64_t *deleted);

/*
 Runs `rsdb_sessions_cleanup` every `interval_ms` in the background (0 stops it).
 */
int rsdb_sessions_schedule_cleanup(const struct rsdb_sessions *sessions, uint64_t interval_ms);

/*
 Cache counters: `{"cache_hits":..,"cache_misses":..,"cache_errors":..}`.
 */
int rsdb_sessions_stats(const struct rsdb_sessions *sessions, char **stats_json);

/*
 Creates an MFA handle. Needs `master_key` in `cfg` (`RSDB_ERR_CONFIG` otherwise); `redis`
 may be NULL (then no `mfa.*` events are published). Release with `rsdb_mfa_free`.
 */
int rsdb_mfa_new(const struct rsdb_config *cfg,
                 const struct rsdb_db *db,
                 const struct rsdb_redis *redis,
                 struct rsdb_mfa **out);

/*
 Releases an MFA handle. NULL is accepted.
 */
void rsdb_mfa_free(struct rsdb_mfa *h);

/*
 Starts enrollment: `*enrollment_json` receives `{"secret_base32","otpauth_uri","qr_svg",
 "qr_png"}` (PNG in base64) — show it once. Not active until confirmed with a first code.
 */
int rsdb_mfa_begin_enrollment(const struct rsdb_mfa *mfa,
                              int64_t user_id,
                              const char *account_name,
                              char **enrollment_json);

/*
 Confirms enrollment with a first valid code (`RSDB_ERR_AUTH` if it is not); `*backup_codes_json`
 receives the 10 backup codes as a JSON array — show them once. `ip_address` may be NULL.
 */
int rsdb_mfa_confirm_enrollment(const struct rsdb_mfa *mfa,
                                int64_t user_id,
                                const char *code,
                                const char *ip_address,
                                char **backup_codes_json);

/*
 Checks a TOTP code: `*accepted` is 1, or 0 for a wrong or already used code.
 `RSDB_ERR_LOCKED` while the user is locked out. Every attempt is logged, with `ip_address`
 (may be NULL).
 */
int rsdb_mfa_verify(const struct rsdb_mfa *mfa,
                    int64_t user_id,
                    const char *code,
                    const char *ip_address,
                    int *accepted);

/*
 Checks a backup code (each works once): `*accepted` is 1 or 0. `ip_address` (may be NULL)
 is logged with the attempt.
 */
int rsdb_mfa_verify_backup_code(const struct rsdb_mfa *mfa,
                                int64_t user_id,
                                const char *code,
                                const char *ip_address,
                                int *accepted);

/*
 The second step of a login: checks a TOTP code (or a backup code) for the session's user
 and marks the session MFA-verified. `RSDB_ERR_AUTH` when the code is not accepted.
 `ip_address` and `session_json` may be NULL.
 */
int rsdb_mfa_complete_login(const struct rsdb_mfa *mfa,
                            const struct rsdb_sessions *sessions,
                            const char *token,
                            const char *fingerprint,
                            const char *code,
                            const char *ip_address,
                            char **session_json);

/*
 Replaces the backup codes; `*backup_codes_json` receives the new set.
 */
int rsdb_mfa_regenerate_backup_codes(const struct rsdb_mfa *mfa,
                                     int64_t user_id,
                                     char **backup_codes_json);

/*
 Removes MFA (secret and backup codes) from a user; the user's sessions stay as they are.
 `RSDB_ERR_NOT_FOUND` when the user has no enrollment. For a lost device use
 `rsdb_mfa_admin_reset`, which also revokes the sessions.
 */
int rsdb_mfa_unenroll(const struct rsdb_mfa *mfa, int64_t user_id);

/*
 The administrator's reset for a lost device: removes the user's MFA and revokes every
 active session of the user, recording `reason` (may be NULL: `mfa reset`). `revoked` (may
 be NULL) receives how many sessions were revoked. `RSDB_ERR_NOT_FOUND`, with nothing
 revoked, when the user has no enrollment.
 */
int rsdb_mfa_admin_reset(const struct rsdb_mfa *mfa,
                         const struct rsdb_sessions *sessions,
                         int64_t user_id,
                         const char *reason,
                         uint64_t *revoked);

/*
 `*status_json` receives `{"enrolled","enabled","confirmed_at","backup_codes_remaining",
 "locked_until","key_id"}`.
 */
int rsdb_mfa_status(const struct rsdb_mfa *mfa, int64_t user_id, char **status_json);

/*
 Re-encrypts every MFA secret not under the current master key; `rotated` (may be NULL)
 receives how many.
 */
int rsdb_mfa_rotate_keys(const struct rsdb_mfa *mfa, uint64_t *rotated);

/*
 The TOTP code (SHA-1, 6 digits, 30 s) of a base32 secret at `unix_time` (0 = now) — what an
 authenticator app shows. For tests, tools and demos; `*code` receives it.
 */
int rsdb_totp_code(const char *secret_base32, uint64_t unix_time, char **code);

/*
 Announces created and revoked sessions through `sync` from now on (events `session.created`
 and `session.revoked`, and the shared `session` entity's `user_id` and `active`; never a
 token). `sync` may be NULL, which stops it.
 */
int rsdb_sessions_set_sync(const struct rsdb_sessions *h, const struct rsdb_sync *sync);

/*
 Creates a backup handle. Needs `database_url`, `backup_dir` and `master_key` in `cfg`
 (`RSDB_ERR_CONFIG` otherwise). Release with `rsdb_backup_free`.
 */
int rsdb_backup_new(const struct rsdb_config *cfg,
                    const struct rsdb_db *db,
                    struct rsdb_backup **out);

/*
 Releases a backup handle. NULL is accepted.
 */
void rsdb_backup_free(struct rsdb_backup *h);

/*
 Takes a full logical backup; `*manifest_json` (may be NULL) receives its manifest
 (`backup_id`, sizes, checksum, row counts, ...). On failure the history row is `failed`.
 */
int rsdb_backup_create_full(const struct rsdb_backup *backup, char **manifest_json);

/*
 Reads a backup back completely. `RSDB_ERR_INTEGRITY` names the file and chunk at fault;
 `RSDB_ERR_NOT_FOUND` for an unknown backup. `*manifest_json` may be NULL.
 */
int rsdb_backup_verify(const struct rsdb_backup *backup,
                       const char *backup_id,
                       char **manifest_json);

/*
 Verifies a backup, restores it into the database at `target_url` (created when missing; an
 existing one should be empty), and checks
 every table's row count. `*report_json` (may be NULL) receives
 `{"backup_id","target","tables_checked","rows_restored"}`.
 */
int rsdb_backup_restore(const struct rsdb_backup *backup,
                        const char *backup_id,
                        const char *target_url,
                        char **report_json);

/*
 The backup history, newest first, as a JSON array.
 */
int rsdb_backup_list(const struct rsdb_backup *backup, char **backups_json);

/*
 Deletes backups past their retention: `full_days`, `incremental_days` and
 `differential_days` per type (0 = that type's period in the core's default policy),
 keeping the newest `keep_last` of each type whatever their age (the newest full backup is
 always kept). `*report_json` (may be NULL) receives `{"deleted": [...], "kept": n, "bytes_freed": n}`.
 */
int rsdb_backup_cleanup(const struct rsdb_backup *backup,
                        uint32_t full_days,
                        uint32_t incremental_days,
                        uint32_t differential_days,
                        uint32_t keep_last,
                        char **report_json);

/*
 Runs full logical backups on a 5-field cron schedule (UTC) in the background, as
 `rsdb_backup_schedule_start_kind` with kind `"logical"`. Failures and runs missed while
 nothing was running are reported to `callback`. `*out` receives the schedule, to stop and
 release with `rsdb_backup_schedule_stop`; `user_data` is the caller's and must stay valid
 until then.
 */
int rsdb_backup_schedule_start(const struct rsdb_backup *backup,
                               const char *cron,
                               rsdb_schedule_cb callback,
                               void *user_data,
                               struct rsdb_backup_schedule **out);

/*
 Stops a schedule and releases it. When this returns (outside the callback) the callback is
 not running and will not run again. NULL is accepted.
 */
void rsdb_backup_schedule_stop(struct rsdb_backup_schedule *schedule);

/*
 Takes a backup of `kind`: `"logical"` (full pg_dump backup of the database, as
 `rsdb_backup_create_full`), or the physical `"full"` (pg_basebackup of the cluster),
 `"incremental"` (the WAL since the last physical backup) or `"differential"` (the WAL since
 the last physical full backup). Incremental and differential backups need continuous
 archiving into the same repository (`archive_command = 'rsdb --config FILE wal-push %p'`);
 without a full physical backup to build on they fail with `RSDB_ERR_STATE`.
 `*manifest_json` may be NULL.
 */
int rsdb_backup_create(const struct rsdb_backup *backup, const char *kind, char **manifest_json);

/*
 Deletes one backup (its files, and its history row becomes `deleted`).
 `RSDB_ERR_CONFLICT` while another backup builds on it; `RSDB_ERR_NOT_FOUND` for an unknown
 one. `*freed_bytes` (may be NULL) receives the bytes removed.
 */
int rsdb_backup_delete(const struct rsdb_backup *backup,
                       const char *backup_id,
                       uint64_t *freed_bytes);

/*
 Like `rsdb_backup_schedule_start`, for backups of `kind` (`"logical"`, `"full"`,
 `"incremental"` or `"differential"`, as in `rsdb_backup_create`).
 */
int rsdb_backup_schedule_start_kind(const struct rsdb_backup *backup,
                                    const char *cron,
                                    const char *kind,
                                    rsdb_schedule_cb callback,
                                    void *user_data,
                                    struct rsdb_backup_schedule **out);

/*
 Reports progress of this handle's backups, verifies and restores to `callback` (NULL stops
 reporting). Set it before sharing the handle between threads.
 */
int rsdb_backup_set_progress(struct rsdb_backup *backup,
                             rsdb_progress_cb callback,
                             void *user_data);

/*
 Creates a recovery handle. With `db` NULL it works from the repository and keys alone
 (disaster recovery: the database is gone); then test restores of logical backups are
 refused. Release with `rsdb_recovery_free`.
 */
int rsdb_recovery_new(const struct rsdb_config *cfg,
                      const struct rsdb_db *db,
                      struct rsdb_recovery **out);

/*
 Releases a recovery handle. NULL is accepted.
 */
void rsdb_recovery_free(struct rsdb_recovery *h);

/*
 Reports restore progress to `callback` (NULL stops reporting); see `rsdb_progress_cb`.
 */
int rsdb_recovery_set_progress(struct rsdb_recovery *recovery,
                               rsdb_progress_cb callback,
                               void *user_data);

/*
 Restores a logical backup into the database at `target_url` (created when missing), as
 `rsdb_backup_restore`; `report_json` may be NULL.
 */
int rsdb_recovery_restore_database(const struct rsdb_recovery *recovery,
                                   const char *backup_id,
                                   const char *target_url,
                                   char **report_json);

/*
 Restores a physical backup (with the backups it builds on) into a new data directory,
 replays WAL to the target, starts the server on 127.0.0.1, waits until recovery has
 finished, and counts every table's rows. `options_json`:
 `{"data_dir": "/new/dir", "backup_id": "...", "port": 0, "target_time": "RFC 3339",
 "latest": false, "keep_running": false, "timeout_s": 3600}` (only `data_dir` is required;
 without `backup_id` the newest fitting backup is used; without a target, the end of the
 backup). `*report_json` (may be NULL) receives `{"backup_id","chain","data_dir","port",
 "target","recovery_log","databases":{db:{table:rows}},"running","seconds"}`.
 `RSDB_ERR_INTEGRITY` when a backup file fails authentication (nothing is left behind).
 */
int rsdb_recovery_restore_cluster(const struct rsdb_recovery *recovery,
                                  const char *options_json,
                                  char **report_json);

/*
 Restores a backup into scratch space (a new database, or a temporary data directory on a
 free port), checks it and drops the scratch space. `*report_json` (may be NULL) receives
 `{"backup_id","kind","tables_checked","rows","seconds"}`.
 */
int rsdb_recovery_test_restore(const struct rsdb_recovery *recovery,
                               const char *backup_id,
                               char **report_json);

/*
 Every backup in the repository, read from the signed manifests (no database needed),
 oldest first, as a JSON array of manifests.
 */
int rsdb_recovery_list_repository(const struct rsdb_recovery *recovery, char **backups_json);

/*
 Stops the server a restore left running in `data_dir` (fast shutdown).
 */
int rsdb_recovery_stop_cluster(const struct rsdb_recovery *recovery, const char *data_dir);

/*
 Archives one WAL file into `cfg`'s repository (PostgreSQL's archive_command; the CLI's
 `rsdb wal-push`), with the configuration's `wal_push_parallel` and `wal_queue_max` as
 `rsdb_wal_push_report` applies them. Idempotent: `*already_archived` (may be NULL) is 1 when
 an identical copy was there already (or an earlier push stored it ahead); a different file
 of that name gives `RSDB_ERR_CONFLICT`. A segment dropped by the queue limit returns
 `RSDB_OK` with `*already_archived` 0: use `rsdb_wal_push_report` to tell.
 */
int rsdb_wal_push(const struct rsdb_config *cfg, const char *path, int *already_archived);

/*
 As `rsdb_wal_push`, and says what happened in `*report_json` (may be NULL; free with
 `rsdb_string_free`): `{"file", "outcome": "stored"|"already_archived"|"pushed_ahead"|"dropped",
 "pushed_ahead": [names], "ahead_failed": [names], "queue_bytes", "gap": null or the WAL gap
 opened or extended}`. `path` is PostgreSQL's `%p` (`pg_wal/NAME`, from the data directory):
 the ready files beside it are what `wal_push_parallel` pushes ahead and what
 `wal_queue_max` counts. Past the limit the segment is reported archived without being stored
 ("dropped") and a gap recorded; with the limit set, a failing repository is retried for up to
 30 s while the queue is watched.
 */
int rsdb_wal_push_report(const struct rsdb_config *cfg, const char *path, char **report_json);

/*
 Every known WAL gap (WAL that `wal-push` dropped past `wal_queue_max`) as a JSON array in
 `*gaps_json` (free with `rsdb_string_free`), oldest first: each `{"timeline",
 "first_segment", "last_segment", "segments", "bytes", "complete_before" (recovery can reach
 moments before it, or null), "first_dropped_at", "last_dropped_at", "queue_bytes",
 "limit_bytes", "closed_by" (the full backup after which recovery works again, or null),
 "affected_backups" (the backups whose recovery stops at it)}`. Read from the repository and
 the database's `wal_gaps` table.
 */
int rsdb_backup_wal_gaps(const struct rsdb_backup *backup, char **gaps_json);

/*
 Looks for WAL gaps every `interval_ms` (at least 100) and calls `callback` for each one that
 is new or has grown; the first look reports every gap no full backup has closed yet. The
 database's rows alert while the repository is still unreachable. `*out` receives the watch,
 to stop and release with `rsdb_wal_gap_watch_stop`; `user_data` must stay valid until then.
 */
int rsdb_backup_watch_wal_gaps(const struct rsdb_backup *backup,
                               uint64_t interval_ms,
                               rsdb_wal_gap_cb callback,
                               void *user_data,
                               struct rsdb_wal_gap_watch **out);

/*
 Stops a gap watch and releases it. When this returns (outside the callback) the callback is
 not running and will not run again. NULL is accepted.
 */
void rsdb_wal_gap_watch_stop(struct rsdb_wal_gap_watch *watch);

/*
 Restores archived WAL file `name` to `path` (PostgreSQL's restore_command; the CLI's
 `rsdb wal-fetch`). `RSDB_ERR_NOT_FOUND` when it was never archived.
 */
int rsdb_wal_fetch(const struct rsdb_config *cfg, const char *name, const char *path);

/*
 Prepares the repository: creates `backup_dir`, or the S3 bucket of `backup_s3_url` when it
 does not exist. Idempotent.
 */
int rsdb_backup_init_repository(const struct rsdb_backup *backup);

/*
 Creates a configuration with defaults (pool of 20, 5 s acquire timeout, ...).
 `*out` receives a handle to release with `rsdb_config_free`.
 */
int rsdb_config_new(struct rsdb_config **out);

/*
 Creates a configuration from defaults and the `ROOTSTREAM_*` environment variables
 (`ROOTSTREAM_DATABASE_URL`, `ROOTSTREAM_REDIS_URL`, `ROOTSTREAM_POOL_SIZE`, ...).
 `*out` receives a handle to release with `rsdb_config_free`.
 */
int rsdb_config_from_env(struct rsdb_config **out);

/*
 Sets one key: `database_url`, `pool_size`, `acquire_timeout_ms`, `connect_timeout_ms`,
 `query_timeout_ms`, `redis_url`, `redis_sentinels` (comma-separated host:port),
 `redis_master_name`, `redis_sentinel_password`, `redis_master_password` (with sentinels and
 a master name set, `rsdb_redis_open` goes through Sentinel and follows failovers),
 `redis_timeout_ms`, `influx_url`, `influx_database`, `influx_org`,
 `influx_bucket`, `influx_token`, `master_key` (64 hex digits), `master_key_id`,
 `master_keys_old`, `backup_dir`, `backup_s3_url` (`s3://bucket/prefix`),
 `backup_s3_endpoint`, `backup_s3_region`, `backup_s3_access_key_id`,
 `backup_s3_secret_access_key`, `rsdb_path`, `pg_bin_dir`, `instance_id`, and the
 `session_*` and `mfa_*` keys (the README lists them all). An empty value clears an
 optional key.
 */
int rsdb_config_set(struct rsdb_config *cfg, const char *key, const char *value);

/*
 Applies a configuration file of `key = value` lines (keys as for `rsdb_config_set`, or their
 `ROOTSTREAM_*` names; `#` comments) — the file `rsdb --config` reads, e.g. the one
 PostgreSQL's archive_command uses. `RSDB_ERR_CONFIG` names the file and line at fault.
 */
int rsdb_config_load_file(struct rsdb_config *cfg, const char *path);

/*
 Releases a configuration. NULL is accepted.
 */
void rsdb_config_free(struct rsdb_config *cfg);

/*
 Opens a pool for `cfg`'s `database_url` and checks one round trip. `*out` receives a
 handle to release with `rsdb_db_close`. The configuration is copied; it may be freed after.
 */
int rsdb_db_open(const struct rsdb_config *cfg, struct rsdb_db **out);

/*
 Closes the pool and releases the handle. Transactions still open keep their connection
 until they are freed. NULL is accepted.
 */
void rsdb_db_close(struct rsdb_db *db);

/*
 Applies the embedded schema migrations (serialized across processes by an advisory lock).
 `current_version` (may be NULL) receives the schema version afterwards.
 */
int rsdb_db_migrate(const struct rsdb_db *db, int *current_version);

/*
 Executes one statement. `params_json` (may be NULL, or "" for none) is a JSON array bound
 to `$1, $2, ...`; values are never spliced into the SQL text. `affected` (may be NULL) receives
 the number of rows affected.
 */
int rsdb_db_execute(const struct rsdb_db *db,
                    const char *sql,
                    const char *params_json,
                    uint64_t *affected);

/*
 Runs a query; `params_json` (may be NULL) is bound as in `rsdb_db_execute`. `*rows_json` receives a JSON array of row objects keyed by column name;
 release it with `rsdb_string_free`.
 */
int rsdb_db_query(const struct rsdb_db *db,
                  const char *sql,
                  const char *params_json,
                  char **rows_json);

/*
 Fills `*stats` with the pool counters.
 */
int rsdb_db_pool_stats(const struct rsdb_db *db, struct rsdb_pool_stats *stats);

/*
 Checks the server: `*health_json` receives `{"latency_ms":..,"server_version":..,
 "in_recovery":..,"database":..,"pool":{..}}`; release it with `rsdb_string_free`.
 */
int rsdb_db_health(const struct rsdb_db *db, char **health_json);

/*
 Begins a transaction on a connection of its own (waiting at most the acquire timeout).
 `*out` receives a handle; `rsdb_tx_free` rolls back unless it was committed.
 */
int rsdb_db_begin(const struct rsdb_db *db, struct rsdb_tx **out);

/*
 Executes a statement inside the transaction (see `rsdb_db_execute`); `params_json` and
 `affected` may be NULL.
 */
int rsdb_tx_execute(const struct rsdb_tx *tx,
                    const char *sql,
                    const char *params_json,
                    uint64_t *affected);

/*
 Runs a query inside the transaction (see `rsdb_db_query`); `params_json` may be NULL.
 */
int rsdb_tx_query(const struct rsdb_tx *tx,
                  const char *sql,
                  const char *params_json,
                  char **rows_json);

/*
 Commits. Fails with `RSDB_ERR_STATE` when a statement of the transaction failed (it was
 rolled back) or when it was already finished.
 */
int rsdb_tx_commit(const struct rsdb_tx *tx);

/*
 Rolls back. A no-op on a finished transaction.
 */
int rsdb_tx_rollback(const struct rsdb_tx *tx);

/*
 Releases a transaction, rolling it back if it is still open. NULL is accepted.
 */
void rsdb_tx_free(struct rsdb_tx *tx);

/*
 Creates an event-store handle on `db` (borrowed for the call; the handle keeps the pool
 alive, so `db` may be closed first). `*out` receives a handle to release with
 `rsdb_events_free`.
 */
int rsdb_events_new(const struct rsdb_db *db, struct rsdb_events **out);

/*
 Releases an event-store handle. NULL is accepted.
 */
void rsdb_events_free(struct rsdb_events *h);

/*
 Appends events to an aggregate expected to be at `expected_version` (0 for a new one).
 `events_json` is an array of `{"event_type": "...", "payload": {...}, "metadata": {...},
 "user_id": 1}` (payload, metadata and user_id optional). When the aggregate is at another
 version — a concurrent writer won — nothing is written and `RSDB_ERR_CONFLICT` is returned.
 `new_version` (may be NULL) receives the aggregate's version after the append.
 */
int rsdb_events_append(const struct rsdb_events *events,
                       const char *aggregate_type,
                       const char *aggregate_id,
                       int64_t expected_version,
                       const char *events_json,
                       int64_t *new_version);

/*
 The aggregate's events with a version above `after_version`, in order, as a JSON array.
 */
int rsdb_events_load(const struct rsdb_events *events,
                     const char *aggregate_type,
                     const char *aggregate_id,
                     int64_t after_version,
                     char **events_json);

/*
 The aggregate's current version (0 without events).
 */
int rsdb_events_version(const struct rsdb_events *events,
                        const char *aggregate_type,
                        const char *aggregate_id,
                        int64_t *version);

/*
 A user's events (audit trail), newest first, at most `limit`, as a JSON array.
 */
int rsdb_events_by_user(const struct rsdb_events *events,
                        int64_t user_id,
                        int64_t limit,
                        char **events_json);

/*
 Stores the aggregate's state (`state_json`, any JSON) at `version`.
 */
int rsdb_events_save_snapshot(const struct rsdb_events *events,
                              const char *aggregate_type,
                              const char *aggregate_id,
                              int64_t version,
                              const char *state_json);

/*
 `*json` receives `{"snapshot": {...} or null, "events": [...]}`: the latest snapshot and
 every event after it.
 */
int rsdb_events_load_from_snapshot(const struct rsdb_events *events,
                                   const char *aggregate_type,
                                   const char *aggregate_id,
                                   char **json);

/*
 Opens a manager for `cfg`'s `ha_nodes`, `ha_data_dirs`, `etcd_endpoints`, `ha_cluster`,
 `ha_mode` and `instance_id` (the member name). `options_json` (may be NULL) overrides:
 `{"lease_ttl_ms", "safety_margin_ms", "loop_interval_ms", "failure_threshold",
 "check_timeout_ms", "etcd_timeout_ms", "maximum_lag_on_failover", "mode", "fence",
 "promote_timeout_ms", "switchover_timeout_ms", "auto_failover", "cluster", "member",
 "etcd_endpoints"}`. Nothing runs until `rsdb_failover_start`. `*out` receives a handle to
 release with `rsdb_failover_close`.
 */
int rsdb_failover_open(const struct rsdb_config *cfg,
                       const char *options_json,
                       struct rsdb_failover **out);

/*
 Starts the loop (library threads `rsdb-failover` and `rsdb-failover-lease`).
 `RSDB_ERR_STATE` when it already runs.
 */
int rsdb_failover_start(const struct rsdb_failover *m);

/*
 Stops the loop and releases the leader lease (another instance takes over at once).
 */
int rsdb_failover_stop(const struct rsdb_failover *m);

/*
 Moves `db`'s pool to the primary the manager knows, at once, and to every new primary
 after it (connections to the old one are closed, never reused). The pool handle may be
 closed independently.
 */
int rsdb_failover_attach_db(const struct rsdb_failover *m, const struct rsdb_db *db);

/*
 Publishes a `cluster.failover` event through `sync` on every role change this instance makes.
 */
int rsdb_failover_attach_sync(const struct rsdb_failover *m, const struct rsdb_sync *sync);

/*
 A planned switchover to the node `target` with no data loss; blocks until the target is
 primary and the old primary streams from it. `*out` (may be NULL) receives the change as
 JSON (see `rsdb_failover_role_cb`), to release with `rsdb_string_free`.
 `RSDB_ERR_NO_CANDIDATE` when the target is not a streaming standby, `RSDB_ERR_TIMEOUT` when
 it did not catch up (the old primary then takes writes again), `RSDB_ERR_FENCED` when the
 lease was lost.
 */
int rsdb_failover_switchover(const struct rsdb_failover *m, const char *target, char **out);

/*
 A manual failover to `target` (NULL for the most advanced standby), refused with
 `RSDB_ERR_NO_CANDIDATE` while the primary still answers as a primary or when no standby is
 safe. `*out` (may be NULL) receives the change as for `rsdb_failover_switchover`.
 */
int rsdb_failover_failover(const struct rsdb_failover *m, const char *target, char **out);

/*
 Rejoins the fenced former primary `node` as a standby of the current primary (pg_rewind;
 needs its data directory in `ha_data_dirs`).
 */
int rsdb_failover_rejoin(const struct rsdb_failover *m, const char *node);

/*
 Runs one loop now on the calling thread (useful without `rsdb_failover_start`).
 */
int rsdb_failover_tick(const struct rsdb_failover *m);

/*
 The manager's view as JSON (`cluster`, `member`, `leader`, `is_leader`,
 `lease_remaining_ms`, `primary`, `primary_lsn`, `failed_checks`, `nodes`, `fenced`,
 `failovers`, `last_change`, `last_error`, `alerts`, …); release with `rsdb_string_free`.
 */
int rsdb_failover_status_json(const struct rsdb_failover *m, char **out);

/*
 Calls `callback` on every change of primary (see `rsdb_failover_role_cb` for the thread and
 the document). `user_data` may be NULL; it must stay valid until `rsdb_failover_close`.
 */
int rsdb_failover_on_role_change(const struct rsdb_failover *m,
                                 rsdb_failover_role_cb callback,
                                 void *user_data);

/*
 Stops the manager (as `rsdb_failover_stop`) and releases the handle. NULL is accepted.
 */
void rsdb_failover_close(struct rsdb_failover *m);

/*
 Makes a monitor of `db`'s pool with the options in `options_json` (a JSON object, `"{}"`
 for the defaults; keys in docs/ha-health.md: `interval_ms`, `check_timeout_ms`,
 `repeat_interval_ms`, thresholds such as `latency_warning_ms`, `disk_path`, `nodes`, ...).
 No check runs until `rsdb_health_start` or `rsdb_health_check_now`. `RSDB_ERR_JSON` for text
 that is not a JSON object, `RSDB_ERR_INVALID_ARGUMENT` for an unknown key or thresholds out
 of order. `*out` receives a handle to release with `rsdb_health_close`. The monitor shares
 `db`'s pool and keeps one connection of its own taken from it; `db` may be closed first.
 */
int rsdb_health_open(const struct rsdb_db *db, const char *options_json, struct rsdb_health **out);

/*
 Starts the periodic checks on the thread `rsdb-health` (the first round right away).
 Does nothing when already running.
 */
int rsdb_health_start(const struct rsdb_health *h);

/*
 Stops the periodic checks, waiting up to the `stop_timeout_ms` option for the thread to
 end (`RSDB_ERR_TIMEOUT` when a callback still runs then). From inside a callback it only
 asks the thread to stop. Idempotent.
 */
int rsdb_health_stop(const struct rsdb_health *h);

/*
 Runs one round of checks now on this thread (alerts go to the callbacks on this thread)
 and stores the status, as `rsdb_health_status` gives it, in `*status_json`, to release
 with `rsdb_string_free`. A server that is down is reported in the status, not as an error.
 */
int rsdb_health_check_now(const struct rsdb_health *h, char **status_json);

/*
 The status as JSON: `{"overall","running","rounds","last_round_at","last_round_ms",
 "callback_panics","checks":{"<check>":{"state","value","unit","message","warning",
 "critical","checked_at","since","alerting","alerts","details"}}}`, without running a
 check; release with `rsdb_string_free`.
 */
int rsdb_health_status(const struct rsdb_health *h, char **status_json);

/*
 Calls `callback` for every alert (see `rsdb_health_alert_cb` for the thread and the
 document). `user_data` may be NULL; it must stay valid until `rsdb_health_close`.
 */
int rsdb_health_on_alert(const struct rsdb_health *h,
                         rsdb_health_alert_cb callback,
                         void *user_data);

/*
 Stops the checks and releases the monitor: no callback runs after this returns (unless
 called from inside one). NULL is accepted.
 */
void rsdb_health_close(struct rsdb_health *h);

/*
 A v1-API client (InfluxDB 1.x, or the v1-compatible endpoints of 2.x/3.x) for `url` (e.g.
 `http://127.0.0.1:8086`) and `database`. `options_json` may be NULL or a JSON object with
 any of `precision` (`ns`, `us`, `ms`, `s`; default `ns`), `timeout_ms` (one request;
 default 10000), `retention_policy`, `username`, `password`. Nothing is sent yet. `*out`
 receives a handle to release with `rsdb_metrics_client_free`.
 */
int rsdb_metrics_client_new_v1(const char *url,
                               const char *database,
                               const char *options_json,
                               struct rsdb_metrics_client **out);

/*
 A v2-API client (`/api/v2/write` with `org` and `bucket`). `token` may be NULL (no
 `Authorization` header). `options_json` may be NULL or a JSON object with `precision` and
 `timeout_ms`. `*out` receives a handle to release with `rsdb_metrics_client_free`.
 */
int rsdb_metrics_client_new_v2(const char *url,
                               const char *org,
                               const char *bucket,
                               const char *token,
                               const char *options_json,
                               struct rsdb_metrics_client **out);

/*
 A client from the configuration: `influx_url`, and v2 when `influx_org` and
 `influx_bucket` are set (with `influx_token`), otherwise v1 with `influx_database` (default
 `rootstream`). `RSDB_ERR_CONFIG` when `influx_url` is not set. `*out` receives a handle to
 release with `rsdb_metrics_client_free`.
 */
int rsdb_metrics_client_from_config(const struct rsdb_config *cfg,
                                    struct rsdb_metrics_client **out);

/*
 Releases a client. NULL is accepted. Writers made from it keep their own copy.
 */
void rsdb_metrics_client_free(struct rsdb_metrics_client *c);

/*
 Checks that the server answers (`/ping`, or `/health` on v2).
 */
int rsdb_metrics_client_ping(const struct rsdb_metrics_client *c);

/*
 Writes one point now, in one request (no buffering, no retry). An invalid point (empty or
 control characters in names, NaN or infinite floats, no fields, invalid UTF-8) is
 `RSDB_ERR_INVALID_ARGUMENT`/`RSDB_ERR_INVALID_UTF8` and nothing is sent.
 */
int rsdb_metrics_client_write_point(const struct rsdb_metrics_client *c,
                                    const struct rsdb_metrics_point *point);

/*
 Writes `count` points in one request; when any is invalid nothing is sent. `points` may be
 NULL when `count` is 0.
 */
int rsdb_metrics_client_write_points(const struct rsdb_metrics_client *c,
                                     const struct rsdb_metrics_point *points,
                                     size_t count);

/*
 Sends newline-separated lines of line protocol, already in the client's precision, in one
 request. The server checks them (a bad line is `RSDB_ERR_QUERY`).
 */
int rsdb_metrics_client_write_lines(const struct rsdb_metrics_client *c, const char *lines);

/*
 The line protocol this client writes for `point` (for `rsdb_metrics_writer_write_line`);
 `*out` receives it, to release with `rsdb_string_free`.
 */
int rsdb_metrics_client_encode(const struct rsdb_metrics_client *c,
                               const struct rsdb_metrics_point *point,
                               char **out);

/*
 Runs an InfluxQL query (v1 API) and stores InfluxDB's JSON answer in `*out` (release with
 `rsdb_string_free`). `epoch` may be NULL (RFC 3339 times) or one of `ns`, `u`, `ms`, `s`,
 `m`, `h`. An error the server reports for a statement is `RSDB_ERR_QUERY`.
 */
int rsdb_metrics_client_query(const struct rsdb_metrics_client *c,
                              const char *influxql,
                              const char *epoch,
                              char **out);

/*
 Runs a Flux query (v2 API, `/api/v2/query`) and stores the annotated CSV answer in `*out`
 (release with `rsdb_string_free`).
 */
int rsdb_metrics_client_query_flux(const struct rsdb_metrics_client *c,
                                   const char *flux,
                                   char **out);

/*
 Creates the client's database (v1; exists already is fine).
 */
int rsdb_metrics_client_create_database(const struct rsdb_metrics_client *c);

/*
 Creates the client's bucket (v2) keeping points `retention_seconds` (0: forever).
 */
int rsdb_metrics_client_create_bucket(const struct rsdb_metrics_client *c,
                                      uint64_t retention_seconds);

/*
 Sets up retention on the client's database (v1): a default policy for raw points (1 day),
 one for downsampled points (30 days) and a continuous query filling it (5 m means).
 `options_json` may be NULL (those defaults) or a JSON object with any of `raw_policy`,
 `raw_duration`, `downsampled_policy`, `downsampled_duration`, `interval`,
 `continuous_query`.
 */
int rsdb_metrics_client_setup_retention(const struct rsdb_metrics_client *c,
                                        const char *options_json);

/*
 Starts a background batching writer over a copy of `client`. `options_json` may be NULL or
 a JSON object with any of `batch_size` (5000), `flush_interval_ms` (1000),
 `max_buffer_points` (100000), `max_buffer_bytes` (64 MiB), `retry_initial_ms` (1000),
 `retry_base` (2), `retry_max_interval_ms` (30000), `retry_max_elapsed_ms` (180000),
 `shutdown_timeout_ms` (5000, used by `rsdb_metrics_writer_free`), `log_drops` (true),
 `senders` (4: requests in flight at once; with more than one, batches may arrive out of
 order). `*out` receives a handle to release with `rsdb_metrics_writer_free`.
 */
int rsdb_metrics_writer_new(const struct rsdb_metrics_client *client,
                            const char *options_json,
                            struct rsdb_metrics_writer **out);

/*
 Shuts the writer down (delivering what is buffered within its `shutdown_timeout_ms`, the
 rest counted as dropped) and releases it. The drop callback is not called after this
 returns. NULL is accepted.
 */
void rsdb_metrics_writer_free(struct rsdb_metrics_writer *w);

/*
 Sets the drop callback (see `rsdb_metrics_drop_cb`). `callback` may be NULL, which removes
 it. `user_data` must stay valid until the callback is replaced or the writer is shut down.
 */
int rsdb_metrics_writer_set_drop_callback(const struct rsdb_metrics_writer *w,
                                          rsdb_metrics_drop_cb callback,
                                          void *user_data);

/*
 Buffers one point (never waits on the network). An invalid point is
 `RSDB_ERR_INVALID_ARGUMENT`/`RSDB_ERR_INVALID_UTF8` and nothing of it is buffered;
 `RSDB_ERR_STATE` after shutdown. When the buffer is full the oldest points are dropped
 (counted, reported), not this call's.
 */
int rsdb_metrics_writer_write_point(const struct rsdb_metrics_writer *w,
                                    const struct rsdb_metrics_point *point);

/*
 Buffers `count` points; when any is invalid none is buffered. `points` may be NULL when
 `count` is 0.
 */
int rsdb_metrics_writer_write_points(const struct rsdb_metrics_writer *w,
                                     const struct rsdb_metrics_point *points,
                                     size_t count);

/*
 Buffers one prepared line of line protocol in the client's precision (from
 `rsdb_metrics_client_encode`, or your own), without a newline. Only its shape is checked
 here; the server checks its content (a bad line is dropped as `rejected`).
 */
int rsdb_metrics_writer_write_line(const struct rsdb_metrics_writer *w, const char *line);

/*
 Sends what is buffered and waits until every point accepted before the call is delivered or
 dropped; `RSDB_ERR_TIMEOUT` after `timeout_ms` (the points stay buffered).
 */
int rsdb_metrics_writer_flush(const struct rsdb_metrics_writer *w, uint32_t timeout_ms);

/*
 Stops accepting points, delivers what is buffered until `timeout_ms` passes and drops the
 rest (`shutdown`, counted and reported), then stops the senders. Returns within about
 `timeout_ms` + 100 ms even when a request hangs. Idempotent. `*stats` (may be NULL)
 receives the final statistics. The drop callback is not called after this returns.
 */
int rsdb_metrics_writer_shutdown(const struct rsdb_metrics_writer *w,
                                 uint32_t timeout_ms,
                                 struct rsdb_metrics_writer_stats *stats);

/*
 The writer's statistics now.
 */
int rsdb_metrics_writer_get_stats(const struct rsdb_metrics_writer *w,
                                  struct rsdb_metrics_writer_stats *stats);

/*
 The writer's statistics as JSON (`accepted`, `delivered`, `dropped` by reason,
 `dropped_total`, `batches`, `retries`, `buffered_points`, `buffered_bytes`, `last_error`);
 release with `rsdb_string_free`.
 */
int rsdb_metrics_writer_stats_json(const struct rsdb_metrics_writer *w, char **out);

/*
 A collector set holding the stream collector (fed by `rsdb_metrics_collector_update_stream`);
 add the others with the `rsdb_metrics_collector_add_*` functions. `*out` receives a handle
 to release with `rsdb_metrics_collector_free`.
 */
int rsdb_metrics_collector_new(struct rsdb_metrics_collector **out);

/*
 Stops periodic collection (waiting for a round in progress) and releases the handle. The
 failure callback is not called after this returns. NULL is accepted.
 */
void rsdb_metrics_collector_free(struct rsdb_metrics_collector *c);

/*
 Adds the system collector: cpu, memory, disk (of `disk_path`) and network from `/proc`.
 `disk_path` may be NULL (`/`).
 */
int rsdb_metrics_collector_add_system(const struct rsdb_metrics_collector *c,
                                      const char *disk_path);

/*
 Adds the database collector (connections, query time, size, pool statistics) on `db`.
 */
int rsdb_metrics_collector_add_database(const struct rsdb_metrics_collector *c,
                                        const struct rsdb_db *db);

/*
 Adds the cache collector (hit rate, operations, memory from Redis `INFO`) on `redis`,
 tagging its points `server=<server>`.
 */
int rsdb_metrics_collector_add_cache(const struct rsdb_metrics_collector *c,
                                     const struct rsdb_redis *redis,
                                     const char *server);

/*
 Records the latest state of a stream (one `stream` point per stream and round).
 */
int rsdb_metrics_collector_update_stream(const struct rsdb_metrics_collector *c,
                                         const struct rsdb_stream_metrics *metrics);

/*
 Forgets a stream (it ended); `*removed` (may be NULL) receives 1 when it was known.
 */
int rsdb_metrics_collector_remove_stream(const struct rsdb_metrics_collector *c,
                                         const char *stream_id,
                                         int *removed);

/*
 Sets the failure callback (see `rsdb_metrics_failure_cb`). `callback` may be NULL, which
 removes it. `user_data` must stay valid until it is replaced or the handle is freed.
 */
int rsdb_metrics_collector_set_failure_callback(const struct rsdb_metrics_collector *c,
                                                rsdb_metrics_failure_cb callback,
                                                void *user_data);

/*
 Runs every collector once; one that fails is reported and the others still run. `*out`
 receives JSON `{"points": [{"measurement", "tags", "fields", "time_ns"}], "failures":
 [{"collector", "message"}]}` (integer fields as `{"i": n}`); release with
 `rsdb_string_free`.
 */
int rsdb_metrics_collector_collect_once(const struct rsdb_metrics_collector *c, char **out);

/*
 Collects every `interval_ms` on a background thread into `writer` until
 `rsdb_metrics_collector_stop` or `rsdb_metrics_collector_free` (the writer stays usable
 meanwhile; freeing it first makes the rounds' writes fail quietly). `RSDB_ERR_STATE` when
 already running.
 */
int rsdb_metrics_collector_start(const struct rsdb_metrics_collector *c,
                                 const struct rsdb_metrics_writer *writer,
                                 uint32_t interval_ms);

/*
 Stops periodic collection (waits for a round in progress; not running is fine).
 */
int rsdb_metrics_collector_stop(const struct rsdb_metrics_collector *c);

/*
 Per-collector counters as a JSON array of `{"name", "runs_ok", "runs_failed",
 "last_error"}`; release with `rsdb_string_free`.
 */
int rsdb_metrics_collector_stats(const struct rsdb_metrics_collector *c, char **out);

/*
 A reporter. `client` may be NULL: then only the exports and alerts work (dashboards and
 percentiles need it). `*out` receives a handle to release with `rsdb_metrics_reporter_free`.
 */
int rsdb_metrics_reporter_new(const struct rsdb_metrics_client *client,
                              struct rsdb_metrics_reporter **out);

/*
 Stops the `/metrics` endpoint and releases the reporter. Alert callbacks are not called
 after this returns. NULL is accepted.
 */
void rsdb_metrics_reporter_free(struct rsdb_metrics_reporter *r);

/*
 Chooses what the exports include besides the process-wide counters (sessions, MFA
 failures, backups, cache): a writer's buffer and drops, a database pool, collectors' runs.
 `writer`, `db` and `collector` may be NULL (left out); each call replaces all three. The
 reporter keeps its own references (the handles may be freed before it).
 */
int rsdb_metrics_reporter_attach(const struct rsdb_metrics_reporter *r,
                                 const struct rsdb_metrics_writer *writer,
                                 const struct rsdb_db *db,
                                 const struct rsdb_metrics_collector *collector);

/*
 The Prometheus text exposition (format 0.0.4) of the library's counters and gauges; release
 with `rsdb_string_free`.
 */
int rsdb_metrics_reporter_prometheus(const struct rsdb_metrics_reporter *r, char **out);

/*
 The same snapshot as JSON: `{"<name>": {"type", "help", "samples": [{"labels", "value"}]}}`;
 release with `rsdb_string_free`.
 */
int rsdb_metrics_reporter_json(const struct rsdb_metrics_reporter *r, char **out);

/*
 Serves `GET /metrics` (the Prometheus text) on `addr` (`127.0.0.1:0` picks a free loopback
 port; `0.0.0.0:9464` listens on every interface) until `rsdb_metrics_reporter_serve_stop` or
 `rsdb_metrics_reporter_free`. `*bound_addr` (may be NULL) receives the address it listens
 on, to release with `rsdb_string_free`. `RSDB_ERR_STATE` when already serving.
 */
int rsdb_metrics_reporter_serve(const struct rsdb_metrics_reporter *r,
                                const char *addr,
                                char **bound_addr);

/*
 Stops the `/metrics` endpoint (not running is fine).
 */
int rsdb_metrics_reporter_serve_stop(const struct rsdb_metrics_reporter *r);

/*
 Mean viewers, bitrate, fps and the most bytes of `stream_id` per `interval` (an InfluxQL
 duration such as `1m`) between `start_ns` and `end_ns`, as a JSON array of `{"time_ns",
 "viewers", "bitrate_kbps", "fps", "bytes_sent"}`; release with `rsdb_string_free`.
 */
int rsdb_metrics_reporter_stream_dashboard(const struct rsdb_metrics_reporter *r,
                                           const char *stream_id,
                                           int64_t start_ns,
                                           int64_t end_ns,
                                           const char *interval,
                                           char **out);

/*
 p50/p95/p99 (nearest rank) of `field` of `measurement` between `start_ns` and `end_ns`,
 where the tags of `tags_json` (`{"tag": "value"}`) match, as JSON `{"count", "p50", "p95",
 "p99"}`; release with `rsdb_string_free`. `tags_json` may be NULL. `RSDB_ERR_NOT_FOUND`
 when there are no values.
 */
int rsdb_metrics_reporter_percentiles(const struct rsdb_metrics_reporter *r,
                                      const char *measurement,
                                      const char *field,
                                      const char *tags_json,
                                      int64_t start_ns,
                                      int64_t end_ns,
                                      char **out);

/*
 p50/p95/p99 (nearest rank) of `count` values in memory, as JSON like
 `rsdb_metrics_reporter_percentiles`. NaN is `RSDB_ERR_INVALID_ARGUMENT`; no values is
 `RSDB_ERR_NOT_FOUND`. `values` may be NULL when `count` is 0.
 */
int rsdb_metrics_percentiles_of(const double *values, size_t count, char **out);

/*
 Adds a threshold rule from JSON `{"name", "metric", "comparison": "above"|"below",
 "threshold", "severity": "info"|"warning"|"critical"}`.
 */
int rsdb_metrics_reporter_add_rule(const struct rsdb_metrics_reporter *r, const char *rule_json);

/*
 Adds an alert callback (see `rsdb_metrics_alert_cb`). `user_data` must stay valid until the
 reporter is freed.
 */
int rsdb_metrics_reporter_on_alert(const struct rsdb_metrics_reporter *r,
                                   rsdb_metrics_alert_cb callback,
                                   void *user_data);

/*
 Checks named values (`{"stream.fps": 24, "system.cpu_usage_percent": 93}`) against the
 rules; every alert that fires goes to every callback (on this thread, before this returns).
 `*fired_json` (may be NULL) receives the JSON array of the alerts, to release with
 `rsdb_string_free`.
 */
int rsdb_metrics_reporter_check(const struct rsdb_metrics_reporter *r,
                                const char *metrics_json,
                                char **fired_json);

/*
 Creates a user-model handle on `db` (which it keeps alive). Release with `rsdb_users_free`.
 */
int rsdb_users_new(const struct rsdb_db *db, struct rsdb_users **out);

/*
 Releases a user-model handle. NULL is accepted.
 */
void rsdb_users_free(struct rsdb_users *h);

/*
 Registers a user: the password is hashed with Argon2id (never stored), username and email
 must be unique (`RSDB_ERR_CONFLICT`, message "username already exists" or "email already
 exists"), the email must be valid and the password at least 8 characters
 (`RSDB_ERR_INVALID_ARGUMENT`). `display_name` may be NULL. `*user_json` receives the user.
 */
int rsdb_users_create(const struct rsdb_users *users,
                      const char *username,
                      const char *email,
                      const char *password,
                      const char *display_name,
                      char **user_json);

/*
 Logs in with a username or email and a password. Wrong password, unknown user and inactive
 account all return `RSDB_ERR_AUTH`. On success records the login and fills `*user_json`.
 */
int rsdb_users_authenticate(const struct rsdb_users *users,
                            const char *login,
                            const char *password,
                            char **user_json);

/*
 Checks a user's password: `*matches` is 1 or 0.
 */
int rsdb_users_verify_password(const struct rsdb_users *users,
                               int64_t user_id,
                               const char *password,
                               int *matches);

/*
 Loads a user by id (`RSDB_ERR_NOT_FOUND` when there is none).
 */
int rsdb_users_get(const struct rsdb_users *users, int64_t user_id, char **user_json);

/*
 Loads a user by username, ignoring case.
 */
int rsdb_users_get_by_username(const struct rsdb_users *users,
                               const char *username,
                               char **user_json);

/*
 Loads a user by email, ignoring case.
 */
int rsdb_users_get_by_email(const struct rsdb_users *users, const char *email, char **user_json);

/*
 Updates the profile; `display_name` and `avatar_url` may be NULL (a NULL field stays as it
 is). `*user_json` receives the updated user.
 */
int rsdb_users_update_profile(const struct rsdb_users *users,
                              int64_t user_id,
                              const char *display_name,
                              const char *avatar_url,
                              char **user_json);

/*
 Marks the user's email as verified.
 */
int rsdb_users_mark_verified(const struct rsdb_users *users, int64_t user_id);

/*
 Activates (`active` != 0) or deactivates the account.
 */
int rsdb_users_set_active(const struct rsdb_users *users, int64_t user_id, int active);

/*
 Records a login now.
 */
int rsdb_users_record_login(const struct rsdb_users *users, int64_t user_id);

/*
 Replaces the password (at least 8 characters).
 */
int rsdb_users_change_password(const struct rsdb_users *users,
                               int64_t user_id,
                               const char *new_password);

/*
 Creates a stream-model handle on `db` and `redis` (borrowed for the call; the handle keeps
 the pool and the client alive). `*out` receives a handle to release with
 `rsdb_streams_free`.
 */
int rsdb_streams_new(const struct rsdb_db *db,
                     const struct rsdb_redis *redis,
                     struct rsdb_streams **out);

/*
 Releases a stream-model handle. NULL is accepted.
 */
void rsdb_streams_free(struct rsdb_streams *h);

/*
 Creates a stream for a user with a fresh 256-bit stream key; `description` may be NULL.
 `*stream_json` receives the stream, including `stream_key`.
 */
int rsdb_streams_create(const struct rsdb_streams *streams,
                        int64_t user_id,
                        const char *name,
                        const char *description,
                        char **stream_json);

/*
 Loads a stream by id.
 */
int rsdb_streams_get(const struct rsdb_streams *streams, int64_t stream_id, char **stream_json);

/*
 Loads a stream by its stream key.
 */
int rsdb_streams_get_by_key(const struct rsdb_streams *streams,
                            const char *stream_key,
                            char **stream_json);

/*
 Replaces the stream key; `*stream_json` receives the stream with the new key.
 */
int rsdb_streams_regenerate_key(const struct rsdb_streams *streams,
                                int64_t stream_id,
                                char **stream_json);

/*
 Goes live (database row, session, event log, Redis live cache, `stream.started` on
 pub/sub). `RSDB_ERR_STATE` when already live. `*session_json` receives the new session.
 */
int rsdb_streams_start(const struct rsdb_streams *streams, int64_t stream_id, char **session_json);

/*
 Goes offline; `*session_json` receives the ended session with its duration and viewer
 statistics. `RSDB_ERR_STATE` when not live.
 */
int rsdb_streams_stop(const struct rsdb_streams *streams, int64_t stream_id, char **session_json);

/*
 A viewer joined a live stream; `viewers` (may be NULL) receives the current count.
 */
int rsdb_streams_viewer_joined(const struct rsdb_streams *streams,
                               int64_t stream_id,
                               int64_t *viewers);

/*
 A viewer left; `viewers` (may be NULL) receives the current count (never below zero).
 */
int rsdb_streams_viewer_left(const struct rsdb_streams *streams,
                             int64_t stream_id,
                             int64_t *viewers);

/*
 The current viewer count from Redis.
 */
int rsdb_streams_viewer_count(const struct rsdb_streams *streams,
                              int64_t stream_id,
                              int64_t *viewers);

/*
 Records encoder statistics. A negative `bitrate_kbps` or `fps` leaves that value as it is;
 `resolution` and `codec` may be NULL, which leaves them as they are.
 */
int rsdb_streams_update_stats(const struct rsdb_streams *streams,
                              int64_t stream_id,
                              int32_t bitrate_kbps,
                              int32_t fps,
                              const char *resolution,
                              const char *codec);

/*
 The live streams, as a JSON array.
 */
int rsdb_streams_list_live(const struct rsdb_streams *streams, char **streams_json);

/*
 Creates a stream-session handle on `db` (borrowed for the call; the handle keeps the pool
 alive). `*out` receives a handle to release with `rsdb_stream_sessions_free`.
 */
int rsdb_stream_sessions_new(const struct rsdb_db *db, struct rsdb_stream_sessions **out);

/*
 Releases a stream-session handle. NULL is accepted.
 */
void rsdb_stream_sessions_free(struct rsdb_stream_sessions *h);

/*
 Opens a session for a stream.
 */
int rsdb_stream_sessions_create(const struct rsdb_stream_sessions *sessions,
                                int64_t stream_id,
                                char **session_json);

/*
 Loads a session.
 */
int rsdb_stream_sessions_get(const struct rsdb_stream_sessions *sessions,
                             int64_t session_id,
                             char **session_json);

/*
 Counts one viewer joining while `current_viewers` are watching (updates total and peak).
 */
int rsdb_stream_sessions_record_viewer(const struct rsdb_stream_sessions *sessions,
                                       int64_t session_id,
                                       int32_t current_viewers);

/*
 Adds transferred bytes.
 */
int rsdb_stream_sessions_add_bytes(const struct rsdb_stream_sessions *sessions,
                                   int64_t session_id,
                                   int64_t bytes);

/*
 Ends a session and computes its duration; `RSDB_ERR_STATE` when already ended.
 */
int rsdb_stream_sessions_end(const struct rsdb_stream_sessions *sessions,
                             int64_t session_id,
                             char **session_json);

/*
 A stream's sessions, newest first, as a JSON array.
 */
int rsdb_stream_sessions_list(const struct rsdb_stream_sessions *sessions,
                              int64_t stream_id,
                              char **sessions_json);

/*
 Announces start, stop and viewer changes through `sync` from now on (events
 `stream.started`, `stream.stopped`, `viewer.joined`, `viewer.left`, and the shared `stream`
 entity's `live`, `session_id` and `viewers`). `sync` may be NULL, which stops it; the handle
 keeps the manager alive until then.
 */
int rsdb_streams_set_sync(const struct rsdb_streams *h, const struct rsdb_sync *sync);

/*
 Announces profile, verification and activation changes through `sync` from now on (event
 `user.updated` and the shared `user` entity). `sync` may be NULL, which stops it.
 */
int rsdb_users_set_sync(const struct rsdb_users *h, const struct rsdb_sync *sync);

/*
 Creates a client for `cfg`'s `redis_url` (or, with `redis_sentinels` and `redis_master_name`
 set, for the master the sentinels name, followed across failovers; a command in flight
 during a switch may fail with `RSDB_ERR_FAILOVER`, retryable) and checks that the server answers. `*out`
 receives a handle to release with `rsdb_redis_close`.
 */
int rsdb_redis_open(const struct rsdb_config *cfg,
                    struct rsdb_redis **out);

/*
 Closes the client: its subscriptions end and no callback runs after this returns.
 NULL is accepted.
 */
void rsdb_redis_close(struct rsdb_redis *r);

/*
 PING; `latency_ms` (may be NULL) receives the round trip in milliseconds.
 */
int rsdb_redis_ping(const struct rsdb_redis *r, double *latency_ms);

/*
 SET `key` to `value`; with `ttl_ms` > 0 the key expires after that many milliseconds.
 */
int rsdb_redis_set(const struct rsdb_redis *r, const char *key, const char *value, uint64_t ttl_ms);

/*
 GET: `*value` receives the value, or NULL when the key does not exist.
 */
int rsdb_redis_get(const struct rsdb_redis *r, const char *key, char **value);

/*
 DEL; `existed` (may be NULL) receives 1 when the key existed.
 */
int rsdb_redis_del(const struct rsdb_redis *r, const char *key, int *existed);

/*
 Sets a key's expiry; `applied` (may be NULL) receives 1 when the key exists.
 */
int rsdb_redis_expire(const struct rsdb_redis *r, const char *key, uint64_t ttl_ms, int *applied);

/*
 PTTL: `*ttl_ms` receives the remaining lifetime in milliseconds, -1 for a key without
 expiry and -2 for a missing key (as Redis reports them).
 */
int rsdb_redis_ttl(const struct rsdb_redis *r, const char *key, int64_t *ttl_ms);

/*
 INCRBY; `value` (may be NULL) receives the new value.
 */
int rsdb_redis_incr(const struct rsdb_redis *r, const char *key, int64_t by, int64_t *value);

/*
 HSET of one field.
 */
int rsdb_redis_hset(const struct rsdb_redis *r,
                    const char *key,
                    const char *field,
                    const char *value);

/*
 HGET: `*value` receives the value, or NULL when the key or field does not exist.
 */
int rsdb_redis_hget(const struct rsdb_redis *r, const char *key, const char *field, char **value);

/*
 HGETALL: `*json` receives a JSON object of field → value (`{}` for a missing key).
 */
int rsdb_redis_hgetall(const struct rsdb_redis *r, const char *key, char **json);

/*
 HDEL of one field; `existed` (may be NULL) receives 1 when it existed.
 */
int rsdb_redis_hdel(const struct rsdb_redis *r, const char *key, const char *field, int *existed);

/*
 LPUSH (`left` != 0) or RPUSH; `length` (may be NULL) receives the new list length.
 */
int rsdb_redis_push(const struct rsdb_redis *r,
                    const char *key,
                    const char *value,
                    int left,
                    int64_t *length);

/*
 LPOP (`left` != 0) or RPOP: `*value` receives the element, or NULL for an empty list.
 */
int rsdb_redis_pop(const struct rsdb_redis *r, const char *key, int left, char **value);

/*
 LRANGE with inclusive indices (negative counts from the end): `*json` receives a JSON array.
 */
int rsdb_redis_lrange(const struct rsdb_redis *r,
                      const char *key,
                      int64_t start,
                      int64_t stop,
                      char **json);

/*
 PUBLISH; `receivers` (may be NULL) receives how many subscribers got the message.
 */
int rsdb_redis_publish(const struct rsdb_redis *r,
                       const char *channel,
                       const char *message,
                       int64_t *receivers);

/*
 Subscribes `callback` to channels matching the glob `pattern` (e.g. `stream.*`). Returns
 once Redis confirmed it; the subscription is renewed after reconnects. `user_data` is
 passed back to every call. `*subscription_id` receives the id for `rsdb_redis_unsubscribe`.
 */
int rsdb_redis_subscribe(const struct rsdb_redis *r,
                         const char *pattern,
                         rsdb_message_cb callback,
                         void *user_data,
                         uint64_t *subscription_id);

/*
 Ends a subscription. When called outside the callback, the callback is not running when
 this returns and will not run again, so `user_data` may be released.
 */
int rsdb_redis_unsubscribe(const struct rsdb_redis *r, uint64_t subscription_id);

/*
 Runs commands atomically (MULTI/EXEC). `commands_json` is a JSON array of commands, each
 an array of arguments (`[["SET","k","v"],["INCR","n"]]`); `*replies_json` receives an
 array with each command's reply.
 */
int rsdb_redis_exec_atomic(const struct rsdb_redis *r,
                           const char *commands_json,
                           char **replies_json);

/*
 Runs one command given as a JSON array of arguments (`["ZADD","board","1","alice"]`);
 `*reply_json` receives its reply as JSON.
 */
int rsdb_redis_command(const struct rsdb_redis *r, const char *args_json, char **reply_json);

/*
 Opens a manager. `cfg` supplies the PostgreSQL tools' directory (`pg_bin_dir`) and the read
 pools' time limits. `nodes` is `name=url,...` (one host per URL) and `data_dirs` is
 `name=/dir,...` for the nodes on this machine. `nodes` and `data_dirs` may be NULL: with
 `nodes` NULL both come from `ROOTSTREAM_HA_PG_NODES` and `ROOTSTREAM_HA_PG_DATA`.
 `options_json` may be NULL (defaults) or
 an object with any of `probe_timeout_ms`, `max_lag_bytes`, `max_lag_seconds`,
 `read_pool_size`, `routing` (`"round_robin"`|`"least_lag"`), `fallback_to_primary`,
 `refresh_interval_ms`, `synchronous` (true|false|null), `stream_wait_s`. Nothing is
 contacted yet. `*out` receives a handle to release with `rsdb_replication_close`.
 */
int rsdb_replication_open(const struct rsdb_config *cfg,
                          const char *nodes,
                          const char *data_dirs,
                          const char *options_json,
                          struct rsdb_replication **out);

/*
 Closes the manager and its read pools. NULL is accepted.
 */
void rsdb_replication_close(struct rsdb_replication *r);

/*
 Probes every node and the primary's standbys and slots; `*out` receives the status as JSON
 (`primary`, `primaries`, `split_brain`, `synchronous_standby_names`, `nodes`, `replicas`
 with `state`, `sync_state`, `lag_bytes`, `lag_seconds`, `readable`, `slots`, ...), to
 release with `rsdb_string_free`. Unreachable nodes are reported in the document, not as a
 failure.
 */
int rsdb_replication_status_json(const struct rsdb_replication *r, char **out);

/*
 Writes one `replication_status` row per standby through `db` (migrated to version 5 or
 later); `*rows_out` (may be NULL) receives the number of rows written.
 */
int rsdb_replication_record_status(const struct rsdb_replication *r,
                                   const struct rsdb_db *db,
                                   uint64_t *rows_out);

/*
 Runs a read-only query (`params_json` may be NULL, else a JSON array) on a standby within the lag
 limits, else on the primary (unless `fallback_to_primary` is false: then
 `RSDB_ERR_CONNECTION`). `*out` receives `{"node": NAME, "primary": BOOL, "rows": [...]}`, to
 release with `rsdb_string_free`. A write is refused (`RSDB_ERR_QUERY`) on every node.
 */
int rsdb_replication_query_read_json(const struct rsdb_replication *r,
                                     const char *sql,
                                     const char *params_json,
                                     char **out);

/*
 Sets up a new standby `name` on this machine: slot, `pg_basebackup` into `data_dir` (absent
 or empty), `port`, start, wait until it streams, synchronous list. `url` is how to reach it
 (`postgres://user@127.0.0.1:PORT/db`). `RSDB_ERR_STATE` when `url` answers as a primary,
 `RSDB_ERR_CONFLICT` for a name in use or a server already there, `RSDB_ERR_INVALID_ARGUMENT`
 for a non-empty directory. `*report_out` (may be NULL) receives a JSON report.
 */
int rsdb_replication_add_replica(const struct rsdb_replication *r,
                                 const char *name,
                                 const char *url,
                                 const char *data_dir,
                                 int port,
                                 char **report_out);

/*
 Removes the standby `name`: out of the synchronous list (the last one leaves the primary
 asynchronous), stopped when local, its slot dropped. `*report_out` (may be NULL) receives a
 JSON report (`stopped`, `slot_dropped`, `synchronous_standby_names`, `warning`).
 */
int rsdb_replication_remove_replica(const struct rsdb_replication *r,
                                    const char *name,
                                    char **report_out);

/*
 Promotes the standby `name` and waits until it accepts writes; `RSDB_ERR_STATE` when it is
 already a primary, `RSDB_ERR_CONNECTION` when it does not answer.
 */
int rsdb_replication_promote(const struct rsdb_replication *r, const char *name);

/*
 Makes the former primary `name` (its data directory on this machine) a standby of
 `new_primary` (may be NULL: then the node that answers as primary) with `pg_rewind`. `RSDB_ERR_CONFIG`
 when the cluster has neither data checksums nor `wal_log_hints` (nothing is changed then).
 `*report_out` (may be NULL) receives a JSON report (`rewound`, `rewind_output`, timings).
 */
int rsdb_replication_rejoin(const struct rsdb_replication *r,
                            const char *name,
                            const char *new_primary,
                            char **report_out);

/*
 Opens a manager from `cfg`'s `redis_sentinels`, `redis_master_name`,
 `redis_sentinel_password`, `redis_master_password` and `redis_timeout_ms`: it resolves the
 master once (`RSDB_ERR_CONNECTION` when no sentinel answers, within about `redis_timeout_ms`
 per sentinel; `RSDB_ERR_NOT_FOUND` for an unknown master name; `RSDB_ERR_AUTH` for a wrong
 password) and subscribes to every sentinel's events. `*out` receives a handle to release with
 `rsdb_sentinel_close`.
 */
int rsdb_sentinel_open(const struct rsdb_config *cfg, struct rsdb_sentinel **out);

/*
 Closes the manager: its subscriptions end and no callback runs after this returns (unless
 called from inside the callback). NULL is accepted.
 */
void rsdb_sentinel_close(struct rsdb_sentinel *s);

/*
 Asks the sentinels for the master now (confirmed with `ROLE`); `*out` receives `host:port`,
 to release with `rsdb_string_free`.
 */
int rsdb_sentinel_master_addr(const struct rsdb_sentinel *s, char **out);

/*
 The replicas of the master as a JSON array of `{"host","port","flags","link_status"}`;
 release with `rsdb_string_free`.
 */
int rsdb_sentinel_replicas(const struct rsdb_sentinel *s, char **out);

/*
 Every configured sentinel and whether it answers, as a JSON array of `{"address",
 "answers","master","subscribed","error"}` (the last three only when known); release with
 `rsdb_string_free`.
 */
int rsdb_sentinel_sentinels(const struct rsdb_sentinel *s, char **out);

/*
 Calls `callback` after every failover of the master (see `rsdb_sentinel_failover_cb` for
 the thread and the document). `user_data` may be NULL; it must stay valid until
 `rsdb_sentinel_close`.
 */
int rsdb_sentinel_on_failover(const struct rsdb_sentinel *s,
                              rsdb_sentinel_failover_cb callback,
                              void *user_data);

/*
 Starts a manager on `redis`: it subscribes to the namespace's bus, reads what the log
 holds and starts sending and checking in the background. `db` may be NULL; with it,
 conflicts are stored in `sync_conflicts` and a trimmed log is repaired from the latest
 snapshot (the database must be migrated). `options_json` may be NULL or a JSON object with
 any of `instance` (default: the configuration's `instance_id`), `namespace` (default
 `rootstream`), `log_max_len`, `max_outbox`, `max_skew_ms`, `check_interval_ms`,
 `clock_offset_ms`. `*out` receives a handle to release with `rsdb_sync_close`.
 */
int rsdb_sync_open(const struct rsdb_config *cfg,
                   const struct rsdb_redis *redis,
                   const struct rsdb_db *db,
                   const char *options_json,
                   struct rsdb_sync **out);

/*
 Closes the manager: no callback runs after this returns, and messages still queued for
 Redis are dropped (call `rsdb_sync_flush` first to keep them). NULL is accepted.
 */
void rsdb_sync_close(struct rsdb_sync *s);

/*
 The origin id this instance stamps on its messages; `*out` receives a string to release
 with `rsdb_string_free`.
 */
int rsdb_sync_origin(const struct rsdb_sync *s, char **out);

/*
 Declares an entity type and its conflict strategy: `lww` (per-field last writer wins on
 hybrid logical clocks) or `version_vectors` (concurrent changes go to the merge function,
 or are recorded as conflicts). `stream`, `user` and `session` are declared `lww`.
 */
int rsdb_sync_register_type(const struct rsdb_sync *s,
                            const char *entity_type,
                            const char *strategy);

/*
 Sets the merge function of a `version_vectors` type. `merge` may be NULL, which removes it.
 `user_data` must stay valid until the function is replaced or the manager is closed.
 */
int rsdb_sync_set_merge(const struct rsdb_sync *s,
                        const char *entity_type,
                        rsdb_sync_merge_cb merge,
                        void *user_data);

/*
 Publishes an event to every instance (this one included): `event_type` is one of the types
 the models use — `stream.started`, `stream.stopped`, `viewer.joined`, `viewer.left`,
 `user.updated`, `session.created`, `session.revoked` — or a name of yours (types ending in
 `.delta` are reserved for state changes); `payload_json` any JSON value
 up to 64 KiB (its `id` field, if any, names the entity). Returns once it is queued for
 Redis; `*seq` (may be NULL) receives its sequence number.
 */
int rsdb_sync_publish(const struct rsdb_sync *s,
                      const char *event_type,
                      const char *payload_json,
                      uint64_t *seq);

/*
 Applies a change to an entity here and sends it to every other instance. `delta_json` is
 a JSON object of changed fields, null deleting a field, up to 64 KiB. `*outcome_json` (may
 be NULL) receives what it did here, e.g. `{"outcome":"applied","fields":["title"]}`, to
 release with `rsdb_string_free`. Nothing is applied when an error is returned.
 */
int rsdb_sync_apply_delta(const struct rsdb_sync *s,
                          const char *entity_type,
                          const char *id,
                          const char *delta_json,
                          char **outcome_json);

/*
 The entity's state here as a JSON object; `*out` receives it (release with
 `rsdb_string_free`), or NULL when no change to the entity has been seen.
 */
int rsdb_sync_get_snapshot(const struct rsdb_sync *s,
                           const char *entity_type,
                           const char *id,
                           char **out);

/*
 Waits until every message queued so far is in the log; `RSDB_ERR_TIMEOUT` after
 `timeout_ms` (the messages stay queued and go out when Redis answers).
 */
int rsdb_sync_flush(const struct rsdb_sync *s, uint32_t timeout_ms);

/*
 Subscribes `callback` to events whose type matches the glob `pattern` (`stream.*`,
 `*.delta`). `*subscription_id` receives the id for `rsdb_sync_unsubscribe`. `user_data`
 must stay valid until then.
 */
int rsdb_sync_subscribe(const struct rsdb_sync *s,
                        const char *pattern,
                        rsdb_sync_event_cb callback,
                        void *user_data,
                        uint64_t *subscription_id);

/*
 Ends a subscription; once this returns its callback is not called again (unless called
 from inside that callback, where the running call finishes). `RSDB_ERR_NOT_FOUND` for an
 unknown id.
 */
int rsdb_sync_unsubscribe(const struct rsdb_sync *s, uint64_t subscription_id);

/*
 Calls `callback` with each conflict no merge function resolved, as JSON
 (`entity_type`, `id`, `kept`, `kept_hlc`, `kept_vv`, `lost`, `reason`).
 */
int rsdb_sync_on_conflict(const struct rsdb_sync *s, rsdb_sync_report_cb callback, void *user_data);

/*
 Calls `callback` whenever part of the history was missing from the log, as JSON
 (`origin`, `expected_seq`, `found_seq`, `reason`, `snapshot_version`).
 */
int rsdb_sync_on_resync(const struct rsdb_sync *s, rsdb_sync_report_cb callback, void *user_data);

/*
 Counters and positions as JSON (`origin`, `namespace`, `subscriptions`, `sent`, `outbox`,
 `received`, `duplicates`, `catch_ups`, `caught_up_messages`, `resyncs`, `conflicts`,
 `rejected`, `conflict_write_failures`, `last_log_id`, `lag`) plus the recent conflicts and
 resyncs (`recent_conflicts`, `recent_resyncs`); release with `rsdb_string_free`.
 */
int rsdb_sync_status(const struct rsdb_sync *s, char **out);

/*
 Reads the log now instead of waiting for the background check.
 */
int rsdb_sync_catch_up(const struct rsdb_sync *s);

/*
 Snapshots of `sync`'s state stored through `db` (migrated); from now on `sync` also
 repairs a trimmed log from them. `*out` receives a handle to release with
 `rsdb_snapshots_free`.
 */
int rsdb_snapshots_new(const struct rsdb_db *db,
                       const struct rsdb_sync *sync,
                       struct rsdb_snapshots **out);

/*
 Stops the periodic snapshots and releases the handle. NULL is accepted.
 */
void rsdb_snapshots_free(struct rsdb_snapshots *s);

/*
 Stores the current state as the next version; `*info_json` (may be NULL) receives the
 snapshot's description (`version`, `log_id`, `entity_count`, `raw_bytes`, `stored_bytes`,
 `taken_by`, `created_at`).
 */
int rsdb_snapshots_take(const struct rsdb_snapshots *s, char **info_json);

/*
 Every snapshot of the namespace, newest first, as a JSON array of descriptions.
 */
int rsdb_snapshots_list(const struct rsdb_snapshots *s, char **out);

/*
 Deletes all but the newest `keep` snapshots (at least one stays); `*deleted` (may be
 NULL) receives how many went.
 */
int rsdb_snapshots_cleanup(const struct rsdb_snapshots *s, uint32_t keep, uint64_t *deleted);

/*
 The state rebuilt from the latest snapshot and the later log, as JSON
 `{"<type>": {"<id>": {…}}}`; release with `rsdb_string_free`.
 */
int rsdb_snapshots_reconstruct(const struct rsdb_snapshots *s, char **out);

/*
 Takes a snapshot every `interval_ms` and keeps the newest `keep`, until
 `rsdb_snapshots_stop_periodic` or `rsdb_snapshots_free`.
 */
int rsdb_snapshots_start_periodic(const struct rsdb_snapshots *s,
                                  uint32_t interval_ms,
                                  uint32_t keep);

/*
 Stops the periodic snapshots (none running is fine).
 */
int rsdb_snapshots_stop_periodic(const struct rsdb_snapshots *s);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* ROOTSTREAM_DB_H */
