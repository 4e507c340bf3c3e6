//! init's control socket, `/run/keel/init.sock`: how keel-agent asks PID 1
//! to manage guests and the host. One postcard message per frame, as
//! [`crate::frame`] writes them: one request, one response, per round
//! trip; a connection may carry many.
//!
//! Only root may connect (the socket is 0600): the agent authorises and
//! audits operators before it forwards anything here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The protocol's framing under the names its users call it by.
pub use crate::frame::{read_message as read_frame, write_message as write_frame, FrameError};

/// Where init listens.
pub const INIT_SOCKET: &str = "/run/keel/init.sock";
/// Where each running guest's VMM listens (`<dir>/<name>.sock`).
pub const VMM_SOCKET_DIR: &str = "/run/keel/vm";

/// How long a guest gets to shut down cleanly (ctrl-alt-del) before init
/// kills its VMM.
pub const GUEST_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long init waits, past the stop timeout, for a killed VMM to be
/// reaped before it answers a stop.
pub const GUEST_REAP_GRACE: Duration = Duration::from_secs(5);
/// The longest init takes to answer `GuestStop` (or the stop that
/// `GuestRestart` begins with): callers wait at least this long.
pub const GUEST_STOP_ANSWER_TIMEOUT: Duration = GUEST_STOP_TIMEOUT.saturating_add(GUEST_REAP_GRACE);

/// A request to init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitRequest {
    GuestList,
    GuestShow {
        name: String,
    },
    /// Validates and stores `guests/<name>.toml`; a running guest keeps
    /// its old spec until it restarts.
    GuestDefine {
        spec_toml: String,
    },
    GuestUndefine {
        name: String,
    },
    GuestStart {
        name: String,
    },
    /// Ctrl-alt-del to the guest, then a kill once the stop timeout passes.
    /// Answers when the VMM has exited, within [`GUEST_STOP_ANSWER_TIMEOUT`].
    GuestStop {
        name: String,
    },
    GuestKill {
        name: String,
    },
    GuestRestart {
        name: String,
    },
    /// The last `max_bytes` of the guest's console log.
    GuestLog {
        name: String,
        max_bytes: u32,
    },
    /// init's recent log lines (guest state changes among them).
    HostLog {
        tail: u32,
    },
    /// Stops every guest, newest first, then reboots. Answers before the
    /// shutdown starts.
    HostReboot,
    HostPowerOff,
    /// The guests whose spec (in force, or pending for the next start)
    /// names `path`, a file beneath the data partition (`images/...`,
    /// `disks/...`), so that an upload does not replace it unasked.
    /// Answered `Guests`.
    FileUsers {
        path: String,
    },
}

/// Where a guest is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestState {
    Stopped,
    Starting,
    Running,
    Stopping,
    /// Exited on its own with a failure and will not be restarted.
    Crashed,
    /// Waiting out the backoff before the restart policy starts it again.
    Restarting,
}

impl GuestState {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestState::Stopped => "stopped",
            GuestState::Starting => "starting",
            GuestState::Running => "running",
            GuestState::Stopping => "stopping",
            GuestState::Crashed => "crashed",
            GuestState::Restarting => "restarting",
        }
    }

    /// Whether a VMM process exists (or is about to) for the guest.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            GuestState::Starting | GuestState::Running | GuestState::Stopping
        )
    }
}

/// One guest as init sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    pub name: String,
    pub state: GuestState,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub autostart: bool,
    /// `always`, `on-failure` or `never`.
    pub restart: String,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    /// Restarts by policy since the guest was last started by hand.
    pub restarts: u32,
    /// How the VMM last ended, e.g. `crashed (status 4)`.
    pub last_exit: Option<String>,
    pub spec_toml: String,
}

/// Why a request failed: the class of an error answer, beside its message.
/// The management channel (`keel_mgmt::messages`) answers with the same
/// codes, so init's refusals reach keelctl unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The session's role may not make this request (agent only).
    Unauthorized,
    NotFound,
    /// The request is malformed, e.g. a bad guest spec or a hash mismatch.
    Invalid,
    /// The request conflicts with current state (already running, exists).
    Conflict,
    /// The server is busy or out of a resource; retry later.
    Unavailable,
    Internal,
}

/// init's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitResponse {
    Ok,
    Guests(Vec<GuestStatus>),
    Guest(GuestStatus),
    Log(Vec<u8>),
    Lines(Vec<String>),
    Error { kind: ErrorCode, message: String },
}

impl InitResponse {
    pub fn error(kind: ErrorCode, message: impl Into<String>) -> Self {
        InitResponse::Error {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let mut buf = Vec::new();
        let req = InitRequest::GuestLog {
            name: "web1".into(),
            max_bytes: 4096,
        };
        write_frame(&mut buf, &req).expect("write");
        let back: InitRequest = read_frame(&mut buf.as_slice()).expect("read");
        assert_eq!(back, req);
        let resp = InitResponse::error(ErrorCode::NotFound, "No guest is named \"x\".");
        buf.clear();
        write_frame(&mut buf, &resp).expect("write");
        let back: InitResponse = read_frame(&mut buf.as_slice()).expect("read");
        assert_eq!(back, resp);
    }

    #[test]
    fn only_live_states_are_active() {
        assert!(GuestState::Running.is_active());
        assert!(GuestState::Stopping.is_active());
        assert!(!GuestState::Restarting.is_active());
        assert!(!GuestState::Crashed.is_active());
        assert_eq!(GuestState::Restarting.as_str(), "restarting");
    }
}
