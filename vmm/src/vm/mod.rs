//! A VM built from its configuration ([`builder`]) and run: vCPU threads,
//! seccomp, and the event loop ([`event_loop`]) that serves virtio
//! notifications, console input, the control socket and the exit signal.

mod builder;
mod config;
mod error;
mod event_loop;
mod token;

use std::os::fd::RawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

pub use config::{BootSource, DiskConfig, NetBackendConfig, NetConfig, VmConfig, VsockConfig};
pub use error::{DeviceError, VmError};

use crate::control::ControlServer;
use crate::devices::boot_timer::BootMarker;
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleSinks, SerialDevice};
use crate::devices::virtio::MmioTransport;
use crate::exit::{ExitSignal, VmExit};
use crate::seccomp::{self, Policy, ThreadKind};
use crate::vcpu::{self, ExitCounters, RunState, Vcpu};

/// A virtio device on the MMIO bus, with the eventfds its queue notifies
/// are bound to.
struct VirtioSlot {
    transport: Arc<Mutex<MmioTransport>>,
    /// One ioeventfd per queue, matched on the queue index written.
    notifies: Vec<EventFd>,
    /// A backend the device reads from (tap, vsock sockets), polled
    /// edge-triggered; readiness is delivered as a notify of this queue.
    backend: Option<(RawFd, u32)>,
    name: String,
}

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

impl Vm {
    /// Builds the VM: KVM, memory, devices, boot payload, vCPUs.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        builder::VmBuilder::new(config)?.build()
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
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
        let deadline = Instant::now() + Duration::from_secs(2);
        // A kick can land just before a vCPU enters KVM_RUN; kick again
        // until every vCPU reports itself parked.
        while self.state.parked() < usize::from(self.config.vcpus) {
            if Instant::now() > deadline {
                return Err("the vCPUs did not stop within 2 s".into());
            }
            self.kick_vcpus();
            std::thread::sleep(Duration::from_millis(5));
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
                unsafe { libc::pthread_kill(*thread, vcpu::kick_signal()) };
            }
        }
    }

    /// Runs the VM until it ends and returns why it ended.
    pub fn run(mut self, control: Option<ControlServer>) -> VmExit {
        if let Err(err) = vcpu::install_kick_handler() {
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
            let policy = Policy {
                user_net: self.config.uses_user_net(),
            };
            if let Err(err) = seccomp::apply_with(ThreadKind::Vmm, policy) {
                return VmExit::Error(format!("cannot confine the event loop: {err}"));
            }
        }
        let reason = match event_loop::EventLoop::new(&self, control) {
            Ok(event_loop) => event_loop.run(),
            Err(why) => VmExit::Error(why),
        };
        // The process exits right after: vCPU threads end with it.
        self.state.stopping.store(true, Ordering::Release);
        reason
    }
}
