//! Uploads: a file's data extents (its holes skipped), hashed as they are
//! read and streamed within the host's flow-control window by three
//! threads, then the SHA-256 of the whole file.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::Shutdown;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::sync::mpsc::{channel, sync_channel};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use ring::digest::{Context, SHA256};

use super::{Client, ClientError};
use crate::messages::{encode_upload_chunk_prefix, hash_zeros, MAX_CHUNK, UPLOAD_BLOCK};
use crate::{ClientMessage, Request, Response, ServerMessage};

/// Where an upload goes.
pub struct UploadFile<'a> {
    /// Under `images/` or `disks/` of the host's upload root.
    pub remote: &'a str,
    /// Replace a file that stopped guests use (admin only).
    pub replace: bool,
}

/// What an upload sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// The file's length.
    pub size: u64,
    /// The data bytes sent: the file less the holes skipped.
    pub data: u64,
    /// The bytes of the chunk frames on the wire: data, prefixes, frame
    /// headers and tags.
    pub wire: u64,
    /// The SHA-256 of all `size` bytes, holes as zeros.
    pub sha256: [u8; 32],
}

/// What an upload reads its data from.
enum Source<'a, R> {
    /// A stream with no holes, read in order.
    Stream(&'a mut R),
    /// A file, read at each extent's offsets.
    File(&'a File),
}

impl<R: Read> Source<'_, R> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::Stream(r) => r.read_exact(buf),
            Source::File(f) => f.read_exact_at(buf, offset),
        }
    }
}

/// A frame for the sealer: plaintext in `buf` after a 4-byte header
/// placeholder, and the `n` data bytes it holds ending at `end`.
type Filled = Result<(Vec<u8>, u64, u64), ClientError>;

impl Client {
    /// Uploads the `size` bytes read from `data` (a stream: every byte is
    /// sent) to `remote` (under `images/` or `disks/` of the host's upload
    /// root), in chunks of at most `chunk` bytes (clamped to
    /// [`MAX_CHUNK`]), never with more than the granted window
    /// unacknowledged. `progress` is called with the offset reached.
    pub fn upload<R: Read + Send>(
        &mut self,
        remote: &str,
        size: u64,
        data: &mut R,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Uploaded, ClientError> {
        let file = UploadFile {
            remote,
            replace: false,
        };
        let extents = whole(size);
        self.send_extents(
            &file,
            size,
            &extents,
            Source::Stream(data),
            chunk,
            progress,
            &|| Ok(()),
        )
    }

    /// Uploads `local` (a regular file or a block device) as `file` says:
    /// only its data extents are sent (see [`data_extents`]), so a sparse
    /// file lands sparse. A file that changes while it is sent is refused
    /// (`Local`) and nothing is saved on the host.
    pub fn upload_file(
        &mut self,
        file: &UploadFile<'_>,
        local: &File,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Uploaded, ClientError> {
        let before = local.metadata().map_err(local_err)?;
        let size = size_of(local, &before)?;
        let extents = if before.is_file() {
            data_extents(local, size).map_err(local_err)?
        } else {
            // A block device has no holes to skip.
            whole(size)
        };
        let unchanged = || {
            let after = local.metadata().map_err(local_err)?;
            if stamp(&after) == stamp(&before) && (!before.is_file() || after.len() == size) {
                return Ok(());
            }
            Err(ClientError::Local(format!(
                "The file changed while it was being uploaded ({size} bytes before, {} after); nothing was saved on the host.",
                after.len()
            )))
        };
        self.send_extents::<io::Empty>(
            file,
            size,
            &extents,
            Source::File(local),
            chunk,
            progress,
            &unchanged,
        )
    }

    /// Opens the upload, streams `extents` of the `size` bytes from
    /// `source`, checks `unchanged` and ends with the SHA-256. On any
    /// failure after the upload opened the connection is shut down, so
    /// the host deletes its temporary file at once.
    #[allow(clippy::too_many_arguments)]
    fn send_extents<R: Read + Send>(
        &mut self,
        file: &UploadFile<'_>,
        size: u64,
        extents: &[Range<u64>],
        source: Source<'_, R>,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
        unchanged: &dyn Fn() -> Result<(), ClientError>,
    ) -> Result<Uploaded, ClientError> {
        let data = extents.iter().map(|e| e.end - e.start).sum();
        let chunk = chunk.clamp(1, MAX_CHUNK) as u64;
        let opened = self.call(Request::UploadStart {
            path: file.remote.to_string(),
            size,
            data,
            replace: file.replace,
        })?;
        let id = self.last_id();
        let limit = match opened {
            Response::UploadAck { received, window } => received.saturating_add(window),
            _ => return Err(ClientError::Unexpected),
        };
        let streamed = self
            .stream_chunks(id, size, extents, limit, chunk, source, progress)
            .and_then(|(wire, sha256)| unchanged().map(|()| (wire, sha256)));
        let (wire, sha256) = match streamed {
            Ok(done) => done,
            Err(e) => {
                // Frames may have been sealed and never sent: the counters
                // no longer match the server's. Hanging up makes it drop
                // the upload now rather than at its idle timeout.
                self.session.close();
                let _ = self.stream.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        self.session.send(
            &mut self.stream,
            &ClientMessage {
                id,
                request: Request::UploadEnd { sha256 },
            },
        )?;
        loop {
            match self.recv(id)? {
                Response::UploadAck { .. } => {}
                Response::Ok => {
                    return Ok(Uploaded {
                        size,
                        data,
                        wire,
                        sha256,
                    })
                }
                _ => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Streams `extents` of upload `id` with three threads: a reader
    /// reads each chunk's data straight into a frame buffer behind its
    /// prefix and updates the SHA-256 (holes as zeros, not read); a
    /// sealer seals it in place; and this thread writes the previous frame
    /// and reads the server's `UploadAck`s, never letting more than the
    /// granted window be unacknowledged. Buffers go back to the reader for
    /// reuse. Returns the frame bytes written and the SHA-256.
    #[allow(clippy::too_many_arguments)]
    fn stream_chunks<R: Read + Send>(
        &mut self,
        id: u64,
        size: u64,
        extents: &[Range<u64>],
        mut limit: u64,
        chunk: u64,
        mut source: Source<'_, R>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(u64, [u8; 32]), ClientError> {
        // With at most half the window per chunk, a client that has to
        // wait for credit has more than a quarter of the window
        // unacknowledged, which the server always acknowledges.
        let chunk = chunk.min((limit / 2).max(1));
        let Client {
            stream, session, ..
        } = self;
        let (mut sealer, mut opener) = session.split()?;
        let (filled, to_seal) = sync_channel::<Filled>(2);
        let (sealed, to_write) = sync_channel::<Filled>(2);
        let (give_back, empty) = channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut hash = Context::new(&SHA256);
                let mut at = 0u64;
                for extent in extents {
                    let mut off = extent.start;
                    while off < extent.end {
                        let n = chunk.min(extent.end - off);
                        hash_zeros(&mut hash, off - at);
                        let mut buf = empty.try_recv().unwrap_or_default();
                        buf.clear();
                        buf.extend_from_slice(&[0; 4]);
                        encode_upload_chunk_prefix(&mut buf, id, off, n as usize);
                        let start = buf.len();
                        buf.resize(start + n as usize, 0);
                        let item = match source.read_at(off, &mut buf[start..]) {
                            Ok(()) => {
                                hash.update(&buf[start..]);
                                Ok((buf, n, off + n))
                            }
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                Err(ClientError::Local(format!(
                                    "The file shrank while it was being uploaded: it ends before byte {} of {size}; nothing was saved on the host.",
                                    off + n
                                )))
                            }
                            Err(e) => Err(ClientError::Local(format!(
                                "Cannot read the upload data: {e}"
                            ))),
                        };
                        let failed = item.is_err();
                        // The sealer stopped: nothing more to do.
                        if filled.send(item).is_err() || failed {
                            return None;
                        }
                        off += n;
                        at = off;
                    }
                }
                hash_zeros(&mut hash, size - at);
                let mut out = [0u8; 32];
                out.copy_from_slice(hash.finish().as_ref());
                Some(out)
            });
            scope.spawn(move || {
                for item in to_seal {
                    let item = item.and_then(|(mut plain, n, end)| {
                        // seal_with builds the frame in the buffer it is
                        // given: hand it the filled one.
                        let mut frame = Vec::new();
                        sealer.seal_with(&mut frame, |v| {
                            std::mem::swap(v, &mut plain);
                            Ok(())
                        })?;
                        Ok((frame, n, end))
                    });
                    let failed = item.is_err();
                    if sealed.send(item).is_err() || failed {
                        return;
                    }
                }
            });
            let (mut sent, mut wire) = (0u64, 0u64);
            // Returning early drops `to_write`, which stops the others.
            for item in to_write {
                let (frame, n, end) = item?;
                while sent + n > limit {
                    let reply: ServerMessage = opener.recv(stream)?;
                    match reply.response {
                        _ if reply.id != id => return Err(ClientError::Unexpected),
                        Response::UploadAck { received, window } => {
                            limit = received.saturating_add(window)
                        }
                        Response::Error { kind, message } => {
                            return Err(ClientError::Host { kind, message })
                        }
                        _ => return Err(ClientError::Unexpected),
                    }
                }
                io::Write::write_all(stream, &frame)
                    .map_err(|e| crate::SessionError::Frame(e.into()))?;
                sent += n;
                wire += frame.len() as u64;
                progress(end);
                let _ = give_back.send(frame);
            }
            let digest = reader.join().ok().flatten();
            match digest {
                Some(digest) => {
                    progress(size);
                    Ok((wire, digest))
                }
                None => Err(ClientError::Unexpected),
            }
        })
    }
}

/// The length of what [`Client::upload_file`] sends of `local`: a
/// regular file's length, or where a block device ends (its metadata
/// says 0).
pub fn upload_size(local: &File) -> Result<u64, ClientError> {
    size_of(local, &local.metadata().map_err(local_err)?)
}

fn size_of(local: &File, meta: &Metadata) -> Result<u64, ClientError> {
    if meta.is_file() {
        Ok(meta.len())
    } else if meta.file_type().is_block_device() {
        let mut f = local;
        f.seek(SeekFrom::End(0)).map_err(local_err)
    } else {
        Err(ClientError::Local(
            "Only a regular file or a block device can be uploaded.".to_string(),
        ))
    }
}

fn local_err(e: io::Error) -> ClientError {
    ClientError::Local(format!("Cannot read the file: {e}"))
}

/// What must not change while a file is sent: its identity, its
/// modification and status-change times (a write or a punched hole moves
/// both).
fn stamp(m: &Metadata) -> (u64, u64, i64, i64, i64, i64) {
    (
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// All of `size` bytes as data: one extent, or none if empty.
fn whole(size: u64) -> Vec<Range<u64>> {
    std::iter::once(0..size).filter(|r| !r.is_empty()).collect()
}

/// The data extents of the first `size` bytes of `file`, found with
/// `SEEK_DATA`/`SEEK_HOLE`: in order, widened to [`UPLOAD_BLOCK`]
/// boundaries (within `size`) and merged where they then touch, so that
/// the host allocates no more blocks than the data bytes announced. A
/// file system that cannot tell holes yields one extent, the whole file.
pub fn data_extents(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
    let fd = file.as_raw_fd();
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data after pos: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => return Ok(whole(size)),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(fd, start as i64, Whence::SeekHole) {
            Ok(e) => (e as u64).min(size),
            Err(Errno::ENXIO) => size,
            Err(e) => return Err(e.into()),
        };
        // Not a file system's answer: read the rest as data.
        let end = if end <= start { size } else { end };
        let a = start / UPLOAD_BLOCK * UPLOAD_BLOCK;
        let b = end
            .div_ceil(UPLOAD_BLOCK)
            .saturating_mul(UPLOAD_BLOCK)
            .min(size);
        match out.last_mut() {
            Some(last) if last.end >= a => last.end = last.end.max(b),
            _ => out.push(a..b),
        }
        pos = end;
    }
    Ok(out)
}
