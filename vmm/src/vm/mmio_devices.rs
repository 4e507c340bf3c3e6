//! Attaching virtio devices over virtio-mmio: one 4 KiB window and one
//! interrupt line each, one ioeventfd per queue on QueueNotify. The guest
//! finds them in the ACPI DSDT (`LNRO0005`); a kernel booted with
//! `acpi=off` reads no tables, so for it they are announced on the command
//! line instead (`virtio_mmio.device=`, which needs
//! `VIRTIO_MMIO_CMDLINE_DEVICES`).

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::builder::{irqfd, PendingDevice};
use super::{VirtioSlot, VmError};
use crate::arch::layout::{VIRTIO_IRQS, VIRTIO_MMIO_START, VIRTIO_MMIO_STRIDE};
use crate::devices::bus::Bus;
use crate::devices::virtio::{self, Interrupt, MmioTransport, VirtioTransport};

/// The devices on the MMIO bus and how the guest learns of them.
pub(super) struct MmioDevices {
    pub slots: Vec<VirtioSlot>,
    /// (window base, GSI) of each device, for the DSDT.
    pub acpi: Vec<(u64, u32)>,
    /// `virtio_mmio.device=` options, for a kernel without ACPI.
    pub cmdline: String,
}

/// Puts each device on its window of `mmio`.
pub(super) fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    devices: Vec<PendingDevice>,
    mmio: &mut Bus,
) -> Result<MmioDevices, VmError> {
    if devices.len() > VIRTIO_IRQS.len() {
        return Err(VmError::TooManyDevices {
            max: VIRTIO_IRQS.len(),
        });
    }
    let mut attached = MmioDevices {
        slots: Vec::new(),
        acpi: Vec::new(),
        cmdline: String::new(),
    };
    for (i, (pending, &gsi)) in devices.into_iter().zip(VIRTIO_IRQS.iter()).enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_STRIDE;
        let PendingDevice { name, device } = pending;
        let interrupt: Arc<dyn Interrupt> = Arc::new(irqfd(vm, gsi)?);
        let transport =
            MmioTransport::new(device, mem.clone(), interrupt).map_err(VmError::device(&name))?;
        let mut notifies = Vec::new();
        for queue in 0..transport.queue_count() as u32 {
            let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
            vm.register_ioevent(
                &notify,
                &IoEventAddress::Mmio(base + virtio::QUEUE_NOTIFY_OFFSET),
                queue,
            )
            .map_err(VmError::kvm("register ioeventfd"))?;
            notifies.push(notify);
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(base, virtio::MMIO_LEN, transport.clone())
            .map_err(VmError::device(&name))?;
        attached.acpi.push((base, gsi));
        attached
            .cmdline
            .push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
        let transport: Arc<Mutex<dyn VirtioTransport>> = transport;
        attached.slots.push(VirtioSlot {
            transport,
            notifies,
            name,
        });
    }
    Ok(attached)
}

/// Whether a kernel command line turns ACPI off, so that the devices must
/// be announced on it.
pub(super) fn acpi_off(cmdline: &str) -> bool {
    cmdline
        .split_ascii_whitespace()
        .any(|arg| arg == "acpi=off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acpi_off_asks_for_the_command_line() {
        assert!(acpi_off("console=ttyS0 acpi=off"));
        assert!(!acpi_off("console=ttyS0 acpi=noirq"));
        assert!(!acpi_off("noacpi=off"));
        assert!(!acpi_off(""));
    }
}
