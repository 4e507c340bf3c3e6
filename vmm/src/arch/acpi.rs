//! ACPI tables: RSDP, XSDT, FADT (with a FACS), DSDT and MADT.
//!
//! They tell the guest its CPUs and interrupt controllers (MADT), how to
//! power off (the PM1a control block and `\_S5`, handled by
//! `devices::acpi_pm`), and where the pvpanic port is, so that a guest
//! panic reaches the VMM.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;

const OEM_ID: [u8; 6] = *b"KEEL  ";
/// PM1 control: SLP_EN and the SLP_TYP field.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// The sleep type `\_S5` announces, which `devices::acpi_pm` reads as power-off.
pub const S5_SLP_TYP: u8 = 5;

/// An error writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables ({0} bytes) do not fit below 1 MiB")]
    TooLarge(usize),
    #[error("cannot write the ACPI tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

fn dsdt() -> Vec<u8> {
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]),
    );
    let hid = aml::Name::new("_HID".into(), &"QEMU0001");
    let io = aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io]));
    let pvpanic = aml::Device::new("PEVT".into(), vec![&hid, &crs]);
    let sb = aml::Scope::new("\\_SB_".into(), vec![&pvpanic]);
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"KEELDSDT", 1);
    table.append_slice(&bytes_of(&s5));
    table.append_slice(&bytes_of(&sb));
    table.as_slice().to_vec()
}

fn facs() -> Vec<u8> {
    let mut facs = vec![0u8; 64];
    facs[0..4].copy_from_slice(b"FACS");
    facs[4..8].copy_from_slice(&64u32.to_le_bytes());
    facs[32] = 2; // version
    facs
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
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
    // IA-PC boot flags: an 8042 is present (bit 1), no VGA (bit 2), no CMOS RTC (bit 5).
    fadt.iapc_boot_arch = ((1u16 << 1) | (1 << 2) | (1 << 5)).into();
    bytes_of(&fadt.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
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

/// Writes the tables at [`ACPI_START`]; returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<u64, AcpiError> {
    let align = |x: u64, a: u64| x.div_ceil(a) * a;
    let rsdp_addr = ACPI_START;
    let mut next = rsdp_addr + Rsdp::len() as u64;
    let mut place = |bytes: &[u8], alignment: u64| {
        let at = align(next, alignment);
        next = at + bytes.len() as u64;
        at
    };
    let dsdt = dsdt();
    let dsdt_addr = place(&dsdt, 8);
    let facs = facs();
    let facs_addr = place(&facs, 64);
    let fadt = fadt(dsdt_addr, facs_addr);
    let fadt_addr = place(&fadt, 8);
    let madt = madt(vcpus);
    let madt_addr = place(&madt, 8);
    let mut xsdt = XSDT::new(OEM_ID, *b"KEELXSDT", 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes_of(&xsdt);
    let xsdt_addr = place(&xsdt, 8);
    if next > ACPI_END {
        return Err(AcpiError::TooLarge((next - ACPI_START) as usize));
    }
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    for (bytes, addr) in [
        (&rsdp, rsdp_addr),
        (&dsdt, dsdt_addr),
        (&facs, facs_addr),
        (&fadt, fadt_addr),
        (&madt, madt_addr),
        (&xsdt, xsdt_addr),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))?;
    }
    Ok(rsdp_addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        for table in [dsdt(), fadt(0x1000, 0x2000), madt(4)] {
            let len = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
            assert_eq!(len, table.len(), "{:?}", &table[0..4]);
            assert!(checksum_ok(&table), "{:?}", &table[0..4]);
        }
    }

    #[test]
    fn madt_lists_every_vcpu() {
        let table = madt(3);
        let lapics = table[44..]
            .windows(2)
            .step_by(1)
            .filter(|w| w == &[0u8, 8])
            .count();
        assert!(lapics >= 3);
        assert_eq!(&table[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&table[60..68], &[0, 8, 2, 2, 1, 0, 0, 0]);
    }

    #[test]
    fn dsdt_announces_s5_and_pvpanic() {
        let table = dsdt();
        assert!(table.windows(4).any(|w| w == b"_S5_"));
        assert!(table.windows(8).any(|w| w == b"QEMU0001"));
    }

    #[test]
    fn tables_fit_and_rsdp_is_found() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("memory");
        let rsdp = write_tables(&mem, 8).expect("write");
        assert_eq!(rsdp, ACPI_START);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(rsdp)).expect("read");
        assert_eq!(&sig, b"RSD PTR ");
    }
}
