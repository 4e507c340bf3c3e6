//! Checks on the built artefacts themselves: layout, size budget, kernel
//! configuration and byte-for-byte reproducibility.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use gptman::GPT;
use keel_image::pipeline::{build, BuildOptions, DEFAULT_CMDLINE, DEFAULT_STUB};
use keel_ovmf_tests::{artefact, repo_root};

const MIB: u64 = 1 << 20;

fn guid(text: &str) -> [u8; 16] {
    keel_image::reproducible::guid_from_str(text).expect("valid GUID")
}

fn read_at(path: &PathBuf, offset: u64, len: usize) -> Vec<u8> {
    let mut file = File::open(path).expect("open");
    file.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).expect("read");
    buf
}

#[test]
fn disk_image_has_an_esp_with_the_uki_and_seed_and_an_ext4_data_partition() {
    let img = artefact("keel.img");
    let mut file = File::open(&img).expect("open keel.img");
    let gpt = GPT::find_from(&mut file).expect("keel.img has a valid GPT");
    let esp = &gpt[1];
    let data = &gpt[2];
    assert_eq!(esp.partition_name.as_str(), "KEEL-ESP");
    assert_eq!(esp.partition_type_guid, guid(keel_image::disk::ESP_TYPE));
    assert_eq!(data.partition_name.as_str(), "KEEL-DATA");
    assert_eq!(
        data.partition_type_guid,
        guid(keel_image::disk::LINUX_FS_TYPE)
    );
    assert_eq!(esp.starting_lba * 512 % MIB, 0, "ESP is 1 MiB aligned");

    let esp_bytes = read_at(
        &img,
        esp.starting_lba * 512,
        ((esp.ending_lba - esp.starting_lba + 1) * 512) as usize,
    );
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(esp_bytes), fatfs::FsOptions::new())
        .expect("ESP is FAT");
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(fs.volume_label(), "KEEL-ESP");
    let mut uki = Vec::new();
    fs.root_dir()
        .open_file("EFI/BOOT/BOOTX64.EFI")
        .expect("UKI present")
        .read_to_end(&mut uki)
        .expect("read UKI");
    assert_eq!(
        uki,
        std::fs::read(artefact("keel.efi")).expect("read keel.efi"),
        "ESP holds the built UKI"
    );
    for seed in ["keel/host.toml", "keel/authorized_keys"] {
        fs.root_dir()
            .open_file(seed)
            .unwrap_or_else(|e| panic!("{seed} missing from the ESP: {e}"));
    }

    let superblock = read_at(&img, data.starting_lba * 512 + 1024, 1024);
    assert_eq!(
        u16::from_le_bytes([superblock[56], superblock[57]]),
        0xEF53,
        "KEEL-DATA is ext4"
    );
    assert_eq!(&superblock[120..129], b"KEEL-DATA");
}

#[test]
fn iso_is_hybrid_el_torito_efi_plus_gpt() {
    let iso = artefact("keel.iso");
    let boot_record = read_at(&iso, 17 * 2048, 64);
    assert_eq!(&boot_record[1..6], b"CD001");
    assert!(
        boot_record
            .windows(23)
            .any(|w| w == b"EL TORITO SPECIFICATION"),
        "no El Torito boot record"
    );
    let mut file = File::open(&iso).expect("open keel.iso");
    let gpt = GPT::find_from(&mut file).expect("keel.iso has a GPT for USB boot");
    assert!(
        gpt.iter()
            .any(|(_, p)| p.is_used() && p.partition_type_guid == guid(keel_image::disk::ESP_TYPE)),
        "the ISO's GPT has no EFI system partition"
    );
}

#[test]
fn compressed_iso_fits_the_24_mib_budget() {
    let iso = std::fs::read(artefact("keel.iso")).expect("read keel.iso");
    let compressed = zstd::stream::encode_all(iso.as_slice(), 19).expect("compress");
    eprintln!(
        "keel.iso: {:.2} MiB, {:.2} MiB compressed; kernel {:.2} MiB, initramfs {:.2} MiB",
        iso.len() as f64 / MIB as f64,
        compressed.len() as f64 / MIB as f64,
        std::fs::metadata(artefact("kernel/bzImage"))
            .expect("kernel")
            .len() as f64
            / MIB as f64,
        std::fs::metadata(artefact("initramfs.cpio.zst"))
            .expect("initramfs")
            .len() as f64
            / MIB as f64,
    );
    assert!(
        compressed.len() as u64 <= 24 * MIB,
        "compressed ISO is {} bytes, over 24 MiB",
        compressed.len()
    );
}

#[test]
fn kernel_config_applies_the_whole_fragment_and_has_no_modules() {
    let config = std::fs::read_to_string(artefact("kernel/config")).expect("read kernel config");
    let fragment = std::fs::read_to_string(repo_root().join("kernel-config/keel.config"))
        .expect("read fragment");
    assert!(
        !config.lines().any(|l| l == "CONFIG_MODULES=y"),
        "the kernel has loadable modules enabled"
    );
    let mut checked = 0;
    for line in fragment.lines().filter(|l| l.starts_with("CONFIG_")) {
        assert!(
            config.lines().any(|l| l == line),
            "{line} is not in the built kernel's config"
        );
        checked += 1;
    }
    assert!(
        checked > 100,
        "only {checked} options checked: is the fragment complete?"
    );
}

#[test]
fn building_twice_gives_identical_bytes() {
    let root = repo_root();
    let init = root.join("target/x86_64-unknown-linux-gnu/release/keel-init");
    assert!(
        init.exists(),
        "{} is missing: run `make image`",
        init.display()
    );
    let base = std::env::temp_dir().join(format!("keel-repro-{}", std::process::id()));
    let demo = root.join("target/x86_64-unknown-linux-gnu/release/keel-demo-guest");
    let loader = root.join("target/x86_64-unknown-linux-gnu/release/keel-loader");
    let options = |dir: &str| BuildOptions {
        kernel: artefact("kernel/bzImage"),
        binaries: vec![init.clone()],
        demo_guest: Some(demo.clone()),
        loader: Some(loader.clone()),
        rootfs: root.join("rootfs"),
        stub: PathBuf::from(DEFAULT_STUB),
        cmdline: DEFAULT_CMDLINE.to_string(),
        epoch: 1_700_000_000,
        out: base.join(dir),
    };
    let first = build(&options("a")).expect("first build");
    let second = build(&options("b")).expect("second build");
    assert_eq!(first.len(), 4);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(
            a, b,
            "{} differs between two builds of the same inputs",
            a.0
        );
    }
    // A different SOURCE_DATE_EPOCH must change the bytes: the epoch is really used.
    let mut later = options("c");
    later.epoch += 86_400;
    let third = build(&later).expect("third build");
    assert_ne!(first[3].2, third[3].2, "keel.iso ignores SOURCE_DATE_EPOCH");
    std::fs::remove_dir_all(&base).expect("clean up");
}
