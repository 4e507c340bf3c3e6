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

use super::label::{ext_superblock, open_read_only, read_label_at, FsKind, PROBE_BYTES};
use super::{io_err, StorageError};

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
    update_protective_mbr(disk, gpt.header.backup_lba + 1).map_err(io_err("write", name))?;
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
    let sb = ext_superblock(&head)?;
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
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
    let mut dev = open_read_only(device).map_err(io_err("open", device))?;
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
mod tests;
