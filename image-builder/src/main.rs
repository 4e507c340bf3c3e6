//! keel-image command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keel_image::pipeline::{build, BuildOptions, DEFAULT_CMDLINE, DEFAULT_STUB};

#[derive(Parser)]
#[command(
    version,
    about = "Builds Keel's initramfs, UKI, disk image and hybrid ISO, reproducibly."
)]
struct Args {
    /// The kernel bzImage (with the EFI stub).
    #[arg(long)]
    kernel: PathBuf,
    /// A binary to install in /usr/bin; repeat. keel-init is required.
    #[arg(long = "binary", required = true)]
    binaries: Vec<PathBuf>,
    /// The demo guest's init (keel-demo-guest), shipped as its initramfs.
    #[arg(long)]
    demo_guest: Option<PathBuf>,
    /// The disk boot loader (keel-loader), shipped as its initramfs.
    #[arg(long)]
    loader: Option<PathBuf>,
    /// Static files: `initramfs/` goes into the root file system and `esp/`
    /// onto the ESP.
    #[arg(long, default_value = "rootfs")]
    rootfs: PathBuf,
    /// systemd's EFI stub.
    #[arg(long, default_value = DEFAULT_STUB)]
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
    let options = BuildOptions {
        kernel: args.kernel,
        binaries: args.binaries,
        demo_guest: args.demo_guest,
        loader: args.loader,
        rootfs: args.rootfs,
        stub: args.stub,
        cmdline: args.cmdline,
        epoch: args.epoch,
        out: args.out,
    };
    match build(&options) {
        Ok(report) => {
            for (name, size, sha) in report {
                println!(
                    "keel-image: {name:<20} {size:>10} bytes  sha256 {}",
                    &sha[..16]
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("keel-image: error: {err}");
            ExitCode::FAILURE
        }
    }
}
