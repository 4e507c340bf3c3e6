//! The guest's end of the link, as smoltcp sees it: a [`phy::Device`] whose
//! receive side is the one guest frame being handled (borrowed, not
//! copied) and whose transmit side is the bounded queue of frames waiting
//! for the guest ([`TxQueue`]).

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

use super::super::backend::VNET_HDR_LEN;
use super::GATEWAY_MAC;

/// Frames waiting for the guest, at most. When the queue is full smoltcp
/// holds its segments back (the device is "exhausted") and TCP resumes
/// once the guest has read; frames built outside smoltcp are dropped.
pub const MAX_QUEUED: usize = 1024;
/// The guest link's MTU (IP), hence an MSS of 1460.
pub const MTU: usize = 1500;
const ETH_HLEN: usize = 14;
/// Spare frame buffers kept for reuse, and the largest one kept.
const MAX_SPARE: usize = 256;
const MAX_SPARE_CAPACITY: usize = 4096;

/// Frames for the guest, each with a zeroed `virtio_net_hdr_v1` in front.
pub(crate) struct TxQueue {
    frames: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// The guest's MAC, learnt from its frames, for frames built here.
    pub guest_mac: Option<EthernetAddress>,
    /// Frames dropped because the queue was full.
    pub dropped: u64,
}

impl TxQueue {
    pub fn new() -> Self {
        TxQueue {
            frames: VecDeque::new(),
            spare: Vec::new(),
            guest_mac: None,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.frames.len() >= MAX_QUEUED
    }

    /// Queues a frame of `len` bytes written by `fill` (which sees the
    /// Ethernet frame, header zeroed in front). A full queue drops it, but
    /// `fill` still runs, on a buffer nobody sees.
    fn push_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut f = self.spare.pop().unwrap_or_default();
        f.clear();
        f.resize(VNET_HDR_LEN + len, 0);
        let r = fill(&mut f[VNET_HDR_LEN..]);
        if self.is_full() {
            self.dropped += 1;
            self.recycle(f);
        } else {
            self.frames.push_back(f);
        }
        r
    }

    fn recycle(&mut self, f: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && f.capacity() <= MAX_SPARE_CAPACITY {
            self.spare.push(f);
        }
    }

    /// Moves the oldest frame into `buf` (truncated to fit) and returns
    /// its length.
    pub fn pop_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        let f = self.frames.pop_front()?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        self.recycle(f);
        Some(n)
    }

    /// Queues a UDP datagram for the guest (UDP is relayed outside
    /// smoltcp's sockets, see the module documentation). Datagrams too big
    /// for one IPv4 packet are dropped; others go out whole, even past the
    /// MTU, as a host's oversized datagram would arrive from a real NAT
    /// with GRO.
    pub fn udp_to_guest(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        if 20 + udp_len > usize::from(u16::MAX) {
            self.dropped += 1;
            return;
        }
        let dst_mac = if dst.ip().is_broadcast() {
            EthernetAddress::BROADCAST
        } else {
            self.guest_mac.unwrap_or(EthernetAddress::BROADCAST)
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(GATEWAY_MAC),
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        };
        let ip = Ipv4Repr {
            src_addr: *src.ip(),
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: 64,
        };
        let udp = UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
        };
        let caps = ChecksumCapabilities::default();
        self.push_with(ETH_HLEN + 20 + udp_len, |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth.emit(&mut frame);
            let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
            ip.emit(&mut packet, &caps);
            let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
            udp.emit(
                &mut datagram,
                &ip.src_addr.into(),
                &ip.dst_addr.into(),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &caps,
            );
        });
    }
}

/// The smoltcp side of the backend: interface, sockets and the link.
pub(crate) struct Stack {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub tx: TxQueue,
    epoch: std::time::Instant,
}

impl Stack {
    pub fn new(iface: impl FnOnce(&mut Link<'_>, SInstant) -> Interface) -> Self {
        let epoch = std::time::Instant::now();
        let mut tx = TxQueue::new();
        let iface = iface(
            &mut Link {
                rx: None,
                tx: &mut tx,
            },
            SInstant::ZERO,
        );
        Stack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            tx,
            epoch,
        }
    }

    /// smoltcp's clock: microseconds since the backend was built.
    pub fn now(&self) -> SInstant {
        SInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Lets smoltcp process `frame` (if any) from the guest and send what
    /// its sockets have to send.
    pub fn poll(&mut self, frame: Option<&[u8]>) {
        let now = self.now();
        let mut link = Link {
            rx: frame,
            tx: &mut self.tx,
        };
        self.iface.poll(now, &mut link, &mut self.sockets);
    }

    /// How long until smoltcp wants [`Stack::poll`] again (retransmissions,
    /// delayed ACKs, timeouts), `None` if it has nothing pending.
    pub fn poll_delay(&mut self) -> Option<std::time::Duration> {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }
}

/// The link as a smoltcp device, for the length of one poll.
pub(crate) struct Link<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut TxQueue,
}

impl phy::Device for Link<'_> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: SInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.take()?;
        Some((RxToken(frame), TxToken(self.tx)))
    }

    fn transmit(&mut self, _: SInstant) -> Option<TxToken<'_>> {
        if self.tx.is_full() {
            None
        } else {
            Some(TxToken(self.tx))
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETH_HLEN + MTU;
        caps
    }
}

pub(crate) struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub(crate) struct TxToken<'a>(&'a mut TxQueue);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.push_with(len, f)
    }
}
