//! The whole build, from inputs to `keel.img` and `keel.iso`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::esp::EspFile;
use crate::initramfs::{Node, Tree};
use crate::{data, disk, esp, iso, uki, ImageError};

/// The kernel command line baked into the UKI. `loglevel=3` keeps kernel
/// chatter and init's kmsg copies off the consoles; init prints its own.
pub const DEFAULT_CMDLINE: &str =
    "console=tty0 console=ttyS0,115200 loglevel=3 printk.devkmsg=on panic=10";

/// Default location of systemd's EFI stub (Debian's systemd-boot-efi).
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Size of the ESP in keel.img: room for two UKIs (A/B updates) and seeds.
const DISK_ESP_BYTES: u64 = 128 << 20;
/// Size of the KEEL-DATA partition as built; init grows it on first boot.
const DATA_BYTES: u64 = 64 << 20;

/// Debian's static e2fsck (package `e2fsck-static`): init checks
/// KEEL-DATA with it before mounting.
pub const E2FSCK_SOURCE: &str = "/sbin/e2fsck.static";
/// Where it goes in the initramfs (`keel_init::storage::E2FSCK`).
pub const E2FSCK_TARGET: &str = "usr/sbin/e2fsck";

/// The artefacts a build writes into its output directory.
pub const ARTEFACTS: [&str; 4] = ["initramfs.cpio.zst", "keel.efi", "keel.img", "keel.iso"];

/// Everything a build depends on.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub kernel: PathBuf,
    pub binaries: Vec<PathBuf>,
    /// `keel-demo-guest`, made into the demo guest's initramfs.
    pub demo_guest: Option<PathBuf>,
    /// `keel-loader`, made into the disk boot loader's initramfs.
    pub loader: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub stub: PathBuf,
    pub cmdline: String,
    pub epoch: u64,
    pub out: PathBuf,
}

fn write(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, data).map_err(|e| ImageError::io(path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::io(path, e))
}

/// Puts the host's static e2fsck at [`E2FSCK_TARGET`]; the build fails
/// when it is missing, since an image that cannot check its data
/// partition must not ship.
pub fn add_e2fsck(tree: &mut Tree, source: &Path) -> Result<(), ImageError> {
    if !source.is_file() {
        return Err(ImageError::Input(format!(
            "{} is missing: the image needs it to check the data partition at boot \
             (install the Debian package e2fsck-static, or run `make deps`)",
            source.display()
        )));
    }
    tree.insert(
        E2FSCK_TARGET,
        Node::File {
            source: source.to_path_buf(),
            executable: true,
        },
    );
    Ok(())
}

/// Builds every artefact into `args.out` and returns `(name, size, sha256)` for each.
pub fn build(args: &BuildOptions) -> Result<Vec<(String, u64, String)>, ImageError> {
    let scratch = args.out.join("build");
    std::fs::create_dir_all(&scratch).map_err(|e| ImageError::io(&scratch, e))?;

    // 1. initramfs
    let mut tree = Tree::skeleton();
    tree.add_host_tree(&args.rootfs.join("initramfs"))?;
    let mut have_init = false;
    for binary in &args.binaries {
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ImageError::Input(format!("{}: not a file name", binary.display())))?;
        if !binary.is_file() {
            return Err(ImageError::Input(format!(
                "{}: binary not found (build it first)",
                binary.display()
            )));
        }
        have_init |= name == "keel-init";
        tree.insert(
            &format!("usr/bin/{name}"),
            Node::File {
                source: binary.clone(),
                executable: true,
            },
        );
    }
    if !have_init {
        return Err(ImageError::Input("--binary must include keel-init".into()));
    }
    add_e2fsck(&mut tree, Path::new(E2FSCK_SOURCE))?;
    tree.insert("init", Node::Symlink("usr/bin/keel-init".into()));
    let mtime = u32::try_from(args.epoch)
        .map_err(|_| ImageError::Input("SOURCE_DATE_EPOCH is past 2106".into()))?;
    if let Some(demo) = &args.demo_guest {
        crate::guests::add_demo_guest(&mut tree, demo, &scratch, mtime)?;
    }
    if let Some(loader) = &args.loader {
        crate::guests::add_loader(&mut tree, loader, &scratch, mtime)?;
    }
    let initramfs = tree.build(mtime)?;
    let initramfs_path = args.out.join("initramfs.cpio.zst");
    write(&initramfs_path, &initramfs)?;

    // 2. unified kernel image
    let cmdline_path = scratch.join("cmdline");
    write(&cmdline_path, args.cmdline.as_bytes())?;
    let os_release = args.rootfs.join("initramfs/etc/os-release");
    let uki_path = args.out.join("keel.efi");
    uki::build(
        &args.stub,
        &args.kernel,
        &initramfs_path,
        &cmdline_path,
        &os_release,
        &uki_path,
        mtime,
    )?;
    let uki_bytes = read(&uki_path)?;

    // 3. ESP contents: the UKI plus the seed configuration.
    let seed_root = args.rootfs.join("esp");
    let mut seed = Tree::default();
    seed.add_host_tree(&seed_root)?;
    let mut seed_files: Vec<(String, Vec<u8>)> = Vec::new();
    for path in seed.paths() {
        let full = seed_root.join(path);
        if full.is_file() {
            seed_files.push((path.to_string(), read(&full)?));
        }
    }
    let mut files = vec![EspFile {
        path: "EFI/BOOT/BOOTX64.EFI",
        data: &uki_bytes,
    }];
    files.extend(seed_files.iter().map(|(p, d)| EspFile { path: p, data: d }));
    // The GUID's first field: its first four bytes on disk, little endian.
    let volume_id = crate::reproducible::derived_guid("esp-volume", args.epoch)
        .as_fields()
        .0;

    // 4. keel.img
    let disk_esp = esp::build(DISK_ESP_BYTES, true, volume_id, args.epoch, &files)?;
    let data_path = scratch.join("data.ext4");
    data::build(&data_path, DATA_BYTES, args.epoch)?;
    let data_fs = read(&data_path)?;
    let img_path = args.out.join("keel.img");
    disk::write(
        &img_path,
        args.epoch,
        &[
            disk::Partition {
                name: "KEEL-ESP",
                type_guid: disk::ESP_TYPE,
                contents: &disk_esp,
            },
            disk::Partition {
                name: "KEEL-DATA",
                type_guid: disk::LINUX_FS_TYPE,
                contents: &data_fs,
            },
        ],
    )?;

    // 5. keel.iso, with an ESP just big enough for its files.
    let payload: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let iso_esp = esp::build(esp::size_for(payload), false, volume_id, args.epoch, &files)?;
    let iso_esp_path = scratch.join("esp-iso.img");
    write(&iso_esp_path, &iso_esp)?;
    let iso_root = scratch.join("iso-root");
    let _ = std::fs::remove_dir_all(&iso_root);
    std::fs::create_dir_all(&iso_root).map_err(|e| ImageError::io(&iso_root, e))?;
    write(
        &iso_root.join("README.TXT"),
        b"Keel hypervisor appliance. The EFI system partition holds the boot image.\n",
    )?;
    let iso_path = args.out.join("keel.iso");
    iso::build(&iso_path, &iso_root, &iso_esp_path, args.epoch)?;

    // 6. Checksums, so two builds can be compared at a glance.
    let mut sums = String::new();
    let mut report = Vec::new();
    for name in ARTEFACTS {
        let bytes = read(&args.out.join(name))?;
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        sums.push_str(&format!("{hex}  {name}\n"));
        report.push((name.to_string(), bytes.len() as u64, hex));
    }
    write(&args.out.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2fsck_goes_to_usr_sbin_and_a_missing_one_fails_the_build() {
        let mut tree = Tree::default();
        let err = add_e2fsck(&mut tree, Path::new("/nonexistent/e2fsck.static"))
            .expect_err("missing e2fsck");
        let message = err.to_string();
        assert!(message.contains("e2fsck-static"), "{message}");
        assert!(!tree.paths().any(|p| p == E2FSCK_TARGET));

        // Any existing file stands in for the binary.
        let fake = std::env::temp_dir().join(format!("keel-e2fsck-{}", std::process::id()));
        std::fs::write(&fake, b"\x7fELF").expect("write");
        add_e2fsck(&mut tree, &fake).expect("present");
        let _ = std::fs::remove_file(&fake);
        assert!(tree.paths().any(|p| p == E2FSCK_TARGET));
        assert!(tree.paths().any(|p| p == "usr/sbin"));
    }
}
