//! Guest supervision: init owns every guest's life cycle.
//!
//! Specs live in `<data>/guests/NAME.toml`. Each running guest is one
//! `keel-vmm` process, started confined (own uid, its cgroup, seccomp in
//! the VMM) with its API socket at `/run/keel/vm/NAME.sock` and its
//! console in a size-capped log under `<data>/logs/NAME/`; a spec with
//! `[cloud_init]` gets its seed volume built at `<data>/cloud-init/NAME.img`
//! before each start (keel-sys's `cloud_init`). When a VMM
//! exits on its own, the guest's restart policy decides what follows,
//! with the same exponential backoff as init's services.
//!
//! The manager is shared between init's main loop (reaping, timers, host
//! shutdown) and the control socket's threads (operator requests), behind
//! one mutex; waiters for a state change use the condition variable.

pub mod cgroup;
pub mod keel_disks;
pub mod logdir;
pub mod shared_disks;
pub mod tap;
pub mod uids;
pub mod vmm;
pub mod vsock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::storage::blockdev::Probe;
use keel_common::guest::{GuestEnd, RestartPolicy};
use keel_common::init_api::{ErrorCode, GuestState, GuestStatus};
use keel_common::vmm_api::{self, VmmRequest, VmmResponse};
use keel_common::vmm_exit::VmmExitStatus;
use keel_common::GuestSpec;
use keel_sys::cloud_init::{self, CloudInitError};
use keel_sys::deadline::{connect_unix, Deadline};
use keel_sys::fsutil::atomic_write;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::storage::seeds::undefined;
use crate::supervisor::Service;

/// How long a guest gets to shut down cleanly before its VMM is killed.
pub const STOP_TIMEOUT: Duration = keel_common::init_api::GUEST_STOP_TIMEOUT;
/// A failed operation: its kind and a sentence for the operator.
pub type GuestError = (ErrorCode, String);

/// Where the manager keeps and finds things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data partition (`/var/lib/keel`): `guests/`, `logs/`, images.
    pub data: PathBuf,
    /// Directory of the VMMs' API sockets (`/run/keel/vm`).
    pub sockets: PathBuf,
    /// The keel-vmm binary.
    pub vmm: PathBuf,
    /// Parent cgroup of the guests (`/sys/fs/cgroup/keel`), if cgroup2 is
    /// there.
    pub cgroup: Option<PathBuf>,
    /// Run VMMs under their own uid (root only).
    pub drop_privileges: bool,
    /// Bridge that bridge-mode NICs' taps join.
    pub bridge: Option<String>,
    /// Copy guest consoles to init's stdout, the host console (host.toml
    /// `[console] guests`).
    pub console_to_host: bool,
    /// The agent's TCP port (host.toml `[agent] listen`), which the VMMs
    /// keep user-mode guests off whatever their specs list.
    pub agent_port: u16,
}

impl Paths {
    fn spec_file(&self, name: &str) -> PathBuf {
        self.data.join("guests").join(format!("{name}.toml"))
    }

    /// The table of the guests' uids.
    fn uid_file(&self) -> PathBuf {
        self.data.join("guests").join("uids")
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.sockets.join(format!("{name}.sock"))
    }

    /// Parent of the guests' log directories.
    pub fn logs(&self) -> PathBuf {
        self.data.join("logs")
    }

    pub fn console_log(&self, name: &str) -> PathBuf {
        self.logs().join(name).join(logdir::LOG_FILES[0])
    }
}

/// How a VMM ended, from its exit status (see keel-vmm's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmEnd {
    PowerOff,
    Reboot,
    /// The guest panicked (pvpanic) or the VMM failed.
    Failure,
    /// A disk-booted guest's loader found nothing to boot: running it
    /// again finds the same, until the operator changes its disk or spec.
    NothingToBoot,
}

/// Classifies a reaped VMM and describes it for `last_exit`.
pub fn classify(status: &WaitStatus) -> (VmmEnd, String) {
    match status {
        WaitStatus::Exited(_, code) => match VmmExitStatus::from_code(*code) {
            Some(status) => {
                let end = match status {
                    VmmExitStatus::PowerOff => VmmEnd::PowerOff,
                    VmmExitStatus::Reboot => VmmEnd::Reboot,
                    VmmExitStatus::BootFailed => VmmEnd::NothingToBoot,
                    _ => VmmEnd::Failure,
                };
                (end, status.describe().into())
            }
            None => (VmmEnd::Failure, format!("VMM failed (status {code})")),
        },
        WaitStatus::Signaled(_, signal, _) => (
            VmmEnd::Failure,
            format!("VMM killed by {}", signal.as_str()),
        ),
        other => (VmmEnd::Failure, format!("{other:?}")),
    }
}

/// What the restart policy does after a VMM ended on its own.
pub fn should_restart(policy: RestartPolicy, end: VmmEnd) -> bool {
    match end {
        VmmEnd::Reboot => policy.restarts_after(GuestEnd::Reboot),
        VmmEnd::PowerOff => policy.restarts_after(GuestEnd::PowerOff),
        VmmEnd::Failure => policy.restarts_after(GuestEnd::Failure),
        VmmEnd::NothingToBoot => false,
    }
}

struct Guest {
    spec: GuestSpec,
    spec_toml: String,
    /// A redefinition made while the guest ran; applied at its next start.
    pending: Option<(GuestSpec, String)>,
    state: GuestState,
    pid: Option<i32>,
    started: Option<Instant>,
    /// Order of starts, for stopping newest first.
    start_seq: u64,
    stop_requested: bool,
    kill_at: Option<Instant>,
    restart_at: Option<Instant>,
    backoff: Duration,
    restarts: u32,
    last_exit: Option<String>,
}

impl Guest {
    fn new(spec: GuestSpec, spec_toml: String) -> Self {
        Guest {
            spec,
            spec_toml,
            pending: None,
            state: GuestState::Stopped,
            pid: None,
            started: None,
            start_seq: 0,
            stop_requested: false,
            kill_at: None,
            restart_at: None,
            backoff: crate::supervisor::BACKOFF_MIN,
            restarts: 0,
            last_exit: None,
        }
    }

    fn status(&self) -> GuestStatus {
        GuestStatus {
            name: self.spec.name.clone(),
            state: self.state,
            vcpus: self.spec.vcpus,
            memory_mib: self.spec.memory_mib,
            autostart: self.spec.autostart(),
            restart: self.spec.restart().as_str().to_string(),
            pid: self.pid.and_then(|p| u32::try_from(p).ok()),
            uptime_secs: self
                .started
                .filter(|_| self.pid.is_some())
                .map(|t| t.elapsed().as_secs()),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            spec_toml: self.spec_toml.clone(),
        }
    }
}

fn not_found(name: &str) -> GuestError {
    (
        ErrorCode::NotFound,
        format!("No guest is named \"{name}\"."),
    )
}

/// Every guest init knows.
pub struct GuestManager {
    paths: Paths,
    guests: BTreeMap<String, Guest>,
    uids: uids::UidTable,
    next_seq: u64,
    /// Set once the host shuts down: nothing starts any more.
    shutting_down: bool,
    /// Host block devices that host.toml allow-lists as guest disks
    /// (`[storage] guest_devices`).
    guest_devices: Vec<PathBuf>,
}

impl GuestManager {
    /// Loads every `guests/*.toml`. A spec that does not parse is logged
    /// with its file, line and field and skipped; the file stays.
    pub fn load(paths: Paths) -> Self {
        Self::load_with_devices(paths, Vec::new())
    }

    /// [`GuestManager::load`] on a host whose host.toml allow-lists the
    /// block devices `guest_devices` as guest disks.
    pub fn load_with_devices(paths: Paths, guest_devices: Vec<PathBuf>) -> Self {
        let mut guests = BTreeMap::new();
        let dir = paths.data.join("guests");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    log::error!("cannot read {}: {e}", file.display());
                    continue;
                }
            };
            match GuestSpec::parse_with_devices(&file, &text, &guest_devices) {
                Ok(spec) if file.file_stem().is_some_and(|s| *s == *spec.name) => {
                    guests.insert(spec.name.clone(), Guest::new(spec, text));
                }
                Ok(spec) => log::error!(
                    "{}: the guest is named \"{}\": the file must be {}.toml; skipped",
                    file.display(),
                    spec.name,
                    spec.name
                ),
                Err(e) => log::error!("{e}; guest skipped"),
            }
        }
        GuestManager {
            uids: uids::UidTable::load(paths.uid_file()),
            paths,
            guests,
            next_seq: 1,
            shutting_down: false,
            guest_devices,
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Starts every autostart guest, in name order.
    pub fn autostart(&mut self) {
        let names: Vec<String> = self
            .guests
            .values()
            .filter(|g| g.spec.autostart())
            .map(|g| g.spec.name.clone())
            .collect();
        for name in names {
            if let Err((_, message)) = self.start(&name) {
                log::error!("autostart of guest {name} failed: {message}");
            }
        }
    }

    pub fn list(&self) -> Vec<GuestStatus> {
        self.guests.values().map(Guest::status).collect()
    }

    pub fn show(&self, name: &str) -> Result<GuestStatus, GuestError> {
        self.guests
            .get(name)
            .map(Guest::status)
            .ok_or_else(|| not_found(name))
    }

    pub fn running(&self) -> usize {
        self.guests.values().filter(|g| g.pid.is_some()).count()
    }

    /// Validates and stores a spec. Nothing on disk changes when it is
    /// refused.
    pub fn define(&mut self, spec_toml: &str) -> Result<String, GuestError> {
        // Errors name the file the spec would be stored as, when its name
        // is readable at all.
        let file = toml::from_str::<toml::Table>(spec_toml)
            .ok()
            .and_then(|t| t.get("name")?.as_str().map(str::to_string))
            .filter(|n| keel_common::guest::validate_guest_name(n).is_ok())
            .map_or_else(
                || PathBuf::from("<guest>.toml"),
                |n| self.paths.spec_file(&n),
            );
        let spec = GuestSpec::parse_with_devices(&file, spec_toml, &self.guest_devices)
            .map_err(|e| (ErrorCode::Invalid, e.to_string()))?;
        let name = spec.name.clone();
        let others = self
            .guests
            .values()
            .flat_map(|g| std::iter::once(&g.spec).chain(g.pending.as_ref().map(|(s, _)| s)));
        shared_disks::check(&spec, &file, spec_toml, others, &self.paths.data)
            .map_err(|e| (ErrorCode::Conflict, e))?;
        keel_disks::check(
            &spec,
            &file,
            spec_toml,
            &Probe::system(),
            keel_disks::kernel_name,
        )
        .map_err(|e| (ErrorCode::Invalid, e))?;
        self.uids
            .get_or_allocate(&name)
            .map_err(|e| (ErrorCode::Internal, e))?;
        let file = self.paths.spec_file(&name);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                (
                    ErrorCode::Internal,
                    format!("Cannot create {}: {e}.", parent.display()),
                )
            })?;
        }
        atomic_write(&file, spec_toml.as_bytes(), 0o600).map_err(|e| {
            (
                ErrorCode::Internal,
                format!("Cannot store {}: {e}.", file.display()),
            )
        })?;
        match self.guests.get_mut(&name) {
            Some(g) if g.state.is_active() => {
                g.pending = Some((spec, spec_toml.to_string()));
                log::info!("guest {name} redefined; the new spec applies at its next start");
            }
            Some(g) => {
                g.spec = spec;
                g.spec_toml = spec_toml.to_string();
                log::info!("guest {name} redefined");
            }
            None => {
                self.guests
                    .insert(name.clone(), Guest::new(spec, spec_toml.to_string()));
                log::info!("guest {name} defined");
            }
        }
        if let Err(e) = undefined::set(&self.paths.data, &name, false) {
            log::warn!("guest {name}: it stays on the undefined list: {e}");
        }
        Ok(name)
    }

    pub fn undefine(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.guests.get(name).ok_or_else(|| not_found(name))?;
        if g.state.is_active() {
            return Err((
                ErrorCode::Conflict,
                format!("Guest \"{name}\" is running; stop it first."),
            ));
        }
        // Recorded first: a seed of this name must not bring it back.
        undefined::set(&self.paths.data, name, true).map_err(|e| (ErrorCode::Internal, e))?;
        let file = self.paths.spec_file(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err((
                    ErrorCode::Internal,
                    format!("Cannot remove {}: {e}.", file.display()),
                ))
            }
        }
        if let Some(dir) = file.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        self.guests.remove(name);
        if let Err(e) = cloud_init::remove_image(&self.paths.data, name) {
            log::warn!("guest {name}: its cloud-init volume stays: {e}");
        }
        if let Err(e) = self.uids.release(name) {
            log::warn!("guest {name}: its uid stays recorded: {e}");
        }
        log::info!("guest {name} undefined");
        Ok(())
    }

    /// Starts a stopped, crashed or restart-pending guest by hand.
    pub fn start(&mut self, name: &str) -> Result<(), GuestError> {
        if self.shutting_down {
            return Err((
                ErrorCode::Unavailable,
                "The host is shutting down.".to_string(),
            ));
        }
        let g = self.guests.get_mut(name).ok_or_else(|| not_found(name))?;
        if g.state.is_active() {
            return Err((
                ErrorCode::Conflict,
                format!("Guest \"{name}\" is already {}.", g.state.as_str()),
            ));
        }
        g.restarts = 0;
        g.backoff = crate::supervisor::BACKOFF_MIN;
        self.spawn(name)
    }

    fn spawn(&mut self, name: &str) -> Result<(), GuestError> {
        let seq = self.next_seq;
        let paths = self.paths.clone();
        if !self.guests.contains_key(name) {
            return Err(not_found(name));
        }
        // Guests defined before uids were recorded get theirs here.
        let uid = self
            .uids
            .get_or_allocate(name)
            .map_err(|e| (ErrorCode::Internal, e))?;
        let g = self.guests.get_mut(name).ok_or_else(|| not_found(name))?;
        if let Some((spec, toml)) = g.pending.take() {
            g.spec = spec;
            g.spec_toml = toml;
        }
        g.restart_at = None;
        g.stop_requested = false;
        g.kill_at = None;
        let file = paths.spec_file(name);
        let devices = &self.guest_devices;
        keel_sys::spec_files::check_spec_files(&g.spec, &file, &g.spec_toml, &paths.data, devices)
            .map_err(|e| (ErrorCode::Invalid, e.to_string()))?;
        // Disks move between boots: check again what each device is now.
        keel_disks::check(
            &g.spec,
            &file,
            &g.spec_toml,
            &Probe::system(),
            keel_disks::kernel_name,
        )
        .map_err(|e| (ErrorCode::Invalid, e))?;
        // Files can change after the definitions were checked (a new link).
        let g = self.guests.get(name).ok_or_else(|| not_found(name))?;
        let running = self
            .guests
            .values()
            .filter(|o| o.pid.is_some())
            .map(|o| &o.spec);
        shared_disks::check(&g.spec, &file, &g.spec_toml, running.clone(), &paths.data)
            .map_err(|e| (ErrorCode::Conflict, e))?;
        vsock::clear_stale(&g.spec, &paths.data, running).map_err(|e| (ErrorCode::Conflict, e))?;
        // The VMM attaches the seed after the spec's disks; it must be
        // this spec's before the VMM opens it.
        match cloud_init::prepare(&g.spec, &file, &g.spec_toml, &paths.data) {
            Ok(Some(seed)) if seed.written => log::info!(
                "guest {name}: cloud-init volume {} written (instance id {})",
                seed.path.display(),
                seed.instance_id
            ),
            Ok(_) => {}
            Err(e @ CloudInitError::Spec(_)) => return Err((ErrorCode::Invalid, e.to_string())),
            Err(e) => return Err((ErrorCode::Internal, e.to_string())),
        }
        let g = self.guests.get_mut(name).ok_or_else(|| not_found(name))?;
        match vmm::spawn(&paths, &g.spec, &file, uid, &self.guest_devices) {
            Ok(pid) => {
                g.pid = Some(pid);
                g.started = Some(Instant::now());
                g.start_seq = seq;
                g.state = GuestState::Running;
                self.next_seq += 1;
                log::info!("guest {name}: running (pid {pid})");
                Ok(())
            }
            Err(message) => {
                g.state = GuestState::Crashed;
                g.last_exit = Some(format!("did not start: {message}"));
                log::error!("guest {name}: cannot start: {message}");
                Err((
                    ErrorCode::Internal,
                    format!("Cannot start {name}: {message}"),
                ))
            }
        }
    }

    /// Asks the guest to shut down (ctrl-alt-del) and arms the kill timer.
    pub fn request_stop(&mut self, name: &str, timeout: Duration) -> Result<(), GuestError> {
        let paths = self.paths.clone();
        let g = self.guests.get_mut(name).ok_or_else(|| not_found(name))?;
        match g.state {
            GuestState::Running | GuestState::Starting => {}
            GuestState::Stopping => return Ok(()),
            GuestState::Restarting => {
                g.restart_at = None;
                g.state = GuestState::Stopped;
                log::info!("guest {name}: stopped (pending restart cancelled)");
                return Ok(());
            }
            GuestState::Stopped | GuestState::Crashed => {
                return Err((
                    ErrorCode::Conflict,
                    format!("Guest \"{name}\" is not running."),
                ))
            }
        }
        g.stop_requested = true;
        g.state = GuestState::Stopping;
        g.kill_at = Some(Instant::now() + timeout);
        log::info!("guest {name}: stopping");
        // Asked from a thread of its own, not under the manager's lock: a
        // VMM that does not answer holds up nothing, and the kill timer
        // still ends it.
        let (socket, guest) = (paths.socket(name), name.to_string());
        let asked = std::thread::Builder::new()
            .name(format!("stop-{name}"))
            .spawn(move || {
                if let Err(e) = vmm_request(&socket, &VmmRequest::Shutdown) {
                    log::warn!("guest {guest}: cannot ask for a clean shutdown: {e}");
                }
            });
        if let Err(e) = asked {
            log::warn!("guest {name}: cannot ask for a clean shutdown: {e}");
        }
        Ok(())
    }

    /// Kills the guest's VMM at once.
    pub fn kill(&mut self, name: &str) -> Result<(), GuestError> {
        let g = self.guests.get_mut(name).ok_or_else(|| not_found(name))?;
        if g.state == GuestState::Restarting {
            g.restart_at = None;
            g.state = GuestState::Stopped;
            return Ok(());
        }
        let Some(pid) = g.pid else {
            return Err((
                ErrorCode::Conflict,
                format!("Guest \"{name}\" is not running."),
            ));
        };
        g.stop_requested = true;
        g.state = GuestState::Stopping;
        g.kill_at = None;
        log::info!("guest {name}: killing pid {pid}");
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        Ok(())
    }

    /// The guests whose spec in force or pending names the guest file
    /// `path` (compared as `images/...` or `disks/...`, normalised).
    pub fn file_users(&self, path: &Path) -> Vec<GuestStatus> {
        let parts = keel_common::guest::guest_file_parts;
        let Ok(wanted) = parts(path) else {
            return Vec::new();
        };
        let names = |spec: &GuestSpec| {
            let disks = spec.disks.iter().map(|d| d.path.as_path());
            // The seed's files are read at each start.
            let seed = spec
                .cloud_init
                .iter()
                .flat_map(|c| c.files().map(|(_, p)| p));
            spec.boot
                .files()
                .chain(disks)
                .chain(seed)
                .any(|f| parts(f).is_ok_and(|p| p == wanted))
        };
        self.guests
            .values()
            .filter(|g| names(&g.spec) || g.pending.as_ref().is_some_and(|(s, _)| names(s)))
            .map(Guest::status)
            .collect()
    }

    /// Whether the guest's VMM is gone (for waiters).
    pub fn is_down(&self, name: &str) -> bool {
        self.guests.get(name).is_none_or(|g| g.pid.is_none())
    }

    /// Records a reaped child. Returns true if it was a VMM.
    pub fn reaped(&mut self, status: &WaitStatus) -> bool {
        let Some(pid) = status.pid().map(|p| p.as_raw()) else {
            return false;
        };
        let shutting_down = self.shutting_down;
        let Some(g) = self.guests.values_mut().find(|g| g.pid == Some(pid)) else {
            return false;
        };
        let name = g.spec.name.clone();
        let (end, description) = classify(status);
        let ran = g.started.map(|s| s.elapsed()).unwrap_or_default();
        g.pid = None;
        g.kill_at = None;
        g.last_exit = Some(description.clone());
        cgroup::remove(self.paths.cgroup.as_deref(), &name);
        if g.stop_requested || shutting_down {
            g.state = GuestState::Stopped;
            g.stop_requested = false;
            log::info!("guest {name}: stopped ({description})");
        } else if should_restart(g.spec.restart(), end) {
            let (delay, next) = if end == VmmEnd::Reboot {
                (Duration::ZERO, g.backoff)
            } else {
                Service::next_backoff(g.backoff, ran)
            };
            g.backoff = next;
            g.restarts += 1;
            g.state = GuestState::Restarting;
            g.restart_at = Some(Instant::now() + delay);
            log::warn!(
                "guest {name}: {description}; restarting in {} ms (restart {})",
                delay.as_millis(),
                g.restarts
            );
        } else {
            if end == VmmEnd::Failure {
                g.state = GuestState::Crashed;
                // Most descriptions of a failure say "crashed" themselves.
                if description.starts_with("crashed") {
                    log::info!("guest {name}: {description}");
                } else {
                    log::info!("guest {name}: crashed ({description})");
                }
            } else {
                g.state = GuestState::Stopped;
                log::info!("guest {name}: stopped ({description})");
            }
        }
        true
    }

    /// Runs due restarts and kills. Returns the time until the next one.
    pub fn tick(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let due: Vec<String> = self
            .guests
            .values()
            .filter(|g| g.restart_at.is_some_and(|t| t <= now))
            .map(|g| g.spec.name.clone())
            .collect();
        for name in due {
            if self.shutting_down {
                break;
            }
            if let Err((_, message)) = self.spawn(&name) {
                log::error!("guest {name}: restart failed: {message}");
            }
        }
        for g in self.guests.values_mut() {
            if let (Some(at), Some(pid)) = (g.kill_at, g.pid) {
                if at <= now {
                    log::warn!(
                        "guest {}: no clean shutdown in time; killing pid {pid}",
                        g.spec.name
                    );
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    g.kill_at = None;
                }
            }
        }
        self.guests
            .values()
            .filter_map(|g| g.restart_at.or(g.kill_at))
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Stops restarts for good and returns the running guests, newest
    /// first, for the host shutdown.
    pub fn begin_host_shutdown(&mut self) -> Vec<(String, i32)> {
        self.shutting_down = true;
        for g in self.guests.values_mut() {
            if g.state == GuestState::Restarting {
                g.state = GuestState::Stopped;
                g.restart_at = None;
                log::info!(
                    "guest {}: stopped (its pending restart is cancelled by the host shutdown)",
                    g.spec.name
                );
            }
        }
        let mut running: Vec<(u64, String, i32)> = self
            .guests
            .values()
            .filter_map(|g| g.pid.map(|pid| (g.start_seq, g.spec.name.clone(), pid)))
            .collect();
        running.sort_by_key(|r| std::cmp::Reverse(r.0));
        running.into_iter().map(|(_, n, p)| (n, p)).collect()
    }

    /// The last `max_bytes` of a guest's console log (the rotated copy
    /// fills in when the current one is short).
    pub fn console_log(&self, name: &str, max_bytes: usize) -> Result<Vec<u8>, GuestError> {
        if !self.guests.contains_key(name) {
            return Err(not_found(name));
        }
        let logs = self.paths.logs();
        let [current, older] = logdir::LOG_FILES.map(|f| logdir::open_log(&logs, name, f));
        let mut out = tail_of(older, max_bytes);
        out.extend(tail_of(current, max_bytes));
        let skip = out.len().saturating_sub(max_bytes);
        out.drain(..skip);
        Ok(out)
    }
}

fn tail_of(file: std::io::Result<std::fs::File>, max: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = file else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(max as u64).read_to_end(&mut buf);
    buf
}

/// How long one exchange with a VMM's API socket may take, connect
/// included, however the VMM trickles its answer.
const VMM_EXCHANGE: Duration = Duration::from_secs(5);

/// One request to a VMM's API socket.
pub fn vmm_request(socket: &Path, request: &VmmRequest) -> Result<VmmResponse, String> {
    vmm_request_within(socket, request, VMM_EXCHANGE)
}

fn vmm_request_within(
    socket: &Path,
    request: &VmmRequest,
    within: Duration,
) -> Result<VmmResponse, String> {
    let started = Instant::now();
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", socket.display());
    let stream = connect_unix(socket, within).map_err(|e| failed(&e))?;
    let mut exchange = Deadline::new(&stream, within.saturating_sub(started.elapsed()));
    vmm_api::write_frame(&mut exchange, request).map_err(|e| failed(&e))?;
    vmm_api::read_frame(&mut exchange).map_err(|e| failed(&e))
}

/// The manager and its change signal, shared by init's threads.
pub struct Shared {
    manager: Mutex<GuestManager>,
    changed: Condvar,
}

impl Shared {
    pub fn new(manager: GuestManager) -> Self {
        Shared {
            manager: Mutex::new(manager),
            changed: Condvar::new(),
        }
    }

    /// Locks the manager; a thread that panicked holding it does not take
    /// supervision down.
    pub fn lock(&self) -> MutexGuard<'_, GuestManager> {
        self.manager.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&GuestManager) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if done(&guard) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Stops every running guest for a host shutdown, newest first, each
/// with `timeout` for a clean shutdown before it is killed. Runs on the
/// main thread, which reaps the VMMs itself here.
pub fn stop_all_for_shutdown(shared: &Shared, timeout: Duration) {
    let running = shared.lock().begin_host_shutdown();
    if running.is_empty() {
        return;
    }
    log::info!("stopping {} guest(s), newest first", running.len());
    for (name, pid) in running {
        let socket = shared.lock().paths().socket(&name);
        log::info!("guest {name}: stopping for the host shutdown");
        if let Err(e) = vmm_request(&socket, &VmmRequest::Shutdown) {
            log::warn!("guest {name}: cannot ask for a clean shutdown: {e}");
        }
        let status = crate::child::wait_or_kill(Pid::from_raw(pid), timeout, || {
            log::warn!("guest {name}: no clean shutdown in time; killing it");
        });
        match status {
            Some(status) => {
                shared.lock().reaped(&status);
            }
            None => log::warn!("guest {name}: its VMM was already reaped"),
        }
        shared.notify();
    }
}

#[cfg(test)]
mod tests;
