//! The virtio-vsock device (type 19): receive (0), transmit (1) and event
//! (2) queues in front of the [`Muxer`].

use std::path::Path;
use std::sync::Arc;

use log::debug;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::muxer::Muxer;
use super::packet::{read_tx_packet, RxBuffer, HDR_LEN, MAX_PAYLOAD};
use super::{EVENT_QUEUE, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, TYPE_VSOCK};
use crate::devices::virtio::{
    avail_index_sane, read_config_bytes, serve_queue, signal_used, ActivateError, DeviceEvents,
    VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1,
};

/// Config space: `guest_cid` (le64).
const CONFIG_LEN: usize = 8;

/// Why a vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or too large; use 3 to 4294967294")]
    InvalidCid(u64),
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Counters {
    rx_packets: u64,
    rx_bytes: u64,
    rx_bad_buffers: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_malformed: u64,
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
    /// Held, never used: we send no events (they only matter for live
    /// migration).
    _event: Queue,
}

/// A virtio-vsock device bridging guest streams to host Unix sockets.
pub struct Vsock {
    guest_cid: u64,
    config: [u8; CONFIG_LEN],
    muxer: Muxer,
    /// A transmit packet, header first.
    tx_buf: Vec<u8>,
    /// The payload of a receive packet.
    rx_buf: Vec<u8>,
    counters: Counters,
    active: Option<Active>,
}

impl Vsock {
    /// A device for a guest with CID `guest_cid`, listening for host
    /// clients on `uds_path` (which must not exist yet; it is removed when
    /// the device is dropped). Guest connections to port P go to
    /// `{uds_path}_P`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        // 0-2 are the hypervisor, local and host; u32::MAX is VMADDR_CID_ANY,
        // and only the low 32 bits are used.
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let muxer = Muxer::new(guest_cid, uds_path).map_err(|source| VsockError::Listen {
            path: uds_path.display().to_string(),
            source,
        })?;
        Ok(Vsock {
            guest_cid,
            config: guest_cid.to_le_bytes(),
            muxer,
            tx_buf: vec![0; HDR_LEN + MAX_PAYLOAD],
            rx_buf: vec![0; MAX_PAYLOAD],
            counters: Counters::default(),
            active: None,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Open connections, host clients still handshaking included.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    #[cfg(test)]
    pub(crate) fn muxer_mut(&mut self) -> &mut Muxer {
        &mut self.muxer
    }

    /// Hands every transmit packet to the muxer, then delivers what that
    /// produced.
    fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (tx_buf, counters, muxer) = (&mut self.tx_buf, &mut self.counters, &mut self.muxer);
        let needed = serve_queue("virtio-vsock tx", &mut active.tx, mem, |chain| {
            match read_tx_packet(mem, chain, tx_buf) {
                Ok((header, len)) => {
                    counters.tx_packets += 1;
                    counters.tx_bytes += len as u64;
                    let payload = &tx_buf[HDR_LEN..HDR_LEN + len];
                    muxer.handle_guest_packet(&header, payload);
                }
                Err((header, e)) => {
                    debug!("virtio-vsock: dropping a transmit packet: {e}");
                    counters.tx_malformed += 1;
                    // The stream it names lost data: reset it.
                    if let Some(header) = header {
                        muxer.reset_stream(&header);
                    }
                }
            }
            0
        });
        signal_used("virtio-vsock", active.interrupt.as_ref(), TX_QUEUE, needed);
        self.fill_rx();
    }

    /// Puts the muxer's packets into receive buffers while both last, and
    /// signals the receive queue if any were used.
    fn fill_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if !self.muxer.has_rx_work() {
            return;
        }
        if !avail_index_sane(&active.rx, &active.mem) {
            debug!("virtio-vsock: the driver's receive available index is corrupt");
            return;
        }
        let mut used_any = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = active.rx.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let buffer = RxBuffer::new(&active.mem, chain).filter(|b| b.capacity() >= HDR_LEN);
            let Some(buffer) = buffer else {
                debug!("virtio-vsock: returning an unusable receive buffer");
                self.counters.rx_bad_buffers += 1;
                match active.rx.add_used(&active.mem, head, 0) {
                    Ok(()) => used_any = true,
                    Err(e) => debug!("virtio-vsock: cannot return receive descriptor {head}: {e}"),
                }
                continue;
            };
            let room = (buffer.capacity() - HDR_LEN).min(MAX_PAYLOAD);
            let Some((header, len)) = self.muxer.next_packet(&mut self.rx_buf[..room]) else {
                // Nothing after all: leave the buffer to the driver.
                active.rx.go_to_previous_position();
                break;
            };
            let written = buffer.write(&active.mem, &header, &self.rx_buf[..len]);
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += len as u64;
            // written <= HDR_LEN + MAX_PAYLOAD.
            match active.rx.add_used(&active.mem, head, written as u32) {
                Ok(()) => used_any = true,
                Err(e) => debug!("virtio-vsock: cannot return receive descriptor {head}: {e}"),
            }
        }
        let needed = used_any && active.rx.needs_notification(&active.mem).unwrap_or(true);
        signal_used("virtio-vsock", active.interrupt.as_ref(), RX_QUEUE, needed);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        // Streams only: no VIRTIO_VSOCK_F_SEQPACKET.
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-vsock: ignoring a {}-byte config write at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let got = queues.len();
        let Ok([rx, tx, event]) = <[Queue; 3]>::try_from(queues) else {
            return Err(ActivateError::QueueCount { expected: 3, got });
        };
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
            _event: event,
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        match index {
            // New buffers: deliver what waited for them.
            RX_QUEUE => self.fill_rx(),
            TX_QUEUE => self.process_tx(),
            // The driver refilled the event queue; we never use it.
            EVENT_QUEUE => {}
            _ => debug!("virtio-vsock: ignoring a notify for queue {index}"),
        }
    }

    /// The listener now, each connection's socket as it opens.
    fn register_events(&mut self, events: DeviceEvents) -> std::io::Result<()> {
        self.muxer.register_events(events)
    }

    /// Host sockets are served even before activation (host clients are
    /// accepted and their requests wait for the driver): edge-triggered
    /// readiness ignored now would never be reported again.
    fn handle_event(&mut self, id: u32, events: EventSet) {
        self.muxer.host_event(id, events);
        self.fill_rx();
    }

    fn reset(&mut self) {
        self.active = None;
        // The guest's sockets are gone; so go ours.
        self.muxer.reset();
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        let m = &self.muxer.counters;
        vec![
            ("rx_packets", c.rx_packets),
            ("rx_bytes", c.rx_bytes),
            ("rx_bad_buffers", c.rx_bad_buffers),
            ("tx_packets", c.tx_packets),
            ("tx_bytes", c.tx_bytes),
            ("tx_malformed", c.tx_malformed),
            ("tx_bad_cid", m.bad_cid),
            ("guest_connections", m.guest_connections),
            ("host_connections", m.host_connections),
            ("refused_connections", m.refused_connections),
            ("resets_sent", m.resets_sent),
            ("resets_dropped", m.resets_dropped),
        ]
    }
}

#[cfg(test)]
mod tests;
