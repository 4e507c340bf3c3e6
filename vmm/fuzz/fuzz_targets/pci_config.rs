//! The PCI root complex's configuration mechanisms against a hostile
//! guest: the 0xCF8/0xCFC ports and the ECAM window, reaching a host
//! bridge and one or two virtio-rng functions, with BAR sizing and moves
//! followed by a relocation handler that checks every move.
//!
//! Input: a setup byte (bit 0: a second function), then ops, each a tag
//! byte and its fields (little endian, missing bytes read as zero):
//!
//! ```text
//! 0 address   devfn u8, register u8, flags u8 (bit 0 clears the enable
//!             bit, bit 1 selects bus 1): a dword to 0xCF8
//! 1 io read   port offset u8 (0..9), size u8
//! 2 io write  port offset u8 (0..9), size u8, value u64
//! 3 ecam read devfn u8, register u16 (bit 15: bus 1), size u8
//! 4 ecam write devfn u8, register u16, size u8, value u64
//! 5 bar size  device u8, bar u8: all ones to the BAR, read back, restore
//! 6 bar move  device u8, bar u8, flags u8 (bit 0: through ECAM), u64
//!             address: low dword then high dword
//! 7 absent    device u8, function u8: the vendor id of an absent
//!             function reads 0xffff through both mechanisms
//! ```
//!
//! Checked besides: every read of a vendor id gives the function's vendor
//! or, for an absent one, all ones; every BAR move starts where the BAR
//! was mapped, ends elsewhere, aligned, with the BAR's length; at the end
//! each function's BAR is where the handler followed it.
//!
//! devfn is device << 3 | function; a size selector picks from 1, 2, 3,
//! 4 and 8 bytes.
#![no_main]

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use keel_vmm::devices::bus::BusDevice;
use keel_vmm::devices::pci::{BarMove, BarRelocation, PciConfigIo, PciEcam, PciRoot};
use keel_vmm::devices::virtio::pci::BAR_SIZE;
use keel_vmm::devices::virtio::VirtioPciDevice;
use keel_vmm_fuzz::pci::{size, RngFunction};
use keel_vmm_fuzz::{guest_memory, Input};
use libfuzzer_sys::fuzz_target;

/// Where the functions' BARs start: above 4 GiB, as the allocator puts
/// 64-bit BARs.
const BAR_BASE: u64 = 0x1_0000_0000;
const REG_BAR0: u32 = 0x10;
const ADDRESS_ENABLE: u32 = 1 << 31;
const MAX_OPS: usize = 256;
const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
const VIRTIO_VENDOR: u16 = 0x1af4;

/// BAR moves as the VMM would follow them: checks each against the
/// mapping it last followed.
struct Relocation {
    /// (slot, bar) to the address it is mapped at.
    mapped: Arc<Mutex<HashMap<(u8, usize), u64>>>,
}

impl BarRelocation for Relocation {
    fn move_bar(&mut self, slot: u8, event: BarMove) -> io::Result<()> {
        let mut mapped = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        let old = mapped.get_mut(&(slot, event.bar)).unwrap_or_else(|| {
            panic!("a move of BAR {} of slot {slot}, which has none", event.bar)
        });
        assert_eq!(event.old, *old, "a move from where the BAR was not mapped");
        assert_ne!(event.new, event.old, "a move to where the BAR already is");
        assert_eq!(event.len, BAR_SIZE, "a move with another length");
        assert_eq!(event.new % event.len, 0, "a move to an unaligned address");
        *old = event.new;
        Ok(())
    }
}

struct Bus {
    io: PciConfigIo,
    ecam: PciEcam,
    functions: Vec<Arc<Mutex<VirtioPciDevice>>>,
    mapped: Arc<Mutex<HashMap<(u8, usize), u64>>>,
}

impl Bus {
    fn new(count: usize) -> Self {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mapped = Arc::new(Mutex::new(HashMap::new()));
        let mut functions = Vec::new();
        let mem = guest_memory();
        for i in 0..count {
            let bar = BAR_BASE + i as u64 * BAR_SIZE;
            let function = Arc::new(Mutex::new(
                RngFunction::new(mem.clone(), bar, 20 + i as u8).device,
            ));
            let mut root = root.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = root.add_device(function.clone()).expect("a free slot");
            mapped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((slot, 0), bar);
            functions.push(function);
        }
        root.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_relocation(Box::new(Relocation {
                mapped: mapped.clone(),
            }));
        Bus {
            io: PciConfigIo::new(root.clone()),
            ecam: PciEcam::new(root),
            functions,
            mapped,
        }
    }

    /// Whether device `device`, function `function` of bus 0 exists.
    fn present(&self, device: u8, function: u8) -> bool {
        function == 0 && usize::from(device) <= self.functions.len()
    }

    fn select(&mut self, bus: u32, devfn: u8, register: u32) {
        let address = ADDRESS_ENABLE | bus << 16 | u32::from(devfn) << 8 | register;
        self.io.write(0, &address.to_le_bytes());
    }

    fn ecam_offset(bus: u64, devfn: u8, register: u64) -> u64 {
        bus << 20 | u64::from(devfn) << 12 | register
    }

    fn io_read32(&mut self, port: u64) -> u32 {
        let mut data = [0u8; 4];
        self.io.read(port, &mut data);
        u32::from_le_bytes(data)
    }

    fn ecam_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.ecam.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// A dword through ECAM or CF8/CFC.
    fn write32(&mut self, ecam: bool, devfn: u8, register: u32, value: u32) {
        if ecam {
            let offset = Self::ecam_offset(0, devfn, u64::from(register));
            self.ecam.write(offset, &value.to_le_bytes());
        } else {
            self.select(0, devfn, register);
            self.io.write(4, &value.to_le_bytes());
        }
    }

    /// A read that covered a vendor id: all ones if the function is absent
    /// (every function of another bus is), the function's vendor if not.
    fn check_vendor(&self, bus: u64, devfn: u8, register: u64, data: &[u8]) {
        let (device, function) = (devfn >> 3, devfn & 7);
        let present = bus == 0 && self.present(device, function);
        if register != 0 || data.len() < 2 {
            return;
        }
        if !present {
            assert!(
                data.iter().all(|&b| b == 0xff),
                "absent {bus:02x}:{device:02x}.{function} read {data:02x?}"
            );
        } else if matches!(data.len(), 2 | 4) {
            let vendor = u16::from_le_bytes([data[0], data[1]]);
            let expected = if device == 0 {
                HOST_BRIDGE_VENDOR
            } else {
                VIRTIO_VENDOR
            };
            assert_eq!(vendor, expected, "vendor id of 00:{device:02x}.0");
        }
    }

    fn step(&mut self, tag: u8, input: &mut Input) {
        match tag % 8 {
            0 => {
                let (devfn, register, flags) = (input.u8(), input.u8(), input.u8());
                let bus = u32::from(flags >> 1 & 1);
                let mut address = bus << 16 | u32::from(devfn) << 8 | u32::from(register);
                if flags & 1 == 0 {
                    address |= ADDRESS_ENABLE;
                }
                self.io.write(0, &address.to_le_bytes());
            }
            1 => {
                let port = u64::from(input.u8() % 9);
                let mut data = vec![0u8; size(input.u8())];
                self.io.read(port, &mut data);
                let address = self.io_read32(0);
                if port == 4 && address & ADDRESS_ENABLE != 0 {
                    let devfn = (address >> 8) as u8;
                    let bus = u64::from(address >> 16 & 0xff);
                    self.check_vendor(bus, devfn, u64::from(address & 0xff), &data);
                }
            }
            2 => {
                let port = u64::from(input.u8() % 9);
                let len = size(input.u8());
                let value = input.u64().to_le_bytes();
                self.io.write(port, &value[..len]);
            }
            3 => {
                let devfn = input.u8();
                let register = input.u16();
                let bus = u64::from(register >> 15);
                let register = u64::from(register) & 0xfff;
                let mut data = vec![0u8; size(input.u8())];
                self.ecam
                    .read(Self::ecam_offset(bus, devfn, register), &mut data);
                self.check_vendor(bus, devfn, register, &data);
            }
            4 => {
                let devfn = input.u8();
                let register = input.u16();
                let bus = u64::from(register >> 15);
                let register = u64::from(register) & 0xfff;
                let len = size(input.u8());
                let value = input.u64().to_le_bytes();
                self.ecam
                    .write(Self::ecam_offset(bus, devfn, register), &value[..len]);
            }
            5 => {
                // Sizing as Linux does it: save, all ones, read the mask,
                // restore; the restore is no move.
                let devfn = (input.u8() % 32) << 3;
                let register = REG_BAR0 + 4 * u32::from(input.u8() % 6);
                let offset = Self::ecam_offset(0, devfn, u64::from(register));
                let saved = self.ecam_read32(offset);
                self.select(0, devfn, register);
                self.io.write(4, &u32::MAX.to_le_bytes());
                let mask = self.io_read32(4);
                if mask != 0 && mask != u32::MAX {
                    assert_eq!(mask & 0xf, saved & 0xf, "sizing changed the BAR type");
                }
                self.io.write(4, &saved.to_le_bytes());
            }
            6 => {
                let devfn = (input.u8() % 32) << 3;
                let register = REG_BAR0 + 4 * u32::from(input.u8() % 6);
                let ecam = input.u8() & 1 != 0;
                let addr = input.u64();
                self.write32(ecam, devfn, register, addr as u32);
                self.write32(ecam, devfn, register + 4, (addr >> 32) as u32);
            }
            _ => {
                let device = input.u8() % 32;
                let function = input.u8() % 8;
                if self.present(device, function) {
                    return;
                }
                let devfn = device << 3 | function;
                self.select(0, devfn, 0);
                let mut vendor = [0u8; 2];
                self.io.read(4, &mut vendor);
                assert_eq!(
                    vendor, [0xff; 2],
                    "absent 00:{device:02x}.{function} via CF8"
                );
                let offset = Self::ecam_offset(0, devfn, 0);
                self.ecam.read(offset, &mut vendor);
                assert_eq!(
                    vendor, [0xff; 2],
                    "absent 00:{device:02x}.{function} via ECAM"
                );
            }
        }
    }

    /// Each function's own idea of where its BAR is matches the mapping
    /// the relocation handler followed.
    fn check_mappings(&self) {
        let mapped = self.mapped.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, function) in self.functions.iter().enumerate() {
            let bars = function
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .bars();
            let slot = i as u8 + 1;
            assert_eq!(bars.len(), 1, "slot {slot} has one BAR");
            assert_eq!(
                Some(&bars[0].addr),
                mapped.get(&(slot, bars[0].bar)),
                "slot {slot}: the device and the bus mapping disagree"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut bus = Bus::new(1 + usize::from(input.u8() & 1));
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let tag = input.u8();
        bus.step(tag, &mut input);
    }
    bus.check_mappings();
});
