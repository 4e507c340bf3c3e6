//! `make bench`, host-KVM part: vCPU exit round trip and virtio-blk
//! streaming throughput against the same file I/O done directly on the
//! host, both measured in this run.
//!
//! The guest is a flat payload (no Linux: this machine's KVM cannot run
//! it), so the figures measure the VMM's device path itself: exit
//! handling, the MMIO bus, ioeventfd wake-ups and virtqueue processing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/payload.rs"]
mod support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_vmm::arch::cpuid::CpuidProfile;
use keel_vmm::exit::VmExit;
use keel_vmm::vm::{BootSource, DiskConfig, GuestFile, Transport, Vm, VmConfig};

const EXITS: u64 = 200_000;
/// Requests as large as the device allows (seg_max 128 x 32 KiB), as
/// Linux issues for sequential I/O.
const SEGMENTS: u64 = 128;
const REQUEST_BYTES: u64 = SEGMENTS * (32 << 10);
const REQUESTS: u64 = 64;
const RUNS: usize = 3;

fn time_vm(code: &[u8], disk: Option<&Path>) -> Duration {
    let config = VmConfig {
        name: "bench".into(),
        vcpus: 1,
        memory_bytes: 64 << 20,
        boot: BootSource::Flat {
            code: code.to_vec(),
            load_addr: support::LOAD_ADDR,
        },
        disks: disk
            .map(|p| {
                vec![DiskConfig {
                    file: GuestFile::open(p, true).expect("open the disk"),
                    read_only: false,
                    serial: None,
                    format: None,
                    backing: None,
                }]
            })
            .unwrap_or_default(),
        nets: vec![],
        rng: false,
        vsock: None,
        // The payloads drive virtio-mmio registers directly.
        transport: Transport::Mmio,
        cpuid_profile: CpuidProfile::Host,
        console_stdio: false,
        console_log: None,
        console_log_cap: 1 << 20,
        loader_report: false,
        // The VM runs inside the test process, which does more than a VMM may.
        seccomp: false,
    };
    let start = Instant::now();
    let vm = Vm::new(config).expect("build the VM");
    let exit = vm.run(None);
    assert_eq!(exit, VmExit::PowerOff, "bench payload did not power off");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    if let Err(err) = kvm_ioctls::Kvm::new() {
        eprintln!("SKIPPED the host-KVM benchmarks: /dev/kvm is unusable ({err})");
        return;
    }
    let dir = std::env::temp_dir().join(format!("keel-vmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    // Exit round trip: N exits minus an empty run, so VM setup cancels out.
    let empty = support::assemble("exits", &[("COUNT", 0)], &dir);
    let many = support::assemble("exits", &[("COUNT", EXITS)], &dir);
    let base = median((0..RUNS).map(|_| time_vm(&empty, None)).collect());
    let full = median((0..RUNS).map(|_| time_vm(&many, None)).collect());
    let per_exit = full.saturating_sub(base).as_secs_f64() / EXITS as f64 * 1e6;
    println!("vcpu exit round trip (port I/O, {EXITS} exits): {per_exit:.2} us per exit (VM setup+teardown {base:?})");

    // virtio-blk streaming vs direct pread/pwrite of the same sizes.
    let disk: PathBuf = dir.join("disk.raw");
    let total = REQUEST_BYTES * REQUESTS;
    std::fs::write(&disk, vec![0u8; total as usize]).expect("create disk");
    let payload = |count, req| {
        support::assemble(
            "blk_stream",
            &[("COUNT", count), ("REQ", req), ("SEGS", SEGMENTS)],
            &dir,
        )
    };
    let none = payload(0, 1);
    let writes = payload(REQUESTS, 1);
    let reads = payload(REQUESTS, 0);
    let setup = median((0..RUNS).map(|_| time_vm(&none, Some(&disk))).collect());
    let guest_write =
        median((0..RUNS).map(|_| time_vm(&writes, Some(&disk))).collect()).saturating_sub(setup);
    let guest_read =
        median((0..RUNS).map(|_| time_vm(&reads, Some(&disk))).collect()).saturating_sub(setup);

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .expect("open disk");
    let buf = vec![0x5au8; REQUEST_BYTES as usize];
    let mut rbuf = vec![0u8; REQUEST_BYTES as usize];
    let host_write = median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                for i in 0..REQUESTS {
                    file.write_all_at(&buf, i * REQUEST_BYTES).expect("pwrite");
                }
                t.elapsed()
            })
            .collect(),
    );
    let host_read = median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                for i in 0..REQUESTS {
                    file.read_exact_at(&mut rbuf, i * REQUEST_BYTES)
                        .expect("pread");
                }
                t.elapsed()
            })
            .collect(),
    );
    let report = |label: &str, guest: Duration, host: Duration| {
        let (g, h) = (mib_per_s(total, guest), mib_per_s(total, host));
        println!(
            "virtio-blk sequential {label} ({} MiB in {} KiB requests, page cache): guest {g:.0} MiB/s, host {h:.0} MiB/s, ratio {:.2}x (target >= 0.9x)",
            total >> 20,
            REQUEST_BYTES >> 10,
            g / h
        );
    };
    report("write", guest_write, host_write);
    report("read", guest_read, host_read);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
