//! The seed volume: a FAT12 file system labelled `cidata`, as NoCloud
//! looks for it, built in memory by the `fatfs` crate.
//!
//! The output depends on nothing but the files: every timestamp is one
//! constant and the volume id is the caller's, so an unchanged seed gives
//! a byte-identical image and init can skip rewriting it.

use std::io::{self, Cursor, Write};

use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time};

/// The volume label NoCloud finds the seed by (in the boot sector, padded).
pub const LABEL: &[u8; 11] = b"cidata     ";
/// The image's size: room for the largest user data and network config
/// keel-common allows, and the FAT12 metadata.
pub const IMAGE_BYTES: usize = 2 << 20;

/// The one time on the volume: the FAT epoch.
#[derive(Debug)]
struct FixedClock;

const EPOCH: DateTime = DateTime {
    date: Date {
        year: 1980,
        month: 1,
        day: 1,
    },
    time: Time {
        hour: 0,
        min: 0,
        sec: 0,
        millis: 0,
    },
};

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> Date {
        EPOCH.date
    }
    fn get_current_date_time(&self) -> DateTime {
        EPOCH
    }
}

static CLOCK: FixedClock = FixedClock;

/// Formats an [`IMAGE_BYTES`] FAT12 volume with `volume_id` and writes
/// `files` into its root directory, in order.
pub fn build(volume_id: u32, files: &[(&str, &[u8])]) -> io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; IMAGE_BYTES]);
    let options = FormatVolumeOptions::new()
        .fat_type(FatType::Fat12)
        .volume_label(*LABEL)
        .volume_id(volume_id);
    fatfs::format_volume(&mut disk, options)?;
    {
        let fs = FileSystem::new(
            &mut disk,
            FsOptions::new()
                .time_provider(&CLOCK)
                .update_accessed_date(false),
        )?;
        let root = fs.root_dir();
        for (name, content) in files {
            let mut file = root.create_file(name)?;
            file.truncate()?;
            file.write_all(content)?;
            file.flush()?;
        }
        drop(root);
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}
