//! Virtio devices and their MMIO transport.
//!
//! The split follows Firecracker and Cloud Hypervisor: a device (`block`,
//! `rng`) only knows about its queues and its config space, and the transport
//! (`mmio`) owns everything the driver negotiates through registers (status,
//! features, queue addresses, interrupt status). The transport hands the
//! device its queues once the driver sets DRIVER_OK, and calls
//! [`VirtioDevice::process_queue`] whenever the driver kicks a queue.
//!
//! Wiring a device up:
//!
//! ```text
//! let disk = Block::new(file, BlockOptions { read_only: false, serial: "root".into() })?;
//! let irq: Arc<dyn Interrupt> = Arc::new(irq_eventfd); // registered as a KVM irqfd
//! let transport = MmioTransport::new(Box::new(disk), mem.clone(), irq)?;
//! // Map it on the MMIO bus at `base` with length MMIO_LEN, register one
//! // ioeventfd per queue at `base + QUEUE_NOTIFY_OFFSET` (datamatch = queue
//! // index) and call `transport.queue_notify(index)` when it fires.
//! ```

use std::io;
use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub mod block;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

pub use block::{Block, BlockError, BlockOptions};
pub use mmio::{MmioError, MmioTransport, MMIO_LEN, QUEUE_NOTIFY_OFFSET};
pub use net::{Net, NetBackend, NetBackendError, NetError, Tap, TapError, TYPE_NET};
pub use rng::Rng;
pub use vsock::{Vsock, VsockError, TYPE_VSOCK};

/// Virtio device id of a block device.
pub const TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
/// Virtio device id of an entropy device.
pub const TYPE_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Feature bit every device offers: this is a modern-only (virtio 1.x) VMM.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// How the transport tells the guest that something happened.
pub trait Interrupt: Send + Sync {
    /// Raises the device's interrupt line once.
    fn trigger(&self) -> io::Result<()>;
}

/// An eventfd registered with KVM as an irqfd: writing to it injects the
/// interrupt without a trip through the vCPU thread.
impl Interrupt for EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the device needs {expected} queues but was given {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} is not set up correctly by the driver")]
    InvalidQueue(usize),
    #[error("the device is already active")]
    AlreadyActive,
}

/// A virtio device behind a transport.
///
/// All methods run on whichever thread holds the transport's lock (a vCPU
/// thread for register accesses, the event loop for ioeventfd kicks), so a
/// device needs no internal locking. Every method must tolerate a hostile
/// driver: no panics, no access outside guest memory.
pub trait VirtioDevice: Send {
    /// The virtio device id (`TYPE_BLOCK`, `TYPE_RNG`, ...).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue; the length is the number of queues.
    /// Every size must be a power of two no larger than 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers; always includes `VIRTIO_F_VERSION_1`.
    fn device_features(&self) -> u64;

    /// Reads the device-specific config space; bytes beyond its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific config space; read-only fields are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device with the queues the driver set up (already checked
    /// against guest memory by the transport) and the features it accepted
    /// (a subset of `device_features`).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;

    /// Handles every available buffer on queue `index`. Returns true when
    /// buffers were returned to the guest and it should be interrupted.
    /// Does nothing (and returns false) before activation or for an unknown
    /// queue.
    fn process_queue(&mut self, index: usize) -> bool;

    /// Returns the device to its state before activation, dropping the
    /// queues and guest memory. Counters are kept.
    fn reset(&mut self);

    /// Monotonic per-device statistics, e.g. `("read_bytes", n)`.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// Whether the driver's available index is plausible: at most a queue's
/// worth ahead of what the device consumed. virtio-queue refuses to iterate
/// otherwise and logs at error level each time; checking first keeps a
/// hostile driver from flooding the host log with one write.
pub(crate) fn avail_index_sane(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    match queue.avail_idx(mem, Ordering::Acquire) {
        Ok(idx) => (idx - Wrapping(queue.next_avail())).0 <= queue.size(),
        Err(_) => false,
    }
}

/// Serves every chain the driver made available on `queue`: `handle` does
/// the device's work and returns how many bytes it wrote into the chain.
/// Returns whether the driver wants an interrupt for the chains returned.
pub(crate) fn serve_queue(
    device: &str,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) -> bool {
    if !avail_index_sane(queue, mem) {
        log::debug!("{device}: the driver's available index is corrupt");
        return false;
    }
    let mut used_any = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let len = handle(chain);
        match queue.add_used(mem, head, len) {
            Ok(()) => used_any = true,
            Err(e) => log::debug!("{device}: cannot return descriptor {head}: {e}"),
        }
    }
    used_any && queue.needs_notification(mem).unwrap_or(true)
}

/// Copies `src` (a device's config space) into `data` at `offset`, leaving
/// zeros for whatever lies beyond its end.
pub(crate) fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(avail) = src.get(start..) {
        let n = avail.len().min(data.len());
        data[..n].copy_from_slice(&avail[..n]);
    }
}

/// Helpers shared by the device and transport tests: guest memory, chains
/// written the way a driver would, scratch disk images.
#[cfg(test)]
pub(crate) mod testing {
    use std::fs::{File, OpenOptions};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::Interrupt;

    /// Descriptor flags: device-readable / device-writable.
    pub const R: u16 = 0;
    pub const W: u16 = VRING_DESC_F_WRITE as u16;
    pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;

    pub fn guest_mem(ranges: &[(u64, usize)]) -> GuestMemoryMmap {
        let ranges: Vec<_> = ranges.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
        GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
    }

    /// Publishes one chain of `(addr, len, flags)` whose descriptors occupy
    /// table slots `first..`, linked in order.
    pub fn add_chain(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: &[(u64, u32, u16)]) {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let (flags, next) = if i + 1 == descs.len() {
                    (flags & !NEXT, 0)
                } else {
                    (flags | NEXT, first + i as u16 + 1)
                };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        vq.add_desc_chains(&raw, first).expect("add chain");
    }

    /// The used ring's index and entry `i` as (descriptor id, length).
    pub fn used(vq: &MockSplitQueue<GuestMemoryMmap>, i: usize) -> (u16, u32, u32) {
        let elem = vq.used().ring().ref_at(i).expect("used entry").load();
        (vq.used().idx().load(), elem.id(), elem.len())
    }

    /// A scratch file in the temp directory, removed on drop.
    pub struct TempFile {
        pub path: PathBuf,
    }

    impl TempFile {
        pub fn new(tag: &str, contents: &[u8]) -> Self {
            static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "keel-vmm-test-{}-{tag}-{id}.img",
                std::process::id()
            ));
            std::fs::write(&path, contents).expect("write temp file");
            TempFile { path }
        }

        pub fn open(&self, writable: bool) -> File {
            OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&self.path)
                .expect("open temp file")
        }

        pub fn contents(&self) -> Vec<u8> {
            std::fs::read(&self.path).expect("read temp file")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// An interrupt that only counts how often it fired.
    #[derive(Default)]
    pub struct CountingInterrupt(pub AtomicUsize);

    impl CountingInterrupt {
        pub fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Interrupt for CountingInterrupt {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_interrupt_writes_one() {
        let efd = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        efd.trigger().expect("trigger");
        efd.trigger().expect("trigger");
        assert_eq!(efd.read().expect("read"), 2);
    }

    #[test]
    fn config_bytes_out_of_range_read_as_zero() {
        let src = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&src, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&src, 4, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&src, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
