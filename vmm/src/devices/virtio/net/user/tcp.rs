//! TCP NAT: each guest connection is terminated here and carried on over an
//! ordinary non-blocking host socket.
//!
//! The link to the guest is a memory queue, so the TCP spoken to the guest
//! is kept minimal: no window scaling, no SACK, no timestamps (our SYN
//! carries only an MSS option, which turns them off), out-of-order segments
//! are dropped and re-ACKed, and data the guest has not acknowledged is
//! retransmitted go-back-N on a doubling timeout. Flow control is real in
//! both directions: we advertise the free space of a bounded buffer in
//! front of the host socket, and read from the host socket only as far as
//! a bounded send buffer allows, sending within the guest's window.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::wire::{Tcp, TcpHdr, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};
use super::{Emitter, Poller, GATEWAY_IP, GUEST_IP};

/// Connections at once; further SYNs are refused with RST.
pub const MAX_CONNS: usize = 4096;
/// Host data read ahead of the guest's acknowledgements, per connection.
const SND_CAP: usize = 128 * 1024;
/// Guest data buffered in front of the host socket: our receive window.
const RCV_CAP: usize = 65_535;
const OUR_MSS: u16 = 1460;
const DEFAULT_MSS: usize = 536;
const RTO_INITIAL: Duration = Duration::from_millis(500);
const RTO_MAX: Duration = Duration::from_secs(8);
const MAX_RETRIES: u32 = 10;

/// A connection as the guest sees it: its port and the remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub guest_port: u16,
    pub remote: SocketAddrV4,
}

impl Key {
    fn guest(&self) -> SocketAddrV4 {
        SocketAddrV4::new(GUEST_IP, self.guest_port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Guest sent SYN; the host connect is in progress.
    Connecting,
    /// Host connected, SYN-ACK sent to the guest, waiting for its ACK.
    SynRcvd,
    /// Forwarded inbound connection: SYN sent to the guest.
    SynSent,
    Established,
}

struct Conn {
    stream: TcpStream,
    token: u64,
    state: State,
    iss: u32,
    /// Oldest sequence number the guest has not acknowledged; once
    /// established, that of `unacked[0]`.
    snd_una: u32,
    rcv_nxt: u32,
    guest_wnd: usize,
    mss: usize,
    /// Host data not yet acknowledged by the guest; `sent` bytes of it went out.
    unacked: VecDeque<u8>,
    sent: usize,
    /// Guest data not yet written to the host socket.
    to_host: VecDeque<u8>,
    host_eof: bool,
    fin_sent: bool,
    fin_acked: bool,
    guest_fin: bool,
    host_shut: bool,
    rto: Duration,
    rto_at: Option<Instant>,
    retries: u32,
    last_ack_sent: u32,
    last_wnd_sent: usize,
    reset_sent: bool,
}

impl Conn {
    fn new(stream: TcpStream, token: u64, state: State, iss: u32) -> Self {
        Conn {
            stream,
            token,
            state,
            iss,
            snd_una: iss,
            rcv_nxt: 0,
            guest_wnd: 0,
            mss: DEFAULT_MSS,
            unacked: VecDeque::new(),
            sent: 0,
            to_host: VecDeque::new(),
            host_eof: false,
            fin_sent: false,
            fin_acked: false,
            guest_fin: false,
            host_shut: false,
            rto: RTO_INITIAL,
            rto_at: None,
            retries: 0,
            last_ack_sent: 0,
            last_wnd_sent: 0,
            reset_sent: false,
        }
    }

    fn window(&self) -> usize {
        RCV_CAP - self.to_host.len()
    }

    fn emit(&mut self, key: &Key, out: &mut Emitter, seq: u32, flags: u8, payload: &[u8]) {
        let mss = (flags & TCP_SYN != 0).then_some(OUR_MSS);
        let window = self.window();
        if flags & TCP_ACK != 0 {
            self.last_ack_sent = self.rcv_nxt;
            self.last_wnd_sent = window;
        }
        let h = TcpHdr {
            src: key.remote,
            dst: key.guest(),
            seq,
            ack: if flags & TCP_ACK != 0 {
                self.rcv_nxt
            } else {
                0
            },
            flags,
            window: window as u16,
            mss,
        };
        out.tcp(&h, payload);
    }

    fn reset(&mut self, key: &Key, out: &mut Emitter) {
        let seq = self.snd_una.wrapping_add(self.sent as u32);
        self.emit(key, out, seq, TCP_RST | TCP_ACK, &[]);
        self.reset_sent = true;
    }

    fn outstanding(&self) -> bool {
        self.sent > 0 || (self.fin_sent && !self.fin_acked)
    }

    fn on_ack(&mut self, ack: u32, window: u16, now: Instant) {
        let acked = ack.wrapping_sub(self.snd_una) as usize;
        let max = self.sent + usize::from(self.fin_sent && !self.fin_acked);
        if acked > max {
            return; // old or from the future: ignore
        }
        self.guest_wnd = usize::from(window);
        if acked == 0 {
            return;
        }
        let bytes = acked.min(self.sent);
        self.unacked.drain(..bytes);
        self.sent -= bytes;
        self.snd_una = self.snd_una.wrapping_add(bytes as u32);
        if acked > bytes {
            self.fin_acked = true;
            self.snd_una = self.snd_una.wrapping_add(1);
        }
        self.retries = 0;
        self.rto = RTO_INITIAL;
        self.rto_at = self.outstanding().then(|| now + self.rto);
    }

    /// Writes buffered guest data to the host socket. False on a failed socket.
    fn flush_to_host(&mut self) -> bool {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return false,
                Ok(n) => {
                    self.to_host.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.guest_fin && self.to_host.is_empty() && !self.host_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_shut = true;
        }
        true
    }

    /// Moves data both ways as far as buffers and windows allow. Returns
    /// false when the connection is over (reset sent, or closed both ways).
    fn pump(&mut self, key: &Key, out: &mut Emitter, now: Instant) -> bool {
        if self.state != State::Established {
            return true;
        }
        if !self.flush_to_host() {
            self.reset(key, out);
            return false;
        }
        // Our window opened up a lot since we last said: tell the guest.
        if self.last_wnd_sent < RCV_CAP / 4 && self.window() >= RCV_CAP / 2 && !self.guest_fin {
            self.emit(key, out, self.snd_nxt(), TCP_ACK, &[]);
        }
        let mut buf = [0u8; 16 * 1024];
        while !self.host_eof && self.unacked.len() < SND_CAP {
            let want = (SND_CAP - self.unacked.len()).min(buf.len());
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => self.host_eof = true,
                Ok(n) => self.unacked.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.reset(key, out);
                    return false;
                }
            }
        }
        self.send_pending(key, out, now);
        !(self.guest_fin && self.host_shut && self.fin_acked)
    }

    fn snd_nxt(&self) -> u32 {
        self.snd_una
            .wrapping_add(self.sent as u32)
            .wrapping_add(u32::from(self.fin_sent && !self.fin_acked))
    }

    fn send_pending(&mut self, key: &Key, out: &mut Emitter, now: Instant) {
        let wnd = self.guest_wnd;
        let mut payload = Vec::new();
        while self.sent < self.unacked.len() && self.sent < wnd {
            let n = (self.unacked.len() - self.sent)
                .min(wnd - self.sent)
                .min(self.mss);
            payload.clear();
            payload.extend(self.unacked.range(self.sent..self.sent + n));
            let seq = self.snd_una.wrapping_add(self.sent as u32);
            self.emit(key, out, seq, TCP_ACK | TCP_PSH, &payload);
            self.sent += n;
        }
        if self.host_eof && !self.fin_sent && self.sent == self.unacked.len() {
            let seq = self.snd_una.wrapping_add(self.sent as u32);
            self.emit(key, out, seq, TCP_FIN | TCP_ACK, &[]);
            self.fin_sent = true;
        }
        if self.outstanding() && self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    fn on_segment(&mut self, key: &Key, seg: &Tcp<'_>, out: &mut Emitter, now: Instant) -> bool {
        if seg.flags & TCP_RST != 0 {
            return false;
        }
        match self.state {
            State::Connecting => return true,
            State::SynSent => {
                if seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
                    && seg.ack == self.iss.wrapping_add(1)
                {
                    self.rcv_nxt = seg.seq.wrapping_add(1);
                    self.snd_una = seg.ack;
                    self.guest_wnd = usize::from(seg.window);
                    self.mss =
                        usize::from(seg.mss.unwrap_or(DEFAULT_MSS as u16).clamp(64, OUR_MSS));
                    self.state = State::Established;
                    self.rto_at = None;
                    self.retries = 0;
                    self.emit(key, out, self.snd_una, TCP_ACK, &[]);
                    return self.pump(key, out, now);
                }
                if seg.flags & TCP_ACK != 0 {
                    out.tcp(&rst_for(key, seg), &[]);
                }
                return true;
            }
            State::SynRcvd => {
                if seg.flags & TCP_ACK == 0 {
                    if seg.flags & TCP_SYN != 0 {
                        self.emit(key, out, self.iss, TCP_SYN | TCP_ACK, &[]);
                    }
                    return true;
                }
                if seg.ack != self.iss.wrapping_add(1) {
                    out.tcp(&rst_for(key, seg), &[]);
                    return true;
                }
                self.state = State::Established;
                self.snd_una = seg.ack;
                self.rto_at = None;
                self.retries = 0;
            }
            State::Established => {
                if seg.flags & TCP_SYN != 0 {
                    self.emit(key, out, self.snd_nxt(), TCP_ACK, &[]);
                    return true;
                }
            }
        }
        if seg.flags & TCP_ACK != 0 {
            self.on_ack(seg.ack, seg.window, now);
        }
        let fin = seg.flags & TCP_FIN != 0;
        let len = seg.payload.len();
        let mut must_ack = false;
        if len > 0 || fin {
            must_ack = true;
            let off = self.rcv_nxt.wrapping_sub(seg.seq) as i32;
            if off >= 0 && off as usize <= len && !self.guest_fin {
                let off = off as usize;
                let take = (len - off).min(self.window());
                self.to_host.extend(&seg.payload[off..off + take]);
                self.rcv_nxt = self.rcv_nxt.wrapping_add(take as u32);
                if fin && off + take == len {
                    self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                    self.guest_fin = true;
                }
            }
        }
        let keep = self.pump(key, out, now);
        // Also when that was the last segment: its ACK closes the guest side.
        if must_ack && !self.reset_sent {
            self.emit(key, out, self.snd_nxt(), TCP_ACK, &[]);
        }
        keep
    }

    /// Called when the host socket signals. False when the connection is over.
    fn on_host_event(
        &mut self,
        key: &Key,
        events: EventSet,
        out: &mut Emitter,
        now: Instant,
    ) -> bool {
        if self.state == State::Connecting {
            if !events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
                return true;
            }
            let ok =
                matches!(self.stream.take_error(), Ok(None)) && self.stream.peer_addr().is_ok();
            if !ok {
                self.emit(key, out, 0, TCP_RST | TCP_ACK, &[]);
                return false;
            }
            self.state = State::SynRcvd;
            self.emit(key, out, self.iss, TCP_SYN | TCP_ACK, &[]);
            self.rto_at = Some(now + self.rto);
            return true;
        }
        self.pump(key, out, now)
    }

    /// Retransmits on timeout. False when the guest stopped answering.
    fn on_timer(&mut self, key: &Key, out: &mut Emitter, now: Instant) -> bool {
        match self.rto_at {
            Some(at) if at <= now => {}
            _ => return true,
        }
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            self.reset(key, out);
            return false;
        }
        self.rto = (self.rto * 2).min(RTO_MAX);
        self.rto_at = Some(now + self.rto);
        match self.state {
            State::Connecting => self.rto_at = None,
            State::SynRcvd => self.emit(key, out, self.iss, TCP_SYN | TCP_ACK, &[]),
            State::SynSent => self.emit(key, out, self.iss, TCP_SYN, &[]),
            State::Established => {
                self.sent = 0;
                if !self.fin_acked {
                    self.fin_sent = false;
                }
                self.send_pending(key, out, now);
            }
        }
        true
    }
}

/// The RST answering a segment that belongs to no connection (RFC 793).
fn rst_for(key: &Key, seg: &Tcp<'_>) -> TcpHdr {
    let (seq, ack, flags) = if seg.flags & TCP_ACK != 0 {
        (seg.ack, 0, TCP_RST)
    } else {
        let len = seg.payload.len() as u32
            + u32::from(seg.flags & TCP_SYN != 0)
            + u32::from(seg.flags & TCP_FIN != 0);
        (0, seg.seq.wrapping_add(len), TCP_RST | TCP_ACK)
    };
    TcpHdr {
        src: key.remote,
        dst: key.guest(),
        seq,
        ack,
        flags,
        window: 0,
        mss: None,
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

/// All TCP connections between the guest and the host.
pub struct TcpNat {
    conns: HashMap<Key, Conn>,
    by_token: HashMap<u64, Key>,
    next_gw_port: u16,
    iss_seed: u32,
    /// No retransmission is due before this (a lower bound: ACKs only
    /// push deadlines later), so most calls need not look at every
    /// connection.
    due: Option<Instant>,
}

impl TcpNat {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0x1234_5678);
        TcpNat {
            conns: HashMap::new(),
            by_token: HashMap::new(),
            next_gw_port: 40_000,
            iss_seed: seed,
            due: None,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn owns(&self, token: u64) -> bool {
        self.by_token.contains_key(&token)
    }

    fn next_iss(&mut self) -> u32 {
        self.iss_seed = self
            .iss_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        self.iss_seed
    }

    fn note(&mut self, key: &Key) {
        if let Some(at) = self.conns.get(key).and_then(|c| c.rto_at) {
            self.due = Some(self.due.map_or(at, |d| d.min(at)));
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(conn) = self.conns.remove(key) {
            self.by_token.remove(&conn.token);
        }
    }

    /// A segment from the guest to `remote` (as the guest addressed it);
    /// `target` is where a new connection goes on the host, `None` if
    /// nowhere (refused with RST).
    pub fn on_guest_segment(
        &mut self,
        seg: &Tcp<'_>,
        remote: SocketAddrV4,
        target: Option<SocketAddrV4>,
        out: &mut Emitter,
        poller: &mut Poller,
        now: Instant,
    ) {
        let key = Key {
            guest_port: seg.sport,
            remote,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            if conn.on_segment(&key, seg, out, now) {
                self.note(&key);
            } else {
                self.remove(&key);
            }
            return;
        }
        if seg.flags & TCP_RST != 0 {
            return;
        }
        if seg.flags & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST) != TCP_SYN {
            out.tcp(&rst_for(&key, seg), &[]);
            return;
        }
        let stream = match target {
            Some(t) if self.conns.len() < MAX_CONNS => connect_nonblocking(t),
            _ => Err(io::ErrorKind::ConnectionRefused.into()),
        };
        let registered = stream.and_then(|s| {
            let token = poller.add(
                s.as_raw_fd(),
                EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
            )?;
            Ok((s, token))
        });
        let Ok((stream, token)) = registered else {
            out.tcp(&rst_for(&key, seg), &[]);
            return;
        };
        let iss = self.next_iss();
        let mut conn = Conn::new(stream, token, State::Connecting, iss);
        conn.rcv_nxt = seg.seq.wrapping_add(1);
        conn.guest_wnd = usize::from(seg.window);
        conn.mss = usize::from(seg.mss.unwrap_or(DEFAULT_MSS as u16).clamp(64, OUR_MSS));
        self.conns.insert(key, conn);
        self.by_token.insert(token, key);
    }

    /// A connection accepted on a forwarded host port: SYN the guest's
    /// `guest_port` from the gateway address.
    pub fn accept_forward(
        &mut self,
        stream: TcpStream,
        guest_port: u16,
        out: &mut Emitter,
        poller: &mut Poller,
        now: Instant,
    ) {
        if self.conns.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
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
            if !self.conns.contains_key(&k) {
                key = Some(k);
                break;
            }
        }
        let Some(key) = key else { return };
        let Ok(token) = poller.add(
            stream.as_raw_fd(),
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
        ) else {
            return;
        };
        let iss = self.next_iss();
        let mut conn = Conn::new(stream, token, State::SynSent, iss);
        conn.emit(&key, out, iss, TCP_SYN, &[]);
        conn.rto_at = Some(now + conn.rto);
        self.conns.insert(key, conn);
        self.by_token.insert(token, key);
        self.note(&key);
    }

    pub fn on_host_event(&mut self, token: u64, events: EventSet, out: &mut Emitter, now: Instant) {
        let Some(key) = self.by_token.get(&token).copied() else {
            return;
        };
        let keep = match self.conns.get_mut(&key) {
            Some(conn) => conn.on_host_event(&key, events, out, now),
            None => false,
        };
        if keep {
            self.note(&key);
        } else {
            self.remove(&key);
        }
    }

    pub fn on_timer(&mut self, out: &mut Emitter, now: Instant) {
        match self.due {
            Some(due) if due <= now => {}
            _ => return,
        }
        let mut dead = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if !conn.on_timer(key, out, now) {
                dead.push(*key);
            }
        }
        for key in dead {
            self.remove(&key);
        }
        self.due = self.conns.values().filter_map(|c| c.rto_at).min();
    }

    /// When [`TcpNat::on_timer`] may have something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due
    }
}
