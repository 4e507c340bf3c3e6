//! Harness for booting Keel's images in QEMU with OVMF and driving them as
//! an operator would: serial console capture, the QEMU monitor, and clean
//! teardown even when a test fails.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Where the first line of `text` containing `needle` starts, and where it
/// ends if it is complete (a newline follows; the end excludes it). Console
/// output arrives in pieces, so the rest of a line may still be in flight.
pub fn find_line(text: &str, needle: &str) -> Option<(usize, Option<usize>)> {
    let at = text.find(needle)?;
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map(|i| at + i);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::find_line;

    #[test]
    fn lines_are_whole_or_reported_unfinished() {
        let text = "boot\r\ndemo: eth0 got 10.0.2.16\r\ndemo: eth1 go";
        assert_eq!(find_line(text, "eth0"), Some((6, Some(31))));
        assert_eq!(&text[6..31], "demo: eth0 got 10.0.2.16\r");
        assert_eq!(find_line(text, "eth1"), Some((32, None)));
        assert_eq!(find_line(text, "eth2"), None);
    }
}
