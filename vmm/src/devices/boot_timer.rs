//! The boot timer port: the guest writes a byte when it reaches its init,
//! and the VMM records how long the boot took from its own start.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::bus::BusDevice;

/// The first marker seen: (value, milliseconds since the VMM started).
pub type BootMarker = Arc<Mutex<Option<(u8, u64)>>>;

pub struct BootTimer {
    started: Instant,
    marker: BootMarker,
}

impl BootTimer {
    pub fn new(started: Instant, marker: BootMarker) -> Self {
        BootTimer { started, marker }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        let ms = self.started.elapsed().as_millis() as u64;
        if let Ok(mut marker) = self.marker.lock() {
            if marker.is_none() {
                *marker = Some((value, ms));
                log::info!("guest boot marker {value:#x} after {ms} ms");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_first_marker_only() {
        let marker = BootMarker::default();
        let mut dev = BootTimer::new(Instant::now(), marker.clone());
        dev.write(0, &[]);
        assert_eq!(*marker.lock().expect("lock"), None);
        dev.write(0, &[0x42]);
        dev.write(0, &[0x43]);
        assert_eq!(marker.lock().expect("lock").map(|m| m.0), Some(0x42));
    }
}
