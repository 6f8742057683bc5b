//! Which data-file blocks the WAL between two positions changed: the map a block-level
//! incremental backup is built from.
//!
//! The WAL is decoded by `pg_waldump`, which ships with the server and decodes every record
//! type of its own version; its text output is stable within a major version. Each record's
//! block references (`blkref #N: rel SPC/DB/REL [fork FORK] blk N`) name a changed block; the
//! storage records say which relation files were created (`CREATE base/5/16384`) and truncated
//! (`TRUNCATE base/5/16384 to 2 blocks`), and commit and abort records which were dropped
//! (`rels: base/5/16384 ...`). A reader of our own would need the same rmgr-specific knowledge
//! for the last two, for every version; `pg_waldump` already has it.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

/// One relation fork: tablespace, database and relfilenode oids and the fork (`main`, `fsm`,
/// `vm`, `init`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFork {
    pub tablespace: u32,
    pub database: u32,
    pub relfilenode: u32,
    pub fork: String,
}

impl RelFork {
    /// The file of this fork in a PostgreSQL 15 data directory, relative to it (the first
    /// 1 GiB segment; block `b` lives in segment `b / 131072`). Tablespaces other than the
    /// default and global ones live under `pg_tblspc/SPC/PG_15_<catalog version>/`, which the
    /// caller supplies as `tablespace_dir`.
    pub fn path(&self, tablespace_dir: &str) -> String {
        let suffix = if self.fork == "main" { String::new() } else { format!("_{}", self.fork) };
        match self.tablespace {
            1664 => format!("global/{}{suffix}", self.relfilenode),
            1663 => format!("base/{}/{}{suffix}", self.database, self.relfilenode),
            spc => format!("pg_tblspc/{spc}/{tablespace_dir}/{}/{}{suffix}", self.database, self.relfilenode),
        }
    }
}

/// What the WAL did to one relation fork.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkChanges {
    /// Blocks written (block references), in order.
    pub blocks: BTreeSet<u32>,
    /// The file was created in the range.
    pub created: bool,
    /// The smallest length (in blocks) it was truncated to in the range.
    pub truncated_to: Option<u32>,
    /// The relation was dropped (at a commit or abort) in the range.
    pub dropped: bool,
}

/// The changed blocks of every relation fork the WAL touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockMap {
    pub forks: BTreeMap<RelFork, ForkChanges>,
    /// Records read.
    pub records: u64,
}

/// `base/5/16384`, `base/5/16384_vm`, `global/1262`, `pg_tblspc/16390/PG_15_x/5/16384_fsm`.
fn parse_relpath(p: &str) -> Option<RelFork> {
    let parts: Vec<&str> = p.split('/').collect();
    let (tablespace, database, file) = match parts.as_slice() {
        ["base", db, f] => (1663, db.parse().ok()?, *f),
        ["global", f] => (1664, 0, *f),
        ["pg_tblspc", spc, _, db, f] => (spc.parse().ok()?, db.parse().ok()?, *f),
        _ => return None,
    };
    let (rel, fork) = match file.split_once('_') {
        Some((r, f)) => (r, f.to_string()),
        None => (file, "main".to_string()),
    };
    Some(RelFork { tablespace, database, relfilenode: rel.parse().ok()?, fork })
}

impl BlockMap {
    fn fork(&mut self, f: RelFork) -> &mut ForkChanges {
        self.forks.entry(f).or_default()
    }

    /// Reads one line of `pg_waldump` output.
    pub fn add_line(&mut self, line: &str) {
        let Some((head, desc)) = line.split_once("desc: ") else { return };
        self.records += 1;
        let rmgr = head.strip_prefix("rmgr: ").and_then(|r| r.split_whitespace().next()).unwrap_or("");
        let mut rest = desc;
        while let Some(i) = rest.find("blkref #") {
            rest = &rest[i + 8..];
            let Some(r) = rest.find(": rel ") else { break };
            rest = &rest[r + 6..];
            let mut words = rest.split([' ', ',']).filter(|w| !w.is_empty());
            let Some(rel) = words.next() else { break };
            let ids: Vec<u32> = rel.split('/').filter_map(|x| x.parse().ok()).collect();
            let mut fork = "main".to_string();
            let mut block = None;
            while let Some(w) = words.next() {
                match w {
                    "fork" => fork = words.next().unwrap_or("main").to_string(),
                    "blk" => {
                        block = words.next().and_then(|b| b.parse::<u32>().ok());
                        break;
                    }
                    _ => break,
                }
            }
            if let ([tablespace, database, relfilenode], Some(b)) = (ids.as_slice(), block) {
                let f = RelFork { tablespace: *tablespace, database: *database, relfilenode: *relfilenode, fork };
                self.fork(f).blocks.insert(b);
            }
        }
        match rmgr {
            "Storage" => {
                if let Some(p) = desc.strip_prefix("CREATE ") {
                    if let Some(f) = parse_relpath(p.trim()) {
                        self.fork(f).created = true;
                    }
                } else if let Some(p) = desc.strip_prefix("TRUNCATE ") {
                    let mut w = p.split_whitespace();
                    if let (Some(path), Some("to"), Some(n)) = (w.next(), w.next(), w.next()) {
                        if let (Some(f), Ok(n)) = (parse_relpath(path), n.parse::<u32>()) {
                            // A truncation applies to every fork's file set the same way; the
                            // main fork is what the record names.
                            let c = self.fork(f);
                            c.truncated_to = Some(c.truncated_to.map_or(n, |t| t.min(n)));
                        }
                    }
                }
            }
            "Transaction" => {
                // "COMMIT <time>; rels: base/5/1 base/5/2; dropped stats: ..." (and ABORT).
                for part in desc.split("; ") {
                    if let Some(list) = part.strip_prefix("rels: ") {
                        for p in list.split_whitespace() {
                            if let Some(f) = parse_relpath(p) {
                                self.fork(f).dropped = true;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The map of the WAL from `start` to `end` (LSNs such as `0/3000028`) on `timeline`, read
    /// by `pg_waldump` from the segments in `wal_dir`.
    pub fn from_wal_dir(pg_waldump: &Path, wal_dir: &Path, timeline: u32, start: &str, end: &str) -> Result<Self> {
        let mut child = Command::new(pg_waldump)
            .arg("--path")
            .arg(wal_dir)
            .args(["--timeline", &timeline.to_string(), "--start", start, "--end", end])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Io(format!("cannot run {}: {e}", pg_waldump.display())))?;
        let mut map = BlockMap::default();
        let stdout = child.stdout.take().expect("piped");
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let line = line.map_err(|e| Error::Io(format!("reading pg_waldump's output: {e}")))?;
            map.add_line(&String::from_utf8_lossy(&line));
        }
        let out = child.wait_with_output().map_err(|e| Error::Io(e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Io(format!(
                "pg_waldump {start}..{end} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(map)
    }
}

/// The size of a PostgreSQL block.
pub const BLOCK: u64 = 8192;
/// Blocks per 1 GiB segment file of a relation.
pub const BLOCKS_PER_SEGMENT: u32 = 131_072;

/// Reads `blocks` of the relation fork file `path` (relative to the data directory; block
/// numbers across its 1 GiB segment files) through the server with `pg_read_binary_file`, so
/// no access to the data directory's filesystem is needed (the role needs superuser or
/// `pg_read_server_files`). Runs of consecutive blocks are read in one call each. Blocks past
/// the end of the file (truncated since) are left out; a missing file gives nothing.
pub async fn read_blocks(
    db: &crate::db::DatabaseManager,
    path: &str,
    blocks: &BTreeSet<u32>,
) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &b in blocks {
        match runs.last_mut() {
            // A run stays within one segment file and under 8 MiB per call.
            Some((start, n)) if *start + *n == b && b % BLOCKS_PER_SEGMENT != 0 && *n < 1024 => *n += 1,
            _ => runs.push((b, 1)),
        }
    }
    for (start, n) in runs {
        let seg = start / BLOCKS_PER_SEGMENT;
        let file = if seg == 0 { path.to_string() } else { format!("{path}.{seg}") };
        let offset = ((start % BLOCKS_PER_SEGMENT) as u64 * BLOCK) as i64;
        let row = db
            .query_opt("SELECT pg_read_binary_file($1, $2, $3, true)", &[&file, &offset, &((n as u64 * BLOCK) as i64)])
            .await?;
        let Some(bytes) = row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) else { continue };
        for (i, chunk) in bytes.chunks(BLOCK as usize).enumerate() {
            if chunk.len() == BLOCK as usize {
                out.push((start + i as u32, chunk.to_vec()));
            }
        }
    }
    Ok(out)
}

/// A base backup taken through SQL (`pg_backup_start` / `pg_backup_stop` on a session of its
/// own), for copying files with [`read_blocks`] and `pg_read_binary_file` instead of the
/// replication protocol. The session must stay open from start to stop.
pub struct SqlBackup {
    client: tokio_postgres::Client,
    _conn: tokio::task::JoinHandle<()>,
    /// Where WAL replay of a restore of this backup must begin (the checkpoint's redo point).
    pub start_lsn: String,
    pub timeline: u32,
}

/// What `pg_backup_stop` gave: where the backup's WAL ends, and the files a restore writes.
#[derive(Debug, Clone)]
pub struct SqlBackupEnd {
    pub stop_lsn: String,
    pub backup_label: String,
    pub tablespace_map: String,
}

/// Paths (relative to the data directory) a base backup leaves out, as `pg_basebackup` does:
/// WAL and server state that is rebuilt or meaningless in a copy. Directories are kept, empty.
pub fn excluded(path: &str) -> bool {
    const FILES: [&str; 6] =
        ["postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "current_logfiles", "pg_internal.init"];
    const DIR_CONTENTS: [&str; 8] = [
        "pg_wal/",
        "pg_replslot/",
        "pg_stat_tmp/",
        "pg_dynshmem/",
        "pg_notify/",
        "pg_serial/",
        "pg_snapshots/",
        "pg_subtrans/",
    ];
    let name = path.rsplit('/').next().unwrap_or(path);
    FILES.contains(&name) || DIR_CONTENTS.iter().any(|d| path.starts_with(d)) || name.starts_with("pgsql_tmp")
}

impl SqlBackup {
    /// Connects to `url` and starts a backup labelled `label` with a fast checkpoint.
    pub async fn start(url: &str, label: &str) -> Result<Self> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| Error::Connection(format!("connecting for the backup: {e}")))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client
            .query_one(
                "SELECT pg_backup_start($1, true)::text, (SELECT timeline_id FROM pg_control_checkpoint())",
                &[&label],
            )
            .await?;
        Ok(SqlBackup { start_lsn: row.get(0), timeline: row.get::<_, i32>(1) as u32, client, _conn: conn })
    }

    /// Every file of the data directory (relative path and size), tablespaces followed, without
    /// what [`excluded`] names; directories are listed with size `None`.
    pub async fn files(&self) -> Result<Vec<(String, Option<u64>)>> {
        let rows = self
            .client
            .query(
                "WITH RECURSIVE t(path, isdir) AS (
                     SELECT n, (pg_stat_file(n, true)).isdir FROM pg_ls_dir('.', true, false) n
                     UNION ALL
                     SELECT t.path || '/' || c, (pg_stat_file(t.path || '/' || c, true)).isdir
                     FROM t, LATERAL pg_ls_dir(t.path, true, false) c WHERE t.isdir
                 )
                 SELECT path, isdir, (pg_stat_file(path, true)).size FROM t WHERE isdir IS NOT NULL ORDER BY path",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .filter(|r| !excluded(r.get::<_, &str>(0)))
            .map(|r| {
                let dir: bool = r.get(1);
                (r.get::<_, String>(0), if dir { None } else { Some(r.get::<_, i64>(2) as u64) })
            })
            .collect())
    }

    /// Ends the backup, waiting until the WAL it needs is archived.
    pub async fn stop(self) -> Result<SqlBackupEnd> {
        let row = self
            .client
            .query_one("SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(true)", &[])
            .await?;
        Ok(SqlBackupEnd { stop_lsn: row.get(0), backup_label: row.get(1), tablespace_map: row.get(2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(db: u32, r: u32, fork: &str) -> RelFork {
        RelFork { tablespace: 1663, database: db, relfilenode: r, fork: fork.into() }
    }

    #[test]
    fn block_references_creates_truncates_and_drops_are_read_from_pg_waldump_lines() {
        let mut m = BlockMap::default();
        for line in [
            "rmgr: Storage     len (rec/tot):     42/    42, tx:        979, lsn: 0/0D068920, prev 0/0D0688F0, desc: CREATE base/5/23436",
            "rmgr: Heap2       len (rec/tot):     64/  8256, tx:          0, lsn: 0/0D08ADC8, prev 0/0D08ADA0, desc: VISIBLE cutoff xid 980 flags 0x01, blkref #0: rel 1663/5/23436 fork vm blk 0 FPW, blkref #1: rel 1663/5/23436 blk 7",
            "rmgr: Btree       len (rec/tot):     64/    64, tx:        976, lsn: 0/0D034750, prev 0/0D034678, desc: INSERT_LEAF off 246, blkref #0: rel 1663/5/2703 blk 2",
            "rmgr: Heap        len (rec/tot):     54/  1958, tx:        976, lsn: 0/0D02BE48, prev 0/0D02BE18, desc: INSERT off 10 flags 0x01, blkref #0: rel 1664/0/1262 blk 14 FPW",
            "rmgr: Storage     len (rec/tot):     46/    46, tx:        982, lsn: 0/0D090D58, prev 0/0D090D28, desc: TRUNCATE base/5/23436 to 2 blocks flags 7",
            "rmgr: Storage     len (rec/tot):     46/    46, tx:        982, lsn: 0/0D090D88, prev 0/0D090D58, desc: TRUNCATE base/5/23436 to 5 blocks flags 7",
            "rmgr: Transaction len (rec/tot):   1061/  1061, tx:        985, lsn: 0/0D091E40, prev 0/0D091E08, desc: COMMIT 2026-12-08 00:51:35.276955 UTC; rels: base/5/23441 base/5/23442_vm; dropped stats: 2/5/23440; inval msgs: catcache 32",
            "rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/0D092280, prev 0/0D091E40, desc: CHECKPOINT_ONLINE redo 0/D092248",
            "pg_waldump: error: error in WAL record at 0/D0922F8: invalid record length",
            "",
        ] {
            m.add_line(line);
        }
        assert_eq!(m.records, 8);
        let t = &m.forks[&rel(5, 23436, "main")];
        assert!(t.created && !t.dropped);
        assert_eq!(t.blocks.iter().copied().collect::<Vec<_>>(), vec![7]);
        assert_eq!(t.truncated_to, Some(2), "the smallest length it was cut to");
        assert_eq!(m.forks[&rel(5, 23436, "vm")].blocks.iter().copied().collect::<Vec<_>>(), vec![0]);
        assert!(m.forks[&rel(5, 2703, "main")].blocks.contains(&2));
        let global = RelFork { tablespace: 1664, database: 0, relfilenode: 1262, fork: "main".into() };
        assert!(m.forks[&global].blocks.contains(&14));
        assert!(m.forks[&rel(5, 23441, "main")].dropped);
        assert!(m.forks[&rel(5, 23442, "vm")].dropped);
        assert_eq!(rel(5, 23436, "vm").path("x"), "base/5/23436_vm");
        assert_eq!(global.path("x"), "global/1262");
        let spc = RelFork { tablespace: 16390, database: 5, relfilenode: 7, fork: "fsm".into() };
        assert_eq!(spc.path("PG_15_202209061"), "pg_tblspc/16390/PG_15_202209061/5/7_fsm");
        assert_eq!(parse_relpath("pg_tblspc/16390/PG_15_202209061/5/7_fsm"), Some(spc));
        assert_eq!(parse_relpath("base/x/1"), None);
        assert_eq!(parse_relpath("somewhere/else"), None);
    }

    #[test]
    fn a_base_backup_leaves_out_what_pg_basebackup_leaves_out() {
        for out in ["postmaster.pid", "pg_wal/000000010000000000000001", "pg_replslot/s/state", "base/5/pgsql_tmp123"] {
            assert!(excluded(out), "{out}");
        }
        for kept in
            ["PG_VERSION", "pg_wal", "base/5/16384", "global/pg_control", "pg_xact/0000", "postgresql.auto.conf"]
        {
            assert!(!excluded(kept), "{kept}");
        }
    }
}
