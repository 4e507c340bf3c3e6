//! Scratch directories, real file-system images, a fake sysfs and GPT
//! disks for the storage tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Probe;

/// A temp directory; the `TempDir`, held only for its drop, removes it.
pub struct Scratch(pub PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-storage-{tag}-"))
            .tempdir()
            .expect("mkdir scratch");
        Scratch(dir.path().to_path_buf(), dir)
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

/// GPT type GUIDs (on-disk byte order) for test disks.
pub const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
pub const LINUX_TYPE: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];
/// Where the test disks put their partitions (512-byte sectors).
pub const ESP_START: u64 = 2048;
pub const DATA_START: u64 = 8192;

/// A partition GUID as GPT stores it; its text form is
/// `44332211-6655-8877-99aa-bbccddeeffNN` with NN = `last`.
pub fn test_guid(last: u8) -> [u8; 16] {
    [
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        last,
    ]
}

pub fn test_guid_text(last: u8) -> String {
    format!("44332211-6655-8877-99aa-bbccddeeff{last:02x}")
}

/// One GPT entry of a test disk: type, unique GUID, first sector, name.
pub type TestPartition = ([u8; 16], [u8; 16], u64, &'static str);

/// The ESP of a test disk, at sector 2048.
pub fn esp_entry(guid: [u8; 16]) -> TestPartition {
    (ESP_TYPE, guid, ESP_START, "KEEL-ESP")
}

/// The data partition of a test disk, at sector 8192.
pub fn data_entry(guid: [u8; 16]) -> TestPartition {
    (LINUX_TYPE, guid, DATA_START, "KEEL-DATA")
}

/// A sparse 16 MiB disk image with a real GPT written by gptman, holding
/// `partitions` (4096 sectors each) numbered from 1. The file systems live
/// in separate images linked as the partitions' device nodes; only the
/// table is read from the disk.
pub fn gpt_disk(path: &Path, partitions: &[TestPartition]) {
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
    for (i, &(ty, guid, start, name)) in partitions.iter().enumerate() {
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
pub fn two_keel_disks(images: &Scratch) -> FakeSys {
    let esp = images.0.join("esp.img");
    let data = images.0.join("data.ext4");
    mkfs_vfat(&esp, "KEEL-ESP", 40, true);
    mkfs_ext4(&data, "KEEL-DATA", 8);
    let sys = FakeSys::new();
    for (disk, tag) in [("sda", 0xa0u8), ("sdb", 0xb0)] {
        let image = images.0.join(format!("{disk}.img"));
        gpt_disk(
            &image,
            &[
                esp_entry(test_guid(tag + 1)),
                data_entry(test_guid(tag + 2)),
            ],
        );
        sys.add_disk(disk, Some(&image));
        sys.add_partition_at(disk, 1, &esp, ESP_START);
        sys.add_partition_at(disk, 2, &data, DATA_START);
    }
    sys
}

pub fn set_loader_device_part_uuid(probe: &Probe, text: &str) {
    let path = crate::storage::efivar::variable_path(&probe.sys_root);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir efivars");
    std::fs::write(&path, efivarfs_bytes(text)).expect("write variable");
}

/// The efivarfs bytes systemd-stub's variable reads as: attributes
/// (non-volatile is not set: boot service and runtime access, 0x6),
/// then `text` as NUL-terminated UTF-16LE.
pub fn efivarfs_bytes(text: &str) -> Vec<u8> {
    let mut raw = 6u32.to_le_bytes().to_vec();
    for unit in text.encode_utf16().chain([0]) {
        raw.extend_from_slice(&unit.to_le_bytes());
    }
    raw
}

/// The device sysfs calls `name`, as the scan describes it.
pub fn device(probe: &Probe, name: &str) -> Option<super::BlockDevice> {
    probe.devices().into_iter().find(|d| d.name == name)
}

/// The device node boot would use for the ESP or the data partition, with
/// the firmware's variable as `probe` shows it and no `keel.data=` claim.
pub fn find_by_label(probe: &Probe, label: &str) -> Option<PathBuf> {
    let selection = super::select(probe, probe.loader_device_part_uuid().as_deref(), None);
    let device = match label {
        super::ESP_LABEL => selection.esp.device,
        super::DATA_LABEL => selection.data.device,
        _ => panic!(
            "boot chooses only {} and {}",
            super::ESP_LABEL,
            super::DATA_LABEL
        ),
    };
    device.map(|d| d.path)
}
