//! MSI-X: the capability in configuration space, and the vector table and
//! pending bit array (PBA) a BAR exposes.
//!
//! The table only holds what the guest programmed; delivery goes through
//! [`MsiRoutes`], which the VMM implements with KVM GSI routes and one
//! irqfd per vector. Routes follow the table: a vector has a route
//! (`Some(message)`) while MSI-X is enabled, the function is unmasked and
//! the vector is unmasked, and none otherwise. A vector triggered while
//! masked sets its pending bit and fires when it is unmasked.

use std::io;
use std::sync::Arc;

use log::{debug, warn};

use super::config::{ConfigError, PciConfig};

/// The MSI-X capability id.
const CAP_ID: u8 = 0x11;
/// The most vectors a function may have (table size field is N - 1).
pub const MAX_VECTORS: u16 = 2048;
/// Size of a table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enable and function mask.
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: the per-vector mask, the only bit that exists.
const VECTOR_MASKED: u32 = 1;

/// An MSI message: what the device writes, and where, to interrupt a CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivery of MSI-X vectors, implemented by the VMM (KVM_SET_GSI_ROUTING
/// with one GSI per vector, and one irqfd per GSI).
pub trait MsiRoutes: Send + Sync {
    /// Points `vector`'s route at `message`, or removes it (`None`) while
    /// the vector cannot fire (MSI-X disabled, function or vector masked).
    fn update(&self, vector: u16, message: Option<MsiMessage>) -> io::Result<()>;

    /// Sends `vector`'s message once (writes its irqfd).
    fn trigger(&self, vector: u16) -> io::Result<()>;
}

/// What became of a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The message was sent.
    Fired,
    /// The function or the vector is masked: the pending bit is set.
    Pending,
    /// MSI-X is disabled: the caller falls back to INTx.
    Disabled,
    /// There is no such vector; nothing happened.
    NoVector,
}

/// Where the MSI-X capability sits in configuration space, and where it
/// says the table and PBA are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset of the capability in configuration space.
    pub offset: usize,
    pub bar: u8,
    /// Offsets of the table and PBA inside the BAR (8-byte aligned).
    pub table_offset: u32,
    pub pba_offset: u32,
}

impl MsixCap {
    /// Adds the capability for `vectors` vectors (1..=2048), with the table
    /// and PBA in BAR `bar` at the given offsets, to `config`; message
    /// control's enable and function mask bits become writable.
    pub fn add_to(
        config: &mut PciConfig,
        vectors: u16,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> Result<Self, ConfigError> {
        let control = vectors.clamp(1, MAX_VECTORS) - 1;
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&control.to_le_bytes());
        body.extend_from_slice(&(table_offset & !7 | u32::from(bar & 7)).to_le_bytes());
        body.extend_from_slice(&(pba_offset & !7 | u32::from(bar & 7)).to_le_bytes());
        let offset = config.add_capability(CAP_ID, &body)?;
        // Capabilities are dword aligned: message control is the upper
        // half of the first dword.
        config.set_writable(
            offset,
            u32::from(CONTROL_ENABLE | CONTROL_FUNCTION_MASK) << 16,
        );
        Ok(MsixCap {
            offset,
            bar,
            table_offset: table_offset & !7,
            pba_offset: pba_offset & !7,
        })
    }

    /// Whether a config write of `len` bytes at `offset` touched message
    /// control, so the caller passes `control(config)` to `Msix`.
    pub fn control_written(&self, offset: usize, len: usize) -> bool {
        let control = self.offset + 2;
        offset < control + 2 && control < offset + len
    }

    /// Message control as the guest left it.
    pub fn control(&self, config: &PciConfig) -> u16 {
        config.read_u16(self.offset + 2)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    message: MsiMessage,
    control: u32,
}

impl Entry {
    fn masked(&self) -> bool {
        self.control & VECTOR_MASKED != 0
    }
}

/// Every vector starts masked, as after a PCI reset.
const INITIAL_ENTRY: Entry = Entry {
    message: MsiMessage {
        address: 0,
        data: 0,
    },
    control: VECTOR_MASKED,
};

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    /// The route each vector last got through `MsiRoutes::update`.
    routed: Vec<Option<MsiMessage>>,
    routes: Arc<dyn MsiRoutes>,
}

impl Msix {
    /// `vectors` vectors (clamped to 1..=2048), all masked, MSI-X disabled.
    pub fn new(vectors: u16, routes: Arc<dyn MsiRoutes>) -> Self {
        let n = usize::from(vectors.clamp(1, MAX_VECTORS));
        Msix {
            entries: vec![INITIAL_ENTRY; n],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            routed: vec![None; n],
            routes,
        }
    }

    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Size of the table and of the PBA in bytes.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes the enable and function mask bits of message control.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for vector in 0..self.vectors() {
            self.sync(vector);
        }
    }

    /// Sends `vector`, or records it as pending while masked.
    pub fn trigger(&mut self, vector: u16) -> io::Result<Delivery> {
        let Some(entry) = self.entries.get(usize::from(vector)) else {
            return Ok(Delivery::NoVector);
        };
        if !self.enabled {
            return Ok(Delivery::Disabled);
        }
        if self.function_masked || entry.masked() {
            self.pending[usize::from(vector / 64)] |= 1 << (vector % 64);
            return Ok(Delivery::Pending);
        }
        self.routes.trigger(vector)?;
        Ok(Delivery::Fired)
    }

    /// Forgets every pending interrupt: the device they came from was
    /// reset.
    pub fn clear_pending(&mut self) {
        self.pending.fill(0);
    }

    fn take_pending(&mut self, vector: u16) -> bool {
        let (word, bit) = (usize::from(vector / 64), 1u64 << (vector % 64));
        let was = self.pending[word] & bit != 0;
        self.pending[word] &= !bit;
        was
    }

    /// Brings `vector`'s route in line with the table and control, and
    /// sends what it held pending once it can fire.
    fn sync(&mut self, vector: u16) {
        let entry = self.entries[usize::from(vector)];
        let live = self.enabled && !self.function_masked && !entry.masked();
        let route = live.then_some(entry.message);
        if self.routed[usize::from(vector)] != route {
            match self.routes.update(vector, route) {
                Ok(()) => self.routed[usize::from(vector)] = route,
                Err(e) => warn!("msix: cannot update the route of vector {vector}: {e}"),
            }
        }
        if live && self.take_pending(vector) {
            if let Err(e) = self.routes.trigger(vector) {
                warn!("msix: cannot send pending vector {vector}: {e}");
            }
        }
    }

    /// Reads the table: 4 or 8-byte accesses, naturally aligned, inside it;
    /// anything else reads 0.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(dwords) = table_access(offset, data.len(), self.table_len()) else {
            debug!(
                "msix: ignoring a {}-byte table read at {offset:#x}",
                data.len()
            );
            return;
        };
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&self.table_dword(dwords + i).to_le_bytes());
        }
    }

    /// Writes the table, with the same access rules as `read_table`.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some(first) = table_access(offset, data.len(), self.table_len()) else {
            debug!(
                "msix: ignoring a {}-byte table write at {offset:#x}",
                data.len()
            );
            return;
        };
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(chunk);
            self.set_table_dword(first + i, u32::from_le_bytes(bytes));
        }
        self.sync((first / 4) as u16);
    }

    fn table_dword(&self, index: usize) -> u32 {
        let Some(entry) = self.entries.get(index / 4) else {
            return 0;
        };
        match index % 4 {
            0 => entry.message.address as u32,
            1 => (entry.message.address >> 32) as u32,
            2 => entry.message.data,
            _ => entry.control,
        }
    }

    fn set_table_dword(&mut self, index: usize, value: u32) {
        let Some(entry) = self.entries.get_mut(index / 4) else {
            return;
        };
        let address = &mut entry.message.address;
        match index % 4 {
            0 => *address = (*address & !0xffff_ffff) | u64::from(value),
            1 => *address = (*address & 0xffff_ffff) | u64::from(value) << 32,
            2 => entry.message.data = value,
            _ => entry.control = value & VECTOR_MASKED,
        }
    }

    /// Reads the PBA (read-only): 4 or 8-byte accesses, naturally aligned.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(dwords) = table_access(offset, data.len(), self.pba_len()) else {
            debug!(
                "msix: ignoring a {}-byte PBA read at {offset:#x}",
                data.len()
            );
            return;
        };
        for (i, chunk) in data.chunks_exact_mut(4).enumerate() {
            let dword = dwords + i;
            let word = self.pending.get(dword / 2).copied().unwrap_or(0);
            chunk.copy_from_slice(&((word >> ((dword % 2) * 32)) as u32).to_le_bytes());
        }
    }
}

/// The first dword of a 4 or 8-byte, naturally aligned access inside a
/// region of `len` bytes. An 8-byte access never straddles two entries.
fn table_access(offset: u64, len: usize, region: u64) -> Option<usize> {
    let ok = matches!(len, 4 | 8)
        && offset % len as u64 == 0
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= region);
    ok.then_some((offset / 4) as usize)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::devices::pci::config::PciIds;

    /// Route updates and triggers, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Event {
        Update(u16, Option<MsiMessage>),
        Trigger(u16),
    }

    #[derive(Default)]
    pub struct RecordingRoutes(pub Mutex<Vec<Event>>);

    impl RecordingRoutes {
        pub fn take(&self) -> Vec<Event> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl MsiRoutes for RecordingRoutes {
        fn update(&self, vector: u16, message: Option<MsiMessage>) -> io::Result<()> {
            self.0.lock().unwrap().push(Event::Update(vector, message));
            Ok(())
        }
        fn trigger(&self, vector: u16) -> io::Result<()> {
            self.0.lock().unwrap().push(Event::Trigger(vector));
            Ok(())
        }
    }

    fn msix(vectors: u16) -> (Msix, Arc<RecordingRoutes>) {
        let routes = Arc::new(RecordingRoutes::default());
        (Msix::new(vectors, routes.clone()), routes)
    }

    fn write32(m: &mut Msix, offset: u64, v: u32) {
        m.write_table(offset, &v.to_le_bytes());
    }

    fn read32(m: &Msix, offset: u64) -> u32 {
        let mut d = [0u8; 4];
        m.read_table(offset, &mut d);
        u32::from_le_bytes(d)
    }

    fn program(m: &mut Msix, vector: u64, address: u64, data: u32) {
        m.write_table(vector * 16, &address.to_le_bytes());
        write32(m, vector * 16 + 8, data);
    }

    const MSG: MsiMessage = MsiMessage {
        address: 0xfee0_1000,
        data: 0x41,
    };

    #[test]
    fn the_capability_describes_the_table() {
        let ids = PciIds {
            vendor: 1,
            device: 2,
            revision: 0,
            class: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        };
        let mut config = PciConfig::new(ids, 1, 0);
        let cap = MsixCap::add_to(&mut config, 3, 0, 0x4000, 0x5000).unwrap();
        assert_eq!(cap.offset, 0x40);
        assert_eq!(config.read_u32(0x40), 0x0002_0011);
        assert_eq!(config.read_u32(0x44), 0x4000);
        assert_eq!(config.read_u32(0x48), 0x5000);
        // Only enable and function mask can be written; the table size stays.
        config.write(0x42, &0xffffu16.to_le_bytes());
        assert_eq!(cap.control(&config), 0xc002);
        config.write(0x44, &0u32.to_le_bytes());
        assert_eq!(config.read_u32(0x44), 0x4000);
        assert!(cap.control_written(0x40, 4));
        assert!(cap.control_written(0x43, 1));
        assert!(!cap.control_written(0x41, 1));
        assert!(!cap.control_written(0x44, 4));
    }

    #[test]
    fn vectors_start_masked_and_disabled() {
        let (mut m, routes) = msix(2);
        assert_eq!(read32(&m, 12), 1);
        assert_eq!(read32(&m, 28), 1);
        assert_eq!(m.trigger(0).unwrap(), Delivery::Disabled);
        m.set_control(CONTROL_ENABLE);
        assert_eq!(m.trigger(0).unwrap(), Delivery::Pending);
        assert!(routes.take().is_empty(), "no route for masked vectors");
    }

    #[test]
    fn routes_follow_the_table_and_unmasking_sends_pending_vectors() {
        let (mut m, routes) = msix(2);
        program(&mut m, 1, MSG.address, MSG.data);
        m.set_control(CONTROL_ENABLE);
        assert_eq!(m.trigger(1).unwrap(), Delivery::Pending);
        let mut pba = [0u8; 8];
        m.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 0b10);
        // Unmask: the route appears and the pending vector fires once.
        write32(&mut m, 16 + 12, 0);
        assert_eq!(
            routes.take(),
            vec![Event::Update(1, Some(MSG)), Event::Trigger(1)]
        );
        m.read_pba(0, &mut pba);
        assert_eq!(u64::from_le_bytes(pba), 0);
        assert_eq!(m.trigger(1).unwrap(), Delivery::Fired);
        assert_eq!(routes.take(), vec![Event::Trigger(1)]);
        // Function mask: the route goes, triggers pend, unmask fires.
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        assert_eq!(m.trigger(1).unwrap(), Delivery::Pending);
        m.set_control(CONTROL_ENABLE);
        assert_eq!(
            routes.take(),
            vec![
                Event::Update(1, None),
                Event::Update(1, Some(MSG)),
                Event::Trigger(1)
            ]
        );
        // A new message while live updates the route; disable removes it.
        write32(&mut m, 16 + 8, 0x42);
        m.set_control(0);
        assert_eq!(
            routes.take(),
            vec![
                Event::Update(1, Some(MsiMessage { data: 0x42, ..MSG })),
                Event::Update(1, None)
            ]
        );
        assert_eq!(m.trigger(1).unwrap(), Delivery::Disabled);
    }

    #[test]
    fn hostile_table_accesses_are_ignored() {
        let (mut m, routes) = msix(2);
        program(&mut m, 0, MSG.address, MSG.data);
        // Out-of-range vectors: past the table, and in trigger.
        write32(&mut m, 32, 0xdead);
        assert_eq!(read32(&m, 32), 0);
        m.write_table(u64::MAX - 3, &[0; 4]);
        assert_eq!(m.trigger(2).unwrap(), Delivery::NoVector);
        assert_eq!(m.trigger(u16::MAX).unwrap(), Delivery::NoVector);
        // Unaligned, narrow and oversized accesses.
        for (offset, len) in [(2, 4), (4, 8), (0, 1), (0, 2), (0, 16), (0, 3), (28, 8)] {
            m.write_table(offset, &vec![0xffu8; len]);
            let mut d = vec![0xffu8; len];
            m.read_table(offset, &mut d);
            assert!(d.iter().all(|&b| b == 0), "{offset}+{len}");
        }
        assert_eq!(read32(&m, 0), MSG.address as u32);
        assert_eq!(read32(&m, 8), MSG.data);
        // Reserved vector control bits read 0; an 8-byte access works.
        write32(&mut m, 12, 0xffff_fffe);
        assert_eq!(read32(&m, 12), 0);
        let mut q = [0u8; 8];
        m.read_table(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), MSG.address);
        // The PBA is read-only and as strict.
        let mut p = [0u8; 2];
        m.read_pba(0, &mut p);
        assert_eq!(p, [0, 0]);
        m.read_pba(8, &mut q);
        assert_eq!(q, [0; 8]);
        assert!(routes.take().is_empty(), "MSI-X is still disabled");
    }

    #[test]
    fn vector_count_is_clamped() {
        assert_eq!(msix(0).0.vectors(), 1);
        let (m, _) = msix(u16::MAX);
        assert_eq!(m.vectors(), MAX_VECTORS);
        assert_eq!(m.table_len(), 2048 * 16);
        assert_eq!(m.pba_len(), 256);
    }
}
