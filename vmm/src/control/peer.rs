//! One control-socket client: a non-blocking stream and the bytes of
//! frames still waiting to go out on it.
//!
//! Whoever sends (the event loop answering a request, a vCPU thread
//! copying console output) writes what the socket takes at once and queues
//! the rest; the event loop writes the queue out when the socket becomes
//! writable again. Nobody ever waits for the client. Frames are queued or
//! dropped whole, so the client never sees half of one.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};

/// How many bytes may wait for a client that reads slower than we write.
/// The socket's own buffer (some 200 KiB) comes on top.
pub const MAX_PENDING: usize = 64 * 1024;

/// What became of a frame given to [`Peer::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written, or queued to be written in order.
    Accepted,
    /// Not sent at all: the client is too far behind.
    Dropped,
}

pub struct Peer {
    stream: UnixStream,
    pending: Mutex<Vec<u8>>,
}

impl Peer {
    /// Wraps an accepted client, making its socket non-blocking.
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Peer {
            stream,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Sends one encoded frame without blocking: what the socket does not
    /// take now is queued behind earlier frames, unless the queue is full,
    /// in which case the frame is dropped whole. An error means the
    /// connection is gone.
    pub fn send(&self, frame: &[u8]) -> io::Result<Sent> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_empty() {
            let written = write_some(&self.stream, frame)?;
            pending.extend_from_slice(frame.get(written..).unwrap_or_default());
            return Ok(Sent::Accepted);
        }
        if pending.len() + frame.len() > MAX_PENDING {
            return Ok(Sent::Dropped);
        }
        pending.extend_from_slice(frame);
        flush_locked(&self.stream, &mut pending)?;
        Ok(Sent::Accepted)
    }

    /// Writes out as much of the queue as the socket takes now.
    pub fn flush(&self) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        flush_locked(&self.stream, &mut pending)
    }

    /// Reads what has arrived, without blocking (`WouldBlock` when nothing
    /// has).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.stream).read(buf)
    }
}

#[cfg(test)]
impl Peer {
    /// True when nothing waits to be written.
    pub(crate) fn is_flushed(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

impl AsRawFd for Peer {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// Writes from `data` until the socket is full; returns how much went.
fn write_some(mut stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while let Some(rest) = data.get(written..).filter(|rest| !rest.is_empty()) {
        match stream.write(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

fn flush_locked(stream: &UnixStream, pending: &mut Vec<u8>) -> io::Result<()> {
    let written = write_some(stream, pending)?;
    pending.drain(..written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_does_not_read_gets_whole_frames_until_it_is_too_far_behind() {
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let peer = Peer::new(ours).expect("peer");
        let frame = [7u8; 1000];
        let mut accepted = 0usize;
        // Fill the socket buffer and the queue; nothing blocks.
        while peer.send(&frame).expect("send") == Sent::Accepted {
            accepted += 1;
            assert!(accepted < 10_000, "the queue is unbounded");
        }
        assert_eq!(peer.send(&frame).expect("send"), Sent::Dropped);
        // The client catches up: everything accepted arrives, in whole
        // frames, once the queue is flushed.
        theirs.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            peer.flush().expect("flush");
            match theirs.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if peer.is_flushed() {
                        break;
                    }
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got.len(), accepted * frame.len());
        assert!(got.iter().all(|&b| b == 7));
        assert_eq!(peer.send(&frame).expect("send"), Sent::Accepted);
    }

    #[test]
    fn a_closed_client_is_an_error() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let peer = Peer::new(ours).expect("peer");
        drop(theirs);
        assert!(peer.send(b"frame").is_err());
    }
}
