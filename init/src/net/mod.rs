//! Host network bring-up: pick the interface, bring `lo` and it up, get an
//! IPv4 lease over DHCP and apply it to the kernel.
//!
//! DHCP runs in user space with smoltcp's DHCPv4 state machine on an
//! `AF_PACKET` socket (the kernel interface has no address yet, so an
//! ordinary UDP socket could not do it). The lease is then written to the
//! kernel with the classic ioctls (address, netmask, default route).
//!
//! Not done yet: lease renewal. [`bring_up`] drops the DHCP client once the
//! lease is applied, so the address stays configured past the lease time
//! (fine for QEMU's slirp, which never reclaims it). To renew, a background
//! thread can own a [`dhcp::DhcpClient`] (see [`acquire`]) and keep polling
//! it, re-applying each `Configured` lease and removing the address on
//! `Deconfigured`. DNS servers are returned, not written anywhere.

pub mod dhcp;
pub mod link;
pub mod packet;

use std::fs;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use dhcp::{DhcpClient, DhcpEvent, PACKET_BUFFER_LEN};
use link::Control;
use packet::PacketDevice;

/// How long [`bring_up`] waits for a lease.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(20);

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
pub enum NetError {
    #[error("Could not read {path}: {source}.")]
    Sysfs { path: String, source: io::Error },
    #[error("No usable Ethernet interface was found in {sysfs}.")]
    NoInterface { sysfs: String },
    #[error("Network interface {ifname} does not exist.")]
    NoSuchInterface { ifname: String },
    #[error("{ifname:?} is not a valid interface name.")]
    BadName { ifname: String },
    #[error("Interface {ifname} has an unusable MAC address {mac:?}.")]
    BadMac { ifname: String, mac: String },
    #[error("Interface {ifname} is not an Ethernet device.")]
    NotEthernet { ifname: String },
    #[error("Prefix length /{prefix_len} is not between 0 and 32.")]
    InvalidPrefix { prefix_len: u8 },
    #[error("Could not open a socket for interface configuration: {0}.")]
    ControlSocket(io::Error),
    #[error("Could not {what} {ifname}: {source}.")]
    Ioctl {
        ifname: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("Could not open a packet socket on {ifname}: {source}.")]
    PacketSocket { ifname: String, source: io::Error },
    #[error("Interface {ifname} failed during DHCP: {source}.")]
    Device { ifname: String, source: io::Error },
    #[error("No DHCP lease on {ifname} within {secs} s.")]
    Timeout { ifname: String, secs: u64 },
    #[error("Gateway {gateway} is not in {address}/{prefix_len} on {ifname}.")]
    GatewayOffLink {
        ifname: String,
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    },
}

/// Brings up `lo` and `ifname` (or the first Ethernet interface), gets a DHCP
/// lease within [`DHCP_TIMEOUT`] and applies it to the kernel.
pub fn bring_up(ifname: Option<&str>) -> Result<Lease, NetError> {
    bring_up_with(Path::new(link::SYSFS_NET), ifname, DHCP_TIMEOUT)
}

/// [`bring_up`] with the sysfs root and timeout as parameters.
pub fn bring_up_with(
    sysfs_net: &Path,
    ifname: Option<&str>,
    timeout: Duration,
) -> Result<Lease, NetError> {
    let ifname = link::select_interface(sysfs_net, ifname)?;
    let mac = link::read_mac(sysfs_net, &ifname)?;
    let mtu = read_mtu(sysfs_net, &ifname);
    let control = Control::open()?;
    control.set_up("lo")?;
    control.set_up(&ifname)?;
    log::info!("{ifname}: link up, asking for a DHCP lease");

    let device = PacketDevice::open(&ifname, mtu)?;
    let mut buffer = vec![0u8; PACKET_BUFFER_LEN];
    let clock = Clock::start();
    let mut client = DhcpClient::new(&ifname, device, mac, seed(mac), &mut buffer, clock.now())?;
    let lease = acquire(&mut client, &clock, timeout)?;
    apply_lease(&control, &lease)?;
    log::info!(
        "{ifname}: {}/{} via {}, DNS {:?}, lease {:?} s",
        lease.address,
        lease.prefix_len,
        lease
            .router
            .map_or_else(|| "no router".to_owned(), |r| r.to_string()),
        lease.dns,
        lease.lease_secs,
    );
    Ok(lease)
}

/// Configures `ifname` statically: brings it (and `lo`) up, sets the address
/// and, with a gateway, the default route.
pub fn apply_static(
    ifname: &str,
    address: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetError> {
    link::check_name(ifname)?;
    let control = Control::open()?;
    control.set_up("lo")?;
    control.set_up(ifname)?;
    apply_lease(
        &control,
        &Lease {
            ifname: ifname.to_owned(),
            address,
            prefix_len,
            router: gateway,
            dns: Vec::new(),
            lease_secs: None,
        },
    )
}

/// Writes address, netmask and default route of `lease` to the kernel.
fn apply_lease(control: &Control, lease: &Lease) -> Result<(), NetError> {
    check_gateway(lease)?;
    control.set_address(&lease.ifname, lease.address, lease.prefix_len)?;
    if let Some(router) = lease.router {
        control.add_default_route(&lease.ifname, router)?;
    }
    Ok(())
}

/// The kernel refuses a gateway outside the connected subnet (ENETUNREACH);
/// say so in plain words instead.
fn check_gateway(lease: &Lease) -> Result<(), NetError> {
    let Some(gateway) = lease.router else {
        return Ok(());
    };
    let mask = u32::from(link::prefix_to_netmask(lease.prefix_len)?);
    if u32::from(gateway) & mask != u32::from(lease.address) & mask {
        return Err(NetError::GatewayOffLink {
            ifname: lease.ifname.clone(),
            address: lease.address,
            prefix_len: lease.prefix_len,
            gateway,
        });
    }
    Ok(())
}

/// Polls `client` until it reports a lease or `timeout` passes. Sleeps in
/// poll(2) on the packet socket between smoltcp's timers.
pub fn acquire(
    client: &mut DhcpClient<'_, PacketDevice>,
    clock: &Clock,
    timeout: Duration,
) -> Result<Lease, NetError> {
    let ifname = client.ifname().to_owned();
    loop {
        let now = clock.now();
        if let Some(DhcpEvent::Configured(lease)) = client.poll(now) {
            return Ok(lease);
        }
        if let Some(err) = client.device().take_error() {
            // The device vanished: no point waiting. Anything else (e.g.
            // ENETDOWN while the link settles) is like a lost packet.
            if matches!(err.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) {
                return Err(NetError::Device {
                    ifname,
                    source: err,
                });
            }
            log::debug!("{ifname}: packet I/O error during DHCP: {err}");
        }
        let elapsed = clock.elapsed();
        if elapsed >= timeout {
            return Err(NetError::Timeout {
                ifname,
                secs: timeout.as_secs(),
            });
        }
        let wait = client
            .poll_delay(now)
            .map_or(Duration::MAX, |d| Duration::from_micros(d.total_micros()))
            .min(timeout - elapsed);
        wait_readable(client.device(), wait);
    }
}

/// Sleeps until the socket is readable or `wait` passes. Errors (EINTR from
/// a signal) just end the wait early; the loop re-checks everything.
fn wait_readable(device: &PacketDevice, wait: Duration) {
    let mut pfd = libc::pollfd {
        fd: device.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Round up so a sub-millisecond timer does not become a busy loop.
    let ms = wait
        .as_micros()
        .div_ceil(1000)
        .min(libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: pfd is one valid pollfd and the count passed is 1.
    unsafe { libc::poll(&mut pfd, 1, ms) };
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

fn read_mtu(sysfs_net: &Path, ifname: &str) -> usize {
    fs::read_to_string(sysfs_net.join(ifname).join("mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// A seed for DHCP transaction ids: from the kernel RNG, else time and MAC.
fn seed(mac: [u8; 6]) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(router: Option<Ipv4Addr>) -> Lease {
        Lease {
            ifname: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            router,
            dns: vec![],
            lease_secs: None,
        }
    }

    #[test]
    fn gateway_must_be_on_link() {
        assert!(check_gateway(&lease(None)).is_ok());
        assert!(check_gateway(&lease(Some(Ipv4Addr::new(10, 0, 2, 2)))).is_ok());
        let err = check_gateway(&lease(Some(Ipv4Addr::new(10, 0, 3, 2)))).unwrap_err();
        assert!(err.to_string().contains("eth0"), "{err}");
    }

    #[test]
    fn clock_is_monotonic() {
        let clock = Clock::start();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[test]
    fn mtu_defaults_to_1500() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_mtu(tmp.path(), "eth0"), 1500);
        fs::create_dir(tmp.path().join("eth0")).unwrap();
        fs::write(tmp.path().join("eth0/mtu"), "9000\n").unwrap();
        assert_eq!(read_mtu(tmp.path(), "eth0"), 9000);
    }

    #[test]
    fn errors_name_the_interface() {
        let err = apply_static("", Ipv4Addr::LOCALHOST, 8, None).unwrap_err();
        assert!(matches!(err, NetError::BadName { .. }), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let err = bring_up_with(tmp.path(), Some("eth7"), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("eth7"), "{err}");
    }
}
