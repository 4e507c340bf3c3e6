//! Uploads into `<state-dir>/uploads`: path checks, the temporary file,
//! the running SHA-256, and the atomic rename.
//!
//! An upload is written to a hidden temporary file next to its final
//! name, fsynced, checked against the size and SHA-256 the client
//! announced, and only then renamed over the final name (and the
//! directory fsynced). On any failure the temporary file is deleted, so
//! the final name is either absent, its old content, or the complete new
//! content; never a partial file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::messages::{ErrorKind, UPLOAD_WINDOW};

/// The uploads directory inside the state directory.
pub const UPLOADS_DIR: &str = "uploads";

/// The agent sends a new `UploadAck` once this many bytes arrived since
/// the last one, so the client always has credit left in the window.
pub const ACK_EVERY: u64 = UPLOAD_WINDOW / 4;

/// An error for the client: kind and message.
pub type UploadError = (ErrorKind, String);

/// Checks an upload path and returns it as a relative path: not empty,
/// not absolute, only normal components (no `..`, no `.`), no NUL, at
/// most 1024 bytes.
pub fn check_path(path: &str) -> Result<PathBuf, UploadError> {
    let bad = |why: &str| {
        (
            ErrorKind::Invalid,
            format!("Bad upload path {path:?}: {why}."),
        )
    };
    if path.is_empty() || path.len() > 1024 || path.contains('\0') {
        return Err(bad("empty, too long or containing NUL"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(bad("it must be relative to the uploads directory"));
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(bad("`..` is not allowed")),
            _ => return Err(bad("only plain path components are allowed")),
        }
    }
    if out.as_os_str().is_empty() || path.ends_with('/') {
        return Err(bad("it must name a file"));
    }
    Ok(out)
}

/// An upload in progress.
pub struct Upload {
    pub path: String,
    pub size: u64,
    sha256: [u8; 32],
    final_path: PathBuf,
    temp_path: PathBuf,
    file: Option<File>,
    hash: Context,
    pub received: u64,
    pub acked: u64,
}

fn internal(what: &str, e: io::Error) -> UploadError {
    (ErrorKind::Internal, format!("Cannot {what}: {e}"))
}

impl Upload {
    /// Checks the path and creates the temporary file.
    pub fn start(
        state_dir: &Path,
        path: &str,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<Upload, UploadError> {
        let rel = check_path(path)?;
        let root = state_dir.join(UPLOADS_DIR);
        let final_path = root.join(&rel);
        let parent = final_path
            .parent()
            .ok_or_else(|| (ErrorKind::Invalid, "Bad upload path.".to_string()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| internal("create the upload directory", e))?;
        if final_path.is_dir() {
            return Err((
                ErrorKind::Conflict,
                format!("{path} is a directory on the host."),
            ));
        }
        let mut r = [0u8; 8];
        SystemRandom::new()
            .fill(&mut r)
            .map_err(|_| (ErrorKind::Internal, "The random source failed.".to_string()))?;
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp_path = parent.join(format!(".{name}.upload-{:016x}.tmp", u64::from_le_bytes(r)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| internal("create the temporary file", e))?;
        Ok(Upload {
            path: path.to_string(),
            size,
            sha256,
            final_path,
            temp_path,
            file: Some(file),
            hash: Context::new(&SHA256),
            received: 0,
            acked: 0,
        })
    }

    /// Appends a chunk. `window` is the credit granted with the last ack.
    pub fn write(&mut self, offset: u64, data: &[u8], window: u64) -> Result<(), UploadError> {
        if offset != self.received {
            return Err((
                ErrorKind::Invalid,
                format!(
                    "Upload chunk at offset {offset}, expected {}.",
                    self.received
                ),
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err((
                ErrorKind::Invalid,
                format!(
                    "The upload exceeds its announced size of {} bytes.",
                    self.size
                ),
            ));
        }
        if end > self.acked.saturating_add(window) {
            return Err((
                ErrorKind::Invalid,
                "The client sent more than the flow-control window allows.".to_string(),
            ));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| (ErrorKind::Internal, "The upload is closed.".to_string()))?;
        file.write_all(data)
            .map_err(|e| internal("write the upload", e))?;
        self.hash.update(data);
        self.received = end;
        Ok(())
    }

    /// Whether an `UploadAck` is due; if so, records it as sent.
    pub fn ack_due(&mut self) -> bool {
        if self.received - self.acked >= ACK_EVERY || self.received == self.size {
            if self.received == self.acked {
                return false;
            }
            self.acked = self.received;
            return true;
        }
        false
    }

    /// Checks size and hash, fsyncs, and renames into place. On error the
    /// temporary file is gone (dropping `self` deletes it).
    pub fn finish(mut self: Box<Self>) -> Result<u64, UploadError> {
        if self.received != self.size {
            return Err((
                ErrorKind::Invalid,
                format!(
                    "The upload ended after {} of {} bytes.",
                    self.received, self.size
                ),
            ));
        }
        let digest = std::mem::replace(&mut self.hash, Context::new(&SHA256)).finish();
        if digest.as_ref() != self.sha256 {
            return Err((
                ErrorKind::Invalid,
                "SHA-256 mismatch: the data received does not match the announced checksum; nothing was saved.".to_string(),
            ));
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| (ErrorKind::Internal, "The upload is closed.".to_string()))?;
        file.sync_all()
            .map_err(|e| internal("fsync the upload", e))?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path)
            .map_err(|e| internal("rename the upload into place", e))?;
        // The rename is durable once the directory is synced.
        if let Some(dir) = self.final_path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // Renamed: nothing for Drop to delete.
        self.temp_path = PathBuf::new();
        Ok(self.size)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.file = None;
        if !self.temp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check_path("a.img").unwrap(), PathBuf::from("a.img"));
        assert_eq!(
            check_path("images/x/a.img").unwrap(),
            PathBuf::from("images/x/a.img")
        );
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }
}
