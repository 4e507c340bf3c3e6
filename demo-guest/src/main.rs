//! keel-demo-guest: PID 1 of the demo guest in the appliance image (booted
//! with the Keel kernel itself). It greets on the serial console, reports
//! the CPUs and memory it sees, then answers each console line, so an
//! operator can see both directions of `keelctl guest console` work.
//!
//! Each NIC asks DHCP for a lease and the result is printed (`network`).
//!
//! Console commands: any line is echoed; `panic` ends PID 1, which panics
//! the guest kernel (to watch the restart policy); ctrl-alt-del (`keelctl
//! guest stop`) powers it off cleanly.

mod network;

use std::io::{BufRead, Write};
use std::time::Duration;

use nix::sys::reboot::set_cad_enabled;
use nix::sys::signal::{SigSet, Signal};

/// The first line the guest prints; tests and `make run` look for it.
const GREETING: &str = "Hello from the Keel demo guest!";

fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// Ctrl-alt-del arrives as SIGINT once the kernel's hard reset is off.
fn watch_ctrl_alt_del() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("cad".into())
        .spawn(move || {
            if set.wait().is_ok() {
                println!("demo: powering off");
                keel_guest_rt::power_off();
            }
        });
}

fn main() {
    keel_guest_rt::mount_basics();
    let _ = set_cad_enabled(false);
    watch_ctrl_alt_del();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{GREETING}");
    println!("demo: {cpus} CPU(s), {} MiB of memory", memory_mib());
    println!("demo: type a line and it comes back; `panic` crashes this guest");
    let _ = std::io::stdout().flush();
    network::report_leases();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line == "panic" {
            println!("demo: crashing on request");
            let _ = std::io::stdout().flush();
            // PID 1 exiting panics the kernel, which reports it over pvpanic.
            std::process::exit(1);
        } else if !line.is_empty() {
            println!("demo: you said \"{line}\"");
            let _ = std::io::stdout().flush();
        }
    }
    // The console closed: keep running, as a guest does.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
