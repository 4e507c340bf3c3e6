//! `ip addr add` and `ip link set up` with the classic socket ioctls: a
//! guest init needs nothing more, and netlink would be a dependency for two
//! calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use keel_sys::tun::ifreq_named;

/// A datagram socket, the handle the interface ioctls go through.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn named(name: &str) -> io::Result<libc::ifreq> {
    ifreq_named(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name"),
        )
    })
}

fn ioctl(fd: &OwnedFd, request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here (SIOC[GS]IFFLAGS, SIOCSIFADDR,
    // SIOCSIFNETMASK) reads or writes only the ifreq, which this call
    // borrows mutably and which carries a NUL-terminated name.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_ipv4(
    fd: &OwnedFd,
    req: &mut libc::ifreq,
    ip: [u8; 4],
    request: libc::Ioctl,
) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in is no larger than the sockaddr union member it is
    // copied into, and both are plain old data.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            (&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    ioctl(fd, request, req)
}

fn bring_up(fd: &OwnedFd, req: &mut libc::ifreq) -> io::Result<()> {
    ioctl(fd, libc::SIOCGIFFLAGS, req)?;
    // SAFETY: SIOCGIFFLAGS filled ifru_flags; any c_short is valid.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(fd, libc::SIOCSIFFLAGS, req)
}

/// `ip link set NAME up`.
pub fn link_up(name: &str) -> io::Result<()> {
    configure_interface(name, None)
}

/// Gives interface `name` the IPv4 `address` (IP, netmask) if set, then
/// brings it up.
pub fn configure_interface(name: &str, address: Option<([u8; 4], [u8; 4])>) -> io::Result<()> {
    let fd = ioctl_socket()?;
    let mut req = named(name)?;
    if let Some((ip, mask)) = address {
        set_ipv4(&fd, &mut req, ip, libc::SIOCSIFADDR)?;
        set_ipv4(&fd, &mut req, mask, libc::SIOCSIFNETMASK)?;
    }
    bring_up(&fd, &mut req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_ioctl() {
        let err = link_up("a-name-longer-than-ifnamsiz").expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(link_up("no\0nul").is_err());
    }

    #[test]
    fn a_missing_interface_is_an_error_not_a_panic() {
        let err = link_up("keelnosuch0").expect_err("no such device");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
