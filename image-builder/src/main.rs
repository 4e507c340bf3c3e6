//! keel-image command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use keel_image::esp::EspFile;
use keel_image::initramfs::{Node, Tree};
use keel_image::{data, disk, esp, iso, uki, ImageError};
use sha2::{Digest, Sha256};

/// The kernel command line baked into the UKI. `loglevel=3` keeps kernel
/// chatter and init's kmsg copies off the consoles; init prints its own.
const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 loglevel=3 printk.devkmsg=on panic=10";

/// Size of the ESP in keel.img: room for two UKIs (A/B updates) and seeds.
const DISK_ESP_BYTES: u64 = 128 << 20;
/// Size of the KEEL-DATA partition as built; init grows it on first boot.
const DATA_BYTES: u64 = 64 << 20;

#[derive(Parser)]
#[command(version, about = "Builds Keel's initramfs, UKI, disk image and hybrid ISO, reproducibly.")]
struct Args {
    /// The kernel bzImage (with the EFI stub).
    #[arg(long)]
    kernel: PathBuf,
    /// A binary to install in /usr/bin; repeat. keel-init is required.
    #[arg(long = "binary", required = true)]
    binaries: Vec<PathBuf>,
    /// Static files: `initramfs/` goes into the root file system and `esp/`
    /// onto the ESP.
    #[arg(long, default_value = "rootfs")]
    rootfs: PathBuf,
    /// systemd's EFI stub.
    #[arg(long, default_value = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub")]
    stub: PathBuf,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Timestamp for every file and identifier (defaults to SOURCE_DATE_EPOCH, else 0).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    epoch: u64,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match build(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keel-image: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, data).map_err(|e| ImageError::io(path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::io(path, e))
}

fn build(args: &Args) -> Result<(), ImageError> {
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
            return Err(ImageError::Input(format!("{}: binary not found (build it first)", binary.display())));
        }
        have_init |= name == "keel-init";
        tree.insert(&format!("usr/bin/{name}"), Node::File { source: binary.clone(), executable: true });
    }
    if !have_init {
        return Err(ImageError::Input("--binary must include keel-init".into()));
    }
    tree.insert("init", Node::Symlink("usr/bin/keel-init".into()));
    let mtime = u32::try_from(args.epoch).map_err(|_| ImageError::Input("SOURCE_DATE_EPOCH is past 2106".into()))?;
    let initramfs = tree.build(mtime)?;
    let initramfs_path = args.out.join("initramfs.cpio.zst");
    write(&initramfs_path, &initramfs)?;

    // 2. unified kernel image
    let cmdline_path = scratch.join("cmdline");
    write(&cmdline_path, args.cmdline.as_bytes())?;
    let os_release = args.rootfs.join("initramfs/etc/os-release");
    let uki_path = args.out.join("keel.efi");
    uki::build(&args.stub, &args.kernel, &initramfs_path, &cmdline_path, &os_release, &uki_path)?;
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
    let mut files = vec![EspFile { path: "EFI/BOOT/BOOTX64.EFI", data: &uki_bytes }];
    files.extend(seed_files.iter().map(|(p, d)| EspFile { path: p, data: d }));
    let volume_id = u32::from_le_bytes(keel_image::reproducible::derived_guid("esp-volume", args.epoch)[..4].try_into().unwrap_or([0; 4]));

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
            disk::Partition { name: "KEEL-ESP", type_guid: disk::ESP_TYPE, contents: &disk_esp },
            disk::Partition { name: "KEEL-DATA", type_guid: disk::LINUX_FS_TYPE, contents: &data_fs },
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
    write(&iso_root.join("README.TXT"), b"Keel hypervisor appliance. The EFI system partition holds the boot image.\n")?;
    let iso_path = args.out.join("keel.iso");
    iso::build(&iso_path, &iso_root, &iso_esp_path, args.epoch)?;

    // 6. Checksums, so two builds can be compared at a glance.
    let mut sums = String::new();
    for name in ["initramfs.cpio.zst", "keel.efi", "keel.img", "keel.iso"] {
        let path = args.out.join(name);
        let bytes = read(&path)?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        sums.push_str(&format!("{hex}  {name}\n"));
        println!("keel-image: {:<20} {:>10} bytes  sha256 {}", name, bytes.len(), &hex[..16]);
    }
    write(&args.out.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(())
}
