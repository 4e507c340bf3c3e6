//! pvpanic: the guest kernel writes here when it panics.

use std::sync::Arc;

use super::bus::BusDevice;
use crate::exit::{ExitSignal, VmExit};

const PVPANIC_PANICKED: u8 = 1 << 0;
const PVPANIC_CRASH_LOADED: u8 = 1 << 1;

pub struct PvPanic {
    exit: Arc<ExitSignal>,
}

impl PvPanic {
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        PvPanic { exit }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // The events this device supports; the driver sends only these.
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&event) = data.first() else {
            return;
        };
        if event & PVPANIC_PANICKED != 0 {
            self.exit
                .request(VmExit::Crash("the guest kernel panicked (pvpanic)".into()));
        } else if event & PVPANIC_CRASH_LOADED != 0 {
            log::warn!("the guest kernel crashed and is running its crash kernel");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_event_is_a_crash() {
        let exit = Arc::new(ExitSignal::new().expect("eventfd"));
        let mut dev = PvPanic::new(exit.clone());
        let mut caps = [0u8];
        dev.read(0, &mut caps);
        assert_eq!(caps[0], 3);
        dev.write(0, &[]);
        dev.write(0, &[PVPANIC_CRASH_LOADED]);
        assert_eq!(exit.reason(), None);
        dev.write(0, &[PVPANIC_PANICKED]);
        assert!(matches!(exit.reason(), Some(VmExit::Crash(_))));
    }
}
