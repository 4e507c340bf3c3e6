//! Sending local files to the host's images/ and disks/ with a progress
//! bar: what `keelctl upload` and `keelctl import xen --upload` share.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use keel_mgmt::client::{upload_size, Client, ClientError, UploadFile, Uploaded};
use keel_mgmt::messages::MAX_CHUNK;

/// A local file opened for upload: a regular file or a block device.
pub struct Local<'a> {
    pub path: &'a Path,
    file: File,
    /// Its length; a block device's is where it ends.
    pub size: u64,
}

impl<'a> Local<'a> {
    /// Opens `path` read-only, so that a missing file fails before
    /// anything is sent.
    pub fn open(path: &'a Path) -> Result<Self, ClientError> {
        let file = File::open(path)
            .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}", path.display())))?;
        let size = upload_size(&file).map_err(|e| with_path(path, e))?;
        Ok(Local { path, file, size })
    }
}

/// What an upload sent, and how long it took.
pub struct Sent {
    pub done: Uploaded,
    pub seconds: f64,
}

/// Uploads `local` to `remote`; with `bar`, a progress bar on stderr
/// labelled `label`.
pub fn send(
    c: &mut Client,
    local: &Local<'_>,
    remote: &str,
    replace: bool,
    bar: Option<&str>,
) -> Result<Sent, ClientError> {
    let progress = match bar {
        None => indicatif::ProgressBar::hidden(),
        Some(label) => {
            let progress = indicatif::ProgressBar::new(local.size);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            ) {
                progress.set_style(style);
            }
            progress.set_message(label.to_string());
            progress
        }
    };
    let started = Instant::now();
    let target = UploadFile { remote, replace };
    let result = c.upload_file(&target, &local.file, MAX_CHUNK, &mut |at| {
        progress.set_position(at)
    });
    progress.finish_and_clear();
    let done = result.map_err(|e| with_path(local.path, e))?;
    Ok(Sent {
        done,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Names the local file in a local error.
fn with_path(path: &Path, e: ClientError) -> ClientError {
    match e {
        ClientError::Local(m) => ClientError::Local(format!("{}: {m}", path.display())),
        e => e,
    }
}

/// A SHA-256 as hex.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
