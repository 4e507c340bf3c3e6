//! A guest's console-log directory, `<data>/logs/NAME/`, handled without
//! following symbolic links. The directory belongs to the guest's uid, so a
//! compromised VMM can plant a link in it that points at a host file: init
//! (root) must not chown it, hand it to the next VMM to append to, or read
//! it back for `keelctl logs`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

/// The current console log and its rotated copy.
pub const LOG_FILES: [&str; 2] = ["console.log", "console.log.1"];

/// `path` opened beneath `dir` (or as it is, without `dir`), never through
/// a symbolic link in its last component.
fn open_at(dir: Option<&File>, path: &Path, flags: OFlag) -> Result<File, Errno> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir.map(|d| d.as_raw_fd()), path, flags, Mode::empty())?;
    // SAFETY: openat just returned this descriptor, and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn open_dir(dir: Option<&File>, path: &Path) -> Result<File, Errno> {
    open_at(dir, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// Opens `logs/NAME`; a link or anything but a directory there is refused.
fn open_guest_dir(logs: &Path, name: &str) -> Result<File, String> {
    let parent =
        open_dir(None, logs).map_err(|e| format!("cannot open {}: {e}", logs.display()))?;
    open_dir(Some(&parent), Path::new(name)).map_err(|e| {
        format!(
            "{} is not a directory (symbolic links are refused): {e}",
            logs.join(name).display()
        )
    })
}

/// Creates `logs/NAME` if needed and readies it for the VMM, which opens
/// its log by path: a link or anything but a regular file where a log
/// belongs is removed, and with `uid` the directory and logs are handed to
/// that uid (the VMM rotates its log as it).
pub fn prepare(logs: &Path, name: &str, uid: Option<u32>) -> Result<(), String> {
    std::fs::create_dir_all(logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    let parent =
        open_dir(None, logs).map_err(|e| format!("cannot open {}: {e}", logs.display()))?;
    match mkdirat(
        Some(parent.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o750),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(format!("cannot create {}: {e}", logs.join(name).display())),
    }
    let dir = open_guest_dir(logs, name)?;
    let owner = |file: &File, what: &Path| match uid {
        Some(uid) => fchown(
            file.as_raw_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(uid)),
        )
        .map_err(|e| format!("cannot hand {} to uid {uid}: {e}", what.display())),
        None => Ok(()),
    };
    let dir_path = logs.join(name);
    owner(&dir, &dir_path)?;
    for log in LOG_FILES {
        let path = dir_path.join(log);
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let remove = match open_at(Some(&dir), Path::new(log), flags) {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                owner(&file, &path)?;
                false
            }
            Ok(_) => true,
            Err(Errno::ENOENT) => false,
            Err(_) => true,
        };
        if remove {
            log::warn!(
                "{} is not a regular file (a symbolic link?); removing it",
                path.display()
            );
            unlinkat(Some(dir.as_raw_fd()), log, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Opens the log `file` of guest `name` for reading, through no link.
pub fn open_log(logs: &Path, name: &str, file: &str) -> io::Result<File> {
    let dir = open_guest_dir(logs, name).map_err(io::Error::other)?;
    let log = open_at(
        Some(&dir),
        Path::new(file),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
    )?;
    if !log.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(log)
}
