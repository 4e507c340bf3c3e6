//! Finding block devices by file-system label, without blkid: scan
//! `/sys/class/block`, open each device read-only and read the ext4
//! superblock or the FAT boot sector.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The ext2/3/4 superblock sits 1024 bytes into the file system.
pub const EXT_SUPERBLOCK: usize = 1024;
/// `s_magic`, relative to the superblock.
const EXT_MAGIC_AT: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
/// `s_volume_name`, 16 bytes, NUL padded.
const EXT_LABEL_AT: usize = 0x78;
/// How much of a device the probe reads: the FAT boot sector and the ext
/// superblock both fit.
pub const PROBE_BYTES: usize = 4096;

/// The kind of file system a label was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (one magic number for all three).
    Ext,
    /// FAT12/16 or FAT32.
    Fat,
}

/// A file system's kind and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsLabel {
    pub kind: FsKind,
    pub label: String,
}

/// Reads the label from the first [`PROBE_BYTES`] of a file system, or
/// `None` when the bytes hold neither ext nor FAT, or no label.
pub fn parse_label(head: &[u8]) -> Option<FsLabel> {
    ext_label(head).or_else(|| fat_label(head))
}

fn ext_label(head: &[u8]) -> Option<FsLabel> {
    let sb = head.get(EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024)?;
    let magic = u16::from_le_bytes([sb[EXT_MAGIC_AT], sb[EXT_MAGIC_AT + 1]]);
    if magic != EXT_MAGIC {
        return None;
    }
    let raw = &sb[EXT_LABEL_AT..EXT_LABEL_AT + 16];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Some(FsLabel {
        kind: FsKind::Ext,
        label: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

fn fat_label(head: &[u8]) -> Option<FsLabel> {
    let bs = head.get(..512)?;
    if bs[510..512] != [0x55, 0xAA] {
        return None;
    }
    // A plausible BPB: a jump instruction, a power-of-two sector size and
    // at least one FAT. This keeps MBRs and other boot sectors out.
    let jump = bs[0] == 0xEB || bs[0] == 0xE9;
    let bytes_per_sector = u16::from_le_bytes([bs[0x0B], bs[0x0C]]);
    let sectors_per_cluster = bs[0x0D];
    let fats = bs[0x10];
    if !jump
        || !(512..=4096).contains(&bytes_per_sector)
        || !bytes_per_sector.is_power_of_two()
        || sectors_per_cluster == 0
        || !sectors_per_cluster.is_power_of_two()
        || fats == 0
    {
        return None;
    }
    // BPB_FATSz16 is zero on FAT32 only; the extended BPB moves with it.
    let fat32 = u16::from_le_bytes([bs[0x16], bs[0x17]]) == 0;
    let (signature_at, label_at) = if fat32 { (0x42, 0x47) } else { (0x26, 0x2B) };
    if bs[signature_at] != 0x29 {
        return None; // 0x28: an extended BPB without a label.
    }
    let raw = &bs[label_at..label_at + 11];
    let label = String::from_utf8_lossy(raw)
        .trim_end_matches([' ', '\0'])
        .to_string();
    if label.is_empty() || label == "NO NAME" {
        return None;
    }
    Some(FsLabel {
        kind: FsKind::Fat,
        label,
    })
}

/// Reads the label of the file system starting `offset` bytes into `dev`.
pub fn read_label_at<R: Read + Seek>(dev: &mut R, offset: u64) -> io::Result<Option<FsLabel>> {
    dev.seek(SeekFrom::Start(offset))?;
    let mut head = vec![0u8; PROBE_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        match dev.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    head.truncate(filled);
    Ok(parse_label(&head))
}

/// Opens a device or image read-only, without waiting for absent media.
pub fn open_read_only(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Reads the label of the file system on `path` (a device or an image).
pub fn read_label(path: &Path) -> io::Result<Option<FsLabel>> {
    read_label_at(&mut open_read_only(path)?, 0)
}

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

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
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

    /// Describes one device by kernel name, reading its label. `None` when
    /// sysfs does not know it.
    pub fn device(&self, name: &str) -> Option<BlockDevice> {
        let entry = self.class_block().join(name);
        if !entry.exists() {
            return None;
        }
        let partition = read_trimmed(&entry.join("partition")).and_then(|s| s.parse().ok());
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
        let start_sector = read_trimmed(&entry.join("start")).and_then(|s| s.parse().ok());
        let path = self.dev_root.join(name);
        // An empty loop device or drive without media: nothing to read.
        let empty = read_trimmed(&entry.join("size")).is_some_and(|s| s == "0");
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
        Some(BlockDevice {
            name: name.to_string(),
            path,
            disk,
            partition,
            start_sector,
            fs,
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
        names.iter().filter_map(|n| self.device(n)).collect()
    }

    /// Every device whose file system carries `label`.
    pub fn find_all(&self, label: &str) -> Vec<BlockDevice> {
        self.devices()
            .into_iter()
            .filter(|d| d.fs.as_ref().is_some_and(|fs| fs.label == label))
            .collect()
    }

    /// The device carrying `label` (on a file system of `kind`, if given).
    /// When several do, the one on `prefer_disk` wins (else the first by
    /// name) and a warning is logged.
    pub fn find(
        &self,
        label: &str,
        kind: Option<FsKind>,
        prefer_disk: Option<&str>,
    ) -> Option<BlockDevice> {
        let mut found = self.find_all(label);
        if let Some(kind) = kind {
            found.retain(|d| d.fs.as_ref().is_some_and(|fs| fs.kind == kind));
        }
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|d| d.name.as_str()).collect();
            let pick = prefer_disk
                .and_then(|disk| found.iter().position(|d| d.disk == disk))
                .unwrap_or(0);
            log::warn!(
                "{} devices carry the label {label} ({}); using {}",
                found.len(),
                names.join(", "),
                found[pick].name
            );
            return Some(found.swap_remove(pick));
        }
        found.pop()
    }

    /// The device node carrying `label`. For any label but the ESP's, a
    /// device on the same disk as the ESP is preferred when there are several.
    pub fn find_by_label(&self, label: &str) -> Option<PathBuf> {
        let esp_disk = if label == super::ESP_LABEL {
            None
        } else {
            self.find(super::ESP_LABEL, Some(FsKind::Fat), None)
                .map(|d| d.disk)
        };
        self.find(label, None, esp_disk.as_deref()).map(|d| d.path)
    }
}

/// The device node carrying `label` on the running system (see
/// [`Probe::find_by_label`]).
pub fn find_by_label(label: &str) -> Option<PathBuf> {
    Probe::system().find_by_label(label)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A temp directory removed on drop.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "keel-storage-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir scratch");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs a tool, panicking with its stderr on failure.
    pub fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A real ext4 image of `mib` MiB made by mkfs.ext4.
    pub fn mkfs_ext4(path: &Path, label: &str, mib: u64) {
        let file = File::create(path).expect("create image");
        file.set_len(mib << 20).expect("size image");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label])
            .arg(path));
    }

    /// A real FAT image made by mkfs.vfat (`fat32` picks FAT32 over FAT16).
    pub fn mkfs_vfat(path: &Path, label: &str, mib: u64, fat32: bool) {
        let file = File::create(path).expect("create image");
        file.set_len(mib << 20).expect("size image");
        run(Command::new("mkfs.vfat")
            .args(["-F", if fat32 { "32" } else { "16" }, "-n", label])
            .arg(path));
    }

    #[test]
    fn reads_ext4_and_fat_labels_from_real_images() {
        let s = Scratch::new("labels");
        let ext = s.0.join("data.ext4");
        mkfs_ext4(&ext, "KEEL-DATA", 8);
        assert_eq!(
            read_label(&ext).expect("read"),
            Some(FsLabel {
                kind: FsKind::Ext,
                label: "KEEL-DATA".into()
            })
        );
        let fat32 = s.0.join("esp32.img");
        mkfs_vfat(&fat32, "KEEL-ESP", 40, true);
        assert_eq!(
            read_label(&fat32).expect("read"),
            Some(FsLabel {
                kind: FsKind::Fat,
                label: "KEEL-ESP".into()
            })
        );
        let fat16 = s.0.join("esp16.img");
        mkfs_vfat(&fat16, "SEED", 16, false);
        assert_eq!(
            read_label(&fat16).expect("read"),
            Some(FsLabel {
                kind: FsKind::Fat,
                label: "SEED".into()
            })
        );
    }

    #[test]
    fn unlabelled_zeroed_and_short_devices_have_no_label() {
        let s = Scratch::new("nolabel");
        let zero = s.0.join("zero.img");
        File::create(&zero)
            .expect("create")
            .set_len(1 << 20)
            .expect("size");
        assert_eq!(read_label(&zero).expect("read"), None);
        let short = s.0.join("short.img");
        std::fs::write(&short, [0x55u8; 100]).expect("write");
        assert_eq!(read_label(&short).expect("read"), None);
        let unlabelled = s.0.join("nolabel.img");
        File::create(&unlabelled)
            .expect("create")
            .set_len(40 << 20)
            .expect("size");
        run(Command::new("mkfs.vfat")
            .args(["-F", "32"])
            .arg(&unlabelled));
        assert_eq!(read_label(&unlabelled).expect("read"), None);
        // An MBR-only sector (signature but no BPB) is not FAT.
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(parse_label(&mbr), None);
    }

    #[test]
    fn ext_label_of_full_length_has_no_padding() {
        let s = Scratch::new("long");
        let ext = s.0.join("long.ext4");
        mkfs_ext4(&ext, "ABCDEFGHIJKLMNOP", 4);
        assert_eq!(
            read_label(&ext).expect("read").map(|l| l.label),
            Some("ABCDEFGHIJKLMNOP".to_string())
        );
    }

    /// A fake sysfs and /dev: disks and partitions laid out as the kernel
    /// does (partitions inside their disk's directory, linked from
    /// class/block), device nodes as symlinks to image files.
    pub struct FakeSys {
        pub root: Scratch,
    }

    impl FakeSys {
        pub fn new() -> Self {
            let root = Scratch::new("sysfs");
            std::fs::create_dir_all(root.0.join("sys/class/block")).expect("mkdir");
            std::fs::create_dir_all(root.0.join("dev")).expect("mkdir");
            FakeSys { root }
        }

        pub fn probe(&self) -> Probe {
            Probe::new(self.root.0.join("sys"), self.root.0.join("dev"))
        }

        fn link(&self, name: &str, dir: &Path, image: Option<&Path>) {
            std::os::unix::fs::symlink(dir, self.root.0.join("sys/class/block").join(name))
                .expect("class link");
            if let Some(image) = image {
                std::os::unix::fs::symlink(image, self.root.0.join("dev").join(name))
                    .expect("dev link");
            }
        }

        pub fn add_disk(&self, disk: &str, image: Option<&Path>) {
            let dir = self.root.0.join("sys/devices/virtual/block").join(disk);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("size"), "2048\n").expect("size");
            self.link(disk, &dir, image);
        }

        pub fn add_partition(&self, disk: &str, number: u32, image: &Path) {
            let name = format!("{disk}{number}");
            let dir = self
                .root
                .0
                .join("sys/devices/virtual/block")
                .join(disk)
                .join(&name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("partition"), format!("{number}\n")).expect("partition");
            std::fs::write(dir.join("start"), "2048\n").expect("start");
            std::fs::write(dir.join("size"), "2048\n").expect("size");
            self.link(&name, &dir, Some(image));
        }
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
        assert_eq!(
            probe.find_by_label("KEEL-DATA"),
            Some(root.join("dev/vda2"))
        );
        assert_eq!(probe.find_by_label("KEEL-ESP"), Some(root.join("dev/vda1")));
        assert_eq!(probe.find_by_label("SCRATCH"), Some(root.join("dev/vdb")));
        assert_eq!(probe.find_by_label("NOPE"), None);

        let data_dev = probe.device("vda2").expect("vda2");
        assert_eq!(data_dev.disk, "vda");
        assert_eq!(data_dev.partition, Some(2));
        assert_eq!(data_dev.start_sector, Some(2048));
        assert_eq!(data_dev.fs.map(|f| f.kind), Some(FsKind::Ext));
        let whole = probe.device("vdb").expect("vdb");
        assert_eq!(whole.disk, "vdb");
        assert!(!whole.is_partition());
    }

    #[test]
    fn a_duplicate_label_prefers_the_esp_disk() {
        let images = Scratch::new("dups");
        let esp = images.0.join("esp.img");
        let data_a = images.0.join("a.ext4");
        let data_b = images.0.join("b.ext4");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        mkfs_ext4(&data_a, "KEEL-DATA", 8);
        mkfs_ext4(&data_b, "KEEL-DATA", 8);
        let sys = FakeSys::new();
        // sda sorts first but the ESP is on sdb.
        sys.add_disk("sda", None);
        sys.add_partition("sda", 1, &data_a);
        sys.add_disk("sdb", None);
        sys.add_partition("sdb", 1, &esp);
        sys.add_partition("sdb", 2, &data_b);
        let probe = sys.probe();
        assert_eq!(probe.find_all("KEEL-DATA").len(), 2);
        assert_eq!(probe.find("KEEL-DATA", Some(FsKind::Fat), None), None);
        assert_eq!(
            probe.find_by_label("KEEL-DATA"),
            Some(sys.root.0.join("dev/sdb2"))
        );
        // Without a preference the first by name wins.
        assert_eq!(
            probe.find("KEEL-DATA", None, None).map(|d| d.name),
            Some("sda1".to_string())
        );
    }

    #[test]
    fn a_missing_sysfs_finds_nothing() {
        let probe = Probe::new("/nonexistent/sys", "/nonexistent/dev");
        assert!(probe.devices().is_empty());
        assert_eq!(probe.find_by_label("KEEL-DATA"), None);
    }
}
