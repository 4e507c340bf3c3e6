//! Segment descriptors for the boot GDT.

use kvm_bindings::kvm_segment;

/// Packs a GDT entry from its flags (access byte and the flag nibble, as
/// `0xF0AA`), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let flags = flags as u64;
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The KVM segment register a GDT entry describes.
pub fn segment_from_entry(entry: u64, table_index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    // The CPU scales a page-granular limit; KVM wants the byte limit.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from(((entry >> 47) & 1) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_code_segment() {
        let entry = gdt_entry(0xa09b, 0, 0xfffff);
        let seg = segment_from_entry(entry, 1);
        assert_eq!(seg.selector, 8);
        assert_eq!(seg.type_, 0xb);
        assert_eq!((seg.present, seg.s, seg.l, seg.db, seg.g), (1, 1, 1, 0, 1));
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn base_and_limit_round_trip() {
        // Byte-granular (G clear), as a TSS descriptor with a small limit.
        let entry = gdt_entry(0x008b, 0x1234_5678, 0x67);
        let seg = segment_from_entry(entry, 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0x67);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.selector, 24);
    }

    #[test]
    fn null_entry_is_unusable() {
        assert_eq!(segment_from_entry(0, 0).unusable, 1);
    }
}
