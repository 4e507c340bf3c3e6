//! `make bench`: the appliance as an operator meets it, in one QEMU run.
//!
//! - appliance boot: kernel start -> the agent accepting a session. The
//!   banner carries kernel start -> banner (from /proc/uptime); the rest,
//!   banner -> first completed handshake (`keelctl pair`, retried), is
//!   timed on the host as the serial console shows the banner.
//! - management address: banner -> the DHCP lease on br0 printed (host
//!   timed, like the handshake).
//! - guest start: `keelctl guest start demo` issued -> the demo guest's
//!   greeting read through `keelctl guest console` (nested KVM in TCG),
//!   and -> the guest's own DHCP lease through its tap on br0.

// A test harness: a failed assumption here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keel_ovmf_tests::operator::{demo_spec, free_port, pairing_code, Console, Operator, GREETING};
use keel_ovmf_tests::{artefact, BootMedia, Qemu, QemuOptions};

const TIMEOUT: Duration = Duration::from_secs(420);

fn main() {
    let port = free_port();
    let mut options = QemuOptions::new(artefact("keel.img"), BootMedia::UsbStick);
    options.memory_mib = 2048;
    options.agent_port = Some(port);
    let mut qemu = Qemu::start("bench-appliance", &options);
    let prefix = format!("keel {} up in ", env!("CARGO_PKG_VERSION"));
    let banner = qemu.wait_for(&prefix, TIMEOUT);
    let banner_seen = Instant::now();
    let kernel_to_banner: u64 = banner
        .split(&prefix)
        .nth(1)
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparseable banner {banner:?}"));
    qemu.wait_for("management address: ", TIMEOUT);
    let banner_to_address = banner_seen.elapsed();
    let code = pairing_code(&mut qemu, 0, TIMEOUT);
    let work = qemu.workdir().join("operator");
    std::fs::create_dir_all(&work).expect("mkdir");
    let op = Operator {
        config: work.join("config"),
        host: format!("127.0.0.1:{port}"),
    };
    op.ok(&["keygen"]);
    let deadline = Instant::now() + TIMEOUT;
    while !op.run(&["pair", &op.host, &code]).status.success() {
        assert!(Instant::now() < deadline, "the agent never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let banner_to_agent = banner_seen.elapsed();

    let spec = work.join("demo.toml");
    std::fs::write(&spec, demo_spec()).expect("spec");
    op.ok(&["guest", "define", &spec.to_string_lossy()]);
    let started = Instant::now();
    op.ok(&["guest", "start", "demo"]);
    let console = Console::attach(&op, "demo");
    console.wait_for(&qemu, GREETING, TIMEOUT);
    let start_to_greeting = started.elapsed();
    console.wait_for(&qemu, "demo: eth0 (", TIMEOUT);
    let start_to_lease = started.elapsed();
    drop(console);
    qemu.monitor("quit");

    println!(
        "appliance ({:?}, one run):",
        keel_ovmf_tests::accel::choose().accel
    );
    println!(
        "  boot: kernel start -> agent accepting {:>6} ms  (kernel -> banner {kernel_to_banner} ms + banner -> first handshake {} ms)",
        kernel_to_banner + banner_to_agent.as_millis() as u64,
        banner_to_agent.as_millis()
    );
    println!(
        "  network: banner -> management address (DHCP on br0) {:>6} ms",
        banner_to_address.as_millis()
    );
    println!(
        "  guest start: request -> demo greeting on the console {:>6} ms  (nested KVM inside TCG)",
        start_to_greeting.as_millis()
    );
    println!(
        "  guest network: request -> the guest's DHCP lease through br0 {:>6} ms",
        start_to_lease.as_millis()
    );
}
