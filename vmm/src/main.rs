//! keel-vmm: runs one guest from its spec until it powers off, reboots,
//! crashes or is killed; the exit status says which (see `exit::VmExit`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use keel_common::guest::{cloud_init_image, BootFrom, DiskFormat, MacAddr, NetMode};
use keel_common::host::DEFAULT_AGENT_PORT;
use keel_common::vmm_exit::VmmExitStatus;
use keel_common::GuestSpec;
use keel_vmm::arch::cpuid::CpuidProfile;
use keel_vmm::control::ControlServer;
use keel_vmm::exit::VmExit;
use keel_vmm::jail;
use keel_vmm::vm::{
    BackingConfig, BootSource, DiskConfig, GuestFile, NetBackendConfig, NetConfig, Vm, VmConfig,
    VsockConfig,
};

/// The virtio-blk serial of the cloud-init seed, for /dev/disk/by-id.
const CLOUD_INIT_SERIAL: &str = "cidata";
/// Used when the spec sets no command line.
const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

#[derive(Parser)]
#[command(
    version,
    about = "Keel's virtual machine monitor: one process per guest."
)]
struct Args {
    /// The guest spec (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Directory that relative paths in the spec are resolved against
    /// (default: the spec's own directory).
    #[arg(long)]
    base_dir: Option<PathBuf>,
    /// Copy the guest console to stdout and feed stdin to it.
    #[arg(long, default_value_t = false)]
    console_stdio: bool,
    /// Also write the guest console to this file, capped in size.
    #[arg(long)]
    console_log: Option<PathBuf>,
    /// Size cap of the console log, in bytes (one older copy is kept).
    #[arg(long, default_value_t = 1 << 20)]
    console_log_cap: u64,
    /// Which CPU features the guest sees: host or baseline.
    #[arg(long, default_value = "host")]
    cpuid_profile: CpuidProfile,
    /// Serve the control socket (pause, resume, shutdown, kill, info,
    /// stats, console) at this path.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// A tap descriptor for the next bridge-mode NIC, handed over by the
    /// supervisor (repeat, in NIC order).
    #[arg(long = "tap-fd")]
    tap_fds: Vec<i32>,
    /// The management agent's TCP port (host.toml `[agent] listen`): a
    /// user-mode guest never reaches it, even if `host_ports` lists it.
    #[arg(long, default_value_t = DEFAULT_AGENT_PORT)]
    agent_port: u16,
    /// Run without seccomp filters (debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Drop to this user after opening files and devices (needs --gid).
    #[arg(long, requires = "gid")]
    uid: Option<u32>,
    /// Drop to this group after opening files and devices (needs --uid).
    #[arg(long, requires = "uid")]
    gid: Option<u32>,
    /// A host block device that host.toml allow-lists as a guest disk, as
    /// the spec names it (repeat). Every other file of the spec is opened
    /// beneath the base directory's images/ or disks/.
    #[arg(long = "guest-device")]
    guest_devices: Vec<PathBuf>,
    /// Log more.
    #[arg(long, short)]
    verbose: bool,
}

/// Opens one of the spec's files (see keel-sys's `open_guest_file`).
fn open_file(base: &Path, rel: &Path, args: &Args, write: bool) -> Result<GuestFile, String> {
    let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
    let file = keel_sys::spec_files::open_guest_file(base, rel, &args.guest_devices, flags)?;
    Ok(GuestFile {
        path: rel.to_path_buf(),
        file,
    })
}

/// A stable locally administered MAC for NIC `index` of guest `name`, so a
/// guest keeps its address (and DHCP lease) across restarts.
fn default_mac(name: &str, index: usize) -> MacAddr {
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = format!("{name}/{index}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let b = hash.to_le_bytes();
    MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
}

fn nets_from_spec(
    spec: &GuestSpec,
    tap_fds: &[i32],
    agent_port: u16,
) -> Result<Vec<NetConfig>, String> {
    let mut fds = tap_fds.iter();
    spec.nets
        .iter()
        .enumerate()
        .map(|(i, nic)| {
            let backend = match nic.mode {
                NetMode::Tap => NetBackendConfig::TapName(nic.tap.clone().unwrap_or_default()),
                NetMode::Bridge => match fds.next() {
                    Some(fd) => NetBackendConfig::TapFd(*fd),
                    None => {
                        return Err(format!(
                        "net[{i}] is in bridge mode: its tap comes from the supervisor as --tap-fd"
                    ))
                    }
                },
                NetMode::User => NetBackendConfig::User {
                    hostfwd: nic.hostfwd.clone().unwrap_or_default(),
                    host_ports: nic.host_ports.clone().unwrap_or_default(),
                    agent_port,
                },
            };
            let mac = nic.mac.unwrap_or_else(|| default_mac(&spec.name, i));
            Ok(NetConfig { backend, mac })
        })
        .collect()
}

/// The disks the guest gets: the spec's, then its cloud-init seed when
/// the spec has `[cloud_init]` (built by init, opened read-only beneath
/// the base directory's `cloud-init/`).
fn disks_from_spec(spec: &GuestSpec, base: &Path, args: &Args) -> Result<Vec<DiskConfig>, String> {
    let mut disks = spec
        .disks
        .iter()
        .map(|d| {
            let backing = match &d.backing {
                Some(b) => Some(BackingConfig {
                    file: open_file(base, b, args, false)?,
                    host_path: std::path::absolute(base.join(b))
                        .map_err(|e| format!("cannot make `{}` absolute: {e}", b.display()))?,
                }),
                None => None,
            };
            Ok(DiskConfig {
                file: open_file(base, &d.path, args, !d.read_only())?,
                read_only: d.read_only(),
                serial: d.serial.clone(),
                format: d.format,
                backing,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if spec.cloud_init.is_some() {
        let file = keel_sys::cloud_init::open_image(base, &spec.name)
            .map_err(|e| format!("the cloud-init volume: {e}"))?;
        disks.push(DiskConfig {
            file: GuestFile {
                path: cloud_init_image(&spec.name),
                file,
            },
            read_only: true,
            serial: Some(CLOUD_INIT_SERIAL.to_string()),
            // init made it, never a qcow2: its bytes are served as they are.
            format: Some(DiskFormat::Raw),
            backing: None,
        });
    }
    Ok(disks)
}

fn config_from_spec(spec: &GuestSpec, base: &Path, args: &Args) -> Result<VmConfig, String> {
    let vcpus =
        u8::try_from(spec.vcpus).map_err(|_| format!("{} vCPUs is too many", spec.vcpus))?;
    let boot = spec.boot.kernel_boot();
    let cmdline = match boot.cmdline.as_str() {
        "" => DEFAULT_CMDLINE.to_string(),
        c => c.to_string(),
    };
    Ok(VmConfig {
        name: spec.name.clone(),
        vcpus,
        memory_bytes: spec.memory_bytes(),
        boot: BootSource::Linux {
            kernel: open_file(base, &boot.kernel, args, false)?,
            initrd: boot
                .initrd
                .as_ref()
                .map(|p| open_file(base, p, args, false))
                .transpose()?,
            cmdline,
        },
        disks: disks_from_spec(spec, base, args)?,
        nets: nets_from_spec(spec, &args.tap_fds, args.agent_port)?,
        rng: spec.rng_enabled(),
        transport: spec.transport(),
        vsock: spec.vsock.as_ref().map(|v| VsockConfig {
            cid: u64::from(v.cid()),
            uds_path: spec.resolve(base, &v.uds_path),
        }),
        cpuid_profile: args.cpuid_profile,
        console_stdio: args.console_stdio,
        console_log: args.console_log.clone(),
        console_log_cap: args.console_log_cap,
        loader_report: spec.boot.from() == BootFrom::Disk,
        seccomp: !args.no_seccomp,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Nothing inherited may leak into the VMM but stdio and handed-over taps.
    if let Err(err) = jail::close_inherited_fds(&args.tap_fds) {
        eprintln!("keel-vmm: error: cannot close inherited file descriptors: {err}");
        return VmmExitStatus::Error.into();
    }
    if let Err(err) = jail::set_no_new_privs() {
        eprintln!("keel-vmm: error: cannot set no_new_privs: {err}");
        return VmmExitStatus::Error.into();
    }
    let base = args
        .base_dir
        .clone()
        .or_else(|| args.config.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let spec = match keel_sys::spec_files::load_guest_spec(&args.config, &base, &args.guest_devices)
    {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("keel-vmm: error: {err}");
            return VmmExitStatus::Config.into();
        }
    };
    keel_vmm::logger::init(
        &spec.name,
        if args.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        },
    );
    let config = match config_from_spec(&spec, &base, &args) {
        Ok(c) => c,
        Err(err) => {
            log::error!("{err}");
            return VmmExitStatus::Config.into();
        }
    };
    let control = match args
        .api_socket
        .as_deref()
        .map(ControlServer::bind)
        .transpose()
    {
        Ok(control) => control,
        Err(err) => {
            log::error!("cannot serve the control socket: {err}");
            return VmmExitStatus::Error.into();
        }
    };
    let reason = match Vm::new(config) {
        Ok(vm) => {
            // Files and devices are open: give up root before the guest runs.
            if let (Some(uid), Some(gid)) = (args.uid, args.gid) {
                if let Err(err) = jail::drop_privileges(uid, gid) {
                    log::error!("cannot drop to uid {uid} gid {gid}: {err}");
                    return VmmExitStatus::Error.into();
                }
            }
            vm.run(control)
        }
        Err(err) => VmExit::Error(err.to_string()),
    };
    match &reason {
        VmExit::PowerOff => log::info!("guest powered off"),
        VmExit::Reboot => log::info!("guest asked for a reboot"),
        VmExit::Crash(why) => log::error!("guest crashed: {why}"),
        VmExit::Killed => log::info!("killed on request"),
        VmExit::BootFailed(why) => log::error!("nothing to boot on the guest's disks: {why}"),
        VmExit::Error(why) => log::error!("{why}"),
    }
    reason.status().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_macs_are_stable_unicast_and_distinct() {
        let a = default_mac("web1", 0);
        assert_eq!(a, default_mac("web1", 0));
        assert_ne!(a, default_mac("web1", 1));
        assert_ne!(a, default_mac("web2", 0));
        assert_eq!(a.0[0] & 1, 0, "unicast");
        assert_eq!(a.0[0] & 2, 2, "locally administered");
    }

    #[test]
    fn a_cloud_init_spec_gets_its_seed_as_a_last_read_only_disk() {
        let data = tempfile::tempdir().unwrap();
        let base = data.path();
        for dir in ["images", "disks", "guests"] {
            std::fs::create_dir(base.join(dir)).unwrap();
        }
        std::fs::write(base.join("images/vmlinux"), b"kernel").unwrap();
        std::fs::write(base.join("disks/root.raw"), vec![0u8; 4096]).unwrap();
        let plain = "name = \"web1\"\nvcpus = 1\nmemory_mib = 64\n[boot]\n\
                     kernel = \"images/vmlinux\"\n[[disk]]\npath = \"disks/root.raw\"\n";
        let seeded = format!("{plain}[cloud_init]\nhostname = \"h\"\n");
        let file = base.join("guests/web1.toml");
        let args = Args::try_parse_from([
            "keel-vmm".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "--base-dir".as_ref(),
            base.as_os_str(),
        ])
        .unwrap();

        let spec = GuestSpec::parse(&file, &seeded).unwrap();
        // init has not built it: the VMM says so and does not start.
        let err = config_from_spec(&spec, base, &args).unwrap_err();
        assert!(err.contains("the cloud-init volume"), "{err}");
        keel_sys::cloud_init::prepare(&spec, &file, &seeded, base).unwrap();
        let config = config_from_spec(&spec, base, &args).unwrap();
        let disks: Vec<_> = config
            .disks
            .iter()
            .map(|d| {
                let p = d.file.path.to_string_lossy().into_owned();
                (p, d.read_only, d.serial.as_deref(), d.format)
            })
            .collect();
        assert_eq!(
            disks,
            [
                ("disks/root.raw".to_string(), false, None, None),
                (
                    "cloud-init/web1.img".to_string(),
                    true,
                    Some("cidata"),
                    Some(DiskFormat::Raw)
                ),
            ]
        );
        let seed = &config.disks[1].file.file;
        let size = seed.metadata().unwrap().len();
        assert_eq!(size, keel_sys::cloud_init::IMAGE_BYTES as u64);

        // No table, no seed.
        let spec = GuestSpec::parse(&file, plain).unwrap();
        let config = config_from_spec(&spec, base, &args).unwrap();
        assert_eq!(config.disks.len(), 1);
    }
}
