//! The uploads of one session: which one is open, how its messages are
//! answered (acks, errors), and the one audit line each upload gets when
//! it ends.

use std::ops::Range;

use super::{check_free_space, check_path, check_replace, Upload, UploadError};
use crate::agent::audit::upload_name;
use crate::agent::dispatch::{dispatch, error};
use crate::agent::server::Shared;
use crate::messages::{ErrorCode, RequestId, UPLOAD_WINDOW};
use crate::{allowed, Peer, Request, Response};

/// The upload state of one session.
pub enum UploadSlot {
    Idle,
    Active {
        id: RequestId,
        upload: Box<Upload>,
    },
    /// The upload with this id failed with this error: its remaining
    /// in-flight chunks are dropped silently and `UploadFinish` repeats
    /// the error.
    Failed {
        id: RequestId,
        error: UploadError,
    },
}

fn audit(shared: &Shared, peer: &Peer, path: &str, size: u64, outcome: &str) {
    shared
        .audit
        .request(peer, &upload_name(path, size), outcome);
}

/// The checks before an upload starts: where it goes, whether it would
/// replace a guest's file, and whether the host keeps its free space
/// with the `data` bytes that will be written (holes take none).
fn admit(
    shared: &Shared,
    peer: &Peer,
    path: &str,
    data: u64,
    replace: bool,
) -> Result<(), UploadError> {
    let root = &shared.settings.upload_root;
    let rel = check_path(path)?;
    check_replace(&shared.init, root, &rel, peer, replace)?;
    let target = root.join(&rel);
    // Directories are created when the upload starts; the nearest
    // existing one is on the same file system.
    let existing = target
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(std::path::Path::new("/"));
    check_free_space(existing, data, shared.settings.upload_reserve)
}

impl UploadSlot {
    /// Ends an open upload as aborted (another request came, or the
    /// session ended).
    pub fn abort(&mut self, shared: &Shared, peer: &Peer) {
        if let UploadSlot::Active { upload: u, .. } = std::mem::replace(self, UploadSlot::Idle) {
            audit(shared, peer, &u.path, u.received, "aborted");
        }
    }

    /// Serves one message of an upload stream. Returns `None` when there
    /// is nothing to answer (a chunk that does not complete an ack period).
    pub fn step(
        &mut self,
        shared: &Shared,
        peer: &Peer,
        id: RequestId,
        request: Request,
    ) -> Option<Response> {
        if !allowed(peer.role, &request) {
            if let Request::Upload { path, size, .. } | Request::UploadStart { path, size, .. } =
                &request
            {
                audit(shared, peer, path, *size, "refused");
                return Some(error(
                    ErrorCode::Unauthorized,
                    format!("The {} role may not upload.", peer.role),
                ));
            }
            // Refuses and audits like any other request.
            return Some(dispatch(shared, peer, &request));
        }
        match request {
            Request::Upload {
                path,
                size,
                sha256,
                replace,
            } => self.open(shared, peer, id, &path, (size, size), Some(sha256), replace),
            Request::UploadStart {
                path,
                size,
                data,
                replace,
            } => self.open(shared, peer, id, &path, (size, data), None, replace),
            Request::UploadChunk { offset, mut data } => {
                let len = data.len();
                self.chunk(shared, peer, id, offset, &mut data, 0..len)
            }
            Request::UploadFinish => self.finish(shared, peer, id, None),
            Request::UploadEnd { sha256 } => self.finish(shared, peer, id, Some(sha256)),
            _ => None,
        }
    }

    /// Starts an upload of a file of `size` bytes, of which `data` come
    /// in chunks, after the checks of [`admit`].
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        shared: &Shared,
        peer: &Peer,
        id: RequestId,
        path: &str,
        (size, data): (u64, u64),
        sha256: Option<[u8; 32]>,
        replace: bool,
    ) -> Option<Response> {
        self.abort(shared, peer);
        let root = &shared.settings.upload_root;
        let started = admit(shared, peer, path, data, replace)
            .and_then(|()| Upload::start(root, path, size, data, sha256))
            .map(|mut upload| {
                upload.replace = replace;
                upload
            });
        match started {
            Ok(upload) => {
                *self = UploadSlot::Active {
                    id,
                    upload: Box::new(upload),
                };
                Some(Response::UploadAck {
                    received: 0,
                    window: UPLOAD_WINDOW,
                })
            }
            Err((kind, message)) => {
                audit(shared, peer, path, size, "error");
                Some(error(kind, message))
            }
        }
    }

    /// Ends upload `id` (`UploadFinish`, or `UploadEnd` with its
    /// `sha256`): checks again that it may replace what it replaces, then
    /// verifies it and renames it into place.
    fn finish(
        &mut self,
        shared: &Shared,
        peer: &Peer,
        id: RequestId,
        sha256: Option<[u8; 32]>,
    ) -> Option<Response> {
        match std::mem::replace(self, UploadSlot::Idle) {
            UploadSlot::Active { id: open, upload } if open == id => {
                let (path, size) = (upload.path.clone(), upload.size);
                // A guest may have started on the file meanwhile.
                let replace = upload.replace;
                let finished = check_path(&path)
                    .and_then(|rel| {
                        let root = &shared.settings.upload_root;
                        check_replace(&shared.init, root, &rel, peer, replace)
                    })
                    .and_then(|()| upload.finish(sha256));
                match finished {
                    Ok(n) => {
                        audit(shared, peer, &path, n, "ok");
                        shared.events.record(&format!(
                            "upload {path} ({n} bytes) by {}",
                            peer.fingerprint
                        ));
                        Some(Response::Ok)
                    }
                    Err((kind, message)) => {
                        audit(shared, peer, &path, size, "error");
                        shared
                            .events
                            .record(&format!("upload {path} failed: {message}"));
                        Some(error(kind, message))
                    }
                }
            }
            UploadSlot::Failed {
                id: failed,
                error: e,
            } if failed == id => Some(error(e.0, e.1)),
            other => {
                *self = other;
                Some(error(
                    ErrorCode::Invalid,
                    "No upload is in progress with this id.",
                ))
            }
        }
    }

    /// Serves one `UploadChunk` whose data is `buf[data]`, however it was
    /// decoded (in place by `upload::recv`, or by postcard in `step`). An
    /// accepted chunk's buffer goes to the upload's writer thread and
    /// `buf` gets a spare one.
    pub fn chunk(
        &mut self,
        shared: &Shared,
        peer: &Peer,
        id: RequestId,
        offset: u64,
        buf: &mut Vec<u8>,
        data: Range<usize>,
    ) -> Option<Response> {
        let window = UPLOAD_WINDOW;
        let request = Request::UploadChunk {
            offset,
            data: Vec::new(),
        };
        if !allowed(peer.role, &request) {
            // Refuses and audits like any other request.
            return Some(dispatch(shared, peer, &request));
        }
        match self {
            UploadSlot::Active { id: open, upload } if *open == id => {
                match upload.write(offset, buf, data, window) {
                    Ok(()) if upload.ack_due() => Some(Response::UploadAck {
                        received: upload.received,
                        window,
                    }),
                    Ok(()) => None,
                    Err(e) => {
                        audit(shared, peer, &upload.path, upload.size, "error");
                        *self = UploadSlot::Failed {
                            id,
                            error: e.clone(),
                        };
                        Some(error(e.0, e.1))
                    }
                }
            }
            UploadSlot::Failed { id: failed, .. } if *failed == id => None,
            _ => Some(error(
                ErrorCode::Invalid,
                "No upload is in progress with this id.",
            )),
        }
    }
}
