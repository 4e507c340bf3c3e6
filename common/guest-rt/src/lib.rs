//! The small runtime of Keel's guest-side init programs: the demo guest the
//! image ships, the test bed's L1 init and its L2 test guest. Each is PID 1
//! of a tiny machine with no userland, so the few things `mount`, `ip` and
//! `poweroff` would do are here, once.

mod link;

use std::io::Write;
use std::time::Duration;

use nix::mount::{mount, MsFlags};

pub use link::{configure_interface, link_up};

/// Mounts /proc, /sys, /dev and a /tmp tmpfs; a failure is printed, not
/// fatal, because PID 1 carries on without them.
pub fn mount_basics() {
    const MOUNTS: [(&str, &str, &str); 4] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    for (source, target, fstype) in MOUNTS {
        let _ = std::fs::create_dir_all(target);
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(err) => println!("mount {target}: {err}"),
        }
    }
}

/// The value of `key=` on the kernel command line `cmdline`.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// The running kernel's command line, empty when /proc is not mounted.
pub fn kernel_cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Syncs and powers the machine off. PID 1 must never return, so a refused
/// power-off is retried.
pub fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    loop {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cmdline_values() {
        let cmdline = "console=ttyS0 keel.action=reboot keel.actionx=1";
        assert_eq!(
            cmdline_value(cmdline, "keel.action").as_deref(),
            Some("reboot")
        );
        assert_eq!(cmdline_value(cmdline, "keel.actionx").as_deref(), Some("1"));
        assert_eq!(cmdline_value(cmdline, "missing"), None);
        assert_eq!(cmdline_value(cmdline, "console").as_deref(), Some("ttyS0"));
    }
}
