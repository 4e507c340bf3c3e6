//! Where guest console output goes: the VMM's stdout, a size-capped log
//! file ([`log`]), and control-socket clients that attached to it.
//!
//! Output arrives on the vCPU thread that writes the UART, so nothing here
//! may wait for a client: each gets the output as `Console` frames through
//! its [`Peer`], and a client too far behind misses output (counted in
//! [`ConsoleSinks::dropped_bytes`]) rather than stalling the guest.

mod log;

use std::io::Write;
use std::sync::Arc;

use keel_common::vmm_api::{write_frame, VmmResponse};

pub use self::log::CappedLog;
use crate::control::peer::{Peer, Sent};

#[derive(Default)]
pub struct ConsoleSinks {
    stdout: bool,
    log: Option<CappedLog>,
    clients: Vec<Arc<Peer>>,
    dropped_bytes: u64,
}

impl ConsoleSinks {
    /// Output to stdout if `stdout`, and to `log` if given.
    pub fn new(stdout: bool, log: Option<CappedLog>) -> Self {
        ConsoleSinks {
            stdout,
            log,
            ..Default::default()
        }
    }

    /// Starts sending output to `client`.
    pub fn attach(&mut self, client: Arc<Peer>) {
        self.clients.push(client);
    }

    /// Stops sending output to `client`.
    pub fn detach(&mut self, client: &Arc<Peer>) {
        self.clients.retain(|c| !Arc::ptr_eq(c, client));
    }

    /// Bytes of output that attached clients missed because they were too
    /// far behind, summed over clients.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    pub fn write(&mut self, data: &[u8]) {
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        if let Some(log) = self.log.as_mut() {
            if let Err(err) = log.write(data) {
                ::log::warn!("console log write failed ({err}); logging stopped");
                self.log = None;
            }
        }
        if self.clients.is_empty() {
            return;
        }
        let mut frame = Vec::new();
        if let Err(err) = write_frame(&mut frame, &VmmResponse::Console(data.to_vec())) {
            ::log::warn!("cannot encode console output for clients: {err}");
            return;
        }
        let dropped = &mut self.dropped_bytes;
        // A client whose connection failed is let go; the control server
        // notices the hang-up on its own.
        self.clients.retain(|client| match client.send(&frame) {
            Ok(Sent::Accepted) => true,
            Ok(Sent::Dropped) => {
                *dropped += data.len() as u64;
                true
            }
            Err(_) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::serial::SerialDevice;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn a_client_that_never_reads_does_not_block_serial_output() {
        const BYTES: u32 = 200_000;
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        let slow = Arc::new(Peer::new(ours).expect("peer"));
        let sinks = Arc::new(Mutex::new(ConsoleSinks::default()));
        sinks.lock().expect("sinks").attach(slow.clone());
        let mut serial = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).expect("irq"),
            sinks.clone(),
        );
        // Far more than the client's socket buffer and queue hold; each
        // UART write is one console frame.
        let started = Instant::now();
        for i in 0..BYTES {
            serial.write(0, &[b'a' + (i % 26) as u8]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serial output took {:?}",
            started.elapsed()
        );
        let dropped = sinks.lock().expect("sinks").dropped_bytes();
        assert!(dropped > 0, "nothing was dropped for the slow client");
        assert!(dropped < u64::from(BYTES), "the client got nothing at all");
        assert_eq!(
            sinks.lock().expect("sinks").clients.len(),
            1,
            "still attached"
        );
        // What the client does get, once it reads, is whole frames.
        theirs.set_nonblocking(true).expect("nonblocking");
        let mut wire = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            slow.flush().expect("flush");
            match theirs.read(&mut buf) {
                Ok(n) if n > 0 => wire.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if slow.is_flushed() {
                        break;
                    }
                }
                other => panic!("read: {other:?}"),
            }
        }
        let mut frames = wire.as_slice();
        let mut got = 0u64;
        while !frames.is_empty() {
            match keel_common::vmm_api::read_frame(&mut frames) {
                Ok(VmmResponse::Console(bytes)) => got += bytes.len() as u64,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got + dropped, u64::from(BYTES));
    }
}
