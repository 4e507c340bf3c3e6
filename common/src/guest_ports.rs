//! The I/O ports through which Keel's own guest code (the test guest, the
//! disk boot loader) talks to keel-vmm. Each is one byte wide; the VMM
//! and the guest side both take the numbers from here.

/// The boot timer: the guest writes a byte when it reaches its init, as
/// with Firecracker's boot timer and Cloud Hypervisor's debug port (0x80 is
/// taken by Linux's I/O delay writes, so Keel uses its own port).
pub const BOOT_TIMER_PORT: u16 = 0x440;

/// The disk boot loader's failure report: the loader writes its message
/// a byte at a time, then [`LOADER_REPORT_END`]; keel-vmm then ends the VM
/// with `VmmExitStatus::BootFailed` and that message.
pub const LOADER_REPORT_PORT: u16 = 0x441;
/// Ends a loader report.
pub const LOADER_REPORT_END: u8 = 0;
/// The longest report the VMM keeps; the rest is dropped. The message
/// names files of a hostile disk, so the VMM keeps printable ASCII only.
pub const LOADER_REPORT_MAX: usize = 512;
