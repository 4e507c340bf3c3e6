//! Virtio devices and their transports.
//!
//! The split follows Firecracker and Cloud Hypervisor. A device (`block`,
//! `net`, `rng`, `vsock`) implements [`VirtioDevice`]: it knows its queues
//! and its config space, registers its own host descriptors with the event
//! loop ([`DeviceEvents`]), and signals its driver through the
//! [`VirtioInterrupt`] handle it is given at activation, per queue or for a
//! config change. A transport (`mmio`, `pci`) implements
//! [`VirtioTransport`]: it owns everything the driver negotiates through
//! registers (status, features, queue addresses, interrupt status), hands
//! the device its queues and interrupt handle once the driver sets
//! DRIVER_OK, and forwards queue kicks ([`VirtioDevice::queue_notify`]).
//!
//! Wiring a device up:
//!
//! ```text
//! let options = BlockOptions { serial: "root".into(), ..BlockOptions::default() };
//! let mut disk = Block::new(file, options)?;
//! disk.register_events(DeviceEvents::new(epoll.clone(), slot))?;
//! let irq: Arc<dyn Interrupt> = Arc::new(irq_eventfd); // registered as a KVM irqfd
//! let transport = MmioTransport::new(Box::new(disk), mem.clone(), irq)?;
//! // Map it on the MMIO bus at `base` with length MMIO_LEN, register one
//! // ioeventfd per queue at `base + QUEUE_NOTIFY_OFFSET` (datamatch = queue
//! // index) and call `transport.queue_notify(index)` when it fires;
//! // `Token::Device { slot, id }` events go to `transport.handle_event`.
//! ```

use std::io;
use std::num::Wrapping;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

pub use crate::devices::events::DeviceEvents;

pub mod block;
pub mod chain;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod rng;
mod status;
pub mod vsock;

pub use block::{BackingImage, Block, BlockError, BlockOptions, DiskImage};
pub use mmio::{MmioError, MmioInterrupt, MmioTransport, MMIO_LEN, QUEUE_NOTIFY_OFFSET};
pub use net::{Net, NetBackend, NetBackendError, NetError, Tap, TapError, TYPE_NET};
pub use pci::{PciInterrupt, VirtioPciDevice, VirtioPciError, VIRTIO_MSI_NO_VECTOR};
pub use rng::Rng;
pub use vsock::{Vsock, VsockError, TYPE_VSOCK};

/// Virtio device id of a block device.
pub const TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
/// Virtio device id of an entropy device.
pub const TYPE_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Feature bit every device offers: this is a modern-only (virtio 1.x) VMM.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// An interrupt line: an eventfd registered with KVM as an irqfd, or a
/// stand-in in tests. Transports raise it; devices never see it.
pub trait Interrupt: Send + Sync {
    /// Raises the line once.
    fn trigger(&self) -> io::Result<()>;
}

/// An eventfd registered with KVM as an irqfd: writing to it injects the
/// interrupt without a trip through the vCPU thread.
impl Interrupt for EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// What a device tells its driver about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device's configuration changed (or it needs a reset).
    Config,
    /// The device returned buffers on queue `index`.
    Queue(u16),
}

/// How a device signals its driver; each transport supplies one at
/// activation (MMIO: sets InterruptStatus bits and writes its one irqfd;
/// PCI: the queue's MSI-X vector, or INTx with the ISR).
///
/// `trigger` may run on any thread holding the device (a vCPU thread for a
/// register write, the event loop for an ioeventfd or a backend event), so
/// implementations use atomics, not the transport's lock.
pub trait VirtioInterrupt: Send + Sync {
    /// Signals `kind` to the driver.
    fn trigger(&self, kind: VirtioInterruptType) -> io::Result<()>;
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

/// A virtio device behind a transport (MMIO or PCI).
///
/// All methods run on whichever thread holds the transport's lock (a vCPU
/// thread for register accesses, the event loop for ioeventfd kicks and
/// backend events), so a device needs no internal locking. Every method
/// must tolerate a hostile driver: no panics, no access outside guest
/// memory.
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
    /// against guest memory by the transport), the features it accepted (a
    /// subset of `device_features`) and the handle to signal it through.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;

    /// The driver kicked queue `index`: serve it, signal through the
    /// interrupt. Ignored before activation and for an unknown index.
    fn queue_notify(&mut self, index: u16);

    /// Called once before the VM runs: register host-side descriptors (tap,
    /// vsock sockets) with the event loop. The device may keep `events` to
    /// change its registrations later.
    fn register_events(&mut self, events: DeviceEvents) -> io::Result<()> {
        let _ = events;
        Ok(())
    }

    /// One of the descriptors registered with `id` is ready.
    fn handle_event(&mut self, id: u32, events: EventSet) {
        let _ = (id, events);
    }

    /// Back to exactly the state before activation: queues, memory,
    /// interrupt, staged receive data, vsock connections and pending
    /// replies dropped. Counters are kept.
    fn reset(&mut self);

    /// Monotonic per-device statistics, e.g. `("read_bytes", n)`.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// What the event loop needs from a transport, whichever it is (MMIO now,
/// PCI next).
pub trait VirtioTransport: Send {
    /// The virtio device id of the device behind the transport.
    fn device_type(&self) -> u32;

    /// How many queues the device has: the VMM binds one ioeventfd to each.
    fn queue_count(&self) -> usize;

    /// The driver kicked queue `index` through its ioeventfd.
    fn queue_notify(&mut self, index: u16);

    /// A descriptor the device registered with `id` is ready: forwarded to
    /// the device.
    fn handle_event(&mut self, id: u32, events: EventSet);

    /// The device's counters followed by the transport's own.
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

/// Signals that queue `index` returned buffers, when `needed`. A failure
/// is only logged: the driver finds the buffers on its next look.
pub(crate) fn signal_used(device: &str, interrupt: &dyn VirtioInterrupt, index: u16, needed: bool) {
    if !needed {
        return;
    }
    if let Err(e) = interrupt.trigger(VirtioInterruptType::Queue(index)) {
        log::warn!("{device}: cannot interrupt the guest: {e}");
    }
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

    use std::cell::RefCell;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::{Interrupt, VirtioDevice, VirtioInterrupt, VirtioInterruptType};

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

    /// A device-side interrupt handle that records what it was asked to
    /// signal.
    #[derive(Default)]
    pub struct RecordingInterrupt(Mutex<Vec<VirtioInterruptType>>);

    impl RecordingInterrupt {
        /// Everything signalled since the last call.
        pub fn take(&self) -> Vec<VirtioInterruptType> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    impl VirtioInterrupt for RecordingInterrupt {
        fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(kind);
            Ok(())
        }
    }

    thread_local! {
        static IRQ: RefCell<Arc<RecordingInterrupt>> = RefCell::default();
    }

    /// The interrupt handle of the current test (each test runs on a
    /// thread of its own): hand it to `activate`, then `kick` and
    /// `signalled` read what the device signalled through it.
    pub fn irq() -> Arc<RecordingInterrupt> {
        IRQ.with(|irq| irq.borrow().clone())
    }

    /// Whether the device signalled anything since the last look.
    pub fn signalled() -> bool {
        !irq().take().is_empty()
    }

    /// Tells `device` that its descriptor `id` is ready and returns whether
    /// it signalled the guest.
    pub fn event(
        device: &mut dyn VirtioDevice,
        id: u32,
        events: vmm_sys_util::epoll::EventSet,
    ) -> bool {
        irq().take();
        device.handle_event(id, events);
        signalled()
    }

    /// Kicks queue `index` of `device` and returns whether it signalled
    /// the guest, as the old "interrupt needed" result did.
    pub fn kick(device: &mut dyn VirtioDevice, index: u16) -> bool {
        irq().take();
        device.queue_notify(index);
        signalled()
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
