//! vCPU threads: the KVM_RUN loop, exits routed to the buses, and the
//! pause/kick protocol.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::bus::Bus;
use crate::exit::{ExitSignal, VmExit};

/// Exit counters, one set per VM, summed over vCPUs.
#[derive(Default)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub hlt: AtomicU64,
    pub interrupted: AtomicU64,
    pub other: AtomicU64,
}

impl ExitCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("io_in", get(&self.io_in)),
            ("io_out", get(&self.io_out)),
            ("mmio_read", get(&self.mmio_read)),
            ("mmio_write", get(&self.mmio_write)),
            ("hlt", get(&self.hlt)),
            ("interrupted", get(&self.interrupted)),
            ("other", get(&self.other)),
        ]
    }
}

/// Pause state shared by the control plane and every vCPU thread.
#[derive(Default)]
pub struct RunState {
    paused: Mutex<bool>,
    resumed: Condvar,
    /// Set when the VM is ending: vCPU threads leave their loops.
    pub stopping: AtomicBool,
    /// vCPUs currently parked by a pause.
    parked: std::sync::atomic::AtomicUsize,
}

impl RunState {
    pub fn set_paused(&self, paused: bool) {
        if let Ok(mut p) = self.paused.lock() {
            *p = paused;
        }
        self.resumed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.paused.lock().map(|p| *p).unwrap_or(false)
    }

    /// How many vCPUs are parked.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    fn wait_while_paused(&self) {
        let Ok(mut paused) = self.paused.lock() else {
            return;
        };
        if !*paused {
            return;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        while *paused && !self.stopping.load(Ordering::Acquire) {
            paused = match self.resumed.wait(paused) {
                Ok(p) => p,
                Err(_) => break,
            };
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a vCPU thread needs.
pub struct Vcpu {
    pub index: u8,
    pub fd: VcpuFd,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitSignal>,
    pub counters: Arc<ExitCounters>,
    pub state: Arc<RunState>,
    pub mem: GuestMemoryMmap,
    /// Apply the vCPU seccomp filter when the thread starts.
    pub seccomp: bool,
}

/// The signal used to kick a vCPU out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler for the kick signal, so it interrupts
/// KVM_RUN with EINTR instead of killing the process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
}

impl Vcpu {
    /// Runs until the VM ends. Returns only when `state.stopping` is set or
    /// an exit was requested.
    pub fn run(mut self) {
        if self.seccomp {
            if let Err(err) = crate::seccomp::apply(crate::seccomp::ThreadKind::Vcpu) {
                self.exit
                    .request(VmExit::Error(format!("vCPU {}: {err}", self.index)));
                return;
            }
        }
        loop {
            if self.state.stopping.load(Ordering::Acquire) {
                return;
            }
            self.state.wait_while_paused();
            if let Some(reason) = self.run_once() {
                self.exit.request(reason);
                return;
            }
        }
    }

    fn run_once(&mut self) -> Option<VmExit> {
        let c = &self.counters;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                c.io_in.fetch_add(1, Ordering::Relaxed);
                if !self.pio.read(u64::from(port), data) {
                    // Nothing there: the floating bus reads all ones.
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                c.io_out.fetch_add(1, Ordering::Relaxed);
                self.pio.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                c.mmio_read.fetch_add(1, Ordering::Relaxed);
                if !self.mmio.read(addr, data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                c.mmio_write.fetch_add(1, Ordering::Relaxed);
                self.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) => {
                c.hlt.fetch_add(1, Ordering::Relaxed);
                // Only reached without an in-kernel LAPIC: a halted CPU
                // with nothing to wake it.
                Some(VmExit::Crash(format!(
                    "vCPU {} halted with no way to wake it",
                    self.index
                )))
            }
            Ok(VcpuExit::Shutdown) => Some(VmExit::Crash(format!(
                "vCPU {} triple-faulted (KVM_EXIT_SHUTDOWN)",
                self.index
            ))),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(VmExit::Crash(format!(
                "KVM could not enter vCPU {} (hardware reason {reason:#x} on CPU {cpu})",
                self.index
            ))),
            Ok(VcpuExit::InternalError) => Some(VmExit::Crash(self.describe_internal_error())),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(VmExit::Crash(format!(
                "unexpected system event {kind} from vCPU {}",
                self.index
            ))),
            Ok(exit) => {
                c.other.fetch_add(1, Ordering::Relaxed);
                log::debug!("vCPU {}: ignored exit {exit:?}", self.index);
                None
            }
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {
                c.interrupted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(err) => Some(VmExit::Error(format!(
                "KVM_RUN failed on vCPU {}: {err}",
                self.index
            ))),
        }
    }

    /// The exit reason, guest RIP and instruction bytes of an emulation
    /// failure, so it can be diagnosed from the log alone.
    fn describe_internal_error(&mut self) -> String {
        // SAFETY: reading the union member KVM filled for
        // KVM_EXIT_INTERNAL_ERROR, which is the exit we are handling.
        let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        let bytes = self
            .fd
            .translate_gva(rip)
            .ok()
            .filter(|t| t.valid != 0)
            .and_then(|t| {
                let mut buf = [0u8; 16];
                self.mem
                    .read_slice(&mut buf, GuestAddress(t.physical_address))
                    .ok()
                    .map(|_| buf)
            })
            .map(|b| {
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "unreadable".into());
        format!(
            "KVM internal error on vCPU {} (suberror {suberror}, 1 = emulation failure) at RIP {rip:#x}, instruction bytes: {bytes}",
            self.index
        )
    }
}
