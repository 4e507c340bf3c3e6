//! PID 1 of the L1 test machine: the Keel kernel booted in QEMU TCG, whose
//! own KVM (nested, through TCG's SVM) runs keel-vmm. It runs each scenario
//! named by `keel.testbed=` (comma-separated: poweroff, reboot, panic),
//! prints one `TESTBED` line per result, and powers L1 off.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use keel_testbed::{cmdline_value, mount_basics, power_off};

const DISK: &str = "/tmp/disk.raw";
const SECTOR0: &[u8] = b"keel-disk-sector0";
const GUEST_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux loglevel=4";

fn write_disk() -> std::io::Result<()> {
    let mut image = vec![0u8; 1 << 20];
    image[..SECTOR0.len()].copy_from_slice(SECTOR0);
    std::fs::write(DISK, image)
}

fn spec(scenario: &str, vcpus: u32) -> String {
    format!(
        "name = \"{scenario}\"\nvcpus = {vcpus}\nmemory_mib = 256\n\n[boot]\nkernel = \"/guest/bzImage\"\ninitrd = \"/guest/initrd.cpio\"\ncmdline = \"{GUEST_CMDLINE} keel.action={scenario}\"\n\n[[disk]]\npath = \"{DISK}\"\nserial = \"testbed-disk\"\n"
    )
}

fn run(scenario: &str) {
    if let Err(err) = write_disk() {
        println!("TESTBED scenario={scenario} error=cannot-write-disk:{err}");
        return;
    }
    let config = format!("/tmp/{scenario}.toml");
    if let Err(err) = std::fs::write(&config, spec(scenario, 2)) {
        println!("TESTBED scenario={scenario} error=cannot-write-spec:{err}");
        return;
    }
    let started = Instant::now();
    let status = Command::new("/usr/bin/keel-vmm")
        .args(["--config", &config, "--console-stdio"])
        .status();
    let ms = started.elapsed().as_millis();
    match status {
        Ok(status) => println!(
            "TESTBED scenario={scenario} exit={} elapsed_ms={ms}",
            status.code().unwrap_or(-1)
        ),
        Err(err) => println!("TESTBED scenario={scenario} error=cannot-run-keel-vmm:{err}"),
    }
    if let Ok(disk) = std::fs::read(DISK) {
        let sector1: String = disk[512..]
            .iter()
            .take_while(|b| b.is_ascii_graphic())
            .map(|b| *b as char)
            .collect();
        println!("TESTBED scenario={scenario} disk_sector1={sector1}");
    }
}

fn main() {
    mount_basics();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    println!("TESTBED kvm={}", Path::new("/dev/kvm").exists());
    let scenarios = cmdline_value(&cmdline, "keel.testbed").unwrap_or_else(|| "poweroff".into());
    for scenario in scenarios.split(',') {
        run(scenario);
    }
    println!("TESTBED done");
    power_off();
}
