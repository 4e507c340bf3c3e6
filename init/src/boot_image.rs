//! The kernel inside the boot image: the appliance's UKI holds its kernel
//! in the `.linux` PE section. Copied out at boot, it is the demo guest's
//! kernel ("the same kernel is the default guest kernel"), so the image
//! need not carry a second copy.

use std::path::Path;

/// Where the UKI sits on the ESP.
pub const UKI_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Where the kernel is copied (tmpfs; see the demo guest's spec).
pub const GUEST_KERNEL: &str = "/run/keel/demo/vmlinuz";

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The bytes of PE section `name` (at most 8 bytes, NUL padded), or None
/// when `pe` is not a PE image or lacks the section. Every offset is
/// bounds-checked: the file comes from a FAT partition anyone can edit.
pub fn pe_section<'a>(pe: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if pe.get(..2)? != b"MZ" {
        return None;
    }
    let header = u32_at(pe, 0x3c)? as usize;
    if pe.get(header..header + 4)? != b"PE\0\0" {
        return None;
    }
    let coff = header + 4;
    let sections = usize::from(u16_at(pe, coff + 2)?);
    let optional = usize::from(u16_at(pe, coff + 16)?);
    let table = coff + 20 + optional;
    let mut wanted = [0u8; 8];
    let bytes = name.as_bytes();
    wanted.get_mut(..bytes.len())?.copy_from_slice(bytes);
    (0..sections).find_map(|i| {
        let entry = table + i * 40;
        if pe.get(entry..entry + 8)? != wanted {
            return None;
        }
        let virtual_size = u32_at(pe, entry + 8)? as usize;
        let raw_size = u32_at(pe, entry + 16)? as usize;
        let raw_at = u32_at(pe, entry + 20)? as usize;
        // The raw data is padded to the file alignment; the virtual size
        // is the real length when it is the smaller.
        let len = if virtual_size == 0 {
            raw_size
        } else {
            virtual_size.min(raw_size)
        };
        pe.get(raw_at..raw_at.checked_add(len)?)
    })
}

/// Copies the UKI's kernel from the mounted ESP to [`GUEST_KERNEL`].
pub fn extract_guest_kernel(esp: Option<&Path>) {
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
    let target = Path::new(GUEST_KERNEL);
    if let Some(dir) = target.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match keel_common::fsutil::atomic_write(target, kernel, 0o644) {
        Ok(()) => log::info!("guest kernel ready ({} KiB)", kernel.len() / 1024),
        Err(e) => log::warn!("cannot write {}: {e}", target.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE: DOS header, PE signature, COFF header, no optional
    /// header, and the given sections laid out after the table.
    fn pe(sections: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x40];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b.extend_from_slice(b"PE\0\0");
        let mut coff = [0u8; 20];
        coff[2..4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b.extend_from_slice(&coff);
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
    }

    #[test]
    fn hostile_images_give_none_not_a_panic() {
        assert_eq!(pe_section(b"", ".linux"), None);
        assert_eq!(pe_section(b"MZ", ".linux"), None);
        let mut image = pe(&[(".linux", b"KERNEL", 6)]);
        // Section data pointing past the end of the file.
        let entry = 0x40 + 4 + 20;
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
