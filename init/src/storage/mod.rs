//! Persistent storage at boot: the ESP (read-only, for the seed
//! configuration and the UKI's kernel) and the KEEL-DATA partition (checked,
//! grown to fill its disk, mounted at `/var/lib/keel`), then the seeds
//! imported from the first into the second.
//!
//! Devices are found by file-system label ([`label`]) among those sysfs
//! shows ([`blockdev`]), reading superblocks directly; no blkid or udev is
//! needed. A label alone never makes a disk the host's, since a guest can
//! write any label on a raw disk it is given. The ESP is the one the
//! firmware booted from ([`esp`]): its GPT partition GUID ([`partuuid`]) is
//! in the EFI variable `LoaderDevicePartUUID` set by systemd-stub
//! ([`efivar`]). KEEL-DATA is the one on that ESP's disk, or the one the
//! operator names with `keel.data=PARTUUID=` on the kernel command line
//! ([`claim`], [`data`]): the only way to use a data disk on an ISO boot.
//! Every other KEEL-ESP or KEEL-DATA is ignored, with a log line naming it.
//! [`bring_up`] is the entry point for init: it never fails and never
//! panics, and says what it got.

pub mod blockdev;
pub mod claim;
pub mod data;
pub mod dev_links;
pub mod efivar;
pub mod esp;
pub mod fsck;
pub mod grow;
pub mod label;
pub mod partuuid;
pub mod seeds;
#[cfg(test)]
pub(crate) mod test_support;

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

pub use blockdev::{BlockDevice, Probe};
pub use claim::DataClaim;
pub use data::DataChoice;
pub use esp::{EspChoice, EspRule};
pub use fsck::FsckVerdict;
pub use grow::GrowOutcome;
pub use label::FsKind;
pub use seeds::{import_seeds, SeedReport};

/// Label of the FAT EFI system partition.
pub const ESP_LABEL: &str = "KEEL-ESP";
/// Label of the ext4 data partition.
pub const DATA_LABEL: &str = "KEEL-DATA";
/// Where the data partition is mounted.
pub const DATA_MOUNT: &str = "/var/lib/keel";
/// Where the ESP is mounted, read-only.
pub const ESP_MOUNT: &str = "/run/keel/esp";
/// The seed folder on the ESP.
pub const SEED_DIR: &str = "keel";
/// e2fsck in the image (the static build from Debian's e2fsck-static).
pub const E2FSCK: &str = "/usr/sbin/e2fsck";

/// A storage failure. Each message is a sentence naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Cannot {what} {path}: {source}.")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("The partition table of {disk} cannot be used: {message}.")]
    Gpt { disk: PathBuf, message: String },
    #[error("The primary GPT header of {disk} is damaged; the disk is left untouched.")]
    GptPrimaryDamaged { disk: PathBuf },
    #[error("{disk} has no ext4 partition labelled {label}; the disk is left untouched.")]
    NoDataPartition { disk: PathBuf, label: String },
    #[error(
        "{disk} has more than one ext4 partition labelled {label}; the disk is left untouched."
    )]
    AmbiguousDataPartition { disk: PathBuf, label: String },
    #[error("Partition {partition} of {disk} is not the last partition, so it is not grown.")]
    NotLastPartition { disk: PathBuf, partition: u32 },
    #[error("Partition {partition} of {disk} ends at sector {end}, past the disk's last usable sector {last_usable}; it is not shrunk.")]
    WouldShrink {
        disk: PathBuf,
        partition: u32,
        end: u64,
        last_usable: u64,
    },
    #[error("{what} on {path} failed: {source}.")]
    Ioctl {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{device} does not hold an ext file system.")]
    NotExt { device: PathBuf },
    #[error("Cannot mount {device} ({fstype}) on {target}: {source}.")]
    Mount {
        device: PathBuf,
        target: PathBuf,
        fstype: String,
        source: nix::errno::Errno,
    },
    #[error("{target} is already a mount point.")]
    AlreadyMounted { target: PathBuf },
    #[error("e2fsck found errors on {device} it could not repair (exit status {code}), and mounting it read-only failed too.")]
    Unrepaired { device: PathBuf, code: i32 },
}

/// How the data partition was prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMount {
    pub device: PathBuf,
    pub mount_point: PathBuf,
    /// Mounted read-only because e2fsck could not repair it.
    pub read_only: bool,
    pub fsck: FsckVerdict,
    /// What growing the partition table did, when it was tried.
    pub grown: Option<GrowOutcome>,
    /// Old and new block counts when the file system was grown.
    pub fs_resized: Option<(u64, u64)>,
}

/// Where things are on the running system; tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct DataOptions {
    pub mount_point: PathBuf,
    pub e2fsck: PathBuf,
    /// The directory holding whole-disk nodes (`/dev`).
    pub dev_root: PathBuf,
}

impl DataOptions {
    pub fn system(mount_point: &Path) -> Self {
        DataOptions {
            mount_point: mount_point.to_path_buf(),
            e2fsck: PathBuf::from(E2FSCK),
            dev_root: PathBuf::from("/dev"),
        }
    }
}

fn io_err(what: &str, path: &Path) -> impl Fn(std::io::Error) -> StorageError {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| StorageError::Io {
        what: what.clone(),
        path: path.clone(),
        source,
    }
}

/// Whether `target` is a mount point now.
fn is_mounted(target: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let target = target.to_string_lossy();
    crate::mounts::parse_mounts(&text)
        .iter()
        .any(|m| m.target == target)
}

/// Checks, grows and mounts one KEEL-DATA device.
///
/// 1. `e2fsck -p`: exit 0-2 continue; 4 and above mount read-only and grow
///    nothing.
/// 2. When the device is a partition: grow the GPT of its disk (last
///    partition only) and tell the kernel. A failure is logged; the
///    partition is still mounted at its old size.
/// 3. Mount ext4 with noatime,nodev,nosuid.
/// 4. Grow the mounted file system online to fill the partition.
pub fn prepare_device(
    device: &BlockDevice,
    options: &DataOptions,
) -> Result<DataMount, StorageError> {
    let target = &options.mount_point;
    if is_mounted(target) {
        return Err(StorageError::AlreadyMounted {
            target: target.clone(),
        });
    }
    log::info!("data partition: {}", device.path.display());
    let fsck = fsck::run_e2fsck(&options.e2fsck, &device.path);
    let read_write = fsck.allows_read_write();

    let mut grown = None;
    if read_write && device.is_partition() {
        let disk = grow::disk_node(&options.dev_root, &device.disk);
        match grow::grow_disk(&disk, DATA_LABEL) {
            Ok(outcome) => {
                if let GrowOutcome::Grown {
                    partition,
                    old_len,
                    new_len,
                    ..
                } = &outcome
                {
                    // KiB: the slack at the end of a freshly written image
                    // is often under a MiB.
                    log::info!(
                        "grew partition {partition} of {} from {} KiB to {} KiB",
                        disk.display(),
                        old_len >> 10,
                        new_len >> 10
                    );
                }
                grown = Some(outcome);
            }
            Err(err) => log::error!("{err} The data partition keeps its size."),
        }
    }

    std::fs::create_dir_all(target).map_err(io_err("create", target))?;
    let mut flags = MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if !read_write {
        flags |= MsFlags::MS_RDONLY;
    }
    let mounted = mount(
        Some(device.path.as_path()),
        target.as_path(),
        Some("ext4"),
        flags,
        None::<&str>,
    );
    if let Err(source) = mounted {
        if let FsckVerdict::Failed(code) = fsck {
            log::error!(
                "cannot mount the damaged {} even read-only: {source}",
                device.path.display()
            );
            return Err(StorageError::Unrepaired {
                device: device.path.clone(),
                code,
            });
        }
        return Err(StorageError::Mount {
            device: device.path.clone(),
            target: target.clone(),
            fstype: "ext4".into(),
            source,
        });
    }
    if read_write {
        log::info!("mounted {} on {}", device.path.display(), target.display());
    } else {
        log::error!(
            "mounted the damaged {} READ-ONLY on {}: nothing will be saved until it is repaired",
            device.path.display(),
            target.display()
        );
    }

    let mut fs_resized = None;
    if read_write {
        match grow::resize_mounted_ext4(target, &device.path) {
            Ok(Some((old, new))) => {
                log::info!(
                    "grew the file system on {} from {old} to {new} blocks",
                    device.path.display()
                );
                fs_resized = Some((old, new));
            }
            Ok(None) => {}
            Err(err) => log::error!("{err} The file system keeps its size."),
        }
    }
    Ok(DataMount {
        device: device.path.clone(),
        mount_point: target.clone(),
        read_only: !read_write,
        fsck,
        grown,
        fs_resized,
    })
}

/// Mounts `esp` (the FAT file system labelled KEEL-ESP the firmware booted
/// from, see [`esp::choose_esp`]) read-only at `mount_point`. `Ok(None)`
/// when there is none (booted from an ISO on a virtual CD, whose ESP is
/// not a partition the kernel sees).
pub fn mount_esp(
    esp: Option<&BlockDevice>,
    mount_point: &Path,
) -> Result<Option<PathBuf>, StorageError> {
    let Some(device) = esp else {
        log::info!("no {ESP_LABEL} partition booted from: no seed configuration to import");
        return Ok(None);
    };
    mount_esp_device(&device.path, mount_point).map(Some)
}

/// Mounts one FAT device read-only at `mount_point`.
pub fn mount_esp_device(device: &Path, mount_point: &Path) -> Result<PathBuf, StorageError> {
    if is_mounted(mount_point) {
        return Err(StorageError::AlreadyMounted {
            target: mount_point.to_path_buf(),
        });
    }
    std::fs::create_dir_all(mount_point).map_err(io_err("create", mount_point))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some(device),
        mount_point,
        Some("vfat"),
        flags,
        Some("umask=0077"),
    )
    .map_err(|source| StorageError::Mount {
        device: device.to_path_buf(),
        target: mount_point.to_path_buf(),
        fstype: "vfat".into(),
        source,
    })?;
    log::info!(
        "mounted {} read-only on {}",
        device.display(),
        mount_point.display()
    );
    Ok(mount_point.to_path_buf())
}

/// What [`bring_up`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// The data directory (`/var/lib/keel`), `None` when there is no
    /// KEEL-DATA partition or it could not be mounted: state then lives on
    /// tmpfs and does not survive a reboot.
    pub data: Option<PathBuf>,
    /// The data partition is mounted read-only (e2fsck could not repair it).
    pub data_read_only: bool,
    /// Where the ESP is mounted (`/run/keel/esp`), if it is.
    pub esp: Option<PathBuf>,
    /// What the seed import did, when it ran.
    pub seeds: Option<SeedReport>,
}

/// Brings storage up at boot: mounts the ESP read-only, checks, grows and
/// mounts KEEL-DATA, then imports the ESP's seeds. Never fails and never
/// panics; every problem is logged and the result says what is available.
pub fn bring_up() -> Storage {
    std::panic::catch_unwind(|| bring_up_at(Path::new(ESP_MOUNT), Path::new(DATA_MOUNT)))
        .unwrap_or_else(|_| {
            log::error!("internal error while bringing up storage; continuing without it");
            Storage::default()
        })
}

/// The ESP and the data partition boot may use, chosen from one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub esp: EspChoice,
    pub data: DataChoice,
    /// Every block device the choice was made from.
    pub devices: Vec<BlockDevice>,
}

impl Selection {
    pub fn log(&self) {
        self.esp.log();
        self.data.log();
    }
}

/// Chooses, without logging, the ESP (the KEEL-ESP whose PARTUUID is
/// `booted`, the firmware's `LoaderDevicePartUUID`) and the data partition
/// (the KEEL-DATA of that ESP's disk, or the one `claim` names) among the
/// devices `probe` sees.
pub fn select(probe: &Probe, booted: Option<&str>, claim: Option<&DataClaim>) -> Selection {
    let devices = probe.devices();
    let esp = esp::choose_esp(&devices, booted);
    let data = data::choose_data(&devices, esp.device.as_ref(), claim);
    Selection { esp, data, devices }
}

/// How long boot waits for the Keel partitions to appear: USB sticks and
/// some controllers register their disks a few seconds after init starts.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Chooses the partitions once both are visible (the ESP only when the
/// firmware booted from a partition), or the timeout passes (an ISO boot
/// from a virtual CD without a claimed data disk has neither).
fn settle(probe: &Probe, booted: Option<&str>, claim: Option<&DataClaim>) -> Selection {
    let started = std::time::Instant::now();
    loop {
        let selection = select(probe, booted, claim);
        let esp = selection.esp.device.is_some() || booted.is_none();
        let data = selection.data.device.is_some();
        if esp && data {
            return selection;
        }
        if started.elapsed() >= SETTLE_TIMEOUT {
            log::info!(
                "after {} s: {ESP_LABEL} {}, {DATA_LABEL} {}",
                SETTLE_TIMEOUT.as_secs(),
                if selection.esp.device.is_some() {
                    "found"
                } else {
                    "missing"
                },
                if data { "found" } else { "missing" }
            );
            return selection;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn bring_up_at(esp_mount: &Path, data_mount: &Path) -> Storage {
    let mut storage = Storage::default();
    let probe = Probe::system();
    let booted = probe.loader_device_part_uuid();
    let claim = claim::read_claim(Path::new("/proc/cmdline"));
    // Chosen once, so the ESP mounted and the disk KEEL-DATA is taken from
    // agree, and the choice is logged once.
    let selection = settle(&probe, booted.as_deref(), claim.as_ref());
    selection.log();
    dev_links::link_by_partuuid(&selection.devices, &probe.dev_root);
    match mount_esp(selection.esp.device.as_ref(), esp_mount) {
        Ok(esp) => storage.esp = esp,
        Err(err) => log::error!("{err}"),
    }
    let prepared = match &selection.data.device {
        Some(device) => prepare_device(device, &DataOptions::system(data_mount)).map(Some),
        None => {
            log::info!(
                "no {DATA_LABEL} partition in use: configuration and guests will not persist"
            );
            Ok(None)
        }
    };
    match prepared {
        Ok(Some(data)) => {
            storage.data_read_only = data.read_only;
            storage.data = Some(data.mount_point);
        }
        Ok(None) => {}
        Err(err) => log::error!("{err} Configuration and guests will not persist."),
    }
    if let (Some(esp), Some(data)) = (&storage.esp, &storage.data) {
        if storage.data_read_only {
            log::warn!("the data partition is read-only: seeds are not imported");
        } else {
            storage.seeds = Some(import_seeds(&esp.join(SEED_DIR), data));
        }
    } else if let Some(data) = &storage.data {
        if !storage.data_read_only {
            seeds::create_data_dirs(data);
        }
    }
    storage
}
