//! PID 1 of the L1 test machine: the Keel kernel booted in QEMU TCG, whose
//! own KVM (nested, through TCG's SVM) runs keel-vmm. It runs each scenario
//! named by `keel.testbed=` (comma-separated: poweroff, reboot, panic,
//! ..., debian-TRANSPORT-FLAVOUR), prints one `TESTBED` line per result,
//! and powers L1 off.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keel_common::guest::{LOADER_INITRD, LOADER_KERNEL};
use keel_common::vmm_api::{read_frame, write_frame, VmmRequest, VmmResponse};
use keel_common::vmm_exit::VmmExitStatus;

use keel_guest_rt::{cmdline_value, mount_basics, power_off};

#[path = "../output.rs"]
mod output;
#[path = "../watchdog.rs"]
mod watchdog;

/// The scratch data partition keel-vmm resolves the spec's files beneath.
const DATA: &str = "/tmp/keel";
const DISK: &str = "/tmp/keel/disks/disk.raw";
const SECTOR0: &[u8] = b"keel-disk-sector0";
const GUEST_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 loglevel=4";

/// The data partition: the guest's kernels and initrd copied into
/// images/ (a spec names no file outside images/ and disks/), the disk.
fn write_disk() -> std::io::Result<()> {
    for dir in ["images", "disks"] {
        std::fs::create_dir_all(Path::new(DATA).join(dir))?;
    }
    // The guest kernels and initrd, and keel-loader where the image
    // keeps it (init copies the same files out of the Keel image).
    for (source, target) in [
        ("bzImage", "bzImage"),
        ("vmlinux", "vmlinux"),
        ("initrd.cpio", "initrd.cpio"),
        ("bzImage", LOADER_KERNEL.trim_start_matches("images/")),
        ("loader.cpio", LOADER_INITRD.trim_start_matches("images/")),
    ] {
        let (source, target) = (
            Path::new("/guest").join(source),
            Path::new(DATA).join("images").join(target),
        );
        if source.exists() && !target.exists() {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(source, target)?;
        }
    }
    let mut image = vec![0u8; 1 << 20];
    image[..SECTOR0.len()].copy_from_slice(SECTOR0);
    std::fs::write(DISK, image)
}

/// The virtio transport every scenario's guest gets: `keel.transport=` on
/// L1's command line, pci by default (as in a spec).
static TRANSPORT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn transport() -> &'static str {
    TRANSPORT.get().map_or("pci", String::as_str)
}

fn spec(scenario: &str, vcpus: u32) -> String {
    let transport = transport();
    format!(
        "name = \"{scenario}\"\nvcpus = {vcpus}\nmemory_mib = 256\ntransport = \"{transport}\"\n\n[boot]\nkernel = \"images/bzImage\"\ninitrd = \"images/initrd.cpio\"\ncmdline = \"{GUEST_CMDLINE} keel.action={scenario}\"\n\n[[disk]]\npath = \"disks/disk.raw\"\nserial = \"testbed-disk\"\n"
    )
}

fn run(scenario: &str) -> Option<&'static str> {
    if let Err(err) = write_disk() {
        println!("TESTBED scenario={scenario} error=cannot-write-disk:{err}");
        return None;
    }
    let config = format!("/tmp/{scenario}.toml");
    // `pvh` boots the ELF vmlinux through its PVH entry; `bigmem` gives the
    // guest 4 GiB, so its RAM continues above the 32-bit MMIO hole.
    let text = match scenario {
        "pvh" => spec("poweroff", 2)
            .replace("images/bzImage", "images/vmlinux")
            .replace("\"poweroff\"", "\"pvh\""),
        "bigmem" => spec("poweroff", 1)
            .replace("memory_mib = 256", "memory_mib = 4096")
            .replace("\"poweroff\"", "\"bigmem\""),
        // keel-loader on a disk with no file system: it must say so and
        // end the VM with its own status.
        "nothing-to-boot" => {
            let (boot, rest) = spec(scenario, 1)
                .split_once("[boot]")
                .map(|(b, r)| (b.to_string(), r.to_string()))
                .unwrap_or_default();
            let disks = rest.find("[[disk]]").map_or("", |at| &rest[at..]);
            format!("{boot}[boot]\nfrom = \"disk\"\n\n{disks}")
        }
        _ => spec(scenario, 2),
    };
    if let Err(err) = std::fs::write(&config, text) {
        println!("TESTBED scenario={scenario} error=cannot-write-spec:{err}");
        return None;
    }
    let socket = format!("/tmp/{scenario}.sock");
    let started = Instant::now();
    let mut child = spawn_vmm(
        scenario,
        &[
            "--config",
            &config,
            "--console-stdio",
            "--api-socket",
            &socket,
        ],
        false,
    )?;
    let outcome = watchdog::wait(scenario, &mut child, RUN_DEADLINE, || {
        describe_vmm(scenario, &socket)
    });
    output::drain();
    let ms = started.elapsed().as_millis();
    let fault = emulator_fault(scenario, &outcome);
    match outcome {
        watchdog::Outcome::Exited(status) => println!(
            "TESTBED scenario={scenario} exit={} elapsed_ms={ms}",
            status.code().unwrap_or(-1)
        ),
        watchdog::Outcome::Hung => {
            println!("TESTBED scenario={scenario} exit=hung elapsed_ms={ms}")
        }
    }
    if let Ok(disk) = std::fs::read(DISK) {
        let sector1: String = disk[512..]
            .iter()
            .take_while(|b| b.is_ascii_graphic())
            .map(|b| *b as char)
            .collect();
        println!("TESTBED scenario={scenario} disk_sector1={sector1}");
    }
    fault
}

/// Why a run may have met a fault of the nested-TCG test bed rather than
/// of keel-vmm: the guest hung, or crashed (a triple fault) where the
/// scenario does not ask for a crash. QEMU's emulated SVM is not a CPU
/// (one known gap: it does not intercept XSETBV), and such faults strike
/// about one guest boot in twenty, each at a different place.
fn emulator_fault(scenario: &str, outcome: &watchdog::Outcome) -> Option<&'static str> {
    match outcome {
        watchdog::Outcome::Hung => Some("hung"),
        watchdog::Outcome::Exited(status)
            if status.code() == Some(i32::from(VmmExitStatus::Crash.code()))
                && scenario != "panic" =>
        {
            Some("crashed")
        }
        watchdog::Outcome::Exited(_) => None,
    }
}

/// How long one guest run may take before the watchdog dumps and kills
/// it: a TCG-nested boot takes seconds, a minute at most.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What a hung VMM says about itself: its state and its vCPUs' exits by
/// reason (the last exit shows in which counter moves).
fn describe_vmm(scenario: &str, socket: &str) {
    for req in [VmmRequest::Info, VmmRequest::Stats] {
        match request(socket, &req) {
            Ok(answer) => println!("TESTBED-HANG scenario={scenario} {answer:?}"),
            Err(err) => println!("TESTBED-HANG scenario={scenario} control=unanswered:{err}"),
        }
    }
}

/// Boots and reboots (i8042 reset) a guest with a verbose console
/// `keel.soak=` times (default 100), each run under the watchdog, and
/// reports how many cycles ended as they should.
fn run_soak(scenario: &str, cycles: u32) {
    if let Err(err) = write_disk() {
        println!("TESTBED scenario={scenario} error=cannot-write-disk:{err}");
        return;
    }
    let config = format!("/tmp/{scenario}.toml");
    let text = spec("reboot", 1).replace("loglevel=4", "loglevel=7");
    if let Err(err) = std::fs::write(&config, text) {
        println!("TESTBED scenario={scenario} error=cannot-write-spec:{err}");
        return;
    }
    let (socket, log) = (
        format!("/tmp/{scenario}.sock"),
        format!("/tmp/{scenario}.console"),
    );
    let (mut rebooted, mut other, mut hung) = (0u32, 0u32, 0u32);
    let mut times = Vec::new();
    for cycle in 0..cycles {
        let _ = std::fs::remove_file(&log);
        let started = Instant::now();
        let Some(mut child) = spawn_vmm(
            scenario,
            &[
                "--config",
                &config,
                "--console-log",
                &log,
                "--api-socket",
                &socket,
            ],
            false,
        ) else {
            return;
        };
        let outcome = watchdog::wait(scenario, &mut child, RUN_DEADLINE, || {
            describe_vmm(scenario, &socket)
        });
        output::drain();
        match outcome {
            // keel-vmm's exit status for a guest reboot.
            watchdog::Outcome::Exited(status) if status.code() == Some(3) => rebooted += 1,
            watchdog::Outcome::Exited(status) => {
                other += 1;
                println!(
                    "TESTBED scenario={scenario} cycle={cycle} unexpected_exit={}",
                    status.code().unwrap_or(-1)
                );
            }
            watchdog::Outcome::Hung => {
                hung += 1;
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = tail.lines().collect();
                for line in &lines[lines.len().saturating_sub(20)..] {
                    println!("TESTBED-HANG scenario={scenario} cycle={cycle} console: {line}");
                }
            }
        }
        times.push(started.elapsed().as_millis());
    }
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    let max = times.last().copied().unwrap_or(0);
    println!(
        "TESTBED scenario={scenario} cycles={cycles} rebooted={rebooted} other={other} hung={hung} median_ms={median} max_ms={max}"
    );
}

/// Sends one request on a fresh connection and returns the answer.
fn request(socket: &str, req: &VmmRequest) -> Result<VmmResponse, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write_frame(&mut stream, req).map_err(|e| e.to_string())?;
    read_frame(&mut stream).map_err(|e| e.to_string())
}

/// Drives a running guest through the control socket: info, pause,
/// resume, stats, console attach, then ctrl-alt-del (`control`) or kill
/// (`kill`).
fn run_controlled(scenario: &str) {
    if let Err(err) = write_disk() {
        println!("TESTBED scenario={scenario} error=cannot-write-disk:{err}");
        return;
    }
    let config = format!("/tmp/{scenario}.toml");
    let socket = format!("/tmp/{scenario}.sock");
    if let Err(err) = std::fs::write(
        &config,
        spec("wait", 2).replace("name = \"wait\"", &format!("name = \"{scenario}\"")),
    ) {
        println!("TESTBED scenario={scenario} error=cannot-write-spec:{err}");
        return;
    }
    let Some((mut child, started, ready_ms)) = spawn_with_socket(scenario, &config, &socket) else {
        return;
    };
    println!("TESTBED scenario={scenario} socket_ready_ms={ready_ms:.0}");
    // Wait for the guest to report its boot marker.
    let mut booted = false;
    while started.elapsed() < Duration::from_secs(120) {
        if let Ok(VmmResponse::Info(info)) = request(&socket, &VmmRequest::Info) {
            if info.boot_marker_ms.is_some() {
                println!(
                    "TESTBED scenario={scenario} boot_marker_ms={}",
                    info.boot_marker_ms.unwrap_or(0)
                );
                booted = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("TESTBED scenario={scenario} booted={booted}");
    let state = |label: &str| match request(&socket, &VmmRequest::Info) {
        Ok(VmmResponse::Info(info)) => {
            println!("TESTBED scenario={scenario} {label}={:?}", info.state)
        }
        other => println!("TESTBED scenario={scenario} {label}=error:{other:?}"),
    };
    println!(
        "TESTBED scenario={scenario} pause={:?}",
        request(&socket, &VmmRequest::Pause)
    );
    state("state_after_pause");
    println!(
        "TESTBED scenario={scenario} resume={:?}",
        request(&socket, &VmmRequest::Resume)
    );
    state("state_after_resume");
    if let Ok(VmmResponse::Stats(stats)) = request(&socket, &VmmRequest::Stats) {
        for device in &stats.devices {
            for (name, value) in &device.counters {
                println!(
                    "TESTBED scenario={scenario} stat_{}_{name}={value}",
                    device.name
                );
            }
        }
        for (name, value) in &stats.exits {
            println!("TESTBED scenario={scenario} exits_{name}={value}");
        }
    }
    // Console attach: the guest echoes nothing, but kernel output from the
    // shutdown below arrives as Console frames.
    let mut console = UnixStream::connect(&socket).ok();
    if let Some(stream) = console.as_mut() {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = write_frame(stream, &VmmRequest::ConsoleAttach);
        let attached: Result<VmmResponse, _> = read_frame(stream);
        println!("TESTBED scenario={scenario} attach={attached:?}");
    }
    let last = if scenario == "kill" {
        VmmRequest::Kill
    } else {
        VmmRequest::Shutdown
    };
    println!(
        "TESTBED scenario={scenario} last={:?}",
        request(&socket, &last)
    );
    let mut console_bytes = 0usize;
    if let Some(stream) = console.as_mut() {
        // Until the VMM exits and the stream ends (or 10 s of silence).
        while let Ok(VmmResponse::Console(bytes)) = read_frame::<_, VmmResponse>(stream) {
            console_bytes += bytes.len();
        }
    }
    println!("TESTBED scenario={scenario} console_bytes={console_bytes}");
    // The guest must end by itself; if it does not, say so and kill it.
    report_exit(scenario, &mut child);
}

/// Sums `Rss:` over the mappings in /proc/PID/smaps: (all, guest memory).
/// Guest memory is the anonymous mapping exactly `guest_kib` long.
fn rss_kib(pid: u32, guest_kib: u64) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest, mut in_guest) = (0, 0, false);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Size:"), Some(kib)) => in_guest = kib.parse::<u64>().ok() == Some(guest_kib),
            (Some("Rss:"), Some(kib)) => {
                let kib: u64 = kib.parse().unwrap_or(0);
                total += kib;
                if in_guest {
                    guest += kib;
                }
            }
            _ => {}
        }
    }
    (total, guest)
}

/// Boots a 1 vCPU / 128 MiB guest and reports the control socket's ready
/// time, the boot marker time and the VMM's memory overhead (RSS minus
/// guest memory the guest touched), then kills it. `measure-pci` and
/// `measure-mmio` pick the transport whatever `keel.transport` says.
fn run_measure(scenario: &str) {
    let config = format!("/tmp/{scenario}.toml");
    let socket = format!("/tmp/{scenario}.sock");
    let mut spec = spec("wait", 1).replace("memory_mib = 256", "memory_mib = 128");
    if let Some(wanted) = scenario.strip_prefix("measure-") {
        spec = spec.replace(
            &format!("transport = \"{}\"", transport()),
            &format!("transport = \"{wanted}\""),
        );
    }
    if write_disk()
        .and_then(|_| std::fs::write(&config, spec))
        .is_err()
    {
        println!("TESTBED scenario={scenario} error=setup");
        return;
    }
    let Some((mut child, started, ready_ms)) = spawn_with_socket(scenario, &config, &socket) else {
        return;
    };
    let mut marker = None;
    while started.elapsed() < Duration::from_secs(120) && marker.is_none() {
        if let Ok(VmmResponse::Info(info)) = request(&socket, &VmmRequest::Info) {
            marker = info.boot_marker_ms;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the guest settle before measuring memory.
    std::thread::sleep(Duration::from_millis(500));
    let (total, guest) = rss_kib(child.id(), 128 * 1024);
    println!(
        "TESTBED scenario={scenario} socket_ready_ms={ready_ms:.1} boot_marker_ms={} rss_kib={total} guest_rss_kib={guest} overhead_kib={}",
        marker.map(|m| m.to_string()).unwrap_or_else(|| "none".into()),
        total.saturating_sub(guest)
    );
    let _ = request(&socket, &VmmRequest::Kill);
    let _ = child.wait();
}

/// The same guest under QEMU's microvm machine on the same KVM, when the
/// bench packed QEMU into this initramfs: the baseline for boot time.
/// Time runs from spawning QEMU to the guest's write to the boot timer
/// port, which an isa-debugcon device at that port copies to a file.
fn run_qemu_baseline(scenario: &str) {
    let qemu = "/usr/bin/qemu-system-x86_64";
    if !Path::new(qemu).exists() {
        println!("TESTBED scenario={scenario} error=no-qemu-in-initramfs");
        return;
    }
    let marker = "/tmp/qemu-marker";
    let _ = std::fs::remove_file(marker);
    if write_disk().is_err() {
        println!("TESTBED scenario={scenario} error=setup");
        return;
    }
    let started = Instant::now();
    let append = format!("{GUEST_CMDLINE} keel.action=wait");
    let child = Command::new(qemu)
        .args([
            "-M",
            "microvm,x-option-roms=off,rtc=off",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "128",
            "-smp",
            "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "file:/tmp/qemu-console",
        ])
        .args([
            "-kernel",
            "/guest/bzImage",
            "-initrd",
            "/guest/initrd.cpio",
            "-append",
            &append,
        ])
        .args([
            "-chardev",
            &format!("file,id=marker,path={marker}"),
            "-device",
            "isa-debugcon,iobase=0x440,chardev=marker",
        ])
        .args([
            "-drive",
            &format!("file={DISK},format=raw,if=none,id=disk"),
            "-device",
            "virtio-blk-device,drive=disk",
        ])
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            println!("TESTBED scenario={scenario} error=spawn:{err}");
            return;
        }
    };
    let mut marker_ms = None;
    while started.elapsed() < Duration::from_secs(120) {
        if std::fs::metadata(marker)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            marker_ms = Some(started.elapsed().as_millis());
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            println!("TESTBED scenario={scenario} error=qemu-exited:{status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    match marker_ms {
        Some(ms) => println!("TESTBED scenario={scenario} boot_marker_ms={ms}"),
        None => {
            let console = std::fs::read_to_string("/tmp/qemu-console").unwrap_or_default();
            let tail: String = console
                .chars()
                .rev()
                .take(600)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            println!("TESTBED scenario={scenario} error=no-marker console_tail={tail:?}");
        }
    }
}

/// Starts keel-vmm with `args` (its stdout piped when asked); reports a
/// failure to start as the scenario's result.
fn spawn_vmm(scenario: &str, args: &[&str], pipe_stdout: bool) -> Option<std::process::Child> {
    let mut cmd = Command::new("/usr/bin/keel-vmm");
    cmd.args(args).args(["--base-dir", DATA]);
    // The console and the log reach the serial port a line at a time
    // (see `output`); a caller that pipes stdout reads it itself.
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match cmd.spawn() {
        Ok(mut child) => {
            if let Some(stderr) = child.stderr.take() {
                output::forward(stderr);
            }
            if !pipe_stdout {
                if let Some(stdout) = child.stdout.take() {
                    output::forward(stdout);
                }
            }
            Some(child)
        }
        Err(err) => {
            println!("TESTBED scenario={scenario} error=cannot-run-keel-vmm:{err}");
            None
        }
    }
}

/// Starts keel-vmm with a control socket and waits (up to 10 s) for the
/// socket to appear. Returns the child, when it was started, and how many
/// milliseconds the socket took.
fn spawn_with_socket(
    scenario: &str,
    config: &str,
    socket: &str,
) -> Option<(std::process::Child, Instant, f64)> {
    let started = Instant::now();
    let child = spawn_vmm(
        scenario,
        &["--config", config, "--api-socket", socket],
        false,
    )?;
    while !Path::new(socket).exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_micros(200));
    }
    Some((child, started, started.elapsed().as_secs_f64() * 1000.0))
}

/// Waits up to a minute for keel-vmm to end by itself and prints its exit
/// status; a VMM that does not end is dumped by the watchdog, killed and
/// reported as such.
fn report_exit(scenario: &str, child: &mut std::process::Child) {
    let _ = report_exit_within(scenario, child, Duration::from_secs(60));
}

/// [`report_exit`] with a deadline of `limit`; returns the run's
/// [`emulator_fault`], if it met one.
fn report_exit_within(
    scenario: &str,
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<&'static str> {
    let outcome = watchdog::wait(scenario, child, limit, || {});
    output::drain();
    let fault = emulator_fault(scenario, &outcome);
    match outcome {
        watchdog::Outcome::Exited(status) => println!(
            "TESTBED scenario={scenario} exit={}",
            status.code().unwrap_or(-1)
        ),
        watchdog::Outcome::Hung => println!("TESTBED scenario={scenario} exit=did-not-end"),
    }
    fault
}

/// Counts the bytes of each connection to port 9000 and reports them with
/// the time from accept to the sender's close.
fn start_sink_server() -> std::io::Result<std::sync::mpsc::Receiver<(u64, f64)>> {
    let listener = std::net::TcpListener::bind("0.0.0.0:9000")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let started = Instant::now();
            let mut buf = vec![0u8; 256 << 10];
            let mut total = 0u64;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = tx.send((total, started.elapsed().as_secs_f64()));
        }
    });
    Ok(rx)
}

const NETBENCH_MIB: u64 = 32;

fn report_throughput(scenario: &str, result: Option<(u64, f64)>) {
    match result {
        Some((bytes, secs)) if bytes > 0 => println!(
            "TESTBED scenario={scenario} bytes={bytes} ms={:.0} mib_s={:.1}",
            secs * 1000.0,
            bytes as f64 / (1 << 20) as f64 / secs
        ),
        other => println!("TESTBED scenario={scenario} error=no-transfer:{other:?}"),
    }
}

/// Network throughput, guest to host: over user-mode NAT, over a tap, and
/// the same transfer on L1's own loopback as the baseline.
fn run_net_bench(scenario: &str) {
    if let Err(err) = keel_guest_rt::configure_interface("lo", None) {
        println!("TESTBED scenario={scenario} error=lo:{err}");
        return;
    }
    let sink = match start_sink_server() {
        Ok(rx) => rx,
        Err(err) => {
            println!("TESTBED scenario={scenario} error=sink:{err}");
            return;
        }
    };
    // Baseline: L1 to itself.
    let chunk = vec![0x5au8; 64 << 10];
    let sent = std::net::TcpStream::connect("127.0.0.1:9000").and_then(|mut s| {
        for _ in 0..NETBENCH_MIB * 16 {
            s.write_all(&chunk)?;
        }
        Ok(())
    });
    if sent.is_err() {
        println!("TESTBED scenario=netloop error=send");
    }
    report_throughput("netloop", sink.recv_timeout(Duration::from_secs(120)).ok());

    for (name, mode, nic) in [
        // The guest reaches the host's sink on port 9000 only if listed.
        (
            "netuser",
            "user-bench",
            "[[net]]\nmode = \"user\"\nhost_ports = [9000]\n",
        ),
        (
            "nettap",
            "tap-bench",
            "[[net]]\nmode = \"tap\"\ntap = \"keeltap0\"\n",
        ),
    ] {
        let config = format!("/tmp/{name}.toml");
        let text = spec("poweroff", 1)
            .replace("\"poweroff\"", &format!("\"{name}\""))
            .replace(
                "keel.action=poweroff",
                &format!("keel.action=poweroff keel.net={mode} keel.netbench={NETBENCH_MIB}"),
            )
            + "\n"
            + nic;
        if write_disk()
            .and_then(|_| std::fs::write(&config, text))
            .is_err()
        {
            println!("TESTBED scenario={name} error=setup");
            continue;
        }
        let Some(mut child) = spawn_vmm(name, &["--config", &config], false) else {
            continue;
        };
        if mode == "tap-bench" {
            // keel-vmm creates the tap; give it the host side's address.
            let started = Instant::now();
            while !Path::new("/sys/class/net/keeltap0").exists()
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Err(err) = keel_guest_rt::configure_interface(
                "keeltap0",
                Some(([10, 0, 3, 1], [255, 255, 255, 0])),
            ) {
                println!("TESTBED scenario={name} error=tap:{err}");
            }
        }
        report_throughput(name, sink.recv_timeout(Duration::from_secs(300)).ok());
        report_exit(name, &mut child);
    }
}

/// Serves `hello from the host` over HTTP/1.0 on 127.0.0.1:8080, for the
/// guest to fetch through user-mode NAT.
fn start_http_server() -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:8080")?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = conn.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the host\n",
            );
        }
    });
    Ok(())
}

/// User-mode networking: the guest fetches a page from L1's loopback
/// through the NAT (port 8080 listed in `host_ports`: the host is closed
/// to guests otherwise), and L1 reaches a server in the guest through a port
/// forward (127.0.0.1:8022 -> guest port 22).
fn run_user_net(scenario: &str) {
    if let Err(err) = keel_guest_rt::configure_interface("lo", None)
        .map_err(|e| e.to_string())
        .and_then(|_| start_http_server().map_err(|e| e.to_string()))
    {
        println!("TESTBED scenario={scenario} error=http-server:{err}");
        return;
    }
    let config = format!("/tmp/{scenario}.toml");
    let text = spec("poweroff", 1)
        .replace("\"poweroff\"", &format!("\"{scenario}\""))
        .replace("keel.action=poweroff", "keel.action=poweroff keel.net=user")
        + "\n[[net]]\nmode = \"user\"\nhostfwd = [\"tcp:127.0.0.1:8022-:22\"]\nhost_ports = [8080]\n";
    if write_disk()
        .and_then(|_| std::fs::write(&config, text))
        .is_err()
    {
        println!("TESTBED scenario={scenario} error=setup");
        return;
    }
    let Some(mut child) = spawn_vmm(scenario, &["--config", &config, "--console-stdio"], true)
    else {
        return;
    };
    // Pass the guest console through, and connect only once the guest
    // says it listens: an early attempt would leave a half-open
    // connection for the guest to accept instead of ours.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                println!("{line}");
                if line.contains("KEEL-TEST-GUEST listening=22") {
                    let _ = ready_tx.send(());
                }
            }
        });
    }
    let mut answer = String::new();
    if ready_rx.recv_timeout(Duration::from_secs(120)).is_ok() {
        if let Ok(mut conn) = std::net::TcpStream::connect("127.0.0.1:8022") {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = conn.read_to_string(&mut answer);
        }
    }
    println!(
        "TESTBED scenario={scenario} fwd={}",
        answer.trim().replace(' ', "_")
    );
    report_exit(scenario, &mut child);
}

/// Where L1's initramfs holds the Debian guest's kernels and initrds.
const DEBIAN_BOOT: &str = "/guest/debian";
/// The serial QEMU gives the Debian root disk, by which L1 finds it.
const DEBIAN_DISK_SERIAL: &str = "keel-debian";
/// The disk as host.toml would allow-list it: the link udev would make.
const DEBIAN_DISK: &str = "/dev/disk/by-id/virtio-keel-debian";
/// A Debian boot under nested TCG takes minutes; one that goes on longer
/// than this is stuck.
const DEBIAN_LIMIT: Duration = Duration::from_secs(480);

/// Links [`DEBIAN_DISK`] to the block device whose serial is
/// [`DEBIAN_DISK_SERIAL`], as udev would (L1 has no udev).
fn link_debian_disk() -> std::io::Result<()> {
    let name = std::fs::read_dir("/sys/block")?
        .flatten()
        .find(|dev| {
            std::fs::read_to_string(dev.path().join("serial"))
                .is_ok_and(|s| s.trim() == DEBIAN_DISK_SERIAL)
        })
        .map(|dev| dev.file_name())
        .ok_or_else(|| std::io::Error::other("no disk with serial keel-debian"))?;
    let link = Path::new(DEBIAN_DISK);
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(Path::new("/dev").join(name), link)
}

/// The Debian guest's spec: its own kernel and initrd of `flavour` (cloud
/// or generic), root on the allow-listed disk, a user-mode NIC for DHCP,
/// the rng by default, on `transport` (pci or mmio).
fn debian_spec(scenario: &str, transport: &str, flavour: &str) -> String {
    format!(
        "name = \"{scenario}\"\nvcpus = 1\nmemory_mib = 512\ntransport = \"{transport}\"\n\n[boot]\nkernel = \"images/debian/vmlinuz-{flavour}\"\ninitrd = \"images/debian/initrd.img-{flavour}\"\ncmdline = \"root=/dev/vda ro console=ttyS0 panic=1\"\n\n[[disk]]\npath = \"{DEBIAN_DISK}\"\nserial = \"debian-root\"\n\n[[net]]\nmode = \"user\"\n"
    )
}

/// The Debian guest booted `from = "disk"`: keel-loader picks the kernel
/// Debian's packages left on the disk (its `/vmlinuz` links) and composes
/// `root=UUID=`; `panic=1` is added as in [`debian_spec`].
fn debian_disk_spec(scenario: &str, transport: &str) -> String {
    format!(
        "name = \"{scenario}\"\nvcpus = 1\nmemory_mib = 512\ntransport = \"{transport}\"\n\n[boot]\nfrom = \"disk\"\ncmdline_append = \"panic=1\"\n\n[[disk]]\npath = \"{DEBIAN_DISK}\"\nserial = \"debian-root\"\n\n[[net]]\nmode = \"user\"\n"
    )
}

/// Boots Debian 12 with Debian's own kernel and initrd
/// (`debian-TRANSPORT-FLAVOUR`) from the disk L1 has as a drive. The
/// guest prints its `KEEL-DEBIAN` line at multi-user.target and powers
/// off; `panic=1` makes a failing initramfs reboot instead of waiting at
/// its shell, so every outcome ends the VMM.
fn run_debian(scenario: &str) -> Option<&'static str> {
    let Some((transport, flavour)) = scenario
        .strip_prefix("debian-")
        .and_then(|rest| rest.split_once('-'))
    else {
        println!("TESTBED scenario={scenario} error=unknown-scenario");
        return None;
    };
    let images = Path::new(DATA).join("images/debian");
    // `debian-pci-disk`: no kernel named; keel-loader finds Debian's.
    let from_disk = flavour == "disk";
    let setup = std::fs::create_dir_all(&images)
        .and_then(|_| if from_disk { write_disk() } else { Ok(()) })
        .and_then(|_| {
            let files: &[&str] = if from_disk {
                &[]
            } else {
                &["vmlinuz", "initrd.img"]
            };
            files.iter().try_for_each(|file| {
                let name = format!("{file}-{flavour}");
                let target = images.join(&name);
                if target.exists() {
                    return Ok(());
                }
                std::fs::copy(Path::new(DEBIAN_BOOT).join(&name), target).map(|_| ())
            })
        })
        .and_then(|_| link_debian_disk());
    if let Err(err) = setup {
        println!("TESTBED scenario={scenario} error=setup:{err}");
        return None;
    }
    let config = format!("/tmp/{scenario}.toml");
    let spec = if from_disk {
        debian_disk_spec(scenario, transport)
    } else {
        debian_spec(scenario, transport, flavour)
    };
    if let Err(err) = std::fs::write(&config, spec) {
        println!("TESTBED scenario={scenario} error=cannot-write-spec:{err}");
        return None;
    }
    println!("TESTBED scenario={scenario} started");
    let started = Instant::now();
    let args = [
        "--config",
        &config,
        "--console-stdio",
        "--guest-device",
        DEBIAN_DISK,
    ];
    let mut child = spawn_vmm(scenario, &args, false)?;
    let fault = report_exit_within(scenario, &mut child, DEBIAN_LIMIT);
    println!(
        "TESTBED scenario={scenario} elapsed_ms={}",
        started.elapsed().as_millis()
    );
    fault
}

fn main() {
    mount_basics();
    let cmdline = keel_guest_rt::kernel_cmdline();
    println!("TESTBED kvm={}", Path::new("/dev/kvm").exists());
    if let Some(transport) = cmdline_value(&cmdline, "keel.transport") {
        let _ = TRANSPORT.set(transport);
    }
    println!("TESTBED transport={}", transport());
    let scenarios = cmdline_value(&cmdline, "keel.testbed").unwrap_or_else(|| "poweroff".into());
    // `keel.retry=1` (set by the host's tests under TCG): a run that met an
    // [`emulator_fault`] is run once more, after a `retry` report that the
    // host's tests print and parse past.
    let retry = cmdline_value(&cmdline, "keel.retry").is_some_and(|v| v == "1");
    for scenario in scenarios.split(',') {
        let fault = run_scenario(scenario, &cmdline);
        if let (true, Some(reason)) = (retry, fault) {
            println!("TESTBED scenario={scenario} retry reason={reason}");
            let _ = run_scenario(scenario, &cmdline);
        }
    }
    println!("TESTBED done");
    power_off();
}

/// Runs one scenario; returns the [`emulator_fault`] its run met, for the
/// scenarios that boot one guest and so can be run again.
fn run_scenario(scenario: &str, cmdline: &str) -> Option<&'static str> {
    match scenario {
        "control" | "kill" => run_controlled(scenario),
        "measure" | "measure-pci" | "measure-mmio" => run_measure(scenario),
        "qemu" => run_qemu_baseline(scenario),
        "usernet" => run_user_net(scenario),
        "netbench" => run_net_bench(scenario),
        "soak" => run_soak(
            scenario,
            cmdline_value(cmdline, "keel.soak")
                .and_then(|n| n.parse().ok())
                .unwrap_or(100),
        ),
        _ if scenario.starts_with("debian-") => return run_debian(scenario),
        _ => return run(scenario),
    }
    None
}
