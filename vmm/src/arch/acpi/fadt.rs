//! FADT and FACS: the PM1a event and control blocks (power-off through
//! `devices::acpi_pm`), the SCI line and the IA-PC boot flags.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::{bytes_of, OEM_ID};
use crate::arch::layout::{ACPI_PM_PORT, ACPI_SCI_IRQ};

/// IA-PC boot flags: an 8042 is present (bit 1), no VGA (bit 2), no CMOS
/// RTC (bit 5).
const IAPC_BOOT_ARCH: u16 = (1 << 1) | (1 << 2) | (1 << 5);

/// An empty FACS: no firmware waking vector, no global lock users.
pub(super) fn facs() -> Vec<u8> {
    let mut facs = vec![0u8; 64];
    facs[0..4].copy_from_slice(b"FACS");
    facs[4..8].copy_from_slice(&64u32.to_le_bytes());
    facs[32] = 2; // version
    facs
}

pub(super) fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let io = |width, address| {
        GAS::new(
            AddressSpace::SystemIo,
            width,
            0,
            AccessSize::Undefined,
            address,
        )
    };
    let mut fadt = FADTBuilder::new(OEM_ID, *b"KEELFACP", 1)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        // No fixed power or sleep buttons; ACPI mode is always on (SMI_CMD = 0).
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.sci_int = (ACPI_SCI_IRQ as u16).into();
    fadt.pm1a_evt_blk = u32::from(ACPI_PM_PORT).into();
    fadt.pm1a_cnt_blk = u32::from(ACPI_PM_PORT + 4).into();
    fadt.pm1_evt_len = 4;
    fadt.pm1_cnt_len = 2;
    fadt.x_pm1a_evt_blk = io(32, u64::from(ACPI_PM_PORT));
    fadt.x_pm1a_cnt_blk = io(16, u64::from(ACPI_PM_PORT + 4));
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    bytes_of(&fadt.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facs_is_64_bytes_and_signed() {
        let facs = facs();
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(facs.len(), 64);
    }

    #[test]
    fn fadt_points_at_the_dsdt_and_facs() {
        let fadt = fadt(0x1234_5000, 0x6000);
        assert_eq!(&fadt[0..4], b"FACP");
        // X_FIRMWARE_CTRL at 132, X_DSDT at 140 (ACPI 6.x FADT layout).
        assert_eq!(fadt[132..140], 0x6000u64.to_le_bytes());
        assert_eq!(fadt[140..148], 0x1234_5000u64.to_le_bytes());
    }
}
