//! `make bench`: appliance boot time.
//!
//! Boots keel.img under OVMF several times and reports kernel start -> init
//! banner (the banner's own figure, from /proc/uptime) and QEMU start ->
//! banner (wall time, firmware and the UKI stub included). The baseline,
//! measured in the same run, is QEMU loading the same kernel and initramfs
//! directly without firmware; the ratio is the cost of UEFI boot.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

const RUNS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(420);

struct Sample {
    kernel_ms: u64,
    wall_ms: u128,
}

fn boot_once(name: &str, options: &QemuOptions) -> Sample {
    let mut qemu = Qemu::start(name, options);
    let prefix = format!("keel {} up in ", env!("CARGO_PKG_VERSION"));
    let line = qemu.wait_for(&prefix, TIMEOUT);
    let wall_ms = qemu.elapsed().as_millis();
    let ms = line
        .split(&prefix)
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparseable banner {line:?}"));
    qemu.monitor("quit");
    Sample {
        kernel_ms: ms,
        wall_ms,
    }
}

fn median(mut values: Vec<u128>) -> u128 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    let uefi = QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick);
    let cmdline = keel_image::pipeline::DEFAULT_CMDLINE.to_string();
    let direct = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd: artefact("initramfs.cpio.zst"),
            cmdline,
        },
    );
    let mut uefi_samples = Vec::new();
    let mut direct_samples = Vec::new();
    for run in 0..RUNS {
        uefi_samples.push(boot_once(&format!("bench-uefi-{run}"), &uefi));
        direct_samples.push(boot_once(&format!("bench-direct-{run}"), &direct));
    }
    let report = |label: &str, samples: &[Sample]| {
        let kernel = median(samples.iter().map(|s| u128::from(s.kernel_ms)).collect());
        let wall = median(samples.iter().map(|s| s.wall_ms).collect());
        println!("{label:<34} kernel->banner {kernel:>6} ms   qemu start->banner {wall:>6} ms   (median of {RUNS})");
        (kernel, wall)
    };
    println!(
        "appliance boot ({:?}):",
        keel_ovmf_tests::accel::choose().accel
    );
    let (uefi_kernel, uefi_wall) = report("  keel.img, OVMF + UKI (USB stick)", &uefi_samples);
    let (direct_kernel, direct_wall) = report("  baseline: direct kernel boot", &direct_samples);
    println!(
        "  ratio UEFI/direct: kernel->banner {:.2}x, qemu start->banner {:.2}x",
        uefi_kernel as f64 / direct_kernel.max(1) as f64,
        uefi_wall as f64 / direct_wall.max(1) as f64
    );
}
