//! A VM built from its configuration ([`builder`]) and run: vCPU threads,
//! seccomp, and the event loop ([`event_loop`]) that serves virtio
//! notifications, console input, the control socket ([`control`] is what
//! it may ask of the VM) and the exit signal.

mod builder;
mod config;
mod control;
mod error;
mod event_loop;
pub mod gsi_routes;
mod mmio_devices;
mod pci_devices;
pub(crate) mod token;

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::VmFd;
use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::EventFd;

pub use config::{
    BackingConfig, BootSource, DiskConfig, GuestFile, NetBackendConfig, NetConfig, Transport,
    VmConfig, VsockConfig,
};
pub use error::{DeviceError, VmError};

use crate::console::ConsoleSinks;
use crate::control::ControlServer;
use crate::devices::boot_timer::BootMarker;
use crate::devices::i8042::I8042;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::VirtioTransport;
use crate::exit::{ExitSignal, VmExit};
use crate::seccomp::{self, Policy, ThreadKind};
use crate::vcpu::{self, ExitCounters, RunState, Vcpu};

/// A virtio device on its transport, with the eventfds its queue notifies
/// are bound to. The device's own descriptors (tap, vsock sockets) are in
/// the event loop's epoll set under `Token::Device` with this slot's index.
struct VirtioSlot {
    transport: Arc<Mutex<dyn VirtioTransport>>,
    /// One ioeventfd per queue, matched on the queue index written.
    notifies: Vec<EventFd>,
    name: String,
}

/// A built VM, ready to run.
pub struct Vm {
    config: VmConfig,
    _vm: Arc<VmFd>,
    vcpus: Vec<Vcpu>,
    virtio: Vec<VirtioSlot>,
    /// The event loop's epoll set, created with the VM so that devices can
    /// register their descriptors before it runs.
    epoll: Arc<Epoll>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    exit: Arc<ExitSignal>,
    counters: Arc<ExitCounters>,
    state: Arc<RunState>,
    boot_marker: BootMarker,
    sinks: Arc<Mutex<ConsoleSinks>>,
    started: Instant,
    vcpu_threads: Mutex<Vec<libc::pthread_t>>,
}

impl Vm {
    /// Builds the VM: KVM, memory, devices, boot payload, vCPUs.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        builder::VmBuilder::new(config)?.build()
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
