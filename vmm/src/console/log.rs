//! The console log file, capped in size by rotation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A console log file that never grows past `cap` bytes: when full, it is
/// moved to `NAME.1` (replacing the previous one) and started afresh.
pub struct CappedLog {
    path: PathBuf,
    file: File,
    written: u64,
    cap: u64,
}

/// Opens the log for appending, creating it. A symbolic link there is
/// refused (ELOOP): the log directory belongs to the guest's uid, and a
/// planted link must not make the VMM append to another file.
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl CappedLog {
    pub fn open(path: &Path, cap: u64) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(CappedLog {
            path: path.to_path_buf(),
            file,
            written,
            cap: cap.max(1024),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.written + data.len() as u64 > self.cap {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("host-file");
        std::fs::write(&target, b"precious").expect("write");
        let log = dir.path().join("console.log");
        std::os::unix::fs::symlink(&target, &log).expect("symlink");
        let err = CappedLog::open(&log, 1024).err().expect("refused");
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(std::fs::read(&target).expect("read"), b"precious");
    }

    #[test]
    fn log_is_capped_by_rotation() {
        let dir = std::env::temp_dir().join(format!("keel-caplog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("c.log");
        let mut log = CappedLog::open(&path, 1024).expect("open");
        for _ in 0..10 {
            log.write(&[b'a'; 300]).expect("write");
        }
        assert!(std::fs::metadata(&path).expect("meta").len() <= 1024);
        assert!(
            std::fs::metadata(dir.join("c.log.1"))
                .expect("rotated")
                .len()
                <= 1024
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
