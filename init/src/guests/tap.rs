//! Taps for bridge-mode guest NICs. init makes them and hands them to the
//! VMM as descriptors, so the VMM needs no rights over networking. A tap
//! made here is not persistent: it disappears when its last holder (the
//! VMM) exits.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::net::netlink::Netlink;

/// `<linux/if_tun.h>` values the libc crate lacks.
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Creates a tap (`kt<N>`, named by the kernel), brings it up and adds it
/// to `bridge`.
pub fn create_on_bridge(bridge: &str) -> Result<OwnedFd, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    // SAFETY: ifreq is a plain C struct/union; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"kt%d") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads and writes (the chosen name) the ifreq, which
    // lives across the call; the descriptor is an open tun device.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(format!(
            "cannot create a tap: {}",
            io::Error::last_os_error()
        ));
    }
    let name: String = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect();
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    nl.set_master(&name, bridge).map_err(|e| e.to_string())?;
    nl.set_up(&name).map_err(|e| e.to_string())?;
    log::info!("tap {name} joined {bridge}");
    Ok(OwnedFd::from(file))
}
