//! The agent's side of init's control socket: guest operations are
//! forwarded to PID 1, which owns the VMMs. One connection per request
//! keeps a wedged request from holding up the others, and one deadline
//! for the whole exchange keeps a wedged init from holding up the caller.

use std::path::PathBuf;
use std::time::Duration;

use keel_common::init_api::{
    read_frame, write_frame, GuestStatus, InitRequest, InitResponse, GUEST_STOP_ANSWER_TIMEOUT,
};

use keel_sys::deadline::{connect_unix, Deadline};

use crate::messages::{ErrorCode, GuestDetail, GuestSummary};

/// A failed guest operation: the error kind and a message for the user.
pub type GuestError = (ErrorCode, String);

/// Long enough for init's slowest answer, a guest stop (the clean-shutdown
/// timeout, the kill and the reap), with room for a loaded host.
const CALL_TIMEOUT: Duration = GUEST_STOP_ANSWER_TIMEOUT.saturating_add(Duration::from_secs(25));

/// Client of init's control socket.
#[derive(Clone, Debug)]
pub struct InitClient {
    socket: PathBuf,
    /// How long one call may take, connect included.
    timeout: Duration,
}

impl InitClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        InitClient {
            socket: socket.into(),
            timeout: CALL_TIMEOUT,
        }
    }

    /// Sends one request; an `Error` response becomes `Err`.
    pub fn call(&self, request: &InitRequest) -> Result<InitResponse, GuestError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            (
                ErrorCode::Unavailable,
                format!(
                    "init's control socket ({}) is not reachable: {e}.",
                    self.socket.display()
                ),
            )
        };
        let started = std::time::Instant::now();
        let stream = connect_unix(&self.socket, self.timeout).map_err(|e| unavailable(&e))?;
        let mut exchange = Deadline::new(&stream, self.timeout.saturating_sub(started.elapsed()));
        write_frame(&mut exchange, request).map_err(|e| unavailable(&e))?;
        match read_frame(&mut exchange).map_err(|e| unavailable(&e))? {
            InitResponse::Error { kind, message } => Err((kind, message)),
            other => Ok(other),
        }
    }

    /// A request answered by `Ok`.
    pub fn simple(&self, request: &InitRequest) -> Result<(), GuestError> {
        match self.call(request)? {
            InitResponse::Ok => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn list(&self) -> Result<Vec<GuestSummary>, GuestError> {
        match self.call(&InitRequest::GuestList)? {
            InitResponse::Guests(guests) => Ok(guests.iter().map(summary).collect()),
            other => Err(unexpected(&other)),
        }
    }

    pub fn status(&self, name: &str) -> Result<GuestStatus, GuestError> {
        match self.call(&InitRequest::GuestShow {
            name: name.to_string(),
        })? {
            InitResponse::Guest(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    pub fn show(&self, name: &str) -> Result<GuestDetail, GuestError> {
        self.status(name).map(|s| detail(&s))
    }

    /// The last `max_bytes` of a guest's console log.
    pub fn console_log(&self, name: &str, max_bytes: u32) -> Result<Vec<u8>, GuestError> {
        match self.call(&InitRequest::GuestLog {
            name: name.to_string(),
            max_bytes,
        })? {
            InitResponse::Log(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    /// init's recent log lines.
    pub fn host_log(&self, tail: u32) -> Result<Vec<String>, GuestError> {
        match self.call(&InitRequest::HostLog { tail })? {
            InitResponse::Lines(lines) => Ok(lines),
            other => Err(unexpected(&other)),
        }
    }

    /// The guests whose spec names `path` (relative to the data
    /// partition, e.g. `disks/web.img`).
    pub fn file_users(&self, path: &std::path::Path) -> Result<Vec<GuestStatus>, GuestError> {
        let path = path.to_string_lossy().into_owned();
        match self.call(&InitRequest::FileUsers { path })? {
            InitResponse::Guests(guests) => Ok(guests),
            other => Err(unexpected(&other)),
        }
    }

    pub fn running(&self) -> u32 {
        self.call(&InitRequest::GuestList)
            .ok()
            .and_then(|r| match r {
                InitResponse::Guests(g) => {
                    Some(g.iter().filter(|g| g.pid.is_some()).count() as u32)
                }
                _ => None,
            })
            .unwrap_or(0)
    }
}

fn unexpected(response: &InitResponse) -> GuestError {
    (
        ErrorCode::Internal,
        format!("init answered unexpectedly: {response:?}"),
    )
}

fn summary(s: &GuestStatus) -> GuestSummary {
    GuestSummary {
        name: s.name.clone(),
        state: s.state,
        vcpus: s.vcpus,
        memory_mib: s.memory_mib,
    }
}

fn detail(s: &GuestStatus) -> GuestDetail {
    GuestDetail {
        summary: summary(s),
        spec_toml: s.spec_toml.clone(),
        pid: s.pid,
        uptime_secs: s.uptime_secs,
        autostart: s.autostart,
        restart: s.restart.clone(),
        restarts: s.restarts,
        last_exit: s.last_exit.clone(),
    }
}

#[cfg(test)]
mod tests;
