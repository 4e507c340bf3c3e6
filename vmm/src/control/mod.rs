//! The control socket: pause, resume, shutdown, kill, info, stats and
//! console attach, as postcard frames (see `keel_common::vmm_api`).
//!
//! The event loop owns the listener and the connections, all non-blocking
//! and polled by its epoll: a connection's bytes are gathered until a
//! frame is whole, requests are carried out inline ([`requests`]), and
//! answers go out through the connection's [`Peer`] without waiting for
//! the client. A client that sends nothing, or half a frame, holds up no
//! one; one that sends a malformed frame or does not read its answers is
//! dropped.

pub mod peer;
mod requests;

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_common::vmm_api::{read_frame, VmmRequest};
use vmm_sys_util::epoll::EventSet;

use self::peer::Peer;
pub use self::requests::VmControl;

/// How the event loop's epoll set must change after handling an event.
pub enum FdChange {
    /// Register `fd` for `events` under control id `id`.
    Add {
        fd: RawFd,
        id: u32,
        events: EventSet,
    },
    /// Take the connection out of the epoll set, then drop it. The order
    /// matters: the socket stays open while anything still holds the peer,
    /// and epoll would go on reporting it.
    Remove(Arc<Peer>),
}

/// The listener's id; connections get the others.
const LISTENER: u32 = 0;

/// How much is read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection: its peer, and bytes of a frame not yet whole.
struct Connection {
    peer: Arc<Peer>,
    input: Vec<u8>,
}

pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    connections: HashMap<u32, Connection>,
    next_id: u32,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket) with mode 0600: only the
    /// supervisor, running as the same user, may control the VM.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener,
            connections: HashMap::new(),
            next_id: LISTENER + 1,
        })
    }

    /// The descriptors to poll at start: only the listener.
    pub fn fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.listener.as_raw_fd(), LISTENER)]
    }

    /// Handles readiness of `id`. Never blocks.
    pub fn handle(&mut self, id: u32, vm: &impl VmControl) -> Vec<FdChange> {
        if id == LISTENER {
            return self.accept();
        }
        let Some(connection) = self.connections.get_mut(&id) else {
            return Vec::new();
        };
        // Registered for both directions, edge-triggered: write out what
        // waits, then read until the socket is empty.
        if connection.peer.flush().is_err() {
            return self.drop_connection(id, vm);
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match connection.peer.read(&mut chunk) {
                Ok(0) => return self.drop_connection(id, vm),
                Ok(n) => {
                    connection.input.extend_from_slice(&chunk[..n]);
                    if !serve(connection, vm) {
                        return self.drop_connection(id, vm);
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Vec::new(),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("control socket: dropping a client: {err}");
                    return self.drop_connection(id, vm);
                }
            }
        }
    }

    fn accept(&mut self) -> Vec<FdChange> {
        let mut changes = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let peer = match Peer::new(stream) {
                        Ok(peer) => Arc::new(peer),
                        Err(err) => {
                            log::warn!("control socket: cannot set up a client: {err}");
                            continue;
                        }
                    };
                    let id = self.allocate_id();
                    changes.push(FdChange::Add {
                        fd: peer.as_raw_fd(),
                        id,
                        events: EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
                    });
                    self.connections.insert(
                        id,
                        Connection {
                            peer,
                            input: Vec::new(),
                        },
                    );
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => {
                    log::warn!("control socket: accept failed: {err}");
                    break;
                }
            }
        }
        changes
    }

    /// An id no connection holds: counting up, wrapping past the listener.
    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(LISTENER + 1);
            if !self.connections.contains_key(&id) {
                return id;
            }
        }
    }

    fn drop_connection(&mut self, id: u32, vm: &impl VmControl) -> Vec<FdChange> {
        match self.connections.remove(&id) {
            Some(connection) => {
                vm.detach_console(&connection.peer);
                vec![FdChange::Remove(connection.peer)]
            }
            None => Vec::new(),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Carries out every whole request in the connection's input. False when
/// the connection must be dropped.
fn serve(connection: &mut Connection, vm: &impl VmControl) -> bool {
    let mut consumed = 0;
    let keep = loop {
        let mut reader = Gathered::new(connection.input.get(consumed..).unwrap_or_default());
        match read_frame::<_, VmmRequest>(&mut reader) {
            Ok(request) => {
                consumed += reader.used;
                if !requests::serve(request, vm, &connection.peer) {
                    break false;
                }
            }
            // Not whole yet: wait for more bytes.
            Err(_) if reader.ran_dry => break true,
            Err(err) => {
                log::warn!("control socket: dropping a client: {err}");
                break false;
            }
        }
    };
    connection.input.drain(..consumed);
    keep
}

/// The bytes gathered so far, read as if they were the socket, noting
/// whether the frame reader wanted more than there is.
struct Gathered<'a> {
    data: &'a [u8],
    used: usize,
    ran_dry: bool,
}

impl<'a> Gathered<'a> {
    fn new(data: &'a [u8]) -> Self {
        Gathered {
            data,
            used: 0,
            ran_dry: false,
        }
    }
}

impl Read for Gathered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.data.get(self.used..).unwrap_or_default();
        if rest.is_empty() && !buf.is_empty() {
            self.ran_dry = true;
            return Ok(0);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.used += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
