//! The host side of the device, after Firecracker's vsock muxer: the
//! listening socket and the table of connections. Their sockets are in the
//! VMM's event loop's epoll set, registered through the device's
//! [`DeviceEvents`] with the descriptor number as id; the event loop hands
//! their readiness to [`Muxer::host_event`].
//!
//! Guest packets come in through [`Muxer::handle_guest_packet`]; packets
//! for the guest come out of [`Muxer::next_packet`], one per receive
//! buffer, in this order: resets first, then connections round-robin.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use vmm_sys_util::epoll::EventSet;

use super::connection::{ConnState, Connection, Next};
use super::packet::{
    PacketHeader, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, TYPE_STREAM,
};
use super::HOST_CID;
use crate::devices::events::DeviceEvents;

/// Most connections open at once, counting host clients that have not sent
/// their `CONNECT` line yet. Each may hold up to `CONN_BUF_ALLOC` bytes the
/// host has not read.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest `CONNECT <port>\n` line accepted.
const MAX_CONNECT_LINE: usize = 32;

/// Resets waiting for a receive buffer. Those for connections we close
/// always fit; a guest sending garbage faster than it reads the answers
/// loses some of the answers.
const MAX_PENDING_RESETS: usize = 2 * MAX_CONNECTIONS;

/// First port handed to host-initiated connections, as in Firecracker:
/// high enough to stay clear of the services guests listen on.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// (host side port, guest side port): what identifies a stream, given that
/// the CIDs are fixed.
type ConnKey = (u32, u32);

#[derive(Default)]
pub struct MuxerCounters {
    pub guest_connections: u64,
    pub host_connections: u64,
    pub refused_connections: u64,
    pub resets_sent: u64,
    pub resets_dropped: u64,
    pub bad_cid: u64,
}

/// A host client that connected to `uds_path` but has not said which
/// guest port it wants.
struct HostPending {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The listening socket; its file goes away with it.
struct Listener {
    socket: UnixListener,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct Muxer {
    guest_cid: u64,
    listener: Listener,
    /// The event loop's set, once the device registered with it.
    events: Option<DeviceEvents>,
    conns: HashMap<ConnKey, Connection>,
    fd_keys: HashMap<RawFd, ConnKey>,
    pending_hosts: HashMap<RawFd, HostPending>,
    /// Connections that may have a packet for the guest, in service order.
    ready: VecDeque<ConnKey>,
    /// Resets owed to the guest, as (host port, guest port).
    resets: VecDeque<ConnKey>,
    next_local_port: u32,
    max_connections: usize,
    pub counters: MuxerCounters,
}

impl Muxer {
    /// Listens on `uds_path` (which must not exist) for host clients.
    /// Nothing is accepted before [`Muxer::register_events`].
    pub fn new(guest_cid: u64, uds_path: &Path) -> io::Result<Self> {
        let socket = UnixListener::bind(uds_path)?;
        let listener = Listener {
            socket,
            path: uds_path.to_path_buf(),
        };
        listener.socket.set_nonblocking(true)?;
        Ok(Muxer {
            guest_cid,
            listener,
            events: None,
            conns: HashMap::new(),
            fd_keys: HashMap::new(),
            pending_hosts: HashMap::new(),
            ready: VecDeque::new(),
            resets: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            max_connections: MAX_CONNECTIONS,
            counters: MuxerCounters::default(),
        })
    }

    /// Registers the listener with the event loop (edge-triggered: every
    /// event accepts until the backlog is empty) and keeps `events` for
    /// the connection sockets to come.
    pub fn register_events(&mut self, events: DeviceEvents) -> io::Result<()> {
        let fd = self.listener.socket.as_raw_fd();
        events.add(fd, event_id(fd), EventSet::IN | EventSet::EDGE_TRIGGERED)?;
        self.events = Some(events);
        Ok(())
    }

    /// Open connections, host clients still handshaking included.
    pub fn connection_count(&self) -> usize {
        self.conns.len() + self.pending_hosts.len()
    }

    #[cfg(test)]
    pub fn set_max_connections(&mut self, max: usize) {
        self.max_connections = max;
    }

    /// Closes every connection and forgets the resets owed, as at device
    /// reset: what is left is a freshly created muxer. The listener stays.
    pub fn reset(&mut self) {
        self.next_local_port = FIRST_LOCAL_PORT;
        let fds: Vec<RawFd> = self
            .fd_keys
            .keys()
            .chain(self.pending_hosts.keys())
            .copied()
            .collect();
        for fd in fds {
            self.unregister(fd);
        }
        self.conns.clear();
        self.fd_keys.clear();
        self.pending_hosts.clear();
        self.ready.clear();
        self.resets.clear();
    }

    /// Whether `next_packet` may have something.
    pub fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || !self.ready.is_empty()
    }

    /// A host socket registered as `id` signalled `events`. Ids are the
    /// descriptor numbers; one that is no longer ours (closed while the
    /// event was in flight) is ignored.
    pub fn host_event(&mut self, id: u32, events: EventSet) {
        let Ok(fd) = RawFd::try_from(id) else {
            return;
        };
        if fd == self.listener.socket.as_raw_fd() {
            self.accept_all();
        } else if self.pending_hosts.contains_key(&fd) {
            self.read_connect_line(fd);
        } else if let Some(&key) = self.fd_keys.get(&fd) {
            if let Some(conn) = self.conns.get_mut(&key) {
                if let Err(e) = conn.host_event(events) {
                    debug!("virtio-vsock: resetting {key:?}: {e}");
                    self.kill(key);
                    return;
                }
            }
            self.settle(key);
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.socket.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // E.g. out of fds; the client stays in the backlog and
                    // the next connection attempt retries.
                    warn!("virtio-vsock: cannot accept a host connection: {e}");
                    return;
                }
            };
            if self.connection_count() >= self.max_connections {
                debug!("virtio-vsock: refusing a host connection: the table is full");
                self.counters.refused_connections += 1;
                continue;
            }
            let fd = stream.as_raw_fd();
            if let Err(e) = stream
                .set_nonblocking(true)
                .and_then(|()| self.register(fd))
            {
                warn!("virtio-vsock: cannot watch a host connection: {e}");
                continue;
            }
            self.pending_hosts.insert(
                fd,
                HostPending {
                    stream,
                    line: Vec::new(),
                },
            );
            // The line may be there already.
            self.read_connect_line(fd);
        }
    }

    /// Reads a pending client's `CONNECT <port>\n` a byte at a time, so as
    /// not to swallow stream data behind it, and opens the connection to
    /// the guest once it is complete.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some(pending) = self.pending_hosts.get_mut(&fd) else {
            return;
        };
        let port = loop {
            let mut byte = [0u8; 1];
            match pending.stream.read(&mut byte) {
                Ok(0) => break None,
                Ok(_) if byte[0] == b'\n' => break parse_connect(&pending.line),
                Ok(_) if pending.line.len() >= MAX_CONNECT_LINE => break None,
                Ok(_) => pending.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let Some(pending) = self.pending_hosts.remove(&fd) else {
            return;
        };
        let Some(peer_port) = port else {
            debug!("virtio-vsock: closing a host client without a valid CONNECT line");
            self.unregister(fd);
            self.counters.refused_connections += 1;
            return;
        };
        let Some(local_port) = self.allocate_local_port(peer_port) else {
            self.unregister(fd);
            self.counters.refused_connections += 1;
            return;
        };
        let key = (local_port, peer_port);
        let conn = Connection::host_initiated(pending.stream, local_port, peer_port);
        self.conns.insert(key, conn);
        self.fd_keys.insert(fd, key);
        self.counters.host_connections += 1;
        self.settle(key);
    }

    fn allocate_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=self.conns.len() {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(port, peer_port)) {
                return Some(port);
            }
        }
        None
    }

    /// Handles one packet from the guest. `payload` holds `header.len`
    /// bytes.
    pub fn handle_guest_packet(&mut self, header: &PacketHeader, payload: &[u8]) {
        if header.src_cid != self.guest_cid || header.dst_cid != HOST_CID {
            debug!(
                "virtio-vsock: dropping a packet from CID {} to CID {}",
                header.src_cid, header.dst_cid
            );
            self.counters.bad_cid += 1;
            return;
        }
        let key = (header.dst_port, header.src_port);
        if header.type_ != TYPE_STREAM {
            debug!(
                "virtio-vsock: resetting a packet of socket type {}",
                header.type_
            );
            if header.op != OP_RST {
                self.kill(key);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match header.op {
                OP_REQUEST => self.guest_connect(header),
                // Never answer a reset with a reset.
                OP_RST => {}
                _ => self.kill(key),
            }
            return;
        };
        conn.update_peer_credit(header);
        let result = match header.op {
            OP_RESPONSE if conn.state == ConnState::Connecting => conn.accept_response(header),
            OP_RW => conn.from_guest(payload),
            OP_SHUTDOWN => conn.guest_shutdown(header.flags),
            OP_CREDIT_REQUEST => {
                conn.credit_requested_by_guest();
                Ok(())
            }
            // The credit was taken above.
            OP_CREDIT_UPDATE => Ok(()),
            OP_RST => {
                self.forget(key);
                return;
            }
            op => {
                debug!("virtio-vsock: resetting {key:?} on unexpected op {op}");
                self.kill(key);
                return;
            }
        };
        if let Err(e) = result {
            debug!("virtio-vsock: resetting {key:?}: {e}");
            self.kill(key);
            return;
        }
        self.settle(key);
    }

    /// A packet whose header is readable but whose payload is not: the
    /// stream it names is reset (closed without a reply if it was a reset).
    pub fn reset_stream(&mut self, header: &PacketHeader) {
        if header.src_cid != self.guest_cid || header.dst_cid != HOST_CID {
            self.counters.bad_cid += 1;
            return;
        }
        let key = (header.dst_port, header.src_port);
        if header.op == OP_RST {
            self.forget(key);
        } else {
            self.kill(key);
        }
    }

    /// A guest REQUEST: connect to the host service at `{uds_path}_{port}`.
    fn guest_connect(&mut self, header: &PacketHeader) {
        let key = (header.dst_port, header.src_port);
        if self.connection_count() >= self.max_connections {
            debug!("virtio-vsock: refusing a guest connection: the table is full");
            self.counters.refused_connections += 1;
            self.kill(key);
            return;
        }
        let mut path = OsString::from(self.listener.path.as_os_str());
        path.push(format!("_{}", header.dst_port));
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                debug!(
                    "virtio-vsock: guest connection to {} refused: {e}",
                    Path::new(&path).display()
                );
                self.counters.refused_connections += 1;
                self.kill(key);
                return;
            }
        };
        let fd = stream.as_raw_fd();
        if let Err(e) = self.register(fd) {
            warn!("virtio-vsock: cannot watch a host connection: {e}");
            self.kill(key);
            return;
        }
        self.conns
            .insert(key, Connection::guest_initiated(stream, header));
        self.fd_keys.insert(fd, key);
        self.counters.guest_connections += 1;
        self.settle(key);
    }

    /// Brings a connection's epoll interest and ready-list membership in
    /// line with its state, and closes it once it is finished.
    fn settle(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.finished() {
            self.kill(key);
            return;
        }
        if conn.wants_out() != conn.out_registered {
            let fd = conn.stream.as_raw_fd();
            let result = match &self.events {
                Some(events) => events.modify(fd, event_id(fd), interest(conn.wants_out())),
                None => Err(not_registered()),
            };
            match result {
                Ok(()) => conn.out_registered = conn.wants_out(),
                Err(e) => warn!("virtio-vsock: cannot update the epoll interest: {e}"),
            }
        }
        if conn.has_rx_work() && !conn.queued {
            conn.queued = true;
            self.ready.push_back(key);
        }
    }

    /// The next packet for the guest, with at most `buf.len()` payload
    /// bytes, which it leaves at the start of `buf`.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<(PacketHeader, usize)> {
        // Each queued connection gets one try, so that one that cannot use
        // a buffer this small does not spin.
        let mut tries = self.ready.len();
        loop {
            if let Some((local_port, peer_port)) = self.resets.pop_front() {
                self.counters.resets_sent += 1;
                let header = PacketHeader {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: local_port,
                    dst_port: peer_port,
                    type_: TYPE_STREAM,
                    op: OP_RST,
                    ..PacketHeader::default()
                };
                return Some((header, 0));
            }
            if tries == 0 {
                return None;
            }
            tries -= 1;
            let key = self.ready.pop_front()?;
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            match conn.next_packet(buf) {
                Next::Packet { op, flags, len } => {
                    let header = conn.header(self.guest_cid, op, flags, len);
                    self.settle(key);
                    return Some((header, len));
                }
                Next::Nothing => self.settle(key),
                Next::Fatal(e) => {
                    debug!("virtio-vsock: resetting {key:?}: {e}");
                    self.kill(key);
                }
            }
        }
    }

    /// Closes a connection (if there is one) and owes the guest a reset.
    fn kill(&mut self, key: ConnKey) {
        self.forget(key);
        if self.resets.len() < MAX_PENDING_RESETS {
            self.resets.push_back(key);
        } else {
            self.counters.resets_dropped += 1;
        }
    }

    /// Closes a connection without telling the guest.
    fn forget(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            let fd = conn.stream.as_raw_fd();
            self.fd_keys.remove(&fd);
            self.unregister(fd);
        }
    }

    fn register(&self, fd: RawFd) -> io::Result<()> {
        self.events
            .as_ref()
            .ok_or_else(not_registered)?
            .add(fd, event_id(fd), interest(false))
    }

    fn unregister(&self, fd: RawFd) {
        if let Some(events) = &self.events {
            // Failing only if it was never added: nothing to undo.
            let _ = events.remove(fd);
        }
    }
}

/// The id a socket is registered with: its descriptor number, which is
/// never negative.
fn event_id(fd: RawFd) -> u32 {
    fd.unsigned_abs()
}

fn not_registered() -> io::Error {
    io::Error::other("the device is not registered with the event loop")
}

/// Edge-triggered, so that a socket we cannot serve yet (no credit, no
/// guest buffers) does not keep the event loop awake; what it signalled is
/// remembered in the connection instead.
fn interest(out: bool) -> EventSet {
    let mut events = EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
    if out {
        events |= EventSet::OUT;
    }
    events
}

/// `CONNECT <port>` (the newline already stripped; a trailing CR allowed).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

/// Connects to a Unix socket without blocking: a host service whose
/// backlog is full refuses the guest instead of stalling the VMM.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    keel_sys::unix_connect::connect(path, keel_sys::unix_connect::Mode::NonBlocking, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT -1"), None);
        assert_eq!(parse_connect(b"CONNECT 5x"), None);
        assert_eq!(parse_connect(b"\xff\xfe"), None);
    }

    #[test]
    fn paths_that_do_not_fit_are_refused() {
        let long = "/tmp/".to_string() + &"x".repeat(200);
        assert_eq!(
            connect_nonblocking(Path::new(&long))
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
    }
}
