//! `rsdb`: the operator CLI. Reads its configuration from the `ROOTSTREAM_*` environment
//! variables, a `--config` file, and `--database-url` / `--redis-url`.

use clap::{Arg, ArgAction, ArgMatches, Command};
use rootstream_db::auth::mfa::MfaManager;
use rootstream_db::backup::{
    ArchiveSettings, BackupKind, BackupManager, ClusterRestoreOptions, Manifest, PhysicalKind, Progress, PushOutcome,
    RecoveryManager, RecoveryTarget, RetentionPolicy, WalArchive,
};
use rootstream_db::db::migrations;
use rootstream_db::models::session::{SessionModel, SessionSettings, OPERATOR_REVOKE_REASON};
use rootstream_db::runtime::block_on;
use rootstream_db::sync::{StateSyncManager, SyncOptions};
use rootstream_db::{Config, DatabaseManager, Error, RedisClient};
use std::process::ExitCode;

fn cli() -> Command {
    Command::new("rsdb")
        .version(rootstream_db::VERSION)
        .about("rootstream-db operator tool")
        .long_about(
            "rootstream-db operator tool.\n\nConfiguration comes from the ROOTSTREAM_* environment variables \
             (ROOTSTREAM_DATABASE_URL, ROOTSTREAM_REDIS_URL, ...), then a --config file, then the options below.\n\n\
             Exit codes: 0 success, 1 failure, 2 usage or configuration, 3 connection or timeout, 4 not found, \
             5 integrity check failed, 6 conflict (e.g. a different WAL file of that name is already archived).",
        )
        .arg(
            Arg::new("database-url")
                .long("database-url")
                .global(true)
                .help("PostgreSQL URL (overrides ROOTSTREAM_DATABASE_URL)"),
        )
        .arg(Arg::new("redis-url").long("redis-url").global(true).help("Redis URL (overrides ROOTSTREAM_REDIS_URL)"))
        .arg(
            Arg::new("config")
                .long("config")
                .global(true)
                .help("Configuration file of `key = value` lines; its values override ROOTSTREAM_* variables"),
        )
        .subcommand_required(true)
        .subcommand(Command::new("migrate").about("Apply the embedded schema migrations"))
        .subcommand(
            Command::new("health")
                .about("Check PostgreSQL (and Redis, and its sentinels, when configured); exit 0 when healthy")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
        )
        .subcommand(Command::new("config").about("Print the effective configuration, secrets masked"))
        .subcommand(ha_command())
        .subcommand(
            Command::new("sessions")
                .about("Session maintenance")
                .subcommand_required(true)
                .subcommand(
                    Command::new("cleanup").about(
                        "End expired and idle sessions; delete those ended longer ago than session_retention_days",
                    ),
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
                    "Encrypted, compressed, verifiable backups (needs a repository, ROOTSTREAM_BACKUP_DIR or \
                     ROOTSTREAM_BACKUP_S3_URL, and ROOTSTREAM_MASTER_KEY)",
                )
                .subcommand_required(true)
                .subcommand(Command::new("init").about("Prepare the repository: create the directory or the S3 bucket"))
                .subcommand(
                    Command::new("create")
                        .about("Take a backup: logical (pg_dump of the database) or physical (the whole cluster)")
                        .long_about(
                            "Take a backup. --type is one of:\n  logical       a pg_dump of the database (the default)\n  \
                             full          a physical full backup of the cluster (pg_basebackup)\n  \
                             incremental   physical: the WAL since the last physical backup of any type\n  \
                             differential  physical: the WAL since the last physical full backup\n\
                             --physical is an alias of --type full.",
                        )
                        .arg(
                            Arg::new("type")
                                .long("type")
                                .value_parser(BackupKind::NAMES)
                                .help("logical (the default), or the physical full, incremental or differential"),
                        )
                        .arg(
                            Arg::new("physical")
                                .long("physical")
                                .conflicts_with("type")
                                .action(ArgAction::SetTrue)
                                .help("Alias of --type full: a physical full backup (pg_basebackup)"),
                        ),
                )
                .subcommand(
                    Command::new("list")
                        .about("List backups from the backup history (method, kind, human-readable sizes)")
                        .arg(
                            Arg::new("repository")
                                .long("repository")
                                .action(ArgAction::SetTrue)
                                .help("Read the repository's manifests instead (no database needed)"),
                        )
                        .arg(Arg::new("bytes").long("bytes").action(ArgAction::SetTrue).help("Sizes in raw bytes"))
                        .arg(
                            Arg::new("json")
                                .long("json")
                                .action(ArgAction::SetTrue)
                                .conflicts_with("bytes")
                                .help("Print JSON"),
                        ),
                )
                .subcommand(
                    Command::new("cleanup")
                        .about(
                            "Delete backups past their retention and the archived WAL no kept backup needs \
                             (the newest full backup is always kept)",
                        )
                        .arg(days_arg("full-days"))
                        .arg(days_arg("incremental-days"))
                        .arg(days_arg("differential-days"))
                        .arg(
                            Arg::new("keep-last")
                                .long("keep-last")
                                .value_parser(clap::value_parser!(usize))
                                .help("Completed backups of each type kept whatever their age (default: the policy's)"),
                        ),
                )
                .subcommand(
                    Command::new("delete")
                        .about("Delete one backup (refused while another backup builds on it)")
                        .arg(Arg::new("id").required(true)),
                )
                .subcommand(
                    Command::new("verify")
                        .about(
                            "Read a backup back and check every byte; names the file and chunk at fault, \
                             and any WAL gap that stops point-in-time recovery from it",
                        )
                        .arg(Arg::new("id").required(true)),
                )
                .subcommand(
                    Command::new("gaps")
                        .about(
                            "List WAL gaps (WAL that wal-push dropped past wal_queue_max), the backups whose \
                             point-in-time recovery each stops, and the full backup that closed each",
                        )
                        .arg(
                            Arg::new("repository")
                                .long("repository")
                                .action(ArgAction::SetTrue)
                                .help("Read the repository's records only (no database needed)"),
                        )
                        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
                )
                .subcommand(
                    Command::new("test-restore")
                        .about("Restore a backup into a scratch database or cluster, check it, drop it")
                        .arg(Arg::new("id").required(true)),
                ),
        )
        .subcommand(
            Command::new("restore")
                .about(
                    "Restore a backup: a logical one into a database, created when missing (--target-url), a physical \
                     one into a new data directory (--data-dir), optionally to a point in time",
                )
                .arg(Arg::new("id").help("The backup (physical restores may omit it: the newest fitting one is used)"))
                .arg(Arg::new("target-url").long("target-url").help("PostgreSQL URL of the target database (logical)"))
                .arg(Arg::new("data-dir").long("data-dir").help("New data directory (physical)"))
                .arg(
                    Arg::new("target-time")
                        .long("target-time")
                        .help("Recover to this moment (RFC 3339, e.g. 2026-11-25T10:15:00Z), physical only"),
                )
                .arg(
                    Arg::new("latest")
                        .long("latest")
                        .action(ArgAction::SetTrue)
                        .help("Replay all archived WAL (physical only)"),
                )
                .arg(
                    Arg::new("port")
                        .long("port")
                        .default_value("0")
                        .value_parser(clap::value_parser!(u16))
                        .help("Port of the restored server (0: a free one)"),
                )
                .arg(
                    Arg::new("delta")
                        .long("delta")
                        .action(ArgAction::SetTrue)
                        .help(
                            "Restore over an existing data directory of a stopped server: write only the \
                             blocks that differ from the backup and remove what it lacks",
                        ),
                )
                .arg(
                    Arg::new("keep-running")
                        .long("keep-running")
                        .action(ArgAction::SetTrue)
                        .help("Leave the restored server running"),
                ),
        )
        .subcommand(
            Command::new("wal-push")
                .about("PostgreSQL archive_command: archive_command = 'rsdb --config FILE wal-push %p'")
                .arg(Arg::new("path").required(true).help("The WAL file (%p)")),
        )
        .subcommand(
            Command::new("wal-fetch")
                .about("PostgreSQL restore_command: restore_command = 'rsdb --config FILE wal-fetch %f %p'")
                .arg(Arg::new("name").required(true).help("The WAL file name (%f)"))
                .arg(Arg::new("path").required(true).help("Where to write it (%p)")),
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
        .subcommand(sync_command())
        .subcommand(metrics_command())
}

fn metrics_command() -> Command {
    Command::new("metrics")
        .about("Time-series metrics in InfluxDB (ROOTSTREAM_INFLUX_URL; v2 with ROOTSTREAM_INFLUX_ORG and _BUCKET)")
        .subcommand_required(true)
        .subcommand(Command::new("init").about(
            "Create the database and the retention policies: 1 day raw (default), 30 days downsampled by a continuous query",
        ))
        .subcommand(
            Command::new("write")
                .about("Write one point: rsdb metrics write stream --tag stream_id=42 --field viewers=12i --field fps=59.9")
                .arg(Arg::new("measurement").required(true).help("The measurement"))
                .arg(Arg::new("tag").long("tag").action(ArgAction::Append).help("KEY=VALUE (repeatable)"))
                .arg(
                    Arg::new("field")
                        .long("field")
                        .action(ArgAction::Append)
                        .required(true)
                        .help("KEY=VALUE (repeatable): 12i integer, 12u unsigned, true/false, \"text\" string, else a float"),
                )
                .arg(
                    Arg::new("time")
                        .long("time")
                        .value_parser(clap::value_parser!(i64))
                        .help("Timestamp in nanoseconds since the epoch (default: the server's clock)"),
                ),
        )
        .subcommand(
            Command::new("query")
                .about("Run an InfluxQL statement (v1) and print InfluxDB's JSON answer")
                .arg(Arg::new("influxql").required(true).help("The statement"))
                .arg(Arg::new("epoch").long("epoch").help("Timestamps as ns, u, ms or s since the epoch (default RFC 3339)")),
        )
        .subcommand(
            Command::new("export")
                .about("Collect system (and database/cache when configured) metrics once and print them")
                .arg(
                    Arg::new("prometheus")
                        .long("prometheus")
                        .action(ArgAction::SetTrue)
                        .conflicts_with("json")
                        .help("Prometheus text format 0.0.4 (the default)"),
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("JSON")),
        )
        .subcommand(
            Command::new("serve")
                .about("Serve the export at GET /metrics until interrupted")
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .default_value("127.0.0.1:9464")
                        .help("Address to listen on (127.0.0.1:PORT for loopback only, 0.0.0.0:PORT for any)"),
                ),
        )
}

fn parse_kv(s: &str, what: &str) -> Result<(String, String), Error> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| Error::invalid(format!("--{what} {s:?} is not KEY=VALUE")))
}

fn parse_field_value(v: &str) -> Result<rootstream_db::metrics::FieldValue, Error> {
    use rootstream_db::metrics::FieldValue;
    if let Some(text) = v.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return Ok(FieldValue::String(text.to_owned()));
    }
    if v == "true" || v == "false" {
        return Ok(FieldValue::Bool(v == "true"));
    }
    if let Some(i) = v.strip_suffix('i') {
        return i.parse().map(FieldValue::Integer).map_err(|_| Error::invalid(format!("{v:?} is not an integer")));
    }
    if let Some(u) = v.strip_suffix('u') {
        return u
            .parse()
            .map(FieldValue::Unsigned)
            .map_err(|_| Error::invalid(format!("{v:?} is not an unsigned integer")));
    }
    v.parse::<f64>()
        .map(FieldValue::Float)
        .map_err(|_| Error::invalid(format!("{v:?} is not a number (quote strings)")))
}

fn metrics_client(cfg: &Config) -> Result<rootstream_db::metrics::InfluxDBClient, Error> {
    use rootstream_db::metrics::{ClientOptions, InfluxDBClient};
    InfluxDBClient::new(ClientOptions::from_config(cfg)?)
}

/// One collection round of what is configured: system always, PostgreSQL and Redis when set.
fn metrics_collect(cfg: &Config) -> Result<(Vec<rootstream_db::metrics::Point>, Option<DatabaseManager>), Error> {
    use rootstream_db::metrics::{CacheCollector, DatabaseCollector, MetricsCollector, SystemCollector};
    use std::sync::Arc;
    let mc = MetricsCollector::new();
    mc.add(Arc::new(SystemCollector::new("/")));
    let db = cfg.database_url.as_ref().map(|_| DatabaseManager::new(cfg)).transpose()?;
    if let Some(d) = &db {
        mc.add(Arc::new(DatabaseCollector::new(d.clone())));
    }
    if cfg.redis_url.is_some() {
        mc.add(Arc::new(CacheCollector::new(RedisClient::new(cfg)?, "redis")));
    }
    let r = mc.collect_once();
    for f in &r.failures {
        eprintln!("rsdb: collector {} failed: {}", f.collector, f.message);
    }
    Ok((r.points, db))
}

fn metrics_export_text(cfg: &Config, json: bool) -> Result<String, Error> {
    use rootstream_db::metrics::prometheus::{library_families, point_families, render, LibraryMetrics};
    let (points, db) = metrics_collect(cfg)?;
    let mut lib = LibraryMetrics { pool: db.as_ref().map(|d| d.stats()), ..LibraryMetrics::default() };
    lib.extra = point_families(&points);
    if json {
        let rep = rootstream_db::metrics::MetricsReporter::new(None);
        Ok(format!("{}\n", serde_json::to_string_pretty(&rep.json_export(&lib))?))
    } else {
        render(&library_families(&lib))
    }
}

fn metrics_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    use rootstream_db::metrics::{Point, RetentionSetup};
    match m.subcommand() {
        Some(("init", _)) => {
            let c = metrics_client(cfg)?;
            c.create_database()?;
            if matches!(c.options().api, rootstream_db::metrics::InfluxApi::V1 { .. }) {
                c.setup_retention(&RetentionSetup::default())?;
                println!("database ready: raw_1d (default), downsampled_30d, continuous query downsample_5m");
            } else {
                println!("bucket ready");
            }
        }
        Some(("write", sub)) => {
            let mut p = Point::new(sub.get_one::<String>("measurement").expect("required"));
            for t in sub.get_many::<String>("tag").into_iter().flatten() {
                let (k, v) = parse_kv(t, "tag")?;
                p = p.tag(k, v);
            }
            for f in sub.get_many::<String>("field").into_iter().flatten() {
                let (k, v) = parse_kv(f, "field")?;
                p = p.field(k, parse_field_value(&v)?);
            }
            if let Some(t) = sub.get_one::<i64>("time") {
                p = p.timestamp_ns(*t);
            }
            let c = metrics_client(cfg)?;
            c.write_point(&p)?;
            println!("{}", c.encode(&p)?);
        }
        Some(("query", sub)) => {
            let c = metrics_client(cfg)?;
            let v = c.query(
                sub.get_one::<String>("influxql").expect("required"),
                sub.get_one::<String>("epoch").map(String::as_str),
            )?;
            println!("{v}");
        }
        Some(("export", sub)) => print!("{}", metrics_export_text(cfg, sub.get_flag("json"))?),
        Some(("serve", sub)) => {
            let addr = sub.get_one::<String>("listen").expect("has a default");
            let cfg2 = cfg.clone();
            let server = rootstream_db::metrics::MetricsServer::start(addr, move || metrics_export_text(&cfg2, false))?;
            println!("serving http://{}/metrics", server.local_addr());
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => return Err(Error::invalid("unknown metrics command")),
    }
    Ok(())
}

fn ha_command() -> Command {
    ha_failover_subcommands(ha_replication_command())
}

fn ha_replication_command() -> Command {
    Command::new("ha")
        .about(
            "PostgreSQL replication and failover: status, replicas, rejoin, failover, switchover, agent (nodes from ROOTSTREAM_HA_PG_NODES and \
             ROOTSTREAM_HA_PG_DATA, or --nodes / --data-dirs)",
        )
        .subcommand_required(true)
        .arg(
            Arg::new("nodes")
                .long("nodes")
                .global(true)
                .help("The nodes, name=postgres://...,name=... (overrides ROOTSTREAM_HA_PG_NODES)"),
        )
        .arg(
            Arg::new("data-dirs")
                .long("data-dirs")
                .global(true)
                .help("Data directories of the nodes on this machine, name=/dir,... (overrides ROOTSTREAM_HA_PG_DATA)"),
        )
        .arg(
            Arg::new("options")
                .long("options")
                .global(true)
                .help("ReplicationManager options as JSON (probe_timeout_ms, max_lag_bytes, synchronous, ...)"),
        )
        .subcommand(
            Command::new("status")
                .about(
                    "Every node's role and WAL position, the primary's standbys (state, sync state, lag in bytes and \
                     seconds) and slots; exit 0 with exactly one primary, 1 with none or a split brain",
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
        )
        .subcommand(
            Command::new("replica")
                .about("Add or remove a standby")
                .subcommand_required(true)
                .subcommand(
                    Command::new("add")
                        .about(
                            "Set up a new standby on this machine: slot, pg_basebackup, start, wait until it streams, \
                             add it to the synchronous list (synchronous mode)",
                        )
                        .arg(Arg::new("name").required(true).help("The node name (also its slot and application_name)"))
                        .arg(
                            Arg::new("url")
                                .long("url")
                                .required(true)
                                .help("How to reach it: postgres://user@host:PORT/db"),
                        )
                        .arg(Arg::new("data-dir").long("data-dir").required(true).help("An absent or empty directory"))
                        .arg(
                            Arg::new("port")
                                .long("port")
                                .required(true)
                                .value_parser(clap::value_parser!(u16).range(1..)),
                        ),
                )
                .subcommand(
                    Command::new("remove")
                        .about(
                            "Take a standby out: synchronous list first, then stop it (when local), then drop its slot",
                        )
                        .arg(Arg::new("name").required(true)),
                ),
        )
        .subcommand(
            Command::new("rejoin")
                .about(
                    "Make a former primary a standby of the current primary with pg_rewind (needs data checksums or \
                     wal_log_hints, and its data directory here)",
                )
                .arg(Arg::new("name").required(true))
                .arg(
                    Arg::new("primary").long("primary").help("The new primary (default: the node that answers as one)"),
                ),
        )
}

fn ha_manager(cfg: &Config, m: &ArgMatches) -> Result<rootstream_db::ha::ReplicationManager, Error> {
    use rootstream_db::ha::{NodeSet, ReplicationManager, ReplicationOptions};
    let nodes = match m.get_one::<String>("nodes") {
        Some(n) => {
            // Explicit nodes take explicit data directories only.
            NodeSet::parse(n, m.get_one::<String>("data-dirs").map(String::as_str))?
        }
        None => {
            let mut set = NodeSet::from_env()?;
            if let Some(d) = m.get_one::<String>("data-dirs") {
                let nodes = std::env::var("ROOTSTREAM_HA_PG_NODES").unwrap_or_default();
                set = NodeSet::parse(&nodes, Some(d))?;
            }
            set
        }
    };
    let opts = ReplicationOptions::from_json(m.get_one::<String>("options").map(String::as_str))?;
    ReplicationManager::new(nodes, cfg, opts)
}

fn opt_text<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn ha_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    match m.subcommand() {
        Some(("status", sub)) => {
            let rm = ha_manager(cfg, sub)?;
            let st = block_on(rm.status())?;
            if sub.get_flag("json") {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                if st.split_brain {
                    println!("SPLIT BRAIN: {} all accept writes", st.primaries.join(", "));
                }
                println!(
                    "primary {}  lsn {}  synchronous_standby_names '{}'",
                    opt_text(st.primary.as_deref()),
                    opt_text(st.primary_lsn),
                    st.synchronous_standby_names.as_deref().unwrap_or("")
                );
                for r in &st.replicas {
                    println!(
                        "  {:<8} {:<10} {:<9} lag {:>10} bytes {:>9} s  slot {}  {}",
                        r.name,
                        r.state.as_deref().unwrap_or(if r.reachable { "-" } else { "down" }),
                        r.sync_state.as_deref().unwrap_or("-"),
                        opt_text(r.lag_bytes),
                        r.lag_seconds.map(|s| format!("{s:.3}")).unwrap_or_else(|| "-".into()),
                        r.slot
                            .as_ref()
                            .map(|s| format!(
                                "{}{}",
                                if s.active { "active" } else { "inactive" },
                                s.retained_bytes.map(|b| format!(" ({b} bytes held)")).unwrap_or_default()
                            ))
                            .unwrap_or_else(|| "none".into()),
                        if r.readable {
                            "readable".to_string()
                        } else {
                            r.not_readable_because.clone().unwrap_or_default()
                        }
                    );
                }
                if let Some(e) = &st.error {
                    println!("  ! {e}");
                }
            }
            if st.split_brain || st.primary.is_none() {
                return Err(Error::State(st.error.unwrap_or_else(|| "no single primary".into())));
            }
        }
        Some(("replica", sub)) => match sub.subcommand() {
            Some(("add", a)) => {
                let rm = ha_manager(cfg, a)?;
                let name = a.get_one::<String>("name").expect("required");
                let rep = block_on(rm.add_replica(
                    name,
                    a.get_one::<String>("url").expect("required"),
                    std::path::Path::new(a.get_one::<String>("data-dir").expect("required")),
                    *a.get_one::<u16>("port").expect("required"),
                ))?;
                println!(
                    "{} streams from {} (base backup {:.1} s, {:.1} s in all); synchronous_standby_names '{}'",
                    rep.name, rep.primary, rep.basebackup_s, rep.total_s, rep.synchronous_standby_names
                );
                println!("add {name}=... to ROOTSTREAM_HA_PG_NODES (and its data directory to ROOTSTREAM_HA_PG_DATA)");
            }
            Some(("remove", r)) => {
                let rm = ha_manager(cfg, r)?;
                let rep = block_on(rm.remove_replica(r.get_one::<String>("name").expect("required")))?;
                println!(
                    "{} removed (stopped: {}, slot dropped: {}); synchronous_standby_names '{}'",
                    rep.name,
                    rep.stopped,
                    rep.slot_dropped,
                    rep.synchronous_standby_names.as_deref().unwrap_or("")
                );
                if let Some(w) = rep.warning {
                    eprintln!("rsdb: warning: {w}");
                }
            }
            _ => return Err(Error::invalid("unknown replica command")),
        },
        Some(("rejoin", sub)) => {
            let rm = ha_manager(cfg, sub)?;
            let rep = block_on(rm.rejoin(
                sub.get_one::<String>("name").expect("required"),
                sub.get_one::<String>("primary").map(String::as_str),
            ))?;
            println!(
                "{} streams from {} ({}, pg_rewind {:.1} s, {:.1} s in all)",
                rep.name,
                rep.primary,
                if rep.rewound { "rewound" } else { "no rewind was needed" },
                rep.rewind_s,
                rep.total_s
            );
        }
        _ => return ha_failover_cmd(cfg, m),
    }
    Ok(())
}

fn sync_command() -> Command {
    let namespace = Arg::new("namespace")
        .long("namespace")
        .default_value("rootstream")
        .help("The state-sync namespace (instances with the same one share state)");
    Command::new("sync")
        .about("State sync between instances (needs Redis)")
        .subcommand_required(true)
        .subcommand(
            Command::new("status")
                .about(
                    "Start a manager in the namespace and print its counters: subscriptions, sent, received, \
                     lag behind the log, catch-ups (gaps repaired), resyncs, conflicts, rejected",
                )
                .arg(namespace.clone())
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
        )
        .subcommand(
            Command::new("tail")
                .about("Print each event whose type matches PATTERN as one JSON envelope per line, until interrupted")
                .arg(Arg::new("pattern").required(true).help("A glob over event types: stream.*, *.delta, *"))
                .arg(namespace)
                .arg(
                    Arg::new("count")
                        .long("count")
                        .value_parser(clap::value_parser!(u64).range(1..))
                        .help("Stop after this many events"),
                ),
        )
}

fn sync_manager(cfg: &Config, m: &ArgMatches) -> Result<StateSyncManager, Error> {
    let mut opts = SyncOptions::new(&cfg.instance_id);
    opts.namespace = m.get_one::<String>("namespace").expect("has a default").clone();
    let redis = block_on(RedisClient::connect(cfg))?;
    block_on(StateSyncManager::start(redis, opts))
}

fn sync_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    match m.subcommand() {
        Some(("status", sub)) => sync_status(&sync_manager(cfg, sub)?, sub.get_flag("json")),
        Some(("tail", sub)) => {
            let pattern = sub.get_one::<String>("pattern").expect("required");
            sync_tail(&sync_manager(cfg, sub)?, pattern, sub.get_one::<u64>("count").copied())
        }
        _ => Err(Error::invalid("unknown sync command")),
    }
}

fn sync_status(manager: &StateSyncManager, json: bool) -> Result<(), Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(&block_on(manager.status_report())?)?);
        return Ok(());
    }
    let st = block_on(manager.status())?;
    println!("origin:        {}", st.origin);
    println!("namespace:     {}", st.namespace);
    println!("subscriptions: {}", st.subscriptions);
    println!("sent:          {} ({} waiting in the outbox)", st.sent, st.outbox);
    println!("received:      {} ({} duplicates skipped)", st.received, st.duplicates);
    println!(
        "lag:           {} log entries behind (last taken: {})",
        st.lag,
        if st.last_log_id.is_empty() { "none" } else { &st.last_log_id }
    );
    println!("catch-ups:     {} ({} messages read from the log)", st.catch_ups, st.caught_up_messages);
    println!("resyncs:       {}", st.resyncs);
    println!("conflicts:     {} ({} not stored)", st.conflicts, st.conflict_write_failures);
    println!("rejected:      {}", st.rejected);
    Ok(())
}

fn sync_tail(manager: &StateSyncManager, pattern: &str, count: Option<u64>) -> Result<(), Error> {
    use std::io::Write;
    let (tx, rx) = std::sync::mpsc::channel();
    manager.subscribe(pattern, move |e| {
        let _ = tx.send(serde_json::to_string(e));
    })?;
    eprintln!("rsdb: tailing {pattern:?} in namespace {}", manager.namespace());
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        let Ok(line) = rx.recv() else { break };
        // A closed stdout (`| head`) ends the tail.
        if writeln!(std::io::stdout(), "{}", line?).is_err() {
            break;
        }
        printed += 1;
    }
    Ok(())
}

fn sessions_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let db = DatabaseManager::new(cfg)?;
    let redis = RedisClient::new(cfg)?;
    let sessions = SessionModel::new(db, redis, SessionSettings::from_config(cfg));
    match m.subcommand() {
        Some(("cleanup", _)) => {
            let (ended, deleted) = block_on(sessions.cleanup())?;
            println!("ended {ended} expired or idle sessions, deleted {deleted} old ones");
        }
        Some(("revoke-all", sub)) => {
            let user = *sub.get_one::<i64>("user").expect("required");
            let n = block_on(sessions.revoke_all(user, None, Some(OPERATOR_REVOKE_REASON)))?;
            println!("revoked {n} sessions of user {user}");
        }
        _ => return Err(Error::invalid("unknown sessions command")),
    }
    Ok(())
}

fn days_arg(name: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_parser(clap::value_parser!(u32))
        .help("Days to keep backups of this type (default: the retention policy's)")
}

/// A size for people: `69.5 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn size_text(bytes: u64, raw: bool) -> String {
    if raw {
        format!("{bytes} bytes")
    } else {
        human(bytes)
    }
}

fn print_manifest(m: &Manifest) {
    let plain: u64 = m.files.iter().map(|f| f.plain_bytes).sum();
    let stored: u64 = m.files.iter().map(|f| f.stored_bytes).sum();
    print!(
        "backup {} ({}) completed: {plain} bytes read, {stored} bytes stored (zstd, AES-256-GCM)",
        m.backup_id, m.backup_type
    );
    match &m.physical {
        Some(p) => println!(
            ", WAL {}..{} (LSN {}..{}, timeline {}){}",
            p.start_wal,
            p.stop_wal,
            p.start_lsn,
            p.stop_lsn,
            p.timeline,
            p.parent_backup_id.as_ref().map(|b| format!(", builds on {b}")).unwrap_or_default()
        ),
        None => println!(", {} tables", m.row_counts.len()),
    }
}

fn print_gap_closure(g: &rootstream_db::backup::WalGap) {
    match &g.closed_by {
        Some(b) => println!("  closed by full backup {b}: recovery to later moments starts there"),
        None => println!("  not closed: take a full backup so that recovery past the gap can start from it"),
    }
}

fn print_gaps(gaps: &[rootstream_db::backup::WalGap], json: bool) -> Result<(), Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(gaps)?);
        return Ok(());
    }
    if gaps.is_empty() {
        println!("no WAL gaps: every archived WAL file is in the repository");
        return Ok(());
    }
    println!("WAL gaps (point-in-time recovery cannot cross them):");
    for g in gaps {
        println!("- {}", g.describe());
        if !g.affected_backups.is_empty() {
            println!("  recovery from {} stops at it", g.affected_backups.join(", "));
        }
        print_gap_closure(g);
    }
    Ok(())
}

fn backup_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    // Commands that read the repository alone work without the database.
    match m.subcommand() {
        Some(("verify", sub)) => {
            let bm = BackupManager::repository_only(cfg)?;
            let id = sub.get_one::<String>("id").expect("required");
            let manifest = bm.verify(id)?;
            println!("backup {id} verified: {} files, every chunk authentic", manifest.files.len());
            if manifest.is_physical() {
                for g in bm.wal_gaps_in_repository()? {
                    if g.affected_backups.iter().any(|b| b == id) {
                        println!("WARNING: point-in-time recovery from {id} cannot cross a WAL gap: {}", g.describe());
                        print_gap_closure(&g);
                    }
                }
            }
            return Ok(());
        }
        Some(("gaps", sub)) if sub.get_flag("repository") => {
            let bm = BackupManager::repository_only(cfg)?;
            print_gaps(&bm.wal_gaps_in_repository()?, sub.get_flag("json"))?;
            return Ok(());
        }
        Some(("init", _)) => {
            let bm = BackupManager::repository_only(cfg)?;
            bm.init_repository()?;
            println!("repository {} is ready", bm.storage().location(""));
            return Ok(());
        }
        Some(("list", sub)) if sub.get_flag("repository") => {
            let rm = RecoveryManager::from_config(cfg)?;
            let backups = rm.list_repository()?;
            if sub.get_flag("json") {
                println!("{}", serde_json::to_string_pretty(&backups)?);
                return Ok(());
            }
            for b in backups {
                let stored: u64 = b.files.iter().map(|f| f.stored_bytes).sum();
                println!(
                    "{}  {:<8} {:<12} {:>14}  finished {}",
                    b.backup_id,
                    b.backup_method(),
                    b.backup_type,
                    size_text(stored, sub.get_flag("bytes")),
                    b.finished_at.to_rfc3339()
                );
            }
            return Ok(());
        }
        _ => {}
    }
    let db = DatabaseManager::new(cfg)?;
    block_on(migrations::migrate(&db))?;
    let bm = BackupManager::new(db, cfg)?;
    match m.subcommand() {
        Some(("create", sub)) => {
            let kind = match sub.get_one::<String>("type") {
                Some(name) => BackupKind::parse(name)?,
                None if sub.get_flag("physical") => BackupKind::Physical(PhysicalKind::Full),
                None => BackupKind::default(),
            };
            let manifest = block_on(bm.create_kind(kind))?;
            print_manifest(&manifest);
        }
        Some(("list", sub)) => {
            let backups = block_on(bm.list())?;
            if sub.get_flag("json") {
                // The same array as ever; `backup gaps --json` gives the gaps.
                println!("{}", serde_json::to_string_pretty(&backups)?);
                return Ok(());
            }
            let gaps = block_on(bm.wal_gaps())?;
            for b in backups {
                let limited = gaps.iter().find(|g| g.affected_backups.contains(&b.backup_id));
                println!(
                    "{}  {:<11} {:<8} {:<12} {:>14}  {}{}",
                    b.backup_id,
                    b.status,
                    b.kind.map(|k| k.method()).unwrap_or("?"),
                    b.kind.map(|k| k.as_str()).unwrap_or(b.backup_type.as_str()),
                    size_text(b.compressed_size_bytes.unwrap_or(0).max(0) as u64, sub.get_flag("bytes")),
                    b.error_message.as_deref().unwrap_or_default(),
                    limited.map(|g| format!("  [PITR stops at WAL gap {}]", g.first_segment)).unwrap_or_default()
                );
            }
            if !gaps.is_empty() {
                println!();
                print_gaps(&gaps, false)?;
            }
        }
        Some(("gaps", sub)) => print_gaps(&block_on(bm.wal_gaps())?, sub.get_flag("json"))?,
        Some(("cleanup", sub)) => {
            // An option not given keeps the core's default for it (0 means the same).
            let day = |k: &str| sub.get_one::<u32>(k).copied().unwrap_or(0);
            let policy = RetentionPolicy::from_days(
                day("full-days"),
                day("incremental-days"),
                day("differential-days"),
                sub.get_one::<usize>("keep-last").copied().unwrap_or(0),
            );
            let r = block_on(bm.cleanup(&policy))?;
            println!(
                "deleted {} backups and {} archived WAL files ({} bytes), kept {}",
                r.deleted.len(),
                r.wal_deleted,
                r.bytes_freed,
                r.kept
            );
            for id in r.deleted {
                println!("  deleted {id}");
            }
        }
        Some(("delete", sub)) => {
            let id = sub.get_one::<String>("id").expect("required");
            let freed = block_on(bm.delete(id))?;
            println!("deleted backup {id} ({freed} bytes)");
        }
        Some(("test-restore", sub)) => {
            let id = sub.get_one::<String>("id").expect("required");
            let r = block_on(RecoveryManager::new(bm).test_restore(id))?;
            println!(
                "backup {id} ({}) restored into scratch space and checked: {} tables, {} rows, {:.1} s; scratch space dropped",
                r.kind, r.tables_checked, r.rows, r.seconds
            );
        }
        _ => return Err(Error::invalid("unknown backup command")),
    }
    Ok(())
}

fn restore_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    let id = m.get_one::<String>("id");
    match (m.get_one::<String>("target-url"), m.get_one::<String>("data-dir")) {
        (Some(target), None) => {
            let id = id.ok_or_else(|| Error::invalid("a logical restore needs the backup id"))?;
            let db = DatabaseManager::new(cfg)?;
            let bm = BackupManager::new(db, cfg)?;
            let report = block_on(bm.restore(id, target))?;
            println!(
                "restored {} into {}: {} tables, {} rows, all counts match the backup",
                report.backup_id, report.target, report.tables_checked, report.rows_restored
            );
        }
        (None, Some(dir)) => {
            let target = RecoveryTarget::parse(
                m.get_one::<String>("target-time").map(String::as_str),
                m.get_flag("latest"),
                "--target-time",
                "--latest",
            )?;
            let mut rm = RecoveryManager::from_config(cfg)?;
            rm.set_progress(Some(std::sync::Arc::new(|p: &Progress| {
                eprintln!("rsdb: {} {}: {}", p.phase, p.backup_id, p.message);
            })));
            let mut opts = ClusterRestoreOptions::new(dir, target);
            opts.backup_id = id.cloned();
            opts.port = *m.get_one::<u16>("port").expect("default");
            opts.keep_running = m.get_flag("keep-running");
            opts.delta = m.get_flag("delta");
            let r = block_on(rm.restore_cluster(&opts))?;
            if let Some(d) = &r.delta {
                println!(
                    "delta: {} files unchanged, {} changed, {} created, {} paths removed; {} of {} compared written",
                    d.files_unchanged,
                    d.files_changed,
                    d.files_created,
                    d.paths_removed,
                    size_text(d.bytes_written, false),
                    size_text(d.bytes_compared, false)
                );
            }
            println!(
                "restored {} (chain {}) into {} up to {}",
                r.backup_id,
                r.chain.join(" -> "),
                r.data_dir,
                r.target
            );
            for line in &r.recovery_log {
                println!("  server: {line}");
            }
            for (db, tables) in &r.databases {
                println!("  database {db}: {} tables, {} rows", tables.len(), tables.values().sum::<i64>());
            }
            if r.running {
                println!("the server is running on 127.0.0.1:{} (stop: pg_ctl -D {} stop)", r.port, r.data_dir);
            } else {
                println!("the server was stopped cleanly; start it with pg_ctl -D {} start", r.data_dir);
            }
        }
        _ => return Err(Error::invalid("give either --target-url (logical backup) or --data-dir (physical backup)")),
    }
    Ok(())
}

fn wal_cmd(cfg: &Config, m: &ArgMatches, push: bool) -> Result<(), Error> {
    let archive = WalArchive::from_config(cfg)?;
    if push {
        let path = std::path::Path::new(m.get_one::<String>("path").expect("required"));
        let report = archive.archive(path, &ArchiveSettings::from_config(cfg))?;
        match report.outcome {
            PushOutcome::AlreadyArchived => eprintln!("rsdb: {} was already archived, identical", path.display()),
            // What PostgreSQL logs: a dropped segment must be seen.
            PushOutcome::Dropped => eprintln!(
                "rsdb: WARNING: {} NOT archived: {} bytes of WAL wait to be archived, past wal_queue_max ({}); \
                 WAL gap {}..{} recorded, point-in-time recovery cannot cross it until a full backup is taken",
                report.file,
                report.queue_bytes,
                cfg.wal_queue_max,
                report.gap.as_ref().map(|g| g.first_segment.as_str()).unwrap_or("?"),
                report.gap.as_ref().map(|g| g.last_segment.as_str()).unwrap_or("?"),
            ),
            _ => {}
        }
    } else {
        let name = m.get_one::<String>("name").expect("required");
        let path = std::path::Path::new(m.get_one::<String>("path").expect("required"));
        match archive.fetch(name, path) {
            // PostgreSQL asks for files that may not exist (the next timeline's history, the
            // segment after the last one); saying nothing keeps its log readable.
            Err(Error::NotFound(_)) => std::process::exit(4),
            other => {
                other?;
            }
        }
    }
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
            let sessions = SessionModel::new(db, RedisClient::new(cfg)?, SessionSettings::from_config(cfg));
            let done = block_on(mfa.admin_reset(&sessions, user, None))?;
            println!(
                "MFA removed for user {user}; revoked {} sessions; the user logs in with the password and enrolls again",
                done.sessions_revoked
            );
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
    if let Some(file) = m.get_one::<String>("config") {
        cfg.apply_file(std::path::Path::new(file))?;
    }
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
    let redis = if cfg.redis_url.is_some() || cfg.uses_sentinel() {
        let r = RedisClient::new(cfg)?;
        Some(block_on(r.ping())?)
    } else {
        None
    };
    // With Sentinel: the master as the sentinels see it, its replicas, and which sentinels answer.
    let sentinel = if cfg.sentinel_configured() {
        let m = block_on(rootstream_db::cache::RedisSentinelManager::open(cfg))?;
        let master = block_on(m.master_addr())?;
        let replicas = block_on(m.replicas()).unwrap_or_default();
        let sentinels = block_on(m.sentinel_status());
        m.close();
        Some((m.master_name().to_string(), master, replicas, sentinels))
    } else {
        None
    };
    if json {
        let v = serde_json::json!({
            "postgres": pg,
            "redis": redis.map(|d| serde_json::json!({"latency_ms": d.as_secs_f64() * 1000.0})),
            "sentinel": sentinel.as_ref().map(|(name, master, replicas, sentinels)| serde_json::json!({
                "master_name": name,
                "master": master.to_string(),
                "replicas": replicas,
                "sentinels": sentinels,
                "answering": sentinels.iter().filter(|s| s.answers).count(),
            })),
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
        if let Some((name, master, replicas, sentinels)) = &sentinel {
            let answering = sentinels.iter().filter(|s| s.answers).count();
            println!("sentinel: master {name:?} at {master} ({answering}/{} sentinels answer)", sentinels.len());
            for r in replicas {
                let link = r.link_status.as_deref().unwrap_or("?");
                println!("  replica {}:{} ({}, link {link})", r.host, r.port, r.flags);
            }
            for s in sentinels {
                match (&s.error, &s.master) {
                    (None, Some(m)) => println!("  sentinel {} answers (master {m})", s.address),
                    (Some(e), _) => println!("  sentinel {} does not answer: {e}", s.address),
                    (None, None) => println!("  sentinel {} answers", s.address),
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ ha (failover)

fn ha_failover_subcommands(cmd: Command) -> Command {
    let options = || {
        Arg::new("options")
            .long("options")
            .help("FailoverManager options as JSON (lease_ttl_ms, loop_interval_ms, failure_threshold, ...)")
    };
    cmd.subcommand(
        Command::new("failover")
            .about("Promote a standby now (refused while the primary still answers; use switchover)")
            .arg(Arg::new("to").long("to").help("The node to promote (default: the most advanced standby)"))
            .arg(options()),
    )
    .subcommand(
        Command::new("switchover")
            .about("Planned switchover with no data loss; the old primary rejoins as a standby")
            .arg(Arg::new("to").long("to").required(true).help("The standby to promote"))
            .arg(options()),
    )
    .subcommand(
        Command::new("agent")
            .about("Run the FailoverManager (and the health checks, once available) until SIGTERM or SIGINT")
            .arg(options()),
    )
}

static AGENT_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn agent_signal(_: libc::c_int) {
    AGENT_STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn ha_failover_cmd(cfg: &Config, m: &ArgMatches) -> Result<(), Error> {
    use rootstream_db::ha::FailoverManager;
    let (name, sub) = m.subcommand().ok_or_else(|| Error::invalid("ha needs a subcommand"))?;
    let options = sub.get_one::<String>("options").map(String::as_str);
    let fm = FailoverManager::open(cfg, options)?;
    match name {
        "failover" => {
            let c = fm.failover(sub.get_one::<String>("to").map(String::as_str))?;
            println!("{}", serde_json::to_string_pretty(&c)?);
        }
        "switchover" => {
            let to = sub.get_one::<String>("to").ok_or_else(|| Error::invalid("--to is required"))?;
            let c = fm.switchover(to)?;
            println!("{}", serde_json::to_string_pretty(&c)?);
        }
        "agent" => {
            unsafe {
                libc::signal(libc::SIGTERM, agent_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGINT, agent_signal as *const () as libc::sighandler_t);
            }
            fm.on_role_change(|c| println!("{}", serde_json::to_string(c).unwrap_or_default()));
            fm.on_alert(|a| eprintln!("rsdb ha agent: {} {}: {}", a.severity, a.kind, a.message));
            fm.start()?;
            // Hook: the HealthMonitor (src/ha/health.rs) starts here beside the failover loop
            // once it is part of the library, and stops with it below.
            eprintln!(
                "rsdb ha agent: member {} of cluster {} running; SIGTERM or SIGINT stops it",
                fm.options().member,
                fm.options().cluster
            );
            while !AGENT_STOP.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            fm.stop();
            eprintln!("rsdb ha agent: stopped, lease released");
        }
        other => return Err(Error::invalid(format!("unknown ha command {other:?}"))),
    }
    Ok(())
}

fn main() -> ExitCode {
    // A file-size limit (ulimit -f) must fail the write with an error, not kill the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let m = cli().get_matches();
    let result = config(&m).and_then(|cfg| match m.subcommand() {
        Some(("migrate", _)) => migrate(&cfg),
        Some(("health", sub)) => health(&cfg, sub.get_flag("json")),
        Some(("sessions", sub)) => sessions_cmd(&cfg, sub),
        Some(("mfa", sub)) => mfa_cmd(&cfg, sub),
        Some(("sync", sub)) => sync_cmd(&cfg, sub),
        Some(("metrics", sub)) => metrics_cmd(&cfg, sub),
        Some(("ha", sub)) => ha_cmd(&cfg, sub),
        Some(("backup", sub)) => backup_cmd(&cfg, sub),
        Some(("restore", sub)) => restore_cmd(&cfg, sub),
        Some(("wal-push", sub)) => wal_cmd(&cfg, sub, true),
        Some(("wal-fetch", sub)) => wal_cmd(&cfg, sub, false),
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
                Error::Conflict(_) => 6,
                _ => 1,
            })
        }
    }
}
