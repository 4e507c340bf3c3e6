//! Early mounts, the read-only root, and unmounting at shutdown.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One early mount: what init needs before anything else runs.
struct EarlyMount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

const EARLY_MOUNTS: &[EarlyMount] = &[
    EarlyMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    EarlyMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    EarlyMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0755"),
    },
    EarlyMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    EarlyMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755,size=64m"),
    },
    EarlyMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777,size=256m"),
    },
    EarlyMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
];

/// Mounts the pseudo and scratch filesystems. A failure is logged and the
/// rest still mounted: a half-working appliance beats a kernel panic.
pub fn mount_early() {
    for m in EARLY_MOUNTS {
        if let Err(err) = std::fs::create_dir_all(m.target) {
            log::error!("cannot create mount point {}: {err}", m.target);
        }
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) => {}
            // The kernel may already have mounted devtmpfs.
            Err(nix::errno::Errno::EBUSY) => {}
            Err(err) => log::error!("cannot mount {} on {}: {err}", m.fstype, m.target),
        }
    }
    mount_efivarfs(Path::new(EFIVARS));
}

/// Where the kernel shows EFI variables once efivarfs is mounted there.
/// The directory exists only when the kernel was booted through EFI.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Whether efivarfs still has to be mounted on `target`: the directory
/// exists (an EFI boot) and nothing is mounted there yet.
fn efivarfs_wanted(target_exists: bool, mounts: &[MountEntry], target: &str) -> bool {
    target_exists && !mounts.iter().any(|m| m.target == target)
}

/// Mounts efivarfs read-only on `target` (storage reads the variable that
/// says which ESP the firmware booted from; init never writes variables).
/// Skipped without EFI or when already mounted; a failure is logged and
/// boot goes on: the ESP is then chosen by name.
fn mount_efivarfs(target: &Path) {
    let mounts = match std::fs::read_to_string("/proc/self/mounts") {
        Ok(text) => parse_mounts(&text),
        Err(err) => {
            log::warn!("cannot read the mount table: {err}; efivarfs not mounted");
            return;
        }
    };
    let name = target.to_string_lossy();
    if !efivarfs_wanted(target.is_dir(), &mounts, &name) {
        return;
    }
    let flags = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    if let Err(err) = mount(
        Some("efivarfs"),
        target,
        Some("efivarfs"),
        flags,
        None::<&str>,
    ) {
        log::warn!("cannot mount efivarfs on {name}: {err}; the ESP is chosen by name");
    }
}

/// Makes the root filesystem read-only and proves it.
pub fn make_root_read_only() -> bool {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(err) = mount(None::<&str>, "/", None::<&str>, flags, None::<&str>) {
        log::error!("cannot make the root filesystem read-only: {err}");
        return false;
    }
    let probe = Path::new("/.keel-write-probe");
    match std::fs::write(probe, b"x") {
        Err(err) if err.raw_os_error() == Some(nix::libc::EROFS) => true,
        Err(err) => {
            log::warn!("root write probe failed oddly: {err}");
            true
        }
        Ok(()) => {
            log::error!("the root filesystem is still writable after remounting it read-only");
            let _ = std::fs::remove_file(probe);
            false
        }
    }
}

/// A line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: String,
    pub fstype: String,
}

/// Parses `/proc/self/mounts`, decoding the octal escapes the kernel uses
/// for spaces and other odd characters.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _source = fields.next()?;
            let target = unescape(fields.next()?);
            let fstype = fields.next()?.to_string();
            Some(MountEntry { target, fstype })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts to take down at shutdown, newest first. The root and the
/// kernel's own pseudo filesystems stay: the kernel handles them itself.
pub fn shutdown_order(entries: &[MountEntry]) -> Vec<MountEntry> {
    const KEEP: &[&str] = &["/", "/proc", "/sys", "/dev"];
    entries
        .iter()
        .rev()
        .filter(|e| !KEEP.contains(&e.target.as_str()))
        .cloned()
        .collect()
}

/// Unmounts everything but the root and pseudo filesystems. What cannot be
/// unmounted is remounted read-only so that no write is left half done.
pub fn unmount_all() {
    let text = match std::fs::read_to_string("/proc/self/mounts") {
        Ok(text) => text,
        Err(err) => {
            log::error!("cannot read the mount table: {err}");
            return;
        }
    };
    for entry in shutdown_order(&parse_mounts(&text)) {
        if let Err(err) = umount2(entry.target.as_str(), MntFlags::empty()) {
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            match mount(
                None::<&str>,
                entry.target.as_str(),
                None::<&str>,
                flags,
                None::<&str>,
            ) {
                Ok(()) => log::warn!("{} is busy ({err}); remounted it read-only", entry.target),
                Err(err2) => log::error!(
                    "cannot unmount {} ({err}) or remount it read-only ({err2})",
                    entry.target
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "rootfs / rootfs ro 0 0
proc /proc proc rw 0 0
sysfs /sys sysfs rw 0 0
devtmpfs /dev devtmpfs rw 0 0
devpts /dev/pts devpts rw 0 0
tmpfs /run tmpfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
/dev/vda2 /var/lib/keel ext4 rw 0 0
/dev/vda1 /var/lib/keel/with\\040space vfat rw 0 0
";

    #[test]
    fn parses_and_unescapes() {
        let entries = parse_mounts(MOUNTS);
        assert_eq!(entries.len(), 9);
        assert_eq!(
            entries[7],
            MountEntry {
                target: "/var/lib/keel".into(),
                fstype: "ext4".into()
            }
        );
        assert_eq!(entries[8].target, "/var/lib/keel/with space");
    }

    #[test]
    fn shutdown_takes_newest_first_and_keeps_the_kernel_mounts() {
        let order: Vec<String> = shutdown_order(&parse_mounts(MOUNTS))
            .into_iter()
            .map(|e| e.target)
            .collect();
        assert_eq!(
            order,
            vec![
                "/var/lib/keel/with space",
                "/var/lib/keel",
                "/sys/fs/cgroup",
                "/run",
                "/dev/pts"
            ]
        );
    }

    #[test]
    fn efivarfs_is_mounted_only_on_efi_boots_and_once() {
        let mut entries = parse_mounts(MOUNTS);
        assert!(efivarfs_wanted(true, &entries, EFIVARS));
        assert!(!efivarfs_wanted(false, &entries, EFIVARS));
        entries.push(MountEntry {
            target: EFIVARS.into(),
            fstype: "efivarfs".into(),
        });
        assert!(!efivarfs_wanted(true, &entries, EFIVARS));
    }

    #[test]
    fn unescape_leaves_plain_text_and_short_escapes() {
        assert_eq!(unescape("/a/b"), "/a/b");
        assert_eq!(unescape("/a\\01"), "/a\\01");
        assert_eq!(unescape("\\134x"), "\\x");
    }
}
