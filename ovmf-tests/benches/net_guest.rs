//! `make bench`, guest networking: TCP throughput from a Linux guest to
//! its host over keel-vmm's user-mode NAT and over a tap, and the same
//! transfer over the host's own loopback as the baseline, all in one run
//! of the QEMU TCG test bed (the "host" is L1, which runs keel-vmm).

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_ovmf_tests::testbed::{report_field, reports, testbed_initramfs};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

fn throughput(serial: &str, scenario: &str) -> Option<f64> {
    reports(serial, scenario)
        .into_iter()
        .find_map(|r| report_field(r, "mib_s"))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let dir = std::env::temp_dir().join(format!("keel-net-bench-{}", std::process::id()));
    let initrd = testbed_initramfs(&dir);
    let mut options = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd,
            cmdline: "console=ttyS0 loglevel=3 keel.testbed=netbench".into(),
        },
    );
    options.memory_mib = 2048;
    let mut qemu = Qemu::start("net-bench", &options);
    qemu.wait_for("TESTBED done", Duration::from_secs(900));
    let serial = qemu.serial();
    let (host, user, tap) = (
        throughput(&serial, "netloop"),
        throughput(&serial, "netuser"),
        throughput(&serial, "nettap"),
    );
    println!("guest -> host TCP, 32 MiB, in the QEMU TCG test bed (nested KVM):");
    let show = |label: &str, v: Option<f64>| match v {
        Some(v) => println!("  {label:<34} {v:>8.1} MiB/s"),
        None => println!("  {label:<34} no figure (see the TESTBED lines below)"),
    };
    show("baseline: host -> host loopback", host);
    show("virtio-net over a tap", tap);
    show("virtio-net over user-mode NAT", user);
    if let (Some(host), Some(user), Some(tap)) = (host, user, tap) {
        println!(
            "  ratio tap / host loopback: {:.2}x (goal >= 0.5x)",
            tap / host
        );
        println!(
            "  ratio user / tap:          {:.2}x (goal >= 0.3x)",
            user / tap
        );
    } else {
        for line in serial.lines().filter(|l| l.starts_with("TESTBED")) {
            println!("  {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
