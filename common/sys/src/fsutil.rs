//! File-system helpers shared by everything that writes to the data
//! partition: every write there is atomic (temp file, fsync, rename, fsync
//! of the directory), so a power cut leaves either the old file or the new
//! one, never a torn mix.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A small text file (a sysfs attribute, `/proc/sys/...`) without its
/// surrounding whitespace, or `None` when it cannot be read.
pub fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Tells temp files of one process apart.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many unique names are tried before giving up.
const TEMP_ATTEMPTS: u32 = 16;

/// Replaces `path` with `bytes`, atomically and durably, with permission
/// bits `mode` (not subject to the umask).
///
/// A temp file is created next to the target (same directory, so the rename
/// cannot cross file systems) with `O_EXCL`, written in full and fsynced,
/// then renamed over the target, and the directory is fsynced so the rename
/// itself survives a power cut. On any failure before the rename the temp
/// file is removed and the old file is left as it was. A failure of the
/// final directory fsync is reported although the new content is in place.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (temp_path, file) = create_temp(&dir, &name.to_string_lossy(), mode)?;
    let written =
        write_and_sync(file, bytes, mode).and_then(|()| std::fs::rename(&temp_path, path));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp_path);
        return Err(err);
    }
    File::open(&dir)?.sync_all()
}

/// Creates a fresh temp file in `dir` with a name no other writer uses.
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(PathBuf, File)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last_err = None;
    for _ in 0..TEMP_ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.tmp-{}-{n}-{nanos:x}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last_err = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no unique temp file name")))
}

fn write_and_sync(mut file: File, bytes: &[u8], mode: u32) -> io::Result<()> {
    // The umask may have cleared bits of `mode` at creation.
    file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A scratch directory; the `TempDir`, held only for its drop, removes it.
    struct Scratch(PathBuf, #[allow(dead_code)] tempfile::TempDir);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix(&format!("keel-fsutil-{tag}-"))
                .tempdir()
                .expect("mkdir scratch");
            Scratch(dir.path().to_path_buf(), dir)
        }
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn creates_then_replaces_with_the_mode_asked() {
        let scratch = Scratch::new("replace");
        let target = scratch.0.join("host.toml");
        atomic_write(&target, b"first\n", 0o600).expect("create");
        assert_eq!(std::fs::read(&target).expect("read"), b"first\n");
        let mode = std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        atomic_write(&target, b"second\n", 0o644).expect("replace");
        assert_eq!(std::fs::read(&target).expect("read"), b"second\n");
        let mode = std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(temp_files(&scratch.0).is_empty());
    }

    #[test]
    fn empty_content_and_many_writes_leave_no_temp_files() {
        let scratch = Scratch::new("many");
        let target = scratch.0.join("f");
        for i in 0..50 {
            atomic_write(&target, format!("{i}").as_bytes(), 0o644).expect("write");
        }
        atomic_write(&target, b"", 0o644).expect("empty");
        assert_eq!(std::fs::read(&target).expect("read"), b"");
        assert!(temp_files(&scratch.0).is_empty());
    }

    #[test]
    fn a_failed_rename_onto_a_directory_keeps_it_and_leaves_no_temp_file() {
        let scratch = Scratch::new("ontodir");
        let target = scratch.0.join("guests");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("web1.toml"), b"old").expect("write");
        let err = atomic_write(&target, b"new", 0o644).expect_err("rename onto a directory");
        // EISDIR, or ENOTEMPTY on some file systems.
        assert!(matches!(err.raw_os_error(), Some(21 | 39)), "{err}");
        assert_eq!(
            std::fs::read(target.join("web1.toml")).expect("old content"),
            b"old"
        );
        assert!(
            temp_files(&scratch.0).is_empty(),
            "{:?}",
            temp_files(&scratch.0)
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_without_side_effects() {
        let scratch = Scratch::new("nodir");
        let target = scratch.0.join("absent/f");
        assert!(atomic_write(&target, b"x", 0o644).is_err());
        assert!(!scratch.0.join("absent").exists());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = atomic_write(Path::new("/"), b"x", 0o644).expect_err("no file name");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A write that fails half way (the file system is full) keeps the old
    /// file and removes the temp file. Needs root for a tiny tmpfs; as an
    /// ordinary user the directory is made read-only instead, which only
    /// stops non-root writers.
    #[test]
    fn a_failed_write_keeps_the_old_content_and_leaves_no_temp_file() {
        let scratch = Scratch::new("full");
        let is_root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        let target = scratch.0.join("host.toml");
        if is_root {
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
                .arg(&scratch.0)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !mounted {
                eprintln!("SKIPPED: the full-disk write test because mounting a tmpfs failed");
                return;
            }
            let result = std::panic::catch_unwind(|| {
                std::fs::write(&target, b"old content\n").expect("old");
                let big = vec![0x5a; 1 << 20];
                let err = atomic_write(&target, &big, 0o644).expect_err("ENOSPC");
                assert_eq!(err.raw_os_error(), Some(28), "{err}");
                assert_eq!(std::fs::read(&target).expect("read"), b"old content\n");
                assert!(
                    temp_files(&scratch.0).is_empty(),
                    "{:?}",
                    temp_files(&scratch.0)
                );
            });
            let _ = Command::new("umount").arg(&scratch.0).status();
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        } else {
            std::fs::write(&target, b"old content\n").expect("old");
            std::fs::set_permissions(&scratch.0, Permissions::from_mode(0o555)).expect("chmod");
            let err = atomic_write(&target, b"new", 0o644);
            std::fs::set_permissions(&scratch.0, Permissions::from_mode(0o755)).expect("chmod");
            assert!(err.is_err());
            assert_eq!(std::fs::read(&target).expect("read"), b"old content\n");
            assert!(temp_files(&scratch.0).is_empty());
        }
    }
}
