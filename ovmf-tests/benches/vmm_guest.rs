//! `make bench`, Linux-guest part: keel-vmm inside the QEMU TCG test bed
//! (the Keel kernel as L1, keel-vmm on L1's KVM) boots a 1 vCPU / 128 MiB
//! Linux guest several times and reports, per run: control socket ready
//! time, boot time (VMM start to the guest's boot-timer write) and the
//! VMM's memory overhead (RSS minus the guest memory the guest touched).

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

fn main() {
    let dir = std::env::temp_dir().join(format!("keel-vmm-guest-bench-{}", std::process::id()));
    let initrd = testbed_initramfs_with_qemu(&dir);
    let scenarios = ["measure,qemu"; RUNS].join(",");
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
    let lines = reports(&serial, "measure");
    assert_eq!(lines.len(), RUNS, "console:\n{serial}");
    let values = |key: &str| -> Vec<f64> {
        lines
            .iter()
            .map(|l| {
                report_field(l, key)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            })
            .collect()
    };
    let (ready, boot, overhead, guest) = (
        values("socket_ready_ms"),
        values("boot_marker_ms"),
        values("overhead_kib"),
        values("guest_rss_kib"),
    );
    println!("keel-vmm in the QEMU TCG test bed (L1 = Keel kernel, nested KVM), 1 vCPU / 128 MiB, median of {RUNS}:");
    println!(
        "  control socket ready     {:>8.1} ms   runs {ready:?}",
        median(ready.clone())
    );
    println!(
        "  boot to guest init mark  {:>8.0} ms   runs {boot:?}",
        median(boot.clone())
    );
    println!(
        "  VMM memory overhead      {:>8.0} KiB  ({:.2} MiB; target <= 3 MiB; guest touched {:.0} KiB)",
        median(overhead.clone()),
        median(overhead) / 1024.0,
        median(guest)
    );
    let qemu: Vec<f64> = reports(&serial, "qemu")
        .into_iter()
        .map(|l| {
            report_field(l, "boot_marker_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        })
        .collect();
    if qemu.len() == RUNS && qemu.iter().all(|v| v.is_finite()) {
        let (keel_ms, qemu_ms) = (median(boot), median(qemu.clone()));
        println!("  baseline: QEMU -M microvm {qemu_ms:>8.0} ms   runs {qemu:?} (same kernel, initramfs, disk, same KVM)");
        println!(
            "  boot time ratio keel-vmm / QEMU microvm: {:.2}x",
            keel_ms / qemu_ms
        );
    } else {
        let errors = reports(&serial, "qemu");
        println!("  baseline: QEMU microvm did not produce a boot time: {errors:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
