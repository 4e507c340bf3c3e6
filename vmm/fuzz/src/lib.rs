//! What every keel-vmm fuzz target shares: a byte reader over the input,
//! guest memory with a fixed queue layout, and a hostile driver that
//! builds descriptor chains from the input and checks the used rings.
//!
//! Guest memory is two regions with a hole between them, so chains can
//! cross a region boundary or point into the hole:
//!
//! ```text
//! 0x0_0000..0x4_0000  region 0: queue q at q * 0x2000 (descriptor table,
//!                     avail ring at +0x1000, used ring at +0x1400), data
//!                     buffers from DATA_BASE on
//! 0x4_0000..0x10_0000 hole
//! 0x10_0000..0x11_0000 region 1
//! ```
//!
//! Input format (little endian, missing bytes read as zero): a setup
//! header the target reads first, then ops, each a tag byte and its
//! fields (see [`Driver::step`] and `make_seeds.py`).

pub mod pci;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use keel_vmm::devices::virtio::{Interrupt, VirtioDevice, VirtioInterrupt, VirtioInterruptType};

pub const REGION0_LEN: u64 = 0x4_0000;
pub const REGION1_BASE: u64 = 0x10_0000;
pub const REGION1_LEN: u64 = 0x1_0000;
/// Everything below this is descriptor tables and rings.
pub const RING_AREA_END: u64 = 0x8000;
pub const DATA_BASE: u64 = RING_AREA_END;
/// Most queues a device here has (vsock: rx, tx, event).
pub const MAX_QUEUES: usize = 3;
/// Most queue entries the fuzzer sets up: keeps the layout in 0x2000 per queue.
pub const MAX_QUEUE_SIZE: u16 = 256;
/// Most ops per input, so one input cannot run for long.
const MAX_OPS: usize = 256;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;

/// Reads fields off the fuzz input; past its end every field reads as 0.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let src = self.bytes(N);
        out[..src.len()].copy_from_slice(src);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A length-prefixed (u8) byte string.
    pub fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }
}

/// The two-region guest memory described in the module docs.
pub fn guest_memory() -> GuestMemoryMmap {
    let ranges = [
        (GuestAddress(0), REGION0_LEN as usize),
        (GuestAddress(REGION1_BASE), REGION1_LEN as usize),
    ];
    // Anonymous mappings of a fixed, small size only fail when the host
    // is out of memory, and then fuzzing cannot go on anyway.
    GuestMemoryMmap::from_ranges(&ranges).expect("cannot map guest memory")
}

/// Where queue `q` lives: descriptor table, avail ring, used ring.
pub fn queue_layout(q: usize) -> (u64, u64, u64) {
    let base = q as u64 * 0x2000;
    (base, base + 0x1000, base + 0x1400)
}

/// An interrupt handle that counts what it is asked to signal.
#[derive(Default)]
pub struct CountingInterrupt {
    pub count: AtomicU64,
}

impl VirtioInterrupt for CountingInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
        if let VirtioInterruptType::Queue(index) = kind {
            assert!(
                usize::from(index) < MAX_QUEUES,
                "a device signalled queue {index}, which does not exist"
            );
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Interrupt for CountingInterrupt {
    fn trigger(&self) -> std::io::Result<()> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The driver's view of one queue.
#[derive(Clone, Copy, Default)]
struct QueueShadow {
    size: u16,
    /// Next avail index the driver will publish.
    avail_idx: u16,
    /// Next free descriptor slot.
    next_slot: u16,
    /// The used index at the last check.
    used_idx: u16,
}

/// What one op asked for that only the target knows how to do.
pub enum Step<'a, 'b> {
    /// Handled by the driver.
    Done,
    /// A device-specific op: the tag and the rest of the input.
    Device(u8, &'b mut Input<'a>),
    /// The input is used up.
    End,
}

/// A hostile driver writing queues in guest memory from the fuzz input.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub irq: Arc<CountingInterrupt>,
    queues: Vec<QueueShadow>,
    features: u64,
    active: bool,
    /// No device-writable buffer, indirect table or raw write ever reached
    /// the rings, so the used rings are only written by the device and
    /// their invariants hold.
    rings_clean: bool,
    ops: usize,
}

/// Op tags: memory ops (the driver writes guest memory), device ops
/// (the driver talks to the device; a transport target maps them onto
/// registers), and from `DEVICE_OPS` on the target's own.
pub const OP_CHAIN: u8 = 0;
pub const OP_WRITE_MEM: u8 = 1;
pub const OP_AVAIL_IDX: u8 = 2;
pub const OP_AVAIL_FLAGS: u8 = 3;
pub const OP_RAW_DESC: u8 = 4;
pub const OP_KICK: u8 = 5;
pub const OP_RESET: u8 = 6;
pub const OP_ACTIVATE: u8 = 7;
pub const OP_READ_CONFIG: u8 = 8;
pub const OP_WRITE_CONFIG: u8 = 9;
pub const DEVICE_OPS: u8 = 10;

impl Driver {
    /// Reads the setup header (per queue: log2 of its size; then the
    /// features to accept, masked with what the device offers) and writes
    /// empty rings for `queue_count` queues.
    pub fn new(input: &mut Input, queue_count: usize, offered: u64) -> Self {
        assert!(queue_count <= MAX_QUEUES);
        let queues = (0..queue_count)
            .map(|_| QueueShadow {
                size: 1 << (input.u8() % 9),
                ..QueueShadow::default()
            })
            .collect();
        let features = input.u64() & offered;
        let mut driver = Driver {
            mem: guest_memory(),
            irq: Arc::new(CountingInterrupt::default()),
            queues,
            features,
            active: false,
            rings_clean: true,
            ops: 0,
        };
        driver.clear_rings();
        driver
    }

    /// The size the driver gives queue `q`.
    pub fn queue_size(&self, q: usize) -> u16 {
        self.queues[q].size
    }

    /// The queues may no longer be laid out as the driver thinks (a
    /// transport was programmed with other addresses or sizes): stop
    /// checking the used rings.
    pub fn taint(&mut self) {
        self.rings_clean = false;
    }

    /// Whether the device runs, for a transport target that learns it
    /// from the status register.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// The driver side of a (re)initialisation: empty rings.
    pub fn clear_rings(&mut self) {
        for (q, shadow) in self.queues.iter_mut().enumerate() {
            let (_, avail, used) = queue_layout(q);
            let zeros = [0u8; 4];
            let _ = self.mem.write_slice(&zeros, GuestAddress(avail));
            let _ = self.mem.write_slice(&zeros, GuestAddress(used));
            shadow.avail_idx = 0;
            shadow.next_slot = 0;
            shadow.used_idx = 0;
        }
    }

    /// Queues as a transport would hand them over at DRIVER_OK.
    pub fn build_queues(&self) -> Vec<Queue> {
        self.queues
            .iter()
            .enumerate()
            .map(|(q, shadow)| {
                let (desc, avail, used) = queue_layout(q);
                let mut queue = Queue::new(MAX_QUEUE_SIZE).expect("valid queue size");
                queue.set_size(shadow.size);
                queue.set_desc_table_address(Some(desc as u32), Some(0));
                queue.set_avail_ring_address(Some(avail as u32), Some(0));
                queue.set_used_ring_address(Some(used as u32), Some(0));
                queue.set_ready(true);
                assert!(queue.is_valid(&self.mem), "the fuzz layout must be valid");
                queue
            })
            .collect()
    }

    /// Fresh rings, then `activate`. Refusals are fine (already active).
    pub fn activate(&mut self, device: &mut dyn VirtioDevice) {
        if !self.active {
            self.clear_rings();
        }
        let irq: Arc<dyn VirtioInterrupt> = self.irq.clone();
        if device
            .activate(self.mem.clone(), irq, self.build_queues(), self.features)
            .is_ok()
        {
            self.active = true;
        }
    }

    pub fn reset(&mut self, device: &mut dyn VirtioDevice) {
        device.reset();
        self.active = false;
    }

    /// A guest-physical address: mostly inside the data area, sometimes in
    /// region 1, sometimes anything at all.
    fn address(input: &mut Input, mode: u8) -> u64 {
        match mode & 3 {
            0 | 1 => DATA_BASE + u64::from(input.u32() % (REGION0_LEN as u32)),
            2 => REGION1_BASE + u64::from(input.u16()),
            _ => input.u64(),
        }
    }

    fn write_descriptor(
        &mut self,
        q: usize,
        slot: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        // The device may write where a writable buffer points, and an
        // indirect table holds descriptors we never looked at.
        let writable_into_rings = flags & VRING_DESC_F_WRITE != 0 && addr < RING_AREA_END;
        if writable_into_rings || flags & VRING_DESC_F_INDIRECT != 0 {
            self.rings_clean = false;
        }
        let (table, _, _) = queue_layout(q);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let _ = self
            .mem
            .write_slice(&raw, GuestAddress(table + 16 * u64::from(slot)));
    }

    fn write_mem(&mut self, addr: u64, bytes: &[u8]) {
        if addr < RING_AREA_END {
            self.rings_clean = false;
        }
        let _ = self.mem.write_slice(bytes, GuestAddress(addr));
    }

    fn publish(&mut self, q: usize, head: u16) {
        let (_, avail, _) = queue_layout(q);
        let shadow = &mut self.queues[q];
        let entry = avail + 4 + 2 * u64::from(shadow.avail_idx % shadow.size);
        let _ = self.mem.write_obj(head, GuestAddress(entry));
        shadow.avail_idx = shadow.avail_idx.wrapping_add(1);
        let _ = self
            .mem
            .write_obj(shadow.avail_idx, GuestAddress(avail + 2));
    }

    /// One chain: queue, descriptor count, then per descriptor a control
    /// byte (bit 0 device-writable, bit 1 fill it from the input, bit 2
    /// raw flags and next, bits 3-4 address mode, bit 5 32-bit length),
    /// its address and length, raw flags and next if asked for, and the
    /// fill bytes (u8 count) if asked for. The head is published.
    fn chain(&mut self, input: &mut Input) {
        let q = usize::from(input.u8()) % self.queues.len();
        let count = 1 + input.u8() % 16;
        let size = self.queues[q].size;
        let head = self.queues[q].next_slot % size;
        let mut slot = head;
        for i in 0..count {
            let ctl = input.u8();
            let addr = Self::address(input, ctl >> 3);
            let len = if ctl & 0x20 != 0 {
                input.u32()
            } else {
                u32::from(input.u16())
            };
            let next_slot = (slot + 1) % size;
            let (flags, next) = if ctl & 4 != 0 {
                (input.u16(), input.u16())
            } else {
                let mut flags = if ctl & 1 != 0 { VRING_DESC_F_WRITE } else { 0 };
                if i + 1 < count {
                    flags |= VRING_DESC_F_NEXT;
                }
                (flags, next_slot)
            };
            if ctl & 2 != 0 {
                let fill = input.blob();
                let n = fill.len().min(len as usize);
                self.write_mem(addr, &fill[..n]);
            }
            self.write_descriptor(q, slot, addr, len, flags, next);
            slot = next_slot;
        }
        self.queues[q].next_slot = slot;
        self.publish(q, head);
    }

    /// Checks the used rings after the device ran: the used index never
    /// passes the available index, and each new entry names a descriptor
    /// inside the queue.
    pub fn check_used(&mut self) {
        if !self.active || !self.rings_clean {
            return;
        }
        for (q, shadow) in self.queues.iter_mut().enumerate() {
            let (_, _, used) = queue_layout(q);
            let idx: u16 = self
                .mem
                .read_obj(GuestAddress(used + 2))
                .expect("used ring in memory");
            // A driver that publishes more than the ring holds may get more
            // than a ring's worth back at once (virtio-net holds receive
            // buffers across kicks), but never more than it published.
            let new = idx.wrapping_sub(shadow.used_idx);
            let published = shadow.avail_idx.wrapping_sub(shadow.used_idx);
            assert!(
                new <= published,
                "queue {q}: {new} used entries but only {published} published"
            );
            for i in 0..new {
                let pos = shadow.used_idx.wrapping_add(i) % shadow.size;
                let id: u32 = self
                    .mem
                    .read_obj(GuestAddress(used + 4 + 8 * u64::from(pos)))
                    .expect("used ring in memory");
                assert!(
                    id < u32::from(shadow.size),
                    "queue {q}: used entry names descriptor {id} of {}",
                    shadow.size
                );
            }
            shadow.used_idx = idx;
        }
    }

    /// Runs the next op: memory ops here, device ops against `device`.
    /// Without a device (a transport target), device ops and everything
    /// from `DEVICE_OPS` on go to the target with their tag.
    pub fn step<'a, 'b>(
        &mut self,
        input: &'b mut Input<'a>,
        device: Option<&mut dyn VirtioDevice>,
    ) -> Step<'a, 'b> {
        if input.is_empty() || self.ops == MAX_OPS {
            return Step::End;
        }
        self.ops += 1;
        let queue_count = self.queues.len();
        let tag = input.u8();
        match tag {
            OP_CHAIN => self.chain(input),
            OP_WRITE_MEM => {
                let mode = input.u8();
                let addr = Self::address(input, mode);
                let bytes = input.blob();
                self.write_mem(addr, bytes);
            }
            OP_AVAIL_IDX => {
                let q = usize::from(input.u8()) % queue_count;
                let idx = input.u16();
                self.queues[q].avail_idx = idx;
                let (_, avail, _) = queue_layout(q);
                let _ = self.mem.write_obj(idx, GuestAddress(avail + 2));
            }
            OP_AVAIL_FLAGS => {
                let q = usize::from(input.u8()) % queue_count;
                let flags = input.u16();
                let (_, avail, _) = queue_layout(q);
                let _ = self.mem.write_obj(flags, GuestAddress(avail));
            }
            OP_RAW_DESC => {
                let q = usize::from(input.u8()) % queue_count;
                let slot = input.u16() % self.queues[q].size;
                let (addr, len, flags, next) = (input.u64(), input.u32(), input.u16(), input.u16());
                self.write_descriptor(q, slot, addr, len, flags, next);
            }
            _ => match device {
                Some(device) if tag < DEVICE_OPS => self.device_op(tag, input, device),
                _ => return Step::Device(tag, input),
            },
        }
        Step::Done
    }

    fn device_op(&mut self, tag: u8, input: &mut Input, device: &mut dyn VirtioDevice) {
        match tag {
            OP_KICK => {
                // Now and then a queue the device does not have.
                let q = input.u8() % (self.queues.len() as u8 + 1);
                device.queue_notify(u16::from(q));
                self.check_used();
            }
            OP_RESET => self.reset(device),
            OP_ACTIVATE => self.activate(device),
            OP_READ_CONFIG => {
                let offset = u64::from(input.u16());
                let mut data = vec![0u8; usize::from(input.u8() % 9)];
                device.read_config(offset, &mut data);
            }
            _ => {
                let offset = u64::from(input.u16());
                let data = input.blob();
                device.write_config(offset, data);
            }
        }
    }
}
