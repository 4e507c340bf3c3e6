//! keel-init: Keel's PID 1.
//!
//! It mounts the pseudo filesystems, makes the root read-only, sets the
//! hostname, prints the boot banner, reaps orphans and, on the power button
//! or a signal, shuts the machine down in order. It never exits: a PID 1 that
//! exits panics the kernel, so every error is logged and handled.
//!
//! Signals, as with BusyBox init and the kernel's ctrl-alt-del convention:
//!
//! | signal | action |
//! |---|---|
//! | SIGTERM | reboot |
//! | SIGINT (ctrl-alt-del) | reboot |
//! | SIGUSR1, SIGUSR2, SIGPWR | power off |
//! | ACPI power button | power off |

pub mod boot_image;
pub mod child;
pub mod control;
pub mod guests;
pub mod logger;
pub mod mounts;
pub mod net;
pub mod pairing_display;
pub mod power_button;
pub mod reaper;
pub mod shutdown;
pub mod storage;
pub mod supervisor;
pub mod uptime;

use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_common::HostConfig;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use power_button::PowerButton;
use shutdown::Action;
use supervisor::{Service, Supervisor};

/// The host configuration baked into the image.
pub const HOST_CONFIG: &str = "/etc/keel/host.toml";

/// How often input devices are rescanned (a USB keyboard may appear late).
const RESCAN_INTERVAL_MS: u16 = 10_000;

/// Maps a signal sent to init to the shutdown it asks for.
pub fn action_for_signal(signal: Signal) -> Option<Action> {
    match signal {
        Signal::SIGTERM | Signal::SIGINT => Some(Action::Reboot),
        Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGPWR => Some(Action::PowerOff),
        _ => None,
    }
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// Runs PID 1. Never returns.
pub fn run() -> ! {
    // Block first, so no signal sent during boot is lost or kills us: they
    // queue for the signalfd read by the main loop.
    let signals = handled_signals();
    if let Err(err) = signals.thread_block() {
        eprintln!("keel-init: cannot block signals: {err}");
    }
    panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    logger::init();
    mounts::mount_early();
    // Reopen: /dev and /sys exist only now.
    logger::init();
    // Let the kernel turn ctrl-alt-del into SIGINT instead of a hard reset.
    if let Err(err) = nix::sys::reboot::set_cad_enabled(false) {
        log::warn!("cannot take over ctrl-alt-del: {err}");
    }
    if mounts::make_root_read_only() {
        log::info!("root filesystem is read-only");
    }
    // Open the input devices before announcing readiness: a power-button
    // press that arrives right after the banner must not be missed.
    let mut power = PowerButton::default();
    power.rescan();
    let ms = uptime::uptime_ms()
        .map(|ms| ms.to_string())
        .unwrap_or_else(|| "?".into());
    logger::announce(&format!("keel {} up in {ms} ms", keel_common::VERSION));

    let data = data_dir();
    let host_config = load_host_config(&data);
    set_hostname(&host_config);
    let announcer = net::Announcer {
        agent_port: host_config.agent.listen.port(),
        pairing_file: PathBuf::from(net::PAIRING_FILE),
        resolv_conf: PathBuf::from(net::RESOLV_CONF),
    };
    pairing_display::spawn(
        PathBuf::from(net::PAIRING_FILE),
        host_config.agent.listen.port(),
    );
    let bridge = net::start(&host_config, announcer);
    let guests = start_guest_supervision(
        &data,
        bridge,
        host_config.console.guests,
        host_config.agent.listen.port(),
        host_config.storage.guest_devices.clone(),
    );
    let mut services = appliance_services(&data, &host_config);
    let mut panics: Vec<Instant> = Vec::new();
    loop {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            main_loop(&signals, &mut power, &mut services, &guests)
        }));
        // main_loop only comes back by panicking; the hook has logged it.
        let _ = result;
        let now = Instant::now();
        panics.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        panics.push(now);
        if panics.len() >= 10 {
            shutdown_host(
                &guests,
                &mut services,
                Action::Reboot,
                "repeated internal errors in init",
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Where the data partition is mounted.
pub const DATA_DIR: &str = "/var/lib/keel";
/// Stand-in for the data partition when there is none (an ISO boot
/// without a claimed data disk): tmpfs, so nothing survives a reboot.
pub const VOLATILE_DATA_DIR: &str = "/run/keel/data";
/// The VMM binary in the image.
pub const VMM_BINARY: &str = "/usr/bin/keel-vmm";
/// Parent cgroup of the guests' cgroups.
pub const GUEST_CGROUP: &str = "/sys/fs/cgroup/keel";

/// Mounts the data partition (and the ESP, importing its seeds). Without
/// one, guests and keys live on tmpfs, loudly.
fn data_dir() -> PathBuf {
    let storage = storage::bring_up();
    let data = match storage.data {
        Some(dir) => dir,
        None => {
            log::warn!(
                "no data partition in use (the lines above say why): guests, keys and logs are \
                 kept in memory and lost at reboot"
            );
            let dir = PathBuf::from(VOLATILE_DATA_DIR);
            for sub in ["guests", "images", "disks", "logs", "agent"] {
                if let Err(e) = std::fs::create_dir_all(dir.join(sub)) {
                    log::error!("cannot create {}: {e}", dir.join(sub).display());
                }
            }
            dir
        }
    };
    boot_image::install_demo_files(storage.esp.as_deref(), &data);
    boot_image::install_loader_files(&data);
    data
}

/// Loads the guest specs, opens init's control socket and starts the
/// autostart guests.
fn start_guest_supervision(
    data: &Path,
    bridge: Option<String>,
    console_to_host: bool,
    agent_port: u16,
    guest_devices: Vec<PathBuf>,
) -> Arc<guests::Shared> {
    let cgroup = PathBuf::from(GUEST_CGROUP);
    let paths = guests::Paths {
        data: data.to_path_buf(),
        sockets: PathBuf::from(keel_common::init_api::VMM_SOCKET_DIR),
        vmm: PathBuf::from(VMM_BINARY),
        cgroup: guests::cgroup::setup_root(&cgroup).then_some(cgroup),
        drop_privileges: true,
        bridge,
        console_to_host,
        agent_port,
    };
    let manager = guests::GuestManager::load_with_devices(paths, guest_devices);
    let shared = Arc::new(guests::Shared::new(manager));
    let control = control::Control {
        shared: Arc::clone(&shared),
        host_action: Arc::new(|action| {
            // The main loop shuts down in order, as for the same signal.
            let signal = match action {
                Action::Reboot => Signal::SIGTERM,
                Action::PowerOff => Signal::SIGUSR2,
            };
            // To the process, not this thread: the main loop's signalfd
            // only sees process-directed signals from other threads.
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
        }),
        stop_timeout: guests::STOP_TIMEOUT,
    };
    let socket = Path::new(keel_common::init_api::INIT_SOCKET);
    if let Err(e) = control::serve(socket, control) {
        log::error!(
            "cannot serve {}: {e}; the agent cannot manage guests",
            socket.display()
        );
    }
    if Path::new(VMM_BINARY).exists() {
        shared.lock().autostart();
    } else {
        log::error!("{VMM_BINARY} is missing: guests cannot run");
    }
    shared
}

/// Stops the guests (newest first), then init's services, each waited
/// for, then everything else, and reboots or powers off.
fn shutdown_host(
    guests: &guests::Shared,
    services: &mut Supervisor,
    action: Action,
    reason: &str,
) -> ! {
    log::info!("shutdown requested by {reason}");
    guests::stop_all_for_shutdown(guests, guests::STOP_TIMEOUT);
    services.stop_all(supervisor::STOP_TIMEOUT);
    shutdown::shutdown(action, reason)
}

/// The long-running services of the appliance.
fn appliance_services(data: &Path, config: &HostConfig) -> Supervisor {
    let mut services = Supervisor::default();
    if Path::new("/usr/bin/keel-agent").exists() {
        let state = data.join("agent");
        let state = state.to_string_lossy();
        let listen = config.agent.listen.to_string();
        services.add(Service::new(
            "keel-agent",
            "/usr/bin/keel-agent",
            &[
                "--state-dir",
                &state,
                // Uploads land where guest specs look: images/, disks/.
                "--upload-root",
                &data.to_string_lossy(),
                "--init-socket",
                keel_common::init_api::INIT_SOCKET,
                "--listen",
                &listen,
                "--pairing-file",
                net::PAIRING_FILE,
            ],
        ));
    } else {
        log::warn!("/usr/bin/keel-agent is missing: the management channel will not be available");
    }
    services
}

/// The host configuration in force: the data partition's copy (imported
/// from the ESP seed), else the image's default.
fn load_host_config(data: &Path) -> HostConfig {
    let imported = data.join("host.toml");
    let path = if imported.exists() {
        imported
    } else {
        PathBuf::from(HOST_CONFIG)
    };
    if !path.exists() {
        return HostConfig::default();
    }
    match HostConfig::load(&path) {
        Ok(config) => {
            log::info!("host configuration from {}", path.display());
            config
        }
        Err(err) => {
            log::error!("{err}; using defaults");
            HostConfig::default()
        }
    }
}

fn set_hostname(config: &HostConfig) {
    let hostname = config.hostname();
    match nix::unistd::sethostname(hostname) {
        Ok(()) => log::info!("hostname is {hostname}"),
        Err(err) => log::error!("cannot set the hostname to {hostname}: {err}"),
    }
}

/// Waits for signals and power-key presses. Returns only by panicking.
fn main_loop(
    signals: &SigSet,
    power: &mut PowerButton,
    services: &mut Supervisor,
    guests: &guests::Shared,
) -> ! {
    let signal_fd = loop {
        match SignalFd::with_flags(signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => break fd,
            Err(err) => {
                log::error!("cannot create the signalfd: {err}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    loop {
        let (signal_ready, ready_devices) = {
            let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
            fds.extend(
                power
                    .fds()
                    .into_iter()
                    .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
            );
            // Wake for the next service restart, or to rescan input devices.
            let next = [services.tick(), guests.lock().tick()]
                .into_iter()
                .flatten()
                .min();
            guests.notify();
            let restart_in = next.map(|d| d.as_millis().min(u128::from(RESCAN_INTERVAL_MS)) as u16);
            let timeout = restart_in.unwrap_or(RESCAN_INTERVAL_MS).max(1);
            match poll(&mut fds, PollTimeout::from(timeout)) {
                Ok(0) => (false, Vec::new()),
                Ok(_) => {
                    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                    let devices: Vec<usize> = fds[1..]
                        .iter()
                        .enumerate()
                        .filter(|(_, fd)| ready(fd))
                        .map(|(i, _)| i)
                        .collect();
                    (ready(&fds[0]), devices)
                }
                Err(nix::errno::Errno::EINTR) => (false, Vec::new()),
                Err(err) => {
                    log::error!("poll failed: {err}");
                    std::thread::sleep(Duration::from_secs(1));
                    (false, Vec::new())
                }
            }
        };
        if signal_ready {
            handle_signals(&signal_fd, services, guests);
        }
        // Highest index first: a failing device is removed from the list.
        for index in ready_devices.into_iter().rev() {
            if power.read_pressed(index) {
                shutdown_host(guests, services, Action::PowerOff, "the power button");
            }
        }
        power.rescan();
    }
}

fn handle_signals(signal_fd: &SignalFd, services: &mut Supervisor, guests: &guests::Shared) {
    let mut reap = false;
    while let Ok(Some(info)) = signal_fd.read_signal() {
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if signal == Signal::SIGCHLD {
            reap = true;
        } else if let Some(action) = action_for_signal(signal) {
            shutdown_host(
                guests,
                services,
                action,
                &format!("signal {}", signal.as_str()),
            );
        } else {
            log::info!("ignoring {}", signal.as_str());
        }
    }
    if reap {
        let mut manager = guests.lock();
        for status in reaper::reap_all().exited {
            log::debug!("reaped {status:?}");
            if !manager.reaped(&status) {
                services.reaped(&status);
            }
        }
        drop(manager);
        guests.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_the_documented_actions() {
        assert_eq!(action_for_signal(Signal::SIGTERM), Some(Action::Reboot));
        assert_eq!(action_for_signal(Signal::SIGINT), Some(Action::Reboot));
        assert_eq!(action_for_signal(Signal::SIGUSR1), Some(Action::PowerOff));
        assert_eq!(action_for_signal(Signal::SIGUSR2), Some(Action::PowerOff));
        assert_eq!(action_for_signal(Signal::SIGPWR), Some(Action::PowerOff));
        assert_eq!(action_for_signal(Signal::SIGHUP), None);
        assert_eq!(action_for_signal(Signal::SIGCHLD), None);
    }

    #[test]
    fn every_shutdown_signal_is_blocked_for_the_signalfd() {
        let set = handled_signals();
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGPWR,
            Signal::SIGCHLD,
        ] {
            assert!(set.contains(signal), "{signal:?}");
        }
    }
}
