//! The guest console: a 16550A UART (vm-superio) on COM1 whose output goes
//! to every console sink (the VMM's stdout, a size-capped log file, and
//! attached control-socket clients).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Raises the UART's interrupt through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A console log file that never grows past `cap` bytes: when full, it is
/// moved to `NAME.1` (replacing the previous one) and started afresh.
pub struct CappedLog {
    path: PathBuf,
    file: File,
    written: u64,
    cap: u64,
}

impl CappedLog {
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(CappedLog {
            path: path.to_path_buf(),
            file,
            written,
            cap: cap.max(1024),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.written + data.len() as u64 > self.cap {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

/// Where console output goes. Shared with the control socket, which adds
/// and removes attached clients.
#[derive(Default)]
pub struct ConsoleSinks {
    pub stdout: bool,
    pub log: Option<CappedLog>,
    /// Attached control-socket clients, sent `Console` frames; a client
    /// that fails or stalls is dropped.
    pub clients: Vec<std::os::unix::net::UnixStream>,
}

impl ConsoleSinks {
    pub fn write(&mut self, data: &[u8]) {
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(data);
            let _ = out.flush();
        }
        if let Some(log) = self.log.as_mut() {
            if let Err(err) = log.write(data) {
                log::warn!("console log write failed ({err}); logging stopped");
                self.log = None;
            }
        }
        let frame = keel_common::vmm_api::VmmResponse::Console(data.to_vec());
        self.clients
            .retain_mut(|client| keel_common::vmm_api::write_frame(client, &frame).is_ok());
    }
}

/// The UART's output writer.
pub struct SinkWriter(pub Arc<Mutex<ConsoleSinks>>);

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
    pub uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, SinkWriter>,
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

    #[test]
    fn output_reaches_the_log_and_clients_and_input_reaches_the_guest() {
        let dir = std::env::temp_dir().join(format!("keel-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = CappedLog::open(&dir.join("console.log"), 1024).expect("log");
        let (tx, mut rx) = std::os::unix::net::UnixStream::pair().expect("pair");
        let sinks = Arc::new(Mutex::new(ConsoleSinks {
            stdout: false,
            log: Some(log),
            clients: vec![tx],
        }));
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

    #[test]
    fn log_is_capped_by_rotation() {
        let dir = std::env::temp_dir().join(format!("keel-caplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("c.log");
        let mut log = CappedLog::open(&path, 1024).expect("open");
        for _ in 0..10 {
            log.write(&[b'a'; 300]).expect("write");
        }
        assert!(std::fs::metadata(&path).expect("meta").len() <= 1024);
        assert!(
            std::fs::metadata(dir.join("c.log.1"))
                .expect("rotated")
                .len()
                <= 1024
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
