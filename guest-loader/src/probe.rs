//! Which filesystem a block device holds, and its UUID and label, read from
//! the superblock as `blkid` would print them (the chooser matches
//! `search --fs-uuid` and `root=UUID=` against these).
//!
//! Every read is a fixed few bytes at a fixed offset; a truncated device or
//! garbage gives `None`, never a panic.

use std::io;
use std::os::unix::fs::FileExt;

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (one driver mounts all three).
    Ext,
    Xfs,
    Btrfs,
    Vfat,
    /// An LVM2 physical volume: its logical volumes are not activated yet.
    LvmPv,
}

impl FsKind {
    /// The type `mount(2)` takes, None where the loader cannot mount it.
    pub fn mount_type(self) -> Option<&'static str> {
        match self {
            FsKind::Ext => Some("ext4"),
            FsKind::Xfs => Some("xfs"),
            FsKind::Btrfs => Some("btrfs"),
            FsKind::Vfat => Some("vfat"),
            FsKind::LvmPv => None,
        }
    }

    /// Mount options that keep a read-only mount from writing anyway: a
    /// dirty journal or log is not replayed.
    pub fn mount_data(self) -> Option<&'static str> {
        match self {
            FsKind::Ext => Some("noload"),
            FsKind::Xfs => Some("norecovery"),
            FsKind::Btrfs => Some("rescue=nologreplay"),
            FsKind::Vfat | FsKind::LvmPv => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext => "ext2/3/4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::LvmPv => "LVM2 physical volume",
        }
    }
}

/// A device's filesystem as its superblock describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub kind: FsKind,
    /// As blkid prints it; empty when the filesystem has none (all zeros).
    pub uuid: String,
    pub label: Option<String>,
}

/// Reads `N` bytes at `offset`; None when the device ends before them.
fn bytes_at<const N: usize>(dev: &impl FileExt, offset: u64) -> io::Result<Option<[u8; N]>> {
    let mut buf = [0u8; N];
    match dev.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Lower-case 8-4-4-4-12, or empty for the all-zero "no UUID".
pub fn format_uuid(u: &[u8; 16]) -> String {
    if u.iter().all(|b| *b == 0) {
        return String::new();
    }
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A label field: up to the first NUL, trailing blanks dropped, None when
/// empty or not UTF-8.
fn label(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?.trim_end();
    (!text.is_empty()).then(|| text.to_string())
}

fn uuid_field(b: &[u8], at: usize) -> String {
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[at..at + 16]);
    format_uuid(&u)
}

/// ext2/3/4: the superblock at 1024, magic 0xEF53 at its offset 56.
fn ext(dev: &impl FileExt) -> io::Result<Option<Identified>> {
    const JOURNAL_DEV: u32 = 0x0008;
    let Some(sb) = bytes_at::<256>(dev, 1024)? else {
        return Ok(None);
    };
    // s_log_block_size is at most 6 (64 KiB blocks) on a real filesystem.
    if le16(&sb, 56) != 0xEF53 || le32(&sb, 24) > 6 {
        return Ok(None);
    }
    // An external journal carries the magic but is no filesystem.
    if le32(&sb, 96) & JOURNAL_DEV != 0 {
        return Ok(None);
    }
    Ok(Some(Identified {
        kind: FsKind::Ext,
        uuid: uuid_field(&sb, 104),
        label: label(&sb[120..136]),
    }))
}

/// XFS: "XFSB" at 0, big-endian, a power-of-two block size.
fn xfs(dev: &impl FileExt) -> io::Result<Option<Identified>> {
    let Some(sb) = bytes_at::<120>(dev, 0)? else {
        return Ok(None);
    };
    let block = be32(&sb, 4);
    if &sb[..4] != b"XFSB" || !block.is_power_of_two() || !(512..=65536).contains(&block) {
        return Ok(None);
    }
    Ok(Some(Identified {
        kind: FsKind::Xfs,
        uuid: uuid_field(&sb, 32),
        label: label(&sb[108..120]),
    }))
}

/// btrfs: the primary superblock at 64 KiB, magic at its offset 0x40.
fn btrfs(dev: &impl FileExt) -> io::Result<Option<Identified>> {
    let Some(sb) = bytes_at::<0x22b>(dev, 0x10000)? else {
        return Ok(None);
    };
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return Ok(None);
    }
    Ok(Some(Identified {
        kind: FsKind::Btrfs,
        uuid: uuid_field(&sb, 0x20),
        label: label(&sb[0x12b..0x22b]),
    }))
}

/// FAT: the boot sector's type string, at 82 for FAT32, at 54 for FAT12/16;
/// the volume id and label follow the same layout shifted.
fn vfat(dev: &impl FileExt) -> io::Result<Option<Identified>> {
    let Some(bs) = bytes_at::<512>(dev, 0)? else {
        return Ok(None);
    };
    let sector = le16(&bs, 11);
    if !sector.is_power_of_two() || !(512..=4096).contains(&sector) || bs[13] == 0 {
        return Ok(None);
    }
    let fields = if &bs[82..90] == b"FAT32   " {
        67
    } else if &bs[54..62] == b"FAT16   " || &bs[54..62] == b"FAT12   " {
        39
    } else {
        return Ok(None);
    };
    let id = le32(&bs, fields);
    let label = label(&bs[fields + 4..fields + 15]).filter(|l| l != "NO NAME");
    Ok(Some(Identified {
        kind: FsKind::Vfat,
        uuid: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
        label,
    }))
}

/// LVM2: "LABELONE" at the start of one of the first four sectors, with
/// type "LVM2 001" at 24 and, at the offset in its 20, the PV header,
/// which starts with the PV UUID's 32 characters.
fn lvm(dev: &impl FileExt) -> io::Result<Option<Identified>> {
    for sector in 0..4u64 {
        let Some(s) = bytes_at::<512>(dev, sector * 512)? else {
            return Ok(None);
        };
        if &s[..8] != b"LABELONE" || &s[24..32] != b"LVM2 001" {
            continue;
        }
        let offset = usize::try_from(le32(&s, 20)).unwrap_or(usize::MAX);
        let uuid = s
            .get(offset..offset.saturating_add(32))
            .filter(|u| u.iter().all(u8::is_ascii_alphanumeric))
            .map(|u| {
                // blkid's grouping: 6-4-4-4-4-4-6.
                let u = String::from_utf8_lossy(u);
                [
                    (0, 6),
                    (6, 10),
                    (10, 14),
                    (14, 18),
                    (18, 22),
                    (22, 26),
                    (26, 32),
                ]
                .iter()
                .map(|(a, b)| &u[*a..*b])
                .collect::<Vec<_>>()
                .join("-")
            })
            .unwrap_or_default();
        return Ok(Some(Identified {
            kind: FsKind::LvmPv,
            uuid,
            label: None,
        }));
    }
    Ok(None)
}

/// The filesystem on `dev`, None when no known superblock is there. Only an
/// I/O error other than the device's end is an error.
pub fn probe<D: FileExt>(dev: &D) -> io::Result<Option<Identified>> {
    type Probe<D> = fn(&D) -> io::Result<Option<Identified>>;
    // LVM and XFS first: their magic sits at or near 0, where FAT's
    // boot-sector fields would also be looked for.
    let probes: [Probe<D>; 5] = [lvm, xfs, ext, btrfs, vfat];
    for probe in probes {
        if let Some(found) = probe(dev)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
