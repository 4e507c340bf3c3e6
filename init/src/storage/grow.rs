//! Growing KEEL-DATA to fill its disk: the GPT (backup header moved to the
//! disk's real end, the last partition extended), the kernel's view of the
//! partition (BLKPG), and the mounted ext4 file system (EXT4_IOC_RESIZE_FS).
//!
//! `keel.img` is small; once it is written to a larger stick or disk the
//! space after it is unused until this runs. It only ever extends the last
//! partition of a disk whose GPT holds the KEEL-DATA ext4 file system, and
//! never shrinks anything.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use gptman::GPT;

use super::probe::{read_label_at, FsKind, EXT_SUPERBLOCK, PROBE_BYTES};
use super::StorageError;

/// What growing the partition table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrowOutcome {
    /// The partition already ends at the last usable sector and the backup
    /// GPT is at the end of the disk.
    AlreadyFull { partition: u32 },
    /// The table was rewritten; sizes are in bytes.
    Grown {
        partition: u32,
        start: u64,
        old_len: u64,
        new_len: u64,
    },
}

fn gpt_err(disk: &Path) -> impl Fn(gptman::Error) -> StorageError + '_ {
    move |err| StorageError::Gpt {
        disk: disk.to_path_buf(),
        message: err.to_string(),
    }
}

fn io_err<'a>(what: &'a str, path: &'a Path) -> impl Fn(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

/// Extends the partition holding the ext4 file system labelled `label` to
/// the end of `disk` and moves the backup GPT there. `name` is used in
/// messages only.
///
/// Refuses (and writes nothing) when the disk has no GPT, when no partition
/// or more than one holds that file system, when it is not the last
/// partition, when the primary header is damaged, or when the disk is
/// smaller than the table says.
pub fn grow_partition<D: Read + Write + Seek>(
    disk: &mut D,
    name: &Path,
    label: &str,
) -> Result<GrowOutcome, StorageError> {
    let mut gpt = GPT::find_from(disk).map_err(gpt_err(name))?;
    if !gpt.header.is_primary() {
        return Err(StorageError::GptPrimaryDamaged {
            disk: name.to_path_buf(),
        });
    }
    let ss = gpt.sector_size;
    let used: Vec<(u32, u64, u64)> = gpt
        .iter()
        .filter(|(_, e)| e.is_used())
        .map(|(i, e)| (i, e.starting_lba, e.ending_lba))
        .collect();
    let mut ours = Vec::new();
    for &(index, start, _) in &used {
        let fs = read_label_at(disk, start * ss).map_err(io_err("read", name))?;
        if fs.is_some_and(|fs| fs.kind == FsKind::Ext && fs.label == label) {
            ours.push(index);
        }
    }
    let index = match ours.as_slice() {
        [] => {
            return Err(StorageError::NoDataPartition {
                disk: name.to_path_buf(),
                label: label.to_string(),
            })
        }
        [one] => *one,
        _ => {
            return Err(StorageError::AmbiguousDataPartition {
                disk: name.to_path_buf(),
                label: label.to_string(),
            })
        }
    };
    let (_, start_lba, old_end) = used
        .iter()
        .copied()
        .find(|(i, _, _)| *i == index)
        .unwrap_or((index, 0, 0));
    if used.iter().any(|&(_, _, end)| end > old_end) {
        return Err(StorageError::NotLastPartition {
            disk: name.to_path_buf(),
            partition: index,
        });
    }

    let old_backup = gpt.header.backup_lba;
    let mut header = gpt.header.clone();
    header.update_from(disk, ss).map_err(gpt_err(name))?;
    let new_end = header.last_usable_lba;
    if new_end < old_end {
        return Err(StorageError::WouldShrink {
            disk: name.to_path_buf(),
            partition: index,
            end: old_end,
            last_usable: new_end,
        });
    }
    if new_end == old_end && header.backup_lba == old_backup {
        return Ok(GrowOutcome::AlreadyFull { partition: index });
    }

    gpt.header = header;
    gpt[index].ending_lba = new_end;
    gpt.write_into(disk).map_err(gpt_err(name))?;
    // The old backup header now lies inside the grown partition. Wipe it
    // so no tool mistakes it for a second table.
    if old_backup != gpt.header.backup_lba && old_backup > old_end && old_backup <= new_end {
        wipe_stale_header(disk, old_backup * ss, ss).map_err(io_err("write", name))?;
    }
    update_protective_mbr(disk, gpt.header.backup_lba + 1, ss).map_err(io_err("write", name))?;
    disk.flush().map_err(io_err("flush", name))?;
    Ok(GrowOutcome::Grown {
        partition: index,
        start: start_lba * ss,
        old_len: (old_end - start_lba + 1) * ss,
        new_len: (new_end - start_lba + 1) * ss,
    })
}

/// Zeroes one sector if it holds a GPT header signature.
fn wipe_stale_header<D: Read + Write + Seek>(
    disk: &mut D,
    offset: u64,
    ss: u64,
) -> std::io::Result<()> {
    let mut sig = [0u8; 8];
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(&mut sig)?;
    if &sig == b"EFI PART" {
        disk.seek(SeekFrom::Start(offset))?;
        disk.write_all(&vec![0u8; ss as usize])?;
    }
    Ok(())
}

/// Sets the size of the protective MBR's 0xEE entry to the disk's, keeping
/// any boot code. A sector 0 that is not a protective MBR is left alone.
fn update_protective_mbr<D: Read + Write + Seek>(
    disk: &mut D,
    disk_sectors: u64,
    _ss: u64,
) -> std::io::Result<()> {
    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut mbr)?;
    const ENTRY: usize = 0x1BE;
    if mbr[510..512] != [0x55, 0xAA] || mbr[ENTRY + 4] != 0xEE {
        return Ok(());
    }
    let size = u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    mbr[ENTRY + 12..ENTRY + 16].copy_from_slice(&size.to_le_bytes());
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&mbr)
}

/// `struct blkpg_partition` from `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` from `<linux/blkpg.h>`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

// BLKPG is _IO(0x12, 105) but takes a pointer.
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Tells the kernel that partition `partition` of the open whole disk now
/// spans `len` bytes from `start`. BLKPG works while other partitions of
/// the disk are mounted; BLKRRPART (a full re-read) is the fallback and
/// only works when none is.
pub fn tell_kernel(
    disk: &File,
    name: &Path,
    partition: u32,
    start: u64,
    len: u64,
) -> Result<(), StorageError> {
    let ioctl_err = |what: &str, err: nix::errno::Errno| StorageError::Ioctl {
        what: what.to_string(),
        path: name.to_path_buf(),
        source: std::io::Error::from(err),
    };
    let too_big = || StorageError::Ioctl {
        what: "BLKPG_RESIZE_PARTITION".into(),
        path: name.to_path_buf(),
        source: std::io::Error::other("the partition is too large"),
    };
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(|_| too_big())?,
        length: i64::try_from(len).map_err(|_| too_big())?,
        pno: i32::try_from(partition).map_err(|_| too_big())?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: the fd is an open block device; `arg` and the partition it
    // points to are valid, correctly laid out (#[repr(C)] copies of the
    // kernel's structs) and outlive the call; the kernel only reads them.
    let resized = unsafe { blkpg(disk.as_raw_fd(), &arg) };
    match resized {
        Ok(_) => Ok(()),
        Err(err) => {
            log::warn!(
                "BLKPG_RESIZE_PARTITION on {} failed ({err}); asking the kernel to re-read the whole table",
                name.display()
            );
            // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
            unsafe { blkrrpart(disk.as_raw_fd()) }
                .map(|_| ())
                .map_err(|err2| ioctl_err("BLKRRPART", err2))
        }
    }
}

/// The size in bytes of a block device (BLKGETSIZE64) or regular file.
pub fn device_size(file: &File, name: &Path) -> Result<u64, StorageError> {
    let meta = file.metadata().map_err(io_err("inspect", name))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live local.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(|err| StorageError::Ioctl {
        what: "BLKGETSIZE64".into(),
        path: name.to_path_buf(),
        source: err.into(),
    })?;
    Ok(size)
}

/// An ext4 superblock's block size and block count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtGeometry {
    pub block_size: u64,
    pub blocks: u64,
}

/// Reads the block size and count from the superblock of the ext file
/// system at the start of `dev`.
pub fn ext_geometry<R: Read + Seek>(dev: &mut R) -> Option<ExtGeometry> {
    let mut head = vec![0u8; PROBE_BYTES];
    dev.seek(SeekFrom::Start(0)).ok()?;
    dev.read_exact(&mut head).ok()?;
    let sb = &head[EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024];
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let log = u32_at(0x18);
    if log > 6 {
        return None;
    }
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let hi = if incompat_64bit { u32_at(0x150) } else { 0 };
    Some(ExtGeometry {
        block_size: 1024 << log,
        blocks: (u64::from(hi) << 32) | u64::from(u32_at(0x04)),
    })
}

/// Grows the ext4 file system mounted at `mount_point` (from `device`) to
/// fill the device. Returns the old and new block counts when it grew.
pub fn resize_mounted_ext4(
    mount_point: &Path,
    device: &Path,
) -> Result<Option<(u64, u64)>, StorageError> {
    let mut dev = super::probe::open_read_only(device).map_err(io_err("open", device))?;
    let geometry = ext_geometry(&mut dev).ok_or_else(|| StorageError::NotExt {
        device: device.to_path_buf(),
    })?;
    let size = device_size(&dev, device)?;
    let target = size / geometry.block_size;
    if target <= geometry.blocks {
        return Ok(None);
    }
    let dir = File::open(mount_point).map_err(io_err("open", mount_point))?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer, which
    // points at a live local; the fd is the mounted file system's root.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &target) }.map_err(|err| StorageError::Ioctl {
        what: "EXT4_IOC_RESIZE_FS".into(),
        path: mount_point.to_path_buf(),
        source: err.into(),
    })?;
    Ok(Some((geometry.blocks, target)))
}

/// Grows the GPT of disk `disk_path` so the partition holding `label`
/// reaches the disk's end, then tells the kernel.
pub fn grow_disk(disk_path: &Path, label: &str) -> Result<GrowOutcome, StorageError> {
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk_path)
        .map_err(io_err("open", disk_path))?;
    let outcome = grow_partition(&mut disk, disk_path, label)?;
    disk.sync_all().map_err(io_err("sync", disk_path))?;
    if let GrowOutcome::Grown {
        partition,
        start,
        new_len,
        ..
    } = outcome
    {
        let is_device = disk
            .metadata()
            .map(|m| !m.is_file())
            .map_err(io_err("inspect", disk_path))?;
        if is_device {
            tell_kernel(&disk, disk_path, partition, start, new_len)?;
        }
    }
    Ok(outcome)
}

/// The whole-disk node of a partition, under `dev_root`.
pub fn disk_node(dev_root: &Path, disk: &str) -> PathBuf {
    dev_root.join(disk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::probe::tests::{mkfs_ext4, mkfs_vfat, Scratch, ESP_TYPE, LINUX_TYPE};
    use gptman::GPTPartitionEntry;

    const MIB: u64 = 1 << 20;

    /// A sparse disk image laid out like keel.img: 1 MiB gap, the ESP, then
    /// `data_label`'s ext4 partition, 1 MiB for the backup GPT. Returns the
    /// image path.
    fn build_disk(dir: &Path, data_label: &str, extra_last: bool) -> PathBuf {
        let esp = dir.join("esp.img");
        let data = dir.join("data.ext4");
        mkfs_vfat(&esp, "KEEL-ESP", 34, true);
        mkfs_ext4(&data, data_label, 8);
        let mut parts = vec![
            ("KEEL-ESP", ESP_TYPE, std::fs::read(&esp).expect("esp")),
            ("KEEL-DATA", LINUX_TYPE, std::fs::read(&data).expect("data")),
        ];
        if extra_last {
            parts.push(("OTHER", LINUX_TYPE, vec![0u8; MIB as usize]));
        }
        let img = dir.join("disk.img");
        let total: u64 = MIB + parts.iter().map(|p| p.2.len() as u64).sum::<u64>() + MIB;
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&img)
            .expect("create");
        file.set_len(total).expect("size");
        let mut gpt = GPT::new_from(&mut file, 512, [7; 16]).expect("gpt");
        let mut offset = MIB;
        for (i, (name, ty, bytes)) in parts.iter().enumerate() {
            let sectors = bytes.len() as u64 / 512;
            gpt[i as u32 + 1] = GPTPartitionEntry {
                partition_type_guid: *ty,
                unique_partition_guid: [i as u8 + 1; 16],
                starting_lba: offset / 512,
                ending_lba: offset / 512 + sectors - 1,
                attribute_bits: 0,
                partition_name: (*name).into(),
            };
            file.seek(SeekFrom::Start(offset)).expect("seek");
            file.write_all(bytes).expect("write");
            offset += bytes.len() as u64;
        }
        GPT::write_protective_mbr_into(&mut file, 512).expect("mbr");
        gpt.write_into(&mut file).expect("write gpt");
        img
    }

    fn open_rw(path: &Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .open(path)
            .expect("open")
    }

    #[test]
    fn grows_the_last_partition_to_the_new_end_and_moves_the_backup() {
        let s = Scratch::new("grow");
        let img = build_disk(&s.0, "KEEL-DATA", false);
        let before = GPT::find_from(&mut File::open(&img).expect("open")).expect("gpt");
        let old_len = std::fs::metadata(&img).expect("stat").len();
        let old_backup = before.header.backup_lba;
        // As if dd'ed onto a 256 MiB stick.
        let new_size = 256 * MIB;
        open_rw(&img).set_len(new_size).expect("extend");

        let outcome = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
        let after = GPT::find_from(&mut File::open(&img).expect("open")).expect("gpt");
        let sectors = new_size / 512;
        assert_eq!(after.header.backup_lba, sectors - 1);
        assert_eq!(after.header.last_usable_lba, sectors - 34);
        assert_eq!(after[2].ending_lba, sectors - 34);
        assert_eq!(after[2].starting_lba, before[2].starting_lba);
        assert_eq!(after[1], before[1], "the ESP is untouched");
        assert_eq!(
            outcome,
            GrowOutcome::Grown {
                partition: 2,
                start: before[2].starting_lba * 512,
                old_len: (before[2].ending_lba - before[2].starting_lba + 1) * 512,
                new_len: (sectors - 34 - before[2].starting_lba + 1) * 512,
            }
        );
        // The backup table at the new end is valid on its own.
        let mut file = File::open(&img).expect("open");
        file.seek(SeekFrom::Start((sectors - 1) * 512))
            .expect("seek");
        let backup = gptman::GPTHeader::read_from(&mut file).expect("backup header");
        assert_eq!(backup.primary_lba, sectors - 1);
        assert_eq!(backup.partition_entry_lba, sectors - 33);
        // The stale backup header is gone.
        let bytes = std::fs::read(&img).expect("read");
        let at = (old_backup * 512) as usize;
        assert!(old_backup * 512 < old_len);
        assert_ne!(&bytes[at..at + 8], b"EFI PART");
        // The protective MBR covers the disk.
        let mbr_size = u32::from_le_bytes(bytes[0x1BE + 12..0x1BE + 16].try_into().expect("4"));
        assert_eq!(u64::from(mbr_size), sectors - 1);
        // The file system inside is intact.
        let fs = read_label_at(
            &mut File::open(&img).expect("open"),
            after[2].starting_lba * 512,
        )
        .expect("read");
        assert_eq!(fs.map(|f| f.label), Some("KEEL-DATA".into()));

        // A second run is a no-op.
        let again = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("again");
        assert_eq!(again, GrowOutcome::AlreadyFull { partition: 2 });
        assert_eq!(std::fs::read(&img).expect("read"), bytes);
    }

    #[test]
    fn an_unchanged_disk_is_a_no_op() {
        let s = Scratch::new("same");
        let img = build_disk(&s.0, "KEEL-DATA", false);
        let bytes = std::fs::read(&img).expect("read");
        // keel.img leaves room for the backup GPT only: the partition can
        // still grow by the rest of that last MiB.
        let first = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
        assert!(matches!(first, GrowOutcome::Grown { .. }), "{first:?}");
        let after_first = std::fs::read(&img).expect("read");
        assert_eq!(after_first.len(), bytes.len());
        let second = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect("grow");
        assert_eq!(second, GrowOutcome::AlreadyFull { partition: 2 });
        assert_eq!(std::fs::read(&img).expect("read"), after_first);
    }

    #[test]
    fn a_disk_without_keel_data_is_untouched() {
        let s = Scratch::new("foreign");
        let img = build_disk(&s.0, "SOMETHING", false);
        open_rw(&img).set_len(256 * MIB).expect("extend");
        let bytes = std::fs::read(&img).expect("read");
        let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
        assert!(matches!(err, StorageError::NoDataPartition { .. }), "{err}");
        assert_eq!(std::fs::read(&img).expect("read"), bytes);
    }

    #[test]
    fn keel_data_that_is_not_last_is_untouched() {
        let s = Scratch::new("notlast");
        let img = build_disk(&s.0, "KEEL-DATA", true);
        open_rw(&img).set_len(256 * MIB).expect("extend");
        let bytes = std::fs::read(&img).expect("read");
        let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
        assert!(
            matches!(err, StorageError::NotLastPartition { partition: 2, .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&img).expect("read"), bytes);
    }

    #[test]
    fn a_disk_without_a_gpt_is_untouched() {
        let s = Scratch::new("nogpt");
        let img = s.0.join("plain.ext4");
        mkfs_ext4(&img, "KEEL-DATA", 8);
        let bytes = std::fs::read(&img).expect("read");
        let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
        assert!(matches!(err, StorageError::Gpt { .. }), "{err}");
        assert_eq!(std::fs::read(&img).expect("read"), bytes);
    }

    #[test]
    fn a_disk_smaller_than_its_table_is_not_shrunk() {
        let s = Scratch::new("shrink");
        let img = build_disk(&s.0, "KEEL-DATA", false);
        let len = std::fs::metadata(&img).expect("stat").len();
        // Cut into the data partition (as if dd'ed onto a too-small stick).
        open_rw(&img).set_len(len - 2 * MIB).expect("truncate");
        let bytes = std::fs::read(&img).expect("read");
        let err = grow_partition(&mut open_rw(&img), &img, "KEEL-DATA").expect_err("refused");
        assert!(matches!(err, StorageError::WouldShrink { .. }), "{err}");
        assert_eq!(std::fs::read(&img).expect("read"), bytes);
    }

    #[test]
    fn reads_ext4_geometry() {
        let s = Scratch::new("geom");
        let img = s.0.join("g.ext4");
        mkfs_ext4(&img, "KEEL-DATA", 16);
        let g = ext_geometry(&mut File::open(&img).expect("open")).expect("ext");
        assert_eq!(g.block_size * g.blocks, 16 * MIB);
        let zero = s.0.join("zero");
        std::fs::write(&zero, vec![0u8; 8192]).expect("write");
        assert_eq!(ext_geometry(&mut File::open(&zero).expect("open")), None);
    }
}
