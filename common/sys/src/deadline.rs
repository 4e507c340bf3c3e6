//! One absolute deadline for a whole exchange on a stream: every read and
//! write gets only the time left, so a peer trickling a byte now and then
//! cannot stretch the exchange past it the way a per-read timeout allows.
//! [`connect_unix`] bounds the connect too: a Unix socket whose listener
//! never accepts blocks `connect` once its backlog is full.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::unix_connect::Mode;

/// A stream whose reads and writes can time out.
pub trait TimeoutStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! timeout_stream {
    ($t:ty) => {
        impl TimeoutStream for $t {
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, timeout)
            }
            fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, timeout)
            }
            fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
                (&mut &*self).read(buf)
            }
            fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
                (&mut &*self).write(buf)
            }
        }
    };
}

timeout_stream!(TcpStream);
timeout_stream!(UnixStream);

/// `stream` with every read and write due by one instant.
pub struct Deadline<'a, S: TimeoutStream> {
    stream: &'a S,
    at: Instant,
}

impl<'a, S: TimeoutStream> Deadline<'a, S> {
    pub fn new(stream: &'a S, within: Duration) -> Self {
        Deadline {
            stream,
            at: Instant::now() + within,
        }
    }

    /// The time left, or `TimedOut` once the deadline has passed.
    fn left(&self) -> io::Result<Duration> {
        time_left(self.at)
    }
}

fn time_left(at: Instant) -> io::Result<Duration> {
    let left = at.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer did not answer in time",
        ));
    }
    Ok(left)
}

/// A timeout shows as `WouldBlock` from a socket: said as what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the peer did not answer in time")
    } else {
        e
    }
}

impl<S: TimeoutStream> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read_some(buf).map_err(timed_out)
    }
}

impl<S: TimeoutStream> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write_some(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to the Unix stream socket at `path`, giving up after `within`
/// (a listener that does not accept fills its backlog, and then `connect`
/// waits for room; Linux bounds that wait by the send timeout).
pub fn connect_unix(path: &Path, within: Duration) -> io::Result<UnixStream> {
    let stream = crate::unix_connect::connect(path, Mode::Blocking, |s| {
        // A zero timeout would mean none: at least a microsecond.
        s.set_write_timeout(Some(within.max(Duration::from_micros(1))))
    })
    .map_err(timed_out)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

#[cfg(test)]
mod tests;
