//! Virtio over MMIO, version 2 (the modern register layout of the virtio
//! 1.x specification, section 4.2.2).
//!
//! The transport owns what the driver negotiates through registers and
//! hands the device its queues at DRIVER_OK. Every access is validated: a
//! driver can confuse its own device but never panic the VMM or make it
//! touch memory outside the guest.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use log::{debug, warn};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::{
    status, ActivateError, Interrupt, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
    VirtioTransport,
};

/// Size of one device's MMIO window.
pub const MMIO_LEN: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM registers the queues' ioeventfds
/// (datamatch = queue index).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// "virt" in little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const VERSION: u32 = 2;
/// "KEEL" in little endian.
pub const VENDOR_ID: u32 = 0x4c45_454b;

const REG_MAGIC_VALUE: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = QUEUE_NOTIFY_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific config space starts here and runs to the window's end.
const CONFIG_SPACE: u64 = 0x100;

const NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("queue {index} of the device has maximum size {size}, which is not a power of two up to 32768")]
    QueueMaxSize { index: usize, size: u16 },
}

/// A queue as the driver is configuring it. `Queue`'s own setters keep the
/// old value when given a bad one; we remember the refusal instead so the
/// queue cannot be activated with a layout the driver never asked for.
struct QueueSlot {
    queue: Queue,
    bad_size: bool,
    bad_desc: bool,
    bad_driver: bool,
    bad_device: bool,
}

impl QueueSlot {
    fn new(max_size: u16) -> Option<Self> {
        Queue::new(max_size).ok().map(|queue| QueueSlot {
            queue,
            bad_size: false,
            bad_desc: false,
            bad_driver: false,
            bad_device: false,
        })
    }

    fn reset(&mut self) {
        self.queue.reset();
        self.bad_size = false;
        self.bad_desc = false;
        self.bad_driver = false;
        self.bad_device = false;
    }

    fn configured(&self) -> bool {
        !(self.bad_size || self.bad_desc || self.bad_driver || self.bad_device)
    }
}

/// Replaces the low or high half of `old`.
fn set_half(old: u64, value: u32, high: bool) -> u64 {
    if high {
        (old & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (old & !0xffff_ffff) | u64::from(value)
    }
}

/// The interrupt handle an MMIO transport gives its device: it sets the
/// cause in InterruptStatus (shared with the transport's register file)
/// and raises the device's one interrupt line.
pub struct MmioInterrupt {
    status: Arc<AtomicU32>,
    line: Arc<dyn Interrupt>,
    raised: AtomicU64,
}

impl MmioInterrupt {
    fn new(line: Arc<dyn Interrupt>) -> Self {
        MmioInterrupt {
            status: Arc::new(AtomicU32::new(0)),
            line,
            raised: AtomicU64::new(0),
        }
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
        let cause = match kind {
            VirtioInterruptType::Config => VIRTIO_MMIO_INT_CONFIG,
            VirtioInterruptType::Queue(_) => VIRTIO_MMIO_INT_VRING,
        };
        // The status is set before the line rises, so the driver's handler
        // always finds the cause.
        self.status.fetch_or(cause, Ordering::SeqCst);
        self.raised.fetch_add(1, Ordering::Relaxed);
        self.line.trigger()
    }
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<MmioInterrupt>,
    queues: Vec<QueueSlot>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    status: u32,
    config_generation: u32,
    activated: bool,
    notifies: u64,
}

impl MmioTransport {
    /// Puts `device` behind a register window. `mem` is the guest's memory,
    /// used to check queue addresses and handed to the device at DRIVER_OK;
    /// `line` is the device's interrupt line.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        line: Arc<dyn Interrupt>,
    ) -> Result<Self, MmioError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                QueueSlot::new(size).ok_or(MmioError::QueueMaxSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(MmioInterrupt::new(line)),
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            status: 0,
            config_generation: 0,
            activated: false,
            notifies: 0,
        })
    }

    /// Whether the driver finished initialisation and the device is running.
    #[cfg(test)]
    fn is_activated(&self) -> bool {
        self.activated
    }

    /// The driver kicked queue `index`, through its ioeventfd or a write to
    /// QueueNotify: the device serves it and signals the guest itself.
    /// Ignored until the device is activated.
    fn notify(&mut self, index: u32) {
        if !self.activated {
            debug!("virtio-mmio: ignoring a notify for queue {index} before activation");
            return;
        }
        self.notifies += 1;
        match u16::try_from(index) {
            Ok(index) => self.device.queue_notify(index),
            Err(_) => debug!("virtio-mmio: ignoring a notify for queue {index}"),
        }
    }

    fn selected_queue(&self) -> Option<&QueueSlot> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i))
    }

    /// The selected queue, if the driver may still change its setup: not
    /// after it marked the queue ready nor after activation.
    fn configurable_queue(&mut self) -> Option<&mut QueueSlot> {
        if self.activated {
            return None;
        }
        let slot = usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))?;
        (!slot.queue.ready()).then_some(slot)
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC_VALUE => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => {
                let features = self.device.device_features();
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            REG_QUEUE_NUM_MAX => self
                .selected_queue()
                .map_or(0, |q| u32::from(q.queue.max_size())),
            REG_QUEUE_READY => self
                .selected_queue()
                .map_or(0, |q| u32::from(q.queue.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status.load(Ordering::SeqCst),
            REG_STATUS => self.status,
            // No shared memory regions: their length reads as all ones.
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES => self.set_driver_features(value),
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => {
                if let Some(slot) = self.configurable_queue() {
                    // 0, above the maximum or not a power of two: refused.
                    let size = u16::try_from(value).ok();
                    slot.bad_size = size.is_none_or(|s| slot.queue.try_set_size(s).is_err());
                }
            }
            REG_QUEUE_READY => {
                if let Some(slot) = self.configurable_queue() {
                    slot.queue.set_ready(value == 1);
                } else if value == 0 && !self.activated {
                    // Disabling a ready queue is how a driver tears it down.
                    if let Some(slot) = usize::try_from(self.queue_sel)
                        .ok()
                        .and_then(|i| self.queues.get_mut(i))
                    {
                        slot.queue.set_ready(false);
                    }
                }
            }
            REG_QUEUE_NOTIFY => self.notify(value),
            REG_INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!value, Ordering::SeqCst);
            }
            REG_STATUS => self.set_status(value),
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH => {
                if let Some(slot) = self.configurable_queue() {
                    let addr = set_half(
                        slot.queue.desc_table(),
                        value,
                        offset == REG_QUEUE_DESC_HIGH,
                    );
                    slot.bad_desc = slot
                        .queue
                        .try_set_desc_table_address(GuestAddress(addr))
                        .is_err();
                }
            }
            REG_QUEUE_DRIVER_LOW | REG_QUEUE_DRIVER_HIGH => {
                if let Some(slot) = self.configurable_queue() {
                    let addr = set_half(
                        slot.queue.avail_ring(),
                        value,
                        offset == REG_QUEUE_DRIVER_HIGH,
                    );
                    slot.bad_driver = slot
                        .queue
                        .try_set_avail_ring_address(GuestAddress(addr))
                        .is_err();
                }
            }
            REG_QUEUE_DEVICE_LOW | REG_QUEUE_DEVICE_HIGH => {
                if let Some(slot) = self.configurable_queue() {
                    let addr = set_half(
                        slot.queue.used_ring(),
                        value,
                        offset == REG_QUEUE_DEVICE_HIGH,
                    );
                    slot.bad_device = slot
                        .queue
                        .try_set_used_ring_address(GuestAddress(addr))
                        .is_err();
                }
            }
            _ => debug!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    fn set_driver_features(&mut self, value: u32) {
        let (status, acked) = (self.status, self.acked_features);
        let offered = self.device.device_features();
        if let Some(features) = status::driver_features(
            "virtio-mmio",
            status,
            acked,
            self.driver_features_sel,
            value,
            offered,
        ) {
            self.acked_features = features;
        }
    }

    /// Status 0 resets; anything else follows [`status::next_status`].
    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let change = status::next_status("virtio-mmio", self.status, value, self.acked_features);
        self.status = change.status;
        if change.activate {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let result = self.build_queues().and_then(|queues| {
            self.device
                .activate(self.mem.clone(), interrupt, queues, self.acked_features)
        });
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                warn!(
                    "virtio-mmio: cannot activate device type {}: {e}",
                    self.device.device_type()
                );
                // Tell the driver it has to start over (spec 2.1.2).
                self.status |= NEEDS_RESET;
                if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config) {
                    warn!("virtio-mmio: cannot raise the interrupt: {e}");
                }
            }
        }
    }

    /// Copies of the queues as the driver set them up, each checked to be
    /// ready and to lie inside guest memory.
    fn build_queues(&self) -> Result<Vec<Queue>, ActivateError> {
        self.queues
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                if !slot.configured() || !slot.queue.is_valid(&self.mem) {
                    return Err(ActivateError::InvalidQueue(i));
                }
                Queue::try_from(slot.queue.state()).map_err(|_| ActivateError::InvalidQueue(i))
            })
            .collect()
    }

    /// Status 0: the transport and the device go back to exactly their
    /// state at creation (a kexec'd kernel re-initialises every device).
    /// Only the counters survive.
    fn reset(&mut self) {
        self.device.reset();
        for slot in &mut self.queues {
            slot.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.status = 0;
        self.interrupt.status.store(0, Ordering::SeqCst);
        self.activated = false;
    }
}

impl VirtioTransport for MmioTransport {
    fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The VMM registers one ioeventfd per queue at `QUEUE_NOTIFY_OFFSET`
    /// with the queue index as datamatch.
    fn queue_count(&self) -> usize {
        self.queues.len()
    }

    fn queue_notify(&mut self, index: u16) {
        self.notify(u32::from(index));
    }

    fn handle_event(&mut self, id: u32, events: EventSet) {
        self.device.handle_event(id, events);
    }

    /// The device's counters, then `queue_notifies` and `interrupts`.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut counters = self.device.counters();
        counters.push(("queue_notifies", self.notifies));
        counters.push(("interrupts", self.interrupt.raised.load(Ordering::Relaxed)));
        counters
    }
}

/// Config space accepts 1, 2, 4 and 8-byte accesses that stay inside the
/// window.
fn config_access(offset: u64, len: usize) -> Option<u64> {
    let end = offset.checked_add(len as u64)?;
    (matches!(len, 1 | 2 | 4 | 8) && offset >= CONFIG_SPACE && end <= MMIO_LEN)
        .then(|| offset - CONFIG_SPACE)
}

/// Registers only accept aligned 4-byte accesses.
fn register_access(offset: u64, len: usize) -> bool {
    len == 4 && offset % 4 == 0 && offset < CONFIG_SPACE
}

impl crate::devices::bus::BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(config_offset) = config_access(offset, data.len()) {
            self.device.read_config(config_offset, data);
        } else if register_access(offset, data.len()) {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        } else {
            debug!(
                "virtio-mmio: ignoring a {}-byte read at {offset:#x}",
                data.len()
            );
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(config_offset) = config_access(offset, data.len()) {
            self.device.write_config(config_offset, data);
        } else if let (true, Ok(bytes)) = (
            register_access(offset, data.len()),
            <[u8; 4]>::try_from(data),
        ) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        } else {
            debug!(
                "virtio-mmio: ignoring a {}-byte write at {offset:#x}",
                data.len()
            );
        }
    }
}

#[cfg(test)]
mod tests;
