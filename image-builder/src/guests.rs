//! The guest initramfs images the appliance ships, each a tiny initramfs
//! whose `/init` is one static binary:
//! - the demo guest (`keel-demo-guest`), at [`DEMO_INITRD`];
//! - the disk boot loader (`keel-loader`), at [`LOADER_INITRD`], which
//!   keel-vmm boots a `from = "disk"` guest with.
//!
//! Both run the appliance's own kernel, which init copies out of the boot
//! image at boot; init also copies each initramfs to the data partition's
//! `images/` (see init/src/boot_image.rs), where guest specs name files.
//! So each guest costs the image only its initramfs.

use std::path::Path;

use crate::initramfs::{Node, Tree};
use crate::ImageError;

/// Where the demo initramfs sits in the appliance's root file system.
pub const DEMO_INITRD: &str = "usr/share/keel/demo/initrd.cpio.zst";
/// Where the disk boot loader's initramfs sits, beside the demo's.
pub const LOADER_INITRD: &str = "usr/share/keel/loader.cpio.zst";

/// Builds an initramfs with `binary` as `/init` into `scratch/<scratch_name>`
/// and adds it to the appliance tree at `target`.
fn add_init_initramfs(
    tree: &mut Tree,
    what: &str,
    binary: &Path,
    scratch: &Path,
    scratch_name: &str,
    target: &str,
    mtime: u32,
) -> Result<(), ImageError> {
    if !binary.is_file() {
        return Err(ImageError::Input(format!(
            "{}: {what} binary not found (build it first)",
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
    let path = scratch.join(scratch_name);
    std::fs::write(&path, bytes).map_err(|e| ImageError::io(&path, e))?;
    tree.insert(
        target,
        Node::File {
            source: path,
            executable: false,
        },
    );
    Ok(())
}

/// The demo guest's initramfs (`keel-demo-guest` as `/init`).
pub fn add_demo_guest(
    tree: &mut Tree,
    binary: &Path,
    scratch: &Path,
    mtime: u32,
) -> Result<(), ImageError> {
    add_init_initramfs(
        tree,
        "demo guest",
        binary,
        scratch,
        "demo-initrd.cpio.zst",
        DEMO_INITRD,
        mtime,
    )
}

/// The disk boot loader's initramfs (`keel-loader` as `/init`).
pub fn add_loader(
    tree: &mut Tree,
    binary: &Path,
    scratch: &Path,
    mtime: u32,
) -> Result<(), ImageError> {
    add_init_initramfs(
        tree,
        "disk boot loader",
        binary,
        scratch,
        "loader.cpio.zst",
        LOADER_INITRD,
        mtime,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_guest_lands_at_its_own_path() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("init-binary");
        std::fs::write(&binary, b"\x7fELF not really").unwrap();
        let mut tree = Tree::default();
        add_demo_guest(&mut tree, &binary, dir.path(), 0).unwrap();
        add_loader(&mut tree, &binary, dir.path(), 0).unwrap();
        let paths: Vec<&str> = tree.paths().collect();
        assert!(paths.contains(&DEMO_INITRD), "{paths:?}");
        assert!(paths.contains(&LOADER_INITRD), "{paths:?}");
        assert!(dir.path().join("demo-initrd.cpio.zst").is_file());
        let loader = std::fs::read(dir.path().join("loader.cpio.zst")).unwrap();
        // zstd frame magic: the same compression as the demo's.
        assert_eq!(&loader[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut tree = Tree::default();
        let err = add_loader(&mut tree, &dir.path().join("keel-loader"), dir.path(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keel-loader: disk boot loader binary not found"),
            "{err}"
        );
    }
}
