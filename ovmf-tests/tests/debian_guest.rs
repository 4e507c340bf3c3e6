//! Debian 12 as a Debian user runs it, under keel-vmm in the QEMU TCG test
//! bed: Debian's own kernels (`linux-image-cloud-amd64`,
//! `linux-image-amd64`) with the initrds initramfs-tools made for them,
//! booting the root disk `make debian-guest` builds with mmdebstrap to
//! systemd's multi-user target, on virtio-pci and on virtio-mmio described
//! by ACPI.
//!
//! L1 (the Keel kernel with keel-vmm) has the disk as a virtio-blk drive
//! with `snapshot=on`, so the cached image is never written, and serves it
//! to the Debian guest (L2) as an allow-listed host block device. The
//! guest's report unit prints one `KEEL-DEBIAN multi-user ...` line on its
//! console and powers off.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_common::hostfwd::GUEST_IP;
use keel_ovmf_tests::testbed::{
    last_run, report_field, reports, say_retries, testbed_initramfs_with_debian,
};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

/// Each scenario: its name in keel-testbed, the kernel flavour it boots,
/// the transport the guest must find its devices on.
/// `disk`: no kernel named, keel-loader boots the one Debian's packages
/// linked as /vmlinuz (either flavour).
const SCENARIOS: [(&str, &str, &str); 4] = [
    ("debian-pci-cloud", "cloud", "pci"),
    ("debian-pci-generic", "generic", "pci"),
    ("debian-mmio-cloud", "cloud", "mmio"),
    ("debian-pci-disk", "disk", "pci"),
];

/// The kernel release of each flavour, from out/debian/kernels
/// (`cloud 6.1.0-NN-cloud-amd64`).
fn kernel_release(flavour: &str) -> String {
    let kernels = std::fs::read_to_string(artefact("debian/kernels")).unwrap();
    kernels
        .lines()
        .find_map(|l| l.strip_prefix(flavour)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {flavour} kernel in out/debian/kernels:\n{kernels}"))
        .to_string()
}

/// The console from a scenario's start to its exit report.
fn scenario_console<'a>(serial: &'a str, scenario: &str) -> &'a str {
    let serial = last_run(serial, scenario);
    let start = serial
        .find(&format!("TESTBED scenario={scenario} started"))
        .unwrap_or_else(|| panic!("{scenario} did not start; console:\n{serial}"));
    let rest = &serial[start..];
    let end = rest
        .find(&format!("TESTBED scenario={scenario} exit="))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The fields of the guest's `KEEL-DEBIAN multi-user` line.
fn report_line<'a>(console: &'a str, scenario: &str) -> &'a str {
    console
        .lines()
        .find_map(|l| l.find("KEEL-DEBIAN multi-user ").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!("{scenario}: the guest did not reach multi-user.target; console:\n{console}")
        })
}

#[test]
fn debian_with_its_own_kernel_and_initrd_reaches_multi_user() {
    let dir = std::env::temp_dir().join(format!("keel-debian-{}", std::process::id()));
    let initrd = testbed_initramfs_with_debian(&dir);
    let scenarios: Vec<&str> = SCENARIOS.iter().map(|s| s.0).collect();
    let mut options = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd,
            cmdline: format!(
                "console=ttyS0 loglevel=3 keel.testbed={}",
                scenarios.join(",")
            ),
        },
    );
    // The initramfs holds both Debian kernels and initrds, copied again
    // into L1's data directory; the guest has 512 MiB.
    options.memory_mib = 3072;
    options.snapshot_disks = vec![(artefact("debian/root.img"), "keel-debian".into())];
    let mut qemu = Qemu::start("debian-guest", &options);
    // keel-testbed bounds each scenario (8 minutes), so this wait is too.
    qemu.wait_for("TESTBED done", Duration::from_secs(30 * 60));
    let serial = qemu.serial().replace('\r', "");
    say_retries("debian-guest", &serial);
    assert!(
        serial.contains("TESTBED kvm=true"),
        "L1 has no /dev/kvm; console:\n{serial}"
    );

    for (scenario, flavour, transport) in SCENARIOS {
        let console = scenario_console(&serial, scenario);
        let line = report_line(console, scenario);
        let field = |key: &str| {
            report_field(line, key)
                .unwrap_or_else(|| panic!("{scenario}: no {key}= in {line:?}"))
                .to_string()
        };
        if flavour == "disk" {
            let releases = [kernel_release("cloud"), kernel_release("generic")];
            assert!(
                releases.contains(&field("kernel")),
                "{scenario}: not one of Debian's kernels {releases:?}: {line}"
            );
            // The loader found Debian's links, chose, and said so.
            assert!(
                console.contains("keel-loader: booting "),
                "{scenario}: keel-loader did not boot a kernel; console:\n{console}"
            );
        } else {
            assert_eq!(
                field("kernel"),
                kernel_release(flavour),
                "{scenario}: {line}"
            );
        }
        assert!(
            field("root").starts_with("/dev/vda"),
            "{scenario}: root is not on virtio-blk: {line}"
        );
        assert_eq!(
            field("lease"),
            GUEST_IP.to_string(),
            "{scenario}: no DHCP lease from the user-mode network: {line}"
        );
        assert!(
            field("rng").starts_with("virtio_rng"),
            "{scenario}: no virtio-rng: {line}"
        );
        assert_eq!(field("transport"), transport, "{scenario}: {line}");
        assert_eq!(field("target"), "active", "{scenario}: {line}");
        let exit = reports(&serial, scenario)
            .into_iter()
            .find_map(|r| report_field(r, "exit"))
            .unwrap_or_else(|| panic!("no exit for {scenario}; console:\n{console}"));
        assert_eq!(
            exit, "0",
            "{scenario}: the guest did not power off cleanly; console:\n{console}"
        );
    }
    let _ = qemu.wait_exit(Duration::from_secs(60));
    std::fs::remove_dir_all(&dir).expect("clean up");
}
