//! A guest's cloud-init NoCloud seed on the data partition: init builds
//! it before it starts a guest whose spec has `[cloud_init]`, keel-vmm
//! opens it and attaches it read-only after the spec's disks.
//!
//! The image is `cloud-init/NAME.img` ([`cloud_init_image`]), outside the
//! directories a spec's files may name, so no guest can be given another's
//! seed. It is rebuilt from the spec at every start but written (atomically)
//! only when its bytes change: the build is deterministic. The files it
//! copies from `images/` are opened beneath that directory as every spec
//! file is ([`open_guest_file`]), read with a size bound.

mod fat;
mod render;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keel_common::config::{ConfigError, Source};
use keel_common::guest::{cloud_init_image, SeedFile, CLOUD_INIT_DIR};
use keel_common::GuestSpec;

pub use fat::{build as build_image, IMAGE_BYTES, LABEL};
pub use render::{render, yaml_string, Seed};

use crate::beneath::{describe_error, open_beneath, open_dir};
use crate::fsutil::atomic_write;
use crate::spec_files::open_guest_file;

/// Why a guest's seed could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    /// A file the spec names is missing, too large or not a file.
    #[error("{0}")]
    Spec(#[from] ConfigError),
    #[error("Cannot build the cloud-init volume: {0}.")]
    Build(io::Error),
    #[error("Cannot store the cloud-init volume {}: {source}.", path.display())]
    Store { path: PathBuf, source: io::Error },
}

/// What [`prepare`] left on the data partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The image, under the data partition.
    pub path: PathBuf,
    pub instance_id: String,
    /// False when the image already held these bytes.
    pub written: bool,
}

/// Builds the seed of `spec` (stored as `file`, from `text`, which locate
/// errors) and stores it under `base_dir` unless it is there already.
/// A spec without `[cloud_init]` gets none, and a seed left from an
/// earlier spec is removed. Returns what was stored.
pub fn prepare(
    spec: &GuestSpec,
    file: &Path,
    text: &str,
    base_dir: &Path,
) -> Result<Option<Prepared>, CloudInitError> {
    let path = base_dir.join(cloud_init_image(&spec.name));
    let Some(cloud_init) = &spec.cloud_init else {
        remove_image(base_dir, &spec.name).map_err(|source| CloudInitError::Store {
            path: path.clone(),
            source,
        })?;
        return Ok(None);
    };
    let at = Source::new(file, text);
    let (mut user_data, mut network_config) = (None, None);
    for (kind, rel) in cloud_init.files() {
        let bytes = read_seed_file(base_dir, rel, kind.max_bytes())
            .map_err(|m| at.error(kind.field(), m))?;
        match kind {
            SeedFile::UserData => user_data = Some(bytes),
            SeedFile::NetworkConfig => network_config = Some(bytes),
        }
    }
    let seed = render(
        &spec.name,
        cloud_init,
        user_data.as_deref(),
        network_config.as_deref(),
    );
    let digest = seed.digest();
    let volume_id = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let image = build_image(volume_id, &seed.files()).map_err(CloudInitError::Build)?;

    let store = |source| CloudInitError::Store {
        path: path.clone(),
        source,
    };
    let dir = base_dir.join(CLOUD_INIT_DIR);
    ensure_dir(&dir).map_err(store)?;
    let written = if stored_bytes(&path).is_some_and(|old| old == image) {
        false
    } else {
        atomic_write(&path, &image, 0o600).map_err(store)?;
        true
    };
    Ok(Some(Prepared {
        path,
        instance_id: seed.instance_id,
        written,
    }))
}

/// Removes guest `name`'s seed, if any.
pub fn remove_image(base_dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(base_dir.join(cloud_init_image(name))) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Opens guest `name`'s seed read-only for keel-vmm, beneath the data
/// partition's `cloud-init/` (a symbolic link out of it is refused).
pub fn open_image(base_dir: &Path, name: &str) -> Result<File, String> {
    let rel = cloud_init_image(name);
    let full = base_dir.join(&rel);
    let dir_path = base_dir.join(CLOUD_INIT_DIR);
    let dir = open_dir(&dir_path).map_err(|err| match err.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "`{}` does not exist: init builds the cloud-init volume when it starts the guest",
            full.display()
        ),
        _ => format!(
            "cannot open `{}` (a symbolic link there is refused): {err}",
            dir_path.display()
        ),
    })?;
    let beneath = rel.strip_prefix(CLOUD_INIT_DIR).unwrap_or(&rel);
    let image = open_beneath(&dir, beneath, libc::O_RDONLY | libc::O_NONBLOCK)
        .map_err(|err| describe_error(&err, &full, CLOUD_INIT_DIR))?;
    let is_file = image
        .metadata()
        .map_err(|err| format!("cannot inspect `{}`: {err}", full.display()))?
        .is_file();
    if !is_file {
        return Err(format!("`{}` is not a regular file", full.display()));
    }
    Ok(image)
}

/// Reads a `user_data` or `network_config` file (`rel` as the spec
/// writes it): a regular file beneath `images/`, at most `max` bytes.
pub fn read_seed_file(base_dir: &Path, rel: &Path, max: u64) -> Result<Vec<u8>, String> {
    let full = base_dir.join(rel);
    // O_NONBLOCK: a FIFO planted there must not hang init.
    let file = open_guest_file(base_dir, rel, &[], libc::O_RDONLY | libc::O_NONBLOCK)?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot inspect `{}`: {err}", full.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file", full.display()));
    }
    let too_big = || {
        format!(
            "`{}` is larger than {} KiB, the most a cloud-init file may be",
            full.display(),
            max >> 10
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read `{}`: {err}", full.display()))?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Creates the seeds' directory (root's only), refusing anything but a
/// real directory there: init writes into it as root.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
        _ => {}
    }
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symbolic link there is refused)",
            dir.display()
        )));
    }
    Ok(())
}

/// The image stored at `path`, if it is a regular file no larger than an
/// image can be.
fn stored_bytes(path: &Path) -> Option<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::with_capacity(IMAGE_BYTES);
    file.take(IMAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests;
