//! The block devices the kernel shows in `/sys/class/block`, each with the
//! file system on it ([`super::label`]) and, for a GPT partition, its
//! PARTUUID ([`super::partuuid`]); and finding them by label. Which of
//! them boot may trust is decided elsewhere ([`super::esp`],
//! [`super::data`]).

use std::path::PathBuf;

use keel_sys::fsutil::read_trimmed;

use super::label::{read_label, FsLabel};
use super::partuuid::{partuuid_of, GptCache};

/// One block device seen in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name, e.g. `vda2`.
    pub name: String,
    /// Device node, e.g. `/dev/vda2`.
    pub path: PathBuf,
    /// The whole disk it belongs to (its own name for a whole disk).
    pub disk: String,
    /// Partition number, `None` for a whole disk.
    pub partition: Option<u32>,
    /// First sector (512 bytes) of the partition on its disk.
    pub start_sector: Option<u64>,
    /// The file system found on it.
    pub fs: Option<FsLabel>,
    /// The partition's GPT unique partition GUID (PARTUUID), lower case;
    /// read from its disk's partition table, as sysfs does not show it.
    /// `None` for whole disks and partitions not in a readable GPT.
    pub partuuid: Option<String>,
}

impl BlockDevice {
    pub fn is_partition(&self) -> bool {
        self.partition.is_some()
    }
}

/// Where the probe looks: the sysfs root and the device directory, both
/// replaceable so tests can use a fake tree and image files.
#[derive(Debug, Clone)]
pub struct Probe {
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Probe::system()
    }
}

impl Probe {
    /// The running system: `/sys` and `/dev`.
    pub fn system() -> Self {
        Probe::new("/sys", "/dev")
    }

    pub fn new(sys_root: impl Into<PathBuf>, dev_root: impl Into<PathBuf>) -> Self {
        Probe {
            sys_root: sys_root.into(),
            dev_root: dev_root.into(),
        }
    }

    fn class_block(&self) -> PathBuf {
        self.sys_root.join("class/block")
    }

    /// Describes one device by kernel name, reading its label (and for a
    /// partition its disk's GPT, at most once per disk and `gpts`). `None`
    /// when sysfs does not know it.
    fn device(&self, name: &str, gpts: &mut GptCache) -> Option<BlockDevice> {
        let entry = self.class_block().join(name);
        if !entry.exists() {
            return None;
        }
        let partition = read_trimmed(entry.join("partition")).and_then(|s| s.parse().ok());
        // Partitions live in their disk's directory:
        // /sys/devices/.../vda/vda2, linked from /sys/class/block/vda2.
        let disk = if partition.is_some() {
            std::fs::canonicalize(&entry)
                .ok()
                .and_then(|p| {
                    p.parent()?
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| name.to_string())
        } else {
            name.to_string()
        };
        let start_sector = read_trimmed(entry.join("start")).and_then(|s| s.parse().ok());
        let path = self.dev_root.join(name);
        // An empty loop device or drive without media: nothing to read.
        let empty = read_trimmed(entry.join("size")).is_some_and(|s| s == "0");
        let fs = if empty {
            None
        } else {
            match read_label(&path) {
                Ok(fs) => fs,
                Err(err) => {
                    log::debug!("cannot probe {}: {err}", path.display());
                    None
                }
            }
        };
        let partuuid = match partition {
            Some(number) if !empty => gpts
                .entries(&self.dev_root, &disk)
                .and_then(|entries| partuuid_of(entries, number, start_sector)),
            _ => None,
        };
        Some(BlockDevice {
            name: name.to_string(),
            path,
            disk,
            partition,
            start_sector,
            fs,
            partuuid,
        })
    }

    /// Every block device, sorted by name.
    pub fn devices(&self) -> Vec<BlockDevice> {
        let dir = self.class_block();
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(err) => {
                log::warn!("cannot list {}: {err}", dir.display());
                return Vec::new();
            }
        };
        names.sort();
        let mut gpts = GptCache::default();
        names
            .iter()
            .filter_map(|n| self.device(n, &mut gpts))
            .collect()
    }

    /// Every device whose file system carries `label`.
    pub fn find_all(&self, label: &str) -> Vec<BlockDevice> {
        self.devices()
            .into_iter()
            .filter(|d| d.fs.as_ref().is_some_and(|fs| fs.label == label))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{device, mkfs_ext4, mkfs_vfat, FakeSys, Scratch};
    use crate::storage::FsKind;

    /// The device nodes carrying `label`, by name.
    fn find_by_label(probe: &Probe, label: &str) -> Vec<PathBuf> {
        probe.find_all(label).into_iter().map(|d| d.path).collect()
    }

    #[test]
    fn finds_partitions_by_label_in_a_fake_sysfs() {
        let images = Scratch::new("images");
        let esp = images.0.join("esp.img");
        let data = images.0.join("data.ext4");
        let other = images.0.join("other.ext4");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        mkfs_ext4(&data, "KEEL-DATA", 8);
        mkfs_ext4(&other, "SCRATCH", 8);
        let sys = FakeSys::new();
        sys.add_disk("vda", None);
        sys.add_partition("vda", 1, &esp);
        sys.add_partition("vda", 2, &data);
        sys.add_disk("vdb", Some(&other));
        // A disk with no device node must not stop the scan.
        sys.add_disk("sr0", None);
        let probe = sys.probe();

        let root = &sys.root.0;
        assert_eq!(find_by_label(&probe, "KEEL-DATA"), [root.join("dev/vda2")]);
        assert_eq!(find_by_label(&probe, "KEEL-ESP"), [root.join("dev/vda1")]);
        assert_eq!(find_by_label(&probe, "SCRATCH"), [root.join("dev/vdb")]);
        assert!(find_by_label(&probe, "NOPE").is_empty());

        let data_dev = device(&probe, "vda2").expect("vda2");
        assert_eq!(data_dev.disk, "vda");
        assert_eq!(data_dev.partition, Some(2));
        assert_eq!(data_dev.start_sector, Some(2048));
        assert_eq!(data_dev.fs.map(|f| f.kind), Some(FsKind::Ext));
        let whole = device(&probe, "vdb").expect("vdb");
        assert_eq!(whole.disk, "vdb");
        assert!(!whole.is_partition());
        // No GPT to read (vda has no node): no PARTUUIDs.
        assert_eq!(data_dev.partuuid, None);
        assert_eq!(whole.partuuid, None);
    }

    #[test]
    fn a_missing_sysfs_finds_nothing() {
        let probe = Probe::new("/nonexistent/sys", "/nonexistent/dev");
        assert!(probe.devices().is_empty());
        assert!(find_by_label(&probe, "KEEL-DATA").is_empty());
    }
}
