//! TCP NAT glue: each guest connection is terminated by a smoltcp TCP
//! socket and carried on over an ordinary non-blocking host socket.
//!
//! smoltcp speaks TCP to the guest (handshake, window scaling, windows,
//! retransmission, delayed ACKs, FIN and RST). What is ours:
//!
//! - A guest SYN opening a new flow is held back while the host connect
//!   runs. Once it succeeds, a socket listening on exactly the address the
//!   guest dialled is created and the SYN handed to smoltcp, which answers
//!   SYN-ACK. If it fails, the SYN goes to smoltcp with nothing listening
//!   and smoltcp answers RST, so the guest sees "connection refused".
//!   So does a connection that reached the host itself when the outbound
//!   rule ([`policy`](super::policy)) did not mean it to: its local address
//!   is its peer's.
//! - Bytes are shovelled between the two sockets only as far as the other
//!   side takes them: guest data stays in the smoltcp receive buffer
//!   (closing the window) while the host socket is full, and the host
//!   socket is read only as far as the smoltcp send buffer has room.
//! - Half-closes are passed on both ways; a host error aborts (RST).
//! - Inbound forwards: an accepted host connection gets a smoltcp socket
//!   connecting to the guest from a gateway port.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::IpListenEndpoint;
use vmm_sys_util::epoll::EventSet;

use super::link::Stack;
use super::{Poller, GATEWAY_IP, GUEST_IP};

/// Connections at once, including those still connecting on the host;
/// further SYNs are refused with RST.
pub const MAX_CONNS: usize = 1024;
/// Each smoltcp socket's receive and send buffer: the window offered to
/// the guest, and the host data read ahead of the guest's ACKs.
const BUF_LEN: usize = 256 * 1024;
/// A guest that leaves data unacknowledged this long loses the connection.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where a new guest connection goes on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub to: SocketAddrV4,
    /// The host itself is meant (a listed port on the gateway).
    pub host: bool,
}

/// A connection as the guest sees it: its port and the remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub guest_port: u16,
    pub remote: SocketAddrV4,
}

enum Phase {
    /// The host connect is in progress; the guest's SYN waits here.
    Connecting { syn: Vec<u8>, host: bool },
    Open {
        handle: SocketHandle,
        /// The host sent EOF (and the smoltcp socket was closed).
        host_eof: bool,
        /// The guest's FIN was passed on (host socket shut for writing).
        host_shut: bool,
    },
}

struct Flow {
    stream: TcpStream,
    token: u64,
    phase: Phase,
}

/// All TCP connections between the guest and the host.
pub struct TcpNat {
    flows: HashMap<Key, Flow>,
    by_token: HashMap<u64, Key>,
    next_gw_port: u16,
}

fn new_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUF_LEN]),
        tcp::SocketBuffer::new(vec![0; BUF_LEN]),
    );
    // The link is a memory queue: coalescing small writes only adds latency.
    s.set_nagle_enabled(false);
    s.set_timeout(Some(TIMEOUT.into()));
    s
}

/// The guest has sent its FIN (or the connection is over).
fn guest_closed(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    )
}

/// Nothing more to do on this connection: forgotten (a socket in
/// TIME-WAIT has nothing left to carry, and LISTEN here means the SYN it
/// was made for was not taken).
fn finished(state: State) -> bool {
    matches!(state, State::Closed | State::TimeWait | State::Listen)
}

impl TcpNat {
    pub fn new() -> Self {
        TcpNat {
            flows: HashMap::new(),
            by_token: HashMap::new(),
            next_gw_port: 40_000,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn owns(&self, token: u64) -> bool {
        self.by_token.contains_key(&token)
    }

    fn remove(&mut self, key: &Key, stack: &mut Stack) {
        if let Some(flow) = self.flows.remove(key) {
            self.by_token.remove(&flow.token);
            if let Phase::Open { handle, .. } = flow.phase {
                stack.sockets.remove(handle);
            }
        }
    }

    /// A valid TCP segment from the guest to `key.remote` in `frame`;
    /// `syn` if it is a bare SYN (opening a connection), `rst` if it
    /// resets one. `target` is where a new connection goes on the host,
    /// `None` for nowhere (smoltcp refuses it with RST).
    #[allow(clippy::too_many_arguments)]
    pub fn on_guest_segment(
        &mut self,
        key: Key,
        syn: bool,
        rst: bool,
        target: Option<Target>,
        frame: &[u8],
        stack: &mut Stack,
        poller: &mut Poller,
    ) {
        if let Some(flow) = self.flows.get(&key) {
            match flow.phase {
                // SYN retransmissions wait with the first; a reset cancels.
                Phase::Connecting { .. } => {
                    if rst {
                        self.remove(&key, stack);
                    }
                    return;
                }
                Phase::Open { handle, .. } => {
                    let state = stack.sockets.get::<tcp::Socket>(handle).state();
                    if !(syn && finished(state)) {
                        stack.poll(Some(frame));
                        self.service(&key, stack);
                        return;
                    }
                    // A new connection reusing the port of a finished one.
                    self.remove(&key, stack);
                }
            }
        }
        if !syn {
            // No connection: smoltcp resets it (or ignores an RST).
            stack.poll(Some(frame));
            return;
        }
        let Some(target) = target.filter(|_| self.flows.len() < MAX_CONNS) else {
            stack.poll(Some(frame));
            return;
        };
        let stream = connect_nonblocking(target.to);
        let registered = stream.and_then(|s| {
            let token = poller.add(
                s.as_raw_fd(),
                EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
            )?;
            Ok((s, token))
        });
        match registered {
            Ok((stream, token)) => {
                let syn = frame.to_vec();
                let phase = Phase::Connecting {
                    syn,
                    host: target.host,
                };
                self.flows.insert(
                    key,
                    Flow {
                        stream,
                        token,
                        phase,
                    },
                );
                self.by_token.insert(token, key);
            }
            Err(_) => stack.poll(Some(frame)),
        }
    }

    /// A connection accepted on a forwarded host port: smoltcp connects
    /// to the guest's `guest_port` from a gateway port.
    pub fn accept_forward(
        &mut self,
        stream: TcpStream,
        guest_port: u16,
        stack: &mut Stack,
        poller: &mut Poller,
    ) {
        if self.flows.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut key = None;
        for _ in 0..u16::MAX {
            let port = self.next_gw_port;
            self.next_gw_port = if port == u16::MAX { 1024 } else { port + 1 };
            let k = Key {
                guest_port,
                remote: SocketAddrV4::new(GATEWAY_IP, port),
            };
            if !self.flows.contains_key(&k) {
                key = Some(k);
                break;
            }
        }
        let Some(key) = key else { return };
        let mut socket = new_socket();
        let remote = (GUEST_IP, guest_port);
        let local = (GATEWAY_IP, key.remote.port());
        if socket
            .connect(stack.iface.context(), remote, local)
            .is_err()
        {
            return;
        }
        let Ok(token) = poller.add(
            stream.as_raw_fd(),
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
        ) else {
            return;
        };
        let handle = stack.sockets.add(socket);
        let phase = Phase::Open {
            handle,
            host_eof: false,
            host_shut: false,
        };
        self.flows.insert(
            key,
            Flow {
                stream,
                token,
                phase,
            },
        );
        self.by_token.insert(token, key);
        stack.poll(None);
    }

    /// The host socket behind `token` signalled `events`.
    pub fn on_host_event(&mut self, token: u64, events: EventSet, stack: &mut Stack) {
        let Some(key) = self.by_token.get(&token).copied() else {
            return;
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let Phase::Connecting { syn, host } = &mut flow.phase else {
            return self.service(&key, stack);
        };
        if !events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
            return;
        }
        let syn = std::mem::take(syn);
        let connected = matches!(flow.stream.take_error(), Ok(None))
            && match (flow.stream.peer_addr(), flow.stream.local_addr()) {
                (Ok(peer), Ok(local)) => *host || peer.ip() != local.ip(),
                _ => false,
            };
        let mut socket = new_socket();
        let endpoint = IpListenEndpoint {
            addr: Some((*key.remote.ip()).into()),
            port: key.remote.port(),
        };
        if !connected || socket.listen(endpoint).is_err() {
            // Nothing listens: smoltcp answers the SYN with RST.
            self.remove(&key, stack);
            stack.poll(Some(&syn));
            return;
        }
        let handle = stack.sockets.add(socket);
        flow.phase = Phase::Open {
            handle,
            host_eof: false,
            host_shut: false,
        };
        stack.poll(Some(&syn));
        self.service(&key, stack);
    }

    /// Moves data both ways, lets smoltcp send what that produced, and
    /// forgets the connection if it is over.
    fn service(&mut self, key: &Key, stack: &mut Stack) {
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        let Phase::Open {
            handle,
            host_eof,
            host_shut,
        } = &mut flow.phase
        else {
            return;
        };
        let handle = *handle;
        let socket = stack.sockets.get_mut::<tcp::Socket>(handle);
        pump(&mut flow.stream, socket, host_eof, host_shut);
        stack.poll(None);
        if finished(stack.sockets.get::<tcp::Socket>(handle).state()) {
            self.remove(key, stack);
        }
    }

    /// Forgets every connection that is over (after smoltcp timers ran:
    /// a timeout or a retransmitted SYN to the guest giving up).
    pub fn sweep(&mut self, stack: &mut Stack) {
        let done: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| match f.phase {
                Phase::Open { handle, .. } => {
                    finished(stack.sockets.get::<tcp::Socket>(handle).state())
                }
                Phase::Connecting { .. } => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            self.remove(&key, stack);
        }
    }
}

/// Shovels bytes between the host socket and the smoltcp socket as far as
/// either takes them, and passes closes on. A failed host socket aborts
/// the connection (smoltcp sends RST on its next poll).
fn pump(
    stream: &mut TcpStream,
    socket: &mut tcp::Socket<'_>,
    host_eof: &mut bool,
    host_shut: &mut bool,
) {
    // Guest to host.
    while socket.can_recv() {
        let written = socket.recv(|data| match write_some(stream, data) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match written {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => return socket.abort(),
        }
    }
    if !*host_shut && socket.recv_queue() == 0 && guest_closed(socket.state()) {
        let _ = stream.shutdown(Shutdown::Write);
        *host_shut = true;
    }
    // Host to guest.
    while !*host_eof && socket.can_send() {
        let read = socket.send(|room| match read_some(stream, room) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match read {
            Ok(Ok(0)) => {
                *host_eof = true;
                // FIN once the buffered data is out.
                socket.close();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(_)) | Err(_) => return socket.abort(),
        }
    }
}

fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn read_some(stream: &mut TcpStream, room: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(room) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Starts a non-blocking connect: `std` only has blocking ones.
fn connect_nonblocking(addr: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the length given.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(fd))
}
