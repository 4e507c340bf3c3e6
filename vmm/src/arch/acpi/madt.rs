//! MADT: one local APIC per vCPU, the IOAPIC, the SCI's interrupt source
//! override and LINT1 as NMI.

use acpi_tables::sdt::Sdt;

use super::OEM_ID;
use crate::arch::layout::{ACPI_SCI_IRQ, APIC_START, IOAPIC_START};

pub(super) fn madt(vcpus: u8) -> Vec<u8> {
    let mut table = Sdt::new(*b"APIC", 44, 5, OEM_ID, *b"KEELMADT", 1);
    table.write_bytes(36, &(APIC_START as u32).to_le_bytes());
    // PCAT_COMPAT: the in-kernel irqchip includes dual 8259s.
    table.write_bytes(40, &1u32.to_le_bytes());
    for id in 0..vcpus {
        // Processor local APIC: uid, APIC ID, enabled.
        table.append_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![1, 12, 0, 0];
    ioapic.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    table.append_slice(&ioapic);
    // SCI: level triggered, active high, on its own line.
    let mut sci = vec![2, 10, 0, ACPI_SCI_IRQ as u8];
    sci.extend_from_slice(&ACPI_SCI_IRQ.to_le_bytes());
    sci.extend_from_slice(&((1u16 << 2) | (3 << 2) | 1).to_le_bytes());
    table.append_slice(&sci);
    // LINT1 of every processor is NMI.
    table.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    table.update_checksum();
    table.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madt_lists_every_vcpu() {
        let table = madt(3);
        assert_eq!(&table[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&table[52..60], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert_eq!(&table[60..68], &[0, 8, 2, 2, 1, 0, 0, 0]);
        assert_eq!(table[68], 1, "the IOAPIC follows the local APICs");
    }
}
