//! The virtio-pci register file against a hostile driver, with a
//! virtio-rng device behind it: the BAR (common config, ISR, device
//! config, notify, MSI-X table and PBA) and the function's configuration
//! space (command register, MSI-X message control).
//!
//! Input: the driver's setup header (queue size, features) and ops (see
//! the crate docs). Device ops go through registers: a kick writes the
//! queue's notify address or comes through the ioeventfd path, a reset
//! writes device_status 0, activation is the whole initialisation (status
//! steps, features, queue 0 at the fuzz layout, DRIVER_OK) with MSI-X set
//! up first if the op's byte asks, config ops access the device window.
//! The target's own ops:
//!
//! ```text
//! 10 bar read      offset u16, size u8
//! 11 bar write     offset u16, size u8, value u64
//! 12 status step   u8 (one of 1, 3, 11, 15, 0x80)
//! 13 config read   offset u16, size u8
//! 14 config write  offset u16, size u8, value u32
//! 15 msix control  u8 (bit 0 enable, bit 1 function mask)
//! 16 command       u16
//! 17 vector entry  vector u8, flags u8 (bit 0 masked): program it
//! 18 assign vector u8 (0: config, else queue), vector u16
//! ```
//!
//! Checked: the used ring (see the crate docs); after every status-0
//! reset device_status reads 0, every queue_msix_vector NO_VECTOR and the
//! common config, ISR and PBA as right after creation; routes only for
//! vectors the table has, messages only on a route; no more interrupts
//! signalled than the device raised.
#![no_main]

use std::sync::atomic::Ordering;

use keel_vmm::devices::bus::BusDevice;
use keel_vmm::devices::pci::PciDevice;
use keel_vmm::devices::virtio::pci::{BAR_SIZE, NOTIFY_MULTIPLIER};
use keel_vmm::devices::virtio::{VirtioPciDevice, VirtioTransport, VIRTIO_MSI_NO_VECTOR};
use keel_vmm_fuzz::pci::{msix_cap_offset, size, RngFunction};
use keel_vmm_fuzz::{
    queue_layout, Driver, Input, Step, DEVICE_OPS, OP_ACTIVATE, OP_KICK, OP_READ_CONFIG, OP_RESET,
};
use libfuzzer_sys::fuzz_target;

const BAR: u64 = 0x1_0000_0000;

/// BAR layout (the capabilities say the same).
const DEVICE_CONFIG: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const ISR: u64 = 0x1000;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;

/// Common config fields.
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
const Q_DESC: u64 = 0x20;
/// Fields that move a queue away from the layout the driver checks.
const QUEUE_LAYOUT: std::ops::Range<u64> = 0x18..0x38;

const REG_COMMAND: usize = 0x04;
/// Memory decoding and bus mastering, as a driver turns them on.
const COMMAND_MEMORY_MASTER: u16 = 0x6;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const DRIVER_OK: u8 = 4;
const NEEDS_RESET: u8 = 0x40;

struct Function {
    dev: VirtioPciDevice,
    msix_control: usize,
}

impl Function {
    fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut data = vec![0u8; len];
        self.dev.read(offset, &mut data);
        let mut bytes = [0u8; 8];
        bytes[..len.min(8)].copy_from_slice(&data[..len.min(8)]);
        u64::from_le_bytes(bytes)
    }

    fn write(&mut self, offset: u64, len: usize, value: u64) {
        self.dev.write(offset, &value.to_le_bytes()[..len]);
    }

    fn status(&mut self) -> u8 {
        self.read(STATUS, 1) as u8
    }

    fn set_msix_control(&mut self, control: u16) {
        self.dev
            .write_config(self.msix_control, &control.to_le_bytes());
    }

    /// Vector `vector`'s table entry: some message, masked or not.
    fn program_vector(&mut self, vector: u64, masked: bool) {
        let entry = MSIX_TABLE + 16 * vector;
        self.write(entry, 8, 0xfee0_0000);
        self.write(entry + 8, 4, 0x30 + vector);
        self.write(entry + 12, 4, u64::from(masked));
    }

    /// What a Linux driver does: bus mastering, MSI-X with a vector for
    /// config and one for the queue if `msix`, status steps, features,
    /// queue 0 at the fuzz layout, DRIVER_OK.
    fn initialise(&mut self, queue_size: u16, msix: bool) {
        self.dev
            .write_config(REG_COMMAND, &COMMAND_MEMORY_MASTER.to_le_bytes());
        if msix {
            self.set_msix_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
            self.program_vector(0, false);
            self.program_vector(1, false);
            self.set_msix_control(MSIX_ENABLE);
        }
        self.write(STATUS, 1, 1);
        self.write(STATUS, 1, 3);
        for half in 0..2 {
            self.write(GFSELECT, 4, half);
            self.write(GF, 4, u64::from(u32::MAX));
        }
        self.write(STATUS, 1, 11);
        if msix {
            self.write(MSIX_CONFIG, 2, 0);
        }
        let (desc, avail, used) = queue_layout(0);
        self.write(Q_SELECT, 2, 0);
        self.write(Q_SIZE, 2, u64::from(queue_size));
        if msix {
            self.write(Q_MSIX, 2, 1);
        }
        for (i, addr) in [desc, avail, used].into_iter().enumerate() {
            self.write(Q_DESC + 8 * i as u64, 8, addr);
        }
        self.write(Q_ENABLE, 2, 1);
        self.write(STATUS, 1, 15);
    }

    /// Every common config field for queue 0 and a queue past the last,
    /// the ISR and the PBA: what "the initial state" means to a driver.
    /// Reads the ISR, which clears it.
    fn snapshot(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for q in 0..2 {
            self.write(Q_SELECT, 2, q);
            for offset in (Q_SIZE..Q_DESC).step_by(2) {
                out.push(self.read(offset, 2));
            }
            for offset in (Q_DESC..QUEUE_LAYOUT.end).step_by(8) {
                out.push(self.read(offset, 8));
            }
        }
        self.write(Q_SELECT, 2, 0);
        for (offset, len) in [
            (0x00, 4),
            (GFSELECT, 4),
            (GF, 4),
            (MSIX_CONFIG, 2),
            (NUM_QUEUES, 2),
            (STATUS, 1),
            (GENERATION, 1),
            (Q_SELECT, 2),
            (ISR, 1),
            (MSIX_PBA, 8),
        ] {
            out.push(self.read(offset, len));
        }
        out
    }

    /// Status 0, and the device is back where it started: no status, no
    /// vector assigned to any queue, every field as after creation.
    fn reset_and_check(&mut self, initial: &[u64]) {
        self.write(STATUS, 1, 0);
        assert_eq!(self.status(), 0, "reset left a status");
        let queues = self.read(NUM_QUEUES, 2);
        for q in 0..queues {
            self.write(Q_SELECT, 2, q);
            assert_eq!(
                self.read(Q_MSIX, 2),
                u64::from(VIRTIO_MSI_NO_VECTOR),
                "reset left queue {q}'s vector"
            );
        }
        assert_eq!(self.snapshot(), initial, "reset left the device changed");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut driver = Driver::new(&mut input, 1, u64::MAX);
    let RngFunction {
        mut device,
        routes,
        intx,
    } = RngFunction::new(driver.mem.clone(), BAR, 21);
    let msix_control = msix_cap_offset(&mut device).expect("an MSI-X capability") + 2;
    let mut f = Function {
        dev: device,
        msix_control,
    };
    let initial = f.snapshot();
    let mut status = 0;
    loop {
        match driver.step(&mut input, None) {
            Step::Done => {}
            Step::Device(OP_KICK, input) => {
                let queue = input.u8();
                if queue & 0x80 != 0 {
                    let q = u64::from(queue & 1);
                    f.write(NOTIFY + q * u64::from(NOTIFY_MULTIPLIER), 2, q);
                } else {
                    f.dev.queue_notify(u16::from(queue & 1));
                }
            }
            Step::Device(OP_RESET, _) => f.reset_and_check(&initial),
            Step::Device(OP_ACTIVATE, input) => {
                let msix = input.u8() & 1 != 0;
                f.initialise(driver.queue_size(0), msix);
            }
            Step::Device(OP_READ_CONFIG, input) => {
                let offset = DEVICE_CONFIG + u64::from(input.u8());
                f.read(offset, size(input.u8()));
            }
            Step::Device(tag, input) if tag < DEVICE_OPS => {
                let offset = DEVICE_CONFIG + u64::from(input.u8());
                let data = input.blob();
                f.dev.write(offset, &data[..data.len().min(8)]);
            }
            Step::Device(tag, input) => match (tag - DEVICE_OPS) % 9 {
                0 => {
                    let offset = u64::from(input.u16()) % (BAR_SIZE + 0x10);
                    f.read(offset, size(input.u8()));
                }
                1 => {
                    let offset = u64::from(input.u16()) % (BAR_SIZE + 0x10);
                    let len = size(input.u8());
                    let value = input.u64();
                    if QUEUE_LAYOUT.contains(&offset) {
                        driver.taint();
                    }
                    f.write(offset, len, value);
                }
                2 => {
                    let step = [1, 3, 11, 15, 0x80][usize::from(input.u8() % 5)];
                    f.write(STATUS, 1, step);
                }
                3 => {
                    let offset = usize::from(input.u16() % 0x1001);
                    let mut data = vec![0u8; size(input.u8())];
                    f.dev.read_config(offset, &mut data);
                }
                4 => {
                    let offset = usize::from(input.u16() % 0x1001);
                    let len = size(input.u8()).min(4);
                    let value = input.u32().to_le_bytes();
                    f.dev.write_config(offset, &value[..len]);
                }
                5 => {
                    let bits = input.u8();
                    let mut control = 0;
                    if bits & 1 != 0 {
                        control |= MSIX_ENABLE;
                    }
                    if bits & 2 != 0 {
                        control |= MSIX_FUNCTION_MASK;
                    }
                    f.set_msix_control(control);
                }
                6 => {
                    let command = input.u16();
                    f.dev.write_config(REG_COMMAND, &command.to_le_bytes());
                }
                7 => {
                    // Now and then a vector past the table.
                    let vector = u64::from(input.u8() % 3);
                    let masked = input.u8() & 1 != 0;
                    f.program_vector(vector, masked);
                }
                _ => {
                    let field = if input.u8() == 0 { MSIX_CONFIG } else { Q_MSIX };
                    let vector = input.u16();
                    f.write(field, 2, u64::from(vector));
                }
            },
            Step::End => break,
        }
        // Follow the device's state as the driver reads it from the status.
        let now = f.status();
        if now == 0 && status != 0 {
            driver.clear_rings();
        }
        driver.set_active(now & DRIVER_OK != 0 && now & NEEDS_RESET == 0);
        status = now;
        driver.check_used();
    }
    f.reset_and_check(&initial);
    // Every message sent and every INTx edge was an interrupt the device
    // raised (a vector left pending and dropped by a reset sends nothing).
    let signalled = intx.count.load(Ordering::Relaxed) + routes.sent.load(Ordering::Relaxed);
    let raised = f
        .dev
        .counters()
        .into_iter()
        .find_map(|(name, n)| (name == "interrupts").then_some(n))
        .expect("an interrupts counter");
    assert!(
        signalled <= raised,
        "{signalled} interrupts signalled, {raised} raised"
    );
});
