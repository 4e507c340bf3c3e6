//! Emulated devices: one file per device, the buses that route to them,
//! PCI bus 0, and virtio over MMIO and PCI.

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod events;
pub mod i8042;
pub mod loader_report;
pub mod pci;
pub mod pvpanic;
pub mod serial;
pub mod virtio;
