//! The threads that hash and write an upload's chunks while the session
//! thread receives the next ones.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use ring::digest::{Context, SHA256};

use super::{internal, UploadError};
use crate::messages::{hash_zeros, ErrorCode};

/// Chunks queued before each stage of an upload's pipeline (hashing,
/// then writing). With the buffer being filled by the session thread and
/// one in each stage, an upload holds at most `2 * PIPELINE_DEPTH + 4`
/// frame buffers (about 3 MiB).
pub const PIPELINE_DEPTH: usize = 4;

/// The writer asks for an early fdatasync after this many bytes.
pub const FLUSH_EVERY: usize = 16 << 20;

/// One chunk in the pipeline: `buf[data]` is the chunk's data, for the
/// file at `offset` (at or after the end of the previous chunk).
pub(super) struct Job {
    pub(super) buf: Vec<u8>,
    pub(super) data: Range<usize>,
    pub(super) offset: u64,
}

impl Job {
    fn data(&self) -> &[u8] {
        // The session thread checked the range; an empty slice here would
        // make the final size or hash check fail, never panic.
        self.buf.get(self.data.clone()).unwrap_or_default()
    }
}

/// The threads of one upload. The session thread receives and decrypts;
/// the hasher updates the SHA-256 (with zeros for the hole before a
/// chunk) and passes each chunk on, in order, to the writer, which writes
/// it at its offset, leaving holes unwritten, and hands the buffer back
/// through `spare` for reuse. Three stages keep two cores busy: hashing and writing each
/// cost about as much as decrypting.
pub(super) struct Writer {
    pub(super) jobs: SyncSender<Job>,
    pub(super) spare: Receiver<Vec<u8>>,
    /// The SHA-256 so far, and the offset it has reached.
    hasher: JoinHandle<(Context, u64)>,
    writer: JoinHandle<(File, io::Result<()>)>,
    flusher: JoinHandle<io::Result<()>>,
}

impl Writer {
    pub(super) fn spawn(file: File) -> io::Result<Writer> {
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
                    if let Err(e) = file.write_all_at(job.data(), job.offset) {
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
                let mut at = 0u64;
                for job in to_hash {
                    // The session thread checked that chunks never go back.
                    hash_zeros(&mut hash, job.offset.saturating_sub(at));
                    hash.update(job.data());
                    at = job.offset.saturating_add(job.data().len() as u64);
                    if hashed.send(job).is_err() {
                        break;
                    }
                }
                (hash, at)
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
    /// written. Returns the file, the SHA-256 so far and the offset it
    /// reached (the end of the last chunk).
    pub(super) fn join(self) -> Result<(File, Context, u64), UploadError> {
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
            Ok((file, Ok(()))) => {
                let (hash, at) = hash?;
                Ok((file, hash, at))
            }
            Ok((_, Err(e))) => Err(internal("write the upload", e)),
            Err(_) => Err(failed()),
        }
    }
}
