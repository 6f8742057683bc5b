//! DatabaseManager against a real PostgreSQL: pool limits, parameters, transactions, failures.

mod support;

use rootstream_db::db::migrations;
use rootstream_db::{Config, DatabaseManager, Error};
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

async fn pool(size: &str, acquire_ms: &str) -> DatabaseManager {
    let mut cfg = fresh_config().await;
    cfg.set("pool_size", size).unwrap();
    cfg.set("acquire_timeout_ms", acquire_ms).unwrap();
    DatabaseManager::connect(&cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_five_gives_out_five_and_the_sixth_waits_only_until_the_timeout() {
    let db = pool("5", "400").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(db.acquire().await.expect("one of the five connections"));
    }
    assert_eq!(db.stats().in_use, 5);
    assert_eq!(db.stats().max_size, 5);

    let started = Instant::now();
    let sixth = db.acquire().await;
    let waited = started.elapsed();
    match sixth {
        Err(Error::Timeout(msg)) => assert!(msg.contains("pool exhausted"), "{msg}"),
        other => panic!("expected a pool timeout, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(350), "gave up too early: {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited too long: {waited:?}");

    held.pop();
    let again = db.acquire().await.expect("a released connection is available again");
    drop(again);
    drop(held);
    assert_eq!(db.stats().in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_queries_bind_parameters_instead_of_splicing_them() {
    let db = pool("4", "2000").await;
    db.batch_execute("CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL, n INT)").await.unwrap();
    let body = "it's a \"quoted\" body; DROP TABLE notes; --";
    let n = db.execute("INSERT INTO notes (body, n) VALUES ($1, $2)", &[&body, &7i32]).await.unwrap();
    assert_eq!(n, 1);
    let rows = db.query("SELECT body, n FROM notes WHERE n = $1", &[&7i32]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), body);
    assert!(db.query_opt("SELECT 1 FROM notes WHERE n = $1", &[&8i32]).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_parameters_and_rows_round_trip_every_supported_type() {
    let db = pool("2", "2000").await;
    db.batch_execute(
        "CREATE TABLE t (i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL, f8 DOUBLE PRECISION, b BOOL, s TEXT, v VARCHAR(10),
                         j JSONB, ts TIMESTAMPTZ, d DATE, u UUID, by BYTEA, num NUMERIC(20,4), arr TEXT[], nothing TEXT)",
    )
    .await
    .unwrap();
    let params = json!([
        1, 70000, 9_000_000_000i64, 1.5, 2.25, true, "héllo ✓", "short",
        {"k": [1, 2, {"x": null}]}, "2024-02-29T12:34:56.123456Z", "2024-02-29",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "\\x00ff10", "-12345.6789", ["a", "b", null], null
    ]);
    let n = db
        .execute_json(
            "INSERT INTO t VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
            Some(&params.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let rows = db.query_json("SELECT * FROM t", None).await.unwrap();
    let r = &rows[0];
    assert_eq!(r["i2"], json!(1));
    assert_eq!(r["i4"], json!(70000));
    assert_eq!(r["i8"], json!(9_000_000_000i64));
    assert_eq!(r["f4"], json!(1.5));
    assert_eq!(r["f8"], json!(2.25));
    assert_eq!(r["b"], json!(true));
    assert_eq!(r["s"], json!("héllo ✓"));
    assert_eq!(r["v"], json!("short"));
    assert_eq!(r["j"], json!({"k": [1, 2, {"x": null}]}));
    assert_eq!(r["ts"], json!("2024-02-29T12:34:56.123456Z"));
    assert_eq!(r["d"], json!("2024-02-29"));
    assert_eq!(r["u"], json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(r["by"], json!("\\x00ff10"));
    assert_eq!(r["num"], json!("-12345.6789"));
    assert_eq!(r["arr"], json!(["a", "b", null]));
    assert_eq!(r["nothing"], json!(null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_of_the_wrong_shape_is_a_clear_error() {
    let db = pool("2", "2000").await;
    let err = db.execute_json("SELECT $1::int", Some(r#"[{"not":"an int"}]"#)).await.unwrap_err();
    assert!(matches!(err, Error::Query(ref m) if m.contains("int")), "{err}");
    let err = db.execute_json("SELECT $1::int", Some(r#"{"a":1}"#)).await.unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err}");
    let err = db.execute_json("SELEC 1", None).await.unwrap_err();
    assert!(matches!(err, Error::Query(ref m) if m.contains("42601")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_work_is_visible_and_dropped_transactions_roll_back() {
    let db = pool("3", "2000").await;
    db.batch_execute("CREATE TABLE k (v TEXT)").await.unwrap();

    let mut tx = db.begin().await.unwrap();
    tx.execute_json("INSERT INTO k VALUES ($1)", Some(r#"["kept"]"#)).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(tx.commit().await, Err(Error::State(_))), "a second commit is refused");

    {
        let tx = db.begin().await.unwrap();
        tx.execute_json("INSERT INTO k VALUES ($1)", Some(r#"["dropped"]"#)).await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    tx.execute_json("INSERT INTO k VALUES ($1)", Some(r#"["rolled back"]"#)).await.unwrap();
    tx.rollback().await.unwrap();

    // The dropped transaction's rollback runs in the background; wait for its connection.
    for _ in 0..50 {
        if db.stats().in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = db.query_json("SELECT v FROM k ORDER BY v", None).await.unwrap();
    assert_eq!(rows, json!([{"v": "kept"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_makes_commit_fail_and_keeps_nothing() {
    let db = pool("2", "2000").await;
    db.batch_execute("CREATE TABLE u (id INT PRIMARY KEY)").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    tx.execute_json("INSERT INTO u VALUES ($1)", Some("[1]")).await.unwrap();
    assert!(matches!(tx.execute_json("INSERT INTO u VALUES ($1)", Some("[1]")).await, Err(Error::Conflict(_))));
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, Error::State(ref m) if m.contains("rolled back")), "{err}");
    assert_eq!(db.query_json("SELECT count(*)::int AS n FROM u", None).await.unwrap(), json!([{"n": 0}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_transaction_commits_on_ok_and_rolls_back_on_error() {
    let db = pool("2", "2000").await;
    db.batch_execute("CREATE TABLE w (v INT)").await.unwrap();
    db.with_transaction(|tx| {
        Box::pin(async move { tx.execute_json("INSERT INTO w VALUES (1)", None).await.map(|_| ()) })
    })
    .await
    .unwrap();
    let r: Result<(), Error> = db
        .with_transaction(|tx| {
            Box::pin(async move {
                tx.execute_json("INSERT INTO w VALUES (2)", None).await?;
                Err(Error::invalid("business rule failed"))
            })
        })
        .await;
    assert!(r.is_err());
    assert_eq!(db.query_json("SELECT v FROM w", None).await.unwrap(), json!([{"v": 1}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_stored_verbatim() {
    let mut cfg = fresh_config().await;
    cfg.set("pool_size", "2").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    migrations::migrate(&db).await.unwrap();
    let hostile = [
        "'; DROP TABLE users; --",
        "Robert'); DROP TABLE students;--",
        "$1 $2 \\x00 \\' \" `",
        "' OR '1'='1",
        "😀 ü 中文 \u{202e}rtl",
        "a\\b\\\\c",
    ];
    for (i, s) in hostile.iter().enumerate() {
        let email = format!("u{i}@example.com");
        db.execute_json(
            "INSERT INTO users (username, email, password_hash, display_name) VALUES ($1, $2, 'x', $3)",
            Some(&json!([format!("user{i}"), email, s]).to_string()),
        )
        .await
        .unwrap();
        let rows = db
            .query_json("SELECT display_name FROM users WHERE email = $1", Some(&json!([email]).to_string()))
            .await
            .unwrap();
        assert_eq!(rows[0]["display_name"], json!(s));
    }
    let rows = db.query_json("SELECT count(*)::int AS n FROM users", None).await.unwrap();
    assert_eq!(rows, json!([{"n": hostile.len()}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_reports_a_primary_and_its_version() {
    let db = pool("2", "2000").await;
    let h = db.health_check().await.unwrap();
    assert!(h.server_version.starts_with("15"), "{}", h.server_version);
    assert!(!h.in_recovery);
    assert!(h.latency_ms > 0.0);
    assert_eq!(h.pool.max_size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_fast_with_a_connection_error() {
    let mut cfg = Config::default();
    cfg.set("database_url", &format!("postgresql://postgres@127.0.0.1:{}/x", closed_port())).unwrap();
    cfg.set("connect_timeout_ms", "1000").unwrap();
    let started = Instant::now();
    let err = DatabaseManager::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_) | Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_statement_is_cut_off_by_the_query_timeout_and_cancelled() {
    let mut cfg = fresh_config().await;
    cfg.set("pool_size", "1").unwrap();
    cfg.set("query_timeout_ms", "300").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    let started = Instant::now();
    let err = db.execute("SELECT pg_sleep(10)", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The only connection was cancelled, not left busy for ten seconds.
    let started = Instant::now();
    db.execute("SELECT 1", &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_finds_the_read_write_server() {
    let name = create_database().await;
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write",
        closed_port(),
        stack().pg_port(),
        name
    );
    let mut cfg = Config::default();
    cfg.set("database_url", &url).unwrap();
    cfg.set("connect_timeout_ms", "1000").unwrap();
    let db = DatabaseManager::connect(&cfg).await.unwrap();
    assert!(!db.health_check().await.unwrap().in_recovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_statement_survives_the_table_changing_under_it() {
    let db = pool("1", "2000").await;
    db.batch_execute("CREATE TABLE evolving (a INT); INSERT INTO evolving VALUES (1)").await.unwrap();
    assert_eq!(db.query_json("SELECT * FROM evolving", None).await.unwrap(), json!([{"a": 1}]));
    db.batch_execute("ALTER TABLE evolving ADD COLUMN b TEXT DEFAULT 'x'").await.unwrap();
    // Same SQL text, same pooled connection: the stale cached plan is replaced transparently.
    assert_eq!(db.query_json("SELECT * FROM evolving", None).await.unwrap(), json!([{"a": 1, "b": "x"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_stats_follow_the_configuration_and_use_and_an_exhausted_begin_times_out() {
    let db = pool("3", "400").await;
    db.query_json("SELECT 1", None).await.unwrap();
    let idle = db.stats();
    assert_eq!((idle.max_size, idle.in_use, idle.waiting), (3, 0, 0));
    assert!(idle.size >= 1, "{idle:?}");
    assert_eq!(idle.available, idle.size, "idle connections are all available");
    let mut held = vec![db.begin().await.unwrap()];
    let busy = db.stats();
    assert_eq!(busy.in_use, 1);
    assert_eq!(busy.size, busy.available + busy.in_use, "{busy:?}");
    held.push(db.begin().await.unwrap());
    held.push(db.begin().await.unwrap());
    match db.begin().await {
        Err(Error::Timeout(msg)) => assert!(msg.contains("pool"), "{msg}"),
        other => panic!("expected a pool timeout from begin, got {:?}", other.map(|_| ())),
    }
    assert_eq!(db.stats().available, 0);
    assert!(
        matches!(db.execute_json("SELECT 1", None).await, Err(Error::Timeout(ref m)) if m.contains("pool")),
        "statements outside a transaction need a connection too"
    );
    held.pop();
    let next = db.begin().await.expect("a released connection serves the next transaction");
    assert_eq!(next.query_json("SELECT 1 AS one", None).await.unwrap(), json!([{"one": 1}]));
    drop(next);
    drop(held);
    for _ in 0..50 {
        if db.stats().in_use == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(db.stats().in_use, 0, "every connection went back to the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_rows_are_seen_inside_the_transaction_only() {
    let db = pool("3", "2000").await;
    db.batch_execute("CREATE TABLE items (name TEXT, qty INT)").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(tx.is_open());
    assert_eq!(tx.execute_json("INSERT INTO items VALUES ($1, $2)", Some(r#"["w", 2]"#)).await.unwrap(), 1);
    assert_eq!(tx.query_json("SELECT qty FROM items", None).await.unwrap(), json!([{"qty": 2}]));
    let outside = db.query_json("SELECT count(*)::int AS n FROM items", None).await.unwrap();
    assert_eq!(outside, json!([{"n": 0}]), "other connections do not see uncommitted rows");
    tx.commit().await.unwrap();
    assert!(!tx.is_open());
    assert_eq!(db.query_json("SELECT count(*)::int AS n FROM items", None).await.unwrap(), json!([{"n": 1}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_parameter_round_trips_and_an_overlong_username_is_refused_by_the_server() {
    let db = pool("2", "2000").await;
    migrations::migrate(&db).await.unwrap();
    let mib = "y".repeat(1 << 20);
    let rows =
        db.query_json("SELECT $1::text AS v, length($1::text) AS n", Some(&json!([mib]).to_string())).await.unwrap();
    assert_eq!((&rows[0]["v"], &rows[0]["n"]), (&json!(mib), &json!(1 << 20)));
    let e = db
        .execute_json(
            "INSERT INTO users (username, email, password_hash) VALUES ($1, 'big@example.com', 'x')",
            Some(&json!([mib]).to_string()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Query(_)), "{e:?}");
    assert!(e.to_string().contains("22001"), "the SQLSTATE for a value too long: {e}");
    let n = db.query_json("SELECT count(*)::int AS n FROM users", None).await.unwrap();
    assert_eq!(n, json!([{"n": 0}]), "refused, not truncated");
    // A mebibyte of SQL text is one statement like any other.
    let literal = db.query_json(&format!("SELECT length('{mib}') AS n"), None).await.unwrap();
    assert_eq!(literal, json!([{"n": 1 << 20}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters_in_a_transaction_leave_every_table_in_place() {
    let db = pool("2", "2000").await;
    migrations::migrate(&db).await.unwrap();
    db.batch_execute("CREATE TABLE students (name TEXT); INSERT INTO students VALUES ('bobby')").await.unwrap();
    let hostile = [
        "'; DROP TABLE users; --",
        "Robert'); DROP TABLE students;--",
        "' OR 1=1 --",
        "$1",
        "$2::text || $1",
        "$1; DELETE FROM users WHERE $2 = $2",
        "back\\slash \\' \\\\ \\x41 \\n",
        "quotes ' '' \" \"\" ` ´",
        "E'\\x27; DROP TABLE users; --'",
        "\"]}, {\"injected\": true}, [\"",
        "percent % underscore _ star *",
        "ünïcødé Grüße 日本語 🎮 \u{202e}",
        "line1\nline2\r\n\ttab",
        "-- just a comment",
        "/* comment */ SELECT pg_sleep(10)",
    ];
    let mut tx = db.begin().await.unwrap();
    for (i, s) in hostile.iter().enumerate() {
        let params = json!([s, format!("u{i}@example.com"), s]).to_string();
        tx.execute_json(
            "INSERT INTO users (username, email, password_hash, display_name) VALUES ($1, $2, $3, $1)",
            Some(&params),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    for s in hostile {
        let rows = db
            .query_json(
                "SELECT username, password_hash, display_name FROM users WHERE username = $1",
                Some(&json!([s]).to_string()),
            )
            .await
            .unwrap();
        assert_eq!(rows, json!([{"username": s, "password_hash": s, "display_name": s}]), "exactly its own row");
    }
    assert_eq!(db.query_json("SELECT count(*)::int AS n FROM students", None).await.unwrap(), json!([{"n": 1}]));
    let users = db.query_json("SELECT count(*)::int AS n FROM users", None).await.unwrap();
    assert_eq!(users, json!([{"n": hostile.len()}]));
}
