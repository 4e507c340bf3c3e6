//! The data partition on a real block device: a GPT disk image (ESP +
//! 32 MiB KEEL-DATA ext4) in a 128 MiB sparse file, attached with
//! `losetup -P`, then the real e2fsck, GPT growth, BLKPG, mount, online
//! ext4 resize and seed import. Needs root and /dev/loop-control; without
//! them it says SKIPPED on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gptman::{GPTPartitionEntry, GPT};
use keel_init::storage::{
    self, import_seeds, mount_esp_device, prepare_device, BlockDevice, DataOptions, FsKind,
    FsckVerdict, GrowOutcome, Probe,
};
use nix::mount::{umount2, MntFlags};

const MIB: u64 = 1 << 20;
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
const LINUX_TYPE: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

/// Prints the storage module's log on stderr, so a failure shows why.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!("{}: {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

fn skip(what: &str, why: &str) {
    eprintln!("SKIPPED: {what} because {why}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Cleans up whatever the test set up, even when it fails half way.
struct Guard {
    dir: PathBuf,
    loop_dev: Option<String>,
    mounts: Vec<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keel.img's layout in miniature: 1 MiB gap, a FAT32 ESP with a seed
/// folder, the 32 MiB KEEL-DATA ext4, 1 MiB for the backup GPT; then the
/// file is stretched to 128 MiB as if written to a bigger stick.
fn build_image(dir: &Path) -> PathBuf {
    let esp = dir.join("esp.img");
    File::create(&esp)
        .and_then(|f| f.set_len(34 * MIB))
        .expect("esp file");
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "KEEL-ESP"])
        .arg(&esp));
    let seed = dir.join("host.toml");
    std::fs::write(&seed, "hostname = \"hv-loop\"\n").expect("seed");
    run(Command::new("mmd").arg("-i").arg(&esp).arg("::keel"));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg(&seed)
        .arg("::keel/host.toml"));
    let data = dir.join("data.ext4");
    File::create(&data)
        .and_then(|f| f.set_len(32 * MIB))
        .expect("data file");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "KEEL-DATA"])
        .arg(&data));

    let parts = [
        ("KEEL-ESP", ESP_TYPE, std::fs::read(&esp).expect("esp")),
        ("KEEL-DATA", LINUX_TYPE, std::fs::read(&data).expect("data")),
    ];
    let img = dir.join("keel.img");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&img)
        .expect("create image");
    file.set_len(MIB + 34 * MIB + 32 * MIB + MIB).expect("size");
    let mut gpt = GPT::new_from(&mut file, 512, [9; 16]).expect("gpt");
    let mut offset = MIB;
    for (i, (name, ty, bytes)) in parts.iter().enumerate() {
        gpt[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: *ty,
            unique_partition_guid: [i as u8 + 1; 16],
            starting_lba: offset / 512,
            ending_lba: (offset + bytes.len() as u64) / 512 - 1,
            attribute_bits: 0,
            partition_name: (*name).into(),
        };
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.write_all(bytes).expect("write");
        offset += bytes.len() as u64;
    }
    GPT::write_protective_mbr_into(&mut file, 512).expect("mbr");
    gpt.write_into(&mut file).expect("gpt write");
    file.set_len(128 * MIB).expect("stretch");
    file.sync_all().expect("sync");
    img
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether capability number `cap` is in this process's effective set.
fn has_capability(cap: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// The device sysfs calls `name`, as the probe's scan describes it.
fn device(probe: &Probe, name: &str) -> Option<BlockDevice> {
    probe.devices().into_iter().find(|d| d.name == name)
}

fn total_bytes(mount_point: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(mount_point).expect("statvfs");
    st.blocks() * st.fragment_size()
}

fn e2fsck() -> Option<PathBuf> {
    ["/sbin/e2fsck.static", "/usr/sbin/e2fsck", "/sbin/e2fsck"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn grows_checks_and_mounts_keel_data_on_a_loop_device() {
    const WHAT: &str = "the loop-device data partition test";
    let _ = log::set_logger(&LOGGER);
    // EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE, which containers often
    // drop (this build machine's does). PID 1 in the appliance has it.
    let can_resize = has_capability(24);
    if !can_resize {
        skip(
            "the online ext4 resize check of the loop-device test",
            "this process lacks CAP_SYS_RESOURCE, so the kernel refuses EXT4_IOC_RESIZE_FS (the GPT growth, BLKPG, e2fsck and mount are still checked)",
        );
    }
    log::set_max_level(log::LevelFilter::Debug);
    if !nix::unistd::geteuid().is_root() {
        return skip(WHAT, "it needs root (losetup, mount)");
    }
    if !Path::new("/dev/loop-control").exists() {
        return skip(WHAT, "/dev/loop-control is missing");
    }
    for tool in ["losetup", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy"] {
        if !have(tool) {
            return skip(WHAT, &format!("{tool} is not installed"));
        }
    }
    let Some(e2fsck) = e2fsck() else {
        return skip(WHAT, "no e2fsck is installed");
    };

    let dir = std::env::temp_dir().join(format!("keel-data-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut guard = Guard {
        dir: dir.clone(),
        loop_dev: None,
        mounts: Vec::new(),
    };
    let img = build_image(&dir);

    let attached = Command::new("losetup")
        .args(["-f", "--show", "-P"])
        .arg(&img)
        .output()
        .expect("losetup");
    if !attached.status.success() {
        return skip(
            WHAT,
            &format!(
                "losetup -P failed: {}",
                String::from_utf8_lossy(&attached.stderr).trim()
            ),
        );
    }
    let loop_dev = String::from_utf8_lossy(&attached.stdout).trim().to_string();
    guard.loop_dev = Some(loop_dev.clone());
    let disk = loop_dev.trim_start_matches("/dev/").to_string();
    let data_name = format!("{disk}p2");
    let esp_name = format!("{disk}p1");
    let data_node = PathBuf::from(format!("/dev/{data_name}"));
    if !wait_for(&data_node, Duration::from_secs(2)) {
        // Some host kernels (this build machine's) have no GPT parser, so
        // losetup -P finds nothing; partx adds the partitions with BLKPG,
        // which is all the kernel's own scan would have done. The
        // appliance kernel parses GPT itself.
        if !have("partx") {
            return skip(WHAT, "the kernel did not scan the GPT and partx is missing");
        }
        eprintln!("note: the host kernel did not scan the loop device's GPT; adding the partitions with partx");
        run(Command::new("partx").args(["-a", &loop_dev]));
    }
    assert!(
        wait_for(&data_node, Duration::from_secs(10)),
        "/dev/{data_name} never appeared"
    );

    // The probe sees both partitions on the loop disk by label.
    let probe = Probe::system();
    let data = device(&probe, &data_name).expect("data partition in sysfs");
    assert_eq!(data.disk, disk);
    assert_eq!(data.partition, Some(2));
    let fs = data.fs.clone().expect("label read");
    assert_eq!((fs.kind, fs.label.as_str()), (FsKind::Ext, "KEEL-DATA"));
    assert!(probe
        .find_all("KEEL-DATA")
        .iter()
        .any(|d| d.name == data_name));
    let esp = device(&probe, &esp_name).expect("ESP in sysfs");
    assert_eq!(
        esp.fs.map(|f| (f.kind, f.label)),
        Some((FsKind::Fat, "KEEL-ESP".to_string()))
    );

    // The ESP is mounted (read-only) first, as at boot, so BLKPG must
    // work while another partition of the disk is in use. Without vfat in
    // the host kernel the ESP is held open exclusively instead (as busy
    // for BLKRRPART as a mount) and its seeds are copied out with mtools.
    let vfat = std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.trim_end().ends_with("vfat")))
        .unwrap_or(false);
    let esp_mount = dir.join("esp");
    let mut _esp_hold = None;
    let seed_dir = if vfat {
        mount_esp_device(&esp.path, &esp_mount).expect("mount the ESP");
        guard.mounts.push(esp_mount.clone());
        esp_mount.join(storage::SEED_DIR)
    } else {
        skip(
            "mounting the ESP (vfat) in the loop-device test",
            "the host kernel has no vfat; its seeds are read with mtools instead",
        );
        _esp_hold = Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_EXCL)
                .open(&esp.path)
                .expect("hold the ESP"),
        );
        let out = dir.join("esp-copy/keel");
        std::fs::create_dir_all(&out).expect("mkdir");
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&esp.path)
            .arg("::keel/host.toml")
            .arg(out.join("host.toml")));
        out
    };

    let mount_point = dir.join("data");
    let options = DataOptions {
        mount_point: mount_point.clone(),
        e2fsck: e2fsck.clone(),
        dev_root: PathBuf::from("/dev"),
    };
    let first = prepare_device(&data, &options).expect("prepare");
    guard.mounts.push(mount_point.clone());
    assert_eq!(first.fsck, FsckVerdict::Clean);
    assert!(!first.read_only);
    match first.grown {
        Some(GrowOutcome::Grown {
            partition,
            old_len,
            new_len,
            ..
        }) => {
            assert_eq!(partition, 2);
            assert_eq!(old_len, 32 * MIB);
            // From 35 MiB to the last usable sector, followed by the 33-sector backup GPT.
            assert_eq!(new_len, 128 * MIB - 35 * MIB - 33 * 512);
        }
        other => panic!("expected growth, got {other:?}"),
    }
    let sysfs_size: u64 = std::fs::read_to_string(format!("/sys/class/block/{data_name}/size"))
        .expect("sysfs size")
        .trim()
        .parse()
        .expect("number");
    assert!(
        sysfs_size * 512 == 128 * MIB - 35 * MIB - 33 * 512,
        "the kernel still sees {sysfs_size} sectors"
    );
    let size = total_bytes(&mount_point);
    if can_resize {
        let (old_blocks, new_blocks) = first.fs_resized.expect("the file system grew");
        assert!(new_blocks > 2 * old_blocks, "{old_blocks} -> {new_blocks}");
        assert!(size > 80 * MIB, "df sees only {size} bytes");
    } else {
        // The kernel refused EXT4_IOC_RESIZE_FS; the mount went on.
        assert_eq!(first.fs_resized, None);
        assert!(size < 33 * MIB, "{size}");
    }
    let df = run(Command::new("df").arg("-B1M").arg(&mount_point));
    eprintln!("{df}");

    // Seeds from the mounted ESP land on the data partition.
    let report = import_seeds(&seed_dir, &mount_point);
    assert!(report.host_config_updated, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(mount_point.join("host.toml")).expect("imported"),
        "hostname = \"hv-loop\"\n"
    );
    for sub in ["guests", "images", "disks", "logs", "agent"] {
        assert!(mount_point.join(sub).is_dir(), "{sub}");
    }
    keel_sys::fsutil::atomic_write(&mount_point.join("disks/probe.txt"), b"persisted\n", 0o644)
        .expect("write on the data partition");

    // Mounting over a mount point is refused.
    assert!(matches!(
        prepare_device(&data, &options),
        Err(storage::StorageError::AlreadyMounted { .. })
    ));

    umount2(&mount_point, MntFlags::empty()).expect("unmount data");
    guard.mounts.pop();

    // Second boot: nothing left to grow, the file survived.
    let second = prepare_device(&data, &options).expect("prepare again");
    guard.mounts.push(mount_point.clone());
    assert_eq!(second.fsck, FsckVerdict::Clean);
    assert_eq!(
        second.grown,
        Some(GrowOutcome::AlreadyFull { partition: 2 })
    );
    assert_eq!(second.fs_resized, None);
    assert_eq!(total_bytes(&mount_point), size);
    assert_eq!(
        std::fs::read(mount_point.join("disks/probe.txt")).expect("read back"),
        b"persisted\n"
    );

    umount2(&mount_point, MntFlags::empty()).expect("unmount data");
    guard.mounts.pop();
    if vfat {
        umount2(&esp_mount, MntFlags::empty()).expect("unmount ESP");
        guard.mounts.pop();
    }
    drop(_esp_hold);
    // A forced full check of the grown file system finds nothing.
    run(Command::new(&e2fsck).arg("-fn").arg(&data.path));
    run(Command::new("losetup").args(["-d", &loop_dev]));
    guard.loop_dev = None;

    // The image itself now carries the grown table.
    let gpt = GPT::find_from(&mut File::open(&img).expect("open")).expect("gpt");
    assert_eq!(gpt.header.backup_lba, 128 * MIB / 512 - 1);
    assert_eq!(gpt[2].ending_lba, gpt.header.last_usable_lba);
    assert_eq!(
        gpt[1].ending_lba,
        (MIB + 34 * MIB) / 512 - 1,
        "the ESP is untouched"
    );
}
