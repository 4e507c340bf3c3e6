//! The demo guest's network check: each NIC is brought up and asks DHCP for
//! a lease, and the answer is printed. With a bridge-mode NIC that shows
//! the whole path (guest, tap, the host's bridge, the uplink, the LAN's
//! DHCP server) working.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use keel_common::dhcp::{self, SYSFS_NET};

const DHCP_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts one thread per Ethernet NIC; each prints one line.
pub fn report_leases() {
    let Ok(entries) = std::fs::read_dir(SYSFS_NET) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("eth"))
        .collect();
    names.sort();
    for name in names {
        let _ = std::thread::Builder::new()
            .name(format!("dhcp-{name}"))
            .spawn(move || {
                let line = match lease(&name) {
                    Ok(line) => line,
                    Err(err) => format!("demo: {name}: {err}"),
                };
                println!("{line}");
                let _ = io::stdout().flush();
            });
    }
}

fn lease(ifname: &str) -> Result<String, String> {
    set_up(ifname).map_err(|e| format!("cannot bring the link up: {e}"))?;
    let mac = dhcp::read_mac(Path::new(SYSFS_NET), ifname)
        .map(|m| keel_common::guest::MacAddr(m).to_string())
        .unwrap_or_default();
    let lease = dhcp::lease_once(ifname, DHCP_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(format!(
        "demo: {ifname} ({mac}) got {}/{} by DHCP, router {}",
        lease.address,
        lease.prefix_len,
        lease
            .router
            .map_or_else(|| "none".to_owned(), |r| r.to_string())
    ))
}

/// `ip link set IFNAME up`, with the classic ioctls: the demo guest needs
/// nothing more.
fn set_up(ifname: &str) -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = keel_common::tun::ifreq_named(ifname)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: SIOCGIFFLAGS fills the ifreq, which has a NUL-terminated name.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS set ifru_flags; any c_short is valid.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the same ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
