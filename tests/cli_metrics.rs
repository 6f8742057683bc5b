//! `rsdb metrics` against the stack's InfluxDB 1.6: init, write, query, export, serve, help and
//! exit codes.

mod metrics_support;
mod support;

use metrics_support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn rsdb(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsdb"));
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ROOTSTREAM_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn metrics_commands_write_query_export_and_exit_codes() {
    let url = influx_url();
    let db = unique_db("mt_cli");
    let env = [("ROOTSTREAM_INFLUX_URL", url.as_str()), ("ROOTSTREAM_INFLUX_DATABASE", db.as_str())];
    let out = rsdb(&[], &["--help"]);
    assert!(text(&out).contains("metrics"), "{}", text(&out));
    let out = rsdb(&[], &["metrics", "--help"]);
    for c in ["init", "write", "query", "export", "serve"] {
        assert!(text(&out).contains(c), "{}", text(&out));
    }
    // Recent: the raw policy keeps a day.
    let t = (rootstream_db::metrics::line::now_ns() - 60_000_000_000).to_string();
    let out = rsdb(&env, &["metrics", "init"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = rsdb(
        &env,
        &[
            "metrics",
            "write",
            "stream",
            "--tag",
            "stream_id=s 1",
            "--field",
            "viewers=12i",
            "--field",
            "fps=59.5",
            "--field",
            "title=\"a \"b\"\"",
            "--time",
            &t,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(r#"stream,stream_id=s\ 1 viewers=12i,fps=59.5,title="a \"b\"" {t}"#)),
        "{}",
        text(&out)
    );
    let out = rsdb(&env, &["metrics", "query", "SELECT viewers, fps, title FROM stream", "--epoch", "ns"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["results"][0]["series"][0]["values"][0],
        serde_json::json!([t.parse::<i64>().unwrap(), 12, 59.5, "a \"b\""])
    );
    // Usage errors: 2; bad values: 2; a query the server refuses: 1; no server: 3; no URL: 2.
    assert_eq!(rsdb(&env, &["metrics", "write", "m"]).status.code(), Some(2));
    assert_eq!(rsdb(&env, &["metrics", "write", "m", "--field", "v=NaN"]).status.code(), Some(2));
    assert_eq!(rsdb(&env, &["metrics", "write", "m", "--field", "v=abc"]).status.code(), Some(2));
    assert_eq!(rsdb(&env, &["metrics", "write", "m", "--field", "novalue"]).status.code(), Some(2));
    assert_eq!(rsdb(&env, &["metrics", "query", "SELEKT"]).status.code(), Some(1));
    let dead = format!("http://127.0.0.1:{}", support::closed_port());
    let out = rsdb(&[("ROOTSTREAM_INFLUX_URL", dead.as_str())], &["metrics", "write", "m", "--field", "v=1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(rsdb(&[], &["metrics", "query", "SHOW DATABASES"]).status.code(), Some(2));

    // Export: Prometheus text (promtool-clean) and JSON, with the stack's Redis and PostgreSQL.
    let pg = support::stack().admin_url().to_owned();
    let redis = support::stack().redis_url().to_owned();
    let full = [("ROOTSTREAM_DATABASE_URL", pg.as_str()), ("ROOTSTREAM_REDIS_URL", redis.as_str())];
    let out = rsdb(&full, &["metrics", "export", "--prometheus"]);
    assert!(out.status.success(), "{}", text(&out));
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    for name in [
        "rootstream_system_memory_total_bytes",
        "rootstream_cache_hit_rate",
        "rootstream_database_size_bytes",
        "rootstream_db_pool_connections",
    ] {
        assert!(body.contains(name), "{name} in {body}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let check = child.wait_with_output().unwrap();
    assert!(
        check.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let out = rsdb(&full, &["metrics", "export", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rootstream_system_memory_total_bytes"]["type"], serde_json::json!("gauge"));
    assert_eq!(rsdb(&full, &["metrics", "export", "--json", "--prometheus"]).status.code(), Some(2));
}

#[test]
fn metrics_serve_answers_on_loopback() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rsdb"))
        .args(["metrics", "serve", "--listen", "127.0.0.1:0"])
        .env_remove("ROOTSTREAM_DATABASE_URL")
        .env_remove("ROOTSTREAM_REDIS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("serving ").unwrap_or_else(|| panic!("{line}")).to_owned();
    let body = ureq::get(&url).timeout(Duration::from_secs(10)).call().unwrap().into_string().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(body.contains("# TYPE rootstream_system_cpu_usage_percent gauge"), "{body}");
}
