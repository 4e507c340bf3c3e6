//! PID 1 of the L2 test guest: reports what it sees, marks boot completion
//! on the boot timer port, then powers off, reboots or panics as asked by
//! `keel.action=` on its command line.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;

use keel_guest_rt::{cmdline_value, mount_basics};

/// keel-vmm's boot timer port (see vmm/src/arch/layout.rs).
use keel_common::guest_ports::BOOT_TIMER_PORT;

fn report(key: &str, value: impl std::fmt::Display) {
    println!("KEEL-TEST-GUEST {key}={value}");
}

fn mark_boot_done() {
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    let granted = unsafe { nix::libc::ioperm(u64::from(BOOT_TIMER_PORT), 1, 1) } == 0;
    if !granted {
        report("marker", "denied");
        return;
    }
    // SAFETY: a byte write to an I/O port this process was just granted;
    // keel-vmm's boot timer device handles it and it touches no memory.
    unsafe {
        std::arch::asm!("out dx, al", in("dx") BOOT_TIMER_PORT, in("al") 1u8, options(nomem, nostack))
    };
    report("marker", "sent");
}

fn check_disk() {
    let Ok(mut disk) = OpenOptions::new().read(true).write(true).open("/dev/vda") else {
        report("disk", "missing");
        return;
    };
    let mut sector0 = [0u8; 512];
    if disk.read_exact(&mut sector0).is_err() {
        report("disk", "unreadable");
        return;
    }
    let text: String = sector0
        .iter()
        .take_while(|b| b.is_ascii_graphic())
        .map(|b| *b as char)
        .collect();
    report("disk_read", text);
    let mut sector1 = [0u8; 512];
    sector1[..24].copy_from_slice(b"written-by-keel-test-gst");
    let wrote = disk.seek(SeekFrom::Start(512)).is_ok()
        && disk.write_all(&sector1).is_ok()
        && disk.sync_all().is_ok();
    let mut back = [0u8; 512];
    let verified = wrote && disk.read_exact_at(&mut back, 512).is_ok() && back == sector1;
    report("disk_write", if verified { "ok" } else { "failed" });
}

fn check_rng() {
    let mut buf = [0u8; 32];
    let ok = std::fs::File::open("/dev/hwrng")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    report(
        "rng",
        if ok && buf.iter().any(|b| *b != 0) {
            "ok"
        } else {
            "failed"
        },
    );
}

/// Which transport the virtio devices came over: each device's sysfs
/// node sits under its PCI function or its virtio-mmio platform device.
fn check_transport() {
    let mut kinds: Vec<&str> = std::fs::read_dir("/sys/bus/virtio/devices")
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| std::fs::canonicalize(entry.path()).ok())
                .map(|path| {
                    let path = path.to_string_lossy();
                    if path.contains("/pci0000:00/") {
                        "pci"
                    } else if path.contains("LNRO0005") || path.contains("virtio-mmio") {
                        "mmio"
                    } else {
                        "other"
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    kinds.sort_unstable();
    kinds.dedup();
    report(
        "transport",
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join("+")
        },
    );
    // MSI(-X) vectors the PCI functions' drivers enabled.
    let vectors: usize = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|dir| {
            dir.flatten()
                .filter_map(|f| std::fs::read_dir(f.path().join("msi_irqs")).ok())
                .map(|irqs| irqs.count())
                .sum()
        })
        .unwrap_or(0);
    report("msi_vectors", vectors);
}

/// Waits (briefly) for Linux's keyboard driver to bind to the i8042, so
/// ctrl-alt-del sent after the boot marker is not lost.
fn check_keyboard() {
    let bound = Path::new("/sys/bus/serio/drivers/atkbd/serio0");
    for _ in 0..100 {
        if bound.exists() {
            report("keyboard", "bound");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    report("keyboard", "missing");
}

/// Sends `mib` MiB over TCP to the gateway's port 9000 (the test bed
/// times it on its side): user-mode NAT (10.0.2.2) or a tap (10.0.3.1).
fn network_bench(mode: &str, mib: usize) {
    let (ip, gateway) = if mode == "tap-bench" {
        ([10, 0, 3, 2], SocketAddr::from(([10, 0, 3, 1], 9000)))
    } else {
        ([10, 0, 2, 15], SocketAddr::from(([10, 0, 2, 2], 9000)))
    };
    if let Err(err) = keel_guest_rt::configure_interface("eth0", Some((ip, [255, 255, 255, 0]))) {
        report("netbench", format!("eth0-failed:{err}"));
        return;
    }
    let chunk = vec![0x5au8; 64 << 10];
    let sent = std::net::TcpStream::connect_timeout(&gateway, std::time::Duration::from_secs(20))
        .and_then(|mut s| {
            for _ in 0..mib * 16 {
                s.write_all(&chunk)?;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            // Wait for the server's close so every byte was taken.
            let mut sink = [0u8; 16];
            let _ = s.read(&mut sink);
            Ok(())
        });
    report(
        "netbench",
        if sent.is_ok() {
            "sent".to_string()
        } else {
            format!("failed:{sent:?}")
        },
    );
}

/// The user-mode networking scenario: fetch a page from the host through
/// the NAT, then serve one connection that arrives through a port forward.
fn network_checks() {
    if let Err(err) =
        keel_guest_rt::configure_interface("eth0", Some(([10, 0, 2, 15], [255, 255, 255, 0])))
    {
        report("net", format!("eth0-failed:{err}"));
        return;
    }
    report("net", "eth0-up");
    let fetched = std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([10, 0, 2, 2], 8080)),
        std::time::Duration::from_secs(20),
    )
    .and_then(|mut s| {
        s.write_all(b"GET / HTTP/1.0\r\nHost: 10.0.2.2\r\n\r\n")?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        Ok(response)
    });
    match fetched {
        Ok(response) => report("http", response.lines().last().unwrap_or("").trim()),
        Err(err) => report("http", format!("failed:{err}")),
    }
    match std::net::TcpListener::bind("0.0.0.0:22") {
        Ok(listener) => {
            report("listening", "22");
            if let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.write_all(b"hello from the guest\n");
            }
        }
        Err(err) => report("listening", format!("failed:{err}")),
    }
}

fn main() {
    mount_basics();
    report("booted", "yes");
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    report("cpus", cpus);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    report("mem_kib", mem_kib);
    check_disk();
    check_rng();
    check_transport();
    check_keyboard();
    let cmdline = keel_guest_rt::kernel_cmdline();
    match cmdline_value(&cmdline, "keel.net").as_deref() {
        Some("user") => network_checks(),
        Some(mode @ ("user-bench" | "tap-bench")) => {
            let mib = cmdline_value(&cmdline, "keel.netbench")
                .and_then(|v| v.parse().ok())
                .unwrap_or(32);
            network_bench(mode, mib);
        }
        _ => {}
    }
    mark_boot_done();
    let action = cmdline_value(&cmdline, "keel.action").unwrap_or_else(|| "poweroff".into());
    report("action", &action);
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    match action.as_str() {
        "reboot" => {
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        }
        // PID 1 exiting panics the kernel, which reports it over pvpanic.
        "panic" => std::process::exit(1),
        // Stay up for the control-socket scenarios; ctrl-alt-del then
        // reboots through the kernel's default handler.
        "wait" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        _ => keel_guest_rt::power_off(),
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
