//! The seccomp filters installed for real: they kill the process on a
//! forbidden system call, let the work of each kind of thread through, and
//! only ever affect the thread that installs them (and its process, when it
//! is killed) — never the test process, which plays the host.
//!
//! Every filtered scenario runs in a child process: this test binary
//! re-executed with `--exact <test> --nocapture` and `KEEL_SECCOMP_CHILD`
//! naming the scenario, so nothing runs between fork and exec. In the
//! child, the filtered work runs on a thread of its own, as in the VMM. The
//! parent checks how the child ended: killed by SIGSYS, or exit status 0.
//!
//! Behaviour relied on (seccomp(2), no `SECCOMP_FILTER_FLAG_TSYNC`): a
//! filter binds the calling thread and the threads it creates afterwards,
//! not its existing siblings; `SECCOMP_RET_KILL_PROCESS` kills every thread
//! of the process, which its parent sees as death by SIGSYS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use keel_common::vmm_api::{
    read_frame, write_frame, VmInfo, VmState, VmStats, VmmRequest, VmmResponse,
};
use keel_vmm::console::{CappedLog, ConsoleSinks};
use keel_vmm::control::peer::Peer;
use keel_vmm::control::{ControlServer, FdChange, VmControl};
use keel_vmm::devices::bus::BusDevice;
use keel_vmm::devices::serial::SerialDevice;
use keel_vmm::devices::virtio::{
    Block, BlockOptions, Interrupt, MmioTransport, Rng, VirtioTransport,
};
use keel_vmm::exit::{ExitSignal, VmExit};
use keel_vmm::seccomp::{self, ThreadKind};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Names the scenario a re-executed test binary runs.
const CHILD: &str = "KEEL_SECCOMP_CHILD";
/// Set to run a scenario without installing the filter (the control).
const NO_FILTER: &str = "KEEL_SECCOMP_NO_FILTER";
/// A scratch directory the parent creates and removes.
const DIR: &str = "KEEL_SECCOMP_DIR";

// ---------------------------------------------------------------------
// Parent side.

fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keel-seccomp-{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run_child(test: &str, scenario: &str, filtered: bool) -> Output {
    let dir = scratch_dir(scenario);
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .env(DIR, &dir)
        // A panic with backtraces on would read debug info, which the
        // filters forbid: keep children's panics plain.
        .env_remove("RUST_BACKTRACE")
        .env_remove(NO_FILTER);
    if !filtered {
        cmd.env(NO_FILTER, "1");
    }
    let out = cmd.output().expect("run the child");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn describe(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout (tail)\n{}\n--- stderr\n{}",
        out.status,
        tail(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(2000);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn expect_sigsys(test: &str, scenario: &str) {
    let out = run_child(test, scenario, true);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{scenario}: the child was not killed by SIGSYS: {}",
        describe(&out)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("SURVIVED"),
        "{scenario}: {}",
        describe(&out)
    );
}

fn expect_success(test: &str, scenario: &str, filtered: bool) {
    let out = run_child(test, scenario, filtered);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{scenario} (filtered: {filtered}) failed: {}",
        describe(&out)
    );
}

/// The test process itself is not confined: it can still do what the
/// children were killed for.
fn host_is_unaffected() {
    // SAFETY: creating and closing a socket.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "the test process lost socket(AF_INET)");
        libc::close(fd);
    }
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .status()
        .expect("the test process lost execve");
    assert_eq!(status.code(), Some(7));
}

// ---------------------------------------------------------------------
// Child side.

/// The scenario this process must run, if it is a child.
fn child_scenario() -> Option<String> {
    std::env::var(CHILD).ok()
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR).expect("scratch dir"))
}

/// Installs `kind`'s filter on the calling thread unless this is the
/// unfiltered control run.
fn confine(kind: ThreadKind) {
    if std::env::var_os(NO_FILTER).is_none() {
        seccomp::apply(kind).expect("apply the filter");
    }
}

fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a live rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// Runs `work` on a new thread after confining it, then ends the process
/// with status 0 if it returns. A forbidden call kills the whole process
/// (not just the thread), so status 0 means the work was allowed.
fn confined_then_exit(kind: ThreadKind, work: impl FnOnce() + Send + 'static) -> ! {
    no_core_dumps();
    let thread = std::thread::spawn(move || {
        confine(kind);
        work();
    });
    let joined = thread.join();
    if joined.is_err() {
        std::process::exit(3);
    }
    println!("SURVIVED");
    std::process::exit(0)
}

/// One system call a thread of `kind` must never make. Without a filter
/// each of these returns normally (or, for execve, runs /bin/true).
fn forbidden(kind: ThreadKind, scenario: &str) -> ! {
    let true_path = std::ffi::CString::new("/bin/true").expect("path");
    let null_path = std::ffi::CString::new("/dev/null").expect("path");
    let scenario = scenario.to_string();
    confined_then_exit(kind, move || {
        // SAFETY: (all arms) plain system calls on values owned here; the
        // results are not used beyond the call.
        unsafe {
            match scenario.as_str() {
                "socket_inet" => {
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                }
                "execve" => {
                    let argv = [true_path.as_ptr(), std::ptr::null()];
                    let envp = [std::ptr::null()];
                    libc::execve(true_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                }
                "open_for_reading" => {
                    libc::open(null_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                }
                "spawn_thread" => {
                    let _ = std::thread::spawn(|| {}).join();
                }
                "mmap_exec" => {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                }
                "kill" => {
                    libc::kill(libc::getpid(), 0);
                }
                // KVM_SET_USER_MEMORY_REGION: reconfiguring the VM.
                "kvm_set_memory" => {
                    libc::ioctl(-1, 0x4020_ae46, 0);
                }
                // KVM_RUN: only vCPU threads run vCPUs.
                "kvm_run" => {
                    libc::ioctl(-1, 0xae80, 0);
                }
                "unix_socket" => {
                    libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                }
                other => panic!("unknown scenario {other}"),
            }
        }
    })
}

// ---------------------------------------------------------------------
// A virtio driver, just enough to push requests through the transport's
// registers the way Linux does.

const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_LEN: u16 = 16;
const R: u16 = 0;
const W: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;

fn reg_read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn reg_write(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// ACKNOWLEDGE, DRIVER, every offered feature, FEATURES_OK, queue 0 at
/// `vq`, DRIVER_OK.
fn driver_init(t: &mut MmioTransport, vq: &MockSplitQueue<GuestMemoryMmap>) {
    for bit in [1, 2] {
        let status = reg_read(t, REG_STATUS);
        reg_write(t, REG_STATUS, status | bit);
    }
    for sel in [0, 1] {
        reg_write(t, REG_DEVICE_FEATURES_SEL, sel);
        let offered = reg_read(t, REG_DEVICE_FEATURES);
        reg_write(t, REG_DRIVER_FEATURES_SEL, sel);
        reg_write(t, REG_DRIVER_FEATURES, offered);
    }
    let status = reg_read(t, REG_STATUS);
    reg_write(t, REG_STATUS, status | 8);
    reg_write(t, REG_QUEUE_SEL, 0);
    reg_write(t, REG_QUEUE_NUM, u32::from(QUEUE_LEN));
    for (low, addr) in [
        (REG_QUEUE_DESC_LOW, vq.desc_table_addr().0),
        (REG_QUEUE_DRIVER_LOW, vq.avail_addr().0),
        (REG_QUEUE_DEVICE_LOW, vq.used_addr().0),
    ] {
        reg_write(t, low, addr as u32);
        reg_write(t, low + 4, (addr >> 32) as u32);
    }
    reg_write(t, REG_QUEUE_READY, 1);
    let status = reg_read(t, REG_STATUS);
    reg_write(t, REG_STATUS, status | 4);
    // A device that fails to activate asks for a reset instead.
    let status = reg_read(t, REG_STATUS);
    assert_eq!(
        status & (4 | VIRTIO_CONFIG_S_NEEDS_RESET),
        4,
        "the device did not activate: status {status:#x}"
    );
}

/// Publishes one chain of `(addr, len, flags)` in table slots `first..`.
fn add_chain(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: &[(u64, u32, u16)]) {
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let (flags, next) = if i + 1 == descs.len() {
                (flags & !NEXT, 0)
            } else {
                (flags | NEXT, first + i as u16 + 1)
            };
            RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
        })
        .collect();
    vq.add_desc_chains(&raw, first).expect("add chain");
}

fn used_idx(vq: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
    vq.used().idx().load()
}

fn block_header(mem: &GuestMemoryMmap, at: u64, request: u32, sector: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&request.to_le_bytes());
    raw[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(at)).expect("header");
}

fn status_byte(mem: &GuestMemoryMmap, at: u64) -> u8 {
    mem.read_obj::<u8>(GuestAddress(at)).expect("status")
}

const MEM_SIZE: usize = 1 << 20;
const BLK_QUEUE: u64 = 0x0;
const RNG_QUEUE: u64 = 0x8000;
const HDR: u64 = 0x1_0000;
const DATA_OUT: u64 = 0x1_1000;
const STATUS: u64 = 0x1_2000;
const DATA_IN: u64 = 0x1_3000;
const ID: u64 = 0x1_4000;
const ENTROPY: u64 = 0x2_0000;

/// Writes sector 2, reads it back, flushes and asks for the disk id, each
/// request kicked through `notify`. Returns the data read back and the id.
fn block_requests(
    mem: &GuestMemoryMmap,
    vq: &MockSplitQueue<GuestMemoryMmap>,
    mut notify: impl FnMut(),
) -> (Vec<u8>, Vec<u8>) {
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    mem.write_slice(&pattern, GuestAddress(DATA_OUT))
        .expect("data");
    let base = used_idx(vq);

    block_header(mem, HDR, VIRTIO_BLK_T_OUT, 2);
    add_chain(vq, 0, &[(HDR, 16, R), (DATA_OUT, 512, R), (STATUS, 1, W)]);
    notify();
    assert_eq!(used_idx(vq), base + 1);
    assert_eq!(status_byte(mem, STATUS), VIRTIO_BLK_S_OK as u8);

    block_header(mem, HDR, VIRTIO_BLK_T_IN, 2);
    add_chain(vq, 3, &[(HDR, 16, R), (DATA_IN, 512, W), (STATUS, 1, W)]);
    notify();
    assert_eq!(used_idx(vq), base + 2);
    assert_eq!(status_byte(mem, STATUS), VIRTIO_BLK_S_OK as u8);

    block_header(mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    add_chain(vq, 6, &[(HDR, 16, R), (STATUS, 1, W)]);
    notify();
    assert_eq!(used_idx(vq), base + 3);
    assert_eq!(status_byte(mem, STATUS), VIRTIO_BLK_S_OK as u8);

    block_header(mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    add_chain(vq, 8, &[(HDR, 16, R), (ID, 20, W), (STATUS, 1, W)]);
    notify();
    assert_eq!(used_idx(vq), base + 4);

    let mut back = vec![0u8; 512];
    mem.read_slice(&mut back, GuestAddress(DATA_IN))
        .expect("read back");
    assert_eq!(back, pattern);
    let mut id = vec![0u8; 20];
    mem.read_slice(&mut id, GuestAddress(ID)).expect("id");
    (back, id)
}

/// Asks the entropy device for 64 bytes through `notify`.
fn entropy_request(
    mem: &GuestMemoryMmap,
    vq: &MockSplitQueue<GuestMemoryMmap>,
    mut notify: impl FnMut(),
) -> Vec<u8> {
    let base = used_idx(vq);
    add_chain(vq, 0, &[(ENTROPY, 64, W)]);
    notify();
    assert_eq!(used_idx(vq), base + 1);
    let mut bytes = vec![0u8; 64];
    mem.read_slice(&mut bytes, GuestAddress(ENTROPY))
        .expect("entropy");
    assert!(bytes.iter().any(|&b| b != 0), "no entropy delivered");
    bytes
}

fn disk_file(dir: &std::path::Path) -> (PathBuf, std::fs::File) {
    let path = dir.join("disk.raw");
    std::fs::write(&path, vec![0u8; 64 * 1024]).expect("disk");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open disk");
    (path, file)
}

/// The pause protocol's pieces: a flag and a condition variable.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().expect("lock");
        while !*open {
            open = self.opened.wait(open).expect("wait");
        }
    }

    fn open(&self) {
        *self.open.lock().expect("lock") = true;
        self.opened.notify_all();
    }
}

fn kick(thread: libc::pthread_t) {
    // SAFETY: the thread is alive (it waits on a gate) and the kick
    // signal's handler is installed.
    let rc = unsafe { libc::pthread_kill(thread, keel_vmm::vcpu::kick_signal()) };
    assert_eq!(rc, 0, "pthread_kill");
}

// ---------------------------------------------------------------------
// The tests.

const VCPU_FORBIDDEN: [&str; 8] = [
    "socket_inet",
    "unix_socket",
    "execve",
    "open_for_reading",
    "spawn_thread",
    "mmap_exec",
    "kill",
    "kvm_set_memory",
];

#[test]
fn vcpu_filter_kills_the_process_on_forbidden_calls() {
    const TEST: &str = "vcpu_filter_kills_the_process_on_forbidden_calls";
    if let Some(scenario) = child_scenario() {
        forbidden(ThreadKind::Vcpu, &scenario);
    }
    for scenario in VCPU_FORBIDDEN {
        // The control: unfiltered, the same call is harmless.
        expect_success(TEST, scenario, false);
        expect_sigsys(TEST, scenario);
    }
    host_is_unaffected();
}

const VMM_FORBIDDEN: [&str; 7] = [
    "socket_inet",
    "execve",
    "open_for_reading",
    "spawn_thread",
    "mmap_exec",
    "kill",
    "kvm_run",
];

#[test]
fn vmm_filter_kills_the_process_on_forbidden_calls() {
    const TEST: &str = "vmm_filter_kills_the_process_on_forbidden_calls";
    if let Some(scenario) = child_scenario() {
        forbidden(ThreadKind::Vmm, &scenario);
    }
    for scenario in VMM_FORBIDDEN {
        expect_success(TEST, scenario, false);
        expect_sigsys(TEST, scenario);
    }
    host_is_unaffected();
}

/// What a vCPU thread does at run time, under its filter: the KVM ioctls
/// it may make (on a bad descriptor: the kernel answers EBADF, the filter
/// lets them through), console output through the UART to stdout, the
/// capped log (rotating it) and an attached client, virtio register
/// accesses that activate a disk and an entropy device and process their
/// queues (QueueNotify written without an ioeventfd), the exit signal, a
/// pause wait interrupted by kicks, sleeping, hashing, logging, and the
/// thread's exit.
#[test]
fn vcpu_filter_allows_a_vcpu_threads_work() {
    const TEST: &str = "vcpu_filter_allows_a_vcpu_threads_work";
    if child_scenario().is_some() {
        no_core_dumps();
        vcpu_work();
    }
    expect_success(TEST, "vcpu_work", true);
}

fn vcpu_work() -> ! {
    let dir = child_dir();
    // Setup, unconfined, as Vm::new does it.
    keel_vmm::vcpu::install_kick_handler().expect("kick handler");
    let log_path = dir.join("console.log");
    let log = CappedLog::open(&log_path, 1024).expect("console log");
    let (client, mut client_peer) = UnixStream::pair().expect("pair");
    let client = Arc::new(Peer::new(client).expect("peer"));
    let sinks = Arc::new(Mutex::new(ConsoleSinks::new(true, Some(log))));
    sinks.lock().expect("sinks").attach(client.clone());
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let mut serial = SerialDevice::new(serial_irq, sinks.clone());

    let (_disk_path, disk) = disk_file(&dir);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
    let blk_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let block = Block::new(
        disk,
        BlockOptions {
            read_only: false,
            serial: "seccomp-test".into(),
            format: None,
        },
    )
    .expect("block");
    let irq: Arc<dyn Interrupt> = blk_irq.clone();
    let mut blk = MmioTransport::new(Box::new(block), mem.clone(), irq).expect("transport");
    let rng_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let irq: Arc<dyn Interrupt> = rng_irq.clone();
    let mut rng = MmioTransport::new(Box::new(Rng::new()), mem.clone(), irq).expect("transport");
    let exit = Arc::new(ExitSignal::new().expect("exit signal"));
    let gate = Arc::new(Gate::default());

    let vcpu = {
        let (mem, exit, gate) = (mem.clone(), exit.clone(), gate.clone());
        std::thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || {
                confine(ThreadKind::Vcpu);
                // The run loop's ioctls reach the kernel.
                for request in [0xae80u64, 0x8090_ae81, 0xc018_ae85] {
                    // SAFETY: a bad descriptor: the kernel fails the call.
                    let rc = unsafe { libc::ioctl(-1, request as _, 0) };
                    let err = std::io::Error::last_os_error();
                    assert_eq!((rc, err.raw_os_error()), (-1, Some(libc::EBADF)));
                }
                // Console output: 1500 bytes through THR, past the log's cap.
                let text: Vec<u8> = (0..1500)
                    .map(|i| {
                        if i % 60 == 59 {
                            b'\n'
                        } else {
                            b'a' + (i % 26) as u8
                        }
                    })
                    .collect();
                for &b in &text {
                    serial.write(0, &[b]);
                }
                // A disk and an entropy device driven through their registers.
                let blk_vq = MockSplitQueue::create(&mem, GuestAddress(BLK_QUEUE), QUEUE_LEN);
                driver_init(&mut blk, &blk_vq);
                let (_, id) =
                    block_requests(&mem, &blk_vq, || reg_write(&mut blk, REG_QUEUE_NOTIFY, 0));
                assert!(id.starts_with(b"seccomp-test"));
                let rng_vq = MockSplitQueue::create(&mem, GuestAddress(RNG_QUEUE), QUEUE_LEN);
                driver_init(&mut rng, &rng_vq);
                entropy_request(&mem, &rng_vq, || reg_write(&mut rng, REG_QUEUE_NOTIFY, 0));
                // Pausing: wait on a condition variable while being kicked.
                gate.wait();
                // Timekeeping, sleeping, hashing, logging.
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(2));
                assert!(start.elapsed() >= Duration::from_millis(2));
                let mut seen = std::collections::HashMap::new();
                seen.insert("vcpu0", 1);
                eprintln!("vcpu0: work done under the filter");
                // A guest power-off, reported to the event loop.
                exit.request(VmExit::PowerOff);
                text
            })
            .expect("spawn")
    };
    // The "event loop": kick the vCPU a few times, then let it go.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        kick(vcpu.as_pthread_t());
        std::thread::sleep(Duration::from_millis(5));
    }
    gate.open();
    let text = vcpu.join().expect("the vCPU thread failed");

    // Check, unconfined, what the confined thread did.
    assert_eq!(exit.reason(), Some(VmExit::PowerOff));
    assert_eq!(exit.eventfd.read().expect("exit eventfd"), 1);
    assert_eq!(blk_irq.read().expect("blk irq"), 4);
    assert_eq!(rng_irq.read().expect("rng irq"), 1);
    let mut rotated = log_path.clone().into_os_string();
    rotated.push(".1");
    let logged = [
        std::fs::read(&rotated).expect("the log was not rotated"),
        std::fs::read(&log_path).expect("log"),
    ]
    .concat();
    assert_eq!(logged, text);
    client_peer
        .set_nonblocking(true)
        .expect("nonblocking client");
    // What did not fit the socket waits in the peer's queue.
    let mut frames = Vec::new();
    loop {
        client.flush().expect("flush");
        let before = frames.len();
        let _ = client_peer.read_to_end(&mut frames);
        if frames.len() == before {
            break;
        }
    }
    assert!(
        frames.len() > text.len(),
        "the attached client got {} bytes",
        frames.len()
    );
    let mut disk = std::fs::read(dir.join("disk.raw")).expect("disk");
    disk.truncate(3 * 512);
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(&disk[1024..1536], &pattern[..]);
    std::process::exit(0)
}

/// A VM for the control server that only answers, as the event loop's
/// would.
#[derive(Default)]
struct AnsweringVm {
    consoles: Mutex<Vec<Arc<Peer>>>,
}

impl VmControl for AnsweringVm {
    fn info(&self) -> VmInfo {
        VmInfo {
            name: "seccomp".into(),
            state: VmState::Running,
            vcpus: 1,
            memory_mib: 64,
            uptime_ms: 0,
            boot_marker_ms: None,
        }
    }
    fn stats(&self) -> VmStats {
        VmStats {
            devices: vec![],
            exits: vec![],
        }
    }
    fn pause(&self) -> Result<(), String> {
        Ok(())
    }
    fn resume(&self) {}
    fn shutdown(&self) -> bool {
        true
    }
    fn kill(&self) {}
    fn attach_console(&self, peer: Arc<Peer>) {
        self.consoles.lock().expect("lock").push(peer);
    }
    fn detach_console(&self, peer: &Arc<Peer>) {
        self.consoles
            .lock()
            .expect("lock")
            .retain(|p| !Arc::ptr_eq(p, peer));
    }
    fn console_input(&self, data: &[u8]) -> usize {
        data.len()
    }
}

/// What the main thread does at run time, under its filter: an epoll loop
/// on an eventfd standing in for an ioeventfd and on the real control
/// server (accepting a client, non-blocking reads and answers, console
/// attach, console output sent to the attached client); virtio queue
/// processing for a disk and an entropy device; connecting to a host Unix
/// socket; pausing by kicking a vCPU thread; removing the socket path; and
/// ending the process.
#[test]
fn vmm_filter_allows_the_event_loops_work() {
    const TEST: &str = "vmm_filter_allows_the_event_loops_work";
    if child_scenario().is_some() {
        no_core_dumps();
        vmm_work();
    }
    expect_success(TEST, "vmm_work", true);
}

fn vmm_work() -> ! {
    let dir = child_dir();
    // Setup, unconfined.
    keel_vmm::vcpu::install_kick_handler().expect("kick handler");
    let api_path = dir.join("api.sock");
    let mut server = ControlServer::bind(&api_path).expect("bind");
    let vm = AnsweringVm::default();
    let host_path = dir.join("host.sock");
    let host_listener = UnixListener::bind(&host_path).expect("bind");
    let notify = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");

    let (_disk_path, disk) = disk_file(&dir);
    let mem = &GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
    let blk_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let irq: Arc<dyn Interrupt> = blk_irq.clone();
    let block = Block::new(disk, BlockOptions::default()).expect("block");
    let mut blk = MmioTransport::new(Box::new(block), mem.clone(), irq).expect("transport");
    let rng_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let irq: Arc<dyn Interrupt> = rng_irq.clone();
    let mut rng = MmioTransport::new(Box::new(Rng::new()), mem.clone(), irq).expect("transport");
    // The guest's driver set the devices up earlier, on a vCPU thread.
    let blk_vq = MockSplitQueue::create(mem, GuestAddress(BLK_QUEUE), QUEUE_LEN);
    driver_init(&mut blk, &blk_vq);
    let rng_vq = MockSplitQueue::create(mem, GuestAddress(RNG_QUEUE), QUEUE_LEN);
    driver_init(&mut rng, &rng_vq);

    // Threads that exist before the filter: a vCPU waiting to be resumed,
    // and a control client (the supervisor) waiting for its cue.
    let gate = Arc::new(Gate::default());
    let vcpu = {
        let gate = gate.clone();
        std::thread::spawn(move || gate.wait())
    };
    let vcpu_pthread = vcpu.as_pthread_t();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (reply_tx, reply_rx) = mpsc::channel::<VmmResponse>();
    let client = {
        let api_path = api_path.clone();
        let notify = notify.try_clone().expect("clone eventfd");
        std::thread::spawn(move || {
            go_rx.recv().expect("cue");
            notify.write(1).expect("notify");
            let mut stream = UnixStream::connect(&api_path).expect("connect");
            write_frame(&mut stream, &VmmRequest::Info).expect("request");
            reply_tx
                .send(read_frame(&mut stream).expect("reply"))
                .expect("send reply");
            write_frame(&mut stream, &VmmRequest::ConsoleAttach).expect("attach");
            reply_tx
                .send(read_frame(&mut stream).expect("attached"))
                .expect("send reply");
            reply_tx
                .send(read_frame(&mut stream).expect("console output"))
                .expect("send output");
            // Stay connected until the server hangs up.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        })
    };

    // The event loop's epoll set is created with the VM, unconfined.
    let epoll = Epoll::new().expect("epoll");
    // Now this thread becomes the event loop, confined, as Vm::run does
    // once the vCPU threads exist.
    {
        confine(ThreadKind::Vmm);
        const NOTIFY: u64 = u64::MAX;
        let add = |fd, token, events| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
                .expect("epoll add")
        };
        add(notify.as_raw_fd(), NOTIFY, EventSet::IN);
        for (fd, id) in server.fds() {
            add(fd, u64::from(id), EventSet::IN);
        }
        go_tx.send(()).expect("cue the client");

        let mut notified = false;
        let mut events = vec![EpollEvent::default(); 8];
        let deadline = Instant::now() + Duration::from_secs(10);
        let attached = || !vm.consoles.lock().expect("lock").is_empty();
        while !(notified && attached()) {
            assert!(Instant::now() < deadline, "the event loop stalled");
            let n = epoll.wait(1000, &mut events).expect("epoll_wait");
            for event in &events[..n] {
                match event.data() {
                    NOTIFY => {
                        notify.read().expect("notify");
                        block_requests(mem, &blk_vq, || blk.queue_notify(0));
                        entropy_request(mem, &rng_vq, || rng.queue_notify(0));
                        notified = true;
                    }
                    token => {
                        let id = u32::try_from(token).expect("control id");
                        for change in server.handle(id, &vm) {
                            match change {
                                FdChange::Add { fd, id, events } => add(fd, u64::from(id), events),
                                FdChange::Remove(peer) => panic!(
                                    "the server dropped its client (fd {})",
                                    peer.as_raw_fd()
                                ),
                            }
                        }
                    }
                }
            }
        }
        // The client got its answers.
        let reply = reply_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("reply");
        assert!(matches!(reply, VmmResponse::Info(info) if info.name == "seccomp"));
        let reply = reply_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("reply");
        assert_eq!(reply, VmmResponse::Ok);
        // Console output reaches the attached client.
        let mut sinks = ConsoleSinks::default();
        for peer in vm.consoles.lock().expect("lock").iter() {
            sinks.attach(peer.clone());
        }
        sinks.write(b"console");
        let output = reply_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("output");
        assert_eq!(output, VmmResponse::Console(b"console".to_vec()));
        // Interrupts were raised through the irqfds.
        assert_eq!(blk_irq.read().expect("blk irq"), 4);
        assert_eq!(rng_irq.read().expect("rng irq"), 1);
        // Connecting to a host Unix socket, as vsock's host side does.
        let mut host = UnixStream::connect(&host_path).expect("connect to the host socket");
        host.write_all(b"hello").expect("write");
        drop(host);
        drop(host_listener);
        // Pausing: kick the vCPU thread out of its wait, then resume it.
        for _ in 0..3 {
            kick(vcpu_pthread);
            std::thread::sleep(Duration::from_millis(5));
        }
        gate.open();
        vcpu.join().expect("vcpu thread");
        // Hanging up on the client and removing the socket path (the
        // server's drop), then exiting.
        drop(sinks);
        vm.consoles.lock().expect("lock").clear();
        drop(server);
        client.join().expect("client thread");
        eprintln!("vmm: work done under the filter");
        // The process ends from the confined thread, as main does.
        std::process::exit(0)
    }
}

/// A filter binds the thread that installs it: a sibling spawned before is
/// untouched (it can still open an AF_INET socket, which the filter
/// forbids), and both kinds of filter can be installed on different
/// threads of one process.
#[test]
fn filters_bind_only_the_calling_thread() {
    const TEST: &str = "filters_bind_only_the_calling_thread";
    if child_scenario().is_some() {
        no_core_dumps();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<i32>();
        let sibling = std::thread::spawn(move || {
            go_rx.recv().expect("cue");
            // SAFETY: creating and closing a socket.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(fd >= 0);
            // SAFETY: closing the socket just created.
            unsafe { libc::close(fd) };
            done_tx.send(fd).expect("report");
        });
        let vcpu = std::thread::spawn(move || {
            confine(ThreadKind::Vcpu);
            go_tx.send(()).expect("cue the sibling");
            let fd = done_rx.recv().expect("the sibling's report");
            assert!(fd >= 0);
        });
        vcpu.join().expect("vcpu thread");
        sibling.join().expect("sibling thread");
        // A second thread gets the other filter; this thread has none.
        std::thread::spawn(|| confine(ThreadKind::Vmm))
            .join()
            .expect("vmm thread");
        // SAFETY: creating and closing a socket.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "the unconfined thread was confined");
        // SAFETY: closing the socket just created.
        unsafe { libc::close(fd) };
        std::process::exit(0);
    }
    expect_success(TEST, "siblings", true);
    host_is_unaffected();
}

/// A panic on a confined vCPU thread is reported on stderr and ends only
/// that thread (with `RUST_BACKTRACE` unset): the panic machinery needs
/// nothing the filter forbids.
#[test]
fn a_panic_on_a_confined_thread_is_not_a_sigsys() {
    const TEST: &str = "a_panic_on_a_confined_thread_is_not_a_sigsys";
    if child_scenario().is_some() {
        no_core_dumps();
        let thread = std::thread::spawn(|| {
            confine(ThreadKind::Vcpu);
            let result = std::panic::catch_unwind(|| panic!("deliberate panic, caught"));
            assert!(result.is_err());
            panic!("deliberate panic, ending the thread");
        });
        assert!(thread.join().is_err());
        std::process::exit(0);
    }
    let out = run_child(TEST, "panic", true);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deliberate panic, ending the thread"));
}

/// A qcow2 disk served under each filter: imago's sync file driver on the
/// thread that processes the queue. Sector 2 lies in a cluster `qemu-io`
/// made an explicit zero cluster, so the write allocates a cluster and
/// zeroes the rest of it (ftruncate, or fallocate punching a hole), and
/// the flush syncs (fsync).
#[test]
fn both_filters_allow_serving_a_qcow2_disk() {
    const TEST: &str = "both_filters_allow_serving_a_qcow2_disk";
    if let Some(scenario) = child_scenario() {
        qcow2_work(if scenario == "qcow2_vcpu" {
            ThreadKind::Vcpu
        } else {
            ThreadKind::Vmm
        });
    }
    expect_success(TEST, "qcow2_vcpu", true);
    expect_success(TEST, "qcow2_vmm", true);
}

fn qcow2_work(kind: ThreadKind) -> ! {
    let path = child_dir().join("disk.qcow2");
    let qemu = |tool: &str, args: &[&str]| {
        let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install qemu-utils (`make deps` does)")
        });
        assert!(out.status.success(), "{tool} {args:?}: {}", describe(&out));
    };
    let name = path.to_str().expect("utf-8");
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", name, "1M"]);
    qemu("qemu-io", &["-f", "qcow2", "-c", "write -z 0 1M", name]);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open disk");
    let options = BlockOptions {
        serial: "seccomp-qcow2".into(),
        format: Some(keel_common::guest::DiskFormat::Qcow2),
        ..BlockOptions::default()
    };
    let block = Block::new(file, options).expect("qcow2 block");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("memory");
    let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
    let interrupt: Arc<dyn Interrupt> = irq.clone();
    let mut blk = MmioTransport::new(Box::new(block), mem.clone(), interrupt).expect("transport");
    confined_then_exit(kind, move || {
        let vq = MockSplitQueue::create(&mem, GuestAddress(BLK_QUEUE), QUEUE_LEN);
        driver_init(&mut blk, &vq);
        let (_, id) = block_requests(&mem, &vq, || reg_write(&mut blk, REG_QUEUE_NOTIFY, 0));
        assert!(id.starts_with(b"seccomp-qcow2"));
        // Dropping the device flushes imago's caches on this thread too.
        drop(blk);
        drop(irq);
    })
}
