use std::sync::Mutex;

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::block::{Block, BlockOptions};
use crate::devices::virtio::testing::{
    add_chain, guest_mem, used, CountingInterrupt, TempFile, R, W,
};
use crate::devices::virtio::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueState;
use vm_memory::Bytes;

const MEM_SIZE: usize = 0x10_0000;
const QUEUE_LEN: u16 = 16;
/// Feature bits the probe offers besides VERSION_1.
const PROBE_FEATURE: u64 = 1 << 3;

#[derive(Default)]
struct ProbeState {
    activations: Vec<(u64, Vec<QueueState>)>,
    processed: Vec<u16>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
}

/// A device that records what the transport does to it.
struct Probe {
    max_sizes: Vec<u16>,
    state: Arc<Mutex<ProbeState>>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
}

impl VirtioDevice for Probe {
    fn device_type(&self) -> u32 {
        0x42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | PROBE_FEATURE
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.state
            .lock()
            .expect("lock")
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        acked: u64,
    ) -> Result<(), ActivateError> {
        self.interrupt = Some(interrupt);
        let states = queues.iter().map(Queue::state).collect();
        self.state
            .lock()
            .expect("lock")
            .activations
            .push((acked, states));
        Ok(())
    }
    /// Signals after a kick of queue 0 only.
    fn queue_notify(&mut self, index: u16) {
        self.state.lock().expect("lock").processed.push(index);
        if index == 0 {
            if let Some(interrupt) = &self.interrupt {
                interrupt
                    .trigger(VirtioInterruptType::Queue(0))
                    .expect("trigger");
            }
        }
    }
    fn reset(&mut self) {
        self.interrupt = None;
        self.state.lock().expect("lock").resets += 1;
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("probe", 7)]
    }
}

struct Setup {
    transport: MmioTransport,
    irq: Arc<CountingInterrupt>,
    state: Arc<Mutex<ProbeState>>,
}

fn probe(mem: &GuestMemoryMmap, max_sizes: &[u16]) -> Setup {
    let state = Arc::new(Mutex::new(ProbeState::default()));
    let device = Probe {
        max_sizes: max_sizes.to_vec(),
        state: state.clone(),
        interrupt: None,
    };
    let irq = Arc::new(CountingInterrupt::default());
    let transport =
        MmioTransport::new(Box::new(device), mem.clone(), irq.clone()).expect("transport");
    Setup {
        transport,
        irq,
        state,
    }
}

fn r(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0xffu8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn w(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// Adds `bit` to the status the way Linux does: read, or, write back.
fn add_status(t: &mut MmioTransport, bit: u32) -> u32 {
    let status = r(t, REG_STATUS);
    w(t, REG_STATUS, status | bit);
    r(t, REG_STATUS)
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    assert_eq!(add_status(t, ACKNOWLEDGE), ACKNOWLEDGE);
    assert_eq!(add_status(t, DRIVER), ACKNOWLEDGE | DRIVER);
    w(t, REG_DRIVER_FEATURES_SEL, 1);
    w(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
    w(t, REG_DRIVER_FEATURES_SEL, 0);
    w(t, REG_DRIVER_FEATURES, features as u32);
}

fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, vq: &MockSplitQueue<GuestMemoryMmap>) {
    w(t, REG_QUEUE_SEL, index);
    assert_eq!(r(t, REG_QUEUE_READY), 0);
    w(t, REG_QUEUE_NUM, size);
    let set = |t: &mut MmioTransport, low: u64, addr: u64| {
        w(t, low, addr as u32);
        w(t, low + 4, (addr >> 32) as u32);
    };
    set(t, REG_QUEUE_DESC_LOW, vq.desc_table_addr().0);
    set(t, REG_QUEUE_DRIVER_LOW, vq.avail_addr().0);
    set(t, REG_QUEUE_DEVICE_LOW, vq.used_addr().0);
    w(t, REG_QUEUE_READY, 1);
}

/// The whole driver sequence up to DRIVER_OK; returns the final status.
fn init(t: &mut MmioTransport, vq: &MockSplitQueue<GuestMemoryMmap>, queue_size: u32) -> u32 {
    negotiate(t, t.device.device_features());
    assert_eq!(
        add_status(t, FEATURES_OK),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    setup_queue(t, 0, queue_size, vq);
    add_status(t, DRIVER_OK)
}

const RUNNING: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

#[test]
fn full_init_then_notify_completes_a_request_and_interrupts() {
    let disk = TempFile::new(
        "mmio",
        &(0..4096).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    );
    let block = Block::new(disk.open(true), BlockOptions::default()).expect("block");
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let irq = Arc::new(CountingInterrupt::default());
    let mut t = MmioTransport::new(Box::new(block), mem.clone(), irq.clone()).expect("transport");
    assert_eq!(t.device_type(), 2);
    assert_eq!(t.queue_count(), 1);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);

    assert_eq!(r(&mut t, REG_STATUS), 0);
    assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 256);
    assert_eq!(init(&mut t, &vq, u32::from(QUEUE_LEN)), RUNNING);
    assert!(t.is_activated());
    assert_eq!(irq.count(), 0);

    // A read of sector 1 through the QueueNotify register.
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    header[8..16].copy_from_slice(&1u64.to_le_bytes());
    mem.write_slice(&header, GuestAddress(0x1000))
        .expect("header");
    add_chain(&vq, 0, &[(0x1000, 16, R), (0x2000, 512, W), (0x1100, 1, W)]);
    w(&mut t, REG_QUEUE_NOTIFY, 0);
    assert_eq!(irq.count(), 1);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(used(&vq, 0), (1, 0, 513));
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x1100)).expect("status"),
        VIRTIO_BLK_S_OK as u8
    );
    let mut data = vec![0u8; 512];
    mem.read_slice(&mut data, GuestAddress(0x2000))
        .expect("data");
    assert_eq!(data, disk.contents()[512..1024]);

    w(&mut t, REG_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), 0);

    // The same through the ioeventfd path.
    add_chain(&vq, 3, &[(0x1000, 16, R), (0x3000, 512, W), (0x1100, 1, W)]);
    t.queue_notify(0);
    assert_eq!(irq.count(), 2);
    assert_eq!(used(&vq, 1), (2, 3, 513));

    // Nothing pending: no interrupt.
    t.queue_notify(0);
    assert_eq!(irq.count(), 2);

    let counters = t.counters();
    assert!(counters.contains(&("read_requests", 2)));
    assert!(counters.contains(&("read_bytes", 1024)));
    assert!(counters.contains(&("queue_notifies", 3)));
    assert!(counters.contains(&("interrupts", 2)));
}

#[test]
fn every_register_reads_back() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[16, 8]);
    let t = &mut s.transport;
    assert_eq!(r(t, REG_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(&r(t, REG_MAGIC_VALUE).to_le_bytes(), b"virt");
    assert_eq!(r(t, REG_VERSION), 2);
    assert_eq!(r(t, REG_DEVICE_ID), 0x42);
    assert_eq!(r(t, REG_VENDOR_ID), VENDOR_ID);
    assert_eq!(r(t, REG_DEVICE_FEATURES), PROBE_FEATURE as u32);
    w(t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(t, REG_DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    w(t, REG_DEVICE_FEATURES_SEL, 2);
    assert_eq!(r(t, REG_DEVICE_FEATURES), 0);
    assert_eq!(r(t, REG_QUEUE_NUM_MAX), 16);
    w(t, REG_QUEUE_SEL, 1);
    assert_eq!(r(t, REG_QUEUE_NUM_MAX), 8);
    w(t, REG_QUEUE_SEL, 2);
    assert_eq!(r(t, REG_QUEUE_NUM_MAX), 0, "no such queue");
    assert_eq!(r(t, REG_QUEUE_READY), 0);
    w(t, REG_QUEUE_SEL, 0);
    w(t, REG_QUEUE_READY, 1);
    assert_eq!(r(t, REG_QUEUE_READY), 1);
    assert_eq!(r(t, REG_INTERRUPT_STATUS), 0);
    assert_eq!(r(t, REG_STATUS), 0);
    w(t, REG_STATUS, ACKNOWLEDGE);
    assert_eq!(r(t, REG_STATUS), ACKNOWLEDGE);
    assert_eq!(r(t, REG_CONFIG_GENERATION), 0);
    for reg in [
        REG_SHM_LEN_LOW,
        REG_SHM_LEN_HIGH,
        REG_SHM_BASE_LOW,
        REG_SHM_BASE_HIGH,
    ] {
        assert_eq!(r(t, reg), u32::MAX, "no shared memory at {reg:#x}");
    }
    // Write-only and unknown registers read as zero.
    for reg in [
        REG_DEVICE_FEATURES_SEL,
        REG_DRIVER_FEATURES,
        REG_DRIVER_FEATURES_SEL,
        REG_QUEUE_SEL,
        REG_QUEUE_NUM,
        REG_QUEUE_NOTIFY,
        REG_INTERRUPT_ACK,
        REG_QUEUE_DESC_LOW,
        REG_QUEUE_DESC_HIGH,
        REG_QUEUE_DRIVER_LOW,
        REG_QUEUE_DRIVER_HIGH,
        REG_QUEUE_DEVICE_LOW,
        REG_QUEUE_DEVICE_HIGH,
        0x018,
        0x0f8,
    ] {
        assert_eq!(r(t, reg), 0, "register {reg:#x}");
    }
    let mut config = [0u8; 8];
    t.read(0x100, &mut config);
    assert_eq!(config, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(r(t, 0x104), u32::from_le_bytes([5, 6, 7, 8]));
    assert_eq!(r(t, 0x108), 0, "past the device's config space");
    assert_eq!(
        t.counters(),
        vec![("probe", 7), ("queue_notifies", 0), ("interrupts", 0)]
    );
}

#[test]
fn odd_sized_and_unaligned_accesses_are_ignored() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[16]);
    let t = &mut s.transport;
    for len in [1usize, 2, 3, 8] {
        let mut data = vec![0xffu8; len];
        t.read(REG_MAGIC_VALUE, &mut data);
        assert_eq!(data, vec![0; len], "{len}-byte register read");
    }
    let mut data = [0xffu8; 4];
    t.read(REG_MAGIC_VALUE + 2, &mut data);
    assert_eq!(data, [0; 4]);
    t.read(0xfff, &mut data);
    assert_eq!(data, [0; 4]);
    t.read(u64::MAX - 1, &mut data);
    assert_eq!(data, [0; 4]);
    let mut empty = [];
    t.read(REG_STATUS, &mut empty);

    t.write(REG_STATUS, &[ACKNOWLEDGE as u8, 0]);
    t.write(REG_STATUS, &[ACKNOWLEDGE as u8]);
    t.write(REG_STATUS + 1, &ACKNOWLEDGE.to_le_bytes());
    t.write(REG_STATUS, &[]);
    t.write(REG_STATUS, &u64::from(ACKNOWLEDGE).to_le_bytes());
    assert_eq!(r(t, REG_STATUS), 0);

    // Config space: 1, 2, 4 and 8 bytes, any offset, inside the window.
    let mut b1 = [0u8; 1];
    t.read(0x103, &mut b1);
    assert_eq!(b1, [4]);
    let mut b2 = [0u8; 2];
    t.read(0x101, &mut b2);
    assert_eq!(b2, [2, 3]);
    let mut b3 = [0xffu8; 3];
    t.read(0x100, &mut b3);
    assert_eq!(b3, [0; 3], "3-byte access refused");
    let mut b8 = [0xffu8; 8];
    t.read(MMIO_LEN - 4, &mut b8);
    assert_eq!(b8, [0; 8], "crossing the window's end refused");
    t.read(MMIO_LEN - 8, &mut b8);
    assert_eq!(b8, [0; 8], "inside the window but past the device's config");

    t.write(0x102, &[9, 9]);
    t.write(0x100, &[9, 9, 9]);
    t.write(MMIO_LEN - 2, &[9, 9, 9, 9]);
    assert_eq!(
        s.state.lock().expect("lock").config_writes,
        vec![(2, vec![9, 9])]
    );
}

#[test]
fn features_the_device_does_not_offer_are_dropped() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    // Too early: before DRIVER.
    w(t, REG_DRIVER_FEATURES, u32::MAX);
    negotiate(t, u64::MAX);
    // A selector past the second word is ignored.
    w(t, REG_DRIVER_FEATURES_SEL, 2);
    w(t, REG_DRIVER_FEATURES, 0);
    assert_eq!(
        add_status(t, FEATURES_OK),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    // Too late: after FEATURES_OK.
    w(t, REG_DRIVER_FEATURES_SEL, 0);
    w(t, REG_DRIVER_FEATURES, 0);
    setup_queue(t, 0, u32::from(QUEUE_LEN), &vq);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    let state = s.state.lock().expect("lock");
    assert_eq!(state.activations.len(), 1);
    assert_eq!(state.activations[0].0, VIRTIO_F_VERSION_1 | PROBE_FEATURE);
    let queue = &state.activations[0].1[0];
    assert_eq!(queue.size, QUEUE_LEN);
    assert_eq!(queue.desc_table, vq.desc_table_addr().0);
    assert_eq!(queue.avail_ring, vq.avail_addr().0);
    assert_eq!(queue.used_ring, vq.used_addr().0);
    assert!(queue.ready);
}

#[test]
fn features_ok_needs_version_1() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, PROBE_FEATURE);
    assert_eq!(add_status(t, FEATURES_OK), ACKNOWLEDGE | DRIVER);
}

#[test]
fn status_must_advance_in_order() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    w(t, REG_STATUS, DRIVER);
    assert_eq!(r(t, REG_STATUS), 0, "DRIVER before ACKNOWLEDGE");
    negotiate(t, VIRTIO_F_VERSION_1);
    setup_queue(t, 0, u32::from(QUEUE_LEN), &vq);
    assert_eq!(
        add_status(t, DRIVER_OK),
        ACKNOWLEDGE | DRIVER,
        "DRIVER_OK without FEATURES_OK"
    );
    assert!(!t.is_activated());
    w(t, REG_STATUS, ACKNOWLEDGE);
    assert_eq!(r(t, REG_STATUS), ACKNOWLEDGE | DRIVER, "clearing a bit");
    assert_eq!(
        add_status(t, FEATURES_OK | DRIVER_OK),
        RUNNING,
        "several bits in order"
    );
    assert!(t.is_activated());
    assert_eq!(s.state.lock().expect("lock").activations.len(), 1);
    // Setting DRIVER_OK again does not activate twice.
    w(&mut s.transport, REG_STATUS, RUNNING);
    assert_eq!(s.state.lock().expect("lock").activations.len(), 1);
}

#[test]
fn failed_stops_initialisation() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    assert_eq!(add_status(t, FAILED), ACKNOWLEDGE | DRIVER | FAILED);
    assert_eq!(add_status(t, FEATURES_OK), ACKNOWLEDGE | DRIVER | FAILED);
    w(t, REG_STATUS, 0);
    assert_eq!(r(t, REG_STATUS), 0);
}

/// Runs the init sequence with a queue the driver got wrong and checks
/// that the device is not activated and asks for a reset.
fn expect_activation_refused(
    s: &mut Setup,
    vq: &MockSplitQueue<GuestMemoryMmap>,
    size: u32,
    tweak: impl Fn(&mut MmioTransport),
) {
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    assert_eq!(
        add_status(t, FEATURES_OK),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    setup_queue(t, 0, size, vq);
    w(t, REG_QUEUE_READY, 0);
    tweak(t);
    w(t, REG_QUEUE_READY, 1);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING | NEEDS_RESET);
    assert!(!t.is_activated());
    assert_eq!(r(t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(s.irq.count(), 1);
    assert!(s.state.lock().expect("lock").activations.is_empty());
    // Notifies are ignored and nothing else moves until a reset.
    t.queue_notify(0);
    assert!(s.state.lock().expect("lock").processed.is_empty());
    assert_eq!(add_status(t, FAILED), RUNNING | NEEDS_RESET | FAILED);
    w(t, REG_STATUS, 0);
    assert_eq!(r(t, REG_STATUS), 0);
    assert_eq!(r(t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn queue_sizes_that_are_not_a_power_of_two_are_refused() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    for size in [0, 3, 12, 15, 32, 0x1_0010, u32::MAX] {
        let mut s = probe(&mem, &[QUEUE_LEN]);
        expect_activation_refused(&mut s, &vq, size, |_| {});
    }
    // A bad size corrected before QueueReady is fine.
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    add_status(t, FEATURES_OK);
    w(t, REG_QUEUE_NUM, 3);
    setup_queue(t, 0, 8, &vq);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    assert_eq!(s.state.lock().expect("lock").activations[0].1[0].size, 8);
}

#[test]
fn queues_outside_guest_memory_are_refused() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let end = MEM_SIZE as u32;
    let cases: [(u64, u32); 7] = [
        (REG_QUEUE_DESC_LOW, end - 0x10),
        (REG_QUEUE_DESC_HIGH, 1),
        (REG_QUEUE_DRIVER_LOW, end),
        (REG_QUEUE_DEVICE_LOW, end - 4),
        (REG_QUEUE_DEVICE_HIGH, u32::MAX),
        // Misaligned rings are refused even inside memory.
        (REG_QUEUE_DESC_LOW, 0x1008),
        (REG_QUEUE_DEVICE_LOW, 0x1002),
    ];
    for (reg, value) in cases {
        let mut s = probe(&mem, &[QUEUE_LEN]);
        expect_activation_refused(&mut s, &vq, u32::from(QUEUE_LEN), move |t| w(t, reg, value));
    }
}

#[test]
fn queues_not_ready_are_refused() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let mut s = probe(&mem, &[QUEUE_LEN, QUEUE_LEN]);
    // Only queue 0 of 2 is set up.
    expect_activation_refused(&mut s, &vq, u32::from(QUEUE_LEN), |_| {});
}

#[test]
fn queue_select_out_of_range_is_harmless() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    add_status(t, FEATURES_OK);
    for sel in [1, 7, u32::MAX] {
        w(t, REG_QUEUE_SEL, sel);
        for reg in [
            REG_QUEUE_NUM,
            REG_QUEUE_DESC_LOW,
            REG_QUEUE_DESC_HIGH,
            REG_QUEUE_DRIVER_LOW,
            REG_QUEUE_DEVICE_LOW,
            REG_QUEUE_READY,
        ] {
            w(t, reg, 1);
        }
        assert_eq!(r(t, REG_QUEUE_NUM_MAX), 0);
        assert_eq!(r(t, REG_QUEUE_READY), 0);
    }
    setup_queue(t, 0, u32::from(QUEUE_LEN), &vq);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    // Notifies for queues the device does not have reach it as such;
    // it ignores them.
    t.queue_notify(5);
    t.notify(u32::MAX);
    assert_eq!(s.irq.count(), 0);
}

#[test]
fn queue_setup_is_frozen_once_ready() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    add_status(t, FEATURES_OK);
    setup_queue(t, 0, 8, &vq);
    w(t, REG_QUEUE_NUM, 3);
    w(t, REG_QUEUE_DESC_LOW, 0xdead_0000);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    {
        let state = s.state.lock().expect("lock");
        let queue = &state.activations[0].1[0];
        assert_eq!(queue.size, 8);
        assert_eq!(queue.desc_table, vq.desc_table_addr().0);
    }
    // After activation even QueueReady stays put.
    w(&mut s.transport, REG_QUEUE_READY, 0);
    assert_eq!(r(&mut s.transport, REG_QUEUE_READY), 1);
}

#[test]
fn notify_before_activation_is_ignored() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    w(&mut s.transport, REG_QUEUE_NOTIFY, 0);
    s.transport.queue_notify(0);
    assert!(s.state.lock().expect("lock").processed.is_empty());
    assert_eq!(s.irq.count(), 0);
}

#[test]
fn notify_interrupts_only_when_the_device_says_so() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let mut s = probe(&mem, &[QUEUE_LEN, QUEUE_LEN]);
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    add_status(t, FEATURES_OK);
    setup_queue(t, 0, u32::from(QUEUE_LEN), &vq);
    setup_queue(t, 1, u32::from(QUEUE_LEN), &vq);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    w(t, REG_QUEUE_NOTIFY, 1);
    assert_eq!(s.irq.count(), 0);
    assert_eq!(r(&mut s.transport, REG_INTERRUPT_STATUS), 0);
    w(&mut s.transport, REG_QUEUE_NOTIFY, 0);
    assert_eq!(s.irq.count(), 1);
    assert_eq!(
        r(&mut s.transport, REG_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING
    );
    // Acknowledging an unrelated bit leaves ours set.
    w(&mut s.transport, REG_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(
        r(&mut s.transport, REG_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING
    );
    assert_eq!(s.state.lock().expect("lock").processed, vec![1, 0]);
}

#[test]
fn reset_clears_state() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let vq = MockSplitQueue::new(&mem, QUEUE_LEN);
    let mut s = probe(&mem, &[QUEUE_LEN]);
    let t = &mut s.transport;
    assert_eq!(init(t, &vq, 8), RUNNING);
    t.queue_notify(0);
    w(t, REG_DEVICE_FEATURES_SEL, 1);
    w(t, REG_QUEUE_SEL, 3);
    assert_eq!(r(t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);

    w(t, REG_STATUS, 0);
    assert!(!t.is_activated());
    assert_eq!(r(t, REG_STATUS), 0);
    assert_eq!(r(t, REG_INTERRUPT_STATUS), 0);
    assert_eq!(
        r(t, REG_DEVICE_FEATURES),
        PROBE_FEATURE as u32,
        "selector back to 0"
    );
    assert_eq!(
        r(t, REG_QUEUE_NUM_MAX),
        u32::from(QUEUE_LEN),
        "queue selector back to 0"
    );
    assert_eq!(r(t, REG_QUEUE_READY), 0);
    assert_eq!(s.state.lock().expect("lock").resets, 1);

    // Notifies are ignored until the driver starts over.
    let t = &mut s.transport;
    t.queue_notify(0);
    assert_eq!(s.state.lock().expect("lock").processed, vec![0]);

    // A second initialisation gets fresh queue state and no stale features.
    let t = &mut s.transport;
    negotiate(t, VIRTIO_F_VERSION_1);
    add_status(t, FEATURES_OK);
    w(t, REG_QUEUE_SEL, 0);
    w(t, REG_QUEUE_READY, 0);
    setup_queue(t, 0, u32::from(QUEUE_LEN), &vq);
    assert_eq!(add_status(t, DRIVER_OK), RUNNING);
    let state = s.state.lock().expect("lock");
    assert_eq!(state.activations.len(), 2);
    assert_eq!(state.activations[1].0, VIRTIO_F_VERSION_1);
    assert_eq!(state.activations[1].1[0].size, QUEUE_LEN);
    assert_eq!(state.activations[1].1[0].next_avail, 0);
}

#[test]
fn transport_sits_on_the_mmio_bus() {
    use crate::devices::bus::Bus;

    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let s = probe(&mem, &[QUEUE_LEN]);
    let base = 0xd000_0000;
    let mut bus = Bus::default();
    bus.insert(base, MMIO_LEN, Arc::new(Mutex::new(s.transport)))
        .expect("insert");
    let mut data = [0u8; 4];
    assert!(bus.read(base + REG_MAGIC_VALUE, &mut data));
    assert_eq!(&data, b"virt");
    assert!(bus.write(base + REG_STATUS, &ACKNOWLEDGE.to_le_bytes()));
    assert!(bus.read(base + REG_STATUS, &mut data));
    assert_eq!(u32::from_le_bytes(data), ACKNOWLEDGE);
    assert!(!bus.read(base + MMIO_LEN, &mut data));
}

#[test]
fn devices_with_bad_queue_sizes_are_refused() {
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    for sizes in [vec![16, 3], vec![0], vec![u16::MAX]] {
        let device = Probe {
            max_sizes: sizes,
            state: Arc::default(),
            interrupt: None,
        };
        let irq = Arc::new(CountingInterrupt::default());
        assert!(matches!(
            MmioTransport::new(Box::new(device), mem.clone(), irq),
            Err(MmioError::QueueMaxSize { .. })
        ));
    }
}

/// Every register (for each queue selector) and the config space.
fn register_file(t: &mut MmioTransport) -> Vec<u32> {
    let mut regs = Vec::new();
    for sel in 0..2 {
        w(t, REG_QUEUE_SEL, sel);
        regs.extend((0..MMIO_LEN).step_by(4).map(|offset| r(t, offset)));
    }
    w(t, REG_QUEUE_SEL, 0);
    regs
}

#[test]
fn reset_mid_io_returns_transport_and_device_to_their_initial_state() {
    let disk = TempFile::new(
        "mmio-reset",
        &(0..4096).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    let mem = guest_mem(&[(0, MEM_SIZE)]);
    let block = |writable| Block::new(disk.open(writable), BlockOptions::default());
    let irq = Arc::new(CountingInterrupt::default());
    let mut t = MmioTransport::new(
        Box::new(block(true).expect("block")),
        mem.clone(),
        irq.clone(),
    )
    .expect("transport");
    let mut fresh = MmioTransport::new(
        Box::new(block(true).expect("block")),
        mem.clone(),
        Arc::new(CountingInterrupt::default()),
    )
    .expect("transport");
    let initial = register_file(&mut fresh);
    assert_eq!(register_file(&mut t), initial);

    // A request served and its interrupt not acknowledged, another made
    // available but not kicked, selectors moved.
    let old = MockSplitQueue::new(&mem, QUEUE_LEN);
    assert_eq!(init(&mut t, &old, 8), RUNNING);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    mem.write_slice(&header, GuestAddress(0x1000))
        .expect("header");
    add_chain(
        &old,
        0,
        &[(0x1000, 16, R), (0x2000, 512, W), (0x1100, 1, W)],
    );
    t.queue_notify(0);
    add_chain(
        &old,
        3,
        &[(0x1000, 16, R), (0x3000, 512, W), (0x1100, 1, W)],
    );
    w(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    w(&mut t, REG_DRIVER_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);

    w(&mut t, REG_STATUS, 0);
    assert!(!t.is_activated());
    assert_eq!(register_file(&mut t), initial, "as created");
    t.queue_notify(0);
    assert_eq!(old.used().idx().load(), 1, "the pending request stays");

    // The next kernel: new queue elsewhere, a smaller size, the same
    // negotiation; the device serves it as a fresh one would.
    let new = MockSplitQueue::create(&mem, GuestAddress(0x8_0000), QUEUE_LEN);
    assert_eq!(init(&mut t, &new, 4), RUNNING);
    assert_eq!(irq.count(), 1);
    add_chain(
        &new,
        0,
        &[(0x1000, 16, R), (0x4000, 512, W), (0x1100, 1, W)],
    );
    t.queue_notify(0);
    assert_eq!(used(&new, 0), (1, 0, 513));
    assert_eq!(irq.count(), 2);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(old.used().idx().load(), 1);
    let counters = t.counters();
    assert!(counters.contains(&("read_requests", 2)), "{counters:?}");
    assert!(counters.contains(&("interrupts", 2)), "{counters:?}");
}
