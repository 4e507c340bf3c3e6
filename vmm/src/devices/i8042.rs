//! A minimal i8042 keyboard controller: enough for Linux to find a keyboard,
//! to reset the machine (command 0xFE, or pulsing the output port's reset
//! line), and for the VMM to send ctrl-alt-del.

use std::collections::VecDeque;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use crate::exit::{ExitSignal, VmExit};

const OFS_DATA: u64 = 0;
const OFS_STATUS: u64 = 4;

const SB_OUT_DATA_AVAIL: u8 = 0x01;
const SB_I8042_CMD_DATA: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_RESET_CPU: u8 = 0xfe;

const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET_OK: u8 = 0xaa;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_CMD_GET_ID: u8 = 0xf2;
const BUF_LEN: usize = 16;

/// Scan codes (set 2) for ctrl-alt-del, press then release.
const CTRL_ALT_DEL: [u8; 10] = [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0];

/// The controller and its keyboard.
pub struct I8042 {
    status: u8,
    control: u8,
    outp: u8,
    pending_cmd: Option<u8>,
    buf: VecDeque<u8>,
    irq: EventFd,
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub fn new(irq: EventFd, exit: Arc<ExitSignal>) -> Self {
        I8042 {
            status: SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0x01,
            pending_cmd: None,
            buf: VecDeque::with_capacity(BUF_LEN),
            irq,
            exit,
        }
    }

    fn push(&mut self, byte: u8) -> bool {
        if self.buf.len() >= BUF_LEN {
            return false;
        }
        self.buf.push_back(byte);
        self.status |= SB_OUT_DATA_AVAIL;
        self.raise_irq();
        true
    }

    fn raise_irq(&self) {
        if self.control & CB_KBD_INT != 0 {
            if let Err(err) = self.irq.write(1) {
                log::warn!("cannot raise the keyboard interrupt: {err}");
            }
        }
    }

    /// Queues ctrl-alt-del; the guest sees the keys and reboots or shuts
    /// down as it is configured to. False if the buffer is too full.
    pub fn send_ctrl_alt_del(&mut self) -> bool {
        if BUF_LEN - self.buf.len() < CTRL_ALT_DEL.len() {
            return false;
        }
        CTRL_ALT_DEL.iter().all(|b| self.push(*b))
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_I8042_CMD_DATA;
        match cmd {
            CMD_READ_CTR => {
                let control = self.control;
                self.push(control);
            }
            CMD_READ_OUTP => {
                let outp = self.outp;
                self.push(outp);
            }
            CMD_WRITE_CTR | CMD_WRITE_OUTP => self.pending_cmd = Some(cmd),
            CMD_RESET_CPU => self.exit.request(VmExit::Reboot),
            // Other commands (aux port, self tests) get no answer; Linux
            // times out on them and carries on without those features.
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.status &= !SB_I8042_CMD_DATA;
        match self.pending_cmd.take() {
            Some(CMD_WRITE_CTR) => self.control = value,
            Some(CMD_WRITE_OUTP) => {
                self.outp = value;
                // Bit 0 low pulses the CPU reset line.
                if value & 0x01 == 0 {
                    self.exit.request(VmExit::Reboot);
                }
            }
            _ => {
                // A keyboard command: acknowledge; reset also reports a
                // pass and "get ID" an MF2 keyboard, so Linux's atkbd
                // probe finishes at once instead of timing out.
                self.push(KBD_ACK);
                match value {
                    KBD_CMD_RESET => {
                        self.push(KBD_RESET_OK);
                    }
                    KBD_CMD_GET_ID => {
                        self.push(0xab);
                        self.push(0x83);
                    }
                    _ => {}
                }
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match offset {
            OFS_STATUS => self.status,
            OFS_DATA => {
                let byte = self.buf.pop_front().unwrap_or(0);
                if self.buf.is_empty() {
                    self.status &= !SB_OUT_DATA_AVAIL;
                } else {
                    // As the real controller does while its output buffer
                    // is full: interrupt again. Edges raised while the
                    // guest was busy coalesce, and the rest would strand.
                    self.raise_irq();
                }
                byte
            }
            _ => 0xff,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            OFS_STATUS => self.command(value),
            OFS_DATA => self.data(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (I8042, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().expect("eventfd"));
        (
            I8042::new(EventFd::new(libc::EFD_NONBLOCK).expect("irq"), exit.clone()),
            exit,
        )
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_requests_a_reboot() {
        let (mut dev, exit) = device();
        dev.write(OFS_STATUS, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }

    #[test]
    fn output_port_reset_line_requests_a_reboot() {
        let (mut dev, exit) = device();
        dev.write(OFS_STATUS, &[CMD_WRITE_OUTP]);
        dev.write(OFS_DATA, &[0x02]);
        assert_eq!(exit.reason(), Some(VmExit::Reboot));
    }

    #[test]
    fn control_byte_round_trips_and_keyboard_acks() {
        let (mut dev, exit) = device();
        dev.write(OFS_STATUS, &[CMD_WRITE_CTR]);
        dev.write(OFS_DATA, &[0x45]);
        dev.write(OFS_STATUS, &[CMD_READ_CTR]);
        assert_ne!(read(&mut dev, OFS_STATUS) & SB_OUT_DATA_AVAIL, 0);
        assert_eq!(read(&mut dev, OFS_DATA), 0x45);
        assert_eq!(read(&mut dev, OFS_STATUS) & SB_OUT_DATA_AVAIL, 0);
        dev.write(OFS_DATA, &[0xff]);
        assert_eq!(
            (read(&mut dev, OFS_DATA), read(&mut dev, OFS_DATA)),
            (KBD_ACK, KBD_RESET_OK)
        );
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn ctrl_alt_del_is_queued_and_raises_the_interrupt() {
        let (mut dev, _) = device();
        assert!(dev.send_ctrl_alt_del());
        assert!(dev.irq.read().expect("irq raised") >= 1);
        let bytes: Vec<u8> = (0..CTRL_ALT_DEL.len())
            .map(|_| read(&mut dev, OFS_DATA))
            .collect();
        assert_eq!(bytes, CTRL_ALT_DEL);
    }

    #[test]
    fn hostile_access_is_harmless() {
        let (mut dev, exit) = device();
        for _ in 0..100 {
            dev.write(OFS_DATA, &[0x00]);
        }
        assert!(dev.buf.len() <= BUF_LEN, "buffer is bounded");
        assert!(!dev.send_ctrl_alt_del(), "a full buffer refuses more keys");
        dev.write(OFS_DATA, &[]);
        dev.read(OFS_DATA, &mut []);
        assert_eq!(read(&mut dev, 2), 0xff);
        assert_eq!(exit.reason(), None);
    }
}
