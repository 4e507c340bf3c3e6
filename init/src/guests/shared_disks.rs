//! One writable disk, one guest: two guests writing one image (or one
//! guest writing what another reads) corrupt it, or let one guest read and
//! rewrite the other's data. Disks are compared by what they are, not how
//! they are spelled: the inode for an image, the device for a block device.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use keel_common::config::Source;
use keel_common::GuestSpec;

/// What a disk path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskId {
    Block(u64),
    File { dev: u64, ino: u64 },
}

/// The identity and writability of each of `spec`'s disks that exists.
fn disks(spec: &GuestSpec, data: &Path) -> Vec<(usize, DiskId, bool)> {
    spec.disks
        .iter()
        .enumerate()
        .filter_map(|(i, disk)| {
            let meta = std::fs::metadata(spec.resolve(data, &disk.path)).ok()?;
            let id = if meta.file_type().is_block_device() {
                DiskId::Block(meta.rdev())
            } else {
                DiskId::File {
                    dev: meta.dev(),
                    ino: meta.ino(),
                }
            };
            Some((i, id, !disk.read_only()))
        })
        .collect()
}

/// Refuses `spec` (stored as `file`, from `text`) when one of its disks is
/// a disk of one of `others` and either of the two would write it.
pub fn check<'a>(
    spec: &GuestSpec,
    file: &Path,
    text: &str,
    others: impl IntoIterator<Item = &'a GuestSpec>,
    data: &Path,
) -> Result<(), String> {
    let mine = disks(spec, data);
    if mine.is_empty() {
        return Ok(());
    }
    for other in others {
        if other.name == spec.name {
            continue;
        }
        for (_, theirs, they_write) in disks(other, data) {
            let Some(&(i, _, i_write)) = mine.iter().find(|(_, id, _)| *id == theirs) else {
                continue;
            };
            if i_write || they_write {
                let at = Source::new(file, text);
                let message = format!(
                    "`{}` is a disk of guest \"{}\" too; two guests may share a disk only if both have it read-only",
                    spec.disks[i].path.display(),
                    other.name
                );
                return Err(at.error(&format!("disk[{i}].path"), message).to_string());
            }
        }
    }
    Ok(())
}
