//! Loading the guest kernel, initrd and command line, and the boot
//! structures that describe memory to it: the zero page (64-bit Linux boot
//! protocol) or `hvm_start_info` (PVH).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::vm::GuestFile;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::acpi::AcpiConfig;
use super::layout::*;
use super::regs::EntryMode;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Offset of the 64-bit entry point in a loaded bzImage.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

#[derive(Clone, Copy, Default)]
struct BootParams(boot_params);
// SAFETY: boot_params is plain old data (integers and arrays only), so any
// byte pattern is a valid value.
unsafe impl ByteValued for BootParams {}

#[derive(Clone, Copy, Default)]
struct StartInfo(hvm_start_info);
// SAFETY: hvm_start_info is plain old data.
unsafe impl ByteValued for StartInfo {}

// The guest reads these; the VMM only writes them.
#[allow(dead_code)]
#[derive(Clone, Copy, Default)]
struct MemmapEntry(hvm_memmap_table_entry);
// SAFETY: hvm_memmap_table_entry is plain old data.
unsafe impl ByteValued for MemmapEntry {}

#[allow(dead_code)]
#[derive(Clone, Copy, Default)]
struct ModlistEntry(hvm_modlist_entry);
// SAFETY: hvm_modlist_entry is plain old data.
unsafe impl ByteValued for ModlistEntry {}

/// A failure to load or describe the guest's boot payload.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load the kernel {path}: {source}")]
    Kernel {
        path: String,
        source: linux_loader::loader::Error,
    },
    #[error("the initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x}")]
    InitrdTooLarge { path: String, size: u64, limit: u64 },
    #[error("cannot read the initrd {path}: {source}")]
    Initrd {
        path: String,
        source: std::io::Error,
    },
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    #[error("cannot write boot structures to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error(transparent)]
    Acpi(#[from] super::acpi::AcpiError),
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootEntry {
    pub entry: u64,
    pub mode: EntryMode,
}

/// What to boot.
pub struct BootPayload<'a> {
    pub kernel: &'a GuestFile,
    pub initrd: Option<&'a GuestFile>,
    pub cmdline: &'a str,
    /// What the ACPI tables describe.
    pub acpi: AcpiConfig<'a>,
}

fn is_elf(file: &mut File) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(n == 4 && magic == *b"\x7fELF")
}

/// Loads everything into `mem` and returns the entry point.
pub fn load(mem: &GuestMemoryMmap, payload: &BootPayload) -> Result<BootEntry, BootError> {
    let kpath = payload.kernel.path.display().to_string();
    let mut kernel = reopen(payload.kernel).map_err(|source| BootError::Open {
        path: kpath.clone(),
        source,
    })?;
    let elf = is_elf(&mut kernel).map_err(|source| BootError::Open {
        path: kpath.clone(),
        source,
    })?;
    let himem = Some(GuestAddress(HIMEM_START));
    let loaded = if elf {
        Elf::load(mem, None, &mut kernel, himem)
    } else {
        BzImage::load(mem, himem, &mut kernel, himem)
    }
    .map_err(|source| BootError::Kernel {
        path: kpath,
        source,
    })?;

    let (entry, mode) = match (elf, loaded.pvh_boot_cap) {
        (true, PvhBootCapability::PvhEntryPresent(addr)) => (addr.0, EntryMode::Pvh),
        (true, _) => (loaded.kernel_load.0, EntryMode::LinuxBoot64),
        (false, _) => (
            loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
            EntryMode::LinuxBoot64,
        ),
    };

    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cmdline
        .insert_str(payload.cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_size = payload.cmdline.len() as u32 + 1;

    let max_initrd_end = loaded
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max) + 1)
        .unwrap_or(MMIO_HOLE_START);
    let initrd = match payload.initrd {
        Some(path) => Some(load_initrd(mem, path, loaded.kernel_end, max_initrd_end)?),
        None => None,
    };
    let rsdp = super::acpi::write_tables(mem, &payload.acpi)?;
    let ram = ram_ranges(
        mem.last_addr().0 + 1
            - if mem.num_regions() > 1 {
                MMIO_HOLE_END - MMIO_HOLE_START
            } else {
                0
            },
    );

    match mode {
        EntryMode::LinuxBoot64 => {
            let mut params = BootParams::default();
            if let Some(hdr) = loaded.setup_header {
                params.0.hdr = hdr;
            }
            params.0.hdr.type_of_loader = KERNEL_LOADER_OTHER;
            params.0.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.0.hdr.header = KERNEL_HDR_MAGIC;
            params.0.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
            params.0.hdr.cmd_line_ptr = CMDLINE_START as u32;
            params.0.hdr.cmdline_size = cmdline_size;
            if let Some((addr, size)) = initrd {
                params.0.hdr.ramdisk_image = addr as u32;
                params.0.hdr.ramdisk_size = size as u32;
            }
            params.0.acpi_rsdp_addr = rsdp;
            let entries = e820_entries(&ram);
            for (i, (addr, size, kind)) in entries.iter().enumerate() {
                params.0.e820_table[i] = boot_e820_entry {
                    addr: *addr,
                    size: *size,
                    r#type: *kind,
                };
            }
            params.0.e820_entries = entries.len() as u8;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))?;
        }
        EntryMode::Pvh => {
            let entries = e820_entries(&ram);
            for (i, (addr, size, kind)) in entries.iter().enumerate() {
                let entry = MemmapEntry(hvm_memmap_table_entry {
                    addr: *addr,
                    size: *size,
                    type_: *kind,
                    reserved: 0,
                });
                mem.write_obj(
                    entry,
                    GuestAddress(
                        PVH_MEMMAP_START + (i * std::mem::size_of::<MemmapEntry>()) as u64,
                    ),
                )?;
            }
            let mut info = StartInfo(hvm_start_info {
                magic: XEN_HVM_START_MAGIC_VALUE,
                version: 1,
                cmdline_paddr: CMDLINE_START,
                rsdp_paddr: rsdp,
                memmap_paddr: PVH_MEMMAP_START,
                memmap_entries: entries.len() as u32,
                ..Default::default()
            });
            if let Some((addr, size)) = initrd {
                let modlist = PVH_INFO_START + std::mem::size_of::<StartInfo>() as u64;
                mem.write_obj(
                    ModlistEntry(hvm_modlist_entry {
                        paddr: addr,
                        size,
                        ..Default::default()
                    }),
                    GuestAddress(modlist),
                )?;
                info.0.nr_modules = 1;
                info.0.modlist_paddr = modlist;
            }
            mem.write_obj(info, GuestAddress(PVH_INFO_START))?;
        }
    }
    Ok(BootEntry { entry, mode })
}

/// Copies a flat binary to `load_addr` and writes the ACPI tables; the
/// boot vCPU enters it in 32-bit protected mode.
pub fn load_flat(
    mem: &GuestMemoryMmap,
    code: &[u8],
    load_addr: u64,
    acpi: &AcpiConfig,
) -> Result<BootEntry, BootError> {
    mem.write_slice(code, GuestAddress(load_addr))?;
    super::acpi::write_tables(mem, acpi)?;
    Ok(BootEntry {
        entry: load_addr,
        mode: EntryMode::Pvh,
    })
}

/// Puts the initrd as high as possible below `limit`, page aligned, above
/// the kernel. Returns (address, size).
/// A descriptor of `file`'s own, read from its start.
fn reopen(file: &GuestFile) -> std::io::Result<File> {
    let mut own = file.file.try_clone()?;
    own.seek(SeekFrom::Start(0))?;
    Ok(own)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &GuestFile,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let name = initrd.path.display().to_string();
    let mut data = Vec::new();
    reopen(initrd)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(|source| BootError::Initrd {
            path: name.clone(),
            source,
        })?;
    let size = data.len() as u64;
    let top = limit.min(MMIO_HOLE_START).min(mem.last_addr().0 + 1);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end);
    let addr = addr.ok_or(BootError::InitrdTooLarge {
        path: name,
        size,
        limit: top,
    })?;
    mem.write_slice(&data, GuestAddress(addr))?;
    Ok((addr, size))
}

/// The e820 map: conventional memory, the reserved BIOS area holding the
/// ACPI tables, then RAM from 1 MiB (and above 4 GiB).
pub fn e820_entries(ram: &[(u64, u64)]) -> Vec<(u64, u64, u32)> {
    let mut entries = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, size) in ram {
        let begin = (*start).max(HIMEM_START);
        let end = start + size;
        if end > begin {
            entries.push((begin, end - begin, E820_RAM));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_reserves_the_bios_area_and_skips_the_hole() {
        let entries = e820_entries(&ram_ranges(6 << 30));
        assert_eq!(entries[0], (0, EBDA_START, E820_RAM));
        assert_eq!(entries[1].2, E820_RESERVED);
        assert_eq!(
            entries[2],
            (HIMEM_START, MMIO_HOLE_START - HIMEM_START, E820_RAM)
        );
        assert_eq!(entries[3], (MMIO_HOLE_END, 3 << 30, E820_RAM));
    }

    #[test]
    fn initrd_goes_high_and_refuses_to_overlap_the_kernel() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory");
        let path = std::env::temp_dir().join(format!("keel-initrd-test-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 5000]).expect("write");
        let initrd = GuestFile::open(&path, false).expect("open");
        let (addr, size) = load_initrd(&mem, &initrd, 2 << 20, u64::MAX).expect("fits");
        assert_eq!(size, 5000);
        assert_eq!(addr % 4096, 0);
        assert!(addr + size <= 16 << 20 && addr >= 15 << 20);
        assert!(matches!(
            load_initrd(&mem, &initrd, (16 << 20) - 100, u64::MAX),
            Err(BootError::InitrdTooLarge { .. })
        ));
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn garbage_kernel_is_an_error_not_a_panic() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).expect("memory");
        let path = std::env::temp_dir().join(format!("keel-kernel-test-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 4096]).expect("write");
        let kernel = GuestFile::open(&path, false).expect("open");
        let payload = BootPayload {
            kernel: &kernel,
            initrd: None,
            cmdline: "console=ttyS0",
            acpi: AcpiConfig {
                vcpus: 1,
                mem_bytes: 16 << 20,
                pci: false,
                mmio_devices: &[],
            },
        };
        assert!(matches!(
            load(&mem, &payload),
            Err(BootError::Kernel { .. })
        ));
        std::fs::remove_file(&path).expect("cleanup");
    }
}
