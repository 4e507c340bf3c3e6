//! Checking KEEL-DATA with `e2fsck -p` before it is mounted.

use std::path::Path;
use std::process::Command;

/// What `e2fsck -p` said, from its exit status (a bit mask, see e2fsck(8)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsckVerdict {
    /// 0: no errors.
    Clean,
    /// 1: errors were corrected.
    Fixed,
    /// 2: errors were corrected; the system should be rebooted.
    FixedRebootAdvised,
    /// 4 and above (uncorrected errors, operational error, ...), or killed
    /// by a signal (code -1). The file system must not be mounted
    /// read-write.
    Failed(i32),
    /// e2fsck could not be started (missing from the image?).
    NotRun(String),
}

impl FsckVerdict {
    /// Maps an exit code to a verdict.
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => FsckVerdict::Clean,
            1 => FsckVerdict::Fixed,
            2 | 3 => FsckVerdict::FixedRebootAdvised,
            other => FsckVerdict::Failed(other),
        }
    }

    /// Whether the file system may be mounted read-write after this check.
    pub fn allows_read_write(&self) -> bool {
        !matches!(self, FsckVerdict::Failed(_))
    }
}

/// Runs `e2fsck -p device` and logs what it says.
pub fn run_e2fsck(e2fsck: &Path, device: &Path) -> FsckVerdict {
    let mut cmd = Command::new(e2fsck);
    let output = match crate::child::unblock_signals(&mut cmd)
        .arg("-p")
        .arg(device)
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            let why = format!("cannot run {}: {err}", e2fsck.display());
            log::error!("{} is not checked: {why}", device.display());
            return FsckVerdict::NotRun(why);
        }
    };
    let code = output.status.code().unwrap_or(-1);
    let verdict = FsckVerdict::from_code(code);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match verdict {
            FsckVerdict::Clean => log::debug!("e2fsck: {line}"),
            FsckVerdict::Failed(_) => log::error!("e2fsck: {line}"),
            _ => log::warn!("e2fsck: {line}"),
        }
    }
    match verdict {
        FsckVerdict::Clean => log::info!("{} is clean", device.display()),
        FsckVerdict::Fixed => log::warn!("e2fsck fixed errors on {}", device.display()),
        FsckVerdict::FixedRebootAdvised => log::warn!(
            "e2fsck fixed errors on {} and advises a reboot; continuing",
            device.display()
        ),
        FsckVerdict::Failed(code) => log::error!(
            "e2fsck could not repair {} (exit status {code}): it will not be mounted read-write",
            device.display()
        ),
        FsckVerdict::NotRun(_) => {}
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::{mkfs_ext4, Scratch};

    #[test]
    fn exit_codes_map_to_verdicts() {
        assert_eq!(FsckVerdict::from_code(0), FsckVerdict::Clean);
        assert_eq!(FsckVerdict::from_code(1), FsckVerdict::Fixed);
        assert_eq!(FsckVerdict::from_code(2), FsckVerdict::FixedRebootAdvised);
        assert_eq!(FsckVerdict::from_code(4), FsckVerdict::Failed(4));
        assert_eq!(FsckVerdict::from_code(8), FsckVerdict::Failed(8));
        assert!(FsckVerdict::from_code(2).allows_read_write());
        assert!(!FsckVerdict::from_code(4).allows_read_write());
        assert!(!FsckVerdict::from_code(-1).allows_read_write());
        assert!(FsckVerdict::NotRun("x".into()).allows_read_write());
    }

    fn e2fsck() -> Option<&'static Path> {
        ["/usr/sbin/e2fsck", "/sbin/e2fsck", "/sbin/e2fsck.static"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
    }

    #[test]
    fn a_fresh_file_system_is_clean_and_garbage_fails() {
        let Some(e2fsck) = e2fsck() else {
            eprintln!("SKIPPED: e2fsck tests because no e2fsck is installed");
            return;
        };
        let s = Scratch::new("fsck");
        let img = s.0.join("fs.ext4");
        mkfs_ext4(&img, "KEEL-DATA", 8);
        assert_eq!(run_e2fsck(e2fsck, &img), FsckVerdict::Clean);
        // Zero the block group descriptors: preen mode must give up.
        let mut bytes = std::fs::read(&img).expect("read");
        let bs =
            1024usize << u32::from_le_bytes(bytes[1024 + 0x18..1024 + 0x1c].try_into().expect("4"));
        let gdt = if bs == 1024 { 2048 } else { bs };
        bytes[gdt..gdt + bs].fill(0);
        bytes[1024 + 0x38..1024 + 0x3a].fill(0); // and the primary superblock's magic
        std::fs::write(&img, &bytes).expect("write");
        let verdict = run_e2fsck(e2fsck, &img);
        assert!(!verdict.allows_read_write(), "{verdict:?}");
    }

    #[test]
    fn a_missing_e2fsck_is_reported() {
        let verdict = run_e2fsck(Path::new("/nonexistent/e2fsck"), Path::new("/dev/null"));
        assert!(matches!(verdict, FsckVerdict::NotRun(_)), "{verdict:?}");
    }
}
