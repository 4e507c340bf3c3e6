//! Creating taps through `/dev/net/tun`, shared by init (which makes the
//! taps of bridge-mode guest NICs and hands them to VMMs) and keel-vmm
//! (which opens a named tap itself in `mode = "tap"`).

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// The clone device every tap is created through.
pub const TUN_PATH: &str = "/dev/net/tun";

/// The mode virtio-net relies on: Ethernet frames, no packet-info prefix,
/// a virtio-net header in front of each frame.
pub const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// Why a tap could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("the tap name {0:?} is longer than 15 bytes or contains a NUL byte")]
    InvalidName(String),
    #[error("cannot open {TUN_PATH}: {0}")]
    OpenTun(#[source] io::Error),
    #[error("cannot create the tap device {name:?}: {source}")]
    Create { name: String, source: io::Error },
}

/// Opens `/dev/net/tun` (with `open_flags` such as `O_NONBLOCK`; always
/// close-on-exec) and attaches it to the tap `name` in [`TAP_FLAGS`] mode,
/// creating the tap if needed. A name with `%d` (`kt%d`) or an empty one
/// lets the kernel choose. Returns the descriptor and the tap's name.
pub fn open_tap(name: &str, open_flags: libc::c_int) -> Result<(OwnedFd, String), TunError> {
    let mut req = ifreq_named(name).ok_or_else(|| TunError::InvalidName(name.to_owned()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(open_flags | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(TunError::OpenTun)?;
    // The ifr_flags member of the union is a short; TAP_FLAGS fits.
    req.ifr_ifru.ifru_flags = TAP_FLAGS as libc::c_short;
    // SAFETY: `file` is an open /dev/net/tun descriptor and `req` a valid
    // ifreq that TUNSETIFF reads and writes (the chosen name) in place.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if ret < 0 {
        return Err(TunError::Create {
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok((OwnedFd::from(file), ifreq_name(&req)))
}

/// A zeroed ifreq carrying `name`; `None` unless it fits IFNAMSIZ with its
/// NUL and has no NUL of its own.
pub fn ifreq_named(name: &str) -> Option<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: ifreq is plain old data (arrays, integers, pointers in a
    // union) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Some(req)
}

/// The interface name the kernel left in `req`.
pub fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req.ifr_name.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        let req = ifreq_named("kt%d").expect("fits");
        assert_eq!(ifreq_name(&req), "kt%d");
        assert!(ifreq_named(&"x".repeat(libc::IFNAMSIZ)).is_none());
        assert!(ifreq_named("a\0b").is_none());
        let err = open_tap(&"x".repeat(20), 0).unwrap_err();
        assert!(matches!(err, TunError::InvalidName(_)), "{err}");
    }
}
