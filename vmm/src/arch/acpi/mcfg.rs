//! MCFG: where PCI Express enhanced configuration space (ECAM) is mapped.

use acpi_tables::mcfg::MCFG;

use super::{bytes_of, OEM_ID};
use crate::arch::layout::{PCI_BUS_FIRST, PCI_BUS_LAST, PCI_ECAM_START};

/// The host bridge's only segment.
pub(super) const PCI_SEGMENT: u16 = 0;

pub(super) fn mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, *b"KEELMCFG", 1);
    mcfg.add_ecam(PCI_ECAM_START, PCI_SEGMENT, PCI_BUS_FIRST, PCI_BUS_LAST);
    bytes_of(&mcfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcfg_has_one_ecam_entry_for_the_host_bridge() {
        let table = mcfg();
        assert_eq!(&table[0..4], b"MCFG");
        // Header (36) + reserved (8) + one 16-byte allocation.
        assert_eq!(table.len(), 60);
        assert_eq!(table[44..52], PCI_ECAM_START.to_le_bytes());
        assert_eq!(table[52..54], PCI_SEGMENT.to_le_bytes());
        assert_eq!((table[54], table[55]), (PCI_BUS_FIRST, PCI_BUS_LAST));
    }
}
