//! KVM's GSI routing table: the in-kernel irqchip's legacy lines plus one
//! MSI route per MSI-X vector a driver programmed.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so the table is kept
//! here and written out in full on every change: the irqchip entries KVM
//! installs by default (GSI 0-15 on the PICs and the IOAPIC, 16-23 on the
//! IOAPIC) followed by the MSI routes in GSI order.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout::MSI_GSI_START;
pub use crate::devices::pci::MsiMessage;
use crate::devices::pci::MsiRoutes;

/// The routing table of one VM.
pub struct GsiRoutes {
    vm: Arc<VmFd>,
    msi: Mutex<BTreeMap<u32, MsiMessage>>,
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

fn msi(gsi: u32, message: MsiMessage) -> kvm_irq_routing_entry {
    let mut msi = kvm_irq_routing_msi {
        address_lo: message.address as u32,
        address_hi: (message.address >> 32) as u32,
        data: message.data,
        ..Default::default()
    };
    msi.__bindgen_anon_1.pad = 0;
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 { msi },
        ..Default::default()
    }
}

/// The table KVM starts with, then `routes`.
fn table(routes: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
    let mut entries = Vec::with_capacity(40 + routes.len());
    for gsi in 0..MSI_GSI_START {
        if gsi < 8 {
            entries.push(irqchip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            entries.push(irqchip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        entries.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    entries.extend(routes.iter().map(|(&gsi, &m)| msi(gsi, m)));
    entries
}

impl GsiRoutes {
    pub fn new(vm: Arc<VmFd>) -> Self {
        GsiRoutes {
            vm,
            msi: Mutex::new(BTreeMap::new()),
        }
    }

    /// Routes `gsi` to `message`, or removes its route (`None`), and
    /// writes the table to KVM if it changed.
    pub fn set(&self, gsi: u32, message: Option<MsiMessage>) -> io::Result<()> {
        let mut routes = self.msi.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match message {
            Some(m) => routes.insert(gsi, m) != Some(m),
            None => routes.remove(&gsi).is_some(),
        };
        if !changed {
            return Ok(());
        }
        let entries = table(&routes);
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::other(format!("cannot build the GSI routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// One virtio-pci function's MSI-X vectors: vector `i` is GSI `gsis[i]`,
/// fired by writing `irqfds[i]` (registered with KVM for that GSI).
pub struct VectorRoutes {
    table: Arc<GsiRoutes>,
    gsis: Vec<u32>,
    irqfds: Vec<EventFd>,
}

impl VectorRoutes {
    /// `gsis` and `irqfds` pair up by index.
    pub fn new(table: Arc<GsiRoutes>, gsis: Vec<u32>, irqfds: Vec<EventFd>) -> Self {
        VectorRoutes {
            table,
            gsis,
            irqfds,
        }
    }
}

fn no_vector(vector: u16) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("there is no MSI-X vector {vector}"),
    )
}

impl MsiRoutes for VectorRoutes {
    fn update(&self, vector: u16, message: Option<MsiMessage>) -> io::Result<()> {
        let gsi = self
            .gsis
            .get(usize::from(vector))
            .ok_or_else(|| no_vector(vector))?;
        self.table.set(*gsi, message)
    }

    fn trigger(&self, vector: u16) -> io::Result<()> {
        self.irqfds
            .get(usize::from(vector))
            .ok_or_else(|| no_vector(vector))?
            .write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_legacy_lines_and_adds_msi_routes() {
        let mut routes = BTreeMap::new();
        routes.insert(
            30,
            MsiMessage {
                address: 0x1_fee0_0000,
                data: 0x41,
            },
        );
        let entries = table(&routes);
        // 16 PIC + 24 IOAPIC entries, then the route.
        assert_eq!(entries.len(), 16 + 24 + 1);
        let last = entries[entries.len() - 1];
        assert_eq!((last.gsi, last.type_), (30, KVM_IRQ_ROUTING_MSI));
        // SAFETY: this entry was built as an MSI route.
        let m = unsafe { last.u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_0000, 1, 0x41));
        let pins: Vec<_> = entries
            .iter()
            .filter(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP)
            .map(|e| {
                // SAFETY: these entries were built as irqchip routes.
                let chip = unsafe { e.u.irqchip };
                (e.gsi, chip.irqchip, chip.pin)
            })
            .collect();
        assert!(pins.contains(&(9, KVM_IRQCHIP_PIC_SLAVE, 1)));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
        assert!(!pins
            .iter()
            .any(|&(g, c, _)| g >= 16 && c != KVM_IRQCHIP_IOAPIC));
    }
}
