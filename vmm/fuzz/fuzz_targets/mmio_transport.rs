//! The virtio-mmio register file against a hostile driver, with a
//! virtio-rng device behind it.
//!
//! Input: the driver's setup header (queue size, features) and ops (see
//! the crate docs). Device ops go through registers: a kick writes
//! QueueNotify or comes through the ioeventfd path, a reset writes status
//! 0, activation is the whole initialisation (status steps, features,
//! queue 0 at the fuzz layout, DRIVER_OK), config ops access the window
//! from 0x100. The target's own ops: 0 a read and 1 a write of any
//! register (u16 offset, size selector, u64 value), 2 one status step.
#![no_main]

use std::sync::Arc;

use keel_vmm::devices::bus::BusDevice;
use keel_vmm::devices::virtio::{Interrupt, MmioTransport, Rng, VirtioTransport, MMIO_LEN};
use keel_vmm_fuzz::{
    queue_layout, CountingInterrupt, Driver, Input, Step, DEVICE_OPS, OP_ACTIVATE, OP_KICK,
    OP_READ_CONFIG, OP_RESET,
};
use libfuzzer_sys::fuzz_target;

const SIZES: [usize; 8] = [1, 2, 4, 8, 4, 4, 4, 3];

const QUEUE_SEL: u64 = 0x30;
const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
const QUEUE_NOTIFY: u64 = 0x50;
const INTERRUPT_STATUS: u64 = 0x60;
const STATUS: u64 = 0x70;
const CONFIG: u64 = 0x100;
/// Registers that move the queue away from the layout the driver checks.
const QUEUE_LAYOUT_REGS: std::ops::Range<u64> = 0x80..0xa8;
const DRIVER_OK: u32 = 4;
const NEEDS_RESET: u32 = 0x40;

fn write32(transport: &mut MmioTransport, offset: u64, value: u32) {
    transport.write(offset, &value.to_le_bytes());
}

fn read32(transport: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    transport.read(offset, &mut data);
    u32::from_le_bytes(data)
}

/// ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK, queue 0, DRIVER_OK.
fn initialise(transport: &mut MmioTransport, size: u16) {
    write32(transport, STATUS, 1);
    write32(transport, STATUS, 3);
    write32(transport, 0x24, 1);
    write32(transport, 0x20, 1);
    write32(transport, STATUS, 11);
    let (desc, avail, used) = queue_layout(0);
    write32(transport, QUEUE_SEL, 0);
    write32(transport, QUEUE_NUM, u32::from(size));
    for (reg, addr) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
        write32(transport, reg, addr as u32);
        write32(transport, reg + 4, (addr >> 32) as u32);
    }
    write32(transport, QUEUE_READY, 1);
    write32(transport, STATUS, 15);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut driver = Driver::new(&mut input, 1, u64::MAX);
    let line: Arc<dyn Interrupt> = Arc::new(CountingInterrupt::default());
    let mut transport = MmioTransport::new(Box::new(Rng::new()), driver.mem.clone(), line)
        .expect("cannot create the transport");
    let mut status = 0;
    loop {
        match driver.step(&mut input, None) {
            Step::Done => {}
            Step::Device(OP_KICK, input) => {
                let queue = input.u8();
                if queue & 0x80 != 0 {
                    write32(&mut transport, QUEUE_NOTIFY, u32::from(queue & 1));
                } else {
                    transport.queue_notify(u16::from(queue & 1));
                }
            }
            Step::Device(OP_RESET, _) => write32(&mut transport, STATUS, 0),
            Step::Device(OP_ACTIVATE, _) => initialise(&mut transport, driver.queue_size(0)),
            Step::Device(OP_READ_CONFIG, input) => {
                let offset = CONFIG + u64::from(input.u8());
                let mut data = vec![0u8; SIZES[usize::from(input.u8() % 8)]];
                transport.read(offset, &mut data);
            }
            Step::Device(tag, input) if tag < DEVICE_OPS => {
                let offset = CONFIG + u64::from(input.u8());
                let data = input.blob();
                transport.write(offset, &data[..data.len().min(8)]);
            }
            Step::Device(tag, input) => match (tag - DEVICE_OPS) % 3 {
                0 => {
                    let offset = u64::from(input.u16()) % (MMIO_LEN + 0x10);
                    let mut data = vec![0u8; SIZES[usize::from(input.u8() % 8)]];
                    transport.read(offset, &mut data);
                }
                1 => {
                    let offset = u64::from(input.u16()) % (MMIO_LEN + 0x10);
                    let size = SIZES[usize::from(input.u8() % 8)];
                    let value = input.u64().to_le_bytes();
                    if QUEUE_LAYOUT_REGS.contains(&offset) || offset == QUEUE_NUM {
                        driver.taint();
                    }
                    transport.write(offset, &value[..size]);
                }
                _ => {
                    let step = [1, 3, 11, 15, 0x80][usize::from(input.u8() % 5)];
                    write32(&mut transport, STATUS, step);
                }
            },
            Step::End => break,
        }
        // Follow the device's state as the driver reads it from Status.
        let now = read32(&mut transport, STATUS);
        if now == 0 && status != 0 {
            driver.clear_rings();
        }
        driver.set_active(now & DRIVER_OK != 0 && now & NEEDS_RESET == 0);
        status = now;
        driver.check_used();
    }
    // Whatever the driver did, a reset brings the transport back.
    write32(&mut transport, STATUS, 0);
    assert_eq!(read32(&mut transport, STATUS), 0, "reset left a status");
    assert_eq!(
        read32(&mut transport, INTERRUPT_STATUS),
        0,
        "reset left an interrupt"
    );
});
