//! Running the PostgreSQL tools a backup needs (`pg_dump`, `pg_basebackup`, `pg_restore`,
//! `pg_ctl`): where they are, and streaming a tool's output into the repository.

use crate::config::Config;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};

/// Counts bytes on their way through, and reports progress every 16 MiB.
pub(crate) struct Metered<R> {
    pub inner: R,
    pub done: u64,
    pub last: u64,
    pub report: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.last >= 16 << 20 {
            self.last = self.done;
            (self.report)(self.done);
        }
        Ok(n)
    }
}

pub(crate) fn pg_tool(cfg: &Config, name: &str) -> PathBuf {
    let dir = cfg.pg_bin_dir.clone().or_else(|| {
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        debian.is_dir().then_some(debian)
    });
    match dir {
        Some(d) => d.join(name),
        None => PathBuf::from(name),
    }
}

/// Reads a child's standard error on its own thread, so a chatty child never blocks.
pub(crate) fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `cmd`, a PostgreSQL tool that writes what is to be stored on its standard output, and
/// hands that output to `store`. When storing fails (disk full, unwritable target) the tool is
/// killed and the storing error is the one returned; otherwise a failed exit is an error naming
/// the tool and its standard error. Returns what `store` returned and the tool's standard error.
pub(crate) fn pipe_into_store<T>(
    mut cmd: Command,
    store: impl FnOnce(ChildStdout) -> Result<T>,
) -> Result<(T, String)> {
    let tool = PathBuf::from(cmd.get_program());
    let name = tool.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io(format!("cannot run {}: {e}", tool.display())))?;
    let stderr = drain(child.stderr.take().expect("piped"));
    let stored = store(child.stdout.take().expect("piped"));
    if stored.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let err = stderr.join().unwrap_or_default();
    let value = stored?;
    if !status.success() {
        return Err(Error::Io(format!("{name} failed ({status}): {}", err.trim())));
    }
    Ok((value, err))
}
