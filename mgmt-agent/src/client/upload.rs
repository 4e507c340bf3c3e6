//! Uploads: the file's hash, then its chunks streamed within the host's
//! flow-control window by two threads.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};

use super::{Client, ClientError};
use crate::messages::{encode_upload_chunk_prefix, MAX_CHUNK};
use crate::{ClientMessage, Request, Response, ServerMessage};

/// Where an upload goes and what it holds.
pub struct UploadFile<'a> {
    /// Under `images/` or `disks/` of the host's upload root.
    pub remote: &'a str,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Replace a file that stopped guests use (admin only).
    pub replace: bool,
}

impl Client {
    /// Uploads `size` bytes read from `data` to `remote` (under `images/`
    /// or `disks/` of the host's upload root), announcing `sha256`, in chunks of at
    /// most `chunk` bytes (clamped to [`MAX_CHUNK`]), never with more
    /// than the granted window unacknowledged. `progress` is called with
    /// the bytes sent so far. Each chunk is built and sealed in one
    /// buffer, with the data read straight into it, by a second thread
    /// while this one writes the previous chunk (see `stream_chunks`).
    pub fn upload<R: Read + Send + ?Sized>(
        &mut self,
        remote: &str,
        size: u64,
        sha256: [u8; 32],
        data: &mut R,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let file = UploadFile {
            remote,
            size,
            sha256,
            replace: false,
        };
        self.upload_file(&file, data, chunk, progress)
    }

    /// As [`Client::upload`], for `file`, which may replace a file that
    /// guests use (an admin's choice, while they are stopped).
    pub fn upload_file<R: Read + Send + ?Sized>(
        &mut self,
        file: &UploadFile<'_>,
        data: &mut R,
        chunk: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let size = file.size;
        let chunk = chunk.clamp(1, MAX_CHUNK) as u64;
        let opened = self.call(Request::Upload {
            path: file.remote.to_string(),
            size,
            sha256: file.sha256,
            replace: file.replace,
        })?;
        let id = self.last_id();
        let limit = match opened {
            Response::UploadAck { received, window } => received.saturating_add(window),
            _ => return Err(ClientError::Unexpected),
        };
        let streamed = self.stream_chunks(id, size, limit, chunk, data, progress);
        if streamed.is_err() {
            // Frames may have been sealed and never sent: the counters
            // no longer match the server's.
            self.session.close();
        }
        streamed?;
        self.session.send(
            &mut self.stream,
            &ClientMessage {
                id,
                request: Request::UploadFinish,
            },
        )?;
        loop {
            match self.recv(id)? {
                Response::UploadAck { .. } => {}
                Response::Ok => return Ok(()),
                _ => return Err(ClientError::Unexpected),
            }
        }
    }

    /// Streams the `size` bytes of upload `id` with two threads: a
    /// sealer reads the data straight into a frame buffer and seals it in
    /// place while this thread writes the previous frame and reads the
    /// server's `UploadAck`s, never letting more than the granted window
    /// be unacknowledged. Buffers go back to the sealer for reuse.
    fn stream_chunks<R: Read + Send + ?Sized>(
        &mut self,
        id: u64,
        size: u64,
        mut limit: u64,
        chunk: u64,
        data: &mut R,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        // With at most half the window per chunk, a client that has to
        // wait for credit has more than a quarter of the window
        // unacknowledged, which the server always acknowledges.
        let chunk = chunk.min((limit / 2).max(1));
        let Client {
            stream, session, ..
        } = self;
        let (mut sealer, mut opener) = session.split()?;
        let (full, sealed) = sync_channel::<Result<(Vec<u8>, u64), ClientError>>(2);
        let (give_back, empty) = channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut sent = 0u64;
                while sent < size {
                    let n = chunk.min(size - sent);
                    let mut buf = empty.try_recv().unwrap_or_default();
                    let mut local_err = None;
                    let r = sealer.seal_with(&mut buf, |v| {
                        encode_upload_chunk_prefix(v, id, sent, n as usize);
                        let start = v.len();
                        v.resize(start + n as usize, 0);
                        data.read_exact(&mut v[start..]).map_err(|e| {
                            local_err = Some(e);
                            crate::SessionError::Closed
                        })
                    });
                    let item = match (local_err, r) {
                        (Some(e), _) => Err(ClientError::Local(format!(
                            "Cannot read the upload data: {e}"
                        ))),
                        (None, Err(e)) => Err(e.into()),
                        (None, Ok(())) => Ok((buf, n)),
                    };
                    let failed = item.is_err();
                    // The writer stopped: nothing more to do.
                    if full.send(item).is_err() || failed {
                        return;
                    }
                    sent += n;
                }
            });
            let mut sent = 0u64;
            // Returning early drops `sealed`, which stops the sealer.
            for item in sealed {
                let (frame, n) = item?;
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
                stream
                    .write_all(&frame)
                    .map_err(|e| crate::SessionError::Frame(e.into()))?;
                sent += n;
                progress(sent);
                let _ = give_back.send(frame);
            }
            if sent == size {
                Ok(())
            } else {
                Err(ClientError::Unexpected)
            }
        })
    }
}

/// The size and SHA-256 of a local file.
pub fn sha256_file(path: &Path) -> Result<(u64, [u8; 32]), ClientError> {
    let local =
        |e: std::io::Error| ClientError::Local(format!("Cannot read {}: {e}", path.display()));
    let mut f = File::open(path).map_err(local)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(local(e)),
        };
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((size, out))
}
