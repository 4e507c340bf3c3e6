//! Kernel-side link configuration: interface discovery in sysfs and the
//! classic `SIOC*` ioctls for flags, addresses and routes.
//!
//! The ioctls are used instead of netlink because they need nothing beyond
//! libc and are enough for one address and one default route.

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::NetError;

/// Where the kernel lists network interfaces.
pub const SYSFS_NET: &str = "/sys/class/net";

/// `ARPHRD_ETHER`, the value of `/sys/class/net/<if>/type` for Ethernet.
const ARPHRD_ETHER: u32 = 1;

/// Converts a prefix length (0..=32) to a netmask.
pub fn prefix_to_netmask(prefix_len: u8) -> Result<Ipv4Addr, NetError> {
    if prefix_len > 32 {
        return Err(NetError::InvalidPrefix { prefix_len });
    }
    // checked_shl keeps /0 from overflowing the shift.
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ok(Ipv4Addr::from(mask))
}

/// Converts a netmask to a prefix length; `None` if the ones are not contiguous.
pub fn netmask_to_prefix(netmask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(netmask);
    let ones = bits.leading_ones();
    // A valid mask is all ones followed by all zeros.
    if bits.checked_shl(ones).unwrap_or(0) == 0 {
        u8::try_from(ones).ok()
    } else {
        None
    }
}

/// Picks the interface to configure from the sysfs tree at `sysfs_net`.
///
/// With `wanted`, that interface must exist. Otherwise the first (by name)
/// interface that is Ethernet (`type` 1) and backed by hardware (a
/// `device` link): that rules out loopback, bridges, taps, and the bond0
/// the bonding driver creates on its own.
pub fn select_interface(sysfs_net: &Path, wanted: Option<&str>) -> Result<String, NetError> {
    if let Some(name) = wanted {
        check_name(name)?;
        if sysfs_net.join(name).exists() {
            return Ok(name.to_owned());
        }
        return Err(NetError::NoSuchInterface {
            ifname: name.to_owned(),
        });
    }
    let entries = fs::read_dir(sysfs_net).map_err(|source| NetError::Sysfs {
        path: sysfs_net.display().to_string(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    // read_dir order is arbitrary; sort so the choice is stable across boots.
    names.sort();
    names
        .into_iter()
        .find(|name| is_candidate(&sysfs_net.join(name), name))
        .ok_or_else(|| NetError::NoInterface {
            sysfs: sysfs_net.display().to_string(),
        })
}

fn is_candidate(dir: &Path, name: &str) -> bool {
    if name == "lo" || check_name(name).is_err() {
        return false;
    }
    let is_ether = fs::read_to_string(dir.join("type"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(ARPHRD_ETHER);
    is_ether
        && dir.join("device").exists()
        && !dir.join("bridge").exists()
        && !dir.join("tun_flags").exists()
}

/// Reads the interface's MAC address from `<sysfs_net>/<ifname>/address`.
pub fn read_mac(sysfs_net: &Path, ifname: &str) -> Result<[u8; 6], NetError> {
    let path = sysfs_net.join(ifname).join("address");
    let text = fs::read_to_string(&path).map_err(|source| NetError::Sysfs {
        path: path.display().to_string(),
        source,
    })?;
    parse_mac(text.trim()).ok_or_else(|| NetError::BadMac {
        ifname: ifname.to_owned(),
        mac: text.trim().to_owned(),
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Interface names must fit `IFNAMSIZ` with its terminating NUL.
pub fn check_name(ifname: &str) -> Result<(), NetError> {
    if ifname.is_empty()
        || ifname.len() >= libc::IFNAMSIZ
        || ifname.contains(['/', '\0'])
        || ifname == "."
        || ifname == ".."
    {
        return Err(NetError::BadName {
            ifname: ifname.to_owned(),
        });
    }
    Ok(())
}

/// An `AF_INET` datagram socket, the handle the interface ioctls go through.
pub struct Control {
    fd: OwnedFd,
}

impl Control {
    pub fn open() -> Result<Self, NetError> {
        // SAFETY: socket(2) takes no pointers; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(NetError::ControlSocket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Sets `IFF_UP` (and keeps the other flags) on `ifname`.
    pub fn set_up(&self, ifname: &str) -> Result<(), NetError> {
        let mut req = ifreq(ifname)?;
        self.ioctl(
            ifname,
            libc::SIOCGIFFLAGS as _,
            &mut req,
            "read the flags of",
        )?;
        // SAFETY: SIOCGIFFLAGS filled ifru_flags; every bit pattern is a valid c_short.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        let up = libc::IFF_UP as libc::c_short;
        if flags & up != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = flags | up;
        self.ioctl(ifname, libc::SIOCSIFFLAGS as _, &mut req, "bring up")
    }

    /// Sets the interface's primary IPv4 address and netmask.
    pub fn set_address(
        &self,
        ifname: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        let netmask = prefix_to_netmask(prefix_len)?;
        let mut req = ifreq(ifname)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(address);
        self.ioctl(
            ifname,
            libc::SIOCSIFADDR as _,
            &mut req,
            "set the address of",
        )?;
        // SIOCSIFADDR picks a classful mask; the real one goes in second (the
        // kernel then recomputes the broadcast address too).
        let mut req = ifreq(ifname)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
        self.ioctl(
            ifname,
            libc::SIOCSIFNETMASK as _,
            &mut req,
            "set the netmask of",
        )
    }

    /// Adds `default via gateway dev ifname`. An existing default route is
    /// left alone (EEXIST is not an error).
    pub fn add_default_route(&self, ifname: &str, gateway: Ipv4Addr) -> Result<(), NetError> {
        let dev = CString::new(ifname).map_err(|_| NetError::BadName {
            ifname: ifname.to_owned(),
        })?;
        // SAFETY: rtentry is a plain C struct; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // The kernel only reads the name; `dev` outlives the ioctl below.
        rt.rt_dev = dev.as_ptr().cast_mut();
        // SAFETY: SIOCADDRT reads a struct rtentry, which `rt` is; rt_dev
        // points at a NUL-terminated string alive for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCADDRT as _, &mut rt) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                log::info!("{ifname}: a default route already exists; keeping it");
                return Ok(());
            }
            return Err(NetError::Ioctl {
                ifname: ifname.to_owned(),
                what: "add the default route via",
                source: err,
            });
        }
        Ok(())
    }

    /// Creates the bridge `name`; an existing one is kept.
    pub fn create_bridge(&self, name: &str) -> Result<(), NetError> {
        check_name(name)?;
        let cname = CString::new(name).map_err(|_| NetError::BadName {
            ifname: name.to_owned(),
        })?;
        // SAFETY: SIOCBRADDBR reads a NUL-terminated name, alive for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCBRADDBR as _, cname.as_ptr()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                return Ok(());
            }
            return Err(NetError::Ioctl {
                ifname: name.to_owned(),
                what: "create the bridge",
                source: err,
            });
        }
        Ok(())
    }

    /// Makes `port` a port of `bridge`.
    pub fn add_to_bridge(&self, bridge: &str, port: &str) -> Result<(), NetError> {
        let index = interface_index(port)?;
        let mut req = ifreq(bridge)?;
        req.ifr_ifru.ifru_ifindex = index;
        self.ioctl(bridge, SIOCBRADDIF as _, &mut req, "add a port to")
    }

    fn ioctl(
        &self,
        ifname: &str,
        request: IoctlRequest,
        req: &mut libc::ifreq,
        what: &'static str,
    ) -> Result<(), NetError> {
        // SAFETY: every request used here reads/writes a struct ifreq, which
        // `req` is, with a NUL-terminated name.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, req as *mut libc::ifreq) };
        if rc < 0 {
            return Err(NetError::Ioctl {
                ifname: ifname.to_owned(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Bridge ioctls from <linux/sockios.h>, which the libc crate lacks.
const SIOCBRADDBR: IoctlRequest = 0x89a0;
const SIOCBRADDIF: IoctlRequest = 0x89a2;

/// The kernel's index of `ifname`.
pub fn interface_index(ifname: &str) -> Result<i32, NetError> {
    let cname = CString::new(ifname).map_err(|_| NetError::BadName {
        ifname: ifname.to_owned(),
    })?;
    // SAFETY: if_nametoindex reads a NUL-terminated string alive for the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(NetError::Ioctl {
            ifname: ifname.to_owned(),
            what: "find the index of",
            source: io::Error::last_os_error(),
        });
    }
    i32::try_from(index).map_err(|_| NetError::BadName {
        ifname: ifname.to_owned(),
    })
}

// glibc declares ioctl's request as c_ulong, musl as c_int.
#[cfg(target_env = "musl")]
type IoctlRequest = libc::c_int;
#[cfg(not(target_env = "musl"))]
type IoctlRequest = libc::c_ulong;

fn ifreq(ifname: &str) -> Result<libc::ifreq, NetError> {
    check_name(ifname)?;
    // SAFETY: ifreq is a plain C struct/union; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    // check_name bounds the length below IFNAMSIZ, so the NUL stays.
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// An IPv4 `sockaddr_in` in the generic `sockaddr` shape the ioctls take.
fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes and plain data;
    // this is how the C API is meant to be used.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn prefix_netmask_round_trip() {
        assert_eq!(prefix_to_netmask(0).unwrap(), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_to_netmask(8).unwrap(), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(
            prefix_to_netmask(24).unwrap(),
            Ipv4Addr::new(255, 255, 255, 0)
        );
        assert_eq!(
            prefix_to_netmask(23).unwrap(),
            Ipv4Addr::new(255, 255, 254, 0)
        );
        assert_eq!(prefix_to_netmask(32).unwrap(), Ipv4Addr::BROADCAST);
        assert!(prefix_to_netmask(33).is_err());
        for p in 0..=32 {
            assert_eq!(netmask_to_prefix(prefix_to_netmask(p).unwrap()), Some(p));
        }
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(netmask_to_prefix(Ipv4Addr::new(0, 0, 0, 1)), None);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("eth0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("0123456789abcdef").is_err());
        assert!(check_name("../x").is_err());
        assert!(ifreq("eth0").is_ok());
    }

    fn fake_if(root: &Path, name: &str, ty: u32, extra: &[&str]) {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{ty}\n")).unwrap();
        fs::write(dir.join("address"), "52:54:00:12:34:56\n").unwrap();
        for e in extra {
            if e.ends_with('/') {
                fs::create_dir_all(dir.join(e)).unwrap();
            } else {
                fs::write(dir.join(e), "0x1002\n").unwrap();
            }
        }
    }

    fn root() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("class/net");
        fs::create_dir_all(&path).unwrap();
        (tmp, path)
    }

    #[test]
    fn selects_first_plain_ethernet() {
        let (_tmp, net) = root();
        fake_if(&net, "lo", 772, &[]);
        fake_if(&net, "br0", 1, &["bridge/"]);
        fake_if(&net, "tap0", 1, &["tun_flags"]);
        fake_if(&net, "sit0", 776, &[]);
        // Virtual, no device link: the bonding driver's own bond0.
        fake_if(&net, "bond0", 1, &["bonding/"]);
        fake_if(&net, "eth1", 1, &["device/"]);
        fake_if(&net, "enp0s2", 1, &["device/"]);
        assert_eq!(select_interface(&net, None).unwrap(), "enp0s2");
        assert_eq!(read_mac(&net, "enp0s2").unwrap()[0], 0x52);
    }

    #[test]
    fn no_candidate_is_an_error() {
        let (_tmp, net) = root();
        fake_if(&net, "lo", 772, &[]);
        fake_if(&net, "br0", 1, &["bridge/"]);
        let err = select_interface(&net, None).unwrap_err();
        assert!(matches!(err, NetError::NoInterface { .. }), "{err}");
        let err = select_interface(&net.join("missing"), None).unwrap_err();
        assert!(matches!(err, NetError::Sysfs { .. }), "{err}");
    }

    #[test]
    fn explicit_name_must_exist() {
        let (_tmp, net) = root();
        fake_if(&net, "br0", 1, &["bridge/"]);
        // An explicit choice overrides the heuristics.
        assert_eq!(select_interface(&net, Some("br0")).unwrap(), "br0");
        let err = select_interface(&net, Some("eth9")).unwrap_err();
        assert!(err.to_string().contains("eth9"), "{err}");
        assert!(select_interface(&net, Some("../../etc")).is_err());
    }
}
