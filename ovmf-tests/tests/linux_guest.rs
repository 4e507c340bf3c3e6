//! Linux guests under keel-vmm, in the QEMU TCG test bed.
//!
//! The host's /dev/kvm cannot run Linux guests (see the design page), so
//! QEMU boots the Keel kernel as L1 with an initramfs holding keel-vmm, the
//! guest kernel, the test guest and the `keel-testbed` init; L1's own KVM
//! runs keel-vmm, which boots the L2 guest. One L1 boot runs every scenario.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_common::vmm_exit::VmmExitStatus;
use keel_ovmf_tests::testbed::{report_field, reports, say_retries, testbed_initramfs};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

fn testbed_line(serial: &str, scenario: &str, key: &str) -> String {
    reports(serial, scenario)
        .into_iter()
        .find_map(|r| report_field(r, key))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no TESTBED {key} for {scenario}; console:\n{serial}"))
}

#[test]
fn linux_guest_on_virtio_pci_boots_uses_its_devices_and_exits_with_the_right_status() {
    every_scenario_on("pci");
}

#[test]
fn linux_guest_on_virtio_mmio_boots_uses_its_devices_and_exits_with_the_right_status() {
    every_scenario_on("mmio");
}

/// Runs every scenario with the guest's devices on `transport`.
fn every_scenario_on(transport: &str) {
    let dir = std::env::temp_dir().join(format!("keel-testbed-{transport}-{}", std::process::id()));
    let initrd = testbed_initramfs(&dir);
    let mut options = QemuOptions::new(
        artefact("kernel/bzImage"),
        BootMedia::DirectKernel {
            initrd: initrd.clone(),
            cmdline: format!("console=ttyS0 loglevel=3 keel.transport={transport} keel.testbed=poweroff,reboot,panic,control,kill,pvh,bigmem,usernet,nothing-to-boot"),
        },
    );
    // Room for the 4 GiB guest of the bigmem scenario (touched lazily).
    options.memory_mib = 6144;
    let mut qemu = Qemu::start(&format!("linux-guest-{transport}"), &options);
    qemu.wait_for("TESTBED done", Duration::from_secs(600));
    let serial = qemu.serial().replace('\r', "");
    say_retries(&format!("linux-guest-{transport}"), &serial);
    assert!(
        serial.contains("TESTBED kvm=true"),
        "L1 has no /dev/kvm; console:\n{serial}"
    );
    assert!(
        serial.contains(&format!("TESTBED transport={transport}")),
        "L1 did not take keel.transport; console:\n{serial}"
    );
    // Every boot found its devices over that transport and no other.
    let guest_transport = format!("KEEL-TEST-GUEST transport={transport}\n");
    assert!(
        serial.contains(&guest_transport),
        "the guest's devices are not on {transport}; console:\n{serial}"
    );
    assert!(
        !serial
            .lines()
            .any(|l| l.starts_with("KEEL-TEST-GUEST transport=") && !guest_transport.starts_with(l)),
        "a guest saw another transport; console:\n{serial}"
    );
    let msi_vectors: Vec<u32> = serial
        .lines()
        .filter_map(|l| l.strip_prefix("KEEL-TEST-GUEST msi_vectors="))
        .map(|v| v.trim().parse().expect("a vector count"))
        .collect();
    assert!(!msi_vectors.is_empty(), "no MSI report; console:\n{serial}");
    if transport == "pci" {
        // Disk and rng: one vector per queue plus config, on every boot.
        assert!(
            msi_vectors.iter().all(|&n| n >= 2),
            "virtio-pci drivers did not enable MSI-X ({msi_vectors:?}); console:\n{serial}"
        );
    } else {
        assert!(msi_vectors.iter().all(|&n| n == 0), "{msi_vectors:?}");
    }

    // Power-off: the guest saw its two vCPUs, memory, disk and rng, and
    // its write reached the disk file on the host (L1) side.
    assert_eq!(
        testbed_line(&serial, "poweroff", "exit"),
        "0",
        "console:\n{serial}"
    );
    for expected in [
        "KEEL-TEST-GUEST booted=yes",
        "KEEL-TEST-GUEST cpus=2",
        "KEEL-TEST-GUEST disk_read=keel-disk-sector0",
        "KEEL-TEST-GUEST disk_write=ok",
        "KEEL-TEST-GUEST rng=ok",
        "KEEL-TEST-GUEST marker=sent",
        "KEEL-TEST-GUEST keyboard=bound",
    ] {
        assert!(
            serial.contains(expected),
            "missing {expected:?}; console:\n{serial}"
        );
    }
    let mem_kib: u64 = serial
        .lines()
        .find_map(|l| l.strip_prefix("KEEL-TEST-GUEST mem_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("guest reported its memory");
    assert!(
        (200 * 1024..=256 * 1024).contains(&mem_kib),
        "guest sees {mem_kib} KiB of 256 MiB"
    );
    assert!(
        serial.contains("guest boot marker 0x1 after"),
        "boot timer not hit; console:\n{serial}"
    );
    assert_eq!(
        testbed_line(&serial, "poweroff", "disk_sector1"),
        "written-by-keel-test-gst"
    );

    // Reboot and panic end the VMM with their own statuses.
    assert_eq!(
        testbed_line(&serial, "reboot", "exit"),
        "3",
        "console:\n{serial}"
    );
    assert_eq!(
        testbed_line(&serial, "panic", "exit"),
        "4",
        "console:\n{serial}"
    );
    assert!(
        serial.contains("guest crashed: the guest kernel panicked (pvpanic)"),
        "console:\n{serial}"
    );

    // The control socket: pause parks the vCPUs, resume restarts them,
    // stats count device work and exits, an attached console streams
    // output, shutdown sends ctrl-alt-del (the guest kernel reboots), and
    // kill ends the VMM with its own status.
    let control = |key: &str| testbed_line(&serial, "control", key);
    assert_eq!(control("booted"), "true", "console:\n{serial}");
    assert_eq!(control("pause"), "Ok(Ok)");
    assert_eq!(control("state_after_pause"), "Paused");
    assert_eq!(control("resume"), "Ok(Ok)");
    assert_eq!(control("state_after_resume"), "Running");
    let number = |key: &str| {
        control(key)
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{key} is not a number"))
    };
    assert!(
        number("stat_block0_read_bytes") >= 512,
        "the guest read its disk"
    );
    assert!(
        number("stat_block0_write_bytes") >= 512,
        "the guest wrote its disk"
    );
    assert!(
        number("stat_rng_queue_notifies") >= 1,
        "the guest used its rng"
    );
    assert!(number("exits_io_out") > 0);
    assert_eq!(control("attach"), "Ok(Ok)");
    assert_eq!(control("last"), "Ok(Ok)");
    assert!(
        number("console_bytes") > 0,
        "no console output reached the attached client"
    );
    assert_eq!(control("exit"), "3", "ctrl-alt-del makes the guest reboot");
    assert_eq!(testbed_line(&serial, "kill", "exit"), "5");

    // The ELF vmlinux boots through its PVH entry point.
    assert_eq!(
        testbed_line(&serial, "pvh", "exit"),
        "0",
        "console:\n{serial}"
    );
    assert!(
        serial.contains("keel-vmm[pvh]: pvh: 2 vCPU(s), 256 MiB, PVH entry"),
        "console:\n{serial}"
    );
    // A 4 GiB guest: RAM below the 3 GiB hole and above 4 GiB all usable.
    assert_eq!(
        testbed_line(&serial, "bigmem", "exit"),
        "0",
        "console:\n{serial}"
    );
    let mems: Vec<u64> = serial
        .lines()
        .filter_map(|l| l.strip_prefix("KEEL-TEST-GUEST mem_kib="))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert!(
        mems.iter().any(|m| *m > 3_900_000),
        "no guest saw ~4 GiB: {mems:?}"
    );

    // User-mode networking: the guest fetched a page from L1's loopback
    // through the NAT, and L1 reached the guest's server through the
    // 127.0.0.1:8022 -> :22 port forward.
    assert!(
        serial.contains("KEEL-TEST-GUEST http=hello from the host"),
        "console:\n{serial}"
    );
    assert_eq!(
        testbed_line(&serial, "usernet", "fwd"),
        "hello_from_the_guest",
        "console:\n{serial}"
    );
    assert_eq!(
        testbed_line(&serial, "usernet", "exit"),
        "0",
        "console:\n{serial}"
    );
    // from = "disk" on a disk with nothing to boot: keel-loader says why
    // on the console and the VMM ends with status 6 (BootFailed).
    assert_eq!(
        testbed_line(&serial, "nothing-to-boot", "exit"),
        VmmExitStatus::BootFailed.code().to_string(),
        "console:\n{serial}"
    );
    assert!(
        serial.contains("keel-loader: error: "),
        "keel-loader printed no error; console:\n{serial}"
    );
    assert!(
        serial.contains("keel-vmm[nothing-to-boot]: error: nothing to boot on the guest's disks: "),
        "keel-vmm did not report the loader's message; console:\n{serial}"
    );
    let _ = qemu.wait_exit(Duration::from_secs(60));
    std::fs::remove_dir_all(&dir).expect("clean up");
}
