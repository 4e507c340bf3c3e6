//! Passes keel-vmm's stdout (the guest console) and stderr (its log) to
//! the test bed's stdout a whole line at a time. Both end up on L1's one
//! serial port, and written as they come a log line would land in the
//! middle of a guest's report line, which the tests then cannot parse.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A line still unfinished after this long (a prompt), in ms, goes out
/// as it is.
const PARTIAL_AFTER_MS: u16 = 300;
/// A line longer than this goes out in pieces.
const MAX_LINE: usize = 4096;
/// How long [`drain`] waits for the output of VMMs that ended.
const DRAIN_PATIENCE: Duration = Duration::from_secs(2);

static FORWARDERS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn emit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Copies `from` to stdout line by line until it ends, on a thread of
/// its own.
pub fn forward<R: Read + AsFd + Send + 'static>(mut from: R) {
    let thread = std::thread::spawn(move || {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let readable = {
                let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                let timeout = if pending.is_empty() {
                    PollTimeout::NONE
                } else {
                    PollTimeout::from(PARTIAL_AFTER_MS)
                };
                !matches!(poll(&mut fds, timeout), Ok(0))
            };
            if !readable {
                emit(&pending);
                pending.clear();
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&buf[..n]);
            if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                emit(&pending[..=end]);
                pending.drain(..=end);
            } else if pending.len() >= MAX_LINE {
                emit(&pending);
                pending.clear();
            }
        }
        emit(&pending);
    });
    FORWARDERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(thread);
}

/// Waits (briefly) until what VMMs that ended printed is out, so a
/// run's report follows its output.
pub fn drain() {
    let deadline = Instant::now() + DRAIN_PATIENCE;
    let mut forwarders = FORWARDERS.lock().unwrap_or_else(PoisonError::into_inner);
    while forwarders.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (done, running): (Vec<_>, Vec<_>) = forwarders.drain(..).partition(|t| t.is_finished());
    *forwarders = running;
    for thread in done {
        let _ = thread.join();
    }
}
