//! What the first bytes of a file system say, without blkid: its kind
//! (ext2/3/4 or FAT) and label, from the ext superblock or the FAT boot
//! sector.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The ext2/3/4 superblock sits 1024 bytes into the file system.
const EXT_SUPERBLOCK: usize = 1024;
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

/// The ext superblock in the first [`PROBE_BYTES`] of a file system, when
/// its magic number says it is one.
pub fn ext_superblock(head: &[u8]) -> Option<&[u8]> {
    let sb = head.get(EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024)?;
    let magic = u16::from_le_bytes([sb[EXT_MAGIC_AT], sb[EXT_MAGIC_AT + 1]]);
    (magic == EXT_MAGIC).then_some(sb)
}

fn ext_label(head: &[u8]) -> Option<FsLabel> {
    let sb = ext_superblock(head)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{mkfs_ext4, mkfs_vfat, run, Scratch};
    use std::process::Command;

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
}
