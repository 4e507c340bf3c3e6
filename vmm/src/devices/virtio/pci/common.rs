//! The common configuration structure (virtio 1.x, 4.1.4.3): feature
//! negotiation, the device status state machine and queue setup, with the
//! same validation as the MMIO transport. Each field is accessed with its
//! own width; 64-bit queue addresses also as two 32-bit halves. Anything
//! else reads 0 and is dropped.

use log::{debug, warn};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::interrupt::VIRTIO_MSI_NO_VECTOR;
use super::VirtioPciDevice;
use crate::devices::virtio::{status, VirtioInterrupt, VirtioInterruptType};

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

const NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;

/// The width of the field at `offset`, if one starts there.
fn field_width(offset: u64) -> Option<usize> {
    Some(match offset {
        DEVICE_FEATURE_SELECT | DEVICE_FEATURE | DRIVER_FEATURE_SELECT | DRIVER_FEATURE => 4,
        CONFIG_MSIX_VECTOR | NUM_QUEUES | QUEUE_SELECT | QUEUE_SIZE | QUEUE_MSIX_VECTOR
        | QUEUE_ENABLE | QUEUE_NOTIFY_OFF => 2,
        DEVICE_STATUS | CONFIG_GENERATION => 1,
        QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE => 8,
        _ => return None,
    })
}

/// Whether an access of `len` bytes at `offset` is a whole field, or one
/// 32-bit half of a queue address.
fn field_access(offset: u64, len: usize) -> bool {
    let address_half = matches!(offset, 0x20..0x38) && offset % 4 == 0 && len == 4;
    field_width(offset) == Some(len) || address_half
}

/// A queue as the driver is configuring it. `Queue`'s own setters keep the
/// old value when given a bad one; the refusal is remembered instead so
/// the queue cannot be enabled with a layout the driver never asked for.
pub(super) struct QueueSlot {
    queue: Queue,
    bad_size: bool,
    bad_desc: bool,
    bad_driver: bool,
    bad_device: bool,
}

impl QueueSlot {
    pub(super) fn new(max_size: u16) -> Option<Self> {
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

    /// A copy to hand the device, if the queue is enabled, was set up
    /// without refused values and lies in guest memory.
    fn activatable(&self, mem: &GuestMemoryMmap) -> Option<Queue> {
        if !self.configured() || !self.queue.is_valid(mem) {
            return None;
        }
        Queue::try_from(self.queue.state()).ok()
    }

    /// Replaces the low half, the high half or all of the address set by
    /// `set`, remembering a refusal in `bad`.
    fn set_address(
        &mut self,
        within: u64,
        len: usize,
        value: u64,
        get: fn(&Queue) -> u64,
        set: fn(&mut Queue, GuestAddress) -> Result<(), virtio_queue::Error>,
    ) -> bool {
        let old = get(&self.queue);
        let addr = match (within, len) {
            (0, 8) => value,
            (0, _) => (old & !0xffff_ffff) | (value & 0xffff_ffff),
            _ => (old & 0xffff_ffff) | (value << 32),
        };
        set(&mut self.queue, GuestAddress(addr)).is_err()
    }
}

impl VirtioPciDevice {
    fn selected(&self) -> Option<&QueueSlot> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The selected queue, if the driver may still change its setup: not
    /// once it is enabled nor after activation.
    fn configurable(&mut self) -> Option<&mut QueueSlot> {
        if self.activated {
            return None;
        }
        let slot = self.queues.get_mut(usize::from(self.queue_select))?;
        (!slot.queue.ready()).then_some(slot)
    }

    pub(super) fn read_common(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !field_access(offset, data.len()) {
            debug!(
                "virtio-pci: ignoring a {}-byte common config read at {offset:#x}",
                data.len()
            );
            return;
        }
        let queue = self.selected().map(|s| &s.queue);
        let value: u64 = match offset {
            DEVICE_FEATURE_SELECT => u64::from(self.device_feature_select),
            DEVICE_FEATURE => match self.device_feature_select {
                0 => self.device.device_features() & 0xffff_ffff,
                1 => self.device.device_features() >> 32,
                _ => 0,
            },
            DRIVER_FEATURE_SELECT => u64::from(self.driver_feature_select),
            DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.acked_features & 0xffff_ffff,
                1 => self.acked_features >> 32,
                _ => 0,
            },
            CONFIG_MSIX_VECTOR => u64::from(self.interrupt.config_vector()),
            NUM_QUEUES => self.queues.len() as u64,
            DEVICE_STATUS => u64::from(self.status),
            CONFIG_GENERATION => u64::from(self.interrupt.config_generation()),
            QUEUE_SELECT => u64::from(self.queue_select),
            // 0 tells the driver the selected queue does not exist.
            QUEUE_SIZE => queue.map_or(0, |q| u64::from(q.size())),
            QUEUE_MSIX_VECTOR => match queue {
                Some(_) => u64::from(self.interrupt.queue_vector(usize::from(self.queue_select))),
                None => u64::from(VIRTIO_MSI_NO_VECTOR),
            },
            QUEUE_ENABLE => queue.map_or(0, |q| u64::from(q.ready())),
            QUEUE_NOTIFY_OFF => queue.map_or(0, |_| u64::from(self.queue_select)),
            0x20..0x38 => {
                let addr = queue.map_or(0, |q| match offset & !7 {
                    QUEUE_DESC => q.desc_table(),
                    QUEUE_DRIVER => q.avail_ring(),
                    _ => q.used_ring(),
                });
                if offset % 8 == 4 {
                    addr >> 32
                } else {
                    addr
                }
            }
            _ => 0,
        };
        let len = data.len();
        data.copy_from_slice(&value.to_le_bytes()[..len]);
    }

    pub(super) fn write_common(&mut self, offset: u64, data: &[u8]) {
        if !field_access(offset, data.len()) {
            debug!(
                "virtio-pci: ignoring a {}-byte common config write at {offset:#x}",
                data.len()
            );
            return;
        }
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        match offset {
            DEVICE_FEATURE_SELECT => self.device_feature_select = value as u32,
            DRIVER_FEATURE_SELECT => self.driver_feature_select = value as u32,
            DRIVER_FEATURE => self.set_driver_features(value as u32),
            CONFIG_MSIX_VECTOR => self.interrupt.set_config_vector(value as u16),
            DEVICE_STATUS => self.set_status(value as u8),
            QUEUE_SELECT => self.queue_select = value as u16,
            QUEUE_SIZE => {
                if let Some(slot) = self.configurable() {
                    // 0, above the maximum or not a power of two: refused.
                    slot.bad_size = slot.queue.try_set_size(value as u16).is_err();
                }
            }
            QUEUE_MSIX_VECTOR => {
                if self.selected().is_some() {
                    self.interrupt
                        .set_queue_vector(usize::from(self.queue_select), value as u16);
                }
            }
            QUEUE_ENABLE => self.enable_queue(value as u16),
            0x20..0x38 => {
                let (within, len) = (offset % 8, data.len());
                if let Some(slot) = self.configurable() {
                    match offset & !7 {
                        QUEUE_DESC => {
                            slot.bad_desc = slot.set_address(
                                within,
                                len,
                                value,
                                Queue::desc_table,
                                Queue::try_set_desc_table_address,
                            )
                        }
                        QUEUE_DRIVER => {
                            slot.bad_driver = slot.set_address(
                                within,
                                len,
                                value,
                                Queue::avail_ring,
                                Queue::try_set_avail_ring_address,
                            )
                        }
                        _ => {
                            slot.bad_device = slot.set_address(
                                within,
                                len,
                                value,
                                Queue::used_ring,
                                Queue::try_set_used_ring_address,
                            )
                        }
                    }
                }
            }
            _ => debug!("virtio-pci: write of read-only common config field {offset:#x}"),
        }
    }

    /// queue_enable = 1 for a queue whose setup was accepted and lies in
    /// guest memory; anything else leaves it disabled, which the driver
    /// sees when it reads the field back. 0 is not for the driver to write
    /// (a reset disables queues).
    fn enable_queue(&mut self, value: u16) {
        if value != 1 {
            debug!("virtio-pci: ignoring queue_enable {value}");
            return;
        }
        let mem = self.mem.clone();
        let Some(slot) = self.configurable() else {
            return;
        };
        if !slot.configured() {
            debug!("virtio-pci: refusing to enable a queue with a refused setup");
            return;
        }
        slot.queue.set_ready(true);
        if !slot.queue.is_valid(&mem) {
            debug!("virtio-pci: refusing to enable a queue outside guest memory");
            slot.queue.set_ready(false);
        }
    }

    fn set_driver_features(&mut self, value: u32) {
        let offered = self.device.device_features();
        if let Some(features) = status::driver_features(
            "virtio-pci",
            u32::from(self.status),
            self.acked_features,
            self.driver_feature_select,
            value,
            offered,
        ) {
            self.acked_features = features;
        }
    }

    /// Status 0 resets; anything else follows [`status::next_status`].
    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let change = status::next_status(
            "virtio-pci",
            u32::from(self.status),
            u32::from(value),
            self.acked_features,
        );
        // Every status bit fits the one-byte register.
        self.status = change.status as u8;
        if change.activate {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let interrupt: std::sync::Arc<dyn VirtioInterrupt> = self.interrupt.clone();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                slot.activatable(&self.mem)
                    .ok_or(crate::devices::virtio::ActivateError::InvalidQueue(i))
            })
            .collect::<Result<Vec<_>, _>>();
        let result = queues.and_then(|queues| {
            self.device
                .activate(self.mem.clone(), interrupt, queues, self.acked_features)
        });
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                warn!(
                    "virtio-pci: cannot activate device type {}: {e}",
                    self.device.device_type()
                );
                // Tell the driver it has to start over (spec 2.1.2).
                self.status |= NEEDS_RESET;
                if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config) {
                    warn!("virtio-pci: cannot raise the interrupt: {e}");
                }
            }
        }
    }

    /// Status 0: the transport and the device go back to exactly their
    /// state at creation (a kexec'd kernel re-initialises every device),
    /// MSI-X vector assignments included. The MSI-X table and the PCI
    /// configuration space are the function's, not the device's, and stay.
    /// Only the counters survive.
    fn reset(&mut self) {
        self.device.reset();
        for slot in &mut self.queues {
            slot.reset();
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.acked_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.activated = false;
        self.interrupt.reset();
    }
}
