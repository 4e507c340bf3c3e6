//! Which ESP the firmware booted from, as the EFI stub tells the OS.
//!
//! systemd-stub (the EFI stub of Keel's UKI) sets the EFI variable
//! `LoaderDevicePartUUID` under the Boot Loader Interface vendor GUID
//! `4a67b082-0a4c-41cf-b6c7-440b29bb8c4f`, unless a boot loader already did:
//! the GPT unique partition GUID of the partition the image was loaded
//! from, as a NUL-terminated UTF-16 string in the usual GUID syntax. The
//! case varies: current systemd formats it upper case (`GUID_FORMAT_STR`),
//! while the Debian 12 stub (systemd 252, gnu-efi's `GuidToString`) writes
//! lower case, so it is compared case-insensitively. The stub sets it
//! volatile (boot-service and runtime access only). In efivarfs the file
//! starts with the variable's 4-byte attribute word (little endian), then
//! the data.
//!
//! GPT stores GUIDs in the mixed-endian EFI layout: the first three fields
//! little endian, the last eight bytes as they are; [`guid_string`] turns
//! such bytes into the text form (`uuid`'s `from_bytes_le`) so they can be
//! compared.

use std::io::Read;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The efivarfs file of `LoaderDevicePartUUID`.
pub const LOADER_DEVICE_PART_UUID: &str =
    "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Where efivarfs is mounted, relative to the sysfs root.
pub const EFIVARS_IN_SYS: &str = "firmware/efi/efivars";

/// efivarfs prefixes every variable with its attributes (a `u32`).
const ATTRIBUTES_LEN: usize = 4;

/// The variable is 4 + 37 * 2 bytes; anything much larger is not it.
const MAX_VARIABLE_LEN: u64 = 4096;

/// Parses the efivarfs contents of `LoaderDevicePartUUID`: skips the
/// attribute word, decodes UTF-16LE up to the first NUL (or the end) and
/// returns the GUID in lower case, or `None` when the bytes are not a GUID.
pub fn parse_loader_device_part_uuid(raw: &[u8]) -> Option<String> {
    let data = raw.get(ATTRIBUTES_LEN..)?;
    if data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    let text = String::from_utf16(&units).ok()?;
    normalise_guid(&text)
}

/// `text` in lower case when it is a GUID in the usual 8-4-4-4-12 syntax
/// (36 characters: not braced, not a URN, not without hyphens).
pub fn normalise_guid(text: &str) -> Option<String> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok().map(|guid| guid.to_string())
}

/// The text form (lower case) of a GUID stored in the EFI byte layout, as
/// GPT stores partition GUIDs.
pub fn guid_string(bytes: &[u8; 16]) -> String {
    Uuid::from_bytes_le(*bytes).to_string()
}

/// The efivarfs file of `LoaderDevicePartUUID` under the sysfs root.
pub fn variable_path(sys_root: &Path) -> PathBuf {
    sys_root.join(EFIVARS_IN_SYS).join(LOADER_DEVICE_PART_UUID)
}

/// Reads `LoaderDevicePartUUID` from efivarfs under `sys_root`. `None` when
/// it is not there (no EFI, efivarfs not mounted, or a loader that does not
/// set it) or does not hold a GUID; the latter is logged.
pub fn read_loader_device_part_uuid(sys_root: &Path) -> Option<String> {
    let path = variable_path(sys_root);
    let mut raw = Vec::new();
    // efivarfs files are read front to back, without seeking.
    let read = std::fs::File::open(&path)
        .and_then(|file| file.take(MAX_VARIABLE_LEN).read_to_end(&mut raw));
    match read {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("no {}", path.display());
            return None;
        }
        Err(err) => {
            log::warn!("cannot read {}: {err}", path.display());
            return None;
        }
    }
    let parsed = parse_loader_device_part_uuid(&raw);
    if parsed.is_none() {
        log::warn!(
            "{} does not hold a partition GUID ({} bytes); ignoring it",
            path.display(),
            raw.len()
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{efivarfs_bytes, Scratch};

    const UPPER: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const LOWER: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

    #[test]
    fn parses_the_stub_variable_to_lower_case() {
        assert_eq!(
            parse_loader_device_part_uuid(&efivarfs_bytes(UPPER)),
            Some(LOWER.to_string())
        );
        assert_eq!(
            parse_loader_device_part_uuid(&efivarfs_bytes(LOWER)),
            Some(LOWER.to_string())
        );
    }

    #[test]
    fn the_attribute_word_is_skipped_whatever_it_holds() {
        let mut raw = efivarfs_bytes(UPPER);
        raw[..4].copy_from_slice(&0x07u32.to_le_bytes());
        assert_eq!(parse_loader_device_part_uuid(&raw), Some(LOWER.into()));
        // Without the attribute prefix the string is misread, not accepted.
        assert_eq!(parse_loader_device_part_uuid(&raw[4..]), None);
    }

    #[test]
    fn stops_at_the_nul_and_tolerates_a_missing_one() {
        let mut raw = efivarfs_bytes(UPPER);
        raw.extend_from_slice(&[0x41, 0, 0x42, 0]);
        assert_eq!(parse_loader_device_part_uuid(&raw), Some(LOWER.into()));
        let unterminated = &efivarfs_bytes(UPPER)[..4 + 36 * 2];
        assert_eq!(
            parse_loader_device_part_uuid(unterminated),
            Some(LOWER.into())
        );
    }

    #[test]
    fn garbage_is_not_a_guid() {
        assert_eq!(parse_loader_device_part_uuid(&[]), None);
        assert_eq!(parse_loader_device_part_uuid(&[6, 0, 0]), None);
        assert_eq!(parse_loader_device_part_uuid(&[6, 0, 0, 0]), None);
        assert_eq!(parse_loader_device_part_uuid(&efivarfs_bytes("")), None);
        // An odd byte count is not UTF-16.
        let mut odd = efivarfs_bytes(UPPER);
        odd.push(0);
        assert_eq!(parse_loader_device_part_uuid(&odd), None);
        // Wrong shape, braces, non-hex, one short, one long, trailing space.
        for text in [
            "not a guid",
            "{0FC63DAF-8483-4772-8E79-3D69D8477DE4}",
            "0FC63DAF-8483-4772-8E79-3D69D8477DEG",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE44",
            "0FC63DAF84834772-8E79-3D69D8477DE4-",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4 ",
            "éC63DAF-8483-4772-8E79-3D69D8477DE4",
        ] {
            assert_eq!(
                parse_loader_device_part_uuid(&efivarfs_bytes(text)),
                None,
                "{text:?}"
            );
        }
        // A lone surrogate is not text.
        let mut bad = 6u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&0xD800u16.to_le_bytes());
        assert_eq!(parse_loader_device_part_uuid(&bad), None);
    }

    #[test]
    fn formats_gpt_guid_bytes_mixed_endian() {
        // The EFI system partition type GUID, as stored on disk.
        let esp_type = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(
            guid_string(&esp_type),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(
            normalise_guid(&guid_string(&esp_type)),
            Some(guid_string(&esp_type))
        );
    }

    #[test]
    fn reads_the_variable_from_efivarfs_under_a_sys_root() {
        let s = Scratch::new("efivar");
        assert_eq!(read_loader_device_part_uuid(&s.0), None);
        let path = variable_path(&s.0);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, efivarfs_bytes(UPPER)).expect("write");
        assert_eq!(read_loader_device_part_uuid(&s.0), Some(LOWER.into()));
        std::fs::write(&path, b"\x06\x00\x00\x00junk").expect("write");
        assert_eq!(read_loader_device_part_uuid(&s.0), None);
    }
}
