//! Connecting a Unix stream socket by hand, for the two callers that
//! need more than `UnixStream::connect`: a connect bounded in time
//! ([`crate::deadline::connect_unix`]) and one that never blocks (the
//! VMM's vsock muxer, whose host services must not stall the guest).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// How the socket is made before it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Blocking,
    NonBlocking,
}

/// Makes a socket (close-on-exec, `mode`), lets `prepare` set it up (a
/// send timeout bounds a blocking connect), and connects it to `path`.
/// The connect's error is returned as the OS gave it.
pub fn connect(
    path: &Path,
    mode: Mode,
    prepare: impl FnOnce(&UnixStream) -> io::Result<()>,
) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain old data; all zeros is a valid (empty)
    // address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays for the terminating NUL.
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} cannot be a socket address", path.display()),
        ));
    }
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    let flags = match mode {
        Mode::Blocking => libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
        Mode::NonBlocking => libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    };
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(raw) });
    prepare(&stream)?;
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is an initialised sockaddr_un whose first `len` bytes
    // are meaningful; connect only reads them, and the fd is open.
    let ret = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}
