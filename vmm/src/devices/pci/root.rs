//! The root complex of bus 0: the host bridge at 00.0 and one function per
//! device number, reached through configuration mechanism #1 (ports
//! 0xCF8 address, 0xCFC-0xCFF data) and through ECAM (memory-mapped, the
//! window the ACPI MCFG table describes). Both reach the same functions.
//!
//! Every function is single-function (function 0); everything else,
//! including other buses, reads as absent (all ones) as on real hardware.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use log::{debug, warn};

use super::config::{BarMove, PciConfig, PciIds, CONFIG_SPACE_SIZE};
use super::PciDevice;
use crate::devices::bus::BusDevice;

/// Device numbers on a bus.
const SLOTS: usize = 32;
/// Length of the port range: the address dword and the data dword.
pub const CONFIG_IO_LEN: u64 = 8;

/// Red Hat's vendor id and its PCIe host bridge device id, which guests
/// already know from QEMU; class 06 (bridge), subclass 00 (host bridge).
const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor: 0x1b36,
    device: 0x0008,
    revision: 0,
    class: 0x06_00_00,
    subsystem_vendor: 0,
    subsystem: 0,
};

/// The enable bit and the fields of the CF8 address register that exist;
/// the low two bits always read zero.
const ADDRESS_MASK: u32 = 0x80ff_fffc;
const ADDRESS_ENABLE: u32 = 1 << 31;

/// Follows the guest's BAR moves on the buses (the MMIO mapping and the
/// ioeventfds inside the BAR).
///
/// Called on the vCPU thread with the root locked but not the device, so
/// an implementation may lock the device (to read its new notify
/// addresses) but must not lock the root.
pub trait BarRelocation: Send {
    fn move_bar(&mut self, slot: u8, event: BarMove) -> io::Result<()>;
}

/// Why a device could not be added to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("all 31 device numbers of bus 0 are in use")]
    BusFull,
}

type Function = Arc<Mutex<dyn PciDevice>>;

/// Bus 0 and its functions.
pub struct PciRoot {
    slots: [Option<Function>; SLOTS],
    relocation: Option<Box<dyn BarRelocation>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus with only the host bridge at 00.0.
    pub fn new() -> Self {
        let mut slots: [Option<Function>; SLOTS] = Default::default();
        let bridge: Function = Arc::new(Mutex::new(PciConfig::new(HOST_BRIDGE_IDS, 0, 0)));
        slots[0] = Some(bridge);
        PciRoot {
            slots,
            relocation: None,
        }
    }

    /// The device number `add_device` will use next: its INTx line follows
    /// from it (`intx_gsi`), and a device needs that line when it is built.
    pub fn next_slot(&self) -> Result<u8, RootError> {
        self.slots
            .iter()
            .position(Option::is_none)
            .map(|slot| slot as u8)
            .ok_or(RootError::BusFull)
    }

    /// Puts `device` at the lowest free device number and returns it.
    pub fn add_device(&mut self, device: Function) -> Result<u8, RootError> {
        let slot = self.next_slot()?;
        self.slots[usize::from(slot)] = Some(device);
        Ok(slot)
    }

    /// Installs the handler for BAR moves; without one they are logged and
    /// the old mapping stays.
    pub fn set_relocation(&mut self, relocation: Box<dyn BarRelocation>) {
        self.relocation = Some(relocation);
    }

    fn function(&self, bus: u8, device: u8, function: u8) -> Option<&Function> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(usize::from(device))?.as_ref()
    }

    /// Reads the configuration space of bus:device.function; absent
    /// functions and malformed accesses read all ones.
    pub fn config_read(&self, bus: u8, device: u8, function: u8, offset: usize, data: &mut [u8]) {
        data.fill(0xff);
        if !access_ok(offset, data.len()) {
            return;
        }
        if let Some(f) = self.function(bus, device, function) {
            f.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .read_config(offset, data);
        }
    }

    /// Writes the configuration space of bus:device.function; writes to
    /// absent functions and malformed accesses are dropped. A BAR move is
    /// passed to the relocation handler.
    pub fn config_write(&mut self, bus: u8, device: u8, function: u8, offset: usize, data: &[u8]) {
        if !access_ok(offset, data.len()) {
            debug!(
                "pci: ignoring a {}-byte config write at {offset:#x}",
                data.len()
            );
            return;
        }
        let Some(f) = self.function(bus, device, function) else {
            return;
        };
        let moved = f
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_config(offset, data);
        let Some(event) = moved else {
            return;
        };
        match self.relocation.as_mut() {
            Some(r) => {
                if let Err(e) = r.move_bar(device, event) {
                    warn!("pci: cannot move BAR {} of device {device}: {e}", event.bar);
                }
            }
            None => warn!(
                "pci: device {device} moved BAR {} to {:#x}, which nothing follows",
                event.bar, event.new
            ),
        }
    }
}

/// 1, 2 or 4 bytes, naturally aligned, inside the 4 KiB space.
fn access_ok(offset: usize, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && offset % len == 0 && offset < CONFIG_SPACE_SIZE
}

/// Configuration mechanism #1 on the port-I/O bus at 0xCF8.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// (bus, device, function, register) the address selects, if enabled.
    fn selected(&self) -> Option<(u8, u8, u8, usize)> {
        (self.address & ADDRESS_ENABLE != 0).then_some((
            (self.address >> 16) as u8,
            ((self.address >> 11) & 0x1f) as u8,
            ((self.address >> 8) & 0x7) as u8,
            (self.address & 0xfc) as usize,
        ))
    }

    /// The config offset of a data port access, if it stays inside the
    /// data dword.
    fn data_access(&self, offset: u64, len: usize) -> Option<(u8, u8, u8, usize)> {
        let within = usize::try_from(offset.checked_sub(4)?).ok()?;
        if within.checked_add(len).is_none_or(|end| end > 4) {
            return None;
        }
        let (bus, device, function, register) = self.selected()?;
        Some((bus, device, function, register + within))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
        } else if let Some((bus, device, function, register)) = self.data_access(offset, data.len())
        {
            self.root
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .config_read(bus, device, function, register, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only a whole-dword write at 0xCF8 is an address; narrower ones
        // there belong to other mechanisms (Linux probes with a byte write
        // to 0xCFB).
        if offset == 0 {
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                self.address = u32::from_le_bytes(bytes) & ADDRESS_MASK;
            }
        } else if let Some((bus, device, function, register)) = self.data_access(offset, data.len())
        {
            self.root
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .config_write(bus, device, function, register, data);
        }
    }
}

/// ECAM on the MMIO bus: offset = bus << 20 | device << 15 | function << 12
/// | register, for the buses the window covers.
pub struct PciEcam {
    root: Arc<Mutex<PciRoot>>,
}

impl PciEcam {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciEcam { root }
    }
}

fn ecam_decode(offset: u64) -> Option<(u8, u8, u8, usize)> {
    let bus = u8::try_from(offset >> 20).ok()?;
    Some((
        bus,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
        (offset & 0xfff) as usize,
    ))
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some((bus, device, function, register)) = ecam_decode(offset) {
            self.root
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .config_read(bus, device, function, register, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, device, function, register)) = ecam_decode(offset) {
            self.root
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .config_write(bus, device, function, register, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::config::BarKind;

    fn select(io: &mut PciConfigIo, bus: u32, device: u32, function: u32, register: u32) {
        let address = ADDRESS_ENABLE | bus << 16 | device << 11 | function << 8 | register;
        io.write(0, &address.to_le_bytes());
    }

    fn io_read32(io: &mut PciConfigIo, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        io.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn ecam_read32(ecam: &mut PciEcam, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        ecam.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn ecam_offset(device: u64, function: u64, register: u64) -> u64 {
        device << 15 | function << 12 | register
    }

    const DEVICE_IDS: PciIds = PciIds {
        vendor: 0x1af4,
        device: 0x1044,
        revision: 1,
        class: 0xff_00_00,
        subsystem_vendor: 0x1af4,
        subsystem: 0x40,
    };

    struct Setup {
        root: Arc<Mutex<PciRoot>>,
        io: PciConfigIo,
        ecam: PciEcam,
    }

    fn setup() -> Setup {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mut device = PciConfig::new(DEVICE_IDS, 1, 21);
        device
            .add_bar(0, 0xc000_0000, 0x1000, BarKind::Mem32)
            .unwrap();
        let slot = root
            .lock()
            .unwrap()
            .add_device(Arc::new(Mutex::new(device)))
            .unwrap();
        assert_eq!(slot, 1);
        Setup {
            io: PciConfigIo::new(root.clone()),
            ecam: PciEcam::new(root.clone()),
            root,
        }
    }

    #[test]
    fn the_address_register_reads_back_as_linux_probes_it() {
        let Setup { mut io, .. } = setup();
        // pci_check_type1: a byte to 0xCFB, then the enable bit read back.
        io.write(3, &[0x01]);
        io.write(0, &0x8000_0000u32.to_le_bytes());
        assert_eq!(io_read32(&mut io, 0), 0x8000_0000);
        // Reserved bits and the low two bits do not stick.
        io.write(0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(io_read32(&mut io, 0), ADDRESS_MASK);
    }

    #[test]
    fn the_bridge_is_a_host_bridge_at_00_00_0() {
        let Setup { mut io, .. } = setup();
        select(&mut io, 0, 0, 0, 0);
        assert_eq!(io_read32(&mut io, 4), 0x0008_1b36);
        select(&mut io, 0, 0, 0, 0x08);
        assert_eq!(io_read32(&mut io, 4) >> 16, 0x0600);
        // A 16-bit read of the class at 0x0a, as pci_sanity_check does.
        let mut class = [0u8; 2];
        io.read(6, &mut class);
        assert_eq!(u16::from_le_bytes(class), 0x0600);
        // Single function, no BARs, no capabilities.
        select(&mut io, 0, 0, 0, 0x0c);
        assert_eq!(io_read32(&mut io, 4), 0);
        select(&mut io, 0, 0, 0, 0x10);
        io.write(4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(io_read32(&mut io, 4), 0, "BARs stay zero");
    }

    #[test]
    fn absent_functions_and_bad_accesses_read_all_ones() {
        let Setup {
            mut io, mut ecam, ..
        } = setup();
        for (bus, device, function) in [
            (0, 0, 1),
            (0, 1, 1),
            (0, 2, 0),
            (0, 31, 7),
            (1, 0, 0),
            (255, 1, 0),
        ] {
            select(&mut io, bus, device, function, 0);
            assert_eq!(io_read32(&mut io, 4), u32::MAX, "{bus}:{device}.{function}");
            // Writes to absent functions go nowhere and do not panic.
            io.write(4, &0u32.to_le_bytes());
            if bus == 0 {
                let offset = ecam_offset(device.into(), function.into(), 0);
                assert_eq!(ecam_read32(&mut ecam, offset), u32::MAX);
                ecam.write(offset, &0u32.to_le_bytes());
            }
        }
        // Without the enable bit nothing is selected.
        io.write(0, &0u32.to_le_bytes());
        assert_eq!(io_read32(&mut io, 4), u32::MAX);
        // An access crossing the end of the data dword, and narrow reads
        // of the address register, hit nothing.
        select(&mut io, 0, 0, 0, 0);
        let mut wide = [0u8; 4];
        io.read(6, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        let mut narrow = [0u8; 2];
        io.read(0, &mut narrow);
        assert_eq!(narrow, [0xff; 2]);
        let mut huge = [0u8; 8];
        io.read(4, &mut huge);
        assert_eq!(huge, [0xff; 8]);
        io.read(u64::MAX, &mut huge);
        assert_eq!(huge, [0xff; 8]);
        io.write(u64::MAX, &huge);
        // The last register of the header is reachable and in bounds.
        select(&mut io, 0, 0, 0, 0xfc);
        let mut last = [0u8; 1];
        io.read(7, &mut last);
        assert_eq!(last, [0]);
        // ECAM: misaligned, odd-sized and out-of-window accesses.
        for (offset, len) in [
            (1, 2),
            (2, 4),
            (0, 8),
            (0, 3),
            (0, 0),
            (1 << 20, 4),
            (u64::MAX, 4),
        ] {
            let mut data = vec![0u8; len];
            ecam.read(offset, &mut data);
            assert!(data.iter().all(|&b| b == 0xff), "{offset:#x}+{len}");
            ecam.write(offset, &data);
        }
    }

    #[test]
    fn cf8_and_ecam_reach_the_same_register() {
        let Setup {
            mut io, mut ecam, ..
        } = setup();
        select(&mut io, 0, 1, 0, 0);
        assert_eq!(io_read32(&mut io, 4), 0x1044_1af4);
        assert_eq!(ecam_read32(&mut ecam, ecam_offset(1, 0, 0)), 0x1044_1af4);
        // Interrupt line written through CF8, read through ECAM, and back.
        select(&mut io, 0, 1, 0, 0x3c);
        io.write(4, &[0x42]);
        assert_eq!(ecam_read32(&mut ecam, ecam_offset(1, 0, 0x3c)), 0x0142);
        ecam.write(ecam_offset(1, 0, 0x3c), &[0x17]);
        let mut line = [0u8; 1];
        io.read(4, &mut line);
        assert_eq!(line, [0x17]);
        // A word at CFE is register 0x3e.
        let mut word = [0u8; 2];
        io.read(6, &mut word);
        assert_eq!(word, [0, 0]);
        // ECAM reaches the extended space, which reads zero.
        assert_eq!(ecam_read32(&mut ecam, ecam_offset(1, 0, 0x100)), 0);
    }

    struct Recorder(Arc<Mutex<Vec<(u8, BarMove)>>>);

    impl BarRelocation for Recorder {
        fn move_bar(&mut self, slot: u8, event: BarMove) -> io::Result<()> {
            self.0.lock().unwrap().push((slot, event));
            Ok(())
        }
    }

    #[test]
    fn bar_moves_reach_the_relocation_handler() {
        let Setup {
            root,
            mut io,
            mut ecam,
        } = setup();
        // Without a handler a move is only logged.
        ecam.write(ecam_offset(1, 0, 0x10), &0xc010_0000u32.to_le_bytes());
        let moves = Arc::new(Mutex::new(Vec::new()));
        root.lock()
            .unwrap()
            .set_relocation(Box::new(Recorder(moves.clone())));
        select(&mut io, 0, 1, 0, 0x10);
        io.write(4, &u32::MAX.to_le_bytes());
        assert_eq!(io_read32(&mut io, 4), 0xffff_f000);
        io.write(4, &0xc020_0000u32.to_le_bytes());
        assert_eq!(
            *moves.lock().unwrap(),
            vec![(
                1,
                BarMove {
                    bar: 0,
                    old: 0xc010_0000,
                    new: 0xc020_0000,
                    len: 0x1000
                }
            )]
        );
    }

    #[test]
    fn the_bus_fills_up() {
        let mut root = PciRoot::new();
        for expected in 1..32u8 {
            assert_eq!(root.next_slot(), Ok(expected));
            let device = Arc::new(Mutex::new(PciConfig::new(DEVICE_IDS, 0, 0)));
            assert_eq!(root.add_device(device), Ok(expected));
        }
        let device = Arc::new(Mutex::new(PciConfig::new(DEVICE_IDS, 0, 0)));
        assert_eq!(root.add_device(device), Err(RootError::BusFull));
        assert_eq!(root.next_slot(), Err(RootError::BusFull));
    }
}
