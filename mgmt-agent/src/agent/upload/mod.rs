//! Uploads into the agent's upload root (the data partition in the
//! appliance, `<state-dir>/uploads` for a standalone agent), under its
//! `images/` or `disks/` only: path checks, the temporary file, the running
//! SHA-256, and the atomic rename.
//!
//! An upload is written to a hidden temporary file next to its final
//! name, given its announced length at once, then chunk by chunk at the
//! chunks' offsets (the holes between them stay unwritten, so a sparse
//! file lands sparse), fsynced, checked against the data bytes and the SHA-256 the
//! client announced (first, or at the end), and only then renamed over
//! the final name (and the directory fsynced). On any failure the temporary file is deleted, so
//! the final name is either absent, its old content, or the complete new
//! content; never a partial file.
//!
//! Before it starts, an upload must not replace a file a guest uses
//! (`users`, asking init) and must leave the host its reserve of free
//! space (`space`); temporary files an interrupted agent left are swept
//! at start (`sweep`).
//!
//! [`Upload`] is one upload; `path` checks where it may go, `wire`
//! receives its chunks without copying them, `pipeline` hashes and writes
//! them on their own threads, and `stream` is the session side (which
//! upload a session has open, how its messages are answered and audited).

mod path;
mod pipeline;
mod space;
mod stream;
mod sweep;
mod users;
mod wire;

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::messages::{hash_zeros, ErrorCode, UPLOAD_BLOCK, UPLOAD_WINDOW};
pub use path::{check_path, UPLOAD_DIRS};
use pipeline::{Job, Writer};
pub use pipeline::{FLUSH_EVERY, PIPELINE_DEPTH};
pub use space::{check_free_space, default_reserve, MAX_RESERVE, MIN_RESERVE, RESERVE_PERCENT};
pub use stream::UploadSlot;
pub use sweep::sweep;
pub use users::check_replace;
pub use wire::{decode_chunk, recv, Incoming};

/// The default upload root inside the state directory, for a standalone
/// agent (see `AgentSettings::upload_root`).
pub const UPLOADS_DIR: &str = "uploads";

/// The agent sends a new `UploadAck` once this many bytes arrived since
/// the last one, so the client always has credit left in the window.
pub const ACK_EVERY: u64 = UPLOAD_WINDOW / 4;

/// An error for the client: kind and message.
pub type UploadError = (ErrorCode, String);

/// An upload in progress.
///
/// The session thread checks each chunk (offset, announced size and data
/// bytes, blocks allocated, window) and queues it; a hasher thread and a
/// writer thread hash and write it. `received` counts the data bytes
/// accepted so far: checked and queued, at most `2 * PIPELINE_DEPTH + 2`
/// chunks ahead of the disk. Only [`Upload::finish`] waits for every
/// byte to be written, hashed and fsynced.
pub struct Upload {
    pub path: String,
    /// The file's length.
    pub size: u64,
    /// The bytes the client sends (at most `size`; the rest are holes).
    pub data: u64,
    /// The client asked to replace a file that guests use.
    pub replace: bool,
    /// The SHA-256 announced with `Upload`; `UploadStart` sends it last.
    sha256: Option<[u8; 32]>,
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<Writer>,
    pub received: u64,
    pub acked: u64,
    /// The end of the last chunk: the next one may not start before.
    end: u64,
    /// [`UPLOAD_BLOCK`]s the chunks touch, and the last one touched.
    blocks: u64,
    last_block: Option<u64>,
}

fn internal(what: &str, e: io::Error) -> UploadError {
    (ErrorCode::Internal, format!("Cannot {what}: {e}"))
}

fn closed() -> UploadError {
    (ErrorCode::Internal, "The upload is closed.".to_string())
}

impl Upload {
    /// Checks the path, creates the temporary file below `root` (the
    /// agent's upload root) for a file of `size` bytes of which `data`
    /// are sent, with its SHA-256 if announced first, and starts the
    /// writer thread. Missing
    /// directories, the root and `images`/`disks` included, are created
    /// with mode 0700; existing ones are used as they are.
    pub fn start(
        root: &Path,
        path: &str,
        size: u64,
        data: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<Upload, UploadError> {
        let rel = check_path(path)?;
        if data > size {
            return Err((
                ErrorCode::Invalid,
                format!("The upload announces {data} data bytes in a file of {size}."),
            ));
        }
        let final_path = root.join(&rel);
        let parent = final_path
            .parent()
            .ok_or_else(|| (ErrorCode::Invalid, "Bad upload path.".to_string()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| internal("create the upload directory", e))?;
        if final_path.is_dir() {
            return Err((
                ErrorCode::Conflict,
                format!("{path} is a directory on the host."),
            ));
        }
        let mut r = [0u8; 8];
        SystemRandom::new()
            .fill(&mut r)
            .map_err(|_| (ErrorCode::Internal, "The random source failed.".to_string()))?;
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp_path = parent.join(sweep::temp_name(&name, u64::from_le_bytes(r)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| internal("create the temporary file", e))?;
        // The length first: the holes are the file's from the start, and a
        // length the file system cannot hold is refused before any data.
        let sized = file.set_len(size).map_err(|e| {
            (
                ErrorCode::Invalid,
                format!("The host cannot hold a file of {size} bytes: {e}."),
            )
        });
        // From here on Drop deletes the temporary file on any failure.
        let mut upload = Upload {
            path: path.to_string(),
            size,
            data,
            replace: false,
            sha256,
            final_path,
            temp_path,
            writer: None,
            received: 0,
            acked: 0,
            end: 0,
            blocks: 0,
            last_block: None,
        };
        sized?;
        upload.writer =
            Some(Writer::spawn(file).map_err(|e| internal("start the upload writer", e))?);
        Ok(upload)
    }

    /// Accepts the chunk `buf[data]` at `offset`: checks it against the
    /// end of the previous chunk, the announced size and data bytes, the
    /// blocks those allow and `window` (the credit granted with the last
    /// ack), then hands the buffer to the writer thread and leaves a spare
    /// buffer (possibly empty) in `buf`. A write error of an earlier chunk
    /// is returned here or by `finish`.
    pub fn write(
        &mut self,
        offset: u64,
        buf: &mut Vec<u8>,
        data: Range<usize>,
        window: u64,
    ) -> Result<(), UploadError> {
        let invalid = |m: String| Err((ErrorCode::Invalid, m));
        if buf.get(data.clone()).is_none() {
            return Err((ErrorCode::Internal, "Bad chunk range.".to_string()));
        }
        let len = data.len() as u64;
        if offset < self.end {
            return invalid(format!(
                "Upload chunk at offset {offset} goes back before the end of the previous one ({}).",
                self.end
            ));
        }
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.size => end,
            _ => {
                return invalid(format!(
                    "The upload exceeds its announced size of {} bytes.",
                    self.size
                ))
            }
        };
        let received = self.received + len;
        if received > self.data {
            return invalid(format!(
                "The upload exceeds its announced {} data bytes.",
                self.data
            ));
        }
        // Scattered small chunks must not allocate more than was admitted.
        let (blocks, last_block) = match len {
            0 => (self.blocks, self.last_block),
            _ => {
                let first = offset / UPLOAD_BLOCK;
                let last = (end - 1) / UPLOAD_BLOCK;
                let shared = u64::from(self.last_block == Some(first));
                (self.blocks + (last - first + 1) - shared, Some(last))
            }
        };
        if blocks > self.data.div_ceil(UPLOAD_BLOCK) {
            return invalid(format!(
                "The upload's chunks touch more {} KiB blocks than its announced {} data bytes fill.",
                UPLOAD_BLOCK / 1024,
                self.data
            ));
        }
        if received > self.acked.saturating_add(window) {
            return invalid(
                "The client sent more than the flow-control window allows.".to_string(),
            );
        }
        let writer = self.writer.as_ref().ok_or_else(closed)?;
        let spare = writer.spare.try_recv().unwrap_or_default();
        let job = Job {
            buf: std::mem::replace(buf, spare),
            data,
            offset,
        };
        if writer.jobs.send(job).is_err() {
            // The writer stopped on an I/O error: report it.
            let writer = self.writer.take().ok_or_else(closed)?;
            return Err(writer.join().err().unwrap_or_else(closed));
        }
        self.received = received;
        self.end = end;
        self.blocks = blocks;
        self.last_block = last_block;
        Ok(())
    }

    /// Whether an `UploadAck` is due; if so, records it as sent.
    pub fn ack_due(&mut self) -> bool {
        if self.received - self.acked >= ACK_EVERY || self.received == self.data {
            if self.received == self.acked {
                return false;
            }
            self.acked = self.received;
            return true;
        }
        false
    }

    /// Waits for the writer, checks the data bytes and the SHA-256 (the
    /// one announced first, or `sha256` sent at the end; both must agree
    /// if both came), sets the length, fsyncs, and renames into place. On
    /// error the temporary file is gone (dropping `self` deletes it).
    pub fn finish(mut self, sha256: Option<[u8; 32]>) -> Result<u64, UploadError> {
        let (file, mut hash, at) = self.writer.take().ok_or_else(closed)?.join()?;
        let invalid = |m: &str| Err((ErrorCode::Invalid, m.to_string()));
        if self.received != self.data {
            return Err((
                ErrorCode::Invalid,
                format!(
                    "The upload ended after {} of {} data bytes.",
                    self.received, self.data
                ),
            ));
        }
        let expected = match (self.sha256, sha256) {
            (Some(a), Some(b)) if a != b => {
                return invalid("The upload's final SHA-256 differs from the one it announced.")
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => return invalid("The upload ended without its SHA-256."),
        };
        // The tail after the last chunk is a hole too.
        hash_zeros(&mut hash, self.size.saturating_sub(at));
        let digest = hash.finish();
        if digest.as_ref() != expected {
            return invalid("SHA-256 mismatch: the data received does not match the announced checksum; nothing was saved.");
        }
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
        // Stop the writer and close the file before deleting it.
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if !self.temp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests;
