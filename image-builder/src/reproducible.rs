//! Inputs that make two builds byte-identical: one timestamp
//! (SOURCE_DATE_EPOCH) and identifiers derived from it instead of drawn at
//! random.

use sha2::{Digest, Sha256};

/// A GUID in the mixed-endian byte order GPT stores on disk, derived from
/// `label` and `epoch` so each build of the same inputs gets the same one.
pub fn derived_guid(label: &str, epoch: u64) -> [u8; 16] {
    let digest = Sha256::digest(format!("keel-image:{label}:{epoch}").as_bytes());
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&digest[..16]);
    // RFC 4122 version 4 / variant 1 bits, so tools show a valid GUID. In
    // the on-disk order the version nibble sits in byte 7.
    guid[7] = (guid[7] & 0x0f) | 0x40;
    guid[8] = (guid[8] & 0x3f) | 0x80;
    guid
}

/// Formats an on-disk GUID as the usual text form.
pub fn guid_to_string(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]
    )
}

/// Parses a text GUID into the on-disk mixed-endian order.
pub fn guid_from_str(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut g = bytes;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    Some(g)
}

/// Civil date (year, month, day) and time of day for a Unix timestamp, in UTC.
pub fn civil_from_unix(epoch: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (epoch / 86_400) as i64;
    let secs = (epoch % 86_400) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips_and_keeps_known_types() {
        let esp = guid_from_str("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").expect("valid guid");
        assert_eq!(esp[0..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(guid_to_string(&esp), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert!(guid_from_str("nope").is_none());
    }

    #[test]
    fn derived_guids_are_stable_distinct_and_version_4() {
        let a = derived_guid("disk", 1_700_000_000);
        assert_eq!(a, derived_guid("disk", 1_700_000_000));
        assert_ne!(a, derived_guid("esp", 1_700_000_000));
        assert_ne!(a, derived_guid("disk", 1_700_000_001));
        assert_eq!(guid_to_string(&a).as_bytes()[14], b'4');
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil_from_unix(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }
}
