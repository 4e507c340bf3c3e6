//! The EFI system partition: a FAT file system holding the UKI at the
//! removable-media boot path and the operator-editable seed configuration.

use std::io::{Cursor, Write};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

use crate::reproducible::civil_from_unix;
use crate::ImageError;

/// Volume label firmware and init look for.
pub const LABEL: &[u8; 11] = b"KEEL-ESP   ";

/// Gives every FAT timestamp the build's SOURCE_DATE_EPOCH.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// FAT dates run from 1980 to 2107; clamp outside that.
fn fat_datetime(epoch: u64) -> DateTime {
    let (year, month, day, hour, min, sec) = civil_from_unix(epoch);
    if year < 1980 {
        return DateTime {
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
    }
    let year = year.min(2107) as u16;
    DateTime {
        date: Date {
            year,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: hour as u16,
            min: min as u16,
            sec: sec as u16,
            millis: 0,
        },
    }
}

/// A file to place on the ESP.
pub struct EspFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

/// Formats a FAT volume of `size` bytes (FAT32 when asked, else whatever
/// fits) and writes `files` into it in the given order.
pub fn build(
    size: u64,
    fat32: bool,
    volume_id: u32,
    epoch: u64,
    files: &[EspFile],
) -> Result<Vec<u8>, ImageError> {
    let fat_err = |e: std::io::Error| ImageError::Fat(e.to_string());
    let mut disk = Cursor::new(vec![0u8; size as usize]);
    let mut options = FormatVolumeOptions::new()
        .volume_label(*LABEL)
        .volume_id(volume_id);
    if fat32 {
        options = options.fat_type(FatType::Fat32);
    }
    fatfs::format_volume(&mut disk, options).map_err(fat_err)?;
    let clock: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_datetime(epoch))));
    {
        let fs =
            FileSystem::new(&mut disk, FsOptions::new().time_provider(clock)).map_err(fat_err)?;
        for file in files {
            let root = fs.root_dir();
            let mut parts: Vec<&str> = file.path.split('/').filter(|p| !p.is_empty()).collect();
            let name = parts
                .pop()
                .ok_or_else(|| ImageError::Input("empty ESP path".into()))?;
            let mut dir = root.clone();
            for part in parts {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part).map_err(fat_err)?,
                };
            }
            let mut f = dir.create_file(name).map_err(fat_err)?;
            f.truncate().map_err(fat_err)?;
            f.write_all(file.data).map_err(fat_err)?;
            f.flush().map_err(fat_err)?;
        }
        fs.unmount().map_err(fat_err)?;
    }
    Ok(disk.into_inner())
}

/// Smallest ESP size (in whole MiB) that holds `payload` bytes with room
/// for FAT metadata and directory entries.
pub fn size_for(payload: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    (payload + payload / 16 + 2 * MIB).div_ceil(MIB) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_land_where_firmware_looks() {
        let files = [
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: b"efi",
            },
            EspFile {
                path: "keel/host.toml",
                data: b"x = 1\n",
            },
        ];
        let image = build(40 << 20, true, 0x1234_5678, 1_700_000_000, &files).expect("build");
        let mut cursor = Cursor::new(image);
        let fs = FileSystem::new(&mut cursor, FsOptions::new()).expect("mount");
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.volume_id(), 0x1234_5678);
        assert_eq!(fs.volume_label(), "KEEL-ESP");
        let mut data = String::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .expect("open")
            .read_to_string(&mut data)
            .expect("read");
        assert_eq!(data, "efi");
        let entry = fs
            .root_dir()
            .iter()
            .find_map(|e| e.ok().filter(|e| e.file_name() == "keel"))
            .expect("keel dir");
        assert_eq!(entry.modified().date.year, 2023);
    }

    #[test]
    fn same_inputs_same_bytes() {
        let files = [EspFile {
            path: "a/b",
            data: b"1",
        }];
        assert_eq!(
            build(4 << 20, false, 1, 5, &files).expect("a"),
            build(4 << 20, false, 1, 5, &files).expect("b")
        );
    }

    #[test]
    fn dates_before_1980_are_clamped() {
        assert_eq!(fat_datetime(0).date.year, 1980);
        assert_eq!(fat_datetime(1_700_000_000).date.month, 11);
    }

    #[test]
    fn size_leaves_headroom() {
        assert!(size_for(20 << 20) >= 22 << 20);
        assert_eq!(size_for(0) % (1 << 20), 0);
    }
}
