//! `make bench`, Linux-guest part: keel-vmm inside the QEMU TCG test bed
//! (the Keel kernel as L1, keel-vmm on L1's KVM) boots a 1 vCPU / 128 MiB
//! Linux guest several times on each virtio transport and reports, per
//! run: control socket ready time, boot time (VMM start to the guest's
//! boot-timer write) and the VMM's memory overhead (RSS minus the guest
//! memory the guest touched), with the pci / mmio ratio.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_ovmf_tests::testbed::{report_field, reports, testbed_initramfs_with_qemu};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `key` field of each report line, NaN where missing.
fn values(lines: &[&str], key: &str) -> Vec<f64> {
    lines
        .iter()
        .map(|l| {
            report_field(l, key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        })
        .collect()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("keel-vmm-guest-bench-{}", std::process::id()));
    let initrd = testbed_initramfs_with_qemu(&dir);
    // Alternating runs, so drift in the test bed hits each alike.
    let scenarios = ["measure-pci,measure-mmio,qemu"; RUNS].join(",");
    let mut options = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd,
            cmdline: format!("console=ttyS0 loglevel=3 keel.testbed={scenarios}"),
        },
    );
    options.memory_mib = 2048;
    let mut qemu = Qemu::start("vmm-guest-bench", &options);
    qemu.wait_for("TESTBED done", Duration::from_secs(900));
    let serial = qemu.serial();
    println!("keel-vmm in the QEMU TCG test bed (L1 = Keel kernel, nested KVM), 1 vCPU / 128 MiB, median of {RUNS}:");
    let mut boots = Vec::new();
    for transport in ["pci", "mmio"] {
        let lines = reports(&serial, &format!("measure-{transport}"));
        assert_eq!(lines.len(), RUNS, "console:\n{serial}");
        let (ready, boot, overhead, guest) = (
            values(&lines, "socket_ready_ms"),
            values(&lines, "boot_marker_ms"),
            values(&lines, "overhead_kib"),
            values(&lines, "guest_rss_kib"),
        );
        println!("  virtio-{transport}:");
        println!(
            "    control socket ready     {:>8.1} ms   runs {ready:?}",
            median(ready.clone())
        );
        println!(
            "    boot to guest init mark  {:>8.0} ms   runs {boot:?}",
            median(boot.clone())
        );
        println!(
            "    VMM memory overhead      {:>8.0} KiB  ({:.2} MiB; target <= 3 MiB; guest touched {:.0} KiB)",
            median(overhead.clone()),
            median(overhead) / 1024.0,
            median(guest)
        );
        boots.push(median(boot));
    }
    let (pci_ms, mmio_ms) = (boots[0], boots[1]);
    println!(
        "  boot time ratio virtio-pci / virtio-mmio: {:.2}x",
        pci_ms / mmio_ms
    );
    let qemu: Vec<f64> = values(&reports(&serial, "qemu"), "boot_marker_ms");
    if qemu.len() == RUNS && qemu.iter().all(|v| v.is_finite()) {
        let qemu_ms = median(qemu.clone());
        println!("  baseline: QEMU -M microvm {qemu_ms:>8.0} ms   runs {qemu:?} (same kernel, initramfs, disk, same KVM; virtio-mmio)");
        println!(
            "  boot time ratio keel-vmm (mmio) / QEMU microvm: {:.2}x",
            mmio_ms / qemu_ms
        );
    } else {
        let errors = reports(&serial, "qemu");
        println!("  baseline: QEMU microvm did not produce a boot time: {errors:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
