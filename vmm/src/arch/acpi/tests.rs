//! Whole-table checks: lengths, checksums, placement, and what ACPICA's
//! disassembler (`iasl -d`, Debian's acpica-tools) reads back from them.

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::arch::layout::*;

const MEM_BYTES: u64 = 6 << 30;

fn mmio_devices(count: usize) -> Vec<(u64, u32)> {
    (0..count)
        .map(|i| {
            (
                VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_STRIDE,
                VIRTIO_IRQS[i],
            )
        })
        .collect()
}

fn config(mmio: &[(u64, u32)], pci: bool) -> AcpiConfig<'_> {
    AcpiConfig {
        vcpus: 4,
        mem_bytes: MEM_BYTES,
        pci,
        mmio_devices: mmio,
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

#[test]
fn tables_have_valid_checksums_and_lengths() {
    let mmio = mmio_devices(3);
    for table in [
        dsdt::dsdt(&config(&[], false)),
        dsdt::dsdt(&config(&mmio, true)),
        fadt::fadt(0x1000, 0x2000),
        madt::madt(4),
        mcfg::mcfg(),
    ] {
        let len = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
        assert_eq!(len, table.len(), "{:?}", &table[0..4]);
        assert!(checksum_ok(&table), "{:?}", &table[0..4]);
    }
}

/// The XSDT's table addresses, read from guest memory.
fn xsdt_entries(mem: &GuestMemoryMmap, rsdp: u64) -> Vec<[u8; 4]> {
    let xsdt: u64 = mem.read_obj(GuestAddress(rsdp + 24)).expect("read");
    let len: u32 = mem.read_obj(GuestAddress(xsdt + 4)).expect("read");
    (36..len as u64)
        .step_by(8)
        .map(|at| {
            let table: u64 = mem.read_obj(GuestAddress(xsdt + at)).expect("read");
            mem.read_obj(GuestAddress(table)).expect("read")
        })
        .collect()
}

#[test]
fn tables_fit_and_rsdp_is_found() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("memory");
    let mmio = mmio_devices(VIRTIO_IRQS.len());
    let rsdp = write_tables(&mem, &config(&mmio, true)).expect("write");
    assert_eq!(rsdp, ACPI_START);
    let mut sig = [0u8; 8];
    mem.read_slice(&mut sig, GuestAddress(rsdp)).expect("read");
    assert_eq!(&sig, b"RSD PTR ");
    assert_eq!(xsdt_entries(&mem, rsdp), [*b"FACP", *b"APIC", *b"MCFG"]);
}

#[test]
fn no_mcfg_without_pci() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 2 << 20)]).expect("memory");
    let rsdp = write_tables(&mem, &config(&[], false)).expect("write");
    assert_eq!(xsdt_entries(&mem, rsdp), [*b"FACP", *b"APIC"]);
}

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-acpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn iasl(dir: &Path, args: &[&str]) -> String {
    let output = match Command::new("iasl").args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("iasl is not installed (Debian's acpica-tools): run `make deps`")
        }
        Err(e) => panic!("cannot run iasl: {e}"),
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "iasl {args:?} failed:\n{log}");
    log
}

/// Disassembles `table` with `iasl -d` and returns the .dsl text.
fn disassemble(name: &str, table: &[u8]) -> (PathBuf, String) {
    let dir = scratch(name);
    std::fs::write(dir.join(format!("{name}.dat")), table).expect("write table");
    iasl(&dir, &["-d", &format!("{name}.dat")]);
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).expect("read .dsl");
    (dir, dsl)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn iasl_reads_the_dsdt_with_pci_and_mmio_devices() {
    let mmio = mmio_devices(3);
    let (dir, dsl) = disassemble("dsdt", &dsdt::dsdt(&config(&mmio, true)));

    // The host bridge, its windows and interrupt routing.
    assert!(dsl.contains("Device (_SB.PCI0)"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0A08\")"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0A03\")"), "{dsl}");
    assert!(dsl.contains("Name (_SEG, Zero)") || dsl.contains("Name (_SEG, 0x0000)"));
    assert!(dsl.contains("WordBusNumber"), "{dsl}");
    assert!(dsl.contains("0x0CF7") && dsl.contains("0x0D00"), "{dsl}");
    assert!(
        dsl.contains("0xC0000000") && dsl.contains("0xCFFFFFFF"),
        "{dsl}"
    );
    let (start, size) = pci_mmio64_window(MEM_BYTES);
    assert!(dsl.contains("QWordMemory"), "{dsl}");
    assert!(dsl.contains(&format!("0x{start:016X}")), "{dsl}");
    assert!(
        dsl.contains(&format!("0x{:016X}", start + size - 1)),
        "{dsl}"
    );
    assert!(dsl.contains("Method (_OSC, 4"), "{dsl}");
    assert!(
        dsl.contains("33db4d5b-1ff7-401c-9657-7441c03dd766"),
        "{dsl}"
    );
    let prt = dsl.split("Name (_PRT").nth(1).expect("a _PRT");
    let prt = prt.split("Method (_OSC").next().unwrap_or(prt);
    assert_eq!(count(prt, "FFFF,"), 31 * 4, "{prt}");
    for gsi in PCI_INTX_GSIS {
        assert_eq!(
            count(prt, &format!("0x{gsi:02X}\n")),
            31,
            "GSI {gsi}: {prt}"
        );
    }
    assert!(dsl.contains("EisaId (\"PNP0C02\")") && dsl.contains("0xE0000000"));

    // One LNRO0005 per virtio-mmio device, with its window and GSI.
    assert_eq!(count(&dsl, "\"LNRO0005\""), 3, "{dsl}");
    for (base, gsi) in &mmio {
        assert!(dsl.contains(&format!("0x{base:08X}")), "{base:#x}: {dsl}");
        assert!(dsl.contains(&format!("0x{gsi:08X},")), "GSI {gsi}: {dsl}");
    }

    // Legacy devices: COM1 and the i8042's keyboard port, and no mouse.
    assert!(
        dsl.contains("EisaId (\"PNP0501\")") && dsl.contains("0x03F8"),
        "{dsl}"
    );
    assert!(dsl.contains("EisaId (\"PNP0303\")"), "{dsl}");
    assert!(dsl.contains("0x0060") && dsl.contains("0x0064"), "{dsl}");
    assert!(!dsl.contains("PNP0F13"), "{dsl}");
    assert!(
        dsl.contains("\"QEMU0001\"") && dsl.contains("_S5_"),
        "{dsl}"
    );

    // What iasl disassembles, it assembles again, without a warning.
    let log = iasl(&dir, &["dsdt.dsl"]);
    assert!(log.contains(" 0 Errors, 0 Warnings"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iasl_reads_the_dsdt_without_pci() {
    let (dir, dsl) = disassemble("dsdt-nopci", &dsdt::dsdt(&config(&[], false)));
    assert!(!dsl.contains("PCI0") && !dsl.contains("LNRO0005"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0303\")"), "{dsl}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iasl_reads_the_mcfg() {
    let (dir, dsl) = disassemble("mcfg", &mcfg::mcfg());
    assert!(dsl.contains("Signature : \"MCFG\""), "{dsl}");
    assert!(dsl.contains("Base Address : 00000000E0000000"), "{dsl}");
    assert!(dsl.contains("Segment Group Number : 0000"), "{dsl}");
    assert!(dsl.contains("Start Bus Number : 00") && dsl.contains("End Bus Number : 00"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn iasl_reads_the_fadt_and_madt() {
    let (dir, dsl) = disassemble("facp", &fadt::fadt(0x1000, 0x2000));
    assert!(dsl.contains("Signature : \"FACP\""), "{dsl}");
    assert!(!dsl.contains("Error"), "{dsl}");
    let _ = std::fs::remove_dir_all(&dir);
    let (dir, dsl) = disassemble("apic", &madt::madt(2));
    assert_eq!(
        count(&dsl, "Subtable Type : 00 [Processor Local APIC]"),
        2,
        "{dsl}"
    );
    assert!(
        dsl.contains("[I/O APIC]") && dsl.contains("Address : FEC00000"),
        "{dsl}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
