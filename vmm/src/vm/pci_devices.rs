//! Attaching virtio devices as virtio-pci functions on bus 0: a 64-bit
//! BAR each from the allocator, one GSI and irqfd per MSI-X vector (routed
//! through [`GsiRoutes`] when the driver programs the table), the INTA#
//! irqfd the `_PRT` names for the slot, and one ioeventfd per queue notify
//! address. When the guest moves a BAR, [`BarFollower`] moves the bus
//! mapping and the ioeventfds with it.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::builder::{irqfd, PendingDevice};
use super::gsi_routes::{GsiRoutes, VectorRoutes};
use super::{DeviceError, VirtioSlot, VmError};
use crate::devices::bus::Bus;
use crate::devices::pci::{intx_gsi, BarMove, BarRelocation, PciDevice, PciResources, PciRoot};
use crate::devices::virtio::pci::{VirtioPciDevice, BAR_KIND, BAR_SIZE};
use crate::devices::virtio::{Interrupt, VirtioTransport};

/// A virtio-pci function as the BAR follower needs it.
struct Function {
    device: Arc<Mutex<VirtioPciDevice>>,
    /// Duplicates of the queue-notify ioeventfds, to move them.
    notifies: Vec<EventFd>,
}

/// The devices on bus 0, and what is needed to follow BAR moves.
pub(super) struct PciDevices {
    pub slots: Vec<VirtioSlot>,
    functions: HashMap<u8, Function>,
}

/// Puts each device on the root complex and its BAR on `mmio`.
pub(super) fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    devices: Vec<PendingDevice>,
    root: &Mutex<PciRoot>,
    routes: &Arc<GsiRoutes>,
    mmio: &mut Bus,
) -> Result<PciDevices, VmError> {
    let mut resources = PciResources::new(mem_bytes).map_err(VmError::device("pci"))?;
    let mut attached = PciDevices {
        slots: Vec::new(),
        functions: HashMap::new(),
    };
    for PendingDevice { name, device } in devices {
        let mut root_guard = root.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = root_guard.next_slot().map_err(VmError::device(&name))?;
        let vectors = VirtioPciDevice::vectors_for(&*device);
        let gsis = resources
            .allocate_msi_gsis(vectors)
            .map_err(VmError::device(&name))?;
        let irqfds = gsis
            .iter()
            .map(|&gsi| irqfd(vm, gsi))
            .collect::<Result<Vec<_>, _>>()?;
        let vector_routes = Arc::new(VectorRoutes::new(routes.clone(), gsis, irqfds));
        let intx_gsi = intx_gsi(slot, 0);
        let intx: Arc<dyn Interrupt> = Arc::new(irqfd(vm, intx_gsi)?);
        let bar = resources
            .allocate_bar(BAR_SIZE, BAR_KIND)
            .map_err(VmError::device(&name))?;
        // The INTx GSIs (20-23) fit the one-byte interrupt line register.
        let line = u8::try_from(intx_gsi).unwrap_or(u8::MAX);
        let function = VirtioPciDevice::new(device, mem.clone(), bar, vector_routes, intx, line)
            .map_err(VmError::device(&name))?;
        let queues = function.queue_count();
        let mut notifies = Vec::new();
        let mut follower_notifies = Vec::new();
        for q in 0..u16::try_from(queues).unwrap_or(u16::MAX) {
            let addr = function
                .notify_address(q)
                .ok_or(DeviceError::PciLayout("a queue has no notify address"))
                .map_err(VmError::device(&name))?;
            let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
            vm.register_ioevent(&notify, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(VmError::kvm("register ioeventfd"))?;
            follower_notifies.push(notify.try_clone().map_err(VmError::EventFd)?);
            notifies.push(notify);
        }
        let bars = function.bars();
        let function = Arc::new(Mutex::new(function));
        for region in bars {
            mmio.insert(region.addr, region.len, function.clone())
                .map_err(VmError::device(&name))?;
        }
        let as_pci: Arc<Mutex<dyn PciDevice>> = function.clone();
        root_guard
            .add_device(as_pci)
            .map_err(VmError::device(&name))?;
        drop(root_guard);
        attached.functions.insert(
            slot,
            Function {
                device: function.clone(),
                notifies: follower_notifies,
            },
        );
        let transport: Arc<Mutex<dyn VirtioTransport>> = function;
        attached.slots.push(VirtioSlot {
            transport,
            notifies,
            name,
        });
    }
    Ok(attached)
}

impl PciDevices {
    /// Has `root` report BAR moves to a follower that moves the mapping on
    /// `mmio`, the bus the vCPUs use.
    pub(super) fn follow_bar_moves(self, root: &Mutex<PciRoot>, vm: Arc<VmFd>, mmio: Arc<Bus>) {
        let follower = BarFollower {
            vm,
            mmio,
            functions: self.functions,
        };
        root.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_relocation(Box::new(follower));
    }
}

/// Moves a function's BAR mapping and queue ioeventfds where the guest
/// put the BAR. Runs on the vCPU thread that wrote the BAR.
struct BarFollower {
    vm: Arc<VmFd>,
    mmio: Arc<Bus>,
    functions: HashMap<u8, Function>,
}

impl BarRelocation for BarFollower {
    fn move_bar(&mut self, slot: u8, event: BarMove) -> io::Result<()> {
        let function = self
            .functions
            .get(&slot)
            .ok_or_else(|| io::Error::other(format!("no virtio-pci function in slot {slot}")))?;
        self.mmio
            .relocate(event.old, event.new)
            .map_err(io::Error::other)?;
        let device = function
            .device
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (q, notify) in (0u16..).zip(&function.notifies) {
            let Some(new) = device.notify_address(q) else {
                continue;
            };
            // Notify addresses lie inside the BAR: the old one is at the
            // same offset from the old base.
            let old = new - event.new + event.old;
            let kvm = |e: kvm_ioctls::Error| io::Error::from_raw_os_error(e.errno());
            self.vm
                .unregister_ioevent(notify, &IoEventAddress::Mmio(old), NoDatamatch)
                .map_err(kvm)?;
            self.vm
                .register_ioevent(notify, &IoEventAddress::Mmio(new), NoDatamatch)
                .map_err(kvm)?;
        }
        log::debug!(
            "pci: slot {slot} BAR {} moved from {:#x} to {:#x}",
            event.bar,
            event.old,
            event.new
        );
        Ok(())
    }
}
