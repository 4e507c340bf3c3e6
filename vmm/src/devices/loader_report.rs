//! The disk boot loader's failure report (see
//! `keel_common::guest_ports::LOADER_REPORT_PORT`): keel-loader, running
//! in a `from = "disk"` guest, writes why it found nothing to boot a byte
//! at a time and then `LOADER_REPORT_END`; the VM then ends with
//! [`VmExit::BootFailed`] and that message.
//!
//! The message names files of a hostile disk and goes into the host's
//! logs, so only printable ASCII is kept, at most `LOADER_REPORT_MAX`
//! bytes. The device exists only for guests booted through the loader; a
//! kexec'd guest kernel could use it too, but it could as well power off.

use std::sync::Arc;

use keel_common::guest_ports::{LOADER_REPORT_END, LOADER_REPORT_MAX};

use super::bus::BusDevice;
use crate::exit::{ExitSignal, VmExit};

pub struct LoaderReport {
    message: Vec<u8>,
    exit: Arc<ExitSignal>,
}

impl LoaderReport {
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        LoaderReport {
            message: Vec::new(),
            exit,
        }
    }
}

impl BusDevice for LoaderReport {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else {
            return;
        };
        if byte == LOADER_REPORT_END {
            let message = String::from_utf8_lossy(&self.message).into_owned();
            self.message.clear();
            self.exit.request(VmExit::BootFailed(message));
        } else if (byte.is_ascii_graphic() || byte == b' ')
            && self.message.len() < LOADER_REPORT_MAX
        {
            self.message.push(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_ends_the_vm_with_its_printable_part() {
        let exit = Arc::new(ExitSignal::new().expect("eventfd"));
        let mut dev = LoaderReport::new(exit.clone());
        for b in b"no boot entry\x1b[2J\n found\xff" {
            dev.write(0, &[*b]);
        }
        assert_eq!(exit.reason(), None, "nothing ends before the end byte");
        dev.write(0, &[]);
        dev.write(0, &[LOADER_REPORT_END]);
        assert_eq!(
            exit.reason(),
            Some(VmExit::BootFailed("no boot entry[2J found".into()))
        );
    }

    #[test]
    fn a_report_is_capped() {
        let exit = Arc::new(ExitSignal::new().expect("eventfd"));
        let mut dev = LoaderReport::new(exit.clone());
        for _ in 0..LOADER_REPORT_MAX * 4 {
            dev.write(0, b"x");
        }
        dev.write(0, &[LOADER_REPORT_END]);
        match exit.reason() {
            Some(VmExit::BootFailed(m)) => assert_eq!(m.len(), LOADER_REPORT_MAX),
            other => panic!("{other:?}"),
        }
    }
}
