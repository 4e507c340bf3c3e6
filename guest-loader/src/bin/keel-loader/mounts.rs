//! The guest's filesystems, mounted read-only under `/mnt/<device>`. The
//! device itself is first made read-only (BLKROSET), so no driver path, a
//! journal replay included, can write to the guest's disk.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use keel_guest_loader::probe::Identified;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where the filesystems are mounted.
pub const MNT: &str = "/mnt";

/// BLKROSET, `_IO(0x12, 93)`: not in the libc crate.
const BLKROSET: libc::Ioctl = 0x125d;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot open {dev} to make it read-only: {source}")]
    Open {
        dev: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make {dev} read-only: {source}")]
    ReadOnly {
        dev: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {dir}: {source}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{dev} holds {kind}, which the loader cannot mount")]
    Unsupported { dev: String, kind: &'static str },
    #[error("cannot mount {dev} ({fstype}) read-only: {source}")]
    Mount {
        dev: String,
        fstype: &'static str,
        #[source]
        source: Errno,
    },
}

fn set_read_only(dev: &Path) -> Result<(), MountError> {
    let name = dev.display().to_string();
    let file = File::open(dev).map_err(|source| MountError::Open {
        dev: name.clone(),
        source,
    })?;
    let on: libc::c_int = 1;
    // SAFETY: BLKROSET reads one int through the pointer, which points to
    // `on` for the whole call; the fd is open.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKROSET, &on as *const libc::c_int) } < 0 {
        return Err(MountError::ReadOnly {
            dev: name,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The flags every guest mount has: nothing on it is written or run.
pub fn flags() -> MsFlags {
    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// Mounts `/dev/<device>` (holding `fs`) read-only at `/mnt/<device>`.
pub fn mount_read_only(device: &str, fs: &Identified) -> Result<PathBuf, MountError> {
    let dev = Path::new("/dev").join(device);
    let fstype = fs.kind.mount_type().ok_or(MountError::Unsupported {
        dev: device.to_string(),
        kind: fs.kind.name(),
    })?;
    set_read_only(&dev)?;
    let dir = Path::new(MNT).join(device);
    std::fs::create_dir_all(&dir).map_err(|source| MountError::Dir {
        dir: dir.display().to_string(),
        source,
    })?;
    let attempt = |data: Option<&str>| mount(Some(&dev), &dir, Some(fstype), flags(), data);
    match attempt(fs.kind.mount_data()) {
        Ok(()) => Ok(dir),
        // A kernel that does not know the option: the device is read-only
        // already, so a replay would fail rather than write.
        Err(Errno::EINVAL) if fs.kind.mount_data().is_some() => {
            log::warn!(
                "{device}: {fstype} refused {:?}; mounting without it",
                fs.kind.mount_data().unwrap_or_default()
            );
            attempt(None)
                .map(|()| dir)
                .map_err(|source| MountError::Mount {
                    dev: device.to_string(),
                    fstype,
                    source,
                })
        }
        Err(source) => Err(MountError::Mount {
            dev: device.to_string(),
            fstype,
            source,
        }),
    }
}

/// Unmounts `dirs` (last mounted first), then the loader's own mounts;
/// a failure is printed: the kexec goes ahead either way.
pub fn unmount_all(dirs: &[PathBuf]) {
    let own = ["/tmp", "/dev", "/sys", "/proc"].map(PathBuf::from);
    for dir in dirs.iter().rev().chain(own.iter()) {
        if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
            log::warn!("cannot unmount {}: {e}", dir.display());
        }
    }
}
