//! The mission end to end: boot keel.img under OVMF, pair keelctl with the
//! code from the serial console, run the demo guest and talk to it through
//! its console, survive a host reboot with an autostart guest, see a crashed
//! guest restarted, refuse a malformed spec, and power off through the
//! power button with the guests stopped first. Everything goes through the
//! real keelctl binary over QEMU's forwarded port, as an operator would.
//!
//! Guests run on nested KVM inside the TCG appliance (see DESIGN.md), so
//! timeouts are generous; the figures belong to `make bench`.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use keel_ovmf_tests::operator::{demo_spec, free_port, pairing_code, Console, Operator, GREETING};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// A guest boot under nested KVM in TCG, with the other guest running.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

fn write_spec(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write spec");
    path.to_string_lossy().into_owned()
}

#[test]
fn operator_runs_guests_across_reboot_crash_and_power_button() {
    let port = free_port();
    let mut options = QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick);
    options.memory_mib = 2048;
    options.no_reboot = false;
    options.agent_port = Some(port);
    let mut qemu = Qemu::start("appliance", &options);
    let work = qemu.workdir().join("operator");
    std::fs::create_dir_all(&work).expect("mkdir");
    let op = Operator {
        config: work.join("config"),
        host: format!("127.0.0.1:{port}"),
    };

    // Pair with the code printed on the console.
    let code = pairing_code(&mut qemu, 0, BOOT_TIMEOUT);
    // With no [[network]] in host.toml the host's address is on br0, the
    // bridge over the first NIC, and the pairing code comes with it.
    let address = qemu.wait_for("management address: ", BOOT_TIMEOUT);
    assert!(address.contains(" on br0, agent port 7444"), "{address}");
    let host_ip = address
        .split("management address: ")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .to_owned();
    // init (when the lease comes after the agent) or the agent (when it
    // starts after the lease) shows the whole command.
    qemu.wait_for(&format!("keelctl pair {host_ip} {code}`"), BOOT_TIMEOUT);
    op.ok(&["keygen"]);
    let paired = op.ok(&["pair", &op.host, &code]);
    assert!(paired.contains("as admin"), "{paired}");
    // The code was for the console only: the host log, which any reader
    // key may fetch, never had it.
    let host_log = op.ok(&["logs", "--tail", "1000"]);
    assert!(
        host_log.contains("first-boot pairing is open"),
        "{host_log}"
    );
    assert!(
        !host_log.contains(&code),
        "the pairing code reached the host log:\n{host_log}"
    );

    // The demo guest: define, start, read its greeting, talk to it. Its
    // bridge-mode NIC is a tap on br0: its DHCP lease from QEMU's slirp
    // crosses virtio-net, the tap, the bridge and the appliance's uplink.
    let demo = demo_spec();
    assert!(demo.contains("mode = \"bridge\""), "{demo}");
    let spec = write_spec(&work, "demo", &demo);
    op.ok(&["guest", "define", &spec]);
    assert_eq!(op.state("demo"), "Stopped");
    op.ok(&["guest", "start", "demo"]);
    let mut console = Console::attach(&op, "demo");
    console.wait_for(&qemu, GREETING, GUEST_TIMEOUT);
    console.wait_for(&qemu, "demo: 1 CPU(s), ", GUEST_TIMEOUT);
    let lease = console.wait_for(&qemu, "demo: eth0 (", GUEST_TIMEOUT);
    assert!(lease.contains(" got 10.0.2."), "{lease}");
    assert!(lease.contains("/24 by DHCP, router 10.0.2.2"), "{lease}");
    assert!(
        !lease.contains(&format!(" got {host_ip}/")),
        "the guest has an address of its own: {lease}"
    );
    console.type_line("hello keel");
    console.wait_for(&qemu, "demo: you said \"hello keel\"", GUEST_TIMEOUT);
    drop(console);
    let shown = op.show("demo");
    assert_eq!(shown["summary"]["state"], "Running");
    assert!(shown["pid"].as_u64().is_some(), "{shown}");
    let log = op.ok(&["logs", "--guest", "demo"]);
    assert!(
        log.contains(GREETING),
        "the console log keeps the greeting:\n{log}"
    );
    // The demo guest's kernel boots without complaints about devices
    // keel-vmm does not offer.
    assert!(
        !log.contains("PCI: Fatal"),
        "the demo guest's kernel looked for a PCI bus:\n{log}"
    );

    // Uploads land in images/ or disks/ of the data partition, where
    // guest specs look; anywhere else is refused.
    let hello = work.join("hello.bin");
    std::fs::write(&hello, b"hello from the workstation\n").expect("write hello.bin");
    let hello = hello.to_string_lossy().into_owned();
    op.ok(&["upload", &hello, "images/hello.bin"]);
    let out = op.run(&["upload", &hello, "hello.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("images/"), "{stderr}");
    // A spec names it as sent: starting a guest whose kernel is the upload
    // gets past the kernel and stops at its missing initrd, before any VMM.
    let probe = "name = \"probe\"\nvcpus = 1\nmemory_mib = 64\n[boot]\n\
                 kernel = \"images/hello.bin\"\ninitrd = \"images/missing.bin\"\n";
    op.ok(&["guest", "define", &write_spec(&work, "probe", probe)]);
    let out = op.run(&["guest", "start", "probe"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("boot.initrd"), "{stderr}");
    op.ok(&["guest", "undefine", "probe"]);

    // A clean stop: ctrl-alt-del, the demo's init powers off.
    // `logs --follow` streams the console as it grows: the stop's last
    // words arrive after it started, and it ends when the guest does.
    let mut follow = Console::spawn(&op, &["logs", "--guest", "demo", "--follow", "--tail", "3"]);
    follow.wait_for(&qemu, "demo: you said \"hello keel\"", GUEST_TIMEOUT);
    op.ok(&["guest", "stop", "demo"]);
    follow.wait_for_after(&qemu, "hello keel", "demo: powering off", GUEST_TIMEOUT);
    let status = follow.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "logs --follow ended with {status}");
    let shown = op.show("demo");
    assert_eq!(shown["summary"]["state"], "Stopped");
    assert_eq!(shown["last_exit"], "powered off", "{shown}");

    // A malformed spec is refused with the field named; nothing changes.
    let bad = write_spec(
        &work,
        "bad",
        &demo
            .replace("name = \"demo\"", "name = \"bad\"")
            .replace("vcpus = 1", "vcpus = 0"),
    );
    let out = op.run(&["guest", "define", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vcpus"), "{stderr}");
    let list = op.ok(&["guest", "list"]);
    assert!(!list.contains("bad"), "{list}");
    op.ok(&["guest", "undefine", "demo"]);

    // An autostart guest survives a host reboot without any client action.
    let auto = demo.replace("name = \"demo\"", "name = \"auto\"");
    assert!(auto.contains("autostart = true"));
    op.ok(&["guest", "define", &write_spec(&work, "auto", &auto)]);
    let before_reboot = qemu.serial().len();
    op.ok(&["host", "reboot"]);
    let (_, after) = qemu.wait_for_from(before_reboot, "keel: rebooting now", BOOT_TIMEOUT);
    let (_, after) = qemu.wait_for_from(after, "keel-init: guest auto: running", BOOT_TIMEOUT);
    // Paired before: no new pairing code, the key is on the data partition.
    qemu.wait_for_from(after, "keel-agent", BOOT_TIMEOUT);
    assert!(
        !qemu.serial()[before_reboot..].contains("pairing code:"),
        "the admin key did not survive the reboot"
    );
    let shown = op.wait_guest(&qemu, "auto", GUEST_TIMEOUT, |s| {
        s["summary"]["state"] == "Running"
    });
    assert_eq!(shown["autostart"], true);
    let console = Console::attach(&op, "auto");
    console.wait_for(&qemu, GREETING, GUEST_TIMEOUT);

    // The guest crashes (its init exits: a kernel panic, reported through
    // pvpanic): init restarts it by its on-failure policy.
    let mut console = console;
    console.type_line("panic");
    console.wait_for(&qemu, "demo: crashing on request", GUEST_TIMEOUT);
    drop(console);
    let shown = op.wait_guest(&qemu, "auto", GUEST_TIMEOUT, |s| {
        s["restarts"].as_u64() >= Some(1) && s["summary"]["state"] == "Running"
    });
    let last = shown["last_exit"].as_str().unwrap_or("");
    assert!(last.contains("crashed"), "{shown}");
    let console = Console::attach(&op, "auto");
    console.wait_for_after(&qemu, "demo: crashing on request", GREETING, GUEST_TIMEOUT);
    drop(console);

    // The power button: guests stop first, then the host powers off.
    let before_off = qemu.serial().len();
    qemu.monitor("system_powerdown");
    let (_, stopped) =
        qemu.wait_for_from(before_off, "keel-init: guest auto: stopped", GUEST_TIMEOUT);
    qemu.wait_for_from(stopped, "keel: powering off now", GUEST_TIMEOUT);
    let status = qemu
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("QEMU did not exit; console:\n{}", qemu.serial()));
    assert!(status.success(), "QEMU exited with {status}");
    let serial = qemu.serial();
    assert!(
        !serial.contains("Kernel panic - not syncing: Attempted to kill init"),
        "init died:\n{serial}"
    );
    assert!(
        !serial.contains("still running after"),
        "a process ignored SIGTERM at shutdown; console:\n{serial}"
    );
}
