//! keel-vmm on the host's /dev/kvm with small hand-written payloads.
//!
//! These run quickly on any KVM, including this build machine's nested
//! shadow-paging one, where Linux guests cannot run (see the design page;
//! Linux guests are tested in the QEMU TCG test bed instead). Each payload
//! is assembled from `tests/payloads/*.S` with binutils at test time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/payload.rs"]
mod support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_common::vmm_api::{read_frame, write_frame, VmmRequest, VmmResponse};
use keel_vmm::arch::cpuid::CpuidProfile;
use keel_vmm::control::ControlServer;
use keel_vmm::exit::VmExit;
use keel_vmm::vm::{BootSource, DiskConfig, GuestFile, Transport, Vm, VmConfig};

use support::LOAD_ADDR;

/// True if /dev/kvm works; otherwise says loudly which test is skipped.
fn kvm_available(test: &str) -> bool {
    match kvm_ioctls::Kvm::new() {
        Ok(_) => true,
        Err(err) => {
            eprintln!(
                "SKIPPED {test}: /dev/kvm is unusable here ({err}); this host-KVM test did not run"
            );
            false
        }
    }
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-host-kvm-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn payload(name: &str, dir: &Path) -> Vec<u8> {
    support::assemble(name, &[], dir)
}

fn config(name: &str, code: Vec<u8>, dir: &Path, disks: Vec<DiskConfig>) -> VmConfig {
    VmConfig {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 64 << 20,
        boot: BootSource::Flat {
            code,
            load_addr: LOAD_ADDR,
        },
        disks,
        nets: vec![],
        rng: false,
        vsock: None,
        // The payloads drive virtio-mmio registers directly.
        transport: Transport::Mmio,
        cpuid_profile: CpuidProfile::Host,
        console_stdio: false,
        console_log: Some(dir.join("console.log")),
        console_log_cap: 1 << 20,
        loader_report: false,
        // The VM runs inside the test process, which does more than a VMM may.
        seccomp: false,
    }
}

fn run(config: VmConfig) -> (VmExit, String) {
    let log = config.console_log.clone().expect("console log");
    let vm = Vm::new(config).expect("build the VM");
    let exit = vm.run(None);
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    (exit, console)
}

#[test]
fn serial_output_and_acpi_power_off() {
    if !kvm_available("serial_output_and_acpi_power_off") {
        return;
    }
    let dir = scratch("serial");
    let (exit, console) = run(config(
        "serial",
        payload("serial_poweroff", &dir),
        &dir,
        vec![],
    ));
    assert_eq!(exit, VmExit::PowerOff);
    assert_eq!(exit.status().code(), 0);
    assert_eq!(console, "KEEL\n");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn i8042_reset_is_a_reboot() {
    if !kvm_available("i8042_reset_is_a_reboot") {
        return;
    }
    let dir = scratch("i8042");
    let (exit, _) = run(config("i8042", payload("i8042_reset", &dir), &dir, vec![]));
    assert_eq!(exit, VmExit::Reboot);
    assert_eq!(exit.status().code(), 3);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Runs the virtio_blk payload against a 1 MiB disk whose sector 1 holds
/// "SECTOR1!". Returns the exit, the console, the image before the run and
/// the disk file after it.
fn run_blk_payload(name: &str, read_only: bool) -> (VmExit, String, Vec<u8>, Vec<u8>) {
    let dir = scratch(name);
    let disk = dir.join("disk.raw");
    let mut image = vec![0u8; 1 << 20];
    image[512..520].copy_from_slice(b"SECTOR1!");
    std::fs::write(&disk, &image).expect("write disk");
    let disks = vec![DiskConfig {
        file: GuestFile::open(&disk, !read_only).expect("open disk"),
        read_only,
        serial: None,
        format: None,
        backing: None,
    }];
    let (exit, console) = run(config(name, payload("virtio_blk", &dir), &dir, disks));
    let after = std::fs::read(&disk).expect("read disk");
    std::fs::remove_dir_all(&dir).expect("clean up");
    (exit, console, image, after)
}

#[test]
fn virtio_blk_write_and_read_through_ioeventfd() {
    if !kvm_available("virtio_blk_write_and_read_through_ioeventfd") {
        return;
    }
    let (exit, console, _, after) = run_blk_payload("blk", false);
    assert_eq!(exit, VmExit::PowerOff, "console: {console:?}");
    assert_eq!(
        console, "00SECTOR1!\n",
        "status of write, status of read, then the data read"
    );
    assert_eq!(
        &after[..8],
        b"KEELBLK!",
        "the guest's write reached the host file"
    );
    assert_eq!(&after[504..512], b"KEELBLK!");
    assert_eq!(&after[512..520], b"SECTOR1!", "sector 1 untouched");
}

#[test]
fn a_read_only_disk_refuses_the_write() {
    if !kvm_available("a_read_only_disk_refuses_the_write") {
        return;
    }
    let (exit, console, before, after) = run_blk_payload("blk-ro", true);
    assert_eq!(exit, VmExit::PowerOff, "console: {console:?}");
    // VIRTIO_BLK_S_IOERR (1) for the write, OK for the read.
    assert_eq!(console, "10SECTOR1!\n");
    assert_eq!(after, before, "the read-only disk is unchanged");
}

fn ask(stream: &mut UnixStream, request: &VmmRequest) -> VmmResponse {
    write_frame(stream, request).expect("request");
    read_frame(stream).expect("answer")
}

#[test]
fn a_silent_control_client_does_not_stop_the_event_loop() {
    if !kvm_available("a_silent_control_client_does_not_stop_the_event_loop") {
        return;
    }
    let dir = scratch("control");
    let socket = dir.join("api.sock");
    let control = ControlServer::bind(&socket).expect("bind the control socket");
    let vm = Vm::new(config("control", payload("halt", &dir), &dir, vec![])).expect("build");
    let running = std::thread::spawn(move || vm.run(Some(control)));
    let connect = || {
        let stream = UnixStream::connect(&socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
    };
    // One client says nothing, one stops halfway through a frame.
    let _silent = connect();
    let mut half = connect();
    half.write_all(&[0, 0, 0]).expect("write");
    let started = Instant::now();
    let mut client = connect();
    match ask(&mut client, &VmmRequest::Info) {
        VmmResponse::Info(info) => assert_eq!(info.name, "control"),
        other => panic!("unexpected {other:?}"),
    }
    match ask(&mut client, &VmmRequest::Stats) {
        VmmResponse::Stats(stats) => {
            let console = stats
                .devices
                .iter()
                .find(|d| d.name == "console")
                .expect("console counters");
            assert_eq!(console.counters, vec![("dropped_bytes".to_string(), 0)]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "answers took {:?}",
        started.elapsed()
    );
    assert_eq!(ask(&mut client, &VmmRequest::Kill), VmmResponse::Ok);
    assert_eq!(running.join().expect("the VM thread"), VmExit::Killed);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn kvm_takes_msi_routes_beside_the_irqchip_lines() {
    use keel_vmm::vm::gsi_routes::{GsiRoutes, MsiMessage};
    if !kvm_available("kvm_takes_msi_routes_beside_the_irqchip_lines") {
        return;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let routes = GsiRoutes::new(std::sync::Arc::new(vm));
    let message = MsiMessage {
        address: 0xfee0_0000,
        data: 0x30,
    };
    routes.set(24, Some(message)).expect("route GSI 24");
    routes.set(25, Some(message)).expect("route GSI 25");
    routes.set(24, None).expect("remove the route of GSI 24");
    // KVM refuses a GSI beyond its routing limit: the error reaches us.
    assert!(routes.set(1 << 20, Some(message)).is_err());
}
