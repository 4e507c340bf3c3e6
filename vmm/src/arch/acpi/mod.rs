//! ACPI tables: RSDP, XSDT, FADT (with a FACS), DSDT, MADT and, with PCI,
//! MCFG.
//!
//! They tell the guest its CPUs and interrupt controllers (MADT), how to
//! power off (the PM1a control block and `\_S5`, handled by
//! `devices::acpi_pm`), its devices (DSDT: the PCI host bridge, the
//! virtio-mmio devices, the legacy devices and the pvpanic port) and where
//! PCI configuration space is mapped (MCFG).

mod dsdt;
mod fadt;
mod madt;
mod mcfg;
#[cfg(test)]
mod tests;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{ACPI_END, ACPI_START};

const OEM_ID: [u8; 6] = *b"KEEL  ";
/// PM1 control: SLP_EN and the SLP_TYP field.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
/// The sleep type `\_S5` announces, which `devices::acpi_pm` reads as power-off.
pub const S5_SLP_TYP: u8 = 5;

/// What the tables describe.
#[derive(Debug, Clone, Copy)]
pub struct AcpiConfig<'a> {
    /// Number of vCPUs (one local APIC each).
    pub vcpus: u8,
    /// Guest RAM in bytes: the 64-bit PCI window starts above it.
    pub mem_bytes: u64,
    /// Whether there is a PCI host bridge (the DSDT's `PCI0` and the MCFG).
    pub pci: bool,
    /// Virtio-mmio devices as (base address, GSI), one 4 KiB window each.
    pub mmio_devices: &'a [(u64, u32)],
}

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

/// Writes the tables at [`ACPI_START`]; returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, config: &AcpiConfig) -> Result<u64, AcpiError> {
    let align = |x: u64, a: u64| x.div_ceil(a) * a;
    let rsdp_addr = ACPI_START;
    let mut next = rsdp_addr + Rsdp::len() as u64;
    let mut place = |bytes: &[u8], alignment: u64| {
        let at = align(next, alignment);
        next = at + bytes.len() as u64;
        at
    };
    let mut tables = Vec::new();
    let dsdt = dsdt::dsdt(config);
    let dsdt_addr = place(&dsdt, 8);
    let facs = fadt::facs();
    let facs_addr = place(&facs, 64);
    let fadt = fadt::fadt(dsdt_addr, facs_addr);
    let fadt_addr = place(&fadt, 8);
    let madt = madt::madt(config.vcpus);
    let madt_addr = place(&madt, 8);
    let mut xsdt = XSDT::new(OEM_ID, *b"KEELXSDT", 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    if config.pci {
        let mcfg = mcfg::mcfg();
        let mcfg_addr = place(&mcfg, 8);
        xsdt.add_entry(mcfg_addr);
        tables.push((mcfg, mcfg_addr));
    }
    let xsdt = bytes_of(&xsdt);
    let xsdt_addr = place(&xsdt, 8);
    if next > ACPI_END {
        return Err(AcpiError::TooLarge((next - ACPI_START) as usize));
    }
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    tables.extend([
        (rsdp, rsdp_addr),
        (dsdt, dsdt_addr),
        (facs, facs_addr),
        (fadt, fadt_addr),
        (madt, madt_addr),
        (xsdt, xsdt_addr),
    ]);
    for (bytes, addr) in &tables {
        mem.write_slice(bytes, GuestAddress(*addr))?;
    }
    Ok(rsdp_addr)
}
