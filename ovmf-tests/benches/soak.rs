//! `make soak`: 100 (or `SOAK_CYCLES`) boot-and-reboot cycles of a Linux
//! guest with a verbose console under keel-vmm, in the QEMU TCG test bed,
//! each run watched: a run that overstays is dumped (thread states, wait
//! channels, system calls, the VMM's own view) and fails the soak.

// A test harness: a failed assumption here is a failed soak.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_ovmf_tests::testbed::{report_field, reports, testbed_initramfs};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

fn main() {
    let cycles: u32 = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let transport = std::env::var("SOAK_TRANSPORT").unwrap_or_else(|_| "pci".into());
    let dir = std::env::temp_dir().join(format!("keel-soak-{}", std::process::id()));
    let initrd = testbed_initramfs(&dir);
    let mut options = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd,
            cmdline: format!(
                "console=ttyS0 loglevel=3 keel.transport={transport} keel.testbed=soak keel.soak={cycles}"
            ),
        },
    );
    options.memory_mib = 1024;
    let mut qemu = Qemu::start("soak", &options);
    // Each cycle is bounded by the test bed's watchdog (120 s).
    qemu.wait_for(
        "TESTBED done",
        Duration::from_secs(60 + 130 * u64::from(cycles)),
    );
    let serial = qemu.serial().replace('\r', "");
    for line in serial.lines().filter(|l| l.starts_with("TESTBED-HANG")) {
        println!("{line}");
    }
    let summary = reports(&serial, "soak")
        .into_iter()
        .find(|l| l.contains(" cycles="))
        .unwrap_or_else(|| panic!("no soak summary; console:\n{serial}"));
    let field = |key: &str| report_field(summary, key).unwrap_or("?").to_string();
    println!(
        "soak on virtio-{transport}: {} cycles, {} rebooted as they should, {} other exits, {} hung; per cycle median {} ms, max {} ms",
        field("cycles"),
        field("rebooted"),
        field("other"),
        field("hung"),
        field("median_ms"),
        field("max_ms")
    );
    assert_eq!(field("hung"), "0", "a run hung; see TESTBED-HANG above");
    assert_eq!(field("rebooted"), cycles.to_string(), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}
