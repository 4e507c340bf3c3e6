//! A user-mode network backend ([`UserNet`]): no root, no tap. The guest
//! lives on a private 10.0.2.0/24 and everything it sends is carried out by
//! the VMM process with ordinary sockets, in the manner of slirp, passt and
//! libkrun.
//!
//! What the guest sees:
//!
//! - a gateway 10.0.2.2 (MAC 52:55:0a:00:02:02) that answers ARP for
//!   10.0.2.2 and 10.0.2.3 and nothing else, and ICMP echo to them;
//! - a DHCP server handing out 10.0.2.15/24, router 10.0.2.2, DNS
//!   10.0.2.3, a one-day lease;
//! - TCP and UDP to any address outside 10.0.2.0/24 carried by host
//!   sockets (TCP is terminated here, see [`tcp`]), except to the host
//!   itself ([`policy`]): 10.0.2.2 is the host's 127.0.0.1 only on the
//!   ports the spec lists in `host_ports`, and the host's own addresses
//!   (0.0.0.0, 127.0.0.0/8, its interfaces') are refused: TCP with RST,
//!   UDP dropped;
//! - DNS on 10.0.2.3:53 (UDP) forwarded to the first `nameserver` of the
//!   host's /etc/resolv.conf; with none, every query is answered SERVFAIL;
//! - inbound forwards ([`HostFwd`]): host ports bound at construction, each
//!   connection or datagram appearing to come from 10.0.2.2.
//!
//! The TCP/IP stack is [smoltcp](smoltcp): one `Interface` with the
//! gateway's MAC and both addresses, in "any IP" mode with a default route
//! through itself, so that it accepts packets for every destination. It
//! answers ARP and ICMP echo, speaks TCP to the guest (one smoltcp socket
//! per connection, see [`tcp`]), resets segments that belong to no
//! connection, and builds every frame it sends. Its device ([`link`]) is
//! the frame being handled on the way in and a bounded queue of frames for
//! the guest on the way out.
//!
//! What is ours: a filter in front of smoltcp (it would otherwise answer
//! ARP and ping for any address, and ICMP port-unreachable for UDP), the
//! NAT glue between smoltcp sockets and host sockets, the DHCP server
//! replies ([`dhcp`], with smoltcp's DHCP wire types), the DNS forwarder
//! ([`dns`]) and the UDP relay ([`udp`]). UDP keeps no protocol state, so
//! datagrams are parsed and built with smoltcp's wire types rather than
//! through a smoltcp socket per flow: that keeps datagrams larger than the
//! MTU whole and costs no socket buffers.
//!
//! Not supported (dropped): IPv6, IP fragments (never reassembled, so a
//! fragment flood costs nothing), VLAN tags, ICMP other than echo to the
//! gateway, TCP and UDP from sources other than 10.0.2.15, frames for
//! other MACs. Frames are complete with checksums both ways: no offloads.
//!
//! One fd for the event loop ([`NetBackend::raw_fd`]): an epoll set over
//! every host socket, an eventfd rung when frames for the guest were queued
//! outside of `read_frame`, and a timerfd for smoltcp's timers
//! (retransmission, delayed ACKs). All inner registrations are
//! edge-triggered and every `read_frame` that finds the queue empty drains
//! the set, so the outer (edge-triggered) registration fires again on the
//! next event. Guest-bound frames are queued in memory, at most
//! [`link::MAX_QUEUED`]; smoltcp waits while the queue is full.

mod dhcp;
mod dns;
mod link;
mod policy;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use log::debug;
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpCidr,
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

pub use keel_common::hostfwd::{FwdProto, HostFwd, HostFwdParseError, GUEST_IP};

use super::backend::{NetBackend, NetBackendError, VNET_HDR_LEN};
use link::Stack;
use policy::{HostPolicy, Route};

/// The gateway's (and host's) address on the guest network.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The gateway's MAC address.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// The DNS forwarder's address on the guest network.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The guest network's mask (a /24).
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
const PREFIX_LEN: u8 = 24;
pub const LEASE_SECS: u32 = 86_400;

const TOKEN_EVENT: u64 = 0;
const TOKEN_TIMER: u64 = 1;
/// Forward listeners are tokens `TOKEN_FWD..TOKEN_FWD + n`.
const TOKEN_FWD: u64 = 2;
const TOKEN_DYNAMIC: u64 = 1 << 32;
/// Remote peers remembered per UDP forward.
const MAX_UDP_FWD_PEERS: usize = 256;
/// The largest UDP payload read from a host socket.
const MAX_DATAGRAM: usize = 65_536;

/// How to build a [`UserNet`].
#[derive(Debug, Clone, Default)]
pub struct UserNetConfig {
    pub hostfwd: Vec<HostFwd>,
    /// Host ports the guest reaches through the gateway (`host_ports`).
    pub host_ports: Vec<u16>,
    /// The management agent's port: never reachable, even if listed.
    pub agent_port: Option<u16>,
}

/// Why a [`UserNet`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    #[error("hostfwd {a} and {b} listen on the same host port")]
    Overlap { a: HostFwd, b: HostFwd },
    #[error("hostfwd {fwd}: cannot listen on {}: {source}", fwd.host)]
    Bind { fwd: HostFwd, source: io::Error },
    #[error("user-mode network: cannot set up {what}: {source}")]
    Setup {
        what: &'static str,
        source: io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> UserNetError {
    move |source| UserNetError::Setup { what, source }
}

/// The epoll set behind [`UserNet::raw_fd`], handing out tokens.
pub(crate) struct Poller {
    epoll: Epoll,
    next_token: u64,
}

impl Poller {
    fn add(&mut self, fd: RawFd, events: EventSet) -> io::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))?;
        Ok(token)
    }
}

enum Listener {
    Tcp(TcpListener),
    Udp {
        sock: UdpSocket,
        /// Gateway port the guest sees ↔ the remote peer.
        peers: HashMap<u16, SocketAddr>,
        ports: HashMap<SocketAddr, u16>,
    },
}

struct Forward {
    rule: HostFwd,
    listener: Listener,
}

/// Counters of what was dropped, for debugging and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserNetStats {
    /// Guest frames that were malformed, unsupported or addressed nowhere.
    pub rx_dropped: u64,
    /// IP fragments from the guest (never reassembled).
    pub fragments: u64,
    /// Frames for the guest dropped because the queue was full.
    pub tx_dropped: u64,
    /// Connections and datagrams refused by the outbound rule ([`policy`]).
    pub refused: u64,
}

/// The user-mode network backend. See the module documentation.
pub struct UserNet {
    poller: Poller,
    event: EventFd,
    timer: OwnedFd,
    timer_armed: Option<Instant>,
    stack: Stack,
    dns: Option<SocketAddr>,
    policy: HostPolicy,
    tcp: tcp::TcpNat,
    udp: udp::UdpNat,
    forwards: Vec<Forward>,
    next_udp_gw_port: u16,
    stats: UserNetStats,
    /// Where datagrams from host sockets are read.
    datagram: Vec<u8>,
}

impl std::fmt::Debug for UserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNet")
            .field("dns", &self.dns)
            .field("tcp_conns", &self.tcp.len())
            .field("udp_flows", &self.udp.len())
            .field("queued", &self.stack.tx.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The smoltcp interface: the gateway's MAC and addresses, accepting
/// packets for any destination routed through itself.
fn interface(link: &mut link::Link<'_>, now: smoltcp::time::Instant) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
    config.random_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x1234_5678)
        ^ u64::from(std::process::id());
    let mut iface = Interface::new(config, link, now);
    iface.update_ip_addrs(|addrs| {
        for ip in [GATEWAY_IP, DNS_IP] {
            // Two addresses fit the default capacity.
            let _ = addrs.push(IpCidr::new(ip.into(), PREFIX_LEN));
        }
    });
    let _ = iface.routes_mut().add_default_ipv4_route(GATEWAY_IP);
    iface.set_any_ip(true);
    iface
}

impl UserNet {
    /// Builds the backend, DNS going to the host's resolver (first
    /// nameserver of /etc/resolv.conf; none means SERVFAIL answers).
    pub fn new(config: UserNetConfig) -> Result<Self, UserNetError> {
        Self::with_resolver(config, dns::host_resolver())
    }

    /// Builds the backend with DNS queries going to `resolver`.
    pub fn with_resolver(
        config: UserNetConfig,
        resolver: Option<SocketAddr>,
    ) -> Result<Self, UserNetError> {
        let policy = HostPolicy::new(&config.host_ports, config.agent_port.as_slice())
            .map_err(setup("the list of the host's addresses"))?;
        Self::with_policy(config, resolver, policy)
    }

    /// Builds the backend with the outbound rule given.
    fn with_policy(
        config: UserNetConfig,
        resolver: Option<SocketAddr>,
        policy: HostPolicy,
    ) -> Result<Self, UserNetError> {
        for (i, a) in config.hostfwd.iter().enumerate() {
            if let Some(b) = config.hostfwd[..i].iter().find(|b| a.overlaps(b)) {
                return Err(UserNetError::Overlap { a: *b, b: *a });
            }
        }
        let epoll = Epoll::new().map_err(setup("an epoll set"))?;
        let event = EventFd::new(libc::EFD_NONBLOCK).map_err(setup("an eventfd"))?;
        // SAFETY: plain timerfd_create(2); the result is checked and owned.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(setup("a timerfd")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd nothing else owns.
        let timer = unsafe { OwnedFd::from_raw_fd(raw) };
        let in_et = EventSet::IN | EventSet::EDGE_TRIGGERED;
        epoll
            .ctl(
                ControlOperation::Add,
                event.as_raw_fd(),
                EpollEvent::new(in_et, TOKEN_EVENT),
            )
            .map_err(setup("the eventfd"))?;
        epoll
            .ctl(
                ControlOperation::Add,
                timer.as_raw_fd(),
                EpollEvent::new(in_et, TOKEN_TIMER),
            )
            .map_err(setup("the timerfd"))?;
        let mut forwards = Vec::new();
        for (i, rule) in config.hostfwd.iter().enumerate() {
            let bind_err = |source| UserNetError::Bind { fwd: *rule, source };
            let (listener, fd) = match rule.proto {
                FwdProto::Tcp => {
                    let l = TcpListener::bind(rule.host).map_err(bind_err)?;
                    l.set_nonblocking(true).map_err(bind_err)?;
                    let fd = l.as_raw_fd();
                    (Listener::Tcp(l), fd)
                }
                FwdProto::Udp => {
                    let s = UdpSocket::bind(rule.host).map_err(bind_err)?;
                    s.set_nonblocking(true).map_err(bind_err)?;
                    let fd = s.as_raw_fd();
                    let l = Listener::Udp {
                        sock: s,
                        peers: HashMap::new(),
                        ports: HashMap::new(),
                    };
                    (l, fd)
                }
            };
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(in_et, TOKEN_FWD + i as u64),
                )
                .map_err(setup("a forward listener"))?;
            forwards.push(Forward {
                rule: *rule,
                listener,
            });
        }
        Ok(UserNet {
            poller: Poller {
                epoll,
                next_token: TOKEN_DYNAMIC,
            },
            event,
            timer,
            timer_armed: None,
            stack: Stack::new(interface),
            dns: resolver,
            policy,
            tcp: tcp::TcpNat::new(),
            udp: udp::UdpNat::new(),
            forwards,
            next_udp_gw_port: 50_000,
            stats: UserNetStats::default(),
            datagram: vec![0; MAX_DATAGRAM],
        })
    }

    /// The host addresses the forwards actually listen on (port 0 rules
    /// got an ephemeral port), in rule order.
    #[cfg(test)]
    fn hostfwd_addrs(&self) -> Vec<SocketAddr> {
        self.forwards
            .iter()
            .map(|f| {
                let local = match &f.listener {
                    Listener::Tcp(l) => l.local_addr(),
                    Listener::Udp { sock, .. } => sock.local_addr(),
                };
                local.unwrap_or(SocketAddr::V4(f.rule.host))
            })
            .collect()
    }

    /// What was dropped so far.
    pub fn stats(&self) -> UserNetStats {
        UserNetStats {
            tx_dropped: self.stack.tx.dropped,
            ..self.stats
        }
    }

    /// A guest connection or datagram to a host service it may not reach.
    fn refused(&mut self, dst: Ipv4Addr, port: u16, proto: &str) {
        debug!(
            "user-net: refused guest {proto} to {dst}:{port}: the host itself, not in host_ports"
        );
        self.stats.refused += 1;
    }

    fn drop_frame(&mut self, why: &str) {
        debug!("user-net: dropping a guest frame: {why}");
        self.stats.rx_dropped += 1;
    }

    /// Handles one Ethernet frame from the guest: what smoltcp is to see
    /// goes to it, the rest is answered here or dropped.
    fn handle_frame(&mut self, frame: &[u8], now: Instant) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return self.drop_frame("shorter than an Ethernet header");
        };
        let dst = eth.dst_addr();
        if dst != EthernetAddress(GATEWAY_MAC) && !dst.is_broadcast() {
            return self.drop_frame("not for the gateway");
        }
        let src = eth.src_addr();
        if src.is_unicast() && src != EthernetAddress([0; 6]) {
            self.stack.tx.guest_mac = Some(src);
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.handle_arp(frame, eth.payload()),
            EthernetProtocol::Ipv4 => self.handle_ipv4(frame, eth.payload(), now),
            _ => self.drop_frame("not IPv4 or ARP"),
        }
    }

    fn handle_arp(&mut self, frame: &[u8], p: &[u8]) {
        let Some(ArpRepr::EthernetIpv4 {
            target_protocol_addr,
            ..
        }) = ArpPacket::new_checked(p)
            .ok()
            .and_then(|a| ArpRepr::parse(&a).ok())
        else {
            return self.drop_frame("bad ARP");
        };
        // In any-IP mode smoltcp would claim every address: only the
        // gateway's two are ours (probes for others get no answer).
        if target_protocol_addr == GATEWAY_IP || target_protocol_addr == DNS_IP {
            self.stack.poll(Some(frame));
        }
    }

    fn handle_ipv4(&mut self, frame: &[u8], p: &[u8], now: Instant) {
        let checksums = ChecksumCapabilities::default();
        let Ok(packet) = Ipv4Packet::new_checked(p) else {
            return self.drop_frame("bad IPv4 header");
        };
        if packet.version() != 4 || !packet.verify_checksum() {
            return self.drop_frame("bad IPv4 header");
        }
        if packet.more_frags() || packet.frag_offset() != 0 {
            self.stats.fragments += 1;
            return self.drop_frame("IP fragment");
        }
        let Ok(ip) = Ipv4Repr::parse(&packet, &checksums) else {
            return self.drop_frame("bad IPv4 header");
        };
        let (src, dst) = (ip.src_addr, ip.dst_addr);
        match ip.next_header {
            IpProtocol::Udp => {
                let Some((udp, payload)) =
                    UdpPacket::new_checked(packet.payload()).ok().and_then(|u| {
                        let repr = UdpRepr::parse(&u, &src.into(), &dst.into(), &checksums);
                        Some((repr.ok()?, u.payload()))
                    })
                else {
                    return self.drop_frame("bad UDP datagram");
                };
                if udp.dst_port == 67 && udp.src_port == 68 {
                    return self.handle_dhcp(payload);
                }
                if src != GUEST_IP {
                    return self.drop_frame("UDP from an address other than the guest's");
                }
                self.handle_udp(dst, udp, payload, now);
            }
            IpProtocol::Tcp => {
                if src != GUEST_IP {
                    return self.drop_frame("TCP from an address other than the guest's");
                }
                let Some(seg) = TcpPacket::new_checked(packet.payload())
                    .ok()
                    .and_then(|t| TcpRepr::parse(&t, &src.into(), &dst.into(), &checksums).ok())
                else {
                    return self.drop_frame("bad TCP segment");
                };
                let key = tcp::Key {
                    guest_port: seg.src_port,
                    remote: SocketAddrV4::new(dst, seg.dst_port),
                };
                let syn = seg.control == TcpControl::Syn && seg.ack_number.is_none();
                let rst = seg.control == TcpControl::Rst;
                let target = match self.policy.route(dst, seg.dst_port) {
                    Route::Out { to, host } => Some(tcp::Target { to, host }),
                    Route::Refused if syn => {
                        self.refused(dst, seg.dst_port, "TCP");
                        None
                    }
                    Route::Refused | Route::Nowhere => None,
                };
                self.tcp.on_guest_segment(
                    key,
                    syn,
                    rst,
                    target,
                    frame,
                    &mut self.stack,
                    &mut self.poller,
                );
            }
            // smoltcp answers echo requests to its own addresses (and, in
            // any-IP mode, would to every other: not done here).
            IpProtocol::Icmp if src == GUEST_IP && (dst == GATEWAY_IP || dst == DNS_IP) => {
                self.stack.poll(Some(frame));
            }
            IpProtocol::Icmp => self.drop_frame("ICMP other than to the gateway"),
            _ => self.drop_frame("unsupported IP protocol"),
        }
    }

    fn handle_dhcp(&mut self, msg: &[u8]) {
        let Some(reply) = dhcp::reply(msg) else {
            return self.drop_frame("DHCP message not answered");
        };
        self.stack.tx.udp_to_guest(
            SocketAddrV4::new(GATEWAY_IP, 67),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            &reply,
        );
    }

    fn handle_udp(&mut self, dst: Ipv4Addr, udp: UdpRepr, payload: &[u8], now: Instant) {
        let remote = SocketAddrV4::new(dst, udp.dst_port);
        if dst == GATEWAY_IP && self.udp_forward_reply(remote, udp.src_port, payload) {
            return;
        }
        let target = if dst == DNS_IP {
            if udp.dst_port != 53 {
                return self.drop_frame("UDP to the DNS address, not port 53");
            }
            match self.dns {
                Some(resolver) => resolver,
                None => {
                    if let Some(reply) = dns::servfail(payload) {
                        let guest = SocketAddrV4::new(GUEST_IP, udp.src_port);
                        self.stack.tx.udp_to_guest(remote, guest, &reply);
                    }
                    return;
                }
            }
        } else {
            match self.policy.route(dst, udp.dst_port) {
                Route::Out { to, .. } => SocketAddr::V4(to),
                Route::Refused => return self.refused(dst, udp.dst_port, "UDP"),
                Route::Nowhere => return self.drop_frame("UDP to an address not routed"),
            }
        };
        let key = udp::Key {
            guest_port: udp.src_port,
            remote,
        };
        if let Err(e) = self.udp.send(key, target, payload, &mut self.poller, now) {
            debug!("user-net: UDP to {target}: {e}");
        }
    }

    /// A guest datagram answering a UDP forward's peer. True if it was one.
    fn udp_forward_reply(&mut self, remote: SocketAddrV4, sport: u16, payload: &[u8]) -> bool {
        for fwd in &self.forwards {
            if let Listener::Udp { sock, peers, .. } = &fwd.listener {
                if fwd.rule.guest_port != sport {
                    continue;
                }
                if let Some(peer) = peers.get(&remote.port()) {
                    let _ = sock.send_to(payload, peer);
                    return true;
                }
            }
        }
        false
    }

    /// Handles whatever the host sockets, the eventfd and the timer report.
    fn poll_host(&mut self, now: Instant) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.poller.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("user-net: epoll_wait: {e}");
                    break;
                }
            };
            for ev in &events[..n] {
                let (token, set) = (ev.data(), ev.event_set());
                match token {
                    TOKEN_EVENT => {
                        let _ = self.event.read();
                    }
                    TOKEN_TIMER => {
                        let mut buf = [0u8; 8];
                        // SAFETY: reads at most 8 bytes into `buf`.
                        let _ = unsafe {
                            libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8)
                        };
                        self.timer_armed = None;
                        // Retransmissions, delayed ACKs, timeouts.
                        self.stack.poll(None);
                        self.tcp.sweep(&mut self.stack);
                    }
                    t if t < TOKEN_DYNAMIC => self.on_forward(t - TOKEN_FWD),
                    t if self.tcp.owns(t) => self.tcp.on_host_event(t, set, &mut self.stack),
                    t if self.udp.owns(t) => {
                        self.udp
                            .on_readable(t, &mut self.stack.tx, &mut self.datagram, now)
                    }
                    _ => {}
                }
            }
            if n < events.len() {
                break;
            }
        }
        // Whatever the guest made room for since the last poll.
        self.stack.poll(None);
        self.udp.sweep(now);
        self.arm_timer(now);
    }

    fn on_forward(&mut self, index: u64) {
        let Some(fwd) = self.forwards.get_mut(index as usize) else {
            return;
        };
        let guest_port = fwd.rule.guest_port;
        match &mut fwd.listener {
            Listener::Tcp(l) => loop {
                match l.accept() {
                    Ok((stream, _)) => self.tcp.accept_forward(
                        stream,
                        guest_port,
                        &mut self.stack,
                        &mut self.poller,
                    ),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("user-net: accept on {}: {e}", fwd.rule);
                        break;
                    }
                }
            },
            Listener::Udp { sock, peers, ports } => {
                for _ in 0..4096 {
                    let (n, peer) = match sock.recv_from(&mut self.datagram) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => continue,
                    };
                    let port = match ports.get(&peer) {
                        Some(p) => *p,
                        None => {
                            if peers.len() >= MAX_UDP_FWD_PEERS {
                                peers.clear();
                                ports.clear();
                            }
                            let p = self.next_udp_gw_port;
                            self.next_udp_gw_port = if p == u16::MAX { 50_000 } else { p + 1 };
                            if let Some(old) = peers.insert(p, peer) {
                                ports.remove(&old);
                            }
                            ports.insert(peer, p);
                            p
                        }
                    };
                    self.stack.tx.udp_to_guest(
                        SocketAddrV4::new(GATEWAY_IP, port),
                        SocketAddrV4::new(GUEST_IP, guest_port),
                        &self.datagram[..n],
                    );
                }
            }
        }
    }

    /// Sets the timerfd for when smoltcp next wants polling.
    fn arm_timer(&mut self, now: Instant) {
        let next = self
            .stack
            .poll_delay()
            .map(|d| now + d.max(Duration::from_millis(1)));
        // Within a millisecond of what is armed is close enough.
        let same = match (next, self.timer_armed) {
            (Some(a), Some(b)) => a.max(b) - a.min(b) < Duration::from_millis(1),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let delay = next.map(|at| at.saturating_duration_since(now));
        let mut spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        if let Some(d) = delay {
            spec.it_value.tv_sec = d.as_secs() as libc::time_t;
            spec.it_value.tv_nsec = libc::c_long::from(d.subsec_nanos() as i32);
        }
        // SAFETY: `spec` is a valid itimerspec; the old value is not wanted.
        let ret = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if ret == 0 {
            self.timer_armed = next;
        }
    }
}

impl NetBackend for UserNet {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError> {
        if self.stack.tx.is_empty() {
            self.poll_host(Instant::now());
        }
        self.stack
            .tx
            .pop_into(buf)
            .ok_or(NetBackendError::WouldBlock)
    }

    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError> {
        let now = Instant::now();
        let was_empty = self.stack.tx.is_empty();
        match hdr_and_frame.get(VNET_HDR_LEN..) {
            Some(frame) => self.handle_frame(frame, now),
            None => self.drop_frame("shorter than the virtio-net header"),
        }
        self.arm_timer(now);
        // Frames queued here: the event loop learns it from the fd.
        if was_empty && !self.stack.tx.is_empty() {
            let _ = self.event.write(1);
        }
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.poller.epoll.as_raw_fd())
    }
}
