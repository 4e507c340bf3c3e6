//! A type 0 (endpoint) configuration space: the 4 KiB a function exposes
//! through CF8/CFC and ECAM, with a writable mask per dword so a guest can
//! only change what real hardware lets it change.
//!
//! Read-only fields (ids, class, header type, capability list, BAR type
//! bits) keep their value whatever is written; the PCI Express extended
//! space (0x100..0x1000) reads 0, which says "no extended capabilities".

use log::debug;

/// Size of a function's configuration space (PCI Express).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// The conventional (PCI 3.0) part: header and capability list.
const LEGACY_CONFIG_SIZE: usize = 256;
const DWORDS: usize = CONFIG_SPACE_SIZE / 4;

const REG_ID: usize = 0x00;
const REG_COMMAND: usize = 0x04;
const REG_CLASS: usize = 0x08;
const REG_HEADER: usize = 0x0c;
const REG_BAR0: usize = 0x10;
const REG_SUBSYSTEM: usize = 0x2c;
const REG_CAPABILITIES: usize = 0x34;
const REG_INTERRUPT: usize = 0x3c;
/// The first byte free for capabilities, right after the type 0 header.
const CAPABILITIES_START: usize = 0x40;

/// The BAR slots of a type 0 header.
pub const NUM_BARS: usize = 6;

/// Command bits a guest may set: I/O and memory decoding, bus mastering,
/// parity and SERR# reporting, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_INTX_DISABLE: u32 = 1 << 10;
/// Status bit 4: the capability pointer at 0x34 is valid.
const STATUS_CAPABILITIES: u32 = 1 << 20;

/// BAR low bits: memory space, 32- or 64-bit, prefetchable.
const BAR_MEM_64: u32 = 0b100;
const BAR_PREFETCHABLE: u32 = 0b1000;
/// The smallest memory BAR the type bits leave room for.
const BAR_MIN_SIZE: u64 = 16;

/// Identity of a function, as the header's read-only fields.
#[derive(Clone, Copy, Debug)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass and programming interface, e.g. 0x06_00_00.
    pub class: u32,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// What a memory BAR decodes: a 32-bit address below 4 GiB, or a 64-bit
/// one (taking two BAR slots) anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Mem32,
    Mem64 { prefetchable: bool },
}

/// A memory BAR as the VMM maps it on the MMIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    /// Index of the (first) BAR slot, 0..6.
    pub bar: usize,
    pub addr: u64,
    pub len: u64,
    pub kind: BarKind,
}

/// The guest moved a BAR: the VMM must move its bus mapping (and any
/// ioeventfds inside it) from `old` to `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMove {
    pub bar: usize,
    pub old: u64,
    pub new: u64,
    pub len: u64,
}

/// Why a configuration space could not be laid out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("BAR {0} is out of range or already in use")]
    BarSlot(usize),
    #[error("a BAR size of {0:#x} is not a power of two of at least 16 bytes")]
    BarSize(u64),
    #[error(
        "the BAR address {addr:#x} is not aligned to its size {len:#x} or does not fit its kind"
    )]
    BarAddress { addr: u64, len: u64 },
    #[error("a capability of {0} bytes does not fit in the remaining configuration space")]
    CapabilitySpace(usize),
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    kind: BarKind,
    len: u64,
    /// The address last reported to the VMM (or given at construction):
    /// the bus mapping, which may lag the registers while the guest sizes
    /// or rewrites the BAR.
    mapped: u64,
}

/// A type 0 configuration space.
pub struct PciConfig {
    registers: [u32; DWORDS],
    writable: [u32; DWORDS],
    bars: [Option<Bar>; NUM_BARS],
    /// Where the next capability goes, and the previous one's next pointer.
    next_capability: usize,
    last_capability_next: usize,
}

impl PciConfig {
    /// A header with `ids`, no BARs, no capabilities. `interrupt_pin` is 0
    /// for none or 1..=4 for INTA#..INTD#; `interrupt_line` is what the
    /// guest reads (and may overwrite) at 0x3c.
    pub fn new(ids: PciIds, interrupt_pin: u8, interrupt_line: u8) -> Self {
        let mut config = PciConfig {
            registers: [0; DWORDS],
            writable: [0; DWORDS],
            bars: [None; NUM_BARS],
            next_capability: CAPABILITIES_START,
            last_capability_next: REG_CAPABILITIES,
        };
        config.registers[REG_ID / 4] = u32::from(ids.device) << 16 | u32::from(ids.vendor);
        config.registers[REG_CLASS / 4] = (ids.class & 0x00ff_ffff) << 8 | u32::from(ids.revision);
        // Header type 0, single function; no BIST, latency or cache line.
        config.registers[REG_HEADER / 4] = 0;
        config.registers[REG_SUBSYSTEM / 4] =
            u32::from(ids.subsystem) << 16 | u32::from(ids.subsystem_vendor);
        config.registers[REG_INTERRUPT / 4] =
            u32::from(interrupt_pin.min(4)) << 8 | u32::from(interrupt_line);
        config.writable[REG_COMMAND / 4] = COMMAND_WRITABLE;
        config.writable[REG_INTERRUPT / 4] = 0xff;
        config
    }

    /// Adds a memory BAR of `len` bytes (a power of two) at `addr` (aligned
    /// to `len`, as the resource allocator hands out). A 64-bit BAR also
    /// takes slot `bar + 1`.
    pub fn add_bar(
        &mut self,
        bar: usize,
        addr: u64,
        len: u64,
        kind: BarKind,
    ) -> Result<BarRegion, ConfigError> {
        let slots = match kind {
            BarKind::Mem32 => 1,
            BarKind::Mem64 { .. } => 2,
        };
        let free = |i: usize| self.bars.get(i).is_some_and(Option::is_none) && !self.is_upper(i);
        if !(bar..bar + slots).all(free) {
            return Err(ConfigError::BarSlot(bar));
        }
        let limit = match kind {
            BarKind::Mem32 => 1 << 32,
            BarKind::Mem64 { .. } => u64::MAX,
        };
        if !len.is_power_of_two() || len < BAR_MIN_SIZE || len > limit {
            return Err(ConfigError::BarSize(len));
        }
        if addr % len != 0 || addr.checked_add(len - 1).is_none_or(|end| end >= limit) {
            return Err(ConfigError::BarAddress { addr, len });
        }
        let mask = !(len - 1);
        let reg = REG_BAR0 / 4 + bar;
        let flags = match kind {
            BarKind::Mem32 => 0,
            BarKind::Mem64 { prefetchable } => {
                BAR_MEM_64 | if prefetchable { BAR_PREFETCHABLE } else { 0 }
            }
        };
        self.registers[reg] = addr as u32 | flags;
        self.writable[reg] = mask as u32 & !0xf;
        if slots == 2 {
            self.registers[reg + 1] = (addr >> 32) as u32;
            self.writable[reg + 1] = (mask >> 32) as u32;
        }
        self.bars[bar] = Some(Bar {
            kind,
            len,
            mapped: addr,
        });
        Ok(BarRegion {
            bar,
            addr,
            len,
            kind,
        })
    }

    /// Whether slot `i` is the upper half of a 64-bit BAR.
    fn is_upper(&self, i: usize) -> bool {
        i.checked_sub(1)
            .and_then(|lower| self.bars.get(lower).copied().flatten())
            .is_some_and(|b| matches!(b.kind, BarKind::Mem64 { .. }))
    }

    /// The BARs as currently mapped.
    pub fn bars(&self) -> Vec<BarRegion> {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(bar, b)| {
                b.map(|b| BarRegion {
                    bar,
                    addr: b.mapped,
                    len: b.len,
                    kind: b.kind,
                })
            })
            .collect()
    }

    /// Appends a capability. `body` is everything after the id and next
    /// pointer bytes; the list is kept linked. Returns the capability's
    /// offset, where its id byte is.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, ConfigError> {
        let len = body.len() + 2;
        let start = self.next_capability;
        if start + len > LEGACY_CONFIG_SIZE {
            return Err(ConfigError::CapabilitySpace(len));
        }
        self.set_byte(start, id);
        self.set_byte(start + 1, 0);
        for (i, &b) in body.iter().enumerate() {
            self.set_byte(start + 2 + i, b);
        }
        self.set_byte(self.last_capability_next, start as u8);
        self.last_capability_next = start + 1;
        self.next_capability = (start + len).next_multiple_of(4);
        self.registers[REG_COMMAND / 4] |= STATUS_CAPABILITIES;
        Ok(start)
    }

    /// Lets the guest change the bits of `mask` in the dword at `offset`
    /// (rounded down to a dword), for capability fields it may write.
    pub fn set_writable(&mut self, offset: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(offset / 4) {
            *w |= mask;
        }
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        let reg = &mut self.registers[offset / 4];
        *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
    }

    /// The dword at `offset` (rounded down); 0 beyond the space.
    pub fn read_u32(&self, offset: usize) -> u32 {
        self.registers.get(offset / 4).copied().unwrap_or(0)
    }

    /// The word at `offset` (which must not cross a dword); 0 beyond.
    pub fn read_u16(&self, offset: usize) -> u16 {
        (self.read_u32(offset) >> ((offset % 4) * 8)) as u16
    }

    /// The command register's memory space enable bit.
    pub fn memory_enabled(&self) -> bool {
        self.registers[REG_COMMAND / 4] & COMMAND_MEMORY != 0
    }

    /// The command register's INTx disable bit: the function must not
    /// assert INTx (Linux sets it when it turns MSI-X on).
    pub fn intx_disabled(&self) -> bool {
        self.registers[REG_COMMAND / 4] & COMMAND_INTX_DISABLE != 0
    }

    /// Whether a write of `len` bytes at `offset` touched the command
    /// register.
    pub fn command_written(offset: usize, len: usize) -> bool {
        offset < REG_COMMAND + 2 && REG_COMMAND < offset + len
    }

    /// Reads `data.len()` bytes at `offset`. Only 1, 2 and 4-byte accesses
    /// that do not cross a dword and stay inside the space are served;
    /// anything else reads all ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        let Some(shift) = access(offset, data.len()) else {
            data.fill(0xff);
            return;
        };
        let value = self.registers[offset / 4] >> shift;
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    /// Writes the writable bits among `data.len()` bytes at `offset`, with
    /// the same access rules as `read` (anything else is dropped). Returns
    /// the BAR move the write completed, if any.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Option<BarMove> {
        let Some(shift) = access(offset, data.len()) else {
            debug!(
                "pci: ignoring a {}-byte config write at {offset:#x}",
                data.len()
            );
            return None;
        };
        let mut bytes = [0u8; 4];
        bytes[..data.len()].copy_from_slice(data);
        let lanes = (u64::from(u32::MAX) >> (32 - 8 * data.len())) as u32;
        let index = offset / 4;
        let mask = self.writable[index] & (lanes << shift);
        let value = u32::from_le_bytes(bytes) << shift;
        self.registers[index] = (self.registers[index] & !mask) | (value & mask);
        let bar = index.checked_sub(REG_BAR0 / 4).filter(|&b| b < NUM_BARS)?;
        self.bar_written(bar)
    }

    /// After a write to BAR slot `slot`: a move to report, unless the write
    /// was a sizing probe (all address bits set), the lower half of a
    /// 64-bit BAR (reported once the upper half follows, as Linux writes
    /// them) or left the address as mapped.
    fn bar_written(&mut self, slot: usize) -> Option<BarMove> {
        let reg = REG_BAR0 / 4 + slot;
        let is_sizing = |r: usize| {
            let mask = self.writable[r];
            mask != 0 && self.registers[r] & mask == mask
        };
        let (bar, regs) = if self.is_upper(slot) {
            (slot - 1, [reg - 1, reg])
        } else {
            match self.bars[slot]?.kind {
                BarKind::Mem32 => (slot, [reg, reg]),
                BarKind::Mem64 { .. } => return None,
            }
        };
        if regs.iter().any(|&r| is_sizing(r)) {
            return None;
        }
        let entry = self.bars[bar].as_mut()?;
        let low = u64::from(self.registers[regs[0]] & !0xf);
        let new = match entry.kind {
            BarKind::Mem32 => low,
            BarKind::Mem64 { .. } => u64::from(self.registers[regs[1]]) << 32 | low,
        };
        if new == entry.mapped {
            return None;
        }
        let event = BarMove {
            bar,
            old: entry.mapped,
            new,
            len: entry.len,
        };
        entry.mapped = new;
        Some(event)
    }
}

/// The bit shift of an access of `len` bytes at `offset` inside its dword,
/// if it is a 1, 2 or 4-byte access, naturally aligned, inside the space.
fn access(offset: usize, len: usize) -> Option<u32> {
    let aligned = matches!(len, 1 | 2 | 4) && offset % len == 0;
    (aligned && offset < CONFIG_SPACE_SIZE).then_some((offset % 4) as u32 * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const IDS: PciIds = PciIds {
        vendor: 0x1af4,
        device: 0x1044,
        revision: 1,
        class: 0xff_00_00,
        subsystem_vendor: 0x1af4,
        subsystem: 0x40,
    };

    fn read32(c: &PciConfig, offset: usize) -> u32 {
        let mut d = [0u8; 4];
        c.read(offset, &mut d);
        u32::from_le_bytes(d)
    }

    fn write32(c: &mut PciConfig, offset: usize, v: u32) -> Option<BarMove> {
        c.write(offset, &v.to_le_bytes())
    }

    #[test]
    fn header_fields_are_read_only() {
        let mut c = PciConfig::new(IDS, 1, 20);
        assert_eq!(read32(&c, 0), 0x1044_1af4);
        assert_eq!(read32(&c, 8), 0xff00_0001);
        assert_eq!(read32(&c, 0x2c), 0x0040_1af4);
        assert_eq!(read32(&c, 0x3c), 0x0114);
        for offset in (0..0x40).step_by(4).filter(|&o| !(0x10..0x28).contains(&o)) {
            let before = read32(&c, offset);
            write32(&mut c, offset, 0xffff_ffff);
            let after = read32(&c, offset);
            let mask = match offset {
                0x04 => COMMAND_WRITABLE,
                0x3c => 0xff,
                _ => 0,
            };
            assert_eq!(after & !mask, before & !mask, "offset {offset:#x}");
        }
        // Interrupt line is writable byte-wise, the pin is not.
        c.write(0x3c, &[7]);
        c.write(0x3d, &[3]);
        assert_eq!(read32(&c, 0x3c), 0x0107);
        c.write(0x04, &0u16.to_le_bytes());
        assert!(!c.memory_enabled());
        c.write(0x04, &0x0002u16.to_le_bytes());
        assert!(c.memory_enabled());
        assert!(!c.intx_disabled());
        c.write(0x05, &[0x04]);
        assert!(c.intx_disabled());
        assert!(PciConfig::command_written(0x04, 4));
        assert!(PciConfig::command_written(0x05, 1));
        assert!(!PciConfig::command_written(0x06, 2));
        assert!(!PciConfig::command_written(0x00, 4));
    }

    #[test]
    fn bad_accesses_read_all_ones_and_write_nothing() {
        let mut c = PciConfig::new(IDS, 1, 20);
        for (offset, len) in [
            (1, 2),
            (2, 4),
            (3, 2),
            (0, 3),
            (0, 8),
            (0, 0),
            (4096, 1),
            (usize::MAX, 4),
        ] {
            let mut d = vec![0u8; len];
            c.read(offset, &mut d);
            assert!(d.iter().all(|&b| b == 0xff), "{offset:#x}+{len}");
            assert_eq!(c.write(offset, &vec![0xffu8; len]), None);
        }
        c.write(0x3d, &[0xff, 0xff]);
        assert_eq!(
            read32(&c, 0x3c),
            0x0114,
            "a misaligned word write is dropped"
        );
        // Narrow reads return the right lanes.
        let mut b = [0u8; 1];
        c.read(1, &mut b);
        assert_eq!(b, [0x1a]);
        let mut w = [0u8; 2];
        c.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1044);
    }

    #[test]
    fn extended_space_reads_zero() {
        let mut c = PciConfig::new(IDS, 0, 0);
        write32(&mut c, 0x100, 0xffff_ffff);
        assert_eq!(read32(&c, 0x100), 0);
        assert_eq!(read32(&c, 0xffc), 0);
        assert_eq!(read32(&c, 0x30), 0, "no expansion ROM");
        write32(&mut c, 0x30, 0xffff_f800);
        assert_eq!(read32(&c, 0x30), 0);
    }

    #[test]
    fn bars_size_like_hardware() {
        let mut c = PciConfig::new(IDS, 0, 0);
        c.add_bar(0, 0xc000_0000, 0x1000, BarKind::Mem32).unwrap();
        c.add_bar(
            2,
            0x1_0000_0000,
            0x8000,
            BarKind::Mem64 { prefetchable: true },
        )
        .unwrap();
        assert_eq!(read32(&c, 0x10), 0xc000_0000);
        assert_eq!(read32(&c, 0x18), 0x0000_000c);
        assert_eq!(read32(&c, 0x1c), 1);
        // Sizing: all ones, read back the mask with the type bits.
        assert_eq!(write32(&mut c, 0x10, u32::MAX), None);
        assert_eq!(read32(&c, 0x10), 0xffff_f000);
        assert_eq!(write32(&mut c, 0x10, 0xc000_0000), None, "restored");
        assert_eq!(write32(&mut c, 0x18, u32::MAX), None);
        assert_eq!(write32(&mut c, 0x1c, u32::MAX), None);
        assert_eq!(read32(&c, 0x18), 0xffff_800c);
        assert_eq!(read32(&c, 0x1c), 0xffff_ffff);
        assert_eq!(write32(&mut c, 0x18, 0x0000_0000), None);
        assert_eq!(write32(&mut c, 0x1c, 1), None, "restored, nothing moved");
        // Unused slots and the slot above a 64-bit BAR's upper half.
        for offset in [0x14, 0x20, 0x24] {
            write32(&mut c, offset, u32::MAX);
            assert_eq!(read32(&c, offset), 0, "{offset:#x}");
        }
        // Low address bits are hardwired to zero.
        write32(&mut c, 0x10, 0xc000_0fff);
        assert_eq!(read32(&c, 0x10), 0xc000_0000);
    }

    #[test]
    fn moving_a_bar_reports_the_move_once() {
        let mut c = PciConfig::new(IDS, 0, 0);
        c.add_bar(0, 0xc000_0000, 0x1000, BarKind::Mem32).unwrap();
        c.add_bar(
            1,
            0x1_0000_0000,
            0x8000,
            BarKind::Mem64 {
                prefetchable: false,
            },
        )
        .unwrap();
        assert_eq!(
            write32(&mut c, 0x10, 0xc010_0000),
            Some(BarMove {
                bar: 0,
                old: 0xc000_0000,
                new: 0xc010_0000,
                len: 0x1000
            })
        );
        assert_eq!(write32(&mut c, 0x10, 0xc010_0000), None);
        // 64-bit: the low half alone does not move it, the high half does.
        assert_eq!(write32(&mut c, 0x14, 0x0001_0000), None);
        assert_eq!(
            write32(&mut c, 0x18, 2),
            Some(BarMove {
                bar: 1,
                old: 0x1_0000_0000,
                new: 0x2_0001_0000,
                len: 0x8000
            })
        );
        assert_eq!(c.bars()[1].addr, 0x2_0001_0000);
        // Byte writes reach BARs too.
        assert!(c.write(0x13, &[0xd0]).is_some());
        assert_eq!(c.bars()[0].addr, 0xd010_0000);
    }

    #[test]
    fn bar_layout_is_checked() {
        let mut c = PciConfig::new(IDS, 0, 0);
        assert_eq!(
            c.add_bar(6, 0, 0x1000, BarKind::Mem32),
            Err(ConfigError::BarSlot(6))
        );
        assert_eq!(
            c.add_bar(
                5,
                0,
                0x1000,
                BarKind::Mem64 {
                    prefetchable: false
                }
            ),
            Err(ConfigError::BarSlot(5))
        );
        assert_eq!(
            c.add_bar(0, 0, 0x1800, BarKind::Mem32),
            Err(ConfigError::BarSize(0x1800))
        );
        assert_eq!(
            c.add_bar(0, 0, 8, BarKind::Mem32),
            Err(ConfigError::BarSize(8))
        );
        assert_eq!(
            c.add_bar(0, 0x800, 0x1000, BarKind::Mem32),
            Err(ConfigError::BarAddress {
                addr: 0x800,
                len: 0x1000
            })
        );
        assert_eq!(
            c.add_bar(0, 0x1_0000_0000, 0x1000, BarKind::Mem32),
            Err(ConfigError::BarAddress {
                addr: 0x1_0000_0000,
                len: 0x1000
            })
        );
        c.add_bar(
            0,
            0,
            0x1000,
            BarKind::Mem64 {
                prefetchable: false,
            },
        )
        .unwrap();
        assert_eq!(
            c.add_bar(1, 0, 0x1000, BarKind::Mem32),
            Err(ConfigError::BarSlot(1))
        );
        assert_eq!(
            c.add_bar(0, 0, 0x1000, BarKind::Mem32),
            Err(ConfigError::BarSlot(0))
        );
    }

    #[test]
    fn capabilities_are_linked_and_flagged() {
        let mut c = PciConfig::new(IDS, 0, 0);
        assert_eq!(read32(&c, 0x04) & STATUS_CAPABILITIES, 0);
        let first = c.add_capability(0x09, &[14, 1, 2, 3, 4, 5]).unwrap();
        let second = c.add_capability(0x11, &[0; 10]).unwrap();
        assert_eq!((first, second), (0x40, 0x48));
        assert_eq!(read32(&c, 0x04) & STATUS_CAPABILITIES, STATUS_CAPABILITIES);
        assert_eq!(read32(&c, 0x34) & 0xff, 0x40);
        assert_eq!(read32(&c, 0x40), 0x010e_4809);
        assert_eq!(read32(&c, 0x48) & 0xffff, 0x0011);
        // Capabilities are read-only until a field is made writable.
        write32(&mut c, 0x48, u32::MAX);
        assert_eq!(read32(&c, 0x48), 0x0000_0011);
        c.set_writable(0x48, 0xc000_0000);
        write32(&mut c, 0x48, u32::MAX);
        assert_eq!(read32(&c, 0x48), 0xc000_0011);
        assert_eq!(c.read_u16(0x4a), 0xc000);
        assert_eq!(
            c.add_capability(0x09, &[0; 200]),
            Err(ConfigError::CapabilitySpace(202))
        );
    }
}
