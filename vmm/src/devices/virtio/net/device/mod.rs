//! The virtio-net device (type 1): a receive queue (0) and a transmit
//! queue (1) between the guest and a [`NetBackend`].
//!
//! Transmit: each chain is one frame, virtio-net header first. It is
//! gathered into a bounded host buffer and handed to the backend whole;
//! anything malformed is dropped and counted, never half-sent.
//!
//! Receive: frames are read from the backend one at a time and copied into
//! the guest's receive buffers. When the guest has no room for a frame,
//! that one frame waits here and the rest stay queued in the backend (the
//! tap's own queue bounds them) until the guest adds buffers and kicks the
//! receive queue.
//!
//! `VIRTIO_NET_F_MRG_RXBUF` is offered. With it Linux posts page-sized,
//! single-descriptor receive buffers and a 64 KiB GSO frame spans several
//! of them. Without it, a guest that accepts TSO has to post 64 KiB
//! buffers of ~18 descriptors each: a 256-entry ring then holds about 14
//! frames and the guest pins a megabyte per queue. Since frames are copied
//! through a host buffer anyway, spreading one over several guest buffers
//! costs nothing extra here. Guests that do not accept it are served one
//! buffer per frame.

use std::collections::VecDeque;
#[cfg(test)]
use std::os::unix::io::RawFd;
use std::sync::Arc;

use keel_common::guest::MacAddr;
use log::{debug, warn};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::backend::{NetBackend, NetBackendError, OFFLOAD_FEATURES, VNET_HDR_LEN};
use super::{BACKEND_EVENT, MAX_PACKET_LEN, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, TYPE_NET};
use crate::devices::virtio::chain::{read_into, ChainError, Parts, ReadStop, WriteBuffer};
use crate::devices::virtio::{
    avail_index_sane, read_config_bytes, serve_queue, signal_used, ActivateError, DeviceEvents,
    VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

/// Features the device implements itself, whatever the backend.
const BASE_FEATURES: u64 = VIRTIO_F_VERSION_1
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

/// Config space: `mac` (6 bytes) then `status` (le16). `max_virtqueue_pairs`
/// and `mtu` follow in the spec but only exist with features we do not offer.
const CONFIG_LEN: usize = 8;

/// An Ethernet header: anything shorter is not a frame.
const ETH_HLEN: usize = 14;

/// Most descriptors of one receive chain that are used; the rest of a
/// longer chain is left untouched. Linux uses at most MAX_SKB_FRAGS + 2
/// (45 + 2 with the largest configurable MAX_SKB_FRAGS). The cap bounds
/// what a hostile guest can make us hold per buffer.
const MAX_RX_SEGMENTS: usize = 64;

/// Offsets of the `virtio_net_hdr_v1` fields we look at.
const HDR_FLAGS: usize = 0;
const HDR_GSO_TYPE: usize = 1;
const HDR_NUM_BUFFERS: usize = 10;

/// Why a virtio-net device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the MAC address {0} is a multicast or all-zero address")]
    InvalidMac(MacAddr),
}

/// Why one transmit chain was dropped.
#[derive(Debug, thiserror::Error)]
enum TxError {
    #[error(transparent)]
    Malformed(#[from] ChainError),
    #[error("the chain carries {0} bytes or more, over the {MAX_PACKET_LEN}-byte limit")]
    TooLong(usize),
    #[error("the chain carries {0} bytes, too few for a header and an Ethernet frame")]
    TooShort(usize),
    #[error("a buffer lies outside guest memory")]
    BadBuffer,
    #[error("the header asks for offloads the guest did not negotiate")]
    Offloads,
}

#[derive(Default)]
struct Counters {
    rx_frames: u64,
    rx_bytes: u64,
    rx_dropped: u64,
    rx_bad_buffers: u64,
    tx_frames: u64,
    tx_bytes: u64,
    tx_dropped: u64,
}

/// A receive buffer taken from the guest and checked, waiting for a frame.
struct RxBuffer {
    head: u16,
    memory: WriteBuffer,
}

/// What the driver handed over at DRIVER_OK.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
}

/// Receive-side state that outlives a single call.
struct Rx {
    /// One frame, header first, as read from the backend.
    frame: Vec<u8>,
    /// Length of the frame in `frame` still waiting for guest buffers.
    pending: Option<usize>,
    /// Buffers popped from the receive queue but not used yet.
    buffers: VecDeque<RxBuffer>,
}

/// How delivering one frame went.
enum Delivery {
    Delivered,
    /// The guest has not posted enough buffers; retry on its next kick.
    NoBuffers,
    /// The frame can never fit the buffers this guest posts.
    TooBig,
}

/// A virtio-net device.
pub struct Net {
    backend: Box<dyn NetBackend>,
    config: [u8; CONFIG_LEN],
    features: u64,
    acked_features: u64,
    rx: Rx,
    tx_frame: Vec<u8>,
    counters: Counters,
    active: Option<Active>,
}

impl Net {
    /// A device with MAC address `mac` in front of `backend`. Offloads are
    /// offered as far as the backend supports them.
    pub fn new(backend: Box<dyn NetBackend>, mac: MacAddr) -> Result<Self, NetError> {
        if !mac.is_unicast() || mac.is_zero() {
            return Err(NetError::InvalidMac(mac));
        }
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac.0);
        // The link is always up: a tap has no carrier we could follow.
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let features = BASE_FEATURES | (backend.offload_features() & OFFLOAD_FEATURES);
        Ok(Net {
            backend,
            config,
            features,
            acked_features: 0,
            rx: Rx {
                frame: vec![0; MAX_PACKET_LEN],
                pending: None,
                buffers: VecDeque::new(),
            },
            tx_frame: vec![0; MAX_PACKET_LEN],
            counters: Counters::default(),
            active: None,
        })
    }

    /// The backend's fd, which `register_events` hands to the event loop.
    #[cfg(test)]
    pub(crate) fn backend_fd(&self) -> Option<RawFd> {
        self.backend.raw_fd()
    }

    /// The guest's MAC address.
    #[cfg(test)]
    fn mac(&self) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        MacAddr(mac)
    }

    /// Moves whatever the backend has into the guest's receive buffers and
    /// signals the receive queue if that returned any: on a backend event
    /// and on a kick of the receive queue.
    fn process_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let needed = self.rx.run(
            active,
            self.backend.as_mut(),
            self.acked_features,
            &mut self.counters,
        );
        signal_used("virtio-net", active.interrupt.as_ref(), RX_QUEUE, needed);
    }

    fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (frame, backend, counters, acked) = (
            &mut self.tx_frame,
            &mut self.backend,
            &mut self.counters,
            self.acked_features,
        );
        let needed = serve_queue("virtio-net tx", &mut active.tx, mem, |chain| {
            let gathered = gather_tx(mem, chain, frame).and_then(|len| {
                if offloads_allowed(&frame[..len], acked, false) {
                    Ok(len)
                } else {
                    Err(TxError::Offloads)
                }
            });
            match gathered {
                Ok(len) => match backend.write_frame(&frame[..len]) {
                    Ok(()) => {
                        counters.tx_frames += 1;
                        counters.tx_bytes += (len - VNET_HDR_LEN) as u64;
                    }
                    Err(e) => {
                        debug!("virtio-net: the backend refused a frame: {e}");
                        counters.tx_dropped += 1;
                    }
                },
                Err(e) => {
                    debug!("virtio-net: dropping a transmit chain: {e}");
                    counters.tx_dropped += 1;
                }
            }
            0
        });
        signal_used("virtio-net", active.interrupt.as_ref(), TX_QUEUE, needed);
    }
}

/// Copies the frame of a transmit chain (device-readable only, see the
/// direction rule in [`crate::devices::virtio::chain`]) into `buf`; returns
/// its length, header included.
fn gather_tx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    buf: &mut [u8],
) -> Result<usize, TxError> {
    let descs = Parts::split(chain).and_then(Parts::only_readable)?;
    let len = match read_into(mem, &descs, buf) {
        (len, None) => len,
        (len, Some(ReadStop::Full)) => return Err(TxError::TooLong(len)),
        (_, Some(ReadStop::BadBuffer)) => return Err(TxError::BadBuffer),
    };
    if len < VNET_HDR_LEN + ETH_HLEN {
        return Err(TxError::TooShort(len));
    }
    Ok(len)
}

/// Whether the header at the start of `packet` only relies on offloads the
/// guest accepted, for a frame going to the guest (`to_guest`) or from it.
/// A backend or guest that ignored the negotiation would otherwise hand
/// the other side frames with partial checksums or unsegmented payloads it
/// cannot deal with.
fn offloads_allowed(packet: &[u8], acked: u64, to_guest: bool) -> bool {
    let (Some(&flags), Some(&gso_type)) = (packet.get(HDR_FLAGS), packet.get(HDR_GSO_TYPE)) else {
        return false;
    };
    let (csum, tso4, tso6, ufo) = if to_guest {
        (
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_UFO,
        )
    } else {
        (
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_UFO,
        )
    };
    let has = |bit: u32| acked & (1 << bit) != 0;
    let flags = u32::from(flags);
    if flags & !(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) != 0 {
        return false;
    }
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !has(csum) {
        return false;
    }
    // ECN and UDP_L4 segmentation need features we never offer.
    match u32::from(gso_type) {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(tso4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(tso6),
        VIRTIO_NET_HDR_GSO_UDP => has(ufo),
        _ => false,
    }
}

/// Drops accepted features whose prerequisite was not accepted (the spec
/// forbids such sets; the tap refuses them).
fn sanitize_features(acked: u64) -> u64 {
    let mut acked = acked;
    let segmentation = |bits: [u32; 3]| bits.iter().fold(0u64, |m, b| m | (1 << b));
    if acked & (1 << VIRTIO_NET_F_GUEST_CSUM) == 0 {
        acked &= !segmentation([
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_UFO,
        ]);
    }
    if acked & (1 << VIRTIO_NET_F_CSUM) == 0 {
        acked &= !segmentation([
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_UFO,
        ]);
    }
    acked
}

impl Rx {
    /// Moves frames from the backend to the guest until either runs dry.
    /// Returns whether to interrupt the guest.
    fn run(
        &mut self,
        active: &mut Active,
        backend: &mut dyn NetBackend,
        acked: u64,
        counters: &mut Counters,
    ) -> bool {
        if !avail_index_sane(&active.rx, &active.mem) {
            debug!("virtio-net: the driver's receive available index is corrupt");
            return false;
        }
        let mergeable = acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut used_any = false;
        loop {
            let len = match self.pending {
                Some(len) => len,
                None => match backend.read_frame(&mut self.frame) {
                    Ok(len) => len,
                    Err(NetBackendError::WouldBlock) => break,
                    Err(e) => {
                        debug!("virtio-net: cannot read from the backend: {e}");
                        break;
                    }
                },
            };
            self.pending = None;
            let Some(frame) = self.frame.get_mut(..len) else {
                counters.rx_dropped += 1;
                continue;
            };
            if len < VNET_HDR_LEN + ETH_HLEN || !offloads_allowed(frame, acked, true) {
                debug!("virtio-net: dropping a {len}-byte frame the guest cannot take");
                counters.rx_dropped += 1;
                continue;
            }
            match deliver(
                frame,
                &mut self.buffers,
                active,
                mergeable,
                counters,
                &mut used_any,
            ) {
                Delivery::Delivered => {
                    counters.rx_frames += 1;
                    counters.rx_bytes += (len - VNET_HDR_LEN) as u64;
                }
                Delivery::NoBuffers => {
                    self.pending = Some(len);
                    break;
                }
                Delivery::TooBig => {
                    debug!(
                        "virtio-net: dropping a {len}-byte frame larger than the guest's buffers"
                    );
                    counters.rx_dropped += 1;
                }
            }
        }
        used_any && active.rx.needs_notification(&active.mem).unwrap_or(true)
    }

    /// Drops the waiting frame and the buffers held, as at reset.
    fn clear(&mut self, counters: &mut Counters) {
        if self.pending.take().is_some() {
            counters.rx_dropped += 1;
        }
        self.buffers.clear();
    }
}

/// Copies `frame` (header first) into the guest's receive buffers, taking
/// more from the queue as needed.
fn deliver(
    frame: &mut [u8],
    buffers: &mut VecDeque<RxBuffer>,
    active: &mut Active,
    mergeable: bool,
    counters: &mut Counters,
    used_any: &mut bool,
) -> Delivery {
    let len = frame.len();
    // How many of the held buffers the frame needs, once enough are held.
    let count = loop {
        if mergeable {
            let mut room = 0;
            if let Some(i) = buffers.iter().position(|b| {
                room += b.memory.capacity();
                room >= len
            }) {
                break i + 1;
            }
            if buffers.len() >= usize::from(active.rx.size()) {
                // Every buffer the ring can hold is here and still short.
                return Delivery::TooBig;
            }
        } else if let Some(first) = buffers.front() {
            if first.memory.capacity() >= len {
                break 1;
            }
            return Delivery::TooBig;
        }
        match pop_rx_buffer(&mut active.rx, &active.mem) {
            None => return Delivery::NoBuffers,
            Some(Ok(buffer)) => buffers.push_back(buffer),
            Some(Err(head)) => {
                // Unusable: give it back empty, which Linux counts as a
                // length error and recycles.
                counters.rx_bad_buffers += 1;
                match active.rx.add_used(&active.mem, head, 0) {
                    Ok(()) => *used_any = true,
                    Err(e) => debug!("virtio-net: cannot return receive descriptor {head}: {e}"),
                }
            }
        }
    };

    // count <= the queue size, at most 32768.
    frame[HDR_NUM_BUFFERS..HDR_NUM_BUFFERS + 2].copy_from_slice(&(count as u16).to_le_bytes());
    let mut offset = 0;
    for buffer in buffers.drain(..count) {
        let rest = frame.get(offset..).unwrap_or_default();
        let written = buffer.memory.write(&active.mem, &[rest]);
        offset += written;
        // written <= MAX_PACKET_LEN.
        match active.rx.add_used(&active.mem, buffer.head, written as u32) {
            Ok(()) => *used_any = true,
            Err(e) => debug!(
                "virtio-net: cannot return receive descriptor {}: {e}",
                buffer.head
            ),
        }
    }
    Delivery::Delivered
}

/// Takes the next receive buffer from the queue: `Some(Err(head))` if it
/// cannot be used (malformed or with a device-readable descriptor, see the
/// direction rule in [`crate::devices::virtio::chain`]; memory outside the
/// guest; too small for the header).
fn pop_rx_buffer(queue: &mut Queue, mem: &GuestMemoryMmap) -> Option<Result<RxBuffer, u16>> {
    let chain = queue.pop_descriptor_chain(mem)?;
    let head = chain.head_index();
    let descs = match Parts::split(chain).and_then(Parts::only_writable) {
        Ok(descs) => descs,
        Err(e) => {
            debug!("virtio-net: unusable receive buffer: {e}");
            return Some(Err(head));
        }
    };
    let Some(memory) = WriteBuffer::new(mem, &descs, MAX_PACKET_LEN, MAX_RX_SEGMENTS) else {
        debug!("virtio-net: a receive buffer lies outside guest memory");
        return Some(Err(head));
    };
    // The header must sit in the first buffer of a frame.
    let capacity = memory.capacity();
    if capacity < VNET_HDR_LEN {
        debug!("virtio-net: a receive buffer of {capacity} bytes cannot hold the header");
        return Some(Err(head));
    }
    Some(Ok(RxBuffer { head, memory }))
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is only writable with VIRTIO_NET_F_CTRL_MAC_ADDR, which
        // we do not offer; status is read-only.
        debug!(
            "virtio-net: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let got = queues.len();
        let Ok([rx, tx]) = <[Queue; 2]>::try_from(queues) else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        self.acked_features = sanitize_features(acked_features & self.features);
        if let Err(e) = self
            .backend
            .set_offload(self.acked_features & OFFLOAD_FEATURES)
        {
            // The backend keeps producing complete frames, which every
            // guest accepts: slower, not wrong.
            warn!("virtio-net: cannot enable the backend's offloads: {e}");
        }
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        match index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => debug!("virtio-net: ignoring a notify for queue {index}"),
        }
    }

    /// The backend fd, edge-triggered (see the module documentation).
    fn register_events(&mut self, events: DeviceEvents) -> std::io::Result<()> {
        match self.backend.raw_fd() {
            Some(fd) => events.add(fd, BACKEND_EVENT, EventSet::IN | EventSet::EDGE_TRIGGERED),
            None => Ok(()),
        }
    }

    fn handle_event(&mut self, id: u32, _events: EventSet) {
        if id == BACKEND_EVENT {
            self.process_rx();
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.rx.clear(&mut self.counters);
        if let Err(e) = self.backend.set_offload(0) {
            debug!("virtio-net: cannot turn the backend's offloads off: {e}");
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("rx_frames", c.rx_frames),
            ("rx_bytes", c.rx_bytes),
            ("rx_dropped", c.rx_dropped),
            ("rx_bad_buffers", c.rx_bad_buffers),
            ("tx_frames", c.tx_frames),
            ("tx_bytes", c.tx_bytes),
            ("tx_dropped", c.tx_dropped),
        ]
    }
}

#[cfg(test)]
mod tests;
