//! Boots the real keel.img and keel.iso under OVMF and checks the banner and
//! an orderly shutdown, as an operator would see them on the serial console.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

/// Generous: three TCG guests may share two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// From the power-off request to QEMU exiting by itself.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(90);

/// Waits for `keel <version> up in <ms> ms` and returns the milliseconds.
fn wait_for_banner(qemu: &mut Qemu) -> u64 {
    let prefix = format!("keel {} up in ", keel_image_version());
    let line = qemu.wait_for(&prefix, BOOT_TIMEOUT);
    let rest = &line[line.find(&prefix).map(|i| i + prefix.len()).unwrap_or(0)..];
    let ms = rest
        .strip_suffix(" ms")
        .unwrap_or_else(|| panic!("banner does not end in ' ms': {line:?}"));
    ms.parse()
        .unwrap_or_else(|_| panic!("banner time is not a number: {line:?}"))
}

fn keel_image_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The appliance's state after boot, as init reports it.
fn assert_booted_state(qemu: &mut Qemu) {
    let serial = qemu.serial();
    assert!(
        serial.contains("keel-init: root filesystem is read-only"),
        "console:\n{serial}"
    );
    // The hostname comes from host.toml, read once the data partition (or
    // its absence) is settled, after the banner.
    qemu.wait_for("keel-init: hostname is keel", Duration::from_secs(120));
    let serial = qemu.serial();
    assert!(
        !serial.contains("keel-init: error:"),
        "init reported errors; console:\n{serial}"
    );
}

fn assert_clean_exit(qemu: &mut Qemu, marker: &str) {
    qemu.wait_for(marker, SHUTDOWN_BOUND);
    let status = qemu.wait_exit(SHUTDOWN_BOUND).unwrap_or_else(|| {
        panic!(
            "QEMU still running {SHUTDOWN_BOUND:?} after {marker:?}; console:\n{}",
            qemu.serial()
        )
    });
    assert!(
        status.success(),
        "QEMU exited with {status}; console:\n{}",
        qemu.serial()
    );
    let serial = qemu.serial();
    assert!(!serial.contains("Kernel panic"), "console:\n{serial}");
    // Every process ends on SIGTERM: none waits for the last-resort kill.
    assert!(
        !serial.contains("still running after"),
        "a process ignored SIGTERM at shutdown; console:\n{serial}"
    );
}

#[test]
fn disk_image_boots_from_a_usb_stick_and_powers_off_on_the_power_button() {
    let mut qemu = Qemu::start(
        "img-usb",
        &QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick),
    );
    let ms = wait_for_banner(&mut qemu);
    eprintln!(
        "[img-usb] banner after {ms} ms of kernel time ({:?} of wall time)",
        qemu.elapsed()
    );
    assert_booted_state(&mut qemu);
    qemu.monitor("system_powerdown");
    assert_clean_exit(&mut qemu, "keel: powering off now");
    let serial = qemu.serial();
    assert!(
        serial.contains("shutdown requested by the power button"),
        "console:\n{serial}"
    );
}

#[test]
fn iso_boots_from_virtual_cdrom_and_powers_off_on_the_power_button() {
    let mut qemu = Qemu::start(
        "iso-cd",
        &QemuOptions::new(artefact("keel.iso"), BootMedia::Cdrom),
    );
    wait_for_banner(&mut qemu);
    assert_booted_state(&mut qemu);
    qemu.monitor("system_powerdown");
    assert_clean_exit(&mut qemu, "keel: powering off now");
}

#[test]
fn iso_written_to_a_usb_stick_boots_and_reboots_on_ctrl_alt_del() {
    let mut qemu = Qemu::start(
        "iso-usb",
        &QemuOptions::new(artefact("keel.iso"), BootMedia::UsbStick),
    );
    wait_for_banner(&mut qemu);
    assert_booted_state(&mut qemu);
    qemu.monitor("sendkey ctrl-alt-delete");
    // -no-reboot turns the guest's reboot into QEMU exiting.
    assert_clean_exit(&mut qemu, "keel: rebooting now");
    let serial = qemu.serial();
    assert!(
        serial.contains("shutdown requested by signal SIGINT"),
        "console:\n{serial}"
    );
}
