//! The failure report's way out to keel-vmm: bytes written one at a time
//! to [`LOADER_REPORT_PORT`], then [`LOADER_REPORT_END`].

use keel_common::guest_ports::{LOADER_REPORT_END, LOADER_REPORT_PORT};

fn out(byte: u8) {
    // SAFETY: a byte write to an I/O port this process was granted with
    // ioperm; keel-vmm's report device takes it and no memory is touched.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") LOADER_REPORT_PORT, in("al") byte, options(nomem, nostack))
    };
}

/// Sends `message` (already sanitized: no [`LOADER_REPORT_END`] inside).
pub fn send(message: &[u8]) -> std::io::Result<()> {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { libc::ioperm(libc::c_ulong::from(LOADER_REPORT_PORT), 1, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for &byte in message {
        out(byte);
    }
    out(LOADER_REPORT_END);
    Ok(())
}
