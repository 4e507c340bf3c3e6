//! keel-vmm: runs one guest from its spec until it powers off, reboots,
//! crashes or is killed; the exit status says which (see `exit::VmExit`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use keel_common::GuestSpec;
use keel_vmm::arch::cpuid::CpuidProfile;
use keel_vmm::control::ControlServer;
use keel_vmm::exit::{VmExit, EXIT_CONFIG};
use keel_vmm::vm::{BootSource, DiskConfig, Vm, VmConfig};

/// Used when the spec sets no command line.
const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux";

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
    /// Log more.
    #[arg(long, short)]
    verbose: bool,
}

fn config_from_spec(spec: &GuestSpec, base: &Path, args: &Args) -> Result<VmConfig, String> {
    let vcpus =
        u8::try_from(spec.vcpus).map_err(|_| format!("{} vCPUs is too many", spec.vcpus))?;
    let cmdline = match spec.boot.cmdline() {
        "" => DEFAULT_CMDLINE.to_string(),
        c => c.to_string(),
    };
    Ok(VmConfig {
        name: spec.name.clone(),
        vcpus,
        memory_bytes: spec.memory_bytes(),
        boot: BootSource::Linux {
            kernel: spec.resolve(base, &spec.boot.kernel),
            initrd: spec.boot.initrd.as_ref().map(|p| spec.resolve(base, p)),
            cmdline,
        },
        disks: spec
            .disks
            .iter()
            .map(|d| DiskConfig {
                path: spec.resolve(base, &d.path),
                read_only: d.read_only(),
                serial: d.serial.clone(),
            })
            .collect(),
        rng: spec.rng_enabled(),
        cpuid_profile: args.cpuid_profile,
        console_stdio: args.console_stdio,
        console_log: args.console_log.clone(),
        console_log_cap: args.console_log_cap,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let base = args
        .base_dir
        .clone()
        .or_else(|| args.config.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let spec = match GuestSpec::load(&args.config, &base) {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("keel-vmm: error: {err}");
            return ExitCode::from(EXIT_CONFIG as u8);
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
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let control = match args.api_socket.as_deref().map(ControlServer::bind).transpose() {
        Ok(control) => control,
        Err(err) => {
            log::error!("cannot serve the control socket: {err}");
            return ExitCode::from(VmExit::Error(String::new()).code() as u8);
        }
    };
    let reason = match Vm::new(config) {
        Ok(vm) => vm.run(control),
        Err(err) => VmExit::Error(err.to_string()),
    };
    match &reason {
        VmExit::PowerOff => log::info!("guest powered off"),
        VmExit::Reboot => log::info!("guest asked for a reboot"),
        VmExit::Crash(why) => log::error!("guest crashed: {why}"),
        VmExit::Killed => log::info!("killed on request"),
        VmExit::Error(why) => log::error!("{why}"),
    }
    ExitCode::from(reason.code() as u8)
}
