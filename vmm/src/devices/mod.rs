//! Emulated devices: one file per device, the buses that route to them,
//! the PCI host bridge, and virtio over MMIO.

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod events;
pub mod i8042;
pub mod pci_host;
pub mod pvpanic;
pub mod serial;
pub mod virtio;
