//! The checks of a guest spec against the file system: keel-common
//! validates what a spec says, this looks at what its paths name.

use std::collections::HashMap;
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use keel_common::config::{load_toml, ConfigError, Source};
use keel_common::guest::{check_spec_path, MAX_UDS_PATH_LEN};
use keel_common::GuestSpec;

/// Reads `path`, parses and validates it, and checks its files against
/// `base_dir` (the data partition).
pub fn load_guest_spec(path: &Path, base_dir: &Path) -> Result<GuestSpec, ConfigError> {
    let (spec, text): (GuestSpec, String) = load_toml(path)?;
    spec.validate(path, &text)?;
    check_spec_files(&spec, path, &text, base_dir)?;
    Ok(spec)
}

/// Checks the spec's files under `base_dir` (the data partition): the
/// kernel and initrd must be regular files, each disk a regular file or a
/// block device, distinct from the other disks, and the vsock socket path
/// short enough and not taken by anything but a socket. Symbolic links are
/// followed. `text` only locates errors, as for [`GuestSpec::validate`].
pub fn check_spec_files(
    spec: &GuestSpec,
    path: &Path,
    text: &str,
    base_dir: &Path,
) -> Result<(), ConfigError> {
    let at = Source::new(path, text);

    inspect(spec, base_dir, &spec.boot.kernel, Expect::Regular)
        .map_err(|m| at.error("boot.kernel", m))?;
    if let Some(initrd) = &spec.boot.initrd {
        inspect(spec, base_dir, initrd, Expect::Regular).map_err(|m| at.error("boot.initrd", m))?;
    }

    // Catches one image reached twice through different spellings,
    // absolute paths, links or two nodes for one block device.
    let mut seen: HashMap<(bool, u64, u64), usize> = HashMap::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let field = format!("disk[{i}].path");
        let meta = inspect(spec, base_dir, &disk.path, Expect::RegularOrBlock)
            .map_err(|m| at.error(&field, m))?;
        let key = if meta.file_type().is_block_device() {
            (true, meta.rdev(), 0)
        } else {
            (false, meta.dev(), meta.ino())
        };
        if let Some(first) = seen.insert(key, i) {
            return Err(at.error(
                &field,
                format!(
                    "`{}` is the same file as disk[{first}]",
                    spec.resolve(base_dir, &disk.path).display()
                ),
            ));
        }
    }

    if let Some(vsock) = &spec.vsock {
        check_socket_path(spec, base_dir, &vsock.uds_path)
            .map_err(|m| at.error("vsock.uds_path", m))?;
    }
    Ok(())
}

/// What a spec path must name.
#[derive(Clone, Copy)]
enum Expect {
    Regular,
    RegularOrBlock,
}

fn inspect(
    spec: &GuestSpec,
    base_dir: &Path,
    rel: &Path,
    expect: Expect,
) -> Result<Metadata, String> {
    // Repeated here for specs that did not come through parse.
    check_spec_path(rel)?;
    let full = spec.resolve(base_dir, rel);
    let meta = std::fs::metadata(&full).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => format!("`{}` does not exist", full.display()),
        _ => format!("cannot inspect `{}`: {err}", full.display()),
    })?;
    let kind = meta.file_type();
    let fits = match expect {
        Expect::Regular => kind.is_file(),
        Expect::RegularOrBlock => kind.is_file() || kind.is_block_device(),
    };
    if !fits {
        return Err(format!(
            "`{}` is {}, not {}",
            full.display(),
            describe(kind),
            match expect {
                Expect::Regular => "a regular file",
                Expect::RegularOrBlock => "a regular file or a block device",
            }
        ));
    }
    Ok(meta)
}

fn check_socket_path(spec: &GuestSpec, base_dir: &Path, rel: &Path) -> Result<(), String> {
    check_spec_path(rel)?;
    let full = spec.resolve(base_dir, rel);
    let len = full.as_os_str().len();
    if len > MAX_UDS_PATH_LEN {
        return Err(format!(
            "`{}` is {len} bytes long; a Unix socket path has at most {MAX_UDS_PATH_LEN}",
            full.display()
        ));
    }
    // A stale socket is normal (init removes it before the VMM starts);
    // anything else there is a mistake that must not be deleted.
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if !meta.file_type().is_socket() => Err(format!(
            "`{}` is {}, not a socket",
            full.display(),
            describe(meta.file_type())
        )),
        _ => Ok(()),
    }
}

/// "a directory", "a character device", ... for error messages.
fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "an unknown kind of file"
    }
}

#[cfg(test)]
mod tests;
