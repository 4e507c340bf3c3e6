//! DSDT: `\_S5` for power-off, and the devices under `\_SB`: the PCI
//! Express host bridge (with PCI), the virtio-mmio devices, COM1, the
//! i8042 keyboard controller and the pvpanic port.

use acpi_tables::aml::{self, AddressSpace, AddressSpaceCacheable, EISAName, Path};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::mcfg::PCI_SEGMENT;
use super::{bytes_of, AcpiConfig, OEM_ID, S5_SLP_TYP};
use crate::arch::layout::*;

/// The i8042's command and status port.
const I8042_COMMAND_PORT: u16 = I8042_PORT + 4;
/// Device slots the `_PRT` routes (slot 0 is the host bridge itself).
const PCI_SLOTS: std::ops::RangeInclusive<u32> = 1..=31;
/// The PCI Firmware Specification's `_OSC` UUID for host bridges.
const PCI_HOST_BRIDGE_OSC_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";
/// `_OSC` status (first capabilities dword): unrecognised UUID.
const OSC_UNRECOGNISED_UUID: u8 = 1 << 2;
/// Window of a virtio-mmio device's registers.
const VIRTIO_MMIO_WINDOW: u32 = 0x1000;

pub(super) fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"KEELDSDT", 1);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]),
    );
    table.append_slice(&bytes_of(&s5));
    table.append_slice(&pvpanic());
    table.append_slice(&com1());
    table.append_slice(&i8042());
    for (uid, &(base, gsi)) in config.mmio_devices.iter().enumerate() {
        table.append_slice(&virtio_mmio(uid, base, gsi));
    }
    if config.pci {
        table.append_slice(&pci_host_bridge(config.mem_bytes));
        table.append_slice(&motherboard_resources());
    }
    table.as_slice().to_vec()
}

/// pvpanic: the guest kernel's panic notifier writes to its port.
fn pvpanic() -> Vec<u8> {
    let io = aml::IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    bytes_of(&aml::Device::new(
        "_SB_.PEVT".into(),
        vec![
            &aml::Name::new("_HID".into(), &"QEMU0001"),
            &aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io])),
        ],
    ))
}

/// COM1, so that PNP finds the 8250 where it is instead of probing.
fn com1() -> Vec<u8> {
    let io = aml::IO::new(SERIAL_PORT, SERIAL_PORT, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, SERIAL_IRQ);
    bytes_of(&aml::Device::new(
        "_SB_.COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_DDN".into(), &"COM1"),
            &aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq])),
        ],
    ))
}

/// The i8042 with its keyboard port only: with PNP, Linux then knows there
/// is no AUX (mouse) port and does not wait for its probe to time out.
fn i8042() -> Vec<u8> {
    let data = aml::IO::new(I8042_PORT, I8042_PORT, 1, 1);
    let command = aml::IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let irq = aml::Interrupt::new(true, true, false, false, I8042_IRQ);
    bytes_of(&aml::Device::new(
        "_SB_.PS2K".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0303")),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&data, &command, &irq]),
            ),
        ],
    ))
}

/// A virtio-mmio device as Linux's virtio_mmio driver matches it over ACPI.
fn virtio_mmio(uid: usize, base: u64, gsi: u32) -> Vec<u8> {
    // The layout keeps every virtio-mmio window below 4 GiB.
    let window = aml::Memory32Fixed::new(true, base as u32, VIRTIO_MMIO_WINDOW);
    let irq = aml::Interrupt::new(true, true, false, false, gsi);
    let path = format!("_SB_.VR{uid:02X}");
    bytes_of(&aml::Device::new(
        path.as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &(uid as u32)),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&window, &irq]),
            ),
        ],
    ))
}

/// `_PRT` entries: (slot address, pin, GSI), INTA..INTD of each slot
/// swizzled over the four INTx GSIs.
fn prt_entries() -> Vec<(u32, u8, u32)> {
    PCI_SLOTS
        .flat_map(|slot| {
            (0..4u8).map(move |pin| {
                let gsi = PCI_INTX_GSIS[(slot as usize + pin as usize) % PCI_INTX_GSIS.len()];
                ((slot << 16) | 0xffff, pin, gsi)
            })
        })
        .collect()
}

/// `\_SB.PCI0`: the PCI Express host bridge, its bus, I/O and memory
/// windows, its interrupt routing and an `_OSC` granting the OS native
/// control of PCIe features (there is no firmware to keep any). No `_ADR`:
/// a device has a `_HID` or an `_ADR`, not both.
fn pci_host_bridge(mem_bytes: u64) -> Vec<u8> {
    let buses =
        AddressSpace::<u16>::new_bus_number(u16::from(PCI_BUS_FIRST), u16::from(PCI_BUS_LAST));
    let config_ports = aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8);
    let io_low = AddressSpace::<u16>::new_io(0, PCI_CONFIG_PORT - 1, None);
    let io_high = AddressSpace::<u16>::new_io(PCI_CONFIG_PORT + 8, 0xffff, None);
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_START + PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let (mmio64_start, mmio64_size) = pci_mmio64_window(mem_bytes);
    let mmio64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio64_start,
        mmio64_start + mmio64_size - 1,
        None,
    );
    let crs = aml::ResourceTemplate::new(vec![
        &buses,
        &config_ports,
        &io_low,
        &io_high,
        &mmio32,
        &mmio64,
    ]);

    let entries = prt_entries();
    let routes: Vec<aml::Package> = entries
        .iter()
        .map(|(address, pin, gsi)| aml::Package::new(vec![address, pin, &aml::ZERO, gsi]))
        .collect();
    let prt = aml::Package::new(routes.iter().map(|p| p as &dyn Aml).collect());

    let uuid = aml::Uuid::new(PCI_HOST_BRIDGE_OSC_UUID);
    let cdw1 = Path::new("CDW1");
    let status = aml::CreateDWordField::new(&cdw1, &aml::Arg(3), &aml::ZERO);
    let other_uuid = aml::NotEqual::new(&aml::Arg(0), &uuid);
    let unrecognised = aml::Or::new(&cdw1, &cdw1, &OSC_UNRECOGNISED_UUID);
    // For the host bridge UUID, every requested control is granted as is.
    let check_uuid = aml::If::new(&other_uuid, vec![&unrecognised]);
    let granted = aml::Return::new(&aml::Arg(3));
    let osc = aml::Method::new(
        "_OSC".into(),
        4,
        false,
        vec![&status, &check_uuid, &granted],
    );

    bytes_of(&aml::Device::new(
        "_SB_.PCI0".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0A08")),
            &aml::Name::new("_CID".into(), &EISAName::new("PNP0A03")),
            &aml::Name::new("_SEG".into(), &PCI_SEGMENT),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_BBN".into(), &PCI_BUS_FIRST),
            &aml::Name::new("_CRS".into(), &crs),
            &aml::Name::new("_PRT".into(), &prt),
            &osc,
        ],
    ))
}

/// Motherboard resources reserving the ECAM window: Linux uses the MCFG
/// only where firmware also reserves it this way (or in the E820 map).
fn motherboard_resources() -> Vec<u8> {
    let ecam = aml::Memory32Fixed::new(true, PCI_ECAM_START as u32, PCI_ECAM_SIZE as u32);
    bytes_of(&aml::Device::new(
        "_SB_.MBRD".into(),
        vec![
            &aml::Name::new("_HID".into(), &EISAName::new("PNP0C02")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&ecam])),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn every_slot_and_pin_is_routed_over_the_intx_gsis() {
        let entries = prt_entries();
        assert_eq!(entries.len(), 31 * 4);
        assert_eq!(entries[0], (0x1_ffff, 0, PCI_INTX_GSIS[1]));
        assert_eq!(entries[3], (0x1_ffff, 3, PCI_INTX_GSIS[0]));
        assert_eq!(entries[4], (0x2_ffff, 0, PCI_INTX_GSIS[2]));
        assert_eq!(entries.last(), Some(&(0x1f_ffff, 3, PCI_INTX_GSIS[2])));
    }

    #[test]
    fn pci_and_mmio_devices_appear_only_when_configured() {
        let bare = dsdt(&AcpiConfig {
            vcpus: 1,
            mem_bytes: 128 << 20,
            pci: false,
            mmio_devices: &[],
        });
        assert!(contains(&bare, b"_S5_") && contains(&bare, b"QEMU0001"));
        assert!(!contains(&bare, b"PCI0") && !contains(&bare, b"LNRO0005"));
        let full = dsdt(&AcpiConfig {
            vcpus: 1,
            mem_bytes: 128 << 20,
            pci: true,
            mmio_devices: &[(VIRTIO_MMIO_START, VIRTIO_IRQS[0])],
        });
        assert!(contains(&full, b"PCI0") && contains(&full, b"_PRT"));
        assert!(contains(&full, b"LNRO0005") && contains(&full, b"VR00"));
    }
}
