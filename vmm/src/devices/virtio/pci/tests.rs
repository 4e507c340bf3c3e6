use std::sync::Mutex;

use super::*;
use crate::devices::pci::msix::tests::{Event, RecordingRoutes};
use crate::devices::pci::{MsiMessage, PciEcam, PciRoot};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::testing::{add_chain, guest_mem, used, CountingInterrupt, W};
use crate::devices::virtio::VIRTIO_F_VERSION_1;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

const MEM_SIZE: usize = 0x10_0000;
const BAR: u64 = 0x1_0000_0000;
const QUEUE_LEN: u16 = 16;

const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const NEEDS_RESET: u8 = 0x40;
const RUNNING: u8 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

/// Common config fields by offset.
const DFSELECT: u64 = 0x00;
const DF: u64 = 0x04;
const GFSELECT: u64 = 0x08;
const GF: u64 = 0x0c;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const STATUS: u64 = 0x14;
const GENERATION: u64 = 0x15;
const Q_SELECT: u64 = 0x16;
const Q_SIZE: u64 = 0x18;
const Q_MSIX: u64 = 0x1a;
const Q_ENABLE: u64 = 0x1c;
const Q_NOTIFY_OFF: u64 = 0x1e;
const Q_DESC: u64 = 0x20;
const Q_DRIVER: u64 = 0x28;
const Q_DEVICE: u64 = 0x30;

struct Setup {
    dev: VirtioPciDevice,
    mem: GuestMemoryMmap,
    routes: Arc<RecordingRoutes>,
    intx: Arc<CountingInterrupt>,
}

fn rng() -> Setup {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let routes = Arc::new(RecordingRoutes::default());
    let intx = Arc::new(CountingInterrupt::default());
    let dev = VirtioPciDevice::new(
        Box::new(Rng::new()),
        mem.clone(),
        BAR,
        routes.clone(),
        intx.clone(),
        21,
    )
    .unwrap();
    Setup {
        dev,
        mem,
        routes,
        intx,
    }
}

fn rd(d: &mut VirtioPciDevice, offset: u64, len: usize) -> u64 {
    let mut data = vec![0xa5u8; len];
    d.read(offset, &mut data);
    let mut bytes = [0u8; 8];
    bytes[..len.min(8)].copy_from_slice(&data[..len.min(8)]);
    u64::from_le_bytes(bytes)
}

fn wr(d: &mut VirtioPciDevice, offset: u64, len: usize, value: u64) {
    d.write(offset, &value.to_le_bytes()[..len]);
}

fn status(d: &mut VirtioPciDevice) -> u8 {
    rd(d, STATUS, 1) as u8
}

/// Adds `bit` to the status the way Linux does: read, or, write back.
fn add_status(d: &mut VirtioPciDevice, bit: u8) -> u8 {
    let s = status(d);
    wr(d, STATUS, 1, u64::from(s | bit));
    status(d)
}

fn negotiate(d: &mut VirtioPciDevice, features: u64) -> u8 {
    add_status(d, ACKNOWLEDGE);
    add_status(d, DRIVER);
    for half in 0..2 {
        wr(d, GFSELECT, 4, half);
        wr(d, GF, 4, features >> (32 * half) & 0xffff_ffff);
    }
    add_status(d, FEATURES_OK)
}

fn setup_queue(d: &mut VirtioPciDevice, index: u16, vq: &MockSplitQueue<GuestMemoryMmap>) {
    wr(d, Q_SELECT, 2, u64::from(index));
    wr(d, Q_SIZE, 2, u64::from(QUEUE_LEN));
    for (field, addr) in [
        (Q_DESC, vq.desc_table_addr().0),
        (Q_DRIVER, vq.avail_addr().0),
        (Q_DEVICE, vq.used_addr().0),
    ] {
        wr(d, field, 4, addr & 0xffff_ffff);
        wr(d, field + 4, 4, addr >> 32);
    }
    wr(d, Q_ENABLE, 2, 1);
}

/// Every common config field, for every queue select that matters, and
/// the ISR: what "the initial state" means to a driver.
fn snapshot(d: &mut VirtioPciDevice) -> Vec<u64> {
    let mut out = Vec::new();
    let select = rd(d, Q_SELECT, 2);
    for q in 0..3 {
        wr(d, Q_SELECT, 2, q);
        for (offset, len) in [
            (Q_SIZE, 2),
            (Q_MSIX, 2),
            (Q_ENABLE, 2),
            (Q_NOTIFY_OFF, 2),
            (Q_DESC, 8),
            (Q_DRIVER, 8),
            (Q_DEVICE, 8),
        ] {
            out.push(rd(d, offset, len));
        }
    }
    wr(d, Q_SELECT, 2, select);
    for (offset, len) in [
        (DFSELECT, 4),
        (GFSELECT, 4),
        (GF, 4),
        (MSIX_CONFIG, 2),
        (NUM_QUEUES, 2),
        (STATUS, 1),
        (GENERATION, 1),
        (Q_SELECT, 2),
        (caps::ISR_OFFSET, 1),
    ] {
        out.push(rd(d, offset, len));
    }
    out
}

/// Programs MSI-X vector `vector` and unmasks it.
fn program_vector(d: &mut VirtioPciDevice, vector: u64, message: MsiMessage) {
    let entry = caps::MSIX_TABLE_OFFSET + vector * 16;
    wr(d, entry, 8, message.address);
    wr(d, entry + 8, 4, u64::from(message.data));
    wr(d, entry + 12, 4, 0);
}

/// Writes message control through config space.
fn msix_control(d: &mut VirtioPciDevice, control: u16) {
    let offset = d.msix_cap.offset + 2;
    d.write_config(offset, &control.to_le_bytes());
}

fn msg(n: u32) -> MsiMessage {
    MsiMessage {
        address: 0xfee0_0000,
        data: 0x30 + n,
    }
}

/// Walks the capability list: (offset, id, cfg_type for virtio caps).
fn capabilities(d: &mut VirtioPciDevice) -> Vec<(usize, u8, u8)> {
    let mut caps = Vec::new();
    let mut b = [0u8; 1];
    d.read_config(0x34, &mut b);
    let mut next = usize::from(b[0]);
    while next != 0 && caps.len() < 16 {
        let mut head = [0u8; 4];
        d.read_config(next, &mut head);
        caps.push((next, head[0], head[3]));
        next = usize::from(head[1]);
    }
    caps
}

#[test]
fn the_function_looks_like_a_modern_virtio_device() {
    let Setup { mut dev, .. } = rng();
    let mut id = [0u8; 4];
    dev.read_config(0, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x1044_1af4, "rng is 0x1040 + 4");
    dev.read_config(8, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0xff00_0001, "class, revision 1");
    dev.read_config(0x2c, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x1100_1af4);
    dev.read_config(0x3c, &mut id);
    assert_eq!(u32::from_le_bytes(id) & 0xffff, 0x0115, "INTA#, line 21");
    let caps = capabilities(&mut dev);
    let virtio: Vec<u8> = caps.iter().filter(|c| c.1 == 0x09).map(|c| c.2).collect();
    assert_eq!(virtio, vec![1, 2, 3, 4]);
    assert_eq!(caps.last().map(|c| c.1), Some(0x11));
    // The notify capability: BAR 0, offset, length, multiplier.
    let notify = caps.iter().find(|c| c.1 == 0x09 && c.2 == 2).unwrap().0;
    let mut cap = [0u8; 20];
    for (i, chunk) in cap.chunks_mut(4).enumerate() {
        dev.read_config(notify + i * 4, chunk);
    }
    assert_eq!(cap[2], 20);
    assert_eq!(cap[4], 0);
    assert_eq!(u32::from_le_bytes(cap[8..12].try_into().unwrap()), 0x3000);
    assert_eq!(u32::from_le_bytes(cap[16..20].try_into().unwrap()), 4);
    // Read-only: a write over the capability changes nothing.
    dev.write_config(notify + 8, &0u32.to_le_bytes());
    let mut offset = [0u8; 4];
    dev.read_config(notify + 8, &mut offset);
    assert_eq!(u32::from_le_bytes(offset), 0x3000);
    assert_eq!(
        dev.bars(),
        vec![BarRegion {
            bar: 0,
            addr: BAR,
            len: BAR_SIZE,
            kind: BAR_KIND
        }]
    );
    assert_eq!(dev.notify_address(0), Some(BAR + 0x3000));
    assert_eq!(dev.notify_address(1), None);
    assert_eq!(VirtioPciDevice::vectors_for(&Rng::new()), 2);
}

#[test]
fn the_bar_sizes_and_moves_with_its_notify_addresses() {
    let Setup { mut dev, .. } = rng();
    assert_eq!(dev.write_config(0x10, &u32::MAX.to_le_bytes()), None);
    assert_eq!(dev.write_config(0x14, &u32::MAX.to_le_bytes()), None);
    let mut bar = [0u8; 4];
    dev.read_config(0x10, &mut bar);
    assert_eq!(u32::from_le_bytes(bar), 0xffff_8004, "32 KiB, 64-bit");
    dev.read_config(0x14, &mut bar);
    assert_eq!(u32::from_le_bytes(bar), u32::MAX);
    assert_eq!(dev.write_config(0x10, &0u32.to_le_bytes()), None);
    let moved = dev.write_config(0x14, &2u32.to_le_bytes());
    assert_eq!(
        moved,
        Some(BarMove {
            bar: 0,
            old: BAR,
            new: 0x2_0000_0000,
            len: BAR_SIZE
        })
    );
    assert_eq!(dev.notify_address(0), Some(0x2_0000_3000));
}

/// The whole driver sequence with MSI-X, a request, and its vector fired;
/// config space reached through ECAM as a guest would.
#[test]
fn rng_end_to_end_over_msix() {
    let Setup {
        dev,
        mem,
        routes,
        intx,
    } = rng();
    let dev = Arc::new(Mutex::new(dev));
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
    let mut ecam = PciEcam::new(root);
    let config = |reg: usize| (u64::from(slot) << 15) | reg as u64;

    let d = dev.lock().unwrap();
    assert_eq!(d.device_type(), 4);
    assert_eq!(d.queue_count(), 1);
    // MSI-X as Linux sets it up: mask the function, enable, program and
    // unmask the vectors, clear the function mask.
    let control = config(d.msix_cap.offset + 2);
    drop(d);
    ecam.write(control, &0xc000u16.to_le_bytes());
    let mut d = dev.lock().unwrap();
    program_vector(&mut d, 0, msg(0));
    program_vector(&mut d, 1, msg(1));
    drop(d);
    ecam.write(control, &0x8000u16.to_le_bytes());
    assert_eq!(
        routes.take(),
        vec![
            Event::Update(0, Some(msg(0))),
            Event::Update(1, Some(msg(1)))
        ]
    );

    let mut d = dev.lock().unwrap();
    assert_eq!(rd(&mut d, NUM_QUEUES, 2), 1);
    wr(&mut d, DFSELECT, 4, 1);
    assert_eq!(rd(&mut d, DF, 4), VIRTIO_F_VERSION_1 >> 32);
    assert_eq!(
        negotiate(&mut d, VIRTIO_F_VERSION_1),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    wr(&mut d, MSIX_CONFIG, 2, 0);
    assert_eq!(rd(&mut d, MSIX_CONFIG, 2), 0);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    wr(&mut d, Q_SELECT, 2, 0);
    assert_eq!(rd(&mut d, Q_SIZE, 2), 256);
    wr(&mut d, Q_MSIX, 2, 1);
    assert_eq!(rd(&mut d, Q_MSIX, 2), 1);
    setup_queue(&mut d, 0, &vq);
    assert_eq!(rd(&mut d, Q_ENABLE, 2), 1);
    assert_eq!(rd(&mut d, Q_DESC, 8), vq.desc_table_addr().0);
    assert_eq!(add_status(&mut d, DRIVER_OK), RUNNING);
    assert!(d.is_activated());

    // A 64-byte request, kicked at the queue's notify address.
    add_chain(&vq, 0, &[(0x8000, 64, W)]);
    let notify = d.notify_address(0).unwrap() - BAR;
    wr(&mut d, notify, 2, 0);
    assert_eq!(used(&vq, 0), (1, 0, 64));
    assert_eq!(routes.take(), vec![Event::Trigger(1)]);
    assert_eq!(intx.count(), 0);
    assert_eq!(rd(&mut d, caps::ISR_OFFSET, 1), 0, "no ISR bit with MSI-X");

    // Through the ioeventfd path, with the vector masked: pending, then
    // fired on unmask.
    wr(&mut d, caps::MSIX_TABLE_OFFSET + 16 + 12, 4, 1);
    assert_eq!(routes.take(), vec![Event::Update(1, None)]);
    add_chain(&vq, 1, &[(0x9000, 32, W)]);
    d.queue_notify(0);
    assert_eq!(used(&vq, 1), (2, 1, 32));
    assert!(routes.take().is_empty());
    assert_eq!(rd(&mut d, caps::MSIX_PBA_OFFSET, 8), 0b10);
    wr(&mut d, caps::MSIX_TABLE_OFFSET + 16 + 12, 4, 0);
    assert_eq!(
        routes.take(),
        vec![Event::Update(1, Some(msg(1))), Event::Trigger(1)]
    );
    assert_eq!(rd(&mut d, caps::MSIX_PBA_OFFSET, 8), 0);
    let counters = d.counters();
    assert!(counters.contains(&("queue_notifies", 2)), "{counters:?}");
    assert!(counters.contains(&("interrupts", 2)), "{counters:?}");
}

#[test]
fn without_msix_interrupts_go_to_intx_with_the_isr() {
    let Setup {
        mut dev,
        mem,
        routes,
        intx,
    } = rng();
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    setup_queue(&mut dev, 0, &vq);
    assert_eq!(add_status(&mut dev, DRIVER_OK), RUNNING);
    add_chain(&vq, 0, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(intx.count(), 1);
    assert!(dev.interrupt().intx_pending());
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 1), 1);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 1), 0, "read clears");
    assert!(!dev.interrupt().intx_pending());
    // Wider or other ISR accesses do not clear it.
    add_chain(&vq, 1, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 2), 0);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET + 1, 1), 0);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 1), 1);
    assert!(routes.take().is_empty());
    // The command register's INTx disable keeps the line quiet; the ISR
    // still tells a polling driver.
    dev.write_config(0x04, &0x0406u16.to_le_bytes());
    add_chain(&vq, 2, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(intx.count(), 2);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 1), 1);
    dev.write_config(0x04, &0x0006u16.to_le_bytes());
    add_chain(&vq, 3, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(intx.count(), 3);
}

#[test]
fn common_config_only_takes_its_own_widths() {
    let Setup { mut dev, .. } = rng();
    let initial = snapshot(&mut dev);
    // Wrong widths and misaligned halves: writes dropped, reads 0.
    for (offset, len) in [
        (Q_SELECT, 4),
        (Q_SELECT, 1),
        (STATUS, 2),
        (STATUS, 4),
        (DFSELECT, 2),
        (DFSELECT, 8),
        (Q_DESC + 2, 4),
        (Q_DESC + 4, 8),
        (MSIX_CONFIG + 1, 1),
        (0x38, 2),
        (0x36, 4),
        (0, 16),
        (0, 0),
    ] {
        wr(&mut dev, offset, len.min(8), 1);
        dev.write(offset, &vec![0xffu8; len]);
        assert_eq!(rd(&mut dev, offset, len), 0, "{offset:#x}+{len}");
    }
    assert_eq!(rd(&mut dev, NUM_QUEUES, 1), 0);
    // Anywhere in or past the BAR, at any size, without a panic.
    for offset in [
        0xffe,
        0x1001,
        0x3001,
        0x3ffe,
        0x5ff8,
        0x6000,
        0x7fff,
        BAR_SIZE,
        u64::MAX - 1,
    ] {
        for len in [1, 2, 3, 4, 8, 16] {
            dev.write(offset, &vec![0xffu8; len]);
            assert_eq!(rd(&mut dev, offset, len), 0, "{offset:#x}+{len}");
        }
    }
    // Read-only fields stay.
    wr(&mut dev, NUM_QUEUES, 2, 9);
    wr(&mut dev, GENERATION, 1, 9);
    wr(&mut dev, DF, 4, 0);
    wr(&mut dev, Q_NOTIFY_OFF, 2, 9);
    assert_eq!(snapshot(&mut dev), initial);
}

#[test]
fn queue_select_out_of_range_reaches_nothing() {
    let Setup { mut dev, .. } = rng();
    for select in [1u64, 2, 0xffff] {
        wr(&mut dev, Q_SELECT, 2, select);
        assert_eq!(rd(&mut dev, Q_SELECT, 2), select);
        wr(&mut dev, Q_SIZE, 2, 16);
        wr(&mut dev, Q_DESC, 8, 0x1000);
        wr(&mut dev, Q_MSIX, 2, 0);
        wr(&mut dev, Q_ENABLE, 2, 1);
        assert_eq!(rd(&mut dev, Q_SIZE, 2), 0, "size 0: no such queue");
        assert_eq!(rd(&mut dev, Q_ENABLE, 2), 0);
        assert_eq!(rd(&mut dev, Q_MSIX, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
        assert_eq!(rd(&mut dev, Q_NOTIFY_OFF, 2), 0);
        assert_eq!(rd(&mut dev, Q_DESC, 8), 0);
    }
    // Queue 0 is untouched; a notify for a queue that does not exist
    // (register or ioeventfd) is dropped.
    wr(&mut dev, Q_SELECT, 2, 0);
    assert_eq!(rd(&mut dev, Q_SIZE, 2), 256);
    assert_eq!(rd(&mut dev, Q_DESC, 8), 0);
    wr(&mut dev, caps::NOTIFY_OFFSET + 4 * 200, 2, 200);
    dev.queue_notify(u16::MAX);
}

#[test]
fn badly_configured_queues_cannot_be_enabled_or_activated() {
    let Setup {
        mut dev, mem, intx, ..
    } = rng();
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    wr(&mut dev, Q_SELECT, 2, 0);
    for size in [0u64, 3, 24, 512, 0xffff] {
        wr(&mut dev, Q_SIZE, 2, size);
        wr(&mut dev, Q_ENABLE, 2, 1);
        assert_eq!(rd(&mut dev, Q_ENABLE, 2), 0, "size {size}");
        assert_eq!(rd(&mut dev, Q_SIZE, 2), 256, "the old size stays");
    }
    // A good size, but rings outside guest memory.
    wr(&mut dev, Q_SIZE, 2, 16);
    wr(&mut dev, Q_DESC, 8, MEM_SIZE as u64 - 16);
    wr(&mut dev, Q_ENABLE, 2, 1);
    assert_eq!(rd(&mut dev, Q_ENABLE, 2), 0);
    // A misaligned ring is refused at the write.
    wr(&mut dev, Q_DESC, 8, 0x1001);
    wr(&mut dev, Q_ENABLE, 2, 1);
    assert_eq!(rd(&mut dev, Q_ENABLE, 2), 0);
    // DRIVER_OK with the queue disabled: NEEDS_RESET and a config
    // interrupt (over INTx, MSI-X being off).
    assert_eq!(
        add_status(&mut dev, DRIVER_OK),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    );
    assert!(!dev.is_activated());
    assert_eq!(intx.count(), 1);
    assert_eq!(rd(&mut dev, caps::ISR_OFFSET, 1), 2);
    assert_eq!(rd(&mut dev, GENERATION, 1), 1);
    // Only a reset gets it going again.
    assert_eq!(add_status(&mut dev, FEATURES_OK), status(&mut dev));
    wr(&mut dev, STATUS, 1, 0);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    setup_queue(&mut dev, 0, &vq);
    assert_eq!(rd(&mut dev, Q_ENABLE, 2), 1);
    // An enabled queue's setup is frozen; queue_enable 0 is not honoured.
    wr(&mut dev, Q_SIZE, 2, 8);
    wr(&mut dev, Q_DESC, 8, 0x4000);
    wr(&mut dev, Q_ENABLE, 2, 0);
    assert_eq!(rd(&mut dev, Q_SIZE, 2), u64::from(QUEUE_LEN));
    assert_eq!(rd(&mut dev, Q_DESC, 8), vq.desc_table_addr().0);
    assert_eq!(rd(&mut dev, Q_ENABLE, 2), 1);
    assert_eq!(add_status(&mut dev, DRIVER_OK), RUNNING);
}

#[test]
fn features_need_version_1_and_the_right_status() {
    let Setup { mut dev, .. } = rng();
    // Before DRIVER, driver features are ignored.
    wr(&mut dev, GF, 4, 0xffff_ffff);
    assert_eq!(rd(&mut dev, GF, 4), 0);
    // Without VERSION_1, FEATURES_OK does not stick.
    assert_eq!(negotiate(&mut dev, 0), ACKNOWLEDGE | DRIVER);
    // Bits the device does not offer are dropped.
    wr(&mut dev, GFSELECT, 4, 0);
    wr(&mut dev, GF, 4, 0xffff_ffff);
    assert_eq!(rd(&mut dev, GF, 4), 0);
    wr(&mut dev, GFSELECT, 4, 1);
    wr(&mut dev, GF, 4, 0xffff_ffff);
    assert_eq!(rd(&mut dev, GF, 4), VIRTIO_F_VERSION_1 >> 32);
    wr(&mut dev, GFSELECT, 4, 7);
    wr(&mut dev, GF, 4, 0xffff_ffff);
    assert_eq!(rd(&mut dev, GF, 4), 0);
    wr(&mut dev, DFSELECT, 4, 7);
    assert_eq!(rd(&mut dev, DF, 4), 0);
    assert_eq!(
        add_status(&mut dev, FEATURES_OK),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    // Frozen after FEATURES_OK; status bits cannot be cleared or skipped.
    wr(&mut dev, GFSELECT, 4, 1);
    wr(&mut dev, GF, 4, 0);
    assert_eq!(rd(&mut dev, GF, 4), VIRTIO_F_VERSION_1 >> 32);
    wr(&mut dev, STATUS, 1, u64::from(ACKNOWLEDGE));
    assert_eq!(status(&mut dev), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    wr(&mut dev, STATUS, 1, 0);
    assert_eq!(add_status(&mut dev, DRIVER_OK), 0);
}

#[test]
fn msix_vectors_out_of_range_read_back_no_vector() {
    let Setup { mut dev, .. } = rng();
    // Two vectors: 0 and 1.
    for (value, expected) in [
        (0u64, 0u64),
        (1, 1),
        (2, 0xffff),
        (0x7fff, 0xffff),
        (0xffff, 0xffff),
    ] {
        wr(&mut dev, MSIX_CONFIG, 2, value);
        assert_eq!(rd(&mut dev, MSIX_CONFIG, 2), expected, "config {value}");
        wr(&mut dev, Q_MSIX, 2, value);
        assert_eq!(rd(&mut dev, Q_MSIX, 2), expected, "queue {value}");
    }
}

#[test]
fn no_vector_means_no_interrupt_with_msix_on() {
    let Setup {
        mut dev,
        mem,
        routes,
        intx,
    } = rng();
    msix_control(&mut dev, 0x8000);
    program_vector(&mut dev, 0, msg(0));
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    setup_queue(&mut dev, 0, &vq);
    assert_eq!(add_status(&mut dev, DRIVER_OK), RUNNING);
    routes.take();
    add_chain(&vq, 0, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(used(&vq, 0), (1, 0, 16));
    assert!(routes.take().is_empty());
    assert_eq!(intx.count(), 0);
}

#[test]
fn a_reset_mid_io_returns_to_the_initial_state() {
    let Setup {
        mut dev,
        mem,
        routes,
        intx,
    } = rng();
    let initial = snapshot(&mut dev);
    msix_control(&mut dev, 0x8000 | 0x4000);
    program_vector(&mut dev, 0, msg(0));
    program_vector(&mut dev, 1, msg(1));
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    wr(&mut dev, MSIX_CONFIG, 2, 0);
    wr(&mut dev, Q_MSIX, 2, 1);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    setup_queue(&mut dev, 0, &vq);
    assert_eq!(add_status(&mut dev, DRIVER_OK), RUNNING);
    // One request served while the function is masked (pending), one
    // made available but not yet kicked, then a reset.
    add_chain(&vq, 0, &[(0x8000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(rd(&mut dev, caps::MSIX_PBA_OFFSET, 8), 0b10);
    add_chain(&vq, 1, &[(0x9000, 16, W)]);
    wr(&mut dev, DFSELECT, 4, 1);
    wr(&mut dev, Q_SELECT, 2, 2);
    wr(&mut dev, STATUS, 1, 0);
    assert!(!dev.is_activated());
    assert_eq!(snapshot(&mut dev), initial);
    assert_eq!(rd(&mut dev, caps::MSIX_PBA_OFFSET, 8), 0, "nothing pending");
    // The old queue is gone: a kick does nothing, unmasking sends nothing.
    dev.queue_notify(0);
    assert_eq!(used(&vq, 1).0, 1);
    msix_control(&mut dev, 0x8000);
    assert!(!routes.take().iter().any(|e| matches!(e, Event::Trigger(_))));
    // The MSI-X table is the function's and stays programmed.
    assert_eq!(
        rd(&mut dev, caps::MSIX_TABLE_OFFSET + 16, 8),
        msg(1).address
    );
    // A fresh initialisation on new rings works.
    let vq = MockSplitQueue::create(&mem, GuestAddress(0x2_0000), QUEUE_LEN);
    negotiate(&mut dev, VIRTIO_F_VERSION_1);
    wr(&mut dev, Q_MSIX, 2, 1);
    setup_queue(&mut dev, 0, &vq);
    assert_eq!(add_status(&mut dev, DRIVER_OK), RUNNING);
    add_chain(&vq, 0, &[(0xa000, 16, W)]);
    dev.queue_notify(0);
    assert_eq!(used(&vq, 0), (1, 0, 16));
    assert_eq!(routes.take(), vec![Event::Trigger(1)]);
    assert_eq!(intx.count(), 0);
}

#[test]
fn devices_with_unusable_queues_are_refused() {
    struct Many(Vec<u16>);
    impl VirtioDevice for Many {
        fn device_type(&self) -> u32 {
            0x42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.0
        }
        fn device_features(&self) -> u64 {
            VIRTIO_F_VERSION_1
        }
        fn read_config(&self, _: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            _: Arc<dyn crate::devices::virtio::VirtioInterrupt>,
            _: Vec<virtio_queue::Queue>,
            _: u64,
        ) -> Result<(), crate::devices::virtio::ActivateError> {
            Ok(())
        }
        fn queue_notify(&mut self, _: u16) {}
        fn reset(&mut self) {}
        fn counters(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }
    }
    let build = |sizes: Vec<u16>| {
        VirtioPciDevice::new(
            Box::new(Many(sizes)),
            guest_mem(&[(0, MEM_SIZE)]),
            BAR,
            Arc::new(RecordingRoutes::default()),
            Arc::new(CountingInterrupt::default()),
            0,
        )
    };
    assert!(matches!(
        build(vec![16, 3]),
        Err(VirtioPciError::QueueMaxSize { index: 1, size: 3 })
    ));
    assert!(matches!(
        build(vec![16; MAX_QUEUES + 1]),
        Err(VirtioPciError::TooManyQueues(256))
    ));
    let mut dev = build(vec![16; MAX_QUEUES]).unwrap();
    assert_eq!(dev.interrupt().msix().vectors(), 256);
    assert_eq!(dev.notify_address(254), Some(BAR + 0x3000 + 254 * 4));
    assert!(matches!(
        VirtioPciDevice::new(
            Box::new(Many(vec![16])),
            guest_mem(&[(0, MEM_SIZE)]),
            BAR + 0x1000,
            Arc::new(RecordingRoutes::default()),
            Arc::new(CountingInterrupt::default()),
            0,
        ),
        Err(VirtioPciError::Config(_))
    ));
    assert_eq!(rd(&mut dev, NUM_QUEUES, 2), 255);
}

/// The relocation contract: called with the root locked but not the
/// device, so the handler can read the device's new notify addresses.
#[test]
fn a_bar_move_through_the_root_reaches_the_relocation_handler() {
    /// (slot, move, notify address of queue 0 seen from the handler).
    type Seen = Arc<Mutex<Vec<(u8, BarMove, Option<u64>)>>>;
    struct Follow {
        dev: Arc<Mutex<VirtioPciDevice>>,
        seen: Seen,
    }
    impl crate::devices::pci::BarRelocation for Follow {
        fn move_bar(&mut self, slot: u8, event: BarMove) -> std::io::Result<()> {
            let notify = self.dev.lock().unwrap().notify_address(0);
            self.seen.lock().unwrap().push((slot, event, notify));
            Ok(())
        }
    }
    let Setup { dev, .. } = rng();
    let dev = Arc::new(Mutex::new(dev));
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    root.lock().unwrap().set_relocation(Box::new(Follow {
        dev: dev.clone(),
        seen: seen.clone(),
    }));
    let mut ecam = PciEcam::new(root);
    let bar0 = u64::from(slot) << 15 | 0x10;
    // Linux's sizing dance first: nothing moves.
    for (offset, value) in [(0, u32::MAX), (0, BAR as u32), (4, u32::MAX), (4, 1)] {
        ecam.write(bar0 + offset, &value.to_le_bytes());
    }
    assert!(seen.lock().unwrap().is_empty());
    ecam.write(bar0, &0x0010_0000u32.to_le_bytes());
    ecam.write(bar0 + 4, &3u32.to_le_bytes());
    let new = 0x3_0010_0000;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(
            slot,
            BarMove {
                bar: 0,
                old: BAR,
                new,
                len: BAR_SIZE
            },
            Some(new + 0x3000)
        )]
    );
    assert_eq!(dev.lock().unwrap().bars()[0].addr, new);
}

/// A guest writing noise everywhere, at every size, running or not: no
/// panic, and a reset still brings the device back.
#[test]
fn random_accesses_anywhere_do_not_panic() {
    let Setup { mut dev, mem, .. } = rng();
    let initial = snapshot(&mut dev);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000 {
        if round % 5_000 == 0 {
            // Get the device running now and then, so the noise also hits
            // an active device.
            wr(&mut dev, STATUS, 1, 0);
            negotiate(&mut dev, VIRTIO_F_VERSION_1);
            let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
            setup_queue(&mut dev, 0, &vq);
            add_status(&mut dev, DRIVER_OK);
        }
        let r = next();
        let len = [0, 1, 2, 3, 4, 8, 16][(r % 7) as usize];
        let offset = match (r >> 8) % 4 {
            0 => (r >> 16) % BAR_SIZE,
            1 => (r >> 16) % 0x40,
            2 => caps::MSIX_TABLE_OFFSET + (r >> 16) % 0x40,
            _ => r >> 16,
        };
        let data = next().to_le_bytes().repeat(2);
        match (r >> 12) % 4 {
            0 => dev.write(offset, &data[..len]),
            1 => {
                // A BAR move may come back; nothing follows it here.
                let _ = dev.write_config((offset % 0x1100) as usize, &data[..len]);
            }
            2 => dev.read(offset, &mut vec![0; len]),
            _ => dev.read_config((offset % 0x1100) as usize, &mut vec![0; len]),
        }
        dev.queue_notify((r >> 40) as u16 % 3);
    }
    wr(&mut dev, STATUS, 1, 0);
    wr(&mut dev, Q_SELECT, 2, 0);
    let after = snapshot(&mut dev);
    // The virtio state is back; what the noise left in PCI config space
    // and the MSI-X table is the function's, not the device's.
    assert_eq!(after, initial);
}
