//! Shared helpers for the test bed's two init programs.
//!
//! `keel-testbed` is PID 1 of the L1 machine (the Keel kernel in QEMU TCG):
//! it runs keel-vmm for each scenario and reports on its console.
//! `keel-test-guest` is PID 1 of the L2 guest keel-vmm boots: it checks its
//! devices, reports, and ends the way the scenario asks.

use nix::mount::{mount, MsFlags};

/// Mounts /proc, /sys, /dev and a /tmp tmpfs; errors are reported, not fatal.
pub fn mount_basics() {
    let mounts: [(&str, &str, &str); 4] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    for (source, target, fstype) in mounts {
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

/// The value of `key=` on the kernel command line.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|word| {
            word.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
        .map(str::to_string)
}

/// Powers the machine off; PID 1 must never return.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
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
        assert_eq!(cmdline_value(cmdline, "missing"), None);
    }
}
