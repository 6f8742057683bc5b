//! Reading a stored file in stages, each on a thread of its own, so that a restore keeps more
//! than one core busy: one stage reads and authenticates the chunks, the next decompresses,
//! and the caller consumes (a restore unpacks the tar into the data directory).
//!
//! A stage hands its output to the next in blocks through a bounded channel, so a slow stage
//! holds the ones before it back (memory stays at a few blocks per stage). Only what a stage's
//! source yielded travels on: the chunk stage forwards a chunk only once it has authenticated.
//! An error travels down the stages as it was raised (a chunk that does not authenticate is
//! named in it), and the stream ends only with an explicit end mark: a stage that dies without
//! one is an error, never a short file. A consumer that stops early stops the stages behind it.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// What a stage sends (inside an `io::Result`, whose error stops the stream): a block of
/// output, or the end of the stream.
enum Msg {
    Data(Vec<u8>),
    End,
}

/// The reading end of a stage: yields what the stage's source yields.
pub(crate) struct Staged {
    rx: Option<Receiver<io::Result<Msg>>>,
    /// Emptied blocks go back to the stage for reuse.
    recycle: Option<SyncSender<Vec<u8>>>,
    block: Vec<u8>,
    pos: usize,
    ended: bool,
    failed: bool,
    name: String,
    thread: Option<JoinHandle<()>>,
}

/// Runs `source` on a thread of its own named `name`, reading it in blocks of `block_size`
/// bytes with at most `depth` blocks waiting for the reader.
pub(crate) fn stage<R: Read + Send + 'static>(
    name: &str,
    mut source: R,
    block_size: usize,
    depth: usize,
) -> io::Result<Staged> {
    let (tx, rx) = sync_channel::<io::Result<Msg>>(depth);
    let (recycle, free) = sync_channel::<Vec<u8>>(depth + 2);
    let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
        loop {
            let mut buf = free.try_recv().unwrap_or_default();
            buf.resize(block_size, 0);
            // Fill the block, so that the reader gets few, full blocks.
            let mut n = 0;
            let outcome = loop {
                if n == buf.len() {
                    break Ok(false);
                }
                match source.read(&mut buf[n..]) {
                    Ok(0) => break Ok(true),
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let ended = match outcome {
                Err(e) => {
                    // What was read before the error is not passed on: the error stops the stream.
                    let _ = tx.send(Err(e));
                    return;
                }
                Ok(ended) => ended,
            };
            if n > 0 && tx.send(Ok(Msg::Data(buf))).is_err() {
                return; // the reader has gone away
            }
            if ended {
                let _ = tx.send(Ok(Msg::End));
                return;
            }
        }
    })?;
    Ok(Staged {
        rx: Some(rx),
        recycle: Some(recycle),
        block: Vec::new(),
        pos: 0,
        ended: false,
        failed: false,
        name: name.to_string(),
        thread: Some(thread),
    })
}

impl Read for Staged {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.block.len() {
            if self.failed {
                return Err(io::Error::other(format!("the {} stage stopped on an error", self.name)));
            }
            if self.ended {
                return Ok(0);
            }
            let rx = self.rx.as_ref().expect("present until dropped");
            match rx.recv() {
                Ok(Ok(Msg::Data(b))) => {
                    let old = std::mem::replace(&mut self.block, b);
                    if let Some(r) = &self.recycle {
                        let _ = r.try_send(old);
                    }
                    self.pos = 0;
                }
                Ok(Ok(Msg::End)) => self.ended = true,
                Ok(Err(e)) => {
                    // The stage has stopped; a later read must not look like the end.
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => {
                    return Err(io::Error::other(format!("the {} stage ended without finishing its stream", self.name)))
                }
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Closing the channel stops a stage still sending; then it is waited for, so that
        // nothing of it outlives its reader.
        self.rx = None;
        self.recycle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in small reads, then fails with `error` if set.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        error: Option<&'static str>,
    }

    impl Read for Source {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return match self.error.take() {
                    Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    None => Ok(0),
                };
            }
            let n = out.len().min(7919).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn two_stages_yield_exactly_what_the_source_yields() {
        for len in [0, 1, 4095, 4096, 4097, 100_000] {
            let src = Source { data: data(len), pos: 0, error: None };
            let first = stage("first", src, 4096, 2).unwrap();
            let mut second = stage("second", first, 1000, 3).unwrap();
            let mut out = Vec::new();
            second.read_to_end(&mut out).unwrap();
            assert_eq!(out, data(len), "len {len}");
            assert_eq!(second.read(&mut [0u8; 10]).unwrap(), 0, "the end stays the end");
        }
    }

    #[test]
    fn an_error_reaches_the_reader_as_raised_and_is_never_taken_for_the_end() {
        let src = Source { data: data(50_000), pos: 0, error: Some("data: chunk 3: authentication failed") };
        let mut s = stage("second", stage("first", src, 4096, 2).unwrap(), 4096, 2).unwrap();
        let mut out = Vec::new();
        let err = s.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.to_string(), "data: chunk 3: authentication failed");
        assert!(out.len() <= 50_000);
        assert!(s.read(&mut [0u8; 10]).is_err(), "a read after the error is an error too");
    }

    #[test]
    fn a_stage_that_dies_is_an_error_and_a_reader_that_stops_early_stops_the_stages() {
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("source failed")
            }
        }
        let mut s = stage("dies", Panics, 4096, 2).unwrap();
        assert!(s.read(&mut [0u8; 10]).unwrap_err().to_string().contains("without finishing"));

        // An endless source: dropping the reader must end its thread (drop joins it).
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                out.fill(1);
                Ok(out.len())
            }
        }
        let mut s = stage("endless", Endless, 4096, 2).unwrap();
        let mut buf = [0u8; 10_000];
        s.read_exact(&mut buf).unwrap();
        drop(s);
    }
}
