//! Finding block devices by file-system label, without blkid: scan
//! `/sys/class/block`, open each device read-only and read the ext4
//! superblock or the FAT boot sector.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keel_common::fsutil::read_trimmed;

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
    /// partition its disk's GPT). `None` when sysfs does not know it.
    pub fn device(&self, name: &str) -> Option<BlockDevice> {
        self.device_with(name, &mut GptCache::default())
    }

    /// [`Probe::device`], reading each disk's GPT at most once per `gpts`.
    fn device_with(&self, name: &str, gpts: &mut GptCache) -> Option<BlockDevice> {
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
            .filter_map(|n| self.device_with(n, &mut gpts))
            .collect()
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
            let pick = prefer_disk
                .and_then(|disk| found.iter().position(|d| d.disk == disk))
                .unwrap_or(0);
            log::warn!("{}", duplicate_warning(label, &found, pick));
            return Some(found.swap_remove(pick));
        }
        found.pop()
    }

    /// The firmware's `LoaderDevicePartUUID` (lower case), read from
    /// efivarfs under this probe's sysfs root.
    pub fn loader_device_part_uuid(&self) -> Option<String> {
        super::efivar::read_loader_device_part_uuid(&self.sys_root)
    }

    /// Chooses the ESP among the FAT file systems labelled KEEL-ESP,
    /// without logging: the one whose PARTUUID is the firmware's
    /// `LoaderDevicePartUUID`, else the first by name (see [`EspRule`]).
    pub fn choose_esp(&self) -> Option<EspChoice> {
        let mut found = self.find_all(super::ESP_LABEL);
        found.retain(|d| d.fs.as_ref().is_some_and(|fs| fs.kind == FsKind::Fat));
        if found.is_empty() {
            return None;
        }
        let candidates: Vec<String> = found.iter().map(|d| d.name.clone()).collect();
        let booted = self.loader_device_part_uuid();
        let (pick, rule) = match booted {
            None => (0, EspRule::FirstByName),
            Some(partuuid) => {
                let matching: Vec<usize> = found
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.partuuid.as_deref() == Some(partuuid.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                match matching[..] {
                    [] => (0, EspRule::NotBootedFrom { partuuid }),
                    [one] => (one, EspRule::Booted { partuuid }),
                    [first, ..] => {
                        let names = matching.iter().map(|&i| found[i].name.clone()).collect();
                        (first, EspRule::AmbiguousPartuuid { partuuid, names })
                    }
                }
            }
        };
        Some(EspChoice {
            device: found.swap_remove(pick),
            rule,
            candidates,
        })
    }

    /// [`Probe::choose_esp`], logging how the ESP was chosen.
    pub fn find_esp(&self) -> Option<BlockDevice> {
        let choice = self.choose_esp()?;
        choice.log();
        Some(choice.device)
    }

    /// The device node carrying `label`. The ESP is the one the firmware
    /// booted from ([`Probe::find_esp`]); for any other label a device on
    /// the same disk as the ESP is preferred when there are several.
    pub fn find_by_label(&self, label: &str) -> Option<PathBuf> {
        if label == super::ESP_LABEL {
            return self.find_esp().map(|d| d.path);
        }
        let esp_disk = self.find_esp().map(|d| d.disk);
        self.find(label, None, esp_disk.as_deref()).map(|d| d.path)
    }
}

fn duplicate_warning(label: &str, found: &[BlockDevice], pick: usize) -> String {
    let names: Vec<&str> = found.iter().map(|d| d.name.as_str()).collect();
    format!(
        "{} devices carry the label {label} ({}); using {}",
        found.len(),
        names.join(", "),
        found[pick].name
    )
}

/// How [`Probe::choose_esp`] picked the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspRule {
    /// Its PARTUUID is the firmware's `LoaderDevicePartUUID`: the firmware
    /// booted from it.
    Booted { partuuid: String },
    /// `LoaderDevicePartUUID` is none of their PARTUUIDs (booted from an
    /// ISO on a virtual CD, or from an ESP without the label): the first
    /// by name.
    NotBootedFrom { partuuid: String },
    /// Several carry the PARTUUID the firmware booted from (copies of one
    /// image): the first of those by name.
    AmbiguousPartuuid {
        partuuid: String,
        names: Vec<String>,
    },
    /// No readable `LoaderDevicePartUUID` (no EFI, no efivarfs, another
    /// loader): the first by name.
    FirstByName,
}

/// The ESP [`Probe::choose_esp`] picked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspChoice {
    pub device: BlockDevice,
    pub rule: EspRule,
    /// Every device carrying a FAT KEEL-ESP, by name.
    pub candidates: Vec<String>,
}

impl EspChoice {
    /// What to log about the choice, or `None` when there is nothing worth
    /// saying (a single ESP and no variable).
    pub fn message(&self) -> Option<(log::Level, String)> {
        let label = super::ESP_LABEL;
        let name = &self.device.name;
        let all = self.candidates.join(", ");
        let several = self.candidates.len() > 1;
        match &self.rule {
            EspRule::Booted { partuuid } => {
                let mut text = format!(
                    "booted from {} (LoaderDevicePartUUID {partuuid})",
                    self.device.path.display()
                );
                if several {
                    text.push_str(&format!("; {label} is also on {}", self.others()));
                }
                Some((log::Level::Info, text))
            }
            EspRule::NotBootedFrom { partuuid } => Some((
                if several {
                    log::Level::Warn
                } else {
                    log::Level::Info
                },
                format!(
                    "LoaderDevicePartUUID {partuuid} is not a {label} partition here \
                     ({all}; booted from an ISO?); using {name}, the first by name"
                ),
            )),
            EspRule::AmbiguousPartuuid { partuuid, names } => Some((
                log::Level::Warn,
                format!(
                    "{} partitions have the PARTUUID {partuuid} the firmware booted from \
                     ({}: copies of one image?); using {name}, the first by name",
                    names.len(),
                    names.join(", ")
                ),
            )),
            EspRule::FirstByName if several => Some((
                log::Level::Warn,
                format!(
                    "{} devices carry the label {label} ({all}); using {name} \
                     (no LoaderDevicePartUUID tells which one the firmware booted from)",
                    self.candidates.len()
                ),
            )),
            EspRule::FirstByName => None,
        }
    }

    fn others(&self) -> String {
        let others: Vec<&str> = self
            .candidates
            .iter()
            .filter(|n| **n != self.device.name)
            .map(String::as_str)
            .collect();
        others.join(", ")
    }

    /// Logs [`EspChoice::message`].
    pub fn log(&self) {
        if let Some((level, text)) = self.message() {
            log::log!(level, "{text}");
        }
    }
}

/// One used GPT entry: its number (the kernel's partition number), first
/// byte and unique partition GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GptEntry {
    number: u32,
    start: u64,
    guid: String,
}

/// The GPT entries of each disk read so far in one scan (`None`: no
/// readable GPT).
#[derive(Debug, Default)]
struct GptCache(HashMap<String, Option<Vec<GptEntry>>>);

impl GptCache {
    fn entries(&mut self, dev_root: &Path, disk: &str) -> Option<&[GptEntry]> {
        self.0
            .entry(disk.to_string())
            .or_insert_with(|| read_gpt_entries(&dev_root.join(disk)))
            .as_deref()
    }
}

/// The used entries of the GPT on `disk`, or `None` (logged at debug
/// level: most disks without a GPT are simply not Keel's).
fn read_gpt_entries(disk: &Path) -> Option<Vec<GptEntry>> {
    let read = open_read_only(disk)
        .map_err(|err| err.to_string())
        .and_then(|mut file| gptman::GPT::find_from(&mut file).map_err(|err| err.to_string()));
    match read {
        Ok(gpt) => Some(
            gpt.iter()
                .filter(|(_, entry)| entry.is_used())
                .map(|(number, entry)| GptEntry {
                    number,
                    start: entry.starting_lba.saturating_mul(gpt.sector_size),
                    guid: super::efivar::guid_string(&entry.unique_partition_guid),
                })
                .collect(),
        ),
        Err(err) => {
            log::debug!("no GPT read from {}: {err}", disk.display());
            None
        }
    }
}

/// The GUID of kernel partition `number` starting at `start_sector` (512
/// bytes, as sysfs counts): the entry with that number when it starts
/// there, else the one entry that starts there (the kernel numbered the
/// partitions from another table, as on hybrid MBR/GPT media).
fn partuuid_of(entries: &[GptEntry], number: u32, start_sector: Option<u64>) -> Option<String> {
    let start = start_sector.map(|s| s.saturating_mul(512));
    let by_number = entries
        .iter()
        .find(|e| e.number == number && start.is_none_or(|s| s == e.start));
    if let Some(entry) = by_number {
        return Some(entry.guid.clone());
    }
    let start = start?;
    match entries
        .iter()
        .filter(|e| e.start == start)
        .collect::<Vec<_>>()[..]
    {
        [one] => Some(one.guid.clone()),
        _ => None,
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
            self.add_partition_at(disk, number, image, 2048);
        }

        /// A partition starting at sector `start` (512 bytes) of its disk.
        pub fn add_partition_at(&self, disk: &str, number: u32, image: &Path, start: u64) {
            let name = format!("{disk}{number}");
            let dir = self
                .root
                .0
                .join("sys/devices/virtual/block")
                .join(disk)
                .join(&name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("partition"), format!("{number}\n")).expect("partition");
            std::fs::write(dir.join("start"), format!("{start}\n")).expect("start");
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
        // No GPT to read (vda has no node): no PARTUUIDs.
        assert_eq!(data_dev.partuuid, None);
        assert_eq!(whole.partuuid, None);
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

    /// GPT type GUIDs (on-disk byte order) for test disks.
    pub const ESP_TYPE: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];
    pub const LINUX_TYPE: [u8; 16] = [
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ];
    /// Where the test disks put their partitions (512-byte sectors).
    const ESP_START: u64 = 2048;
    const DATA_START: u64 = 8192;

    /// A partition GUID as GPT stores it; its text form is
    /// `44332211-6655-8877-99aa-bbccddeeffNN` with NN = `last`.
    fn test_guid(last: u8) -> [u8; 16] {
        [
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
            0xff, last,
        ]
    }

    fn test_guid_text(last: u8) -> String {
        format!("44332211-6655-8877-99aa-bbccddeeff{last:02x}")
    }

    /// A sparse 16 MiB disk image with a real GPT written by gptman: an ESP
    /// at sector 2048 (PARTUUID `esp_guid`) and a Linux partition at 8192.
    /// The file systems live in separate images linked as the partitions'
    /// device nodes; only the table is read from the disk.
    fn gpt_disk(path: &Path, esp_guid: [u8; 16], data_guid: [u8; 16]) {
        use gptman::{GPTPartitionEntry, GPT};
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create disk");
        file.set_len(16 << 20).expect("size disk");
        let mut gpt = GPT::new_from(&mut file, 512, [0x5a; 16]).expect("gpt");
        for (i, (ty, guid, start, name)) in [
            (ESP_TYPE, esp_guid, ESP_START, "KEEL-ESP"),
            (LINUX_TYPE, data_guid, DATA_START, "KEEL-DATA"),
        ]
        .into_iter()
        .enumerate()
        {
            gpt[i as u32 + 1] = GPTPartitionEntry {
                partition_type_guid: ty,
                unique_partition_guid: guid,
                starting_lba: start,
                ending_lba: start + 4095,
                attribute_bits: 0,
                partition_name: name.into(),
            };
        }
        GPT::write_protective_mbr_into(&mut file, 512).expect("mbr");
        gpt.write_into(&mut file).expect("write gpt");
    }

    /// Keel installed on `sda` and on a USB stick `sdb`: two GPT disks, each
    /// with a KEEL-ESP and a KEEL-DATA partition; ESP PARTUUIDs end in 0xa1
    /// and 0xb1.
    fn two_keel_disks(images: &Scratch) -> FakeSys {
        let esp = images.0.join("esp.img");
        let data = images.0.join("data.ext4");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        mkfs_ext4(&data, "KEEL-DATA", 8);
        let sys = FakeSys::new();
        for (disk, tag) in [("sda", 0xa0u8), ("sdb", 0xb0)] {
            let image = images.0.join(format!("{disk}.img"));
            gpt_disk(&image, test_guid(tag + 1), test_guid(tag + 2));
            sys.add_disk(disk, Some(&image));
            sys.add_partition_at(disk, 1, &esp, ESP_START);
            sys.add_partition_at(disk, 2, &data, DATA_START);
        }
        sys
    }

    fn set_loader_device_part_uuid(probe: &Probe, text: &str) {
        let path = crate::storage::efivar::variable_path(&probe.sys_root);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir efivars");
        std::fs::write(&path, crate::storage::efivar::tests::efivarfs_bytes(text))
            .expect("write variable");
    }

    #[test]
    fn partuuids_come_from_the_disks_gpt() {
        let images = Scratch::new("gpt-uuid");
        let sys = two_keel_disks(&images);
        let probe = sys.probe();
        let devices = probe.devices();
        let uuids: Vec<(&str, Option<&str>)> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.partuuid.as_deref()))
            .collect();
        let (a1, a2, b1, b2) = (
            test_guid_text(0xa1),
            test_guid_text(0xa2),
            test_guid_text(0xb1),
            test_guid_text(0xb2),
        );
        assert_eq!(
            uuids,
            vec![
                ("sda", None),
                ("sda1", Some(a1.as_str())),
                ("sda2", Some(a2.as_str())),
                ("sdb", None),
                ("sdb1", Some(b1.as_str())),
                ("sdb2", Some(b2.as_str())),
            ]
        );
        // The GPT disk itself is not mistaken for a FAT file system.
        assert_eq!(devices[0].fs, None);
        assert_eq!(probe.device("sdb2").and_then(|d| d.partuuid), Some(b2));
    }

    #[test]
    fn the_esp_the_firmware_booted_from_wins() {
        let images = Scratch::new("booted");
        let sys = two_keel_disks(&images);
        let probe = sys.probe();
        let root = &sys.root.0;

        // Without the variable: the old rule, first by name, with a warning.
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(choice.rule, EspRule::FirstByName);
        assert_eq!(choice.candidates, vec!["sda1", "sdb1"]);
        let (level, text) = choice.message().expect("a warning");
        assert_eq!(level, log::Level::Warn);
        assert!(
            text.starts_with("2 devices carry the label KEEL-ESP (sda1, sdb1); using sda1"),
            "{text}"
        );
        assert_eq!(
            probe.find_by_label("KEEL-DATA"),
            Some(root.join("dev/sda2"))
        );

        // systemd-stub says it was started from the stick's ESP (upper case,
        // as systemd writes it): that ESP, and the data on its disk, win.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xb1).to_uppercase());
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sdb1");
        assert_eq!(
            choice.rule,
            EspRule::Booted {
                partuuid: test_guid_text(0xb1)
            }
        );
        let (level, text) = choice.message().expect("a message");
        assert_eq!(level, log::Level::Info);
        assert!(
            text.starts_with(&format!(
                "booted from {} (LoaderDevicePartUUID {})",
                root.join("dev/sdb1").display(),
                test_guid_text(0xb1)
            )),
            "{text}"
        );
        assert_eq!(probe.find_by_label("KEEL-ESP"), Some(root.join("dev/sdb1")));
        assert_eq!(
            probe.find_by_label("KEEL-DATA"),
            Some(root.join("dev/sdb2"))
        );

        // And the disk's, when that is where the firmware started it.
        set_loader_device_part_uuid(&probe, &test_guid_text(0xa1));
        assert_eq!(
            probe.find_by_label("KEEL-DATA"),
            Some(root.join("dev/sda2"))
        );

        // A GUID that is neither (the ISO's appended ESP on a virtual CD):
        // the old rule again, said so.
        set_loader_device_part_uuid(&probe, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(
            choice.rule,
            EspRule::NotBootedFrom {
                partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into()
            }
        );
        assert_eq!(choice.message().map(|m| m.0), Some(log::Level::Warn));

        // A variable that is not a GUID counts as none.
        set_loader_device_part_uuid(&probe, "garbage");
        assert_eq!(
            probe.choose_esp().map(|c| c.rule),
            Some(EspRule::FirstByName)
        );
    }

    #[test]
    fn copies_of_one_image_share_a_partuuid() {
        let images = Scratch::new("clones");
        let sys = two_keel_disks(&images);
        // sdc is a byte copy of sda (same image written twice).
        let esp = images.0.join("esp.img");
        sys.add_disk("sdc", Some(&images.0.join("sda.img")));
        sys.add_partition_at("sdc", 1, &esp, ESP_START);
        let probe = sys.probe();
        set_loader_device_part_uuid(&probe, &test_guid_text(0xa1));
        let choice = probe.choose_esp().expect("an ESP");
        assert_eq!(choice.device.name, "sda1");
        assert_eq!(
            choice.rule,
            EspRule::AmbiguousPartuuid {
                partuuid: test_guid_text(0xa1),
                names: vec!["sda1".into(), "sdc1".into()]
            }
        );
        assert_eq!(choice.message().map(|m| m.0), Some(log::Level::Warn));
    }

    #[test]
    fn a_single_esp_needs_no_variable_and_says_nothing() {
        let images = Scratch::new("single");
        let esp = images.0.join("esp.img");
        mkfs_vfat(&esp, "KEEL-ESP", 40, true);
        let sys = FakeSys::new();
        sys.add_disk("vda", None);
        sys.add_partition("vda", 1, &esp);
        let choice = sys.probe().choose_esp().expect("an ESP");
        assert_eq!(choice.rule, EspRule::FirstByName);
        assert_eq!(choice.message(), None);
        assert_eq!(FakeSys::new().probe().choose_esp(), None);
    }

    #[test]
    fn partition_numbers_are_checked_against_the_start_sector() {
        let entry = |number, start_sector: u64, last| GptEntry {
            number,
            start: start_sector * 512,
            guid: test_guid_text(last),
        };
        let entries = [entry(1, 2048, 1), entry(2, 8192, 2)];
        assert_eq!(
            partuuid_of(&entries, 2, Some(8192)),
            Some(test_guid_text(2))
        );
        assert_eq!(partuuid_of(&entries, 1, None), Some(test_guid_text(1)));
        // The kernel numbered from another table (hybrid MBR): by start.
        assert_eq!(
            partuuid_of(&entries, 1, Some(8192)),
            Some(test_guid_text(2))
        );
        assert_eq!(partuuid_of(&entries, 3, Some(4096)), None);
        assert_eq!(partuuid_of(&entries, 3, None), None);
    }

    #[test]
    fn a_missing_sysfs_finds_nothing() {
        let probe = Probe::new("/nonexistent/sys", "/nonexistent/dev");
        assert!(probe.devices().is_empty());
        assert_eq!(probe.find_by_label("KEEL-DATA"), None);
    }
}
