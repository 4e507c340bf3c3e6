//! Harness for booting Keel's images in QEMU with OVMF and driving them as
//! an operator would: serial console capture, the QEMU monitor, and clean
//! teardown even when a test fails.

pub mod accel;
pub mod operator;
pub mod qemu;
pub mod testbed;

use std::path::PathBuf;

pub use accel::{Accel, AccelChoice};
pub use qemu::{BootMedia, Qemu, QemuOptions};

/// The repository root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A built artefact in `out/`, or a panic telling how to build it: image
/// tests must never pass because there was nothing to test.
pub fn artefact(name: &str) -> PathBuf {
    let path = repo_root().join("out").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `make image` (make test does this first)",
        path.display()
    );
    path
}
