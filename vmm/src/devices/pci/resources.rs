//! Guest resources for PCI devices, allocated with rust-vmm's
//! `vm-allocator`: BAR addresses in the 32-bit window below 4 GiB and the
//! 64-bit window above RAM (each BAR naturally aligned to its size), and
//! GSIs for MSI-X vectors. INTx lines are fixed by the device number.

use vm_allocator::{AddressAllocator, AllocPolicy, IdAllocator, RangeInclusive};

use super::config::BarKind;
use crate::arch::layout::{
    pci_mmio64_window, MSI_GSI_END, MSI_GSI_START, PCI_INTX_GSIS, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};

/// Why a resource could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("no room for a {kind:?} BAR of {size:#x} bytes: {source}")]
    Bar {
        kind: BarKind,
        size: u64,
        source: vm_allocator::Error,
    },
    #[error("no MSI GSI is left: {0}")]
    Gsi(vm_allocator::Error),
    #[error("the PCI windows cannot be set up: {0}")]
    Window(vm_allocator::Error),
}

/// The allocators for one guest.
pub struct PciResources {
    mmio32: AddressAllocator,
    mmio64: AddressAllocator,
    msi_gsis: IdAllocator,
}

impl PciResources {
    /// The windows for a guest of `mem_bytes` of RAM.
    pub fn new(mem_bytes: u64) -> Result<Self, ResourceError> {
        let (mmio64_start, mmio64_size) = pci_mmio64_window(mem_bytes);
        Ok(PciResources {
            mmio32: AddressAllocator::new(PCI_MMIO32_START, PCI_MMIO32_SIZE)
                .map_err(ResourceError::Window)?,
            mmio64: AddressAllocator::new(mmio64_start, mmio64_size)
                .map_err(ResourceError::Window)?,
            msi_gsis: IdAllocator::new(MSI_GSI_START, MSI_GSI_END)
                .map_err(ResourceError::Window)?,
        })
    }

    /// An address for a BAR of `size` bytes (a power of two), aligned to
    /// its size: 32-bit BARs in the window below 4 GiB, 64-bit ones above
    /// RAM.
    pub fn allocate_bar(&mut self, size: u64, kind: BarKind) -> Result<u64, ResourceError> {
        let allocator = match kind {
            BarKind::Mem32 => &mut self.mmio32,
            BarKind::Mem64 { .. } => &mut self.mmio64,
        };
        let err = |source| ResourceError::Bar { kind, size, source };
        if !size.is_power_of_two() {
            return Err(err(vm_allocator::Error::InvalidSize(size)));
        }
        allocator
            .allocate(size, size, AllocPolicy::FirstMatch)
            .map(|range| range.start())
            .map_err(err)
    }

    /// Gives a BAR's range back (when a device is removed).
    pub fn free_bar(&mut self, addr: u64, size: u64, kind: BarKind) -> Result<(), ResourceError> {
        let allocator = match kind {
            BarKind::Mem32 => &mut self.mmio32,
            BarKind::Mem64 { .. } => &mut self.mmio64,
        };
        let err = |source| ResourceError::Bar { kind, size, source };
        let end = addr
            .checked_add(size.saturating_sub(1))
            .ok_or(err(vm_allocator::Error::Overflow))?;
        let range = RangeInclusive::new(addr, end).map_err(err)?;
        allocator.free(&range).map_err(err)
    }

    /// `count` GSIs for MSI routes, one per vector; all or none.
    pub fn allocate_msi_gsis(&mut self, count: u16) -> Result<Vec<u32>, ResourceError> {
        let mut gsis = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            match self.msi_gsis.allocate_id() {
                Ok(gsi) => gsis.push(gsi),
                Err(e) => {
                    for gsi in gsis {
                        // Freshly allocated, so freeing cannot fail.
                        let _ = self.msi_gsis.free_id(gsi);
                    }
                    return Err(ResourceError::Gsi(e));
                }
            }
        }
        Ok(gsis)
    }
}

/// The GSI of INTx pin `pin` (0 = INTA# .. 3 = INTD#) of device number
/// `slot`, swizzled over the four PCI lines as the `_PRT` describes:
/// `PCI_INTX_GSIS[(slot + pin) % 4]`.
pub fn intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSIS[(usize::from(slot) + usize::from(pin)) % PCI_INTX_GSIS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_naturally_aligned_in_their_window() {
        let mut r = PciResources::new(512 << 20).unwrap();
        let a = r.allocate_bar(0x1000, BarKind::Mem32).unwrap();
        let b = r.allocate_bar(0x10_0000, BarKind::Mem32).unwrap();
        let c = r.allocate_bar(0x1000, BarKind::Mem32).unwrap();
        assert_eq!(a, PCI_MMIO32_START);
        assert_eq!(b % 0x10_0000, 0);
        assert!(c >= a + 0x1000 && (c + 0x1000 <= b || c >= b + 0x10_0000));
        let (start, size) = pci_mmio64_window(512 << 20);
        let d = r
            .allocate_bar(
                0x8000,
                BarKind::Mem64 {
                    prefetchable: false,
                },
            )
            .unwrap();
        assert_eq!(d, start);
        assert!(d >= 1 << 32);
        let e = r
            .allocate_bar(1 << 30, BarKind::Mem64 { prefetchable: true })
            .unwrap();
        assert_eq!(e % (1 << 30), 0);
        assert!(e + (1 << 30) <= start + size);
    }

    #[test]
    fn windows_run_out_and_refill() {
        let mut r = PciResources::new(6 << 30).unwrap();
        let all = r.allocate_bar(PCI_MMIO32_SIZE, BarKind::Mem32).unwrap();
        assert!(matches!(
            r.allocate_bar(0x1000, BarKind::Mem32),
            Err(ResourceError::Bar { .. })
        ));
        r.free_bar(all, PCI_MMIO32_SIZE, BarKind::Mem32).unwrap();
        assert_eq!(r.allocate_bar(0x1000, BarKind::Mem32), Ok(PCI_MMIO32_START));
        assert!(r.allocate_bar(0x1800, BarKind::Mem32).is_err());
        assert!(r.allocate_bar(0, BarKind::Mem32).is_err());
        let too_big = PCI_MMIO32_SIZE * 2;
        assert!(r.allocate_bar(too_big, BarKind::Mem32).is_err());
        // 64-bit BARs of a large guest lie above its RAM.
        let high = r
            .allocate_bar(
                0x4000,
                BarKind::Mem64 {
                    prefetchable: false,
                },
            )
            .unwrap();
        assert_eq!(high, 7 << 30);
    }

    #[test]
    fn msi_gsis_come_from_their_range() {
        let mut r = PciResources::new(128 << 20).unwrap();
        assert_eq!(r.allocate_msi_gsis(3).unwrap(), vec![24, 25, 26]);
        let rest = (MSI_GSI_END - 26) as u16;
        assert!(r.allocate_msi_gsis(rest + 1).is_err(), "all or none");
        let last = r.allocate_msi_gsis(rest).unwrap();
        assert_eq!(last.last(), Some(&MSI_GSI_END));
        assert!(r.allocate_msi_gsis(1).is_err());
    }

    #[test]
    fn intx_lines_swizzle_over_the_four_gsis() {
        assert_eq!(intx_gsi(0, 0), 20);
        assert_eq!(intx_gsi(1, 0), 21);
        assert_eq!(intx_gsi(3, 1), 20);
        assert_eq!(intx_gsi(31, 3), 22);
    }
}
