//! The operator's explicit claim of a data partition that is not on the
//! boot disk: `keel.data=PARTUUID=<guid>` on the kernel command line.
//!
//! An ISO boot has no writable boot disk, so no disk can vouch for itself:
//! a guest given a raw disk can write `KEEL-DATA` (and any file system
//! UUID) on it. Only the operator can say which partition holds the host's
//! data, and the command line is where the operator speaks before anything
//! is mounted: baked into the UKI (`keel-image --cmdline`, covered by its
//! Secure Boot signature) or, with Secure Boot off, given by the loader.

use std::path::Path;

use super::efivar::normalise_guid;

/// The kernel command-line parameter naming the data partition.
pub const DATA_PARAMETER: &str = "keel.data";

/// What `keel.data=` on the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataClaim {
    /// The GPT unique partition GUID of the data partition, lower case.
    PartUuid(String),
    /// A value that names no partition, or the parameter given more than
    /// once; the sentence says which. No data partition is used then.
    Invalid(String),
}

/// The claim on `cmdline`, `None` when it has no `keel.data=`.
pub fn parse_cmdline(cmdline: &str) -> Option<DataClaim> {
    let prefix = format!("{DATA_PARAMETER}=");
    let values: Vec<&str> = cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix(prefix.as_str()))
        .collect();
    match values[..] {
        [] => None,
        [value] => Some(parse_value(value)),
        _ => Some(DataClaim::Invalid(format!(
            "{DATA_PARAMETER}= is given {} times on the kernel command line",
            values.len()
        ))),
    }
}

fn parse_value(value: &str) -> DataClaim {
    value
        .strip_prefix("PARTUUID=")
        .and_then(normalise_guid)
        .map(DataClaim::PartUuid)
        .unwrap_or_else(|| {
            DataClaim::Invalid(format!(
                "{DATA_PARAMETER}={value} on the kernel command line is not PARTUUID=<guid>"
            ))
        })
}

/// The claim on the running kernel's command line (`/proc/cmdline`).
pub fn read_claim(proc_cmdline: &Path) -> Option<DataClaim> {
    match std::fs::read_to_string(proc_cmdline) {
        Ok(text) => parse_cmdline(&text),
        Err(err) => {
            log::warn!("cannot read {}: {err}", proc_cmdline.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

    #[test]
    fn names_a_partition_by_partuuid_in_any_case() {
        assert_eq!(parse_cmdline("console=ttyS0 panic=10"), None);
        assert_eq!(
            parse_cmdline(&format!(
                "console=ttyS0 keel.data=PARTUUID={}\n",
                GUID.to_uppercase()
            )),
            Some(DataClaim::PartUuid(GUID.into()))
        );
    }

    #[test]
    fn anything_else_is_an_invalid_claim_not_no_claim() {
        for value in [
            "",
            "/dev/sdb1",
            "LABEL=KEEL-DATA",
            "UUID=0fc63daf-8483-4772-8e79-3d69d8477de4",
            "PARTUUID=",
            "PARTUUID=not-a-guid",
            "partuuid=0fc63daf-8483-4772-8e79-3d69d8477de4",
        ] {
            let claim = parse_cmdline(&format!("quiet keel.data={value}"));
            assert!(
                matches!(claim, Some(DataClaim::Invalid(_))),
                "{value:?}: {claim:?}"
            );
        }
        // Twice, even the same value: one of them was not meant.
        let twice = format!("keel.data=PARTUUID={GUID} keel.data=PARTUUID={GUID}");
        assert_eq!(
            parse_cmdline(&twice),
            Some(DataClaim::Invalid(
                "keel.data= is given 2 times on the kernel command line".into()
            ))
        );
        // Other parameters that merely start alike are not it.
        assert_eq!(parse_cmdline("keel.datadir=x xkeel.data=y"), None);
    }

    #[test]
    fn reads_the_command_line_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cmdline");
        assert_eq!(read_claim(&path), None);
        std::fs::write(&path, format!("a keel.data=PARTUUID={GUID}\n")).expect("write");
        assert_eq!(read_claim(&path), Some(DataClaim::PartUuid(GUID.into())));
    }
}
