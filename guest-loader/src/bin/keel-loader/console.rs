//! The console: every line the loader prints starts with `keel-loader:`,
//! and the library's `log` records (a broken config skipped, an entry
//! chosen) are printed the same way.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match record.level() {
            Level::Info => say(format_args!("{}", record.args())),
            level => say(format_args!(
                "{}: {}",
                level.as_str().to_lowercase(),
                record.args()
            )),
        }
    }

    fn flush(&self) {}
}

static CONSOLE: Console = Console;

/// Routes `log` records to the console.
pub fn init() {
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// Prints one `keel-loader:` line.
pub fn say(args: std::fmt::Arguments<'_>) {
    println!("keel-loader: {args}");
}
