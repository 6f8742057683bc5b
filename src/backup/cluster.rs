//! The PostgreSQL server of a restored data directory: starting and stopping it with `pg_ctl`
//! (through `runuser -u postgres` when this process is root, as PostgreSQL refuses to run as
//! root), and watching whether it runs.

use super::pgtool::pg_tool;
use crate::config::Config;
use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// The uid and gid of the `postgres` user, when this process runs as root (PostgreSQL refuses
/// to run as root).
pub(crate) fn postgres_ids() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

pub(crate) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .map_err(|e| Error::Io(format!("cannot chown {}: {e}", p.display())))?;
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(&p).map_err(|e| Error::Io(format!("cannot list {}: {e}", p.display())))? {
                stack.push(e.map_err(|e| Error::Io(e.to_string()))?.path());
            }
        }
    }
    Ok(())
}

/// A PostgreSQL tool, run as `postgres` when this process is root.
pub(crate) fn pg_command(cfg: &Config, tool: &str) -> Command {
    let path = pg_tool(cfg, tool);
    if postgres_ids().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Io(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Io(e.to_string()))?.port())
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the postmaster of `dir` runs (its pid file names a live process).
pub(crate) fn server_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
        return false;
    };
    match text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
        Some(pid) if pid > 0 => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next().unwrap_or('X')).unwrap_or('X');
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            alive && state != 'Z' && state != 'X'
        }
        _ => false,
    }
}

/// Stops the server running in `data_dir` (fast shutdown), as `postgres` when root.
pub fn stop_cluster(cfg: &Config, data_dir: &Path) -> Result<()> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let out = pg_command(cfg, "pg_ctl")
        .current_dir(data_dir)
        .args(["-D"])
        .arg(data_dir)
        .args(["-m", "fast", "-w", "-t", "120", "stop"])
        .output()
        .map_err(|e| Error::Io(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() && data_dir.join("postmaster.pid").exists() {
        return Err(Error::Io(format!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Starts the server of `data_dir` in the background, logging to `log`. Returns once `pg_ctl`
/// has launched it (recovery may still be running).
pub(crate) fn start_cluster(cfg: &Config, data_dir: &Path, log: &Path) -> Result<()> {
    let out = pg_command(cfg, "pg_ctl")
        .current_dir(data_dir)
        .arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(log)
        .args(["-W", "start"])
        .output()
        .map_err(|e| Error::Io(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "the restored server did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            log_tail(log, 20)
        )));
    }
    Ok(())
}
