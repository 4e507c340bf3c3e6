//! What a VM is built from: the VMM's view of the guest spec, with its
//! files open and defaults applied.

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use keel_common::guest::{DiskFormat, MacAddr};

use crate::arch::cpuid::CpuidProfile;
use crate::devices::virtio::net::user::HostFwd;
pub use keel_common::guest::Transport;

/// A file the guest's kernel, initrd or disk comes from, opened before the
/// VM is built: keel-vmm opens a spec's files beneath the data partition
/// (keel-sys's `open_guest_file`), so nothing here opens a path again.
#[derive(Debug)]
pub struct GuestFile {
    /// What the file was opened as, for messages.
    pub path: PathBuf,
    pub file: File,
}

impl GuestFile {
    /// Opens `path` as it stands (read-write when `write`): for VMs that
    /// tests and benches build from their own scratch files.
    pub fn open(path: &Path, write: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)?;
        Ok(GuestFile {
            path: path.to_path_buf(),
            file,
        })
    }
}

/// A disk as the VMM sees it: its file already open.
#[derive(Debug)]
pub struct DiskConfig {
    pub file: GuestFile,
    pub read_only: bool,
    pub serial: Option<String>,
    /// The spec's `format` (virtio-blk's `format` module has the rule).
    pub format: Option<DiskFormat>,
    /// The backing file the spec allows a qcow2 image.
    pub backing: Option<BackingConfig>,
}

/// A qcow2 disk's backing file, opened read-only beneath `images/`.
#[derive(Debug)]
pub struct BackingConfig {
    /// `path` is the spec's (`images/base.qcow2`).
    pub file: GuestFile,
    /// Its absolute path on the host, for image headers that name it so.
    pub host_path: PathBuf,
}

/// Where a NIC's frames go.
#[derive(Debug, Clone)]
pub enum NetBackendConfig {
    /// Open (or create) the named tap: running by hand.
    TapName(String),
    /// A tap descriptor handed over by the supervisor, which made the tap
    /// and put it on the bridge.
    TapFd(RawFd),
    /// User-mode NAT inside the VMM: no tap, no root. The guest reaches
    /// the host only on `host_ports`, never on `agent_port`.
    User {
        hostfwd: Vec<HostFwd>,
        host_ports: Vec<u16>,
        agent_port: u16,
    },
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
#[derive(Debug)]
pub enum BootSource {
    /// A Linux kernel (bzImage, or ELF vmlinux with or without PVH).
    Linux {
        kernel: GuestFile,
        initrd: Option<GuestFile>,
        cmdline: String,
    },
    /// A flat binary entered at `load_addr` in 32-bit protected mode with
    /// paging off, as PVH does: small test payloads and firmware.
    Flat { code: Vec<u8>, load_addr: u64 },
}

/// Everything needed to build the VM.
#[derive(Debug)]
pub struct VmConfig {
    pub name: String,
    pub vcpus: u8,
    pub memory_bytes: u64,
    pub boot: BootSource,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    /// How the virtio devices are attached: virtio-pci or virtio-mmio.
    pub transport: Transport,
    pub cpuid_profile: CpuidProfile,
    /// Copy the guest console to the VMM's stdout and feed stdin to it.
    pub console_stdio: bool,
    pub console_log: Option<PathBuf>,
    pub console_log_cap: u64,
    /// The kernel is keel-loader's: listen for its failure report.
    pub loader_report: bool,
    /// Confine the event loop and vCPU threads with seccomp filters. Off
    /// only where the VM runs inside another program (tests, benches).
    pub seccomp: bool,
}

impl VmConfig {
    /// True when a NIC uses user-mode networking, which widens the event
    /// loop's seccomp filter.
    pub fn uses_user_net(&self) -> bool {
        self.nets
            .iter()
            .any(|n| matches!(n.backend, NetBackendConfig::User { .. }))
    }
}
