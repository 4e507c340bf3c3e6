//! A partition's GPT unique partition GUID (PARTUUID), which sysfs does
//! not show: read from its disk's partition table, once per disk and scan.

use std::collections::HashMap;
use std::path::Path;

use super::label::open_read_only;

/// One used GPT entry: its number (the kernel's partition number), first
/// byte and unique partition GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GptEntry {
    pub(super) number: u32,
    pub(super) start: u64,
    pub(super) guid: String,
}

/// The GPT entries of each disk read so far in one scan (`None`: no
/// readable GPT).
#[derive(Debug, Default)]
pub(super) struct GptCache(HashMap<String, Option<Vec<GptEntry>>>);

impl GptCache {
    pub(super) fn entries(&mut self, dev_root: &Path, disk: &str) -> Option<&[GptEntry]> {
        self.0
            .entry(disk.to_string())
            .or_insert_with(|| read_gpt_entries(&dev_root.join(disk)))
            .as_deref()
    }
}

/// The used entries of the GPT on `disk`, or `None` (logged at debug
/// level: most disks without a GPT are simply not Keel's).
fn read_gpt_entries(disk: &Path) -> Option<Vec<GptEntry>> {
    let read = open_read_only(disk)
        .map_err(|err| err.to_string())
        .and_then(|mut file| gptman::GPT::find_from(&mut file).map_err(|err| err.to_string()));
    match read {
        Ok(gpt) => Some(
            gpt.iter()
                .filter(|(_, entry)| entry.is_used())
                .map(|(number, entry)| GptEntry {
                    number,
                    start: entry.starting_lba.saturating_mul(gpt.sector_size),
                    guid: super::efivar::guid_string(&entry.unique_partition_guid),
                })
                .collect(),
        ),
        Err(err) => {
            log::debug!("no GPT read from {}: {err}", disk.display());
            None
        }
    }
}

/// The GUID of kernel partition `number` starting at `start_sector` (512
/// bytes, as sysfs counts): the entry with that number when it starts
/// there, else the one entry that starts there (the kernel numbered the
/// partitions from another table, as on hybrid MBR/GPT media).
pub(super) fn partuuid_of(
    entries: &[GptEntry],
    number: u32,
    start_sector: Option<u64>,
) -> Option<String> {
    let start = start_sector.map(|s| s.saturating_mul(512));
    let by_number = entries
        .iter()
        .find(|e| e.number == number && start.is_none_or(|s| s == e.start));
    if let Some(entry) = by_number {
        return Some(entry.guid.clone());
    }
    let start = start?;
    match entries
        .iter()
        .filter(|e| e.start == start)
        .collect::<Vec<_>>()[..]
    {
        [one] => Some(one.guid.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{device, test_guid_text, two_keel_disks, Scratch};

    #[test]
    fn partuuids_come_from_the_disks_gpt() {
        let images = Scratch::new("gpt-uuid");
        let sys = two_keel_disks(&images);
        let probe = sys.probe();
        let devices = probe.devices();
        let uuids: Vec<(&str, Option<&str>)> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.partuuid.as_deref()))
            .collect();
        let (a1, a2, b1, b2) = (
            test_guid_text(0xa1),
            test_guid_text(0xa2),
            test_guid_text(0xb1),
            test_guid_text(0xb2),
        );
        assert_eq!(
            uuids,
            vec![
                ("sda", None),
                ("sda1", Some(a1.as_str())),
                ("sda2", Some(a2.as_str())),
                ("sdb", None),
                ("sdb1", Some(b1.as_str())),
                ("sdb2", Some(b2.as_str())),
            ]
        );
        // The GPT disk itself is not mistaken for a FAT file system.
        assert_eq!(devices[0].fs, None);
        assert_eq!(device(&probe, "sdb2").and_then(|d| d.partuuid), Some(b2));
    }

    #[test]
    fn partition_numbers_are_checked_against_the_start_sector() {
        let entry = |number, start_sector: u64, last| GptEntry {
            number,
            start: start_sector * 512,
            guid: test_guid_text(last),
        };
        let entries = [entry(1, 2048, 1), entry(2, 8192, 2)];
        assert_eq!(
            partuuid_of(&entries, 2, Some(8192)),
            Some(test_guid_text(2))
        );
        assert_eq!(partuuid_of(&entries, 1, None), Some(test_guid_text(1)));
        // The kernel numbered from another table (hybrid MBR): by start.
        assert_eq!(
            partuuid_of(&entries, 1, Some(8192)),
            Some(test_guid_text(2))
        );
        assert_eq!(partuuid_of(&entries, 3, Some(4096)), None);
        assert_eq!(partuuid_of(&entries, 3, None), None);
    }
}
