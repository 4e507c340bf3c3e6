//! The demo guest the image ships: a tiny initramfs whose init is
//! `keel-demo-guest`, installed at [`DEMO_INITRD`]. Its kernel is the
//! appliance's own, which init copies out of the boot image at boot (both
//! go to the data partition's `images/keel-demo/`, where the spec names
//! them), so the demo costs the image only this initramfs (see
//! rootfs/initramfs/usr/share/keel/demo/demo.toml).

use std::path::Path;

use crate::initramfs::{Node, Tree};
use crate::ImageError;

/// Where the demo initramfs sits in the appliance's root file system.
pub const DEMO_INITRD: &str = "usr/share/keel/demo/initrd.cpio.zst";

/// Builds the demo guest's initramfs (the binary as `/init`) into
/// `scratch` and adds it to the appliance tree.
pub fn add_demo_guest(
    tree: &mut Tree,
    binary: &Path,
    scratch: &Path,
    mtime: u32,
) -> Result<(), ImageError> {
    if !binary.is_file() {
        return Err(ImageError::Input(format!(
            "{}: demo guest binary not found (build it first)",
            binary.display()
        )));
    }
    let mut guest = Tree::skeleton();
    guest.insert(
        "init",
        Node::File {
            source: binary.to_path_buf(),
            executable: true,
        },
    );
    let bytes = guest.build(mtime)?;
    let path = scratch.join("demo-initrd.cpio.zst");
    std::fs::write(&path, bytes).map_err(|e| ImageError::io(&path, e))?;
    tree.insert(
        DEMO_INITRD,
        Node::File {
            source: path,
            executable: false,
        },
    );
    Ok(())
}
