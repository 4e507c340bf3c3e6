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

/// Brings interface `name` up, first giving it `address` (IP, netmask) if
/// set, with the same ioctls `ip` uses.
pub fn configure_interface(name: &str, address: Option<([u8; 4], [u8; 4])>) -> Result<(), String> {
    use nix::libc;
    // SAFETY: a plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err("socket".into());
    }
    let mut req: libc::ifreq = unsafe_zeroed_ifreq();
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().chain(std::iter::once(0)))
    {
        *dst = src as libc::c_char;
    }
    let set_addr = |req: &mut libc::ifreq, ip: [u8; 4], request: libc::Ioctl| -> bool {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the sockaddr union member it is copied
        // into, and the ioctl reads the ifreq this call owns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&sin as *const libc::sockaddr_in).cast::<u8>(),
                (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
                std::mem::size_of::<libc::sockaddr_in>(),
            );
            libc::ioctl(fd, request, req as *mut libc::ifreq) == 0
        }
    };
    let ok = match address {
        Some((ip, mask)) => {
            set_addr(&mut req, ip, libc::SIOCSIFADDR)
                && set_addr(&mut req, mask, libc::SIOCSIFNETMASK)
        }
        None => true,
    };
    // SAFETY: reads and writes the flags of the ifreq this function owns.
    let up = ok
        && unsafe {
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) == 0 && {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req as *mut libc::ifreq) == 0
            }
        };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if up {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn unsafe_zeroed_ifreq() -> nix::libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) value.
    unsafe { std::mem::zeroed() }
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
