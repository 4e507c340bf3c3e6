//! The PCI host bridge on bus 0, reached through configuration mechanism
//! #1 (ports 0xCF8 address, 0xCFC-0xCFF data). A kernel built with PCI
//! finds a sane bus here instead of reporting "No config space access
//! function found"; the bridge is the only function, and every other
//! bus/device/function reads as absent (all ones), as on real hardware.

use super::bus::BusDevice;

/// Length of the port range: the address dword and the data dword.
pub const PORT_LEN: u64 = 8;

/// Red Hat's vendor id and its PCIe host bridge device id, which guests
/// already know from QEMU.
const VENDOR_ID: u16 = 0x1b36;
const DEVICE_ID: u16 = 0x0008;
/// Base class 06 (bridge), subclass 00 (host bridge).
const CLASS_HOST_BRIDGE: u16 = 0x0600;

/// The enable bit and the fields of the address register that exist; the
/// low two bits always read zero.
const ADDRESS_MASK: u32 = 0x80ff_fffc;
const ENABLE: u32 = 1 << 31;

pub struct PciHostBridge {
    address: u32,
    /// The bridge's 256-byte type 0 header; read-only, as nothing in it is
    /// configurable (no BARs, no interrupt, no capabilities).
    config: [u8; 256],
}

impl Default for PciHostBridge {
    fn default() -> Self {
        let mut config = [0u8; 256];
        config[0x00..0x02].copy_from_slice(&VENDOR_ID.to_le_bytes());
        config[0x02..0x04].copy_from_slice(&DEVICE_ID.to_le_bytes());
        config[0x0a..0x0c].copy_from_slice(&CLASS_HOST_BRIDGE.to_le_bytes());
        PciHostBridge { address: 0, config }
    }
}

impl PciHostBridge {
    /// The register the current address selects, as (offset in the
    /// bridge's config space) when it names the bridge itself.
    fn selected(&self) -> Option<usize> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let devfn = (self.address >> 8) & 0xff;
        (bus == 0 && devfn == 0).then_some((self.address & 0xfc) as usize)
    }
}

impl BusDevice for PciHostBridge {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => {
                let within = (offset - 4) as usize;
                // An access must stay inside the data dword.
                if within + data.len() > 4 {
                    return;
                }
                if let Some(register) = self.selected() {
                    let start = register + within;
                    data.copy_from_slice(&self.config[start..start + data.len()]);
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only a whole-dword write at 0xCF8 is an address; narrower ones
        // there are other mechanisms' registers, and the bridge's header
        // has nothing writable.
        if offset == 0 {
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                self.address = u32::from_le_bytes(bytes) & ADDRESS_MASK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(dev: &mut PciHostBridge, bus: u32, devfn: u32, register: u32) {
        dev.write(
            0,
            &(ENABLE | bus << 16 | devfn << 8 | register).to_le_bytes(),
        );
    }

    fn read_u32(dev: &mut PciHostBridge, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        dev.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn the_address_register_reads_back_as_linux_probes_it() {
        let mut dev = PciHostBridge::default();
        // pci_check_type1: a byte to 0xCFB, then the enable bit read back.
        dev.write(3, &[0x01]);
        dev.write(0, &0x8000_0000u32.to_le_bytes());
        assert_eq!(read_u32(&mut dev, 0), 0x8000_0000);
        // Reserved bits and the low two bits do not stick.
        dev.write(0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read_u32(&mut dev, 0), ADDRESS_MASK);
    }

    #[test]
    fn the_bridge_is_a_host_bridge_at_00_00_0() {
        let mut dev = PciHostBridge::default();
        select(&mut dev, 0, 0, 0);
        assert_eq!(read_u32(&mut dev, 4), 0x0008_1b36);
        select(&mut dev, 0, 0, 0x08);
        assert_eq!(read_u32(&mut dev, 4) >> 16, u32::from(CLASS_HOST_BRIDGE));
        // A 16-bit read of the class at 0x0a, as pci_sanity_check does.
        let mut class = [0u8; 2];
        dev.read(6, &mut class);
        assert_eq!(u16::from_le_bytes(class), CLASS_HOST_BRIDGE);
        // Single function, no BARs, no capabilities.
        select(&mut dev, 0, 0, 0x0c);
        assert_eq!(read_u32(&mut dev, 4), 0);
        select(&mut dev, 0, 0, 0x10);
        dev.write(4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read_u32(&mut dev, 4), 0, "BARs stay zero");
    }

    #[test]
    fn absent_functions_and_bad_accesses_read_all_ones() {
        let mut dev = PciHostBridge::default();
        for (bus, devfn) in [(0, 1), (0, 8), (1, 0), (255, 255)] {
            select(&mut dev, bus, devfn, 0);
            assert_eq!(read_u32(&mut dev, 4), 0xffff_ffff, "{bus}:{devfn}");
        }
        // Without the enable bit nothing is selected.
        dev.write(0, &0u32.to_le_bytes());
        assert_eq!(read_u32(&mut dev, 4), 0xffff_ffff);
        // An access crossing the end of the data dword, and narrow
        // reads of the address register, hit nothing.
        select(&mut dev, 0, 0, 0);
        let mut wide = [0u8; 4];
        dev.read(6, &mut wide);
        assert_eq!(wide, [0xff; 4]);
        let mut narrow = [0u8; 2];
        dev.read(0, &mut narrow);
        assert_eq!(narrow, [0xff; 2]);
        // The last register of the header is reachable and in bounds.
        select(&mut dev, 0, 0, 0xfc);
        let mut last = [0u8; 1];
        dev.read(7, &mut last);
        assert_eq!(last, [0]);
    }
}
