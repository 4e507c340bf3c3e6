//! Taps for bridge-mode guest NICs. init makes them and hands them to the
//! VMM as descriptors, so the VMM needs no rights over networking. A tap
//! made here is not persistent: it disappears when its last holder (the
//! VMM) exits.

use std::os::fd::OwnedFd;

use crate::net::netlink::Netlink;

/// Creates a tap (`kt<N>`, named by the kernel), brings it up and adds it
/// to `bridge`.
pub fn create_on_bridge(bridge: &str) -> Result<OwnedFd, String> {
    let (fd, name) = keel_sys::tun::open_tap("kt%d", 0).map_err(|e| e.to_string())?;
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    nl.set_master(&name, bridge).map_err(|e| e.to_string())?;
    nl.set_up(&name).map_err(|e| e.to_string())?;
    log::info!("tap {name} joined {bridge}");
    Ok(fd)
}
