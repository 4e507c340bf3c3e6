//! A tap device as a [`NetBackend`]: frames go straight to and from the
//! host kernel, virtio-net header included (`IFF_VNET_HDR`), so checksum
//! and segmentation offloads cross the boundary without any work here.

use std::io;
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};

use keel_sys::tun::{ifreq_name, ifreq_named, open_tap, TunError, TAP_FLAGS};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO,
};

use super::backend::{NetBackend, NetBackendError, OFFLOAD_FEATURES, VNET_HDR_LEN};

/// Why a tap could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error("cannot query the tap device behind the inherited fd: {0}")]
    Query(#[source] io::Error),
    #[error("the inherited fd is not a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (its flags are {0:#x})")]
    WrongMode(i32),
    #[error("cannot make the tap non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
    #[error("cannot set the tap's virtio-net header size: {0}")]
    VnetHeaderSize(#[source] io::Error),
    #[error("cannot set the tap's offloads to {flags:#x}: {source}")]
    Offload { flags: u32, source: io::Error },
}

/// An open tap device in the mode virtio-net needs.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Opens the tap called `name`, creating it if it does not exist (which
    /// needs CAP_NET_ADMIN; an existing persistent tap owned by our user
    /// does not). An empty name lets the kernel pick one (`tapN`).
    pub fn open(name: &str) -> Result<Self, TapError> {
        let (fd, name) = open_tap(name, libc::O_NONBLOCK)?;
        let tap = Tap { fd, name };
        tap.configure()?;
        Ok(tap)
    }

    /// Takes over a tap opened by someone else (typically a supervisor that
    /// holds CAP_NET_ADMIN and passed the fd down). It must have been opened
    /// with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`; it is made non-blocking
    /// and close-on-exec, and closed when the `Tap` is dropped.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let mut req = ifreq_named("").ok_or_else(|| TunError::InvalidName(String::new()))?;
        // SAFETY: `fd` is open and `req` a valid ifreq TUNGETIFF fills in.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
        if ret < 0 {
            return Err(TapError::Query(io::Error::last_os_error()));
        }
        // SAFETY: TUNGETIFF stored the device's flags in ifr_flags.
        let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags } as u16);
        if flags & TAP_FLAGS != TAP_FLAGS || flags & libc::IFF_TUN != 0 {
            return Err(TapError::WrongMode(flags));
        }
        set_fd_flags(&fd).map_err(TapError::NonBlocking)?;
        let tap = Tap {
            fd,
            name: ifreq_name(&req),
        };
        tap.configure()?;
        Ok(tap)
    }

    /// The interface name, e.g. `tap0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the header size (the kernel default is the 10-byte legacy
    /// header) and starts with no offloads, until the guest says which it
    /// accepts.
    fn configure(&self) -> Result<(), TapError> {
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at `size` for the duration of the call.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if ret < 0 {
            return Err(TapError::VnetHeaderSize(io::Error::last_os_error()));
        }
        self.set_tun_offload(0)
    }

    fn set_tun_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
        // memory of ours.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            return Err(TapError::Offload {
                flags,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// The TUNSETOFFLOAD flags for the features the guest accepted: what the
/// kernel may leave undone in the frames it hands us for the guest. The
/// kernel refuses segmentation offloads without checksum offload, and so
/// does the virtio spec, so they all hang off GUEST_CSUM.
pub fn tun_offload_flags(acked_features: u64) -> u32 {
    let has = |bit: u32| acked_features & (1 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_UFO) {
        flags |= libc::TUN_F_UFO;
    }
    flags
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> Result<usize, NetBackendError> {
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes
            // and read writes at most that many; the fd is owned by `self`.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err.into());
                    }
                }
            }
        }
    }

    fn write_frame(&mut self, hdr_and_frame: &[u8]) -> Result<(), NetBackendError> {
        loop {
            // SAFETY: `hdr_and_frame` is a live buffer of the given length
            // that write only reads; the fd is owned by `self`.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    hdr_and_frame.as_ptr().cast(),
                    hdr_and_frame.len(),
                )
            };
            match usize::try_from(n) {
                // A tap takes a frame whole or not at all.
                Ok(n) if n == hdr_and_frame.len() => return Ok(()),
                Ok(_) => return Err(NetBackendError::Io(io::ErrorKind::WriteZero.into())),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err.into());
                    }
                }
            }
        }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn offload_features(&self) -> u64 {
        OFFLOAD_FEATURES
    }

    fn set_offload(&mut self, acked_features: u64) -> Result<(), NetBackendError> {
        self.set_tun_offload(tun_offload_flags(acked_features))
            .map_err(|e| match e {
                TapError::Offload { source, .. } => NetBackendError::Io(source),
                other => NetBackendError::Io(io::Error::other(other.to_string())),
            })
    }
}

/// Makes an inherited fd non-blocking and close-on-exec.
fn set_fd_flags(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL/F_GETFD/F_SETFD on an open fd touch no memory.
    unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        if fl < 0 || libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd_flags = libc::fcntl(raw, libc::F_GETFD);
        if fd_flags < 0 || libc::fcntl(raw, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
