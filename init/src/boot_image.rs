//! The kernel inside the boot image: the appliance's UKI holds its kernel
//! in the `.linux` PE section. Copied out at boot, it is the demo guest's
//! kernel ("the same kernel is the default guest kernel"), so the image
//! need not carry a second copy. It goes, with the demo's initramfs, to
//! the data partition's `images/keel-demo/`: a guest spec names no file
//! outside `images/` and `disks/`. The disk boot loader's initramfs goes
//! to `images/keel-loader/` the same way.

use std::path::Path;

use keel_common::guest::{LOADER_INITRD, LOADER_KERNEL};

use object::read::pe::PeFile64;
use object::{LittleEndian, Object};

/// Where the UKI sits on the ESP.
pub const UKI_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Where the demo guest's files go, beneath the data partition (see its
/// spec, rootfs/initramfs/usr/share/keel/demo/demo.toml).
pub const DEMO_DIR: &str = "images/keel-demo";
/// The demo's initramfs in the image, copied to [`DEMO_DIR`].
pub const DEMO_INITRD: &str = "/usr/share/keel/demo/initrd.cpio.zst";
/// The disk boot loader's initramfs in the image, copied to
/// `keel_common::guest::LOADER_INITRD` beneath the data partition, where
/// keel-vmm boots a `from = "disk"` guest with it and the appliance's
/// kernel (`LOADER_KERNEL`, a hard link to the demo's: the same kernel).
pub const LOADER_IMAGE_INITRD: &str = "/usr/share/keel/loader.cpio.zst";

/// The bytes of PE section `name`, or None when `pe` is not a PE32+ image
/// or lacks the section. Malformed offsets give None, never a panic: the
/// file comes from a FAT partition anyone can edit.
pub fn pe_section<'a>(pe: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let file = PeFile64::parse(pe).ok()?;
    let section = file.section_by_name(name)?;
    let header = section.pe_section();
    // The raw data is padded to the file alignment; the virtual size is the
    // real length when it is the smaller (`pe_data`), and is zero when the
    // linker left it out.
    if header.virtual_size.get(LittleEndian) == 0 {
        header.coff_data(pe).ok()
    } else {
        header.pe_data(pe).ok()
    }
}

/// Puts the demo guest's kernel (the UKI's, from the mounted ESP) and
/// initramfs into `<data>/`[`DEMO_DIR`].
pub fn install_demo_files(esp: Option<&Path>, data: &Path) {
    let dir = data.join(DEMO_DIR);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log::warn!(
            "cannot create {}: {e}; the demo guest has no files",
            dir.display()
        );
        return;
    }
    match std::fs::read(DEMO_INITRD) {
        Ok(initrd) => install(&dir.join("initrd.cpio.zst"), &initrd),
        Err(e) => log::warn!("cannot read {DEMO_INITRD}: {e}; the demo guest has no initrd"),
    }
    extract_guest_kernel(esp, &dir.join("vmlinuz"));
}

/// Puts the disk boot loader's initramfs and kernel where keel-vmm looks
/// for them (after [`install_demo_files`], whose kernel it links to).
pub fn install_loader_files(data: &Path) {
    let (initrd, kernel) = (data.join(LOADER_INITRD), data.join(LOADER_KERNEL));
    if let Some(dir) = initrd.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::warn!(
                "cannot create {}: {e}; guests cannot boot from their disks",
                dir.display()
            );
            return;
        }
    }
    match std::fs::read(LOADER_IMAGE_INITRD) {
        Ok(bytes) => install(&initrd, &bytes),
        Err(e) => {
            log::warn!(
                "cannot read {LOADER_IMAGE_INITRD}: {e}; guests cannot boot from their disks"
            )
        }
    }
    if let Err(e) = link_kernel(&data.join(DEMO_DIR).join("vmlinuz"), &kernel) {
        log::warn!(
            "cannot link {}: {e}; guests cannot boot from their disks",
            kernel.display()
        );
    }
}

/// Makes `link` a hard link to `kernel` unless it is one already (the
/// demo's kernel is rewritten, as a new file, when the image changes).
fn link_kernel(kernel: &Path, link: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(kernel)?;
    if std::fs::symlink_metadata(link)
        .is_ok_and(|m| (m.dev(), m.ino()) == (target.dev(), target.ino()))
    {
        return Ok(());
    }
    let _ = std::fs::remove_file(link);
    std::fs::hard_link(kernel, link)
}

/// Writes `bytes` to `target` unless it holds them already (the data
/// partition is not rewritten at every boot).
fn install(target: &Path, bytes: &[u8]) {
    if std::fs::read(target).is_ok_and(|old| old == bytes) {
        return;
    }
    match keel_sys::fsutil::atomic_write(target, bytes, 0o644) {
        Ok(()) => log::info!("{} ready ({} KiB)", target.display(), bytes.len() / 1024),
        Err(e) => log::warn!("cannot write {}: {e}", target.display()),
    }
}

/// Copies the UKI's kernel from the mounted ESP to `target`.
fn extract_guest_kernel(esp: Option<&Path>, target: &Path) {
    let Some(esp) = esp else {
        log::warn!("no ESP mounted: the demo guest has no kernel");
        return;
    };
    let uki = esp.join(UKI_PATH);
    let image = match std::fs::read(&uki) {
        Ok(b) => b,
        Err(e) => {
            log::warn!(
                "cannot read {}: {e}; the demo guest has no kernel",
                uki.display()
            );
            return;
        }
    };
    let Some(kernel) = pe_section(&image, ".linux") else {
        log::warn!(
            "{} has no .linux section; the demo guest has no kernel",
            uki.display()
        );
        return;
    };
    install(target, kernel);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of a PE32+ optional header without data directories.
    const OPTIONAL: usize = 0x70;

    /// A minimal PE32+: DOS header, PE signature, COFF header, an optional
    /// header without data directories, and the given sections laid out
    /// after the table.
    fn pe(sections: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x40];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(b"PE\0\0");
        let mut coff = [0u8; 20];
        coff[2..4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        coff[16..18].copy_from_slice(&(OPTIONAL as u16).to_le_bytes());
        b.extend_from_slice(&coff);
        let mut optional = [0u8; OPTIONAL];
        optional[..2].copy_from_slice(&0x20bu16.to_le_bytes());
        b.extend_from_slice(&optional);
        let mut data_at = b.len() + 40 * sections.len();
        let mut data = Vec::new();
        for (name, bytes, vsize) in sections {
            let mut entry = [0u8; 40];
            entry[..name.len()].copy_from_slice(name.as_bytes());
            entry[8..12].copy_from_slice(&vsize.to_le_bytes());
            entry[16..20].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
            entry[20..24].copy_from_slice(&(data_at as u32).to_le_bytes());
            b.extend_from_slice(&entry);
            data.extend_from_slice(bytes);
            data_at += bytes.len();
        }
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn finds_the_named_section_and_trims_padding() {
        let image = pe(&[(".osrel", b"ID=keel", 7), (".linux", b"KERNEL\0\0", 6)]);
        assert_eq!(pe_section(&image, ".linux"), Some(&b"KERNEL"[..]));
        assert_eq!(pe_section(&image, ".osrel"), Some(&b"ID=keel"[..]));
        assert_eq!(pe_section(&image, ".initrd"), None);
        // Without a virtual size the raw size is the length.
        let image = pe(&[(".linux", b"KERNEL", 0)]);
        assert_eq!(pe_section(&image, ".linux"), Some(&b"KERNEL"[..]));
    }

    #[test]
    fn hostile_images_give_none_not_a_panic() {
        assert_eq!(pe_section(b"", ".linux"), None);
        assert_eq!(pe_section(b"MZ", ".linux"), None);
        let mut image = pe(&[(".linux", b"KERNEL", 6)]);
        // Section data pointing past the end of the file.
        let entry = 0x40 + 4 + 20 + OPTIONAL;
        image[entry + 20..entry + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pe_section(&image, ".linux"), None);
        // A header offset past the end.
        let mut image = pe(&[]);
        image[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(pe_section(&image, ".linux"), None);
        // A name longer than a section name can be.
        assert_eq!(pe_section(&pe(&[]), ".verylongname"), None);
    }
}
