//! The KEEL-DATA partition: an empty ext4 file system that init grows to
//! fill the disk on first boot.

use std::path::Path;
use std::process::Command;

use crate::reproducible::derived_guid;
use crate::ImageError;

/// File system label init looks for.
pub const LABEL: &str = "KEEL-DATA";

/// Creates the ext4 image at `out`, `size` bytes long. The UUID, hash seed
/// and timestamps come from `epoch` so the bytes are reproducible.
pub fn build(out: &Path, size: u64, epoch: u64) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(out);
    let uuid = derived_guid("data-uuid", epoch).to_string();
    let seed = derived_guid("data-hash-seed", epoch).to_string();
    let mut cmd = Command::new("mkfs.ext4");
    cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("-q")
        .arg("-F")
        .args([
            "-L", LABEL, "-U", &uuid, "-b", "4096", "-m", "0", "-T", "default",
        ])
        .arg("-E")
        .arg(format!(
            "hash_seed={seed},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0,nodiscard"
        ))
        .arg(out)
        .arg(format!("{}k", size / 1024));
    crate::run_tool(&mut cmd)
}
