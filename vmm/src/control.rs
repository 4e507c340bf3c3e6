//! The control socket: pause, resume, shutdown, kill, info, stats and
//! console attach, as postcard frames (see `keel_common::vmm_api`).
//!
//! The event loop owns the listener and connections. Requests are small
//! and handled inline; a connection that sends a malformed frame or stalls
//! past the read timeout is dropped.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_common::vmm_api::{
    read_frame, write_frame, DeviceStats, VmInfo, VmState, VmStats, VmmRequest, VmmResponse,
};

use crate::exit::VmExit;
use crate::vm::Vm;

/// How the event loop's epoll set must change after handling an event.
pub enum FdChange {
    Add(RawFd, u32),
    /// Take the stream out of the epoll set, then drop (close) it. The
    /// order matters: a console client's dup keeps the file open, and
    /// epoll would go on reporting a descriptor that no longer exists.
    Remove(UnixStream),
}

/// Token 0 is the listener; connections get increasing tokens.
const LISTENER: u32 = 0;

pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    connections: HashMap<u32, UnixStream>,
    next_token: u32,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket) with mode 0600: only the
    /// supervisor, running as the same user, may control the VM.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            listener,
            connections: HashMap::new(),
            next_token: 1,
        })
    }

    /// The descriptors to poll at start: only the listener.
    pub fn fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.listener.as_raw_fd(), LISTENER)]
    }

    /// Handles readiness of `token`.
    pub fn handle(&mut self, token: u32, vm: &Vm) -> Vec<FdChange> {
        if token == LISTENER {
            return self.accept();
        }
        let Some(stream) = self.connections.get_mut(&token) else {
            return Vec::new();
        };
        match read_frame::<_, VmmRequest>(stream) {
            Ok(request) => {
                let response = respond(request.clone(), vm, stream);
                if let Some(response) = response {
                    if write_frame(stream, &response).is_err() {
                        return self.drop_connection(token);
                    }
                }
                Vec::new()
            }
            Err(err) => {
                if !matches!(err, keel_common::vmm_api::FrameError::Closed) {
                    log::warn!("control socket: dropping a client: {err}");
                }
                self.drop_connection(token)
            }
        }
    }

    fn accept(&mut self) -> Vec<FdChange> {
        let mut changes = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Blocking with a timeout: frames are small, and a
                    // client that stalls mid-frame is dropped.
                    let ok = stream.set_nonblocking(false).is_ok()
                        && stream
                            .set_read_timeout(Some(Duration::from_secs(1)))
                            .is_ok()
                        && stream
                            .set_write_timeout(Some(Duration::from_secs(1)))
                            .is_ok();
                    if !ok {
                        continue;
                    }
                    let token = self.allocate_token();
                    changes.push(FdChange::Add(stream.as_raw_fd(), token));
                    self.connections.insert(token, stream);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => {
                    log::warn!("control socket: accept failed: {err}");
                    break;
                }
            }
        }
        changes
    }

    /// A token no connection holds: counting up, wrapping past the listener.
    fn allocate_token(&mut self) -> u32 {
        loop {
            let token = self.next_token;
            self.next_token = self.next_token.checked_add(1).unwrap_or(LISTENER + 1);
            if !self.connections.contains_key(&token) {
                return token;
            }
        }
    }

    fn drop_connection(&mut self, token: u32) -> Vec<FdChange> {
        match self.connections.remove(&token) {
            Some(stream) => vec![FdChange::Remove(stream)],
            None => Vec::new(),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Carries out one request; `None` when the request needs no answer.
fn respond(request: VmmRequest, vm: &Vm, stream: &UnixStream) -> Option<VmmResponse> {
    Some(match request {
        VmmRequest::Info => VmmResponse::Info(VmInfo {
            name: vm.config().name.clone(),
            state: if vm.state.is_paused() {
                VmState::Paused
            } else {
                VmState::Running
            },
            vcpus: u32::from(vm.config().vcpus),
            memory_mib: vm.config().memory_bytes >> 20,
            uptime_ms: vm.started.elapsed().as_millis() as u64,
            boot_marker_ms: vm.boot_marker.lock().ok().and_then(|m| m.map(|(_, ms)| ms)),
        }),
        VmmRequest::Stats => VmmResponse::Stats(VmStats {
            devices: vm
                .device_counters()
                .into_iter()
                .map(|(name, counters)| DeviceStats { name, counters })
                .collect(),
            exits: vm
                .counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
        VmmRequest::Pause => match vm.pause() {
            Ok(()) => VmmResponse::Ok,
            Err(err) => VmmResponse::Error(err),
        },
        VmmRequest::Resume => {
            vm.resume();
            VmmResponse::Ok
        }
        VmmRequest::Shutdown => {
            let sent = vm
                .i8042
                .lock()
                .map(|mut k| k.send_ctrl_alt_del())
                .unwrap_or(false);
            if sent {
                VmmResponse::Ok
            } else {
                VmmResponse::Error("the guest's keyboard buffer is full; try again".into())
            }
        }
        VmmRequest::Kill => {
            vm.exit.request(VmExit::Killed);
            VmmResponse::Ok
        }
        VmmRequest::ConsoleAttach => match stream.try_clone() {
            Ok(clone) => {
                if let Ok(mut sinks) = vm.sinks.lock() {
                    sinks.clients.push(clone);
                }
                VmmResponse::Ok
            }
            Err(err) => VmmResponse::Error(format!("cannot attach the console: {err}")),
        },
        VmmRequest::ConsoleInput(data) => {
            let taken = vm.console_input(&data);
            if taken < data.len() {
                VmmResponse::Error(format!(
                    "the guest took {taken} of {} bytes; resend the rest",
                    data.len()
                ))
            } else {
                return None;
            }
        }
    })
}
