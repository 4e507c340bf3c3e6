//! The init logger: every record goes to each active console and to the
//! kernel log, so it is seen on serial and on screen and kept in `dmesg`.
//!
//! The kernel command line sets `loglevel=3`, so the kernel does not echo
//! our `/dev/kmsg` lines to the consoles a second time.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Sinks {
    consoles: Vec<File>,
    kmsg: Option<File>,
}

/// A logger writing to consoles and `/dev/kmsg`.
pub struct InitLogger {
    sinks: Mutex<Sinks>,
}

static LOGGER: InitLogger = InitLogger {
    sinks: Mutex::new(Sinks {
        consoles: Vec::new(),
        kmsg: None,
    }),
};

/// Lines kept for `keelctl logs` (init's control socket serves them).
const RECENT_LINES: usize = 1000;

static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// The last `tail` lines init logged, oldest first.
pub fn recent(tail: usize) -> Vec<String> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let skip = recent.len().saturating_sub(tail);
    recent.iter().skip(skip).cloned().collect()
}

fn remember(line: &str) {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == RECENT_LINES {
        recent.pop_front();
    }
    recent.push_back(line.to_string());
}

/// Installs the logger. Safe to call again after `/dev` is mounted: it then
/// reopens the sinks, which may not have existed the first time.
pub fn init() {
    LOGGER.reopen();
    // A second set_logger fails harmlessly; the sinks were refreshed above.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Writes `line` to the consoles and the kernel log without a level prefix:
/// used for the boot banner, which tests and operators match exactly.
pub fn announce(line: &str) {
    LOGGER.write(Level::Info, line);
}

/// Writes `line` to the consoles only: not to the recent lines that
/// `keelctl logs` serves, nor to the kernel log. For secrets meant for
/// whoever stands at the host, such as the pairing code.
pub fn console_only(line: &str) {
    LOGGER.write_consoles(line);
}

impl InitLogger {
    fn write_consoles(&self, line: &str) {
        let Ok(mut sinks) = self.sinks.lock() else {
            return;
        };
        for console in sinks.consoles.iter_mut() {
            let _ = console.write_all(format!("{line}\r\n").as_bytes());
        }
        if sinks.consoles.is_empty() {
            eprintln!("{line}");
        }
    }

    fn reopen(&self) {
        let mut consoles = Vec::new();
        for name in active_consoles() {
            if let Ok(file) = OpenOptions::new().write(true).open(format!("/dev/{name}")) {
                consoles.push(file);
            }
        }
        if consoles.is_empty() {
            if let Ok(file) = OpenOptions::new().write(true).open("/dev/console") {
                consoles.push(file);
            }
        }
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        if let Ok(mut sinks) = self.sinks.lock() {
            *sinks = Sinks { consoles, kmsg };
        }
    }

    fn write(&self, level: Level, line: &str) {
        remember(line);
        let Ok(mut sinks) = self.sinks.lock() else {
            return;
        };
        // Console output is best effort: a wedged console must not stop init.
        for console in sinks.consoles.iter_mut() {
            let _ = console.write_all(format!("{line}\r\n").as_bytes());
        }
        if let Some(kmsg) = sinks.kmsg.as_mut() {
            let _ = kmsg.write_all(format!("<{}>{line}\n", kmsg_level(level)).as_bytes());
        }
        if sinks.consoles.is_empty() && sinks.kmsg.is_none() {
            // Early boot or a test run outside the appliance.
            eprintln!("{line}");
        }
    }
}

impl Log for InitLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match record.level() {
            Level::Error => format!("keel-init: error: {}", record.args()),
            Level::Warn => format!("keel-init: warning: {}", record.args()),
            _ => format!("keel-init: {}", record.args()),
        };
        self.write(record.level(), &line);
    }

    fn flush(&self) {}
}

/// Syslog level used for `/dev/kmsg` lines.
fn kmsg_level(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Console device names the kernel writes to, e.g. `["tty0", "ttyS0"]`.
fn active_consoles() -> Vec<String> {
    std::fs::read_to_string("/sys/class/tty/console/active")
        .map(|text| parse_active_consoles(&text))
        .unwrap_or_default()
}

fn parse_active_consoles(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_active_consoles() {
        assert_eq!(parse_active_consoles("tty0 ttyS0\n"), vec!["tty0", "ttyS0"]);
        assert!(parse_active_consoles("\n").is_empty());
    }

    #[test]
    fn recent_lines_are_kept_oldest_first_and_capped() {
        for i in 0..RECENT_LINES + 5 {
            remember(&format!("line {i}"));
        }
        let last = recent(2);
        assert_eq!(
            last,
            vec![
                format!("line {}", RECENT_LINES + 3),
                format!("line {}", RECENT_LINES + 4)
            ]
        );
        assert_eq!(recent(usize::MAX).len(), RECENT_LINES);
    }

    #[test]
    fn kmsg_levels_follow_syslog() {
        assert_eq!(kmsg_level(Level::Error), 3);
        assert_eq!(kmsg_level(Level::Warn), 4);
        assert_eq!(kmsg_level(Level::Info), 6);
    }
}
