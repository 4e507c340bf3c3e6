//! Building a VM from its configuration and running it: KVM setup, guest
//! memory, devices on their buses, vCPU threads, and the event loop that
//! serves virtio notifications, console input and the exit signal.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use keel_common::guest::MacAddr;
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::boot::{self, BootPayload};
use crate::arch::cpuid::{self, CpuidProfile};
use crate::arch::layout::*;
use crate::arch::regs::{self, EntryMode};
use crate::control::{ControlServer, FdChange};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::boot_timer::{BootMarker, BootTimer};
use crate::devices::bus::Bus;
use crate::devices::i8042::I8042;
use crate::devices::pvpanic::PvPanic;
use crate::devices::serial::{CappedLog, ConsoleSinks, SerialDevice};
use crate::devices::virtio::net::user::{HostFwd, UserNet, UserNetConfig};
use crate::devices::virtio::{
    self, Block, BlockOptions, Interrupt, MmioTransport, Net, Rng, Tap, Vsock,
};
use crate::exit::{ExitSignal, VmExit};
use crate::vcpu::{ExitCounters, RunState, Vcpu};

/// A disk as the VMM sees it: paths already resolved.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    pub serial: Option<String>,
}

/// Where a NIC's frames go.
#[derive(Debug, Clone)]
pub enum NetBackendConfig {
    /// Open (or create) the named tap: running by hand.
    TapName(String),
    /// A tap descriptor handed over by the supervisor, which made the tap
    /// and put it on the bridge.
    TapFd(RawFd),
    /// User-mode NAT inside the VMM: no tap, no root.
    User { hostfwd: Vec<HostFwd> },
}

/// A virtio-net NIC.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub backend: NetBackendConfig,
    pub mac: MacAddr,
}

/// virtio-vsock with Firecracker's hybrid Unix-socket model.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    pub cid: u64,
    pub uds_path: PathBuf,
}

/// What the boot vCPU runs.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// A Linux kernel (bzImage, or ELF vmlinux with or without PVH).
    Linux {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// A flat binary entered at `load_addr` in 32-bit protected mode with
    /// paging off, as PVH does: small test payloads and firmware.
    Flat { code: Vec<u8>, load_addr: u64 },
}

/// Everything needed to build the VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    pub vcpus: u8,
    pub memory_bytes: u64,
    pub boot: BootSource,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    pub cpuid_profile: CpuidProfile,
    /// Copy the guest console to the VMM's stdout and feed stdin to it.
    pub console_stdio: bool,
    pub console_log: Option<PathBuf>,
    pub console_log_cap: u64,
    /// Confine the event loop and vCPU threads with seccomp filters. Off
    /// only where the VM runs inside another program (tests, benches).
    pub seccomp: bool,
}

/// A failure building or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("KVM: {what}: {source}")]
    Kvm {
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate guest memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error("device setup: {0}")]
    Device(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A virtio device on the MMIO bus, with the eventfd its queue notify is
/// bound to.
struct VirtioSlot {
    transport: Arc<Mutex<MmioTransport>>,
    /// One ioeventfd per queue, matched on the queue index written.
    notifies: Vec<EventFd>,
    /// A backend the device reads from (tap, vsock sockets), polled
    /// edge-triggered; readiness is delivered as a receive-queue notify.
    backend: Option<(RawFd, u32)>,
    name: String,
}

/// A virtio device before it gets its transport: name, device, backend.
type PendingDevice = (String, Box<dyn virtio::VirtioDevice>, Option<(RawFd, u32)>);

/// Event loop tokens: queue `q` of virtio device `i` is `i << 8 | q`;
/// backends start at `BACKEND_TOKEN`.
const BACKEND_TOKEN: u64 = 1 << 20;

/// A built VM, ready to run.
pub struct Vm {
    config: VmConfig,
    _vm: VmFd,
    vcpus: Vec<Vcpu>,
    virtio: Vec<VirtioSlot>,
    serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub exit: Arc<ExitSignal>,
    pub counters: Arc<ExitCounters>,
    pub state: Arc<RunState>,
    pub boot_marker: BootMarker,
    pub sinks: Arc<Mutex<ConsoleSinks>>,
    pub started: Instant,
    vcpu_threads: Mutex<Vec<libc::pthread_t>>,
}

fn irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd, VmError> {
    let fd = EventFd::new(libc::EFD_NONBLOCK)?;
    vm.register_irqfd(&fd, gsi)
        .map_err(kvm_err("register irqfd"))?;
    Ok(fd)
}

impl Vm {
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let started = Instant::now();
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("create the VM"))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(kvm_err("set the TSS address"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("create the in-kernel irqchip"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("create the PIT"))?;

        let ranges: Vec<(GuestAddress, usize)> = ram_ranges(config.memory_bytes)
            .into_iter()
            .map(|(start, size)| (GuestAddress(start), size as usize))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges)
            .map_err(|e| VmError::Memory(e.to_string()))?;
        for (slot, region) in mem.iter().enumerate() {
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which the VM
            // struct keeps (through the vCPUs and devices) for as long as
            // the VM can run.
            unsafe { vm.set_user_memory_region(region_desc) }
                .map_err(kvm_err("register guest memory"))?;
        }

        let exit = Arc::new(ExitSignal::new()?);
        let boot_marker = BootMarker::default();
        let mut sinks = ConsoleSinks {
            stdout: config.console_stdio,
            ..Default::default()
        };
        if let Some(path) = &config.console_log {
            sinks.log = Some(CappedLog::open(path, config.console_log_cap)?);
        }
        let sinks = Arc::new(Mutex::new(sinks));

        let mut pio = Bus::default();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irqfd(&vm, SERIAL_IRQ)?,
            sinks.clone(),
        )));
        let i8042 = Arc::new(Mutex::new(I8042::new(irqfd(&vm, I8042_IRQ)?, exit.clone())));
        let dev_err = |e: crate::devices::bus::BusError| VmError::Device(e.to_string());
        pio.insert(u64::from(SERIAL_PORT), 8, serial.clone())
            .map_err(dev_err)?;
        pio.insert(u64::from(I8042_PORT), 5, i8042.clone())
            .map_err(dev_err)?;
        pio.insert(
            u64::from(ACPI_PM_PORT),
            u64::from(ACPI_PM_LEN),
            Arc::new(Mutex::new(AcpiPm::new(exit.clone()))),
        )
        .map_err(dev_err)?;
        pio.insert(
            u64::from(PVPANIC_PORT),
            1,
            Arc::new(Mutex::new(PvPanic::new(exit.clone()))),
        )
        .map_err(dev_err)?;
        pio.insert(
            u64::from(BOOT_TIMER_PORT),
            1,
            Arc::new(Mutex::new(BootTimer::new(started, boot_marker.clone()))),
        )
        .map_err(dev_err)?;

        // Virtio devices, announced to the guest on its command line.
        let mut mmio = Bus::default();
        let mut virtio = Vec::new();
        let mut cmdline = match &config.boot {
            BootSource::Linux { cmdline, .. } => cmdline.clone(),
            BootSource::Flat { .. } => String::new(),
        };
        let mut devices: Vec<PendingDevice> = Vec::new();
        for (i, disk) in config.disks.iter().enumerate() {
            let file = OpenOptions::new()
                .read(true)
                .write(!disk.read_only)
                .open(&disk.path)
                .map_err(|e| {
                    VmError::Device(format!("cannot open disk {}: {e}", disk.path.display()))
                })?;
            let options = BlockOptions {
                read_only: disk.read_only,
                serial: disk.serial.clone().unwrap_or_default(),
            };
            let block = Block::new(file, options)
                .map_err(|e| VmError::Device(format!("disk {}: {e}", disk.path.display())))?;
            devices.push((format!("block{i}"), Box::new(block), None));
        }
        for (i, nic) in config.nets.iter().enumerate() {
            let nic_err = |e: &dyn std::fmt::Display| VmError::Device(format!("net{i}: {e}"));
            let backend: Box<dyn virtio::NetBackend> = match &nic.backend {
                NetBackendConfig::TapName(name) => {
                    Box::new(Tap::open(name).map_err(|e| nic_err(&e))?)
                }
                NetBackendConfig::TapFd(fd) => {
                    // SAFETY: the supervisor handed this descriptor over for
                    // the VMM to own; nothing else in the process uses it.
                    Box::new(
                        Tap::from_fd(unsafe { OwnedFd::from_raw_fd(*fd) })
                            .map_err(|e| nic_err(&e))?,
                    )
                }
                NetBackendConfig::User { hostfwd } => Box::new(
                    UserNet::new(UserNetConfig {
                        hostfwd: hostfwd.clone(),
                    })
                    .map_err(|e| nic_err(&e))?,
                ),
            };
            let net = Net::new(backend, nic.mac).map_err(|e| nic_err(&e))?;
            let backend = net
                .backend_fd()
                .map(|fd| (fd, virtio::net::RX_QUEUE as u32));
            devices.push((format!("net{i}"), Box::new(net), backend));
        }
        if config.rng {
            devices.push(("rng".into(), Box::new(Rng::new()), None));
        }
        if let Some(vsock) = &config.vsock {
            let device = Vsock::new(vsock.cid, &vsock.uds_path)
                .map_err(|e| VmError::Device(format!("vsock: {e}")))?;
            let backend = Some((device.event_fd(), virtio::vsock::RX_QUEUE as u32));
            devices.push(("vsock".into(), Box::new(device), backend));
        }
        if devices.len() > VIRTIO_IRQS.len() {
            return Err(VmError::Device(format!(
                "at most {} virtio devices are supported",
                VIRTIO_IRQS.len()
            )));
        }
        for (i, (name, device, backend)) in devices.into_iter().enumerate() {
            let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_STRIDE;
            let gsi = VIRTIO_IRQS[i];
            let interrupt: Arc<dyn Interrupt> = Arc::new(irqfd(&vm, gsi)?);
            let transport = MmioTransport::new(device, mem.clone(), interrupt)
                .map_err(|e| VmError::Device(format!("{name}: {e}")))?;
            let mut notifies = Vec::new();
            for queue in 0..transport.queue_count() as u32 {
                let notify = EventFd::new(libc::EFD_NONBLOCK)?;
                vm.register_ioevent(
                    &notify,
                    &IoEventAddress::Mmio(base + virtio::QUEUE_NOTIFY_OFFSET),
                    queue,
                )
                .map_err(kvm_err("register ioeventfd"))?;
                notifies.push(notify);
            }
            let transport = Arc::new(Mutex::new(transport));
            mmio.insert(base, virtio::MMIO_LEN, transport.clone())
                .map_err(dev_err)?;
            cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
            virtio.push(VirtioSlot {
                transport,
                notifies,
                backend,
                name,
            });
        }

        let entry = match &config.boot {
            BootSource::Linux { kernel, initrd, .. } => {
                let payload = BootPayload {
                    kernel,
                    initrd: initrd.as_deref(),
                    cmdline: cmdline.trim(),
                    vcpus: config.vcpus,
                };
                boot::load(&mem, &payload)?
            }
            BootSource::Flat { code, load_addr } => {
                boot::load_flat(&mem, code, *load_addr, config.vcpus)?
            }
        };

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported CPUID"))?;
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let counters = Arc::new(ExitCounters::default());
        let state = Arc::new(RunState::default());
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
            let fd = vm
                .create_vcpu(u64::from(index))
                .map_err(kvm_err("create a vCPU"))?;
            let mut cpuid = supported.clone();
            cpuid::filter(&mut cpuid, index, config.vcpus, config.cpuid_profile);
            fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
            regs::setup_msrs(&fd)?;
            regs::setup_fpu(&fd)?;
            regs::setup_lint(&fd)?;
            if index == 0 {
                regs::setup_regs(&fd, entry.mode, entry.entry)?;
                regs::setup_sregs(&mem, &fd, entry.mode)?;
            }
            vcpus.push(Vcpu {
                index,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: exit.clone(),
                counters: counters.clone(),
                state: state.clone(),
                mem: mem.clone(),
                seccomp: config.seccomp,
            });
        }
        log::info!(
            "{}: {} vCPU(s), {} MiB, {} entry at {:#x}, {} virtio device(s)",
            config.name,
            config.vcpus,
            config.memory_bytes >> 20,
            if entry.mode == EntryMode::Pvh {
                "PVH"
            } else {
                "64-bit Linux"
            },
            entry.entry,
            virtio.len()
        );
        Ok(Vm {
            config,
            _vm: vm,
            vcpus,
            virtio,
            serial,
            i8042,
            exit,
            counters,
            state,
            boot_marker,
            sinks,
            started,
            vcpu_threads: Mutex::new(Vec::new()),
        })
    }

    /// Per-device counters, for `stats`.
    pub fn device_counters(&self) -> Vec<(String, Vec<(String, u64)>)> {
        self.virtio
            .iter()
            .map(|slot| {
                let counters = slot
                    .transport
                    .lock()
                    .map(|t| {
                        t.counters()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect()
                    })
                    .unwrap_or_default();
                (slot.name.clone(), counters)
            })
            .collect()
    }

    /// Feeds console input to the guest's UART.
    pub fn console_input(&self, data: &[u8]) -> usize {
        self.serial.lock().map(|mut s| s.input(data)).unwrap_or(0)
    }

    /// Pauses every vCPU and waits until each has left KVM_RUN.
    pub fn pause(&self) -> Result<(), String> {
        self.state.set_paused(true);
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        // A kick can land just before a vCPU enters KVM_RUN; kick again
        // until every vCPU reports itself parked.
        while self.state.parked() < usize::from(self.config.vcpus) {
            if Instant::now() > deadline {
                return Err("the vCPUs did not stop within 2 s".into());
            }
            self.kick_vcpus();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    pub fn resume(&self) {
        self.state.set_paused(false);
    }

    fn kick_vcpus(&self) {
        if let Ok(threads) = self.vcpu_threads.lock() {
            for thread in threads.iter() {
                // SAFETY: the pthread handles belong to vCPU threads that live
                // as long as the process; the signal's handler does nothing.
                unsafe { libc::pthread_kill(*thread, crate::vcpu::kick_signal()) };
            }
        }
    }

    /// Runs the VM until it ends and returns why it ended.
    pub fn run(mut self, control: Option<ControlServer>) -> VmExit {
        if let Err(err) = crate::vcpu::install_kick_handler() {
            return VmExit::Error(format!("cannot install the vCPU kick handler: {err}"));
        }
        for vcpu in self.vcpus.drain(..) {
            let name = format!("vcpu{}", vcpu.index);
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || vcpu.run())
            {
                Ok(handle) => {
                    if let Ok(mut threads) = self.vcpu_threads.lock() {
                        threads.push(handle.as_pthread_t());
                    }
                }
                Err(err) => return VmExit::Error(format!("cannot start a vCPU thread: {err}")),
            }
        }
        // Every thread exists now: the filters forbid creating more.
        if self.config.seccomp {
            let user_net = self
                .config
                .nets
                .iter()
                .any(|n| matches!(n.backend, NetBackendConfig::User { .. }));
            let policy = crate::seccomp::Policy { user_net };
            if let Err(err) = crate::seccomp::apply_with(crate::seccomp::ThreadKind::Vmm, policy) {
                return VmExit::Error(format!("cannot confine the event loop: {err}"));
            }
        }
        let reason = self.event_loop(control);
        // The process exits right after: vCPU threads end with it.
        self.state
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        reason
    }

    fn event_loop(&self, mut control: Option<ControlServer>) -> VmExit {
        const EXIT_TOKEN: u64 = u64::MAX;
        const STDIN_TOKEN: u64 = u64::MAX - 1;
        const CONTROL_BASE: u64 = 1 << 32;
        let epoll = match Epoll::new() {
            Ok(e) => e,
            Err(err) => return VmExit::Error(format!("cannot create epoll: {err}")),
        };
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        let mut ok = add(self.exit.eventfd.as_raw_fd(), EXIT_TOKEN).is_ok();
        for (i, slot) in self.virtio.iter().enumerate() {
            for (q, notify) in slot.notifies.iter().enumerate() {
                ok &= add(notify.as_raw_fd(), (i as u64) << 8 | q as u64).is_ok();
            }
            if let Some((fd, _)) = slot.backend {
                // Edge-triggered: a device with no guest buffers leaves data
                // queued, and the guest's next receive kick picks it up.
                let event = EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    BACKEND_TOKEN + i as u64,
                );
                ok &= epoll.ctl(ControlOperation::Add, fd, event).is_ok();
            }
        }
        if let Some(server) = control.as_ref() {
            for (fd, token) in server.fds() {
                ok &= add(fd, CONTROL_BASE + token).is_ok();
            }
        }
        if self.config.console_stdio {
            // Best effort: stdin may be /dev/null or closed under a supervisor.
            let _ = add(libc::STDIN_FILENO, STDIN_TOKEN);
        }
        if !ok {
            return VmExit::Error("cannot register event sources with epoll".into());
        }
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return VmExit::Error(format!("epoll_wait failed: {err}")),
            };
            for event in &events[..n] {
                match event.data() {
                    EXIT_TOKEN => {
                        let _ = self.exit.eventfd.read();
                        if let Some(reason) = self.exit.reason() {
                            return reason;
                        }
                    }
                    STDIN_TOKEN => {
                        let mut buf = [0u8; 256];
                        // SAFETY: reading into a stack buffer of the given length.
                        let n = unsafe {
                            libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len())
                        };
                        if n > 0 {
                            self.console_input(&buf[..n as usize]);
                        } else {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                libc::STDIN_FILENO,
                                EpollEvent::default(),
                            );
                        }
                    }
                    token if token >= CONTROL_BASE => {
                        let Some(server) = control.as_mut() else {
                            continue;
                        };
                        for change in server.handle(token - CONTROL_BASE, self) {
                            let result = match change {
                                FdChange::Add(fd, t) => add(fd, CONTROL_BASE + t),
                                FdChange::Remove(stream) => epoll.ctl(
                                    ControlOperation::Delete,
                                    stream.as_raw_fd(),
                                    EpollEvent::default(),
                                ),
                            };
                            if let Err(err) = result {
                                log::warn!("control socket: epoll update failed: {err}");
                            }
                        }
                    }
                    token if token >= BACKEND_TOKEN => {
                        if let Some(slot) = self.virtio.get((token - BACKEND_TOKEN) as usize) {
                            if let (Some((_, queue)), Ok(mut transport)) =
                                (slot.backend, slot.transport.lock())
                            {
                                transport.queue_notify(queue);
                            }
                        }
                    }
                    token => {
                        let (i, q) = ((token >> 8) as usize, (token & 0xff) as usize);
                        if let Some(slot) = self.virtio.get(i) {
                            if let Some(notify) = slot.notifies.get(q) {
                                let _ = notify.read();
                            }
                            if let Ok(mut transport) = slot.transport.lock() {
                                transport.queue_notify(q as u32);
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }
}
