//! A small stderr logger: `keel-vmm[NAME]: level: message`.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    prefix: String,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            eprintln!("{}: {level}{}", self.prefix, record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger for guest `name`.
pub fn init(name: &str, level: LevelFilter) {
    let logger = Box::new(StderrLogger {
        prefix: format!("keel-vmm[{name}]"),
    });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
