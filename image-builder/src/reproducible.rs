//! Inputs that make two builds byte-identical: one timestamp
//! (SOURCE_DATE_EPOCH) and identifiers derived from it instead of drawn at
//! random.

use sha2::{Digest, Sha256};
use uuid::{Builder, Uuid};

/// A version 4 GUID derived from `label` and `epoch`, so each build of the
/// same inputs gets the same one. GPT stores it as [`Uuid::to_bytes_le`].
pub fn derived_guid(label: &str, epoch: u64) -> Uuid {
    let digest = Sha256::digest(format!("keel-image:{label}:{epoch}").as_bytes());
    let mut on_disk = [0u8; 16];
    on_disk.copy_from_slice(&digest[..16]);
    // The digest is read in GPT's mixed-endian order, as it always was, so
    // the GUIDs (and the images) stay what earlier builds made.
    Builder::from_random_bytes(*Uuid::from_bytes_le(on_disk).as_bytes()).into_uuid()
}

/// Parses a text GUID into the mixed-endian byte order GPT stores on disk.
pub fn guid_from_str(text: &str) -> Option<[u8; 16]> {
    Uuid::try_parse(text).ok().map(|guid| guid.to_bytes_le())
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
        assert_eq!(
            Uuid::from_bytes_le(esp).to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert!(guid_from_str("nope").is_none());
    }

    #[test]
    fn derived_guids_are_stable_distinct_and_version_4() {
        let a = derived_guid("disk", 1_700_000_000);
        assert_eq!(a, derived_guid("disk", 1_700_000_000));
        assert_ne!(a, derived_guid("esp", 1_700_000_000));
        assert_ne!(a, derived_guid("disk", 1_700_000_001));
        assert_eq!(a.to_string().as_bytes()[14], b'4');
        // The bytes earlier builds wrote, so images stay reproducible.
        assert_eq!(
            a.to_bytes_le(),
            [
                0x0e, 0x9f, 0x2b, 0xdd, 0xf0, 0x67, 0xa8, 0x49, 0x99, 0x2b, 0x29, 0xbf, 0x79, 0x33,
                0x86, 0x98
            ]
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil_from_unix(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }
}
