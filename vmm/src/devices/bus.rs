//! Port-I/O and MMIO buses: address ranges mapped to devices.
//!
//! The map sits behind a read-write lock: vCPU threads only read it, and
//! it changes after the VM starts only when a guest moves a PCI BAR.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// A device reachable through a bus. `offset` is relative to the range's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// An error adding a device to a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("the range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap { base: u64, len: u64 },
    #[error("the range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
    #[error("no device is mapped at {0:#x}")]
    NotMapped(u64),
}

type Entry = (u64, Arc<Mutex<dyn BusDevice>>);

/// Devices keyed by base address.
#[derive(Default)]
pub struct Bus {
    devices: RwLock<BTreeMap<u64, Entry>>,
}

/// Adds `device` to `devices` at `[base, base + len)` unless it overlaps.
fn insert_into(
    devices: &mut BTreeMap<u64, Entry>,
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
) -> Result<(), BusError> {
    let end = base
        .checked_add(len)
        .filter(|_| len > 0)
        .ok_or(BusError::BadRange { base, len })?;
    let overlaps_before = devices
        .range(..end)
        .next_back()
        .is_some_and(|(b, (l, _))| b + l > base);
    if overlaps_before {
        return Err(BusError::Overlap { base, len });
    }
    devices.insert(base, (len, device));
    Ok(())
}

impl Bus {
    /// Maps `device` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let devices = self
            .devices
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        insert_into(devices, base, len, device)
    }

    /// Moves the device mapped at `old` to `new`, keeping its length; on
    /// an overlap at `new` it stays where it was.
    pub fn relocate(&self, old: u64, new: u64) -> Result<(), BusError> {
        let mut devices = self.devices.write().unwrap_or_else(PoisonError::into_inner);
        let (len, device) = devices.remove(&old).ok_or(BusError::NotMapped(old))?;
        if let Err(err) = insert_into(&mut devices, new, len, device.clone()) {
            devices.insert(old, (len, device));
            return Err(err);
        }
        Ok(())
    }

    /// The device at `addr` and the offset into it. The map's lock is
    /// released before the device runs: an ECAM write that moves a BAR
    /// relocates a device on this same bus.
    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let devices = self.devices.read().unwrap_or_else(PoisonError::into_inner);
        let (base, (len, device)) = devices.range(..=addr).next_back()?;
        (addr - base < *len).then(|| (addr - base, device.clone()))
    }

    /// Reads from the device at `addr`; false if nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                if let Ok(mut d) = device.lock() {
                    d.read(offset, data);
                }
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false if nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, device)) => {
                if let Ok(mut d) = device.lock() {
                    d.write(offset, data);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_refuses_overlaps() {
        let mut bus = Bus::default();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, dev.clone()).expect("insert");
        assert_eq!(
            bus.insert(0x3fc, 8, dev.clone()),
            Err(BusError::Overlap {
                base: 0x3fc,
                len: 8
            })
        );
        assert_eq!(
            bus.insert(0x3f0, 9, dev.clone()),
            Err(BusError::Overlap {
                base: 0x3f0,
                len: 9
            })
        );
        assert_eq!(
            bus.insert(u64::MAX, 2, dev.clone()),
            Err(BusError::BadRange {
                base: u64::MAX,
                len: 2
            })
        );
        assert_eq!(
            bus.insert(0x10, 0, dev.clone()),
            Err(BusError::BadRange { base: 0x10, len: 0 })
        );
        bus.insert(0x3f0, 8, dev.clone())
            .expect("adjacent range is fine");

        let mut data = [0u8; 1];
        assert!(bus.read(0x3fa, &mut data));
        assert_eq!(data, [2]);
        assert!(bus.write(0x3ff, &[9]));
        assert_eq!(dev.lock().expect("lock").last_write, Some((7, vec![9])));
        assert!(!bus.read(0x400, &mut data));
        assert!(!bus.write(0x2f8, &[1]));
    }

    #[test]
    fn a_relocated_device_answers_at_its_new_base_only() {
        let mut bus = Bus::default();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let other = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x1000, 0x100, dev.clone()).expect("insert");
        bus.insert(0x3000, 0x100, other).expect("insert");
        bus.relocate(0x1000, 0x2000).expect("relocate");
        let mut data = [0u8; 1];
        assert!(!bus.read(0x1010, &mut data));
        assert!(bus.write(0x2010, &[7]));
        assert_eq!(dev.lock().expect("lock").last_write, Some((0x10, vec![7])));
        // Onto another device: refused, and the device stays put.
        assert_eq!(
            bus.relocate(0x2000, 0x2f80),
            Err(BusError::Overlap {
                base: 0x2f80,
                len: 0x100
            })
        );
        assert!(bus.read(0x2000, &mut data));
        assert_eq!(
            bus.relocate(0x5000, 0x6000),
            Err(BusError::NotMapped(0x5000))
        );
    }
}
