//! The unified kernel image: systemd's EFI stub with the kernel, initramfs,
//! command line and os-release added as PE sections, so one signed file
//! boots the whole appliance.

use std::mem::offset_of;
use std::path::Path;
use std::process::Command;

use object::pe::{ImageDosHeader, ImageFileHeader, ImageNtHeaders64, ImageOptionalHeader64};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};

use crate::ImageError;

/// Where the stub's image ends and how its sections are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeLayout {
    pub image_base: u64,
    pub section_alignment: u64,
    pub size_of_image: u64,
}

/// The file offset and NT headers of a PE32+ image.
fn nt_headers(bytes: &[u8]) -> object::Result<(usize, &ImageNtHeaders64)> {
    let offset = ImageDosHeader::parse(bytes)?.nt_headers_offset();
    let mut at = u64::from(offset);
    let (headers, _) = ImageNtHeaders64::parse(bytes, &mut at)?;
    Ok((offset as usize, headers))
}

/// Reads the PE32+ optional header fields that place new sections.
pub fn pe_layout(bytes: &[u8]) -> Result<PeLayout, ImageError> {
    let (_, headers) = nt_headers(bytes)
        .map_err(|e| ImageError::Input(format!("the EFI stub is not a PE32+ image: {e}")))?;
    let optional = headers.optional_header();
    Ok(PeLayout {
        image_base: optional.image_base(),
        section_alignment: u64::from(optional.section_alignment()),
        size_of_image: u64::from(optional.size_of_image()),
    })
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

/// Section name, file and virtual address for each added section, placed
/// one after another past the stub's own image.
pub fn section_plan(layout: PeLayout, sections: &[(&str, u64)]) -> Vec<(String, u64)> {
    let align = layout.section_alignment.max(0x1000);
    let mut next = align_up(layout.image_base + layout.size_of_image, align);
    sections
        .iter()
        .map(|(name, size)| {
            let vma = next;
            next = align_up(vma + size, align);
            (name.to_string(), vma)
        })
        .collect()
}

/// Sets the COFF timestamp (objcopy writes the current time there and
/// ignores SOURCE_DATE_EPOCH) and recomputes the PE checksum to match.
pub fn stamp(bytes: &mut [u8], epoch: u32) -> Result<(), ImageError> {
    let (pe, _) = nt_headers(bytes)
        .map_err(|e| ImageError::Input(format!("the UKI is not a PE32+ image: {e}")))?;
    let timestamp = pe
        + offset_of!(ImageNtHeaders64, file_header)
        + offset_of!(ImageFileHeader, time_date_stamp);
    let checksum = pe
        + offset_of!(ImageNtHeaders64, optional_header)
        + offset_of!(ImageOptionalHeader64, check_sum);
    // Both lie inside the headers just parsed.
    bytes[timestamp..timestamp + 4].copy_from_slice(&epoch.to_le_bytes());
    bytes[checksum..checksum + 4].fill(0);
    let sum = pe_checksum(bytes, checksum);
    bytes[checksum..checksum + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The PE image checksum: a folded 16-bit sum of the file, skipping the
/// checksum field, plus the file length.
pub fn pe_checksum(bytes: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in bytes.chunks(2).enumerate() {
        let offset = i * 2;
        if offset == checksum_offset || offset == checksum_offset + 2 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// Builds the UKI at `out` with objcopy.
pub fn build(
    stub: &Path,
    kernel: &Path,
    initramfs: &Path,
    cmdline: &Path,
    os_release: &Path,
    out: &Path,
    epoch: u32,
) -> Result<(), ImageError> {
    let stub_bytes = std::fs::read(stub).map_err(|e| ImageError::io(stub, e))?;
    let layout = pe_layout(&stub_bytes)?;
    let files = [
        (".osrel", os_release),
        (".cmdline", cmdline),
        (".linux", kernel),
        (".initrd", initramfs),
    ];
    let mut sizes = Vec::new();
    for (name, path) in files {
        let size = std::fs::metadata(path)
            .map_err(|e| ImageError::io(path, e))?
            .len();
        sizes.push((name, size));
    }
    let mut cmd = Command::new("objcopy");
    for ((name, vma), (_, path)) in section_plan(layout, &sizes).into_iter().zip(files) {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", path.display()));
        cmd.arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
    }
    cmd.arg(stub).arg(out);
    crate::run_tool(&mut cmd)?;
    let mut bytes = std::fs::read(out).map_err(|e| ImageError::io(out, e))?;
    stamp(&mut bytes, epoch)?;
    std::fs::write(out, &bytes).map_err(|e| ImageError::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// A PE32+ header with an optional header without data directories.
    fn fake_pe(base: u64, align: u32, size: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        // SizeOfOptionalHeader.
        b[0x80 + 4 + 16..0x80 + 4 + 18].copy_from_slice(&0x70u16.to_le_bytes());
        let opt = 0x80 + 24;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 24..opt + 32].copy_from_slice(&base.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&align.to_le_bytes());
        b[opt + 56..opt + 60].copy_from_slice(&size.to_le_bytes());
        b
    }

    #[test]
    fn reads_layout_and_places_sections_past_the_image() {
        let layout = pe_layout(&fake_pe(0x1_0000_0000, 0x1000, 0x1_2345)).expect("valid");
        let plan = section_plan(layout, &[(".osrel", 10), (".linux", 0x3000)]);
        assert_eq!(plan[0], (".osrel".to_string(), 0x1_0001_3000));
        assert_eq!(plan[1], (".linux".to_string(), 0x1_0001_4000));
    }

    #[test]
    fn stamp_sets_the_timestamp_and_a_matching_checksum() {
        let mut a = fake_pe(0, 0x1000, 0x1000);
        let mut b = a.clone();
        b[0x88..0x8c].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        stamp(&mut a, 42).expect("stamp a");
        stamp(&mut b, 42).expect("stamp b");
        assert_eq!(a, b, "the old timestamp no longer matters");
        assert_eq!(read_u32(&a, 0x88), Some(42));
        let checksum_at = 0x80 + 24 + 64;
        assert_eq!(
            read_u32(&a, checksum_at),
            Some(pe_checksum(&a, checksum_at))
        );
        assert_ne!(read_u32(&a, checksum_at), Some(0));
    }

    #[test]
    fn refuses_what_is_not_pe32_plus() {
        assert!(pe_layout(b"not a PE").is_err());
        let mut pe = fake_pe(0, 0x1000, 0x1000);
        pe[0x80 + 24] = 0x0b; // PE32 magic 0x10b
        pe[0x80 + 25] = 0x01;
        assert!(pe_layout(&pe).is_err());
        assert!(pe_layout(&fake_pe(0, 0x1000, 0x1000)[..0x90]).is_err());
    }
}
