//! Why a VM could not be built.

use std::path::PathBuf;

use crate::arch::{boot, regs};
use crate::devices::bus::BusError;
use crate::devices::pci::{ResourceError, RootError};
use crate::devices::virtio::net::UserNetError;
use crate::devices::virtio::pci::VirtioPciError;
use crate::devices::virtio::{BlockError, MmioError, NetError, TapError, VsockError};

/// A failure building the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("KVM: {what}: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate guest memory: {0}")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot create the event loop's epoll set: {0}")]
    Epoll(#[source] std::io::Error),
    #[error("cannot open the console log {path}: {source}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("device setup: {device}: {source}")]
    Device {
        device: String,
        #[source]
        source: DeviceError,
    },
    #[error("device setup: at most {max} virtio devices are supported")]
    TooManyDevices { max: usize },
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
}

/// Why one device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    UserNet(#[from] UserNetError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Transport(#[from] MmioError),
    #[error(transparent)]
    PciTransport(#[from] VirtioPciError),
    #[error("PCI bus 0: {0}")]
    PciBus(#[from] RootError),
    #[error("PCI resources: {0}")]
    PciResources(#[from] ResourceError),
    #[error("{0}")]
    PciLayout(&'static str),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot register the device's descriptors with the event loop: {0}")]
    Events(#[from] std::io::Error),
}

impl VmError {
    /// Maps a KVM ioctl failure to an error saying what was being done.
    pub(super) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
        move |source| VmError::Kvm { what, source }
    }

    /// Maps a device's setup failure to an error naming the device.
    pub(super) fn device<E: Into<DeviceError>>(
        device: impl Into<String>,
    ) -> impl FnOnce(E) -> VmError {
        let device = device.into();
        move |source| VmError::Device {
            device,
            source: source.into(),
        }
    }
}
