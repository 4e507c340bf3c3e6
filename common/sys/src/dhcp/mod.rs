//! A DHCPv4 client for interfaces that have no address yet: smoltcp's DHCP
//! state machine on an `AF_PACKET` socket (an ordinary UDP socket cannot
//! send from 0.0.0.0 before the kernel has an address).
//!
//! Shared by init (the host's uplink or bridge) and the demo guest (its
//! virtio NIC). Negotiating is all it does: the caller applies each lease.

pub mod client;
pub mod packet;

use std::fs;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

pub use client::{DhcpClient, DhcpEvent, PACKET_BUFFER_LEN};
pub use packet::PacketDevice;

use keel_common::mac::MacAddr;

/// Where the kernel lists network interfaces.
pub const SYSFS_NET: &str = "/sys/class/net";

/// An IPv4 configuration obtained by DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The lease time the server granted; `None` if it sent none (smoltcp
    /// then assumes 120 s).
    pub lease_secs: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("{ifname:?} is not a valid interface name.")]
    BadName { ifname: String },
    #[error("Interface {ifname} has an unusable MAC address {mac:?}.")]
    BadMac { ifname: String, mac: String },
    #[error("Interface {ifname} is not an Ethernet device.")]
    NotEthernet { ifname: String },
    #[error("Could not open a packet socket on {ifname}: {source}.")]
    PacketSocket { ifname: String, source: io::Error },
    #[error("Interface {ifname} failed during DHCP: {source}.")]
    Device { ifname: String, source: io::Error },
    #[error("No DHCP lease on {ifname} within {secs} s.")]
    Timeout { ifname: String, secs: u64 },
}

/// A monotonic clock for smoltcp, which otherwise reads the wall clock (and
/// that may jump at boot when the RTC or NTP sets it).
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            start: std::time::Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn now(&self) -> smoltcp::time::Instant {
        let micros = i64::try_from(self.elapsed().as_micros()).unwrap_or(i64::MAX);
        smoltcp::time::Instant::from_micros(micros)
    }
}

/// Sleeps until the packet socket (or `other`, say a link monitor) is
/// readable or `wait` passes.
pub fn wait_readable(
    device: &PacketDevice,
    other: Option<std::os::fd::BorrowedFd<'_>>,
    wait: Duration,
) {
    let mut fds = [
        libc::pollfd {
            fd: device.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: other.map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Round up so a sub-millisecond timer does not become a busy loop.
    let ms = wait
        .as_micros()
        .div_ceil(1000)
        .min(libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: fds is an array of two valid pollfds (a negative fd is
    // ignored by poll) and the count passed matches it. Errors (EINTR) just
    // end the wait early; callers re-check everything.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

/// How long to sleep before the next poll of `client`, capped at `cap`.
pub fn next_wait(
    client: &mut DhcpClient<'_, PacketDevice>,
    clock: &Clock,
    cap: Duration,
) -> Duration {
    client
        .poll_delay(clock.now())
        .map_or(Duration::MAX, |d| Duration::from_micros(d.total_micros()))
        .min(cap)
}

/// Whether a packet I/O error means the interface is gone (no point in
/// waiting) rather than a lost packet (ENETDOWN while the link settles).
pub fn is_fatal(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENODEV | libc::ENXIO))
}

/// Polls `client` until it reports a lease or `timeout` passes.
pub fn acquire(
    client: &mut DhcpClient<'_, PacketDevice>,
    clock: &Clock,
    timeout: Duration,
) -> Result<Lease, DhcpError> {
    let ifname = client.ifname().to_owned();
    let deadline = clock.elapsed() + timeout;
    loop {
        if let Some(DhcpEvent::Configured(lease)) = client.poll(clock.now()) {
            return Ok(lease);
        }
        if let Some(err) = client.device().take_error() {
            if is_fatal(&err) {
                return Err(DhcpError::Device {
                    ifname,
                    source: err,
                });
            }
            log::debug!("{ifname}: packet I/O error during DHCP: {err}");
        }
        let elapsed = clock.elapsed();
        if elapsed >= deadline {
            return Err(DhcpError::Timeout {
                ifname,
                secs: timeout.as_secs(),
            });
        }
        let wait = next_wait(client, clock, deadline - elapsed);
        wait_readable(client.device(), None, wait);
    }
}

/// The interface's MTU from sysfs, 1500 if unreadable.
pub fn read_mtu(sysfs_net: &Path, ifname: &str) -> usize {
    fs::read_to_string(sysfs_net.join(ifname).join("mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// Reads the interface's MAC address from `<sysfs_net>/<ifname>/address`.
pub fn read_mac(sysfs_net: &Path, ifname: &str) -> Option<[u8; 6]> {
    let text = fs::read_to_string(sysfs_net.join(ifname).join("address")).ok()?;
    text.trim().parse::<MacAddr>().ok().map(|mac| mac.0)
}

/// A seed for DHCP transaction ids: from the kernel RNG, else time and MAC.
pub fn seed(mac: [u8; 6]) -> u64 {
    let mut bytes = [0u8; 8];
    let from_kernel = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if from_kernel {
        return u64::from_ne_bytes(bytes);
    }
    let mut mac8 = [0u8; 8];
    mac8[..6].copy_from_slice(&mac);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from_ne_bytes(mac8)
}

/// Gets one lease on `ifname` (which must be up) within `timeout`: the
/// whole exchange for a caller that does not renew (the demo guest).
pub fn lease_once(ifname: &str, timeout: Duration) -> Result<Lease, DhcpError> {
    let sysfs = Path::new(SYSFS_NET);
    let mac = read_mac(sysfs, ifname).ok_or_else(|| DhcpError::BadMac {
        ifname: ifname.to_owned(),
        mac: "(unreadable)".to_owned(),
    })?;
    let device = PacketDevice::open(ifname, read_mtu(sysfs, ifname))?;
    let mut buffer = vec![0u8; PACKET_BUFFER_LEN];
    let clock = Clock::start();
    let mut client = DhcpClient::new(ifname, device, mac, seed(mac), &mut buffer, clock.now())?;
    acquire(&mut client, &clock, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::start();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[test]
    fn mtu_defaults_to_1500() {
        let tmp = std::env::temp_dir().join(format!("keel-mtu-{}", std::process::id()));
        fs::create_dir_all(tmp.join("eth0")).unwrap();
        assert_eq!(read_mtu(&tmp, "eth1"), 1500);
        fs::write(tmp.join("eth0/mtu"), "9000\n").unwrap();
        assert_eq!(read_mtu(&tmp, "eth0"), 9000);
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn missing_interface_is_named() {
        let err = lease_once("keel-none0", Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("keel-none0"), "{err}");
    }
}
