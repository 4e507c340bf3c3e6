//! Opening a file strictly beneath a directory with `openat2(2)`: the
//! kernel, not a check made earlier, refuses `..` that climbs out, absolute
//! symbolic links, relative links that leave the directory and `/proc`
//! magic links, all at the moment of the open. A guest spec's files are
//! opened this way, so a link planted in `disks/` cannot make root open a
//! host file.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` of `linux/openat2.h` (libc's is non-exhaustive, so it
/// cannot be built outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens the directory `dir` itself, refusing a symbolic link there: the
/// anchor that [`open_beneath`] resolves beneath.
pub fn open_dir(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Opens `rel` beneath the directory `dir` with `flags` (`O_RDONLY`,
/// `O_RDWR`, `O_PATH`, ...; `O_CLOEXEC` and `O_NOCTTY` are added), under
/// `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`. Symbolic links that stay
/// beneath `dir` are followed; anything that would leave it fails with
/// `EXDEV`, a magic link with `ELOOP`. `rel` must be relative.
pub fn open_beneath(dir: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
    let name = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // openat2 refuses flags O_PATH ignores (EINVAL), O_NOCTTY among them.
    let extra = if flags & libc::O_PATH != 0 {
        libc::O_CLOEXEC
    } else {
        libc::O_CLOEXEC | libc::O_NOCTTY
    };
    let flags = u64::try_from(flags | extra)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative open flags"))?;
    let how = OpenHow {
        flags,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the NUL-terminated `name` and `how` (whose size
    // is passed with it), both live for the call; `dir` is an open
    // descriptor. It writes nothing to our memory.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("openat2 returned no descriptor"))?;
    // SAFETY: the kernel just returned `fd`, a new descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A sentence for an error of [`open_beneath`], naming what was opened
/// (`shown`) and the directory it had to stay in (`dir_name`).
pub fn describe_error(err: &io::Error, shown: &Path, dir_name: &str) -> String {
    match err.raw_os_error() {
        Some(libc::EXDEV) => format!(
            "`{}` leads out of {dir_name}/ (through `..` or a symbolic link), which is refused",
            shown.display()
        ),
        Some(libc::ELOOP) => format!(
            "`{}` goes through a magic link or too many symbolic links, which is refused",
            shown.display()
        ),
        Some(libc::ENOENT) => format!("`{}` does not exist", shown.display()),
        Some(libc::ENOSYS) => "the kernel has no openat2 (Linux 5.6 or later is needed)".into(),
        _ => format!("cannot open `{}`: {err}", shown.display()),
    }
}

#[cfg(test)]
mod tests;
