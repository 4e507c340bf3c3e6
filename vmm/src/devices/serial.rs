//! The guest console: a 16550A UART (vm-superio) on COM1 whose output goes
//! to the console sinks (see [`crate::console`]).

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use crate::console::ConsoleSinks;

/// Raises the UART's interrupt through an irqfd.
struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The UART's output writer.
struct SinkWriter(Arc<Mutex<ConsoleSinks>>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut sinks) = self.0.lock() {
            sinks.write(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// COM1 on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, SinkWriter>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, sinks: Arc<Mutex<ConsoleSinks>>) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), SinkWriter(sinks)),
        }
    }

    /// Feeds console input to the guest; returns how many bytes fit.
    pub fn input(&mut self, data: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(data).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) {
            if let Err(err) = self.uart.write(offset, value) {
                log::warn!("serial write failed: {err:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::CappedLog;
    use crate::control::peer::Peer;

    #[test]
    fn output_reaches_the_log_and_clients_and_input_reaches_the_guest() {
        let dir = std::env::temp_dir().join(format!("keel-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = CappedLog::open(&dir.join("console.log"), 1024).expect("log");
        let (tx, mut rx) = std::os::unix::net::UnixStream::pair().expect("pair");
        let sinks = Arc::new(Mutex::new(ConsoleSinks::new(false, Some(log))));
        sinks
            .lock()
            .expect("sinks")
            .attach(Arc::new(Peer::new(tx).expect("peer")));
        let mut dev = SerialDevice::new(EventFd::new(libc::EFD_NONBLOCK).expect("irq"), sinks);
        for b in b"hello" {
            dev.write(0, &[*b]);
        }
        assert_eq!(
            std::fs::read(dir.join("console.log")).expect("read"),
            b"hello"
        );
        let mut got = Vec::new();
        for _ in 0..5 {
            match keel_common::vmm_api::read_frame(&mut rx).expect("frame") {
                keel_common::vmm_api::VmmResponse::Console(bytes) => got.extend(bytes),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, b"hello");
        assert_eq!(dev.input(b"x"), 1);
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        dev.read(0, &mut rbr);
        assert_eq!(rbr[0], b'x');
        dev.write(0x1000, &[1]);
        dev.read(0x1000, &mut rbr);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
