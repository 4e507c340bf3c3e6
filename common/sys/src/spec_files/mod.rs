//! The checks of a guest spec against the file system: keel-common
//! validates what a spec says, this looks at what its paths name.

use std::collections::HashMap;
use std::fs::{File, FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keel_common::config::{load_toml, ConfigError, Source};
use keel_common::guest::{
    check_backing_path, check_disk_path, check_socket_path as check_socket_name, guest_file_parts,
    BootFrom, MAX_UDS_PATH_LEN, VSOCK_DIR,
};
use keel_common::GuestSpec;

use crate::beneath::{describe_error, open_beneath, open_dir};

/// Reads `path`, parses and validates it, and checks its files against
/// `base_dir` (the data partition), where `devices` are the host block
/// devices host.toml allow-lists.
pub fn load_guest_spec(
    path: &Path,
    base_dir: &Path,
    devices: &[PathBuf],
) -> Result<GuestSpec, ConfigError> {
    let (spec, text): (GuestSpec, String) = load_toml(path)?;
    spec.validate_with_devices(path, &text, devices)?;
    check_spec_files(&spec, path, &text, base_dir, devices)?;
    Ok(spec)
}

/// Opens a guest file of a spec (`rel` as the spec writes it) with `flags`:
/// a path beneath `base_dir`'s `images/` or `disks/` through
/// [`open_beneath`], so no `..` or symbolic link leads out of that
/// directory (a link inside it to a file inside it is followed); or an
/// absolute path listed in `devices`, which must be a block device.
pub fn open_guest_file(
    base_dir: &Path,
    rel: &Path,
    devices: &[PathBuf],
    flags: libc::c_int,
) -> Result<File, String> {
    if rel.is_absolute() {
        check_disk_path(rel, devices)?;
        let file = std::fs::OpenOptions::new()
            .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .custom_flags(flags & !libc::O_ACCMODE | libc::O_CLOEXEC)
            .open(rel)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::NotFound => format!("`{}` does not exist", rel.display()),
                _ => format!("cannot open `{}`: {err}", rel.display()),
            })?;
        let kind = file
            .metadata()
            .map_err(|err| format!("cannot inspect `{}`: {err}", rel.display()))?
            .file_type();
        if !kind.is_block_device() {
            return Err(format!(
                "`{}` is {}; an allow-listed host device must be a block device",
                rel.display(),
                describe(kind)
            ));
        }
        return Ok(file);
    }
    let (top, rest) = guest_file_parts(rel)?;
    let dir_path = base_dir.join(top);
    let dir = open_dir(&dir_path).map_err(|err| match err.raw_os_error() {
        Some(libc::ENOTDIR) | Some(libc::ELOOP) => format!(
            "`{}` is not a directory (a symbolic link there is refused)",
            dir_path.display()
        ),
        _ => format!("cannot open `{}`: {err}", dir_path.display()),
    })?;
    open_beneath(&dir, &rest, flags).map_err(|err| describe_error(&err, &base_dir.join(rel), top))
}

/// Checks the spec's files under `base_dir` (the data partition): the
/// kernel and initrd must be regular files, each disk a regular file or a
/// block device, distinct from the other disks, and the vsock socket path
/// short enough and not taken by anything but a socket. Files are looked at
/// through [`open_guest_file`] (`O_PATH`: nothing is read), so a link out
/// of `images/` or `disks/` is refused here already. `text` only locates
/// errors, as for [`GuestSpec::validate`].
pub fn check_spec_files(
    spec: &GuestSpec,
    path: &Path,
    text: &str,
    base_dir: &Path,
    devices: &[PathBuf],
) -> Result<(), ConfigError> {
    let at = Source::new(path, text);

    if let Some(kernel) = &spec.boot.kernel {
        inspect(base_dir, kernel, &[], Expect::Regular).map_err(|m| at.error("boot.kernel", m))?;
    }
    if let Some(initrd) = &spec.boot.initrd {
        inspect(base_dir, initrd, &[], Expect::Regular).map_err(|m| at.error("boot.initrd", m))?;
    }
    if spec.boot.from() == BootFrom::Disk {
        // The loader is the image's, put there by init at boot; a host
        // without it cannot boot such a guest, which is the spec's affair.
        let boot = spec.boot.kernel_boot();
        for file in boot.files() {
            inspect(base_dir, file, &[], Expect::Regular).map_err(|m| {
                at.error(
                    "boot.from",
                    format!("the disk boot loader is not on this host: {m}"),
                )
            })?;
        }
    }

    // Catches one image reached twice through different spellings,
    // links or two nodes for one block device.
    let mut seen: HashMap<(bool, u64, u64), usize> = HashMap::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let field = format!("disk[{i}].path");
        let meta = inspect(base_dir, &disk.path, devices, Expect::RegularOrBlock)
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

    // A backing file is read-only beneath its disk: a regular file in
    // images/ (a link out of it is refused as for any guest file), and
    // never one of the guest's disks under another name.
    for (i, disk) in spec.disks.iter().enumerate() {
        let Some(backing) = &disk.backing else {
            continue;
        };
        let field = format!("disk[{i}].backing");
        check_backing_path(backing).map_err(|m| at.error(&field, m))?;
        let meta =
            inspect(base_dir, backing, &[], Expect::Regular).map_err(|m| at.error(&field, m))?;
        if let Some(other) = seen.get(&(false, meta.dev(), meta.ino())) {
            return Err(at.error(
                &field,
                format!(
                    "`{}` is the same file as disk[{other}]; a backing file must not be a disk too",
                    spec.resolve(base_dir, backing).display()
                ),
            ));
        }
    }

    // The seed's files: read when init builds the seed, looked at here so
    // a spec that names a missing or oversized one is refused at once.
    for (kind, rel) in spec.cloud_init.iter().flat_map(|c| c.files()) {
        let meta =
            inspect(base_dir, rel, &[], Expect::Regular).map_err(|m| at.error(kind.field(), m))?;
        if meta.len() > kind.max_bytes() {
            return Err(at.error(
                kind.field(),
                format!(
                    "`{}` is {} bytes; a cloud-init file may be at most {}",
                    spec.resolve(base_dir, rel).display(),
                    meta.len(),
                    kind.max_bytes()
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
    base_dir: &Path,
    rel: &Path,
    devices: &[PathBuf],
    expect: Expect,
) -> Result<Metadata, String> {
    let full = if rel.is_absolute() {
        rel.to_path_buf()
    } else {
        base_dir.join(rel)
    };
    let meta = open_guest_file(base_dir, rel, devices, libc::O_PATH)?
        .metadata()
        .map_err(|err| format!("cannot inspect `{}`: {err}", full.display()))?;
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
    // Repeated here for specs that did not come through parse.
    check_socket_name(rel)?;
    let full = spec.resolve(base_dir, rel);
    let len = full.as_os_str().len();
    if len > MAX_UDS_PATH_LEN {
        return Err(format!(
            "`{}` is {len} bytes long; a Unix socket path has at most {MAX_UDS_PATH_LEN}",
            full.display()
        ));
    }
    // The VMM binds there and init removes a stale socket there: the
    // directory must be the data partition's own, not a link elsewhere.
    let dir = base_dir.join(VSOCK_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if !meta.file_type().is_dir() => {
            return Err(format!(
                "`{}` is {}, not a directory",
                dir.display(),
                describe(meta.file_type())
            ))
        }
        _ => {}
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
