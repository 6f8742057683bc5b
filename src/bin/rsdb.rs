//! `rsdb`: the operator CLI. Reads its configuration from the `ROOTSTREAM_*` environment
//! variables (and `--database-url` / `--redis-url`).

use clap::{Arg, ArgAction, ArgMatches, Command};
use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::backup::{BackupManager, RetentionPolicy};
use rootstream_db::db::migrations;
use rootstream_db::models::session::{SessionModel, SessionSettings};
use rootstream_db::runtime::block_on;
use rootstream_db::{Config, DatabaseManager, Error, RedisClient};
use std::process::ExitCode;

fn cli() -> Command {
    Command::new("rsdb")
        .version(rootstream_db::VERSION)
        .about("rootstream-db operator tool")
        .long_about(
            "rootstream-db operator tool.\n\nConfiguration comes from the ROOTSTREAM_* environment variables \
             (ROOTSTREAM_DATABASE_URL, ROOTSTREAM_REDIS_URL, ...); the options below override them.",
        )
        .arg(
            Arg::new("database-url")
                .long("database-url")
                .global(true)
                .help("PostgreSQL URL (overrides ROOTSTREAM_DATABASE_URL)"),
        )
        .arg(Arg::new("redis-url").long("redis-url").global(true).help("Redis URL (overrides ROOTSTREAM_REDIS_URL)"))
        .subcommand_required(true)
        .subcommand(Command::new("migrate").about("Apply the embedded schema migrations"))
        .subcommand(
            Command::new("health")
                .about("Check PostgreSQL (and Redis when configured); exit 0 when healthy")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
        )
        .subcommand(Command::new("config").about("Print the effective configuration, secrets masked"))
        .subcommand(
            Command::new("sessions")
                .about("Session maintenance")
                .subcommand_required(true)
                .subcommand(
                    Command::new("cleanup").about("End expired and idle sessions; delete those ended over 30 days ago"),
                )
                .subcommand(
                    Command::new("revoke-all")
                        .about("Revoke every session of a user")
                        .arg(Arg::new("user").long("user").required(true).value_parser(clap::value_parser!(i64))),
                ),
        )
        .subcommand(
            Command::new("backup")
                .about(
                    "Encrypted, compressed, verifiable backups (needs ROOTSTREAM_BACKUP_DIR and ROOTSTREAM_MASTER_KEY)",
                )
                .subcommand_required(true)
                .subcommand(Command::new("create").about("Take a full logical backup of the database"))
                .subcommand(Command::new("list").about("List backups from the backup history"))
                .subcommand(
                    Command::new("cleanup")
                        .about("Delete backups past their retention (the newest full backup is always kept)")
                        .arg(
                            Arg::new("full-days")
                                .long("full-days")
                                .default_value("30")
                                .value_parser(clap::value_parser!(u64)),
                        )
                        .arg(
                            Arg::new("keep-last")
                                .long("keep-last")
                                .default_value("1")
                                .value_parser(clap::value_parser!(usize)),
                        ),
                )
                .subcommand(
                    Command::new("verify")
                        .about("Read a backup back and check every byte; names the file and chunk at fault")
                        .arg(Arg::new("id").required(true)),
                ),
        )
        .subcommand(
            Command::new("restore")
                .about("Restore a backup into an existing, empty database, then check row counts")
                .arg(Arg::new("id").required(true))
                .arg(
                    Arg::new("target-url")
                        .long("target-url")
                        .required(true)
                        .help("PostgreSQL URL of the target database"),
                ),
        )
        .subcommand(
            Command::new("mfa")
                .about("MFA administration (needs ROOTSTREAM_MASTER_KEY)")
                .subcommand_required(true)
                .subcommand(
                    Command::new("status")
                        .about("Show a user's MFA state")
                        .arg(Arg::new("user").long("user").required(true).value_parser(clap::value_parser!(i64))),
                )
                .subcommand(
                    Command::new("reset")
                        .about("Lost device without backup codes: remove MFA and revoke the user's sessions")
                        .arg(Arg::new("user").long("user").required(true).value_parser(clap::value_parser!(i64))),
                )
                .subcommand(Command::new("rotate-keys").about("Re-encrypt MFA secrets under the current master key")),
        )
}

fn sessions_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let redis = RedisClient::new(cfg)?;
    let sessions = SessionModel::new(db, redis, SessionSettings::from_config(cfg));
    match m.subcommand() {
        Some(("cleanup", _)) => {
            let (ended, deleted) = block_on(sessions.cleanup_expired(std::time::Duration::from_secs(30 * 86400)))?;
            println!("ended {ended} expired or idle sessions, deleted {deleted} old ones");
        }
        Some(("revoke-all", sub)) => {
            let user = *sub.get_one::<i64>("user").expect("required");
            let n = block_on(sessions.revoke_all(user, None, "revoked by an operator"))?;
            println!("revoked {n} sessions of user {user}");
        }
        _ => return Err(Error::invalid("unknown sessions command")),
    }
    Ok(())
}

fn backup_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    block_on(migrations::migrate(&db))?;
    let bm = BackupManager::new(db, cfg)?;
    match m.subcommand() {
        Some(("create", _)) => {
            let manifest = block_on(bm.create_full())?;
            let f = &manifest.files[0];
            println!(
                "backup {} completed: {} bytes dumped, {} bytes stored (zstd, AES-256-GCM), {} tables",
                manifest.backup_id,
                f.plain_bytes,
                f.stored_bytes,
                manifest.row_counts.len()
            );
        }
        Some(("list", _)) => {
            for b in block_on(bm.list())? {
                println!(
                    "{}  {:<11} {:<9} {:>12} bytes  {}",
                    b.backup_id,
                    b.status,
                    b.backup_type,
                    b.compressed_size_bytes.unwrap_or(0),
                    b.error_message.unwrap_or_default()
                );
            }
        }
        Some(("cleanup", sub)) => {
            let policy = RetentionPolicy {
                full: std::time::Duration::from_secs(86400 * *sub.get_one::<u64>("full-days").expect("default")),
                keep_last: *sub.get_one::<usize>("keep-last").expect("default"),
                ..RetentionPolicy::default()
            };
            let r = block_on(bm.cleanup(&policy))?;
            println!("deleted {} backups ({} bytes), kept {}", r.deleted.len(), r.bytes_freed, r.kept);
            for id in r.deleted {
                println!("  deleted {id}");
            }
        }
        Some(("verify", sub)) => {
            let id = sub.get_one::<String>("id").expect("required");
            let manifest = bm.verify(id)?;
            println!("backup {id} verified: {} files, every chunk authentic", manifest.files.len());
        }
        _ => return Err(Error::invalid("unknown backup command")),
    }
    Ok(())
}

fn restore_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let bm = BackupManager::new(db, cfg)?;
    let id = m.get_one::<String>("id").expect("required");
    let target = m.get_one::<String>("target-url").expect("required");
    let report = block_on(bm.restore(id, target))?;
    println!(
        "restored {} into {}: {} tables, {} rows, all counts match the backup",
        report.backup_id, report.target, report.tables_checked, report.rows_restored
    );
    Ok(())
}

fn mfa_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let redis = cfg.redis_url.as_ref().map(|_| RedisClient::new(cfg)).transpose()?;
    let mfa = MfaManager::new(db.clone(), redis.clone(), cfg)?;
    match m.subcommand() {
        Some(("status", sub)) => {
            let user = *sub.get_one::<i64>("user").expect("required");
            println!("{}", serde_json::to_string_pretty(&block_on(mfa.status(user))?)?);
        }
        Some(("reset", sub)) => {
            let user = *sub.get_one::<i64>("user").expect("required");
            block_on(mfa.unenroll(user))?;
            println!("MFA removed for user {user}");
            if let Some(redis) = redis {
                let sessions = SessionModel::new(db, redis, SessionSettings::from_config(cfg));
                let n = block_on(sessions.revoke_all(user, None, "mfa reset"))?;
                println!("revoked {n} sessions; the user logs in with the password and enrolls again");
            }
        }
        Some(("rotate-keys", _)) => {
            let n = block_on(mfa.rotate_keys())?;
            println!("re-encrypted {n} MFA secrets under the current master key");
        }
        _ => return Err(Error::invalid("unknown mfa command")),
    }
    Ok(())
}

fn config(m: &ArgMatches) -> Result<Config, Error> {
    let mut cfg = Config::from_env()?;
    if let Some(url) = m.get_one::<String>("database-url") {
        cfg.set("database_url", url)?;
    }
    if let Some(url) = m.get_one::<String>("redis-url") {
        cfg.set("redis_url", url)?;
    }
    Ok(cfg)
}

fn migrate(cfg: &Config) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let report = block_on(migrations::migrate(&db))?;
    if report.applied.is_empty() {
        println!("schema is up to date at version {}", report.current_version);
    } else {
        let list: Vec<String> = report.applied.iter().map(|v| format!("{v:03}")).collect();
        println!("applied {}; schema is at version {}", list.join(", "), report.current_version);
    }
    Ok(())
}

fn health(cfg: &Config, json: bool) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let pg = block_on(db.health_check())?;
    let redis = match &cfg.redis_url {
        Some(_) => {
            let r = RedisClient::new(cfg)?;
            Some(block_on(r.ping())?)
        }
        None => None,
    };
    if json {
        let v = serde_json::json!({
            "postgres": pg,
            "redis": redis.map(|d| serde_json::json!({"latency_ms": d.as_secs_f64() * 1000.0})),
        });
        println!("{v}");
    } else {
        println!(
            "postgres: ok ({}, {}, {:.2} ms, pool {}/{})",
            pg.server_version,
            if pg.in_recovery { "standby" } else { "primary" },
            pg.latency_ms,
            pg.pool.in_use,
            pg.pool.max_size
        );
        if let Some(d) = redis {
            println!("redis: ok ({:.2} ms)", d.as_secs_f64() * 1000.0);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let m = cli().get_matches();
    let result = config(&m).and_then(|cfg| match m.subcommand() {
        Some(("migrate", _)) => migrate(&cfg),
        Some(("health", sub)) => health(&cfg, sub.get_flag("json")),
        Some(("sessions", sub)) => sessions_cmd(&cfg, sub),
        Some(("mfa", sub)) => mfa_cmd(&cfg, sub),
        Some(("backup", sub)) => backup_cmd(&cfg, sub),
        Some(("restore", sub)) => restore_cmd(&cfg, sub),
        Some(("config", _)) => {
            println!("{cfg:#?}");
            Ok(())
        }
        _ => Err(Error::invalid("unknown command")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rsdb: {e}");
            // Exit codes: 2 usage/config, 3 connection or timeout, 4 not found, 5 integrity check
            // failed, 1 anything else.
            ExitCode::from(match e {
                Error::Config(_) | Error::InvalidArgument(_) => 2,
                Error::Connection(_) | Error::Timeout(_) => 3,
                Error::NotFound(_) => 4,
                Error::Integrity(_) => 5,
                _ => 1,
            })
        }
    }
}
