//! The guest physical address map (x86_64).
//!
//! Low memory holds the boot structures; RAM runs from 0 up to the 32-bit
//! MMIO hole at 3 GiB and continues at 4 GiB for larger guests.

/// GDT for the boot vCPU.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT: interrupts stay off until the kernel sets its own.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Linux `boot_params` (the zero page).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables covering the first GiB with 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables, in the BIOS area where Linux also scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Where the kernel is loaded.
pub const HIMEM_START: u64 = 0x100000;

/// The 32-bit MMIO hole: no RAM between these addresses.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// The PCI host bridge's 32-bit memory window (non-prefetchable BARs),
/// the first 256 MiB of the hole.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO32_SIZE: u64 = 0x1000_0000;
/// Virtio-mmio devices, one 4 KiB window each.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// PCI Express enhanced configuration (ECAM) for bus 0 only: 32 devices
/// of 8 functions of 4 KiB. Described by the ACPI MCFG table.
pub const PCI_ECAM_START: u64 = 0xe000_0000;
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// The PCI bus numbers the host bridge decodes.
pub const PCI_BUS_FIRST: u8 = 0;
pub const PCI_BUS_LAST: u8 = 0;
/// Size of the 64-bit PCI memory window above RAM (see `pci_mmio64_window`).
pub const PCI_MMIO64_SIZE: u64 = 16 << 30;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;

/// Legacy I/O ports and interrupt lines.
pub const SERIAL_PORT: u16 = 0x3f8;
/// PCI configuration mechanism #1: address at 0xCF8, data at 0xCFC.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_PORT: u16 = 0x60;
pub const I8042_IRQ: u32 = 1;
/// ACPI PM1a event and control blocks (as QEMU's PIIX4 places them).
pub const ACPI_PM_PORT: u16 = 0x600;
pub const ACPI_PM_LEN: u16 = 8;
pub const ACPI_SCI_IRQ: u32 = 9;
/// pvpanic: the guest kernel writes here when it panics.
pub const PVPANIC_PORT: u16 = 0x505;
pub use keel_common::guest_ports::{BOOT_TIMER_PORT, LOADER_REPORT_PORT};
/// Interrupt lines for virtio-mmio devices: free ISA lines, skipping the SCI.
pub const VIRTIO_IRQS: [u32; 13] = [5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
/// IOAPIC lines for PCI INTA#..INTD# (the `_PRT` swizzles device slots over
/// them); the fallback when a driver does not enable MSI-X.
pub const PCI_INTX_GSIS: [u32; 4] = [20, 21, 22, 23];
/// The first GSI free for MSI routes: the IOAPIC has 24 pins.
pub const MSI_GSI_START: u32 = 24;
/// The last GSI KVM routes (KVM_MAX_IRQ_ROUTES is 4096).
pub const MSI_GSI_END: u32 = 4095;

/// RAM ranges for a guest of `mem_bytes`: below the hole, then above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    if mem_bytes <= MMIO_HOLE_START {
        vec![(0, mem_bytes)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_bytes - MMIO_HOLE_START),
        ]
    }
}

/// The 64-bit PCI memory window: from the first 1 GiB boundary at or above
/// the end of RAM (and 4 GiB), `PCI_MMIO64_SIZE` long. Returns (start, size).
pub fn pci_mmio64_window(mem_bytes: u64) -> (u64, u64) {
    let ram_end = ram_ranges(mem_bytes)
        .last()
        .map_or(0, |&(start, size)| start + size)
        .max(MMIO_HOLE_END);
    (ram_end.div_ceil(1 << 30) * (1 << 30), PCI_MMIO64_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_fit_below_the_hole() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
        assert_eq!(ram_ranges(MMIO_HOLE_START), vec![(0, MMIO_HOLE_START)]);
    }

    #[test]
    fn large_guests_continue_above_4_gib() {
        let ranges = ram_ranges(6 << 30);
        assert_eq!(ranges, vec![(0, 3 << 30), (4 << 30, 3 << 30)]);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, 6 << 30);
    }

    #[test]
    fn the_64_bit_pci_window_lies_above_ram() {
        assert_eq!(pci_mmio64_window(512 << 20), (4 << 30, PCI_MMIO64_SIZE));
        assert_eq!(pci_mmio64_window(6 << 30), (7 << 30, PCI_MMIO64_SIZE));
        assert_eq!(pci_mmio64_window((6 << 30) + 1), (8 << 30, PCI_MMIO64_SIZE));
    }

    #[test]
    fn hole_regions_do_not_overlap() {
        let mut regions = [
            (PCI_MMIO32_START, PCI_MMIO32_SIZE),
            (
                VIRTIO_MMIO_START,
                VIRTIO_MMIO_STRIDE * VIRTIO_IRQS.len() as u64,
            ),
            (PCI_ECAM_START, PCI_ECAM_SIZE),
            (IOAPIC_START, 0x1000),
            (APIC_START, 0x1000),
        ];
        regions.sort();
        for pair in regions.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:x?}");
        }
        assert!(regions[0].0 >= MMIO_HOLE_START);
        assert!(PCI_INTX_GSIS.iter().all(|g| !VIRTIO_IRQS.contains(g)));
        assert!(PCI_INTX_GSIS.iter().all(|&g| g < MSI_GSI_START));
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut regions = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 8),
            (PVH_INFO_START, 0x100),
            (PVH_MEMMAP_START, 0x400),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (ACPI_START, ACPI_END - ACPI_START),
            (HIMEM_START, 1),
        ];
        regions.sort();
        for pair in regions.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:x?}");
        }
        const {
            assert!(
                BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000
            )
        };
    }
}
