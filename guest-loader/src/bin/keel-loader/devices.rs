//! The guest's virtio block devices, from sysfs: whole disks (`vd*`) and
//! the partitions the kernel found on them (it parses GPT and MBR itself).

use std::path::Path;
use std::time::{Duration, Instant};

/// Where the kernel lists block devices.
pub const SYS_BLOCK: &str = "/sys/class/block";
/// How long to wait for the first disk to appear.
pub const WAIT: Duration = Duration::from_secs(10);
/// Devices looked at in all: a crafted partition table cannot make the
/// loader probe and mount without end.
pub const MAX_DEVICES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    /// In partition-number order.
    pub partitions: Vec<String>,
    /// The virtio-blk serial the spec gave it (`keelctl import xen` sets
    /// the Xen vdev), if any.
    pub serial: Option<String>,
}

impl Disk {
    /// The devices that may hold a filesystem: the partitions, or the
    /// whole disk when it has none.
    pub fn candidates(&self) -> Vec<String> {
        if self.partitions.is_empty() {
            vec![self.name.clone()]
        } else {
            self.partitions.clone()
        }
    }
}

fn partition_number(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The virtio disks under `sys_block` (a `/sys/class/block`), by name.
pub fn scan(sys_block: &Path) -> Vec<Disk> {
    let Ok(dir) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = dir
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("vd"))
        .filter(|name| partition_number(&sys_block.join(name)).is_none())
        .map(|name| {
            let mut parts: Vec<(u32, String)> = std::fs::read_dir(sys_block.join(&name))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let part = e.file_name().into_string().ok()?;
                            let n = partition_number(&e.path())?;
                            part.starts_with(&name).then_some((n, part))
                        })
                        .collect()
                })
                .unwrap_or_default();
            parts.sort();
            let serial = std::fs::read_to_string(sys_block.join(&name).join("serial"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            Disk {
                name,
                partitions: parts.into_iter().map(|(_, p)| p).collect(),
                serial,
            }
        })
        .collect();
    // vda..vdz, then vdaa..: shorter names first.
    disks.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    disks
}

/// Waits up to `timeout` for virtio disks, then until two looks 100 ms
/// apart agree (devices probed one after another are all seen).
pub fn wait_for_disks(sys_block: &Path, timeout: Duration) -> Vec<Disk> {
    let start = Instant::now();
    let mut last = scan(sys_block);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = scan(sys_block);
        if (!now.is_empty() && now == last) || start.elapsed() >= timeout {
            return now;
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(devices: &[(&str, Option<u32>)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, partition) in devices {
            let dir = root.path().join(path);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(n) = partition {
                std::fs::write(dir.join("partition"), format!("{n}\n")).unwrap();
            }
        }
        root
    }

    #[test]
    fn finds_disks_and_partitions_in_order() {
        // sysfs lists partitions both under their disk and at top level.
        let root = sysfs(&[
            ("vdb", None),
            ("vda", None),
            ("vda/vda10", Some(10)),
            ("vda/vda2", Some(2)),
            ("vda/vda1", Some(1)),
            ("vda/queue", None),
            ("vda1", Some(1)),
            ("vda2", Some(2)),
            ("vda10", Some(10)),
            ("vdaa", None),
            ("sda", None),
            ("loop0", None),
        ]);
        let disks = scan(root.path());
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vda", "vdb", "vdaa"]);
        assert_eq!(disks[0].partitions, ["vda1", "vda2", "vda10"]);
        assert_eq!(disks[0].candidates(), ["vda1", "vda2", "vda10"]);
        // A disk without partitions is tried whole.
        assert_eq!(disks[1].candidates(), ["vdb"]);
        assert_eq!(disks[0].serial, None);
    }

    #[test]
    fn a_disk_s_serial_is_read() {
        let root = sysfs(&[("vda", None), ("vdb", None)]);
        std::fs::write(root.path().join("vda/serial"), "xvda1\n").unwrap();
        std::fs::write(root.path().join("vdb/serial"), "\n").unwrap();
        let disks = scan(root.path());
        assert_eq!(disks[0].serial.as_deref(), Some("xvda1"));
        assert_eq!(disks[1].serial, None);
    }

    #[test]
    fn no_sysfs_no_disks_and_the_wait_ends() {
        let root = sysfs(&[("sda", None)]);
        assert!(scan(&root.path().join("missing")).is_empty());
        let start = Instant::now();
        assert!(wait_for_disks(root.path(), Duration::from_millis(300)).is_empty());
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_wait_returns_once_disks_are_stable() {
        let root = sysfs(&[("vda", None)]);
        let start = Instant::now();
        let disks = wait_for_disks(root.path(), WAIT);
        assert_eq!(disks.len(), 1);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
