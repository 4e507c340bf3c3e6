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
//!   sockets (TCP is terminated here, see [`tcp`]); traffic to 10.0.2.2
//!   goes to the host's 127.0.0.1 (like slirp without `restrict`);
//! - DNS on 10.0.2.3:53 (UDP) forwarded to the first `nameserver` of the
//!   host's /etc/resolv.conf; with none, every query is answered SERVFAIL;
//! - inbound forwards ([`HostFwd`]): host ports bound at construction, each
//!   connection or datagram appearing to come from 10.0.2.2.
//!
//! Not supported (dropped): IPv6, IP fragments (never reassembled, so a
//! fragment flood costs nothing), IP options are skipped, VLAN tags, ICMP
//! other than echo to the gateway, TCP from sources other than 10.0.2.15,
//! UDP datagrams larger than the guest's MTU are passed on unfragmented.
//! Frames are complete with checksums both ways: no offloads.
//!
//! One fd for the event loop ([`NetBackend::raw_fd`]): an epoll set over
//! every host socket, an eventfd rung when frames for the guest were queued
//! outside of `read_frame`, and a timerfd for TCP retransmission. All inner
//! registrations are edge-triggered and every `read_frame` that finds the
//! queue empty drains the set, so the outer (edge-triggered) registration
//! fires again on the next event. Guest-bound frames are queued in memory,
//! at most [`MAX_QUEUED`]; beyond that they are dropped and TCP
//! retransmits.

mod dhcp;
mod dns;
mod tcp;
mod udp;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use log::debug;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

pub use keel_common::hostfwd::{FwdProto, HostFwd, HostFwdParseError, GUEST_IP};

use super::backend::{NetBackend, NetBackendError, VNET_HDR_LEN};
use wire::{
    Tcp, TcpHdr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};

/// The gateway's (and host's) address on the guest network.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The gateway's MAC address.
pub const GATEWAY_MAC: [u8; 6] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
/// The DNS forwarder's address on the guest network.
pub const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The guest network's mask (a /24).
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const LEASE_SECS: u32 = 86_400;
/// Frames waiting for the guest, at most.
pub const MAX_QUEUED: usize = 4096;

const TOKEN_EVENT: u64 = 0;
const TOKEN_TIMER: u64 = 1;
/// Forward listeners are tokens `TOKEN_FWD..TOKEN_FWD + n`.
const TOKEN_FWD: u64 = 2;
const TOKEN_DYNAMIC: u64 = 1 << 32;
/// Remote peers remembered per UDP forward.
const MAX_UDP_FWD_PEERS: usize = 256;

/// How to build a [`UserNet`].
#[derive(Debug, Clone, Default)]
pub struct UserNetConfig {
    pub hostfwd: Vec<HostFwd>,
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

/// Frames for the guest, built with the gateway as Ethernet source.
pub(crate) struct Emitter {
    queue: VecDeque<Vec<u8>>,
    guest_mac: Option<[u8; 6]>,
    ip_id: u16,
    dropped: u64,
}

impl Emitter {
    fn eth(&mut self, dst: [u8; 6], ethertype: u16, payload: &[u8]) {
        if self.queue.len() >= MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        let mut f = Vec::with_capacity(VNET_HDR_LEN + ETH_HLEN + payload.len());
        f.resize(VNET_HDR_LEN, 0);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&GATEWAY_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        self.queue.push_back(f);
    }

    fn ipv4(&mut self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let pkt = wire::build_ipv4(self.ip_id, src, dst, proto, l4);
        let mac = if dst.is_broadcast() {
            wire::BROADCAST_MAC
        } else {
            self.guest_mac.unwrap_or(wire::BROADCAST_MAC)
        };
        self.eth(mac, ETHERTYPE_IPV4, &pkt);
    }

    fn udp(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        if payload.len() > usize::from(u16::MAX) - 28 {
            self.dropped += 1;
            return;
        }
        let l4 = wire::build_udp(src, dst, payload);
        self.ipv4(*src.ip(), *dst.ip(), IPPROTO_UDP, &l4);
    }

    fn tcp(&mut self, h: &TcpHdr, payload: &[u8]) {
        let l4 = wire::build_tcp(h, payload);
        self.ipv4(*h.src.ip(), *h.dst.ip(), IPPROTO_TCP, &l4);
    }
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
}

/// The user-mode network backend. See the module documentation.
pub struct UserNet {
    poller: Poller,
    event: EventFd,
    timer: OwnedFd,
    timer_armed: Option<Instant>,
    out: Emitter,
    dns: Option<SocketAddr>,
    tcp: tcp::TcpNat,
    udp: udp::UdpNat,
    forwards: Vec<Forward>,
    next_udp_gw_port: u16,
    stats: UserNetStats,
}

impl std::fmt::Debug for UserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNet")
            .field("dns", &self.dns)
            .field("tcp_conns", &self.tcp.len())
            .field("udp_flows", &self.udp.len())
            .field("queued", &self.out.queue.len())
            .field("stats", &self.stats)
            .finish()
    }
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
            out: Emitter {
                queue: VecDeque::new(),
                guest_mac: None,
                ip_id: 0,
                dropped: 0,
            },
            dns: resolver,
            tcp: tcp::TcpNat::new(),
            udp: udp::UdpNat::new(),
            forwards,
            next_udp_gw_port: 50_000,
            stats: UserNetStats::default(),
        })
    }

    /// The host addresses the forwards actually listen on (port 0 rules
    /// got an ephemeral port), in rule order.
    pub fn hostfwd_addrs(&self) -> Vec<SocketAddr> {
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
            tx_dropped: self.out.dropped,
            ..self.stats
        }
    }

    fn drop_frame(&mut self, why: &str) {
        debug!("user-net: dropping a guest frame: {why}");
        self.stats.rx_dropped += 1;
    }

    /// Handles one Ethernet frame from the guest.
    fn handle_frame(&mut self, frame: &[u8], now: Instant) {
        if frame.len() < ETH_HLEN {
            return self.drop_frame("shorter than an Ethernet header");
        }
        let src_mac: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let payload = &frame[ETH_HLEN..];
        if src_mac[0] & 1 == 0 && src_mac != [0; 6] {
            self.out.guest_mac = Some(src_mac);
        }
        match ethertype {
            ETHERTYPE_ARP => self.handle_arp(payload),
            ETHERTYPE_IPV4 => self.handle_ipv4(payload, now),
            _ => self.drop_frame("not IPv4 or ARP"),
        }
    }

    fn handle_arp(&mut self, p: &[u8]) {
        let Some(arp) = wire::parse_arp(p) else {
            return self.drop_frame("bad ARP");
        };
        if arp.op != 1 || !(arp.target_ip == GATEWAY_IP || arp.target_ip == DNS_IP) {
            return; // replies, gratuitous ARP, probes for others: nothing to say
        }
        let reply =
            wire::build_arp_reply(GATEWAY_MAC, arp.target_ip, arp.sender_mac, arp.sender_ip);
        self.out.eth(arp.sender_mac, ETHERTYPE_ARP, &reply);
    }

    fn handle_ipv4(&mut self, p: &[u8], now: Instant) {
        let ip = match wire::parse_ipv4(p) {
            Ok(ip) => ip,
            Err(wire::IpDrop::Fragment) => {
                self.stats.fragments += 1;
                return self.drop_frame("IP fragment");
            }
            Err(wire::IpDrop::Malformed) => return self.drop_frame("bad IPv4 header"),
        };
        match ip.proto {
            IPPROTO_UDP => {
                let Some(udp) = wire::parse_udp(ip.payload) else {
                    return self.drop_frame("bad UDP header");
                };
                if udp.dport == 67 && udp.sport == 68 {
                    return self.handle_dhcp(udp.payload);
                }
                if ip.src != GUEST_IP {
                    return self.drop_frame("UDP from an address other than the guest's");
                }
                self.handle_udp(ip.dst, udp, now);
            }
            IPPROTO_TCP => {
                let Some(seg) = wire::parse_tcp(ip.payload) else {
                    return self.drop_frame("bad TCP header");
                };
                if ip.src != GUEST_IP {
                    return self.drop_frame("TCP from an address other than the guest's");
                }
                self.handle_tcp(ip.dst, &seg, now);
            }
            IPPROTO_ICMP => self.handle_icmp(ip.src, ip.dst, ip.payload),
            _ => self.drop_frame("unsupported IP protocol"),
        }
    }

    fn handle_icmp(&mut self, src: Ipv4Addr, dst: Ipv4Addr, p: &[u8]) {
        // Echo requests to the gateway or DNS address are answered here.
        if p.len() < 8 || p[0] != 8 || (dst != GATEWAY_IP && dst != DNS_IP) || src != GUEST_IP {
            return self.drop_frame("ICMP other than echo to the gateway");
        }
        let mut reply = p.to_vec();
        reply[0] = 0;
        reply[2..4].copy_from_slice(&[0, 0]);
        let sum = wire::checksum(&[&reply]);
        reply[2..4].copy_from_slice(&sum.to_be_bytes());
        self.out.ipv4(dst, src, IPPROTO_ICMP, &reply);
    }

    fn handle_dhcp(&mut self, msg: &[u8]) {
        let Some(reply) = dhcp::reply(msg) else {
            return self.drop_frame("DHCP message not answered");
        };
        self.out.udp(
            SocketAddrV4::new(GATEWAY_IP, 67),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            &reply,
        );
    }

    fn handle_udp(&mut self, dst: Ipv4Addr, udp: wire::Udp<'_>, now: Instant) {
        let remote = SocketAddrV4::new(dst, udp.dport);
        if dst == GATEWAY_IP && self.udp_forward_reply(remote, udp.sport, udp.payload) {
            return;
        }
        let target = if dst == DNS_IP {
            if udp.dport != 53 {
                return self.drop_frame("UDP to the DNS address, not port 53");
            }
            match self.dns {
                Some(resolver) => resolver,
                None => {
                    if let Some(reply) = dns::servfail(udp.payload) {
                        self.out
                            .udp(remote, SocketAddrV4::new(GUEST_IP, udp.sport), &reply);
                    }
                    return;
                }
            }
        } else {
            match host_target(dst) {
                Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, udp.dport)),
                None => return self.drop_frame("UDP to an address not routed"),
            }
        };
        let key = udp::Key {
            guest_port: udp.sport,
            remote,
        };
        if let Err(e) = self
            .udp
            .send(key, target, udp.payload, &mut self.poller, now)
        {
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

    fn handle_tcp(&mut self, dst: Ipv4Addr, seg: &Tcp<'_>, now: Instant) {
        let remote = SocketAddrV4::new(dst, seg.dport);
        let target = host_target(dst).map(|ip| SocketAddrV4::new(ip, seg.dport));
        self.tcp
            .on_guest_segment(seg, remote, target, &mut self.out, &mut self.poller, now);
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
                    }
                    t if t < TOKEN_DYNAMIC => self.on_forward(t - TOKEN_FWD, now),
                    t if self.tcp.owns(t) => self.tcp.on_host_event(t, set, &mut self.out, now),
                    t if self.udp.owns(t) => self.udp.on_readable(t, &mut self.out, now),
                    _ => {}
                }
            }
            if n < events.len() {
                break;
            }
        }
        self.run_timers(now);
    }

    fn on_forward(&mut self, index: u64, now: Instant) {
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
                        &mut self.out,
                        &mut self.poller,
                        now,
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
                let mut buf = vec![0u8; 65_536];
                for _ in 0..4096 {
                    let (n, peer) = match sock.recv_from(&mut buf) {
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
                    self.out.udp(
                        SocketAddrV4::new(GATEWAY_IP, port),
                        SocketAddrV4::new(GUEST_IP, guest_port),
                        &buf[..n],
                    );
                }
            }
        }
    }

    /// Retransmissions and flow expiry, then the timerfd set for the next.
    fn run_timers(&mut self, now: Instant) {
        self.tcp.on_timer(&mut self.out, now);
        self.udp.sweep(now);
        let next = self.tcp.next_deadline();
        if next == self.timer_armed {
            return;
        }
        let delay = next.map(|at| {
            at.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        });
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

/// Where a guest packet to `dst` goes on the host: the gateway means the
/// host itself (loopback); the rest of 10.0.2.0/24, broadcast, multicast
/// and the like go nowhere.
fn host_target(dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let o = dst.octets();
    if dst == GATEWAY_IP {
        Some(Ipv4Addr::LOCALHOST)
    } else if (o[0], o[1], o[2]) == (10, 0, 2)
        || dst.is_broadcast()
        || dst.is_multicast()
        || dst.is_unspecified()
        || dst.is_loopback()
    {
        None
    } else {
        Some(dst)
    }
}

impl NetBackend for UserNet {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError> {
        if self.out.queue.is_empty() {
            self.poll_host(Instant::now());
        }
        let frame = self
            .out
            .queue
            .pop_front()
            .ok_or(NetBackendError::WouldBlock)?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError> {
        let now = Instant::now();
        match hdr_and_frame.get(VNET_HDR_LEN..) {
            Some(frame) => self.handle_frame(frame, now),
            None => self.drop_frame("shorter than the virtio-net header"),
        }
        self.run_timers(now);
        if !self.out.queue.is_empty() {
            let _ = self.event.write(1);
        }
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.poller.epoll.as_raw_fd())
    }
}
