//! UDP NAT: one connected host socket per (guest port, remote) flow,
//! forgotten after a minute of silence or when too many are open.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::link::TxQueue;
use super::{Poller, GUEST_IP};

pub const MAX_FLOWS: usize = 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Datagrams read per readiness event before the rest are dropped.
const MAX_READS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub guest_port: u16,
    /// The remote end as the guest addressed it.
    pub remote: SocketAddrV4,
}

struct Flow {
    sock: UdpSocket,
    token: u64,
    last: Instant,
}

pub struct UdpNat {
    flows: HashMap<Key, Flow>,
    by_token: HashMap<u64, Key>,
    last_sweep: Instant,
}

impl UdpNat {
    pub fn new() -> Self {
        UdpNat {
            flows: HashMap::new(),
            by_token: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn owns(&self, token: u64) -> bool {
        self.by_token.contains_key(&token)
    }

    fn remove(&mut self, key: &Key) {
        if let Some(flow) = self.flows.remove(key) {
            self.by_token.remove(&flow.token);
        }
    }

    /// Drops idle flows, at most once a second.
    pub fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let idle: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > IDLE_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.remove(&key);
        }
    }

    /// Sends a guest datagram on to `target`.
    pub fn send(
        &mut self,
        key: Key,
        target: SocketAddr,
        payload: &[u8],
        poller: &mut Poller,
        now: Instant,
    ) -> io::Result<()> {
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= MAX_FLOWS {
                if let Some(oldest) = self
                    .flows
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(k, _)| *k)
                {
                    self.remove(&oldest);
                }
            }
            let any: SocketAddr = match target {
                SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            };
            let sock = UdpSocket::bind(any)?;
            sock.set_nonblocking(true)?;
            sock.connect(target)?;
            let token = poller.add(sock.as_raw_fd(), EventSet::IN | EventSet::EDGE_TRIGGERED)?;
            self.flows.insert(
                key,
                Flow {
                    sock,
                    token,
                    last: now,
                },
            );
            self.by_token.insert(token, key);
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return Ok(());
        };
        flow.last = now;
        match flow.sock.send(payload) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads everything waiting on a flow's socket and hands it to the guest.
    pub fn on_readable(&mut self, token: u64, out: &mut TxQueue, buf: &mut [u8], now: Instant) {
        let Some(key) = self.by_token.get(&token).copied() else {
            return;
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        for _ in 0..MAX_READS {
            match flow.sock.recv(buf) {
                Ok(n) => {
                    flow.last = now;
                    out.udp_to_guest(
                        key.remote,
                        SocketAddrV4::new(GUEST_IP, key.guest_port),
                        &buf[..n],
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors (port unreachable) surface once each: go on.
                Err(_) => {}
            }
        }
    }
}
