//! The host end of a guest's vsock device is a Unix socket that the VMM
//! binds at `[vsock] uds_path` and removes when it exits cleanly. A VMM
//! that was killed leaves the socket behind, and the next VMM's bind would
//! fail: init removes it before starting the guest again.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use keel_common::GuestSpec;

/// Removes a socket left at `spec`'s vsock path, unless one of the
/// `running` guests' VMMs listens there. Anything but a socket is left
/// alone (the spec checks refuse it).
pub fn clear_stale<'a>(
    spec: &GuestSpec,
    data: &Path,
    running: impl IntoIterator<Item = &'a GuestSpec>,
) -> Result<(), String> {
    let Some(vsock) = &spec.vsock else {
        return Ok(());
    };
    let path = spec.resolve(data, &vsock.uds_path);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => meta,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    let same = |other: &GuestSpec| {
        other.vsock.as_ref().is_some_and(|v| {
            let theirs = other.resolve(data, &v.uds_path);
            theirs == path
                || std::fs::symlink_metadata(&theirs)
                    .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        })
    };
    if let Some(owner) = running.into_iter().find(|o| o.name != spec.name && same(o)) {
        return Err(format!(
            "{} is the vsock socket of running guest \"{}\"",
            path.display(),
            owner.name
        ));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            log::info!("removed the stale vsock socket {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove the stale {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> GuestSpec {
        let text = format!(
            "name = \"{name}\"\nvcpus = 1\nmemory_mib = 64\n[boot]\nkernel = \"images/k\"\n[vsock]\nuds_path = \"vsock/v.sock\"\n"
        );
        GuestSpec::parse(Path::new("g.toml"), &text).expect("spec")
    }

    #[test]
    fn a_running_guests_socket_and_other_files_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("vsock")).expect("mkdir");
        let sock = dir.path().join("vsock/v.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        let (a, b) = (spec("a"), spec("b"));
        let message = clear_stale(&b, dir.path(), [&a]).expect_err("a's socket");
        assert!(message.contains("running guest \"a\""), "{message}");
        assert!(sock.exists());
        // Its own leftover goes.
        clear_stale(&a, dir.path(), [&a]).expect("stale");
        assert!(!sock.exists());
        std::fs::write(&sock, "data").expect("file");
        clear_stale(&a, dir.path(), []).expect("not a socket");
        assert_eq!(std::fs::read_to_string(&sock).expect("kept"), "data");
    }
}
