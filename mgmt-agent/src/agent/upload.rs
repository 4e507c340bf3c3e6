//! Uploads into the agent's upload root (the data partition in the
//! appliance, `<state-dir>/uploads` for a standalone agent), under its
//! `images/` or `disks/` only: path checks, the temporary file, the running
//! SHA-256, and the atomic rename.
//!
//! An upload is written to a hidden temporary file next to its final
//! name, fsynced, checked against the size and SHA-256 the client
//! announced, and only then renamed over the final name (and the
//! directory fsynced). On any failure the temporary file is deleted, so
//! the final name is either absent, its old content, or the complete new
//! content; never a partial file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::messages::{ClientMessage, ErrorCode, RequestId, UPLOAD_CHUNK_INDEX, UPLOAD_WINDOW};
use crate::session::{Session, SessionError};

/// The default upload root inside the state directory, for a standalone
/// agent (see `AgentSettings::upload_root`).
pub const UPLOADS_DIR: &str = "uploads";

/// The directories of the upload root that uploads may go to: the first
/// component of every upload path is one of these. Guest specs name their
/// kernels, initrds and disks the same way, relative to the data partition.
pub const UPLOAD_DIRS: [&str; 2] = ["images", "disks"];

/// The agent sends a new `UploadAck` once this many bytes arrived since
/// the last one, so the client always has credit left in the window.
pub const ACK_EVERY: u64 = UPLOAD_WINDOW / 4;

/// An error for the client: kind and message.
pub type UploadError = (ErrorCode, String);

/// Checks an upload path and returns it as a relative path: not empty,
/// not absolute, only normal components (no `..`, no `.`), no NUL, at
/// most 1024 bytes, naming a file below one of [`UPLOAD_DIRS`] (so its
/// first component is exactly `images` or `disks`, and there is more).
pub fn check_path(path: &str) -> Result<PathBuf, UploadError> {
    let bad = |why: &str| {
        (
            ErrorCode::Invalid,
            format!("Bad upload path {path:?}: {why}."),
        )
    };
    if path.is_empty() || path.len() > 1024 || path.contains('\0') {
        return Err(bad("empty, too long or containing NUL"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(bad(
            "it must be relative to the upload root, starting with images/ or disks/",
        ));
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
    let mut parts = out.components();
    let under_upload_dir = parts
        .next()
        .is_some_and(|first| UPLOAD_DIRS.iter().any(|d| first.as_os_str() == *d));
    if !under_upload_dir || parts.next().is_none() {
        return Err(bad("it must start with images/ or disks/"));
    }
    Ok(out)
}

/// Reads a postcard varint of at most `max_bytes` bytes whose last byte
/// may carry at most `last_max`, exactly as postcard 1 decodes `u32`
/// (5, 0x0f) and `u64`/`usize` (10, 0x01): overlong encodings are
/// accepted, overflowing ones are not.
fn take_varint(bytes: &[u8], pos: &mut usize, max_bytes: usize, last_max: u8) -> Option<u64> {
    let mut out = 0u64;
    for i in 0..max_bytes {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (i != max_bytes - 1 || b <= last_max).then_some(out);
        }
    }
    None
}

/// Decodes the plaintext of an `UploadChunk` message,
/// `ClientMessage { id, request: UploadChunk { offset, data } }`, without
/// copying its data: returns `(id, offset, range of data in plain)`.
/// Returns `None` for anything else, including a malformed chunk; the
/// caller then decodes the message with postcard, so this is only a fast
/// path and must never accept what postcard would decode differently
/// (the `request_decoder` fuzz target checks that it agrees). As with
/// `postcard::from_bytes`, bytes after the data are ignored.
pub fn decode_chunk(plain: &[u8]) -> Option<(RequestId, u64, Range<usize>)> {
    let mut pos = 0;
    let id = take_varint(plain, &mut pos, 10, 0x01)?;
    let variant = take_varint(plain, &mut pos, 5, 0x0f)?;
    if variant != u64::from(UPLOAD_CHUNK_INDEX) {
        return None;
    }
    let offset = take_varint(plain, &mut pos, 10, 0x01)?;
    let len = usize::try_from(take_varint(plain, &mut pos, 10, 0x01)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= plain.len())?;
    Some((id, offset, pos..end))
}

/// One message received by the agent.
#[derive(Debug)]
pub enum Incoming {
    /// An `UploadChunk`, decoded in place: its data is `buf[data]` of the
    /// buffer given to [`recv`].
    Chunk {
        id: RequestId,
        offset: u64,
        data: Range<usize>,
    },
    /// Any other message (or a chunk in a form the fast path does not
    /// take), decoded with postcard.
    Message(ClientMessage),
}

/// Receives one client message into `buf`, a buffer the caller reuses for
/// the whole session. Upload chunks are decrypted in place and handed
/// back as a range of `buf`, so their data is neither allocated nor
/// copied before it is hashed and written; everything else is decoded
/// with postcard. Any error closes the session, as [`Session::recv`].
pub fn recv<R: Read + ?Sized>(
    session: &mut Session,
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Incoming, SessionError> {
    let n = session.recv_into(r, buf)?;
    let plain = &buf[..n];
    if let Some((id, offset, data)) = decode_chunk(plain) {
        return Ok(Incoming::Chunk { id, offset, data });
    }
    match postcard::from_bytes(plain) {
        Ok(m) => Ok(Incoming::Message(m)),
        Err(e) => {
            session.close();
            Err(SessionError::Decode(e))
        }
    }
}

/// Chunks queued before each stage of an upload's pipeline (hashing,
/// then writing). With the buffer being filled by the session thread and
/// one in each stage, an upload holds at most `2 * PIPELINE_DEPTH + 4`
/// frame buffers (about 3 MiB).
pub const PIPELINE_DEPTH: usize = 4;

/// The writer asks for an early fdatasync after this many bytes.
pub const FLUSH_EVERY: usize = 16 << 20;

/// One chunk in the pipeline: `buf[data]` is the chunk's data.
struct Job {
    buf: Vec<u8>,
    data: Range<usize>,
}

impl Job {
    fn data(&self) -> &[u8] {
        // The session thread checked the range; an empty slice here would
        // make the final size or hash check fail, never panic.
        self.buf.get(self.data.clone()).unwrap_or_default()
    }
}

/// The threads of one upload. The session thread receives and decrypts;
/// the hasher updates the SHA-256 and passes each chunk on, in order, to
/// the writer, which writes it and hands the buffer back through `spare`
/// for reuse. Three stages keep two cores busy: hashing and writing each
/// cost about as much as decrypting.
struct Writer {
    jobs: SyncSender<Job>,
    spare: Receiver<Vec<u8>>,
    hasher: JoinHandle<Context>,
    writer: JoinHandle<(File, io::Result<()>)>,
    flusher: JoinHandle<io::Result<()>>,
}

impl Writer {
    fn spawn(mut file: File) -> io::Result<Writer> {
        let (jobs, to_hash) = sync_channel::<Job>(PIPELINE_DEPTH);
        let (hashed, to_write) = sync_channel::<Job>(PIPELINE_DEPTH);
        let (give_back, spare) = channel::<Vec<u8>>();
        // Early writeback: fdatasync on the same open file, in its own
        // thread, every FLUSH_EVERY bytes (requests coalesce), so that
        // the disk writes while data still streams in and the fsync at
        // the end waits only for the tail. The flusher keeps its first
        // error: it shares the open file description with the final
        // fsync, which may then no longer see it.
        let flush_file = file.try_clone()?;
        let (flush, flush_requests) = sync_channel::<()>(1);
        let flusher = thread::Builder::new()
            .name("keel-upload-sync".into())
            .spawn(move || {
                for () in flush_requests {
                    flush_file.sync_data()?;
                }
                Ok(())
            })?;
        let writer = thread::Builder::new()
            .name("keel-upload-write".into())
            .spawn(move || {
                let mut unflushed = 0;
                for job in to_write {
                    if let Err(e) = file.write_all(job.data()) {
                        // Dropping the queue stops the hasher, and then
                        // the session thread's next send fails.
                        return (file, Err(e));
                    }
                    unflushed += job.data().len();
                    if unflushed >= FLUSH_EVERY {
                        // Full: a flush is pending and will cover this.
                        let _ = flush.try_send(());
                        unflushed = 0;
                    }
                    // The session may have stopped taking buffers back.
                    let _ = give_back.send(job.buf);
                }
                (file, Ok(()))
            });
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                // The flusher's queue is already closed.
                let _ = flusher.join();
                return Err(e);
            }
        };
        let hasher = thread::Builder::new()
            .name("keel-upload-hash".into())
            .spawn(move || {
                let mut hash = Context::new(&SHA256);
                for job in to_hash {
                    hash.update(job.data());
                    if hashed.send(job).is_err() {
                        break;
                    }
                }
                hash
            });
        let hasher = match hasher {
            Ok(h) => h,
            Err(e) => {
                // Without the hasher the writer's queue is already closed.
                let _ = writer.join();
                return Err(e);
            }
        };
        Ok(Writer {
            jobs,
            spare,
            hasher,
            writer,
            flusher,
        })
    }

    /// Closes the queue and waits for every queued chunk to be hashed and
    /// written.
    fn join(self) -> Result<(File, Context), UploadError> {
        drop(self.jobs);
        let failed = || (ErrorCode::Internal, "The upload writer failed.".to_string());
        let hash = self.hasher.join().map_err(|_| failed());
        let written = self.writer.join();
        // The writer has closed the flusher's queue.
        match self.flusher.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(internal("fsync the upload", e)),
            Err(_) => return Err(failed()),
        }
        match written {
            Ok((file, Ok(()))) => Ok((file, hash?)),
            Ok((_, Err(e))) => Err(internal("write the upload", e)),
            Err(_) => Err(failed()),
        }
    }
}

/// An upload in progress.
///
/// The session thread checks each chunk (offset, announced size, window)
/// and queues it; a hasher thread and a writer thread hash and write it.
/// `received`
/// counts the bytes accepted so far: checked and queued, at most
/// `2 * PIPELINE_DEPTH + 2` chunks ahead of the disk. Only
/// [`Upload::finish`] waits for every byte to be written, hashed and
/// fsynced.
pub struct Upload {
    pub path: String,
    pub size: u64,
    sha256: [u8; 32],
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<Writer>,
    pub received: u64,
    pub acked: u64,
}

fn internal(what: &str, e: io::Error) -> UploadError {
    (ErrorCode::Internal, format!("Cannot {what}: {e}"))
}

fn closed() -> UploadError {
    (ErrorCode::Internal, "The upload is closed.".to_string())
}

impl Upload {
    /// Checks the path, creates the temporary file below `root` (the
    /// agent's upload root) and starts the writer thread. Missing
    /// directories, the root and `images`/`disks` included, are created
    /// with mode 0700; existing ones are used as they are.
    pub fn start(
        root: &Path,
        path: &str,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<Upload, UploadError> {
        let rel = check_path(path)?;
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
        let temp_path = parent.join(format!(".{name}.upload-{:016x}.tmp", u64::from_le_bytes(r)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(|e| internal("create the temporary file", e))?;
        // From here on Drop deletes the temporary file on any failure.
        let mut upload = Upload {
            path: path.to_string(),
            size,
            sha256,
            final_path,
            temp_path,
            writer: None,
            received: 0,
            acked: 0,
        };
        upload.writer =
            Some(Writer::spawn(file).map_err(|e| internal("start the upload writer", e))?);
        Ok(upload)
    }

    /// Accepts the chunk `buf[data]` at `offset`: checks it against the
    /// bytes received so far, the announced size and `window` (the credit
    /// granted with the last ack), then hands the buffer to the writer
    /// thread and leaves a spare buffer (possibly empty) in `buf`. A write
    /// error of an earlier chunk is returned here or by `finish`.
    pub fn write(
        &mut self,
        offset: u64,
        buf: &mut Vec<u8>,
        data: Range<usize>,
        window: u64,
    ) -> Result<(), UploadError> {
        if buf.get(data.clone()).is_none() {
            return Err((ErrorCode::Internal, "Bad chunk range.".to_string()));
        }
        if offset != self.received {
            return Err((
                ErrorCode::Invalid,
                format!(
                    "Upload chunk at offset {offset}, expected {}.",
                    self.received
                ),
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err((
                ErrorCode::Invalid,
                format!(
                    "The upload exceeds its announced size of {} bytes.",
                    self.size
                ),
            ));
        }
        if end > self.acked.saturating_add(window) {
            return Err((
                ErrorCode::Invalid,
                "The client sent more than the flow-control window allows.".to_string(),
            ));
        }
        let writer = self.writer.as_ref().ok_or_else(closed)?;
        let spare = writer.spare.try_recv().unwrap_or_default();
        let job = Job {
            buf: std::mem::replace(buf, spare),
            data,
        };
        if writer.jobs.send(job).is_err() {
            // The writer stopped on an I/O error: report it.
            let writer = self.writer.take().ok_or_else(closed)?;
            return Err(writer.join().err().unwrap_or_else(closed));
        }
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

    /// Waits for the writer, checks size and hash, fsyncs, and renames
    /// into place. On error the temporary file is gone (dropping `self`
    /// deletes it).
    pub fn finish(mut self) -> Result<u64, UploadError> {
        let (file, hash) = self.writer.take().ok_or_else(closed)?.join()?;
        if self.received != self.size {
            return Err((
                ErrorCode::Invalid,
                format!(
                    "The upload ended after {} of {} bytes.",
                    self.received, self.size
                ),
            ));
        }
        let digest = hash.finish();
        if digest.as_ref() != self.sha256 {
            return Err((
                ErrorCode::Invalid,
                "SHA-256 mismatch: the data received does not match the announced checksum; nothing was saved.".to_string(),
            ));
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
mod tests {
    use super::*;
    use crate::messages::{encode_upload_chunk_prefix, Request};

    fn postcard_chunk(plain: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
        match postcard::from_bytes::<ClientMessage>(plain) {
            Ok(ClientMessage {
                id,
                request: Request::UploadChunk { offset, data },
            }) => Some((id, offset, data)),
            _ => None,
        }
    }

    fn fast_chunk(plain: &[u8]) -> Option<(u64, u64, Vec<u8>)> {
        decode_chunk(plain).map(|(id, offset, r)| (id, offset, plain[r].to_vec()))
    }

    fn sha(d: &[u8]) -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(ring::digest::digest(&SHA256, d).as_ref());
        out
    }

    fn temp_root(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-upload-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn pipelined_writes_land_in_order_and_buffers_are_reused() {
        let root = temp_root("order");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 997) as u8).collect();
        let mut up = Upload::start(&root, "images/a/b.bin", body.len() as u64, sha(&body)).unwrap();
        let mut buf = Vec::new();
        let mut sent = 0;
        let mut allocations = 0;
        for part in body.chunks(100_000) {
            // A frame as recv leaves it: a prefix, the data, a tail.
            if buf.capacity() == 0 {
                allocations += 1;
            }
            buf.clear();
            buf.extend_from_slice(b"hdr");
            buf.extend_from_slice(part);
            buf.extend_from_slice(b"tail");
            let range = 3..3 + part.len();
            up.write(sent as u64, &mut buf, range, u64::MAX / 2)
                .unwrap();
            sent += part.len();
            assert_eq!(up.received, sent as u64);
        }
        // Buffers come back from the writer: far fewer than one per chunk.
        assert!(allocations <= 2 * PIPELINE_DEPTH + 4, "{allocations}");
        // Out of order, beyond the size, beyond the window: refused.
        let mut one = vec![1u8];
        assert!(up.write(0, &mut one, 0..1, u64::MAX / 2).is_err());
        assert!(up.write(sent as u64, &mut one, 0..1, u64::MAX / 2).is_err());
        assert!(up.write(sent as u64, &mut one, 0..2, u64::MAX / 2).is_err());
        assert_eq!(up.finish().unwrap(), body.len() as u64);
        let dir = root.join("images/a");
        assert_eq!(std::fs::read(dir.join("b.bin")).unwrap(), body);
        assert_eq!(entries(&dir), ["b.bin"]);

        // A bad checksum, and an abandoned upload, leave nothing behind.
        let mut up = Upload::start(&root, "images/a/c.bin", 3, [0; 32]).unwrap();
        let mut abc = b"abc".to_vec();
        up.write(0, &mut abc, 0..3, 10).unwrap();
        assert_eq!(entries(&dir).len(), 2);
        let (kind, msg) = up.finish().unwrap_err();
        assert_eq!(kind, ErrorCode::Invalid);
        assert!(msg.contains("SHA-256"), "{msg}");
        let mut up = Upload::start(&root, "images/a/d.bin", 6, sha(b"abcdef")).unwrap();
        let mut abc = b"abc".to_vec();
        up.write(0, &mut abc, 0..3, 10).unwrap();
        drop(up);
        assert_eq!(entries(&dir), ["b.bin"]);
        // Short: the size is checked too.
        let mut up = Upload::start(&root, "images/a/e.bin", 6, sha(b"abcdef")).unwrap();
        let mut abc = b"abc".to_vec();
        up.write(0, &mut abc, 0..3, 10).unwrap();
        assert!(up.finish().unwrap_err().1.contains("3 of 6"));
        assert_eq!(entries(&dir), ["b.bin"]);
        // A window overrun is refused.
        let mut up = Upload::start(&root, "images/a/f.bin", 6, sha(b"abcdef")).unwrap();
        let mut six = b"abcdef".to_vec();
        assert!(up
            .write(0, &mut six, 0..6, 5)
            .unwrap_err()
            .1
            .contains("window"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn chunk_fast_path_agrees_with_postcard() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (id, offset, len) in [
            (0u64, 0u64, 0usize),
            (7, 0, 5),
            (u64::MAX, u64::MAX, 300),
            (1 << 35, 1 << 40, 128),
        ] {
            let mut v = Vec::new();
            encode_upload_chunk_prefix(&mut v, id, offset, len);
            v.extend((0..len).map(|i| i as u8));
            cases.push(v.clone());
            // Trailing bytes are ignored, as by postcard::from_bytes.
            v.push(0xee);
            cases.push(v.clone());
            // Every truncation.
            for cut in 0..v.len() {
                cases.push(v[..cut].to_vec());
            }
        }
        cases.extend([
            // Overlong varints (accepted by postcard).
            vec![0x87, 0x00, 0x0f, 0x80, 0x00, 0x02, 1, 2],
            vec![0x07, 0x8f, 0x00, 0x00, 0x01, 9],
            // Overflowing varints (refused).
            vec![0xff; 12],
            vec![
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x0f, 0, 0,
            ],
            vec![0x07, 0x8f, 0x80, 0x80, 0x80, 0x10, 0, 0],
            // Other variants and garbage.
            vec![0x07, 0x10],
            vec![0x07, 0x0e, 0x01, b'a', 0x00, 0x00],
            vec![],
            vec![
                0x07, 0x0f, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ]);
        for c in &cases {
            assert_eq!(fast_chunk(c), postcard_chunk(c), "{c:02x?}");
        }
        let real = postcard::to_stdvec(&ClientMessage {
            id: 9,
            request: Request::UploadChunk {
                offset: 3,
                data: b"xyz".to_vec(),
            },
        })
        .unwrap();
        assert_eq!(decode_chunk(&real), Some((9, 3, 4..7)));
    }

    #[test]
    fn paths() {
        assert_eq!(
            check_path("images/a.img").unwrap(),
            PathBuf::from("images/a.img")
        );
        assert_eq!(
            check_path("images/x/a.img").unwrap(),
            PathBuf::from("images/x/a.img")
        );
        assert_eq!(
            check_path("disks/web1.raw").unwrap(),
            PathBuf::from("disks/web1.raw")
        );
        for bad in [
            "",
            "/etc/passwd",
            "/images/a",
            "..",
            "../x",
            "images/../../x",
            "images/..",
            "images/../disks/x",
            "./images/a",
            "images/a/",
            "images/a\0b",
        ] {
            let (kind, _) = check_path(bad).unwrap_err();
            assert_eq!(kind, ErrorCode::Invalid, "{bad:?}");
        }
        // Only below images/ or disks/, spelt exactly so.
        for outside in [
            "a.img",
            "x.bin",
            "images",
            "disks",
            "Images/a",
            "images.bak/a",
            "imagesx/a",
            "agent/authorized_keys",
            "guests/web1.toml",
        ] {
            let (kind, msg) = check_path(outside).unwrap_err();
            assert_eq!(kind, ErrorCode::Invalid, "{outside:?}");
            assert_eq!(
                msg,
                format!("Bad upload path {outside:?}: it must start with images/ or disks/."),
            );
        }
    }

    #[test]
    fn uploads_stay_below_images_or_disks_of_the_root() {
        use std::os::unix::fs::PermissionsExt;
        let root = temp_root("dirs");
        // Refused before anything is created, even the root.
        let (kind, msg) = Upload::start(&root, "x.bin", 3, sha(b"abc")).err().unwrap();
        assert_eq!(kind, ErrorCode::Invalid);
        assert!(msg.contains("images/ or disks/"), "{msg}");
        assert!(!root.exists());
        // Missing directories are made with mode 0700.
        let mut abc = b"abc".to_vec();
        let mut up = Upload::start(&root, "disks/web1.raw", 3, sha(b"abc")).unwrap();
        up.write(0, &mut abc, 0..3, 10).unwrap();
        assert_eq!(up.finish().unwrap(), 3);
        assert_eq!(std::fs::read(root.join("disks/web1.raw")).unwrap(), b"abc");
        for d in [&root, &root.join("disks")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
        }
        // An existing images/ (as init makes it) is used as it is.
        std::fs::create_dir(root.join("images")).unwrap();
        std::fs::set_permissions(root.join("images"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let mut abc = b"abc".to_vec();
        let mut up = Upload::start(&root, "images/vmlinux", 3, sha(b"abc")).unwrap();
        up.write(0, &mut abc, 0..3, 10).unwrap();
        assert_eq!(up.finish().unwrap(), 3);
        assert_eq!(std::fs::read(root.join("images/vmlinux")).unwrap(), b"abc");
        let mode = std::fs::metadata(root.join("images"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(entries(&root), ["disks", "images"]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
