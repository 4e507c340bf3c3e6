//! Watches input devices for the power key: the ACPI power button (QEMU's
//! `system_powerdown`, a BMC's soft power-off) arrives as `KEY_POWER` on an
//! evdev device.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: a 16-byte timeval, type, code, value.
pub const INPUT_EVENT_SIZE: usize = 24;

/// The open input devices.
#[derive(Default)]
pub struct PowerButton {
    devices: Vec<(PathBuf, File)>,
}

impl PowerButton {
    /// Opens every `/dev/input/event*` device not already open.
    pub fn rescan(&mut self) {
        let Ok(dir) = std::fs::read_dir("/dev/input") else {
            return;
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("event"))
            })
            .collect();
        paths.sort();
        for path in paths {
            if self.devices.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(OFlag::O_NONBLOCK.bits())
                .open(&path);
            match opened {
                Ok(file) => {
                    log::info!(
                        "watching {} ({}) for the power key",
                        path.display(),
                        device_name(&path)
                    );
                    self.devices.push((path, file));
                }
                Err(err) => log::warn!("cannot open {}: {err}", path.display()),
            }
        }
    }

    /// File descriptors to poll.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.devices.iter().map(|(_, f)| f.as_fd()).collect()
    }

    /// Reads what is pending on device `index`; true if the power key was pressed.
    pub fn read_pressed(&mut self, index: usize) -> bool {
        let Some((path, file)) = self.devices.get_mut(index) else {
            return false;
        };
        let mut buf = [0u8; INPUT_EVENT_SIZE * 16];
        let mut pressed = false;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pressed |= contains_power_press(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    log::warn!(
                        "{} stopped working ({err}); no longer watching it",
                        path.display()
                    );
                    self.devices.remove(index);
                    break;
                }
            }
        }
        pressed
    }
}

/// The input device's name from sysfs, e.g. "Power Button".
fn device_name(path: &std::path::Path) -> String {
    let Some(node) = path.file_name().and_then(|n| n.to_str()) else {
        return "unknown".into();
    };
    std::fs::read_to_string(format!("/sys/class/input/{node}/device/name"))
        .map(|n| n.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// True if `events` (whole `input_event` records) hold a power-key press.
pub fn contains_power_press(events: &[u8]) -> bool {
    events.chunks_exact(INPUT_EVENT_SIZE).any(|ev| {
        let kind = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        kind == EV_KEY && code == KEY_POWER && value == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut ev = vec![0u8; 16];
        ev.extend_from_slice(&kind.to_ne_bytes());
        ev.extend_from_slice(&code.to_ne_bytes());
        ev.extend_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn finds_a_power_press_among_other_events() {
        let mut events = event(0, 0, 0);
        events.extend(event(EV_KEY, 30, 1));
        assert!(!contains_power_press(&events));
        events.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(contains_power_press(&events));
    }

    #[test]
    fn release_and_partial_records_do_not_count() {
        assert!(!contains_power_press(&event(EV_KEY, KEY_POWER, 0)));
        let press = event(EV_KEY, KEY_POWER, 1);
        assert!(!contains_power_press(&press[..INPUT_EVENT_SIZE - 1]));
    }
}
