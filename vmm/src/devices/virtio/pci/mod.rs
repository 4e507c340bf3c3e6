//! Virtio over PCI, the modern (virtio 1.x) transport: a PCI function
//! whose BAR holds the common configuration, notification, ISR and
//! device-specific structures and the MSI-X table.
//!
//! Wiring a device up (done by the VM builder):
//!
//! ```text
//! let vectors = VirtioPciDevice::vectors_for(&*device);    // queues + 1
//! let gsis = resources.allocate_msi_gsis(vectors)?;        // one GSI and irqfd per vector:
//! let routes: Arc<dyn MsiRoutes> = Arc::new(KvmMsiRoutes::new(vm, gsis, irqfds));
//! let bar = resources.allocate_bar(BAR_SIZE, BAR_KIND)?;  // 64-bit, above RAM
//! let slot = root.next_slot()?;
//! let gsi = intx_gsi(slot, 0);                             // INTA#
//! let intx: Arc<dyn Interrupt> = Arc::new(intx_irqfd);     // an irqfd on `gsi`
//! let pci = Arc::new(Mutex::new(VirtioPciDevice::new(device, mem, bar, routes, intx, gsi as u8)?));
//! root.add_device(pci.clone())?;                           // config space via CF8/ECAM
//! for b in pci.bars() { mmio.insert(b.addr, b.len, pci.clone())? }
//! for q in 0..queue_count { ioeventfd at pci.notify_address(q), no datamatch (2-byte writes),
//!                           calling VirtioTransport::queue_notify(q) }
//! ```
//!
//! The device signals through [`PciInterrupt`]: the queue's MSI-X vector
//! when the driver enabled MSI-X, INTx with the ISR otherwise. A guest
//! moving the BAR reaches the root's `BarRelocation` with this device's
//! slot; the new notify addresses are `notify_address(q)` afterwards.

mod caps;
mod common;
mod interrupt;

use std::sync::Arc;

use log::debug;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

pub use caps::{BAR_KIND, BAR_SIZE, MAX_QUEUES, NOTIFY_MULTIPLIER};
pub use interrupt::{PciInterrupt, VIRTIO_MSI_NO_VECTOR};

use super::{Interrupt, VirtioDevice, VirtioTransport};
use crate::devices::bus::BusDevice;
use crate::devices::pci::{
    BarMove, BarRegion, ConfigError, MsiRoutes, MsixCap, PciConfig, PciDevice,
};
use caps::{
    COMMON_LEN, COMMON_OFFSET, DEVICE_LEN, DEVICE_OFFSET, ISR_OFFSET, MSIX_PBA_OFFSET,
    MSIX_TABLE_OFFSET, NOTIFY_LEN, NOTIFY_OFFSET,
};
use common::QueueSlot;

/// Why a virtio-pci device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("queue {index} of the device has maximum size {size}, which is not a power of two up to 32768")]
    QueueMaxSize { index: usize, size: u16 },
    #[error("the device has {0} queues, more than the {MAX_QUEUES} virtio-pci supports")]
    TooManyQueues(usize),
    #[error("the PCI configuration space cannot be laid out: {0}")]
    Config(#[from] ConfigError),
}

/// A virtio device behind a virtio-pci function.
pub struct VirtioPciDevice {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    config: PciConfig,
    msix_cap: MsixCap,
    interrupt: Arc<PciInterrupt>,
    queues: Vec<QueueSlot>,
    device_feature_select: u32,
    driver_feature_select: u32,
    acked_features: u64,
    status: u8,
    queue_select: u16,
    activated: bool,
    notifies: u64,
}

impl VirtioPciDevice {
    /// The MSI-X vectors a device needs: one per queue and one for config
    /// changes. The VMM allocates a GSI and an irqfd for each.
    pub fn vectors_for(device: &dyn VirtioDevice) -> u16 {
        u16::try_from(device.queue_max_sizes().len() + 1).unwrap_or(u16::MAX)
    }

    /// Puts `device` behind a PCI function whose BAR (`BAR_SIZE` bytes,
    /// `BAR_KIND`) starts at `bar_addr`. `mem` is the guest's memory, used
    /// to check queue addresses and handed to the device at DRIVER_OK;
    /// `routes` delivers the MSI-X vectors; `intx` is the INTA# line, whose
    /// GSI the guest reads as `intx_line`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        bar_addr: u64,
        routes: Arc<dyn MsiRoutes>,
        intx: Arc<dyn Interrupt>,
        intx_line: u8,
    ) -> Result<Self, VirtioPciError> {
        let sizes = device.queue_max_sizes();
        if sizes.len() > MAX_QUEUES {
            return Err(VirtioPciError::TooManyQueues(sizes.len()));
        }
        let queues = sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                QueueSlot::new(size).ok_or(VirtioPciError::QueueMaxSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vectors = Self::vectors_for(&*device);
        let (config, msix_cap) = caps::build(device.device_type(), vectors, bar_addr, intx_line)?;
        let interrupt = Arc::new(PciInterrupt::new(queues.len(), routes, intx));
        Ok(VirtioPciDevice {
            device,
            mem,
            config,
            msix_cap,
            interrupt,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            acked_features: 0,
            status: 0,
            queue_select: 0,
            activated: false,
            notifies: 0,
        })
    }

    /// The BARs to map on the MMIO bus, at their current addresses; bus
    /// offsets are relative to each BAR's start.
    pub fn bars(&self) -> Vec<BarRegion> {
        self.config.bars()
    }

    /// Where the driver notifies queue `index` (write of the queue index,
    /// 2 bytes): the address of its ioeventfd at the BAR's current place.
    pub fn notify_address(&self, index: u16) -> Option<u64> {
        if usize::from(index) >= self.queues.len() {
            return None;
        }
        let bar = self.config.bars().first()?.addr;
        Some(bar + NOTIFY_OFFSET + u64::from(index) * u64::from(NOTIFY_MULTIPLIER))
    }

    /// The interrupt handle: the VMM's INTx resample path reads
    /// `intx_pending` from it.
    pub fn interrupt(&self) -> Arc<PciInterrupt> {
        self.interrupt.clone()
    }

    /// Whether the driver finished initialisation and the device is running.
    #[cfg(test)]
    fn is_activated(&self) -> bool {
        self.activated
    }

    /// A queue kick, through its ioeventfd or a write to its notify
    /// address; ignored until the device is activated.
    fn notify(&mut self, index: u16) {
        if !self.activated {
            debug!("virtio-pci: ignoring a notify for queue {index} before activation");
            return;
        }
        self.notifies += 1;
        self.device.queue_notify(index);
    }

    fn read_bar(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        let inside = |start: u64, size: u64| {
            offset >= start && offset.checked_add(len).is_some_and(|e| e <= start + size)
        };
        if inside(COMMON_OFFSET, COMMON_LEN) {
            self.read_common(offset - COMMON_OFFSET, data);
        } else if offset == ISR_OFFSET && len == 1 {
            data[0] = self.interrupt.take_isr();
        } else if inside(DEVICE_OFFSET, DEVICE_LEN) && matches!(len, 1 | 2 | 4 | 8) {
            self.device.read_config(offset - DEVICE_OFFSET, data);
        } else if inside(MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) {
            self.interrupt
                .msix()
                .read_table(offset - MSIX_TABLE_OFFSET, data);
        } else if inside(MSIX_PBA_OFFSET, caps::BAR_SIZE - MSIX_PBA_OFFSET) {
            self.interrupt
                .msix()
                .read_pba(offset - MSIX_PBA_OFFSET, data);
        } else {
            debug!("virtio-pci: ignoring a {len}-byte read at {offset:#x}");
        }
    }

    fn write_bar(&mut self, offset: u64, data: &[u8]) {
        let len = data.len() as u64;
        let inside = |start: u64, size: u64| {
            offset >= start && offset.checked_add(len).is_some_and(|e| e <= start + size)
        };
        if inside(COMMON_OFFSET, COMMON_LEN) {
            self.write_common(offset - COMMON_OFFSET, data);
        } else if inside(DEVICE_OFFSET, DEVICE_LEN) && matches!(len, 1 | 2 | 4 | 8) {
            self.device.write_config(offset - DEVICE_OFFSET, data);
        } else if inside(NOTIFY_OFFSET, NOTIFY_LEN) && matches!(len, 2 | 4) {
            let within = offset - NOTIFY_OFFSET;
            let multiplier = u64::from(NOTIFY_MULTIPLIER);
            match u16::try_from(within / multiplier) {
                Ok(index) if within % multiplier == 0 => self.notify(index),
                _ => debug!("virtio-pci: ignoring a notify at {offset:#x}"),
            }
        } else if inside(MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) {
            self.interrupt
                .msix()
                .write_table(offset - MSIX_TABLE_OFFSET, data);
        } else {
            debug!("virtio-pci: ignoring a {len}-byte write at {offset:#x}");
        }
    }
}

/// BAR accesses: the bus maps each BAR with offsets relative to its start.
/// There is only BAR 0.
impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.read_bar(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.write_bar(offset, data);
    }
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
        let moved = self.config.write(offset, data);
        if PciConfig::command_written(offset, data.len()) {
            self.interrupt
                .set_intx_disabled(self.config.intx_disabled());
        }
        if self.msix_cap.control_written(offset, data.len()) {
            let control = self.msix_cap.control(&self.config);
            self.interrupt.msix().set_control(control);
        }
        moved
    }
}

impl VirtioTransport for VirtioPciDevice {
    fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The VMM registers one ioeventfd per queue at `notify_address`.
    fn queue_count(&self) -> usize {
        self.queues.len()
    }

    fn queue_notify(&mut self, index: u16) {
        self.notify(index);
    }

    fn handle_event(&mut self, id: u32, events: EventSet) {
        self.device.handle_event(id, events);
    }

    /// The device's counters, then `queue_notifies` and `interrupts`.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut counters = self.device.counters();
        counters.push(("queue_notifies", self.notifies));
        counters.push(("interrupts", self.interrupt.raised()));
        counters
    }
}

#[cfg(test)]
mod tests;
