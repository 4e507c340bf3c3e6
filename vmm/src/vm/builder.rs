//! Building a VM in steps: the KVM VM with its in-kernel irqchip and PIT,
//! guest memory, the legacy port-I/O devices, the virtio devices on the
//! MMIO bus, the boot payload, and the vCPUs.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::Epoll;
use vmm_sys_util::eventfd::EventFd;

use super::gsi_routes::GsiRoutes;
use super::pci_devices::PciDevices;
use super::{mmio_devices, pci_devices};
use super::{
    BootSource, GuestFile, NetBackendConfig, Transport, VirtioSlot, Vm, VmConfig, VmError,
};
use crate::arch::acpi::AcpiConfig;
use crate::arch::boot::{self, BootEntry, BootPayload};
use crate::arch::cpuid;
use crate::arch::layout::*;
use crate::arch::regs::{self, EntryMode};
use crate::console::{CappedLog, ConsoleSinks};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::boot_timer::{BootMarker, BootTimer};
use crate::devices::bus::Bus;
use crate::devices::i8042::I8042;
use crate::devices::loader_report::LoaderReport;
use crate::devices::pci::PciEcam;
use crate::devices::pci::{PciConfigIo, PciRoot, CONFIG_IO_LEN};
use crate::devices::pvpanic::PvPanic;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::net::user::{UserNet, UserNetConfig};
use crate::devices::virtio::{
    BackingImage, Block, BlockOptions, DeviceEvents, DiskImage, Net, NetBackend, Rng, Tap,
    VirtioDevice, Vsock,
};
use crate::exit::ExitSignal;
use crate::vcpu::{ExitCounters, RunState, Vcpu};

/// The port-I/O devices, and the handles the VM keeps to some of them.
struct LegacyDevices {
    pio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    sinks: Arc<Mutex<ConsoleSinks>>,
    boot_marker: BootMarker,
}

/// The virtio devices on their transports.
struct VirtioDevices {
    mmio: Bus,
    slots: Vec<VirtioSlot>,
    /// The event loop's epoll set, holding the devices' own descriptors.
    epoll: Arc<Epoll>,
    /// virtio-mmio windows (base, GSI) for the DSDT.
    acpi_mmio: Vec<(u64, u32)>,
    /// What to append to the kernel command line to announce them.
    cmdline: String,
    /// virtio-pci functions, whose BAR moves the VM follows once the MMIO
    /// bus is shared with the vCPUs.
    pci: Option<PciDevices>,
}

/// A virtio device before it gets its transport, its descriptors already
/// registered with the event loop.
pub(super) struct PendingDevice {
    pub name: String,
    pub device: Box<dyn VirtioDevice>,
}

/// An eventfd that raises `gsi` when written.
pub(super) fn irqfd(vm: &VmFd, gsi: u32) -> Result<EventFd, VmError> {
    let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
    vm.register_irqfd(&fd, gsi)
        .map_err(VmError::kvm("register irqfd"))?;
    Ok(fd)
}

/// Builds a [`Vm`] from its configuration, one step at a time.
pub(super) struct VmBuilder {
    config: VmConfig,
    started: Instant,
    kvm: Kvm,
    vm: Arc<VmFd>,
    exit: Arc<ExitSignal>,
    /// Bus 0, reached through 0xCF8 on the port bus and ECAM on the MMIO
    /// bus; it holds only the host bridge when the transport is mmio.
    pci_root: Arc<Mutex<PciRoot>>,
}

impl VmBuilder {
    /// Creates the KVM VM with the in-kernel irqchip and PIT.
    pub(super) fn new(config: VmConfig) -> Result<Self, VmError> {
        let started = Instant::now();
        let kvm = Kvm::new().map_err(VmError::kvm("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(VmError::kvm("create the VM"))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(VmError::kvm("set the TSS address"))?;
        vm.create_irq_chip()
            .map_err(VmError::kvm("create the in-kernel irqchip"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(VmError::kvm("create the PIT"))?;
        let exit = Arc::new(ExitSignal::new().map_err(VmError::EventFd)?);
        Ok(VmBuilder {
            config,
            started,
            kvm,
            vm: Arc::new(vm),
            exit,
            pci_root: Arc::new(Mutex::new(PciRoot::new())),
        })
    }

    /// Runs the remaining steps and returns the VM, ready to run.
    pub(super) fn build(self) -> Result<Vm, VmError> {
        let mem = self.guest_memory()?;
        let legacy = self.legacy_devices()?;
        let virtio = self.virtio_devices(&mem)?;
        let entry = self.load_payload(&mem, &virtio)?;
        let counters = Arc::new(ExitCounters::default());
        let state = Arc::new(RunState::default());
        let mmio = Arc::new(virtio.mmio);
        if let Some(pci) = virtio.pci {
            pci.follow_bar_moves(&self.pci_root, self.vm.clone(), mmio.clone());
        }
        let vcpus = self.vcpus(
            &mem,
            &entry,
            [Arc::new(legacy.pio), mmio],
            &counters,
            &state,
        )?;
        log::info!(
            "{}: {} vCPU(s), {} MiB, {} entry at {:#x}, {} virtio device(s)",
            self.config.name,
            self.config.vcpus,
            self.config.memory_bytes >> 20,
            if entry.mode == EntryMode::Pvh {
                "PVH"
            } else {
                "64-bit Linux"
            },
            entry.entry,
            virtio.slots.len()
        );
        Ok(Vm {
            config: self.config,
            _vm: self.vm,
            vcpus,
            virtio: virtio.slots,
            epoll: virtio.epoll,
            serial: legacy.serial,
            i8042: legacy.i8042,
            exit: self.exit,
            counters,
            state,
            boot_marker: legacy.boot_marker,
            sinks: legacy.sinks,
            started: self.started,
            vcpu_threads: Mutex::new(Vec::new()),
        })
    }

    /// Allocates guest RAM around the MMIO hole and registers it with KVM.
    fn guest_memory(&self) -> Result<GuestMemoryMmap, VmError> {
        let ranges: Vec<(GuestAddress, usize)> = ram_ranges(self.config.memory_bytes)
            .into_iter()
            .map(|(start, size)| (GuestAddress(start), size as usize))
            .collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(VmError::Memory)?;
        for (slot, region) in (0u32..).zip(mem.iter()) {
            let region_desc = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which the VM
            // keeps (through the vCPUs and devices) for as long as it can
            // run.
            unsafe { self.vm.set_user_memory_region(region_desc) }
                .map_err(VmError::kvm("register guest memory"))?;
        }
        Ok(mem)
    }

    /// The console sinks and the devices on the port-I/O bus: COM1, the
    /// i8042 (reset), ACPI PM (power off), pvpanic and the boot timer.
    fn legacy_devices(&self) -> Result<LegacyDevices, VmError> {
        let config = &self.config;
        let log = config
            .console_log
            .as_ref()
            .map(|path| {
                CappedLog::open(path, config.console_log_cap).map_err(|source| {
                    VmError::ConsoleLog {
                        path: path.clone(),
                        source,
                    }
                })
            })
            .transpose()?;
        let sinks = Arc::new(Mutex::new(ConsoleSinks::new(config.console_stdio, log)));
        let boot_marker = BootMarker::default();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irqfd(&self.vm, SERIAL_IRQ)?,
            sinks.clone(),
        )));
        let i8042 = Arc::new(Mutex::new(I8042::new(
            irqfd(&self.vm, I8042_IRQ)?,
            self.exit.clone(),
        )));
        let mut pio = Bus::default();
        pio.insert(u64::from(SERIAL_PORT), 8, serial.clone())
            .map_err(VmError::device("serial"))?;
        pio.insert(u64::from(I8042_PORT), 5, i8042.clone())
            .map_err(VmError::device("i8042"))?;
        pio.insert(
            u64::from(PCI_CONFIG_PORT),
            CONFIG_IO_LEN,
            Arc::new(Mutex::new(PciConfigIo::new(self.pci_root.clone()))),
        )
        .map_err(VmError::device("pci"))?;
        pio.insert(
            u64::from(ACPI_PM_PORT),
            u64::from(ACPI_PM_LEN),
            Arc::new(Mutex::new(AcpiPm::new(self.exit.clone()))),
        )
        .map_err(VmError::device("acpi_pm"))?;
        pio.insert(
            u64::from(PVPANIC_PORT),
            1,
            Arc::new(Mutex::new(PvPanic::new(self.exit.clone()))),
        )
        .map_err(VmError::device("pvpanic"))?;
        pio.insert(
            u64::from(BOOT_TIMER_PORT),
            1,
            Arc::new(Mutex::new(BootTimer::new(
                self.started,
                boot_marker.clone(),
            ))),
        )
        .map_err(VmError::device("boot_timer"))?;
        if self.config.loader_report {
            pio.insert(
                u64::from(LOADER_REPORT_PORT),
                1,
                Arc::new(Mutex::new(LoaderReport::new(self.exit.clone()))),
            )
            .map_err(VmError::device("loader_report"))?;
        }
        Ok(LegacyDevices {
            pio,
            serial,
            i8042,
            sinks,
            boot_marker,
        })
    }

    /// Opens every configured device in slot order: disks, NICs, the
    /// entropy device, vsock.
    fn open_virtio_devices(&self) -> Result<Vec<PendingDevice>, VmError> {
        let config = &self.config;
        let mut devices = Vec::new();
        for (i, disk) in config.disks.iter().enumerate() {
            let name = format!("block{i}");
            let options = BlockOptions {
                read_only: disk.read_only,
                serial: disk.serial.clone().unwrap_or_default(),
                format: disk.format,
            };
            let clone = |f: &GuestFile| {
                f.file.try_clone().map_err(|source| {
                    VmError::device(&name)(BlockError::Open {
                        path: f.path.clone(),
                        source,
                    })
                })
            };
            let backing = match &disk.backing {
                Some(b) => Some(BackingImage {
                    file: clone(&b.file)?,
                    path: b.file.path.clone(),
                    host_path: b.host_path.clone(),
                }),
                None => None,
            };
            let image = DiskImage {
                file: clone(&disk.file)?,
                path: disk.file.path.clone(),
                backing,
            };
            let block = Block::open_image(image, options).map_err(VmError::device(&name))?;
            devices.push(PendingDevice {
                name,
                device: Box::new(block),
            });
        }
        for (i, nic) in config.nets.iter().enumerate() {
            let name = format!("net{i}");
            let backend: Box<dyn NetBackend> = match &nic.backend {
                NetBackendConfig::TapName(tap) => {
                    Box::new(Tap::open(tap).map_err(VmError::device(&name))?)
                }
                NetBackendConfig::TapFd(fd) => {
                    // SAFETY: the supervisor handed this descriptor over for
                    // the VMM to own; nothing else in the process uses it.
                    let fd = unsafe { OwnedFd::from_raw_fd(*fd) };
                    Box::new(Tap::from_fd(fd).map_err(VmError::device(&name))?)
                }
                NetBackendConfig::User {
                    hostfwd,
                    host_ports,
                    agent_port,
                } => Box::new(
                    UserNet::new(UserNetConfig {
                        hostfwd: hostfwd.clone(),
                        host_ports: host_ports.clone(),
                        agent_port: Some(*agent_port),
                    })
                    .map_err(VmError::device(&name))?,
                ),
            };
            let net = Net::new(backend, nic.mac).map_err(VmError::device(&name))?;
            devices.push(PendingDevice {
                name,
                device: Box::new(net),
            });
        }
        if config.rng {
            devices.push(PendingDevice {
                name: "rng".into(),
                device: Box::new(Rng::new()),
            });
        }
        if let Some(vsock) = &config.vsock {
            let device =
                Vsock::new(vsock.cid, &vsock.uds_path).map_err(VmError::device("vsock"))?;
            devices.push(PendingDevice {
                name: "vsock".into(),
                device: Box::new(device),
            });
        }
        Ok(devices)
    }

    /// Opens the devices, registers their descriptors with the event
    /// loop, and attaches them over the configured transport.
    fn virtio_devices(&self, mem: &GuestMemoryMmap) -> Result<VirtioDevices, VmError> {
        let epoll = Arc::new(Epoll::new().map_err(VmError::Epoll)?);
        let mut devices = self.open_virtio_devices()?;
        for (slot, pending) in devices.iter_mut().enumerate() {
            let slot = u16::try_from(slot).map_err(|_| VmError::TooManyDevices {
                max: usize::from(u16::MAX),
            })?;
            pending
                .device
                .register_events(DeviceEvents::new(epoll.clone(), slot))
                .map_err(VmError::device(&pending.name))?;
        }
        let mut mmio = Bus::default();
        // ECAM answers on both transports, like 0xCF8: with mmio the bus
        // holds only the host bridge.
        mmio.insert(
            PCI_ECAM_START,
            PCI_ECAM_SIZE,
            Arc::new(Mutex::new(PciEcam::new(self.pci_root.clone()))),
        )
        .map_err(VmError::device("pci"))?;
        let cmdline_wants_devices = match &self.config.boot {
            BootSource::Linux { cmdline, .. } => mmio_devices::acpi_off(cmdline),
            BootSource::Flat { .. } => false,
        };
        match self.config.transport {
            Transport::Mmio => {
                let attached = mmio_devices::attach(&self.vm, mem, devices, &mut mmio)?;
                Ok(VirtioDevices {
                    mmio,
                    slots: attached.slots,
                    epoll,
                    acpi_mmio: attached.acpi,
                    cmdline: if cmdline_wants_devices {
                        attached.cmdline
                    } else {
                        String::new()
                    },
                    pci: None,
                })
            }
            Transport::Pci => {
                let routes = Arc::new(GsiRoutes::new(self.vm.clone()));
                let mut attached = pci_devices::attach(
                    &self.vm,
                    mem,
                    self.config.memory_bytes,
                    devices,
                    &self.pci_root,
                    &routes,
                    &mut mmio,
                )?;
                Ok(VirtioDevices {
                    mmio,
                    slots: std::mem::take(&mut attached.slots),
                    epoll,
                    acpi_mmio: Vec::new(),
                    cmdline: String::new(),
                    pci: Some(attached),
                })
            }
        }
    }

    /// Loads the kernel (with the devices' announcement appended to its
    /// command line, if any) or the flat payload into guest memory, with
    /// ACPI tables describing the devices.
    fn load_payload(
        &self,
        mem: &GuestMemoryMmap,
        virtio: &VirtioDevices,
    ) -> Result<BootEntry, VmError> {
        let virtio_cmdline = &virtio.cmdline;
        let acpi = AcpiConfig {
            vcpus: self.config.vcpus,
            mem_bytes: self.config.memory_bytes,
            pci: virtio.pci.is_some(),
            mmio_devices: &virtio.acpi_mmio,
        };
        Ok(match &self.config.boot {
            BootSource::Linux {
                kernel,
                initrd,
                cmdline,
            } => {
                let cmdline = format!("{cmdline}{virtio_cmdline}");
                let payload = BootPayload {
                    kernel,
                    initrd: initrd.as_ref(),
                    cmdline: cmdline.trim(),
                    acpi,
                };
                boot::load(mem, &payload)?
            }
            BootSource::Flat { code, load_addr } => boot::load_flat(mem, code, *load_addr, &acpi)?,
        })
    }

    /// Creates the vCPUs with their CPUID, MSRs, FPU and LAPIC set up; the
    /// boot vCPU also gets the entry registers.
    fn vcpus(
        &self,
        mem: &GuestMemoryMmap,
        entry: &BootEntry,
        [pio, mmio]: [Arc<Bus>; 2],
        counters: &Arc<ExitCounters>,
        state: &Arc<RunState>,
    ) -> Result<Vec<Vcpu>, VmError> {
        let config = &self.config;
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::kvm("get supported CPUID"))?;
        let host = cpuid::HostFeatures::probe(&self.kvm);
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
            let fd = self
                .vm
                .create_vcpu(u64::from(index))
                .map_err(VmError::kvm("create a vCPU"))?;
            let mut cpuid = supported.clone();
            cpuid::filter(&mut cpuid, index, config.vcpus, config.cpuid_profile, host);
            fd.set_cpuid2(&cpuid).map_err(VmError::kvm("set CPUID"))?;
            regs::setup_msrs(&fd)?;
            regs::setup_fpu(&fd)?;
            regs::setup_lint(&fd)?;
            if index == 0 {
                regs::setup_regs(&fd, entry.mode, entry.entry)?;
                regs::setup_sregs(mem, &fd, entry.mode)?;
            }
            vcpus.push(Vcpu {
                index,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
                counters: counters.clone(),
                state: state.clone(),
                mem: mem.clone(),
                seccomp: config.seccomp,
            });
        }
        Ok(vcpus)
    }
}
