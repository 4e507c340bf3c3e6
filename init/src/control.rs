//! init's control socket (`/run/keel/init.sock`, root only): keel-agent's
//! way to manage guests and the host. One thread per connection, each
//! request answered in order; see `keel_common::init_api`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_common::init_api::{
    read_frame, write_frame, ErrorCode, FrameError, InitRequest, InitResponse, GUEST_REAP_GRACE,
};

use crate::guests::{self, Shared};
use crate::shutdown::Action;

/// Most connections served at once; the agent needs a handful.
const MAX_CONNECTIONS: usize = 32;
/// Largest console-log tail one request returns.
const MAX_LOG_BYTES: u32 = 512 * 1024;

/// What the server calls for host reboot and power off. In the appliance
/// it signals init's main loop, which shuts down in order.
pub type HostAction = Arc<dyn Fn(Action) + Send + Sync>;

/// Settings of the control server.
pub struct Control {
    pub shared: Arc<Shared>,
    pub host_action: HostAction,
    /// Clean-shutdown time a guest gets before its VMM is killed.
    pub stop_timeout: Duration,
}

/// Binds `path` (0600) and serves it on a thread of its own.
pub fn serve(path: &Path, control: Control) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let control = Arc::new(control);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, control))?;
    Ok(())
}

fn accept_loop(listener: UnixListener, control: Arc<Control>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("control socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            log::warn!("control socket: too many connections; refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (control, active) = (Arc::clone(&control), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                serve_connection(stream, &control);
                active.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            log::error!("control socket: cannot start a thread: {e}");
        }
    }
}

fn serve_connection(mut stream: UnixStream, control: &Control) {
    loop {
        let request: InitRequest = match read_frame(&mut stream) {
            Ok(r) => r,
            Err(FrameError::Closed) => return,
            Err(e) => {
                log::warn!("control socket: bad request: {e}");
                let _ = write_frame(
                    &mut stream,
                    &InitResponse::error(ErrorCode::Invalid, format!("Bad request: {e}.")),
                );
                return;
            }
        };
        let host_action = match request {
            InitRequest::HostReboot => Some(Action::Reboot),
            InitRequest::HostPowerOff => Some(Action::PowerOff),
            _ => None,
        };
        let response = answer(control, request);
        if write_frame(&mut stream, &response).is_err() {
            return;
        }
        if let Some(action) = host_action {
            // Answered first: the shutdown ends the agent too.
            (control.host_action)(action);
        }
    }
}

fn result(r: Result<(), guests::GuestError>) -> InitResponse {
    match r {
        Ok(()) => InitResponse::Ok,
        Err((kind, message)) => InitResponse::error(kind, message),
    }
}

/// Stops `name` and waits for its VMM to go, killing it after the timeout.
fn stop_and_wait(control: &Control, name: &str) -> Result<(), guests::GuestError> {
    control
        .shared
        .lock()
        .request_stop(name, control.stop_timeout)?;
    // The main loop kills at the timeout; a little more covers the reap.
    let gone = control
        .shared
        .wait_until(control.stop_timeout + GUEST_REAP_GRACE, |m| m.is_down(name));
    if gone {
        Ok(())
    } else {
        Err((
            ErrorCode::Internal,
            format!("Guest \"{name}\" did not stop in time."),
        ))
    }
}

/// Serves one request.
pub fn answer(control: &Control, request: InitRequest) -> InitResponse {
    let shared = &control.shared;
    let response = match request {
        InitRequest::GuestList => InitResponse::Guests(shared.lock().list()),
        InitRequest::GuestShow { name } => match shared.lock().show(&name) {
            Ok(status) => InitResponse::Guest(status),
            Err((kind, message)) => InitResponse::error(kind, message),
        },
        InitRequest::GuestDefine { spec_toml } => {
            result(shared.lock().define(&spec_toml).map(|_| ()))
        }
        InitRequest::GuestUndefine { name } => result(shared.lock().undefine(&name)),
        InitRequest::GuestStart { name } => result(shared.lock().start(&name)),
        InitRequest::GuestStop { name } => result(stop_and_wait(control, &name)),
        InitRequest::GuestKill { name } => {
            let killed = shared.lock().kill(&name);
            result(killed.and_then(|()| {
                if shared.wait_until(Duration::from_secs(10), |m| m.is_down(&name)) {
                    Ok(())
                } else {
                    Err((
                        ErrorCode::Internal,
                        format!("Guest \"{name}\" did not die."),
                    ))
                }
            }))
        }
        InitRequest::GuestRestart { name } => {
            let active = shared.lock().show(&name).map(|s| {
                s.state.is_active() || s.state == keel_common::init_api::GuestState::Restarting
            });
            result(active.and_then(|active| {
                if active {
                    stop_and_wait(control, &name)?;
                }
                shared.lock().start(&name)
            }))
        }
        InitRequest::GuestLog { name, max_bytes } => {
            match shared
                .lock()
                .console_log(&name, max_bytes.min(MAX_LOG_BYTES) as usize)
            {
                Ok(bytes) => InitResponse::Log(bytes),
                Err((kind, message)) => InitResponse::error(kind, message),
            }
        }
        InitRequest::HostLog { tail } => InitResponse::Lines(crate::logger::recent(tail as usize)),
        InitRequest::HostReboot | InitRequest::HostPowerOff => InitResponse::Ok,
        InitRequest::FileUsers { path } => {
            InitResponse::Guests(shared.lock().file_users(std::path::Path::new(&path)))
        }
    };
    shared.notify();
    response
}
